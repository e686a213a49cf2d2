"""Exact draws of what a spectral (marginal) fit does not sample: β, then u.

The spectral strategy samples only σ_g² and σ_e² (θ). For each posterior draw of θ the fixed
effects and then the breeding values have normal conditional distributions, drawn here in
the eigenbasis, never forming K⁻¹ or V⁻¹ (or any n × n matrix).

Fixed effects β | y, θ
----------------------
In the eigenbasis r = Uᵀy − Uᵀoffset = A β + ε, A = Uᵀ X (centred covariates when the
intercept is sampled at centred covariates), ε ~ N(0, D), D = diag(σ_g² s + σ_e²), and the
prior is β = μ + diag(sd) γ with γ ~ N(0, I). Then γ | y, θ ~ N(C⁻¹ Bᵀ D⁻¹ (r − Aμ), C⁻¹)
with B = A diag(sd) and C = I + Bᵀ D⁻¹ B (p × p): the Bayesian regression posterior,
precision Σ_β⁻¹ + Aᵀ D⁻¹ A. :func:`add_posthoc_draws` stores the draws as ``beta`` (and
``beta_centered`` when the covariates are centred), so the posterior has the same layout
as when β is sampled. Drawing β from this conditional for every draw of θ ~ p(θ | y) gives
exact draws of (β, θ) | y.

Breeding values u | y, β, θ
---------------------------

Write K = B Bᵀ with B = U_K √S_K (positive eigenvalues only), u = B z, z ~ N(0, σ_g² I).
With M = Z B = P D Qᵀ (thin SVD, computed once), y* = y − Xβ − offset = M z + e and, for
w = Qᵀ z, the components are independent:

    w_k | y, θ ~ N( (d_k/σ_e²) (Pᵀy*)_k / λ_k ,  1/λ_k ),   λ_k = d_k²/σ_e² + 1/σ_g²,

and u = B Q w. (Every level of the term has an observation, so Z has full column rank and
Q is square.) This is the textbook BLUP u = σ_g² K Zᵀ V⁻¹ y* with its prediction error
variance, computed in O(q · rank) per draw.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from bayeslmm.engines.bayes.built import BuiltModel
from bayeslmm.engines.bayes.marginal import MarginalFixedEffects

if TYPE_CHECKING:
    import arviz as az
    import xarray as xr

#: Posterior draws handled at once by the β draws (bounds the draws × n work arrays).
_CHUNK = 512


def _basis(built: BuiltModel) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(P, d, BQ), cached on the built model."""
    cached = built.cache.get("conditional_basis")
    if cached is not None:
        return cached
    term = built.spec.terms[0]
    root = term.kinship.root()
    B = root.factor
    if getattr(built.rotation, "low_rank", False) and term.is_identity_incidence:
        # Z = I: M = B = U √S is its own thin SVD (P = U, d = √s, Q = I); a second
        # O(n r²) SVD of the n × r markers' factor would cost as much as the first
        out = (root.vectors, np.sqrt(root.values), B)
        built.cache["conditional_basis"] = out
        return out
    M = np.asarray(term.incidence() @ B)
    P, d, Qt = np.linalg.svd(M, full_matrices=False)
    out = (P, d, B @ Qt.T)
    built.cache["conditional_basis"] = out
    return out


def fixed_residual(built: BuiltModel, posterior: xr.Dataset) -> np.ndarray:
    """y − offset − Xβ for every posterior draw (shape (draws, n)), with ``beta`` from
    ``posterior`` (drawn after sampling or sampled).

    Examples
    --------
    >>> # resid = fixed_residual(fit.built, fit.idata.posterior)  # (chain · draw, n)
    """
    spec = built.spec
    n_draws = posterior.sizes["chain"] * posterior.sizes["draw"]
    resid = np.broadcast_to(np.asarray(spec.y, dtype=float), (n_draws, spec.n_obs)).copy()
    if spec.offset is not None:
        resid -= np.asarray(spec.offset)
    if spec.fixed_names:
        if "beta" not in posterior:
            raise ValueError(
                "The posterior has no draws of beta; draw them first with "
                "add_posthoc_draws(built, idata) (bayeslmm's fit does this itself)."
            )
        beta = posterior["beta"].transpose("chain", "draw", "fixed")
        resid -= np.asarray(beta).reshape(n_draws, -1) @ np.asarray(spec.X).T
    return resid


def conditional_components(
    built: BuiltModel, posterior: xr.Dataset, rng: np.random.Generator
) -> np.ndarray:
    """Draws of w = Qᵀz | y, β, θ (shape (draws, k)), one per posterior draw of a spectral
    fit: the independent components of the breeding values (u = BQ w, Zu = P (d ∘ w); see
    the module docstring).

    Examples
    --------
    >>> # w = conditional_components(fit.built, fit.idata.posterior, np.random.default_rng(1))
    """
    term = built.spec.terms[0]
    P, d, _ = _basis(built)
    var_g = np.asarray(posterior[f"var_{term.group}"].transpose("chain", "draw")).reshape(-1)
    var_e = np.asarray(posterior["var_residual"].transpose("chain", "draw")).reshape(-1)
    proj = fixed_residual(built, posterior) @ P  # draws × k
    precision = d[None, :] ** 2 / var_e[:, None] + 1.0 / var_g[:, None]
    mean = (d[None, :] / var_e[:, None]) * proj / precision
    return mean + rng.standard_normal(mean.shape) / np.sqrt(precision)


def conditional_genetic_values(
    built: BuiltModel, posterior: xr.Dataset, rng: np.random.Generator
) -> np.ndarray:
    """Draws of Z u | y, β, θ (shape (draws, n)), one per posterior draw of a spectral fit:
    Z u = Z B Q w = P (d ∘ w), O(n k) per draw.

    Examples
    --------
    >>> # zu = conditional_genetic_values(fit.built, fit.idata.posterior, np.random.default_rng(1))
    """
    P, d, _ = _basis(built)
    return (conditional_components(built, posterior, rng) * d) @ P.T


def conditional_breeding_values(
    built: BuiltModel, posterior: xr.Dataset, seed: int | None = None
) -> xr.DataArray:
    """Draw u | y, θ for every posterior draw of a spectral fit.

    Parameters
    ----------
    built : BuiltModel
        The spectral model that produced ``posterior``.
    posterior : xarray.Dataset
        ``idata.posterior`` with ``beta``, ``var_<group>`` and ``var_residual``.
    seed : int, optional
        Seed of the normal draws.

    Returns
    -------
    xarray.DataArray
        ``u_<group>`` with dims (chain, draw, <group>_level, <group>_coef), like the latent
        strategy's deterministic.

    Examples
    --------
    >>> # fit = LMM(...).fit(); conditional_breeding_values(fit.built, fit.idata.posterior)
    """
    import xarray as xr

    if built.strategy != "spectral":
        raise ValueError("Conditional breeding values are for the spectral strategy only.")
    term = built.spec.terms[0]
    _, _, BQ = _basis(built)
    n_chain, n_draw = posterior.sizes["chain"], posterior.sizes["draw"]
    w = conditional_components(built, posterior, np.random.default_rng(seed))
    u = (w @ BQ.T).reshape(n_chain, n_draw, term.n_levels, 1)
    return xr.DataArray(
        u,
        dims=("chain", "draw", f"{term.group}_level", f"{term.group}_coef"),
        coords={
            "chain": posterior["chain"].values,
            "draw": posterior["draw"].values,
            f"{term.group}_level": list(term.levels),
            f"{term.group}_coef": list(term.covariates),
        },
        name=f"u_{term.group}",
    )


def fixed_effects_conditional(
    marginal: MarginalFixedEffects, var_g: np.ndarray, var_e: np.ndarray, response: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and a square root of the covariance of the sampled β given y and θ, per draw.

    Parameters
    ----------
    marginal : MarginalFixedEffects
        ``built.marginal_fixed``.
    var_g, var_e : ndarray, shape (N,)
        Draws of σ_g² and σ_e².
    response : ndarray, shape (n,) or (N, n)
        Uᵀy: the observed one, or one per draw (prior-predictive data sets).

    Returns
    -------
    mean : ndarray, shape (N, p)
    factor : ndarray, shape (N, p, p)
        Square roots of the covariance, cov = factor factorᵀ (of the *sampled* coefficients,
        ``beta_centered`` when the covariates are centred): diag(sd) L⁻ᵀ with C = L Lᵀ.

    Examples
    --------
    >>> # mean, factor = fixed_effects_conditional(built.marginal_fixed, vg, ve, ry)
    """
    B = marginal.scaled_design  # n × p
    sd = marginal.prior.sd
    p = B.shape[1]
    d = var_g[:, None] * marginal.eigenvalues + var_e[:, None]  # N × n
    resid = np.asarray(response, dtype=float) - marginal.prior_mean
    outer = (B[:, :, None] * B[:, None, :]).reshape(B.shape[0], p * p)
    capacitance = np.eye(p) + ((1.0 / d) @ outer).reshape(-1, p, p)  # C = I + Bᵀ D⁻¹ B
    rhs = (resid / d) @ B  # Bᵀ D⁻¹ r, N × p
    # C = L Lᵀ: γ̂ = C⁻¹ rhs = L⁻ᵀ L⁻¹ rhs and Cov(γ) = C⁻¹ = L⁻ᵀ (L⁻ᵀ)ᵀ (p × p, small)
    inv_chol_t = np.swapaxes(np.linalg.inv(np.linalg.cholesky(capacitance)), -1, -2)  # L⁻ᵀ
    gamma_mean = np.einsum("nij,nkj,nk->ni", inv_chol_t, inv_chol_t, rhs)
    mean = marginal.prior.mu + sd * gamma_mean
    factor = sd[None, :, None] * inv_chol_t
    return mean, factor


def draw_fixed_effects(
    marginal: MarginalFixedEffects,
    var_g: np.ndarray,
    var_e: np.ndarray,
    response: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """One draw of the sampled β | y, θ per draw of θ (shape (N, p)), in chunks of draws.

    Examples
    --------
    >>> # beta_c = draw_fixed_effects(built.marginal_fixed, vg, ve, ry, np.random.default_rng(1))
    """
    var_g = np.asarray(var_g, dtype=float).reshape(-1)
    var_e = np.asarray(var_e, dtype=float).reshape(-1)
    response = np.asarray(response, dtype=float)
    p = marginal.scaled_design.shape[1]
    out = np.empty((var_g.size, p))
    for lo in range(0, var_g.size, _CHUNK):
        hi = min(lo + _CHUNK, var_g.size)
        resp = response if response.ndim == 1 else response[lo:hi]
        mean, factor = fixed_effects_conditional(marginal, var_g[lo:hi], var_e[lo:hi], resp)
        z = rng.standard_normal((hi - lo, p))
        out[lo:hi] = mean + np.einsum("nij,nj->ni", factor, z)
    return out


def add_posthoc_draws(
    built: BuiltModel,
    idata: az.InferenceData,
    seed: int | np.random.SeedSequence | None = None,
    group: str = "posterior",
    y: np.ndarray | None = None,
) -> az.InferenceData:
    """Add the draws of the parameters integrated out of the sampled model (in place).

    With ``built.marginal_fixed`` set (the spectral strategy's default), β is not in the
    sampled model; this draws it once per draw of (σ_g², σ_e²) from β | y, θ and stores
    ``beta`` (dims ``fixed``), plus ``beta_centered`` when the covariates are centred, in
    ``idata[group]``. :func:`bayeslmm.engines.bayes.sampling.sample` calls it; call it
    yourself after sampling ``built.model`` directly (``pm.sample``, ``nutpie.sample``).
    With ``group="prior"`` (after :func:`pymc.sample_prior_predictive`) the conditioning
    data are each draw's own prior-predictive ``Uᵀy``, so that (θ, β, y) is an exact draw
    from the joint prior. Does nothing when nothing was integrated out or the group already
    has ``beta``.

    Parameters
    ----------
    built : BuiltModel
    idata : arviz.InferenceData
        With ``var_<group>`` and ``var_residual`` in ``idata[group]``.
    seed : int, optional
        Seed of the normal draws.
    group : {"posterior", "prior"}
    y : ndarray, optional
        Posterior only: the response (data order) the draws were conditioned on, when it is
        not ``built.spec.y`` (e.g. data swapped into a compiled model, as in
        simulation-based calibration).

    Returns
    -------
    arviz.InferenceData
        ``idata`` itself.

    Examples
    --------
    >>> import numpy as np, pandas as pd, pymc as pm, bayeslmm as bl
    >>> from bayeslmm.engines.bayes import build
    >>> K = bl.Kinship(np.eye(6) * 0.5 + 0.5, [f"i{k}" for k in range(6)])
    >>> df = pd.DataFrame({"y": np.arange(6.0), "id": list(K.ids)})
    >>> built = build(bl.specify("y ~ 1 + (1 | id)", df, kinship={"id": K}))
    >>> prior = pm.sample_prior_predictive(draws=5, model=built.model, random_seed=1)
    >>> add_posthoc_draws(built, prior, seed=1, group="prior").prior["beta"].dims
    ('chain', 'draw', 'fixed')
    """
    import xarray as xr

    marginal = built.marginal_fixed
    if group not in ("posterior", "prior"):
        raise ValueError(f"group must be 'posterior' or 'prior'; got {group!r}.")
    if marginal is None or "beta" in idata[group]:
        return idata
    draws = idata[group]
    term = built.spec.terms[0]
    n_chain, n_draw = draws.sizes["chain"], draws.sizes["draw"]
    var_g = np.asarray(draws[f"var_{term.group}"]).reshape(-1)
    var_e = np.asarray(draws["var_residual"]).reshape(-1)
    if group == "posterior" and y is None:
        response = marginal.rotated_response
    elif group == "posterior":
        response = built.rotation.vectors.T @ np.asarray(y, dtype=float).reshape(-1)
    else:
        predictive = idata["prior_predictive"][built.observed_name]
        response = np.asarray(predictive.transpose("chain", "draw", ...)).reshape(var_g.size, -1)
    beta_sampled = draw_fixed_effects(marginal, var_g, var_e, response, np.random.default_rng(seed))
    names = list(built.spec.fixed_names)
    coords = {"chain": draws["chain"].values, "draw": draws["draw"].values, "fixed": names}

    def as_array(values: np.ndarray, name: str) -> xr.DataArray:
        shaped = values.reshape(n_chain, n_draw, len(names))
        return xr.DataArray(shaped, dims=("chain", "draw", "fixed"), coords=coords, name=name)

    if marginal.prior.centred:
        draws["beta_centered"] = as_array(beta_sampled, "beta_centered")
    draws["beta"] = as_array(marginal.prior.uncentre(beta_sampled), "beta")
    return idata


def rotated_log_likelihood(built: BuiltModel, posterior: xr.Dataset) -> xr.DataArray:
    """log N((Uᵀy)_i; (Uᵀ(Xβ + offset))_i, σ_g² s_i + σ_e²) per rotated component and draw.

    The pointwise log-likelihood of a spectral fit given (β, θ), as when β is sampled: the
    components are independent given β, and their sum is the dense log-density of y.

    Examples
    --------
    >>> # ll = rotated_log_likelihood(fit.built, fit.idata.posterior)  # (chain, draw, eigen)
    """
    import xarray as xr

    marginal = built.marginal_fixed
    if marginal is None:
        raise ValueError("rotated_log_likelihood is for spectral models with β integrated out.")
    if getattr(built.rotation, "n_null", 0):
        from bayeslmm.errors import SpecificationError

        raise SpecificationError(
            "A low-rank kinship's spectral fit has no pointwise log-likelihood: its rotated "
            f"components leave out {built.rotation.n_null} null-space rows. Fit with a dense "
            "kinship (bayeslmm.grm(dosages)) for LOO / WAIC."
        )
    term = built.spec.terms[0]
    n_chain, n_draw = posterior.sizes["chain"], posterior.sizes["draw"]
    var_g = np.asarray(posterior[f"var_{term.group}"]).reshape(-1, 1)
    var_e = np.asarray(posterior["var_residual"]).reshape(-1, 1)
    name = marginal.prior.sampled_name
    beta = np.asarray(posterior[name].transpose("chain", "draw", "fixed"))
    mean = marginal.rotated_offset + beta.reshape(var_g.size, -1) @ marginal.rotated_design.T
    d = var_g * marginal.eigenvalues + var_e
    ll = -0.5 * (np.log(2.0 * np.pi * d) + (marginal.rotated_response - mean) ** 2 / d)
    return xr.DataArray(
        ll.reshape(n_chain, n_draw, -1),
        dims=("chain", "draw", "eigen"),
        coords={"chain": posterior["chain"].values, "draw": posterior["draw"].values},
        name=built.observed_name,
    )
