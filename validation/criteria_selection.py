"""How often does each model-comparison criterion pick the true random-effect structure?

Data sets are simulated where the truth is known, every candidate model is fitted, and each
criterion's choice (the candidate it ranks best) is recorded.

Design (fixed over data sets)
-----------------------------
n = 200 offspring of 20 full-sib families of 10 (pairs of families are paternal half-sibs),
one record each, genotyped at 2,000 unlinked SNPs (:func:`bayeslmm.datasets.simulate`); K is
their VanRaden GRM and K∘K its element-wise square (``K.hadamard()``, the additive ×
additive epistasis kernel). Only the phenotypes are redrawn per data set:

    y = 1 + √V_A · K^{1/2} z₁ + √V_AA · (K∘K)^{1/2} z₂ + √V_E · ε,   z₁, z₂, ε ~ N(0, I),

with symmetric square roots computed here from ``numpy.linalg.eigh`` (not from the package's
eigenbasis). Every candidate is fitted to the *standardised* y of the data set: the default
priors scale with mean(y) and sd(y) and are equivariant under y → (y − m)/s, so the fits are
those of the raw data, and a criterion shifts by the same constant (n log s) for every
candidate of a data set, so no choice changes. It lets one compiled model serve every data
set (below).

Scenarios (truth → candidates)
------------------------------
A. kinship vs none: truth "K" (V_A = 0.4, V_E = 0.6, h² = 0.4) or truth "none" (V_E = 1);
   candidates ``y ~ 1 + (1 | id)`` with K, and ``y ~ 1`` (no random effect).
B. epistasis: truth "K+KK" (V_A = 0.4, V_AA = 0.3, V_E = 0.3) or truth "K" (V_A = 0.4,
   V_E = 0.6); candidates ``y ~ 1 + (1 | id)`` with K, and
   ``y ~ 1 + (1 | id) + (1 | id_epi)`` with K and K∘K.

Criteria (the candidate with the lowest AIC/BIC/cAIC or highest elpd is chosen)
------------------------------------------------------------------------------
- REML AIC and BIC (``reml_fit.aic``, ``.bic``): every candidate has the same fixed effects
  (an intercept), so their restricted likelihoods compare. ``y ~ 1`` is REML-fitted by the
  package too (``LMM("y ~ 1", df).fit(method="reml")``, the restricted likelihood of a
  linear model, with the same constants as the mixed models'; checked against a dense
  formula in the test).
- cAIC (``reml_fit.caic()``, Greven & Kneib 2010).
- marginal and conditional PSIS-LOO (``fit.loo(kind=...)``) of NUTS fits with the defaults of
  ``LMM.fit`` (spectral strategy for one kinship term; the latent strategy for two terms and
  for ``y ~ 1``), but short chains: 2 chains × ``--tune`` warm-up + ``--draws`` draws. For
  ``y ~ 1`` both kinds are the same likelihood.

The REML criteria cost milliseconds and run on every data set (``--n-datasets`` per scenario
and truth); the NUTS fits cost seconds (the two-kernel latent model the most) and run on the
first ``--n-nuts-a`` / ``--n-nuts-b`` data sets of each truth, sized to what the 2-core machine
allows; the table says how many data sets each share rests on.

Speed: the latent-strategy models are compiled by nutpie from the PyMC graph (5–15 s each). The
design is fixed and y is standardised, so one compiled model per candidate serves every data
set: its observed y is made a shared variable and swapped (``CompiledModel.with_data``), the
swapped model's log-density is checked against a model freshly built from another data set at
random points, and it is put in the fit's build cache, so that ``LMM.fit`` samples it as
usual. The spectral model has a closed-form density and needs nothing compiled.

Run (the time on 2 cores with BLAS pinned is in docs/validation.md; ``--quick``: about a minute)::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 nice -n 10 python validation/criteria_selection.py \\
        --workers 2 --n-datasets 200 --n-nuts-a 60 --n-nuts-b 30 \\
        --csv validation/results/criteria_selection.csv \\
        > validation/results/criteria_selection.txt
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import cache
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent

#: Candidate models: name → (formula, kinship terms it uses).
CANDIDATES: dict[str, tuple[str, tuple[str, ...]]] = {
    "none": ("y ~ 1", ()),
    "K": ("y ~ 1 + (1 | id)", ("id",)),
    "K+KK": ("y ~ 1 + (1 | id) + (1 | id_epi)", ("id", "id_epi")),
}

#: Variance components of each truth (V_A per unit of K, V_AA per unit of K∘K, V_E).
TRUTHS: dict[str, dict[str, float]] = {
    "none": {"var_a": 0.0, "var_aa": 0.0, "var_e": 1.0},
    "K": {"var_a": 0.4, "var_aa": 0.0, "var_e": 0.6},
    "K+KK": {"var_a": 0.4, "var_aa": 0.3, "var_e": 0.3},
}

#: Scenario → (truths simulated, candidates fitted).
SCENARIOS: dict[str, tuple[tuple[str, ...], tuple[str, str]]] = {
    "A: kinship vs none": (("K", "none"), ("K", "none")),
    "B: K vs K + K∘K": (("K+KK", "K"), ("K", "K+KK")),
}

CRITERIA = ("AIC", "BIC", "cAIC", "marginal LOO", "conditional LOO")


@dataclass(frozen=True)
class Settings:
    """What one run uses: the design and the NUTS settings."""

    n_families: int = 20
    family_size: int = 10
    n_snps: int = 2000
    design_seed: int = 2026
    seed: int = 15
    draws: int = 500
    tune: int = 500
    chains: int = 2


@dataclass(frozen=True)
class Design:
    """The fixed design: ids, the two kernels, and their symmetric square roots."""

    frame: pd.DataFrame
    kinship: Any
    epistatic: Any
    root_k: np.ndarray
    root_kk: np.ndarray


def symmetric_root(matrix: np.ndarray) -> np.ndarray:
    """M^{1/2} of a symmetric PSD matrix (negative rounding-level eigenvalues set to 0).

    Examples
    --------
    >>> m = np.array([[2.0, 1.0], [1.0, 2.0]])
    >>> r = symmetric_root(m)
    >>> bool(np.allclose(r @ r, m))
    True
    """
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


@cache
def design(n_families: int, family_size: int, n_snps: int, seed: int) -> Design:
    """The genotyped offspring, K, K∘K (cached per process: every data set shares them).

    Examples
    --------
    >>> d = design(4, 5, 200, 1)
    >>> d.frame.shape, d.kinship.n
    ((20, 2), 20)
    """
    from bayeslmm.datasets import simulate

    sim = simulate(n_families=n_families, family_size=family_size, n_snps=n_snps, seed=seed)
    kinship = sim.kinship
    epistatic = kinship.hadamard()
    frame = pd.DataFrame({"id": list(kinship.ids)})
    frame["id_epi"] = frame["id"]
    return Design(
        frame=frame,
        kinship=kinship,
        epistatic=epistatic,
        root_k=symmetric_root(kinship.matrix),
        root_kk=symmetric_root(epistatic.matrix),
    )


def simulate_response(d: Design, truth: str, rng: np.random.Generator) -> np.ndarray:
    """Standardised y = (1 + √V_A K^{1/2} z₁ + √V_AA (K∘K)^{1/2} z₂ + √V_E ε), by hand.

    Examples
    --------
    >>> y = simulate_response(design(4, 5, 200, 1), "K", np.random.default_rng(0))
    >>> round(float(y.mean()), 12), round(float(y.std(ddof=1)), 12)
    (0.0, 1.0)
    """
    v = TRUTHS[truth]
    n = d.root_k.shape[0]
    y = 1.0 + np.sqrt(v["var_e"]) * rng.normal(size=n)
    y = y + np.sqrt(v["var_a"]) * (d.root_k @ rng.normal(size=n))
    y = y + np.sqrt(v["var_aa"]) * (d.root_kk @ rng.normal(size=n))
    return (y - y.mean()) / y.std(ddof=1)


def make_model(d: Design, candidate: str, y: np.ndarray):
    """``LMM`` of a candidate on response y (standardised).

    Examples
    --------
    >>> d = design(4, 5, 200, 1)
    >>> make_model(d, "none", np.linspace(-1, 1, 20)).spec.n_obs
    20
    """
    from bayeslmm.model import LMM

    formula, terms = CANDIDATES[candidate]
    kernels = {"id": d.kinship, "id_epi": d.epistatic}
    kinship = {t: kernels[t] for t in terms} or None
    return LMM(formula, d.frame.assign(y=y), kinship=kinship)


def _swappable_model(model, observed_name: str):
    """The PyMC model with its observed data as a shared variable (see sbc_gaussian.py)."""
    spec = importlib.util.spec_from_file_location("sbc_gaussian", HERE / "sbc_gaussian.py")
    sbc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sbc)
    return sbc.swappable_model(model, observed_name)


class CompiledCache:
    """One nutpie-compiled model per latent-strategy candidate, its y swapped per data set.

    The swapped model is checked once, when compiled: its log-density at random points must
    equal that of a model built afresh from a different y (``max_logp_error``).
    """

    def __init__(self, d: Design) -> None:
        self.design = d
        self.compiled: dict[str, tuple[Any, str]] = {}
        self.max_logp_error: dict[str, float] = {}

    def prepare(self, candidate: str, built) -> float:
        """Put the compiled model, with this data set's y, in ``built``'s cache; the seconds
        spent compiling (once per process and candidate, else 0)."""
        if built.strategy == "spectral":
            return 0.0  # a closed-form density: nothing to compile
        start = time.perf_counter()
        if candidate not in self.compiled:
            self._compile(candidate, built)
        compile_s = time.perf_counter() - start
        compiled, shared_name = self.compiled[candidate]
        y = np.asarray(built.spec.y, dtype=float)
        built.cache["nutpie"] = compiled.with_data(**{shared_name: y})
        return compile_s

    def _compile(self, candidate: str, built) -> None:
        import nutpie

        swapped, shared = _swappable_model(built.model, built.observed_name)
        rng = np.random.default_rng(12345)
        other = make_model(self.design, candidate, simulate_response(self.design, "K", rng))
        fresh = other._build("auto")
        shared.set_value(np.asarray(other.spec.y, dtype=float))
        logp_fresh = fresh.model.compile_logp()
        logp_swapped = swapped.compile_logp()
        worst = 0.0
        for _ in range(5):
            point = {
                k: v + rng.normal(0.0, 0.3, size=np.shape(v))
                for k, v in fresh.model.initial_point().items()
            }
            worst = max(worst, abs(float(logp_fresh(point)) - float(logp_swapped(point))))
        if worst > 1e-6:
            raise AssertionError(
                f"The data-swapped model of '{candidate}' differs from a freshly built one "
                f"(max |logp diff| {worst:.2e}): the priors or the design depend on the data."
            )
        self.max_logp_error[candidate] = worst
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.compiled[candidate] = (nutpie.compile_pymc_model(swapped), shared.name)


@cache
def _compiled_cache(settings: Settings) -> CompiledCache:
    return CompiledCache(
        design(settings.n_families, settings.family_size, settings.n_snps, settings.design_seed)
    )


def fit_candidate(
    d: Design,
    candidate: str,
    y: np.ndarray,
    settings: Settings,
    seed: int,
    cache_: CompiledCache,
    nuts: bool = True,
) -> dict[str, Any]:
    """REML (AIC, BIC, cAIC) and, when ``nuts``, NUTS (marginal and conditional LOO) of one
    candidate.

    Examples
    --------
    >>> # fit_candidate(design(25, 10, 2000, 2026), "K", y, Settings(), 1, cache_)["aic"]
    """
    from bayeslmm.errors import SpecificationError

    model = make_model(d, candidate, y)
    out: dict[str, Any] = {}
    cpu_start = time.process_time()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reml = model.fit(method="reml")
    out["reml_s"] = time.perf_counter() - start
    out.update(aic=reml.aic, bic=reml.bic, loglik_reml=reml.loglik_reml)
    out["reml_converged"] = bool(reml.converged)
    start = time.perf_counter()
    try:
        caic = reml.caic()
        out.update(caic=caic.caic, caic_df=caic.df)
    except SpecificationError:
        # the residual variance estimated at 0: the conditional likelihood is unbounded and
        # the package declines the cAIC; this candidate is then not chosen by cAIC (counted)
        out.update(caic=np.nan, caic_df=np.nan)
    out["caic_s"] = time.perf_counter() - start
    if not nuts:
        out["cpu_s"] = time.process_time() - cpu_start
        return out

    start = time.perf_counter()
    built = model._build("auto")  # the fit's own build, cached on the model
    compile_cpu = time.process_time()
    compile_s = cache_.prepare(candidate, built)
    out["_compile_cpu_s"] = time.process_time() - compile_cpu if compile_s else 0.0
    fit = model.fit(
        draws=settings.draws,
        tune=settings.tune,
        chains=settings.chains,
        cores=1,
        seed=seed,
        progressbar=False,
        verbose=False,
    )
    # the one-off compilation is reported apart, not charged to this data set
    out["nuts_s"] = time.perf_counter() - start - compile_s
    out["compile_s"] = compile_s
    out["strategy"] = built.strategy
    out["divergences"] = int(fit.diagnostics["divergences"])
    out["max_r_hat"] = float(fit.diagnostics["max_r_hat"])
    for kind in ("marginal", "conditional"):
        start = time.perf_counter()
        elpd = fit.loo(kind=kind)
        out[f"loo_{kind}_s"] = time.perf_counter() - start
        out[f"elpd_{kind}"] = float(elpd["elpd_loo"])
        out[f"se_{kind}"] = float(elpd["se"])
        out[f"k_high_{kind}"] = int(np.sum(np.asarray(elpd["pareto_k"]) > 0.7))
    # CPU seconds of the process (all its threads), what the load of a shared machine
    # does not inflate; the one-off compilation excluded
    out["cpu_s"] = time.process_time() - cpu_start - out.pop("_compile_cpu_s")
    return out


#: How each criterion chooses: (column, True when larger is better).
CHOICE = {
    "AIC": ("aic", False),
    "BIC": ("bic", False),
    "cAIC": ("caic", False),
    "marginal LOO": ("elpd_marginal", True),
    "conditional LOO": ("elpd_conditional", True),
}

#: Seconds a criterion costs per candidate (the fits it needs and its own computation).
COST = {
    "AIC": ("reml_s",),
    "BIC": ("reml_s",),
    "cAIC": ("reml_s", "caic_s"),
    "marginal LOO": ("nuts_s", "loo_marginal_s"),
    "conditional LOO": ("nuts_s", "loo_conditional_s"),
}


def choose(fits: dict[str, dict[str, Any]], criterion: str) -> str:
    """The candidate a criterion ranks best (among those where it is defined, not NaN).

    Examples
    --------
    >>> choose({"K": {"aic": 10.0}, "none": {"aic": 12.0}}, "AIC")
    'K'
    """
    column, larger = CHOICE[criterion]
    values = {
        name: fit[column] for name, fit in fits.items() if np.isfinite(fit.get(column, np.nan))
    }
    if not values:
        return ""  # not computed on this data set (no NUTS fits)
    return (max if larger else min)(values, key=values.get)


def evaluate(task: tuple[str, str, int, bool], settings: Settings) -> list[dict[str, Any]]:
    """Simulate one data set of (scenario, truth, index), fit the candidates (REML, and NUTS
    when the task's flag says so), record choices.

    Returns one row per candidate (its criteria, timings and diagnostics) with the choices
    of every criterion in ``chosen_<criterion>`` columns.

    Examples
    --------
    >>> # evaluate(("A: kinship vs none", "K", 0, True), Settings())
    """
    scenario, truth, index, nuts = task
    truths, candidates = SCENARIOS[scenario]
    cache_ = _compiled_cache(settings)
    d = cache_.design
    key = [settings.seed, list(SCENARIOS).index(scenario), truths.index(truth), index]
    rng = np.random.default_rng(key)
    y = simulate_response(d, truth, rng)
    fits = {}
    for k, candidate in enumerate(candidates):
        seed = int(np.random.SeedSequence([*key, k]).generate_state(1)[0])
        fits[candidate] = fit_candidate(d, candidate, y, settings, seed, cache_, nuts)
    chosen = {f"chosen_{c}": choose(fits, c) for c in CRITERIA}
    rows = []
    for candidate, fit in fits.items():
        rows.append(
            {
                "scenario": scenario,
                "truth": truth,
                "dataset": index,
                "candidate": candidate,
                "nuts": nuts,
            }
            | fit
            | chosen
        )
    return rows


def _evaluate_quietly(task: tuple[str, str, int, bool], settings: Settings) -> list[dict[str, Any]]:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return evaluate(task, settings)


def run(
    n_datasets: int,
    n_nuts: int | dict[str, int],
    settings: Settings,
    workers: int = 1,
    progress: bool = False,
) -> pd.DataFrame:
    """Every (scenario, truth, data set), on ``workers`` processes; one row per candidate fit.

    ``n_datasets`` data sets per truth get the REML criteria; the first ``n_nuts`` of them
    (one number, or one per scenario) also the NUTS fits and their LOO.

    Examples
    --------
    >>> # records = run(200, {"A: kinship vs none": 60, "B: K vs K + K∘K": 30}, Settings())
    """
    if not isinstance(n_nuts, dict):
        n_nuts = dict.fromkeys(SCENARIOS, n_nuts)
    tasks = [
        (scenario, truth, index, index < n_nuts[scenario])
        for scenario, (truths, _) in SCENARIOS.items()
        for truth in truths
        for index in range(n_datasets)
    ]
    # the slow (NUTS) tasks first, so that the two workers end together
    tasks.sort(key=lambda t: not t[3])
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    if workers == 1:
        results = (_evaluate_quietly(t, settings) for t in tasks)
        executor = None
    else:
        # spawn: nutpie's and numba's threads do not survive a fork
        executor = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))
        results = executor.map(_evaluate_quietly, tasks, [settings] * len(tasks))
    try:
        for done, result in enumerate(results, start=1):
            rows.extend(result)
            if progress and (done % 25 == 0 or done == len(tasks)):
                elapsed = time.perf_counter() - start
                print(f"  {done}/{len(tasks)} data sets, {elapsed:.0f} s", file=sys.stderr)
    finally:
        if executor is not None:
            executor.shutdown()
    return pd.DataFrame(rows)


def summarise(records: pd.DataFrame) -> pd.DataFrame:
    """Share of data sets whose choice is the truth, its binomial SE, and seconds per data set.

    Examples
    --------
    >>> # summarise(run(4, Settings()))
    """
    per_dataset = records.drop_duplicates(["scenario", "truth", "dataset"])
    seconds = records.groupby(["scenario", "truth", "dataset"]).sum(numeric_only=True)
    rows = []
    for (scenario, truth), all_sets in per_dataset.groupby(["scenario", "truth"], sort=False):
        for criterion in CRITERIA:
            chosen = all_sets[f"chosen_{criterion}"].fillna("")
            group = all_sets[chosen != ""]
            n = len(group)
            cost = seconds.loc[(scenario, truth)].loc[group["dataset"]]
            if n == 0:  # e.g. no NUTS fits in this scenario (--n-nuts-a 0): no row
                continue
            share = float((group[f"chosen_{criterion}"] == truth).mean())
            rows.append(
                {
                    "scenario": scenario,
                    "truth": truth,
                    "criterion": criterion,
                    "data sets": n,
                    "share choosing the truth": share,
                    "binomial SE": float(np.sqrt(share * (1.0 - share) / n)),
                    "s per data set": float(cost[list(COST[criterion])].sum(axis=1).mean()),
                }
            )
    return pd.DataFrame(rows)


def diagnostics(records: pd.DataFrame) -> pd.DataFrame:
    """Per scenario, truth and candidate: NUTS divergences, R-hat, Pareto k > 0.7 counts.

    Examples
    --------
    >>> # diagnostics(records)
    """
    records = records[records["nuts"]]
    return records.groupby(["scenario", "truth", "candidate"], sort=False).agg(
        strategy=("strategy", "first"),
        fits_with_divergences=("divergences", lambda d: int((d > 0).sum())),
        fits_r_hat_above_1_01=("max_r_hat", lambda r: int((r > 1.01).sum())),
        median_r_hat=("max_r_hat", "median"),
        mean_k_above_0_7_marginal=("k_high_marginal", "mean"),
        mean_k_above_0_7_conditional=("k_high_conditional", "mean"),
        reml_not_converged=("reml_converged", lambda c: int((~c).sum())),
        caic_undefined=("caic", lambda c: int(c.isna().sum())),
        mean_nuts_s=("nuts_s", "mean"),
        mean_cpu_s=("cpu_s", "mean"),
        compile_s_once=("compile_s", "max"),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-datasets", type=int, default=200, help="per scenario and truth")
    parser.add_argument(
        "--n-nuts-a", type=int, default=60, help="of them with NUTS fits (LOO), scenario A"
    )
    parser.add_argument(
        "--n-nuts-b", type=int, default=30, help="of them with NUTS fits (LOO), scenario B"
    )
    parser.add_argument("--draws", type=int, default=Settings.draws)
    parser.add_argument("--tune", type=int, default=Settings.tune)
    parser.add_argument("--seed", type=int, default=Settings.seed)
    parser.add_argument("--workers", type=int, default=1, help="processes (2 at most here)")
    parser.add_argument("--csv", type=Path, help="write the per-fit records here")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 3 data sets per truth, n = 40, 100 + 100 draws",
    )
    args = parser.parse_args(argv)
    settings = Settings(draws=args.draws, tune=args.tune, seed=args.seed)
    scenario_a, scenario_b = SCENARIOS
    n_datasets = args.n_datasets
    n_nuts = {scenario_a: args.n_nuts_a, scenario_b: args.n_nuts_b}
    if args.quick:
        settings = Settings(n_families=8, family_size=5, n_snps=300, draws=100, tune=100)
        n_datasets, n_nuts = 4, dict.fromkeys(SCENARIOS, 2)
    d = design(settings.n_families, settings.family_size, settings.n_snps, settings.design_seed)
    n = d.kinship.n
    blas = {v: os.environ.get(v, "unset") for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    print("Model-comparison criteria: how often each picks the true random-effect structure")
    print(
        f"design: n = {n} ({settings.n_families} full-sib families of {settings.family_size}), "
        f"VanRaden GRM of {settings.n_snps} SNPs (design seed {settings.design_seed}), "
        "K∘K = K.hadamard(); one record per individual; y standardised per data set"
    )
    for name, v in TRUTHS.items():
        print(f"truth {name!r}: V_A = {v['var_a']}, V_AA = {v['var_aa']}, V_E = {v['var_e']}")
    print(
        f"{n_datasets} data sets per scenario and truth, REML criteria on all, NUTS fits "
        f"(LOO) on the first {n_nuts} of them; NUTS: nutpie, {settings.chains} chains "
        f"x ({settings.tune} tune + {settings.draws} draws), target_accept 0.9, fit()'s "
        f"default strategy; {args.workers} worker process(es); BLAS threads {blas}; "
        f"seed {settings.seed}"
    )
    start = time.perf_counter()
    records = run(n_datasets, n_nuts, settings, workers=args.workers, progress=True)
    wall = time.perf_counter() - start
    if args.csv is not None:
        records.to_csv(args.csv, index=False, float_format="%.6g")
    pd.set_option("display.width", 160)
    table = summarise(records)
    print("\nshare of data sets on which each criterion chooses the true model:")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print("\nfit diagnostics (per candidate fit):")
    print(diagnostics(records).to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"\nwall time {wall:.0f} s ({wall / 60:.1f} min) on {args.workers} process(es)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
