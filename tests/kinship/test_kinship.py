"""The Kinship object: every validation error (asserting on its message) and derived kernels."""

import numpy as np
import pandas as pd
import pytest

from bayeslmm.errors import KinshipError
from bayeslmm.kinship import Kinship, grm
from bayeslmm.kinship._kinship import root_tolerance


def psd(n=6, rank=None, seed=0):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(n, rank or 2 * n))
    return W @ W.T / W.shape[1]


IDS = ["a", "b", "c", "d", "e", "f"]


def test_asymmetric_names_the_entries():
    K = psd()
    K[0, 2] += 0.1
    with pytest.raises(KinshipError, match=r"not symmetric: K\['a','c'\] = .* but K\['c','a'\]"):
        Kinship(K, IDS)


def test_not_psd_reports_smallest_eigenvalue():
    with pytest.raises(KinshipError, match=r"smallest eigenvalue -1 \(1 below .*max eigenvalue 3"):
        Kinship(np.array([[1.0, 2.0], [2.0, 1.0]]), ["x", "y"], name="bad")


def test_tiny_negative_rounding_is_accepted_and_clipped():
    K = psd(6, rank=3)  # rank deficient: three zero eigenvalues up to rounding
    kin = Kinship(K + np.diag([-1e-9] + [0.0] * 5), IDS)
    assert kin.min_eigenvalue < 0 and kin.eigenvalues.min() == 0.0


def test_nan_entries():
    K = psd()
    K[1, 1] = np.nan
    with pytest.raises(KinshipError, match=r"holds 1 NaN/inf entries"):
        Kinship(K, IDS)


def test_duplicate_ids():
    with pytest.raises(KinshipError, match=r"duplicate ids \['b'\]"):
        Kinship(psd(3), ["a", "b", "b"])


def test_non_square_and_wrong_id_count():
    with pytest.raises(KinshipError, match=r"must be a square matrix; got shape \(2, 3\)"):
        Kinship(np.zeros((2, 3)), ["a", "b"])
    with pytest.raises(KinshipError, match="has 6 rows but 5 ids"):
        Kinship(psd(), IDS[:5])


def test_ids_become_strings():
    kin = Kinship(np.eye(2), [1, 2])
    assert kin.ids == ("1", "2")
    assert kin.subset(["2"]).ids == ("2",)


def test_from_dataframe_reorders_permuted_columns():
    K = psd()
    frame = pd.DataFrame(K, index=IDS, columns=IDS)
    perm = ["c", "a", "f", "b", "e", "d"]
    kin = Kinship.from_dataframe(frame[perm])
    assert kin.ids == tuple(IDS)
    np.testing.assert_allclose(kin.matrix, K)
    pd.testing.assert_frame_equal(kin.to_dataframe(), frame)
    bad = frame.rename(columns={"f": "z"})
    with pytest.raises(KinshipError, match=r"row ids and column ids differ \(e.g. \['f', 'z'\]"):
        Kinship.from_dataframe(bad)


def test_subset_orders_and_lists_missing_ids():
    kin = Kinship(psd(), IDS, name="G")
    sub = kin.subset(["d", "a"])
    np.testing.assert_allclose(sub.matrix, psd()[np.ix_([3, 0], [3, 0])])
    with pytest.raises(KinshipError, match=r"2 ids are missing from kinship 'G': \['x', 'y'\]"):
        kin.subset(["a", "x", "y"])


def test_eigendecomposition_reconstructs():
    kin = Kinship(psd(), IDS)
    U, s = kin.eigenvectors, kin.eigenvalues
    np.testing.assert_allclose((U * s) @ U.T, kin.matrix, atol=1e-12)
    assert np.all(np.diff(s) >= 0)


def test_low_rank_share():
    kin = Kinship(psd(8, rank=4, seed=1), [str(k) for k in range(8)])
    values, vectors = kin.low_rank(1.0)
    assert len(values) == 4  # zero eigenvalues dropped
    np.testing.assert_allclose((vectors * values) @ vectors.T, kin.matrix, atol=1e-12)
    s = np.sort(np.linalg.eigvalsh(kin.matrix))[::-1]
    cum = np.cumsum(s) / s.sum()
    for share in (0.3, 0.6, 0.9):
        v, U = kin.low_rank(share)
        k = int(np.argmax(cum >= share)) + 1  # fewest leading eigenvalues reaching the share
        assert len(v) == k and U.shape == (8, k)
        assert v.sum() / s.sum() >= share
    with pytest.raises(ValueError, match=r"share must lie in \(0, 1\]"):
        kin.low_rank(0.0)


def test_root_is_a_square_root_with_one_truncation_rule():
    # a centred GRM-like kernel: rank 4 of 8, its four zero eigenvalues come out of eigh as
    # rounding (about 1e-16 of the largest), below the n·ε tolerance
    kin = Kinship(psd(8, rank=4, seed=1), [str(k) for k in range(8)])
    root = kin.root()
    assert root.rank == 4 and root.factor.shape == (8, 4)
    assert np.all(np.diff(root.values) <= 0)  # largest first
    np.testing.assert_allclose(root.factor @ root.factor.T, kin.matrix, atol=1e-12)
    np.testing.assert_allclose(root.factor, root.vectors * np.sqrt(root.values))
    assert root.discarded < 1e-14
    top = kin.eigenvalues[-1]
    dropped = np.sort(kin.eigenvalues)[:4]
    assert np.all(dropped <= root_tolerance(8) * top)
    # a share keeps the fewest leading eigenpairs reaching it; discarded is the rest's share
    s = np.sort(np.linalg.eigvalsh(kin.matrix))[::-1]
    part = kin.root(0.6)
    k = int(np.argmax(np.cumsum(s) / s.sum() >= 0.6)) + 1
    assert part.rank == k < 4
    assert part.discarded == pytest.approx(s[k:].sum() / s.sum())
    assert 1.0 - part.discarded >= 0.6 > 1.0 - part.discarded - s[k - 1] / s.sum()


def test_root_is_cached_per_share_and_read_only():
    kin = Kinship(psd(), IDS)
    assert kin.root() is kin.root() is kin.root(1.0)
    assert kin.root(0.5) is kin.root(0.5) and kin.root(0.5) is not kin.root()
    assert kin.root().rank == 6  # positive definite: nothing dropped
    with pytest.raises(ValueError, match="read-only"):
        kin.root().factor[0, 0] = 1.0
    values, vectors = kin.low_rank(0.5)  # the older name reads the same cache
    assert values is kin.root(0.5).values and vectors is kin.root(0.5).vectors
    with pytest.raises(ValueError, match=r"share must lie in \(0, 1\]; got 1.5"):
        kin.root(1.5)


def test_root_drops_the_eigenvalue_of_a_repeated_individual():
    # two ids with identical rows (a clone): one exact zero eigenvalue, dropped
    K = np.array([[1.0, 1.0, 0.2], [1.0, 1.0, 0.2], [0.2, 0.2, 1.0]])
    root = Kinship(K, ["a", "a2", "b"]).root()
    assert root.rank == 2
    np.testing.assert_allclose(root.factor @ root.factor.T, K, atol=1e-12)


def test_normalized_has_unit_mean_diagonal():
    kin = Kinship(3.0 * psd(), IDS)
    norm = kin.normalized()
    assert norm.mean_diagonal == pytest.approx(1.0)
    np.testing.assert_allclose(norm.matrix * kin.mean_diagonal, kin.matrix)


def test_bend_raises_small_eigenvalues():
    kin = Kinship(psd(6, rank=3), IDS)
    bent = kin.bend(floor=1e-3)
    s = np.linalg.eigvalsh(bent.matrix)
    assert s.min() == pytest.approx(1e-3 * s.max(), rel=1e-6)
    # Eigenvalues above the floor are untouched.
    np.testing.assert_allclose(s[-3:], np.linalg.eigvalsh(kin.matrix)[-3:], rtol=1e-10)


def test_bent_repairs_an_estimated_non_psd_matrix():
    M = np.array([[1.0, 0.9, 0.3], [0.9, 1.0, 0.9], [0.3, 0.9, 1.0]])
    assert np.linalg.eigvalsh(M).min() < 0
    with pytest.raises(KinshipError, match=r"Kinship.bent\(matrix, ids\)"):
        Kinship(M, ["a", "b", "c"])
    kin = Kinship.bent(M, ["a", "b", "c"])
    assert kin.min_eigenvalue >= 0
    # The unchanged eigen-directions with positive eigenvalues are kept.
    np.testing.assert_allclose(
        np.linalg.eigvalsh(kin.matrix)[1:], np.linalg.eigvalsh(M)[1:], rtol=1e-10
    )
    with pytest.raises(KinshipError, match="not symmetric"):
        Kinship.bent(M + np.triu(np.full((3, 3), 0.1), 1), ["a", "b", "c"])


def test_hadamard_is_elementwise_square_and_psd():
    rng = np.random.default_rng(2)
    X = rng.binomial(2, 0.4, size=(12, 300)).astype(float)
    G = grm(X, ids=[f"i{k}" for k in range(12)])
    H = G.hadamard()
    np.testing.assert_allclose(H.matrix, G.matrix**2)
    assert H.name == "GRM∘GRM" and H.min_eigenvalue > -1e-10  # Schur product theorem
    # With another kernel in a different order, it is aligned by id first.
    other = Kinship(psd(12, seed=3), [f"i{k}" for k in range(12)], name="E")
    reordered = other.subset(list(reversed(other.ids)))
    np.testing.assert_allclose(G.hadamard(reordered).matrix, G.matrix * other.matrix)
    with pytest.raises(KinshipError, match="missing from kinship 'E'"):
        G.hadamard(other.subset(["i0", "i1"]))


@pytest.mark.parametrize(
    ("matrix", "message"),
    [
        (np.zeros((6, 6)), "is all zero"),
        (np.full((6, 6), 0.3), r"is constant \(0.3\).*intercept"),
    ],
)
def test_zero_or_constant_kinship_is_refused(matrix, message):
    with pytest.raises(KinshipError, match=message):
        Kinship(matrix, IDS)
    # a single individual is trivially constant, and allowed (it is refused later, with a
    # message about the number of levels)
    assert Kinship(np.ones((1, 1)), ["a"]).n == 1


def test_constant_submatrix_is_refused_when_subset():
    K = Kinship(np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), ["a", "b", "c"])
    with pytest.raises(KinshipError, match="constant"):
        K.subset(["a", "b"])
