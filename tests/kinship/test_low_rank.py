"""The low-rank kinship K = W Wᵀ (bayeslmm.grm(..., low_rank=True)) against dense numpy.

References are independent: the dense GRM of bayeslmm.grm, W Wᵀ and numpy's eigh of it,
and the Gram matrix of the data (which an orthogonal rotation keeps).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import bayeslmm as bl
from bayeslmm.errors import KinshipError
from bayeslmm.kinship import low_rank as lr
from bayeslmm.kinship.low_rank import LowRankDensifyWarning, LowRankKinship


def _dosages(rng: np.random.Generator, n: int, p: int) -> np.ndarray:
    freq = rng.uniform(0.05, 0.5, p)
    return rng.binomial(2, freq, size=(n, p)).astype(np.int8)


@pytest.fixture(scope="module")
def pair():
    rng = np.random.default_rng(3)
    X = _dosages(rng, 300, 80)
    return X, bl.grm(X, low_rank=True), bl.grm(X)


def test_grm_low_rank_is_the_dense_grm(pair):
    X, K, D = pair
    assert isinstance(K, LowRankKinship) and K.n == 300 and K.n_markers == 80
    assert K.ids == D.ids
    np.testing.assert_allclose(K.dot(np.eye(K.n)), D.matrix, atol=1e-12)
    np.testing.assert_allclose(K.diagonal(), np.diag(D.matrix), atol=1e-12)
    assert K.mean_diagonal == pytest.approx(D.mean_diagonal, abs=1e-12)
    # standardised scaling too
    Ks = bl.grm(X, low_rank=True, standardize=True)
    np.testing.assert_allclose(Ks.dot(np.eye(300)), bl.grm(X, standardize=True).matrix, atol=1e-12)


def test_spectrum_matches_dense_eigh(pair):
    _, K, D = pair
    s_dense = np.linalg.eigvalsh(D.matrix)[::-1]
    root = K.root()
    assert root.rank == K.rank == 80
    np.testing.assert_allclose(root.values, s_dense[:80], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(root.factor @ root.factor.T, D.matrix, atol=1e-12)
    U = root.vectors
    np.testing.assert_allclose(U.T @ U, np.eye(80), atol=1e-12)
    # share truncation: the fewest leading eigenvalues holding the share of the trace
    half = K.root(0.5)
    cum = np.cumsum(s_dense) / s_dense.sum()
    assert half.rank == int(np.searchsorted(cum, 0.5) + 1)
    assert half.discarded == pytest.approx(1 - cum[half.rank - 1], abs=1e-10)


@pytest.mark.parametrize("kind", ["row-centred", "ill-conditioned"])
def test_rank_deficient_and_ill_conditioned_markers(kind):
    rng = np.random.default_rng(5)
    W = rng.normal(size=(120, 30))
    if kind == "row-centred":
        W -= W.mean(axis=1, keepdims=True)  # W 1 = 0: rank p − 1
        rank = 29
    else:
        W[:, 0] *= 1e-4  # eigenvalues spanning ~1e8: the Rayleigh-Ritz step
        rank = 30
    K = LowRankKinship(W, [str(k) for k in range(120)])
    assert K.rank == rank
    root = K.root()
    np.testing.assert_allclose(root.vectors.T @ root.vectors, np.eye(rank), atol=1e-12)
    np.testing.assert_allclose(root.factor @ root.factor.T, W @ W.T, atol=1e-12)
    s = np.linalg.eigvalsh(W @ W.T)[::-1][:rank]
    np.testing.assert_allclose(root.values, s, rtol=1e-6, atol=1e-13)


def test_rotation_is_orthogonal_and_complete(pair):
    rng = np.random.default_rng(7)
    _, K, D = pair
    data = np.column_stack([np.ones(K.n), rng.normal(size=(K.n, 2)), rng.normal(size=K.n)])
    rot = K.rotation(data)
    V = rot.vectors
    assert rot.values.size == 80 + 4 and rot.n_null == 300 - 84
    np.testing.assert_allclose(V.T @ V, np.eye(84), atol=1e-12)
    np.testing.assert_allclose(rot.rotated, V.T @ data, atol=1e-12)
    # nothing of the data is outside the kept rows: the Gram matrix is preserved
    np.testing.assert_allclose(rot.rotated.T @ rot.rotated, data.T @ data, rtol=1e-12)
    # the kept rows diagonalise K: Vᵀ K V = diag(values)
    np.testing.assert_allclose(V.T @ D.matrix @ V, np.diag(rot.values), atol=1e-11)
    # a repeated column adds no row
    assert K.rotation(np.column_stack([data, data[:, :1]])).n_null == rot.n_null


def test_subset_is_the_principal_submatrix(pair):
    _, K, D = pair
    ids = list(K.ids[::3])[::-1]
    sub = K.subset(ids)
    assert isinstance(sub, LowRankKinship) and sub.ids == tuple(ids)
    np.testing.assert_allclose(sub.dot(np.eye(len(ids))), D.subset(ids).matrix, atol=1e-12)
    assert K.subset(list(K.ids)) is K
    with pytest.raises(KinshipError, match="missing from kinship"):
        K.subset(["nope"])


def test_matrix_guardrail(pair, monkeypatch):
    _, K, D = pair
    fresh = LowRankKinship(K.markers, K.ids)
    with pytest.warns(LowRankDensifyWarning, match="SNP-space"):
        np.testing.assert_allclose(fresh.matrix, D.matrix, atol=1e-12)
    monkeypatch.setattr(lr, "LOW_RANK_DENSE_LIMIT", 100)
    big = LowRankKinship(K.markers, K.ids)
    with pytest.raises(KinshipError, match="low-rank path supports a Gaussian model"):
        big.matrix  # noqa: B018
    with pytest.raises(KinshipError, match="bayeslmm.grm\\(dosages\\)"):
        big.hadamard()


def test_p_at_least_n_warns_and_returns_dense():
    X = _dosages(np.random.default_rng(1), 40, 60)
    with pytest.warns(UserWarning, match="dense n × n GRM is returned"):
        K = bl.grm(X, low_rank=True)
    assert type(K) is bl.Kinship
    np.testing.assert_allclose(K.matrix, bl.grm(X).matrix)


def test_bad_markers_are_refused():
    with pytest.raises(KinshipError, match="one id per row"):
        LowRankKinship(np.ones((3, 2)), ["a", "b"])
    with pytest.raises(KinshipError, match="duplicate ids"):
        LowRankKinship(np.eye(3)[:, :2], ["a", "a", "b"])
    with pytest.raises(KinshipError, match="no non-zero marker"):
        LowRankKinship(np.zeros((3, 2)), ["a", "b", "c"])
    with pytest.raises(KinshipError, match="NaN/inf"):
        LowRankKinship(np.array([[1.0, np.nan], [0.0, 1.0], [1.0, 1.0]]), ["a", "b", "c"])


def test_accepted_by_specify_without_densifying(pair):
    _, K, D = pair
    rng = np.random.default_rng(2)
    df = pd.DataFrame({"id": list(K.ids[:250]), "y": rng.normal(size=250)})
    with warnings.catch_warnings():
        warnings.simplefilter("error", LowRankDensifyWarning)
        spec = bl.specify("y ~ 1 + (1 | id)", df, kinship={"id": K})
    dense = bl.specify("y ~ 1 + (1 | id)", df, kinship={"id": D})
    assert spec.terms[0].kinship_scale() == pytest.approx(dense.terms[0].kinship_scale())
