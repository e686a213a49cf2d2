"""The ``"laplace-marginal"`` strategy: NUTS on the variances, the latent field integrated out.

(Formerly ``strategy="laplace"``; not to be confused with ``fit(method="laplace")``, Laplace
maximum likelihood, :mod:`bayeslmm.engines.laplace`.)

For a GLMM with a canonical link (Poisson log, binomial / Bernoulli logit: a family whose
:attr:`~bayeslmm.families.Family.canonical_link` is true) whose random terms are all
intercept-only (kinship or iid), the linear predictor minus its offset,

    f = X β + Σ_j Z_j u_j (+ e, the observation-level effect),

is Gaussian a priori given the variances v = (σ_1², …, σ_olre²):
f ~ N(m, Σ(v)) with m = X μ_β and Σ(v) = Σ_j v_j C_j + X S_β Xᵀ, C_j = Z_j K_j Z_jᵀ (Z_j Z_jᵀ for
iid terms, I for the observation-level effect), S_β = diag(prior SD²) of β. β is thus part
of the Gaussian latent vector and is integrated out with it. The marginal likelihood p(y | v)
is replaced by its Laplace approximation (Rasmussen & Williams 2006, algorithms 3.1 and 5.1;
Rue et al. 2009; Margossian et al. 2020)::

    log p̂(y | v) = log p(y | f̂) − ½ aᵀ (f̂ − m) − ½ log det B,   B = I + W^½ Σ W^½,

where f̂ is the mode of p(f | y, v), a = Σ⁻¹ (f̂ − m) = ∇ log p(y | f̂) and W = −∇² log p(y | f̂)
(diagonal). Its gradient in v is exact (implicit-function theorem: the mode's dependence on v
enters through the third derivatives of the log-likelihood):

    ∂/∂v_j = ½ aᵀ C_j a − ½ tr(R C_j) + s₂ᵀ (I − Σ R) C_j a,
    R = W^½ B⁻¹ W^½,   s₂ = ½ diag(Σ − Σ R Σ) ∘ ∇³ log p(y | f̂)

(the sign of s₂ is that of the derivative of −½ log det B; R&W's algorithm 5.1 prints it
with the opposite sign, the finite-difference test in tests/engines/bayes/test_laplace_marginal.py
pins it).

Each evaluation costs a few dense n × n Cholesky factorisations of B (Newton, warm-started
from the previous mode, plus one at the mode) and one triangular inverse: O(n³), with n the
number of observations. NUTS then samples only the SDs.

After sampling, f, β and the u_j are drawn for every posterior draw from the Gaussian
(Laplace) approximation of p(β, u, e | y, v) by pathwise conditioning, and the usual
deterministics (``var_<g>``, ``var_residual``, ``variance_share``, ``h2``) are computed, so
the posterior has the same variables as the latent strategy.

What is approximated: only p(y | v) and p(β, u | y, v) (Laplace). Measured against the
exact posterior of the latent strategy (validation/laplace_accuracy.py): Poisson with moderate
counts, posterior mean of V_A within ≈ 0.1 posterior SD; Bernoulli, biased low by 0.3 to 1.8
posterior SD (V_A, h²) even with 4 records per individual. Not faster than the latent model at
n ≥ 500 (benchmarks/results/bench_glmm_laplace.txt): experimental and opt-in; see
``docs/bayesian.md``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.linalg as sla

from bayeslmm.engines.bayes.built import BuiltModel, component_labels, h2_term, model_coords
from bayeslmm.engines.bayes.fixed_effects import fixed_effects_prior
from bayeslmm.engines.bayes.terms import sd_prior_for
from bayeslmm.errors import SpecificationError
from bayeslmm.families import Family
from bayeslmm.priors import PriorSet
from bayeslmm.spec import ModelSpec

if TYPE_CHECKING:
    import arviz as az

#: Newton stops when the largest change of the mode is below this (the value is then
#: accurate to about its square).
MODE_TOL = 1e-7
#: Newton steps before giving up (the Op then returns −inf, which NUTS treats as a divergence).
MAX_NEWTON = 60


def laplace_obstacles(spec: ModelSpec, priors: PriorSet | None = None) -> list[str]:
    """Why the laplace-marginal strategy does not apply to ``spec`` (empty when it does).

    Examples
    --------
    >>> import pandas as pd, bayeslmm as bl
    >>> df = pd.DataFrame({"y": [1.0, 2.0, 0.5, 1.5], "g": ["a", "a", "b", "b"]})
    >>> laplace_obstacles(bl.specify("y ~ 1 + (1 | g)", df))
    ['family is gaussian (use the spectral or latent strategy)']
    """
    reasons = []
    fam = spec.family
    if fam.is_gaussian:
        reasons.append("family is gaussian (use the spectral or latent strategy)")
    elif not fam.canonical_link:
        # W = −∇² log p must be the (positive) Fisher weight: canonical links only
        reasons.append(f"the {fam.name} family's {fam.link} link is not its canonical link")
    if not spec.terms:
        reasons.append("no random term")
    for t in spec.terms:
        if not t.is_intercept_only:
            reasons.append(f"term ({t.label}) has slopes")
    if priors is not None:
        if priors.uses_shares:
            reasons.append("the share (h2) prior parametrisation")
    return reasons


# -- the likelihood of one observation given f ---------------------------------------------


@dataclass(frozen=True)
class _Likelihood:
    """log p(y | f) and its first three derivatives (per observation), from the family.

    With a canonical link the observed information is the Fisher information n w(f) and
    ∇³ log p = −n dw/df, so ∇³ log p / W = −d log w / df (:meth:`Family.information`).
    """

    family: Family
    y: np.ndarray
    trials: np.ndarray  # ones for families without trials
    const: float

    @classmethod
    def make(cls, spec: ModelSpec) -> _Likelihood:
        y = np.asarray(spec.y, dtype=float)
        N = np.ones_like(y) if spec.trials is None else np.asarray(spec.trials, dtype=float)
        return cls(spec.family, y, N, float(spec.family.log_constant(y, N).sum()))

    def value(self, f: np.ndarray) -> float:
        return self.family.loglik_kernel(self.y, f, self.trials)[0] + self.const

    def derivatives(self, f: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(∇ log p, W = −∇² log p, ∇³ log p / W)."""
        w, log_slope = self.family.information(f)
        return self.family.score(self.y, f, self.trials), self.trials * w, -log_slope


@dataclass
class LaplaceMode:
    """The mode of p(f | y, v) and the factor of B there."""

    f: np.ndarray
    a: np.ndarray
    W: np.ndarray
    chol: np.ndarray  # lower Cholesky factor of B = I + W^½ Σ W^½
    value: float
    newton_steps: int
    factors: int = 1  # Cholesky factorisations of B spent, the one at the mode included


class LaplaceMarginal:
    """Laplace approximation of log p(y | v) for f ~ N(m, Σ(v)), Σ(v) = Σ_j v_j C_j + C_0.

    Parameters
    ----------
    likelihood : _Likelihood
        From :meth:`_Likelihood.make`.
    components : list of ndarray or None
        C_j (n × n); None stands for the identity (observation-level effect).
    mean : ndarray, shape (n,)
        m (offset + X μ_β).
    fixed_cov : ndarray, shape (n, n), optional
        C_0 = X S_β Xᵀ (integrated-out fixed effects).
    fixed_root : ndarray, shape (n, p), optional
        X S_β^½ (so that C_0 = fixed_root fixed_rootᵀ).

    Examples
    --------
    >>> import numpy as np, pandas as pd, bayeslmm as bl
    >>> df = pd.DataFrame({"y": [0, 3, 1, 5], "g": ["a", "a", "b", "b"]})
    >>> lm = LaplaceMarginal.from_spec(bl.specify("y ~ 1 + (1 | g)", df, family="poisson"),
    ...                                intercept=(0.0, 2.0), olre=False)
    >>> value, grad = lm.logp_and_grad(np.array([0.5]))
    >>> bool(np.isfinite(value)) and grad.shape
    (1,)
    """

    def __init__(
        self,
        likelihood: _Likelihood,
        components: list[np.ndarray | None],
        mean: np.ndarray,
        fixed_root: np.ndarray | None = None,
    ) -> None:
        self.lik = likelihood
        self.components = components
        self.mean = np.asarray(mean, dtype=float)
        self.n = self.mean.size
        self.fixed_root = fixed_root
        self.fixed_cov = None if fixed_root is None else fixed_root @ fixed_root.T
        self._last_f: np.ndarray | None = None
        # first-order predictor of the mode, f̂(v') ≈ f̂(v) + (∂f̂/∂v)(v' − v): the warm start
        # of the next Newton run (the sensitivities come free with the gradient)
        self._last_v: np.ndarray | None = None
        self._last_df: np.ndarray | None = None
        self.n_evaluations = 0

    @classmethod
    def from_spec(
        cls,
        spec: ModelSpec,
        intercept: tuple[float, float] | None = None,
        olre: bool = False,
        fixed_mu: np.ndarray | None = None,
        fixed_sd: np.ndarray | None = None,
        design: np.ndarray | None = None,
    ) -> LaplaceMarginal:
        """Build from a spec: one component per random term (in order), then the
        observation-level effect when ``olre``. β ~ N(fixed_mu, diag(fixed_sd²)) multiplies
        ``design`` (default ``spec.X``); ``intercept=(mu, sd)`` is a shortcut for an
        intercept-only model."""
        if laplace_obstacles(spec):
            raise SpecificationError(
                "The laplace-marginal strategy does not apply: "
                + "; ".join(laplace_obstacles(spec))
            )
        comps: list[np.ndarray | None] = []
        for t in spec.terms:
            Z = t.incidence()
            if t.kinship is not None:
                K = np.asarray(t.kinship.matrix, dtype=float)
                C = np.asarray((Z @ (Z @ K).T).T) if not t.is_identity_incidence else K.copy()
            else:
                C = np.asarray((Z @ Z.T).todense(), dtype=float)
            comps.append(0.5 * (C + C.T))
        if olre:
            comps.append(None)
        X = np.asarray(spec.X if design is None else design, dtype=float)
        if intercept is not None:
            fixed_mu, fixed_sd = np.array([intercept[0]]), np.array([intercept[1]])
        mean = np.zeros(spec.n_obs) if spec.offset is None else np.asarray(spec.offset, float)
        root = None
        if X.shape[1] and fixed_mu is not None:
            mean = mean + X @ np.asarray(fixed_mu, dtype=float)
            root = X * np.asarray(fixed_sd, dtype=float)
        return cls(_Likelihood.make(spec), comps, mean, root)

    # -- Σ(v) ---------------------------------------------------------------------------
    def covariance(self, variances: np.ndarray) -> np.ndarray:
        """Σ(v) = Σ_j v_j C_j + C_0 (n × n)."""
        S = np.zeros((self.n, self.n)) if self.fixed_cov is None else self.fixed_cov.copy()
        diag = 0.0
        for v, C in zip(variances, self.components, strict=True):
            if C is None:
                diag += float(v)
            else:
                S += float(v) * C
        S[np.diag_indices(self.n)] += diag
        return S

    def _b_factor(self, S: np.ndarray, sW: np.ndarray) -> np.ndarray:
        B = sW[:, None] * S * sW[None, :]
        B[np.diag_indices(self.n)] += 1.0
        return sla.cholesky(B, lower=True, check_finite=False, overwrite_a=True)

    def mode(self, variances: np.ndarray, start: np.ndarray | None = None) -> LaplaceMode:
        """Newton's method for the mode f̂ of p(f | y, v) (R&W algorithm 3.1), warm-started
        from ``start`` (default: the last mode found)."""
        S = self.covariance(variances)
        m = self.mean
        f = start
        if f is None and self._last_f is not None:
            f = self._last_f
            if self._last_df is not None and self._last_v is not None:
                step = np.asarray(variances) - self._last_v
                if np.all(np.abs(step) <= 0.5 * np.abs(self._last_v)):
                    f = f + self._last_df @ step
        if f is None or not np.all(np.isfinite(f)):
            f = m.copy()
        a_prev = None
        psi_prev = -np.inf
        steps = 0
        converged = False
        refactor, factors, last_change = True, 0, np.inf
        for steps in range(1, MAX_NEWTON + 1):  # noqa: B007
            d1, W_now, _ = self.lik.derivatives(f)
            if refactor:
                # chord method: the factor of B at one point serves the next steps while they
                # contract fast (each then costs O(n²), not a Cholesky factorisation)
                W = W_now
                sW = np.sqrt(W)
                L = self._b_factor(S, sW)
                factors += 1
            b = W * (f - m) + d1
            a = b - sW * sla.cho_solve((L, True), sW * (S @ b), check_finite=False)
            f_new = m + S @ a
            psi = self.lik.value(f_new) - 0.5 * a @ (f_new - m)
            # damp (halve the step in a) if the objective fell: a full Newton step from a poor
            # start can overshoot for exp-type likelihoods
            halvings = 0
            fell = psi < psi_prev - 1e-12 * abs(psi_prev)  # not a rounding-level change
            while a_prev is not None and (not np.isfinite(psi) or fell) and halvings < 30:
                a = 0.5 * (a + a_prev)
                f_new = m + S @ a
                psi = self.lik.value(f_new) - 0.5 * a @ (f_new - m)
                fell = psi < psi_prev - 1e-12 * abs(psi_prev)
                halvings += 1
            change = np.max(np.abs(f_new - f)) / (1.0 + np.max(np.abs(f_new)))
            stalled = halvings > 0 and abs(psi - psi_prev) <= 1e-14 * abs(psi_prev)
            f, a_prev, psi_prev = f_new, a, psi
            if change < MODE_TOL or stalled:  # stalled: at the mode to rounding
                converged = True
                break
            refactor = halvings > 0 or change > 0.05 * last_change
            last_change = change
            if steps == 25 or not np.all(np.isfinite(f)):  # a poor warm start: from the prior mean
                f, a_prev, psi_prev = m.copy(), None, -np.inf
                refactor, last_change = True, np.inf
        if not converged:  # only at absurd variances (e.g. 1e15 early in adaptation)
            self._last_f = None
            raise np.linalg.LinAlgError(f"Newton did not converge at variances {variances}")
        d1, W, _ = self.lik.derivatives(f)
        L = self._b_factor(S, np.sqrt(W))
        value = self.lik.value(f) - 0.5 * a_prev @ (f - m) - np.log(np.diag(L)).sum()
        self._last_f, self._last_v, self._last_df = f, None, None
        return LaplaceMode(
            f=f, a=a_prev, W=W, chol=L, value=float(value), newton_steps=steps, factors=factors + 1
        )

    def logp_and_grad(self, variances: np.ndarray) -> tuple[float, np.ndarray]:
        """log p̂(y | v) and its exact gradient in v (R&W algorithm 5.1).

        Examples
        --------
        >>> import numpy as np, pandas as pd, bayeslmm as bl
        >>> df = pd.DataFrame({"y": [0, 3, 1, 5], "g": ["a", "a", "b", "b"]})
        >>> spec = bl.specify("y ~ 1 + (1 | g)", df, family="poisson")
        >>> lm = LaplaceMarginal.from_spec(spec, intercept=(0.0, 2.0))
        >>> lm.logp_and_grad(np.array([0.5]))[1].shape
        (1,)
        """
        variances = np.asarray(variances, dtype=float)
        self.n_evaluations += 1
        md = self.mode(variances)
        S = self.covariance(variances)
        L, W, a = md.chol, md.W, md.a
        sW = np.sqrt(W)
        _, _, d3_over_w = self.lik.derivatives(md.f)
        Linv, info = sla.lapack.dtrtri(L, lower=1)
        if info != 0:
            raise np.linalg.LinAlgError("triangular inverse failed")
        diag_binv = np.einsum("ij,ij->j", Linv, Linv)
        # ∂(−½ log det B)/∂f̂_i = ½ (H⁻¹)_ii ∇³_i; W ∘ diag(H⁻¹) = 1 − diag(B⁻¹) (no division by W)
        s2 = 0.5 * (1.0 - diag_binv) * d3_over_w
        tr_r_identity = float(W @ diag_binv)
        dense = [j for j, C in enumerate(self.components) if C is not None]
        tr_rc = {}
        for j, C in enumerate(self.components):
            if C is None:
                tr_rc[j] = tr_r_identity
        explicit_dense = dense
        if len(dense) == 1 and variances[dense[0]] > 1e-6:
            # tr(R Σ) = tr(B⁻¹ (B − I)) = n − tr B⁻¹ gives the one dense trace without B⁻¹
            j = dense[0]
            rest = sum(variances[k] * tr_rc[k] for k in tr_rc)
            if self.fixed_root is not None:
                G = Linv @ (sW[:, None] * self.fixed_root)
                rest += float(np.sum(G * G))
            tr_rc[j] = (self.n - diag_binv.sum() - rest) / variances[j]
            explicit_dense = []
        if explicit_dense:
            Binv = Linv.T @ Linv
            for j in explicit_dense:
                C = self.components[j]
                tr_rc[j] = float(np.sum(Binv * (sW[:, None] * C * sW[None, :])))
        grad = np.empty(len(self.components))
        sensitivity = np.empty((self.n, len(self.components)))
        for j, C in enumerate(self.components):
            Ca = a if C is None else C @ a
            s1 = 0.5 * a @ Ca - 0.5 * tr_rc[j]
            RCa = sW * sla.cho_solve((L, True), sW * Ca, check_finite=False)
            s3 = Ca - S @ RCa  # ∂f̂/∂v_j = (I + Σ W)⁻¹ C_j ∇log p
            sensitivity[:, j] = s3
            grad[j] = s1 + s2 @ s3
        self._last_v, self._last_df = variances.copy(), sensitivity
        return md.value, grad

    # -- draws of the latent field --------------------------------------------------------
    def draw_latent(
        self, variances: np.ndarray, rng: np.random.Generator, prior_draw
    ) -> tuple[Any, np.ndarray]:
        """One draw from the Laplace (Gaussian) approximation of the latent vector given v.

        ``prior_draw(rng)`` returns ``(x0, f0, cross)``: a draw x0 of the latent vector from
        its prior, its linear predictor f0 (without m) and a function t ↦ Cov(x, f) t.
        Pathwise conditioning (Matheron's rule) on the Gaussian pseudo-likelihood
        N(ỹ; f, W⁻¹), ỹ = f̂ + W⁻¹ ∇ log p(y | f̂): x = x0 + Cov(x, f)(Σ + W⁻¹)⁻¹(ỹ − m − f0 − ε).
        """
        md = self.mode(np.asarray(variances, dtype=float))
        sW = np.sqrt(md.W)
        x0, f0, cross = prior_draw(rng)
        # W^½(ỹ − m − f0 − ε) with W^½ ε ~ N(0, I)
        r = sW * (md.f - self.mean - f0) + md.a / sW - rng.standard_normal(self.n)
        t = sW * sla.cho_solve((md.chol, True), r, check_finite=False)
        return cross(x0, t), md.f


# -- the PyTensor Op --------------------------------------------------------------------


def laplace_logp_op(marginal: LaplaceMarginal):
    """A PyTensor Op: variances (vector) → log p̂(y | v), with its exact gradient.

    One evaluation computes the value and the gradient together; the gradient Op reuses it
    (cached on the last input, per thread: samplers may run chains in threads), so NUTS pays
    one Laplace fit per leapfrog step. Non-convergence (absurd variances early in warm-up)
    gives −inf, which NUTS treats as a divergence.

    Examples
    --------
    >>> import numpy as np, pandas as pd, pytensor, pytensor.tensor as pt, bayeslmm as bl
    >>> df = pd.DataFrame({"y": [0, 3, 1, 5], "g": ["a", "a", "b", "b"]})
    >>> spec = bl.specify("y ~ 1 + (1 | g)", df, family="poisson")
    >>> op = laplace_logp_op(LaplaceMarginal.from_spec(spec, intercept=(0.0, 2.0)))
    >>> v = pt.dvector("v")
    >>> value, grad = pytensor.function([v], [op(v), pytensor.grad(op(v), v)])(np.array([0.5]))
    >>> grad.shape
    (1,)
    """
    import threading

    import pytensor.tensor as pt
    from pytensor.graph.basic import Apply
    from pytensor.graph.op import Op

    caches: dict[int, dict[str, Any]] = {}  # per thread (a plain dict: the Op must pickle)

    def evaluate(v: np.ndarray) -> tuple[float, np.ndarray]:
        key = np.asarray(v, dtype=float).tobytes()
        cache = caches.setdefault(threading.get_ident(), {})
        if cache.get("key") != key:
            try:
                value, grad = marginal.logp_and_grad(np.asarray(v, dtype=float))
            except (np.linalg.LinAlgError, FloatingPointError, ValueError):
                value, grad = -np.inf, np.zeros(len(v))
            if not np.isfinite(value):
                value, grad = -np.inf, np.zeros(len(v))
            cache.update(key=key, value=value, grad=grad)
        return cache["value"], cache["grad"]

    class LaplaceGrad(Op):
        itypes = [pt.dvector]
        otypes = [pt.dvector]

        def perform(self, node, inputs, outputs):
            outputs[0][0] = np.asarray(evaluate(inputs[0])[1], dtype=float)

    grad_op = LaplaceGrad()

    class LaplaceLogp(Op):
        def make_node(self, v):
            v = pt.as_tensor_variable(v)
            return Apply(self, [v], [pt.dscalar()])

        def perform(self, node, inputs, outputs):
            outputs[0][0] = np.asarray(evaluate(inputs[0])[0], dtype=float)

        def grad(self, inputs, output_grads):
            return [output_grads[0] * grad_op(inputs[0])]

    return LaplaceLogp()


# -- the model and the draws after sampling ---------------------------------------------


#: What the laplace-marginal strategy needs, in words (the start of its error message).
REQUIREMENT = (
    "The laplace-marginal strategy needs a Poisson (log) or binomial (logit) model whose "
    "random terms are all intercept-only, with SD priors"
)


def build_laplace_marginal(spec: ModelSpec, priors: PriorSet) -> BuiltModel:
    """The PyMC model of the laplace-marginal strategy: the SDs with their priors and one
    Potential, log p̂(y | v).

    Parameters
    ----------
    spec : ModelSpec
    priors : PriorSet
        Resolved priors (:func:`bayeslmm.priors.resolve_priors`).

    Returns
    -------
    BuiltModel
        Its ``cache`` holds the :class:`LaplaceMarginal` (``"laplace"``) and the fixed
        effects' prior (``"laplace_fixed"``) that :func:`add_laplace_draws` uses.

    Examples
    --------
    >>> import numpy as np, pandas as pd, bayeslmm as bl
    >>> from bayeslmm.engines.bayes import build
    >>> K = bl.Kinship(np.eye(6) * 0.5 + 0.5, [f"i{k}" for k in range(6)])
    >>> df = pd.DataFrame({"y": [0, 1, 3, 0, 2, 5], "id": list(K.ids)})
    >>> spec = bl.specify("y ~ 1 + (1 | id)", df, kinship={"id": K}, family="poisson")
    >>> built = build(spec, strategy="laplace-marginal")
    >>> sorted(v.name for v in built.model.free_RVs)
    ['sd_id', 'sd_olre']
    """
    import pymc as pm
    import pytensor.tensor as pt

    start = time.perf_counter()
    reasons = laplace_obstacles(spec, priors)
    if reasons:
        raise SpecificationError(
            f"{REQUIREMENT}; here: {'; '.join(reasons)}. Use strategy='latent'."
        )
    fe = fixed_effects_prior(spec, priors)
    olre = priors.sd_olre is not None
    marginal = LaplaceMarginal.from_spec(
        spec,
        olre=olre,
        fixed_mu=None if fe is None else fe.mu,
        fixed_sd=None if fe is None else fe.sd,
        design=None if fe is None else fe.design,
    )
    op = laplace_logp_op(marginal)
    with pm.Model(coords=model_coords(spec)) as model:
        variances = []
        for t in spec.terms:
            sd = sd_prior_for(priors.sd[t.group], 1).to_pymc(f"sd_{t.group}")
            variances.append(pm.Deterministic(f"var_{t.group}", sd**2))
        if olre:
            sd_olre = priors.sd_olre.to_pymc("sd_olre")
            variances.append(pm.Deterministic("var_olre", sd_olre**2))
        pm.Potential("laplace_loglik", op(pt.stack(variances)))
    built = BuiltModel(
        model=model,
        spec=spec,
        strategy="laplace-marginal",
        priors=priors,
        rotation=None,
        components=component_labels(spec),
        h2_term=h2_term(spec),
        observed_name=spec.response,
        timing={"build_s": time.perf_counter() - start, "eigh_s": 0.0},
    )
    built.cache["laplace"] = marginal
    built.cache["laplace_fixed"] = fe
    return built


def build_laplace(
    spec: ModelSpec, prior_set: PriorSet, coords: dict[str, Any] | None = None
) -> BuiltModel:
    """Former name of :func:`build_laplace_marginal` (``coords`` is ignored: the model's
    coordinates follow from ``spec``).

    Examples
    --------
    >>> build_laplace is not build_laplace_marginal
    True
    """
    return build_laplace_marginal(spec, prior_set)


def add_laplace_draws(
    built: BuiltModel, idata: az.InferenceData, seed: Any = None
) -> az.InferenceData:
    """Draw β, u_g (and the observation-level effects' contribution) for every posterior
    draw from the Laplace approximation of p(β, u | y, v), then add ``beta``, ``u_<g>``,
    ``var_residual``, ``variance_share`` and ``h2`` to ``idata.posterior`` (in place).

    Examples
    --------
    >>> from bayeslmm.engines.bayes.sampling import sample  # doctest: +SKIP
    >>> idata, _ = sample(built)  # calls add_laplace_draws  # doctest: +SKIP
    """
    import xarray as xr

    spec = built.spec
    marginal: LaplaceMarginal = built.cache["laplace"]
    fe = built.cache["laplace_fixed"]
    post = idata.posterior
    n_chain, n_draw = post.sizes["chain"], post.sizes["draw"]
    names = [f"var_{t.group}" for t in spec.terms]
    olre = "var_olre" in post
    if olre:
        names.append("var_olre")
    V = np.stack([np.asarray(post[nm]).reshape(-1) for nm in names], axis=1)
    rng = np.random.default_rng(seed)
    X = np.zeros((spec.n_obs, 0)) if fe is None else fe.design
    p = X.shape[1]
    roots = []
    for t in spec.terms:
        if t.kinship is not None:
            roots.append(t.kinship.root().factor)
        else:
            roots.append(None)
    incid = [t.incidence() for t in spec.terms]
    kin = [None if t.kinship is None else np.asarray(t.kinship.matrix, float) for t in spec.terms]
    beta_out = np.zeros((V.shape[0], p))
    u_out = [np.zeros((V.shape[0], t.n_levels)) for t in spec.terms]
    for s, v in enumerate(V):

        def prior_draw(rng, v=v):
            b0 = fe.mu + fe.sd * rng.standard_normal(p) if p else np.zeros(0)
            f0 = X @ (b0 - (fe.mu if p else 0.0))
            us = []
            for j, t in enumerate(spec.terms):
                z = rng.standard_normal(t.n_levels)
                if roots[j] is not None:
                    # one normal per level, the last paired with the largest eigenvalue (the
                    # root's first column): a seed's draws do not depend on how many
                    # eigenvalues the root drops
                    z = z[::-1][: roots[j].shape[1]]
                u0 = np.sqrt(v[j]) * (roots[j] @ z if roots[j] is not None else z)
                us.append(u0)
                f0 = f0 + incid[j] @ u0
            e0 = np.sqrt(v[-1]) * rng.standard_normal(spec.n_obs) if olre else None
            if olre:
                f0 = f0 + e0

            def cross(x0, t_vec, v=v):
                b0_, us_ = x0
                b = b0_ + fe.sd**2 * (X.T @ t_vec) if p else b0_
                outs = []
                for j, u0 in enumerate(us_):
                    zt = incid[j].T @ t_vec
                    outs.append(u0 + v[j] * (kin[j] @ zt if kin[j] is not None else zt))
                return b, outs

            return (b0, us), f0, cross

        (b, us), _ = marginal.draw_latent(v, rng, prior_draw)
        beta_out[s] = b
        for j in range(len(us)):
            u_out[j][s] = us[j]
    coords = {"chain": post["chain"].values, "draw": post["draw"].values}

    def put(name, values, dims, extra=None):
        shaped = values.reshape(n_chain, n_draw, *values.shape[1:])
        post[name] = xr.DataArray(
            shaped, dims=("chain", "draw", *dims), coords={**coords, **(extra or {})}
        )

    fixed_names = list(spec.fixed_names)
    if p:
        if fe.centred:
            put("beta_centered", beta_out, ("fixed",), {"fixed": fixed_names})
        put("beta", fe.uncentre(beta_out), ("fixed",), {"fixed": fixed_names})
    for j, t in enumerate(spec.terms):
        put(
            f"u_{t.group}",
            u_out[j][:, :, None],
            (f"{t.group}_level", f"{t.group}_coef"),
            {f"{t.group}_level": list(t.levels), f"{t.group}_coef": list(t.covariates)},
        )
    var_terms = V[:, : len(spec.terms)]
    var_olre = V[:, -1] if olre else np.zeros(V.shape[0])
    offset = np.zeros(spec.n_obs) if spec.offset is None else np.asarray(spec.offset)
    eta_fixed = offset[None, :] + beta_out @ X.T
    var_res = spec.family.latent_residual_variance(eta_fixed, var_terms.sum(axis=1), var_olre)
    var_res = np.broadcast_to(np.asarray(var_res, dtype=float), (V.shape[0],)).copy()
    put("var_residual", var_res, ())
    # shares at the sample's kinship scale, as the results tables
    weights = [t.variance_weights("sample")[0, 0] for t in spec.terms]
    comps = np.column_stack([var_terms * np.asarray(weights), var_res])
    shares = comps / comps.sum(axis=1, keepdims=True)
    put("variance_share", shares, ("component",), {"component": list(built.components)})
    if built.h2_term is not None:
        put("h2", shares[:, list(built.components).index(built.h2_term)], ())
    return idata
