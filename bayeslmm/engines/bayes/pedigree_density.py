"""The animal model's log posterior on a sparse pedigree, in closed form, for nutpie.

For ``y ~ X + (1 | id)`` with a kinship from ``pedigree_relationship(ped, sparse=True)``
(:class:`~bayeslmm.kinship.SparsePedigreeKinship`), A is never formed. Every animal's
additive value is the mean of its parents' plus a Mendelian-sampling term, so the values
of the whole pedigree (ancestors without records included) are, non-centred,

    u_i = ½ (u_sire + u_dam) + σ_a √d_i z_i,    z ~ N(0, I_N),

that is u = σ_a w with w = (I − P)⁻¹ D^½ z and Cov(u) = σ_a² (I − P)⁻¹ D (I − P)⁻ᵀ = σ_a² A
exactly. w does not depend on the variances: one *forward pass* over the pedigree in
parents-first order gives it from z (O(number of known parents)), and its adjoint, one
*backward pass* in the reverse order, carries the gradient from w back to z. Each
gradient is O(N + n p), exact, with no factorisation and no matrix of A.

The rest of the density is the package's Gaussian model (as the spectral strategy's, so
the two paths have the same posterior):

* β ~ N(μ, diag(sd²)) (at centred covariates, :mod:`bayeslmm.engines.bayes.fixed_effects`)
  is integrated out: y | z, θ ~ N(Xμ + σ_a Z w, σ_e² I + B Bᵀ), B = X diag(sd), evaluated by
  Woodbury with the p × p capacitance I + BᵀB/σ_e² (BᵀB computed once); β is drawn after
  each kept draw from β | y, z, θ (a p-variate normal). Integrating β out removes the ridge
  between the intercept and the mean of the founders' values.
* NUTS runs on x = (logit h, log σ²_P, z) with h = σ_g²/σ²_P, σ²_P = σ_g² + σ_e², the
  coordinates of :mod:`~bayeslmm.engines.bayes.spectral_density`, whose prior densities
  and Jacobians (σ_a, σ_e or h², σ_P / σ²_P priors) are reused as they are: the density
  below is the spectral density's prior part plus log p(y | z, θ) + log N(z; 0, I).

tests/engines/bayes/test_pedigree_density.py checks the map's covariance against the dense
A, the density against a dense computation at random points, the gradient against finite
differences, and the posterior against the dense-kinship spectral path;
validation/sbc_pedigree.py calibrates it by simulation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from bayeslmm.engines.bayes.spectral_density import (
    SpectralDensity,
    positive_log_prior,
    prior_density,
)
from bayeslmm.engines.numba_cache import cached_jit

LOG_2PI = math.log(2.0 * math.pi)

#: Largest number of (recorded) levels whose breeding values ``u_<group>`` are stored with
#: every posterior draw; above it the fit keeps the variances and β only (a posterior of
#: 50,000 animals × 4,000 draws would take 1.6 GB).
STORED_LEVELS_LIMIT = 20_000

__all__ = [
    "STORED_LEVELS_LIMIT",
    "PedigreeDensity",
    "mendelian_backward",
    "mendelian_forward",
    "nutpie_model",
    "parents_first",
    "pedigree_density",
]


@cached_jit
def mendelian_forward(
    v: np.ndarray, indptr: np.ndarray, indices: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """w = (I − P)⁻¹ v for P strictly lower triangular (rows in parents-first order).

    w_i = v_i + Σ_j P_ij w_j: each animal's parents are finished before it.
    """
    n = v.size
    w = np.empty(n)
    for i in range(n):
        acc = v[i]
        for k in range(indptr[i], indptr[i + 1]):
            acc += weights[k] * w[indices[k]]
        w[i] = acc
    return w


@cached_jit
def mendelian_backward(
    g: np.ndarray, indptr: np.ndarray, indices: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """(I − P)⁻ᵀ g: the adjoint of :func:`mendelian_forward` (children before parents)."""
    n = g.size
    x = g.copy()
    for i in range(n - 1, -1, -1):
        xi = x[i]
        for k in range(indptr[i], indptr[i + 1]):
            x[indices[k]] += weights[k] * xi
    return x


def parents_first(inverse_factor: sp.spmatrix) -> tuple[np.ndarray, sp.csr_matrix]:
    """An order with every parent before its offspring, and P in that order.

    Parameters
    ----------
    inverse_factor : sparse matrix
        I − P (:attr:`~bayeslmm.kinship.SparsePedigreeKinship.inverse_factor`): 1 on the
        diagonal, −½ at (animal, parent), −1 for a selfed animal's one parent.

    Returns
    -------
    order : ndarray of int
        ``order[k]`` is the pedigree position of the k-th animal (generation by generation,
        stable within one).
    parents : scipy.sparse.csr_matrix
        P in that order (strictly lower triangular).

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> T = sp.csr_matrix(np.array([[1.0, -0.5, -0.5], [0, 1, 0], [0, 0, 1]]))
    >>> order, P = parents_first(T)   # animal 0's parents are 1 and 2
    >>> order.tolist(), P.toarray().tolist()
    ([1, 2, 0], [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    """
    T = sp.csr_matrix(inverse_factor)
    N = T.shape[0]
    P = (sp.identity(N, format="csr") - T).tocsr()
    P.eliminate_zeros()
    coo = P.tocoo()
    child, parent = coo.row, coo.col
    # depth = 1 + the deeper parent's depth, by relaxation: as many sweeps as generations
    depth = np.zeros(N, dtype=np.int64)
    for _ in range(N + 1):
        new = depth.copy()
        np.maximum.at(new, child, depth[parent] + 1)
        if np.array_equal(new, depth):
            break
        depth = new
    order = np.argsort(depth, kind="stable")
    rank = np.empty(N, dtype=np.int64)
    rank[order] = np.arange(N)
    reordered = sp.csr_matrix((coo.data, (rank[child], rank[parent])), shape=(N, N))
    reordered.sum_duplicates()
    reordered.sort_indices()
    return order, reordered


@dataclass(eq=False)
class PedigreeDensity:
    """Log posterior of the Gaussian animal model on x = (logit h, log σ²_P, z), z of the
    whole pedigree in parents-first order. Build it with :func:`pedigree_density`.

    Attributes
    ----------
    resid : ndarray (n,)
        y − offset − X μ_β (X at centred covariates when the intercept is centred).
    design : ndarray (n, p)
        B = X diag(sd_β).
    records : ndarray of int (n,)
        Each record's animal, as a position in the parents-first order.
    sqrt_d : ndarray (N,)
        √d of every animal in that order.
    parents : scipy.sparse.csr_matrix
        P in that order.
    prior : SpectralDensity
        The variances' prior and Jacobian on (logit h, log σ²_P) (its data arrays empty).
    variance_scale : float
        σ_a² = ``variance_scale`` · h σ²_P: 1 with priors on the SDs, 1/c with the share
        parametrisation (h² at the sample's kinship scale c).
    levels : ndarray of int
        The term's levels as positions in the parents-first order (the animals whose
        ``u_<group>`` the draws hold).
    """

    resid: np.ndarray
    design: np.ndarray
    records: np.ndarray
    sqrt_d: np.ndarray
    parents: sp.csr_matrix
    prior: SpectralDensity
    variance_scale: float
    levels: np.ndarray
    group: str
    store_levels: bool
    fixed: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        P = self.parents
        self._indptr = np.ascontiguousarray(P.indptr, dtype=np.int64)
        self._indices = np.ascontiguousarray(P.indices, dtype=np.int64)
        self._weights = np.ascontiguousarray(P.data, dtype=float)
        self._gram = self.design.T @ self.design  # BᵀB, p × p
        self.n_obs = self.resid.size
        self.n_animals = self.sqrt_d.size

    @property
    def ndim(self) -> int:
        return 2 + self.n_animals

    # -- pieces --------------------------------------------------------------------------
    def genetic_values(self, z: np.ndarray) -> np.ndarray:
        """w = (I − P)⁻¹ (√d ∘ z): the values per unit σ_a (parents-first order)."""
        return mendelian_forward(self.sqrt_d * z, self._indptr, self._indices, self._weights)

    def _variances(self, x: np.ndarray) -> tuple[float, float, float, float]:
        """(h, σ²_P, σ_a², σ_e²) at x."""
        h = 1.0 / (1.0 + math.exp(-float(x[0]))) if x[0] > -700 else 0.0
        total = math.exp(float(x[1]))
        return h, total, self.variance_scale * h * total, (1.0 - h) * total

    def _woodbury(self, r: np.ndarray, var_e: float):
        """log N(r; 0, σ_e² I + B Bᵀ), α = V⁻¹ r, tr V⁻¹, and (C factor, γ̂) for β draws."""
        n, p = self.n_obs, self.design.shape[1]
        if p == 0:
            alpha = r / var_e
            logdet = n * math.log(var_e)
            return -0.5 * (n * LOG_2PI + logdet + float(r @ alpha)), alpha, n / var_e, None
        C = np.eye(p) + self._gram / var_e
        chol = np.linalg.cholesky(C)
        Btr = self.design.T @ r
        gamma = np.linalg.solve(C, Btr) / var_e
        alpha = (r - self.design @ gamma) / var_e
        logdet = n * math.log(var_e) + 2.0 * float(np.log(np.diag(chol)).sum())
        # tr V⁻¹ = n/σ_e² − tr(C⁻¹ BᵀB)/σ_e⁴
        trace = n / var_e - float(np.trace(np.linalg.solve(C, self._gram))) / var_e**2
        value = -0.5 * (n * LOG_2PI + logdet + float(r @ alpha))
        return value, alpha, trace, (chol, gamma)

    # -- density -------------------------------------------------------------------------
    def logp(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """Log posterior density at x (Jacobians included) and its gradient."""
        grad = np.zeros(self.ndim)
        prior_value, prior_grad = self.prior.logp(x[:2])
        if not math.isfinite(prior_value):
            return -math.inf, grad
        h, total, var_a, var_e = self._variances(x)
        sd_a = math.sqrt(var_a)
        z = x[2:]
        w = self.genetic_values(z)
        w_rec = w[self.records]
        r = self.resid - sd_a * w_rec
        loglik, alpha, trace, _ = self._woodbury(r, var_e)
        # ∂/∂σ_a = αᵀ w_rec; ∂/∂σ_e² = −½ (tr V⁻¹ − αᵀα)
        d_sd = float(alpha @ w_rec)
        d_var_a = 0.5 * d_sd / sd_a if sd_a > 0.0 else 0.0
        d_var_e = -0.5 * (trace - float(alpha @ alpha))
        d_var_g = self.variance_scale * d_var_a  # σ_g² = h σ²_P, σ_a² = scale · σ_g²
        var_g = h * total
        g_w = np.bincount(self.records, weights=sd_a * alpha, minlength=self.n_animals)
        g_z = self.sqrt_d * mendelian_backward(g_w, self._indptr, self._indices, self._weights)
        value = prior_value + loglik - 0.5 * float(z @ z) - 0.5 * self.n_animals * LOG_2PI
        grad[0] = prior_grad[0] + (d_var_g - d_var_e) * total * h * (1.0 - h)
        grad[1] = prior_grad[1] + d_var_g * var_g + d_var_e * var_e
        grad[2:] = g_z - z
        return value, grad

    # -- draws ---------------------------------------------------------------------------
    def expand(self, x: np.ndarray, rng: np.random.Generator | None = None) -> dict[str, Any]:
        """The model's named variables at x: the variances (``sd_<g>``, ``sigma``,
        ``var_<g>``, ``var_residual``, ``h2``, ``variance_share``, totals in the share
        parametrisation), β drawn from β | y, z, θ (``beta``, ``beta_centered``) and, up to
        :data:`STORED_LEVELS_LIMIT` levels, ``u_<g>`` of the term's levels."""
        out = dict(self.prior.expand(x[:2]))
        _, _, var_a, var_e = self._variances(x)
        sd_a = math.sqrt(var_a)
        w = self.genetic_values(x[2:])
        fixed = self.fixed
        if fixed:
            rng = rng if rng is not None else np.random.default_rng()
            r = self.resid - sd_a * w[self.records]
            _, _, _, (chol, gamma) = self._woodbury(r, var_e)
            # γ | y, z, θ ~ N(γ̂, C⁻¹), C = L Lᵀ: γ̂ + L⁻ᵀ ε
            eps = rng.standard_normal(gamma.size)
            gamma = gamma + np.linalg.solve(chol.T, eps)
            beta_s = fixed["mu"] + fixed["sd"] * gamma
            out[fixed["sampled_name"]] = beta_s
            if fixed["sampled_name"] != "beta":
                beta = beta_s.copy()
                beta[fixed["intercept"]] -= beta_s @ fixed["means"]
                out["beta"] = beta
        if self.store_levels:
            out[f"u_{self.group}"] = (sd_a * w[self.levels])[:, None]
        return {k: np.asarray(v, dtype=float) for k, v in out.items()}

    def initial_point(self, seed: int) -> np.ndarray:
        """h = ½ and σ²_P = mean squared residual, jittered by U(−1, 1); z near 0."""
        rng = np.random.default_rng(seed)
        x = np.empty(self.ndim)
        total = max(float(np.mean(self.resid**2)), 1e-12)
        x[:2] = np.array([0.0, math.log(total)]) + rng.uniform(-1.0, 1.0, 2)
        x[2:] = rng.uniform(-0.1, 0.1, self.n_animals)
        return x


def _parents_first_records(term: Any) -> tuple[np.ndarray, Any, np.ndarray, np.ndarray]:
    """The pedigree in parents-first order and where the term's levels and records sit in it.

    Returns ``(order, P, level_positions, records)``: the permutation and parent-average
    matrix of :func:`parents_first`, each level's animal and each record's animal in that
    order.
    """
    kin = term.kinship
    order, P = parents_first(kin.inverse_factor)
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.arange(order.size)
    level_positions = rank[np.asarray(kin.positions, dtype=np.int64)]
    records = level_positions[np.asarray(term.index, dtype=np.int64)]
    return order, P, level_positions, records


def pedigree_density(built: Any) -> PedigreeDensity:
    """The closed-form log posterior of a built sparse-pedigree animal model.

    Parameters
    ----------
    built : BuiltModel
        Built by the ``"sparse-pedigree"`` strategy.

    Returns
    -------
    PedigreeDensity

    Examples
    --------
    >>> import pandas as pd, bayeslmm as bl
    >>> from bayeslmm.engines.bayes import build
    >>> ped = pd.DataFrame({"id": list("abcde"), "sire": [None, None, "a", "a", "c"],
    ...                     "dam": [None, None, "b", "b", "d"]})
    >>> A = bl.pedigree_relationship(ped, sparse=True)
    >>> df = pd.DataFrame({"id": list("cde"), "y": [1.0, 0.5, 2.0]})
    >>> density = pedigree_density(build(bl.specify("y ~ 1 + (1 | id)", df, kinship={"id": A})))
    >>> density.ndim   # logit h, log σ²_P and z of the 5 animals
    7
    >>> logp, grad = density.logp(density.initial_point(1))
    >>> grad.shape
    (7,)
    """
    from bayeslmm.engines.bayes.fixed_effects import fixed_effects_prior

    spec, priors = built.spec, built.priors
    term = spec.terms[0]
    kin = term.kinship
    order, P, level_positions, records = _parents_first_records(term)
    y = np.asarray(spec.y, dtype=float)
    if spec.offset is not None:
        y = y - np.asarray(spec.offset, dtype=float)
    fe = fixed_effects_prior(spec, priors)
    fixed: dict[str, Any] = {}
    if fe is None:
        design = np.zeros((y.size, 0))
    else:
        mu, sd = np.asarray(fe.mu, float), np.asarray(fe.sd, float)
        y = y - fe.design @ mu
        design = fe.design * sd
        fixed = {
            "mu": mu,
            "sd": sd,
            "sampled_name": fe.sampled_name,
            "intercept": fe.intercept,
            "means": fe.means,
        }
    prior = prior_density(built)
    group, parametrisation, share_weight = term.group, prior.parametrisation, prior.share_weight
    return PedigreeDensity(
        resid=np.ascontiguousarray(y),
        design=np.ascontiguousarray(design, dtype=float),
        records=np.ascontiguousarray(records),
        sqrt_d=np.sqrt(np.asarray(kin.mendelian_variances, dtype=float)[order]),
        parents=P,
        prior=prior,
        variance_scale=1.0 if parametrisation == "sd" else 1.0 / share_weight,
        levels=level_positions,
        group=group,
        store_levels=term.n_levels <= STORED_LEVELS_LIMIT,
        fixed=fixed,
    )


def nutpie_model(density: PedigreeDensity, coords: dict[str, Any]) -> Any:
    """A nutpie model that samples ``density`` (``coords``: the built model's coordinates)."""
    from bayeslmm.engines.bayes.nutpie_callback import pyfunc_model

    g = density.group
    dims_of = {
        "beta": ("fixed",),
        "beta_centered": ("fixed",),
        "variance_share": ("component",),
        f"u_{g}": (f"{g}_level", f"{g}_coef"),
    }
    return pyfunc_model(density, dims_of, coords, seeded_expand=True)


@dataclass(eq=False)
class PedigreeGLMMDensity:
    """Log posterior of a GLMM animal model, ``y ~ X + (1 | id)`` with a Poisson or binomial
    family, on x = (β (p), log σ_a, [log σ_o], z (N), [z_o (n)]): every animal's value
    u = σ_a (I − P)⁻¹ D^½ z non-centred (the forward pass), a Poisson observation-level
    effect σ_o z_o when the model has one. β is sampled (at centred covariates, as the
    builder's ``beta_centered``) with its normal prior. Build it with
    :func:`pedigree_density`.
    """

    family: Any
    y: np.ndarray
    trials: np.ndarray
    offset: np.ndarray
    design: np.ndarray
    beta_mu: np.ndarray
    beta_sd: np.ndarray
    records: np.ndarray
    sqrt_d: np.ndarray
    parents: sp.csr_matrix
    prior_a: Any
    prior_o: Any
    log_constant: float
    levels: np.ndarray
    group: str
    store_levels: bool
    share_weight: float = 1.0
    h2: bool = True
    fixed: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        P = self.parents
        self._indptr = np.ascontiguousarray(P.indptr, dtype=np.int64)
        self._indices = np.ascontiguousarray(P.indices, dtype=np.int64)
        self._weights = np.ascontiguousarray(P.data, dtype=float)
        self._kernel = self.family.loglik_kernel
        self.n_obs = self.y.size
        self.n_animals = self.sqrt_d.size
        self.n_fixed = self.design.shape[1]
        self.olre = self.prior_o is not None

    @property
    def n_hyper(self) -> int:
        return self.n_fixed + 1 + int(self.olre)

    @property
    def ndim(self) -> int:
        return self.n_hyper + self.n_animals + (self.n_obs if self.olre else 0)

    def genetic_values(self, z: np.ndarray) -> np.ndarray:
        """w = (I − P)⁻¹ (√d ∘ z) (parents-first order)."""
        return mendelian_forward(self.sqrt_d * z, self._indptr, self._indices, self._weights)

    def _split(self, x: np.ndarray):
        p, k, N = self.n_fixed, self.n_hyper, self.n_animals
        return x[:p], x[p], (x[p + 1] if self.olre else None), x[k : k + N], x[k + N :]

    def logp(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """Log posterior density at x (Jacobians of the log SDs included) and its gradient."""
        p, k, N = self.n_fixed, self.n_hyper, self.n_animals
        beta, log_sa, log_so, z, z_o = self._split(x)
        sd_a = math.exp(float(log_sa))
        w = self.genetic_values(z)
        w_rec = w[self.records]
        eta = self.offset + self.design @ beta + sd_a * w_rec
        if self.olre:
            sd_o = math.exp(float(log_so))
            eta = eta + sd_o * z_o
        loglik, g_eta = self._kernel(self.y, eta, self.trials)
        resid_b = (beta - self.beta_mu) / self.beta_sd
        pa, dpa = self.prior_a(float(log_sa))
        value = (
            loglik
            + self.log_constant
            - 0.5 * float(z @ z)
            - 0.5 * float(resid_b @ resid_b)
            + pa
            + float(log_sa)
        )
        grad = np.empty(self.ndim)
        grad[:p] = self.design.T @ g_eta - resid_b / self.beta_sd
        grad[p] = sd_a * float(g_eta @ w_rec) + dpa + 1.0
        g_w = np.bincount(self.records, weights=sd_a * g_eta, minlength=N)
        grad[k : k + N] = (
            self.sqrt_d * mendelian_backward(g_w, self._indptr, self._indices, self._weights) - z
        )
        if self.olre:
            po, dpo = self.prior_o(float(log_so))
            value += po + float(log_so) - 0.5 * float(z_o @ z_o)
            grad[p + 1] = sd_o * float(g_eta @ z_o) + dpo + 1.0
            grad[k + N :] = sd_o * g_eta - z_o
        return value, grad

    def expand(self, x: np.ndarray, rng: np.random.Generator | None = None) -> dict[str, Any]:
        """The model's named variables at x (as the latent strategy's PyMC model names them)."""
        beta, log_sa, log_so, z, z_o = self._split(x)
        g, fixed = self.group, self.fixed
        var_a = math.exp(2.0 * float(log_sa))
        var_o = math.exp(2.0 * float(log_so)) if self.olre else 0.0
        out: dict[str, Any] = {}
        if fixed:
            out[fixed["sampled_name"]] = beta
            if fixed["sampled_name"] != "beta":
                uncentred = np.array(beta, dtype=float)
                uncentred[fixed["intercept"]] -= beta @ fixed["means"]
                out["beta"] = uncentred
        out[f"sd_{g}"] = math.sqrt(var_a)
        out[f"var_{g}"] = var_a
        if self.olre:
            out["sd_olre"] = math.sqrt(var_o)
            out["var_olre"] = var_o
        eta_fixed = self.offset + self.design @ beta
        var_residual = self.family.latent_residual_variance(eta_fixed, var_a, var_o)
        out["var_residual"] = var_residual
        share = self.share_weight * var_a
        shares = np.array([share, var_residual]) / (share + var_residual)
        out["variance_share"] = shares
        if self.h2:
            out["h2"] = shares[0]
        if self.store_levels:
            out[f"u_{g}"] = (math.sqrt(var_a) * self.genetic_values(z)[self.levels])[:, None]
        return {k: np.asarray(v, dtype=float) for k, v in out.items()}

    def initial_point(self, seed: int) -> np.ndarray:
        """β at the prior means, log σ's at log ½, jittered by U(−1, 1); z near 0."""
        rng = np.random.default_rng(seed)
        x = np.zeros(self.ndim)
        k = self.n_hyper
        x[: self.n_fixed] = self.beta_mu
        x[self.n_fixed : k] = math.log(0.5)
        x[:k] += rng.uniform(-1.0, 1.0, k)
        x[k:] = rng.uniform(-0.1, 0.1, self.ndim - k)
        return x


def pedigree_glmm_density(built: Any) -> PedigreeGLMMDensity:
    """The closed-form GLMM animal-model density (see :class:`PedigreeGLMMDensity`).

    Examples
    --------
    >>> import pandas as pd, bayeslmm as bl
    >>> from bayeslmm.engines.bayes import build
    >>> ped = pd.DataFrame({"id": list("abcde"), "sire": [None, None, "a", "a", "c"],
    ...                     "dam": [None, None, "b", "b", "d"]})
    >>> A = bl.pedigree_relationship(ped, sparse=True)
    >>> df = pd.DataFrame({"id": list("cde"), "y": [1, 0, 1]})
    >>> spec = bl.specify("y ~ 1 + (1 | id)", df, kinship={"id": A}, family="bernoulli")
    >>> density = pedigree_glmm_density(build(spec))
    >>> density.ndim   # β, log σ_a and z of the 5 animals
    7
    """
    from bayeslmm.engines.bayes.fixed_effects import fixed_effects_prior

    spec, priors = built.spec, built.priors
    term = spec.terms[0]
    kin = term.kinship
    order, P, level_positions, records = _parents_first_records(term)
    y = np.asarray(spec.y, dtype=float)
    n = y.size
    trials = np.asarray(spec.trials, dtype=float) if spec.trials is not None else np.ones(n)
    offset = np.zeros(n) if spec.offset is None else np.asarray(spec.offset, dtype=float)
    fe = fixed_effects_prior(spec, priors)
    fixed: dict[str, Any] = {}
    if fe is None:
        design, mu, sd = np.zeros((n, 0)), np.zeros(0), np.ones(0)
    else:
        design, mu, sd = fe.design, np.asarray(fe.mu, float), np.asarray(fe.sd, float)
        fixed = {"sampled_name": fe.sampled_name, "intercept": fe.intercept, "means": fe.means}
    olre = priors.sd_olre is not None
    N = kin.n_pedigree
    # the normalising constants of the priors of z (and z_o), of β and of the likelihood
    const = -0.5 * (N + (n if olre else 0) + mu.size) * LOG_2PI - float(np.log(sd).sum())
    const += float(spec.family.log_constant(y, trials).sum())
    return PedigreeGLMMDensity(
        family=spec.family,
        y=y,
        trials=trials,
        offset=offset,
        design=np.ascontiguousarray(design, dtype=float),
        beta_mu=np.broadcast_to(mu, (design.shape[1],)).astype(float),
        beta_sd=np.broadcast_to(sd, (design.shape[1],)).astype(float),
        records=np.ascontiguousarray(records),
        sqrt_d=np.sqrt(np.asarray(kin.mendelian_variances, dtype=float)[order]),
        parents=P,
        prior_a=positive_log_prior(priors.sd[term.group]),
        prior_o=positive_log_prior(priors.sd_olre) if olre else None,
        log_constant=const,
        levels=level_positions,
        group=term.group,
        store_levels=term.n_levels <= STORED_LEVELS_LIMIT,
        share_weight=float(term.variance_weights("sample")[0, 0]),
        h2=built.h2_term is not None,
        fixed=fixed,
    )
