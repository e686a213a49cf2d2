"""Speed of the marginal LOO terms when V is block-diagonal (a script that prints figures).

For ``y ~ 1`` (V = σ²I) and ``y ~ x + (1 | family)`` (one iid grouping term, families of 10
records: V block-diagonal by family), g = V⁻¹(y − Xβ) and c̄ = diag V⁻¹ at every draw, two
ways, with BLAS pinned to one thread:

- ``closed form``: :func:`bayeslmm.engines.gaussian.marginal_loo_loglik`, which inverts V
  level by level (Woodbury) with no n × n matrix;
- ``per-draw Cholesky``: a Cholesky factor of the dense V and its inverse diagonal at each
  draw (:func:`bayeslmm.engines.gaussian.v_solver`, the route of every other model), timed
  on ``--dense-draws`` draws and scaled to all of them.

Printed: seconds for ``--draws`` draws (best of 3 for the closed form) and the largest
difference between the two routes' log-likelihoods on the draws both computed.

Usage::

    python benchmarks/bench_loo_blockwise.py [--n 200,2000] [--draws 2000] [--dense-draws 200,10]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

import bayeslmm as bl
from bayeslmm.engines import gaussian


def draws_of(formula: str, n: int, draws: int, rng: np.random.Generator) -> tuple:
    """A spec on simulated data and (sigmas, residual, beta) draws around plausible values."""
    families = max(n // 10, 2)
    df = pd.DataFrame({"x": rng.normal(size=n), "family": [f"f{k % families}" for k in range(n)]})
    df["y"] = 1.0 + 0.3 * df["x"] + rng.normal(size=n)
    spec = bl.specify(formula, df)
    sigmas = [np.exp(rng.normal(-1.0, 0.3, draws)).reshape(draws, 1, 1) for _ in spec.terms]
    residual = np.repeat(np.exp(rng.normal(0.0, 0.2, draws))[:, None], n, axis=1)
    beta = rng.normal(0.0, 0.1, (draws, spec.X.shape[1]))
    return spec, sigmas, residual, beta


def per_draw_cholesky(spec, sigmas, residual, beta) -> np.ndarray:
    """The log-likelihood from one dense factorisation of V per draw."""
    X = np.asarray(spec.X, dtype=float)
    y = gaussian.response(spec)
    out = np.empty(residual.shape)
    for i in range(residual.shape[0]):
        solver = gaussian.v_solver(spec, [S[i] for S in sigmas], residual[i])
        g = solver.solve(y - X @ beta[i])
        cbar = solver.inverse_diagonal()
        out[i] = -0.5 * gaussian.LOG_2PI + 0.5 * np.log(cbar) - 0.5 * g * g / cbar
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", default="200,2000")
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--dense-draws", default="200,10")
    args = parser.parse_args()
    sizes = [int(v) for v in args.n.split(",")]
    dense = [int(v) for v in args.dense_draws.split(",")]
    print(
        f"# python benchmarks/bench_loo_blockwise.py --n {args.n} --draws {args.draws} "
        f"--dense-draws {args.dense_draws}"
    )
    print(f"# load at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; BLAS 1 thread")
    header = ("model", "n", "closed form s", "per-draw Cholesky s", "max |diff|")
    print(f"{header[0]:24} {header[1]:>6} {header[2]:>14} {header[3]:>20} {header[4]:>11}")
    rng = np.random.default_rng(1)
    with threadpool_limits(1):
        for n, k in zip(sizes, dense, strict=True):
            for formula in ("y ~ 1", "y ~ x + (1|family)"):
                spec, sigmas, residual, beta = draws_of(formula, n, args.draws, rng)
                times = []
                for _ in range(3):
                    t0 = time.perf_counter()
                    ll = gaussian.marginal_loo_loglik(spec, sigmas, residual, beta)
                    times.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                ref = per_draw_cholesky(spec, [S[:k] for S in sigmas], residual[:k], beta[:k])
                dense_s = (time.perf_counter() - t0) * args.draws / k
                diff = float(np.max(np.abs(ll[:k] - ref)))
                print(f"{formula:24} {n:>6} {min(times):>14.3f} {dense_s:>20.1f} {diff:>11.1e}")
    print(f"# load at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
