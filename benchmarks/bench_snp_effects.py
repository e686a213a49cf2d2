"""Cost of the marker-effect posterior of a NUTS fit (a script, not a test).

n individuals with m simulated markers (default 5,000 × 2,000), y with h² = 0.5, a NUTS fit of
``y ~ x + (1|id)`` (4 chains × 1,000 draws) on the kinship held as its markers
(``bl.grm(dosages, low_rank=True)``; ``--dense`` adds the same model on the dense GRM), then
``fit.snp_effects``: per posterior draw of (θ, β) one draw of b | y, θ, β
(``kind="posterior"``, the default) or E[b | y, θ, β] (``kind="conditional_mean"``), as the
draws (``draws=True``) and as the summary table (means, SDs, HDIs, ESS, R̂ of every marker).

Printed per call: CPU seconds (``time.process_time``), wall seconds, the peak of the memory
numpy allocated during the call (tracemalloc, a second run of the call), and the median
ratio of the posterior SD of b to the conditional means' SD.

Usage::

    python benchmarks/bench_snp_effects.py [--n 5000] [--markers 2000] [--draws 1000]
        [--chains 4] [--dense]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import tracemalloc
import warnings

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

import bayeslmm as bl


def simulated(n: int, markers: int, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Dosages (individuals × markers, indexed by id) and y = 1 + 0.3 x + g + e, h² = 0.5."""
    freq = rng.uniform(0.05, 0.5, markers)
    dosages = rng.binomial(2, freq, size=(n, markers)).astype(float)
    ids = [f"i{k}" for k in range(n)]
    g = (dosages - dosages.mean(0)) @ rng.normal(size=markers)
    x = rng.normal(size=n)
    y = 1.0 + 0.3 * x + np.sqrt(0.5) * g / g.std() + np.sqrt(0.5) * rng.normal(size=n)
    geno = pd.DataFrame(dosages, index=ids, columns=[f"snp{j}" for j in range(markers)])
    return geno, pd.DataFrame({"id": ids, "x": x, "y": y})


def timed(label: str, call) -> object:
    """Run ``call`` (timed), then again under tracemalloc for its peak allocation."""
    cpu, wall = time.process_time(), time.perf_counter()
    out = call()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    tracemalloc.start()
    call()
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    print(f"  {label:<46} {cpu:8.2f} CPU s {wall:8.2f} wall s  peak {peak:7.0f} MiB", flush=True)
    return out


def effect_calls(fit, geno: pd.DataFrame, own_markers: bool) -> dict[str, object]:
    """Time each snp_effects call of one fit; the results by label."""
    calls = [("posterior draws (draws=True)", dict(draws=True)),
             ("conditional-mean draws (draws=True)", dict(draws=True, kind="conditional_mean")),
             ("posterior table", {}),
             ("conditional-mean table", dict(kind="conditional_mean"))]  # fmt: skip
    out = {label: timed(label, lambda kw=kw: fit.snp_effects(geno, **kw)) for label, kw in calls}
    if own_markers:
        label = "posterior draws, own markers (no genotypes)"
        out[label] = timed(label, lambda: fit.snp_effects(draws=True))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--markers", type=int, default=2000)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--dense", action="store_true", help="also the dense GRM")
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load "
          f"{os.getloadavg()[0]:.2f}; n = {args.n}, m = {args.markers}, "
          f"{args.chains} × {args.draws} draws; BLAS 1 thread")  # fmt: skip
    geno, df = simulated(args.n, args.markers, np.random.default_rng(1))
    kinships = [("low-rank", bl.grm(geno, low_rank=True))]
    if args.dense:
        kinships.append(("dense", bl.grm(geno)))
    for route, K in kinships:
        cpu, wall = time.process_time(), time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = bl.LMM("y ~ x + (1|id)", df, kinship={"id": K}).fit(
                draws=args.draws, chains=args.chains, cores=1, seed=1, progressbar=False,
                verbose=False,
            )  # fmt: skip
        print(f"{route}: NUTS fit {time.process_time() - cpu:.1f} CPU s, "
              f"{time.perf_counter() - wall:.1f} wall s ({fit.strategy})", flush=True)  # fmt: skip
        out = effect_calls(fit, geno, route == "low-rank")
        ratio = np.median(out["posterior table"]["se"] / out["conditional-mean table"]["se"])
        print(f"  median SD ratio, posterior / conditional means: {ratio:.1f}", flush=True)


if __name__ == "__main__":
    with threadpool_limits(1):
        main()
