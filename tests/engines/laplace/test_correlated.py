"""Correlated random slopes ``(1 + x | g)`` in the Laplace engine (lme4's Cholesky θ),
checked against a dense brute-force Laplace approximation written here from its definition:
u = (T ⊗ R) b, b ~ N(0, I), the mode of the joint density by a generic optimiser, and
d = −2 log p(y | b*) + ‖b*‖² + log det(Mᵀ W M + I)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

import bayeslmm as bl
from bayeslmm.engines.laplace import LaplaceProblem

POISSON = bl.Poisson(overdispersion=False)


def _data(q: int = 6, m: int = 7, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    which = np.repeat(np.arange(q), m)
    x = np.tile(np.linspace(-1.0, 1.0, m), q)
    U = rng.normal(size=(q, 2)) @ np.array([[0.7, 0.0], [0.35, 0.3]]).T
    eta = 0.4 + 0.3 * x + U[which, 0] + U[which, 1] * x
    return pd.DataFrame({"g": [f"g{k}" for k in which], "x": x, "c": rng.poisson(np.exp(eta))})


def brute_force_deviance(spec, T: np.ndarray, beta: np.ndarray, olre_sd: float = 0.0) -> float:
    """The Laplace deviance of a Poisson model with one correlated term, densely."""
    return brute_force_laplace(spec, T, beta, olre_sd)[0]


def brute_force_laplace(spec, T, beta, olre_sd: float = 0.0) -> tuple[float, np.ndarray]:
    """Deviance and the conditional modes u* = (T ⊗ R) b* (q × 2, one column a coefficient)."""
    (term,) = spec.terms
    n, q = spec.n_obs, term.n_levels
    Z = np.zeros((n, 2 * q))
    for j in range(2):
        Z[np.arange(n), j * q + term.index] = term.design[:, j]
    R = np.eye(q) if term.kinship is None else term.kinship.root().factor
    M = Z @ np.kron(T, R)
    if olre_sd:
        M = np.hstack([M, olre_sd * np.eye(n)])
    eta0 = spec.X @ beta
    y = spec.y

    def penalised(b):
        eta = eta0 + M @ b
        return -2.0 * stats.poisson.logpmf(y, np.exp(eta)).sum() + b @ b

    def gradient(b):
        return -2.0 * M.T @ (y - np.exp(eta0 + M @ b)) + 2.0 * b

    def hessian(b):
        return 2.0 * (M.T * np.exp(eta0 + M @ b)) @ M + 2.0 * np.eye(M.shape[1])

    res = optimize.minimize(
        penalised,
        np.zeros(M.shape[1]),
        jac=gradient,
        hess=hessian,
        method="trust-exact",
        options={"gtol": 1e-11},
    )
    b = res.x
    W = np.exp(eta0 + M @ b)
    _, logdet = np.linalg.slogdet((M.T * W) @ M + np.eye(M.shape[1]))
    u = (np.kron(T, R) @ b[: 2 * q]).reshape(2, q).T
    return float(res.fun + logdet), u


@pytest.mark.parametrize("theta", [(0.7, 0.3, 0.4), (0.5, -0.6, 0.2), (1.1, 0.0, 0.0)])
def test_deviance_equals_brute_force_laplace(theta):
    spec = bl.specify("c ~ x + (1 + x | g)", _data(), family=POISSON)
    problem = LaplaceProblem(spec)
    assert problem.n_theta == 3
    beta = np.array([0.35, 0.2])
    T = np.array([[theta[0], 0.0], [theta[1], theta[2]]])
    assert problem.deviance(np.array(theta), beta) == pytest.approx(
        brute_force_deviance(spec, T, beta), abs=1e-7
    )


def test_deviance_with_kinship_and_observation_level_effect_equals_brute_force():
    """A dense design (kinship) with the observation-level effect kept implicit."""
    data = _data()
    ids = sorted(data["g"].unique())
    rng = np.random.default_rng(3)
    W = rng.normal(size=(len(ids), 40))
    K = bl.Kinship(W @ W.T / 40, ids)
    spec = bl.specify("c ~ x + (1 + x | g)", data, kinship={"g": K}, family="poisson")
    problem = LaplaceProblem(spec)
    assert problem.n_theta == 4  # T's lower triangle and the observation-level SD
    theta, beta = np.array([0.6, 0.25, 0.3, 0.2]), np.array([0.35, 0.2])
    T = np.array([[0.6, 0.0], [0.25, 0.3]])
    assert problem.deviance(theta, beta) == pytest.approx(
        brute_force_deviance(spec, T, beta, olre_sd=0.2), abs=1e-7
    )


def test_uncorrelated_factor_is_the_uncorrelated_block():
    """T diagonal: the deviance of (1 + x || g) at the same SDs."""
    data = _data()
    correlated = LaplaceProblem(bl.specify("c ~ x + (1 + x | g)", data, family=POISSON))
    uncorrelated = LaplaceProblem(bl.specify("c ~ x + (1 + x || g)", data, family=POISSON))
    beta = np.array([0.3, 0.1])
    assert correlated.deviance(np.array([0.8, 0.0, 0.45]), beta) == pytest.approx(
        uncorrelated.deviance(np.array([0.8, 0.45]), beta), abs=1e-9
    )


def test_fit_is_the_brute_force_optimum_and_reports_the_covariance():
    data = _data(q=8, m=8, seed=11)
    spec = bl.specify("c ~ x + (1 + x | g)", data, family=POISSON)
    fit = bl.LMM.from_spec(spec).fit(method="laplace")
    assert fit.converged
    T = np.array([[fit.theta[0], 0.0], [fit.theta[1], fit.theta[2]]])
    assert fit.deviance == pytest.approx(brute_force_deviance(spec, T, fit.beta), abs=1e-6)

    # no (θ, β) nearby does better under the brute-force deviance
    def objective(v):
        return brute_force_deviance(spec, np.array([[v[0], 0.0], [v[1], v[2]]]), v[3:])

    start = np.r_[fit.theta, fit.beta]
    best = optimize.minimize(
        objective,
        start + 0.05,
        method="Nelder-Mead",
        options={"xatol": 1e-7, "fatol": 1e-9, "maxiter": 4000},
    )
    assert fit.deviance <= best.fun + 1e-5

    # the variance components are Σ = T Tᵀ, with lme4's rows (variances, then covariance)
    vc = fit.variance_components()
    Sigma = T @ T.T
    assert list(zip(vc["var1"], vc["var2"], strict=True)) == [
        ("(Intercept)", None),
        ("x", None),
        ("(Intercept)", "x"),
    ]
    np.testing.assert_allclose(vc["vcov"], [Sigma[0, 0], Sigma[1, 1], Sigma[0, 1]], rtol=1e-10)
    # the conditional modes u = (T ⊗ I) b*, one table per coefficient
    _, u = brute_force_laplace(spec, T, fit.beta)
    tables = fit.random_effects
    assert list(tables) == ["g:(Intercept)", "g:x"]
    got = np.column_stack([tables[k].iloc[:, 0].to_numpy() for k in tables])
    np.testing.assert_allclose(got, u, atol=1e-6)
