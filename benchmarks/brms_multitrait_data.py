"""Write benchmarks/bench_multitrait.py's bivariate data set for benchmarks/brms_multitrait.R.

The same generator and seed as bench_multitrait.py (``simulate(n, seed)``), so that brms and
bayeslmm fit identical data: ``data.csv`` (id, x, y1, y2; 17 significant digits) and the GRM
as raw little-endian float64, row-major (``K.bin``, n × n; R reads it with ``readBin``), in
OUT_DIR. At n = 2,000 the kinship is 32 MB, so it is written outside the repository.

It also writes ``init.json``, a starting point for brms's Stan program inside the posterior's
typical set, so that a short warm-up suffices (brms_multitrait.R): Σ_G, Σ_E from bayeslmm's
REML fit, the intercepts (of the centred design, brms's ``Intercept_*``) and slopes by least
squares, and the genetic values U drawn from their Gaussian conditional posterior given
those, mapped to brms's non-centred ``z_1`` (r = Lcov zᵀ (D L)ᵀ, Lcov = chol(K), D L the
Cholesky factor of Σ_G).

Usage::

    python benchmarks/brms_multitrait_data.py [--n 2000] [--seed 2019] [--out /tmp/brms_mt]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.linalg import solve_triangular


def warm_start(data: pd.DataFrame, kinship: object, rng: np.random.Generator) -> dict:
    """brms's parameters at REML values, with U drawn from p(U | Σ_G, Σ_E, β, Y)."""
    import bayeslmm as bl

    fit = bl.LMM("mvbind(y1, y2) ~ x + (1 | id)", data, kinship={"id": kinship}).fit(
        method="reml", verbose=False
    )
    G = fit.genetic_covariance().to_numpy()
    E = fit.residual_covariance().to_numpy()
    x = data["x"].to_numpy()
    Y = data[["y1", "y2"]].to_numpy()
    X = np.column_stack([np.ones_like(x), x - x.mean()])
    coef = np.linalg.lstsq(X, Y, rcond=None)[0]  # (2, t): centred intercepts, slopes
    resid = Y - X @ coef
    K = kinship.matrix
    s, Q = np.linalg.eigh(K)
    rotated = Q.T @ resid
    Einv, Ginv = np.linalg.inv(E), np.linalg.inv(G)
    U_rot = np.empty_like(rotated)
    for j in range(len(s)):
        C = np.linalg.inv(Ginv / s[j] + Einv)
        U_rot[j] = C @ Einv @ rotated[j] + np.linalg.cholesky(C) @ rng.standard_normal(2)
    U = Q @ U_rot
    sd_g, sd_e = np.sqrt(np.diag(G)), np.sqrt(np.diag(E))
    L_g = np.linalg.cholesky(G / np.outer(sd_g, sd_g))
    L_e = np.linalg.cholesky(E / np.outer(sd_e, sd_e))
    z_t = (
        solve_triangular(np.linalg.cholesky(K), U, lower=True)
        @ np.linalg.inv(np.diag(sd_g) @ L_g).T
    )
    return {
        "Intercept_y1": float(coef[0, 0]),
        "Intercept_y2": float(coef[0, 1]),
        "b_y1": [float(coef[1, 0])],
        "b_y2": [float(coef[1, 1])],
        "sigma_y1": float(sd_e[0]),
        "sigma_y2": float(sd_e[1]),
        "Lrescor": L_e.tolist(),
        "sd_1": sd_g.tolist(),
        "z_1": z_t.T.tolist(),
        "L_1": L_g.tolist(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=2019)
    parser.add_argument("--out", type=Path, default=Path("/tmp/brms_mt"))
    args = parser.parse_args()
    # bench_multitrait.py is a script, not a module of the package: load it by path
    path = Path(__file__).resolve().parent / "bench_multitrait.py"
    spec = importlib.util.spec_from_file_location("bench_multitrait", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    data, kinship = bench.simulate(args.n, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    data.to_csv(args.out / "data.csv", index=False, float_format="%.17g")
    np.ascontiguousarray(kinship.matrix, dtype="<f8").tofile(args.out / "K.bin")
    init = warm_start(data, kinship, np.random.default_rng(args.seed + 1))
    (args.out / "init.json").write_text(json.dumps(init))
    print(f"wrote {args.out / 'data.csv'} and {args.out / 'K.bin'} (n = {args.n})")


if __name__ == "__main__":
    main()
