"""Animal-model REML from a pedigree table through the sparse A⁻¹ (a script, not a test).

Simulates a pedigree of ``--generations`` generations of ``--per-generation`` animals
(random mating within generations: each animal's sire is drawn from ``--sires`` males and its
dam from the females of the previous generation; ``--unknown`` of the parents unknown),
additive values by Mendelian sampling (a = L(√d ∘ z), h² = 0.3) and phenotypes on
``--records`` animals. Then times the whole call a user makes from the pedigree table::

    A = bl.pedigree_relationship(ped, sparse=True)            # A⁻¹ build (inbreeding included)
    fit = bl.LMM("y ~ 1 + (1 | id)", data, kinship={"id": A}).fit(method="reml")
    fit.heritability()

and prints the seconds of each stage, the whole call's ratio to one ``numpy.linalg.eigh`` of
a 2,000 × 2,000 matrix in the same process (the benchmarks' common baseline), the peak
resident memory of the process (``resource.getrusage``) and the peak of Python/NumPy
allocations during the call (``tracemalloc``; CHOLMOD's own C allocations are not in it).
BLAS is pinned to one thread.

With ``--engine bayes`` the call is the posterior instead (``fit()``: strategy
``"sparse-pedigree"``, independent draws from the exact marginal posterior of the variances),
with ``--engine nuts`` the Mendelian-sampling NUTS (strategy ``"sparse-pedigree-nuts"``);
both report ESS(h²), wall and CPU seconds and peak memory.

With ``--traits 2`` the call is the bivariate animal model on the same pedigree::

    fit = bl.LMM("mvbind(y1, y2) ~ 1 + (1 | id)", data, kinship={"id": A}).fit(method="reml")
    fit.genetic_correlation(); fit.heritability()

(route ``"sparse-pedigree"``: Henderson's equations for two traits on A⁻¹, AI-REML with the
analytic gradient from the selected inverse). The second trait has h² = ``--h2-2``, genetic
correlation ``--rg`` and residual correlation ``--re`` with the first, and ``--missing`` of
each trait's values are missing (never both on one animal).

``--traits 2 --engine bayes`` times the bivariate posterior instead (``fit(method="nuts")``:
route ``"sparse-pedigree"``, :mod:`bayeslmm.engines.bayes.multitrait_pedigree`: the
marginal posterior of Σ_G and Σ_E by PSIS importance sampling, ``--draws × --chains``
proposals, ``sampler="importance"``: this route at any pedigree size); ``--traits 2
--engine nuts`` samples the same density by NUTS (``sampler="nutpie"`` of
``sample_multitrait_pedigree``, also below the dense limit). Both print CPU seconds,
ESS(r_g) of the draws, the importance ESS and Pareto k̂, the cost of one factorisation and
of one gradient, and peak memory.

Usage::

    python benchmarks/bench_pedigree.py [--generations 10] [--per-generation 10000]
        [--sires 100] [--records 50000] [--unknown 0.05] [--seed 1]
        [--engine reml|bayes|nuts] [--draws 1000] [--tune 1000] [--chains 4]
        [--traits 1|2] [--h2-2 0.5] [--rg 0.5] [--re 0.2] [--missing 0.2]
"""

from __future__ import annotations

import argparse
import platform
import resource
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_info, threadpool_limits

import bayeslmm as bl
from bayeslmm.kinship import mendelian_decomposition


def simulate_pedigree(
    generations: int, per_generation: int, sires: int, unknown: float, rng: np.random.Generator
) -> pd.DataFrame:
    """Discrete generations; sires from ``sires`` males, dams from all females (random)."""
    ids, sire_col, dam_col = [], [], []
    previous = None
    for g in range(generations):
        names = np.char.add(f"g{g}_", np.arange(per_generation).astype(str)).astype(object)
        if previous is None:
            s = np.full(per_generation, None, dtype=object)
            d = np.full(per_generation, None, dtype=object)
        else:
            males, females = previous[: per_generation // 2], previous[per_generation // 2 :]
            chosen = rng.choice(males, size=min(sires, males.size), replace=False)
            s = chosen[rng.integers(0, chosen.size, per_generation)].astype(object)
            d = females[rng.integers(0, females.size, per_generation)].astype(object)
            s[rng.random(per_generation) < unknown] = None
            d[rng.random(per_generation) < unknown] = None
        ids.append(names)
        sire_col.append(s)
        dam_col.append(d)
        previous = names
    return pd.DataFrame(
        {
            "id": np.concatenate(ids),
            "sire": np.concatenate(sire_col),
            "dam": np.concatenate(dam_col),
        }
    )


def _recorded_animals(
    ped: pd.DataFrame, ids: list[str], n_records: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``n_records`` non-founders drawn at random: their ids and their positions in
    ``ids`` (the order of the Mendelian decomposition)."""
    founders = ped["sire"].isna() & ped["dam"].isna()
    pool = np.flatnonzero(~founders.to_numpy())
    pos = {i: k for k, i in enumerate(ids)}
    recorded = rng.choice(pool, size=min(n_records, pool.size), replace=False)
    animal = ped["id"].to_numpy()[recorded]
    index = np.fromiter((pos[str(i)] for i in animal), dtype=np.int64, count=animal.size)
    return animal, index


def simulate_phenotypes(
    ped: pd.DataFrame, n_records: int, h2: float, rng: np.random.Generator
) -> tuple[pd.DataFrame, float]:
    """a = L(√d ∘ z) σ_a (one sparse triangular solve), y = 10 + a + e on random animals."""
    from scipy.sparse.linalg import splu

    ids, inverse_factor, d, _ = mendelian_decomposition(ped)
    lu = splu(inverse_factor.tocsc(), permc_spec="NATURAL", diag_pivot_thresh=0.0)
    a = lu.solve(np.sqrt(d) * rng.normal(size=len(ids))) * np.sqrt(h2)
    animal, index = _recorded_animals(ped, ids, n_records, rng)
    y = 10.0 + a[index] + rng.normal(size=animal.size) * np.sqrt(1.0 - h2)
    return pd.DataFrame({"id": animal, "y": y}), float(np.var(a[index]) / np.var(y))


def simulate_bivariate(
    ped: pd.DataFrame,
    n_records: int,
    h2: tuple[float, float],
    rg: float,
    re: float,
    missing: float,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """Two traits with phenotypic variance 1: U = L(√d ∘ Z) chol(Σ_G)ᵀ, residuals with
    correlation ``re``; ``missing`` of each trait's records set to NaN (disjoint)."""
    from scipy.sparse.linalg import splu

    ids, inverse_factor, d, _ = mendelian_decomposition(ped)
    sd_g, sd_e = np.sqrt(h2), np.sqrt(1.0 - np.asarray(h2))
    Sg = np.array([[1.0, rg], [rg, 1.0]]) * np.outer(sd_g, sd_g)
    Se = np.array([[1.0, re], [re, 1.0]]) * np.outer(sd_e, sd_e)
    lu = splu(inverse_factor.tocsc(), permc_spec="NATURAL", diag_pivot_thresh=0.0)
    U = lu.solve(np.sqrt(d)[:, None] * rng.normal(size=(len(ids), 2))) @ np.linalg.cholesky(Sg).T
    animal, index = _recorded_animals(ped, ids, n_records, rng)
    Y = (
        np.array([10.0, 5.0])
        + U[index]
        + rng.normal(size=(animal.size, 2)) @ np.linalg.cholesky(Se).T
    )
    hole = rng.random(animal.size)
    Y[hole < missing, 0] = np.nan
    Y[(hole >= missing) & (hole < 2 * missing), 1] = np.nan
    return pd.DataFrame({"id": animal, "y1": Y[:, 0], "y2": Y[:, 1]})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=10)
    parser.add_argument("--per-generation", type=int, default=10_000)
    parser.add_argument("--sires", type=int, default=100)
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--unknown", type=float, default=0.05)
    parser.add_argument("--h2", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--engine",
        choices=("reml", "bayes", "nuts"),
        default="reml",
        help="reml: fit(method='reml'); bayes: the posterior (strategy 'sparse-pedigree', "
        "exact marginal draws); nuts: strategy 'sparse-pedigree-nuts' (Mendelian-sampling NUTS)",
    )
    parser.add_argument("--draws", type=int, default=1000, help="bayes / nuts: per chain")
    parser.add_argument("--tune", type=int, default=1000, help="nuts: warm-up per chain")
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--traits", type=int, choices=(1, 2), default=1)
    parser.add_argument("--h2-2", type=float, default=0.5, help="h² of the second trait")
    parser.add_argument("--rg", type=float, default=0.5, help="genetic correlation")
    parser.add_argument("--re", type=float, default=0.2, help="residual correlation")
    parser.add_argument("--missing", type=float, default=0.2, help="missing share per trait")
    args = parser.parse_args(argv)

    with threadpool_limits(1):
        blas = sorted({f"{i['internal_api']} {i.get('version')}" for i in threadpool_info()})
        print(f"# {' '.join(sys.argv)}")
        print(f"# python {platform.python_version()}, numpy {np.__version__}, BLAS pinned: {blas}")
        try:
            import sksparse  # noqa: F401

            backend = "CHOLMOD (scikit-sparse)"
        except ImportError:
            backend = "SciPy SuperLU"
        print(f"# sparse factorisation: {backend}")
        rng = np.random.default_rng(args.seed)
        M = rng.normal(size=(2000, 2000))
        M = M @ M.T / 2000
        t = time.perf_counter()
        np.linalg.eigh(M)
        t_eigh = time.perf_counter() - t
        del M
        ped = simulate_pedigree(
            args.generations, args.per_generation, args.sires, args.unknown, rng
        )
        if args.traits == 2:
            _bivariate(args, ped, rng, t_eigh)
            return
        data, h2_sample = simulate_phenotypes(ped, args.records, args.h2, rng)
        print(
            f"# pedigree: {len(ped)} animals, {args.generations} generations, "
            f"{args.sires} sires per generation, {args.unknown:.0%} unknown parents; "
            f"{len(data)} records; simulated h² = {args.h2} (in the sample: {h2_sample:.3f})"
        )
        strategy = "sparse-pedigree" if args.engine == "bayes" else "sparse-pedigree-nuts"

        def call(model):
            if args.engine == "reml":
                fit = model.fit(method="reml")
            else:
                fit = model.fit(
                    draws=args.draws,
                    tune=args.tune,
                    chains=args.chains,
                    cores=1,
                    seed=args.seed,
                    progressbar=False,
                    strategy=strategy,
                )
            return fit, fit.heritability()

        run = _timed_call(ped, "y ~ 1 + (1 | id)", data, call)

    if args.engine != "reml":
        _report_bayes(args, run, ped, data, t_eigh)
        return
    fit, h2 = run.fit, run.tables
    est = h2.iloc[0]
    vc = fit.parameters.set_index("grp")["estimate"]
    print(f"# route: {fit.method}; factorisations: {fit.n_iter}; converged: {fit.converged}")
    print(
        f"# h² = {est['estimate']:.4f} (se {est['se']:.4f}); σ_a² = {vc.iloc[0]:.4f}, "
        f"σ_e² = {vc.iloc[-1]:.4f}; F > 0 in {(run.A.inbreeding > 0).mean():.1%} of animals, "
        f"mean F {run.A.inbreeding.mean():.4f}"
    )
    timing = fit.timing
    print(
        f"# stages (s): A⁻¹ build {run.t_build:.1f}, specify {run.t_spec:.1f}, "
        f"REML setup + ordering {timing.get('setup_s', float('nan')):.1f}, "
        f"likelihood search {timing.get('optimize_s', float('nan')):.1f}, "
        f"PEVs {timing.get('pev_s', float('nan')):.1f}, fit total {timing['total_s']:.1f}"
    )
    print(
        "animals  records  nnz(A⁻¹)  build_s  whole_s  eigh2000_s  whole/eigh  "
        "peak_rss_MB  rss_before_MB  traced_peak_MB"
    )
    print(
        f"{len(ped):7d}  {len(data):7d}  {run.nnz:8d}  {run.t_build:7.1f}  {run.total:7.1f}  "
        f"{t_eigh:10.2f}  {run.total / t_eigh:10.1f}  {run.memory_columns()}"
    )


@dataclass
class TimedCall:
    """One timed call from the pedigree table (:func:`_timed_call`): A, the fit, the tables
    read from it, each stage's seconds and the memory."""

    A: Any
    fit: Any
    tables: Any
    nnz: int
    t_build: float
    t_spec: float
    total: float
    cpu: float
    peak_rss: float
    rss_before: float
    traced_peak: float

    def memory_columns(self) -> str:
        """The last three columns of every results row: peak RSS, RSS before, traced peak."""
        return f"{self.peak_rss:11.0f}  {self.rss_before:13.0f}  {self.traced_peak / 2**20:14.0f}"


def _timed_call(
    ped: pd.DataFrame, formula: str, data: pd.DataFrame, call: Callable[[Any], tuple[Any, Any]]
) -> TimedCall:
    """Time the whole call a user makes from the pedigree table: A⁻¹ built, the model
    specified, ``call(model)`` (the fit and the tables read from it), with CPU seconds,
    peak RSS and the traced Python/NumPy peak."""
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tracemalloc.start()
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    A = bl.pedigree_relationship(ped, sparse=True)
    nnz = A.inverse.nnz
    t_build = time.perf_counter() - t0
    model = bl.LMM(formula, data, kinship={"id": A})
    t_spec = time.perf_counter() - t0 - t_build
    fit, tables = call(model)
    total = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return TimedCall(
        A, fit, tables, nnz, t_build, t_spec, total, cpu, peak_rss, rss_before, traced_peak
    )


def _bivariate(args, ped: pd.DataFrame, rng: np.random.Generator, t_eigh: float) -> None:
    """Time the bivariate REML call from the pedigree table and print its figures."""
    data = simulate_bivariate(
        ped, args.records, (args.h2, args.h2_2), args.rg, args.re, args.missing, rng
    )
    print(
        f"# pedigree: {len(ped)} animals, {args.generations} generations, "
        f"{args.sires} sires per generation, {args.unknown:.0%} unknown parents; "
        f"{len(data)} animals with records, {int(data['y1'].notna().sum())} of y1 and "
        f"{int(data['y2'].notna().sum())} of y2; simulated h² = ({args.h2}, {args.h2_2}), "
        f"r_g = {args.rg}, r_e = {args.re}"
    )

    def call(model):
        if args.engine == "bayes":
            fit = model.fit(
                draws=args.draws, chains=args.chains, seed=args.seed, sampler="importance"
            )
        elif args.engine == "nuts":  # NUTS on the same density, at any pedigree size
            from bayeslmm.engines.bayes.multitrait_pedigree import sample_multitrait_pedigree
            from bayeslmm.engines.bayes.multitrait_sampling import NutsSettings

            settings = NutsSettings(
                draws=args.draws,
                tune=args.tune,
                chains=args.chains,
                cores=1,
                seed=args.seed,
                progressbar=False,
                target_accept=0.9,
            )
            fit = sample_multitrait_pedigree(model.spec, settings, hdi_prob=0.95, sampler="nutpie")
        else:
            fit = model.fit(method="reml")
        return fit, (fit.genetic_correlation(), fit.heritability())

    run = _timed_call(ped, "mvbind(y1, y2) ~ 1 + (1 | id)", data, call)
    if args.engine != "reml":
        _report_bivariate_posterior(args, run, ped, data)
        return
    fit, (rg, h2) = run.fit, run.tables
    timing = fit.timing
    print(
        f"# route: {fit.route} ({timing['backend']}); AI steps: {timing['scoring_steps']:.0f}, "
        f"L-BFGS evaluations: {timing['lbfgs_evaluations']:.0f}; factorisations: "
        f"{timing['factorizations']:.0f}, selected inverses: {timing['selected_inverses']:.0f} "
        f"(SEs included); converged: {fit.converged}"
    )
    print(
        f"# r_g = {rg['estimate'].iloc[0]:.4f} (se {rg['se'].iloc[0]:.4f}); h² = "
        + ", ".join(f"{v:.4f} (se {s:.4f})" for v, s in zip(h2["estimate"], h2["se"], strict=True))
    )
    print(
        f"# stages (s): A⁻¹ build {run.t_build:.1f}, specify {run.t_spec:.1f}, REML setup + "
        f"ordering {timing['setup_s']:.1f}, AI-REML {timing['optimize_s']:.1f}, fit total "
        f"{timing['total_s']:.1f}"
    )
    print(
        "animals  records  nnz(A⁻¹)  build_s  whole_s  cpu_s  eigh2000_s  peak_rss_MB  "
        "rss_before_MB  traced_peak_MB"
    )
    print(
        f"{len(ped):7d}  {len(data):7d}  {run.nnz:8d}  {run.t_build:7.1f}  {run.total:7.1f}  "
        f"{run.cpu:5.1f}  {t_eigh:10.2f}  {run.memory_columns()}"
    )


def _evaluation_cost(spec) -> tuple[float, float]:
    """CPU seconds of one factorisation (a log-posterior value) and of one gradient of the
    sparse-pedigree multi-trait posterior, each the median of 5 at the centre point."""
    from bayeslmm.engines.bayes.multitrait_pedigree import pedigree_multitrait_density

    density = pedigree_multitrait_density(spec)
    x = density.centre_point()
    density.log_posterior(x, gradient=True)  # compilation of the selected inverse
    costs = []
    for gradient in (False, True):
        runs = []
        for _ in range(5):
            c0 = time.process_time()
            density.log_posterior(x, gradient=gradient)
            runs.append(time.process_time() - c0)
        costs.append(float(np.median(runs)))
    return costs[0], costs[1]


def _report_bivariate_posterior(args, run: TimedCall, ped: pd.DataFrame, data) -> None:
    """The bivariate posterior's figures: r_g, h², ESS, k̂, stages, CPU seconds, memory."""
    fit, (rg, h2) = run.fit, run.tables
    timing = fit.timing
    row = rg.iloc[0]
    with threadpool_limits(1):
        value_cpu, gradient_cpu = _evaluation_cost(fit.spec)
    print(
        f"# route: {fit.route}; sampler: {fit.sampler}; {args.chains} x {args.draws} draws; "
        f"factorisations {timing.get('factorizations', float('nan')):.0f}, selected inverses "
        f"{timing.get('selected_inverses', float('nan')):.0f}; Pareto k "
        f"{timing.get('pareto_k', float('nan')):.3f}, importance ESS "
        f"{timing.get('importance_ess', float('nan')):.0f}, distinct draws "
        f"{timing.get('distinct_draws', float('nan')):.0f}; messages: {fit.messages}"
    )
    print(
        f"# r_g = {row['mean']:.4f} (sd {row['sd']:.4f}, 95% HDI {row['hdi_low']:.4f} to "
        f"{row['hdi_high']:.4f}), ESS bulk {row['ess_bulk']:.0f}, R-hat {row['r_hat']:.4f}; "
        "h² = "
        + ", ".join(f"{m:.4f} (sd {s:.4f})" for m, s in zip(h2["mean"], h2["sd"], strict=True))
    )
    print(
        f"# stages (s): A⁻¹ build {run.t_build:.1f}, specify {run.t_spec:.1f}, mode + Hessian "
        f"{timing.get('mode_s', float('nan')):.1f}, sample {timing['sample_s']:.1f}, fit "
        f"total {timing['total_s']:.1f}; one factorisation {value_cpu:.3f} CPU s, one "
        f"gradient {gradient_cpu:.3f} CPU s"
    )
    ess = min(float(row["ess_bulk"]), float(timing.get("importance_ess", np.inf)))
    print(
        "animals  records  nnz(A⁻¹)  whole_s  cpu_s  ess_rg  ess_rg_per_cpu_s  "
        "peak_rss_MB  rss_before_MB  traced_peak_MB"
    )
    print(
        f"{len(ped):7d}  {len(data):7d}  {run.nnz:8d}  {run.total:7.1f}  {run.cpu:5.1f}  "
        f"{ess:6.0f}  {ess / run.cpu:16.2f}  {run.memory_columns()}"
    )


def _report_bayes(args, run: TimedCall, ped: pd.DataFrame, data, t_eigh: float) -> None:
    """The posterior's figures: h² and its ESS, the stages, wall and CPU seconds, memory."""
    fit, h2 = run.fit, run.tables
    row = h2.loc["h2"] if "h2" in h2.index else h2.iloc[0]
    timing = fit.timing
    attrs = fit.posterior.attrs
    print(
        f"# strategy: {fit.strategy}; sampler: {fit.sampler}; {args.chains} chains x "
        f"{args.draws} draws"
        + (f" (+{args.tune} warm-up)" if args.engine == "nuts" else "")
        + (
            f"; sparse factorisations: {attrs.get('n_factorizations')}, "
            f"t1 nodes: {attrs.get('n_nodes')}"
            if "n_factorizations" in attrs
            else ""
        )
    )
    print(
        f"# h² = {row['mean']:.4f} (sd {row['sd']:.4f}, 95% HDI {row['hdi_low']:.4f} to "
        f"{row['hdi_high']:.4f}); ESS bulk {row['ess_bulk']:.0f}, tail {row['ess_tail']:.0f}; "
        f"R-hat {row['r_hat']:.4f}; divergences {fit.diagnostics.get('divergences')}"
    )
    print(
        f"# stages (s): A⁻¹ build {run.t_build:.1f}, specify {run.t_spec:.1f}, "
        f"compile {timing.get('compile_s', 0.0):.1f}, sample {timing.get('sample_s', 0.0):.1f}, "
        f"fit total {timing['total_s']:.1f}"
    )
    print(
        "animals  records  nnz(A⁻¹)  whole_s  cpu_s  ess_h2  ess_h2_per_s  eigh2000_s  "
        "peak_rss_MB  rss_before_MB  traced_peak_MB"
    )
    print(
        f"{len(ped):7d}  {len(data):7d}  {run.nnz:8d}  {run.total:7.1f}  {run.cpu:5.1f}  "
        f"{row['ess_bulk']:6.0f}  {row['ess_bulk'] / run.total:12.2f}  {t_eigh:10.2f}  "
        f"{run.memory_columns()}"
    )


if __name__ == "__main__":
    main()
