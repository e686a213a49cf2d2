"""The pieces of one random term in the PyMC model: the covariance of its coefficients, the
variance it adds, its non-centred latent effect and its share of the phenotypic variance.

``term_cholesky`` registers ``sd_g`` (and ``cov_g`` / ``corr_g`` / ``chol_g`` for slopes),
``latent_effect`` registers ``z_g`` and ``u_g`` (u = U √S z L_Σᵀ in the eigenbasis of K, never
a Cholesky factor or inverse of K inside the graph), ``share_variances`` the share (h²)
parametrisation's ``h2`` / ``shares`` and ``total_sd`` / ``total_variance``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bayeslmm.priors import Prior, PriorSet
from bayeslmm.spec import ModelSpec, RandomTerm


def sd_prior_for(prior: Prior, m: int) -> Prior:
    """The prior with vector parameters squeezed to scalars for a one-coefficient term.

    Examples
    --------
    >>> sd_prior_for(Prior("halfnormal", (np.array([2.0]),)), 1).params
    (2.0,)
    """
    if m != 1:
        return prior
    params = tuple(float(np.asarray(p).ravel()[0]) if np.size(p) == 1 else p for p in prior.params)
    return Prior(prior.family, params)


def term_cholesky(term: RandomTerm, priors: PriorSet, var_given: Any = None) -> tuple[str, Any]:
    """The SD(s) / Cholesky factor of a term's coefficient covariance, inside a model context.

    Returns ``(kind, value)``: ``("scalar", sd)``, ``("diag", sd_vector)`` or
    ``("chol", L)``, and registers ``sd_g`` (and ``cov_g``, ``corr_g``, ``chol_g`` for
    slopes). ``var_given`` (share parametrisation) is the term's variance, already sampled.

    Examples
    --------
    >>> import pandas as pd, pymc as pm, bayeslmm as bl
    >>> from bayeslmm.priors import resolve_priors
    >>> df = pd.DataFrame({"y": [1.0, 2.0, 0.5, 1.5], "g": ["a", "a", "b", "b"]})
    >>> spec = bl.specify("y ~ 1 + (1 | g)", df)
    >>> with pm.Model():
    ...     kind, sd = term_cholesky(spec.terms[0], resolve_priors(spec))
    >>> kind, sd.name
    ('scalar', 'sd_g')
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
    prior = sd_prior_for(priors.sd[g], m)
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


def term_variance(term: RandomTerm, kind: str, value: Any, scale: str = "unit") -> Any:
    """Variance the term adds, Σ_jk Σ_jk W_jk with W = ``term.variance_weights(scale)``:
    ``"unit"``, the mean over observations of d_iᵀ Σ d_i at K_ii = 1; ``"sample"``, across
    the sample's observations at the kinship's own scale (the variance shares).

    ``kind`` and ``value`` are what :func:`term_cholesky` returned.

    Examples
    --------
    >>> import pandas as pd, bayeslmm as bl
    >>> df = pd.DataFrame({"y": [1.0, 2.0, 0.5, 1.5], "g": ["a", "a", "b", "b"]})
    >>> float(term_variance(bl.specify("y ~ 1 + (1 | g)", df).terms[0], "scalar", 2.0))
    4.0
    """
    import pytensor.tensor as pt

    W = term.variance_weights(scale)
    if kind == "scalar":
        return value**2 if W[0, 0] == 1.0 else value**2 * float(W[0, 0])
    if kind == "diag":
        return pt.dot(pt.as_tensor(np.diag(W)), value**2)
    return pt.sum(pt.as_tensor(W) * (value @ value.T))


def latent_effect(term: RandomTerm, kind: str, value: Any, rank_share: float | None) -> Any:
    """u_g (q × m) = basis · z · L_Σᵀ, non-centred; registers ``z_g`` and ``u_g``.

    The basis is U √S of the kinship (its leading eigenvectors holding ``rank_share`` of the
    trace; all with a positive eigenvalue by default), the identity for iid terms.

    Examples
    --------
    >>> import pandas as pd, pymc as pm, bayeslmm as bl
    >>> df = pd.DataFrame({"y": [1.0, 2.0, 0.5, 1.5], "g": ["a", "a", "b", "b"]})
    >>> term = bl.specify("y ~ 1 + (1 | g)", df).terms[0]
    >>> with pm.Model(coords={"g_level": ["a", "b"], "g_coef": ["Intercept"]}) as m:
    ...     u = latent_effect(term, "scalar", 1.5, None)
    >>> m.named_vars_to_dims["u_g"]
    ('g_level', 'g_coef')
    """
    import pymc as pm
    import pytensor.tensor as pt

    g = term.group
    if term.kinship is not None:
        basis = term.kinship.root(rank_share).factor  # q × r, basis basisᵀ = K (truncated)
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


def term_contribution(term: RandomTerm, u: Any) -> Any:
    """The term's part of the linear predictor, Σ_j D_ij u[level(i), j] per observation i.

    Examples
    --------
    >>> import pandas as pd, bayeslmm as bl
    >>> df = pd.DataFrame({"y": [1.0, 2.0, 0.5, 1.5], "g": ["a", "a", "b", "b"]})
    >>> term = bl.specify("y ~ 1 + (1 | g)", df).terms[0]
    >>> term_contribution(term, np.array([[1.0], [-1.0]])).tolist()
    [1.0, 1.0, -1.0, -1.0]
    """
    import pytensor.tensor as pt

    D = np.asarray(term.design, dtype=float)
    rows = u[np.asarray(term.index)]  # n × m
    if term.n_coef == 1:
        return rows[:, 0] * D[:, 0] if np.any(D[:, 0] != 1.0) else rows[:, 0]
    return pt.sum(rows * pt.as_tensor(D), axis=1)


def share_variances(spec: ModelSpec, priors: PriorSet) -> tuple[list[Any], Any]:
    """σ²_P and the shares (share parametrisation): returns (term variances, residual var).

    Registers ``total_sd`` or ``total_variance`` and ``h2`` (``share_<g>`` for an iid term)
    or ``shares``, inside a model context.

    Examples
    --------
    >>> import numpy as np, pandas as pd, pymc as pm, bayeslmm as bl
    >>> from bayeslmm.priors import resolve_priors
    >>> K = bl.Kinship(np.eye(4) * 0.5 + 0.5, ["a", "b", "c", "d"])
    >>> df = pd.DataFrame({"y": [1.0, 2.0, 0.5, 1.5], "id": ["a", "b", "c", "d"]})
    >>> spec = bl.specify("y ~ 1 + (1 | id)", df, kinship={"id": K}, priors={"h2": ("beta", 2, 2)})
    >>> with pm.Model() as m:
    ...     term_vars, var_residual = share_variances(spec, resolve_priors(spec))
    >>> sorted(v.name for v in m.free_RVs)
    ['h2', 'total_sd']
    """
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
