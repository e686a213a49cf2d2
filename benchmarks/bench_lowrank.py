"""The SNP-space low-rank path (``bl.grm(dosages, low_rank=True)``): time, memory, equality.

Two parts (each case runs in its own Python process, so that its peak resident memory,
``resource.getrusage(RUSAGE_SELF).ru_maxrss``, is its own; BLAS is pinned to one thread
with threadpoolctl and OMP/OPENBLAS_NUM_THREADS=1 is set for the child):

``big``      n = 50,000 individuals, p = 5,000 simulated markers (int8 dosages generated in
             row chunks, allele frequencies U(0.05, 0.5), h² = 0.5, one covariate). Two
             whole calls from the genotype matrix: ``grm(X, low_rank=True)`` then
             ``LMM("y ~ x + (1|id)").fit(method="reml")``; and the same ``grm`` then the
             NUTS fit (4 chains × 1,500 draws, 500 tuning). Reported: wall and CPU seconds
             of the call (simulating the data excluded), peak RSS of the process (the
             int8 dosages, 0.25 GB, included), h² and ESS(h²).
``compare``  n = 5,000, p ∈ {500, 2,000}: the dense path (``grm(X)``, n × n eigh) against the
             low-rank path, REML and NUTS whole calls, in the same process for both:
             time ratio, |Δ| of the REML estimates and log-likelihood, |Δ| of the posterior
             means of h² in Monte Carlo standard errors.

Usage::

    python benchmarks/bench_lowrank.py big [n] [p]     # default 50000 5000
    python benchmarks/bench_lowrank.py compare
    python benchmarks/bench_lowrank.py _case reml 50000 5000 1   # one case: METHOD N P LOW_RANK
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
import warnings

import numpy as np


def simulate(n: int, p: int, seed: int = 1, chunk: int = 5000):
    """int8 dosages (generated in row chunks), ids and a data frame with y and x."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    freq = rng.uniform(0.05, 0.5, p)
    X = np.empty((n, p), dtype=np.int8)
    effects = rng.normal(size=p) / np.sqrt(2 * freq * (1 - freq))
    g = np.empty(n)
    for lo in range(0, n, chunk):
        hi = min(lo + chunk, n)
        block = rng.binomial(2, freq, size=(hi - lo, p)).astype(np.int8)
        X[lo:hi] = block
        g[lo:hi] = (block - 2 * freq) @ effects
    g = (g - g.mean()) / g.std() * np.sqrt(0.5)
    ids = [f"i{k}" for k in range(n)]
    x = rng.normal(size=n)
    df = pd.DataFrame({"id": ids, "x": x, "y": 1.0 + 0.3 * x + g + rng.normal(size=n) * 0.7})
    return X, ids, df


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _whole_call(X, ids, df, method: str, low_rank: bool) -> dict:
    import bayeslmm as bl

    wall, cpu = time.perf_counter(), time.process_time()
    K = bl.grm(X, ids=ids, low_rank=low_rank)
    t_grm = time.perf_counter() - wall
    model = bl.LMM("y ~ x + (1|id)", df, kinship={"id": K})
    if method == "reml":
        fit = model.fit(method="reml")
        est = fit.parameters["estimate"].to_numpy()
        out = {
            "h2": float(est[0] / est.sum()),
            "theta": est.tolist(),
            "loglik_reml": float(fit.loglik_reml),
            "route": fit.method,
        }
    else:
        fit = model.fit(draws=1500, tune=500, chains=4, seed=3, verbose=False)
        h2 = fit.posterior["h2"].values.ravel()
        import arviz as az

        ess = float(np.asarray(az.ess(fit.idata, var_names=["h2"])["h2"]))
        out = {
            "h2": float(h2.mean()),
            "h2_sd": float(h2.std()),
            "ess_h2": ess,
            "route": fit.strategy,
            "divergences": int(fit.diagnostics.get("divergences", -1)),
        }
    out.update(
        wall_s=time.perf_counter() - wall,
        cpu_s=time.process_time() - cpu,
        grm_s=t_grm,
        svd_s=float(getattr(K, "__dict__", {}).get("eigh_seconds", float("nan"))),
        peak_rss_gb=_peak_gb(),
    )
    return out


def _child(args: list[str]) -> None:
    """One case in this process: ``_case METHOD N P LOW_RANK``; prints one JSON line."""
    from threadpoolctl import threadpool_limits

    method, n, p, low_rank = args[0], int(args[1]), int(args[2]), args[3] == "1"
    warnings.simplefilter("ignore")
    X, ids, df = simulate(n, p)
    with threadpool_limits(limits=1, user_api="blas"):
        out = _whole_call(X, ids, df, method, low_rank)
    out.update(method=method, n=n, p=p, low_rank=low_rank)
    print("RESULT " + json.dumps(out), flush=True)


def _run(method: str, n: int, p: int, low_rank: bool) -> dict:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    proc = subprocess.run(
        [sys.executable, __file__, "_case", method, str(n), str(p), "1" if low_rank else "0"],
        capture_output=True,
        text=True,
        env=env,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"case failed:\n{proc.stdout}\n{proc.stderr}")


def _header() -> None:
    print(f"python {platform.python_version()}, numpy {np.__version__}, 1 BLAS thread")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()}")


def big(n: int, p: int) -> None:
    _header()
    print(f"n = {n}, p = {p} (int8 dosages {n * p / 2**30:.2f} GiB)")
    print("call   route               wall_s   cpu_s   grm_s   svd_s  peak_GB      h2  ess(h2)")
    for method in ("reml", "nuts"):
        r = _run(method, n, p, True)
        print(
            f"{method:<6} {r['route']:<18} {r['wall_s']:7.1f} {r['cpu_s']:7.1f} "
            f"{r['grm_s']:7.1f} {r['svd_s']:7.1f} {r['peak_rss_gb']:8.2f} {r['h2']:7.4f} "
            f"{r.get('ess_h2', float('nan')):8.0f}",
            flush=True,
        )


def compare() -> None:
    _header()
    print("n     p     call  dense_wall/cpu  lowrank_wall/cpu  ratio_wall/cpu  "
          "dense_peak_GB  lowrank_peak_GB  equality")  # fmt: skip
    for p in (500, 2000):
        for method in ("reml", "nuts"):
            d = _run(method, 5000, p, False)
            low = _run(method, 5000, p, True)
            if method == "reml":
                diff = max(
                    abs(a - b) / abs(b) for a, b in zip(low["theta"], d["theta"], strict=True)
                )
                eq = (
                    f"max rel |dtheta| {diff:.1e}, "
                    f"|dloglik| {abs(low['loglik_reml'] - d['loglik_reml']):.1e}"
                )
            else:
                se = np.hypot(
                    d["h2_sd"] / np.sqrt(d["ess_h2"]), low["h2_sd"] / np.sqrt(low["ess_h2"])
                )
                eq = f"|dh2| = {abs(low['h2'] - d['h2']) / se:.2f} MC-SE"
            print(
                f"5000  {p:<5} {method:<5} {d['wall_s']:7.1f}/{d['cpu_s']:<6.1f} "
                f"{low['wall_s']:9.1f}/{low['cpu_s']:<6.1f} "
                f"{d['wall_s'] / low['wall_s']:8.1f}/{d['cpu_s'] / low['cpu_s']:<5.1f} "
                f"{d['peak_rss_gb']:14.2f} {low['peak_rss_gb']:16.2f}  {eq}",
                flush=True,
            )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_case":
        _child(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "compare":
        compare()
    else:
        args = [int(a) for a in sys.argv[2:4]] if len(sys.argv) > 2 else []
        big(*(args + [50_000, 5_000][len(args) :]))
