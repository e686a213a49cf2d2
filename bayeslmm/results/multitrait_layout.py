"""Index layout shared by the multi-trait fits and their summary.json writers.

The fits (:mod:`bayeslmm.results.multitrait`) and the summary writers
(:mod:`bayeslmm.results.multitrait_summary`) both read (vech Σ_G, vech Σ_E), the row-major
lower triangles, and Wald intervals; this module holds the one copy of each, imported by
both (the summary writers are called from the fits' methods, so neither can import the
other).

Examples
--------
>>> vech_index(2)[(1, 0)], vech_index(2)[(0, 1)], vech_index(2)[(1, 1)]
(1, 1, 2)
>>> round(wald_z(0.95), 4)
1.96
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np


def wald_z(prob: float) -> float:
    """The normal quantile of a two-sided Wald interval of mass ``prob`` (1.96 for 0.95)."""
    return NormalDist().inv_cdf(0.5 + prob / 2.0)


def vech_index(t: int) -> dict[tuple[int, int], int]:
    """(a, b) → position of Σ_ab in vech Σ (row-major lower triangle), both ways round."""
    rows, cols = np.tril_indices(t)
    out = {}
    for k, (a, b) in enumerate(zip(rows.tolist(), cols.tolist(), strict=True)):
        out[(a, b)] = out[(b, a)] = k
    return out
