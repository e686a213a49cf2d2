"""NUTS for multi-trait models: nutpie samples the closed-form density of
:mod:`~bayeslmm.engines.bayes.multitrait_density`, and the draws are wrapped in a
:class:`~bayeslmm.results.multitrait.MultiTraitBayesFit` with plain-words diagnostics."""

from __future__ import annotations

import time

import numpy as np

from bayeslmm.engines.bayes.multitrait_density import (
    multitrait_density,
    nutpie_model,
    resolve_multitrait_priors,
)
from bayeslmm.engines.bayes.sampling import (
    _blas_limit,
    available_cores,
    blas_threads_per_chain,
    default_progressbar,
)
from bayeslmm.multitrait_spec import MultiTraitSpec
from bayeslmm.results.multitrait import MultiTraitBayesFit


def sample_multitrait(
    spec: MultiTraitSpec,
    *,
    draws: int,
    tune: int,
    chains: int,
    cores: int | None,
    seed: int,
    progressbar: bool | None,
    target_accept: float,
    hdi_prob: float,
) -> MultiTraitBayesFit:
    """Sample the posterior of a multi-trait model with nutpie.

    Parameters
    ----------
    spec : MultiTraitSpec
    draws, tune, chains, cores, seed, progressbar, target_accept, hdi_prob
        As :meth:`bayeslmm.LMM.fit` (checked by the caller).

    Returns
    -------
    MultiTraitBayesFit

    Examples
    --------
    >>> # fit = sample_multitrait(spec, draws=500, tune=500, chains=2, cores=1, seed=1,
    >>> #                         progressbar=False, target_accept=0.9, hdi_prob=0.95)
    """
    import arviz as az
    import nutpie

    started = time.perf_counter()
    density = multitrait_density(spec)
    compiled = nutpie_model(density)
    build_s = time.perf_counter() - started
    if cores is None:
        cores = max(1, min(chains, available_cores()))
    progressbar = default_progressbar() if progressbar is None else bool(progressbar)
    start = time.perf_counter()
    with _blas_limit(blas_threads_per_chain(chains, cores)):
        idata = nutpie.sample(
            compiled,
            draws=draws,
            tune=tune,
            chains=chains,
            cores=cores,
            seed=seed,
            progress_bar=progressbar,
            target_accept=target_accept,
            save_warmup=False,
        )
    sample_s = time.perf_counter() - start
    X = np.asarray(spec.X, dtype=float)
    has_intercept = bool(spec.fixed_names) and spec.fixed_names[0] == "Intercept"
    Xc = X - (np.r_[0.0, X[:, 1:].mean(axis=0)] if has_intercept else 0.0)
    priors = resolve_multitrait_priors(spec, Xc, has_intercept)
    messages = []
    divergent = int(idata.sample_stats["diverging"].values.sum())
    if divergent:
        messages.append(
            f"{divergent} divergent transition(s): the posterior may be biased near a "
            "boundary (a variance near 0 or a correlation near ±1). Refit with "
            "target_accept=0.95 or 0.99, or a stronger LKJ prior (cor_<group>: ('lkj', 3))."
        )
    if chains > 1:
        post = idata.posterior
        worst = max(
            float(np.nanmax(az.rhat(post[name]).to_array().values))
            for name in ("genetic_covariance", "residual_covariance")
        )
        if worst > 1.01:
            messages.append(
                f"R-hat up to {worst:.3f} (> 1.01): the chains disagree; run more draws "
                "(tune and draws) before trusting the tables."
            )
    return MultiTraitBayesFit(
        traits=spec.traits,
        fixed_names=spec.fixed_names,
        idata=idata,
        hdi_prob=hdi_prob,
        seed=seed,
        timing={
            "build_s": build_s,
            "sample_s": sample_s,
            "total_s": time.perf_counter() - started,
        },
        formula=spec.formula,
        priors=priors.table(spec.traits, spec.group),
        messages=messages,
        route=density.route,
        spec=spec,
    )
