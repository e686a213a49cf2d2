"""The latent kinship GLMM's log posterior written out by hand, for nutpie.

The latent strategy's PyMC model of a GLMM with one kinship effect,
``y ~ X + (1 | id)`` with u = σ_a · U √S · z, is sampled fastest when nothing is compiled
and the posterior is reparametrised so that NUTS' diagonal mass matrix fits it. This module
writes the *same* posterior (tested equal to the built model's ``logp`` up to the
Jacobian of the reparametrisation) as numpy code that nutpie calls for each gradient: two
matrix–vector products with the eigenvectors of K per gradient, nothing compiled per data
set. Three exact changes of variables make NUTS' job easier:

1. **Poisson's observation-level effect merged into the kinship effect.** With one record
   per individual, a + e ~ N(0, σ_a² K + σ_o² I) = N(0, U diag(σ_a² s + σ_o²) Uᵀ): one
   latent vector instead of two and no funnel between σ_o and e. The split into a and e
   is drawn afterwards from a | a + e (a Gaussian, diagonal in the eigenbasis), so the
   draws of ``z_id``, ``z_olre``, ``u_id`` are those of the PyMC model.
2. **Partial non-centring per eigen-component** (Papaspiliopoulos, Roberts & Sköld 2007).
   With A_j the prior variance of component j, c_j = A_j^((1−w_j)/2) v_j and
   v_j ~ N(0, A_j^(w_j)): w_j → 0 is the non-centred form (weak data), w_j → 1 the centred
   one (strong data). w_j = I A⁰_j / (1 + I A⁰_j), with I the mean Fisher information per
   individual and A⁰ pilot variances (moments of y), is the share of the data in the
   component's conditional precision.
3. **A shear of the latent coordinates along the hyperparameters** (``shear=True``, off by
   default). v = ε + D (h − h⁰), h the hyperparameters (β, log σ_a) and
   D = −diag(H_vv)⁻¹ H_vh from the Hessian of the log posterior at the pilot point. The
   Jacobian is one. For binary traits log σ_a given ε is otherwise pinned by the latent
   values (conditional SD ~5× below the marginal one at n = 1000); the shear removes that
   coupling to first order near the pilot, and only there: it helps when the pilot is
   close to the posterior and hurts when it is not, so it stays opt-in.

Defaults: Poisson gets the merged effect and partial non-centring (pilot variances from the
moments of y); binomial families the non-centred form (w = 0), the most robust of the
parametrisations measured on binary traits (a fixed pilot has no moment estimate to go on).

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
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize, special

from bayeslmm.engines.bayes.builder import LINK_VARIANCE, fixed_effects_prior
from bayeslmm.engines.bayes.spectral_density import positive_log_prior

LOG_2PI = math.log(2.0 * math.pi)


@dataclass(eq=False)
class GLMMDensity:
    """Log posterior and gradient of y ~ X + (1 | g) with a kinship effect, for nutpie.

    Coordinates x = (β (p), log σ_a, [log σ_o], ε (r)): β as the builder samples it
    (``beta_centered`` with the centred design when there is an intercept and covariates),
    σ_a the kinship SD, σ_o the observation-level SD (Poisson, merged), ε the sheared,
    partially non-centred latent coordinates of the effect in the eigenbasis (r basis
    vectors). Build it with :func:`glmm_density`.
    """

    family: str
    link: str
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
    weights: np.ndarray = field(default_factory=lambda: np.zeros(0))
    anchor: np.ndarray = field(default_factory=lambda: np.zeros(0))
    shear: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.vectors_t = np.ascontiguousarray(self.vectors.T)
        if self.weights.size == 0:
            self.weights = np.zeros(self.n_basis)
        if self.anchor.size == 0:
            self.anchor = np.zeros(self.n_hyper)
            self.shear = np.zeros((self.n_hyper, self.n_basis))

    # -- sizes ---------------------------------------------------------------------------
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
    def ndim(self) -> int:
        return self.n_hyper + self.n_basis

    # -- pieces --------------------------------------------------------------------------
    def _component_variances(self, h: np.ndarray) -> tuple[float, float, np.ndarray]:
        p = self.n_fixed
        var_a = math.exp(2.0 * float(h[p]))
        var_o = math.exp(2.0 * float(h[p + 1])) if self.olre else 0.0
        return var_a, var_o, var_a * self.eigenvalues + var_o

    def _levels(self, c: np.ndarray) -> np.ndarray:
        """Effect per level U c (in the eigenvectors' precision, returned as float64)."""
        return (self.vectors @ c.astype(self.vectors.dtype)).astype(float)

    def _to_basis(self, g_levels: np.ndarray) -> np.ndarray:
        return (self.vectors_t @ g_levels.astype(self.vectors.dtype)).astype(float)

    def loglik_grad(self, eta: np.ndarray) -> tuple[float, np.ndarray]:
        """Log-likelihood (normalising constants left out) and its gradient in η."""
        y, n = self.y, self.trials
        if self.family == "poisson":
            mu = np.exp(eta)
            return float(y @ eta - mu.sum()), y - mu
        if self.link == "logit":
            value = float(y @ eta - n @ np.logaddexp(0.0, eta))
            return value, y - n * special.expit(eta)
        log_p, log_q = special.log_ndtr(eta), special.log_ndtr(-eta)
        log_phi = -0.5 * eta * eta - 0.5 * LOG_2PI
        value = float(y @ log_p + (n - y) @ log_q)
        return value, y * np.exp(log_phi - log_p) - (n - y) * np.exp(log_phi - log_q)

    def fisher_weights(self, eta: np.ndarray) -> np.ndarray:
        """Expected information per observation, −E ∂²log p/∂η² (used for pilots only)."""
        if self.family == "poisson":
            return np.exp(eta)
        if self.link == "logit":
            p = special.expit(eta)
            return self.trials * p * (1.0 - p)
        phi = np.exp(-0.5 * eta * eta - 0.5 * LOG_2PI)
        p = np.clip(special.ndtr(eta), 1e-12, 1 - 1e-12)
        return self.trials * phi * phi / (p * (1.0 - p))

    def latent(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(v, c, A): partially non-centred v, the effect c in the eigenbasis, variances A."""
        k = self.n_hyper
        h = x[:k]
        v = x[k:] + (h - self.anchor) @ self.shear
        _, _, A = self._component_variances(h)
        c = np.exp(0.5 * (1.0 - self.weights) * np.log(A)) * v
        return v, c, A

    # -- density -------------------------------------------------------------------------
    def logp(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """Log posterior density at x (with the log-transforms' Jacobians) and its gradient."""
        p, k, w = self.n_fixed, self.n_hyper, self.weights
        h = x[:k]
        beta = h[:p]
        v = x[k:] + (h - self.anchor) @ self.shear
        var_a, var_o, A = self._component_variances(h)
        log_a = 0.5 * np.log(A)
        scale_c = np.exp((1.0 - w) * log_a)
        prec_v = np.exp(-2.0 * w * log_a)
        c = scale_c * v
        eta = self.offset + self.design @ beta + self._levels(c)[self.index]
        loglik, g_eta = self.loglik_grad(eta)
        g_c = self._to_basis(np.bincount(self.index, g_eta, minlength=self.vectors.shape[0]))
        resid_b = (beta - self.beta_mu) / self.beta_sd
        value = (
            loglik
            - 0.5 * float((v * v) @ prec_v)
            - float(w @ log_a)
            - 0.5 * float(resid_b @ resid_b)
            + self.log_normaliser
        )
        grad = np.empty_like(x)
        grad[:p] = self.design.T @ g_eta - resid_b / self.beta_sd
        d_log_a = (1.0 - w) * c * g_c + w * (v * v * prec_v - 1.0)
        pa, dpa = self.prior_a(float(h[p]))
        value += pa + float(h[p])  # prior of σ_a and the Jacobian of log σ_a
        grad[p] = float(d_log_a @ (var_a * self.eigenvalues / A)) + dpa + 1.0
        if self.olre:
            po, dpo = self.prior_o(float(h[p + 1]))
            value += po + float(h[p + 1])
            grad[p + 1] = float(d_log_a @ (var_o / A)) + dpo + 1.0
        grad_v = scale_c * g_c - v * prec_v
        grad[:k] += self.shear @ grad_v
        grad[k:] = grad_v
        return value, grad

    # -- draws ---------------------------------------------------------------------------
    def expand(self, x: np.ndarray, rng: np.random.Generator | None = None) -> dict[str, Any]:
        """The PyMC model's variables at x (free and deterministic, same names and shapes).

        For the merged Poisson effect, the split of c = a + e into the kinship effect a and
        the observation-level effect e is drawn from a | c (needs ``rng``).
        """
        meta, p, g = self.meta, self.n_fixed, self.group
        h = x[: self.n_hyper]
        beta_s = np.array(h[:p], dtype=float)
        var_a, var_o, A = self._component_variances(h)
        _, c, _ = self.latent(x)
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
            share = var_a * s / A
            a = share * c + np.sqrt(share * var_o) * rng.standard_normal(s.size)
            e_obs = self._levels(c - a)[self.index]
            out["sd_olre"] = math.sqrt(var_o)
            out["z_olre"] = e_obs / math.sqrt(var_o)
            out["var_olre"] = var_o
        else:
            a = c
        out[f"sd_{g}"] = math.sqrt(var_a)
        out[f"var_{g}"] = var_a
        out[f"z_{g}"] = (a / np.sqrt(var_a * s))[:, None]
        out[f"u_{g}"] = self._levels(a)[:, None]
        if self.family == "poisson":
            eta_fixed = self.offset + self.design @ beta_s
            lam = float(np.mean(np.exp(eta_fixed))) * math.exp(0.5 * (var_a + var_o))
            var_residual = math.log1p(1.0 / lam) + var_o
        else:
            var_residual = LINK_VARIANCE[self.link]
        out["var_residual"] = var_residual
        shares = np.array([var_a, var_residual]) / (var_a + var_residual)
        out["variance_share"] = shares
        if meta.get("h2"):
            out["h2"] = shares[0]
        return {k: np.asarray(v, dtype=float) for k, v in out.items()}

    def initial_point(self, seed: int) -> np.ndarray:
        """The pilot point, hyperparameters jittered by U(−1, 1) as PyMC jitters, ε near 0."""
        rng = np.random.default_rng(seed)
        x = np.zeros(self.ndim)
        x[: self.n_hyper] = self.anchor + rng.uniform(-1.0, 1.0, self.n_hyper)
        x[self.n_hyper :] = rng.uniform(-0.1, 0.1, self.n_basis)
        return x


def glmm_closed_form_applies(built: Any) -> bool:
    """True for a latent GLMM the closed form covers, left as the builder made it.

    Covered: Poisson (log) with or without the observation-level effect, Bernoulli and
    binomial (logit, probit); fixed effects with normal priors; one intercept-only random
    term with a kinship matrix and an SD prior (not the share parametrisation). The
    observation-level effect is merged only with one record per individual and the full
    eigenbasis (no ``rank_share`` truncation); otherwise the PyMC graph is sampled.
    """
    spec = built.spec
    if built.strategy != "latent" or spec.family.is_gaussian or len(spec.terms) != 1:
        return False
    term = spec.terms[0]
    if term.kinship is None or term.n_coef != 1 or np.any(np.asarray(term.design) != 1.0):
        return False
    model, g = built.model, term.group
    names = {v.name for v in model.free_RVs + model.deterministics}
    expected = set(_variable_names(built))
    if names != expected or model.potentials or len(model.observed_RVs) != 1:
        return False
    if built.priors.sd_olre is not None:
        full = len(model.coords[f"{g}_basis"]) == term.n_levels == spec.n_obs
        one_each = np.array_equal(np.sort(np.asarray(term.index)), np.arange(term.n_levels))
        return full and one_each
    return True


def _variable_names(built: Any) -> list[str]:
    spec, g = built.spec, built.spec.terms[0].group
    names = [f"sd_{g}", f"z_{g}", f"var_{g}", f"u_{g}", "var_residual", "variance_share"]
    if spec.fixed_names:
        names.append("beta")
        if len(spec.fixed_names) > 1 and "Intercept" in spec.fixed_names:
            names.append("beta_centered")
    if built.priors.sd_olre is not None:
        names += ["sd_olre", "z_olre", "var_olre"]
    if built.h2_term is not None:
        names.append("h2")
    return names


def glmm_density(built: Any, dtype: str = "float32", shear: bool = False) -> GLMMDensity:
    """The closed-form log posterior of a built latent kinship GLMM, with its pilots.

    Parameters
    ----------
    built : BuiltModel
        A latent-strategy GLMM that :func:`glmm_closed_form_applies` accepts.
    dtype : {"float32", "float64"}
        Precision of the eigenvectors in the two mat-vecs per gradient.
    shear : bool
        Shear the latent coordinates along the hyperparameters, anchored at the pilot
        (off by default: on the n = 1000 benchmark's binary trait it raised the ESS of σ_a²
        ~8×, but on a trait whose posterior sits near σ_a² = 0 it lowered it 4×, and for
        Poisson it lowered it; see docs/bayesian.md).

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
    >>> logp, grad = density.logp(density.initial_point(1))
    >>> grad.shape == (density.ndim,)
    True
    """
    if not glmm_closed_form_applies(built):
        raise ValueError(
            "The closed-form GLMM density does not cover this model (see "
            "glmm_closed_form_applies); sample the PyMC model instead."
        )
    spec, priors = built.spec, built.priors
    term = spec.terms[0]
    g = term.group
    r = len(built.model.coords[f"{g}_basis"])
    values, vectors = term.kinship.low_rank(1.0)
    values, vectors = np.asarray(values[:r], dtype=float), vectors[:, :r]
    y = np.asarray(spec.y, dtype=float)
    n = y.size
    fam = spec.family
    trials = np.asarray(spec.trials, dtype=float) if spec.trials is not None else np.ones(n)
    offset = np.zeros(n) if spec.offset is None else np.asarray(spec.offset, dtype=float)
    fe = fixed_effects_prior(spec, priors)
    meta: dict[str, Any] = {"h2": built.h2_term is not None, "components": tuple(built.components)}
    if fe is None:
        design, mu, sd = np.zeros((n, 0)), np.zeros(0), np.ones(0)
    else:
        design, mu, sd = fe.design, np.asarray(fe.mu, float), np.asarray(fe.sd, float)
        meta.update(beta_name=fe.sampled_name, intercept=fe.intercept, means=fe.means)
    olre = priors.sd_olre is not None
    # the normalising constants the PyMC model's logp carries
    const = -0.5 * (r + mu.size) * LOG_2PI - float(np.log(sd).sum())
    if fam.name == "poisson":
        const -= float(special.gammaln(y + 1.0).sum())
    elif fam.name == "binomial":
        const += float(
            (
                special.gammaln(trials + 1)
                - special.gammaln(y + 1)
                - special.gammaln(trials - y + 1)
            ).sum()
        )
    density = GLMMDensity(
        family=fam.name if fam.name == "poisson" else "binomial",
        link=fam.link,
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
        meta=meta,
    )
    return _with_pilots(density, shear)


def _with_pilots(density: GLMMDensity, shear: bool) -> GLMMDensity:
    """Pilot point, partial non-centring weights and (optionally) the shear."""
    p, k = density.n_fixed, density.n_hyper
    # β: MAP of the GLM without the random effect (a few damped Newton steps)
    beta = density.beta_mu.copy()
    X, prec = density.design, 1.0 / density.beta_sd**2
    for _ in range(25):
        eta = density.offset + X @ beta
        _, g_eta = density.loglik_grad(eta)
        W = density.fisher_weights(eta)
        step = (
            np.linalg.solve(
                (X.T * W) @ X + np.diag(prec), X.T @ g_eta - prec * (beta - density.beta_mu)
            )
            if p
            else beta
        )
        beta = beta + np.clip(step, -2.0, 2.0)
        if not p or np.max(np.abs(step)) < 1e-8:
            break
    eta = density.offset + X @ beta
    # pilot variances: moments of the response on the log scale (Poisson), 1 (binomial)
    if density.family == "poisson":
        mean = float(np.mean(np.exp(eta)))
        y = density.y
        total = math.log1p(max(float(np.var(y)) - float(y.mean()), 1e-3 * y.mean()) / mean**2)
        var_a = var_o = 0.5 * total if density.olre else total
    else:
        var_a, var_o = 1.0, 0.0
    anchor = np.concatenate(
        [beta, [0.5 * math.log(var_a)], [0.5 * math.log(var_o)] if density.olre else []]
    )
    density.anchor = anchor
    _set_weights(density, var_a * density.eigenvalues + var_o)
    density.shear = np.zeros((k, density.n_basis))
    if shear:
        density.shear = _shear(density)
    elif density.family != "poisson":
        # binary traits: the non-centred form; partial non-centring from the fixed pilot
        # σ_a² = 1 mixed 10x worse than it when the posterior sits near σ_a² = 0
        density.weights = np.zeros(density.n_basis)
    return density


def _set_weights(density: GLMMDensity, prior_variances: np.ndarray) -> None:
    """w_j = I A_j / (1 + I A_j), I the mean Fisher information per level at the anchor."""
    p = density.n_fixed
    eta = density.offset + density.design @ density.anchor[:p]
    info_levels = np.bincount(
        density.index, density.fisher_weights(eta), minlength=density.vectors.shape[0]
    )
    info = float(np.mean(info_levels))
    density.weights = info * prior_variances / (1.0 + info * prior_variances)


def _shear(density: GLMMDensity) -> np.ndarray:
    """D = −diag(H_vv)⁻¹ H_vh at the pilot hyperparameters and the conditional mode of v."""
    k = density.n_hyper
    h0 = density.anchor

    def negative(v: np.ndarray) -> tuple[float, np.ndarray]:
        value, grad = density.logp(np.concatenate([h0, v]))
        return -value, -grad[k:]

    mode = optimize.minimize(
        negative, np.zeros(density.n_basis), jac=True, method="L-BFGS-B", options={"maxiter": 200}
    ).x
    x0 = np.concatenate([h0, mode])
    _, c, A = density.latent(x0)
    w = density.weights
    eta = (
        density.offset + density.design @ h0[: density.n_fixed] + density._levels(c)[density.index]
    )
    W_levels = np.bincount(
        density.index, density.fisher_weights(eta), minlength=density.vectors.shape[0]
    )
    vec = density.vectors.astype(float)
    scale_c = np.exp(0.5 * (1.0 - w) * np.log(A))
    h_vv = -(scale_c**2 * ((vec * vec).T @ W_levels) + np.exp(-w * np.log(A)))
    step = 1e-5
    D = np.empty((k, density.n_basis))
    for i in range(k):
        e = np.zeros(x0.size)
        e[i] = step
        h_vi = (density.logp(x0 + e)[1][k:] - density.logp(x0 - e)[1][k:]) / (2.0 * step)
        D[i] = -h_vi / h_vv
    return D


def nutpie_model(density: GLMMDensity, coords: dict[str, Any]) -> Any:
    """A nutpie model that samples ``density`` and stores the PyMC model's variables.

    ``coords`` are the built model's coordinates (levels, basis, fixed-effect names).
    """
    from nutpie.compiled_pyfunc import from_pyfunc

    g = density.group
    dims_of = {
        "beta": ("fixed",),
        "beta_centered": ("fixed",),
        "variance_share": ("component",),
        f"z_{g}": (f"{g}_basis", f"{g}_coef"),
        f"u_{g}": (f"{g}_level", f"{g}_coef"),
        "z_olre": ("obs",),
    }
    sample = density.expand(density.initial_point(0), np.random.default_rng(0))
    names = list(sample)
    shapes = [sample[nm].shape for nm in names]
    dims = {nm: dims_of[nm] for nm in names if nm in dims_of}
    used = {d for dd in dims.values() for d in dd}

    def make_expand(seed1: int, seed2: int, chain: int):
        rng = np.random.default_rng([seed1, seed2, chain])
        return lambda x: density.expand(x, rng)

    return from_pyfunc(
        ndim=density.ndim,
        make_logp_fn=lambda: density.logp,
        make_expand_fn=make_expand,
        expanded_dtypes=[np.dtype("float64")] * len(names),
        expanded_shapes=shapes,
        expanded_names=names,
        coords={d: pd.Index(coords[d]) for d in used if d in coords},
        dims=dims,
        make_initial_point_fn=density.initial_point,
    )
