"""How the cost of a REML fit grows with n and p: dense path vs SNP-space path (a script).

For each size the whole user call is timed, from the dosage matrix to the estimate:
``bl.grm(X)`` (dense: the n × n GRM, then one eigendecomposition inside the fit) or
``bl.grm(X, low_rank=True)`` (the n × p standardised markers and their thin SVD), then
``bl.LMM("y ~ 1 + (1 | id)", ...).fit(method="reml")``. CPU seconds (``time.process_time``,
BLAS pinned to one thread) are reported beside wall seconds: on a shared machine they are the
steadier measure. The figure ``docs/img/scaling.png`` plots CPU seconds against n, one line
per path and marker count, on log–log axes.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_scaling.py [--dense 500 1000 2000 4000] \
        [--low-rank 2000 5000 10000 20000] [--markers 500 2000] [--plot docs/img/scaling.png]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import warnings

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

import bayeslmm as bl


def dosages(n: int, p: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.binomial(2, rng.uniform(0.05, 0.5, p), size=(n, p)).astype(np.float64)


def one_fit(n: int, p: int, low_rank: bool, seed: int = 1) -> dict:
    X = dosages(n, p, seed)
    ids = [f"i{k}" for k in range(n)]
    rng = np.random.default_rng(seed + 1)
    g = (X - X.mean(0)) @ rng.normal(0, 1 / np.sqrt(p), p)
    y = g / g.std() * np.sqrt(0.5) + rng.normal(0, np.sqrt(0.5), n)
    data = pd.DataFrame({"id": ids, "y": y})
    wall, cpu = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        K = bl.grm(X, ids=ids, low_rank=low_rank)
        fit = bl.LMM("y ~ 1 + (1 | id)", data, kinship={"id": K}).fit(method="reml")
        h2 = float(fit.heritability()["estimate"].iloc[0])
    return {
        "path": "low-rank" if low_rank else "dense",
        "n": n,
        "p": p,
        "route": fit.method,
        "wall_s": time.perf_counter() - wall,
        "cpu_s": time.process_time() - cpu,
        "h2": h2,
    }


def plot(table: pd.DataFrame, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for (kind, p), rows in table.groupby(["path", "p"]):
        label = f"{kind}, p = {p:,} markers"
        style = "o-" if kind == "dense" else "s--"
        ax.plot(rows["n"], rows["cpu_s"], style, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("individuals n")
    ax.set_ylabel("CPU seconds, whole REML call (1 thread)")
    ax.set_title("Dense path O(n³) vs SNP-space path O(n p²)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dense", type=int, nargs="*", default=[500, 1000, 2000, 4000])
    parser.add_argument("--low-rank", type=int, nargs="*", default=[2000, 5000, 10000, 20000])
    parser.add_argument("--markers", type=int, nargs="*", default=[500, 2000])
    parser.add_argument("--plot", default=None)
    args = parser.parse_args(argv)
    print(f"# bench_scaling: python {platform.python_version()}, numpy {np.__version__}")
    print(f"# command: python benchmarks/bench_scaling.py {' '.join(argv or sys.argv[1:])}")
    print("# BLAS pinned to 1 thread (threadpoolctl); whole call: grm + LMM.fit(method='reml')")
    rows = []
    with threadpool_limits(limits=1, user_api="blas"):
        one_fit(300, 100, True)  # imports and first-call costs, not charged to any size
        for p in args.markers:
            for n in args.dense:
                rows.append(one_fit(n, p, low_rank=False))
                print(pd.DataFrame([rows[-1]]).to_string(index=False, header=len(rows) == 1))
            for n in args.low_rank:
                if n <= p:
                    continue
                rows.append(one_fit(n, p, low_rank=True))
                print(pd.DataFrame([rows[-1]]).to_string(index=False, header=False))
    table = pd.DataFrame(rows)
    both = table.pivot_table(index=["n", "p"], columns="path", values="cpu_s").dropna()
    for (n, p), row in both.iterrows():
        print(f"# n = {n}, p = {p}: CPU dense / low-rank = {row['dense'] / row['low-rank']:.3g}")
    if args.plot:
        plot(table, args.plot)
        print(f"# figure: {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
