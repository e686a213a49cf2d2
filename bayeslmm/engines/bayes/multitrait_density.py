"""The multi-trait animal model's log posterior in closed form, sampled by nutpie.

Model (t traits, n individuals, rows in kinship order)::

    Y = X Bᵀ + U + E,   vec(U) ~ N(0, Σ_G ⊗ K),   rows of E ~ N(0, Σ_E)
    Σ = D R D (D = diag of SDs) for Σ_G and Σ_E:
        σ_a ~ the package's SD priors (HalfStudentT(3, 2.5 s_a) by default, s_a = sd of
        trait a),  R ~ LKJ(η = 2)
    β_a: Normal(mean y_a, 2.5 s_a) for the intercept of centred covariates, Normal(0,
        2.5 s_a / s_j) for slope j (the single-trait defaults, per trait); integrated out.

With K = Q S Qᵀ the rotated rows of Qᵀ(Y − X μ_β) are independent given (Σ_G, Σ_E) and the
β prior is folded in by Woodbury (:func:`~bayeslmm.engines.multitrait_gaussian.
rotated_loglik_grad`): O(n t³) per gradient, never an (n t)-square matrix.

Coordinates sampled: for each of Σ_G and Σ_E the Cholesky factor of the trait-standardised
matrix, L* (Σ = diag(s) L* L*ᵀ diag(s)), as (log L*_aa, L*_ab for a > b); then the missing
trait values, standardised (y = mean_a + s_a z). The density carries the Jacobian from these
coordinates to (SDs, correlation matrix), where the priors are stated::

    log |∂(σ, R)/∂θ| = Σ_a (t − a + 1) log L_aa − t Σ_a log σ_a + const   (a = 0, …, t − 1)

(|∂Σ/∂L| = 2^t Π L_aa^(t−a), the log diagonal adds Σ log L_aa, and |∂Σ/∂(σ, R)| =
2^t Π σ_a^t), and the LKJ density (η − 1) log|R| = (η − 1)(2 Σ log L_aa − 2 Σ log σ_a).

**Low-rank kinship** K = W Wᵀ (:class:`~bayeslmm.kinship.LowRankKinship`): the rotation is
[U₁, Q] (:meth:`~bayeslmm.kinship.LowRankKinship.rotation`), r + k rows through the same
kernel, and the n − r − k rows left out (data 0, covariance Σ_E) add
:func:`~bayeslmm.engines.multitrait_gaussian.null_rows_loglik`; the fit's ``route`` is
``"low-rank"``. With missing values the rotated data are [X, Y₀, E], E one unit column per
individual with a missing value: every completion of Y then lies in the rotated span, so its
rotated rows are exactly base + Σ (rotated e_i) y_ia, as on the dense eigenbasis with the
rotated unit columns in place of the rows of the eigenvectors (k grows by the number of such
individuals; the density is the dense kinship's W Wᵀ to rounding).

**Missing trait values** are sampled as parameters (data augmentation): the rotated route
stays exact, and each gradient costs O(n m) more for m missing values (the rotation of the
completed Y is updated through the m affected columns of Qᵀ). The posterior of the other
parameters is the one of the observed data.

Prior overrides (``priors={...}``): ``sd_<group>`` and ``sigma`` (every trait) or
``sd_<group>_<trait>`` and ``sigma_<trait>`` (one trait), any positive family with a closed
form; ``cor_<group>`` (genetic) and ``cor_residual`` (or brms's ``rescor``), ``("lkj", η)``.

The LKJ default η = 2 is the package's default for correlated random slopes: it is flat
enough to let data pull r_g anywhere in (−1, 1), while its density vanishing at ±1 keeps the
Cholesky coordinates away from the singular boundary, where NUTS diverges with small
samples; η = 1 (uniform on correlation matrices, brms's ``lkj(1)``) is one override away.

tests/multitrait/test_multitrait_density.py checks :meth:`MultiTraitDensity.logp` against a
dense stacked normal density built with np.kron plus the priors with a numerical Jacobian,
and its gradient against finite differences.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bayeslmm.engines.multitrait_gaussian import (
    cholesky_from_params,
    log_sds,
    multitrait_logp,
    null_rows_loglik,
    rotated_loglik_grad,
    scaled_cholesky_grad,
)
from bayeslmm.errors import DataError, SpecificationError
from bayeslmm.kinship.low_rank import LowRankKinship
from bayeslmm.multitrait_spec import MultiTraitSpec
from bayeslmm.priors import Prior

#: LKJ η of Σ_G's and Σ_E's correlation matrices unless overridden.
DEFAULT_LKJ_ETA = 2.0


#: Most cells (individuals × individuals with a missing value) of the unit columns the
#: low-rank route rotates with the data to sample missing values (4 × 10⁷ doubles: 320 MB,
#: and the thin SVD's copies of it).
MAX_MISSING_UNIT_CELLS = 40_000_000


def _as_prior(value: Any, key: str) -> Prior:
    if isinstance(value, Prior):
        return value
    if isinstance(value, tuple | list) and value and isinstance(value[0], str):
        return Prior(value[0], tuple(value[1:]))
    raise SpecificationError(
        f"The prior for '{key}' must be a tuple such as ('halfnormal', 2.0); got {value!r}."
    )


@dataclass(frozen=True)
class MultiTraitPriors:
    """Resolved priors: per-trait SD priors of Σ_G and Σ_E and the two LKJ η."""

    genetic_sd: tuple[Prior, ...]
    residual_sd: tuple[Prior, ...]
    genetic_eta: float
    residual_eta: float
    beta_mean: np.ndarray  # (t, p) prior means (centred-covariate intercept)
    beta_sd: np.ndarray  # (t, p)

    def table(self, traits: tuple[str, ...], group: str) -> dict[str, str]:
        out = {}
        for a, trait in enumerate(traits):
            out[f"sd_{group}_{trait}"] = self.genetic_sd[a].describe()
            out[f"sigma_{trait}"] = self.residual_sd[a].describe()
        out[f"cor_{group}"] = f"LKJ({self.genetic_eta:g})"
        out["cor_residual"] = f"LKJ({self.residual_eta:g})"
        return out


def _lkj_eta(value: Any, key: str) -> float:
    prior = _as_prior(value, key)
    if prior.family != "lkj":
        raise SpecificationError(
            f"'{key}' takes an LKJ prior on the correlation matrix, e.g. ('lkj', 2); got "
            f"{prior.describe()}."
        )
    return float(np.asarray(prior.params[0]))


def resolve_multitrait_priors(
    spec: MultiTraitSpec, centred_X: np.ndarray, has_intercept: bool
) -> MultiTraitPriors:
    """Default priors scaled to each trait, with the user's overrides applied."""
    traits, group = spec.traits, spec.group
    given = dict(spec.priors)
    known = {f"sd_{group}", "sigma", f"cor_{group}", "cor_residual", "rescor"}
    known |= {f"sd_{group}_{t}" for t in traits} | {f"sigma_{t}" for t in traits}
    unknown = sorted(set(given) - known)
    if unknown:
        raise SpecificationError(
            f"Unknown prior key(s) {unknown} for a multi-trait model; use {sorted(known)}."
        )
    Y = np.asarray(spec.Y, dtype=float)
    mean, sd = np.nanmean(Y, axis=0), np.nanstd(Y, axis=0)
    genetic, residual = [], []
    for a, trait in enumerate(traits):
        g = given.get(f"sd_{group}_{trait}", given.get(f"sd_{group}"))
        e = given.get(f"sigma_{trait}", given.get("sigma"))
        g = Prior("halfstudentt", (3.0, 2.5 * sd[a])) if g is None else _as_prior(g, "sd")
        e = Prior("halfstudentt", (3.0, 2.5 * sd[a])) if e is None else _as_prior(e, "sigma")
        genetic.append(g.require_closed_form_sd(f"sd_{group}_{trait}"))
        residual.append(e.require_closed_form_sd(f"sigma_{trait}"))
    geta = _lkj_eta(given[f"cor_{group}"], f"cor_{group}") if f"cor_{group}" in given else None
    rkey = "cor_residual" if "cor_residual" in given else "rescor"
    reta = _lkj_eta(given[rkey], rkey) if rkey in given else None
    t, p = len(traits), centred_X.shape[1]
    beta_mean, beta_sd = np.zeros((t, p)), np.zeros((t, p))
    for j in range(p):
        if has_intercept and j == 0:
            beta_mean[:, 0] = mean
            beta_sd[:, 0] = 2.5 * sd
        else:
            beta_sd[:, j] = 2.5 * sd / max(float(np.std(centred_X[:, j])), 1e-12)
    return MultiTraitPriors(
        genetic_sd=tuple(genetic),
        residual_sd=tuple(residual),
        genetic_eta=DEFAULT_LKJ_ETA if geta is None else geta,
        residual_eta=DEFAULT_LKJ_ETA if reta is None else reta,
        beta_mean=beta_mean,
        beta_sd=beta_sd,
    )


def matrix_log_prior(
    L: np.ndarray, sd_priors: tuple[Callable[[float], tuple[float, float]], ...], eta: float
) -> tuple[float, np.ndarray]:
    """log p of Σ = L Lᵀ in the log-diagonal Cholesky coordinates (see module notes), up to a
    constant, and its gradient with respect to the entries of L (lower triangle).

    SD priors on σ_a = ‖L_a‖ (each a function of log σ returning (log f(σ), d/d log σ)),
    LKJ(η) on R, and the Jacobian of (log L_aa, L_ab) → (σ, R).
    """
    t = L.shape[0]
    sq = np.sum(L * L, axis=1)
    log_sigma = 0.5 * np.log(sq)
    diag = np.diag(L)
    value = 0.0
    coef = np.zeros(t)  # d value / d log σ_a
    for a in range(t):
        f, df = sd_priors[a](float(log_sigma[a]))
        value += f
        coef[a] = df
    value += (eta - 1.0) * 2.0 * (np.sum(np.log(diag)) - np.sum(log_sigma))
    exponents = t - np.arange(t) + 1.0
    value += float(np.sum(exponents * np.log(diag))) - t * float(np.sum(log_sigma))
    coef -= 2.0 * (eta - 1.0) + t
    grad = np.tril(L * (coef / sq)[:, None])
    grad[np.diag_indices(t)] += (2.0 * (eta - 1.0) + exponents) / diag
    return float(value), grad


class TraitCovariances:
    """What a multi-trait density with a ``traits`` tuple knows of its sampled Σ_G and Σ_E:
    the number of traits and of Cholesky parameters of one t × t factor (t log-diagonals
    and t(t − 1)/2 below the diagonal), a base of the densities on every route.

    Examples
    --------
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Example(TraitCovariances):
    ...     traits: tuple[str, ...]
    >>> Example(("y1", "y2", "y3")).n_chol
    6
    """

    traits: tuple[str, ...]

    @property
    def n_traits(self) -> int:
        return len(self.traits)

    @property
    def n_chol(self) -> int:
        t = self.n_traits
        return t + t * (t - 1) // 2


def centred_design(spec: MultiTraitSpec) -> tuple[np.ndarray, np.ndarray, bool]:
    """The design with its covariates centred when the formula has an intercept (the priors
    and the sampler see centred covariates; :func:`uncentre_beta` maps β back).

    Returns
    -------
    Xc : ndarray, shape (n, p)
    x_means : ndarray, shape (p,)
        The means removed (0 for the intercept and without one).
    has_intercept : bool

    Examples
    --------
    >>> # Xc, x_means, has_intercept = centred_design(spec)
    """
    X = np.asarray(spec.X, dtype=float)
    has_intercept = bool(spec.fixed_names) and spec.fixed_names[0] == "Intercept"
    x_means = np.zeros(X.shape[1])
    if has_intercept:
        x_means[1:] = X[:, 1:].mean(axis=0)
    return X - x_means, x_means, has_intercept


def uncentre_beta(beta: np.ndarray, x_means: np.ndarray, has_intercept: bool) -> np.ndarray:
    """β (t × p) of centred covariates as the formula's: the intercept absorbs the means
    (in place; returned for chaining).

    Examples
    --------
    >>> uncentre_beta(np.array([[1.0, 2.0]]), np.array([0.0, 0.5]), True).tolist()
    [[0.0, 2.0]]
    """
    if has_intercept and beta.shape[1] > 1:
        beta[:, 0] -= beta[:, 1:] @ x_means[1:]
    return beta


#: The dimensions of :func:`covariance_variables`' entries in the posterior.
COVARIANCE_DIMS: dict[str, tuple[str, ...]] = {
    "genetic_covariance": ("trait", "trait_"),
    "residual_covariance": ("trait", "trait_"),
    "genetic_correlation": ("trait", "trait_"),
    "residual_correlation": ("trait", "trait_"),
    "genetic_sd": ("trait",),
    "residual_sd": ("trait",),
}


def covariance_variables(G: np.ndarray, E: np.ndarray) -> dict[str, np.ndarray]:
    """The posterior's named variables of one draw of Σ_G and Σ_E: the covariances, their
    correlations and the SDs (a NaN in E, a residual a trait does not have, stays NaN).

    Examples
    --------
    >>> out = covariance_variables(np.array([[4.0, 2.0], [2.0, 4.0]]), np.eye(2))
    >>> float(out["genetic_correlation"][0, 1]), out["genetic_sd"].tolist()
    (0.5, [2.0, 2.0])
    """
    gsd, esd = np.sqrt(np.diag(G)), np.sqrt(np.diag(E))
    return {
        "genetic_covariance": G,
        "residual_covariance": E,
        "genetic_correlation": G / np.outer(gsd, gsd),
        "residual_correlation": E / np.outer(esd, esd),
        "genetic_sd": gsd,
        "residual_sd": esd,
    }


def heritability(G: np.ndarray, E: np.ndarray, kinship_scale: float) -> np.ndarray:
    """h² per trait of Gaussian traits, c σ²_G / (c σ²_G + σ²_E) at the kinship scale c.

    Examples
    --------
    >>> heritability(np.eye(2), 3.0 * np.eye(2), 1.0).tolist()
    [0.25, 0.25]
    """
    vg = kinship_scale * np.diag(G)
    return vg / (vg + np.diag(E))


@dataclass(frozen=True, eq=False)
class MultiTraitDensity(TraitCovariances):
    """Log posterior of the multi-trait model in the sampler's coordinates, with gradient.

    Build with :func:`multitrait_density`; :meth:`logp` for the sampler, :meth:`expand` for
    each kept draw.
    """

    traits: tuple[str, ...]
    fixed_names: tuple[str, ...]
    eigenvalues: np.ndarray  # (n,)
    Q: np.ndarray  # (n, n) eigenvectors
    base_resid: np.ndarray  # (n, t): Qᵀ(Y₀ − X μ_β), Y₀ zero where missing
    design: np.ndarray  # (n, t, p): Qᵀ X scaled by the prior SDs, per trait
    scale: np.ndarray  # (t,) trait SDs
    centre: np.ndarray  # (t,) trait means (missing values' origin)
    missing_rows: np.ndarray  # (m,) row of each missing value
    missing_traits: np.ndarray  # (m,) trait of each missing value
    genetic_priors: tuple[Callable[[float], tuple[float, float]], ...]
    residual_priors: tuple[Callable[[float], tuple[float, float]], ...]
    genetic_eta: float
    residual_eta: float
    beta_mean: np.ndarray  # (t, p)
    beta_sd: np.ndarray  # (t, p)
    x_means: np.ndarray  # (p,) covariate means removed (intercept: 0)
    has_intercept: bool
    kinship_scale: float
    ids: tuple[str, ...] = ()
    # low-rank kinship: rotated rows left out, whose data are 0 (eigenvalue 0, Σ_E only)
    n_null: int = 0
    route: str = "rotated"
    # row of Q holding each missing value's individual, where Q is not the n × n
    # eigenvectors (low-rank kinship: one row per individual with a missing value)
    missing_q_rows: np.ndarray | None = None
    # the resolved priors as the fit's tables print them (MultiTraitPriors.table)
    prior_table: dict[str, str] = field(default_factory=dict)

    @property
    def q_rows(self) -> np.ndarray:
        """Row of :attr:`Q` of each missing value."""
        return self.missing_rows if self.missing_q_rows is None else self.missing_q_rows

    @property
    def ndim(self) -> int:
        return 2 * self.n_chol + self.missing_rows.size

    def _unpack(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t, k = self.n_traits, self.n_chol
        LG = self.scale[:, None] * cholesky_from_params(x[:k], t)
        LE = self.scale[:, None] * cholesky_from_params(x[k : 2 * k], t)
        return LG, LE

    def _resid(self, x: np.ndarray) -> np.ndarray:
        R = self.base_resid
        m = self.missing_rows.size
        if m == 0:
            return R
        values = self.centre[self.missing_traits] + self.scale[self.missing_traits] * x[-m:]
        R = R.copy()
        for a in range(self.n_traits):
            sel = self.missing_traits == a
            if sel.any():
                R[:, a] += self.Q[self.q_rows[sel]].T @ values[sel]
        return R

    def logp(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """Log posterior (up to a constant) at ``x`` and its gradient.

        Parameters
        ----------
        x : ndarray, shape (ndim,)

        Returns
        -------
        tuple
            (float, ndarray of shape (ndim,)).
        """
        x = np.asarray(x, dtype=float)
        k = self.n_chol
        t = self.n_traits
        if not np.all(np.abs(x[:t]) < 50) or not np.all(np.abs(x[k : k + t]) < 50):
            return -math.inf, np.zeros_like(x)
        # the SD priors are Python callables (any registered family): evaluated here, the
        # rest of the density and its gradient in one compiled call
        log_sigma = log_sds(x, t, self.scale)
        priors = self.genetic_priors + self.residual_priors
        coef = np.empty(2 * t)
        total = 0.0
        for a in range(2 * t):
            f, df = priors[a](float(log_sigma[a]))
            total += f
            coef[a] = df
        value, grad = multitrait_logp(
            x,
            t,
            self.scale,
            self.eigenvalues,
            self.base_resid,
            self.design,
            self.Q,
            self.q_rows,
            self.missing_traits,
            self.centre,
            self.genetic_eta,
            self.residual_eta,
            coef,
            self.n_null,
        )
        if not math.isfinite(value + total):
            return -math.inf, np.zeros_like(x)
        return value + total, grad

    def logp_reference(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """:meth:`logp` written with NumPy around the likelihood kernel (slower; kept as a
        second implementation the tests compare with)."""
        x = np.asarray(x, dtype=float)
        LG, LE = self._unpack(x)
        G, E = LG @ LG.T, LE @ LE.T
        R = self._resid(x)
        value, MG, ME, _, _, alpha, ok = rotated_loglik_grad(
            G, E, self.eigenvalues, R, self.design, True
        )
        if ok and self.n_null:
            value += null_rows_loglik(E, self.n_null, ME)
        if not ok or not math.isfinite(value):
            return -math.inf, np.zeros_like(x)
        pg, dpg = matrix_log_prior(LG, self.genetic_priors, self.genetic_eta)
        pe, dpe = matrix_log_prior(LE, self.residual_priors, self.residual_eta)
        grad = [
            scaled_cholesky_grad(2.0 * MG @ LG + dpg, LG, self.scale),
            scaled_cholesky_grad(2.0 * ME @ LE + dpe, LE, self.scale),
        ]
        m = self.missing_rows.size
        if m:
            # ∂/∂y_ia = −(Q α)_ia: only the m rows of Q that hold a missing value
            dy = -np.einsum("mj,mj->m", self.Q[self.q_rows], alpha[:, self.missing_traits].T)
            grad.append(dy * self.scale[self.missing_traits])
        return value + pg + pe, np.concatenate(grad)

    def expand(
        self, x: np.ndarray, rng: np.random.Generator | None = None
    ) -> dict[str, np.ndarray]:
        """The named variables at ``x``; β is drawn from its conditional posterior given
        (Σ_G, Σ_E, Y) with ``rng`` (its conditional mean without one)."""
        x = np.asarray(x, dtype=float)
        LG, LE = self._unpack(x)
        G, E = LG @ LG.T, LE @ LE.T
        R = self._resid(x)
        _, _, _, gamma, Cinv, _, ok = rotated_loglik_grad(
            G, E, self.eigenvalues, R, self.design, True
        )
        t, p = self.beta_mean.shape
        if rng is not None and p > 0 and ok:
            try:
                gamma = gamma + np.linalg.cholesky(Cinv) @ rng.standard_normal(gamma.size)
            except np.linalg.LinAlgError:
                pass
        beta = self.beta_mean + self.beta_sd * gamma.reshape(t, p)
        out = {
            **covariance_variables(G, E),
            "heritability": heritability(G, E, self.kinship_scale),
            "beta": uncentre_beta(beta, self.x_means, self.has_intercept),
        }
        if self.missing_rows.size:
            m = self.missing_rows.size
            out["missing_values"] = (
                self.centre[self.missing_traits] + self.scale[self.missing_traits] * x[-m:]
            )
        return out

    def initial_point(self, seed: int) -> np.ndarray:
        """Σ_G = Σ_E = half each trait's variance, no correlation, jittered."""
        rng = np.random.default_rng(seed)
        k = self.n_chol
        t = self.n_traits
        x = np.zeros(self.ndim)
        x[:t] = x[k : k + t] = 0.5 * math.log(0.5)
        x[: 2 * k] += rng.uniform(-0.5, 0.5, size=2 * k)
        x[2 * k :] = rng.uniform(-1.0, 1.0, size=self.ndim - 2 * k)
        return x


def multitrait_density(spec: MultiTraitSpec) -> MultiTraitDensity:
    """The closed-form log posterior of a multi-trait model.

    Parameters
    ----------
    spec : MultiTraitSpec

    Returns
    -------
    MultiTraitDensity

    Examples
    --------
    >>> # density = multitrait_density(specify_multitrait(...)); density.logp(x0)
    """
    Y = np.asarray(spec.Y, dtype=float)
    n, t = Y.shape
    Xc, x_means, has_intercept = centred_design(spec)
    priors = resolve_multitrait_priors(spec, Xc, has_intercept)
    K = spec.kinship
    missing = np.isnan(Y)
    rows, traits = np.nonzero(missing)
    Y0 = np.where(missing, 0.0, Y) - Xc @ priors.beta_mean.T
    n_null, route = 0, "rotated"
    q_rows = None
    if isinstance(K, LowRankKinship):
        # [U₁, Q]ᵀ of [Xc, Y0, E]: r + k rows; the other n − r − k rows are 0 (n_null term).
        # E holds a unit column per individual with a missing value, so every completed Y
        # stays in the rotated span and its rotated rows are base + Σ (rotated e_i) y_ia
        individuals, q_rows = np.unique(rows, return_inverse=True)
        if n * individuals.size > MAX_MISSING_UNIT_CELLS:
            raise DataError(
                f"{individuals.size} of {n} individuals miss a trait value: sampling them on "
                f"the low-rank kinship '{K.name}' rotates one column per such individual "
                f"({n} × {individuals.size} doubles, more than this path allows). Fit by "
                "method='reml' (the marker-space equations take any number of missing "
                "values), or drop the individuals lacking a trait."
            )
        units = np.zeros((n, individuals.size))
        units[individuals, np.arange(individuals.size)] = 1.0
        p = Xc.shape[1]
        rot = K.rotation(np.column_stack([Xc, Y0, units]))
        s, Xr, base = rot.values, rot.rotated[:, :p], rot.rotated[:, p : p + t]
        Q = rot.rotated[:, p + t :].T  # row j: individual j's unit vector, rotated
        n_null, route = rot.n_null, "low-rank"
    else:
        s, Q = np.asarray(K.eigenvalues, dtype=float), np.asarray(K.eigenvectors, dtype=float)
        base = Q.T @ Y0
        Xr = Q.T @ Xc
    design = Xr[:, None, :] * priors.beta_sd[None, :, :]
    return MultiTraitDensity(
        traits=spec.traits,
        fixed_names=spec.fixed_names,
        eigenvalues=np.ascontiguousarray(s),
        Q=np.ascontiguousarray(Q),
        base_resid=np.ascontiguousarray(base),
        design=np.ascontiguousarray(design),
        scale=np.nanstd(Y, axis=0),
        centre=np.nanmean(Y, axis=0),
        missing_rows=rows.astype(np.intp),
        missing_traits=traits.astype(np.intp),
        missing_q_rows=None if q_rows is None else q_rows.ravel().astype(np.intp),
        genetic_priors=tuple(p.log_density_of_log() for p in priors.genetic_sd),
        residual_priors=tuple(p.log_density_of_log() for p in priors.residual_sd),
        genetic_eta=priors.genetic_eta,
        residual_eta=priors.residual_eta,
        beta_mean=priors.beta_mean,
        beta_sd=priors.beta_sd,
        x_means=x_means,
        has_intercept=has_intercept,
        kinship_scale=spec.kinship_scale,
        ids=spec.ids,
        n_null=int(n_null),
        route=route,
        prior_table=priors.table(spec.traits, spec.group),
    )


def nutpie_model(density: MultiTraitDensity) -> Any:
    """A nutpie model that samples ``density`` (``nutpie.sample`` accepts it)."""
    from bayeslmm.engines.bayes.nutpie_callback import pyfunc_model

    t = density.n_traits
    example = density.expand(density.initial_point(0))
    dims = {
        **COVARIANCE_DIMS,
        "heritability": ("trait",),
        "beta": ("trait", "term"),
        "missing_value": ("missing",),
    }
    coords: dict[str, list] = {
        "trait": list(density.traits),
        "trait_": list(density.traits),
        "term": list(density.fixed_names),
    }
    if "missing_values" in example:
        dims["missing_values"] = ("missing",)
        coords["missing"] = [
            f"{density.ids[i]}:{density.traits[a]}"
            for i, a in zip(density.missing_rows, density.missing_traits, strict=True)
        ]
    del dims["missing_value"]

    assert t == len(coords["trait"])
    return pyfunc_model(density, dims, coords, seeded_expand=True)
