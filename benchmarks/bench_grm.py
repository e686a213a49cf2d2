"""Speed and memory of the kinship builders (a script that prints numbers, not a test).

1. ``grm``: blockwise crossproduct time as a ratio to one dense ``Z @ Z.T`` on the whole
   (already imputed and centred) matrix, and peak memory traced by ``tracemalloc`` beyond the
   input, for several block sizes: memory should follow n² + n·block_size, not n·m.
2. ``loco_grms`` time vs one ``grm`` (both without the Kinship eigendecompositions).
3. ``pedigree_relationship`` (tabular method) time.

BLAS is pinned to one thread (threadpoolctl) and times are CPU seconds of this process
(``time.process_time``), so they do not depend much on how busy the machine's cores are. Usage::

    python benchmarks/bench_grm.py [n] [m]        # default: 2000 20000
"""

from __future__ import annotations

import platform
import sys
import time
import tracemalloc

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from bayeslmm.kinship.grm import _as_dosages, _compute_grm, _select_snps


def crossproduct(X: np.ndarray, block_size: int) -> tuple[float, float]:
    """Seconds and peak MiB (beyond the input) of the GRM numerator+divisor, no Kinship."""
    tracemalloc.start()
    t0 = time.process_time()
    dos = _as_dosages(X, None)
    sel = _select_snps(dos, 0.0, block_size)
    _compute_grm(dos, sel, False, block_size, counts=False)
    seconds = time.process_time() - t0
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return seconds, peak


def main(n: int, m: int) -> None:
    rng = np.random.default_rng(0)
    X = rng.binomial(2, rng.uniform(0.05, 0.95, m), size=(n, m)).astype(float)
    X[rng.random((n, m)) < 0.02] = np.nan
    print(f"python {platform.python_version()}, numpy {np.__version__}, 1 BLAS thread")
    print(f"n = {n}, m = {m} SNPs, 2% missing; input {X.nbytes / 2**20:.0f} MiB")
    p = np.nanmean(X, axis=0) / 2
    Z = np.where(np.isnan(X), 0.0, X - 2 * p)
    t0 = time.process_time()
    Z @ Z.T
    dense = time.process_time() - t0
    del Z
    print(f"dense Z @ Z.T on the whole imputed matrix: {dense:.2f} s (n·m·8 bytes extra)")
    print(f"n² float64 = {n * n * 8 / 2**20:.0f} MiB")
    print("block_size  seconds  ratio_to_dense  peak_MiB  (n² + 3·n·block)·8 MiB")
    for block in (250, 1000, 4000):
        seconds, peak = crossproduct(X, block)
        model = (n * n + 3 * n * block) * 8 / 2**20
        print(f"{block:>10}  {seconds:7.2f}  {seconds / dense:14.2f}  {peak:8.0f}  {model:8.0f}")

    from bayeslmm.kinship import loco

    chrom = np.repeat(np.arange(1, 11), m // 10 + 1)[:m]
    real_kinship = loco.Kinship
    loco.Kinship = lambda K, ids, name: K  # time the arithmetic, not 10 eigendecompositions
    try:
        t0 = time.process_time()
        loco.loco_grms(X, chrom)
        t_loco = time.process_time() - t0
    finally:
        loco.Kinship = real_kinship
    t_grm, _ = crossproduct(X, 2000)
    print(f"loco_grms, 10 chromosomes: {t_loco:.2f} s = {t_loco / t_grm:.2f} × one grm")

    from bayeslmm.kinship import pedigree

    size = 5000
    sires = np.zeros(size, dtype=int)
    dams = np.zeros(size, dtype=int)
    for k in range(200, size):  # random parents among earlier animals (200 founders)
        sires[k], dams[k] = rng.integers(1, k + 1, size=2)
    ped = pd.DataFrame({"id": np.arange(1, size + 1), "sire": sires, "dam": dams})
    real_kinship = pedigree.Kinship
    pedigree.Kinship = lambda A, ids, name: A
    try:
        t0 = time.process_time()
        A = pedigree.pedigree_relationship(ped)
        t_tab = time.process_time() - t0
    finally:
        pedigree.Kinship = real_kinship
    t0 = time.process_time()
    np.linalg.eigh(A)
    t_eigh = time.process_time() - t0
    print(
        f"pedigree_relationship, {size} animals: tabular method {t_tab:.2f} s; "
        f"the Kinship's eigendecomposition adds {t_eigh:.2f} s"
    )


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    with threadpool_limits(limits=1):
        main(*(args or [2000, 20000]))
