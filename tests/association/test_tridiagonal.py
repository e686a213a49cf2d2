"""The scan's null model in K's tridiagonal basis against the eigenbasis and dense algebra.

``TridiagonalReml`` must give the spectral engine's likelihood, score and AI matrix exactly
(it is the same model in another basis), and the whitening must give GLS inner products.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import bayeslmm as bl
from bayeslmm.association.stats import ml_profile_minimum
from bayeslmm.association.tridiagonal import (
    Tridiagonal,
    TridiagonalReml,
    whiten,
    whiten_factor,
)
from bayeslmm.engines.reml.spectral import RotatedReml, maximise_rotated


def grm_like(n: int, m: int, seed: int) -> np.ndarray:
    """A centred GRM (singular: K 1 = 0), as the scan builds them."""
    rng = np.random.default_rng(seed)
    W = rng.binomial(2, rng.uniform(0.1, 0.9, m), size=(n, m)).astype(float)
    W -= W.mean(0)
    return W @ W.T / np.sum(np.var(W, 0))


@pytest.fixture(scope="module")
def problem():
    n = 80
    rng = np.random.default_rng(5)
    K = grm_like(n, 150, 5)
    X = np.column_stack([np.ones(n), rng.normal(size=n)])
    s, U = np.linalg.eigh(K)
    y = X @ [1.0, 0.4] + U @ (np.sqrt(np.clip(s, 0, None)) * rng.normal(size=n)) * 0.8
    y += rng.normal(size=n)
    return K, X, y


def test_reduction_reproduces_k_and_its_eigenvalues(problem):
    K = problem[0]
    tri = Tridiagonal(K)
    n = K.shape[0]
    Q = tri.rotate(np.eye(n)).T  # rows of Qᵀ I are Qᵀ's rows: Q = (Qᵀ)ᵀ
    T = np.diag(tri.d) + np.diag(tri.e, 1) + np.diag(tri.e, -1)
    np.testing.assert_allclose(Q.T @ Q, np.eye(n), atol=1e-12)
    np.testing.assert_allclose(Q @ T @ Q.T, K, atol=1e-12)
    np.testing.assert_allclose(tri.eigenvalues, np.linalg.eigvalsh(K), atol=1e-12)
    M = np.random.default_rng(0).normal(size=(n, 3))
    np.testing.assert_allclose(
        tri.solve(0.3, 0.9, M), np.linalg.solve(0.3 * T + 0.9 * np.eye(n), M)
    )
    np.testing.assert_allclose(tri.tridiagonal_product(M), T @ M, atol=1e-13)


@pytest.mark.parametrize("criterion", ["reml", "ml"])
def test_likelihood_score_and_ai_equal_the_eigenbasis(problem, criterion):
    K, X, y = problem
    tri = Tridiagonal(K)
    s, U = np.linalg.eigh(K)
    ours = TridiagonalReml(tri, tri.rotate(y), tri.rotate(X), criterion=criterion)
    ref = RotatedReml(s, U.T @ y, U.T @ X, criterion=criterion)
    for theta in ((0.3, 1.1), (2.0, 0.05), (1e-6, 1.0)):
        a, b = ours.evaluate(*theta), ref.evaluate(*theta)
        for key in ("loglik", "loglik_reml", "loglik_ml"):
            assert a[key] == pytest.approx(b[key], rel=1e-12)
        np.testing.assert_allclose(a["score"], b["score"], rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(a["ai"], b["ai"], rtol=1e-10)
        np.testing.assert_allclose(a["beta"], b["beta"], rtol=1e-10)
        np.testing.assert_allclose(a["beta_cov"], b["beta_cov"], rtol=1e-10)
    # (not h² = 1: with K singular V is too, and both bases' values there are set by rounding)
    h2 = np.array([0.0, 0.2, 0.7, 0.999])
    np.testing.assert_allclose(ours.profile_many(h2), ref.profile_many(h2), rtol=1e-12)
    assert ours.scale_at(0.4) == pytest.approx(ref.scale_at(0.4), rel=1e-12)


def test_estimate_and_ml_minimum_equal_the_eigenbasis(problem):
    K, X, y = problem
    tri = Tridiagonal(K)
    s, U = np.linalg.eigh(K)
    Qy, QX = tri.rotate(y), tri.rotate(X)
    a = maximise_rotated(TridiagonalReml(tri, Qy, QX))
    b = maximise_rotated(RotatedReml(s, U.T @ y, U.T @ X))
    np.testing.assert_allclose(a[1], b[1], rtol=1e-9)
    ml_tri = ml_profile_minimum(lambda u, x, c: TridiagonalReml(tri, u, x, c), Qy, QX)
    ml_eig = ml_profile_minimum(lambda u, x, c: RotatedReml(s, u, x, c), U.T @ y, U.T @ X)
    assert ml_tri == pytest.approx(ml_eig, rel=1e-10)


def test_whitening_gives_gls_inner_products(problem):
    K, X, y = problem
    R = whiten_factor(K, 0.7, 0.4)
    V = 0.7 * K + 0.4 * np.eye(K.shape[0])
    wX, wy = whiten(R, X), whiten(R, y)
    np.testing.assert_allclose(wX.T @ wy, X.T @ np.linalg.solve(V, y), rtol=1e-10)
    with pytest.raises(np.linalg.LinAlgError, match="not positive definite"):
        whiten_factor(K, -1.0, 0.5)


def test_the_null_summary_equals_a_reml_fit_and_names_the_route():
    """h², its SE and ℓ_R of each chromosome's null against ``LMM.fit(method="reml")``."""
    rng = np.random.default_rng(8)
    n, m = 60, 90
    G = rng.binomial(2, 0.4, size=(n, m)).astype(float)
    ids = [f"i{k}" for k in range(n)]
    dos = pd.DataFrame(G, index=ids, columns=[f"s{j}" for j in range(m)])
    snps = pd.DataFrame({"snp": dos.columns, "chr": np.repeat([1, 2, 3], m // 3), "bp": 1})
    Z = G - G.mean(0)
    pheno = pd.DataFrame({"id": ids, "y": Z @ rng.normal(0, 0.2, m) + rng.normal(size=n)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        res = bl.scan("y ~ 1 + (1 | id)", pheno, dos, snps, progressbar=False)
    loco = bl.loco_grms(dos, snps["chr"])
    for _, row in res.null_models.iterrows():
        fit = bl.LMM("y ~ 1 + (1 | id)", pheno, kinship={"id": loco[row.chr]}).fit(method="reml")
        h2 = fit.heritability().loc["h2"]
        assert row.route.startswith("tridiagonal REML")
        assert row.h2 == pytest.approx(h2["estimate"], rel=1e-8)
        assert row.h2_se == pytest.approx(h2["se"], rel=1e-5)
        assert row.loglik_reml == pytest.approx(fit.loglik_reml, rel=1e-10)
        assert row.boundary == fit.boundary
