"""The latent GLMM's log posterior with several intercept-only terms, written out for nutpie.

:mod:`bayeslmm.engines.bayes.glmm_density` covers one kinship term (merging Poisson's
observation-level effect into it, conditional centring for binary traits). This module
covers the rest of the intercept-only latent GLMMs the builder writes:

    η = offset + X β + Σ_k Z_k U_k c_k (+ e),   c_k ~ N(0, σ_k² S_k),   e ~ N(0, σ_o² I)

with any number of terms, each a kinship term (U_k S_k U_kᵀ = K_k, the builder's basis,
``rank_share`` truncation included) or an iid factor (U_k = I, S_k = I), repeated records
per level, and the observation-level effect as one more iid term with a level per record
(not merged: with several terms or repeated records a + e is not diagonal in one basis).
It is the *same* posterior as the PyMC model (tested equal to its ``logp`` up to the
Jacobian of the change of variables below); each gradient costs one mat-vec with U_k and one
with U_kᵀ per kinship term and a gather / scatter (``bincount``) per iid term: numpy only,
nothing compiled per data set or per process.

**Partial non-centring per component** (Papaspiliopoulos, Roberts & Sköld 2007):
c_kj = A_kj^((1−w_kj)/2) v_kj with A_kj = σ_k² s_kj, so that the PyMC model's
z_kj = c_kj/√A_kj = A_kj^(−w_kj/2) v_kj. w = 0 is the non-centred form (the PyMC model's);
w → 1 the centred one. The weight of a component is its share of information under a
Gaussian surrogate, w = I A⁰/(1 + I A⁰), with A⁰ the pilot prior variance and I the Fisher
information the records carry about that component, I_kj = Σ_levels U_kj² Σ_{records}
I_i: a level seen in many records (or a count with a large mean) is pinned by the data and
sampled nearly centred, a level seen once nearly non-centred. With an observation-level
effect of pilot variance σ_o⁰², a record's information about any other term is that of a
Gaussian observation with the extra noise, I_i / (1 + I_i σ_o⁰²); the observation-level
effect itself gets the record's own information I_i. The information and pilot variances
come from the GLM fit of the fixed effects and, for Poisson, the moments of y (the latent
variance ln(1 + (Var y − E y)/λ̄²) split equally between the terms); binomial families have
no moment pilot and are sampled non-centred (w = 0, as in the one-term density).

The weights only decide how well NUTS' diagonal mass matrix fits; the posterior is exact for
any weights (the change of variables and its Jacobian are in the density).

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

from bayeslmm.engines.bayes.fixed_effects import fixed_effects_prior
from bayeslmm.engines.bayes.spectral_density import positive_log_prior
from bayeslmm.engines.bayes.terms import sd_prior_for
from bayeslmm.families import Family

LOG_2PI = math.log(2.0 * math.pi)


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

    def __post_init__(self) -> None:
        self.log_s = np.log(self.eigenvalues)
        if self.vectors is not None:
            self.vectors_t = np.ascontiguousarray(self.vectors.T)
        if self.weights.size == 0:
            self.weights = np.zeros(self.n_basis)

    @property
    def n_basis(self) -> int:
        return self.eigenvalues.size

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


@dataclass(eq=False)
class MultiTermDensity:
    """Log posterior and gradient of an intercept-only latent GLMM with several terms.

    Coordinates x = (β (p), log σ_1 … log σ_K, v_1 … v_K), β as the builder samples it
    (``beta_centered`` with the centred design when there is an intercept and covariates),
    one log SD per block (terms in formula order, then the observation-level effect), v_k
    the block's latent coordinates under partial non-centring. Build it with
    :func:`multiterm_density`.
    """

    family: Family
    y: np.ndarray
    trials: np.ndarray
    offset: np.ndarray
    design: np.ndarray
    beta_mu: np.ndarray
    beta_sd: np.ndarray
    blocks: list[LatentBlock]
    log_normaliser: float
    olre: bool
    pilot: np.ndarray = field(default_factory=lambda: np.zeros(0))
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._loglik_kernel = self.family.loglik_kernel
        starts = np.cumsum([0] + [b.n_basis for b in self.blocks])
        self._slices = [
            slice(self.n_hyper + int(a), self.n_hyper + int(b))
            for a, b in zip(starts[:-1], starts[1:], strict=True)
        ]
        if self.pilot.size == 0:
            self.pilot = np.zeros(self.n_hyper)

    @property
    def n_fixed(self) -> int:
        return self.design.shape[1]

    @property
    def n_hyper(self) -> int:
        return self.n_fixed + len(self.blocks)

    @property
    def ndim(self) -> int:
        return self.n_hyper + sum(b.n_basis for b in self.blocks)

    def _block_latent(
        self, block: LatentBlock, t: float, v: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(c, z, ∂c/∂v, ∂z/∂v) at log σ = t."""
        log_a = 2.0 * t + block.log_s
        w = block.weights
        to_c = np.exp(0.5 * (1.0 - w) * log_a)
        to_z = np.exp(-0.5 * w * log_a)
        return to_c * v, to_z * v, to_c, to_z

    def latent(self, x: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """(c, z) per block: the effect in its basis and the PyMC model's z."""
        p = self.n_fixed
        out = []
        for k, (block, sl) in enumerate(zip(self.blocks, self._slices, strict=True)):
            c, z, _, _ = self._block_latent(block, float(x[p + k]), x[sl])
            out.append((c, z))
        return out

    def log_jacobian(self, x: np.ndarray) -> float:
        """log |∂z/∂v| = −½ Σ w log A: the change of variables from the PyMC model's z."""
        p = self.n_fixed
        total = 0.0
        for k, block in enumerate(self.blocks):
            log_a = 2.0 * float(x[p + k]) + block.log_s
            total -= 0.5 * float(block.weights @ log_a)
        return total

    def logp(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """Log posterior density at x (with the Jacobians) and its gradient."""
        p = self.n_fixed
        beta = x[:p]
        eta = self.offset + self.design @ beta
        parts = []
        for k, (block, sl) in enumerate(zip(self.blocks, self._slices, strict=True)):
            c, z, to_c, to_z = self._block_latent(block, float(x[p + k]), x[sl])
            eta = eta + block.gather(block.to_levels(c))
            parts.append((c, z, to_c, to_z))
        loglik, g_eta = self._loglik_kernel(self.y, eta, self.trials)
        resid_b = (beta - self.beta_mu) / self.beta_sd
        value = loglik - 0.5 * float(resid_b @ resid_b) + self.log_normaliser
        grad = np.empty_like(x)
        grad[:p] = self.design.T @ g_eta - resid_b / self.beta_sd
        for k, (block, sl, (c, z, to_c, to_z)) in enumerate(
            zip(self.blocks, self._slices, parts, strict=True)
        ):
            t = float(x[p + k])
            w = block.weights
            gc = block.to_basis(block.scatter(g_eta))  # ∂loglik/∂c
            log_a = 2.0 * t + block.log_s
            pt, dpt = block.prior(t)
            value += -0.5 * float(z @ z) - 0.5 * float(w @ log_a) + pt + t
            # c = e^((1−w) t) (…) and z = e^(−w t) (…): ∂c/∂t = (1−w) c, ∂z/∂t = −w z
            grad[p + k] = (
                float(((1.0 - w) * c) @ gc) + float(w @ (z * z)) - float(w.sum()) + dpt + 1.0
            )
            grad[sl] = gc * to_c - z * to_z
        return value, grad

    # -- draws ---------------------------------------------------------------------------
    def expand(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """The PyMC model's variables at x (free and deterministic, same names, shapes)."""
        meta, p = self.meta, self.n_fixed
        beta_s = x[:p]
        out: dict[str, Any] = {}
        if p:
            out[meta["beta_name"]] = beta_s
            if meta["beta_name"] != "beta":
                beta = beta_s.copy()
                beta[meta["intercept"]] -= beta_s @ meta["means"]
                out["beta"] = beta
        var_terms, share_vars, var_o = [], [], 0.0
        for k, (block, (c, z)) in enumerate(zip(self.blocks, self.latent(x), strict=True)):
            sd = math.exp(float(x[p + k]))
            if self.olre and k == len(self.blocks) - 1:
                var_o = sd * sd
                out["sd_olre"] = sd
                out["z_olre"] = z
                out["var_olre"] = var_o
                continue
            g = block.name
            out[f"sd_{g}"] = sd
            out[f"z_{g}"] = z[:, None]
            out[f"var_{g}"] = sd * sd * block.unit_weight
            out[f"u_{g}"] = block.to_levels(c)[:, None]
            var_terms.append(sd * sd * block.unit_weight)
            share_vars.append(sd * sd * block.share_weight)
        eta_fixed = self.offset + self.design @ beta_s
        var_residual = self.family.latent_residual_variance(eta_fixed, sum(var_terms), var_o)
        out["var_residual"] = var_residual
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
    and binomial, logit or probit) whose random terms are all intercept-only (kinship or
    iid, any number, repeated records, ``rank_share``), with or without the
    observation-level effect, normal priors on the fixed effects, SD priors with closed-form
    densities, and the PyMC model left as the builder made it.

    Examples
    --------
    >>> import pandas as pd, bayeslmm as bl
    >>> from bayeslmm.engines.bayes import build
    >>> df = pd.DataFrame({"y": [0, 1, 1, 0], "g": ["a", "a", "b", "b"], "x": [0, 1, 0, 1.0]})
    >>> spec = bl.specify("y ~ 1 + (1 + x || g)", df, family="bernoulli")
    >>> multiterm_obstacles(build(spec, strategy="latent"))
    ['term (1 + x||g) has slopes (one latent field per coefficient is not written out)']
    """
    spec = built.spec
    if built.strategy != "latent":
        return [f"strategy {built.strategy!r}, not 'latent'"]
    fam = spec.family
    if fam.glmm_density_parametrisation is None:
        return [f"family {fam.name} ({fam.link}) has no closed-form GLMM density"]
    reasons = [
        f"term ({t.label}) has slopes (one latent field per coefficient is not written out)"
        for t in spec.terms
        if t.n_coef != 1 or np.any(np.asarray(t.design) != 1.0)
    ]
    if reasons:
        return reasons
    model = built.model
    names = {v.name for v in model.free_RVs + model.deterministics}
    if names != set(_variable_names(built)) or model.potentials or len(model.observed_RVs) != 1:
        return ["the PyMC model was changed after building (or uses the share priors)"]
    sd_priors = [built.priors.sd[t.group] for t in spec.terms] + [built.priors.sd_olre]
    if not all(p.has_closed_form for p in sd_priors if p is not None):
        return ["an SD prior has no closed-form density"]
    return []


def _variable_names(built: Any) -> list[str]:
    spec = built.spec
    names = ["var_residual", "variance_share"]
    for t in spec.terms:
        g = t.group
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


def multiterm_density(
    built: Any, dtype: str = "float32", weights: str = "auto"
) -> MultiTermDensity:
    """The closed-form log posterior of a built intercept-only latent GLMM, with pilots.

    Parameters
    ----------
    built : BuiltModel
        A latent-strategy GLMM that :func:`multiterm_obstacles` accepts.
    dtype : {"float32", "float64"}
        Precision of the kinship eigenvectors in the mat-vecs.
    weights : {"auto", "noncentred"}
        ``"auto"``: partial non-centring weights from the information (module notes);
        ``"noncentred"``: w = 0 everywhere, the PyMC model's own coordinates.

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
    >>> [b.name for b in density.blocks]
    ['a', 'b', 'olre']
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
    if weights not in ("auto", "noncentred"):
        raise ValueError(f"weights must be 'auto' or 'noncentred'; got {weights!r}.")
    spec, priors = built.spec, built.priors
    fam = spec.family
    y = np.asarray(spec.y, dtype=float)
    n = y.size
    trials = np.asarray(spec.trials, dtype=float) if spec.trials is not None else np.ones(n)
    offset = np.zeros(n) if spec.offset is None else np.asarray(spec.offset, dtype=float)
    fe = fixed_effects_prior(spec, priors)
    meta: dict[str, Any] = {"h2_index": None}
    if built.h2_term is not None:
        meta["h2_index"] = list(built.components).index(built.h2_term)
    if fe is None:
        design, mu, sd = np.zeros((n, 0)), np.zeros(0), np.ones(0)
    else:
        design, mu, sd = fe.design, np.asarray(fe.mu, float), np.asarray(fe.sd, float)
        meta.update(beta_name=fe.sampled_name, intercept=fe.intercept, means=fe.means)
    blocks = []
    for term in spec.terms:
        g = term.group
        index = np.asarray(term.index, dtype=np.intp)
        if np.array_equal(index, np.arange(term.n_levels)):
            index = None
        if term.kinship is not None:
            r = len(built.model.coords[f"{g}_basis"])
            root = term.kinship.root()
            values = np.asarray(root.values[:r], dtype=float)
            vectors = np.ascontiguousarray(root.vectors[:, :r], dtype=dtype)
        else:
            values, vectors = np.ones(term.n_levels), None
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
            )
        )
    olre = priors.sd_olre is not None
    if olre:
        blocks.append(
            LatentBlock(
                name="olre",
                n_levels=n,
                index=None,
                eigenvalues=np.ones(n),
                vectors=None,
                prior=positive_log_prior(priors.sd_olre),
            )
        )
    n_latent = sum(b.n_basis for b in blocks)
    # the normalising constants the PyMC model's logp carries
    const = -0.5 * (n_latent + mu.size) * LOG_2PI - float(np.log(sd).sum())
    const += float(fam.log_constant(y, trials).sum())
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
    density.pilot = np.concatenate([beta, 0.5 * np.log(var0)])
    if weights == "auto" and info is not None:
        _set_weights(density, var0, info)
    return density


def _pilot(density: MultiTermDensity) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(β̂, pilot variance per block, information per record or None).

    β̂: a few damped Newton steps for the GLM without random effects. Variances: the
    family's moment estimate of the latent variance (Poisson) split equally between the
    blocks; else 1 and no information (binomial: the weights stay 0).
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
    return beta, np.full(k, total / k), density.trials * fam.information(eta)[0]


def _set_weights(density: MultiTermDensity, var0: np.ndarray, info: np.ndarray) -> None:
    """w = I A⁰/(1 + I A⁰) per component (module notes)."""
    blocks = density.blocks
    if density.olre:
        # the information about any other term through a record with its own latent noise
        info_terms = info / (1.0 + info * var0[-1])
    else:
        info_terms = info
    for k, block in enumerate(blocks):
        own = info if (density.olre and k == len(blocks) - 1) else info_terms
        per_level = block.scatter(own)
        if block.vectors is None:
            info_c = per_level
        else:
            U = block.vectors.astype(float)
            info_c = (U * U).T @ per_level
        a0 = var0[k] * block.eigenvalues
        block.weights = info_c * a0 / (1.0 + info_c * a0)


def nutpie_model(density: MultiTermDensity, coords: dict[str, Any]) -> Any:
    """A nutpie model that samples ``density`` and stores the PyMC model's variables.

    ``coords`` are the built model's coordinates (levels, basis, fixed-effect names).
    """
    from nutpie.compiled_pyfunc import from_pyfunc

    dims_of: dict[str, tuple[str, ...]] = {
        "beta": ("fixed",),
        "beta_centered": ("fixed",),
        "variance_share": ("component",),
        "z_olre": ("obs",),
    }
    for block in density.blocks[: len(density.blocks) - int(density.olre)]:
        g = block.name
        basis = f"{g}_basis" if block.vectors is not None else f"{g}_level"
        dims_of[f"z_{g}"] = (basis, f"{g}_coef")
        dims_of[f"u_{g}"] = (f"{g}_level", f"{g}_coef")
    sample = density.expand(density.initial_point(0))
    names = list(sample)
    shapes = [sample[nm].shape for nm in names]
    dims = {nm: dims_of[nm] for nm in names if nm in dims_of}
    used = {d for dd in dims.values() for d in dd}

    def make_expand(seed1: int, seed2: int, chain: int):
        return density.expand

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
