"""The spectral strategy on a low-rank kinship (K = W Wᵀ, W n × p, p < n) against dense K.

References: the closed-form density and the PyMC model of the same matrix held densely
(rotated by numpy's n × n eigh), and the textbook conditional of the breeding values
u | y, β, θ written out with dense numpy.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import bayeslmm as bl
from bayeslmm.engines.bayes import build
from bayeslmm.engines.bayes.conditional import (
    conditional_breeding_values,
    fixed_effects_conditional,
)
from bayeslmm.engines.bayes.spectral_density import spectral_density
from bayeslmm.kinship.low_rank import LowRankDensifyWarning, LowRankKinship


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(21)
    n, p = 300, 60
    X = rng.binomial(2, rng.uniform(0.05, 0.5, p), size=(n, p)).astype(np.int8)
    K = bl.grm(X, low_rank=True)
    dense = bl.Kinship(K.markers @ K.markers.T, K.ids, name=K.name, check_psd=False)
    df = pd.DataFrame(
        {
            "id": list(K.ids),
            "x": rng.normal(size=n),
            "x2": rng.uniform(size=n),
            "expo": rng.uniform(0.5, 2, n),
        }
    )
    df["y"] = 1.0 + 0.5 * df["x"] + K.markers @ rng.normal(size=K.n_markers) + rng.normal(size=n)
    return df, K, dense


PRIORS = [
    None,
    {"sd_id": ("halfnormal", 1.5), "sigma": ("exponential", 0.7)},
    {"h2": ("beta", 2.0, 3.0)},
    {"h2": ("beta", 1.0, 1.0), "total_variance": ("invgamma", 2.0, 5.0)},
]
FORMULAS = [
    "y ~ 1 + (1|id)",
    "y ~ 0 + (1|id)",
    "y ~ 1 + x + x2 + offset(expo) + (1|id)",
]


@pytest.mark.parametrize("formula", FORMULAS)
@pytest.mark.parametrize("priors", PRIORS)
def test_closed_form_density_equals_dense(data, formula, priors):
    df, K, dense = data
    with warnings.catch_warnings():
        warnings.simplefilter("error", LowRankDensifyWarning)
        low = spectral_density(build(bl.specify(formula, df, kinship={"id": K}, priors=priors)))
    ref = spectral_density(build(bl.specify(formula, df, kinship={"id": dense}, priors=priors)))
    assert low.eigenvalues.size < 70 and low.multiplicity > 200
    assert low.eigenvalues.size + low.multiplicity == ref.eigenvalues.size == 300
    rng = np.random.default_rng(3)
    for x in rng.normal(size=(6, 2)) * [2.0, 1.0]:
        lp, grad = low.logp(x)
        ref_lp, ref_grad = ref.logp(x)
        # |log p| reaches 2e5 at small σ: 1e-12 relative is a few hundred ulps of the sums
        assert lp == pytest.approx(ref_lp, rel=1e-12, abs=1e-8)
        np.testing.assert_allclose(grad, ref_grad, rtol=1e-8, atol=1e-8)


@pytest.mark.slow  # compiling two PyMC models: ~15 s
def test_pymc_model_equals_dense(data):
    """The PyMC model (the potential for the left-out rows included) at random points."""
    df, K, dense = data
    formula = "y ~ 1 + x + (1|id)"
    low = build(bl.specify(formula, df, kinship={"id": K}))
    ref = build(bl.specify(formula, df, kinship={"id": dense}))
    f_low, f_ref = low.model.compile_logp(), ref.model.compile_logp()
    rng = np.random.default_rng(4)
    for _ in range(3):
        point = {"sd_id_log__": rng.normal(), "sigma_log__": rng.normal()}
        assert f_low(point) == pytest.approx(f_ref(point), rel=1e-12, abs=1e-8)


def test_fixed_effects_conditional_equals_dense(data):
    df, K, dense = data
    formula = "y ~ 1 + x + x2 + (1|id)"
    low = build(bl.specify(formula, df, kinship={"id": K})).marginal_fixed
    ref = build(bl.specify(formula, df, kinship={"id": dense})).marginal_fixed
    vg, ve = np.array([0.3, 1.2]), np.array([0.9, 0.4])
    m1, f1 = fixed_effects_conditional(low, vg, ve, low.rotated_response)
    m2, f2 = fixed_effects_conditional(ref, vg, ve, ref.rotated_response)
    np.testing.assert_allclose(m1, m2, rtol=1e-9, atol=1e-12)
    # covariances (square roots may differ by an orthogonal factor)
    np.testing.assert_allclose(
        f1 @ np.swapaxes(f1, -1, -2), f2 @ np.swapaxes(f2, -1, -2), rtol=1e-9, atol=1e-14
    )


def test_breeding_values_follow_the_textbook_conditional(data):
    """u | y, β, θ ~ N(σ_g² K V⁻¹ r, σ_g² K − σ_g⁴ K V⁻¹ K): 4000 draws at one (β, θ)."""
    import xarray as xr

    df, K, dense = data
    built = build(bl.specify("y ~ 1 + x + (1|id)", df, kinship={"id": K}))
    vg, ve, beta = 0.8, 1.1, np.array([0.9, 0.45])
    draws = 4000
    posterior = xr.Dataset(
        {
            "var_id": (("chain", "draw"), np.full((1, draws), vg)),
            "var_residual": (("chain", "draw"), np.full((1, draws), ve)),
            "beta": (("chain", "draw", "fixed"), np.tile(beta, (1, draws, 1))),
        },
        coords={"chain": [0], "draw": np.arange(draws), "fixed": ["Intercept", "x"]},
    )
    u = conditional_breeding_values(built, posterior, seed=5).values.reshape(draws, -1)
    Kd = dense.matrix
    V = vg * Kd + ve * np.eye(K.n)
    r = df["y"].to_numpy() - beta[0] - beta[1] * df["x"].to_numpy()
    mean = vg * Kd @ np.linalg.solve(V, r)
    var = np.diag(vg * Kd - vg**2 * Kd @ np.linalg.solve(V, Kd))
    z = (u.mean(axis=0) - mean) / np.sqrt(var / draws)
    assert np.abs(z).max() < 5.0
    ratio = u.var(axis=0) / var
    assert np.abs(ratio - 1).max() < 0.2  # 4000 draws: sd of the ratio ~ 0.022


def test_fit_reports_low_rank_and_matches_dense(data, tmp_path):
    df, K, dense = data
    with warnings.catch_warnings():
        warnings.simplefilter("error", LowRankDensifyWarning)
        fit = bl.LMM("y ~ 1 + x + (1|id)", df, kinship={"id": K}).fit(
            draws=1000, tune=500, chains=2, seed=7, breeding_values=True
        )
    ref = bl.LMM("y ~ 1 + x + (1|id)", df, kinship={"id": dense}).fit(
        draws=1000, tune=500, chains=2, seed=7
    )
    assert fit.strategy == "spectral-low-rank" and ref.strategy == "spectral"
    h2, h2_ref = fit.posterior["h2"].values.ravel(), ref.posterior["h2"].values.ravel()
    # the same posterior: means within Monte Carlo error of each other
    se = np.sqrt(2 * h2.var() / 400)  # ESS ≥ 400 per fit
    assert abs(h2.mean() - h2_ref.mean()) < 5 * se
    assert fit.posterior["u_id"].shape[-2] == K.n
    fit.save(tmp_path)
    back = bl.load_fit(tmp_path, data=df)
    assert back.strategy == "spectral-low-rank"
    assert isinstance(back.spec.terms[0].kinship, LowRankKinship)
    np.testing.assert_array_equal(back.spec.terms[0].kinship.markers, K.markers)


def test_closed_form_never_forms_the_eigenvectors(data):
    """The likelihood needs only S^-½ Vᵀ Wᵀ v: U₁ (n × p, O(n p²)) waits for u | y draws."""
    df, K, _ = data
    fresh = LowRankKinship(K.markers, K.ids)
    built = build(bl.specify("y ~ 1 + x + (1|id)", df, kinship={"id": fresh}))
    spectral_density(built).logp(np.zeros(2))
    assert "left_vectors" not in fresh.__dict__
    assert built.rotation.vectors.shape == (fresh.n, built.rotation.values.size)
    assert "left_vectors" in fresh.__dict__


def test_repeated_and_shuffled_records_equal_dense(data):
    """Z K Zᵀ = (Z W)(Z W)ᵀ: the closed form equals the dense kernel's for any incidence."""
    df, K, dense = data
    both = pd.concat([df, df.iloc[:80].assign(y=df["y"].iloc[:80] + 0.3)], ignore_index=True)
    both = both.sample(frac=1.0, random_state=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LowRankDensifyWarning)
        low = build(bl.specify("y ~ 1 + x + (1|id)", both, kinship={"id": K}))
    ref = build(bl.specify("y ~ 1 + x + (1|id)", both, kinship={"id": dense}))
    dl, dr = spectral_density(low), spectral_density(ref)
    assert dl.multiplicity > 0
    for x in np.random.default_rng(6).normal(size=(4, 2)):
        assert dl.logp(x)[0] == pytest.approx(dr.logp(x)[0], rel=1e-12, abs=1e-8)
