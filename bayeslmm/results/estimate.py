"""The estimate protocol: what every engine hands to the results layer.

Every engine (NUTS, REML, Laplace ML) ends in one of two shapes of knowledge about the same
named parameters of a :class:`~bayeslmm.spec.ModelSpec`:

- :class:`PosteriorEstimate`: posterior draws (NUTS);
- :class:`PointEstimate`: a point estimate x̂ of a parameter vector with its sampling
  covariance (REML: θ̂ with the inverse AI matrix and β̂ with (XᵀV⁻¹X)⁻¹; Laplace ML: (θ̂, β̂)
  with 2H⁻¹).

Both answer :meth:`~Estimate.evaluate`: given a function of the model's parameters (a
:class:`Params` view: each random term's Σ, the fixed effects β, the residual variance, the
observation-level variance), return the function's value as a :class:`Quantity` — a
:class:`Draws` (the function applied to every draw) or a :class:`Point` (its value at x̂ with
the Jacobian, for delta-method standard errors). Heritability, variance components, scales,
reaction norms and summary.json are written once as such functions (``bayeslmm.results.
tables``), so the posterior and the point estimate go through the same formula.

Functions receive arrays with leading "sample" dimensions: (chain, draw) for draws, none for
a point. Write them with ``...`` broadcasting (e.g. ``sigma[..., 0, 0]``).

Examples
--------
>>> import numpy as np
>>> p = Point.of(np.array([2.0, 1.0]), np.diag([0.04, 0.01]))
>>> share = p.map(lambda x: x[..., :1] / x.sum(axis=-1, keepdims=True))
>>> round(float(share.value[0]), 4), round(float(share.se()[0]), 4)
(0.6667, 0.0314)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from bayeslmm.spec import ModelSpec

#: Columns every engine's tables share, in this order (engine-specific columns follow).
COMMON_COLUMNS = ("estimate", "se", "ci_low", "ci_high")

#: Extra columns of posterior tables (ArviZ's summary), after :data:`COMMON_COLUMNS`.
POSTERIOR_COLUMNS = ("mean", "sd", "hdi_low", "hdi_high", "ess_bulk", "ess_tail", "r_hat")


# ---------------------------------------------------------------------------------------
# quantities: the answer of an estimate to a function
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Draws:
    """Posterior draws of k quantities, ``values`` of shape (chain, draw, k)."""

    values: np.ndarray

    def __add__(self, other: Draws) -> Draws:
        return Draws(self.values + other.values)

    def __truediv__(self, other: Draws) -> Draws:
        return Draws(self.values / other.values)

    def __len__(self) -> int:
        return int(self.values.shape[-1])

    def estimates(self) -> np.ndarray:
        """Posterior means."""
        return self.values.mean(axis=(0, 1))

    def summary(self, prob: float) -> list[dict[str, float]]:
        """Per quantity: the common columns (posterior mean and SD, HDI as the interval),
        the posterior summary (:func:`~bayeslmm.results.summary.posterior_summary`) and the
        median; all quantities summarised at once
        (:func:`~bayeslmm.results.summary.posterior_summaries`)."""
        from bayeslmm.results.summary import POSTERIOR_KEYS, posterior_summaries

        columns = posterior_summaries(self.values, prob)
        columns["median"] = np.median(self.values, axis=(0, 1))
        keys = (*POSTERIOR_KEYS, "median")
        rows = []
        for values in zip(*(columns[key].tolist() for key in keys), strict=True):
            s = dict(zip(keys, values, strict=True))
            common = {
                "estimate": s["mean"],
                "se": s["sd"],
                "ci_low": s["hdi_low"],
                "ci_high": s["hdi_high"],
                "ci_prob": float(prob),
            }
            rows.append({**common, **s})
        return rows


@dataclass(frozen=True)
class Point:
    """Point estimates g(x̂) of k quantities with their Jacobian ∂g/∂x (k × P) and Cov(x̂).

    ``+`` and ``/`` propagate the Jacobian exactly (the delta method); :meth:`map` applies
    any function of the underlying vector through a finite-difference Jacobian.
    """

    value: np.ndarray
    jacobian: np.ndarray
    cov: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray, cov: np.ndarray) -> Point:
        """The parameter vector itself (identity Jacobian)."""
        x = np.asarray(x, dtype=float)
        return cls(x, np.eye(x.size), np.asarray(cov, dtype=float))

    def __add__(self, other: Point) -> Point:
        return Point(self.value + other.value, self.jacobian + other.jacobian, self.cov)

    def __truediv__(self, other: Point) -> Point:
        a, b = self.value, other.value
        with np.errstate(divide="ignore", invalid="ignore"):
            jac = (self.jacobian * b[:, None] - a[:, None] * other.jacobian) / (b**2)[:, None]
            return Point(a / b, jac, self.cov)

    def __len__(self) -> int:
        return int(self.value.size)

    def map(self, fn: Callable[[np.ndarray], np.ndarray]) -> Point:
        """fn applied to this (vector) quantity, the Jacobian chained by central differences."""
        value = np.atleast_1d(np.asarray(fn(self.value), dtype=float))
        inner = _fd_jacobian(fn, self.value, value)
        return Point(value, inner @ self.jacobian, self.cov)

    def estimates(self) -> np.ndarray:
        return self.value

    def se(self) -> np.ndarray:
        """Delta-method standard errors sqrt(diag(J Cov Jᵀ)) (NaN where undefined)."""
        with np.errstate(invalid="ignore"):
            var = np.einsum("kp,pq,kq->k", self.jacobian, self.cov, self.jacobian)
        return np.sqrt(np.where(np.isfinite(var) & (var >= 0), var, np.nan))

    def summary(self, prob: float) -> list[dict[str, float]]:
        """``estimate, se, ci_low, ci_high, ci_prob`` per quantity (Wald intervals)."""
        from scipy import stats  # imported here: scipy.stats takes ~0.4 s to load

        z = float(stats.norm.ppf(0.5 + prob / 2))
        se = self.se()
        return [
            {
                "estimate": float(v),
                "se": float(s),
                "ci_low": float(v - z * s),
                "ci_high": float(v + z * s),
                "ci_prob": float(prob),
            }
            for v, s in zip(self.value, se, strict=True)
        ]


Quantity = Draws | Point


def _fd_jacobian(fn: Callable, x: np.ndarray, f0: np.ndarray) -> np.ndarray:
    """Jacobian of fn at x by central differences with one Richardson extrapolation
    (error O(h⁴), so rounding dominates at ~1e-12 relative). Steps are relative to each
    entry's magnitude; an entry at 0 (a variance on the boundary) steps relative to the
    largest entry."""
    x = np.asarray(x, dtype=float)
    jac = np.zeros((f0.size, x.size))
    floor = 1e-3 * float(np.max(np.abs(x))) if x.size else 0.0

    def central(i: int, h: float) -> np.ndarray:
        up, down = x.copy(), x.copy()
        up[i] += h
        down[i] -= h
        with np.errstate(invalid="ignore", divide="ignore"):
            f_up = np.atleast_1d(np.asarray(fn(up), dtype=float))
            f_down = np.atleast_1d(np.asarray(fn(down), dtype=float))
        return (f_up - f_down) / (2 * h)

    for i in range(x.size):
        h = 1e-3 * max(abs(x[i]), floor, 1e-12)
        jac[:, i] = (4.0 * central(i, h / 2) - central(i, h)) / 3.0
    return jac


def stack(quantities: Sequence[Quantity]) -> Quantity:
    """Concatenate quantities along their last axis."""
    first = quantities[0]
    if isinstance(first, Draws):
        return Draws(np.concatenate([q.values for q in quantities], axis=-1))
    return Point(
        np.concatenate([q.value for q in quantities]),
        np.concatenate([q.jacobian for q in quantities]),
        first.cov,
    )


# ---------------------------------------------------------------------------------------
# the parameters a function may read
# ---------------------------------------------------------------------------------------
class Params(Protocol):
    """The model's parameters as arrays with leading sample dimensions.

    ``sigma(t)``: random term t's (index in ``spec.terms``) m × m covariance Σ (at
    K_ii = 1), shape (..., m, m);
    ``beta``: fixed effects, shape (..., p); ``residual_variance(rows)``: the mean Gaussian
    residual variance σ_i² over the observations ``rows`` (all when None), shape (...);
    ``olre_variance``: the Poisson observation-level variance, shape (...) (0 without one);
    ``sigma_coef``: coefficients of a log-σ regression (posterior only; None otherwise).
    """

    beta: np.ndarray
    olre_variance: np.ndarray
    sigma_coef: np.ndarray | None

    def sigma(self, t: int) -> np.ndarray: ...

    def residual_variance(self, rows: np.ndarray | None = None) -> np.ndarray: ...


class Estimate(Protocol):
    """What an engine hands to the results layer (see the module docs)."""

    spec: ModelSpec

    def evaluate(self, fn: Callable[[Params], np.ndarray]) -> Quantity: ...


# ---------------------------------------------------------------------------------------
# posterior draws
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _DrawParams:
    posterior: Any
    spec: ModelSpec

    def _values(self, name: str) -> np.ndarray:
        return np.asarray(self.posterior[name].transpose("chain", "draw", ...).values, float)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.posterior.sizes["chain"], self.posterior.sizes["draw"])

    def sigma(self, t: int) -> np.ndarray:
        g = self.spec.terms[t].group
        if f"cov_{g}" in self.posterior:
            return self._values(f"cov_{g}")
        if f"var_{g}" in self.posterior:
            return self._values(f"var_{g}").reshape(*self.shape, 1, 1)
        return (self._values(f"sd_{g}") ** 2).reshape(*self.shape, 1, 1)

    @property
    def beta(self) -> np.ndarray:
        if "beta" not in self.posterior:
            return np.zeros((*self.shape, 0))
        return self._values("beta").reshape(*self.shape, -1)

    @property
    def olre_variance(self) -> np.ndarray:
        if "var_olre" not in self.posterior:
            return np.zeros(self.shape)
        return self._values("var_olre")

    @property
    def sigma_coef(self) -> np.ndarray | None:
        return self._values("sigma_coef") if "sigma_coef" in self.posterior else None

    def residual_variance(self, rows: np.ndarray | None = None) -> np.ndarray:
        spec = self.spec
        if spec.sigma_X is not None and spec.family.is_gaussian:
            S = np.asarray(spec.sigma_X, dtype=float)
            S = S if rows is None else S[np.asarray(rows)]
            return np.exp(2.0 * np.einsum("rp,cdp->cdr", S, self.sigma_coef)).mean(axis=-1)
        if "sigma" in self.posterior and spec.family.is_gaussian:
            return self._values("sigma") ** 2
        return self._values("var_residual")


@dataclass(frozen=True)
class PosteriorEstimate:
    """Posterior draws of a model's parameters (``idata.posterior`` of a NUTS fit).

    Examples
    --------
    >>> # PosteriorEstimate(fit.posterior, fit.spec).evaluate(lambda p: p.beta)
    """

    posterior: Any
    spec: ModelSpec

    def evaluate(self, fn: Callable[[Params], np.ndarray]) -> Draws:
        params = _DrawParams(self.posterior, self.spec)
        values = np.asarray(fn(params), dtype=float)
        return Draws(values.reshape(*params.shape, -1))


# ---------------------------------------------------------------------------------------
# point estimates
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ParameterLayout:
    """Where each entry of a point estimate's vector x lives in the model.

    Attributes
    ----------
    sigma_entries : tuple of (t, j, k)
        For each covariance entry of x (in order): the term's index in ``spec.terms`` and the
        (j, k) element of its Σ (``j == k`` for a variance, both triangles filled for a covariance).
    sd_entries : bool
        True when those entries are standard deviations θ (Laplace ML): more exactly the
        entries T_jk (j ≥ k) of the lower-triangular T with Σ = T Tᵀ, lme4's θ, which for an
        uncorrelated term are the SDs; False when they are variances / covariances (REML).
    residual_rows : ndarray of int or None
        Gaussian: for each observation, the position in x of its residual variance.
    olre : int or None
        Position of the observation-level SD (Laplace, Poisson).
    beta : slice
        The fixed effects.
    """

    sigma_entries: tuple[tuple[int, int, int], ...]
    sd_entries: bool
    residual_rows: np.ndarray | None
    olre: int | None
    beta: slice


@dataclass(frozen=True)
class _PointParams:
    x: np.ndarray
    layout: ParameterLayout
    spec: ModelSpec
    sigma_coef: None = None

    def sigma(self, t: int) -> np.ndarray:
        m = self.spec.terms[t].n_coef
        S = np.zeros((m, m))
        for pos, (term, j, k) in enumerate(self.layout.sigma_entries):
            if term != t:
                continue
            S[j, k] = self.x[pos]
            if not self.layout.sd_entries:
                S[k, j] = self.x[pos]
        # SD entries are the lower-triangular T of Σ = T Tᵀ (diagonal T: σ_j², as before)
        return S @ S.T if self.layout.sd_entries else S

    @property
    def beta(self) -> np.ndarray:
        return self.x[self.layout.beta]

    @property
    def olre_variance(self) -> np.ndarray:
        pos = self.layout.olre
        return np.asarray(0.0 if pos is None else self.x[pos] ** 2)

    def residual_variance(self, rows: np.ndarray | None = None) -> np.ndarray:
        at = self.layout.residual_rows
        if at is None:
            raise ValueError("This model has no Gaussian residual variance.")
        at = at if rows is None else at[np.asarray(rows)]
        return np.asarray(self.x[at].mean())


@dataclass(frozen=True)
class PointEstimate:
    """A point estimate x̂ of the model's parameters with its sampling covariance.

    Examples
    --------
    >>> # PointEstimate(x, cov, layout, spec).evaluate(lambda p: p.beta)
    """

    x: np.ndarray
    cov: np.ndarray
    layout: ParameterLayout
    spec: ModelSpec
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def evaluate(self, fn: Callable[[Params], np.ndarray]) -> Point:
        def at(x: np.ndarray) -> np.ndarray:
            return np.atleast_1d(np.asarray(fn(_PointParams(x, self.layout, self.spec)), float))

        x = np.asarray(self.x, dtype=float)
        value = at(x)
        return Point(value, _fd_jacobian(at, x, value), np.asarray(self.cov, dtype=float))
