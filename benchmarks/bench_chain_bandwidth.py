"""Two threads on two cores: compute-bound against memory-bound work (a script that prints
figures, not a test).

Parallel chains speed up by what the cores can do at once. A chain whose gradient is
arithmetic on a few numbers (the control) scales with the cores; one whose gradient streams
a large matrix (the GLMM closed form multiplies by the n × n eigenvector matrix twice per
gradient: 4 MB at n = 1,000 in float32, more than the 1 MiB L2 of a core, less than the
shared 32 MiB L3) is limited by the bandwidth the two cores share. Each row runs the same
GIL-free numba kernel twice one after the other (one thread) and then in two threads at once,
and prints the speed-up (2 is the ceiling):

- ``compute``: a scalar loop of ``sin`` (no memory traffic);
- ``matvec n=…``: y = U x and then Uᵀ y for a float32 n × n matrix U, the GLMM gradient's two
  passes, with U shared by both threads (as the chains share the eigenvectors) and,
  ``private``, one copy per thread (twice the footprint).

Usage::

    python benchmarks/bench_chain_bandwidth.py [--reps 5] [--sizes 300,1000,2000]

On a machine that other jobs keep busy even the compute row gains nothing (the kernel shares
the cores out per session): read the matvec rows against the compute row of the same run.
"""

from __future__ import annotations

import argparse
import os
import threading
import time

import numba
import numpy as np


@numba.njit(nogil=True, cache=True)
def compute(k: int) -> float:
    s = 0.0
    for i in range(k):
        s += np.sin(i * 1e-3)
    return s


@numba.njit(nogil=True, cache=True)
def matvec_pair(u: np.ndarray, x: np.ndarray, y: np.ndarray, z: np.ndarray, reps: int) -> float:
    n = u.shape[0]
    for _ in range(reps):
        for i in range(n):  # y = U x (rows)
            acc = np.float32(0.0)
            for j in range(n):
                acc += u[i, j] * x[j]
            y[i] = acc
        for j in range(n):
            z[j] = 0.0
        for i in range(n):  # z = Uᵀ y (the second pass streams U again)
            yi = y[i]
            for j in range(n):
                z[j] += u[i, j] * yi
    return float(z.sum())


def timed(jobs: list) -> tuple[float, float]:
    """Wall and CPU seconds of running each job in its own thread, all at once."""
    threads = [threading.Thread(target=job) for job in jobs]
    wall, cpu = time.perf_counter(), time.process_time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - wall, time.process_time() - cpu


def speedup(make_job, reps: int) -> tuple[float, float, float]:
    """Best sequential and parallel seconds over ``reps`` and their ratio."""
    seq, par = [], []
    for _ in range(reps):
        a, b = make_job(0), make_job(1)
        seq.append(timed([lambda a=a, b=b: (a(), b())])[0])
        par.append(timed([a, b])[0])
    return min(seq), min(par), min(seq) / min(par)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--sizes", default="300,1000,2000")
    args = parser.parse_args()
    load = (
        " ".join(open("/proc/loadavg").read().split()[:3])
        if os.path.exists("/proc/loadavg")
        else "n/a"
    )
    print(f"# python benchmarks/bench_chain_bandwidth.py --reps {args.reps} --sizes {args.sizes}")
    print(
        f"# {time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())}; load {load}; {os.cpu_count()} CPUs"
    )
    compute(10)
    k = 20_000_000
    rows = [("compute (sin loop)", "-", *speedup(lambda _: lambda: compute(k), args.reps))]
    rng = np.random.default_rng(1)
    for n in (int(s) for s in args.sizes.split(",")):
        shared = rng.normal(size=(n, n)).astype(np.float32)
        private = [shared, shared.copy()]
        x = rng.normal(size=n).astype(np.float32)
        matvec_pair(shared, x, np.empty(n, np.float32), np.empty(n, np.float32), 1)
        inner = max(1, int(4e8 / (2 * n * n)))  # ~0.2 s of streaming per call

        def job(mats, n=n, x=x, inner=inner):
            def make(i):
                y, z = np.empty(n, np.float32), np.empty(n, np.float32)
                return lambda: matvec_pair(mats[i], x, y, z, inner)

            return make

        mb = shared.nbytes / 2**20
        rows.append(
            (f"matvec n={n} shared", f"{mb:.1f}", *speedup(job([shared, shared]), args.reps))
        )
        rows.append((f"matvec n={n} private", f"{2 * mb:.1f}", *speedup(job(private), args.reps)))
    print(f"{'kernel':26s} {'MiB':>6s} {'sequential s':>12s} {'parallel s':>10s} {'speed-up':>8s}")
    for name, mb, seq, par, ratio in rows:
        print(f"{name:26s} {mb:>6s} {seq:12.3f} {par:10.3f} {ratio:8.2f}")


if __name__ == "__main__":
    main()
