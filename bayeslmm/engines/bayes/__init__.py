"""The Bayesian engine: a PyMC model builder, NUTS sampling and exact conditional draws.

:func:`build` writes the model with the strategy :func:`choose` picks (one
:class:`Strategy` object each: spectral, latent, laplace-marginal;
:mod:`bayeslmm.engines.bayes.strategies`); :func:`bayeslmm.engines.bayes.sampling.sample`
samples it.
"""

from bayeslmm.engines.bayes.builder import (
    BuiltModel,
    SpectralBasis,
    build,
    build_model,
    choose_strategy,
    spectral_basis,
    spectral_obstacles,
)
from bayeslmm.engines.bayes.options import SamplerName, StrategyName
from bayeslmm.engines.bayes.strategies import Strategy, choose, get_strategy, strategy_of

__all__ = [
    "BuiltModel",
    "SamplerName",
    "SpectralBasis",
    "Strategy",
    "StrategyName",
    "build",
    "build_model",
    "choose",
    "choose_strategy",
    "get_strategy",
    "spectral_basis",
    "spectral_obstacles",
    "strategy_of",
]
