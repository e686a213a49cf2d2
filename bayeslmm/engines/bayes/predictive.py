"""Replicated data: one draw of y_rep ~ p(y_rep | y) per posterior draw, for every strategy.

Each strategy hands the results layer a *posterior predictive sampler*,
``(posterior, seed, variables=None) -> xarray.Dataset`` (see
:meth:`~bayeslmm.engines.bayes.strategies.Strategy.posterior_predictive_sampler`), which
returns one replicate per variable of ``idata.observed_data`` (or of ``variables``), dims
(chain, draw, obs): what :func:`arviz.plot_ppc` and :func:`arviz.plot_bpv` compare with the
observed data.

``latent``
    The likelihood is written on the observations: :func:`pymc.sample_posterior_predictive`
    on the sampled model (:func:`pymc_posterior_predictive`).
``spectral``
    The random effects are integrated out of the sampled model, and its observed node is
    the rotated response Uᵀy. For every posterior draw of (θ, β), with the breeding values u
    of that draw when the posterior holds them and otherwise a fresh exact draw of
    u | y, β, θ (:mod:`bayeslmm.engines.bayes.conditional`),

        y_rep = offset + X β + Z u + e,    e ~ N(0, σ_e² I),

    and, for the rotated node, Uᵀ y_rep (:func:`spectral_posterior_predictive`). The
    spectral strategy has one residual variance, so e needs no weights. Z u costs O(n k) per
    draw in the basis of the conditional draws (Z u = P (d ∘ w)).
``laplace-marginal``
    β and u are drawn after sampling from the Laplace (Gaussian) approximation of
    p(β, u | y, v); the linear predictor η = offset + Xβ + Σ Z_j u_j then takes its
    observation-level effect e (when the model has one) from the same approximation,
    e | β, u, y, v ~ N(v_e W (ỹ − η) / (1 + v_e W), v_e / (1 + v_e W)), with W and the
    pseudo-data ỹ = f̂ + W⁻¹ ∇ log p(y | f̂) at the mode f̂ for that draw's variances; and y_rep
    is drawn from the family given η (:func:`laplace_posterior_predictive`). One Laplace mode
    per draw (O(n³)) when there is an observation-level effect.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from bayeslmm.engines.bayes.built import BuiltModel
from bayeslmm.engines.bayes.conditional import conditional_genetic_values, fixed_residual

if TYPE_CHECKING:
    import xarray as xr

#: Draws rotated at once into the eigenbasis (bounds the draws × n work array).
_CHUNK = 512


def _names(built: BuiltModel, variables: Sequence[str] | None) -> list[str]:
    allowed = [built.spec.response]
    if built.observed_name not in allowed:
        allowed.append(built.observed_name)
    names = list(allowed if variables is None else variables)
    unknown = [v for v in names if v not in allowed]
    if unknown:
        raise ValueError(f"No observed variable {unknown}; this model's are {allowed}.")
    return names


def _draw_coords(posterior: xr.Dataset) -> dict[str, np.ndarray]:
    return {"chain": posterior["chain"].values, "draw": posterior["draw"].values}


def _replicates(
    built: BuiltModel, posterior: xr.Dataset, y_rep: np.ndarray, names: list[str]
) -> xr.Dataset:
    """The Dataset of ``y_rep`` (draws × n, data order) under each of ``names``."""
    import xarray as xr

    spec = built.spec
    n_chain, n_draw = posterior.sizes["chain"], posterior.sizes["draw"]
    coords = _draw_coords(posterior)
    out = {}
    if spec.response in names:
        out[spec.response] = xr.DataArray(
            y_rep.reshape(n_chain, n_draw, spec.n_obs),
            dims=("chain", "draw", "obs"),
            coords={**coords, "obs": np.arange(spec.n_obs)},
        )
    if built.observed_name in names and built.observed_name != spec.response:
        U = built.rotation.vectors
        rotated = np.empty((y_rep.shape[0], U.shape[1]))
        for lo in range(0, y_rep.shape[0], _CHUNK):
            rotated[lo : lo + _CHUNK] = y_rep[lo : lo + _CHUNK] @ U
        out[built.observed_name] = xr.DataArray(
            rotated.reshape(n_chain, n_draw, -1),  # r + k columns for a low-rank kinship
            dims=("chain", "draw", "eigen"),
            coords=coords,
        )
    return xr.Dataset({name: out[name] for name in names})


def pymc_posterior_predictive(
    built: BuiltModel,
    posterior: xr.Dataset,
    seed: int | None = None,
    variables: Sequence[str] | None = None,
) -> xr.Dataset:
    """Replicated data of a model whose likelihood is on the observations (the latent
    strategy), by :func:`pymc.sample_posterior_predictive`.

    Parameters
    ----------
    built : BuiltModel
    posterior : xarray.Dataset
        ``idata.posterior`` of a fit of ``built``.
    seed : int, optional
    variables : list of str, optional
        Observed variables to replicate (default: the model's observed variable).

    Returns
    -------
    xarray.Dataset
        One variable per name, dims (chain, draw, obs).

    Examples
    --------
    >>> # pymc_posterior_predictive(fit.built, fit.idata.posterior, seed=1)["y"].dims
    """
    import pymc as pm

    names = [built.observed_name] if variables is None else list(variables)
    with built.model:
        pp = pm.sample_posterior_predictive(
            posterior,
            var_names=names,
            random_seed=seed,
            progressbar=False,
            extend_inferencedata=False,
        )
    return pp.posterior_predictive[names].transpose("chain", "draw", ...)


def spectral_posterior_predictive(
    built: BuiltModel,
    posterior: xr.Dataset,
    seed: int | None = None,
    variables: Sequence[str] | None = None,
) -> xr.Dataset:
    """Replicated data of a spectral fit: y_rep = offset + Xβ + Zu + e for every draw.

    β is the posterior's (drawn from β | y, θ after sampling, or sampled); u is the
    posterior's ``u_<group>`` when breeding values were drawn, else drawn here from
    u | y, β, θ exactly; e ~ N(0, σ_e² I).

    Parameters
    ----------
    built : BuiltModel
        The spectral model that produced ``posterior``.
    posterior : xarray.Dataset
        With ``var_<group>``, ``var_residual`` and ``beta``.
    seed : int, optional
        Seed of the normal draws.
    variables : list of str, optional
        Any of the response (dims (chain, draw, obs)) and the rotated response
        ``<response>_rotated`` = Uᵀy_rep (dims (chain, draw, eigen)); default both, as in
        ``idata.observed_data``.

    Returns
    -------
    xarray.Dataset

    Examples
    --------
    >>> import numpy as np, pandas as pd, xarray as xr, bayeslmm as bl
    >>> from bayeslmm.engines.bayes import build
    >>> K = bl.Kinship(np.eye(6) * 0.5 + 0.5, [f"i{k}" for k in range(6)])
    >>> df = pd.DataFrame({"y": np.arange(6.0), "id": list(K.ids)})
    >>> built = build(bl.specify("y ~ 1 + (1 | id)", df, kinship={"id": K}))
    >>> one = lambda v, *dims: xr.DataArray(np.full((1, 4, *(1,) * len(dims)), v),
    ...                                    dims=("chain", "draw", *dims))
    >>> post = xr.Dataset({"var_id": one(1.0), "var_residual": one(0.5),
    ...                    "beta": one(2.5, "fixed")})
    >>> spectral_posterior_predictive(built, post, seed=1)["y"].shape
    (1, 4, 6)
    """
    if built.strategy != "spectral":
        raise ValueError("spectral_posterior_predictive is for the spectral strategy only.")
    names = _names(built, variables)
    spec = built.spec
    term = spec.terms[0]
    rng = np.random.default_rng(seed)
    resid = fixed_residual(built, posterior)  # y − offset − Xβ
    u_name = f"u_{term.group}"
    if u_name in posterior:
        dims = ("chain", "draw", f"{term.group}_level", f"{term.group}_coef")
        u = np.asarray(posterior[u_name].transpose(*dims)).reshape(resid.shape[0], -1)
        genetic = np.asarray(term.incidence() @ u.T).T
    else:
        genetic = conditional_genetic_values(built, posterior, rng)
    var_e = np.asarray(posterior["var_residual"].transpose("chain", "draw")).reshape(-1, 1)
    noise = np.sqrt(var_e) * rng.standard_normal(resid.shape)
    # offset + Xβ = y − resid
    y_rep = np.asarray(spec.y, dtype=float)[None, :] - resid + genetic + noise
    return _replicates(built, posterior, y_rep, names)


def laplace_linear_predictor(
    built: BuiltModel, posterior: xr.Dataset, rng: np.random.Generator
) -> np.ndarray:
    """Draws of the linear predictor η (shape (draws, n)) of a laplace-marginal fit.

    η = offset + Xβ + Σ Z_j u_j from the posterior's draws of β and u (the Laplace
    approximation of p(β, u | y, v), :func:`~bayeslmm.engines.bayes.laplace_marginal.
    add_laplace_draws`), plus, with an observation-level effect, e drawn from its
    conditional in the same Gaussian approximation (see the module docstring): so that η is
    a draw of the approximation N(f̂, (Σ⁻¹ + W)⁻¹) of p(f | y, v).

    Examples
    --------
    >>> # eta = laplace_linear_predictor(fit.built, fit.idata.posterior, np.random.default_rng(1))
    """
    spec = built.spec
    marginal = built.cache["laplace"]
    fe = built.cache["laplace_fixed"]
    n_draws = posterior.sizes["chain"] * posterior.sizes["draw"]

    def flat(name: str, *dims: str) -> np.ndarray:
        if name not in posterior:
            raise ValueError(
                f"The posterior has no draws of {name}; draw β and u first with "
                "add_laplace_draws(built, idata) (bayeslmm's fit does this itself)."
            )
        return np.asarray(posterior[name].transpose("chain", "draw", *dims)).reshape(n_draws, -1)

    offset = np.zeros(spec.n_obs) if spec.offset is None else np.asarray(spec.offset, float)
    eta = np.broadcast_to(offset, (n_draws, spec.n_obs)).copy()
    if fe is not None:
        eta += flat(fe.sampled_name, "fixed") @ fe.design.T
    variances = []
    for t in spec.terms:
        u = flat(f"u_{t.group}", f"{t.group}_level", f"{t.group}_coef")
        eta += np.asarray(t.incidence() @ u.T).T
        variances.append(flat(f"var_{t.group}")[:, 0])
    if "var_olre" in posterior:
        # the order of LaplaceMarginal's components: the terms, then the olre
        V = np.column_stack([*variances, flat("var_olre")[:, 0]])
        for s, v in enumerate(V):
            md = marginal.mode(v)
            pseudo = md.f + md.a / md.W  # ỹ: the Gaussian pseudo-data at the mode
            precision = 1.0 / v[-1] + md.W
            mean = md.W * (pseudo - eta[s]) / precision
            eta[s] += mean + rng.standard_normal(spec.n_obs) / np.sqrt(precision)
    return eta


def laplace_posterior_predictive(
    built: BuiltModel,
    posterior: xr.Dataset,
    seed: int | None = None,
    variables: Sequence[str] | None = None,
) -> xr.Dataset:
    """Replicated data of a laplace-marginal fit: y_rep from the family given the draws of
    η of :func:`laplace_linear_predictor`.

    Parameters
    ----------
    built : BuiltModel
        The laplace-marginal model that produced ``posterior``.
    posterior : xarray.Dataset
        With ``var_<group>`` (and ``var_olre``), ``beta`` and ``u_<group>``.
    seed : int, optional
    variables : list of str, optional
        The response only (the default).

    Returns
    -------
    xarray.Dataset
        The response, dims (chain, draw, obs).

    Examples
    --------
    >>> # laplace_posterior_predictive(fit.built, fit.idata.posterior, seed=1)["y"]
    """
    if built.strategy != "laplace-marginal":
        raise ValueError("laplace_posterior_predictive is for the laplace-marginal strategy.")
    names = _names(built, variables)
    rng = np.random.default_rng(seed)
    eta = laplace_linear_predictor(built, posterior, rng)
    y_rep = built.spec.family.draw_response(eta, rng, built.spec.trials)
    return _replicates(built, posterior, np.asarray(y_rep), names)
