"""Multi-trait REML against an independent dense REML (stacked V with np.kron, scipy)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import optimize

import bayeslmm as bl
from bayeslmm.engines.reml.multitrait import fit_multitrait_reml
from bayeslmm.multitrait_spec import MultiTraitSpec

G_TRUE = np.array([[1.0, 0.5], [0.5, 1.5]])
E_TRUE = np.array([[1.0, -0.3], [-0.3, 0.8]])


def dense_reml_loglik(G: np.ndarray, E: np.ndarray, Y: np.ndarray, X: np.ndarray, K: np.ndarray):
    """REML log-likelihood of the observed records, from the full (n t)-square V."""
    n, t = Y.shape
    y = Y.T.ravel()  # trait-major stacking, matching kron(Σ, K)
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


def dense_reml_fit(Y: np.ndarray, X: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Maximise :func:`dense_reml_loglik` over Cholesky factors with scipy (numeric
    gradients), from a start unlike the engine's, then polish with Nelder–Mead."""
    t = Y.shape[1]
    rows, cols = np.tril_indices(t)

    def unpack(v):
        LG, LE = np.zeros((t, t)), np.zeros((t, t))
        LG[rows, cols], LE[rows, cols] = v[: rows.size], v[rows.size :]
        return LG @ LG.T, LE @ LE.T

    def f(v):
        return -dense_reml_loglik(*unpack(v), Y, X, K)

    var = np.nanvar(Y, axis=0)
    start = np.concatenate(
        [
            np.linalg.cholesky(np.diag(0.3 * var))[rows, cols],
            np.linalg.cholesky(np.diag(0.7 * var))[rows, cols],
        ]
    )
    res = optimize.minimize(f, start, method="BFGS", options={"gtol": 1e-9})
    res = optimize.minimize(
        f,
        res.x,
        method="Nelder-Mead",
        options={"xatol": 1e-10, "fatol": 1e-13, "maxiter": 40000, "maxfev": 40000},
    )
    return unpack(res.x)


@pytest.mark.parametrize("missing", [0.0, 0.25])
def test_reml_equals_independent_dense_reml(multitrait_data, missing: float) -> None:
    # seeds whose estimates are interior: with K near I (random markers, n < markers) the
    # two variances are weakly identified and many data sets put Σ_E at rank 1
    rng = np.random.default_rng(2 if missing else 12)
    df, K = multitrait_data(rng, 60, G_TRUE, E_TRUE, missing=missing)
    fit = bl.LMM("mvbind(y1, y2) ~ x + (1 | id)", df, kinship={"id": K}).fit(method="reml")
    assert not fit.at_boundary, "the comparison needs an interior optimum: pick another seed"
    assert fit.route == ("dense" if missing else "rotated")
    Y, X = df[["y1", "y2"]].to_numpy(), np.column_stack([np.ones(60), df["x"]])
    G, E = dense_reml_fit(Y, X, K.matrix)
    np.testing.assert_allclose(fit.genetic_covariance().to_numpy(), G, atol=1e-6, rtol=0)
    np.testing.assert_allclose(fit.residual_covariance().to_numpy(), E, atol=1e-6, rtol=0)
    # the same REML log-likelihood (constants included) at the optimum
    assert fit.loglik == pytest.approx(dense_reml_loglik(G, E, Y, X, K.matrix), abs=1e-8)
    # GLS β at the estimates
    y = Y.T.ravel()
    obs = ~np.isnan(y)
    V = (np.kron(G, K.matrix) + np.kron(E, np.eye(60)))[np.ix_(obs, obs)]
    Xs = np.kron(np.eye(2), X)[obs]
    beta = np.linalg.solve(Xs.T @ np.linalg.solve(V, Xs), Xs.T @ np.linalg.solve(V, y[obs]))
    np.testing.assert_allclose(fit.beta.ravel(), beta, atol=1e-5)


def test_reml_standard_errors_are_the_inverse_observed_information(multitrait_data) -> None:
    rng = np.random.default_rng(6)  # an interior optimum: the information is defined there
    df, K = multitrait_data(rng, 80, G_TRUE, E_TRUE)
    fit = bl.LMM("mvbind(y1, y2) ~ x + (1 | id)", df, kinship={"id": K}).fit(method="reml")
    assert not fit.at_boundary
    Y, X = df[["y1", "y2"]].to_numpy(), np.column_stack([np.ones(80), df["x"]])
    rows, cols = np.tril_indices(2)
    phi = np.concatenate([fit.genetic[rows, cols], fit.residual[rows, cols]])

    def ll(v):
        G, E = np.zeros((2, 2)), np.zeros((2, 2))
        G[rows, cols] = G[cols, rows] = v[:3]
        E[rows, cols] = E[cols, rows] = v[3:]
        return dense_reml_loglik(G, E, Y, X, K.matrix)

    h = 1e-4
    H = np.empty((6, 6))
    for i in range(6):
        for j in range(6):
            ei, ej = np.eye(6)[i] * h, np.eye(6)[j] * h
            H[i, j] = (
                ll(phi + ei + ej) - ll(phi + ei - ej) - ll(phi - ei + ej) + ll(phi - ei - ej)
            ) / (4 * h * h)
    cov = np.linalg.inv(-H)
    np.testing.assert_allclose(fit.covariance, cov, rtol=2e-3, atol=1e-6)
    # delta method for r_g against its own finite-difference Jacobian
    r = lambda v: v[1] / np.sqrt(v[0] * v[2])  # noqa: E731
    J = np.array(
        [(r(phi + np.eye(6)[j] * 1e-6) - r(phi - np.eye(6)[j] * 1e-6)) / 2e-6 for j in range(6)]
    )
    table = fit.genetic_correlation()
    assert table["estimate"].iloc[0] == pytest.approx(r(phi), rel=1e-10)
    assert table["se"].iloc[0] == pytest.approx(np.sqrt(J @ cov @ J), rel=3e-3)
    h2 = fit.heritability()
    c = float(np.mean(np.diag(K.matrix)) - np.mean(K.matrix))
    expected = c * np.diag(fit.genetic) / (c * np.diag(fit.genetic) + np.diag(fit.residual))
    np.testing.assert_allclose(h2["estimate"].to_numpy(), expected, rtol=1e-12)


def test_one_trait_equals_the_univariate_reml(multitrait_data) -> None:
    rng = np.random.default_rng(5)  # an interior optimum, where both fits are unique
    df, K = multitrait_data(rng, 70, G_TRUE, E_TRUE)
    uni = bl.LMM("y1 ~ x + (1 | id)", df, kinship={"id": K}).fit(method="reml")
    two = bl.LMM("mvbind(y1, y2) ~ x + (1 | id)", df, kinship={"id": K}).spec
    one = MultiTraitSpec(
        formula="y1 ~ x + (1 | id)",
        traits=("y1",),
        Y=two.Y[:, :1],
        X=two.X,
        fixed_names=two.fixed_names,
        group="id",
        ids=two.ids,
        kinship=two.kinship,
        data=two.data,
    )
    fit = fit_multitrait_reml(one)
    vc = uni.variance_components().set_index("grp")["vcov"]
    assert fit.genetic[0, 0] == pytest.approx(vc["id"], rel=1e-6)
    assert fit.residual[0, 0] == pytest.approx(vc["Residual"], rel=1e-6)
    assert fit.loglik == pytest.approx(uni.loglik, abs=1e-6)
    fe = uni.fixed_effects()
    np.testing.assert_allclose(fit.beta[0], fe["estimate"].to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(
        np.sqrt(np.diag(fit.beta_covariance)), fe["se"].to_numpy(), rtol=1e-4
    )
    h2 = uni.heritability().loc["h2", "estimate"]
    assert fit.heritability()["estimate"].iloc[0] == pytest.approx(h2, rel=1e-6)


def test_missing_values_beyond_the_dense_limit_give_a_clear_error(multitrait_data) -> None:
    rng = np.random.default_rng(2)
    df, K = multitrait_data(rng, 30, G_TRUE, E_TRUE, missing=0.2)
    spec = bl.LMM("mvbind(y1, y2) ~ 1 + (1 | id)", df, kinship={"id": K}).spec
    with pytest.raises(bl.DataError, match="method='nuts'"):
        fit_multitrait_reml(spec, max_dense_records=20)


def test_tables_are_labelled_in_formula_order(multitrait_data) -> None:
    rng = np.random.default_rng(4)
    df, K = multitrait_data(rng, 50, G_TRUE, E_TRUE)
    fit = bl.LMM("mvbind(y2, y1) ~ 1 + (1 | id)", df, kinship={"id": K}).fit(method="reml")
    assert list(fit.genetic_covariance().index) == ["y2", "y1"]
    assert list(fit.residual_covariance().columns) == ["y2", "y1"]
    assert fit.genetic_correlation().index[0] == ("y2", "y1")
    swapped = bl.LMM("mvbind(y1, y2) ~ 1 + (1 | id)", df, kinship={"id": K}).fit(method="reml")
    pd.testing.assert_frame_equal(
        fit.genetic_covariance().loc[["y1", "y2"], ["y1", "y2"]],
        swapped.genetic_covariance(),
        atol=1e-6,
    )


def test_boundary_fit_reports_r_g_at_one_without_a_standard_error(multitrait_data) -> None:
    # trait 1 has no genetic variance: REML puts Σ_G at rank 1 (r_g = 1, G_11 tiny)
    rng = np.random.default_rng(0)
    df, K = multitrait_data(rng, 150, np.diag([1e-9, 1.0]), np.eye(2))
    fit = bl.LMM("mvbind(y1, y2) ~ 1 + (1 | id)", df, kinship={"id": K}).fit(method="reml")
    assert fit.at_boundary
    assert np.min(np.linalg.eigvalsh(fit.genetic)) < 1e-6 * np.trace(fit.genetic)
    table = fit.genetic_correlation()
    assert abs(table["estimate"].iloc[0]) == pytest.approx(1.0, abs=1e-6)
    assert np.isnan(table["se"].iloc[0]) and np.isnan(table["ci_low"].iloc[0])
    assert any("genetic covariance matrix is singular" in m for m in fit.messages)
    assert np.isfinite(fit.residual_correlation()["se"].iloc[0])
    assert fit.heritability().loc["y1", "estimate"] < 0.01
