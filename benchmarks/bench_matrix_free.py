"""The kernels of matrix-free REML, measured, and the cost they imply at n = 500,000 (a script).

Past n ≈ 50,000 even the SNP-space path's thin SVD (O(n p²)) is too slow, and the plan for
biobank cohorts is matrix-free REML as in BOLT-REML (Loh et al. 2015): never form or
factor K; solve V x = b with V = σ_g² K + σ_e² I by conjugate gradients, where each
iteration multiplies by K = W Wᵀ / p through the markers (two passes over W), and estimate
the traces of the REML score, tr(V⁻¹ K) and tr(V⁻¹), by Hutchinson's estimator with M
random probe vectors solved in the same block CG. This script measures, on simulated
markers at a size this machine holds:

1. the block product K B = W (Wᵀ B) / p for b right-hand sides (GFLOP/s, seconds per
   marker-pass), float64 and float32;
2. the CG iterations to relative residual 1e-6 at h² = 0.2, 0.5, 0.8 (no preconditioner;
   V's eigenvalues lie in [σ_e², σ_e² + σ_g² λ_max(K)]);
3. the relative standard error of Hutchinson's estimate of tr(V⁻¹K) with M probes, against
   the exact trace from the eigenvalues of K (the thin SVD of W);

and prints the cost of one AI-REML iteration at n = 500,000 and p = 500,000 markers
(1 + q + M right-hand sides, q = 10 covariates, M = 30 probes) from these measured
rates, on this machine's cores and on a cluster of nodes like it (BOLT-REML needs
5–10 such iterations).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_matrix_free.py [--n 20000] [--p 4000]

References
----------
Loh, P.-R. et al. (2015). Contrasting genetic architectures of schizophrenia and other
complex diseases using fast variance-components analysis. Nature Genetics 47, 1385–1392.
Hutchinson, M. F. (1990). A stochastic estimator of the trace of the influence matrix for
Laplacian smoothing splines. Communications in Statistics 19, 433–450.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
from threadpoolctl import threadpool_limits


def markers(n: int, p: int, seed: int, dtype=np.float64) -> np.ndarray:
    """Standardised simulated dosages with some population structure (two subpopulations)."""
    rng = np.random.default_rng(seed)
    freq = rng.uniform(0.05, 0.5, p)
    drift = np.clip(freq + rng.normal(0, 0.05, p), 0.01, 0.99)
    half = n // 2
    G = np.empty((n, p), dtype=np.int8)
    G[:half] = rng.binomial(2, freq, size=(half, p))
    G[half:] = rng.binomial(2, drift, size=(n - half, p))
    W = G.astype(dtype)
    W -= W.mean(0)
    W /= np.maximum(W.std(0), 1e-6)
    return W


def kernel_rate(W: np.ndarray, b: int, repeats: int = 3) -> tuple[float, float]:
    """Seconds per K B and GFLOP/s (4 n p b flops: Wᵀ B then W (·))."""
    n, p = W.shape
    B = np.random.default_rng(0).normal(size=(n, b)).astype(W.dtype)
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        W @ (W.T @ B)
        best = min(best, time.perf_counter() - t0)
    return best, 4.0 * n * p * b / best / 1e9


def cg_iterations(W: np.ndarray, h2: float, tol: float = 1e-6) -> int:
    """Plain CG on (h² K + (1 − h²) I) x = y: iterations to ‖r‖ ≤ tol ‖y‖."""
    n, p = W.shape
    y = np.random.default_rng(1).normal(size=n)

    def matvec(v):
        return h2 * (W @ (W.T @ v)) / p + (1.0 - h2) * v

    x = np.zeros(n)
    r = y.copy()
    d = r.copy()
    rr = r @ r
    for it in range(1, 2000):
        Vd = matvec(d)
        alpha = rr / (d @ Vd)
        x += alpha * d
        r -= alpha * Vd
        rr_new = r @ r
        if np.sqrt(rr_new) <= tol * np.sqrt(y @ y):
            return it
        d = r + (rr_new / rr) * d
        rr = rr_new
    return 2000


def hutchinson_rse(eigenvalues: np.ndarray, n: int, h2: float, probes: int, reps: int = 200):
    """Relative SE of Hutchinson's tr(V⁻¹K) with Rademacher probes, by simulation in the
    eigenbasis (the estimator's law depends on V⁻¹K only through its eigenvalues when the
    probes are Gaussian; Rademacher is slightly better, so this is a bound)."""
    lam = np.zeros(n)
    lam[: eigenvalues.size] = eigenvalues
    d = lam / (h2 * lam + 1.0 - h2)
    exact = d.sum()
    rng = np.random.default_rng(2)
    estimates = [float(np.mean((rng.normal(size=(probes, n)) ** 2) @ d)) for _ in range(reps)]
    return float(np.std(estimates) / exact)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--p", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    n, p = args.n, args.p
    print(f"# bench_matrix_free: python {platform.python_version()}, numpy {np.__version__}")
    print(f"# command: python benchmarks/bench_matrix_free.py --n {n} --p {p}")
    print("# BLAS pinned to 1 thread (threadpoolctl)")
    with threadpool_limits(limits=1, user_api="blas"):
        t0 = time.perf_counter()
        W = markers(n, p, args.seed)
        print(f"simulated W: {n} x {p} in {time.perf_counter() - t0:.1f} s")
        rates = {}
        for dtype in (np.float64, np.float32):
            Wd = W.astype(dtype, copy=False)
            for b in (1, 8, 41):
                seconds, gflops = kernel_rate(Wd, b)
                rates[(np.dtype(dtype).name, b)] = gflops
                print(
                    f"K·B, {np.dtype(dtype).name}, b = {b:2d}: {seconds * 1e3:8.1f} ms, "
                    f"{gflops:6.2f} GFLOP/s"
                )
        s = np.linalg.svd(W, compute_uv=False)
        eigenvalues = s**2 / p
        print(f"K: largest eigenvalue {eigenvalues[0]:.1f}, mean {eigenvalues.sum() / n:.3f}")
        iterations = {}
        for h2 in (0.2, 0.5, 0.8):
            iterations[h2] = cg_iterations(W, h2)
            rse = hutchinson_rse(eigenvalues, n, h2, probes=30)
            print(
                f"h2 = {h2}: CG iterations to 1e-6: {iterations[h2]:3d}; "
                f"Hutchinson tr(V⁻¹K), 30 probes: relative SE {rse:.2e}"
            )
    # extrapolation: one AI-REML iteration = CG on 1 + q + M right-hand sides together
    big_n, big_p, rhs = 500_000, 500_000, 1 + 10 + 30
    its = max(iterations.values())
    flops = its * 4.0 * big_n * big_p * rhs
    rate = rates[("float32", 41)]
    core_hours = flops / (rate * 1e9) / 3600
    print()
    print(
        f"# n = {big_n:,}, p = {big_p:,} markers, {rhs} right-hand sides, {its} CG "
        f"iterations (the worst measured): {flops:.2e} flop per AI-REML iteration"
    )
    print(
        f"# at the measured float32 block rate {rate:.1f} GFLOP/s per core: "
        f"{core_hours:.0f} core-hours per iteration; 8 iterations on 100 nodes of 16 such "
        f"cores: {8 * core_hours / 1600:.1f} h (markers streamed: {big_n * big_p / 1e9 / 4:.0f} "
        "GB as 2-bit PLINK, read once per CG iteration)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
