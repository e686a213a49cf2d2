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

``--missing 0.2`` runs the missing-value section instead: at ``--missing-size`` (5000x500)
each trait misses a value with that probability (individuals then missing both are left out
by the model). REML on the low-rank kinship (the marker-space equations), and on the dense
W Wᵀ where its stacked-V route accepts the records (at most 4,000; above, one evaluation of
that likelihood is timed instead); then NUTS on both (missing values sampled; two chains run
one after the other, ``--draws`` and ``--tune`` each), with the bulk ESS of r_g and CPU
seconds per effective draw. CPU seconds are the comparable figure on a shared machine.
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


def with_missing(data: pd.DataFrame, share: float, seed: int) -> pd.DataFrame:
    """Each trait value missing with probability ``share``."""
    rng = np.random.default_rng(seed + 1000)
    data = data.copy()
    for trait in ("y1", "y2"):
        data.loc[rng.random(len(data)) < share, trait] = np.nan
    return data


def missing_section(
    size: str, share: float, seed: int, draws: int, tune: int, nuts: bool = True
) -> None:
    """REML and NUTS with missing trait values, low-rank kinship against the dense W Wᵀ."""
    import arviz as az

    from bayeslmm.engines.reml.multitrait import MAX_DENSE_RECORDS, _Dense

    n, p = (int(v) for v in size.split("x"))
    data, dosages = simulate(n, p, seed)
    data = with_missing(data, share, seed)
    holes = data[["y1", "y2"]].isna().to_numpy()
    print(
        f"n = {n}, p = {p}: {int(holes.sum())} missing values ({holes.mean():.1%}), "
        f"{int(holes.any(axis=1).sum())} individuals missing one or both, "
        f"{int(holes.all(axis=1).sum())} both (left out); {int((~holes).sum())} records"
    )
    formula = "mvbind(y1, y2) ~ x + (1 | id)"

    def dense_kinship() -> bl.Kinship:
        W = bl.grm(dosages, low_rank=True).markers
        return bl.Kinship(W @ W.T, [str(i) for i in range(n)], check_psd=False)

    print("| method | kinship | route | wall s | CPU s | r_g | se / sd | ESS(r_g) | CPU s / ESS |")
    print("|---|---|---|---|---|---|---|---|---|")
    low, wall, cpu = run(data, bl.grm(dosages, low_rank=True))
    r = low.genetic_correlation().iloc[0]
    print(
        f"| REML | low-rank | {low.route} | {wall:.2f} | {cpu:.2f} | {r['estimate']:.3f} | "
        f"{r['se']:.3f} | | |",
        flush=True,
    )
    records = int((~holes).sum())
    if records <= MAX_DENSE_RECORDS:
        ref, wall, cpu = run(data, dense_kinship())
        r = ref.genetic_correlation().iloc[0]
        gap = max(
            np.abs(low.genetic - ref.genetic).max(), np.abs(low.residual - ref.residual).max()
        )
        print(
            f"| REML | dense | {ref.route} | {wall:.2f} | {cpu:.2f} | {r['estimate']:.3f} | "
            f"{r['se']:.3f} | | | (largest gap {gap:.1e})",
            flush=True,
        )
    else:
        # the dense route refuses these records; one evaluation of its likelihood, timed
        spec = bl.LMM(formula, data, kinship={"id": dense_kinship()}).spec
        Y = np.asarray(spec.Y) / np.nanstd(spec.Y, axis=0)
        wall0, cpu0 = time.perf_counter(), time.process_time()
        _Dense(Y, np.asarray(spec.X), spec.kinship.matrix)(low.genetic, low.residual)
        print(
            f"| REML | dense | refused ({records} records > {MAX_DENSE_RECORDS}) | "
            f"{time.perf_counter() - wall0:.2f} | {time.process_time() - cpu0:.2f} | | | | | "
            "(one likelihood evaluation of the stacked V)",
            flush=True,
        )
    if not nuts:
        return
    for name, make in (("low-rank", lambda: bl.grm(dosages, low_rank=True)), ("dense", None)):
        K = make() if make else dense_kinship()
        wall0, cpu0 = time.perf_counter(), time.process_time()
        fit = bl.LMM(formula, data, kinship={"id": K}).fit(
            draws=draws, tune=tune, chains=2, cores=1, seed=seed, progressbar=False, verbose=False
        )
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        r = fit.genetic_correlation().iloc[0]
        rhat = float(az.rhat(fit.posterior["genetic_covariance"]).to_array().values.max())
        print(
            f"| NUTS 2 × {draws} | {name} | {fit.route} | {wall:.1f} | {cpu:.1f} | "
            f"{r['mean']:.3f} | {r['sd']:.3f} | {r['ess_bulk']:.0f} | "
            f"{cpu / r['ess_bulk']:.3f} | (divergences {fit.divergences}, R-hat {rhat:.3f})",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["2000x200", "5000x500", "20000x1000"])
    parser.add_argument("--dense-max", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--missing", type=float, default=0.0)
    parser.add_argument("--missing-size", default="5000x500")
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--tune", type=int, default=1000)
    parser.add_argument("--no-nuts", action="store_true", help="missing-value REML rows only")
    args = parser.parse_args()
    if args.missing > 0.0:
        print(f"load average before: {os.getloadavg()}")
        data, dosages = simulate(200, 40, 0)  # warm the compiled kernels and nutpie
        data = with_missing(data, args.missing, 0)
        run(data, bl.grm(dosages, low_rank=True))
        bl.LMM(
            "mvbind(y1, y2) ~ x + (1 | id)", data, kinship={"id": bl.grm(dosages, low_rank=True)}
        ).fit(draws=20, tune=20, chains=1, seed=1, progressbar=False, verbose=False)
        with threadpool_limits(limits=1, user_api="blas"):
            missing_section(
                args.missing_size,
                args.missing,
                args.seed,
                args.draws,
                args.tune,
                nuts=not args.no_nuts,
            )
        print(f"load average after: {os.getloadavg()}")
        return
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
