"""Kinship GLMMs at scale: the closed-form density's gradient cost, and n = 5,000 fits (a script).

Two parts, each run on its own (``--part``):

``gradient``
    Cost of one log-posterior gradient of the one-term closed-form GLMM density
    (:mod:`bayeslmm.engines.bayes.glmm_density`) at n = 500, 1,000, 5,000 (Bernoulli logit,
    ``y ~ 1 + (1 | id)``, a dense GRM from 2n simulated markers, eigenvectors in float32 as
    the fit uses them): the numpy ``GLMMDensity.logp`` (nutpie's Python callback) against the
    compiled kernel behind the C callback (:mod:`bayeslmm.engines.bayes.glmm_kernels`, called
    through its cfunc address as nutpie calls it), and the floor of any implementation, a bare
    ``U @ c`` plus ``U.T @ w`` (numpy's BLAS, float32) measured in the same process. Then a
    short NUTS run (``--parallel-draws`` draws and warm-up per chain) with one chain, and two
    chains on two cores, for each callback: the parallel speed-up (the Python callback holds
    the GIL between its BLAS calls).

``fit``
    The issue's target: a Bernoulli kinship GLMM at n = 5,000, ``LMM(...).fit()`` with default
    settings, the whole call from the genotype matrix (GRM, eigendecomposition or thin SVD,
    build, sampling, summaries): the SNP-space kinship ``bl.grm(G, low_rank=True)`` with
    ``--markers`` markers each, and the dense GRM (``--dense-markers`` markers, full rank).
    Reported: CPU and wall seconds, bulk ESS of V_A (``var_id``), divergences, R-hat, and
    the leapfrog steps (gradients) of the kept draws (warm-up not counted).

Per-gradient costs are CPU seconds of the calling thread (``time.thread_time``): on a shared
machine the wall clock counts other jobs.

Data: markers with allele frequencies U(0.05, 0.5), standardised; liability-scale
V_A = 0.4 / 0.6 · π²/3 (latent h² = 0.4 on the logit scale), u = √V_A · W b / √p.

Usage (BLAS pinned to one thread per process, the machine is shared)::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 \\
        python benchmarks/bench_glmm_scale.py --part gradient \\
        --out benchmarks/results/bench_glmm_scale_gradient.txt
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 \\
        python benchmarks/bench_glmm_scale.py --part fit --markers 500 1000 2000 --dense \\
        --out benchmarks/results/bench_glmm_scale_fit.txt
"""

from __future__ import annotations

import argparse
import ctypes
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import bayeslmm as bl

LIABILITY_VA = 0.4 / 0.6 * np.pi**2 / 3


def genotypes(n: int, p: int, seed: int) -> np.ndarray:
    """n × p allele counts (0, 1, 2) with frequencies U(0.05, 0.5)."""
    rng = np.random.default_rng(seed)
    freq = rng.uniform(0.05, 0.5, p)
    return rng.binomial(2, freq, size=(n, p)).astype(np.float64)


def bernoulli_data(G: np.ndarray, seed: int) -> pd.DataFrame:
    """Binary responses with u = √V_A · W b / √p (W the standardised markers)."""
    rng = np.random.default_rng(seed + 1000)
    n, p = G.shape
    mean, sd = G.mean(0), G.std(0)
    keep = sd > 0
    W = (G[:, keep] - mean[keep]) / sd[keep]
    u = np.sqrt(LIABILITY_VA) * (W @ rng.normal(size=W.shape[1])) / np.sqrt(W.shape[1])
    y = rng.binomial(1, 1.0 / (1.0 + np.exp(-u)))
    return pd.DataFrame({"y": y, "id": [f"i{k:05d}" for k in range(n)]})


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {platform.python_version()}"


# -- part 1: per-gradient cost ---------------------------------------------------------------
def _density(n: int, seed: int):
    from bayeslmm.engines.bayes import build
    from bayeslmm.engines.bayes.glmm_density import glmm_density

    G = genotypes(n, 2 * n, seed)
    data = bernoulli_data(G, seed)
    K = bl.grm(G, ids=list(data["id"]))
    spec = bl.specify("y ~ 1 + (1 | id)", data, kinship={"id": K}, family="bernoulli")
    return glmm_density(build(spec, strategy="latent"))


def _per_call(func, reps: int) -> float:
    """Median CPU seconds of this thread per call over 5 timed batches of ``reps`` / 5 calls
    (after one warm call): CPU time, as the wall clock of a shared machine counts the
    other sessions' jobs (BLAS runs in this thread: pinned to one)."""
    func()
    batch = max(1, reps // 5)
    times = []
    for _ in range(5):
        start = time.thread_time()
        for _ in range(batch):
            func()
        times.append((time.thread_time() - start) / batch)
    return float(np.median(times))


def gradient_costs(ns: list[int], seed: int) -> pd.DataFrame:
    from bayeslmm.engines.bayes import glmm_kernels

    logp_cfunc, _ = glmm_kernels.c_callbacks()
    signature = ctypes.CFUNCTYPE(
        ctypes.c_int64,
        ctypes.c_uint64,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
    )
    call = signature(logp_cfunc.address)
    rows = []
    for n in ns:
        density = _density(n, seed)
        buffer = glmm_kernels.c_buffer(density)
        x = density.initial_point(1)
        grad, out = np.empty_like(x), np.empty(1)
        reps = max(10, int(2e7 / density.vectors.size))

        def c_call(x=x, grad=grad, out=out, buffer=buffer):
            call(x.size, x.ctypes.data, grad.ctypes.data, out.ctypes.data, buffer.ctypes.data)

        U = density.vectors
        c = np.ones(U.shape[1], dtype=U.dtype)
        w = np.ones(U.shape[0], dtype=U.dtype)

        def floor(U=U, c=c, w=w):
            U @ c
            U.T @ w

        py = _per_call(lambda density=density, x=x: density.logp(x), reps)
        cc = _per_call(c_call, reps)
        fl = _per_call(floor, reps)
        value = density.logp(x)[0]
        c_call()
        rows.append(
            {
                "n": n,
                "basis": U.shape[1],
                "U_MB": U.nbytes / 1e6,
                "python_ms": 1e3 * py,
                "c_ms": 1e3 * cc,
                "floor_ms": 1e3 * fl,
                "c/floor": cc / fl,
                "python/c": py / cc,
                "GB/s_c": 2 * U.nbytes / cc / 1e9,
                "|logp_c-logp_py|": abs(float(out[0]) - value),
            }
        )
        print(rows[-1], flush=True)
    return pd.DataFrame(rows)


def parallel_speedup(n: int, seed: int, draws: int) -> pd.DataFrame:
    """Sampling seconds for 1 chain and 2 chains on 2 cores, per callback."""
    import nutpie

    from bayeslmm.engines.bayes import build
    from bayeslmm.engines.bayes.glmm_density import glmm_density, nutpie_model

    G = genotypes(n, 2 * n, seed)
    data = bernoulli_data(G, seed)
    K = bl.grm(G, ids=list(data["id"]))
    spec = bl.specify("y ~ 1 + (1 | id)", data, kinship={"id": K}, family="bernoulli")
    built = build(spec, strategy="latent")
    density = glmm_density(built)
    rows = []
    for callback in ("python", "c"):
        model = nutpie_model(density, built.model.coords, callback=callback)
        for chains in (1, 2):
            wall, cpu = time.perf_counter(), time.process_time()
            idata = nutpie.sample(
                model,
                draws=draws,
                tune=draws,
                chains=chains,
                cores=chains,
                seed=1,
                progress_bar=False,
            )
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            steps = int(idata.sample_stats["n_steps"].sum())
            rows.append(
                {
                    "n": n,
                    "callback": callback,
                    "chains": chains,
                    "wall_s": wall,
                    "cpu_s": cpu,
                    "gradients": steps,
                    "ms/gradient(wall)": 1e3 * wall / steps * chains,
                }
            )
            print(rows[-1], flush=True)
    frame = pd.DataFrame(rows)
    # speed-up of two chains in parallel over running them one after the other
    for callback in ("python", "c"):
        one = frame[(frame.callback == callback) & (frame.chains == 1)].iloc[0]
        two = frame[(frame.callback == callback) & (frame.chains == 2)].iloc[0]
        per_one = one.wall_s / one.gradients
        frame.loc[two.name, "speedup_vs_sequential"] = per_one * two.gradients / two.wall_s
    return frame


# -- part 2: the n = 5,000 target ------------------------------------------------------------
def whole_fit(G: np.ndarray, data: pd.DataFrame, low_rank: bool, seed: int, **fit_kw) -> dict:
    import arviz as az

    from bayeslmm.model import LMM

    wall, cpu = time.perf_counter(), time.process_time()
    K = bl.grm(G, ids=list(data["id"]), low_rank=low_rank)
    model = LMM("y ~ 1 + (1 | id)", data, kinship={"id": K}, family="bernoulli")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = model.fit(seed=seed, progressbar=False, verbose=False, **fit_kw)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    idata = fit.idata
    discarded = 0.0
    if fit_kw.get("rank_share") is not None:
        discarded = float(K.root(fit_kw["rank_share"]).discarded)
    ess = float(az.ess(idata, var_names=["var_id"])["var_id"])
    rhat = float(az.rhat(idata, var_names=["var_id"])["var_id"])
    stats = idata.sample_stats
    return {
        "kinship": "low-rank" if low_rank else "dense",
        "markers": G.shape[1],
        "basis": idata.posterior["z_id"].shape[2],
        "discarded": discarded,
        "strategy": getattr(fit, "strategy", "?"),
        "wall_s": wall,
        "cpu_s": cpu,
        "ESS(V_A)": ess,
        "R-hat": rhat,
        "divergences": int(stats["diverging"].sum()),
        "gradients": int(stats["n_steps"].sum()) if "n_steps" in stats else -1,
        "mean V_A": float(idata.posterior["var_id"].mean()),
        "ESS/s": ess / wall,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["gradient", "fit"], required=True)
    parser.add_argument("--n", type=int, nargs="+", default=None)
    parser.add_argument("--markers", type=int, nargs="+", default=[500, 1000, 2000])
    parser.add_argument("--dense", action="store_true", help="also the dense GRM (fit)")
    parser.add_argument("--dense-markers", type=int, default=10_000)
    parser.add_argument("--parallel-n", type=int, nargs="*", default=[1000])
    parser.add_argument("--parallel-draws", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--chains", type=int, default=None, help="fit: default LMM.fit's")
    parser.add_argument("--draws", type=int, default=None, help="fit: default LMM.fit's")
    parser.add_argument("--tune", type=int, default=None, help="fit: default LMM.fit's")
    parser.add_argument("--rank-share", type=float, default=None, help="fit: dense GRM's")
    parser.add_argument("--no-low-rank", action="store_true", help="fit: the dense GRM only")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    lines = [f"# {' '.join(sys.argv)}", f"# machine: {machine()}"]
    pd.set_option("display.width", 200)
    if args.part == "gradient":
        ns = args.n or [500, 1000, 5000]
        lines += ["## per gradient (CPU ms), Bernoulli logit, dense GRM, float32 basis"]
        lines.append(gradient_costs(ns, args.seed).round(4).to_string(index=False))
        for n in args.parallel_n:
            lines += [f"## sampling, {args.parallel_draws} draws + warm-up per chain"]
            lines.append(parallel_speedup(n, args.seed, args.parallel_draws).round(3).to_string())
    else:
        n = (args.n or [5000])[0]
        settings = {
            k: v
            for k, v in (("chains", args.chains), ("draws", args.draws), ("tune", args.tune))
            if v is not None
        }
        rows = []
        for p in [] if args.no_low_rank else args.markers:
            G = genotypes(n, p, args.seed)
            rows.append(whole_fit(G, bernoulli_data(G, args.seed), True, args.seed, **settings))
            print(rows[-1], flush=True)
        if args.dense or args.no_low_rank:
            G = genotypes(n, args.dense_markers, args.seed)
            dense = dict(settings, rank_share=args.rank_share)
            rows.append(whole_fit(G, bernoulli_data(G, args.seed), False, args.seed, **dense))
            print(rows[-1], flush=True)
        what = ", ".join(f"{k}={v}" for k, v in settings.items()) or "defaults"
        if args.rank_share is not None:
            what += f", dense rank_share={args.rank_share}"
        lines += [f"## Bernoulli kinship GLMM, n = {n}, LMM(...).fit() {what}, whole call"]
        lines.append(pd.DataFrame(rows).round(3).to_string(index=False))
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
