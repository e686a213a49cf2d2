"""The V⁻¹ algebra on a low-rank kinship: the n × r basis plus the complement in closed form
equals the dense computation, and never forms K."""

import warnings

import numpy as np
import pandas as pd
import pytest

import bayeslmm as bl
from bayeslmm.engines.gaussian import marginal_loo_terms, v_solver, vinv_residuals
from bayeslmm.kinship import LowRankKinship
from bayeslmm.kinship.low_rank import LowRankDensifyWarning


@pytest.fixture(scope="module")
def specs():
    """120 individuals, 15 markers; 30 of them with a second record, rows shuffled."""
    rng = np.random.default_rng(8)
    n, p = 120, 15
    W = rng.normal(size=(n, p)) / np.sqrt(p)
    ids = [f"i{k}" for k in range(n)]
    data = pd.DataFrame({"id": ids, "x": rng.normal(size=n)})
    data = pd.concat([data, data.iloc[:30]]).sample(frac=1.0, random_state=2)
    data["y"] = rng.normal(size=len(data)) + 0.5 * data["x"]
    formula = "y ~ x + (1|id)"
    low = bl.specify(formula, data, kinship={"id": LowRankKinship(W, ids)})
    dense = bl.specify(formula, data, kinship={"id": bl.Kinship(W @ W.T, ids, check_psd=False)})
    return low, dense


def _dense_v(spec, var_g, var_e):
    Z = spec.terms[0].incidence().toarray()
    K = np.asarray(spec.terms[0].kinship.matrix)
    return var_g * Z @ K @ Z.T + var_e * np.eye(spec.n_obs)


def test_v_solver_equals_the_dense_inverse(specs):
    low, dense = specs
    with warnings.catch_warnings():
        warnings.simplefilter("error", LowRankDensifyWarning)
        solver = v_solver(low, [np.array([[0.7]])], np.full(low.n_obs, 0.4))
    assert solver.kind == "spectral" and solver.vectors.shape[1] < low.n_obs
    V = _dense_v(dense, 0.7, 0.4)
    B = np.random.default_rng(1).normal(size=(low.n_obs, 3))
    np.testing.assert_allclose(solver.solve(B), np.linalg.solve(V, B), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(solver.solve(B[:, 0]), np.linalg.solve(V, B[:, 0]), rtol=1e-9)
    np.testing.assert_allclose(solver.inverse_diagonal(), np.diag(np.linalg.inv(V)), rtol=1e-9)
    assert solver.logdet == pytest.approx(np.linalg.slogdet(V)[1], rel=1e-11)


@pytest.mark.parametrize("method", ["exact", "interpolate"])
def test_marginal_loo_terms_equal_the_dense_path(specs, method):
    low, dense = specs
    rng = np.random.default_rng(3)
    N = 40
    sigmas = [np.exp(rng.normal(0, 0.5, (N, 1, 1)))]
    residual = np.repeat(np.exp(rng.normal(0, 0.5, (N, 1))), low.n_obs, axis=1)
    beta = rng.normal(size=(N, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error", LowRankDensifyWarning)
        g, cbar = marginal_loo_terms(low, sigmas, residual, beta, method)
        r = vinv_residuals(low, sigmas, residual, beta, method)
    np.testing.assert_allclose(r, g, rtol=1e-12, atol=1e-12)
    y, X = np.asarray(dense.y, float), np.asarray(dense.X, float)
    for i in (0, N - 1):  # an independent dense inverse per draw
        Vinv = np.linalg.inv(_dense_v(dense, sigmas[0][i, 0, 0], residual[i, 0]))
        np.testing.assert_allclose(g[i], Vinv @ (y - X @ beta[i]), rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(cbar[i], np.diag(Vinv), rtol=1e-8)
    g_dense, c_dense = marginal_loo_terms(dense, sigmas, residual, beta, method)
    np.testing.assert_allclose(g, g_dense, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(cbar, c_dense, rtol=1e-8)
