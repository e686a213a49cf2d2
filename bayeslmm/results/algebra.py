"""The Gaussian mixed-model algebra the results layer asks of a fit's parameters.

Predictions with new individuals, the marginal leave-one-out likelihood, SNP effects and the
conditional AIC need V⁻¹ pieces, BLUPs and their prediction errors at a fit's variances.
That algebra belongs to the engines (:mod:`bayeslmm.engines.gaussian`); the results layer
imports no engine, so the engines package hands the module over when it is imported
(every fit is made by an engine, so it is always there when a fit asks):

    register_gaussian_algebra(module)   # in bayeslmm/engines/__init__.py
    gaussian_algebra().henderson(spec, sigmas, residual)   # in bayeslmm/results/...

Examples
--------
>>> import bayeslmm as bl
>>> gaussian_algebra().__name__
'bayeslmm.engines.gaussian'
"""

from __future__ import annotations

from typing import Any

_SUPPLIED: dict[str, Any] = {}


def register_gaussian_algebra(module: Any) -> None:
    """Record the module that answers :mod:`bayeslmm.engines.gaussian`'s functions."""
    _SUPPLIED["gaussian"] = module


def gaussian_algebra() -> Any:
    """The registered Gaussian algebra (:mod:`bayeslmm.engines.gaussian`)."""
    module = _SUPPLIED.get("gaussian")
    if module is None:
        raise RuntimeError(
            "The Gaussian mixed-model algebra is supplied by bayeslmm's engines, which are "
            "not imported; run `import bayeslmm` (or fit the model with bayeslmm) first."
        )
    return module
