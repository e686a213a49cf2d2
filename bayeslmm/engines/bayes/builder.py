"""Write a :class:`pymc.Model` from a :class:`~bayeslmm.spec.ModelSpec`.

Two strategies, one set of parameter names:

``"spectral"`` (Gaussian, one intercept-only kinship term, homoscedastic residual)
    The relationship matrix of the observations, V_g = Z K Zᵀ = U S Uᵀ, is diagonalised once
    outside the graph, so that Uᵀy | β, θ ~ N(Aβ, D) with A = UᵀX and D = σ_g² S + σ_e² I
    diagonal. By default (``fixed_effects="marginal"``) β ~ N(μ_β, Σ_β) is integrated out
    analytically: Uᵀy | θ ~ N(Aμ_β, D + A Σ_β Aᵀ), evaluated with the Woodbury identity and
    the matrix determinant lemma in O(n p²) (one p × p Cholesky factor, never an n × n
    matrix). Only the variances are sampled; β and the breeding values are drawn afterwards
    from their exact conditionals β | y, θ and u | y, β, θ
    (:mod:`bayeslmm.engines.bayes.conditional`). Marginalising β removes the funnel between
    the intercept and σ_e that a centred GRM (K·1 = 0) otherwise creates: the intercept is
    then informed only by the zero-eigenvalue direction, whose variance is σ_e² alone.
    ``fixed_effects="joint"`` samples β with the variances instead (the product of n
    independent normals, O(n) per gradient).

``"latent"`` (everything else)
    Non-centred random effects u = U √S z L_Σᵀ with z ~ N(0, I) (q × m), U √S the (optionally
    truncated) eigenbasis of K and L_Σ the Cholesky factor of the m × m covariance of the
    term's coefficients; iid terms use u = z L_Σᵀ. No Cholesky or inverse of K is ever inside
    the sampled graph.

Names in the model (``g`` = grouping factor, e.g. ``id``)
---------------------------------------------------------
free:           ``beta`` (or ``beta_centered`` when the covariates are centred, see below;
                in the spectral strategy only with ``fixed_effects="joint"``: by default
                both are drawn after sampling by
                :func:`~bayeslmm.engines.bayes.conditional.add_posthoc_draws`),
                ``sd_g`` (scalar, or dims ``g_coef``), ``chol_g`` (correlated slopes),
                ``sigma``, ``sigma_coef`` (log-σ regression), ``z_g``, ``sd_olre``, ``z_olre``,
                ``h2`` / ``shares`` and ``total_sd`` / ``total_variance`` (share parametrisation)
deterministic:  ``beta`` (dims ``fixed``), ``var_g``, ``cov_g``/``corr_g`` (slopes),
                ``u_g`` (latent; dims ``g_level, g_coef``), ``var_residual``,
                ``variance_share`` (dims ``component``), ``h2`` (one kinship term)
observed:       the response (dims ``obs``), or ``<response>_rotated`` (dims ``eigen``) for the
                spectral strategy.

The intercept is sampled at centred covariates (``beta_centered``), which decorrelates it
from the slopes and matches the intercept prior of :mod:`bayeslmm.priors`; ``beta`` is the
usual uncentred vector.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from bayeslmm.errors import SpecificationError
from bayeslmm.priors import Prior, PriorSet, resolve_priors
from bayeslmm.spec import ModelSpec, RandomTerm

if TYPE_CHECKING:
    import pymc as pm

STRATEGIES = ("auto", "spectral", "latent", "laplace")

#: How the spectral strategy treats β: integrated out (default) or sampled with θ.
FIXED_EFFECTS = ("marginal", "joint")

# Eigendecompositions of Z K Zᵀ, one per RandomTerm object (RandomTerm is frozen, eq=False,
# so it hashes by identity); recomputed never while the term lives.
_ROTATION_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass(frozen=True, eq=False)
class SpectralBasis:
    """The eigendecomposition V_g = Z K Zᵀ = U diag(values) Uᵀ of the observations' kinship.

    Attributes
    ----------
    values : ndarray, shape (n,)
        Eigenvalues (ascending, clipped at 0).
    vectors : ndarray, shape (n, n)
        Orthonormal eigenvectors.
    eigh_s : float
        Seconds the eigendecomposition took (when the Kinship's cached decomposition is
        reused, the seconds it took when the Kinship computed it).
    """

    values: np.ndarray
    vectors: np.ndarray
    eigh_s: float


def spectral_basis(term: RandomTerm) -> SpectralBasis:
    """Eigendecomposition of Z K Zᵀ for a kinship term, computed once per term.

    When each level has exactly one observation in level order (Z = I) the kinship's own
    cached eigendecomposition is reused.

    Examples
    --------
    >>> import numpy as np, pandas as pd, bayeslmm as bl
    >>> K = bl.Kinship(np.array([[1.0, 0.5], [0.5, 1.0]]), ["a", "b"])
    >>> df = pd.DataFrame({"y": [1.0, 2.0, 3.0], "id": ["a", "b", "b"]})
    >>> basis = spectral_basis(bl.specify("y ~ (1|id)", df, kinship={"id": K}).terms[0])
    >>> basis.values.round(3).tolist()
    [0.0, 0.634, 2.366]
    """
    if term.kinship is None:
        raise SpecificationError(f"Term ({term.label}) has no kinship to rotate by.")
    cached = _ROTATION_CACHE.get(term)
    if cached is not None:
        return cached
    start = time.perf_counter()
    if term.is_identity_incidence:
        values, vectors = term.kinship.eigenvalues, term.kinship.eigenvectors
        # the Kinship's cached decomposition, usually computed by its PSD check: report
        # the seconds it took then, not the ~0 s of reading the cache
        elapsed = term.kinship.__dict__.get("eigh_seconds", time.perf_counter() - start)
    else:
        Z = term.incidence()
        ZK = (Z @ term.kinship.matrix).astype(float)
        V = np.asarray(Z @ ZK.T).T
        V = 0.5 * (V + V.T)
        values, vectors = np.linalg.eigh(V)
        values = np.clip(values, 0.0, None)
        elapsed = time.perf_counter() - start
    basis = SpectralBasis(values=values, vectors=vectors, eigh_s=elapsed)
    _ROTATION_CACHE[term] = basis
    return basis


def choose_strategy(spec: ModelSpec, strategy: str = "auto") -> str:
    """Resolve ``"auto"`` to ``"spectral"`` or ``"latent"``; check a forced choice.

    Examples
    --------
    >>> import numpy as np, pandas as pd, bayeslmm as bl
    >>> df = pd.DataFrame({"y": [1.0, 2.0, 0.5, 1.5], "g": ["a", "a", "b", "b"]})
    >>> choose_strategy(bl.specify("y ~ 1 + (1 | g)", df))
    'latent'
    """
    if strategy not in STRATEGIES:
        raise SpecificationError(f"Unknown strategy '{strategy}'; choose one of {STRATEGIES}.")
    if strategy == "laplace":  # opt-in; checked by laplace_marginal.build_laplace
        return strategy
    reasons = spectral_obstacles(spec)
    if strategy == "auto":
        return "latent" if reasons else "spectral"
    if strategy == "spectral" and reasons:
        raise SpecificationError(
            "The spectral strategy needs a Gaussian model with exactly one random term, with a "
            f"kinship, intercept-only, and one residual variance; here: {'; '.join(reasons)}. "
            "Use strategy='latent'."
        )
    return strategy


def spectral_obstacles(spec: ModelSpec) -> list[str]:
    """Why the spectral strategy does not apply to ``spec`` (empty when it does)."""
    reasons = []
    if not spec.family.is_gaussian:
        reasons.append(f"family is {spec.family.name}")
    if len(spec.terms) != 1:
        reasons.append(f"{len(spec.terms)} random terms")
    elif spec.terms[0].kinship is None:
        reasons.append(f"term ({spec.terms[0].label}) has no kinship")
    elif not spec.terms[0].is_intercept_only:
        reasons.append(f"term ({spec.terms[0].label}) has slopes")
    if spec.sigma_X is not None:
        reasons.append("the residual variance has a model (sigma formula)")
    return reasons


@dataclass(eq=False)
class BuiltModel:
    """A built :class:`pymc.Model` together with what is needed to interpret its draws.

    Attributes
    ----------
    model : pymc.Model
    spec : ModelSpec
    strategy : str
        ``"spectral"`` or ``"latent"``.
    priors : PriorSet
    rotation : SpectralBasis or None
        The spectral strategy's eigenbasis.
    components : tuple of str
        Labels of the ``variance_share`` coordinate: the group of each random term and
        ``"residual"``.
    h2_term : str or None
        Group of the term whose share is reported as ``h2`` (the sole kinship term, when it
        is intercept-only), else None.
    observed_name : str
        Name of the observed variable in the model.
    timing : dict
        ``build_s`` and ``eigh_s``.
    marginal_fixed : MarginalFixedEffects or None
        Set when β is integrated out of the sampled model (spectral strategy, default):
        β is then drawn after sampling by
        :func:`~bayeslmm.engines.bayes.conditional.add_posthoc_draws`.
    """

    model: Any
    spec: ModelSpec
    strategy: str
    priors: PriorSet
    rotation: SpectralBasis | None
    components: tuple[str, ...]
    observed_name: str
    h2_term: str | None = None
    timing: dict[str, float] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)
    marginal_fixed: MarginalFixedEffects | None = None


def component_labels(spec: ModelSpec) -> tuple[str, ...]:
    """Labels of the variance components: each random term's group, then ``"residual"``.

    Examples
    --------
    >>> import numpy as np, pandas as pd, bayeslmm as bl
    >>> df = pd.DataFrame({"y": [1.0, 2.0, 0.5, 1.5], "g": ["a", "a", "b", "b"]})
    >>> component_labels(bl.specify("y ~ 1 + (1 | g)", df))
    ('g', 'residual')
    """
    return (*(t.group for t in spec.terms), "residual")


def h2_term(spec: ModelSpec) -> str | None:
    """The group whose variance share is called ``h2``: the sole kinship term, when it has
    a single coefficient (as in the REML engine); None otherwise.

    Examples
    --------
    >>> import numpy as np, pandas as pd, bayeslmm as bl
    >>> df = pd.DataFrame({"y": [1.0, 2.0, 0.5, 1.5], "g": ["a", "a", "b", "b"]})
    >>> h2_term(bl.specify("y ~ 1 + (1 | g)", df)) is None
    True
    """
    kin = spec.kinship_terms
    if len(kin) == 1 and kin[0].n_coef == 1:
        return kin[0].group
    return None


def _coords(spec: ModelSpec) -> dict[str, Any]:
    coords: dict[str, Any] = {
        "fixed": list(spec.fixed_names),
        "obs": np.arange(spec.n_obs),
        "component": list(component_labels(spec)),
    }
    for t in spec.terms:
        coords[f"{t.group}_level"] = list(t.levels)
        coords[f"{t.group}_coef"] = list(t.covariates)
        if t.n_coef > 1:
            coords[f"{t.group}_coef_bis"] = list(t.covariates)
    if spec.sigma_X is not None:
        coords["sigma_fixed"] = list(spec.sigma_names)
    return coords


def _normal_vector(priors: list[Prior], what: str) -> tuple[np.ndarray, np.ndarray]:
    bad = [p.describe() for p in priors if p.family != "normal"]
    if bad:
        raise SpecificationError(f"Priors of {what} must be ('normal', mu, sigma); got {bad}.")
    mu = np.array([float(p.params[0]) for p in priors])
    sd = np.array([float(p.params[1]) for p in priors])
    return mu, sd


@dataclass(frozen=True, eq=False)
class FixedEffectsPrior:
    """The normal prior of the fixed effects, in the coordinates the model samples them in.

    With an intercept and at least one slope the covariates are centred (the intercept prior
    of :mod:`bayeslmm.priors` is at centred covariates): ``beta_centered`` ~ N(mu, diag(sd²))
    multiplies ``design`` = X − 1 meansᵀ, and the usual β equals ``beta_centered`` except
    β₀ = β₀ᶜ − meansᵀ ``beta_centered``.

    Attributes
    ----------
    mu, sd : ndarray, shape (p,)
        Prior means and SDs of the sampled coefficients.
    design : ndarray, shape (n, p)
        The design matrix they multiply (centred covariates when ``centred``).
    means : ndarray, shape (p,)
        Column means subtracted (0 for the intercept column; all 0 when not centred).
    intercept : int or None
        Column of the intercept.
    centred : bool
        Whether the sampled vector is ``beta_centered`` rather than ``beta``.
    """

    mu: np.ndarray
    sd: np.ndarray
    design: np.ndarray
    means: np.ndarray
    intercept: int | None
    centred: bool

    @property
    def sampled_name(self) -> str:
        """``"beta_centered"`` or ``"beta"``."""
        return "beta_centered" if self.centred else "beta"

    def uncentre(self, beta_sampled: np.ndarray) -> np.ndarray:
        """The usual β from sampled coefficients (last axis = coefficients)."""
        beta = np.array(beta_sampled, dtype=float, copy=True)
        if self.centred:
            beta[..., self.intercept] -= beta @ self.means
        return beta


def fixed_effects_prior(spec: ModelSpec, priors: PriorSet) -> FixedEffectsPrior | None:
    """The fixed effects' normal prior and design as sampled (None without fixed effects).

    Examples
    --------
    >>> import pandas as pd, bayeslmm as bl
    >>> from bayeslmm.priors import resolve_priors
    >>> df = pd.DataFrame({"y": [1.0, 2.0, 0.5, 1.5], "x": [0.0, 1.0, 2.0, 3.0],
    ...                    "g": ["a", "a", "b", "b"]})
    >>> spec = bl.specify("y ~ x + (1 | g)", df)
    >>> fe = fixed_effects_prior(spec, resolve_priors(spec))
    >>> fe.sampled_name, fe.means.tolist()
    ('beta_centered', [0.0, 1.5])
    """
    names = list(spec.fixed_names)
    if not names:
        return None
    plist = [priors.intercept if nm == "Intercept" else priors.slopes[nm] for nm in names]
    mu, sd = _normal_vector(plist, "fixed effects")
    X = np.asarray(spec.X, dtype=float)
    k0 = names.index("Intercept") if "Intercept" in names else None
    means = np.zeros(len(names))
    centred = k0 is not None and len(names) > 1
    if centred:
        means = X.mean(axis=0)
        means[k0] = 0.0
    return FixedEffectsPrior(
        mu=mu, sd=sd, design=X - means, means=means, intercept=k0, centred=centred
    )


def _fixed_effects(spec: ModelSpec, priors: PriorSet):
    """β with its prior; returns (sampled β, design used with it)."""
    import pymc as pm
    import pytensor.tensor as pt

    fe = fixed_effects_prior(spec, priors)
    if fe is None:
        return None, None
    if fe.centred:
        beta_c = pm.Normal("beta_centered", mu=fe.mu, sigma=fe.sd, dims="fixed")
        shift = pt.dot(pt.as_tensor(fe.means), beta_c)
        k0 = fe.intercept
        pm.Deterministic("beta", pt.set_subtensor(beta_c[k0], beta_c[k0] - shift), dims="fixed")
        return beta_c, fe.design
    beta = pm.Normal("beta", mu=fe.mu, sigma=fe.sd, dims="fixed")
    return beta, fe.design


@dataclass(frozen=True, eq=False)
class MarginalFixedEffects:
    """What the spectral strategy needs when β is integrated out (``fixed_effects="marginal"``).

    In the eigenbasis, r = Uᵀy − Uᵀoffset = A β + ε with A = U ᵀ(design), β ~ N(μ, diag(sd²))
    and ε ~ N(0, D), D = diag(σ_g² s + σ_e²). So r | θ ~ N(Aμ, D + B Bᵀ) with B = A diag(sd),
    and β | y, θ is normal with precision diag(sd)⁻² + Aᵀ D⁻¹ A.

    Attributes
    ----------
    prior : FixedEffectsPrior
    rotated_design : ndarray, shape (n, p)
        A = Uᵀ design.
    rotated_offset : ndarray, shape (n,)
        Uᵀ offset (zeros without an offset).
    rotated_response : ndarray, shape (n,)
        Uᵀy, the observed vector.
    eigenvalues : ndarray, shape (n,)
        s, the eigenvalues of Z K Zᵀ.
    """

    prior: FixedEffectsPrior
    rotated_design: np.ndarray
    rotated_offset: np.ndarray
    rotated_response: np.ndarray
    eigenvalues: np.ndarray

    @property
    def prior_mean(self) -> np.ndarray:
        """E(Uᵀy | θ) = Uᵀoffset + A μ."""
        return self.rotated_offset + self.rotated_design @ self.prior.mu

    @property
    def scaled_design(self) -> np.ndarray:
        """B = A diag(sd), so that A Σ_β Aᵀ = B Bᵀ."""
        return self.rotated_design * self.prior.sd


def marginal_gaussian_logp(value, var_g, var_e, eigenvalues, mean, scaled_design):
    """log N(value; mean, D + B Bᵀ), D = diag(var_g · eigenvalues + var_e), B n × p.

    Woodbury and the matrix determinant lemma with C = I_p + Bᵀ D⁻¹ B = L Lᵀ:
    log|D + B Bᵀ| = Σ log d + 2 Σ log L_kk and, with γ̂ = C⁻¹ Bᵀ D⁻¹ r,
    rᵀ(D + B Bᵀ)⁻¹ r = (r − Bγ̂)ᵀ D⁻¹ (r − Bγ̂) + γ̂ᵀγ̂: a sum of two non-negative terms. (The
    textbook rᵀD⁻¹r − |L⁻¹BᵀD⁻¹r|² subtracts two numbers of size r₀²/σ_e² that cancel as
    σ_e → 0 and lets NUTS wander into spurious high-density regions.) O(n p²) per
    evaluation and gradient.
    Works on PyTensor tensors (the model's log-density); ``value`` may have leading batch
    axes when ``var_g`` and ``var_e`` are scalars.
    """
    import pytensor.tensor as pt
    from pytensor.tensor.slinalg import cholesky, solve_triangular

    d = var_g * eigenvalues + var_e
    resid = value - mean
    weighted = scaled_design / d[:, None]  # D⁻¹ B
    n = eigenvalues.shape[0]
    if scaled_design.type.shape[1] == 1:
        # one coefficient (the usual intercept-only model): C is a scalar, so the same
        # formulas need only elementwise operations (no linear-algebra Ops, which PyTensor's
        # C backend runs through Python)
        b = scaled_design[:, 0]
        capacitance = 1.0 + pt.sum(b * weighted[:, 0])
        gamma = pt.dot(resid, weighted[:, 0]) / capacitance
        fitted = pt.shape_padright(gamma) * b
        quad = pt.sum((resid - fitted) ** 2 / d, axis=-1) + gamma**2
        logdet = pt.sum(pt.log(d)) + pt.log(capacitance)
        return -0.5 * (n * np.log(2.0 * np.pi) + logdet + quad)
    p_static = scaled_design.type.shape[1]
    if p_static is not None and p_static <= MAX_UNROLLED_P:
        return _marginal_logp_unrolled(resid, d, scaled_design, weighted, p_static)
    p = scaled_design.shape[1]
    capacitance = pt.eye(p) + pt.dot(scaled_design.T, weighted)
    chol = cholesky(capacitance, lower=True)
    projected = solve_triangular(chol, pt.dot(resid, weighted).T, lower=True)
    gamma = solve_triangular(chol.T, projected, lower=False)  # (p, ...) = C⁻¹ Bᵀ D⁻¹ r
    fitted = pt.dot(scaled_design, gamma).T
    quad = pt.sum((resid - fitted) ** 2 / d, axis=-1) + pt.sum(gamma**2, axis=0)
    logdet = pt.sum(pt.log(d)) + 2.0 * pt.sum(pt.log(pt.diagonal(chol)))
    return -0.5 * (n * np.log(2.0 * np.pi) + logdet + quad)


#: Up to this many fixed effects the p × p Cholesky factor of the capacitance matrix is
#: written out entry by entry (elementwise Ops, compiled to C) instead of PyTensor's
#: Cholesky / SolveTriangular Ops, which run through Python and scipy at every gradient
#: evaluation (about half of the ~110 µs per evaluation with p = 2).
MAX_UNROLLED_P = 4


def _marginal_logp_unrolled(resid, d, scaled_design, weighted, p: int):
    """:func:`marginal_gaussian_logp` for a small static p: the same Cholesky factor L of
    C = I + Bᵀ D⁻¹ B, triangular solves and formulas, in scalar arithmetic."""
    import pytensor.tensor as pt

    n = d.shape[0]
    b = [scaled_design[:, k] for k in range(p)]
    w = [weighted[:, k] for k in range(p)]
    capacitance = [[(1.0 if i == j else 0.0) + pt.sum(b[i] * w[j]) for j in range(p)]
                   for i in range(p)]  # fmt: skip
    chol = [[None] * p for _ in range(p)]
    for j in range(p):
        chol[j][j] = pt.sqrt(capacitance[j][j] - sum(chol[j][k] ** 2 for k in range(j)))
        for i in range(j + 1, p):
            off = capacitance[i][j] - sum(chol[i][k] * chol[j][k] for k in range(j))
            chol[i][j] = off / chol[j][j]
    # Bᵀ D⁻¹ r, batch axes kept; sum(·) rather than dot, which is a Python Op without BLAS
    projected = [pt.sum(resid * w[k], axis=-1) for k in range(p)]
    forward = []
    for i in range(p):
        forward.append((projected[i] - sum(chol[i][k] * forward[k] for k in range(i))) / chol[i][i])
    gamma = [None] * p  # C⁻¹ Bᵀ D⁻¹ r
    for i in reversed(range(p)):
        later = sum(chol[k][i] * gamma[k] for k in range(i + 1, p))
        gamma[i] = (forward[i] - later) / chol[i][i]
    fitted = sum(pt.shape_padright(gamma[k]) * b[k] for k in range(p))
    quad = pt.sum((resid - fitted) ** 2 / d, axis=-1) + sum(g**2 for g in gamma)
    logdet = pt.sum(pt.log(d)) + 2.0 * sum(pt.log(chol[k][k]) for k in range(p))
    return -0.5 * (n * np.log(2.0 * np.pi) + logdet + quad)


def _data_input(values: np.ndarray, name: str):
    """A shared variable holding ``values``, its length (first axis) left unknown.

    Only trailing axes keep their static length (the number of fixed effects, which the
    log-density branches on), so one compiled module serves every data set of any size.
    """
    import pytensor

    values = np.asarray(values, dtype=float)
    return pytensor.shared(values, name=name, shape=(None, *values.shape[1:]))


def marginal_gaussian_random(var_g, var_e, eigenvalues, mean, scaled_design, rng=None, size=None):
    """Draw mean + B γ + √D ε, γ ~ N(0, I_p), ε ~ N(0, I_n) (prior predictive of Uᵀy)."""
    rng = np.random.default_rng() if rng is None else rng
    var_g, var_e = np.asarray(var_g, dtype=float), np.asarray(var_e, dtype=float)
    batch = np.broadcast_shapes(var_g.shape, var_e.shape) if size is None else tuple(size)
    d = var_g[..., None] * eigenvalues + var_e[..., None]
    gamma = rng.standard_normal((*batch, scaled_design.shape[1]))
    noise = rng.standard_normal((*batch, eigenvalues.shape[0]))
    return mean + gamma @ scaled_design.T + np.sqrt(d) * noise


def _sd_prior_for(prior: Prior, m: int) -> Prior:
    """The prior with vector parameters squeezed to scalars for a one-coefficient term."""
    if m != 1:
        return prior
    params = tuple(float(np.asarray(p).ravel()[0]) if np.size(p) == 1 else p for p in prior.params)
    return Prior(prior.family, params)


def _term_cholesky(term: RandomTerm, priors: PriorSet, var_given=None):
    """The SD(s) / Cholesky factor of a term's coefficient covariance.

    Returns ``(kind, value)``: ``("scalar", sd)``, ``("diag", sd_vector)`` or
    ``("chol", L)``, and registers ``sd_g``, ``var_g``, ``cov_g``, ``corr_g``.
    """
    import pymc as pm
    import pytensor.tensor as pt

    g, m = term.group, term.n_coef
    if var_given is not None:  # share parametrisation: intercept-only, variance given
        # the shares are at the sample's kinship scale (c σ² with c = mean diag K − mean K),
        # as every results table reports them, so the prior is on the h² users read
        c = float(term.variance_weights("sample")[0, 0])
        sd = pm.Deterministic(f"sd_{g}", pt.sqrt(var_given if c == 1.0 else var_given / c))
        return "scalar", sd
    prior = _sd_prior_for(priors.sd[g], m)
    if m == 1:
        sd = prior.to_pymc(f"sd_{g}")
        return "scalar", sd
    if not term.correlated:
        sd = prior.to_pymc(f"sd_{g}", dims=f"{g}_coef")
        pm.Deterministic(f"cov_{g}", pt.diag(sd**2), dims=(f"{g}_coef", f"{g}_coef_bis"))
        return "diag", sd
    eta = float(priors.cor[g].params[0])
    chol = pm.LKJCholeskyCov(
        f"chol_{g}", n=m, eta=eta, sd_dist=prior.to_dist(m), compute_corr=False
    )
    chol = pm.expand_packed_triangular(m, chol, lower=True)
    cov = chol @ chol.T
    sds = pt.sqrt(pt.diag(cov))
    pm.Deterministic(f"sd_{g}", sds, dims=f"{g}_coef")
    pm.Deterministic(f"corr_{g}", cov / pt.outer(sds, sds), dims=(f"{g}_coef", f"{g}_coef_bis"))
    pm.Deterministic(f"cov_{g}", cov, dims=(f"{g}_coef", f"{g}_coef_bis"))
    return "chol", chol


def _term_variance(term: RandomTerm, kind: str, value, scale: str = "unit"):
    """Variance the term adds, Σ_jk Σ_jk W_jk with W = ``term.variance_weights(scale)``:
    ``"unit"``, the mean over observations of d_iᵀ Σ d_i at K_ii = 1; ``"sample"``, across
    the sample's observations at the kinship's own scale (the variance shares)."""
    import pytensor.tensor as pt

    W = term.variance_weights(scale)
    if kind == "scalar":
        return value**2 if W[0, 0] == 1.0 else value**2 * float(W[0, 0])
    if kind == "diag":
        return pt.dot(pt.as_tensor(np.diag(W)), value**2)
    return pt.sum(pt.as_tensor(W) * (value @ value.T))


def _latent_effect(term: RandomTerm, kind: str, value, rank_share: float | None):
    """u_g (q × m) = basis · z · L_Σᵀ, non-centred; registers ``z_g`` and ``u_g``."""
    import pymc as pm
    import pytensor.tensor as pt

    g = term.group
    if term.kinship is not None:
        values, vectors = term.kinship.low_rank(rank_share or 1.0)
        basis = vectors * np.sqrt(values)  # q × r, basis basisᵀ = K (truncated)
        z = pm.Normal(f"z_{g}", 0.0, 1.0, dims=(f"{g}_basis", f"{g}_coef"))
        scaled = pt.dot(pt.as_tensor(basis), z)
    else:
        z = pm.Normal(f"z_{g}", 0.0, 1.0, dims=(f"{g}_level", f"{g}_coef"))
        scaled = z
    if kind in ("scalar", "diag"):
        u = scaled * value
    else:
        u = pt.dot(scaled, value.T)
    return pm.Deterministic(f"u_{g}", u, dims=(f"{g}_level", f"{g}_coef"))


def _term_contribution(term: RandomTerm, u):
    import pytensor.tensor as pt

    D = np.asarray(term.design, dtype=float)
    rows = u[np.asarray(term.index)]  # n × m
    if term.n_coef == 1:
        return rows[:, 0] * D[:, 0] if np.any(D[:, 0] != 1.0) else rows[:, 0]
    return pt.sum(rows * pt.as_tensor(D), axis=1)


def _share_variances(spec: ModelSpec, priors: PriorSet):
    """σ²_P and the shares (share parametrisation): returns (term variances, residual var)."""
    import pymc as pm
    import pytensor.tensor as pt

    if priors.total_is_variance:
        var_total = priors.total.to_pymc("total_variance")
    else:
        var_total = pm.Deterministic("total_variance", priors.total.to_pymc("total_sd") ** 2)
    if priors.shares.family == "beta":
        term = spec.terms[0]
        h2 = priors.shares.to_pymc("h2" if term.kinship is not None else f"share_{term.group}")
        shares = pt.stack([h2, 1.0 - h2])
    else:
        shares = priors.shares.to_pymc("shares", dims="component")
    k = len(spec.terms)
    return [shares[i] * var_total for i in range(k)], shares[k] * var_total


def build(
    spec: ModelSpec,
    strategy: str = "auto",
    rank_share: float | None = None,
    priors: dict[str, Any] | None = None,
    fixed_effects: str = "marginal",
) -> BuiltModel:
    """Build the PyMC model for ``spec``.

    Parameters
    ----------
    spec : ModelSpec
        From :func:`bayeslmm.specify`.
    strategy : {"auto", "spectral", "latent", "laplace"}
        ``"auto"`` takes the spectral strategy whenever it applies. ``"laplace"``
        (experimental, opt-in; Poisson / logit-binomial with intercept-only terms) integrates
        the latent field out by a Laplace approximation and samples only the SDs (see
        :mod:`bayeslmm.engines.bayes.laplace_marginal`).
    rank_share : float, optional
        Latent strategy: keep the leading eigenvectors of each kinship holding this share of
        its trace (e.g. 0.99); default all with a positive eigenvalue.
    priors : dict, optional
        Prior overrides (see :mod:`bayeslmm.priors`); default ``spec.priors``.
    fixed_effects : {"marginal", "joint"}
        Spectral strategy only: ``"marginal"`` integrates β out of the sampled model (it is
        drawn afterwards from β | y, θ; see
        :func:`~bayeslmm.engines.bayes.conditional.add_posthoc_draws`); ``"joint"`` samples
        β together with the variances. Same posterior; the marginal form has no
        intercept–σ_e funnel with centred kinships. Ignored by the latent strategy.

    Returns
    -------
    BuiltModel
        ``.model`` is the :class:`pymc.Model`.

    Examples
    --------
    >>> import numpy as np, pandas as pd, bayeslmm as bl
    >>> rng = np.random.default_rng(0)
    >>> K = bl.Kinship(np.eye(6) * 0.5 + 0.5, [f"i{k}" for k in range(6)])
    >>> df = pd.DataFrame({"y": rng.normal(size=6), "id": list(K.ids)})
    >>> built = build(bl.specify("y ~ 1 + (1 | id)", df, kinship={"id": K}))
    >>> built.strategy, sorted(v.name for v in built.model.free_RVs)
    ('spectral', ['sd_id', 'sigma'])
    >>> sorted(v.name for v in build(built.spec, fixed_effects="joint").model.free_RVs)
    ['beta', 'sd_id', 'sigma']
    """
    import pymc as pm
    import pytensor.tensor as pt

    start = time.perf_counter()
    strategy = choose_strategy(spec, strategy)
    if fixed_effects not in FIXED_EFFECTS:
        raise SpecificationError(
            f"Unknown fixed_effects '{fixed_effects}'; choose one of {FIXED_EFFECTS}."
        )
    if rank_share is not None and not 0.0 < rank_share <= 1.0:
        raise SpecificationError(f"rank_share must lie in (0, 1]; got {rank_share}.")
    prior_set = resolve_priors(spec, priors)
    coords = _coords(spec)
    if strategy == "laplace":  # latent field integrated out (Laplace); see laplace_marginal
        from bayeslmm.engines.bayes.laplace_marginal import build_laplace

        return build_laplace(spec, prior_set, coords)
    rotation = None
    for t in spec.terms:
        if strategy == "latent" and t.kinship is not None:
            r = t.kinship.low_rank(rank_share or 1.0)[0].size
            coords[f"{t.group}_basis"] = np.arange(r)
    if strategy == "spectral":
        rotation = spectral_basis(spec.terms[0])
        coords["eigen"] = np.arange(spec.n_obs)
    components = tuple(coords["component"])
    obs_name = spec.response if strategy == "latent" else f"{spec.response}_rotated"

    offset = np.zeros(spec.n_obs) if spec.offset is None else np.asarray(spec.offset)
    marginal = None
    if strategy == "spectral" and fixed_effects == "marginal":
        fe = fixed_effects_prior(spec, prior_set)
        if fe is not None:
            U = rotation.vectors
            marginal = MarginalFixedEffects(
                prior=fe,
                rotated_design=U.T @ fe.design,
                rotated_offset=U.T @ offset,
                rotated_response=U.T @ np.asarray(spec.y, dtype=float),
                eigenvalues=np.asarray(rotation.values, dtype=float),
            )

    with pm.Model(coords=coords) as model:
        if marginal is None:
            beta, Xd = _fixed_effects(spec, prior_set)
        else:
            beta, Xd = None, None

        if prior_set.uses_shares:
            given_vars, var_residual = _share_variances(spec, prior_set)
        else:
            given_vars, var_residual = [None] * len(spec.terms), None

        term_vars, share_vars = [], []
        if strategy == "spectral":
            term = spec.terms[0]
            kind, sd_g = _term_cholesky(term, prior_set, given_vars[0])
            var_g = pm.Deterministic(f"var_{term.group}", sd_g**2)
            term_vars.append(var_g)
            share_vars.append(_term_variance(term, kind, sd_g, "sample"))
            if var_residual is None:
                sigma = prior_set.sigma.to_pymc("sigma")
                var_residual = sigma**2
            else:
                sigma = pm.Deterministic("sigma", pt.sqrt(var_residual))
            U = rotation.vectors
            if marginal is not None:
                # β integrated out: Uᵀy | θ ~ N(Uᵀoffset + Aμ, D + A Σ_β Aᵀ)
                # the data enter as shared variables of unknown length, not constants:
                # PyTensor's compile cache keys on constants' values and on static shapes,
                # so constants would recompile the C modules (~30 s) for every data set
                pm.CustomDist(
                    obs_name,
                    var_g,
                    var_residual,
                    _data_input(marginal.eigenvalues, "eigenvalues"),
                    _data_input(marginal.prior_mean, "prior_mean"),
                    _data_input(marginal.scaled_design, "scaled_design"),
                    logp=marginal_gaussian_logp,
                    random=marginal_gaussian_random,
                    signature="(),(),(n),(n),(n,p)->(n)",
                    observed=_data_input(marginal.rotated_response, f"{obs_name}_data"),
                    dims="eigen",
                )
            else:
                mu_rot = pt.as_tensor(U.T @ offset)
                if beta is not None:
                    mu_rot = mu_rot + pt.dot(pt.as_tensor(U.T @ Xd), beta)
                sd_rot = pt.sqrt(var_g * pt.as_tensor(rotation.values) + var_residual)
                pm.Normal(
                    obs_name,
                    mu=mu_rot,
                    sigma=sd_rot,
                    observed=U.T @ np.asarray(spec.y),
                    dims="eigen",
                )
            var_residual = pm.Deterministic("var_residual", var_residual)
        else:
            eta_fixed = pt.as_tensor(offset)
            if beta is not None:
                eta_fixed = eta_fixed + pt.dot(pt.as_tensor(Xd), beta)
            eta = eta_fixed
            for term, given in zip(spec.terms, given_vars, strict=True):
                kind, value = _term_cholesky(term, prior_set, given)
                var_t = pm.Deterministic(f"var_{term.group}", _term_variance(term, kind, value))
                term_vars.append(var_t)
                share_vars.append(_term_variance(term, kind, value, "sample"))
                u = _latent_effect(term, kind, value, rank_share)
                eta = eta + _term_contribution(term, u)
            sigma = None
            if spec.family.is_gaussian:
                if spec.sigma_X is not None:
                    plist = [
                        prior_set.sigma_intercept
                        if nm == "Intercept"
                        else prior_set.sigma_slopes[nm]
                        for nm in spec.sigma_names
                    ]
                    mu_g, sd_gam = _normal_vector(plist, "the sigma formula")
                    gamma = pm.Normal("sigma_coef", mu=mu_g, sigma=sd_gam, dims="sigma_fixed")
                    sigma = pt.exp(pt.dot(pt.as_tensor(np.asarray(spec.sigma_X)), gamma))
                    var_residual = pt.mean(sigma**2)
                elif var_residual is None:
                    sigma = prior_set.sigma.to_pymc("sigma")
                    var_residual = sigma**2
                else:
                    sigma = pm.Deterministic("sigma", pt.sqrt(var_residual))
            else:
                var_olre = pt.as_tensor(0.0)
                if prior_set.sd_olre is not None:
                    sd_olre = prior_set.sd_olre.to_pymc("sd_olre")
                    z_olre = pm.Normal("z_olre", 0.0, 1.0, dims="obs")
                    eta = eta + sd_olre * z_olre
                    var_olre = pm.Deterministic("var_olre", sd_olre**2)
                var_random = sum(term_vars) if term_vars else pt.as_tensor(0.0)
                # one formula (the family's) serves this model and the draws of other routes
                var_residual = pt.as_tensor(
                    spec.family.latent_residual_variance(eta_fixed, var_random, var_olre, xp=pt)
                )
            spec.family.pymc_likelihood(obs_name, eta, spec.y, spec.trials, sigma=sigma)
            var_residual = pm.Deterministic("var_residual", var_residual)

        # shares at the sample's kinship scale, as every results table reports them
        total = var_residual + (sum(share_vars) if share_vars else 0.0)
        shares = pt.stack([*share_vars, var_residual]) / total
        pm.Deterministic("variance_share", shares, dims="component")
        h2_group = h2_term(spec)
        if h2_group is not None and "h2" not in model.named_vars:
            pm.Deterministic("h2", shares[components.index(h2_group)])

    if strategy == "spectral":
        model = _shared_prior_parameters(model)
    build_s = time.perf_counter() - start
    timing = {"build_s": build_s, "eigh_s": rotation.eigh_s if rotation else 0.0}
    return BuiltModel(
        model=model,
        spec=spec,
        strategy=strategy,
        priors=prior_set,
        rotation=rotation,
        components=components,
        h2_term=h2_group,
        observed_name=obs_name,
        timing=timing,
        marginal_fixed=marginal,
    )


def _shared_prior_parameters(model: pm.Model) -> pm.Model:
    """The same model with the priors' parameters as shared scalars instead of constants.

    The default priors scale with the data (e.g. HalfStudentT(3, 2.5 sd y)); as constants
    they are inlined into fused C modules, which PyTensor would compile anew (~2 s) for
    every data set although nothing else in the spectral graph depends on the data.
    """
    import pytensor
    from pymc.model.fgraph import fgraph_from_model, model_from_fgraph
    from pytensor.graph.basic import Constant

    fgraph, _ = fgraph_from_model(model, inlined_views=True)
    for k, node in enumerate(list(fgraph.toposort())):
        if node.op.__class__.__name__.endswith("RV") or hasattr(node.op, "dist_params"):
            rv_name = node.outputs[-1].name or f"node{k}"
            for i, inp in enumerate(node.inputs):
                data = getattr(inp, "data", None)
                if (
                    isinstance(inp, Constant)
                    and isinstance(data, np.ndarray)
                    and data.ndim == 0
                    and data.dtype.kind == "f"
                ):
                    # nutpie passes shared variables by (unique) name
                    param = pytensor.shared(data.copy(), name=f"{rv_name}_prior_param{i}")
                    fgraph.replace(inp, param, import_missing=True)
    return model_from_fgraph(fgraph, mutate_fgraph=True)


def build_model(spec: ModelSpec, **kwargs: Any) -> pm.Model:
    """Build and return only the :class:`pymc.Model` (see :func:`build` for the options).

    Examples
    --------
    >>> import pandas as pd, bayeslmm as bl
    >>> df = pd.DataFrame({"y": [1.0, 2.0, 0.5, 1.5], "g": ["a", "a", "b", "b"]})
    >>> model = build_model(bl.specify("y ~ 1 + (1 | g)", df))
    >>> model.named_vars_to_dims["u_g"]
    ('g_level', 'g_coef')
    """
    return build(spec, **kwargs).model
