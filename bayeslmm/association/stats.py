"""Per-marker statistics of the mixed-model scan, in a basis where V is diagonal.

Model of one chromosome's scan: y = Xβ + x b + g + e, g ~ N(0, σ_g² K), e ~ N(0, σ_e² I), K =
U S Uᵀ the chromosome's (LOCO) kinship. In the rotated space (y* = Uᵀy, X* = UᵀX, x* = Uᵀx)
V = U diag(v) Uᵀ with v_i = σ_g² s_i + σ_e², so every quantity is a weighted sum with
weights w = 1/v. The scan itself whitens instead (y* = R⁻ᵀy with V = RᵀR at the null's
estimate, :mod:`bayeslmm.association.tridiagonal`): the same formulas with w = 1.

**Variance components held at the null** (every marker; GCTA's ``--mlma``, FaST-LMM): with
P = V⁻¹ − V⁻¹X(XᵀV⁻¹X)⁻¹XᵀV⁻¹ the null model's projection,

    b̂ = xᵀPy / xᵀPx,    SE(b̂) = (xᵀPx)^(-1/2),    Wald χ² = (xᵀPy)² / xᵀPx,

which is exactly the generalised-least-squares estimate of b in the model with [X, x] as
fixed effects and V fixed. xᵀPx = x*ᵀWx* − aᵀ(X*ᵀWX*)⁻¹a with a = X*ᵀWx*: for a block of
markers A = X*ᵀW G* is one BLAS-3 product, so a marker costs O(n p) once rotated (or
whitened).

The likelihood-ratio test at the null's h² (σ² profiled by ML under both models) is
n log(q₀/q₁) with q₁ = q₀ − (xᵀPy)²/xᵀPx and q₀ = yᵀPy (V's units).

**Exact** (GEMMA's ``-lmm``): h² re-estimated with the marker in the model, by REML for the
Wald test (the same 1-D profile, Brent search and AI polish as the spectral REML engine) and
by ML under both models for the likelihood-ratio test, in the eigenbasis or K's tridiagonal
basis (a :data:`ModelFactory`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import linalg

from bayeslmm.engines.reml.spectral import RotatedReml, maximise_rotated, optimise_h2

#: Largest h² of the ML fits (δ = σ_e²/σ_g² ≥ 1e-5, GEMMA's λ ≤ 1e5): a GRM of centred markers
#: has K 1 = 0, so with an intercept the ML likelihood grows without bound as h² → 1 (the
#: residual along 1 is fitted exactly while its variance (1 − h²)σ² vanishes). REML has no
#: such ridge (log|XᵀV⁻¹X| cancels it).
ML_H2_MAX = 1.0 / (1.0 + 1e-5)

#: A marker whose xᵀPx is below this share of xᵀWx lies (numerically) in the span of the
#: covariates: its effect is not identifiable, and it gets NaN statistics.
COLLINEAR_RTOL = 1e-10


def chi2_pvalue(stat: np.ndarray) -> np.ndarray:
    """Upper tail of χ²₁, accurate far into the tail (``scipy.stats.chi2.sf``).

    Examples
    --------
    >>> float(chi2_pvalue(np.array([3.841458820694124]))[0].round(6))
    0.05
    """
    from scipy import stats  # imported here: scipy.stats takes ~0.4 s to load

    return stats.chi2.sf(np.asarray(stat, dtype=float), 1)


@dataclass(frozen=True)
class MarkerStats:
    """Statistics of a block of markers (arrays of one value per marker)."""

    beta: np.ndarray
    se: np.ndarray
    chi2: np.ndarray
    p: np.ndarray


class RotatedNull:
    """The null model of one chromosome at fixed variance components, in the rotated space.

    Parameters
    ----------
    s : ndarray, shape (n,)
        Eigenvalues of the kinship.
    Uy : ndarray, shape (n,)
        Rotated response Uᵀy.
    UX : ndarray, shape (n, p)
        Rotated covariates UᵀX.
    sigma_g2, sigma_e2 : float
        Variance components under the null (the REML estimates).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> s, Uy, UX = rng.uniform(0, 2, 30), rng.normal(size=30), np.ones((30, 1))
    >>> null = RotatedNull(s, Uy, UX, 0.5, 1.0)
    >>> out = null.marker_stats(rng.normal(size=(30, 4)))
    >>> out.beta.shape, bool(np.all(out.p > 0))
    ((4,), True)
    """

    def __init__(
        self,
        s: np.ndarray,
        Uy: np.ndarray,
        UX: np.ndarray,
        sigma_g2: float,
        sigma_e2: float,
    ) -> None:
        self.n, self.p = UX.shape
        v = sigma_g2 * np.clip(np.asarray(s, dtype=float), 0.0, None) + sigma_e2
        if not np.all(v > 0):
            raise np.linalg.LinAlgError(
                "V is singular under the null (σ_e² = 0 and K singular); no GLS test exists"
            )
        self.w = 1.0 / v
        self.logdet_v = float(np.sum(np.log(v)))
        self.Xw = UX * self.w[:, None]
        self.chol = linalg.cholesky(UX.T @ self.Xw, lower=True)
        beta = linalg.cho_solve((self.chol, True), self.Xw.T @ Uy)
        resid = Uy - UX @ beta
        self.Py = resid * self.w  # P y in the rotated basis: V⁻¹(y − Xβ̂)
        self.q0 = float(resid @ self.Py)  # yᵀPy

    def marker_stats(self, G: np.ndarray, test: str = "wald") -> MarkerStats:
        """b̂, SE, the statistic of ``test`` and its p-value for rotated markers ``G`` (n × m).

        ``test="wald"``: (xᵀPy)²/xᵀPx; ``"lrt"``: n log(q₀/q₁), h² at the null value.
        """
        A = linalg.solve_triangular(self.chol, self.Xw.T @ G, lower=True)  # p × m, BLAS-3
        xwx = np.einsum("i,ij,ij->j", self.w, G, G)
        xpx = xwx - np.einsum("ij,ij->j", A, A)
        return gls_marker_stats(xwx, xpx, G.T @ self.Py, self.q0, self.n, test)


def gls_marker_stats(
    xwx: np.ndarray, xpx: np.ndarray, xpy: np.ndarray, q0: float, n: int, test: str = "wald"
) -> MarkerStats:
    """b̂, SE, the statistic of ``test`` and its p-value from each marker's xᵀV⁻¹x, xᵀPx and
    xᵀPy (V fixed at the null's), the null's q₀ = yᵀPy and the number of individuals n.

    A marker with xᵀPx ≤ :data:`COLLINEAR_RTOL` · xᵀV⁻¹x lies in the span of the covariates
    and gets NaN.

    Examples
    --------
    >>> out = gls_marker_stats(np.array([4.0]), np.array([4.0]), np.array([2.0]), 10.0, 20)
    >>> float(out.beta[0]), float(out.se[0]), float(out.chi2[0])
    (0.5, 0.5, 1.0)
    """
    ok = xpx > COLLINEAR_RTOL * xwx
    with np.errstate(divide="ignore", invalid="ignore"):
        xpx = np.where(ok, xpx, np.nan)
        beta = xpy / xpx
        se = 1.0 / np.sqrt(xpx)
        wald = xpy * beta
        if test == "lrt":
            # q₁/q₀ = 1 − χ²_W/q₀; log1p keeps tiny effects accurate
            stat = -n * np.log1p(-np.clip(wald / q0, 0.0, 1.0))
        else:
            stat = wald
    return MarkerStats(beta=beta, se=se, chi2=stat, p=chi2_pvalue(stat))


#: Builds the REML (or ML) model of rotated data: ``factory(Uy, UX, criterion)``; the
#: eigenbasis gives ``RotatedReml(s, Uy, UX, criterion)``, the tridiagonal basis
#: :class:`~bayeslmm.association.tridiagonal.TridiagonalReml`.
ModelFactory = Callable[[np.ndarray, np.ndarray, str], RotatedReml]


def eigen_factory(s: np.ndarray) -> ModelFactory:
    """The :data:`ModelFactory` of the eigenbasis with eigenvalues ``s``.

    Examples
    --------
    >>> eigen_factory(np.ones(3))(np.zeros(3), np.ones((3, 1)), "ml").criterion
    'ml'
    """
    return lambda Uy, UX, criterion: RotatedReml(s, Uy, UX, criterion=criterion)


class _ClampedMl:
    """The ML profile over h² (σ² profiled out) of a rotated model with
    ``criterion="ml"``, so that :func:`optimise_h2`'s grid and Brent search serve both
    likelihoods. Above :data:`ML_H2_MAX` the profile is flat at its value there."""

    def __init__(self, model: RotatedReml) -> None:
        self.model = model

    def profile(self, h2: float) -> float:
        """−2ℓ_ML at min(h², ML_H2_MAX) with σ̂² = rᵀD⁻¹r / n (+inf where undefined)."""
        return float(self.model.profile(min(float(h2), ML_H2_MAX)))

    def profile_many(self, h2: np.ndarray) -> np.ndarray:
        return self.model.profile_many(np.minimum(np.asarray(h2, dtype=float), ML_H2_MAX))


@dataclass(frozen=True)
class ExactFit:
    """One marker refitted with its own variance components."""

    beta: float
    se: float
    chi2: float
    p: float
    h2: float
    sigma_g2: float
    sigma_e2: float


def reml_rotated(model: RotatedReml, max_polish: int = 20) -> tuple[np.ndarray, dict]:
    """REML of y* ~ N(X*β, diag(σ_g² s + σ_e²)): θ̂ = (σ_g², σ_e²) and the state at θ̂.

    The spectral engine's optimiser (``bayeslmm.engines.reml.spectral``): a grid over log δ,
    Brent refinement, exact boundaries, then Newton/AI steps in (σ_g², σ_e²).

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> s = rng.uniform(0, 2, 50)
    >>> Uy = rng.normal(size=50) * np.sqrt(0.5 * s + 0.5)
    >>> theta, state = reml_rotated(RotatedReml(s, Uy, np.ones((50, 1))))
    >>> theta.shape, sorted(state)[:2]
    ((2,), ['Py', 'Xw'])
    """
    _, theta, state, _ = maximise_rotated(model, max_polish=max_polish)
    return theta, state


def ml_profile_minimum(factory: ModelFactory, Uy: np.ndarray, UX: np.ndarray) -> float:
    """min over h² ∈ [0, ML_H2_MAX] of −2ℓ_ML (σ² and β profiled out).

    Examples
    --------
    >>> rng = np.random.default_rng(2)
    >>> s, Uy = rng.uniform(0, 2, 40), rng.normal(size=40)
    >>> one = np.ones((40, 1))
    >>> bigger = np.column_stack([one, rng.normal(size=40)])
    >>> f = eigen_factory(s)
    >>> ml_profile_minimum(f, Uy, bigger) <= ml_profile_minimum(f, Uy, one)
    True
    """
    model = _ClampedMl(factory(Uy, UX, "ml"))
    return float(model.profile(optimise_h2(model)))


def exact_marker(
    factory: ModelFactory,
    Uy: np.ndarray,
    UX: np.ndarray,
    g: np.ndarray,
    test: str = "wald",
    null_ml: float | None = None,
) -> ExactFit:
    """Refit one rotated marker ``g`` with its own variance components (GEMMA's exact test).

    ``Uy``, ``UX`` and ``g`` are in the basis of ``factory``'s model (the eigenbasis, or K's
    tridiagonal basis).

    b̂ and SE come from the REML fit with the marker as a fixed effect (what
    ``LMM(...).fit(method="reml")`` reports for it); the p-value from its Wald χ², or, for
    ``test="lrt"``, from 2(ℓ_ML(alternative) − ℓ_ML(null)), h² maximised under each.
    ``null_ml`` is −2ℓ_ML of the null (:func:`ml_profile_minimum`), computed once per
    chromosome.

    Examples
    --------
    >>> rng = np.random.default_rng(3)
    >>> s = rng.uniform(0, 2, 60)
    >>> g = rng.normal(size=60)
    >>> Uy = 0.5 * g + rng.normal(size=60) * np.sqrt(0.5 * s + 0.5)
    >>> fit = exact_marker(eigen_factory(s), Uy, np.ones((60, 1)), g)
    >>> bool(fit.p < 0.05), 0.0 <= fit.h2 <= 1.0
    (True, True)
    """
    X1 = np.column_stack([UX, g])
    theta, state = reml_rotated(factory(Uy, X1, "reml"))
    beta = float(state["beta"][-1])
    var = float(state["beta_cov"][-1, -1])
    se = math.sqrt(var) if var > 0 else math.nan
    if test == "lrt":
        if null_ml is None:
            null_ml = ml_profile_minimum(factory, Uy, UX)
        stat = max(null_ml - ml_profile_minimum(factory, Uy, X1), 0.0)
    else:
        stat = beta * beta / var if var > 0 else math.nan
    total = float(theta.sum())
    return ExactFit(
        beta=beta,
        se=se,
        chi2=stat,
        p=float(chi2_pvalue(np.array([stat]))[0]),
        h2=float(theta[0] / total) if total > 0 else math.nan,
        sigma_g2=float(theta[0]),
        sigma_e2=float(theta[1]),
    )
