"""The Bayesian engine: a PyMC model builder, NUTS sampling and exact conditional draws."""

from bayeslmm.engines.bayes.builder import (
    BuiltModel,
    SpectralBasis,
    build,
    build_model,
    choose_strategy,
    spectral_basis,
)

__all__ = [
    "BuiltModel",
    "SpectralBasis",
    "build",
    "build_model",
    "choose_strategy",
    "spectral_basis",
]
