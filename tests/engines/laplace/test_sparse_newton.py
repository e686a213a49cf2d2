"""The Laplace engine's Newton matrices of crossed iid designs, by block elimination.

Designs of iid terms factor Dᵀ W D + diag(penalty) with the largest term eliminated first
(:mod:`bayeslmm.engines.sparse_cholesky`, pairs analysed once per problem). Checked against
the general path it replaces (SciPy sparse products and SuperLU, still used where the plan
does not apply) and against dense numpy: Laplace deviance, stage-1 deviance and conditional
modes agree to rounding at several (θ, β) (a θ at 0 included), and whole fits (Bernoulli
crossed, Poisson with the observation-level effect) agree at tight tolerance.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import bayeslmm as bl
from bayeslmm.engines.laplace import LaplaceProblem, fit_laplace
from bayeslmm.engines.laplace.engine import _ScaledDesign


def _binary_crossed(seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n_id, n_item = 60, 8
    i_id, i_item = np.repeat(np.arange(n_id), n_item), np.tile(np.arange(n_item), n_id)
    x1 = rng.normal(size=n_id)[i_id]
    x2 = np.tile([0.0, 1.0], n_item // 2)[i_item]
    eta = -0.3 + 0.4 * x1 - 0.6 * x2 + rng.normal(0, 1.0, n_id)[i_id]
    eta += rng.normal(0, 0.6, n_item)[i_item]
    return pd.DataFrame(
        {
            "r": rng.binomial(1, 1 / (1 + np.exp(-eta))),
            "x1": x1,
            "x2": x2,  # centred, it sums to exactly 0 within each id (a cancelling pattern)
            "id": [f"p{i}" for i in i_id],
            "item": [f"i{i}" for i in i_item],
        }
    )


def _poisson_olre(seed: int = 2) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n, n_pop, n_gen = 150, 5, 12
    gen = rng.integers(0, n_gen, n)
    pop = gen % n_pop
    x = rng.integers(0, 2, n).astype(float)
    eta = 1.5 + 0.8 * x + rng.normal(0, 0.5, n_pop)[pop] + rng.normal(0, 0.4, n_gen)[gen]
    eta += rng.normal(0, 0.7, n)
    return pd.DataFrame(
        {
            "total": rng.poisson(np.exp(eta)),
            "x": x,
            "popu": [f"p{i}" for i in pop],
            "gen": [f"g{i}" for i in gen],
        }
    )


@pytest.fixture(scope="module")
def binary_spec():
    return bl.specify("r ~ x1 + x2 + (1|id) + (1|item)", _binary_crossed(), family="bernoulli")


@pytest.fixture(scope="module")
def poisson_spec():
    return bl.specify("total ~ x + (1|popu) + (1|gen)", _poisson_olre(), family="poisson")


def _general_path(problem: LaplaceProblem) -> LaplaceProblem:
    problem._plans = {"mode": None, "nagq0": None}  # SciPy products and SuperLU
    return problem


@pytest.mark.parametrize("which", ["binary_spec", "poisson_spec"])
def test_deviances_and_modes_equal_the_general_path(request, which: str) -> None:
    spec = request.getfixturevalue(which)
    new, _ = LaplaceProblem(spec).centred()
    old, _ = LaplaceProblem(spec).centred()
    old = _general_path(old)
    assert isinstance(new.spherical_design(np.ones(new.n_theta)), _ScaledDesign)
    rng = np.random.default_rng(3)
    for theta in (np.ones(new.n_theta), np.r_[0.0, np.full(new.n_theta - 1, 0.7)]):
        beta = rng.normal(0, 0.3, new.p)
        assert new.deviance(theta, beta) == pytest.approx(old.deviance(theta, beta), rel=1e-11)
        b_new, eta_new = new.mode(theta, beta)
        b_old, eta_old = old.mode(theta, beta)
        np.testing.assert_allclose(b_new, b_old, atol=1e-8)
        d_new, beta_new = new.deviance_nagq0(theta)
        d_old, beta_old = old.deviance_nagq0(theta)
        assert d_new == pytest.approx(d_old, rel=1e-11)
        np.testing.assert_allclose(beta_new, beta_old, atol=1e-8)


def test_newton_matrix_equals_dense_algebra(binary_spec) -> None:
    problem = LaplaceProblem(binary_spec)
    theta = np.array([1.3, 0.4])
    M = problem.spherical_design(theta)
    w = np.random.default_rng(4).uniform(0.05, 0.25, problem.n)
    dense = M.tocsc().toarray()
    H = dense.T @ (w[:, None] * dense) + np.eye(problem.q)
    factor = problem._factor(M, w, np.ones(problem.q))
    assert factor.logdet == pytest.approx(np.linalg.slogdet(H)[1], rel=1e-12)
    g = np.arange(problem.q, dtype=float)
    np.testing.assert_allclose(factor.solve(g), np.linalg.solve(H, g), rtol=1e-10)


@pytest.mark.parametrize("which", ["binary_spec", "poisson_spec"])
def test_fit_equals_the_general_path(request, which: str, monkeypatch) -> None:
    spec = request.getfixturevalue(which)
    new = fit_laplace(spec)
    monkeypatch.setattr(LaplaceProblem, "_plan", lambda self, kind: None)
    old = fit_laplace(spec)
    assert new.converged and old.converged
    assert new.deviance == pytest.approx(old.deviance, abs=1e-7)
    np.testing.assert_allclose(new.theta, old.theta, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new.beta, old.beta, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        np.sqrt(np.diag(new.parameter_cov)), np.sqrt(np.diag(old.parameter_cov)), rtol=1e-3
    )
