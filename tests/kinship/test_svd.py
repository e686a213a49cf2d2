"""thin_svd: the SNP-space factorisation, in memory and on a dask.distributed cluster."""

import numpy as np
import pytest

from bayeslmm.kinship import grm, snp_factor
from bayeslmm.kinship.svd import thin_svd


def _markers(n=120, p=30, seed=3):
    rng = np.random.default_rng(seed)
    return rng.binomial(2, rng.uniform(0.1, 0.9, p), size=(n, p)).astype(float)


def test_reconstructs_the_grm_and_is_orthonormal():
    X = _markers()
    W, _ = snp_factor(X)
    U, s, V = thin_svd(W)
    np.testing.assert_allclose((U * s) @ V.T, W, atol=1e-12)
    # centred W: rank p at most, and rank ≤ n − 1; here p < n − 1 so no column is dropped
    assert U.shape == (120, 30)
    np.testing.assert_allclose(U.T @ U, np.eye(30), atol=1e-12)
    np.testing.assert_allclose((U * s**2) @ U.T, grm(X).matrix, atol=1e-12)
    # the kinship's nonzero eigenvalues are s², largest first
    eig = np.sort(np.linalg.eigvalsh(grm(X).matrix))[::-1][:30]
    np.testing.assert_allclose(s**2, eig, rtol=1e-10)


def test_drops_a_repeated_marker_and_refuses_a_wide_matrix():
    W = np.random.default_rng(2).normal(size=(50, 5))
    W = np.column_stack([W, W[:, 0]])  # rank 5
    U, s, _ = thin_svd(W)
    assert s.size == 5
    np.testing.assert_allclose((U * s**2) @ U.T, W @ W.T, atol=1e-10)
    with pytest.raises(ValueError, match="dense path"):
        thin_svd(np.ones((3, 5)))


def test_dask_tsqr_on_a_distributed_client_equals_numpy():
    da = pytest.importorskip("dask.array")
    distributed = pytest.importorskip("distributed")
    X = _markers(n=400, p=40, seed=5)
    W, _ = snp_factor(X)
    U_np, s_np, _ = thin_svd(W)
    with distributed.Client(
        processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None
    ):
        W_dask, _ = snp_factor(da.from_array(X, chunks=(100, 20)))
        U, s, _ = thin_svd(W_dask)
    np.testing.assert_allclose(s, s_np, rtol=1e-10)
    # singular vectors are defined up to sign
    signs = np.sign(np.sum(U * U_np, axis=0))
    np.testing.assert_allclose(U * signs, U_np, atol=1e-9)


def test_low_rank_grm_from_dask_on_a_client_fits_like_the_in_memory_one():
    """bl.grm(dask, low_rank=True): the SVD runs blockwise (tsqr) on the cluster, and the
    REML fit equals the one of the in-memory low-rank kinship."""
    import pandas as pd

    import bayeslmm as bl

    da = pytest.importorskip("dask.array")
    distributed = pytest.importorskip("distributed")
    rng = np.random.default_rng(8)
    X = _markers(n=300, p=40, seed=8)
    ids = [f"i{k}" for k in range(300)]
    K_mem = bl.grm(X, ids=ids, low_rank=True)
    with distributed.Client(
        processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None
    ):
        K_dask = bl.grm(da.from_array(X, chunks=(75, 40)), ids=ids, low_rank=True)
    assert K_dask.rank == K_mem.rank
    np.testing.assert_allclose(K_dask.positive_eigenvalues, K_mem.positive_eigenvalues, rtol=1e-9)
    g = K_mem.markers @ rng.normal(size=K_mem.n_markers)
    data = pd.DataFrame({"id": ids, "y": g + rng.normal(size=300)})
    fits = [
        bl.LMM("y ~ 1 + (1 | id)", data, kinship={"id": K}).fit(method="reml")
        for K in (K_mem, K_dask)
    ]
    h2 = [float(f.heritability()["estimate"].iloc[0]) for f in fits]
    assert fits[1].method == fits[0].method == "spectral-low-rank"
    np.testing.assert_allclose(h2[1], h2[0], rtol=1e-7, atol=1e-9)
