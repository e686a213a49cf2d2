"""REML with a low-rank kinship (route "spectral-low-rank") equals REML with the dense K.

The reference is the dense route on the same matrix W Wᵀ (the n × n eigendecomposition),
itself tested against lme4/sommer golden files; the low-rank route shares none of its
rotation (thin SVD, the data's null-space rows, a multiplicity for the rest).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import bayeslmm as bl
from bayeslmm.errors import KinshipError
from bayeslmm.kinship import low_rank as lr
from bayeslmm.kinship.low_rank import LowRankDensifyWarning, LowRankKinship


def _case(seed: int, n: int, p: int, centred: bool = False):
    rng = np.random.default_rng(seed)
    if centred:
        # rows centred: W 1 = 0, rank p − 1
        W = rng.normal(size=(n, p))
        W -= W.mean(axis=1, keepdims=True)
        W /= np.sqrt(p)
        K = LowRankKinship(W, [f"i{k}" for k in range(n)])
    else:
        X = rng.binomial(2, rng.uniform(0.05, 0.5, p), size=(n, p)).astype(np.int8)
        K = bl.grm(X, low_rank=True)
    dense = bl.Kinship(K.markers @ K.markers.T, K.ids, name=K.name, check_psd=False)
    df = pd.DataFrame(
        {"id": list(K.ids), "x": rng.normal(size=n), "env": rng.choice(["a", "b", "c"], n)}
    )
    g = K.markers @ rng.normal(size=K.n_markers) * 0.8
    df["y"] = 3.0 + 0.4 * df["x"] + (df["env"] == "b") * 0.7 + g + rng.normal(size=n)
    return df, K, dense


CASES = [
    pytest.param(1, 300, 50, "y ~ 1 + (1 | id)", False, id="n300-p50-intercept"),
    pytest.param(2, 400, 120, "y ~ x + env + (1 | id)", False, id="n400-p120-covariates"),
    pytest.param(3, 600, 200, "y ~ x + (1 | id)", False, id="n600-p200"),
    pytest.param(4, 350, 80, "y ~ x + env + (1 | id)", True, id="n350-p80-centred-W"),
]


@pytest.mark.parametrize("criterion", ["reml", "ml"])
@pytest.mark.parametrize(("seed", "n", "p", "formula", "centred"), CASES)
def test_low_rank_reml_equals_dense(seed, n, p, formula, centred, criterion):
    df, K, dense = _case(seed, n, p, centred)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LowRankDensifyWarning)  # never the n × n matrix
        low = bl.LMM(formula, df, kinship={"id": K}).fit(method=criterion)
    ref = bl.LMM(formula, df, kinship={"id": dense}).fit(method=criterion)
    assert low.method == "spectral-low-rank" and ref.method == "spectral"
    assert K.rank == (p - 1 if centred else p)
    pars, ref_pars = low.parameters, ref.parameters
    np.testing.assert_allclose(pars["estimate"], ref_pars["estimate"], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(pars["se"], ref_pars["se"], rtol=1e-6, atol=1e-9)
    assert low.loglik_reml == pytest.approx(ref.loglik_reml, abs=1e-6)
    assert low.loglik_ml == pytest.approx(ref.loglik_ml, abs=1e-6)
    fixed, ref_fixed = low.fixed_table, ref.fixed_table
    np.testing.assert_allclose(fixed["estimate"], ref_fixed["estimate"], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(low.fixed_cov, ref.fixed_cov, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(low.parameter_cov, ref.parameter_cov, rtol=1e-6, atol=1e-12)
    blup, ref_blup = low.blups["id"], ref.blups["id"]
    assert list(blup.index) == list(ref_blup.index)
    np.testing.assert_allclose(blup.to_numpy(), ref_blup.to_numpy(), rtol=1e-6, atol=1e-9)


def test_blups_against_the_textbook_formula():
    """û = σ_g² K V⁻¹ (y − Xβ̂) with dense numpy, at the low-rank fit's own estimates."""
    df, K, dense = _case(8, 300, 60)
    fit = bl.LMM("y ~ x + (1 | id)", df, kinship={"id": K}).fit(method="reml")
    sg2, se2 = fit.parameters["estimate"].to_numpy()
    Kd = dense.matrix
    V = sg2 * Kd + se2 * np.eye(K.n)
    X = np.column_stack([np.ones(K.n), df["x"]])
    Vi = np.linalg.inv(V)
    beta = np.linalg.solve(X.T @ Vi @ X, X.T @ Vi @ df["y"].to_numpy())
    u = sg2 * Kd @ Vi @ (df["y"].to_numpy() - X @ beta)
    np.testing.assert_allclose(fit.fixed_table["estimate"], beta, rtol=1e-8)
    np.testing.assert_allclose(fit.blups["id"].iloc[:, 0], u, rtol=1e-7, atol=1e-10)
    # the REML log-likelihood, written out
    P = Vi - Vi @ X @ np.linalg.solve(X.T @ Vi @ X, X.T @ Vi)
    y = df["y"].to_numpy()
    ll = -0.5 * (
        np.linalg.slogdet(V)[1]
        + np.linalg.slogdet(X.T @ Vi @ X)[1]
        + y @ P @ y
        + (K.n - 2) * np.log(2 * np.pi)
    )
    assert fit.loglik_reml == pytest.approx(ll, abs=1e-6)


@pytest.mark.parametrize("layout", ["shuffled", "repeated"])
def test_any_incidence_equals_dense(layout):
    """Rows in another order than the kinship, or several records per individual: the
    observations' kinship Z K Zᵀ = (Z W)(Z W)ᵀ is low-rank too; BLUPs are per individual."""
    df, K, dense = _case(11, 250, 60)
    rng = np.random.default_rng(12)
    if layout == "shuffled":
        df = df.sample(frac=1.0, random_state=3)
    else:
        extra = df.sample(n=150, random_state=4).assign(y=lambda d: d["y"] + rng.normal(size=150))
        df = pd.concat([df, extra], ignore_index=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LowRankDensifyWarning)
        low = bl.LMM("y ~ x + (1 | id)", df, kinship={"id": K}).fit(method="reml")
    ref = bl.LMM("y ~ x + (1 | id)", df, kinship={"id": dense}).fit(method="reml")
    assert low.method == "spectral-low-rank"
    np.testing.assert_allclose(
        low.parameters["estimate"], ref.parameters["estimate"], rtol=1e-6, atol=1e-9
    )
    np.testing.assert_allclose(low.parameters["se"], ref.parameters["se"], rtol=1e-6)
    assert low.loglik_reml == pytest.approx(ref.loglik_reml, abs=1e-6)
    blup, ref_blup = low.blups["id"], ref.blups["id"].loc[low.blups["id"].index]
    np.testing.assert_allclose(blup.to_numpy(), ref_blup.to_numpy(), rtol=1e-6, atol=1e-9)


def test_other_models_get_a_clear_error_when_large(monkeypatch):
    df, K, dense = _case(9, 200, 40)
    monkeypatch.setattr(lr, "LOW_RANK_DENSE_LIMIT", 100)
    with pytest.raises(KinshipError, match="SNP-space low-rank path supports"):
        bl.LMM("y ~ 1 + (1 | id) + (1 | env)", df, kinship={"id": K}).fit(method="reml")
    with pytest.raises(KinshipError, match="SNP-space low-rank path supports"):
        bl.LMM("y ~ 1 + (1 + x | id)", df, kinship={"id": K}).fit(method="reml")


def test_other_models_small_n_densify_with_a_warning():
    df, K, dense = _case(10, 120, 30)
    fresh = LowRankKinship(K.markers, K.ids)
    formula = "y ~ 1 + (1 | id) + (1 | env)"
    with pytest.warns(LowRankDensifyWarning):
        low = bl.LMM(formula, df, kinship={"id": fresh}).fit(method="reml")
    ref = bl.LMM(formula, df, kinship={"id": dense}).fit(method="reml")
    assert low.method == ref.method
    np.testing.assert_allclose(low.parameters["estimate"], ref.parameters["estimate"], rtol=1e-8)
