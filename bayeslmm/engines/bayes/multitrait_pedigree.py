"""The multi-trait Gaussian animal model's posterior on a sparse pedigree of any size.

The model and priors are those of the dense multi-trait NUTS density
(:mod:`~bayeslmm.engines.bayes.multitrait_density`): Y = X Bᵀ + Z U + E with vec(U) ~
N(0, Σ_G ⊗ A) over the whole pedigree, e_i ~ N(0, Σ_E[o_i, o_i]) on the traits recorded
on animal i, half-Student-t SDs and LKJ(2) correlations for Σ_G and Σ_E, and β per trait
normal with the single-trait default means and SDs. The sampled coordinates are the same
2k = t(t + 1) numbers x (the log-diagonal Cholesky factors of the trait-standardised Σ_G and
Σ_E), with the same Jacobian, so the log posterior below is *the same function* as
:meth:`MultiTraitDensity.logp <bayeslmm.engines.bayes.multitrait_density.MultiTraitDensity.
logp>` on complete data.

**Every breeding value and β integrated out.** β enters Henderson's multi-trait equations
(:class:`~bayeslmm.engines.reml.multitrait_pedigree._PedigreeEquations`, the REML route's)
as a random block with its prior precision D⁻² and mean μ, so one numeric sparse Cholesky
factorisation of the animal block A⁻¹ ⊗ Σ_G⁻¹ + ZᵀR⁻¹Z (ordering analysed once) gives the
marginal likelihood log p(y_obs | Σ_G, Σ_E) exactly; missing trait values only change an
animal's block of R⁻¹, so they are integrated out, not sampled. The gradient (for the mode,
its Hessian and NUTS) comes from the selected inverse (Takahashi) of the same factor.

**Sampler: importance sampling** (``fit.sampler == "importance"``). The posterior of the
t(t + 1) ≤ 30 parameters is found by L-BFGS on the analytic gradient; the Hessian there
by central differences of the gradient (4k gradients); then ``draws × chains`` proposals
from a multivariate Student-t (ν = :data:`PROPOSAL_DF`) centred at the mode with the
inverse Hessian as its scale. Each proposal costs one factorisation (no selected inverse),
and its weight is smoothed by PSIS (:func:`arviz.psislw`); the Pareto k̂ and the importance
effective sample size are in ``fit.timing`` (``pareto_k``, ``importance_ess``). When k̂ >
:data:`PARETO_K_LIMIT` the proposal is refitted once to the weighted draws' mean and
covariance and the proposals are drawn afresh; if k̂ is still above the limit the fit falls
back to NUTS on the same density (``sampler="auto"``) or keeps the draws with a warning
(``sampler="importance"``). The posterior draws are a systematic resample of the proposals
by weight (β drawn from β | y, Σ per kept draw, from the same factorisation), in
``chains`` groups: independent draws, R-hat ≈ 1 by construction. A proposal of large
weight is kept more than once (``fit.timing["distinct_draws"]`` counts the distinct ones),
so the ESS columns of the posterior tables and summary.json are capped at the importance
ESS (``MultiTraitBayesFit.ess_limit``): the resample holds no more information than that.

Why not NUTS on the same ≤ 30-dimensional density (``sampler="nutpie"``, also built)?
Each NUTS gradient is a factorisation *and* a selected inverse (2.5 × a factorisation's
CPU time), NUTS spends several gradients per draw and its draws are autocorrelated, while a
proposal costs one factorisation and the draws are independent. Measured (bivariate, 20 %
of each trait missing, one BLAS thread, ``benchmarks/bench_pedigree.py --traits 2``,
benchmarks/results/bench_pedigree.txt): one factorisation / one gradient 0.011 / 0.026 CPU
s at 3,000 animals, 0.063 / 0.156 at 20,000 (10,000 with records); importance sampling at
3,000 animals: k̂ 0.28, importance ESS 1,346 of 2,000 proposals, 47.5 CPU s for the whole
call, 28 ESS(r_g) per CPU s, while NUTS on the same density and data (2 × (1000 + 1000))
had not finished after 788 CPU s (≤ 2.5 ESS per CPU s); at 20,000 animals: k̂ −0.03,
importance ESS 3,148 of 4,000, 391 CPU s, 8.0 ESS(r_g) per CPU s; at 100,000 animals
(50,000 with records): one factorisation / one gradient 1.15 / 2.63 CPU s, k̂ −0.10,
importance ESS 803 of 1,000, 1,641 CPU s, 0.49 ESS(r_g) per CPU s, peak RSS 1.05 GB
(NUTS would need ≥ 2.6 CPU s per gradient, several per draw). The posterior gets
closer to normal as the data grow, so the weights improve with n.

**Route.** ``MultiTraitLMM.fit(method="nuts")`` takes this route automatically for Gaussian
traits on a :class:`~bayeslmm.kinship.SparsePedigreeKinship` of more than
:data:`~bayeslmm.kinship.pedigree_inverse.DENSE_PEDIGREE_LIMIT` animals, and for any size
with ``sampler="importance"``. Below the limit the dense route (A formed and
eigendecomposed once, NUTS with an O(n t³) gradient) stays the default: its NUTS draws need
no importance weights, so a skewed small-sample posterior (k̂ > 0.7 is likeliest there) costs
nothing extra, and at a few thousand animals its gradient is cheaper than a sparse
factorisation.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import scipy.linalg as sla

from bayeslmm.engines.bayes.multitrait_density import (
    COVARIANCE_DIMS,
    TraitCovariances,
    centred_design,
    covariance_variables,
    heritability,
    matrix_log_prior,
    resolve_multitrait_priors,
    uncentre_beta,
)
from bayeslmm.engines.bayes.multitrait_sampling import NutsSettings, nutpie_draws
from bayeslmm.engines.multitrait_gaussian import (
    cholesky_from_params,
    cholesky_param_grad,
    scaled_cholesky_grad,
)
from bayeslmm.engines.reml.multitrait_pedigree import _PedigreeEquations
from bayeslmm.errors import SpecificationError
from bayeslmm.kinship.pedigree_inverse import SparsePedigreeKinship
from bayeslmm.multitrait_spec import MultiTraitSpec
from bayeslmm.results.multitrait import MultiTraitBayesFit

__all__ = [
    "PARETO_K_LIMIT",
    "PROPOSAL_DF",
    "ROUTE",
    "PedigreeMultiTraitDensity",
    "importance_sample",
    "pedigree_multitrait_density",
    "posterior_mode",
    "sample_multitrait_pedigree",
]

#: The fit's ``route``.
ROUTE = "sparse-pedigree"
#: Degrees of freedom of the Student-t proposal: tails heavier than the posterior's.
PROPOSAL_DF = 5.0
#: Pareto k̂ above which the importance weights are not trusted (Vehtari et al. 2024).
PARETO_K_LIMIT = 0.7
#: Relative step of the central differences of the gradient that give the Hessian.
HESSIAN_STEP = 1e-4


@dataclass(eq=False)
class PedigreeMultiTraitDensity(TraitCovariances):
    """The log posterior of (Σ_G, Σ_E) with every breeding value and β integrated out.

    Build with :func:`pedigree_multitrait_density`. :meth:`log_posterior` evaluates it (one
    sparse factorisation; the gradient adds a selected inverse); :meth:`logp`,
    :meth:`expand`, :meth:`initial_point` and :attr:`ndim` serve nutpie.
    """

    traits: tuple[str, ...]
    fixed_names: tuple[str, ...]
    equations: _PedigreeEquations  # on the standardised traits Y / scale
    scale: np.ndarray  # (t,) trait SDs
    log_scale_total: float  # Σ_a n_a log s_a: standardised → the traits' units
    genetic_priors: tuple[Any, ...]
    residual_priors: tuple[Any, ...]
    genetic_eta: float
    residual_eta: float
    x_means: np.ndarray  # (p,) covariate means removed (intercept: 0)
    has_intercept: bool
    kinship_scale: float
    n_evaluations: int = 0
    n_gradients: int = 0

    @property
    def ndim(self) -> int:
        return 2 * self.n_chol

    def factors(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cholesky factors L*_G, L*_E of the trait-standardised Σ_G, Σ_E at ``x``."""
        t, k = self.n_traits, self.n_chol
        return cholesky_from_params(x[:k], t), cholesky_from_params(x[k : 2 * k], t)

    def _prior(self, L_std: np.ndarray, priors: tuple, eta: float) -> tuple[float, np.ndarray]:
        """Priors and Jacobian at the standardised factor, and their gradient in x."""
        L = self.scale[:, None] * L_std  # Σ = diag(s) L* L*ᵀ diag(s) = L Lᵀ
        value, dL = matrix_log_prior(L, priors, eta)
        return value, scaled_cholesky_grad(dL, L, self.scale)

    def log_posterior(
        self, x: np.ndarray, gradient: bool = False
    ) -> tuple[float, np.ndarray | None, dict[str, Any] | None]:
        """(log posterior up to the dense density's constant, its gradient or None, the
        equations' evaluation or None); −inf where Σ_G or Σ_E is not positive definite."""
        x = np.asarray(x, dtype=float)
        t, k = self.n_traits, self.n_chol
        if not (np.all(np.abs(x[:t]) < 50) and np.all(np.abs(x[k : k + t]) < 50)):
            return -math.inf, None, None
        LG, LE = self.factors(x)
        self.n_evaluations += 1
        try:
            at = self.equations.evaluate(LG @ LG.T, LE @ LE.T, gradient=gradient, factors=(LG, LE))
        except np.linalg.LinAlgError:
            return -math.inf, None, None
        pg, dpg = self._prior(LG, self.genetic_priors, self.genetic_eta)
        pe, dpe = self._prior(LE, self.residual_priors, self.residual_eta)
        value = float(at["value"]) - self.log_scale_total + pg + pe
        if not math.isfinite(value):
            return -math.inf, None, None
        if not gradient:
            return value, None, at
        self.n_gradients += 1
        grad = np.concatenate(
            [cholesky_param_grad(at["MG"], LG) + dpg, cholesky_param_grad(at["ME"], LE) + dpe]
        )
        return value, grad, at

    def logp(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """Log posterior and gradient (nutpie's callback)."""
        value, grad, _ = self.log_posterior(x, gradient=True)
        if grad is None:
            return -math.inf, np.zeros(self.ndim)
        return value, grad

    def beta_draw(self, at: dict[str, Any], rng: np.random.Generator | None) -> np.ndarray:
        """β (t × p, the formula's covariates) from β | y, Σ_G, Σ_E (its mean without
        ``rng``), from an evaluation's β̂ and Schur complement S (C^xx = S⁻¹)."""
        beta = np.asarray(at["beta"], dtype=float)
        if rng is not None and beta.size:
            L = np.asarray(at["S_chol"][0])
            lower = np.tril(L) if at["S_chol"][1] else np.triu(L).T
            beta = beta + sla.solve_triangular(lower.T, rng.standard_normal(beta.size))
        beta = beta.reshape(self.n_traits, -1) * self.scale[:, None]
        return uncentre_beta(beta, self.x_means, self.has_intercept)

    def named(self, x: np.ndarray, beta: np.ndarray) -> dict[str, np.ndarray]:
        """The posterior's named variables at ``x`` with β given."""
        LG, LE = self.factors(np.asarray(x, dtype=float))
        G = np.outer(self.scale, self.scale) * (LG @ LG.T)
        E = np.outer(self.scale, self.scale) * (LE @ LE.T)
        return {
            **covariance_variables(G, E),
            "heritability": heritability(G, E, self.kinship_scale),
            "beta": beta,
        }

    def expand(
        self, x: np.ndarray, rng: np.random.Generator | None = None
    ) -> dict[str, np.ndarray]:
        """The named variables at ``x`` (one factorisation for β's conditional posterior)."""
        _, _, at = self.log_posterior(x)
        t, p = self.n_traits, len(self.fixed_names)
        beta = np.full((t, p), np.nan) if at is None else self.beta_draw(at, rng)
        return self.named(x, beta)

    def initial_point(self, seed: int) -> np.ndarray:
        """Σ_G = Σ_E = half each trait's variance, no correlation, jittered."""
        rng = np.random.default_rng(seed)
        x = self.centre_point()
        x += rng.uniform(-0.5, 0.5, size=x.size)
        return x

    def centre_point(self) -> np.ndarray:
        """Σ_G = Σ_E = half each trait's variance, no correlation."""
        t, k = self.n_traits, self.n_chol
        x = np.zeros(self.ndim)
        x[:t] = x[k : k + t] = 0.5 * math.log(0.5)
        return x


def pedigree_multitrait_density(spec: MultiTraitSpec) -> PedigreeMultiTraitDensity:
    """The log posterior of a Gaussian multi-trait model on a sparse pedigree kinship.

    Parameters
    ----------
    spec : MultiTraitSpec
        Gaussian traits; its kinship a :class:`~bayeslmm.kinship.SparsePedigreeKinship`.

    Returns
    -------
    PedigreeMultiTraitDensity

    Examples
    --------
    >>> import numpy as np, pandas as pd, bayeslmm as bl
    >>> from bayeslmm.multitrait_spec import specify_multitrait
    >>> rng = np.random.default_rng(0)
    >>> ped = pd.DataFrame({"id": range(1, 101), "sire": [0] * 10 + list(rng.integers(1, 6, 90)),
    ...                     "dam": [0] * 10 + list(rng.integers(6, 11, 90))})
    >>> df = pd.DataFrame({"id": range(11, 101), "y1": rng.normal(size=90),
    ...                    "y2": rng.normal(size=90)})
    >>> A = bl.pedigree_relationship(ped, sparse=True)
    >>> spec = specify_multitrait("mvbind(y1, y2) ~ 1 + (1 | id)", df, kinship={"id": A})
    >>> density = pedigree_multitrait_density(spec)
    >>> value, grad = density.logp(density.centre_point())
    >>> density.ndim, grad.shape
    (6, (6,))
    """
    kin = spec.kinship
    if not isinstance(kin, SparsePedigreeKinship):
        raise SpecificationError(
            "The sparse-pedigree multi-trait posterior needs a sparse pedigree kinship "
            "(bayeslmm.pedigree_relationship(pedigree, sparse=True)); got "
            f"{type(kin).__name__}. Fit other kinships with the default sampler."
        )
    if not spec.is_gaussian:
        raise SpecificationError(
            "The sparse-pedigree multi-trait posterior integrates Gaussian traits only; "
            "a model with non-Gaussian traits is sampled on the dense route."
        )
    Y = np.asarray(spec.Y, dtype=float)
    Xc, x_means, has_intercept = centred_design(spec)
    priors = resolve_multitrait_priors(spec, Xc, has_intercept)
    scale = np.nanstd(Y, axis=0)
    # standardised traits: β*_a = β_a / s_a has prior N(μ_a / s_a, (sd_a / s_a)²)
    beta_prior = (
        (priors.beta_mean / scale[:, None]).ravel(),
        (priors.beta_sd / scale[:, None]).ravel(),
    )
    equations = _PedigreeEquations(Y / scale, Xc, kin, beta_prior=beta_prior)
    n_records = (~np.isnan(Y)).sum(axis=0)
    return PedigreeMultiTraitDensity(
        traits=spec.traits,
        fixed_names=spec.fixed_names,
        equations=equations,
        scale=scale,
        log_scale_total=float(np.sum(n_records * np.log(scale))),
        genetic_priors=tuple(p.log_density_of_log() for p in priors.genetic_sd),
        residual_priors=tuple(p.log_density_of_log() for p in priors.residual_sd),
        genetic_eta=priors.genetic_eta,
        residual_eta=priors.residual_eta,
        x_means=x_means,
        has_intercept=has_intercept,
        kinship_scale=spec.kinship_scale,
    )


def posterior_mode(density: PedigreeMultiTraitDensity) -> tuple[np.ndarray, np.ndarray, bool]:
    """The posterior mode (L-BFGS on the analytic gradient) and the Hessian of −log p there
    (central differences of the gradient, symmetrised).

    Returns
    -------
    tuple
        (mode, Hessian, converged): converged when the Hessian is positive definite and the
        Newton decrement gᵀH⁻¹g at the mode is below 10⁻⁴ (the mode within a hundredth of a
        posterior SD of the optimum).

    Examples
    --------
    >>> # mode, hessian, ok = posterior_mode(pedigree_multitrait_density(spec))
    """
    from scipy import optimize

    def objective(x: np.ndarray) -> tuple[float, np.ndarray]:
        value, grad, _ = density.log_posterior(x, gradient=True)
        if grad is None:
            return 1e300, np.zeros_like(x)
        return -value, -grad

    result = optimize.minimize(
        objective,
        density.centre_point(),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 500, "ftol": 1e-13, "gtol": 1e-7},
    )
    mode = result.x
    d = mode.size
    H = np.empty((d, d))
    for j in range(d):
        h = HESSIAN_STEP * max(1.0, abs(mode[j]))
        step = np.zeros(d)
        step[j] = h
        up, down = objective(mode + step)[1], objective(mode - step)[1]
        H[:, j] = (up - down) / (2.0 * h)
    H = 0.5 * (H + H.T)
    # converged when the Newton step from the mode is small against the posterior's spread
    # (the decrement gᵀH⁻¹g, in posterior variances; the gradient itself grows with n)
    grad = objective(mode)[1]
    try:
        decrement = float(grad @ np.linalg.solve(H, grad))
    except np.linalg.LinAlgError:
        decrement = math.inf
    converged = bool(0.0 <= decrement < 1e-4 and np.all(np.linalg.eigvalsh(H) > 0))
    return mode, H, converged


def _proposal_scale(H: np.ndarray) -> np.ndarray:
    """Cholesky factor of the proposal's scale, H⁻¹ with non-positive curvatures floored
    (a mode on a ridge): the weights then show how good it is."""
    w, V = np.linalg.eigh(H)
    w = np.maximum(w, 1e-6 * max(1.0, float(np.max(np.abs(w)))))
    return np.linalg.cholesky((V / w) @ V.T)


def _systematic_resample(weights: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``size`` draws by systematic resampling (each proposal kept ⌊size w⌋ or
    ⌈size w⌉ times)."""
    cumulative = np.cumsum(weights)
    cumulative[-1] = 1.0
    points = (rng.random() + np.arange(size)) / size
    return np.searchsorted(cumulative, points)


@dataclass
class ImportanceDraws:
    """Proposals, PSIS-smoothed normalised weights and what the kept draws need."""

    proposals: np.ndarray  # (S, d)
    weights: np.ndarray  # (S,) normalised, smoothed
    pareto_k: float
    ess: float
    evaluations: list[dict[str, Any] | None]  # β̂ and S's factor per proposal
    rounds: int


def importance_sample(
    density: PedigreeMultiTraitDensity,
    mode: np.ndarray,
    hessian: np.ndarray,
    n_proposals: int,
    rng: np.random.Generator,
    adapt: bool = True,
) -> ImportanceDraws:
    """PSIS importance sampling from a multivariate Student-t at the mode.

    One refit of the proposal to the weighted draws (and fresh proposals) when k̂ >
    :data:`PARETO_K_LIMIT` and ``adapt``.

    Examples
    --------
    >>> # draws = importance_sample(density, mode, hessian, 4000, np.random.default_rng(1))
    """
    import arviz as az
    from scipy import stats

    centre, chol = mode, _proposal_scale(hessian)
    rounds = 0
    while True:
        rounds += 1
        d = centre.size
        proposal = stats.multivariate_t(loc=centre, shape=chol @ chol.T, df=PROPOSAL_DF)
        z = rng.standard_normal((n_proposals, d))
        w = rng.chisquare(PROPOSAL_DF, size=n_proposals) / PROPOSAL_DF
        proposals = centre + (z @ chol.T) / np.sqrt(w)[:, None]
        log_q = proposal.logpdf(proposals)
        log_p = np.empty(n_proposals)
        keep: list[dict[str, Any] | None] = []
        for i in range(n_proposals):
            value, _, at = density.log_posterior(proposals[i])
            log_p[i] = value
            keep.append(None if at is None else {"beta": at["beta"].copy(), "S_chol": at["S_chol"]})
        log_w = log_p - np.atleast_1d(log_q)
        finite = np.isfinite(log_w)
        if finite.sum() < 2:
            raise SpecificationError(
                f"{int(finite.sum())} of {n_proposals} importance proposals have a finite "
                "posterior density: the proposal around the mode found does not cover the "
                "posterior (a variance at its boundary, or a mode search that did not "
                "converge). Fit with sampler='nutpie' (NUTS on the same density), or check "
                "the model by method='reml'."
            )
        log_w[~finite] = -np.inf
        smoothed = np.full(n_proposals, -np.inf)
        smoothed_finite, k_hat = az.psislw(log_w[finite].copy())
        smoothed[finite] = smoothed_finite
        weights = np.exp(smoothed - np.max(smoothed))
        weights /= weights.sum()
        ess = float(1.0 / np.sum(weights**2))
        k_hat = float(np.asarray(k_hat))
        if k_hat <= PARETO_K_LIMIT or not adapt or rounds == 2:
            return ImportanceDraws(proposals, weights, k_hat, ess, keep, rounds)
        # refit: the weighted mean and covariance of the draws, then fresh proposals
        centre = weights @ proposals
        dev = proposals - centre
        cov = (dev * weights[:, None]).T @ dev
        cov *= (PROPOSAL_DF - 2.0) / PROPOSAL_DF  # t's scale from its covariance
        try:
            chol = np.linalg.cholesky(cov + 1e-10 * np.eye(d))
        except np.linalg.LinAlgError:
            return ImportanceDraws(proposals, weights, k_hat, ess, keep, rounds)


#: The posterior's variables and their dimensions, for the importance draws and for NUTS.
POSTERIOR_DIMS: dict[str, tuple[str, ...]] = {
    **COVARIANCE_DIMS,
    "heritability": ("trait",),
    "beta": ("trait", "term"),
}


def _idata(named: list[dict[str, np.ndarray]], chains: int, traits, fixed_names) -> Any:
    import arviz as az

    draws = len(named) // chains
    posterior = {
        name: np.stack([row[name] for row in named]).reshape(
            chains, draws, *np.shape(named[0][name])
        )
        for name in POSTERIOR_DIMS
    }
    dims = {name: list(d) for name, d in POSTERIOR_DIMS.items()}
    return az.from_dict(posterior=posterior, coords=_coords(traits, fixed_names), dims=dims)


def _coords(traits, fixed_names) -> dict[str, list[str]]:
    return {"trait": list(traits), "trait_": list(traits), "term": list(fixed_names)}


def sample_multitrait_pedigree(
    spec: MultiTraitSpec, settings: NutsSettings, *, hdi_prob: float, sampler: str = "auto"
) -> MultiTraitBayesFit:
    """The posterior of a Gaussian multi-trait model on a sparse pedigree (module notes).

    Parameters
    ----------
    spec : MultiTraitSpec
        Gaussian traits, a :class:`~bayeslmm.kinship.SparsePedigreeKinship`.
    settings : NutsSettings
        ``draws × chains`` proposals and as many kept draws (``chains`` groups); ``tune``,
        ``progressbar`` and ``target_accept`` are NUTS's (``sampler="nutpie"`` or the
        fallback), importance sampling ignores them; NUTS runs its chains one at a time
        whatever ``cores``.
    hdi_prob : float
        As :meth:`bayeslmm.LMM.fit`.
    sampler : {"auto", "importance", "nutpie"}
        ``"auto"``: importance sampling, NUTS when k̂ stays above
        :data:`PARETO_K_LIMIT`; ``"importance"``: importance sampling, a warning instead of
        the fallback; ``"nutpie"``: NUTS on the same density.

    Returns
    -------
    MultiTraitBayesFit
        ``route == "sparse-pedigree"``, ``sampler`` ``"importance"`` or ``"nutpie"``;
        ``timing`` holds ``pareto_k``, ``importance_ess``, ``factorizations`` and
        ``selected_inverses``.

    Examples
    --------
    >>> # fit = bl.LMM("mvbind(y1, y2) ~ 1 + (1 | id)", df,
    >>> #              kinship={"id": bl.pedigree_relationship(ped, sparse=True)}
    >>> #              ).fit(sampler="importance")
    >>> # fit.sampler, fit.timing["pareto_k"], fit.genetic_correlation()
    """
    draws, chains, seed = settings.draws, settings.chains, settings.seed
    started = time.perf_counter()
    density = pedigree_multitrait_density(spec)
    X = np.asarray(spec.X, dtype=float)
    priors = resolve_multitrait_priors(spec, X - density.x_means, density.has_intercept)
    build_s = time.perf_counter() - started
    messages: list[str] = []
    timing: dict[str, float] = {"build_s": build_s}
    rng = np.random.default_rng(seed)
    use_nuts = sampler == "nutpie"
    if not use_nuts:
        mode, hessian, converged = posterior_mode(density)
        timing["mode_s"] = time.perf_counter() - started - build_s
        timing["mode_gradients"] = float(density.n_gradients)
        found = importance_sample(density, mode, hessian, draws * chains, rng)
        timing.update(
            pareto_k=found.pareto_k,
            importance_ess=found.ess,
            importance_rounds=float(found.rounds),
            proposals=float(found.proposals.shape[0]),
        )
        if not converged:
            messages.append(
                "The posterior mode search did not converge; the importance weights (k̂ "
                f"{found.pareto_k:.2f}) say how far the draws can be trusted."
            )
        if found.pareto_k > PARETO_K_LIMIT:
            if sampler == "auto":
                use_nuts = True
                messages.append(
                    f"Importance sampling's Pareto k̂ = {found.pareto_k:.2f} (> "
                    f"{PARETO_K_LIMIT}): the posterior is far from the Student-t at its mode; "
                    "sampled by NUTS on the same density instead (a factorisation and a "
                    "selected inverse per gradient)."
                )
            else:
                messages.append(
                    f"Importance sampling's Pareto k̂ = {found.pareto_k:.2f} (> "
                    f"{PARETO_K_LIMIT}): the weights are unreliable and the posterior summaries "
                    "may be off. Refit with sampler='nutpie' (NUTS on the same density) or "
                    "'auto'."
                )
    if use_nuts:
        idata, nuts_messages = _sample_nuts(density, settings)
        messages.extend(nuts_messages)
        used = "nutpie"
    else:
        index = _systematic_resample(found.weights, draws * chains, rng)
        index = rng.permutation(index)
        named = []
        for i in index:
            at = found.evaluations[i]
            beta = (
                np.full((density.n_traits, len(spec.fixed_names)), np.nan)
                if at is None
                else density.beta_draw(at, rng)
            )
            named.append(density.named(found.proposals[i], beta))
        idata = _idata(named, chains, spec.traits, spec.fixed_names)
        timing["distinct_draws"] = float(np.unique(index).size)
        used = "importance"
    eq = density.equations
    timing.update(
        sample_s=time.perf_counter() - started - build_s,
        total_s=time.perf_counter() - started,
        factorizations=float(eq.n_factorizations),
        selected_inverses=float(eq.n_selected_inverses),
    )
    idata.posterior.attrs.update(
        {key: value for key, value in timing.items() if isinstance(value, float)}
    )
    return MultiTraitBayesFit(
        traits=spec.traits,
        fixed_names=spec.fixed_names,
        idata=idata,
        hdi_prob=hdi_prob,
        seed=seed,
        timing=timing,
        formula=spec.formula,
        priors=priors.table(spec.traits, spec.group),
        messages=messages,
        route=ROUTE,
        sampler=used,
        spec=spec,
    )


def _sample_nuts(
    density: PedigreeMultiTraitDensity, settings: NutsSettings
) -> tuple[Any, list[str]]:
    """NUTS (nutpie, Python callback) on the density: its draws and worded diagnostics."""
    from bayeslmm.engines.bayes.nutpie_callback import pyfunc_model

    coords = _coords(density.traits, density.fixed_names)
    compiled = pyfunc_model(density, POSTERIOR_DIMS, coords, seeded_expand=True)
    # one factor object serves every chain (its ordering is analysed once): the chains
    # take turns, which the Python callback's GIL imposes anyway
    return nutpie_draws(
        compiled,
        replace(settings, cores=1),
        rhat_of=("genetic_covariance", "residual_covariance"),
    )
