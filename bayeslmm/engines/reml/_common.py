"""What both REML routes hand back, and the formulas they share."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from bayeslmm.engines.reml._structure import Structure

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

    @classmethod
    def from_state(cls, state: Mapping[str, Any], **fields: Any) -> RawFit:
        """The fit at an evaluator's final state: β, its covariance and both log-likelihoods
        from ``state`` (``beta``, ``beta_cov``, ``loglik_reml``, ``loglik_ml``), the rest
        from ``fields``.

        Examples
        --------
        >>> state = {"beta": np.zeros(1), "beta_cov": np.eye(1), "loglik_reml": -3.0,
        ...          "loglik_ml": -2.5}
        >>> raw = RawFit.from_state(state, theta=np.ones(2), theta_cov=np.eye(2), blups={},
        ...                         n_iter=4, converged=True)
        >>> raw.loglik_ml, raw.n_iter
        (-2.5, 4)
        """
        keys = ("beta", "beta_cov", "loglik_reml", "loglik_ml")
        return cls(**{key: state[key] for key in keys}, **fields)


def check_criterion(criterion: str) -> None:
    """Raise ValueError unless ``criterion`` is one of :data:`CRITERIA`.

    Examples
    --------
    >>> check_criterion("ml") is None
    True
    """
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}; got {criterion!r}")


class CachedFactorReml:
    """The inputs of an AI-REML evaluator on (y, X) and its last factorisation.

    Subclasses (:class:`~bayeslmm.engines.reml.aireml.DenseReml`,
    :class:`~bayeslmm.engines.reml.mme.MmeReml`) write ``_factor_uncached(theta)``;
    :meth:`_factor` keeps the last point's, because the step-halving search factorises the
    point that ``evaluate`` then needs again.
    """

    def __init__(
        self, structure: Structure, y: np.ndarray, X: np.ndarray, criterion: Criterion = "reml"
    ) -> None:
        check_criterion(criterion)
        self.criterion = criterion
        self.structure = structure
        self.y = np.asarray(y, dtype=float)
        self.X = np.asarray(X, dtype=float)
        self.n, self.p = self.X.shape
        self._last: tuple[bytes, Any] | None = None

    def _factor(self, theta: np.ndarray) -> Any:
        key = theta.tobytes()
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        out = self._factor_uncached(theta)
        self._last = (key, out)
        return out

    def _factor_uncached(self, theta: np.ndarray) -> Any:
        raise NotImplementedError


def one_term_blups(
    structure: Structure, blup: np.ndarray, pev: np.ndarray, levels: Any
) -> dict[str, pd.DataFrame]:
    """The BLUP table of a model with one random term of one coefficient: the BLUP and its
    prediction error variance per level (column ``pev:<coefficient>``).

    Examples
    --------
    >>> # one_term_blups(structure, blup, pev, term.levels)["(1 | id)"].columns
    >>> # Index(['(Intercept)', 'pev:(Intercept)'], dtype='object')
    """
    term = structure.terms[0]
    name = "(Intercept)" if term.covariates[0] == "Intercept" else term.covariates[0]
    return {
        structure.term_labels[0]: pd.DataFrame(
            {name: blup, f"pev:{name}": pev}, index=pd.Index(levels, name=term.group)
        )
    }


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
