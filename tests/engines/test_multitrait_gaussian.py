"""The Cholesky-coordinate gradients of engines/multitrait_gaussian.py against finite
differences of a function of the covariance matrix."""

from __future__ import annotations

import numpy as np
import pytest

from bayeslmm.engines.multitrait_gaussian import (
    cholesky_from_params,
    cholesky_param_grad,
    scaled_cholesky_grad,
)


def _f(L: np.ndarray, A: np.ndarray) -> float:
    """A smooth function of L (not only of L Lᵀ): tr(A L) + log det(L Lᵀ)."""
    return float(np.trace(A @ L) + np.linalg.slogdet(L @ L.T)[1])


def _df_dL(L: np.ndarray, A: np.ndarray) -> np.ndarray:
    return np.tril(A.T + 2.0 * np.linalg.inv(L).T)


@pytest.mark.parametrize("t", [1, 2, 4])
def test_scaled_cholesky_grad_matches_finite_differences(t: int) -> None:
    rng = np.random.default_rng(t)
    theta = rng.normal(size=t * (t + 1) // 2)
    scale = rng.uniform(0.5, 3.0, size=t)
    A = rng.normal(size=(t, t))

    def f(th: np.ndarray) -> float:
        return _f(scale[:, None] * cholesky_from_params(th, t), A)

    L = scale[:, None] * cholesky_from_params(theta, t)
    ours = scaled_cholesky_grad(_df_dL(L, A), L, scale)
    h = 1e-6
    numeric = [(f(theta + h * e) - f(theta - h * e)) / (2 * h) for e in np.eye(theta.size)]
    assert np.allclose(ours, numeric, rtol=1e-6, atol=1e-7)


def test_cholesky_param_grad_matches_finite_differences_of_a_function_of_sigma() -> None:
    t = 3
    rng = np.random.default_rng(0)
    theta = rng.normal(size=6)
    B = rng.normal(size=(t, t))
    M = B + B.T  # d f = tr(M dΣ) for f(Σ) = tr(M Σ)

    def f(th: np.ndarray) -> float:
        L = cholesky_from_params(th, t)
        return float(np.trace(M @ L @ L.T))

    ours = cholesky_param_grad(M, cholesky_from_params(theta, t))
    h = 1e-6
    numeric = [(f(theta + h * e) - f(theta - h * e)) / (2 * h) for e in np.eye(theta.size)]
    assert np.allclose(ours, numeric, rtol=1e-6, atol=1e-7)
