"""Reading a pedigree table: ids, parents, parents-first order and cycle detection.

Shared by the dense relationship matrix (:mod:`bayeslmm.kinship.pedigree`) and the sparse
inverse (:mod:`bayeslmm.kinship.pedigree_inverse`), so both refuse the same pedigrees with
the same messages.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import pandas as pd

from bayeslmm.errors import DataError, KinshipError, preview

#: Parent entries that mean "unknown" (besides NaN / None).
UNKNOWN_PARENT = frozenset({"", "0", "."})


def _label(value: object) -> str | None:
    """Id as a string; None for an unknown parent. 3.0 (a float column with NaN) -> "3"."""
    if value is None:
        return None
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return None
        if float(value).is_integer():
            value = int(value)
    if value is pd.NA or value is pd.NaT:
        return None
    text = str(value).strip()
    return None if text in UNKNOWN_PARENT else text


def _parse(pedigree: pd.DataFrame, columns: tuple[str, str, str]):
    missing = [c for c in columns if c not in pedigree.columns]
    if missing:
        raise DataError(
            f"The pedigree lacks column(s) {preview(missing)}; it needs columns "
            f"{list(columns)} (got {list(pedigree.columns)}). Rename them or pass `columns=`."
        )
    id_col, sire_col, dam_col = columns
    ids = [_label(v) for v in pedigree[id_col]]
    if any(i is None for i in ids):
        rows = [k for k, i in enumerate(ids) if i is None]
        raise DataError(
            f"The pedigree has missing or unknown-coded ids ('0', '.', empty) in rows "
            f"{preview(rows)}; every row needs an id."
        )
    index = pd.Index(ids)
    dupes = index[index.duplicated()].unique().tolist()
    if dupes:
        raise DataError(
            f"The pedigree lists ids {preview(dupes)} more than once; give one row per individual."
        )
    sires = [_label(v) for v in pedigree[sire_col]]
    dams = [_label(v) for v in pedigree[dam_col]]
    selfish = [i for i, s, d in zip(ids, sires, dams, strict=True) if i in (s, d)]
    if selfish:
        raise DataError(
            f"Individual(s) {preview(selfish)} are listed as their own parent; fix the sire/dam "
            "entries of those rows."
        )
    return ids, sires, dams


def _order_parents_first(ids: list[str], sires: list, dams: list) -> list[int]:
    """Kahn's topological sort: every parent before its offspring; raise on a cycle."""
    pos = {i: k for k, i in enumerate(ids)}
    n = len(ids)
    children: list[list[int]] = [[] for _ in range(n)]
    n_parents = np.zeros(n, dtype=int)
    for k in range(n):
        for parent in {sires[k], dams[k]} - {None}:
            children[pos[parent]].append(k)
            n_parents[k] += 1
    queue = deque(k for k in range(n) if n_parents[k] == 0)
    order: list[int] = []
    while queue:
        k = queue.popleft()
        order.append(k)
        for child in children[k]:
            n_parents[child] -= 1
            if n_parents[child] == 0:
                queue.append(child)
    if len(order) < n:
        stuck = [ids[k] for k in range(n) if n_parents[k] > 0]
        raise KinshipError(
            f"The pedigree has a cycle (an individual is its own ancestor) among "
            f"{preview(stuck)}; check the sire/dam entries of those individuals."
        )
    return order


def _complete(pedigree: pd.DataFrame, columns: tuple[str, str, str]):
    """Ids (parents missing from the id column added first, as founders), sires, dams."""
    ids, sires, dams = _parse(pedigree, columns)
    known = set(ids)
    founders: list[str] = []
    for parent in [p for pair in zip(sires, dams, strict=True) for p in pair]:
        if parent is not None and parent not in known:
            known.add(parent)
            founders.append(parent)
    return (
        founders + ids,
        [None] * len(founders) + sires,
        [None] * len(founders) + dams,
    )
