"""Sparse A⁻¹ from a pedigree: against inv(A) of the dense tabular construction, the
Mendelian-sampling factors against A, and the sparse kinship's Kinship interface."""

import importlib
import warnings

import numpy as np
import pandas as pd
import pytest

from bayeslmm.errors import KinshipError
from bayeslmm.kinship import (
    PedigreeDensifyWarning,
    SparsePedigreeKinship,
    inbreeding,
    mendelian_decomposition,
    pedigree_relationship,
)

# the module (the package's attribute of that name is the function)
pedigree_inverse_module = importlib.import_module("bayeslmm.kinship.pedigree_inverse")


def _random_pedigree(n: int, seed: int, generations: int = 6, labels: str = "int") -> pd.DataFrame:
    """Overlapping generations with full-sib, parent-offspring and half-sib matings, selfing,
    unknown parents and parents that have no row of their own; rows shuffled."""
    rng = np.random.default_rng(seed)
    ids = list(range(1, n + 1))
    sire = [None] * n
    dam = [None] * n
    per_gen = n // generations
    for k in range(per_gen, n):
        pool = ids[: (k // per_gen) * per_gen]
        u = rng.random()
        if u < 0.1:
            continue  # both parents unknown (a later founder)
        if u < 0.25:
            sire[k] = int(rng.choice(pool))  # one parent known
            continue
        if u < 0.35 and k > per_gen:
            # full-sib or parent-offspring mating: the parents of a recent animal, or the
            # animal and one of its parents
            j = int(rng.integers(per_gen, k))
            sire[k] = j + 1 if sire[j] is None or rng.random() < 0.5 else sire[j]
            dam[k] = dam[j] if dam[j] is not None else sire[j]
            if dam[k] is None or dam[k] == sire[k]:
                dam[k] = j + 1 if sire[k] != j + 1 else None
            continue
        s, d = rng.choice(pool, size=2, replace=False)
        sire[k], dam[k] = int(s), int(d)
    if n > 3:
        sire[n - 1] = dam[n - 1] = n - 2  # selfing
    ped = pd.DataFrame({"id": ids, "sire": sire, "dam": dam}, dtype=object)
    ped = ped.iloc[2:].sample(frac=1.0, random_state=seed)  # ids 1, 2: parents without rows
    if labels == "str":
        ped = ped.map(lambda v: "0" if v is None else f"an{v}")
    return ped.reset_index(drop=True)


PEDIGREES = [
    pytest.param(_random_pedigree(60, 0), id="int-60"),
    pytest.param(_random_pedigree(150, 1, labels="str"), id="str-150"),
    pytest.param(_random_pedigree(300, 2, generations=10), id="int-300-deep"),
]


@pytest.mark.parametrize("ped", PEDIGREES)
def test_inverse_equals_inverse_of_dense_A(ped):
    dense = pedigree_relationship(ped)
    sparse = pedigree_relationship(ped, sparse=True)
    assert isinstance(sparse, SparsePedigreeKinship)
    assert sparse.ids == dense.ids == sparse.pedigree_ids
    F = np.diag(dense.matrix) - 1.0
    assert F.max() > 0.2  # the pedigree is inbred (full sibs, parent-offspring, selfing)
    Ainv = np.linalg.inv(dense.matrix)
    np.testing.assert_allclose(sparse.inverse.toarray(), Ainv, rtol=0, atol=1e-10)
    np.testing.assert_allclose(sparse.inbreeding, F, rtol=0, atol=1e-12)
    np.testing.assert_allclose(sparse.diagonal(), np.diag(dense.matrix), atol=1e-12)
    np.testing.assert_allclose(inbreeding(ped).to_numpy(), F, atol=1e-12)
    assert list(inbreeding(ped).index) == list(dense.ids)


@pytest.mark.parametrize("ped", PEDIGREES)
def test_mendelian_factors_give_A(ped):
    """A = L D Lᵀ with L⁻¹ = I − P (entries 1 and −½), and d from the rule by parents."""
    dense = pedigree_relationship(ped).matrix
    ids, Linv, d, F = mendelian_decomposition(ped)
    T = Linv.toarray()
    off = T - np.eye(len(ids))
    assert set(np.unique(off).tolist()) <= {-1.0, -0.5, 0.0}  # -1: a selfed animal
    L = np.linalg.inv(T)
    np.testing.assert_allclose((L * d) @ L.T, dense, rtol=0, atol=1e-10)
    # the Mendelian-sampling variances, independently from the dense A
    pos = {i: k for k, i in enumerate(ids)}
    raw = ped.set_index(ped["id"].astype(str))
    for i in ids[:40]:
        k = pos[i]
        if i not in raw.index:
            assert d[k] == 1.0
            continue
        parents = [str(p) for p in raw.loc[i, ["sire", "dam"]] if p is not None and str(p) != "0"]
        parents = [pos[p] for p in parents]
        # Var(a_i) − Var(mean of the parents' contributions) = d_i
        w = np.zeros(len(ids))
        for p in parents:
            w[p] += 0.5
        np.testing.assert_allclose(d[k], dense[k, k] - w @ dense @ w, atol=1e-12)


def test_mendelian_sampling_covariance_is_A_exactly():
    """u = L (√d ∘ z): Cov(u) = L diag(√d) I diag(√d) Lᵀ — the sampler's map applied to the
    identity's columns gives a square root of A."""
    ped = _random_pedigree(80, 5)
    kin = pedigree_relationship(ped, sparse=True)
    Z = np.eye(kin.n_pedigree)
    # a = L m solved from (I − P) a = m, column by column of m = √d ∘ z
    R = kin._triangular.solve(np.sqrt(kin.mendelian_variances)[:, None] * Z)
    np.testing.assert_allclose(R @ R.T, pedigree_relationship(ped).matrix, atol=1e-12)


def test_views_and_products_without_dense_matrix():
    ped = _random_pedigree(120, 3)
    dense = pedigree_relationship(ped)
    sparse = pedigree_relationship(ped, sparse=True)
    rng = np.random.default_rng(0)
    some = list(rng.choice(dense.ids, size=30, replace=False))
    view = sparse.subset(some)
    assert view.ids == tuple(some) and view.n == 30 and view.n_pedigree == dense.n
    v = rng.normal(size=(30, 2))
    sub = dense.subset(some).matrix
    np.testing.assert_allclose(view.dot(v), sub @ v, atol=1e-12)
    np.testing.assert_allclose(view.dot(v[:, 0]), sub @ v[:, 0], atol=1e-12)
    np.testing.assert_allclose(view.diagonal(), np.diag(sub), atol=1e-12)
    assert view.mean_diagonal == pytest.approx(np.mean(np.diag(sub)))
    assert view.inverse is sparse.inverse  # the whole pedigree's A⁻¹
    # the dense Kinship's diagonal()/dot() agree with the matrix
    np.testing.assert_allclose(dense.dot(np.eye(dense.n)), dense.matrix)
    with pytest.raises(KinshipError, match="missing from pedigree kinship"):
        sparse.subset(["no-such-animal"])


def test_dense_matrix_on_demand_small_and_refused_large(monkeypatch):
    ped = _random_pedigree(40, 4)
    sparse = pedigree_relationship(ped, sparse=True)
    with pytest.warns(PedigreeDensifyWarning):
        A = sparse.matrix
    np.testing.assert_allclose(A, pedigree_relationship(ped).matrix, atol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sparse.matrix  # noqa: B018 (cached: warned once)
    monkeypatch.setattr(pedigree_inverse_module, "DENSE_PEDIGREE_LIMIT", 10)
    fresh = pedigree_relationship(ped, sparse=True)
    with pytest.raises(KinshipError, match="method='reml'"):
        fresh.matrix  # noqa: B018


def test_same_refusals_as_dense():
    cyclic = pd.DataFrame({"id": ["a", "b"], "sire": ["b", "a"], "dam": [None, None]})
    with pytest.raises(KinshipError, match="cycle"):
        pedigree_relationship(cyclic, sparse=True)


def test_larger_pedigree_inbreeding_matches_dense():
    """A 2,000-animal, 10-generation random-mating pedigree: F and A⁻¹ as the dense path."""
    rng = np.random.default_rng(7)
    per, gens = 200, 10
    rows = [(f"g0_{i}", None, None) for i in range(per)]
    for g in range(1, gens):
        for i in range(per):
            s, d = rng.choice(per // 2, size=2)  # sires: first half, dams: second half
            sire = f"g{g - 1}_{s}" if rng.random() > 0.05 else None
            rows.append((f"g{g}_{i}", sire, f"g{g - 1}_{per // 2 + d}"))
    ped = pd.DataFrame(rows, columns=["id", "sire", "dam"]).sample(frac=1.0, random_state=1)
    dense = pedigree_relationship(ped)
    sparse = pedigree_relationship(ped, sparse=True)
    np.testing.assert_allclose(sparse.inbreeding, np.diag(dense.matrix) - 1, atol=1e-12)
    sample = rng.choice(dense.n, size=200, replace=False)
    Ainv = np.linalg.inv(dense.matrix)
    np.testing.assert_allclose(
        sparse.inverse.toarray()[np.ix_(sample, sample)], Ainv[np.ix_(sample, sample)], atol=1e-10
    )
