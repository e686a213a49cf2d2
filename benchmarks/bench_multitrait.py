"""Bivariate Gaussian animal model at n = 2,000 with a dense GRM: whole NUTS fit and REML.

A script that prints figures (not a test). benchmarks/brms_multitrait_data.py writes this
script's data set (``simulate(n, seed)``) for benchmarks/brms_multitrait.R: N individuals, a GRM of 2 N simulated markers (VanRaden's first GRM, then 0.98 K + 0.02 I),
covariate x ~ N(0, 1), two traits with Σ_G = [[1, .5], [.5, 1]], Σ_E = [[1, .2], [.2, 1]],
intercepts (1, −0.5) and slopes (0.5, −0.3). Model::

    bl.LMM("mvbind(y1, y2) ~ x + (1 | id)", data, kinship={"id": K})

Measured, each from model construction (formula, kinship alignment and its eigendecomposition
included) to the fit object:

* ``nuts-2x1000-seq``: 2 chains × (1000 tune + 1000 draws) one after the other (cores = 1),
  one core as brms's run in benchmarks/brms_multitrait.R (one chain, its cost per
  post-warm-up draw), so that ESS(r_g) per CPU second compares directly;
* ``nuts-default``: the default 4 chains × (1000 + 1000), cores = 2;
* ``reml``: ``fit(method="reml")``.

For each: wall and CPU seconds of the whole call, the bulk ESS of r_g and ESS(r_g) per wall
second, r_g's mean and 95 % interval, divergences and the largest R-hat of Σ_G / Σ_E.
BLAS is pinned to one thread (threadpoolctl) so that figures are those of one core per
chain; the load average is printed before and after.

Usage::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/bench_multitrait.py \
        [--n 2000] [--seed 2019] [--skip-default]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import pandas as pd


def simulate(n: int, seed: int) -> tuple[pd.DataFrame, object]:
    import bayeslmm as bl

    rng = np.random.default_rng(seed)
    m = 2 * n
    freq = rng.uniform(0.05, 0.95, size=m)
    M = rng.binomial(2, freq, size=(n, m)).astype(float)
    p = M.mean(axis=0) / 2
    W = M - 2 * p
    K = W @ W.T / (2 * np.sum(p * (1 - p)))
    K = 0.98 * K + 0.02 * np.eye(n)
    ids = [f"a{k:05d}" for k in range(1, n + 1)]
    G = np.array([[1.0, 0.5], [0.5, 1.0]])
    E = np.array([[1.0, 0.2], [0.2, 1.0]])
    x = rng.normal(size=n)
    U = np.linalg.cholesky(K) @ rng.normal(size=(n, 2)) @ np.linalg.cholesky(G).T
    R = rng.normal(size=(n, 2)) @ np.linalg.cholesky(E).T
    Y = np.column_stack([1 + 0.5 * x, -0.5 - 0.3 * x]) + U + R
    data = pd.DataFrame({"id": ids, "x": x, "y1": Y[:, 0], "y2": Y[:, 1]})
    return data, bl.Kinship(K, ids, check_psd=False)


def run(label: str, data: pd.DataFrame, K_matrix: np.ndarray, ids: list, **fit_kw) -> dict:
    import arviz as az

    import bayeslmm as bl

    # a fresh Kinship per run: its eigendecomposition is part of every fit's cost
    K = bl.Kinship(K_matrix, ids, check_psd=False)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    model = bl.LMM("mvbind(y1, y2) ~ x + (1 | id)", data, kinship={"id": K})
    fit = model.fit(**fit_kw)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    out = {"run": label, "wall_s": wall, "cpu_s": cpu}
    if fit_kw.get("method") == "reml":
        rg = fit.genetic_correlation().iloc[0]
        out.update(rg=rg["estimate"], rg_low=rg["ci_low"], rg_high=rg["ci_high"])
        return out
    rg = fit.genetic_correlation().iloc[0]
    post = fit.posterior
    rhat = max(
        float(az.rhat(post[v]).to_array().values.max())
        for v in ("genetic_covariance", "residual_covariance")
    )
    out.update(
        rg=rg["mean"],
        rg_low=rg["hdi_low"],
        rg_high=rg["hdi_high"],
        ess_rg=rg["ess_bulk"],
        ess_rg_per_s=rg["ess_bulk"] / wall,
        divergences=fit.divergences,
        max_rhat=rhat,
        sample_s=fit.timing["sample_s"],
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=2019)
    parser.add_argument("--skip-default", action="store_true")
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    import bayeslmm as bl

    print(
        f"bayeslmm {bl.__version__}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs; n = {args.n}; load average {os.getloadavg()}"
    )
    data, K = simulate(args.n, args.seed)
    rows = []
    with threadpool_limits(limits=1, user_api="blas"):
        # warm-up: numba's on-disk cache and nutpie's import, not part of a user's repeat fit
        small = data.iloc[:200].reset_index(drop=True)
        run(
            "warm-up",
            small,
            K.matrix[:200, :200],
            list(K.ids[:200]),
            draws=50,
            tune=50,
            chains=1,
            seed=1,
            progressbar=False,
            verbose=False,
        )
        nuts = dict(draws=1000, tune=1000, seed=1, progressbar=False, verbose=False)
        rows.append(run("reml", data, K.matrix, list(K.ids), method="reml"))
        rows.append(run("nuts-2x1000-seq", data, K.matrix, list(K.ids), chains=2, cores=1, **nuts))
        if not args.skip_default:
            rows.append(run("nuts-default", data, K.matrix, list(K.ids), chains=4, cores=2, **nuts))
    table = pd.DataFrame(rows).set_index("run")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.round(4).to_string())
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
