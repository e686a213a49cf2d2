"""Bivariate REML on the SNP-space low-rank kinship against the dense GRM of the same markers.

A script that prints figures (not a test). N individuals, P simulated 0/1/2 markers,
K = ``bl.grm(dosages, low_rank=True)`` (held as its n × p scaled markers W) and, where
``--dense-max`` allows, the dense ``bl.Kinship(W Wᵀ)`` of the same matrix. Two traits with
Σ_G = [[1, .5], [.5, 1]], Σ_E = [[1, .2], [.2, 1]], a covariate x. Model::

    bl.LMM("mvbind(y1, y2) ~ x + (1 | id)", data, kinship={"id": K}).fit(method="reml")

Each row: wall and CPU seconds from model construction to the fit (the kinship's SVD or
eigendecomposition included: each run gets a fresh kinship object), the route, r_g, its SE,
and, where both ran, the largest difference of the low-rank estimates from the dense ones.
BLAS is pinned to one thread (threadpoolctl).

Usage::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/bench_multitrait_low_rank.py \
        [--sizes 2000x200 5000x500 20000x1000] [--dense-max 5000] [--seed 1]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

import bayeslmm as bl


def simulate(n: int, p: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    dosages = rng.binomial(2, rng.uniform(0.05, 0.5, p), size=(n, p)).astype(np.int8)
    K = bl.grm(dosages, low_rank=True)
    G = np.array([[1.0, 0.5], [0.5, 1.0]])
    E = np.array([[1.0, 0.2], [0.2, 1.0]])
    U = K.markers @ rng.normal(size=(K.n_markers, 2)) @ np.linalg.cholesky(G).T
    x = rng.normal(size=n)
    Y = U + rng.normal(size=(n, 2)) @ np.linalg.cholesky(E).T + [1.0, -0.5]
    Y += np.outer(x, [0.5, -0.3])
    data = pd.DataFrame({"y1": Y[:, 0], "y2": Y[:, 1], "x": x, "id": list(K.ids)})
    return data, dosages


def run(data: pd.DataFrame, K: bl.Kinship) -> tuple[object, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fit = bl.LMM("mvbind(y1, y2) ~ x + (1 | id)", data, kinship={"id": K}).fit(method="reml")
    return fit, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["2000x200", "5000x500", "20000x1000"])
    parser.add_argument("--dense-max", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}")
    # warm the numba kernels so that no row pays their compilation
    data, dosages = simulate(200, 40, 0)
    run(data, bl.grm(dosages, low_rank=True))
    print("| n | p | kinship | route | wall s | CPU s | r_g | se(r_g) | max abs diff vs dense |")
    print("|---|---|---|---|---|---|---|---|---|")
    with threadpool_limits(limits=1, user_api="blas"):
        for size in args.sizes:
            n, p = (int(v) for v in size.split("x"))
            data, dosages = simulate(n, p, args.seed)
            low, wall, cpu = run(data, bl.grm(dosages, low_rank=True))
            rows = [("low-rank", low, wall, cpu)]
            if n <= args.dense_max:
                W = bl.grm(dosages, low_rank=True).markers
                dense_K = bl.Kinship(W @ W.T, [str(i) for i in range(n)], check_psd=False)
                rows.append(("dense", *run(data, dense_K)))
            for name, fit, w, c in rows:
                r = fit.genetic_correlation()
                diff = ""
                if name == "low-rank" and len(rows) == 2:
                    ref = rows[1][1]
                    gap = max(
                        np.abs(fit.genetic - ref.genetic).max(),
                        np.abs(fit.residual - ref.residual).max(),
                    )
                    diff = f"{gap:.1e}"
                print(
                    f"| {n} | {p} | {name} | {fit.route} | {w:.2f} | {c:.2f} | "
                    f"{r['estimate'].iloc[0]:.3f} | {r['se'].iloc[0]:.3f} | {diff} |",
                    flush=True,
                )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
