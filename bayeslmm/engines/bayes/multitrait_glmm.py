"""The latent-scale multi-trait GLMM's log posterior in closed form, sampled by nutpie.

Model (t traits with a family each, n individuals in kinship order, K ≈ R Rᵀ with R the
kinship's root, :meth:`~bayeslmm.kinship.Kinship.root`)::

    η_a = X β_a + u_a (+ σ_o,a o_a for an overdispersed Poisson trait a)
    U = R Z L_Gᵀ,  Z (r × t) iid N(0, 1)      so vec(U) ~ N(0, Σ_G ⊗ K),  Σ_G = L_G L_Gᵀ
    Gaussian trait:  y_a = η_a + e_a
    Bernoulli trait: P(y_a = 1) = h(η_a) (logit), or Φ(η_a + ε_a > 0) on the liability
                     (probit, liability residual ε_a with variance 1)
    Poisson trait:   y_a ~ Poisson(exp(η_a)),  o_a iid N(0, 1)

Residual covariance Σ_E = L_E L_Eᵀ over the *residual block* (:func:`~bayeslmm.
multitrait_glmm_spec.residual_traits`): the Gaussian traits, then one probit trait when the
model has one. Given the whitened Gaussian residuals w_i = L_gg⁻¹ e_i, the probit trait's
liability residual is l_bgᵀ w_i + l_bb ξ_i with ξ_i ~ N(0, 1) (the last row of L_E), so its
probability given the Gaussian records is exact, without a latent liability::

    P(y_b = 1 | y_g, u) = Φ((η_b + l_bgᵀ w_i) / l_bb),   ‖(l_bg, l_bb)‖ = 1,

which is Φ((η_b + ρ (y_g − μ_g)/σ_g) / √(1 − ρ²)) with one Gaussian trait. Logit and Poisson
traits have no residual covariance with any other trait (not identifiable from one record
per individual without a latent residual; the model says so in its output).

Coordinates sampled (all unconstrained; NUTS' diagonal mass matrix fits them)::

    θ_G  Cholesky of Σ_G as (log L_aa, L_ab), rows scaled by s_a (trait SD for Gaussian
         traits, 1 on the latent scale of the others), as the Gaussian multi-trait density
    θ_E  the same for Σ_E over the residual block; the probit row is normalised to unit
         length, its length a working parameter with a LogNormal(0, 1) prior (the LKJ
         prior on the correlations is unchanged, the SD priors factor out of it)
    log σ_o per overdispersed Poisson trait (prior on σ_o plus the log Jacobian)
    γ    β_a = m_a (μ_a + sd_a γ_a) (centred covariates); m_a = 1, except for a Bernoulli
         trait, whose γ_a is on the population-averaged scale: m_a = √(1 + k V_a), V_a =
         Σ_G,aa mean(diag K), k = 1 (probit) or (16√3/15π)² (logit) (Zeger, Liang & Albert
         1988; the single-trait GLMM density's device: the data pin the averaged effects,
         not β, so β rides with V_a). The prior stays N(μ, sd²) on β; the density carries
         the Jacobian p log m_a.
    Z    the genetic field, non-centred in the kinship's eigenbasis, N(0, I); a Gaussian
         trait's column is conditionally centred instead (below)
    O    the Poisson observation-level effects, N(0, I)
    missing Gaussian values, standardised (data augmentation; missing non-Gaussian records
         simply drop out of the likelihood)

**Conditional centring of Gaussian traits' fields.** A Gaussian trait's records pin its
genetic field, so a non-centred field moves with σ²_G and σ²_E and mixes slowly. In the
eigenbasis (K = V diag(s) Vᵀ) trait a's field is c = √s (o + L_aa z_a), o = Σ_b<a L_ab z_b,
and its records r = Vᵀ(y_a − X β_a) are c plus noise of variance σ²_E,a (exactly, for one
Gaussian trait without residual covariance). The sampler's v replaces z_a through
c's conditional posterior under that normal surrogate::

    z_a = κ v + w (r − √s o),   κ = σ_E / √T,   w = √A / T,   A = s L_aa²,  T = σ²_E + A

(the single-trait GLMM density's conditional centring, per eigencomponent), with the
Jacobian Σ log κ in the density; the posterior is unchanged, only its shape in the
sampler's coordinates (``centre_gaussian_fields=False`` samples the field non-centred). On
benchmarks/bench_multitrait_glmm.py's probit + Gaussian data (400 animals, 2 × (500 + 500),
seed 1, diagonal mass matrix), non-centred → centred: ESS of σ²_G,w 25 → 115, σ²_E,w 26 →
107, r_g 67 → 93, divergences 34 → 18, CPU 43.9 and 45.7 s (a loaded machine)
(``python benchmarks/bench_multitrait_glmm.py [--non-centred] --mass-matrix diagonal``;
benchmarks/results/bench_multitrait_glmm.txt).

Priors (per trait, the single-trait defaults): SD of Σ_G HalfStudentT(3, 2.5 s_y) for a
Gaussian trait and HalfStudentT(3, 1) on the latent scale otherwise; residual SD
HalfStudentT(3, 2.5 s_y); LKJ(2) on both correlation matrices; σ_o HalfStudentT(3, 1);
β as the single-trait models (intercept Normal(mean or link location, 2.5 s), slopes
Normal(0, 2.5 s / s_x)). Overrides: ``sd_<group>[_<trait>]``, ``sigma[_<trait>]``
(Gaussian traits), ``sd_olre[_<trait>]`` (Poisson), ``cor_<group>``, ``cor_residual``
(``rescor``).

The gradient is written by hand: two products with R per evaluation (O(n r t)); a Gaussian
trait's centring works in the eigenbasis with Vᵀ Y₀ and Vᵀ X formed once (O(r p) per trait,
plus O(m r) for m missing values).
tests/multitrait/test_multitrait_glmm.py checks the value against an independent dense
computation (a stacked Σ_G ⊗ K normal density of the field, scipy's distributions for the
records) and the gradient against finite differences.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.linalg import solve_triangular

from bayeslmm.engines.bayes.multitrait_density import (
    COVARIANCE_DIMS,
    TraitCovariances,
    _as_prior,
    _lkj_eta,
    centred_design,
    covariance_variables,
    matrix_log_prior,
    uncentre_beta,
)
from bayeslmm.engines.multitrait_gaussian import cholesky_from_params, scaled_cholesky_grad
from bayeslmm.errors import SpecificationError
from bayeslmm.families import Family, Poisson
from bayeslmm.multitrait_glmm_spec import residual_traits
from bayeslmm.multitrait_spec import MultiTraitSpec
from bayeslmm.priors import Prior

if TYPE_CHECKING:  # imported at fit time only, as run_nutpie in sample_multitrait_glmm
    from bayeslmm.engines.bayes.multitrait_sampling import NutsSettings

LOG_2PI = math.log(2.0 * math.pi)
DEFAULT_LKJ_ETA = 2.0
LogDensity = Callable[[float], tuple[float, float]]


def _lognormal_working(t: float) -> tuple[float, float]:
    """LogNormal(0, 1) density of a working length r at t = log r: (log f(r), d/d log r)."""
    return -t - 0.5 * t * t - 0.5 * LOG_2PI, -1.0 - t


def family_label(family: Family) -> str:
    """``"bernoulli(probit)"``, ``"gaussian"``: the family as the fit's tables print it."""
    if family.is_gaussian:
        return "gaussian"
    label = f"{family.name}({family.link})"
    if isinstance(family, Poisson) and not family.has_observation_level_effect:
        return f"{label[:-1]}, no overdispersion)"
    return label


@dataclass(frozen=True)
class MultiTraitGLMMPriors:
    """Resolved priors of a multi-trait GLMM (see the module notes)."""

    genetic_sd: tuple[Prior, ...]
    residual_sd: tuple[Prior | None, ...]  # per residual-block trait; None: probit (fixed 1)
    olre_sd: tuple[Prior, ...]  # per overdispersed Poisson trait
    genetic_eta: float
    residual_eta: float
    beta_mean: np.ndarray  # (t, p), centred covariates
    beta_sd: np.ndarray  # (t, p)

    def table(
        self, traits: tuple[str, ...], group: str, block: tuple[int, ...], olre: tuple[int, ...]
    ) -> dict[str, str]:
        out = {
            f"sd_{group}_{t}": p.describe() for t, p in zip(traits, self.genetic_sd, strict=True)
        }
        for a, prior in zip(block, self.residual_sd, strict=True):
            out[f"sigma_{traits[a]}"] = (
                "fixed at 1 (liability)" if prior is None else prior.describe()
            )
        for a, prior in zip(olre, self.olre_sd, strict=True):
            out[f"sd_olre_{traits[a]}"] = prior.describe()
        out[f"cor_{group}"] = f"LKJ({self.genetic_eta:g})"
        if len(block) > 1:
            out["cor_residual"] = f"LKJ({self.residual_eta:g})"
        return out


def resolve_glmm_priors(
    spec: MultiTraitSpec,
    centred_X: np.ndarray,
    has_intercept: bool,
    block: tuple[int, ...],
    olre: tuple[int, ...],
) -> MultiTraitGLMMPriors:
    """Default priors per trait and family, with the user's overrides applied."""
    traits, group, families = spec.traits, spec.group, spec.families
    given = dict(spec.priors)
    gaussian = [a for a, f in enumerate(families) if f.is_gaussian]
    known = {f"sd_{group}", f"cor_{group}"} | {f"sd_{group}_{t}" for t in traits}
    if gaussian:
        known |= {"sigma"} | {f"sigma_{traits[a]}" for a in gaussian}
    if len(block) > 1:
        known |= {"cor_residual", "rescor"}
    if olre:
        known |= {"sd_olre"} | {f"sd_olre_{traits[a]}" for a in olre}
    unknown = sorted(set(given) - known)
    if unknown:
        raise SpecificationError(
            f"Unknown prior key(s) {unknown} for this multi-trait model; use {sorted(known)}."
        )
    Y = np.asarray(spec.Y, dtype=float)
    t, p = len(traits), centred_X.shape[1]
    genetic = []
    beta_mean, beta_sd = np.zeros((t, p)), np.zeros((t, p))
    x_sd = np.array([max(float(np.std(centred_X[:, j])), 1e-12) for j in range(p)])
    for a, (trait, fam) in enumerate(zip(traits, families, strict=True)):
        y = Y[~np.isnan(Y[:, a]), a]
        s = float(np.std(y)) if fam.is_gaussian else 1.0
        key = f"sd_{group}_{trait}"
        g = given.get(key, given.get(f"sd_{group}"))
        # the single-trait defaults: 2.5 s_y for a Gaussian trait, 1 on a latent scale
        g_scale = 2.5 * s if fam.is_gaussian else 1.0
        g = Prior("halfstudentt", (3.0, g_scale)) if g is None else _as_prior(g, key)
        genetic.append(g.require_closed_form_sd(key))
        for j in range(p):
            if has_intercept and j == 0:
                centre = float(np.mean(y)) if fam.is_gaussian else fam.link_location(y)
                beta_mean[a, 0], beta_sd[a, 0] = centre, 2.5 * s
            else:
                beta_sd[a, j] = 2.5 * s / x_sd[j]
    residual: list[Prior | None] = []
    for a in block:
        if not families[a].is_gaussian:
            residual.append(None)
            continue
        key = f"sigma_{traits[a]}"
        e = given.get(key, given.get("sigma"))
        sd = float(np.nanstd(Y[:, a]))
        e = Prior("halfstudentt", (3.0, 2.5 * sd)) if e is None else _as_prior(e, key)
        residual.append(e.require_closed_form_sd(key))
    olre_sd = []
    for a in olre:
        key = f"sd_olre_{traits[a]}"
        o = given.get(key, given.get("sd_olre"))
        o = Prior("halfstudentt", (3.0, 1.0)) if o is None else _as_prior(o, key)
        olre_sd.append(o.require_closed_form_sd(key))
    geta = _lkj_eta(given[f"cor_{group}"], f"cor_{group}") if f"cor_{group}" in given else None
    rkey = "cor_residual" if "cor_residual" in given else "rescor"
    reta = _lkj_eta(given[rkey], rkey) if rkey in given else None
    return MultiTraitGLMMPriors(
        genetic_sd=tuple(genetic),
        residual_sd=tuple(residual),
        olre_sd=tuple(olre_sd),
        genetic_eta=DEFAULT_LKJ_ETA if geta is None else geta,
        residual_eta=DEFAULT_LKJ_ETA if reta is None else reta,
        beta_mean=beta_mean,
        beta_sd=beta_sd,
    )


@dataclass(frozen=True, eq=False)
class MultiTraitGLMMDensity(TraitCovariances):
    """Log posterior of a latent-scale multi-trait GLMM with its gradient (module notes).

    Build with :func:`multitrait_glmm_density`; :meth:`logp` for the sampler, :meth:`expand`
    for each kept draw.
    """

    traits: tuple[str, ...]
    fixed_names: tuple[str, ...]
    families: tuple[Family, ...]
    root: np.ndarray  # (n, r): K ≈ root rootᵀ = V diag(s) Vᵀ
    basis: np.ndarray  # (n, r): V, orthonormal eigenvectors
    root_values: np.ndarray  # (r,): s
    design: np.ndarray  # (n, p) centred covariates
    Y0: np.ndarray  # (n, t) records, 0 where missing
    observed: np.ndarray  # (n, t) bool
    genetic_scale: np.ndarray  # (t,) s_a of Σ_G's rows
    block: tuple[int, ...]  # residual block: Gaussian traits, then a probit trait
    n_gaussian: int
    residual_scale: np.ndarray  # (len(block),)
    olre: tuple[int, ...]  # overdispersed Poisson traits
    genetic_priors: tuple[LogDensity, ...]
    residual_priors: tuple[LogDensity, ...]
    olre_priors: tuple[LogDensity, ...]
    genetic_eta: float
    residual_eta: float
    beta_mean: np.ndarray
    beta_sd: np.ndarray
    x_means: np.ndarray
    has_intercept: bool
    data_centre: np.ndarray  # (t,) mean of each trait's records
    data_scale: np.ndarray  # (t,) SD of each trait's records
    missing_rows: np.ndarray  # missing Gaussian values (augmented)
    missing_traits: np.ndarray
    # fixed products with V, formed once: each gradient then costs O(r) per Gaussian trait
    # in the eigenbasis instead of two O(n r) products
    rotated_records: np.ndarray  # (r, n_gaussian): Vᵀ Y₀ of the block's Gaussian traits
    rotated_design: np.ndarray  # (r, p): Vᵀ X
    missing_basis: np.ndarray  # (m, r): V's rows of the missing values
    missing_block_pos: np.ndarray  # (m,): each missing value's trait's place in the block
    kinship_scale: float
    attenuation: np.ndarray  # (t,) k mean(diag K) of a Bernoulli trait, 0 otherwise
    prior_table: dict[str, str]  # the resolved priors as the fit's tables print them
    ids: tuple[str, ...] = ()
    # False: Gaussian traits' fields non-centred as the others (benchmarks compare the two)
    centre_gaussian_fields: bool = True

    # -- layout of x ------------------------------------------------------------------------
    @property
    def n(self) -> int:
        return int(self.root.shape[0])

    @property
    def rank(self) -> int:
        return int(self.root.shape[1])

    @property
    def probit_residual(self) -> bool:
        """Whether the residual block ends with a probit trait (liability variance 1)."""
        return len(self.block) > self.n_gaussian

    def _sizes(self) -> list[tuple[str, int]]:
        t, r, p = self.n_traits, len(self.block), self.design.shape[1]
        return [
            ("theta_g", self.n_chol),
            ("theta_e", r * (r + 1) // 2),
            ("log_sd_olre", len(self.olre)),
            ("gamma", t * p),
            ("z", self.rank * t),
            ("olre", self.n * len(self.olre)),
            ("missing", self.missing_rows.size),
        ]

    def _slices(self) -> dict[str, slice]:
        out, start = {}, 0
        for name, size in self._sizes():
            out[name] = slice(start, start + size)
            start += size
        return out

    @property
    def ndim(self) -> int:
        return sum(size for _, size in self._sizes())

    def _parts(self, x: np.ndarray) -> dict[str, Any]:
        sl = self._slices()
        t, r, p = self.n_traits, len(self.block), self.design.shape[1]
        LG = self.genetic_scale[:, None] * cholesky_from_params(x[sl["theta_g"]], t)
        Lstar = self.residual_scale[:, None] * cholesky_from_params(x[sl["theta_e"]], r)
        LE = Lstar.copy()
        if self.probit_residual:
            LE[-1] = Lstar[-1] / np.linalg.norm(Lstar[-1])
        gamma = x[sl["gamma"]].reshape(t, p)
        # population-averaged scale of a Bernoulli trait's effects (module notes)
        marginal = np.sqrt(1.0 + self.attenuation * np.sum(LG * LG, axis=1))
        Y = self.Y0.copy()
        m = self.missing_rows.size
        if m:
            mt = self.missing_traits
            Y[self.missing_rows, mt] = self.data_centre[mt] + self.data_scale[mt] * x[sl["missing"]]
        beta = marginal[:, None] * (self.beta_mean + self.beta_sd * gamma)
        Z = x[sl["z"]].reshape(self.rank, t).copy()
        centring = self._centre_gaussian_fields(Z, LG, LE, Y, beta)
        return {
            "LG": LG,
            "Lstar": Lstar,
            "LE": LE,
            "log_sd_olre": x[sl["log_sd_olre"]],
            "gamma": gamma,
            "marginal": marginal,
            "beta": beta,
            "Z": Z,
            "centring": centring,
            "O": x[sl["olre"]].reshape(len(self.olre), self.n),
            "Y": Y,
        }

    def _centre_gaussian_fields(
        self, Z: np.ndarray, LG: np.ndarray, LE: np.ndarray, Y: np.ndarray, beta: np.ndarray
    ) -> list[dict[str, Any]]:
        """Gaussian traits' field from the sampler's v, in place in Z (module notes).

        In the eigenbasis, trait a's field is c = √s (o + L_aa z_a) with o = Σ_b<a L_ab z_b;
        under a normal surrogate of its records (rotated r = Vᵀ(y_a − X β_a) ~ N(c, σ²_E,a))
        c | rest has mean shifted by A (r − √s o) / (σ² + A) and variance A σ² / (σ² + A),
        A = s L_aa². With T = σ² + A the sampler's v gives
        z_a = κ v + w (r − √s o),  κ = σ / √T,  w = √A / T.
        """
        out: list[dict[str, Any]] = []
        if not self.centre_gaussian_fields:
            return out
        s = self.root_values
        missing_values = Y[self.missing_rows, self.missing_traits]
        for pos, a in enumerate(self.block[: self.n_gaussian]):
            v = Z[:, a].copy()
            offset = Z[:, :a] @ LG[a, :a]
            A = s * LG[a, a] ** 2
            var_e = float(LE[pos] @ LE[pos])
            T = var_e + A
            kappa = np.sqrt(var_e / T)
            w = np.sqrt(A) / T
            # Vᵀ(y_a − X β_a), y_a = Y₀ plus the sampled missing values
            rotated = self.rotated_records[:, pos] - self.rotated_design @ beta[a]
            sel = self.missing_block_pos == pos
            if sel.any():
                rotated += self.missing_basis[sel].T @ missing_values[sel]
            d = rotated - np.sqrt(s) * offset
            Z[:, a] = kappa * v + w * d
            out.append(
                {
                    "a": a,
                    "pos": pos,
                    "v": v,
                    "A": A,
                    "var_e": var_e,
                    "T": T,
                    "kappa": kappa,
                    "w": w,
                    "d": d,
                }
            )
        return out

    def _linear_predictor(self, parts: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        V = self.root @ parts["Z"]  # (n, t): R Z
        eta = self.design @ parts["beta"].T + V @ parts["LG"].T
        for k, a in enumerate(self.olre):
            eta[:, a] += math.exp(parts["log_sd_olre"][k]) * parts["O"][k]
        return eta, V

    # -- the density --------------------------------------------------------------------------
    def logp(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """Log posterior (up to a constant) at ``x`` and its gradient.

        Parameters
        ----------
        x : ndarray, shape (ndim,)

        Returns
        -------
        tuple
            (float, ndarray of shape (ndim,)).

        Examples
        --------
        >>> # value, grad = density.logp(density.initial_point(0))
        """
        x = np.asarray(x, dtype=float)
        sl = self._slices()
        t, r = self.n_traits, len(self.block)
        if (
            not np.all(np.abs(x[sl["theta_g"]][:t]) < 50)
            or not np.all(np.abs(x[sl["theta_e"]][:r]) < 50)
            or not np.all(np.abs(x[sl["log_sd_olre"]]) < 50)
        ):
            return -math.inf, np.zeros_like(x)
        with np.errstate(all="ignore"):
            value, grad = self._logp(x, sl)
        if not math.isfinite(value) or not np.all(np.isfinite(grad)):
            return -math.inf, np.zeros_like(x)
        return value, grad

    def _logp(self, x: np.ndarray, sl: dict[str, slice]) -> tuple[float, np.ndarray]:
        parts = self._parts(x)
        n, t = self.n, self.n_traits
        LG, LE, Lstar, Y = parts["LG"], parts["LE"], parts["Lstar"], parts["Y"]
        eta, V = self._linear_predictor(parts)
        d_eta = np.zeros((n, t))
        d_LE = np.zeros_like(LE)
        grad = np.zeros_like(x)
        value = 0.0
        g = self.n_gaussian
        done = set()
        if g:
            gi = list(self.block[:g])
            done.update(gi)
            Lgg = LE[:g, :g]
            resid = Y[:, gi] - eta[:, gi]
            W = solve_triangular(Lgg, resid.T, lower=True).T  # rows w_i = L_gg⁻¹ e_i
            value += -0.5 * float(np.sum(W * W)) - n * float(np.sum(np.log(np.diag(Lgg))))
            value -= 0.5 * n * g * LOG_2PI
            dW = -W
            if self.probit_residual:
                b = self.block[-1]
                done.add(b)
                obs = self.observed[:, b]
                lbg, lbb = LE[-1, :g], LE[-1, -1]
                arg = (eta[:, b] + W @ lbg) / lbb
                v, s = self.families[b].loglik_kernel(self.Y0[obs, b], arg[obs])
                value += v
                score = np.zeros(n)
                score[obs] = s
                d_m = score / lbb
                d_eta[:, b] += d_m
                dW += d_m[:, None] * lbg[None, :]
                d_LE[-1, :g] += W.T @ d_m
                d_LE[-1, -1] -= float(score @ arg) / lbb
            # W = E L⁻ᵀ: ∂/∂E = ∂/∂W L⁻¹, ∂/∂L = −(∂/∂E)ᵀ W (lower triangle)
            d_resid = solve_triangular(Lgg, dW.T, lower=True, trans="T").T
            d_LE[:g, :g] += np.tril(-d_resid.T @ W)
            d_LE[np.arange(g), np.arange(g)] -= n / np.diag(Lgg)
            d_eta[:, gi] -= d_resid
            if self.missing_rows.size:
                grad[sl["missing"]] = (
                    d_resid[self.missing_rows, self.missing_block_pos]
                    * self.data_scale[self.missing_traits]
                )
        for a, fam in enumerate(self.families):
            if a in done:
                continue
            obs = self.observed[:, a]
            v, s = fam.loglik_kernel(self.Y0[obs, a], eta[obs, a])
            value += v
            d_eta[obs, a] += s
        # standard normal priors of Z, O; β's normal prior at β = m (μ + sd γ), Jacobian
        gamma, Z, O, m = parts["gamma"], parts["Z"], parts["O"], parts["marginal"]
        value -= 0.5 * float(np.sum(Z * Z) + np.sum(O * O))
        unscaled = self.beta_mean + self.beta_sd * gamma  # β / m
        with np.errstate(divide="ignore", invalid="ignore"):
            mu_over_sd = np.where(self.beta_sd > 0, self.beta_mean / self.beta_sd, 0.0)
        z = m[:, None] * gamma + (m[:, None] - 1.0) * mu_over_sd  # (β − μ) / sd
        value += float(-0.5 * np.sum(z * z) + gamma.shape[1] * np.sum(np.log(m)))
        d_beta = d_eta.T @ self.design  # (t, p)
        d_m = (
            np.sum(d_beta * unscaled, axis=1)
            - np.sum(z * (gamma + mu_over_sd), axis=1)
            + gamma.shape[1] / m
        )
        d_Z = self.root.T @ (d_eta @ LG) - Z
        # Σ_G: likelihood through U = V L_Gᵀ and m, then the priors in Cholesky coordinates
        pg, d_LG = matrix_log_prior(LG, self.genetic_priors, self.genetic_eta)
        value += pg
        d_LG = d_LG + np.tril(d_eta.T @ V) + (d_m * self.attenuation / m)[:, None] * LG
        # the Gaussian traits' conditional centring, last trait first (z_a reads z_b, b < a)
        s = self.root_values
        for cc in reversed(parts["centring"]):
            a, pos = cc["a"], cc["pos"]
            g = d_Z[:, a]
            A, T, var_e, kappa, w, d, v = (
                cc["A"],
                cc["T"],
                cc["var_e"],
                cc["kappa"],
                cc["w"],
                cc["d"],
                cc["v"],
            )
            value += float(np.sum(np.log(kappa)))  # log |∂z_a/∂v|
            g_d = w * g
            # κ = σ T^(−½), w = √A / T; the Jacobian Σ log κ = ½ Σ (log σ² − log T)
            g_A = g * (
                v * (-0.5 * np.sqrt(var_e) * T**-1.5) + d * (var_e - A) / (2 * np.sqrt(A) * T**2)
            )
            g_A -= 0.5 / T
            g_var = float(
                np.sum(g * (v * 0.5 * T**-1.5 * A / np.sqrt(var_e) - d * np.sqrt(A) / T**2))
                + 0.5 * np.sum(1.0 / var_e - 1.0 / T)
            )
            d_LG[a, a] += float(np.sum(g_A * 2.0 * s * LG[a, a]))
            d_LE[pos] += 2.0 * g_var * LE[pos]
            # d = Vᵀ(y_a − X β_a) − √s o, o = Σ_b<a L_ab z_b
            g_o = -np.sqrt(s) * g_d
            d_LG[a, :a] += Z[:, :a].T @ g_o
            d_Z[:, :a] += np.outer(g_o, LG[a, :a])
            # ∂/∂y_a = V g_d: Xᵀ V g_d = (Vᵀ X)ᵀ g_d, and V's rows at the missing values
            d_beta[a] -= self.rotated_design.T @ g_d  # β_a = μ_a + sd_a γ_a (m_a = 1)
            sel = self.missing_block_pos == pos
            if sel.any():
                grad[sl["missing"]][sel] += (self.missing_basis[sel] @ g_d) * self.data_scale[a]
            d_Z[:, a] = kappa * g
        grad[sl["z"]] = d_Z.ravel()
        grad[sl["gamma"]] = (m[:, None] * (self.beta_sd * d_beta - z)).ravel()
        grad[sl["theta_g"]] = scaled_cholesky_grad(d_LG, LG, self.genetic_scale)
        if self.block:
            if self.probit_residual:  # the probit row is Lstar's last row normalised
                row = Lstar[-1]
                norm = float(np.linalg.norm(row))
                unit = row / norm
                gl = d_LE[-1]
                d_LE[-1] = (gl - unit * float(unit @ gl)) / norm
            pe, d_prior = matrix_log_prior(Lstar, self.residual_priors, self.residual_eta)
            value += pe
            grad[sl["theta_e"]] = scaled_cholesky_grad(d_LE + d_prior, Lstar, self.residual_scale)
        d_log_sd = np.zeros(len(self.olre))
        d_O = np.zeros_like(O)
        for k, a in enumerate(self.olre):
            ls = float(parts["log_sd_olre"][k])
            sd = math.exp(ls)
            f, df = self.olre_priors[k](ls)
            value += f + ls  # prior on σ_o and the Jacobian of log σ_o
            d_log_sd[k] = sd * float(O[k] @ d_eta[:, a]) + df + 1.0
            d_O[k] = sd * d_eta[:, a] - O[k]
        grad[sl["log_sd_olre"]] = d_log_sd
        grad[sl["olre"]] = d_O.ravel()
        return value, grad

    # -- draws --------------------------------------------------------------------------------
    def expand(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """The named variables at ``x`` (matrices t × t in trait order; NaN where the model
        has no such residual parameter)."""
        parts = self._parts(np.asarray(x, dtype=float))
        t = self.n_traits
        LG, LE = parts["LG"], parts["LE"]
        G = LG @ LG.T
        E = np.full((t, t), np.nan)
        block = np.array(self.block, dtype=int)
        if block.size:
            E[np.ix_(block, block)] = LE @ LE.T
        for k, a in enumerate(self.olre):
            E[a, a] = math.exp(2.0 * parts["log_sd_olre"][k])
        beta = uncentre_beta(parts["beta"].copy(), self.x_means, self.has_intercept)
        out = {**covariance_variables(G, E), "beta": beta}
        if self.missing_rows.size:
            out["missing_values"] = parts["Y"][self.missing_rows, self.missing_traits]
        return out

    def initial_point(self, seed: int) -> np.ndarray:
        """Variances about half of each trait's (1 on the latent scale), no correlation,
        fixed effects at their prior means, a small random genetic field; jittered."""
        rng = np.random.default_rng(seed)
        sl = self._slices()
        t, r = self.n_traits, len(self.block)
        x = np.zeros(self.ndim)
        x[sl["theta_g"]][:t] = 0.5 * math.log(0.5)
        x[sl["theta_e"]][:r] = 0.5 * math.log(0.5)
        x[sl["log_sd_olre"]] = 0.5 * math.log(0.25)
        for name in ("theta_g", "theta_e", "log_sd_olre", "gamma"):
            x[sl[name]] += rng.uniform(-0.3, 0.3, size=sl[name].stop - sl[name].start)
        for name in ("z", "olre", "missing"):
            x[sl[name]] = rng.uniform(-0.5, 0.5, size=sl[name].stop - sl[name].start)
        return x


def multitrait_glmm_density(
    spec: MultiTraitSpec, *, centre_gaussian_fields: bool = True
) -> MultiTraitGLMMDensity:
    """The closed-form log posterior of a latent-scale multi-trait GLMM.

    Parameters
    ----------
    spec : MultiTraitSpec
        With ``spec.families`` (a non-Gaussian trait).
    centre_gaussian_fields : bool, default True
        Conditionally centre the Gaussian traits' genetic fields (module notes); False
        samples them non-centred like the other traits' (same posterior, slower mixing).

    Returns
    -------
    MultiTraitGLMMDensity

    Examples
    --------
    >>> # density = multitrait_glmm_density(specify_multitrait(..., family={...}))
    """
    if spec.is_gaussian:
        raise SpecificationError(
            "Every trait is Gaussian: the multi-trait Gaussian density applies "
            "(bayeslmm.engines.bayes.multitrait_density)."
        )
    families = spec.families
    block = residual_traits(families, spec.traits)
    n_gaussian = sum(1 for a in block if families[a].is_gaussian)
    olre = tuple(a for a, f in enumerate(families) if f.has_observation_level_effect)
    Y = np.asarray(spec.Y, dtype=float)
    Xc, x_means, has_intercept = centred_design(spec)
    priors = resolve_glmm_priors(spec, Xc, has_intercept, block, olre)
    if not hasattr(spec.kinship, "root"):
        raise SpecificationError(
            f"The kinship '{spec.kinship.name}' has no square root here; a multi-trait GLMM "
            "takes a dense kinship (bl.Kinship) or a low-rank GRM. Pass K.to_dense()."
        )
    kinship_root = spec.kinship.root()
    root = np.ascontiguousarray(kinship_root.factor, dtype=float)
    mean_diag = float(np.mean(np.sum(root * root, axis=1)))
    observed = ~np.isnan(Y)
    gaussian = np.array([f.is_gaussian for f in families])
    rows, cols = np.nonzero(~observed & gaussian[None, :])
    genetic_scale = np.array(
        [float(np.nanstd(Y[:, a])) if f.is_gaussian else 1.0 for a, f in enumerate(families)]
    )
    residual_scale = np.array([genetic_scale[a] for a in block])
    residual_priors = tuple(
        _lognormal_working if p is None else p.log_density_of_log() for p in priors.residual_sd
    )
    basis = np.ascontiguousarray(kinship_root.vectors, dtype=float)
    Y0 = np.where(observed, Y, 0.0)
    gaussian_block = list(block[:n_gaussian])
    return MultiTraitGLMMDensity(
        traits=spec.traits,
        fixed_names=spec.fixed_names,
        families=families,
        root=root,
        basis=basis,
        root_values=np.ascontiguousarray(kinship_root.values, dtype=float),
        design=np.ascontiguousarray(Xc),
        Y0=Y0,
        observed=observed,
        genetic_scale=genetic_scale,
        block=block,
        n_gaussian=n_gaussian,
        residual_scale=residual_scale,
        olre=olre,
        genetic_priors=tuple(p.log_density_of_log() for p in priors.genetic_sd),
        residual_priors=residual_priors,
        olre_priors=tuple(p.log_density_of_log() for p in priors.olre_sd),
        genetic_eta=priors.genetic_eta,
        residual_eta=priors.residual_eta,
        beta_mean=priors.beta_mean,
        beta_sd=priors.beta_sd,
        x_means=x_means,
        has_intercept=has_intercept,
        data_centre=np.nanmean(Y, axis=0),
        data_scale=np.nanstd(Y, axis=0),
        missing_rows=rows.astype(np.intp),
        missing_traits=cols.astype(np.intp),
        rotated_records=np.ascontiguousarray(basis.T @ Y0[:, gaussian_block]),
        rotated_design=np.ascontiguousarray(basis.T @ Xc),
        missing_basis=np.ascontiguousarray(basis[rows]),
        missing_block_pos=np.array([gaussian_block.index(a) for a in cols], dtype=np.intp),
        kinship_scale=spec.kinship_scale,
        attenuation=np.array(
            [
                (f.marginal_attenuation or 0.0) * mean_diag  # None but for binary traits
                for f in families
            ]
        ),
        prior_table=priors.table(spec.traits, spec.group, block, olre),
        ids=spec.ids,
        centre_gaussian_fields=bool(centre_gaussian_fields),
    )


def nutpie_model(density: MultiTraitGLMMDensity) -> Any:
    """A nutpie model that samples ``density`` (``nutpie.sample`` accepts it)."""
    from bayeslmm.engines.bayes.nutpie_callback import pyfunc_model

    dims = {**COVARIANCE_DIMS, "beta": ("trait", "term"), "missing_values": ("missing",)}
    coords = {
        "trait": list(density.traits),
        "trait_": list(density.traits),
        "term": list(density.fixed_names),
        "missing": [
            f"{density.ids[i]}:{density.traits[a]}"
            for i, a in zip(density.missing_rows, density.missing_traits, strict=True)
        ],
    }
    return pyfunc_model(density, dims, coords, seeded_expand=False)


def heritability_draws(
    density: MultiTraitGLMMDensity, posterior: Any
) -> tuple[np.ndarray, np.ndarray]:
    """h² per draw and trait on the link and latent scales, shape (chain, draw, t) each.

    The genetic variance is taken at the sample's kinship scale c (V_A = c Σ_G,aa, as the
    single-trait tables). Gaussian traits: c σ²_G / (c σ²_G + σ²_E) on both scales. Other
    traits: :func:`bayeslmm.results.scales.heritability_scales` with the observation-level
    variance (Poisson) as the other latent variance and Xβ per draw as the fixed
    predictions: link-scale V_A / (V_A + σ²_o + V_link), V_link = π²/3 (logit), 1 (probit),
    ln(1 + 1/λ) (Poisson).
    """
    from bayeslmm.results.scales import heritability_scales

    G = np.asarray(posterior["genetic_covariance"].values)
    E = np.asarray(posterior["residual_covariance"].values)
    beta = np.asarray(posterior["beta"].values)
    chains, draws = G.shape[:2]
    t = density.n_traits
    X = density.design + density.x_means  # the formula's design (intercept column 1)
    c = density.kinship_scale
    link = np.empty((chains, draws, t))
    latent = np.empty((chains, draws, t))
    for a, fam in enumerate(density.families):
        va = c * G[:, :, a, a].ravel()
        if fam.is_gaussian:
            h = va / (va + E[:, :, a, a].ravel())
            link[:, :, a] = latent[:, :, a] = h.reshape(chains, draws)
            continue
        other = E[:, :, a, a].ravel() if a in density.olre else np.zeros_like(va)
        eta = beta[:, :, a, :].reshape(-1, X.shape[1]) @ X.T
        scales = heritability_scales(va, [other], eta, fam)
        link[:, :, a] = np.reshape(scales["link"], (chains, draws))
        latent[:, :, a] = np.reshape(scales["latent"], (chains, draws))
    return link, latent


def sample_multitrait_glmm(spec: MultiTraitSpec, settings: NutsSettings, *, hdi_prob: float) -> Any:
    """Sample the posterior of a latent-scale multi-trait GLMM with nutpie.

    Parameters
    ----------
    spec : MultiTraitSpec
    settings : NutsSettings
    hdi_prob : float
        As :meth:`bayeslmm.LMM.fit` (checked by the caller).

    Returns
    -------
    MultiTraitGLMMBayesFit

    Examples
    --------
    >>> # settings = NutsSettings(draws=500, tune=500, chains=2, cores=1, seed=1,
    >>> #                         progressbar=False, target_accept=0.9)
    >>> # fit = sample_multitrait_glmm(spec, settings, hdi_prob=0.95)
    """
    from bayeslmm.engines.bayes.multitrait_sampling import run_nutpie
    from bayeslmm.results.multitrait_glmm import MultiTraitGLMMBayesFit

    run = run_nutpie(
        spec,
        multitrait_glmm_density,
        nutpie_model,
        settings,
        rhat_of=("genetic_covariance", "beta"),
    )
    density, post = run.density, run.idata.posterior
    link, latent = heritability_draws(density, post)
    dims = ("chain", "draw", "trait")
    post["heritability"] = (dims, link)
    post["heritability_latent"] = (dims, latent)
    return MultiTraitGLMMBayesFit(
        **run.fit_arguments(spec, settings, hdi_prob),
        route="latent",
        families=tuple(family_label(f) for f in spec.families),
        latent_traits=tuple(
            t for t, f in zip(spec.traits, spec.families, strict=True) if not f.is_gaussian
        ),
        residual_block=tuple(spec.traits[a] for a in density.block),
    )
