"""The sparse-pedigree strategy's model: the Gaussian animal model on A⁻¹'s factors.

For ``y ~ X + (1 | id)`` with a kinship from ``pedigree_relationship(ped, sparse=True)``,
NUTS samples the non-centred Mendelian-sampling parametrisation of every animal's value
(:mod:`bayeslmm.engines.bayes.pedigree_density`); this module says when the strategy
applies and builds its :class:`~bayeslmm.engines.bayes.built.BuiltModel` (which has no
PyMC model). Kept apart from the density so that choosing a strategy loads no numba.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: What the sparse-pedigree strategy needs, in words.
REQUIREMENT = (
    "The sparse-pedigree strategy needs a Gaussian animal model: one random term with one "
    "coefficient, e.g. (1 | id), whose kinship is pedigree_relationship(pedigree, "
    "sparse=True), and one residual variance"
)


def pedigree_obstacles(spec: Any, gaussian: bool = True) -> list[str]:
    """Why the sparse-pedigree strategy does not apply to ``spec`` (empty when it does);
    ``gaussian=False``: the NUTS strategy's, which also covers Poisson and binomial GLMMs.

    Examples
    --------
    >>> import pandas as pd, bayeslmm as bl
    >>> df = pd.DataFrame({"y": [1.0, 2.0, 0.5, 1.5], "g": ["a", "a", "b", "b"]})
    >>> pedigree_obstacles(bl.specify("y ~ 1 + (1 | g)", df))
    ['term (1|g) has no sparse pedigree kinship']
    """
    from bayeslmm.kinship.pedigree_inverse import SparsePedigreeKinship

    reasons = []
    if gaussian and not spec.family.is_gaussian:
        reasons.append(
            f"family is {spec.family.name} (GLMMs on a sparse pedigree: strategy "
            "'sparse-pedigree-nuts')"
        )
    elif not spec.family.is_gaussian and spec.family.glmm_density_parametrisation is None:
        reasons.append(f"family {spec.family.name} has no closed-form density")
    if len(spec.terms) != 1:
        reasons.append(f"{len(spec.terms)} random terms")
    elif not isinstance(spec.terms[0].kinship, SparsePedigreeKinship):
        reasons.append(f"term ({spec.terms[0].label}) has no sparse pedigree kinship")
    elif spec.terms[0].n_coef != 1 or np.any(np.asarray(spec.terms[0].design) != 1.0):
        reasons.append(f"term ({spec.terms[0].label}) has slopes")
    if spec.sigma_X is not None:
        reasons.append("the residual variance has a model (sigma formula)")
    return reasons


def closed_form_priors(priors: Any, group: str) -> list[str]:
    """The variance priors without a closed-form density (the strategy needs them all)."""
    if priors.sigma is None or not priors.uses_shares:
        used = (priors.sd[group], priors.sigma if priors.sigma is not None else priors.sd_olre)
    else:
        used = (priors.total,)
    used = tuple(p for p in used if p is not None)
    return [p.describe() for p in used if not p.has_closed_form]


def build_pedigree(spec: Any, priors: Any, strategy: str = "sparse-pedigree") -> Any:
    """The sparse-pedigree strategy's :class:`~bayeslmm.engines.bayes.built.BuiltModel`.

    It has no PyMC model: the ``"sparse-pedigree"`` strategy draws from the exact marginal
    posterior (:mod:`~bayeslmm.engines.bayes.pedigree_marginal`), ``"sparse-pedigree-nuts"``
    samples :class:`~bayeslmm.engines.bayes.pedigree_density.PedigreeDensity` with nutpie;
    asking for ``built.model`` raises a :class:`~bayeslmm.errors.SpecificationError` that
    says so.

    Examples
    --------
    >>> import pandas as pd, bayeslmm as bl
    >>> from bayeslmm.priors import resolve_priors
    >>> ped = pd.DataFrame({"id": list("abcde"), "sire": [None, None, "a", "a", "c"],
    ...                     "dam": [None, None, "b", "b", "d"]})
    >>> A = bl.pedigree_relationship(ped, sparse=True)
    >>> df = pd.DataFrame({"id": list("cde"), "y": [1.0, 0.5, 2.0]})
    >>> spec = bl.specify("y ~ 1 + (1 | id)", df, kinship={"id": A})
    >>> build_pedigree(spec, resolve_priors(spec)).strategy
    'sparse-pedigree'
    """
    import time

    from bayeslmm.engines.bayes.built import BuiltModel, component_labels, h2_term
    from bayeslmm.errors import SpecificationError

    start = time.perf_counter()
    group = spec.terms[0].group
    bad = closed_form_priors(priors, group)
    if bad:
        raise SpecificationError(
            f"The sparse-pedigree strategy writes its priors in closed form; {bad} has none. "
            "Use a built-in prior family (see bayeslmm.priors)."
        )

    def no_pymc_model() -> Any:
        raise SpecificationError(
            f"The {strategy} strategy has no PyMC model (it draws from closed forms, never "
            "forming A), so sampler='pymc', 'numpyro' and 'blackjax' do not apply to it. For "
            "a PyMC model of a small pedigree, give the dense kinship "
            "pedigree_relationship(pedigree) instead."
        )

    return BuiltModel(
        model=None,
        model_factory=no_pymc_model,
        spec=spec,
        strategy=strategy,
        priors=priors,
        rotation=None,
        components=component_labels(spec),
        h2_term=h2_term(spec),
        observed_name=spec.response,
        timing={"build_s": time.perf_counter() - start, "eigh_s": 0.0},
    )


def pedigree_posterior_predictive(
    built: Any, posterior: Any, seed: int | None = None, variables: Any = None
) -> Any:
    """Replicated data of a sparse-pedigree fit: y_rep = offset + Xβ + Zu + e per draw,
    with the draws' β and ``u_<group>`` (the posterior's when it holds them, else drawn
    here from u | y, β, θ, one sparse factorisation per draw).

    Examples
    --------
    >>> # fit.posterior_predictive() calls it for a sparse-pedigree fit
    """
    import xarray as xr

    from bayeslmm.engines.bayes.conditional import fixed_residual

    spec = built.spec
    term = spec.terms[0]
    u_name = f"u_{term.group}"
    rng = np.random.default_rng(seed)
    draws = posterior[u_name] if u_name in posterior else None
    if draws is None:
        draws = marginal_breeding_values(built, posterior, np.random.SeedSequence([seed or 0, 2]))
    resid = fixed_residual(built, posterior)  # y − offset − Xβ
    dims = ("chain", "draw", f"{term.group}_level", f"{term.group}_coef")
    u = np.asarray(draws.transpose(*dims)).reshape(resid.shape[0], -1)
    genetic = np.asarray(term.incidence() @ u.T).T
    var_e = np.asarray(posterior["var_residual"].transpose("chain", "draw")).reshape(-1, 1)
    y_rep = np.asarray(spec.y, dtype=float)[None, :] - resid + genetic
    y_rep += np.sqrt(var_e) * rng.standard_normal(resid.shape)
    n_chain, n_draw = posterior.sizes["chain"], posterior.sizes["draw"]
    da = xr.DataArray(
        y_rep.reshape(n_chain, n_draw, -1),
        dims=("chain", "draw", "obs"),
        coords={
            "chain": posterior["chain"].values,
            "draw": posterior["draw"].values,
            "obs": np.arange(spec.n_obs),
        },
    )
    return xr.Dataset({spec.response: da})


def _marginal(built: Any) -> Any:
    """The :class:`~bayeslmm.engines.bayes.pedigree_marginal.PedigreeMarginal` of ``built``
    (cached: its fill-reducing ordering is computed once)."""
    from bayeslmm.engines.bayes.pedigree_marginal import pedigree_marginal

    cached = built.cache.get("pedigree_marginal")
    if cached is None:
        cached = pedigree_marginal(built)
        built.cache["pedigree_marginal"] = cached
    return cached


def draw_marginal_posterior(built: Any, draws: int, chains: int, seed: Any) -> Any:
    """``chains`` × ``draws`` independent draws of the variances (and β) of a
    sparse-pedigree animal model from their exact marginal posterior
    (:mod:`bayeslmm.engines.bayes.pedigree_marginal`), as an InferenceData.

    Examples
    --------
    >>> import numpy as np, pandas as pd, bayeslmm as bl
    >>> from bayeslmm.engines.bayes import build
    >>> ped = pd.DataFrame({"id": list("abcdef"), "sire": [None, None, "a", "a", "c", "c"],
    ...                     "dam": [None, None, "b", "b", "d", "b"]})
    >>> A = bl.pedigree_relationship(ped, sparse=True)
    >>> df = pd.DataFrame({"id": list("cdef"), "y": [1.0, 0.5, 2.0, 1.5]})
    >>> built = build(bl.specify("y ~ 1 + (1 | id)", df, kinship={"id": A}))
    >>> idata = draw_marginal_posterior(built, draws=50, chains=2, seed=1)
    >>> idata.posterior["h2"].shape
    (2, 50)
    """
    import arviz as az
    import xarray as xr

    from bayeslmm.engines.bayes.built import model_coords
    from bayeslmm.engines.bayes.fixed_effects import fixed_effects_prior
    from bayeslmm.engines.bayes.pedigree_marginal import draw_fixed, draw_posterior

    marginal = _marginal(built)
    rng = np.random.default_rng(seed)
    total = draws * chains
    out = draw_posterior(marginal, total, rng)
    t, values = out["t"], out["values"]
    named: dict[str, list] = {}
    for point in t:
        for name, value in marginal.prior.expand(point).items():
            named.setdefault(name, []).append(value)
    arrays = {k: np.stack(v) for k, v in named.items()}
    h = 0.5 * (1.0 + np.tanh(0.5 * t[:, 0]))
    var_e = (1.0 - h) * np.exp(t[:, 1])
    fe = fixed_effects_prior(built.spec, built.priors)
    if fe is not None:
        gamma = draw_fixed(marginal, values, var_e, rng)
        beta_s = np.asarray(fe.mu, float) + np.asarray(fe.sd, float) * gamma
        arrays[fe.sampled_name] = beta_s
        if fe.sampled_name != "beta":
            arrays["beta"] = fe.uncentre(beta_s)
    coords = model_coords(built.spec)
    dims_of = {"beta": ("fixed",), "beta_centered": ("fixed",), "variance_share": ("component",)}
    data = {}
    for name, value in arrays.items():
        dims = dims_of.get(name, ())
        data[name] = xr.DataArray(
            value.reshape(chains, draws, *value.shape[1:]),
            dims=("chain", "draw", *dims),
            coords={d: list(coords[d]) for d in dims},
        )
    posterior = xr.Dataset(data, coords={"chain": np.arange(chains), "draw": np.arange(draws)})
    posterior.attrs.update(
        {
            "sampler": "exact marginal posterior on a grid (pedigree_marginal)",
            "n_factorizations": int(marginal.n_factorizations),
            "n_nodes": int(out["n_nodes"]),
        }
    )
    return az.InferenceData(posterior=posterior)


def marginal_breeding_values(built: Any, posterior: Any, seed: Any = None) -> Any:
    """u | y, β, θ of the term's levels for every posterior draw of a sparse-pedigree fit:
    one sparse factorisation per draw (exact).

    Examples
    --------
    >>> # fit.breeding_values() calls it for a sparse-pedigree fit
    """
    import xarray as xr

    from bayeslmm.engines.bayes.fixed_effects import fixed_effects_prior
    from bayeslmm.engines.bayes.pedigree_marginal import draw_breeding_values

    marginal = _marginal(built)
    spec = built.spec
    term = spec.terms[0]
    n_chain, n_draw = posterior.sizes["chain"], posterior.sizes["draw"]

    def flat(name: str) -> np.ndarray:
        return np.asarray(posterior[name].transpose("chain", "draw", ...)).reshape(
            n_chain * n_draw, -1
        )

    var_a = flat(f"var_{term.group}")[:, 0]
    var_e = flat("var_residual")[:, 0]
    fe = fixed_effects_prior(spec, built.priors)
    if fe is None:
        gamma = np.zeros((var_a.size, 0))
    else:
        beta_s = flat(fe.sampled_name)
        gamma = (beta_s - np.asarray(fe.mu, float)) / np.asarray(fe.sd, float)
    u_all = draw_breeding_values(
        marginal, np.log(var_e / var_a), var_e, gamma, np.random.default_rng(seed)
    )
    u = u_all[:, np.asarray(term.kinship.positions)]
    return xr.DataArray(
        u.reshape(n_chain, n_draw, term.n_levels, 1),
        dims=("chain", "draw", f"{term.group}_level", f"{term.group}_coef"),
        coords={
            "chain": posterior["chain"].values,
            "draw": posterior["draw"].values,
            f"{term.group}_level": list(term.levels),
            f"{term.group}_coef": list(term.covariates),
        },
        name=f"u_{term.group}",
    )


def posterior_breeding_values(
    fit: Any, ids: Any = None, max_draws: int | None = None, seed: Any = None
) -> Any:
    """Posterior EBVs of any animals of the pedigree (ancestors without records included)
    from a sparse-pedigree NUTS fit: u | y, β, θ drawn for each posterior draw (one sparse
    factorisation per draw, exact).

    Parameters
    ----------
    fit : BayesFit
        A fit whose strategy is ``"sparse-pedigree"`` or ``"sparse-pedigree-nuts"``.
    ids : sequence of str, optional
        Animals of the pedigree; all by default.
    max_draws : int, optional
        Use at most this many posterior draws, evenly spaced (each costs one factorisation:
        about a second at 100,000 animals).
    seed : optional
        Seed of the normal draws (default: the fit's).

    Returns
    -------
    pandas.DataFrame
        Indexed by animal: ``ebv`` (posterior mean), ``sd`` (posterior SD, √PEV),
        ``ci_low`` / ``ci_high`` (equal-tailed interval of the fit's ``hdi_prob``),
        ``accuracy`` √(1 − sd² / ((1 + F) E[σ_a²])) and ``F``.

    Examples
    --------
    >>> # breeding_values(fit, ids) of bayeslmm.engines.reml.sparse_pedigree calls it
    """
    import pandas as pd

    from bayeslmm.engines.bayes.fixed_effects import fixed_effects_prior
    from bayeslmm.engines.bayes.pedigree_marginal import draw_breeding_values
    from bayeslmm.errors import SpecificationError

    built = fit.built
    spec = built.spec
    term = spec.terms[0]
    kin = term.kinship
    all_ids = list(kin.pedigree_ids) if ids is None else [str(i) for i in ids]
    index = {i: k for k, i in enumerate(kin.pedigree_ids)}
    missing = [i for i in all_ids if i not in index]
    if missing:
        raise SpecificationError(
            f"{len(missing)} ids are not in the pedigree: {missing[:5]}; give animals of "
            f"pedigree kinship '{kin.name}'."
        )
    rows = np.fromiter((index[i] for i in all_ids), dtype=np.int64, count=len(all_ids))
    post = fit.posterior
    n_total = post.sizes["chain"] * post.sizes["draw"]

    def flat(name: str) -> np.ndarray:
        return np.asarray(post[name].transpose("chain", "draw", ...)).reshape(n_total, -1)

    keep = np.arange(n_total)
    if max_draws is not None and max_draws < n_total:
        keep = np.unique(np.linspace(0, n_total - 1, int(max_draws)).round().astype(int))
    var_a = flat(f"var_{term.group}")[keep, 0]
    var_e = flat("var_residual")[keep, 0]
    fe = fixed_effects_prior(spec, built.priors)
    if fe is None:
        gamma = np.zeros((keep.size, 0))
    else:
        beta_s = flat(fe.sampled_name)[keep]
        gamma = (beta_s - np.asarray(fe.mu, float)) / np.asarray(fe.sd, float)
    rng = np.random.default_rng(fit.seed if seed is None else seed)
    u = draw_breeding_values(_marginal(built), np.log(var_e / var_a), var_e, gamma, rng)[:, rows]
    tail = 0.5 * (1.0 - fit.hdi_prob)
    sd = u.std(axis=0, ddof=1) if keep.size > 1 else np.full(rows.size, np.nan)
    F = kin.inbreeding[rows]
    accuracy = np.sqrt(np.clip(1.0 - sd**2 / ((1.0 + F) * var_a.mean()), 0.0, 1.0))
    return pd.DataFrame(
        {
            "ebv": u.mean(axis=0),
            "sd": sd,
            "ci_low": np.quantile(u, tail, axis=0),
            "ci_high": np.quantile(u, 1.0 - tail, axis=0),
            "accuracy": accuracy,
            "F": F,
        },
        index=pd.Index(all_ids, name=term.group),
    )
