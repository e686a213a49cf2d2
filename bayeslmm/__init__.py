"""bayeslmm: Bayesian linear mixed models and GLMMs for quantitative genetics.

Layers (data flows one way): ``kinship``/``io``/``datasets`` → ``spec`` → ``engines`` →
``results`` → interfaces (``model``, ``cli``).

Examples
--------
>>> import bayeslmm as bl
>>> hyper = bl.datasets.load_hyper()  # doctest: +SKIP
>>> K = bl.grm(hyper.genotypes).normalized()  # doctest: +SKIP
>>> fit = bl.LMM("bp ~ 1 + (1|id)", data=hyper.pheno, kinship={"id": K}).fit()  # doctest: +SKIP
>>> fit.heritability()  # doctest: +SKIP
"""

from bayeslmm import datasets, io, results
from bayeslmm._version import __version__ as __version__  # re-exported: bl.__version__
from bayeslmm.association import scan
from bayeslmm.errors import BayesLMMError, DataError, KinshipError, SpecificationError
from bayeslmm.families import Bernoulli, Binomial, Gaussian, Poisson, get_family
from bayeslmm.kinship import (
    Kinship,
    LowRankKinship,
    SparsePedigreeKinship,
    grm,
    loco_grms,
    pedigree_relationship,
)
from bayeslmm.model import LMM
from bayeslmm.results.compare import compare_fits, plot_comparison
from bayeslmm.results.criteria import compare
from bayeslmm.saved import load_fit
from bayeslmm.spec import ModelSpec, RandomTerm, specify

__all__ = [
    "LMM",
    "BayesLMMError",
    "Bernoulli",
    "Binomial",
    "DataError",
    "Gaussian",
    "Kinship",
    "KinshipError",
    "LowRankKinship",
    "SparsePedigreeKinship",
    "ModelSpec",
    "Poisson",
    "RandomTerm",
    "SpecificationError",
    "compare",
    "compare_fits",
    "datasets",
    "get_family",
    "grm",
    "io",
    "load_fit",
    "loco_grms",
    "pedigree_relationship",
    "plot_comparison",
    "results",
    "scan",
    "specify",
]
