"""A built model's posterior as a fit: sample, diagnose, and hand the result its samplers.

:func:`fit_posterior` is what every NUTS fit runs after building (``LMM(...).fit()``, the
association scan's posterior shares), so that a fit made anywhere carries the same timing,
diagnostics and the strategy's samplers of what it did not sample (breeding values,
replicated data).
"""

from __future__ import annotations

import time
from typing import Any

from bayeslmm.engines.bayes.built import BuiltModel


def fit_posterior(
    built: BuiltModel,
    *,
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 4,
    cores: int | None = None,
    seed: int | None = None,
    sampler: str = "auto",
    progressbar: bool | None = None,
    target_accept: float = 0.9,
    hdi_prob: float = 0.95,
    log_likelihood: bool = False,
    started: float | None = None,
) -> Any:
    """NUTS on a built model, wrapped as a :class:`~bayeslmm.results.bayes_result.BayesFit`.

    Parameters
    ----------
    built : BuiltModel
        From :func:`bayeslmm.engines.bayes.build`.
    draws, tune, chains, cores, seed, sampler, progressbar, target_accept, log_likelihood
        As :func:`bayeslmm.engines.bayes.sampling.sample`; the sampler name is resolved
        (``"auto"`` → the one used) and recorded in the fit with the seed.
    hdi_prob : float
        Interval mass of the fit's tables.
    started : float, optional
        ``time.perf_counter()`` when the caller's whole call began (before building), for
        ``timing["total_s"]``; default: this call's seconds plus the build's.

    Returns
    -------
    BayesFit
        With ``timing`` (eigh_s, build_s, the sampler's steps, total_s), the diagnostics
        and their messages.

    Examples
    --------
    >>> import numpy as np, pandas as pd, bayeslmm as bl
    >>> from bayeslmm.engines.bayes import build
    >>> K = bl.Kinship(np.eye(8) * 0.5 + 0.5, [f"i{k}" for k in range(8)])
    >>> df = pd.DataFrame({"y": np.arange(8.0), "id": list(K.ids)})
    >>> fit = fit_posterior(build(bl.specify("y ~ 1 + (1 | id)", df, kinship={"id": K})),
    ...                     draws=50, tune=50, chains=1, seed=1, progressbar=False)
    >>> fit.strategy, fit.seed
    ('spectral', 1)
    """
    from bayeslmm.engines.bayes.sampling import diagnose, resolve_sampler, sample
    from bayeslmm.engines.bayes.strategies import strategy_of
    from bayeslmm.results.bayes_result import BayesFit

    start = time.perf_counter()
    sampler = resolve_sampler(sampler)
    idata, sample_timing = sample(
        built,
        draws=draws,
        tune=tune,
        chains=chains,
        cores=cores,
        seed=seed,
        sampler=sampler,
        progressbar=progressbar,
        target_accept=target_accept,
        log_likelihood=log_likelihood,
    )
    diagnostics, messages = diagnose(idata)
    strategy = strategy_of(built)
    if strategy.draws_directly:
        sampler = "exact"  # independent draws from closed forms, not NUTS
    return BayesFit(
        idata=idata,
        built=built,
        timing={
            "eigh_s": built.timing["eigh_s"],
            "build_s": built.timing["build_s"],
            **sample_timing,
            "total_s": time.perf_counter() - start + built.timing["build_s"]
            if started is None
            else time.perf_counter() - started,
        },
        diagnostics=diagnostics,
        messages=messages,
        hdi_prob=hdi_prob,
        sampler=sampler,
        seed=seed,
        # the strategy knows how to draw what it did not sample
        breeding_value_sampler=strategy.breeding_value_sampler(built),
        posterior_predictive_sampler=strategy.posterior_predictive_sampler(built),
    )
