"""Pedigree relationship matrix A: textbook values, order invariance, an independent recursion."""

from functools import cache

import numpy as np
import pandas as pd
import pytest

from bayeslmm.errors import DataError, KinshipError
from bayeslmm.kinship import inbreeding, pedigree_relationship

# Mrode (2005), Example 2.1: 3 = 1 x 2; 4 = 1 x unknown; 5 = 4 x 3; 6 = 5 x 2.
MRODE = pd.DataFrame(
    {
        "id": [1, 2, 3, 4, 5, 6],
        "sire": [np.nan, np.nan, 1, 1, 4, 5],
        "dam": [np.nan, np.nan, 2, np.nan, 3, 2],
    }
)

# Worked by hand with the tabular rules a_ij = (a_j,sire(i) + a_j,dam(i)) / 2 (i younger) and
# a_ii = 1 + a_sire,dam / 2:
#   a11 = a22 = 1, a12 = 0 (founders)
#   3 (1 x 2): a13 = (a11 + a12)/2 = .5;  a23 = (a21 + a22)/2 = .5;  a33 = 1 + a12/2 = 1
#   4 (1 x ?): a14 = a11/2 = .5;  a24 = a21/2 = 0;  a34 = a31/2 = .25;  a44 = 1
#   5 (4 x 3): a15 = (a14 + a13)/2 = .5;  a25 = (a24 + a23)/2 = .25;
#              a35 = (a34 + a33)/2 = .625;  a45 = (a44 + a43)/2 = .625;  a55 = 1 + a43/2 = 1.125
#   6 (5 x 2): a16 = (a15 + a12)/2 = .25;  a26 = (a25 + a22)/2 = .625;
#              a36 = (a35 + a32)/2 = .5625; a46 = (a45 + a42)/2 = .3125;
#              a56 = (a55 + a52)/2 = .6875; a66 = 1 + a52/2 = 1.125
MRODE_A = np.array(
    [
        [1.0, 0.0, 0.5, 0.5, 0.5, 0.25],
        [0.0, 1.0, 0.5, 0.0, 0.25, 0.625],
        [0.5, 0.5, 1.0, 0.25, 0.625, 0.5625],
        [0.5, 0.0, 0.25, 1.0, 0.625, 0.3125],
        [0.5, 0.25, 0.625, 0.625, 1.125, 0.6875],
        [0.25, 0.625, 0.5625, 0.3125, 0.6875, 1.125],
    ]
)


def test_mrode_example_2_1():
    A = pedigree_relationship(MRODE)
    assert A.ids == ("1", "2", "3", "4", "5", "6")
    np.testing.assert_allclose(A.matrix, MRODE_A, atol=1e-15)
    np.testing.assert_allclose(inbreeding(MRODE), [0, 0, 0, 0, 0.125, 0.125], atol=1e-15)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shuffled_order_and_unknown_codes_give_same_matrix(seed):
    rng = np.random.default_rng(seed)
    ped = MRODE.sample(frac=1.0, random_state=seed).astype(object)
    unknown = ["0", ".", None, np.nan, ""]
    ped = ped.map(lambda v: unknown[rng.integers(len(unknown))] if pd.isna(v) else str(int(v)))
    A = pedigree_relationship(ped)
    assert A.ids == tuple(ped["id"])
    np.testing.assert_allclose(A.subset([str(i) for i in range(1, 7)]).matrix, MRODE_A)


def test_parents_missing_from_id_column_become_founders():
    ped = MRODE[MRODE["id"] > 2]  # 1 and 2 appear only as parents
    A = pedigree_relationship(ped)
    assert A.ids[:2] == ("1", "2")  # added founders first, in order of first appearance
    np.testing.assert_allclose(A.subset([str(i) for i in range(1, 7)]).matrix, MRODE_A)


def random_pedigree(n_founders, n_generations, per_generation, seed):
    rng = np.random.default_rng(seed)
    rows = [(f"f{k}", None, None) for k in range(n_founders)]
    pool = [r[0] for r in rows]
    for g in range(n_generations):
        new = []
        for k in range(per_generation):
            s, d = rng.choice(pool, size=2, replace=True)  # selfing allowed (s == d)
            if rng.random() < 0.15:
                s = None
            if rng.random() < 0.15:
                d = None
            new.append((f"g{g}_{k}", s, d))
        rows += new
        pool = pool[-2 * per_generation :] + [r[0] for r in new]  # overlapping generations
    return pd.DataFrame(rows, columns=["id", "sire", "dam"])


def recursive_a(ped):
    """Independent check: the recursive coancestry definition, memoised (no ordering step)."""
    known = ped.astype(object).where(ped.notna(), None)
    sire = dict(zip(known["id"], known["sire"], strict=True))
    dam = dict(zip(known["id"], known["dam"], strict=True))
    depth = {}

    def generation(i):
        if i not in depth:
            ps = [p for p in (sire[i], dam[i]) if p is not None]
            depth[i] = 1 + max((generation(p) for p in ps), default=-1)
        return depth[i]

    @cache
    def a(i, j):
        if i is None or j is None:
            return 0.0
        if i == j:
            return 1.0 + 0.5 * a(sire[i], dam[i])
        if generation(i) < generation(j):  # expand the younger of the two
            i, j = j, i
        return 0.5 * (a(j, sire[i]) + a(j, dam[i]))

    ids = list(ped["id"])
    return np.array([[a(i, j) for j in ids] for i in ids])


def test_random_inbred_pedigree_matches_recursive_definition():
    ped = random_pedigree(n_founders=6, n_generations=6, per_generation=8, seed=3)
    A = pedigree_relationship(ped.sample(frac=1.0, random_state=1))
    expected = recursive_a(ped)
    np.testing.assert_allclose(A.subset(list(ped["id"])).matrix, expected, atol=1e-12)
    assert (np.diag(expected) > 1).sum() > 5  # the check covers inbred animals


def test_selfing():
    # c is selfed from a: a_cc = 1 + a_aa / 2 = 1.5; a_ac = (a_aa + a_aa)/2 = 1.
    ped = pd.DataFrame({"id": ["a", "c"], "sire": [None, "a"], "dam": [None, "a"]})
    np.testing.assert_allclose(pedigree_relationship(ped).matrix, [[1.0, 1.0], [1.0, 1.5]])


@pytest.mark.parametrize(
    ("ped", "error", "message"),
    [
        (
            pd.DataFrame({"id": [1, 2], "sire": [None, 2], "dam": [None, 1]}),
            DataError,
            r"\['2'\] are listed as their own parent",
        ),
        (
            pd.DataFrame({"id": [1, 2, 3], "sire": [3, 1, 2], "dam": [None] * 3}),
            KinshipError,
            r"cycle.*\['1', '2', '3'\]",
        ),
        (
            pd.DataFrame({"id": [1, 1], "sire": [None, None], "dam": [None, None]}),
            DataError,
            r"lists ids \['1'\] more than once",
        ),
        (
            pd.DataFrame({"id": [1, "."], "sire": [None, None], "dam": [None, None]}),
            DataError,
            r"missing or unknown-coded ids.*rows \[1\]",
        ),
        (
            pd.DataFrame({"animal": [1], "sire": [None], "dam": [None]}),
            DataError,
            r"lacks column\(s\) \['id'\]",
        ),
    ],
)
def test_pedigree_errors(ped, error, message):
    with pytest.raises(error, match=message):
        pedigree_relationship(ped)


def test_custom_column_names():
    ped = MRODE.rename(columns={"id": "animal", "sire": "father", "dam": "mother"})
    A = pedigree_relationship(ped, columns=("animal", "father", "mother"))
    np.testing.assert_allclose(A.matrix, MRODE_A)
