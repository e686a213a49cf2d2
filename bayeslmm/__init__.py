"""bayeslmm: Bayesian linear mixed models and GLMMs for quantitative genetics.

Layers (data flows one way): ``kinship``/``io``/``datasets`` → ``spec`` → ``engines`` →
``results`` → interfaces (``model``, ``cli``).

The names below are imported when first used (PEP 562), so ``import bayeslmm`` and the
command line (``bayeslmm.cli``) load only the layers a task reaches: a command-line fit never
imports the association scan, the REML engine or the simulators.

Examples
--------
>>> import bayeslmm as bl
>>> hyper = bl.datasets.load_hyper()  # doctest: +SKIP
>>> K = bl.grm(hyper.genotypes).normalized()  # doctest: +SKIP
>>> fit = bl.LMM("bp ~ 1 + (1|id)", data=hyper.pheno, kinship={"id": K}).fit()  # doctest: +SKIP
>>> fit.heritability()  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

# Imported at once for its side effect: the engines package hands the results layer its
# Gaussian algebra (bayeslmm/results/algebra.py), which every `import bayeslmm` has promised;
# it costs NumPy and SciPy's linalg, no engine.
import bayeslmm.engines  # noqa: F401
from bayeslmm._imports import lazy_names
from bayeslmm._version import __version__ as __version__  # re-exported: bl.__version__
from bayeslmm.errors import BayesLMMError, DataError, KinshipError, SpecificationError

if TYPE_CHECKING:  # what the lazy names are, for type checkers and editors
    from bayeslmm import datasets, io, results
    from bayeslmm.association import scan
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

__getattr__, __dir__ = lazy_names(
    globals(),
    {
        "datasets": "bayeslmm.datasets",
        "io": "bayeslmm.io",
        "results": "bayeslmm.results",
        "scan": "bayeslmm.association",
        **dict.fromkeys(("Bernoulli", "Binomial", "Gaussian", "Poisson"), "bayeslmm.families"),
        "get_family": "bayeslmm.families",
        **dict.fromkeys(
            ("Kinship", "LowRankKinship", "SparsePedigreeKinship", "grm", "loco_grms"),
            "bayeslmm.kinship",
        ),
        "pedigree_relationship": "bayeslmm.kinship",
        "LMM": "bayeslmm.model",
        "compare_fits": "bayeslmm.results.compare",
        "plot_comparison": "bayeslmm.results.compare",
        "compare": "bayeslmm.results.criteria",
        "load_fit": "bayeslmm.saved",
        **dict.fromkeys(("ModelSpec", "RandomTerm", "specify"), "bayeslmm.spec"),
    },
)

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
