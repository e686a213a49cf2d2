"""Maximum likelihood for Gaussian models (``fit(method="ml")``, lme4's ``REML = FALSE``).

Checked against an independent dense computation (the full log-likelihood
−½[n log 2π + log|V| + rᵀV⁻¹r] maximised over θ and β jointly by scipy), against lme4's
published ML fit of sleepstudy, and route against route (spectral, dense AI, MME AI).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize

import bayeslmm as bl
from bayeslmm.engines.reml import BoundaryFitWarning, fit_reml

GOLDEN = Path(__file__).resolve().parents[2] / "golden"


@pytest.fixture(scope="module")
def kinship_data() -> tuple[bl.Kinship, pd.DataFrame]:
    """n = 40 individuals, one record each, a GRM from 20 markers."""
    rng = np.random.default_rng(3)
    n, m = 40, 20
    ids = [f"i{k}" for k in range(n)]
    W = rng.binomial(2, 0.4, size=(n, m)).astype(float)
    W = (W - W.mean(axis=0)) / W.std(axis=0)
    # blended with I: a column-centred GRM is singular along 1, where an intercept makes the
    # full likelihood unbounded as σ_e² → 0 (REML's log|XᵀV⁻¹X| term is what tames it)
    K = 0.9 * W @ W.T / m + 0.1 * np.eye(n)
    u = np.linalg.cholesky(K) @ rng.normal(size=n)
    x = rng.normal(size=n)
    y = 3.0 + 0.8 * x + 1.2 * u + rng.normal(size=n)  # ML: σ_g² 1.41, σ_e² 0.79 (interior)
    return bl.Kinship(K, ids), pd.DataFrame({"y": y, "x": x, "id": ids})


def dense_ml(y: np.ndarray, X: np.ndarray, K: np.ndarray) -> tuple[float, np.ndarray]:
    """max over (σ_g², σ_e², β) of −½[n log 2π + log|V| + rᵀV⁻¹r], V = σ_g² K + σ_e² I,
    by BFGS on (log σ_g², log σ_e², β) from OLS; no profiling, no rotation."""
    n = y.size

    def negloglik(par: np.ndarray) -> float:
        sg2, se2 = np.exp(par[:2])
        V = sg2 * K + se2 * np.eye(n)
        sign, logdet = np.linalg.slogdet(V)
        r = y - X @ par[2:]
        return 0.5 * (n * math.log(2 * math.pi) + logdet + r @ np.linalg.solve(V, r))

    beta0 = np.linalg.lstsq(X, y, rcond=None)[0]
    s2 = float(np.var(y - X @ beta0))
    best = None
    for share in (0.2, 0.5, 0.8):  # a few starts: the surface need not be unimodal
        start = np.r_[math.log(share * s2), math.log((1 - share) * s2), beta0]
        res = minimize(negloglik, start, method="BFGS", options={"gtol": 1e-9})
        if best is None or res.fun < best.fun:
            best = res
    return -float(best.fun), np.r_[np.exp(best.x[:2]), best.x[2:]]


@pytest.mark.parametrize("route", ["spectral", "ai-reml-dense", "ai-reml-mme"])
def test_ml_loglik_is_the_dense_maximum(kinship_data, route):
    K, df = kinship_data
    spec = bl.specify("y ~ x + (1 | id)", df, kinship={"id": K})
    fit = fit_reml(spec, route, criterion="ml")
    loglik, estimate = dense_ml(np.asarray(spec.y), np.asarray(spec.X), K.matrix)
    assert fit.criterion == "ml" and fit.engine == "ml"
    assert fit.loglik == fit.loglik_ml
    # the engine's optimum is at least as high as BFGS's, and no higher than rounding allows
    assert fit.loglik_ml == pytest.approx(loglik, rel=1e-8, abs=1e-7)
    theta = fit.parameters["estimate"].to_numpy()
    np.testing.assert_allclose(theta, estimate[:2], rtol=2e-4)
    np.testing.assert_allclose(fit.fixed_table["estimate"], estimate[2:], rtol=1e-4, atol=1e-6)
    # ML shrinks the variances relative to REML, and the REML fit's ML likelihood is lower
    reml = fit_reml(spec, route)
    assert fit.parameters["estimate"].sum() < reml.parameters["estimate"].sum()
    assert reml.loglik_ml <= fit.loglik_ml + 1e-9
    # aic/bic: −2ℓ + k·(2 | log n), k = 2 fixed effects + 2 variances (lme4's df)
    assert fit.n_parameters == 4
    assert fit.aic == pytest.approx(-2 * loglik + 8, rel=1e-9)
    assert fit.bic == pytest.approx(-2 * loglik + 4 * math.log(40), rel=1e-9)


def test_ml_fixed_effect_se_is_the_gls_covariance(kinship_data):
    """Cov(β̂) = (XᵀV̂⁻¹X)⁻¹ at the ML variances, computed densely."""
    K, df = kinship_data
    fit = bl.LMM("y ~ x + (1 | id)", df, kinship={"id": K}).fit(method="ml")
    sg2, se2 = fit.parameters["estimate"]
    X = np.c_[np.ones(40), df["x"]]
    V = sg2 * K.matrix + se2 * np.eye(40)
    cov = np.linalg.inv(X.T @ np.linalg.solve(V, X))
    np.testing.assert_allclose(fit.fixed_table["se"], np.sqrt(np.diag(cov)), rtol=1e-6)


def test_sleepstudy_matches_lme4_ml():
    """lme4: lmer(Reaction ~ Days + (Days | Subject), sleepstudy, REML = FALSE):
    logLik −875.9697 (df = 6), fixed effects 251.405 (SE 6.632), 10.467 (SE 1.502)."""
    df = pd.read_csv(GOLDEN / "data" / "sleepstudy.csv")
    fit = bl.LMM("Reaction ~ Days + (Days | Subject)", df).fit(method="ml")
    assert fit.loglik == pytest.approx(-875.9697, abs=5e-5)
    assert fit.n_parameters == 6
    assert fit.aic == pytest.approx(2 * 875.9697 + 12, abs=1e-4)
    assert fit.bic == pytest.approx(2 * 875.9697 + 6 * math.log(180), abs=1e-4)
    np.testing.assert_allclose(fit.fixed_table["estimate"], [251.405, 10.467], atol=5e-4)
    np.testing.assert_allclose(fit.fixed_table["se"], [6.632, 1.502], atol=5e-4)
    summary = fit.to_summary()
    assert summary["method"] == "ml"
    assert summary["loglik"] == {"ml": pytest.approx(-875.9697, abs=5e-5)}
    assert summary["deviance"] == pytest.approx(2 * 875.9697, abs=1e-4)


def test_routes_agree_on_ml_with_residuals_by_environment():
    """MME and dense AI share the optimiser but not the algebra (the MME's ML trace and AI
    corrections come through the Woodbury identity): their ML fits must agree."""
    df = pd.read_csv(GOLDEN / "data" / "het_env.csv")
    spec = bl.specify("y ~ x + (1 | grp)", df, sigma="~ 0 + env")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BoundaryFitWarning)
        mme = fit_reml(spec, "ai-reml-mme", criterion="ml")
        dense = fit_reml(spec, "ai-reml-dense", criterion="ml")
    assert mme.loglik_ml == pytest.approx(dense.loglik_ml, rel=1e-9)
    np.testing.assert_allclose(mme.parameters["estimate"], dense.parameters["estimate"], rtol=1e-5)
    np.testing.assert_allclose(mme.parameter_cov, dense.parameter_cov, rtol=1e-4, atol=1e-10)
    np.testing.assert_allclose(mme.fixed_cov, dense.fixed_cov, rtol=1e-5)


def test_refit_ml_and_method_ml_agree(kinship_data):
    K, df = kinship_data
    model = bl.LMM("y ~ x + (1 | id)", df, kinship={"id": K})
    reml = model.fit(method="reml")
    ml = reml.refit_ml()
    direct = model.fit(method="ml")
    assert reml.criterion == "reml" and ml.criterion == "ml"
    assert ml.loglik_ml == pytest.approx(direct.loglik_ml, rel=1e-12)
    assert ml.refit_ml() is ml
    assert "logLik" in repr(ml) and "criterion='ml'" in repr(ml)


def test_ml_is_refused_for_a_glmm():
    df = pd.DataFrame({"y": [0, 1, 2, 0, 3, 1, 0, 2], "g": list("aabbccdd")})
    with pytest.raises(bl.SpecificationError, match="method='ml'.*Gaussian"):
        bl.LMM("y ~ 1 + (1 | g)", df, family="poisson").fit(method="ml")
