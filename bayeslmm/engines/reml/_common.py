"""What both REML routes hand back, and the formulas they share."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
import pandas as pd

LOG_2PI = math.log(2.0 * math.pi)

#: The likelihood an engine maximises: the restricted one (REML) or the full one (ML, lme4's
#: ``REML = FALSE``). Every route takes it as a flag; the algebra differs only in P ↔ V⁻¹.
Criterion = Literal["reml", "ml"]
CRITERIA: tuple[str, ...] = get_args(Criterion)


@dataclass
class RawFit:
    """Engine-internal result, turned into a :class:`RemlFit` by ``fit_reml``."""

    theta: np.ndarray
    theta_cov: np.ndarray
    beta: np.ndarray
    beta_cov: np.ndarray
    loglik_reml: float
    loglik_ml: float
    blups: dict[str, pd.DataFrame]
    n_iter: int
    converged: bool
    messages: list[str] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)
    route: str | None = None  # AI-REML evaluator that produced the final state: dense / mme


def reml_loglik(logdet_v: float, logdet_xvx: float, ypy: float, n: int, p: int) -> float:
    """ℓ_R = −½ [log|V| + log|Xᵀ V⁻¹ X| + yᵀ P y + (n − p) log 2π] (lme4's REML criterion / −2)."""
    return -0.5 * (logdet_v + logdet_xvx + ypy + (n - p) * LOG_2PI)


def ml_loglik(logdet_v: float, ypy: float, n: int) -> float:
    """ℓ = −½ [log|V| + rᵀV⁻¹r + n log 2π] at the GLS β̂ (rᵀV⁻¹r = yᵀPy), β profiled out."""
    return -0.5 * (logdet_v + ypy + n * LOG_2PI)


def ml_loglik_reprofiled(logdet_v: float, ypy: float, n: int) -> float:
    """Full log-likelihood at the REML covariance shape with the common scale re-profiled.

    For a REML fit lme4's ``logLik(fit, REML = FALSE)`` keeps the relative covariance
    parameters and the GLS β̂, and replaces σ̂² = rᵀV₀⁻¹r/(n − p) by its ML value rᵀV₀⁻¹r/n.
    With V = c V₀ this is max_c ℓ_ML(c V) = −½ [log|V| + n log(q/n) + n + n log 2π], q = rᵀV⁻¹r
    (and rᵀV⁻¹r = yᵀPy since P y = V⁻¹(y − Xβ̂)).
    """
    return -0.5 * (logdet_v + n * math.log(ypy / n) + n + n * LOG_2PI)


def likelihoods(
    criterion: str, logdet_v: float, logdet_xvx: float, ypy: float, n: int, p: int
) -> dict[str, float]:
    """``loglik`` (the maximised criterion's), ``loglik_reml`` and ``loglik_ml`` of one
    evaluation: a REML fit reports the full likelihood with the scale re-profiled (lme4's
    ``logLik(fit, REML = FALSE)``), an ML fit its maximised full likelihood.

    Examples
    --------
    >>> out = likelihoods("reml", 1.0, 0.5, 10.0, 20, 2)
    >>> out["loglik"] == out["loglik_reml"], out["loglik_ml"] == ml_loglik_reprofiled(1.0, 10.0, 20)
    (True, True)
    """
    reml = reml_loglik(logdet_v, logdet_xvx, ypy, n, p)
    if criterion == "ml":
        full = ml_loglik(logdet_v, ypy, n)
        return {"loglik": full, "loglik_reml": reml, "loglik_ml": full}
    return {
        "loglik": reml,
        "loglik_reml": reml,
        "loglik_ml": ml_loglik_reprofiled(logdet_v, ypy, n),
    }


def safe_inverse(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a symmetric information matrix; NaN where it is singular."""
    k = matrix.shape[0]
    if k == 0:
        return np.zeros((0, 0))
    if not np.all(np.isfinite(matrix)):
        return np.full((k, k), np.nan)
    w = np.linalg.eigvalsh(matrix)
    if w[0] <= max(abs(w[-1]), 1e-300) * 1e-12:
        return np.full((k, k), np.nan)
    inv = np.linalg.inv(matrix)
    return 0.5 * (inv + inv.T)
