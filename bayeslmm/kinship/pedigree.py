"""Numerator relationship matrix A from a pedigree (tabular method, with inbreeding).

A[i, j] is twice the coancestry of i and j: the expected share of alleles identical by descent
relative to the founders. With sire s and dam d of the younger individual i (Henderson 1976;
Mrode 2005, section 2.1):

    A[i, j] = (A[j, s] + A[j, d]) / 2       (an unknown parent contributes 0)
    A[i, i] = 1 + A[s, d] / 2 = 1 + F_i     (F_i = 0 unless both parents are known)
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import pandas as pd

from bayeslmm.errors import DataError, KinshipError, preview
from bayeslmm.kinship._kinship import Kinship

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


def pedigree_relationship(
    pedigree: pd.DataFrame,
    columns: tuple[str, str, str] = ("id", "sire", "dam"),
    name: str = "A",
) -> Kinship:
    """Numerator relationship matrix A of a pedigree, by the tabular method.

    Parameters
    ----------
    pedigree : DataFrame
        One row per individual with columns id, sire, dam (names set by ``columns``), in any
        order. Unknown parents are NaN, None, ``"0"``, ``"."`` or empty. Parents that have no
        row of their own are added as founders (unknown parents). An individual may be both
        sire and dam of another (selfing).
    columns : (str, str, str)
        Names of the id, sire and dam columns.
    name : str
        Label of the returned kinship.

    Returns
    -------
    Kinship
        A with ids in input order, preceded by the added founders (in order of first
        appearance). Its diagonal is 1 + F, F the inbreeding coefficients
        (see :func:`inbreeding`).

    Raises
    ------
    DataError
        Missing columns, missing or duplicated ids, an individual listed as its own parent.
    KinshipError
        A cycle (an individual that is its own ancestor).

    Examples
    --------
    Mrode (2005), Example 2.1:

    >>> import pandas as pd
    >>> from bayeslmm.kinship import pedigree_relationship
    >>> ped = pd.DataFrame({"id": [1, 2, 3, 4, 5, 6], "sire": [0, 0, 1, 1, 4, 5],
    ...                     "dam": [0, 0, 2, 0, 3, 2]})
    >>> A = pedigree_relationship(ped)
    >>> A.matrix.diagonal().tolist()
    [1.0, 1.0, 1.0, 1.0, 1.125, 1.125]
    """
    ids, sires, dams = _complete(pedigree, columns)
    order = _order_parents_first(ids, sires, dams)
    n = len(ids)
    rank = np.empty(n, dtype=int)
    rank[order] = np.arange(n)
    pos = {i: k for k, i in enumerate(ids)}
    # A is filled in parents-first order: row r only reads rows of earlier (older) animals.
    A = np.zeros((n, n))
    for r, k in enumerate(order):
        s = rank[pos[sires[k]]] if sires[k] is not None else None
        d = rank[pos[dams[k]]] if dams[k] is not None else None
        row = np.zeros(r)
        if s is not None:
            row += 0.5 * A[s, :r]
        if d is not None:
            row += 0.5 * A[d, :r]
        A[r, :r] = row
        A[:r, r] = row
        A[r, r] = 1.0 + (0.5 * A[s, d] if s is not None and d is not None else 0.0)
    A = A[np.ix_(rank, rank)]
    # A is positive definite by construction (A = T D Tᵀ, D > 0): skip the O(n³) check.
    return Kinship(A, ids=ids, name=name, check_psd=False)


def inbreeding(
    pedigree: pd.DataFrame, columns: tuple[str, str, str] = ("id", "sire", "dam")
) -> pd.Series:
    """Inbreeding coefficients F = diag(A) - 1 of every individual in a pedigree.

    Parameters
    ----------
    pedigree, columns
        As in :func:`pedigree_relationship`.

    Returns
    -------
    Series
        F indexed by id (added founders first, with F = 0).

    Examples
    --------
    >>> import pandas as pd
    >>> from bayeslmm.kinship import inbreeding
    >>> ped = pd.DataFrame({"id": ["a", "b", "c"], "sire": [None, "a", "a"],
    ...                     "dam": [None, None, "b"]})
    >>> inbreeding(ped).tolist()
    [0.0, 0.0, 0.25]
    """
    A = pedigree_relationship(pedigree, columns=columns)
    return pd.Series(np.diag(A.matrix) - 1.0, index=list(A.ids), name="F")
