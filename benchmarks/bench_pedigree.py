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

Usage::

    python benchmarks/bench_pedigree.py [--generations 10] [--per-generation 10000]
        [--sires 100] [--records 50000] [--unknown 0.05] [--seed 1]
"""

from __future__ import annotations

import argparse
import platform
import resource
import sys
import time
import tracemalloc

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


def simulate_phenotypes(
    ped: pd.DataFrame, n_records: int, h2: float, rng: np.random.Generator
) -> tuple[pd.DataFrame, float]:
    """a = L(√d ∘ z) σ_a (one sparse triangular solve), y = 10 + a + e on random animals."""
    from scipy.sparse.linalg import splu

    ids, inverse_factor, d, _ = mendelian_decomposition(ped)
    lu = splu(inverse_factor.tocsc(), permc_spec="NATURAL", diag_pivot_thresh=0.0)
    a = lu.solve(np.sqrt(d) * rng.normal(size=len(ids))) * np.sqrt(h2)
    founders = ped["sire"].isna() & ped["dam"].isna()
    pool = np.flatnonzero(~founders.to_numpy())
    pos = {i: k for k, i in enumerate(ids)}
    recorded = rng.choice(pool, size=min(n_records, pool.size), replace=False)
    animal = ped["id"].to_numpy()[recorded]
    index = np.fromiter((pos[str(i)] for i in animal), dtype=np.int64, count=animal.size)
    y = 10.0 + a[index] + rng.normal(size=animal.size) * np.sqrt(1.0 - h2)
    return pd.DataFrame({"id": animal, "y": y}), float(np.var(a[index]) / np.var(y))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=10)
    parser.add_argument("--per-generation", type=int, default=10_000)
    parser.add_argument("--sires", type=int, default=100)
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--unknown", type=float, default=0.05)
    parser.add_argument("--h2", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=1)
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
        data, h2_sample = simulate_phenotypes(ped, args.records, args.h2, rng)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"# pedigree: {len(ped)} animals, {args.generations} generations, "
            f"{args.sires} sires per generation, {args.unknown:.0%} unknown parents; "
            f"{len(data)} records; simulated h² = {args.h2} (in the sample: {h2_sample:.3f})"
        )

        tracemalloc.start()
        t0 = time.perf_counter()
        A = bl.pedigree_relationship(ped, sparse=True)
        nnz = A.inverse.nnz
        t_build = time.perf_counter() - t0
        model = bl.LMM("y ~ 1 + (1 | id)", data, kinship={"id": A})
        t_spec = time.perf_counter() - t0 - t_build
        fit = model.fit(method="reml")
        h2 = fit.heritability()
        total = time.perf_counter() - t0
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    est = h2.iloc[0]
    vc = fit.parameters.set_index("grp")["estimate"]
    print(f"# route: {fit.method}; factorisations: {fit.n_iter}; converged: {fit.converged}")
    print(
        f"# h² = {est['estimate']:.4f} (se {est['se']:.4f}); σ_a² = {vc.iloc[0]:.4f}, "
        f"σ_e² = {vc.iloc[-1]:.4f}; F > 0 in {(A.inbreeding > 0).mean():.1%} of animals, "
        f"mean F {A.inbreeding.mean():.4f}"
    )
    timing = fit.timing
    print(
        f"# stages (s): A⁻¹ build {t_build:.1f}, specify {t_spec:.1f}, "
        f"REML setup + ordering {timing.get('setup_s', float('nan')):.1f}, "
        f"likelihood search {timing.get('optimize_s', float('nan')):.1f}, "
        f"PEVs {timing.get('pev_s', float('nan')):.1f}, fit total {timing['total_s']:.1f}"
    )
    print(
        "animals  records  nnz(A⁻¹)  build_s  whole_s  eigh2000_s  whole/eigh  "
        "peak_rss_MB  rss_before_MB  traced_peak_MB"
    )
    print(
        f"{len(ped):7d}  {len(data):7d}  {nnz:8d}  {t_build:7.1f}  {total:7.1f}  "
        f"{t_eigh:10.2f}  {total / t_eigh:10.1f}  {peak_rss:11.0f}  {rss_before:13.0f}  "
        f"{traced_peak / 2**20:14.0f}"
    )


if __name__ == "__main__":
    main()
