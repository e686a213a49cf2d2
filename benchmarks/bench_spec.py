"""Building the specification of a large crossed design (lme4's InstEval shape; a script).

73,421 rows, crossed random factors with 2,972 (students) and 1,128 (lecturers) levels and
an interaction factor ``dept:service`` (28 levels): the formula of lme4's InstEval example,
``y ~ service + (1|s) + (1|d) + (1|dept:service)``, on simulated data of that shape. The
script times ``LMM(...)`` (validation and design construction, no fit), best of three.

Usage::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/bench_spec.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

import bayeslmm as bl

FORMULA = "y ~ service + (1|s) + (1|d) + (1|dept:service)"


def insteval_shaped(n: int = 73_421, seed: int = 0) -> pd.DataFrame:
    """Simulated ratings with InstEval's sizes (ids as text, as read from a file)."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "y": rng.integers(1, 6, n).astype(float),
            "s": rng.integers(0, 2972, n).astype(str),
            "d": rng.integers(0, 1128, n).astype(str),
            "dept": rng.integers(0, 14, n).astype(str),
            "service": rng.integers(0, 2, n).astype(str),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    data = insteval_shaped()
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        model = bl.LMM(FORMULA, data)
        times.append(time.perf_counter() - start)
    levels = [t.n_levels for t in model.spec.terms]
    print(f"{FORMULA}: n = {len(data)}, levels {levels}")
    print(f"LMM(...) construction: best {min(times):.3f} s of {args.repeats}")


if __name__ == "__main__":
    main()
