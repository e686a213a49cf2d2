"""Missing trait values on the SNP-space low-rank kinship K = W Wᵀ equal the dense kinship.

The reference is the dense ``bl.Kinship(W Wᵀ)`` of the same markers: REML through the
stacked covariance V of the observed records (``_Dense``), NUTS through the n × n
eigenbasis with the missing values sampled. The low-rank routes share neither: REML solves
the mixed-model equations in marker space, NUTS rotates [X, Y₀, unit columns] by the thin
SVD of W and a basis of the complement.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import bayeslmm as bl
from bayeslmm.engines.bayes.multitrait_density import multitrait_density
from bayeslmm.engines.reml.multitrait import _Dense, _LowRankMissing
from bayeslmm.kinship.low_rank import LowRankDensifyWarning

CASES = [
    pytest.param(1, 300, 60, 2, True, False, id="n300-p60-t2-x"),
    pytest.param(2, 200, 50, 3, True, True, id="n200-p50-t3-x-centred-W"),
    pytest.param(3, 150, 40, 3, False, False, id="n150-p40-t3"),
]


@pytest.mark.parametrize(("seed", "n", "p", "t", "covariate", "centred"), CASES)
def test_marker_space_likelihood_equals_stacked_dense(low_rank, seed, n, p, t, covariate, centred):
    """Value, ∂/∂Σ_G, ∂/∂Σ_E, β̂ and Cov(β̂) of the marker-space equations equal the
    stacked dense V's at random (Σ_G, Σ_E), a singular Σ_G included."""
    df, K, dense = low_rank.case(seed, n, p, t, centred, missing=0.2)
    Y = df[[f"y{a + 1}" for a in range(t)]].to_numpy()
    X = np.column_stack([np.ones(n), df["x"]]) if covariate else np.ones((n, 1))
    low, ref = _LowRankMissing(Y, X, K.markers), _Dense(Y, X, dense.matrix)
    rng = np.random.default_rng(seed + 20)
    points = []
    for _ in range(3):
        A, B = rng.normal(size=(t, t)), rng.normal(size=(t, t))
        points.append((A @ A.T / t + 0.1 * np.eye(t), B @ B.T / t + 0.2 * np.eye(t)))
    v = rng.normal(size=t)
    points.append((np.outer(v, v), low_rank.E[:t, :t]))  # rank-one Σ_G: r_g = ±1
    for G, E in points:
        got, want = low(G, E), ref(G, E)
        assert got[0] == pytest.approx(want[0], rel=1e-12, abs=1e-9)
        for a, b in zip(got[1:], want[1:], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10 * np.max(np.abs(b)))
    # an indefinite Σ_G (the standard errors' difference steps near a boundary): equal
    # where V stays positive definite, −inf where it does not, as the dense route
    w, U = np.linalg.eigh(low_rank.G[:t, :t])
    w[0] = -0.01  # K's largest eigenvalue times 0.01 is well below Σ_E's smallest
    indefinite = (U * w) @ U.T
    assert np.linalg.eigvalsh(indefinite).min() < 0
    assert ref(indefinite, low_rank.E[:t, :t])[0] > -np.inf
    for G in (indefinite, -low_rank.G[:t, :t]):
        got, want = low(G, low_rank.E[:t, :t]), ref(G, low_rank.E[:t, :t])
        assert got[0] == pytest.approx(want[0], rel=1e-12, abs=1e-9)
        if want[0] > -np.inf:
            for a, b in zip(got[1:], want[1:], strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10 * np.max(np.abs(b)))
    assert low(low_rank.G[:t, :t], -np.eye(t))[0] == -np.inf


@pytest.mark.parametrize(("seed", "n", "p", "t", "covariate", "centred"), CASES)
def test_low_rank_reml_with_missing_values_equals_dense(
    low_rank, seed, n, p, t, covariate, centred
):
    df, K, dense = low_rank.case(seed, n, p, t, centred, missing=0.2)
    formula = low_rank.formula(t, covariate)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LowRankDensifyWarning)  # never the n × n matrix
        low = bl.LMM(formula, df, kinship={"id": K}).fit(method="reml")
    ref = bl.LMM(formula, df, kinship={"id": dense}).fit(method="reml")
    assert low.route == "low-rank" and ref.route == "dense"
    assert low.converged and ref.converged
    assert low.n_records == ref.n_records and min(low.n_records) < n
    scale = np.max(np.abs(ref.genetic))
    np.testing.assert_allclose(low.genetic, ref.genetic, rtol=0, atol=1e-6 * scale)
    np.testing.assert_allclose(low.residual, ref.residual, rtol=0, atol=1e-6 * scale)
    assert low.loglik == pytest.approx(ref.loglik, rel=0, abs=1e-6)
    np.testing.assert_allclose(low.beta, ref.beta, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(low.beta_covariance, ref.beta_covariance, rtol=1e-6, atol=1e-12)
    se_low, se_ref = np.sqrt(np.diag(low.covariance)), np.sqrt(np.diag(ref.covariance))
    np.testing.assert_allclose(se_low, se_ref, rtol=1e-6)
    r_low, r_ref = low.genetic_correlation(), ref.genetic_correlation()
    np.testing.assert_allclose(r_low["se"], r_ref["se"], rtol=1e-6)


@pytest.mark.parametrize(("seed", "n", "p", "t", "covariate", "centred"), CASES)
def test_low_rank_log_density_with_missing_values_equals_dense(
    low_rank, seed, n, p, t, covariate, centred
):
    df, K, dense = low_rank.case(seed, n, p, t, centred, missing=0.2)
    formula = low_rank.formula(t, covariate)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LowRankDensifyWarning)
        spec = bl.LMM(formula, df, kinship={"id": K}).spec
        low = multitrait_density(spec)
    ref = multitrait_density(bl.LMM(formula, df, kinship={"id": dense}).spec)
    assert low.route == "low-rank" and ref.route == "rotated"
    # individuals recording no trait are left out by the specification
    n_missing = int(np.isnan(spec.Y).sum())
    assert 0 < n_missing < np.isnan(spec.Y).size
    assert low.ndim == ref.ndim == 2 * low.n_chol + n_missing
    assert low.eigenvalues.size + low.n_null == spec.n and low.eigenvalues.size < spec.n
    # one rotated unit vector per individual with a missing value, not an n × n matrix
    assert low.Q.shape == (np.unique(low.missing_rows).size, low.eigenvalues.size)
    rng = np.random.default_rng(seed + 10)
    for _ in range(5):
        x = low.initial_point(int(rng.integers(1000)))
        x += rng.normal(scale=0.3, size=x.size)
        value, grad = low.logp(x)
        ref_value, ref_grad = ref.logp(x)
        tol = 1e-10 * max(1.0, abs(ref_value))
        assert value == pytest.approx(ref_value, rel=0, abs=tol)
        np.testing.assert_allclose(grad, ref_grad, rtol=0, atol=1e-10 * max(1.0, abs(ref_value)))
        value_np, grad_np = low.logp_reference(x)
        assert value_np == pytest.approx(ref_value, rel=0, abs=tol)
        np.testing.assert_allclose(grad_np, ref_grad, rtol=0, atol=tol)
    # the named variables, missing values included, are the dense ones at a point
    a, b = low.expand(x), ref.expand(x)
    assert set(a) == set(b) and "missing_values" in a
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-8, atol=1e-10)
    # the gradient is the value's: central differences of the low-rank density itself
    h = 1e-6
    pick = np.r_[np.arange(2 * low.n_chol), 2 * low.n_chol + rng.choice(n_missing, 5)]
    fd = np.array(
        [(low.logp(x + h * e)[0] - low.logp(x - h * e)[0]) / (2 * h) for e in np.eye(x.size)[pick]]
    )
    np.testing.assert_allclose(grad[pick], fd, rtol=1e-5, atol=1e-5)


def test_low_rank_nuts_fit_with_missing_values(low_rank):
    """A short nutpie run: route reported, missing values drawn and labelled id:trait."""
    df, K, _ = low_rank.case(5, 200, 40, 2, False, missing=0.2)
    model = bl.LMM(low_rank.formula(2, True), df, kinship={"id": K})
    with warnings.catch_warnings():
        warnings.simplefilter("error", LowRankDensifyWarning)
        fit = model.fit(draws=40, tune=40, chains=1, seed=1, progressbar=False, verbose=False)
    assert fit.route == "low-rank"
    draws = fit.genetic_covariance(draws=True).values
    assert draws.shape == (1, 40, 2, 2) and np.all(np.isfinite(draws))
    rows, traits = np.nonzero(np.isnan(model.spec.Y))
    missing = fit.idata.posterior["missing_values"]
    assert missing.shape[-1] == rows.size > 0 and np.all(np.isfinite(missing.values))
    assert list(missing["missing"].values) == [
        f"{model.spec.ids[i]}:y{a + 1}" for i, a in zip(rows, traits, strict=True)
    ]


def test_low_rank_missing_values_beyond_the_unit_column_budget_are_refused(low_rank, monkeypatch):
    """Sampling missing values rotates an n × (individuals missing a trait) block with the
    data: above the budget a clear DataError names REML, never a MemoryError."""
    from bayeslmm.engines.bayes import multitrait_density as module
    from bayeslmm.errors import DataError

    df, K, _ = low_rank.case(3, 80, 20, 2, centred=False, missing=0.2)
    spec = bl.LMM(low_rank.formula(2, False), df, kinship={"id": K}).spec
    missing_individuals = int(np.isnan(spec.Y).any(axis=1).sum())
    monkeypatch.setattr(module, "MAX_MISSING_UNIT_CELLS", spec.n * missing_individuals - 1)
    with pytest.raises(DataError, match="method='reml'"):
        multitrait_density(spec)
    monkeypatch.setattr(module, "MAX_MISSING_UNIT_CELLS", spec.n * missing_individuals)
    assert multitrait_density(spec).route == "low-rank"
