"""Multi-trait REML on a pedigree's sparse A⁻¹ against dense computations with A itself.

The pedigrees have inbreeding, unknown parents, unsorted rows and ancestors without records;
about 20 % of the trait values are missing. References: the dense multi-trait REML route
(the stacked V of the observed records) on the dense A of the same pedigree, the REML
log-likelihood of the full stacked V built with np.kron, its finite-difference gradient,
BLUPs and PEVs from V⁻¹ over every pedigree animal, and the single-trait sparse REML.
"""

from __future__ import annotations

import builtins
import sys

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import bayeslmm as bl
from bayeslmm.engines.reml import multitrait_pedigree as mtp
from bayeslmm.multitrait_spec import MultiTraitSpec, specify_multitrait

FORMULA = "mvbind(y1, y2) ~ x + (1 | id)"
WINDOW = 150  # each animal's parents among the 150 before it


@pytest.fixture(scope="module")
def pedigree_data(pedigree_cases) -> tuple[pd.DataFrame, pd.DataFrame, bl.Kinship]:
    return pedigree_cases(np.random.default_rng(2024), 500, 330, window=WINDOW)


def stacked_reml_loglik(G, E, Y, X, K):
    """REML log-likelihood of the observed records from the full (n t)-square V (np.kron)."""
    n, t = Y.shape
    y = Y.T.ravel()
    obs = ~np.isnan(y)
    V = (np.kron(G, K) + np.kron(E, np.eye(n)))[np.ix_(obs, obs)]
    Xs = np.kron(np.eye(t), X)[obs]
    y = y[obs]
    Vi = np.linalg.inv(V)
    C = Xs.T @ Vi @ Xs
    P = Vi - Vi @ Xs @ np.linalg.solve(C, Xs.T @ Vi)
    N, q = Xs.shape
    return -0.5 * (
        (N - q) * np.log(2 * np.pi) + np.linalg.slogdet(V)[1] + np.linalg.slogdet(C)[1] + y @ P @ y
    )


def test_the_pedigree_has_what_the_test_needs(pedigree_data) -> None:
    ped, df, _ = pedigree_data
    A = bl.pedigree_relationship(ped, sparse=True)
    assert (A.inbreeding > 0).sum() > 50  # inbred animals
    assert ((ped["sire"] == 0) ^ (ped["dam"] == 0)).sum() > 20  # one parent unknown
    assert A.n_pedigree - df.shape[0] > 100  # animals without records
    order = {i: k for k, i in enumerate(ped["id"])}
    assert any(order[s] > order[i] for i, s in zip(ped["id"], ped["sire"], strict=True) if s > 0)
    share = df[["y1", "y2"]].isna().to_numpy().mean()
    assert 0.15 < share < 0.25


def test_loglik_and_gradient_equal_the_stacked_dense_model(pedigree_data) -> None:
    ped, df, A_dense = pedigree_data
    A = bl.pedigree_relationship(ped, sparse=True)
    spec = specify_multitrait(FORMULA, df, kinship={"id": A})
    Y, X = np.asarray(spec.Y), np.asarray(spec.X)
    K = A_dense.subset(list(spec.ids)).matrix
    equations = mtp._PedigreeEquations(Y, X, spec.kinship)
    rng = np.random.default_rng(1)
    for point in range(2):
        LG, LE = np.tril(rng.normal(size=(2, 2))), np.tril(rng.normal(size=(2, 2)))
        G, E = LG @ LG.T + 0.2 * np.eye(2), LE @ LE.T + 0.2 * np.eye(2)
        at = equations.evaluate(G, E)
        assert at["value"] == pytest.approx(stacked_reml_loglik(G, E, Y, X, K), abs=1e-8)
        if point:
            continue  # the gradient at one point (the dense reference is slow)
        h = 1e-6
        for which, key in ((0, "MG"), (1, "ME")):
            numeric = np.zeros((2, 2))
            for a in range(2):
                for b in range(2):
                    D = np.zeros((2, 2))
                    D[a, b] += h / 2
                    D[b, a] += h / 2
                    plus = (G + D, E) if which == 0 else (G, E + D)
                    minus = (G - D, E) if which == 0 else (G, E - D)
                    numeric[a, b] = (
                        stacked_reml_loglik(*plus, Y, X, K) - stacked_reml_loglik(*minus, Y, X, K)
                    ) / (2 * h)
            np.testing.assert_allclose(at[key], numeric, rtol=1e-6, atol=1e-6)


def test_sparse_reml_equals_the_dense_route(pedigree_data) -> None:
    ped, df, A_dense = pedigree_data
    A = bl.pedigree_relationship(ped, sparse=True)
    fit = bl.LMM(FORMULA, df, kinship={"id": A}).fit(method="reml")
    dense = bl.LMM(FORMULA, df, kinship={"id": A_dense}).fit(method="reml")
    assert fit.route == "sparse-pedigree" and dense.route == "dense"
    assert fit.converged
    np.testing.assert_allclose(fit.genetic, dense.genetic, atol=1e-6, rtol=0)
    np.testing.assert_allclose(fit.residual, dense.residual, atol=1e-6, rtol=0)
    # log|A| of the whole pedigree is kept: the same REML log-likelihood, constants included
    assert fit.loglik == pytest.approx(dense.loglik, abs=1e-6)
    np.testing.assert_allclose(fit.beta, dense.beta, atol=1e-6, rtol=0)
    np.testing.assert_allclose(fit.beta_covariance, dense.beta_covariance, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(fit.covariance, dense.covariance, rtol=1e-4, atol=1e-7)
    pd.testing.assert_frame_equal(
        fit.genetic_correlation(), dense.genetic_correlation(), rtol=1e-5, atol=1e-7
    )
    pd.testing.assert_frame_equal(fit.heritability(), dense.heritability(), rtol=1e-5, atol=1e-7)


def test_breeding_values_and_pevs_equal_dense_blups(pedigree_data) -> None:
    ped, df, A_dense = pedigree_data
    A = bl.pedigree_relationship(ped, sparse=True)
    model = bl.LMM(FORMULA, df, kinship={"id": A})
    fit = model.fit(method="reml")
    spec = model.spec
    # û = (Σ_G ⊗ A) Zᵀ P y and PEV = diag(G − G Zᵀ P Z G) over every pedigree animal,
    # trait-major, from the dense A (ancestors included) at the fit's estimates
    Afull = A_dense.matrix
    N, t = Afull.shape[0], 2
    Y, X = np.asarray(spec.Y), np.asarray(spec.X)
    n = Y.shape[0]
    Z1 = np.zeros((n, N))
    Z1[np.arange(n), pd.Index(A_dense.ids).get_indexer(list(spec.ids))] = 1.0
    y = Y.T.ravel()
    obs = ~np.isnan(y)
    Z = np.kron(np.eye(t), Z1)[obs]
    Xs = np.kron(np.eye(t), X)[obs]
    Gbig = np.kron(fit.genetic, Afull)
    V = Z @ Gbig @ Z.T + np.kron(fit.residual, np.eye(n))[np.ix_(obs, obs)]
    Vi = np.linalg.inv(V)
    P = Vi - Vi @ Xs @ np.linalg.solve(Xs.T @ Vi @ Xs, Xs.T @ Vi)
    GZ = Gbig @ Z.T
    u = (GZ @ P @ y[obs]).reshape(t, N).T
    pev = (np.diag(Gbig) - np.einsum("ij,jk,ik->i", GZ, P, GZ)).reshape(t, N).T
    table = fit.breeding_values.loc[list(A_dense.ids)]
    assert table.index.name == "id" and len(fit.breeding_values) == A.n_pedigree
    np.testing.assert_allclose(table[["y1", "y2"]].to_numpy(), u, atol=1e-7)
    np.testing.assert_allclose(table[["pev:y1", "pev:y2"]].to_numpy(), pev, atol=1e-7)


def test_one_trait_equals_the_single_trait_sparse_reml(pedigree_data) -> None:
    ped, df, _ = pedigree_data
    A = bl.pedigree_relationship(ped, sparse=True)
    single = df.dropna(subset=["y1"])
    uni = bl.LMM("y1 ~ x + (1 | id)", single, kinship={"id": A}).fit(method="reml")
    assert uni.method == "sparse-pedigree"
    two = specify_multitrait("mvbind(y1, y2) ~ x + (1 | id)", single, kinship={"id": A})
    one = MultiTraitSpec(
        formula="y1 ~ x + (1 | id)",
        traits=("y1",),
        Y=two.Y[:, :1],
        X=two.X,
        fixed_names=two.fixed_names,
        group=two.group,
        ids=two.ids,
        kinship=two.kinship,
        data=two.data,
    )
    fit = mtp.fit_multitrait_pedigree(one)
    sigma_a2, sigma_e2 = uni.parameters["estimate"].to_numpy()
    assert fit.genetic[0, 0] == pytest.approx(sigma_a2, rel=1e-6)
    assert fit.residual[0, 0] == pytest.approx(sigma_e2, rel=1e-6)
    assert fit.loglik == pytest.approx(uni.loglik_reml, abs=1e-6)
    fe = uni.fixed_effects()
    np.testing.assert_allclose(fit.beta[0], fe["estimate"].to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(np.sqrt(np.diag(fit.beta_covariance)), fe["se"], rtol=1e-5)
    h2 = uni.heritability().loc["h2", "estimate"]
    assert fit.heritability()["estimate"].iloc[0] == pytest.approx(h2, rel=1e-6)
    (blups,) = uni.blups.values()
    ebv = fit.breeding_values.loc[blups.index]
    np.testing.assert_allclose(ebv["y1"], blups.iloc[:, 0], atol=1e-6)
    np.testing.assert_allclose(ebv["pev:y1"], blups.iloc[:, 1], rtol=1e-5)


def test_selected_inverse_equals_the_dense_inverse_on_the_factor_pattern() -> None:
    sksparse = pytest.importorskip("sksparse.cholmod")
    rng = np.random.default_rng(0)
    for n, density in ((40, 0.08), (300, 0.01)):
        B = sp.random(n, n, density=density, random_state=rng)
        C = (B @ B.T + sp.identity(n)).tocsc()
        factor = sksparse.analyze(C, ordering_method="amd")
        factor.cholesky_inplace(C)
        L, perm = factor.L(), factor.P()
        Z = mtp._selected_inverse(L.indptr.astype(np.int64), L.indices.astype(np.int64), L.data)
        dense = np.linalg.inv(C.toarray()[np.ix_(perm, perm)])
        cols = np.repeat(np.arange(n), np.diff(L.indptr))
        np.testing.assert_allclose(Z, dense[L.indices, cols], atol=1e-12)


def test_superlu_backend_gives_the_same_fit(pedigree_data, monkeypatch) -> None:
    ped, df, _ = pedigree_data
    A = bl.pedigree_relationship(ped, sparse=True)
    model = bl.LMM(FORMULA, df, kinship={"id": A})
    cholmod = model.fit(method="reml")
    real_import = builtins.__import__

    def no_sksparse(name, *args, **kwargs):
        if name.startswith("sksparse"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sksparse)
    monkeypatch.delitem(sys.modules, "sksparse.cholmod", raising=False)
    superlu = model.fit(method="reml")
    assert superlu.timing["backend"] == "superlu"
    np.testing.assert_allclose(superlu.genetic, cholmod.genetic, atol=1e-7)
    np.testing.assert_allclose(superlu.residual, cholmod.residual, atol=1e-7)
    assert superlu.loglik == pytest.approx(cholmod.loglik, abs=1e-7)
    np.testing.assert_allclose(
        superlu.breeding_values.to_numpy(), cholmod.breeding_values.to_numpy(), atol=1e-7
    )


@pytest.mark.slow
def test_sparse_reml_equals_dense_reml_on_a_2000_animal_pedigree(pedigree_cases) -> None:
    rng = np.random.default_rng(77)
    ped, df, A_dense = pedigree_cases(rng, 2000, 1500, window=WINDOW)
    A = bl.pedigree_relationship(ped, sparse=True)
    fit = bl.LMM(FORMULA, df, kinship={"id": A}).fit(method="reml")
    dense = bl.LMM(FORMULA, df, kinship={"id": A_dense}).fit(method="reml")
    assert fit.route == "sparse-pedigree" and dense.route == "dense"
    np.testing.assert_allclose(fit.genetic, dense.genetic, atol=1e-6, rtol=0)
    np.testing.assert_allclose(fit.residual, dense.residual, atol=1e-6, rtol=0)
    assert fit.loglik == pytest.approx(dense.loglik, abs=1e-6)
    np.testing.assert_allclose(fit.beta, dense.beta, atol=1e-6, rtol=0)


@pytest.mark.parametrize("seed", [3, 5])
def test_boundary_fit_reaches_the_dense_likelihood(pedigree_cases, seed: int) -> None:
    # r_g = 1 simulated on few records: REML puts Σ_G at rank 1 (for these seeds), where
    # A⁻¹ ⊗ Σ_G⁻¹ is ill-conditioned; the bounded quasi-Newton must still reach the dense
    # route's optimum and say it converged
    rng = np.random.default_rng(seed)
    G, E = np.array([[1.0, 1.0], [1.0, 1.000001]]), np.eye(2)
    ped, df, A_dense = pedigree_cases(rng, 300, 150, window=WINDOW, G=G, E=E)
    A = bl.pedigree_relationship(ped, sparse=True)
    fit = bl.LMM(FORMULA, df, kinship={"id": A}).fit(method="reml")
    dense = bl.LMM(FORMULA, df, kinship={"id": A_dense}).fit(method="reml")
    assert dense.at_boundary and fit.at_boundary and fit.converged
    assert fit.timing["lbfgs_evaluations"] > 0
    assert fit.loglik == pytest.approx(dense.loglik, abs=1e-5)
    np.testing.assert_allclose(fit.genetic, dense.genetic, atol=1e-3)
    np.testing.assert_allclose(fit.residual, dense.residual, atol=1e-3)
    assert any("boundary fit" in m for m in fit.messages)
