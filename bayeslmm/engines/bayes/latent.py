"""The latent strategy's model: every random effect sampled, non-centred (everything else).

Random effects are u = U √S z L_Σᵀ with z ~ N(0, I) (q × m), U √S the (optionally
truncated) eigenbasis of K and L_Σ the Cholesky factor of the m × m covariance of the term's
coefficients; iid terms use u = z L_Σᵀ (:mod:`bayeslmm.engines.bayes.terms`). No Cholesky
factor or inverse of K is ever inside the sampled graph. Any family, any number of terms,
slopes and a model for the residual variance (``sigma="~ env"``).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from bayeslmm.engines.bayes.built import (
    BuiltModel,
    add_variance_shares,
    h2_term,
    model_coords,
)
from bayeslmm.engines.bayes.fixed_effects import normal_vector, sampled_fixed_effects
from bayeslmm.engines.bayes.terms import (
    latent_effect,
    share_variances,
    term_cholesky,
    term_contribution,
    term_variance,
)
from bayeslmm.priors import PriorSet
from bayeslmm.spec import ModelSpec


def build_latent(spec: ModelSpec, priors: PriorSet, rank_share: float | None = None) -> BuiltModel:
    """The latent strategy's :class:`BuiltModel` (it applies to every model).

    Parameters
    ----------
    spec : ModelSpec
    priors : PriorSet
        Resolved priors (:func:`bayeslmm.priors.resolve_priors`).
    rank_share : float, optional
        Keep the leading eigenvectors of each kinship holding this share of its trace
        (e.g. 0.99); default all with a positive eigenvalue.

    Returns
    -------
    BuiltModel

    Examples
    --------
    >>> import pandas as pd, bayeslmm as bl
    >>> from bayeslmm.priors import resolve_priors
    >>> df = pd.DataFrame({"y": [1.0, 2.0, 0.5, 1.5], "g": ["a", "a", "b", "b"]})
    >>> spec = bl.specify("y ~ 1 + (1 | g)", df)
    >>> sorted(v.name for v in build_latent(spec, resolve_priors(spec)).model.free_RVs)
    ['beta', 'sd_g', 'sigma', 'z_g']
    """
    import pymc as pm

    start = time.perf_counter()
    coords = model_coords(spec)
    for t in spec.terms:
        if t.kinship is not None:
            coords[f"{t.group}_basis"] = np.arange(t.kinship.root(rank_share).rank)
    components = tuple(coords["component"])
    with pm.Model(coords=coords) as model:
        # the order in which variables are created is the order of the sampler's coordinates:
        # β, the share parametrisation, each term, the residual
        beta, design = sampled_fixed_effects(spec, priors)
        if priors.uses_shares:
            given_vars, var_residual = share_variances(spec, priors)
        else:
            given_vars, var_residual = [None] * len(spec.terms), None
        eta_fixed = _fixed_predictor(spec, beta, design)
        eta, term_vars, share_vars = _add_random_effects(
            spec, priors, eta_fixed, given_vars, rank_share
        )
        if spec.family.is_gaussian:
            sigma, var_residual = _gaussian_residual(spec, priors, var_residual)
        else:
            sigma = None
            eta, var_residual = _latent_residual(spec, priors, eta, eta_fixed, term_vars)
        spec.family.pymc_likelihood(spec.response, eta, spec.y, spec.trials, sigma=sigma)
        var_residual = pm.Deterministic("var_residual", var_residual)
        add_variance_shares(spec, share_vars, var_residual, components)
    return BuiltModel(
        model=model,
        spec=spec,
        strategy="latent",
        priors=priors,
        rotation=None,
        components=components,
        h2_term=h2_term(spec),
        observed_name=spec.response,
        timing={"build_s": time.perf_counter() - start, "eigh_s": 0.0},
    )


def _fixed_predictor(spec: ModelSpec, beta: Any, design: np.ndarray | None) -> Any:
    """offset + X β (the offset alone without fixed effects)."""
    import pytensor.tensor as pt

    offset = np.zeros(spec.n_obs) if spec.offset is None else np.asarray(spec.offset)
    eta_fixed = pt.as_tensor(offset)
    if beta is not None:
        eta_fixed = eta_fixed + pt.dot(pt.as_tensor(design), beta)
    return eta_fixed


def _add_random_effects(
    spec: ModelSpec,
    priors: PriorSet,
    eta: Any,
    given_vars: list[Any],
    rank_share: float | None,
) -> tuple[Any, list[Any], list[Any]]:
    """η + Σ_k Z_k u_k, and each term's variance at K_ii = 1 (``var_<g>``) and at the
    sample's kinship scale (the variance shares)."""
    import pymc as pm

    term_vars, share_vars = [], []
    for term, given in zip(spec.terms, given_vars, strict=True):
        kind, value = term_cholesky(term, priors, given)
        var_t = pm.Deterministic(f"var_{term.group}", term_variance(term, kind, value))
        term_vars.append(var_t)
        share_vars.append(term_variance(term, kind, value, "sample"))
        u = latent_effect(term, kind, value, rank_share)
        eta = eta + term_contribution(term, u)
    return eta, term_vars, share_vars


def _gaussian_residual(spec: ModelSpec, priors: PriorSet, var_residual: Any) -> tuple[Any, Any]:
    """σ (per observation with a sigma formula) and the residual variance of the shares."""
    import pymc as pm
    import pytensor.tensor as pt

    if spec.sigma_X is not None:
        plist = [
            priors.sigma_intercept if nm == "Intercept" else priors.sigma_slopes[nm]
            for nm in spec.sigma_names
        ]
        mu_g, sd_gam = normal_vector(plist, "the sigma formula")
        gamma = pm.Normal("sigma_coef", mu=mu_g, sigma=sd_gam, dims="sigma_fixed")
        sigma = pt.exp(pt.dot(pt.as_tensor(np.asarray(spec.sigma_X)), gamma))
        return sigma, pt.mean(sigma**2)
    if var_residual is None:
        sigma = priors.sigma.to_pymc("sigma")
        return sigma, sigma**2
    return pm.Deterministic("sigma", pt.sqrt(var_residual)), var_residual


def _latent_residual(
    spec: ModelSpec, priors: PriorSet, eta: Any, eta_fixed: Any, term_vars: list[Any]
) -> tuple[Any, Any]:
    """A GLMM's observation-level effect (added to η) and its latent-scale residual variance."""
    import pymc as pm
    import pytensor.tensor as pt

    var_olre = pt.as_tensor(0.0)
    if priors.sd_olre is not None:
        sd_olre = priors.sd_olre.to_pymc("sd_olre")
        z_olre = pm.Normal("z_olre", 0.0, 1.0, dims="obs")
        eta = eta + sd_olre * z_olre
        var_olre = pm.Deterministic("var_olre", sd_olre**2)
    var_random = sum(term_vars) if term_vars else pt.as_tensor(0.0)
    # one formula (the family's) serves this model and the draws of other routes
    var_residual = pt.as_tensor(
        spec.family.latent_residual_variance(eta_fixed, var_random, var_olre, xp=pt)
    )
    return eta, var_residual
