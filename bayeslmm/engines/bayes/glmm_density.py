"""The latent kinship GLMM's log posterior written out by hand, for nutpie.

The latent strategy's PyMC model of a GLMM with one kinship effect,
``y ~ X + (1 | id)`` with u = σ_a · U √S · z, is sampled fastest when nothing is compiled
and the posterior is reparametrised so that NUTS' diagonal mass matrix fits it. This module
writes the *same* posterior (tested equal to the built model's ``logp`` up to the
Jacobian of the reparametrisation) as numpy code: two matrix–vector products with the
eigenvectors of K per gradient, nothing compiled per data set. nutpie samples it through
:mod:`~bayeslmm.engines.bayes.glmm_kernels`, the same density as C callbacks (numba, from
the on-disk cache, no GIL; tested equal to :meth:`GLMMDensity.logp`), or through
:meth:`GLMMDensity.logp` itself where those do not cover the model (:func:`nutpie_model`).
Exact changes of variables make NUTS' job easier. With c the effect in the
eigenbasis (c_j ~ N(0, A_j), A_j = σ_a² s_j [+ σ_o²]) and h the hyperparameters:

1. **Poisson's observation-level effect merged into the kinship effect.** With one record
   per individual, a + e ~ N(0, σ_a² K + σ_o² I) = N(0, U diag(σ_a² s + σ_o²) Uᵀ): one
   latent vector instead of two and no funnel between σ_o and e. The split into a and e
   is drawn afterwards from a | a + e (a Gaussian, diagonal in the eigenbasis), so the
   draws of ``z_id``, ``z_olre``, ``u_id`` are those of the PyMC model.
2. **Conditional centring** (:class:`ConditionalCentring`; the default for binary traits):
   c_j = b_j(β) / P_j(h) + P_j(h)^(−1/2) v_j with P_j = 1/A_j + τ_j(h), i.e. each
   component centred and scaled by its conditional posterior given h under a Gaussian
   surrogate of the likelihood with score b and information τ. Were the likelihood
   that Gaussian, v would be independent of h exactly. The surrogate per family:

   - binomial: b the score at c = 0 (moving linearly with β), τ(h) the *expected*
     information of the records when η ~ N(Xβ̂, σ_a² K_ii): it falls as σ_a² grows
     (p(1 − p) shrinks in the tails), and that dependence is what matters: the
     non-centred form pins log σ_a given the field, this form frees it. At n = 1000,
     ESS of σ_a² 1229 of 2000 draws against 177 non-centred, and 261 with τ held at its
     pilot value (benchmarks/glmm_parametrisations.py).
   - Poisson (opt-in): no centre shift, τ the records' own information y + ½. Against
     partial non-centring it was better on one data set, equal on one and worse on two
     (ESS 895/856/508/162 against 466/847/1023/249) at ~15% more time per gradient, so
     Poisson keeps partial non-centring.

3. **Partial non-centring per eigen-component** (:class:`PartialNonCentring`;
   Papaspiliopoulos, Roberts & Sköld 2007; the default for Poisson):
   c_j = A_j^((1−w_j)/2) v_j with v_j ~ N(0, A_j^(w_j)); w → 0 is the non-centred form
   (weak data), w → 1 the centred one. w_j = I A⁰_j / (1 + I A⁰_j), with I the mean
   Fisher information per individual and A⁰ pilot variances from the moments of y
   (Poisson); w = 0 (non-centred) for binomial families.

4. **Marginal-scale fixed effects for binary traits** (with conditional centring):
   β = β* √(1 + kV), V = σ_a² mean(K_ii), k = 1 (probit, exact) or (16√3/15π)² (logit;
   Zeger, Liang & Albert 1988). The data pin the population-averaged β*, not β: without
   this, the intercept of a rare trait and the slope of a strong covariate ride up and
   down with σ_a² (ESS of σ_a² 656 against 246 without it at 10% prevalence, 325
   against 137 with a strong covariate, n = 500; benchmarks/glmm_parametrisations.py).

Everything that depends on the family comes from its :class:`~bayeslmm.families.Family`
object, bound once when the density is built: the log-likelihood kernel and its gradient
(:meth:`~bayeslmm.families.Family.loglik_kernel`, the hot path), the information per trial
and its expectation, the moment pilot, the attenuation k, and the default parametrisation
(:attr:`~bayeslmm.families.Family.glmm_density_parametrisation`, None for a family the
density does not cover).

Any surrogate leaves the posterior exact (the change of variables and its Jacobian are
in the density); the surrogate only decides how well a diagonal mass matrix fits.

The eigenvectors are kept in single precision by default (``dtype="float32"``): the
mat-vecs read half the memory, and the density NUTS targets is the float32-evaluated one
(its rounding, ~1e-7 relative in η, shifts log-densities by ~1e-4 nats at n = 1000). The
tests use float64.

Measured at n = 1000 (benchmarks/bench_glmm.py, see benchmarks/results/bench_glmm.txt):
ESS of σ_a² per second of the whole fit against the brms-style PyMC model.

References
----------
Papaspiliopoulos, O., Roberts, G. O. & Sköld, M. (2007). A general framework for the
parametrization of hierarchical models. Statistical Science 22, 59–73.

Zeger, S. L., Liang, K.-Y. & Albert, P. S. (1988). Models for longitudinal data: a
generalized estimating equation approach. Biometrics 44, 1049–1060.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from bayeslmm.engines.bayes.fixed_effects import fixed_effects_prior
from bayeslmm.engines.bayes.spectral_density import positive_log_prior
from bayeslmm.families import Family, get_family

LOG_2PI = math.log(2.0 * math.pi)
PARAMETRISATIONS = ("auto", "conditional", "partial")


def unit_information(
    family: str | Family, link: str | None, eta: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Fisher information of one trial at η, −E ∂²log p/∂η², and its derivative in η.

    ``family`` is a :class:`~bayeslmm.families.Family` or its name (with ``link``); the
    maths is :meth:`~bayeslmm.families.Family.information`.

    Examples
    --------
    >>> w, dw = unit_information("bernoulli", "logit", np.zeros(1))
    >>> float(w[0]), float(dw[0])  # p(1 − p) and its slope at p = ½
    (0.25, 0.0)
    """
    w, slope = get_family(family, link).information(eta)
    return w, w * slope


def expected_information(
    family: str | Family, link: str | None, mu: np.ndarray, V: float
) -> tuple[np.ndarray, np.ndarray]:
    """E[I(η)] over η ~ N(μ, V) per entry of μ, and its derivative in V.

    Poisson: exp(μ + V/2) exactly; binomial: 20-point Gauss–Hermite, differentiated as
    the quadrature it is so that the density's gradient is exact
    (:meth:`~bayeslmm.families.Family.expected_information`).

    Examples
    --------
    >>> f, df = expected_information("poisson", "log", np.zeros(1), 0.5)
    >>> round(float(f[0]), 4)  # exp(0.25), the lognormal mean
    1.284
    """
    return get_family(family, link).expected_information(mu, V)


def split_merged_effect(
    c: np.ndarray, var_a: float, var_o: float, eigenvalues: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """A draw of the kinship part a of a merged effect c = a + e in K's eigenbasis.

    With a ~ N(0, σ_a² S) and e ~ N(0, σ_o² I) in the eigenbasis, a | c is Gaussian and
    diagonal: mean σ_a² s_j / A_j · c_j, variance σ_a² s_j σ_o² / A_j, A_j = σ_a² s_j + σ_o²
    (a = 0 where s_j = 0, K's null space or the complement of a truncated basis). The
    observation-level effect is then c − a, so the drawn split keeps a + e = c exactly.

    Examples
    --------
    >>> a = split_merged_effect(np.ones(2), 1.0, 1.0, np.array([1.0, 0.0]),
    ...                         np.random.default_rng(0))
    >>> float(a[1])  # no kinship variance in that direction: all of c is e
    0.0
    """
    share = var_a * eigenvalues / (var_a * eigenvalues + var_o)
    return share * c + np.sqrt(share * var_o) * rng.standard_normal(eigenvalues.size)


Pullback = Callable[[np.ndarray], tuple[np.ndarray, float, np.ndarray]]


class LatentTransform(Protocol):
    """c = c(v; A, V, β): the effect in the eigenbasis from the sampled coordinates v."""

    def latent(
        self, v: np.ndarray, A: np.ndarray, V: float, beta: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, float, Pullback]:
        """(c, ∂c/∂v (diagonal), log |∂c/∂v|, pullback).

        ``pullback(gc)`` is the gradient of gcᵀc + log |∂c/∂v| in (A, V, β) at fixed v, gc
        held constant: how the hyperparameters reach the density through the transform.
        """
        ...


@dataclass(frozen=True)
class PartialNonCentring:
    """c_j = A_j^((1−w_j)/2) v_j: w = 0 non-centred, w = 1 centred."""

    weights: np.ndarray

    def latent(
        self, v: np.ndarray, A: np.ndarray, V: float, beta: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, float, Pullback]:
        half = 0.5 * (1.0 - self.weights)
        scale = np.exp(half * np.log(A))
        c = scale * v

        def pullback(gc: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
            return half / A * (gc * c + 1.0), 0.0, np.zeros(beta.size)

        return c, scale, float(half @ np.log(A)), pullback


@dataclass(frozen=True)
class ConditionalCentring:
    """c_j = b_j(β)/P_j + P_j^(−1/2) v_j, P_j = 1/A_j + τ_j(V), b(β) = b⁰ − B (β − β̂).

    τ(V) = τ⁰ + M E[I(η)]: a fixed information τ⁰ plus the expected information per trial
    in ``bins`` of the fixed-effect predictions μ̂ = Xβ̂ (+ offset) with η ~ N(μ̂, V),
    M_jg = Σ_{records i in bin g} trials_i U²_{level(i), j}; V = σ_a² mean(K_ii) (+ σ_o²).
    """

    family: Family
    score: np.ndarray  # b⁰ (r)
    score_slope: np.ndarray  # B (r × p)
    beta_pilot: np.ndarray
    information: np.ndarray  # τ⁰ (r)
    bins: np.ndarray  # μ̂ per bin (G)
    bin_weights: np.ndarray  # M (r × G)

    @property
    def link(self) -> str:
        return self.family.link

    def latent(
        self, v: np.ndarray, A: np.ndarray, V: float, beta: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, float, Pullback]:
        info, d_info = self.family.expected_information(self.bins, V)
        b = self.score - self.score_slope @ (beta - self.beta_pilot)
        P = 1.0 / A + self.information + self.bin_weights @ info
        scale = P**-0.5
        mean = b / P

        def pullback(gc: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
            g_P = -(gc * (mean + 0.5 * v * scale) + 0.5) / P  # ∂/∂P of gcᵀc − ½ Σ log P
            g_V = float(g_P @ (self.bin_weights @ d_info))
            return -g_P / A**2, g_V, -(gc / P) @ self.score_slope

        return mean + scale * v, scale, -0.5 * float(np.log(P).sum()), pullback


@dataclass(eq=False)
class GLMMDensity:
    """Log posterior and gradient of y ~ X + (1 | g) with a kinship effect, for nutpie.

    Coordinates x = (β* (p), log σ_a, [log σ_o], v (r)):

    - β* = β / √(1 + kV), β as the builder samples it (``beta_centered`` with the centred
      design when there is an intercept and covariates), k = ``attenuation`` (0 unless
      binary with conditional centring);
    - σ_a the kinship SD, σ_o the observation-level SD (Poisson, merged);
    - v the latent coordinates of the effect in the eigenbasis (r basis vectors) under
      ``transform``.
    Build it with :func:`glmm_density`. ``trials`` holds ones for families without trials.
    """

    family: Family
    y: np.ndarray
    trials: np.ndarray
    offset: np.ndarray
    design: np.ndarray
    beta_mu: np.ndarray
    beta_sd: np.ndarray
    index: np.ndarray
    eigenvalues: np.ndarray
    vectors: np.ndarray
    prior_a: Any
    prior_o: Any
    log_normaliser: float
    group: str
    olre: bool
    transform: LatentTransform | None = None
    attenuation: float = 0.0
    pilot: np.ndarray = field(default_factory=lambda: np.zeros(0))
    #: whether the pilot variances come from the moments of y (else the fixed σ_a² = 1)
    pilot_from_moments: bool = False
    #: leading basis vectors spanning K's column space (the PyMC model's ``z_<group>``); the
    #: rest (merged Poisson effect with a singular K) span its null space. -1: all of them
    kinship_rank: int = -1
    meta: dict[str, Any] = field(default_factory=dict)
    #: the Prior objects behind ``prior_a`` and ``prior_o`` (None: only the Python callback,
    #: as the C callback numbers the built-in prior families from them)
    prior_specs: tuple[Any, Any] | None = None

    def __post_init__(self) -> None:
        # the family's likelihood kernel, bound once: no dispatch on the family per gradient
        self._loglik_kernel = self.family.loglik_kernel
        self.vectors_t = np.ascontiguousarray(self.vectors.T)
        if self.transform is None:
            self.transform = PartialNonCentring(np.zeros(self.n_basis))
        if self.pilot.size == 0:
            self.pilot = np.zeros(self.n_hyper)
        # records in level order, one each (the usual case): Z = I, no gathering needed
        self.one_record_per_level = np.array_equal(self.index, np.arange(self.n_levels))
        # mean K_ii over levels in the basis used (the scale of σ_a² in V): trace / n, as
        # the eigenvectors have unit norm
        self.mean_diagonal = float(self.eigenvalues.sum()) / self.n_levels

    # -- sizes ---------------------------------------------------------------------------
    @property
    def link(self) -> str:
        return self.family.link

    @property
    def n_fixed(self) -> int:
        return self.design.shape[1]

    @property
    def n_hyper(self) -> int:
        """β, log σ_a and (merged Poisson) log σ_o."""
        return self.n_fixed + 1 + int(self.olre)

    @property
    def n_basis(self) -> int:
        return self.eigenvalues.size

    @property
    def n_levels(self) -> int:
        return self.vectors.shape[0]

    @property
    def ndim(self) -> int:
        return self.n_hyper + self.n_basis

    # -- pieces --------------------------------------------------------------------------
    def _variances(self, h: np.ndarray) -> tuple[float, float, np.ndarray, float]:
        """σ_a², σ_o², the prior variances A of c and V, the variance of η around Xβ."""
        p = self.n_fixed
        var_a = math.exp(2.0 * float(h[p]))
        var_o = math.exp(2.0 * float(h[p + 1])) if self.olre else 0.0
        return var_a, var_o, var_a * self.eigenvalues + var_o, var_a * self.mean_diagonal + var_o

    def _levels(self, c: np.ndarray) -> np.ndarray:
        """Effect per level U c (in the eigenvectors' precision, returned as float64)."""
        return (self.vectors @ c.astype(self.vectors.dtype)).astype(float)

    def _to_basis(self, g_levels: np.ndarray) -> np.ndarray:
        return (self.vectors_t @ g_levels.astype(self.vectors.dtype)).astype(float)

    def per_level(self, values: np.ndarray) -> np.ndarray:
        """Sum of per-record values by level (Zᵀ values)."""
        if self.one_record_per_level:
            return values
        return np.bincount(self.index, values, minlength=self.n_levels)

    def per_record(self, level_values: np.ndarray) -> np.ndarray:
        """Each record's level value (Z values)."""
        return level_values if self.one_record_per_level else level_values[self.index]

    def loglik_grad(self, eta: np.ndarray) -> tuple[float, np.ndarray]:
        """Log-likelihood (normalising constants left out) and its gradient in η."""
        return self._loglik_kernel(self.y, eta, self.trials)

    def fisher_weights(self, eta: np.ndarray) -> np.ndarray:
        """Expected information per observation, −E ∂²log p/∂η² (used for pilots only)."""
        return self.trials * self.family.information(eta)[0]

    def _attenuation_factor(self, V: float) -> float:
        """g = √(1 + kV): β = g β* (β* sampled), the marginal-scale fixed effects."""
        return math.sqrt(1.0 + self.attenuation * V)

    def fixed_effects(self, x: np.ndarray) -> np.ndarray:
        """β (as the builder samples it) at x."""
        h = x[: self.n_hyper]
        return h[: self.n_fixed] * self._attenuation_factor(self._variances(h)[3])

    def latent(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """(c, A, log |∂c/∂v|): the effect in the eigenbasis, its prior variances."""
        k = self.n_hyper
        _, _, A, V = self._variances(x[:k])
        c, _, log_jacobian, _ = self.transform.latent(x[k:], A, V, self.fixed_effects(x))
        return c, A, log_jacobian

    def log_jacobian(self, x: np.ndarray) -> float:
        """log |∂(β, z)/∂(β*, v)|, z = c/√A the PyMC model's standard-normal coordinates."""
        _, A, log_jacobian = self.latent(x)
        g = self._attenuation_factor(self._variances(x[: self.n_hyper])[3])
        return self.n_fixed * math.log(g) + log_jacobian - 0.5 * float(np.log(A).sum())

    # -- density -------------------------------------------------------------------------
    def logp(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """Log posterior density at x (with the log-transforms' Jacobians) and its gradient."""
        p, k = self.n_fixed, self.n_hyper
        h, v = x[:k], x[k:]
        var_a, var_o, A, V = self._variances(h)
        g = self._attenuation_factor(V)
        beta = h[:p] * g
        c, scale, log_jacobian, pullback = self.transform.latent(v, A, V, beta)
        eta = self.offset + self.design @ beta + self.per_record(self._levels(c))
        loglik, g_eta = self.loglik_grad(eta)
        r = c / A
        gc = self._to_basis(self.per_level(g_eta)) - r  # ∂(loglik + log N(c; 0, A))/∂c
        resid_b = (beta - self.beta_mu) / self.beta_sd
        value = (
            loglik
            - 0.5 * float(c @ r)
            - 0.5 * float(np.log(A).sum())
            + log_jacobian
            + p * math.log(g)
            - 0.5 * float(resid_b @ resid_b)
            + self.log_normaliser
        )
        g_A, g_V, g_beta = pullback(gc)
        g_A = g_A + 0.5 * r * r - 0.5 / A  # plus log N(c; 0, A)'s own dependence on A
        d_beta = self.design.T @ g_eta - resid_b / self.beta_sd + g_beta
        # β = g(V) β*: ∂/∂β* = g ∂/∂β, and V reaches the density through g and p log g
        g_V += self.attenuation / (2.0 * g) * (float(d_beta @ h[:p]) + p / g)
        grad = np.empty_like(x)
        grad[:p] = g * d_beta
        pa, dpa = self.prior_a(float(h[p]))
        value += pa + float(h[p])  # prior of σ_a and the Jacobian of log σ_a
        d_var = float(g_A @ self.eigenvalues) + g_V * self.mean_diagonal
        grad[p] = 2.0 * var_a * d_var + dpa + 1.0
        if self.olre:
            po, dpo = self.prior_o(float(h[p + 1]))
            value += po + float(h[p + 1])
            grad[p + 1] = 2.0 * var_o * (float(g_A.sum()) + g_V) + dpo + 1.0
        grad[k:] = scale * gc
        return value, grad

    # -- draws ---------------------------------------------------------------------------
    def expand(self, x: np.ndarray, rng: np.random.Generator | None = None) -> dict[str, Any]:
        """The PyMC model's variables at x (free and deterministic, same names and shapes).

        For the merged Poisson effect, the split of c = a + e into the kinship effect a and
        the observation-level effect e is drawn from a | c (needs ``rng``).
        """
        meta, p, g = self.meta, self.n_fixed, self.group
        h = x[: self.n_hyper]
        beta_s = self.fixed_effects(x)
        var_a, var_o, _, _ = self._variances(h)
        c, _, _ = self.latent(x)
        out: dict[str, Any] = {}
        if p:
            out[meta["beta_name"]] = beta_s
            if meta["beta_name"] != "beta":
                beta = beta_s.copy()
                beta[meta["intercept"]] -= beta_s @ meta["means"]
                out["beta"] = beta
        s = self.eigenvalues
        if self.olre:
            rng = rng if rng is not None else np.random.default_rng()
            a = split_merged_effect(c, var_a, var_o, s, rng)
            e_obs = self.per_record(self._levels(c - a))
            out["sd_olre"] = math.sqrt(var_o)
            out["z_olre"] = e_obs / math.sqrt(var_o)
            out["var_olre"] = var_o
        else:
            a = c
        out[f"sd_{g}"] = math.sqrt(var_a)
        out[f"var_{g}"] = var_a
        r = s.size if self.kinship_rank < 0 else self.kinship_rank
        out[f"z_{g}"] = (a[:r] / np.sqrt(var_a * s[:r]))[:, None]  # a = 0 in K's null space
        out[f"u_{g}"] = self._levels(a)[:, None]
        eta_fixed = self.offset + self.design @ beta_s
        var_residual = self.family.latent_residual_variance(eta_fixed, var_a, var_o)
        out["var_residual"] = var_residual
        # shares at the sample's kinship scale (mean diag K − mean K), as the results tables
        share_a = meta.get("share_weight", 1.0) * var_a
        shares = np.array([share_a, var_residual]) / (share_a + var_residual)
        out["variance_share"] = shares
        if meta.get("h2"):
            out["h2"] = shares[0]
        return {k: np.asarray(v, dtype=float) for k, v in out.items()}

    def initial_point(self, seed: int) -> np.ndarray:
        """The pilot point, hyperparameters jittered by U(−1, 1) as PyMC jitters, v near 0."""
        rng = np.random.default_rng(seed)
        x = np.zeros(self.ndim)
        x[: self.n_hyper] = self.pilot + rng.uniform(-1.0, 1.0, self.n_hyper)
        x[self.n_hyper :] = rng.uniform(-0.1, 0.1, self.n_basis)
        return x


#: NUTS settings where the one-term closed form without an observation-level effect is
#: sampled (nutpie) and the caller left them unset. Its reparametrised posterior is close to
#: a standard normal (the step size nutpie adapts there at target_accept 0.9, 0.25 at
#: n = 500, is the one it adapts on a 500-dimensional standard normal), so the warm-up
#: settles in 300 draws, and the larger step of target_accept 0.8 gives about 1.6x the ESS
#: of V_A per draw at the same 15 leapfrog steps per draw. The merged observation-level
#: effect (two variances along a ridge) keeps 1000 and 0.9: at 0.8 its trajectories stop a
#: doubling earlier and its ESS per draw halved. Checked over 5 seeds, Bernoulli and Poisson,
#: n = 500 and 1,000 (no divergences, R-hat ≤ 1.01): benchmarks/bench_glmm_defaults.py,
#: benchmarks/results/bench_glmm_defaults.txt.
CLOSED_FORM_TUNE, CLOSED_FORM_TARGET_ACCEPT = 300, 0.8
#: NUTS settings everywhere else (the PyMC graph, other closed forms, the merged
#: observation-level effect).
DEFAULT_TUNE, DEFAULT_TARGET_ACCEPT = 1000, 0.9


def nuts_defaults(
    built: Any, sampler: str, tune: int | None, target_accept: float | None
) -> tuple[int, float]:
    """``tune`` and ``target_accept``, each filled in where the caller left it None: 300 and
    0.8 where nutpie samples the one-term closed form without an observation-level effect
    (:func:`glmm_closed_form_applies`), 1000 and 0.9 otherwise.

    Examples
    --------
    >>> import numpy as np, pandas as pd, bayeslmm as bl
    >>> from bayeslmm.engines.bayes import build
    >>> K = bl.Kinship(np.eye(4) * 0.5 + 0.5, ["a", "b", "c", "d"])
    >>> df = pd.DataFrame({"y": [0, 1, 1, 0], "id": list(K.ids)})
    >>> spec = bl.specify("y ~ 1 + (1 | id)", df, kinship={"id": K}, family="bernoulli")
    >>> built = build(spec, strategy="latent")
    >>> nuts_defaults(built, "auto", None, None), nuts_defaults(built, "pymc", None, None)
    ((300, 0.8), (1000, 0.9))
    >>> nuts_defaults(built, "nutpie", 500, None)  # what the caller sets is kept
    (500, 0.8)
    """
    if tune is not None and target_accept is not None:
        return tune, target_accept
    # "auto" is nutpie only where nutpie is installed (else PyMC's NUTS on the graph, which
    # the short settings were not measured on)
    nutpie = sampler == "nutpie" or (
        sampler == "auto" and importlib.util.find_spec("nutpie") is not None
    )
    short = nutpie and glmm_closed_form_applies(built) and built.priors.sd_olre is None
    default_tune = CLOSED_FORM_TUNE if short else DEFAULT_TUNE
    default_accept = CLOSED_FORM_TARGET_ACCEPT if short else DEFAULT_TARGET_ACCEPT
    return (
        default_tune if tune is None else tune,
        default_accept if target_accept is None else target_accept,
    )


def glmm_closed_form_applies(built: Any) -> bool:
    """True for a latent GLMM the closed form covers, left as the builder made it.

    Covered: Poisson (log) with or without the observation-level effect, Bernoulli and
    binomial (logit, probit); fixed effects with normal priors; one intercept-only random
    term with a kinship matrix and an SD prior (not the share parametrisation). The
    observation-level effect is merged only with one record per individual and every
    eigenpair of K (no ``rank_share`` truncation; a singular K, e.g. a centred GRM, is
    completed by its null space, where the merged effect is the observation-level one); the
    SD priors need closed-form densities (every built-in positive family has one); otherwise
    the PyMC graph is sampled. :func:`glmm_closed_form_obstacles` says why not.
    """
    return not glmm_closed_form_obstacles(built)


def glmm_closed_form_obstacles(built: Any) -> list[str]:
    """Why the one-kinship-term closed form does not cover ``built`` (empty when it does).

    Examples
    --------
    >>> import pandas as pd, bayeslmm as bl
    >>> from bayeslmm.engines.bayes import build
    >>> df = pd.DataFrame({"y": [0, 1, 1, 0], "g": ["a", "a", "b", "b"]})
    >>> spec = bl.specify("y ~ 1 + (1 | g)", df, family="bernoulli")
    >>> glmm_closed_form_obstacles(build(spec, strategy="latent"))
    ['term (1|g) has no kinship']
    """
    spec = built.spec
    if built.strategy != "latent":
        return [f"strategy {built.strategy!r}, not 'latent'"]
    if spec.family.glmm_density_parametrisation is None:
        return [f"family {spec.family.name} ({spec.family.link}) has no closed-form density"]
    if len(spec.terms) != 1:
        return [f"{len(spec.terms)} random terms (the one-term density takes one)"]
    term = spec.terms[0]
    if term.kinship is None:
        return [f"term (1|{term.group}) has no kinship"]
    if term.n_coef != 1 or np.any(np.asarray(term.design) != 1.0):
        return [f"term of {term.group} has slopes"]
    model, g = built.model, term.group
    names = {v.name for v in model.free_RVs + model.deterministics}
    expected = set(model_variable_names(built))
    if names != expected or model.potentials or len(model.observed_RVs) != 1:
        return ["the PyMC model was changed after building (or uses the share priors)"]
    sd_priors = (built.priors.sd[g], built.priors.sd_olre)
    if not all(p.has_closed_form for p in sd_priors if p is not None):
        return ["an SD prior has no closed-form density"]
    if built.priors.sd_olre is not None:
        # every eigenpair of K kept (a singular K's null space is added back by the density)
        whole = len(model.coords[f"{g}_basis"]) == term.kinship.root().rank
        one_each = np.array_equal(np.sort(np.asarray(term.index)), np.arange(term.n_levels))
        if not whole:
            return ["observation-level effect with a truncated kinship basis (rank_share)"]
        if not (term.n_levels == spec.n_obs and one_each):
            return ["observation-level effect with repeated records per individual"]
    return []


def model_variable_names(built: Any) -> list[str]:
    """The variables the builder's GLMM model holds (one term or several): a closed form
    writes out the model only while its variables are these (nothing added by a user)."""
    spec = built.spec
    names = ["var_residual", "variance_share"]
    for term in spec.terms:
        g = term.group
        names += [f"sd_{g}", f"z_{g}", f"var_{g}", f"u_{g}"]
    if spec.fixed_names:
        names.append("beta")
        if len(spec.fixed_names) > 1 and "Intercept" in spec.fixed_names:
            names.append("beta_centered")
    if built.priors.sd_olre is not None:
        names += ["sd_olre", "z_olre", "var_olre"]
    if built.h2_term is not None:
        names.append("h2")
    return names


def glmm_density(built: Any, dtype: str = "float32", parametrisation: str = "auto") -> GLMMDensity:
    """The closed-form log posterior of a built latent kinship GLMM, with its pilots.

    Parameters
    ----------
    built : BuiltModel
        A latent-strategy GLMM that :func:`glmm_closed_form_applies` accepts.
    dtype : {"float32", "float64"}
        Precision of the eigenvectors in the two mat-vecs per gradient.
    parametrisation : {"auto", "conditional", "partial"}
        How the latent coordinates are sampled (see the module notes): conditional
        centring on a Gaussian surrogate of the likelihood, or partial non-centring
        (weights from moment pilots for Poisson; w = 0, the non-centred form, for
        binomial families). ``"auto"``: conditional for binomial families, partial for
        Poisson, what measured best for each (benchmarks/glmm_parametrisations.py).

    Returns
    -------
    GLMMDensity

    Examples
    --------
    >>> import numpy as np, pandas as pd, bayeslmm as bl
    >>> from bayeslmm.engines.bayes import build
    >>> K = bl.Kinship(np.eye(6) * 0.5 + 0.5, [f"i{k}" for k in range(6)])
    >>> df = pd.DataFrame({"y": [0, 1, 1, 0, 1, 1], "id": list(K.ids)})
    >>> spec = bl.specify("y ~ 1 + (1 | id)", df, kinship={"id": K}, family="bernoulli")
    >>> density = glmm_density(build(spec, strategy="latent"), dtype="float64")
    >>> type(density.transform).__name__  # binary traits: conditional centring
    'ConditionalCentring'
    >>> logp, grad = density.logp(density.initial_point(1))
    >>> grad.shape == (density.ndim,)
    True
    """
    if parametrisation not in PARAMETRISATIONS:
        raise ValueError(
            f"Unknown parametrisation {parametrisation!r}; use one of {PARAMETRISATIONS}."
        )
    if not glmm_closed_form_applies(built):
        raise ValueError(
            "The closed-form GLMM density does not cover this model (see "
            "glmm_closed_form_applies); sample the PyMC model instead."
        )
    spec, priors = built.spec, built.priors
    term = spec.terms[0]
    g = term.group
    r = len(built.model.coords[f"{g}_basis"])
    root = term.kinship.root()  # the latent basis's r leading eigenpairs (rank_share)
    values, vectors = np.asarray(root.values[:r], dtype=float), root.vectors[:, :r]
    if priors.sd_olre is not None and r < term.n_levels:
        # a + e ~ N(0, U diag(σ_a² s + σ_o²) Uᵀ) needs all n directions: in K's null space
        # (s = 0; a centred GRM has one) the merged effect is e alone
        null = term.kinship.eigenvectors[:, ::-1][:, r:]
        values = np.concatenate([values, np.zeros(null.shape[1])])
        vectors = np.hstack([vectors, null])
    y = np.asarray(spec.y, dtype=float)
    n = y.size
    fam = spec.family
    trials = np.asarray(spec.trials, dtype=float) if spec.trials is not None else np.ones(n)
    offset = np.zeros(n) if spec.offset is None else np.asarray(spec.offset, dtype=float)
    fe = fixed_effects_prior(spec, priors)
    meta: dict[str, Any] = {
        "h2": built.h2_term is not None,
        "components": tuple(built.components),
        "share_weight": float(built.spec.terms[0].variance_weights("sample")[0, 0]),
    }
    if fe is None:
        design, mu, sd = np.zeros((n, 0)), np.zeros(0), np.ones(0)
    else:
        design, mu, sd = fe.design, np.asarray(fe.mu, float), np.asarray(fe.sd, float)
        meta.update(beta_name=fe.sampled_name, intercept=fe.intercept, means=fe.means)
    olre = priors.sd_olre is not None
    # the normalising constants the PyMC model's logp carries
    const = -0.5 * (values.size + mu.size) * LOG_2PI - float(np.log(sd).sum())
    const += float(fam.log_constant(y, trials).sum())
    density = GLMMDensity(
        family=fam,
        y=y,
        trials=trials,
        offset=offset,
        design=np.ascontiguousarray(design, dtype=float),
        beta_mu=np.broadcast_to(mu, (design.shape[1],)).astype(float),
        beta_sd=np.broadcast_to(sd, (design.shape[1],)).astype(float),
        index=np.asarray(term.index, dtype=np.intp),
        eigenvalues=values,
        vectors=np.ascontiguousarray(vectors, dtype=dtype),
        prior_a=positive_log_prior(priors.sd[g]),
        prior_o=positive_log_prior(priors.sd_olre) if olre else None,
        log_normaliser=const,
        group=g,
        olre=olre,
        kinship_rank=r,
        meta=meta,
        prior_specs=(priors.sd[g], priors.sd_olre if olre else None),
    )
    density.pilot, density.pilot_from_moments = _pilot(density)
    if parametrisation == "auto":
        parametrisation = fam.glmm_density_parametrisation
    if parametrisation == "conditional":
        density.transform = _conditional_centring(density)
        # β* = β / √(1 + kV) is what the data pin (binary traits; None: β sampled as is)
        k = fam.marginal_attenuation
        if k is not None:
            density.attenuation = k
    else:
        density.transform = _partial_non_centring(density)
    return density


def _pilot(density: GLMMDensity) -> tuple[np.ndarray, bool]:
    """(β̂, log σ_a⁰, [log σ_o⁰]): the GLM's MAP β and pilot variances; and whether these
    came from the moments of y.

    Pilot variances: from the moments of y (the family's
    :meth:`~bayeslmm.families.Family.moment_latent_variance`: Poisson, on the log scale;
    split equally between σ_a² and σ_o² when both are present), else 1 (binomial
    families: no moment estimate without relatives).
    """
    p = density.n_fixed
    beta = density.beta_mu.copy()
    X, prec = density.design, 1.0 / density.beta_sd**2
    for _ in range(25):  # a few damped Newton steps for the GLM without the random effect
        if not p:
            break
        eta = density.offset + X @ beta
        _, g_eta = density.loglik_grad(eta)
        W = density.fisher_weights(eta)
        step = np.linalg.solve(
            (X.T * W) @ X + np.diag(prec), X.T @ g_eta - prec * (beta - density.beta_mu)
        )
        beta = beta + np.clip(step, -2.0, 2.0)
        if np.max(np.abs(step)) < 1e-8:
            break
    var_a, var_o = 1.0, 0.0
    mean = float(np.mean(density.family.inverse_link(density.offset + X @ beta)))
    total = density.family.moment_latent_variance(density.y, mean)
    if total is not None:
        var_a = var_o = 0.5 * total if density.olre else total
    logs = [0.5 * math.log(var_a)] + ([0.5 * math.log(var_o)] if density.olre else [])
    return np.concatenate([beta, logs]), total is not None


def _partial_non_centring(density: GLMMDensity) -> PartialNonCentring:
    """w_j = I A⁰_j / (1 + I A⁰_j), I the mean Fisher information per level at the pilot.

    Families without a moment pilot (binomial) get w = 0 (non-centred): partial
    non-centring from the fixed pilot σ_a² = 1 mixed 10x worse than it when the posterior
    sits near σ_a² = 0.
    """
    if not density.pilot_from_moments:
        return PartialNonCentring(np.zeros(density.n_basis))
    p = density.n_fixed
    _, _, A0, _ = density._variances(density.pilot)
    eta = density.offset + density.design @ density.pilot[:p]
    info = float(np.mean(density.per_level(density.fisher_weights(eta))))
    return PartialNonCentring(info * A0 / (1.0 + info * A0))


def _conditional_centring(density: GLMMDensity, n_bins: int = 16) -> ConditionalCentring:
    """The Gaussian surrogate of the likelihood that conditional centring uses.

    Binomial families: the score b⁰ = Uᵀ Zᵀ ∂loglik/∂η and its slope B = Uᵀ Zᵀ W X in β at
    c = 0, β = β̂, and the expected information at η ~ N(μ̂, V), which falls as V grows
    (a record's data say little about its own η, so the information follows the spread
    of η). Poisson: the records' own information, y + ½ (the Poisson information at the
    saturated fit η = log(y + ½)), fixed, and no centre shift (b = 0): counts pin each η,
    so the information hardly moves with the variances; centring on the saturated fit's
    pseudo-data mixed far worse in a trial run (ESS 3 of 2000 draws in one chain pair).
    (Opt-in for Poisson: it did not beat partial non-centring, see the module notes.)
    """
    p, r = density.n_fixed, density.n_basis
    beta = density.pilot[:p]
    vectors = density.vectors.astype(float)
    squares = vectors * vectors
    saturated = density.family.saturated_information(density.y, density.trials)
    if saturated is not None:  # counts: the records' own information, no centre shift
        return ConditionalCentring(
            family=density.family,
            score=np.zeros(r),
            score_slope=np.zeros((r, p)),
            beta_pilot=beta.copy(),
            information=squares.T @ density.per_level(saturated),
            bins=np.zeros(0),
            bin_weights=np.zeros((r, 0)),
        )
    mu = density.offset + density.design @ beta
    _, g_eta = density.loglik_grad(mu)
    W = density.fisher_weights(mu)
    slope = np.zeros((density.n_levels, p))  # Zᵀ W X
    for j in range(p):
        slope[:, j] = density.per_level(W * density.design[:, j])
    # records grouped by μ̂ (each distinct value, or equal-count bins when there are more
    # than n_bins): τ(V) then costs one quadrature per bin, not per record
    distinct, bin_of = np.unique(mu, return_inverse=True)
    if distinct.size > n_bins:
        bin_of = np.empty(mu.size, dtype=np.intp)
        bin_of[np.argsort(mu, kind="stable")] = np.arange(mu.size) * n_bins // mu.size
    n_in_bin = np.bincount(bin_of)
    trials_by_bin = np.zeros((density.n_levels, n_in_bin.size))
    np.add.at(trials_by_bin, (density.index, bin_of), density.trials)
    return ConditionalCentring(
        family=density.family,
        score=vectors.T @ density.per_level(g_eta),
        score_slope=vectors.T @ slope,
        beta_pilot=beta.copy(),
        information=np.zeros(r),
        bins=np.bincount(bin_of, mu) / n_in_bin,
        bin_weights=squares.T @ trials_by_bin,
    )


def nutpie_model(density: GLMMDensity, coords: dict[str, Any], callback: str = "auto") -> Any:
    """A nutpie model that samples ``density`` and stores the PyMC model's variables.

    ``coords`` are the built model's coordinates (levels, basis, fixed-effect names).
    ``callback``: ``"auto"`` hands nutpie the compiled C callbacks
    (:mod:`~bayeslmm.engines.bayes.glmm_kernels`: no GIL, no numpy overhead per gradient)
    where they cover the density, else the Python :meth:`GLMMDensity.logp`; ``"c"`` or
    ``"python"`` asks for one (``"c"`` raises ValueError where it does not apply).
    """
    from bayeslmm.engines.bayes import glmm_kernels
    from bayeslmm.engines.bayes.nutpie_callback import pyfunc_model

    if callback not in ("auto", "c", "python"):
        raise ValueError(f"Unknown callback {callback!r}; use 'auto', 'c' or 'python'.")
    g = density.group
    dims_of = {
        "beta": ("fixed",),
        "beta_centered": ("fixed",),
        "variance_share": ("component",),
        f"z_{g}": (f"{g}_basis", f"{g}_coef"),
        f"u_{g}": (f"{g}_level", f"{g}_coef"),
        "z_olre": ("obs",),
    }
    if callback != "python":
        model = glmm_kernels.nutpie_model(density, dims_of, coords)
        if model is not None:
            return model
        if callback == "c":
            raise ValueError(
                "The C callback does not cover this density (a family, link, prior or "
                "transform it does not number); use callback='python'."
            )
    return pyfunc_model(density, dims_of, coords, seeded_expand=True)
