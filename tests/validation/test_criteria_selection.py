"""The model-comparison validation scripts run, and their pieces agree with dense algebra.

``validation/criteria_selection.py`` (how often AIC, BIC, cAIC and the LOOs pick the true
random-effect structure) and ``validation/loo_vs_refit.py`` (PSIS marginal LOO against exact
refits) are run in full by hand (docs/validation.md); here their core functions run at
smoke-test sizes, so that they never rot, and the pieces they rely on are checked against
independent computations.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

VALIDATION = Path(__file__).resolve().parents[2] / "validation"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, VALIDATION / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


criteria_selection = _load("criteria_selection")
loo_vs_refit = _load("loo_vs_refit")

QUICK = criteria_selection.Settings(n_families=8, family_size=5, n_snps=300, draws=100, tune=100)


def _dense_reml_loglik(y: np.ndarray, X: np.ndarray, V: np.ndarray) -> float:
    """−½[(n − p) log 2π + log|V| + log|XᵀV⁻¹X| + rᵀV⁻¹r], r = y − Xβ̂ (GLS), lme4's."""
    n, p = X.shape
    Vi = np.linalg.inv(V)
    XtViX = X.T @ Vi @ X
    beta = np.linalg.solve(XtViX, X.T @ Vi @ y)
    r = y - X @ beta
    return -0.5 * (
        (n - p) * np.log(2 * np.pi)
        + np.linalg.slogdet(V)[1]
        + np.linalg.slogdet(XtViX)[1]
        + r @ Vi @ r
    )


def test_reml_likelihoods_of_kinship_and_no_random_effect_are_on_one_scale():
    """AIC/BIC compare ``y ~ 1`` with ``y ~ 1 + (1 | id)`` only if both REML log-likelihoods
    carry the same constants: each equals the dense restricted likelihood at its estimate."""
    d = criteria_selection.design(8, 5, 300, 2026)
    y = criteria_selection.simulate_response(d, "K", np.random.default_rng(3))
    n = len(y)
    X = np.ones((n, 1))
    none = criteria_selection.make_model(d, "none", y).fit(method="reml")
    var_e = float(none.parameters["estimate"].iloc[-1])
    assert none.loglik_reml == pytest.approx(_dense_reml_loglik(y, X, var_e * np.eye(n)), abs=1e-6)
    kin = criteria_selection.make_model(d, "K", y).fit(method="reml")
    var_g, var_e = kin.parameters["estimate"].to_numpy(dtype=float)
    V = var_g * d.kinship.matrix + var_e * np.eye(n)
    assert kin.loglik_reml == pytest.approx(_dense_reml_loglik(y, X, V), abs=1e-6)


def test_simulated_response_has_the_design_covariance():
    """Before standardisation y has covariance V_A K + V_AA K∘K + V_E I (checked on the
    average of many draws' outer products, without the standardisation)."""
    d = criteria_selection.design(4, 5, 200, 1)
    rng = np.random.default_rng(0)
    truth = criteria_selection.TRUTHS["K+KK"]
    n, draws = d.kinship.n, 20000
    z = rng.normal(size=(3, n, draws))
    y = (
        np.sqrt(truth["var_a"]) * d.root_k @ z[0]
        + np.sqrt(truth["var_aa"]) * d.root_kk @ z[1]
        + np.sqrt(truth["var_e"]) * z[2]
    )
    expected = (
        truth["var_a"] * d.kinship.matrix
        + truth["var_aa"] * d.epistatic.matrix
        + truth["var_e"] * np.eye(n)
    )
    assert np.abs(y @ y.T / draws - expected).max() < 0.06
    assert np.allclose(d.epistatic.matrix, d.kinship.matrix**2)


def test_reml_criteria_choose_among_the_candidates_on_a_quick_design():
    for scenario, (truths, candidates) in criteria_selection.SCENARIOS.items():
        rows = criteria_selection.evaluate((scenario, truths[0], 0, False), QUICK)
        assert [r["candidate"] for r in rows] == list(candidates)
        for criterion, (column, _) in criteria_selection.CHOICE.items():
            chosen = rows[0][f"chosen_{criterion}"]
            if column in ("aic", "bic", "caic"):
                values = {r["candidate"]: r[column] for r in rows}
                assert chosen == min(values, key=values.get)
            else:
                assert chosen == ""  # no NUTS fits on this data set


def test_conditional_log_density_is_the_dense_gaussian_conditional():
    rng = np.random.default_rng(1)
    W = rng.normal(size=(6, 12))
    K = W @ W.T / 12
    y = rng.normal(size=6)
    var_g, var_e, beta = np.array([0.7, 1.3]), np.array([0.4, 0.2]), np.array([0.1, -0.3])
    ll = loo_vs_refit.conditional_log_density(y, K, 2, var_g, var_e, beta)
    keep = np.arange(6) != 2
    for s in range(2):
        V = var_g[s] * K + var_e[s] * np.eye(6)
        joint = stats.multivariate_normal(np.full(6, beta[s]), V).logpdf(y)
        rest = stats.multivariate_normal(np.full(5, beta[s]), V[np.ix_(keep, keep)])
        assert ll[s] == pytest.approx(joint - rest.logpdf(y[keep]), abs=1e-10)


@pytest.mark.slow
def test_nuts_criteria_run_on_a_quick_design():
    """NUTS fits of every candidate, the compiled model swapped between data sets."""
    for scenario, (truths, candidates) in criteria_selection.SCENARIOS.items():
        for truth in truths:
            rows = criteria_selection.evaluate((scenario, truth, 0, True), QUICK)
            for row in rows:
                assert np.isfinite(row["elpd_marginal"]) and np.isfinite(row["elpd_conditional"])
                if row["candidate"] == "none":  # no random effect: the two LOOs are one
                    assert row["elpd_marginal"] == pytest.approx(row["elpd_conditional"])
            assert rows[0]["chosen_marginal LOO"] in candidates
    errors = criteria_selection._compiled_cache(QUICK).max_logp_error
    assert set(errors) == {"none", "K+KK"} and max(errors.values()) < 1e-6


@pytest.mark.slow
def test_psis_marginal_loo_matches_exact_refits_on_a_small_case():
    """PSIS-LOO, NUTS refits and the sampling-free evidence ratio agree on 6 left-out rows."""
    settings = loo_vs_refit.Settings(
        n_families=6, family_size=5, n_snps=300, draws=300, tune=300, full_draws=1000
    )
    result = loo_vs_refit.compare(settings, n_points=6)
    assert result["within_1_se"]
    assert result["max_abs_refit_grid"] < 0.1
    assert result["max_abs_pointwise_grid"] < 0.1
    assert result["grid_edge_mass"] < 1e-6


@pytest.mark.parametrize("data_set", [8, 15])
def test_caic_refuses_a_residual_at_the_reml_floor(data_set):
    """Two kernels absorbing every record put σ̂_e² at REML's floor (1e-10 var(y)); the
    conditional AIC is undefined there whatever the other variances add up to (data set 8's
    sum under 1 once slipped past the check and won with cAIC −3837)."""
    import warnings

    from bayeslmm.errors import SpecificationError

    d = criteria_selection.design(20, 10, 2000, 2026)
    y = criteria_selection.simulate_response(d, "K+KK", np.random.default_rng([15, 1, 0, data_set]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = criteria_selection.make_model(d, "K+KK", y).fit(method="reml")
    assert fit.variance_components()["vcov"].iloc[-1] < 1e-9
    with pytest.raises(SpecificationError, match="residual variance is estimated at 0"):
        fit.caic()
