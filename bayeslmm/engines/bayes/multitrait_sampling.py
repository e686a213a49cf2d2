"""NUTS for multi-trait models: nutpie samples a closed-form density
(:mod:`~bayeslmm.engines.bayes.multitrait_density`, or the latent-scale GLMM's in
:mod:`~bayeslmm.engines.bayes.multitrait_glmm`), and the draws are wrapped in a
:class:`~bayeslmm.results.multitrait.MultiTraitBayesFit` with plain-words diagnostics."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from bayeslmm.engines.bayes.multitrait_density import multitrait_density, nutpie_model
from bayeslmm.engines.bayes.sampling import (
    _blas_limit,
    available_cores,
    blas_threads_per_chain,
    default_progressbar,
)
from bayeslmm.multitrait_spec import MultiTraitSpec
from bayeslmm.results.multitrait import MultiTraitBayesFit

DensityT = TypeVar("DensityT")


@dataclass(frozen=True)
class NutsSettings:
    """The NUTS settings of a multi-trait fit, as :meth:`bayeslmm.LMM.fit` takes them
    (checked by the caller); ``cores=None`` runs as many chains at once as there are cores.

    Examples
    --------
    >>> NutsSettings(draws=500, tune=500, chains=2, cores=1, seed=1, progressbar=False,
    ...              target_accept=0.9).chains
    2
    """

    draws: int
    tune: int
    chains: int
    cores: int | None
    seed: int
    progressbar: bool | None
    target_accept: float


@dataclass(frozen=True)
class NutpieRun(Generic[DensityT]):
    """One nutpie run of a closed-form multi-trait density (:func:`run_nutpie`)."""

    density: DensityT
    idata: Any  # arviz.InferenceData, warm-up left out
    messages: list[str]  # divergences and R-hat in plain words
    started: float  # time.perf_counter() before the density was built
    build_s: float
    sample_s: float

    def timing(self) -> dict[str, float]:
        """Build, sampling and total seconds, the total up to this call (so it counts what
        the caller does with the draws)."""
        return {
            "build_s": self.build_s,
            "sample_s": self.sample_s,
            "total_s": time.perf_counter() - self.started,
        }

    def fit_arguments(
        self, spec: MultiTraitSpec, settings: NutsSettings, hdi_prob: float
    ) -> dict[str, Any]:
        """The arguments every multi-trait posterior fit takes from its spec and this run
        (the density's ``prior_table`` among them); the caller adds its route and
        family-specific fields."""
        return {
            "traits": spec.traits,
            "fixed_names": spec.fixed_names,
            "idata": self.idata,
            "hdi_prob": hdi_prob,
            "seed": settings.seed,
            "timing": self.timing(),
            "formula": spec.formula,
            "priors": self.density.prior_table,  # type: ignore[attr-defined]
            "messages": self.messages,
            "spec": spec,
        }


def run_nutpie(
    spec: MultiTraitSpec,
    build: Callable[[MultiTraitSpec], DensityT],
    model: Callable[[DensityT], Any],
    settings: NutsSettings,
    *,
    rhat_of: tuple[str, ...],
) -> NutpieRun[DensityT]:
    """Build a closed-form density, sample it with nutpie and word its diagnostics.

    Parameters
    ----------
    spec : MultiTraitSpec
    build : callable
        ``build(spec)``: the density (e.g. :func:`~bayeslmm.engines.bayes.
        multitrait_density.multitrait_density`).
    model : callable
        ``model(density)``: the nutpie model that samples it.
    settings : NutsSettings
    rhat_of : tuple of str
        Posterior variables whose largest R-hat above 1.01 is reported.

    Returns
    -------
    NutpieRun

    Examples
    --------
    >>> # settings = NutsSettings(draws=500, tune=500, chains=2, cores=1, seed=1,
    >>> #                         progressbar=False, target_accept=0.9)
    >>> # run = run_nutpie(spec, multitrait_density, nutpie_model, settings,
    >>> #                  rhat_of=("genetic_covariance",))
    >>> # run.idata.posterior, run.messages, run.timing()
    """
    started = time.perf_counter()
    density = build(spec)
    compiled = model(density)
    build_s = time.perf_counter() - started
    idata, messages = nutpie_draws(compiled, settings, rhat_of=rhat_of)
    sample_s = time.perf_counter() - started - build_s
    return NutpieRun(density, idata, messages, started, build_s, sample_s)


def nutpie_draws(
    compiled: Any, settings: NutsSettings, *, rhat_of: tuple[str, ...]
) -> tuple[Any, list[str]]:
    """Sample a compiled nutpie model and word its divergences and R-hat.

    The one place a multi-trait posterior is drawn by nutpie: :func:`run_nutpie` after
    building its density, and the sparse-pedigree posterior's NUTS fallback on the density
    it built for importance sampling.

    Parameters
    ----------
    compiled : nutpie compiled model
    settings : NutsSettings
    rhat_of : tuple of str
        Posterior variables whose largest R-hat above 1.01 is reported.

    Returns
    -------
    idata : arviz.InferenceData
        Warm-up left out.
    messages : list of str
        Divergences and R-hat in plain words (empty when both are fine).

    Examples
    --------
    >>> # idata, messages = nutpie_draws(compiled, settings, rhat_of=("beta",))
    """
    import arviz as az
    import nutpie

    chains, cores = settings.chains, settings.cores
    if cores is None:
        cores = max(1, min(chains, available_cores()))
    progressbar = settings.progressbar
    progressbar = default_progressbar() if progressbar is None else bool(progressbar)
    with _blas_limit(blas_threads_per_chain(chains, cores)):
        idata = nutpie.sample(
            compiled,
            draws=settings.draws,
            tune=settings.tune,
            chains=chains,
            cores=cores,
            seed=settings.seed,
            progress_bar=progressbar,
            target_accept=settings.target_accept,
            save_warmup=False,
        )
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
        worst = max(float(np.nanmax(az.rhat(post[name]).to_array().values)) for name in rhat_of)
        if worst > 1.01:
            messages.append(
                f"R-hat up to {worst:.3f} (> 1.01): the chains disagree; run more draws "
                "(tune and draws) before trusting the tables."
            )
    return idata, messages


def sample_multitrait(
    spec: MultiTraitSpec, settings: NutsSettings, *, hdi_prob: float
) -> MultiTraitBayesFit:
    """Sample the posterior of a multi-trait model with nutpie.

    Parameters
    ----------
    spec : MultiTraitSpec
    settings : NutsSettings
    hdi_prob : float
        As :meth:`bayeslmm.LMM.fit` (checked by the caller).

    Returns
    -------
    MultiTraitBayesFit

    Examples
    --------
    >>> # settings = NutsSettings(draws=500, tune=500, chains=2, cores=1, seed=1,
    >>> #                         progressbar=False, target_accept=0.9)
    >>> # fit = sample_multitrait(spec, settings, hdi_prob=0.95)
    """
    run = run_nutpie(
        spec,
        multitrait_density,
        nutpie_model,
        settings,
        rhat_of=("genetic_covariance", "residual_covariance"),
    )
    return MultiTraitBayesFit(
        **run.fit_arguments(spec, settings, hdi_prob), route=run.density.route
    )
