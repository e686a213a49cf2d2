"""Correlated random slopes ``(1 + x | g)`` in a binomial GLMM: bayeslmm's Laplace fit against
lme4's glmer (tests/golden/glmer/glmer_slopes.R, tight bobyqa optimum, tolPwrss 1e-10)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bayeslmm as bl
from bayeslmm.engines.laplace import LaplaceProblem

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "glmer"


@pytest.fixture(scope="module")
def case():
    ref = json.loads((GOLDEN / "slopes_binomial.json").read_text())
    data = pd.read_csv(GOLDEN / "slopes_binomial.csv", dtype={"g": str})
    model = bl.LMM("s ~ x + (1 + x | g)", data, family="binomial", trials="size")
    return model, ref


@pytest.mark.r_golden
def test_deviance_function_matches_glmer_devfun(case):
    """The Laplace deviance at fixed (θ, β), no optimiser involved. glmer's PIRLS stops at
    its own tolerance, so the values agree to ~1e-7 relative, not to rounding."""
    model, ref = case
    problem = LaplaceProblem(model.spec)
    for point in ref["devfun_points"]:
        assert problem.objective(np.array(point["par"])) == pytest.approx(
            point["deviance"], rel=1e-6
        )


@pytest.mark.r_golden
def test_laplace_fit_matches_glmer(case):
    model, ref = case
    fit = model.fit(method="laplace")
    assert fit.converged
    assert fit.deviance == pytest.approx(ref["deviance_laplace"], rel=1e-8)
    assert fit.loglik == pytest.approx(ref["logLik"], rel=1e-8)
    assert fit.aic == pytest.approx(ref["AIC"], rel=1e-8)
    # lme4's θ: the column-wise lower triangle of the relative Cholesky factor
    np.testing.assert_allclose(fit.theta, ref["theta"], rtol=1e-5)
    np.testing.assert_allclose(fit.beta, list(ref["fixef"].values()), rtol=1e-5)
    # lme4's SEs come from a finite-difference Hessian
    np.testing.assert_allclose(fit.fixed_effects()["se"], list(ref["se"].values()), rtol=1e-3)
    # Σ of (intercept, slope): variances, then the covariance, in lme4's row order
    vc = fit.variance_components()
    Sigma = np.asarray(ref["Sigma"])
    assert list(zip(vc["var1"], vc["var2"], strict=True)) == [
        ("(Intercept)", None),
        ("x", None),
        ("(Intercept)", "x"),
    ]
    np.testing.assert_allclose(vc["vcov"], [Sigma[0, 0], Sigma[1, 1], Sigma[0, 1]], rtol=1e-5)
    ref_vc = pd.DataFrame(ref["varcorr"])
    np.testing.assert_allclose(vc["sdcor"], ref_vc["sdcor"], rtol=1e-5)
