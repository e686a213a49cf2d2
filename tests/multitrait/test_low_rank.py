"""Multi-trait models on a low-rank kinship K = W Wᵀ (route "low-rank") equal the dense K.

The reference is the dense route on the same matrix W Wᵀ (its n × n eigendecomposition),
itself checked against a np.kron stacked normal and brms; the low-rank route shares none of
its rotation (thin SVD of W, the data's rows outside span U₁, a multiplicity for the rest).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import bayeslmm as bl
from bayeslmm.engines.bayes.multitrait_density import multitrait_density
from bayeslmm.kinship.low_rank import LowRankDensifyWarning

CASES = [
    pytest.param(1, 300, 60, 2, True, False, id="n300-p60-t2-x"),
    pytest.param(2, 300, 60, 3, False, True, id="n300-p60-t3-centred-W"),
]


@pytest.mark.parametrize(("seed", "n", "p", "t", "covariate", "centred"), CASES)
def test_low_rank_reml_equals_dense(low_rank, seed, n, p, t, covariate, centred):
    df, K, dense = low_rank.case(seed, n, p, t, centred)
    formula = low_rank.formula(t, covariate)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LowRankDensifyWarning)  # never the n × n matrix
        low = bl.LMM(formula, df, kinship={"id": K}).fit(method="reml")
    ref = bl.LMM(formula, df, kinship={"id": dense}).fit(method="reml")
    assert low.route == "low-rank" and ref.route == "rotated"
    assert K.rank == (p - 1 if centred else p)
    assert low.converged and ref.converged
    scale = np.max(np.abs(ref.genetic))
    np.testing.assert_allclose(low.genetic, ref.genetic, rtol=0, atol=1e-6 * scale)
    np.testing.assert_allclose(low.residual, ref.residual, rtol=0, atol=1e-6 * scale)
    assert low.loglik == pytest.approx(ref.loglik, rel=0, abs=1e-6 * max(1.0, abs(ref.loglik)))
    np.testing.assert_allclose(low.beta, ref.beta, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(low.beta_covariance, ref.beta_covariance, rtol=1e-6, atol=1e-12)
    se_low, se_ref = np.sqrt(np.diag(low.covariance)), np.sqrt(np.diag(ref.covariance))
    np.testing.assert_allclose(se_low, se_ref, rtol=1e-5)
    assert low.kinship_scale == pytest.approx(ref.kinship_scale, rel=1e-12)


@pytest.mark.parametrize(("seed", "n", "p", "t", "covariate", "centred"), CASES)
def test_low_rank_log_density_equals_dense(low_rank, seed, n, p, t, covariate, centred):
    df, K, dense = low_rank.case(seed, n, p, t, centred)
    formula = low_rank.formula(t, covariate)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LowRankDensifyWarning)
        low = multitrait_density(bl.LMM(formula, df, kinship={"id": K}).spec)
    ref = multitrait_density(bl.LMM(formula, df, kinship={"id": dense}).spec)
    assert low.route == "low-rank" and ref.route == "rotated"
    # only r + k rows are carried; the rest are one multiplicity
    assert low.eigenvalues.size + low.n_null == n and low.eigenvalues.size < n // 2
    rng = np.random.default_rng(seed + 10)
    for _ in range(5):
        x = low.initial_point(int(rng.integers(1000)))
        x += rng.normal(scale=0.3, size=x.size)
        value, grad = low.logp(x)
        ref_value, ref_grad = ref.logp(x)
        assert value == pytest.approx(ref_value, rel=1e-9, abs=1e-8)
        np.testing.assert_allclose(grad, ref_grad, rtol=1e-7, atol=1e-7)
        # the NumPy reference implementation agrees as well
        value_np, grad_np = low.logp_reference(x)
        assert value_np == pytest.approx(ref_value, rel=1e-9, abs=1e-8)
        np.testing.assert_allclose(grad_np, ref_grad, rtol=1e-7, atol=1e-7)
    # the gradient is the value's: central differences of the low-rank density itself
    h = 1e-6
    fd = np.array(
        [(low.logp(x + h * e)[0] - low.logp(x - h * e)[0]) / (2 * h) for e in np.eye(x.size)]
    )
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-5)


def test_low_rank_draws_expand_like_dense(low_rank):
    """β's conditional mean and the named variables match at a point."""
    df, K, dense = low_rank.case(3, 300, 60, 2, False)
    formula = low_rank.formula(2, True)
    low = multitrait_density(bl.LMM(formula, df, kinship={"id": K}).spec)
    ref = multitrait_density(bl.LMM(formula, df, kinship={"id": dense}).spec)
    x = low.initial_point(4)
    a, b = low.expand(x), ref.expand(x)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-8, atol=1e-10)


def test_low_rank_nuts_fit_reports_route(low_rank):
    """A short nutpie run on the SNP-space path: route reported, never the n × n matrix."""
    df, K, _ = low_rank.case(5, 300, 60, 2, False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LowRankDensifyWarning)
        fit = bl.LMM(low_rank.formula(2, True), df, kinship={"id": K}).fit(
            draws=40, tune=40, chains=1, seed=1, progressbar=False, verbose=False
        )
    assert fit.route == "low-rank"
    draws = fit.genetic_covariance(draws=True).values
    assert draws.shape == (1, 40, 2, 2) and np.all(np.isfinite(draws))
