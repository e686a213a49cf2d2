"""bayeslmm: Bayesian linear mixed models and GLMMs for quantitative genetics.

Layers (data flows one way): ``kinship``/``io``/``datasets`` → ``spec`` → ``engines`` →
``results`` → interfaces (``model``, ``cli``).
"""

from bayeslmm.errors import BayesLMMError, DataError, KinshipError, SpecificationError
from bayeslmm.families import Bernoulli, Binomial, Gaussian, Poisson, get_family
from bayeslmm.kinship import Kinship
from bayeslmm.spec import ModelSpec, RandomTerm, specify

__version__ = "0.1.0"

__all__ = [
    "BayesLMMError",
    "Bernoulli",
    "Binomial",
    "DataError",
    "Gaussian",
    "Kinship",
    "KinshipError",
    "ModelSpec",
    "Poisson",
    "RandomTerm",
    "SpecificationError",
    "get_family",
    "specify",
]
