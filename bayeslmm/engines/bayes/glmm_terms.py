"""The latent GLMM's log posterior with several terms or slopes, written out for nutpie.

:mod:`bayeslmm.engines.bayes.glmm_density` covers one intercept-only kinship term (merging
Poisson's observation-level effect into it, conditional centring for binary traits). This
module covers the rest of the latent GLMMs the builder writes:

    η = offset + X β + Σ_k Z_k U_k c_k (+ e),   c_k ~ N(0, σ_k² S_k),   e ~ N(0, σ_o² I)

with any number of terms, each a kinship term (U_k S_k U_kᵀ = K_k, the builder's basis,
``rank_share`` truncation included) or an iid factor (U_k = I, S_k = I), repeated records
per level, and the observation-level effect as one more iid term with a level per record.
It is the *same* posterior as the PyMC model (tested equal to its ``logp`` up to the
Jacobian of the change of variables below); each gradient costs one mat-vec with U_k and one
with U_kᵀ per kinship term and a gather / scatter (``bincount``) per iid term. With
intercept-only terms it runs as one numba call loaded from numba's on-disk cache
(:mod:`~bayeslmm.engines.bayes.glmm_terms_kernels`; at n = 500 about a third of the numpy
version's cost, at n = 2,000 the mat-vecs' own), with slopes in numpy; nothing is compiled
per data set.

**The observation-level effect merged into a kinship term.** With one record per level
of an intercept-only kinship term (:func:`merged_term`: the first such term), its effect a
and the observation-level effect e are two n-vectors that the data see only as a + e, a
ridge NUTS crawls along. As in the one-term density, a + e ~ N(0, U diag(σ_a² s + σ_o²) Uᵀ)
is diagonal in K's eigenbasis, completed to all n directions (K's null space, or the
eigenvectors ``rank_share`` dropped, where s = 0 and a + e is e alone): one block with two
hyperparameters (log σ_a, log σ_o) and A_j = σ_a² s_j + σ_o² replaces the two. The other
terms stay as they are; the PyMC model's ``z_<g>``, ``u_<g>``, ``z_olre``... are drawn
afterwards from a | a + e (:func:`~bayeslmm.engines.bayes.glmm_density.split_merged_effect`).
With repeated records, or no kinship term, a + e is not diagonal in one basis and the
observation-level effect stays a block of its own. A model with a merged block is sampled
non-centred by default (c = √A v: on K + iid herd + OLRE, Poisson, n = 500, min ESS 236
and 306 of 2000 draws against 175 and 70 conditionally scaled and 15 and 46 unmerged;
``benchmarks/bench_glmm_terms.py``); ``weights="conditional"`` scales it as below.

**Random slopes** (:class:`SlopeBlock`). A term with c coefficients (``(1 + x | id)`` on a
kinship, ``(1 + x || herd)``, ``(0 + x | g)``) has the effect C = S^½ Z Lᵀ in its basis
(r × c; Z standard normal, the PyMC model's ``z_<g>``; L the Cholesky factor of the
coefficients' covariance Σ: PyMC's ``LKJCholeskyCov`` ``chol_<g>`` for ``|``, diag(σ) for
``||``), u = U C per level and η_i += Σ_j d_ij u[level_i, j] (d_i the record's covariates).
The hyperparameters are PyMC's own unconstrained coordinates (the packed Cholesky factor
with its diagonal on the log scale, or log σ_j) and the density carries PyMC's LKJ density,
its normalising constant and the transforms' Jacobians. Per gradient: one mat-mat with U
(and one with Uᵀ) with c columns. A model with slopes is sampled non-centred by default,
its intercept-only blocks too (the PyMC model's coordinates: measured better than the
conditional scaling below of the observation-level effect alone, see
:func:`multiterm_density`). With ``slopes="conditional"`` and a Poisson pilot (below) each
basis component's coefficients are conditionally scaled instead: H_j = I + s_j Lᵀ T_j L is
Z_j's precision under the Gaussian surrogate (T_j the records' information about component
j's coefficients, each component on its own, the observation-level effect integrated out),
H_j = R_j R_jᵀ and Z_j = R_j⁻ᵀ v_j, log |∂Z/∂v| = −Σ log diag R_j: non-centred when Σ is
small, centred when the data pin the component, at every Σ (more ESS per draw on one
Poisson model, 0.126 against 0.086, but 4× the cost per gradient: see
:func:`multiterm_density`). Slope terms come before the intercept-only blocks (which
condition on them; the last block's centre follows η, slopes included).

**Conditional scaling, block by block** (``weights="conditional"``; the default,
``weights="auto"``, except with non-centred slopes or a merged block). Blocks are
sorted coarse to fine (fewest components first; the observation-level effect last). Under a
Gaussian surrogate of the likelihood, pseudo-data y* ~ N(η, W⁻¹) with W the records'
Fisher information at the GLM fit η̂ = offset + X β̂, block k given β and the earlier blocks
has, with the later blocks integrated out at pilot variances,
V_k = W⁻¹ + Σ_{j>k} σ_j⁰² B_j S_j B_jᵀ (B_j = Z_j U_j), precision P = 1/A + τ per component
(τ = diag(B_kᵀ V_k⁻¹ B_k)) and a mean that moves linearly with β and the earlier effects
(slopes G = B_kᵀ V_k⁻¹ [X, B_1 … B_{k−1}]). The sampled coordinates are

    c_k = −A q (G_β (β − β̂) + G_c (c_1, …, c_{k−1})) + (1/A + τ)^(−1/2) v_k,
    q = 1/(1 + Aτ),

i.e. each component centred and scaled by its conditional posterior under the surrogate:
as σ_k → 0 the non-centred form, when the data pin a component the centred one, *at every
σ_k*, not at a pilot value; and a population effect moves against the intercept, a
genotype effect against its population's, as their posteriors do. The Jacobian is
triangular (c_k depends on v_k, β and earlier blocks only): log |∂z/∂v| = ½ Σ log q. The
last block's V is W⁻¹ (diagonal), so its slopes are applied implicitly,
B_kᵀ(W ∘ (η − η̂)) with η the predictor so far; the others' are dense, computed once from an
n × n Cholesky factor per block up to n = 3000 records (beyond, τ and G_β from each block's
own records, the observation-level noise discounted, and no G_c). Pilot variances: the
family's moment estimate of the latent variance (Poisson) split equally between blocks;
binomial families have no moment pilot and are sampled non-centred (w = 0, as the PyMC
model), like ``weights="noncentred"``.

``weights="partial"``: partial non-centring (Papaspiliopoulos, Roberts & Sköld 2007),
c = A^((1−w)/2) v with w = τA⁰/(1 + τA⁰) fixed at the pilot variances A⁰, τ with every other
block integrated out. Measured on the Arabidopsis-shaped model
(``benchmarks/bench_glmm_terms.py``): minimum bulk ESS of 2000 draws 67 (partial), 542
(conditional scaling), 12 (nutpie on the PyMC graph, the brms-style non-centred model).

Any surrogate leaves the posterior exact (the change of variables and its Jacobian are in
the density); the surrogate only decides how well NUTS' diagonal mass matrix fits.

References
----------
Papaspiliopoulos, O., Roberts, G. O. & Sköld, M. (2007). A general framework for the
parametrization of hierarchical models. Statistical Science 22, 59–73.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bayeslmm.engines.bayes.fixed_effects import fixed_effects_prior
from bayeslmm.engines.bayes.glmm_density import model_variable_names, split_merged_effect
from bayeslmm.engines.bayes.spectral_density import positive_log_prior
from bayeslmm.engines.bayes.terms import sd_prior_for
from bayeslmm.families import Family

LOG_2PI = math.log(2.0 * math.pi)
WEIGHTS = ("auto", "conditional", "partial", "noncentred")
SLOPES = ("noncentred", "conditional")


@dataclass(eq=False)
class LatentBlock:
    """One random term of the density: its levels, basis and sampling weights.

    ``vectors`` is None for an iid term (U = I, s = 1); ``index`` maps records to levels
    (None: one record per level, in order).
    """

    name: str
    n_levels: int
    index: np.ndarray | None
    eigenvalues: np.ndarray
    vectors: np.ndarray | None
    prior: Any
    #: var_<g> = σ² · unit_weight (the builder's variance at K_ii = 1), and the share's
    #: variance σ² · share_weight (at the sample's kinship scale)
    unit_weight: float = 1.0
    share_weight: float = 1.0
    weights: np.ndarray = field(default_factory=lambda: np.zeros(0))
    #: τ per component for conditional scaling (None: the fixed ``weights``)
    information: np.ndarray | None = None
    #: with conditional scaling the centre moves with β and the earlier blocks' effects,
    #: c = −(G_β (β − β̂) + G_c (c_1, …, c_{k−1})) / P + P^(−1/2) v: G_β (r × p) and G_c
    #: (r × Σ r_j), or None; ``implicit_shift``: the last block, whose G·(…) is
    #: B_kᵀ (W ∘ (η − η̂)), η the predictor of the fixed effects and the earlier blocks
    shift_beta: np.ndarray | None = None
    shift_c: np.ndarray | None = None
    implicit_shift: bool = False
    #: a kinship term merged with the observation-level effect (one record per level):
    #: the OLRE's SD prior, and the number of leading basis vectors that are the builder's
    #: kinship basis (the rest complete it to all n directions, s = 0 there). None: a
    #: plain term
    olre_prior: Any = None
    kinship_rank: int = -1
    #: the Prior objects behind ``prior`` and ``olre_prior`` (the fused kernel numbers the
    #: built-in families from them; None: the numpy density only)
    prior_spec: Any = None
    olre_prior_spec: Any = None

    def __post_init__(self) -> None:
        if self.olre_prior is None:
            self.log_s = np.log(self.eigenvalues)
        if self.vectors is not None:
            self.vectors_t = np.ascontiguousarray(self.vectors.T)
        if self.weights.size == 0:
            self.weights = np.zeros(self.n_basis)

    @property
    def merged(self) -> bool:
        """Whether the block carries the observation-level effect too (a + e)."""
        return self.olre_prior is not None

    @property
    def n_basis(self) -> int:
        return self.eigenvalues.size

    @property
    def n_hyper(self) -> int:
        return 2 if self.merged else 1

    def variances(self, h: np.ndarray) -> np.ndarray:
        """A, the prior variance of each component at the log SDs h: σ² s_j, or
        σ_a² s_j + σ_o² for a merged block."""
        if not self.merged:
            return np.exp(2.0 * float(h[0]) + self.log_s)
        return math.exp(2.0 * float(h[0])) * self.eigenvalues + math.exp(2.0 * float(h[1]))

    def pilot_variances(self, var0: float) -> np.ndarray:
        """A at the pilot: every variance of the block (σ², or σ_a² and σ_o²) at var0."""
        return var0 * self.eigenvalues + (var0 if self.merged else 0.0)

    def to_hyper(self, g_half_log_a: np.ndarray, h: np.ndarray) -> np.ndarray:
        """A gradient in ½ log A_j per component as one in the log SDs h: ∂A_j/∂h_0 = 2A_j
        (plain); σ_a² s_j/A_j and σ_o²/A_j of it for a merged block."""
        if not self.merged:
            return np.array([g_half_log_a.sum()])
        var_a, var_o = math.exp(2.0 * float(h[0])), math.exp(2.0 * float(h[1]))
        per_a = g_half_log_a / (var_a * self.eigenvalues + var_o)
        return np.array([var_a * float(per_a @ self.eigenvalues), var_o * float(per_a.sum())])

    @property
    def n_latent(self) -> int:
        return self.n_basis

    def to_levels(self, c: np.ndarray) -> np.ndarray:
        """U c, the effect per level (float64)."""
        if self.vectors is None:
            return c
        return (self.vectors @ c.astype(self.vectors.dtype)).astype(float)

    def to_basis(self, g_levels: np.ndarray) -> np.ndarray:
        """Uᵀ g."""
        if self.vectors is None:
            return g_levels
        return (self.vectors_t @ g_levels.astype(self.vectors.dtype)).astype(float)

    def gather(self, levels: np.ndarray) -> np.ndarray:
        """Z u: each record's level value."""
        return levels if self.index is None else levels[self.index]

    def scatter(self, values: np.ndarray) -> np.ndarray:
        """Zᵀ values: per-record values summed by level."""
        if self.index is None:
            return values
        return np.bincount(self.index, values, minlength=self.n_levels)


def lkj_log_normaliser(eta: float, n: int) -> float:
    """log of the LKJ(η) density's normalising constant for n × n correlations, as PyMC's
    ``LKJCholeskyCov`` writes it (so that the densities agree, constants included)."""
    from scipy.special import gammaln

    if eta == 1.0:
        out = float(sum(gammaln(2.0 * k) for k in range(1, (n - 1) // 2 + 1)))
        if n % 2 == 1:
            return out + (
                0.25 * (n**2 - 1) * math.log(math.pi)
                - 0.25 * (n - 1) ** 2 * math.log(2.0)
                - (n - 1) * float(gammaln((n + 1) // 2))
            )
        return out + (
            0.25 * n * (n - 2) * math.log(math.pi)
            + 0.25 * (3 * n**2 - 4 * n) * math.log(2.0)
            + n * float(gammaln(n / 2))
            - (n - 1) * float(gammaln(n))
        )
    out = -(n - 1) * float(gammaln(eta + 0.5 * (n - 1)))
    for k in range(1, n):
        out += 0.5 * k * math.log(math.pi) + float(gammaln(eta + 0.5 * (n - 1 - k)))
    return out


@dataclass(eq=False)
class SlopeBlock:
    """A random term with coefficients other than one intercept (slopes), non-centred.

    The term's effect in its basis is C = S^½ Z Lᵀ (r × c; Z standard normal as the PyMC
    model's ``z_<g>``, L the Cholesky factor of the coefficients' covariance Σ), per level
    u = U C (U = I for an iid term) and η_i += Σ_j d_ij u[level_i, j] with d_i the record's
    row of the term's design. ``kind``: ``"scalar"`` (one coefficient, not an intercept:
    L = σ), ``"diag"`` (``||``: L = diag(σ_1 … σ_c)) or ``"chol"`` (``|``: L is PyMC's
    ``LKJCholeskyCov``, unconstrained as PyMC's ``CholeskyCovPacked``: the packed lower
    triangle row by row, its diagonal on the log scale). Its hyperparameters are then those
    coordinates; for the others log σ_j.
    """

    name: str
    n_levels: int
    index: np.ndarray | None
    eigenvalues: np.ndarray
    vectors: np.ndarray | None
    design: np.ndarray
    kind: str
    #: log f(σ_j) of each coefficient's SD prior as a function of log σ_j, with d/d log σ_j
    priors: list[Any]
    lkj_eta: float = 1.0
    #: Σ_jk Σ_jk W_jk: var_<g> (W at K_ii = 1) and the share's variance (the sample's scale)
    unit_weights: np.ndarray = field(default_factory=lambda: np.ones((1, 1)))
    share_weights: np.ndarray = field(default_factory=lambda: np.ones((1, 1)))
    #: conditional scaling: s_j T_j per component (r × c × c), T_j the surrogate's
    #: information about component j's coefficients; None: non-centred (Z = v)
    information: np.ndarray | None = None

    def __post_init__(self) -> None:
        c = self.n_coef
        self.sqrt_s = np.sqrt(self.eigenvalues)
        if self.vectors is not None:
            self.vectors_t = np.ascontiguousarray(self.vectors.T)
        self._rows, self._cols = np.tril_indices(c) if self.kind == "chol" else np.diag_indices(c)
        #: positions of the diagonal in the hyperparameters (log L_jj)
        self._diag = np.flatnonzero(self._rows == self._cols)
        self._lower = np.tril(np.ones((c, c)))
        self._range = np.arange(c)
        # PyMC's LKJCholeskyCov density (its logp and the Jacobian of the map from the
        # correlations' Cholesky factor and the SDs to L) is Σ_j (a_j + 1) log L_jj
        # − Σ_j (a_j + 1 + j) log σ_j + Σ_j log f_j(σ_j) + const, a_j = 2η − 3 + c − j
        a = 2.0 * self.lkj_eta - 3.0 + c - np.arange(c)
        self._log_diag_coef, self._log_sd_coef = a + 1.0, a + 1.0 + np.arange(c)

    @property
    def n_coef(self) -> int:
        return self.design.shape[1]

    @property
    def n_basis(self) -> int:
        return self.eigenvalues.size

    @property
    def n_hyper(self) -> int:
        return self._rows.size

    @property
    def n_latent(self) -> int:
        return self.n_basis * self.n_coef

    def log_normaliser(self) -> float:
        """The prior's constant (LKJ's for a correlated term)."""
        return lkj_log_normaliser(self.lkj_eta, self.n_coef) if self.kind == "chol" else 0.0

    def cholesky(self, h: np.ndarray) -> np.ndarray:
        """L from the hyperparameters."""
        c = self.n_coef
        L = np.zeros((c, c))
        L[self._rows, self._cols] = h
        L[self._range, self._range] = np.exp(h[self._diag])
        return L

    def effect(self, C: np.ndarray) -> np.ndarray:
        """Σ_j d_ij (U C)[level_i, j] per record."""
        levels = C if self.vectors is None else self.vectors @ C.astype(self.vectors.dtype)
        rows = levels if self.index is None else levels[self.index]
        return np.einsum("ij,ij->i", self.design, rows)

    def to_basis(self, g_eta: np.ndarray) -> np.ndarray:
        """∂/∂C of a function of η with gradient g_eta: Uᵀ (Zᵀ (d_j ∘ g_eta))_j (r × c)."""
        per_record = self.design * g_eta[:, None]
        if self.index is None:
            per_level = per_record
        else:
            per_level = np.empty((self.n_levels, self.n_coef))
            for j in range(self.n_coef):
                per_level[:, j] = np.bincount(self.index, per_record[:, j], minlength=self.n_levels)
        if self.vectors is None:
            return per_level
        return (self.vectors_t @ per_level.astype(self.vectors.dtype)).astype(float)

    def hyper_prior(self, h: np.ndarray, L: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """log prior of the hyperparameters (the transforms' Jacobians included), its
        gradient in L (lower triangle) and the part of the gradient in h not through L."""
        c = self.n_coef
        diag = self._range
        g_h = np.zeros(self.n_hyper)
        g_h[self._diag] = 1.0  # Jacobian of L_jj = exp(h): Σ_j h_jj
        value = float(h[self._diag].sum())
        log_sd = np.log(np.sqrt(np.einsum("ij,ij->i", L, L))) if self.kind == "chol" else h
        g_log_sd = np.empty(c)
        for j, prior in enumerate(self.priors):
            f, df = prior(float(log_sd[j]))
            value += f
            g_log_sd[j] = df
        if self.kind != "chol":
            g_h += g_log_sd
            return value, np.zeros((c, c)), g_h
        value += float(self._log_diag_coef @ np.log(L[diag, diag]))
        value -= float(self._log_sd_coef @ log_sd)
        # ∂ log σ_j / ∂L_jk = L_jk / σ_j²
        g_L = L * ((g_log_sd - self._log_sd_coef) * np.exp(-2.0 * log_sd))[:, None]
        g_L[diag, diag] += self._log_diag_coef / L[diag, diag]
        return value, g_L * self._lower, g_h

    def to_hyper(self, g_L: np.ndarray, L: np.ndarray) -> np.ndarray:
        """A gradient in L (its lower triangle is read) as one in the hyperparameters."""
        g = g_L[self._rows, self._cols].copy()
        g[self._diag] *= L[self._rows[self._diag], self._cols[self._diag]]
        return g

    def covariance(self, h: np.ndarray) -> np.ndarray:
        L = self.cholesky(h)
        return L @ L.T

    def scale(self, L: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, Any, float]:
        """Z from the sampled v, the factor R and log |∂Z/∂v|.

        Conditional scaling: per component j, H_j = I + s_j Lᵀ T_j L (Z_j's precision under
        the surrogate), H_j = R_j R_jᵀ and Z_j = R_j⁻ᵀ v_j, log |∂Z/∂v| = −Σ log diag R.
        """
        if self.information is None:
            return v, None, 0.0
        H = L.T @ self.information @ L
        H[:, self._range, self._range] += 1.0
        R = np.linalg.cholesky(H)
        Z = np.linalg.solve(np.swapaxes(R, 1, 2), v[..., None])[..., 0]
        return Z, R, -float(np.log(R[:, self._range, self._range]).sum())

    def unscale(
        self, L: np.ndarray, R: Any, Z: np.ndarray, g_Z: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(∂/∂v, the part of ∂/∂L through Z = R⁻ᵀ v and the Jacobian) from ∂/∂Z."""
        if R is None:
            return g_Z, np.zeros_like(L)
        diag = self._range
        g_v = np.linalg.solve(R, g_Z[..., None])[..., 0]  # R⁻¹ ∂/∂Z
        # ∂/∂R of Z = R⁻ᵀ v at fixed v, and of −Σ log diag R
        g_R = -Z[:, :, None] * g_v[:, None, :]
        g_R[:, diag, diag] -= 1.0 / R[:, diag, diag]
        g_R *= self._lower
        # the Cholesky factor's reverse mode (Murray 2016): ∂/∂H = sym(R⁻ᵀ Φ(Rᵀ ∂/∂R) R⁻¹),
        # Φ the lower triangle with its diagonal halved
        phi = (np.swapaxes(R, 1, 2) @ g_R) * self._lower
        phi[:, diag, diag] *= 0.5
        left = np.linalg.solve(np.swapaxes(R, 1, 2), phi)  # R⁻ᵀ Φ
        S = np.swapaxes(np.linalg.solve(np.swapaxes(R, 1, 2), np.swapaxes(left, 1, 2)), 1, 2)
        g_H = 0.5 * (S + np.swapaxes(S, 1, 2))
        # H_j = I + Lᵀ M_j L (M_j = s_j T_j): ∂/∂L = 2 Σ_j M_j L ∂/∂H_j
        return g_v, 2.0 * np.einsum("jab,bc,jcd->ad", self.information, L, g_H)


@dataclass(eq=False)
class MultiTermDensity:
    """Log posterior and gradient of a latent GLMM with several terms.

    Coordinates x = (β (p), the blocks' hyperparameters, the blocks' latent coordinates),
    blocks in order: the terms with slopes (:class:`SlopeBlock`, formula order; their
    hyperparameters PyMC's unconstrained ``chol_<g>`` or log ``sd_<g>``, their latent
    coordinates ``z_<g>`` row by row), then the intercept-only blocks (:class:`LatentBlock`,
    coarse to fine, the observation-level effect last; one log SD each, v_k their latent
    coordinates). β is as the builder samples it (``beta_centered`` with the centred design
    when there is an intercept and covariates). Build it with :func:`multiterm_density`.
    """

    family: Family
    y: np.ndarray
    trials: np.ndarray
    offset: np.ndarray
    design: np.ndarray
    beta_mu: np.ndarray
    beta_sd: np.ndarray
    blocks: list[Any]
    log_normaliser: float
    olre: bool
    pilot: np.ndarray = field(default_factory=lambda: np.zeros(0))
    meta: dict[str, Any] = field(default_factory=dict)
    #: W, the records' information at the pilot, and η̂ = offset + X β̂ (conditional scaling)
    pilot_information: np.ndarray = field(default_factory=lambda: np.zeros(0))
    eta_pilot: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        self._loglik_kernel = self.family.loglik_kernel
        self.slope_blocks = [b for b in self.blocks if isinstance(b, SlopeBlock)]
        self.intercept_blocks = [b for b in self.blocks if isinstance(b, LatentBlock)]
        # slopes first: the intercept blocks' centres may follow the slopes' effects
        self.blocks = self.slope_blocks + self.intercept_blocks
        hyper = np.cumsum([self.n_fixed] + [b.n_hyper for b in self.blocks])
        latent = np.cumsum([int(hyper[-1])] + [b.n_latent for b in self.blocks])
        self._hyper_slices = [
            slice(int(a), int(b)) for a, b in zip(hyper[:-1], hyper[1:], strict=True)
        ]
        self._slices = [slice(int(a), int(b)) for a, b in zip(latent[:-1], latent[1:], strict=True)]
        if self.pilot.size == 0:
            self.pilot = np.zeros(self.n_hyper)
        #: the fused kernel's logp (None: not built yet; False: it does not cover the model)
        self._fused: Any = None

    @property
    def n_fixed(self) -> int:
        return self.design.shape[1]

    @property
    def n_hyper(self) -> int:
        return self.n_fixed + sum(b.n_hyper for b in self.blocks)

    @property
    def ndim(self) -> int:
        return self.n_hyper + sum(b.n_latent for b in self.blocks)

    def _forward(self, x: np.ndarray) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """η and, per block in order, its effect and what the gradient needs.

        Slopes: C = S^½ Z Lᵀ. Intercept blocks, partial non-centring: c = A^((1−w)/2) v,
        ∂c/∂t = (1 − w) c. Conditional scaling (``block.information``): c = m + P^(−1/2) v
        with P = 1/A + τ = 1/(A q) and the centre m = −A q g,
        g = G_β (β − β̂) + G_c (c_1, …) (or B_kᵀ(W ∘ (η − η̂)) for the last block, η including
        the slopes' effects), so ∂c/∂t = q (c + m); the Jacobian log |∂z/∂v| is triangular.
        """
        p = self.n_fixed
        beta = x[:p]
        eta = self.offset + self.design @ beta
        parts: list[dict[str, Any]] = []
        n_slopes = len(self.slope_blocks)
        for block, hs, sl in zip(
            self.slope_blocks, self._hyper_slices[:n_slopes], self._slices[:n_slopes], strict=True
        ):
            L = block.cholesky(x[hs])
            Z, R, log_jac = block.scale(L, x[sl].reshape(block.n_basis, block.n_coef))
            C = block.sqrt_s[:, None] * (Z @ L.T)
            parts.append({"L": L, "R": R, "c": C, "z": Z, "log_jac": log_jac})
            eta = eta + block.effect(C)
        earlier: list[np.ndarray] = []
        first = len(self.slope_blocks)
        for block, hs, sl in zip(
            self.intercept_blocks, self._hyper_slices[first:], self._slices[first:], strict=True
        ):
            v = x[sl]
            part: dict[str, Any] = {"A": block.variances(x[hs])}
            if block.information is None:
                w = block.weights
                log_a = np.log(part["A"])
                to_c = np.exp(0.5 * (1.0 - w) * log_a)
                c = to_c * v
                part.update(dc_dt=(1.0 - w) * c, log_jac=-0.5 * float(w @ log_a), w=w)
            else:
                q = 1.0 / (1.0 + part["A"] * block.information)
                to_c = np.sqrt(part["A"] * q)
                g = np.zeros(block.n_basis)
                if block.implicit_shift:
                    g = block.to_basis(
                        block.scatter(self.pilot_information * (eta - self.eta_pilot))
                    )
                if block.shift_beta is not None:
                    g = g + block.shift_beta @ (beta - self.pilot[:p])
                if block.shift_c is not None and earlier:
                    g = g + block.shift_c @ np.concatenate(earlier)
                m = -part["A"] * q * g
                c = m + to_c * v
                part.update(dc_dt=q * (c + m), log_jac=0.5 * float(np.log(q).sum()), w=1.0 - q)
                part["q"] = q
            part.update(c=c, z=c / np.sqrt(part["A"]), to_c=to_c)
            parts.append(part)
            earlier.append(c)
            eta = eta + block.gather(block.to_levels(c))
        return eta, parts

    def latent(self, x: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """(c, z) per block: the effect in its basis and the PyMC model's z."""
        return [(part["c"], part["z"]) for part in self._forward(x)[1]]

    def log_jacobian(self, x: np.ndarray) -> float:
        """log |∂z/∂v|: the change of variables from the PyMC model's z."""
        return sum(part["log_jac"] for part in self._forward(x)[1])

    def logp(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """Log posterior density at x (with the Jacobians) and its gradient.

        One numba call (:func:`~bayeslmm.engines.bayes.glmm_terms_kernels.fused_logp`)
        where the fused kernel covers the model (intercept-only terms), else
        :meth:`numpy_logp`. The kernel reads the blocks at the first call.
        """
        if self._fused is None:
            from bayeslmm.engines.bayes.glmm_terms_kernels import fused_logp

            self._fused = fused_logp(self) or False
        if self._fused:
            return self._fused(x)
        return self.numpy_logp(x)

    def numpy_logp(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """:meth:`logp` in numpy: every model this density covers (the reference the fused
        kernel is tested against)."""
        # an early warm-up step can overflow exp(η): the non-finite value is what NUTS
        # counts as a divergence and rejects, so numpy's warnings about it are noise
        with np.errstate(over="ignore", invalid="ignore"):
            return self._logp(x)

    def _logp(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        p = self.n_fixed
        beta = x[:p]
        eta, parts = self._forward(x)
        loglik, g_eta = self._loglik_kernel(self.y, eta, self.trials)
        resid_b = (beta - self.beta_mu) / self.beta_sd
        value = loglik - 0.5 * float(resid_b @ resid_b) + self.log_normaliser
        grad = np.empty_like(x)
        g_beta = self.design.T @ g_eta - resid_b / self.beta_sd
        first = len(self.slope_blocks)
        blocks = self.intercept_blocks
        # ∂/∂c_k of everything given the earlier blocks, filled from the last block back:
        # a later block's centre depends on the earlier effects (and, through η, on the
        # slopes' effects: ``upstream`` per record)
        carried = [np.zeros(b.n_basis) for b in blocks]
        upstream = np.zeros_like(g_eta)
        for k in range(len(blocks) - 1, -1, -1):
            block, part = blocks[k], parts[first + k]
            hs, sl = self._hyper_slices[first + k], self._slices[first + k]
            c, z, A = part["c"], part["z"], part["A"]
            t = x[hs]
            d = block.to_basis(block.scatter(g_eta)) - c / A + carried[k]
            pt, dpt = block.prior(float(t[0]))
            value += -0.5 * float(z @ z) + part["log_jac"] + pt + float(t[0])
            # ½ log A_j moves c at fixed v (dc_dt), and A in N(c; 0, A) at fixed c
            g_half_log_a = d * part["dc_dt"] + z * z - part["w"]
            if block.merged:
                po, dpo = block.olre_prior(float(t[1]))
                value += po + float(t[1])
                grad[hs] = block.to_hyper(g_half_log_a, t) + np.array([dpt, dpo]) + 1.0
            else:
                grad[hs] = float(g_half_log_a.sum()) + dpt + 1.0
            grad[sl] = d * part["to_c"]
            if "q" not in part:
                continue
            back = -A * part["q"] * d  # ∂/∂g of the centre m = −A q g
            if block.implicit_shift:
                per_record = self.pilot_information * block.gather(block.to_levels(back))
                g_beta += self.design.T @ per_record
                upstream += per_record
                for j in range(k):
                    carried[j] += blocks[j].to_basis(blocks[j].scatter(per_record))
            if block.shift_beta is not None:
                g_beta += block.shift_beta.T @ back
            if block.shift_c is not None and k:
                flat = block.shift_c.T @ back
                start = 0
                for j in range(k):
                    carried[j] += flat[start : start + blocks[j].n_basis]
                    start += blocks[j].n_basis
        g_up = g_eta + upstream
        slopes = zip(
            self.slope_blocks, parts, self._hyper_slices, self._slices, strict=False
        )  # the slope blocks come first; zip stops at them
        for block, part, hs, sl in slopes:
            L, Z = part["L"], part["z"]
            g_C = block.to_basis(g_up)
            scaled = block.sqrt_s[:, None] * Z  # S^½ Z: C = S^½ Z Lᵀ
            prior, g_L, g_h = block.hyper_prior(x[hs], L)
            value += prior - 0.5 * float(np.einsum("ij,ij->", Z, Z)) + part["log_jac"]
            g_v, g_L_scale = block.unscale(L, part["R"], Z, block.sqrt_s[:, None] * (g_C @ L) - Z)
            grad[sl] = g_v.ravel()
            grad[hs] = g_h + block.to_hyper(g_C.T @ scaled + g_L + g_L_scale, L)
        grad[:p] = g_beta
        return value, grad

    # -- draws ---------------------------------------------------------------------------
    @property
    def merged(self) -> bool:
        """Whether a kinship block carries the observation-level effect (merged)."""
        return any(getattr(b, "merged", False) for b in self.blocks)

    def expand(
        self, x: np.ndarray, rng: np.random.Generator | None = None
    ) -> dict[str, np.ndarray]:
        """The PyMC model's variables at x (free and deterministic, same names, shapes).

        A merged block's split of c = a + e into the kinship effect and the
        observation-level effect is drawn from a | c (with ``rng``; a fresh generator when
        None), as the one-term density draws it
        (:func:`~bayeslmm.engines.bayes.glmm_density.split_merged_effect`).
        """
        meta, p = self.meta, self.n_fixed
        beta_s = x[:p]
        out: dict[str, Any] = {}
        if p:
            out[meta["beta_name"]] = beta_s
            if meta["beta_name"] != "beta":
                beta = beta_s.copy()
                beta[meta["intercept"]] -= beta_s @ meta["means"]
                out["beta"] = beta
        var_terms, share_of, var_o = [], {}, 0.0
        latent = self.latent(x)
        for k, (block, (c, z)) in enumerate(zip(self.blocks, latent, strict=True)):
            hyper = x[self._hyper_slices[k]]
            g = block.name
            if isinstance(block, SlopeBlock):
                L = block.cholesky(hyper)
                cov = L @ L.T
                sds = np.sqrt(np.diag(cov))
                out[f"sd_{g}"] = sds[0] if block.kind == "scalar" else sds
                if block.kind != "scalar":
                    out[f"cov_{g}"] = cov
                if block.kind == "chol":
                    out[f"chol_{g}"] = L[block._rows, block._cols]
                    out[f"corr_{g}"] = cov / np.outer(sds, sds)
                out[f"z_{g}"] = z
                out[f"u_{g}"] = c if block.vectors is None else block.vectors @ c
                var_terms.append(float(np.sum(block.unit_weights * cov)))
                out[f"var_{g}"] = var_terms[-1]
                share_of[g] = float(np.sum(block.share_weights * cov))
                continue
            sd = math.exp(float(hyper[0]))
            if self.olre and not self.merged and k == len(self.blocks) - 1:
                var_o = sd * sd
                out["sd_olre"] = sd
                out["z_olre"] = z
                out["var_olre"] = var_o
                continue
            if block.merged:
                rng = rng if rng is not None else np.random.default_rng()
                sd_o = math.exp(float(hyper[1]))
                var_o = sd_o * sd_o
                a = split_merged_effect(c, sd * sd, var_o, block.eigenvalues, rng)
                r = block.kinship_rank
                z = a[:r] / (sd * np.sqrt(block.eigenvalues[:r]))  # a = 0 beyond r
                out["sd_olre"] = sd_o
                out["z_olre"] = block.gather(block.to_levels(c - a)) / sd_o
                out["var_olre"] = var_o
                c = a
            out[f"sd_{g}"] = sd
            out[f"z_{g}"] = z[:, None]
            out[f"var_{g}"] = sd * sd * block.unit_weight
            out[f"u_{g}"] = block.to_levels(c)[:, None]
            var_terms.append(sd * sd * block.unit_weight)
            share_of[g] = sd * sd * block.share_weight
        eta_fixed = self.offset + self.design @ beta_s
        var_residual = self.family.latent_residual_variance(eta_fixed, sum(var_terms), var_o)
        out["var_residual"] = var_residual
        # the shares in the formula's order of terms (the blocks are sorted by size)
        share_vars = [share_of[g] for g in meta["terms"]]
        shares = np.array([*share_vars, var_residual]) / (sum(share_vars) + var_residual)
        out["variance_share"] = shares
        if meta.get("h2_index") is not None:
            out["h2"] = shares[meta["h2_index"]]
        return {k: np.asarray(v, dtype=float) for k, v in out.items()}

    def initial_point(self, seed: int) -> np.ndarray:
        """The pilot point, hyperparameters jittered by U(−1, 1) as PyMC jitters, v near 0."""
        rng = np.random.default_rng(seed)
        x = np.zeros(self.ndim)
        x[: self.n_hyper] = self.pilot + rng.uniform(-1.0, 1.0, self.n_hyper)
        x[self.n_hyper :] = rng.uniform(-0.1, 0.1, self.ndim - self.n_hyper)
        return x


def multiterm_obstacles(built: Any) -> list[str]:
    """Why :func:`multiterm_density` does not cover ``built`` (empty when it does).

    Covered: a latent GLMM of a family with a closed-form density (Poisson log, Bernoulli
    and binomial, logit or probit) with any number of random terms (kinship or iid,
    intercepts or slopes, correlated ``|`` or not ``||``, repeated records, ``rank_share``),
    with or without the observation-level effect, normal priors on the fixed effects, SD
    priors with closed-form densities, and the PyMC model left as the builder made it.

    Examples
    --------
    >>> import pandas as pd, bayeslmm as bl
    >>> from bayeslmm.engines.bayes import build
    >>> df = pd.DataFrame({"y": [0, 1, 1, 0], "g": ["a", "a", "b", "b"], "x": [0, 1, 0, 1.0]})
    >>> spec = bl.specify("y ~ 1 + (1 + x || g)", df, family="bernoulli")
    >>> multiterm_obstacles(build(spec, strategy="latent"))
    []
    >>> multiterm_obstacles(build(bl.specify("x ~ 1 + (1 | g)", df), strategy="latent"))
    ['family gaussian (identity) has no closed-form GLMM density']
    """
    spec = built.spec
    if built.strategy != "latent":
        return [f"strategy {built.strategy!r}, not 'latent'"]
    fam = spec.family
    if fam.glmm_density_parametrisation is None:
        return [f"family {fam.name} ({fam.link}) has no closed-form GLMM density"]
    model = built.model
    names = {v.name for v in model.free_RVs + model.deterministics}
    expected = set(model_variable_names(built))
    for t in spec.terms:
        if t.n_coef > 1:  # the builder's covariance of the coefficients
            expected |= {f"cov_{t.group}", f"chol_{t.group}", f"corr_{t.group}"}
            if not t.correlated:
                expected -= {f"chol_{t.group}", f"corr_{t.group}"}
    changed = names != expected or model.potentials
    if changed or len(model.observed_RVs) != 1:
        return ["the PyMC model was changed after building (or uses the share priors)"]
    sd_priors = [built.priors.sd[t.group] for t in spec.terms] + [built.priors.sd_olre]
    if not all(p.has_closed_form for p in sd_priors if p is not None):
        return ["an SD prior has no closed-form density"]
    return []


def multiterm_density(
    built: Any,
    dtype: str = "float32",
    weights: str = "auto",
    slopes: str = "noncentred",
    merge_olre: bool = True,
) -> MultiTermDensity:
    """The closed-form log posterior of a built latent GLMM, with pilots.

    Parameters
    ----------
    built : BuiltModel
        A latent-strategy GLMM that :func:`multiterm_obstacles` accepts.
    dtype : {"float32", "float64"}
        Precision of the kinship eigenvectors in the mat-vecs.
    weights : {"auto", "conditional", "partial", "noncentred"}
        How the latent coordinates are sampled (module notes): ``"conditional"``,
        conditional scaling c = (1/A + τ)^(−1/2) v with τ the information at the pilot;
        ``"auto"``, the same except where a measured better choice is known (non-centred
        with non-centred slopes, or with the observation-level effect merged);
        ``"partial"``, partial non-centring with weights fixed at the pilot variances;
        ``"noncentred"``, w = 0 everywhere (the PyMC model's own coordinates). Binomial
        families have no pilot and are sampled non-centred under every choice.
    slopes : {"noncentred", "conditional"}
        How terms with slopes are sampled: the PyMC model's non-centred Z, or (with a
        Poisson pilot and ``weights`` not ``"noncentred"``) conditionally scaled per basis
        component (module notes). With non-centred slopes and ``weights="auto"`` the
        intercept-only blocks are non-centred too: the PyMC model's coordinates throughout.
        Measured on a Poisson kinship (1 + x | id) model with the observation-level effect
        (``benchmarks/bench_glmm_terms.py``, n = 500, two seeds, run with the scripts of
        commits 47df824 (seed 1) and e1b46be (seed 2); commands and ways in
        ``benchmarks/results/bench_glmm_terms.txt``): everything non-centred (way
        ``closed-nc``) gave ESS per draw 0.140 / 0.066 at 26.5 / 27.2 CPU s; the
        observation-level effect conditionally scaled with non-centred slopes (the default
        of commit e1b46be, which no argument selects from commit 8144379 on) 0.086 / 0.035
        at 16.9 / 17.7 CPU s (6 divergences on seed 2); the slopes conditionally scaled as
        well 0.126 (seed 1) at 4× the cost per gradient (batched 2 × 2 Cholesky factors and
        solves in numpy), 50.1 CPU s.
    merge_olre : bool
        Merge the observation-level effect into the first intercept-only kinship term whose
        levels are one-to-one with the records (module notes; :func:`merged_term` names
        it). False keeps it a block of its own.

    Returns
    -------
    MultiTermDensity

    Examples
    --------
    >>> import numpy as np, pandas as pd, bayeslmm as bl
    >>> from bayeslmm.engines.bayes import build
    >>> df = pd.DataFrame({"y": [0, 3, 1, 5, 2, 4], "a": list("aabbcc"), "b": list("xyxyxy")})
    >>> spec = bl.specify("y ~ 1 + (1 | a) + (1 | b)", df, family="poisson")
    >>> density = multiterm_density(build(spec, strategy="latent"))
    >>> [b.name for b in density.blocks]  # coarse to fine: b has 2 levels, a 3
    ['b', 'a', 'olre']
    >>> logp, grad = density.logp(density.initial_point(1))
    >>> grad.shape == (density.ndim,)
    True
    """
    reasons = multiterm_obstacles(built)
    if reasons:
        raise ValueError(
            f"The multi-term GLMM density does not cover this model ({'; '.join(reasons)}); "
            "sample the PyMC model instead."
        )
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}; got {weights!r}.")
    if slopes not in SLOPES:
        raise ValueError(f"slopes must be one of {SLOPES}; got {slopes!r}.")
    spec, priors = built.spec, built.priors
    fam = spec.family
    y = np.asarray(spec.y, dtype=float)
    n = y.size
    trials = np.asarray(spec.trials, dtype=float) if spec.trials is not None else np.ones(n)
    offset = np.zeros(n) if spec.offset is None else np.asarray(spec.offset, dtype=float)
    fe = fixed_effects_prior(spec, priors)
    meta: dict[str, Any] = {"h2_index": None, "terms": [t.group for t in spec.terms]}
    if built.h2_term is not None:
        meta["h2_index"] = list(built.components).index(built.h2_term)
    if fe is None:
        design, mu, sd = np.zeros((n, 0)), np.zeros(0), np.ones(0)
    else:
        design, mu, sd = fe.design, np.asarray(fe.mu, float), np.asarray(fe.sd, float)
        meta.update(beta_name=fe.sampled_name, intercept=fe.intercept, means=fe.means)
    olre = priors.sd_olre is not None
    merge = merged_term(built) if merge_olre else None
    blocks: list[Any] = []
    for term in spec.terms:
        g = term.group
        index = np.asarray(term.index, dtype=np.intp)
        if np.array_equal(index, np.arange(term.n_levels)):
            index = None
        r = -1
        if term.kinship is not None:
            r = len(built.model.coords[f"{g}_basis"])
            root = term.kinship.root()
            values = np.asarray(root.values[:r], dtype=float)
            vectors = root.vectors[:, :r]
            if g == merge and r < term.n_levels:
                # a + e needs all n directions: beyond the kinship basis (K's null space,
                # or the eigenvectors rank_share dropped) the merged effect is e alone
                rest = term.kinship.eigenvectors[:, ::-1][:, r:]
                values = np.concatenate([values, np.zeros(rest.shape[1])])
                vectors = np.hstack([vectors, rest])
            vectors = np.ascontiguousarray(vectors, dtype=dtype)
        else:
            values, vectors = np.ones(term.n_levels), None
        if not _intercept_only(term):
            blocks.append(_slope_block(term, priors, index, values, vectors))
            continue
        blocks.append(
            LatentBlock(
                name=g,
                n_levels=term.n_levels,
                index=index,
                eigenvalues=values,
                vectors=vectors,
                prior=positive_log_prior(sd_prior_for(priors.sd[g], 1)),
                unit_weight=float(term.variance_weights("unit")[0, 0]),
                share_weight=float(term.variance_weights("sample")[0, 0]),
                olre_prior=positive_log_prior(priors.sd_olre) if g == merge else None,
                kinship_rank=r,
                prior_spec=sd_prior_for(priors.sd[g], 1),
                olre_prior_spec=priors.sd_olre if g == merge else None,
            )
        )
    if olre and merge is None:
        blocks.append(
            LatentBlock(
                name="olre",
                n_levels=n,
                index=None,
                eigenvalues=np.ones(n),
                vectors=None,
                prior=positive_log_prior(priors.sd_olre),
                prior_spec=priors.sd_olre,
            )
        )
    # coarse blocks first (stable: the observation-level effect, alone or merged, stays
    # last): a later block's centre follows the earlier blocks' effects under conditional
    # scaling; terms with slopes go before all of them (MultiTermDensity puts them there)
    blocks.sort(key=lambda b: (isinstance(b, LatentBlock), getattr(b, "merged", False), b.n_basis))
    n_latent = sum(b.n_latent for b in blocks)
    # the normalising constants the PyMC model's logp carries
    const = -0.5 * (n_latent + mu.size) * LOG_2PI - float(np.log(sd).sum())
    const += float(fam.log_constant(y, trials).sum())
    const += sum(b.log_normaliser() for b in blocks if isinstance(b, SlopeBlock))
    density = MultiTermDensity(
        family=fam,
        y=y,
        trials=trials,
        offset=offset,
        design=np.ascontiguousarray(design, dtype=float),
        beta_mu=np.broadcast_to(mu, (design.shape[1],)).astype(float),
        beta_sd=np.broadcast_to(sd, (design.shape[1],)).astype(float),
        blocks=blocks,
        log_normaliser=const,
        olre=olre,
        meta=meta,
    )
    beta, var0, info = _pilot(density)
    density.pilot = np.concatenate(
        [beta, *(_hyper_pilot(b, v0) for b, v0 in zip(density.blocks, var0, strict=True))]
    )
    if weights == "auto" and density.slope_blocks and slopes == "noncentred":
        weights = "noncentred"  # the PyMC model's coordinates throughout (measured best)
    if weights == "auto" and density.merged:
        # the merged kinship + OLRE block mixed better non-centred than conditionally
        # scaled, and so did the whole model (benchmarks/bench_glmm_terms.py, k-iid, n = 500,
        # seeds 1 and 2: min ESS 236 and 306 of 2000 draws against 175 and 70)
        weights = "noncentred"
    if weights != "noncentred" and info is not None:
        sequential = weights in ("auto", "conditional")
        blocks = density.intercept_blocks
        var0 = var0[len(density.slope_blocks) :]
        infos = _information(density, var0, info, sequential)
        for k, (block, (info_c, shift_beta, shift_c), v0) in enumerate(
            zip(blocks, infos, var0, strict=True)
        ):
            if sequential:
                block.information, block.shift_beta, block.shift_c = info_c, shift_beta, shift_c
                block.implicit_shift = k == len(blocks) - 1
            else:
                a0 = block.pilot_variances(v0)
                block.weights = info_c * a0 / (1.0 + info_c * a0)
        density.pilot_information = info
        density.eta_pilot = offset + density.design @ beta
        if sequential:
            _explicit_last_shift(density)
        # the slopes' information with the observation-level effect integrated out
        per_record = info / (1.0 + info * var0[-1]) if olre else info
        for block in density.slope_blocks if slopes == "conditional" else []:
            block.information = _slope_information(block, per_record)
    return density


def merged_term(built: Any) -> str | None:
    """The term the observation-level effect merges into, or None.

    The first intercept-only kinship term (formula order) whose levels are one-to-one with
    the records and whose kinship has its whole eigendecomposition (a low-rank kinship
    has no basis of the complement), in a model with the observation-level effect.

    Examples
    --------
    >>> import numpy as np, pandas as pd, bayeslmm as bl
    >>> from bayeslmm.engines.bayes import build
    >>> from bayeslmm.families import Poisson
    >>> K = bl.Kinship(np.eye(4) * 0.5 + 0.5, ["a", "b", "c", "d"])
    >>> df = pd.DataFrame({"y": [0, 3, 1, 5], "id": list(K.ids), "herd": list("xxyy")})
    >>> spec = bl.specify("y ~ 1 + (1 | herd) + (1 | id)", df, kinship={"id": K},
    ...                   family=Poisson(overdispersion=True))
    >>> merged_term(build(spec, strategy="latent"))
    'id'
    """
    spec = built.spec
    if built.priors.sd_olre is None:
        return None
    for term in spec.terms:
        if term.kinship is None or not _intercept_only(term):
            continue
        index = np.sort(np.asarray(term.index))
        one_each = term.n_levels == spec.n_obs and np.array_equal(index, np.arange(spec.n_obs))
        if one_each and hasattr(term.kinship, "eigenvectors"):
            return term.group
    return None


def _explicit_last_shift(density: MultiTermDensity) -> None:
    """The last block's centre slopes as matrices, G_β = Bᵀ W X and G_c = Bᵀ W [B_1 …],
    where that is cheaper than its implicit form Bᵀ (W ∘ (η − η̂)).

    The two are the same function of β and the earlier effects; the implicit form costs a
    pass over B (n × r) forward and one back, the explicit one r × (p + Σ r_j). A kinship
    block last (the merged observation-level effect) after a few iid levels is the case
    that gains: two n × n mat-vecs per gradient fewer. Not with slopes (whose effects the
    implicit form follows too)."""
    blocks = density.intercept_blocks
    if not blocks or density.slope_blocks:
        return
    last, earlier = blocks[-1], blocks[:-1]
    width = density.n_fixed + sum(b.n_basis for b in earlier)
    if last.vectors is None or 2 * width > last.n_basis:
        return

    def basis(block: LatentBlock) -> np.ndarray:  # B = Z U, records × components
        U = np.eye(block.n_levels) if block.vectors is None else block.vectors.astype(float)
        return U if block.index is None else U[block.index]

    weighted = basis(last) * density.pilot_information[:, None]
    last.shift_beta = weighted.T @ density.design
    last.shift_c = weighted.T @ np.hstack([basis(b) for b in earlier]) if earlier else None
    last.implicit_shift = False


def _slope_information(block: SlopeBlock, per_record: np.ndarray) -> np.ndarray:
    """s_j T_j per component (r × c × c): T_j = Σ_i w_i B_ij² d_i d_iᵀ, the information
    about component j's coefficients from the records' information w_i (B = Z U; each
    component on its own, as the intercept blocks' large-data path)."""
    D = block.design
    per_level = np.zeros((block.n_levels, block.n_coef, block.n_coef))
    index = np.arange(D.shape[0]) if block.index is None else block.index
    np.add.at(per_level, index, per_record[:, None, None] * D[:, :, None] * D[:, None, :])
    if block.vectors is not None:
        U = block.vectors.astype(float)
        per_level = np.einsum("lj,lab->jab", U * U, per_level)
    return block.eigenvalues[:, None, None] * per_level


def _intercept_only(term: Any) -> bool:
    """One coefficient whose design is 1 on every record (a :class:`LatentBlock`)."""
    return term.n_coef == 1 and not np.any(np.asarray(term.design) != 1.0)


def _slope_block(
    term: Any, priors: Any, index: np.ndarray | None, values: np.ndarray, vectors: Any
) -> SlopeBlock:
    """The :class:`SlopeBlock` of a term with slopes, its priors as the builder's."""
    from bayeslmm.priors import Prior

    c = term.n_coef
    prior = priors.sd[term.group]
    # the builder's SD priors are vectors over the coefficients (one family)
    per_coef = [
        Prior(prior.family, tuple(float(np.broadcast_to(v, (c,))[j]) for v in prior.params))
        for j in range(c)
    ]
    kind = "scalar" if c == 1 else ("chol" if term.correlated else "diag")
    return SlopeBlock(
        name=term.group,
        n_levels=term.n_levels,
        index=index,
        eigenvalues=values,
        vectors=vectors,
        design=np.ascontiguousarray(term.design, dtype=float),
        kind=kind,
        priors=[positive_log_prior(p) for p in per_coef],
        lkj_eta=float(priors.cor[term.group].params[0]) if kind == "chol" else 1.0,
        unit_weights=np.asarray(term.variance_weights("unit"), dtype=float),
        share_weights=np.asarray(term.variance_weights("sample"), dtype=float),
    )


def _hyper_pilot(block: Any, var0: float) -> np.ndarray:
    """A block's hyperparameters at its pilot variance (SDs √var0, no correlation; both
    SDs of a merged block)."""
    h = np.zeros(block.n_hyper)
    if isinstance(block, SlopeBlock):
        h[block._diag] = 0.5 * math.log(var0)
    else:
        h[:] = 0.5 * math.log(var0)
    return h


def _pilot(density: MultiTermDensity) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(β̂, pilot variance per block, information per record or None).

    β̂: a few damped Newton steps for the GLM without random effects. Variances: the
    family's moment estimate of the latent variance (Poisson) split equally between the
    variance components (a merged block holds two, each at the block's pilot); else 1 and
    no information (binomial: the weights stay 0).
    """
    p = density.n_fixed
    beta = density.beta_mu.copy()
    X, prec = density.design, 1.0 / density.beta_sd**2
    fam = density.family
    for _ in range(25):
        if not p:
            break
        eta = density.offset + X @ beta
        _, g_eta = density._loglik_kernel(density.y, eta, density.trials)
        W = density.trials * fam.information(eta)[0]
        step = np.linalg.solve(
            (X.T * W) @ X + np.diag(prec), X.T @ g_eta - prec * (beta - density.beta_mu)
        )
        beta = beta + np.clip(step, -2.0, 2.0)
        if np.max(np.abs(step)) < 1e-8:
            break
    k = len(density.blocks)
    eta = density.offset + X @ beta
    total = fam.moment_latent_variance(density.y, float(np.mean(fam.inverse_link(eta))))
    if total is None or k == 0:
        return beta, np.ones(k), None
    components = k + int(density.merged)
    return beta, np.full(k, total / components), density.trials * fam.information(eta)[0]


#: Observations up to which the weights use the exact Gaussian-surrogate information
#: (a dense n × n Cholesky factor per term, once); above, the per-record approximation.
DENSE_INFORMATION_LIMIT = 3000


def _information(
    density: MultiTermDensity, var0: np.ndarray, info: np.ndarray, sequential: bool
) -> list[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]]:
    """(τ, G_β, G_c) per block: the information about the block's components under the
    Gaussian surrogate y* ~ N(η, W⁻¹) and the slopes of their conditional mean in β and in
    the earlier blocks' effects (module notes).

    ``sequential``: block k given β and the earlier blocks, the later ones integrated out
    at their pilot variances (the last block's slopes are implicit, None); else every other
    block integrated out and no slopes.
    """
    if info.size <= DENSE_INFORMATION_LIMIT:
        return _dense_information(density, var0, info, sequential)
    return [
        _record_information(density, k, var0, info, sequential)
        for k in range(len(density.intercept_blocks))
    ]


def _record_information(
    density: MultiTermDensity, k: int, var0: np.ndarray, info: np.ndarray, sequential: bool
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The information about block k's components from its own records, the other terms
    ignored except the observation-level effect (its noise discounted per record), and the
    slope in β of their conditional mean (large data sets: no n × n matrix)."""
    blocks = density.intercept_blocks
    block = blocks[k]
    last = k == len(blocks) - 1
    own = last if sequential else (density.olre and last)
    per_record = info if own or not density.olre else info / (1.0 + info * var0[-1])
    per_level = block.scatter(per_record)
    X = density.design
    shift = None
    if sequential and not last:
        shift = np.zeros((block.n_levels, X.shape[1]))
        for j in range(X.shape[1]):
            shift[:, j] = block.scatter(per_record * X[:, j])
    if block.vectors is None:
        return per_level, shift, None
    U = block.vectors.astype(float)
    return (U * U).T @ per_level, None if shift is None else U.T @ shift, None


def _dense_information(
    density: MultiTermDensity, var0: np.ndarray, info: np.ndarray, sequential: bool
) -> list[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]]:
    """diag(B_kᵀ V_k⁻¹ B_k) per block, with V_k = W⁻¹ + Σ_j σ_j⁰² B_j S_j B_jᵀ over the
    blocks integrated out (the later ones when ``sequential``, else every other one),
    B_j = Z_j U_j, and the slopes B_kᵀ V_k⁻¹ X and B_kᵀ V_k⁻¹ B_j (j < k). A population
    effect whose levels are also covered by a nested genotype effect gets the information
    that the genotypes leave it, not that of all its records."""
    n = info.size
    bases, covs = [], []
    for block, v0 in zip(density.intercept_blocks, var0, strict=True):
        if block.vectors is None:
            B = np.zeros((n, block.n_levels))
            B[np.arange(n), np.arange(n) if block.index is None else block.index] = 1.0
        else:
            U = block.vectors.astype(float)
            B = U if block.index is None else U[block.index]
        bases.append(B)
        covs.append((B * block.pilot_variances(v0)) @ B.T)
    noise = np.diag(1.0 / np.maximum(info, 1e-12))
    out: list[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]] = []
    K = len(bases)
    for k, B in enumerate(bases):
        others = range(k + 1, K) if sequential else [j for j in range(K) if j != k]
        if sequential and k == K - 1:  # V = W⁻¹: diagonal, slopes implicit
            out.append((np.einsum("ij,i,ij->j", B, info, B), None, None))
            continue
        L = np.linalg.cholesky(noise + sum((covs[j] for j in others), np.zeros((n, n))))
        half = np.linalg.solve(L, B)  # L⁻¹ B: Bᵀ V⁻¹ B = halfᵀ half
        tau = np.einsum("ij,ij->j", half, half)
        if not sequential:
            out.append((tau, None, None))
            continue
        shift_beta = half.T @ np.linalg.solve(L, density.design)
        shift_c = half.T @ np.linalg.solve(L, np.hstack(bases[:k])) if k else None
        out.append((tau, shift_beta, shift_c))
    return out


def nutpie_model(density: MultiTermDensity, coords: dict[str, Any]) -> Any:
    """A nutpie model that samples ``density`` and stores the PyMC model's variables.

    ``coords`` are the built model's coordinates (levels, basis, fixed-effect names).
    """
    from bayeslmm.engines.bayes.nutpie_callback import pyfunc_model

    dims_of: dict[str, tuple[str, ...]] = {
        "beta": ("fixed",),
        "beta_centered": ("fixed",),
        "variance_share": ("component",),
        "z_olre": ("obs",),
    }
    separate_olre = density.olre and not density.merged
    for block in density.blocks[: len(density.blocks) - int(separate_olre)]:
        g = block.name
        basis = f"{g}_basis" if block.vectors is not None else f"{g}_level"
        dims_of[f"z_{g}"] = (basis, f"{g}_coef")
        dims_of[f"u_{g}"] = (f"{g}_level", f"{g}_coef")
        if isinstance(block, SlopeBlock) and block.kind != "scalar":
            dims_of[f"sd_{g}"] = (f"{g}_coef",)
            dims_of[f"cov_{g}"] = dims_of[f"corr_{g}"] = (f"{g}_coef", f"{g}_coef_bis")
            # chol_<g> has no dims, in the PyMC model either (ArviZ names its axis)
    # a merged block's split a | a + e is drawn per draw: a generator per chain
    return pyfunc_model(density, dims_of, coords, seeded_expand=density.merged)
