"""Run NUTS on a built model and check the run, in plain words.

:func:`sample` is the one entry point: it dispatches to PyMC's own NUTS, nutpie (compiled
once per built model and reused), numpyro or blackjax, always returns an
:class:`arviz.InferenceData` with the same groups, and times each stage. The strategy that
built the model (:func:`~bayeslmm.engines.bayes.strategies.strategy_of`) says what nutpie
samples (its closed form, when it has one) and what is drawn afterwards: parameters
integrated out of the sampled model (β in the spectral strategy, β and u in the
laplace-marginal one) come from their conditionals, so the posterior always holds ``beta``.
:func:`diagnose` turns divergences, R-hat and ESS into sentences that say what to try.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys
import time
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from bayeslmm._imports import long_lived_imports
from bayeslmm.engines.bayes.built import BuiltModel
from bayeslmm.engines.bayes.options import SAMPLERS, SamplerName, check_sampler
from bayeslmm.engines.bayes.strategies import strategy_of
from bayeslmm.errors import SpecificationError

if TYPE_CHECKING:
    import arviz as az

__all__ = ["SAMPLERS", "diagnose", "resolve_sampler", "sample"]

#: Thresholds of the post-sampling checks (Vehtari et al. 2021).
MAX_R_HAT = 1.01
MIN_ESS_BULK = 400


def resolve_sampler(sampler: SamplerName | str = "auto") -> str:
    """Pick the NUTS implementation; check that a named one is installed.

    ``"auto"`` → nutpie when installed (a core dependency), else PyMC's NUTS. For the
    spectral strategy nutpie samples the model's closed-form log posterior
    (:mod:`~bayeslmm.engines.bayes.spectral_density`: a numba loop kept in numba's on-disk
    cache, ~20 µs per evaluation at n = 1000), so there is nothing to compile per data set;
    for the latent strategy it compiles the PyMC graph with numba, whose sampling speed wins
    for n + 2 free parameters.

    Parameters
    ----------
    sampler : {"auto", "pymc", "nutpie", "numpyro", "blackjax"}

    Returns
    -------
    str
        The sampler's name.

    Examples
    --------
    >>> resolve_sampler("pymc")
    'pymc'
    >>> resolve_sampler("auto")
    'nutpie'
    """
    check_sampler(sampler)
    if sampler == "auto":
        return "nutpie" if importlib.util.find_spec("nutpie") else "pymc"
    if sampler != "pymc" and importlib.util.find_spec(sampler) is None:
        raise SpecificationError(
            f"The sampler '{sampler}' is not installed; pip install {sampler} (or "
            "bayeslmm[nutpie] / bayeslmm[jax]), or use sampler='pymc'."
        )
    if sampler == "blackjax":
        _check_blackjax_version()
    return sampler


#: blackjax 1.6 changed its kernels' keyword arguments; PyMC 5's ``pm.sample(nuts_sampler=
#: "blackjax")`` (tested with 5.28) then fails inside JAX with a TypeError on 'progress_bar'.
BLACKJAX_BELOW = (1, 6)


def _check_blackjax_version() -> None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        text = version("blackjax")
    except PackageNotFoundError:  # importable but not installed as a distribution
        return
    parts = tuple(int(p) for p in text.split(".")[:2] if p.isdigit())
    if parts >= BLACKJAX_BELOW:
        raise SpecificationError(
            f"blackjax {text} is installed, but PyMC's blackjax sampler works with blackjax "
            f"below {'.'.join(map(str, BLACKJAX_BELOW))} only: pip install 'blackjax<1.6', or "
            "use sampler='numpyro' (the same JAX path) or the default sampler."
        )


def default_progressbar() -> bool:
    """Show progress bars only when a person is watching: a terminal, an interactive
    interpreter or a Jupyter kernel (whose stderr is not a terminal); never in a pipeline."""
    if "ipykernel" in sys.modules or hasattr(sys, "ps1"):
        return True
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):
        return False


def _seed_int(seed: int | None) -> int:
    if seed is None:
        return int(np.random.default_rng().integers(2**31 - 1))
    return int(seed)


def sample(
    built: BuiltModel,
    *,
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 4,
    cores: int | None = None,
    seed: int | None = None,
    sampler: SamplerName | str = "auto",
    progressbar: bool | None = None,
    target_accept: float = 0.9,
    log_likelihood: bool = False,
) -> tuple[az.InferenceData, dict[str, float]]:
    """Draw from the posterior of a built model with NUTS.

    Parameters
    ----------
    built : BuiltModel
        From :func:`bayeslmm.engines.bayes.build`.
    draws, tune, chains : int
        Kept draws, warm-up draws and chains.
    cores : int, optional
        Chains run in parallel on this many cores (default: min(chains, CPU count)).
    seed : int, optional
        Makes the run reproducible (same seed, sampler and data → same draws).
    sampler : {"auto", "pymc", "nutpie", "numpyro", "blackjax"}
    progressbar : bool, optional
        Default: only when stderr is a terminal.
    target_accept : float
        NUTS target acceptance rate; raise it (0.95, 0.99) when there are divergences.
    log_likelihood : bool
        Add the pointwise log-likelihood group (for LOO / WAIC). Spectral strategy: one
        value per rotated component given (β, θ). Refused up front by a strategy that has
        none (laplace-marginal).

    Returns
    -------
    idata : arviz.InferenceData
    timing : dict
        ``compile_s`` (nutpie), ``sample_s``, ``posthoc_s`` (draws of integrated-out β).

    Examples
    --------
    >>> import numpy as np, pandas as pd, bayeslmm as bl
    >>> from bayeslmm.engines.bayes import build
    >>> df = pd.DataFrame({"y": np.arange(8.0), "g": list("aabbccdd")})
    >>> built = build(bl.specify("y ~ 1 + (1 | g)", df))
    >>> idata, _ = sample(built, draws=20, tune=20, chains=1, seed=1, sampler="pymc")
    >>> idata.posterior["beta"].dims
    ('chain', 'draw', 'fixed')
    """
    name = resolve_sampler(sampler)
    strategy = strategy_of(built)
    if log_likelihood:
        strategy.check_log_likelihood()
    progressbar = default_progressbar() if progressbar is None else bool(progressbar)
    seed = _seed_int(seed)
    timing: dict[str, float] = {"compile_s": 0.0}
    if cores is None:
        cores = max(1, min(chains, available_cores()))
    blas_threads = blas_threads_per_chain(chains, cores)
    if strategy.draws_directly:
        # the strategy draws its posterior itself (independent draws, no NUTS)
        start = time.perf_counter()
        idata = strategy.draw(built, draws=draws, chains=chains, seed=seed)
        timing["sample_s"] = time.perf_counter() - start
    elif name == "nutpie":
        nutpie = import_nutpie()
        compiled = built.cache.get("nutpie")
        if compiled is None:
            start = time.perf_counter()
            compiled = strategy.nutpie_model(built)
            timing["compile_s"] = time.perf_counter() - start
            built.cache["nutpie"] = compiled
        start = time.perf_counter()
        with _blas_limit(blas_threads):
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
        timing["sample_s"] = time.perf_counter() - start
    else:
        import pymc as pm

        start = time.perf_counter()
        if not built.model_is_built:  # deferred by the strategy: its build time is build_s
            model = built.model
            built.timing["build_s"] = built.timing.get("build_s", 0.0) + (
                time.perf_counter() - start
            )
            start = time.perf_counter()
        model = built.model
        # PyMC pins BLAS in its workers itself except when they are forked (Linux's
        # default), which inherit the limit set here
        with (
            model,
            _blas_limit(blas_threads),
            warnings.catch_warnings(),
            _quiet_pymc(not progressbar),
        ):
            warnings.simplefilter("ignore", UserWarning)
            idata = pm.sample(
                draws=draws,
                tune=tune,
                chains=chains,
                cores=cores,
                random_seed=seed,
                progressbar=progressbar,
                nuts_sampler=name,
                # external samplers read target_accept only from the "nuts" dict
                nuts={"target_accept": target_accept},
                compute_convergence_checks=False,
                idata_kwargs={"log_likelihood": False},
            )
        timing["sample_s"] = time.perf_counter() - start
    idata = _standard_groups(idata, built)
    start = time.perf_counter()
    # a seed stream of its own, so the NUTS draws are the same with or without this step
    strategy.posthoc(built, idata, seed=np.random.SeedSequence([seed, 1]))
    timing["posthoc_s"] = time.perf_counter() - start
    if log_likelihood:
        strategy.add_log_likelihood(built, idata)
    return idata, timing


def import_nutpie() -> Any:
    """``import nutpie``, with ArviZ's one eagerly compiled numba ufunc left to its first call.

    nutpie imports ArviZ, whose ``arviz.stats.ecdf_utils`` compiles a ``numba.vectorize``
    ufunc with a fixed signature at import (the binomial pmf of ECDF bands, used by
    ``plot_ecdf`` only): ~0.4 s of CPU in every process that samples, a tenth of a
    command-line fit at n = 1,000. While ArviZ is imported here, a ``vectorize`` given
    signatures builds the same ufunc without them (a DUFunc, compiled for the argument
    types of its first call: ArviZ passes the int64/float64 of that signature), so the
    compile happens only if the ECDF bands are drawn. Nothing changes when ArviZ is already
    imported.

    Returns
    -------
    module
        nutpie.

    Examples
    --------
    >>> import_nutpie().__name__
    'nutpie'
    """
    if "arviz" in sys.modules or "nutpie" in sys.modules:
        import nutpie

        return nutpie
    import numba

    eager = numba.vectorize

    def deferred(ftylist_or_function: Any = (), **kwargs: Any) -> Any:
        if isinstance(ftylist_or_function, (list, tuple)):  # signatures: compile lazily
            return eager(**kwargs)
        return eager(ftylist_or_function, **kwargs)

    numba.vectorize = deferred
    try:
        with long_lived_imports():  # ~150,000 objects that live as long as the process
            import nutpie
    finally:
        numba.vectorize = eager
    return nutpie


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one).

    Examples
    --------
    >>> available_cores() >= 1
    True
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def blas_threads_per_chain(chains: int, cores: int, available: int | None = None) -> int | None:
    """BLAS threads each chain may use when chains run in parallel, or None (no limit) when
    they run one after the other.

    Chains sampled at the same time each call BLAS (numba's and NumPy's matrix products in
    the gradient); every call would start a thread pool as large as the machine, so two
    chains on two cores run four busy threads and OpenBLAS's spinning threads slow each
    other down many times over. Sharing the cores out keeps one thread per core.

    Parameters
    ----------
    chains, cores : int
        Chains, and how many run at once.
    available : int, optional
        Cores of the machine (default :func:`available_cores`).

    Examples
    --------
    >>> blas_threads_per_chain(chains=4, cores=2, available=2)
    1
    >>> blas_threads_per_chain(chains=2, cores=2, available=16)
    8
    >>> blas_threads_per_chain(chains=4, cores=1) is None
    True
    """
    parallel = min(chains, cores)
    if parallel <= 1:
        return None
    available = available_cores() if available is None else available
    return max(1, available // parallel)


def _blas_limit(threads: int | None) -> contextlib.AbstractContextManager:
    """``threadpool_limits(threads)`` for BLAS (and OpenMP) during sampling; nothing when
    ``threads`` is None."""
    if threads is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads)


@contextlib.contextmanager
def _quiet_pymc(quiet: bool):
    """Silence PyMC's INFO log lines ("Initializing NUTS ...") when no progress is shown."""
    logger = logging.getLogger("pymc")
    level = logger.level
    if quiet:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _standard_groups(idata, built: BuiltModel):
    """Same groups whatever the sampler: observed_data and constant_data in data coords."""
    import xarray as xr

    spec = built.spec
    for group in ("observed_data", "constant_data", "warmup_posterior", "warmup_sample_stats"):
        if group in idata.groups():
            del idata[group]
    obs_coord = {"obs": np.arange(spec.n_obs)}
    observed = {spec.response: xr.DataArray(np.asarray(spec.y), dims="obs", coords=obs_coord)}
    if built.rotation is not None:
        rotated = built.rotation.rotate(np.asarray(spec.y))
        observed[built.observed_name] = xr.DataArray(rotated, dims="eigen")
    constant = {
        "X": xr.DataArray(
            np.asarray(spec.X),
            dims=("obs", "fixed"),
            coords={**obs_coord, "fixed": list(spec.fixed_names)},
        )
    }
    for t in spec.terms:
        constant[f"{t.group}_index"] = xr.DataArray(np.asarray(t.index), dims="obs")
    if spec.offset is not None:
        constant["offset"] = xr.DataArray(np.asarray(spec.offset), dims="obs")
    if spec.trials is not None:
        constant["trials"] = xr.DataArray(np.asarray(spec.trials), dims="obs")
    idata.add_groups(
        observed_data=xr.Dataset(observed, coords=obs_coord),
        constant_data=xr.Dataset(constant, coords=obs_coord),
    )
    return idata


def diagnose(idata, var_names: list[str] | None = None) -> tuple[dict[str, Any], list[str]]:
    """Divergences, worst R-hat and smallest bulk ESS, with advice in plain words.

    Parameters
    ----------
    idata : arviz.InferenceData
    var_names : list of str, optional
        Variables to check (default: every posterior variable except large latent arrays
        ``z_*`` / ``u_*``, which are checked through the variances they feed).

    Returns
    -------
    diagnostics : dict
        ``divergences`` (int), ``max_r_hat``, ``min_ess_bulk``, ``draws``, ``chains``.
    messages : list of str
        One sentence per problem, each with what to try.

    Examples
    --------
    >>> import arviz as az
    >>> diag, messages = diagnose(az.load_arviz_data("centered_eight"))  # doctest: +SKIP
    """
    from bayeslmm.results.convergence import ess_bulk, rank_rhat

    post = idata.posterior
    if var_names is None:
        var_names = [v for v in post.data_vars if not str(v).startswith(("z_", "u_", "chol_"))]
    # constants (a binary trait's latent residual variance π²/3) have no ESS to speak of;
    # ArviZ reports the number of draws, which would mask the real minimum
    var_names = [v for v in var_names if float(np.ptp(np.asarray(post[v]))) > 0.0]
    n_chains, n_draws = int(post.sizes["chain"]), int(post.sizes["draw"])
    divergences = 0
    stats = idata.get("sample_stats")
    if stats is not None:
        key = "diverging" if "diverging" in stats else None
        if key:
            divergences = int(np.asarray(stats[key]).sum())
    # ArviZ's rank R-hat and bulk ESS of every element, to the bit, without compiling
    # ArviZ's numba variance in each process (bayeslmm.results.convergence)
    rhat, ess = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in var_names:
            columns = np.asarray(post[name]).reshape(n_chains, n_draws, -1)
            for k in range(columns.shape[2]):
                rhat.append(rank_rhat(columns[:, :, k]))
                ess.append(ess_bulk(columns[:, :, k]))
    max_rhat = _extreme(rhat, np.nanmax)
    min_ess = _extreme(ess, np.nanmin)
    diag = {
        "divergences": divergences,
        "max_r_hat": max_rhat,
        "min_ess_bulk": min_ess,
        "chains": n_chains,
        "draws": n_draws,
    }
    messages = []
    if divergences:
        messages.append(
            f"{divergences} divergent transitions: the sampler met curvature it could not "
            "follow, so the posterior may be biased. Try target_accept=0.95 or 0.99, more "
            "tune steps, or the h² prior parametrisation (priors={'h2': ('beta', 1, 1)}), "
            "which often sits better when a variance is near zero."
        )
    if n_chains > 1 and np.isfinite(max_rhat) and max_rhat > MAX_R_HAT:
        messages.append(
            f"R-hat reaches {max_rhat:.3f} (> {MAX_R_HAT}): the chains disagree. Run longer "
            "(more tune and draws), check for multimodality, or reparametrise (h² prior)."
        )
    if np.isfinite(min_ess) and min_ess < MIN_ESS_BULK:
        messages.append(
            f"The smallest bulk effective sample size is {min_ess:.0f} (< {MIN_ESS_BULK}): "
            "posterior means and intervals are noisy. Draw more (draws, chains)."
        )
    return diag, messages


def _extreme(values: list[float], reducer) -> float:
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    return float(reducer(finite)) if finite.size else float("nan")
