"""Exact draws of the random effects u | y, θ after a spectral (marginal) fit.

The spectral strategy samples only β, σ_g² and σ_e². For each posterior draw θ = (β, σ_g²,
σ_e²) the breeding values have a normal conditional distribution; we draw from it in an
eigenbasis, never forming K⁻¹ or V⁻¹.

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

from bayeslmm.engines.bayes.builder import BuiltModel

if TYPE_CHECKING:
    import xarray as xr


def _basis(built: BuiltModel) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(P, d, BQ), cached on the built model."""
    cached = built.cache.get("conditional_basis")
    if cached is not None:
        return cached
    term = built.spec.terms[0]
    values, vectors = term.kinship.low_rank(1.0)
    B = vectors * np.sqrt(values)
    M = np.asarray(term.incidence() @ B)
    P, d, Qt = np.linalg.svd(M, full_matrices=False)
    out = (P, d, B @ Qt.T)
    built.cache["conditional_basis"] = out
    return out


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
    spec = built.spec
    term = spec.terms[0]
    P, d, BQ = _basis(built)
    n_chain, n_draw = posterior.sizes["chain"], posterior.sizes["draw"]
    var_g = np.asarray(posterior[f"var_{term.group}"]).reshape(-1)
    var_e = np.asarray(posterior["var_residual"]).reshape(-1)
    resid = np.broadcast_to(np.asarray(spec.y, dtype=float), (var_g.size, spec.n_obs)).copy()
    if spec.offset is not None:
        resid -= np.asarray(spec.offset)
    if spec.fixed_names:
        beta = np.asarray(posterior["beta"]).reshape(-1, len(spec.fixed_names))
        resid -= beta @ np.asarray(spec.X).T
    proj = resid @ P  # draws × k
    precision = d[None, :] ** 2 / var_e[:, None] + 1.0 / var_g[:, None]
    mean = (d[None, :] / var_e[:, None]) * proj / precision
    rng = np.random.default_rng(seed)
    w = mean + rng.standard_normal(mean.shape) / np.sqrt(precision)
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
