"""reml_fit.caic(): the conditional AIC of Greven & Kneib (2010).

Two independent references: R's cAIC4 (tests/golden/caic/caic4.R → caic4.json, reproduced
with ``cAIC4=True``) and, for the exact degrees of freedom, tr(∂ŷ/∂y) + 1 by finite
differences of full REML refits (the definition the formula computes).
"""

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bayeslmm as bl
from bayeslmm.errors import SpecificationError

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
REF = json.loads((GOLDEN / "caic" / "caic4.json").read_text())

CASES = {
    "sleepstudy_intercept": "sleepstudy",
    "sleepstudy_corr": "sleepstudy",
    "sleepstudy_uncorr": "sleepstudy",
    "penicillin": "Penicillin",
    "kinship": "kin_pheno",
}


def _reml(formula, data, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bl.LMM(formula, data, **kwargs).fit(method="reml")


def _golden_fit(key):
    ref = REF[key]
    data = pd.read_csv(GOLDEN / "data" / f"{CASES[key]}.csv", dtype={"Subject": str})
    if key == "kinship":
        K = pd.read_csv(GOLDEN / "data" / "kin_K.csv", index_col=0)
        return _reml(ref["formula"], data, kinship={"id": bl.Kinship.from_dataframe(K)})
    return _reml(ref["formula"], data)


@pytest.mark.r_golden
@pytest.mark.parametrize("key", sorted(CASES))
def test_caic_equals_r_caic4(key):
    ref = REF[key]
    fit = _golden_fit(key)
    np.testing.assert_allclose(fit.variance_components()["vcov"], ref["vcov"], rtol=1e-5)
    got = fit.caic(cAIC4=True)
    assert got.method == "cAIC4"
    assert got.caic == pytest.approx(ref["caic"], rel=1e-6)
    assert got.df == pytest.approx(ref["df"], rel=1e-6)
    assert got.loglik_conditional == pytest.approx(ref["cll"], rel=1e-6)
    # the exact derivative shares the likelihood and differs from cAIC4 in df only
    exact = fit.caic()
    assert exact.loglik_conditional == pytest.approx(got.loglik_conditional, rel=1e-12)
    assert exact.caic == pytest.approx(-2 * exact.loglik_conditional + 2 * exact.df)
    assert exact.hat_trace < exact.df < got.df + 1.0


def test_exact_df_is_the_derivative_of_the_fitted_values(random_kinship):
    """df = tr(∂ŷ/∂y) + 1 with ŷ = Xβ̂ + Zû of a REML fit refitted at y ± h e_i."""
    rng = np.random.default_rng(3)
    n = 22
    K = random_kinship(rng, n, 100)
    x = rng.normal(size=n)
    g = np.linalg.cholesky(K.matrix) @ rng.normal(size=n)
    y = 1 + 0.5 * x + 1.5 * g + rng.normal(size=n)

    def fitted(values):
        df = pd.DataFrame({"y": values, "x": x, "id": list(K.ids)})
        return _reml("y ~ x + (1|id)", df, kinship={"id": K}).predict()["estimate"].to_numpy()

    h, trace = 1e-4, 0.0
    for i in range(n):
        up, down = y.copy(), y.copy()
        up[i] += h
        down[i] -= h
        trace += (fitted(up)[i] - fitted(down)[i]) / (2 * h)
    fit = _reml("y ~ x + (1|id)", pd.DataFrame({"y": y, "x": x, "id": list(K.ids)}),
                kinship={"id": K})  # fmt: skip
    got = fit.caic()
    assert got.df == pytest.approx(trace + 1.0, abs=1e-6)
    assert got.df != pytest.approx(got.hat_trace + 1.0, abs=1e-3)  # the correction matters
    # conditional log-likelihood at ŷ with the REML σ̂²
    sigma2 = fit.variance_components()["vcov"].iloc[-1]
    resid = y - fit.predict()["estimate"].to_numpy()
    expected = -0.5 * np.sum(np.log(2 * np.pi * sigma2) + resid**2 / sigma2)
    assert got.loglik_conditional == pytest.approx(expected, rel=1e-10)


def test_a_variance_at_zero_is_left_out():
    data = pd.read_csv(GOLDEN / "data" / "Dyestuff2.csv")
    fit = _reml("Yield ~ 1 + (1 | Batch)", data)
    got = fit.caic()
    assert got.dropped == ("Batch|(Intercept)",)
    # nothing random is left: ŷ = the mean, df = 1 fixed effect + σ²
    assert got.df == pytest.approx(2.0, abs=1e-8)


def test_caic_refuses_what_it_does_not_define(random_kinship):
    data = pd.read_csv(GOLDEN / "data" / "het_env.csv")
    fit = _reml("y ~ x + (1 | grp)", data, sigma="~ 0 + env")
    with pytest.raises(SpecificationError, match="one residual variance"):
        fit.caic()
    # a kinship term that absorbs every record (REML puts σ̂² at 0 on this draw): ŷ = y
    rng = np.random.default_rng(3)
    K = random_kinship(rng, 20, 100)
    x = rng.normal(size=20)
    g = np.linalg.cholesky(K.matrix) @ rng.normal(size=20)
    y = 1 + 0.5 * x + 1.5 * g + rng.normal(size=20)
    fit = _reml("y ~ x + (1|id)", pd.DataFrame({"y": y, "x": x, "id": list(K.ids)}),
                kinship={"id": K})  # fmt: skip
    assert fit.variance_components()["vcov"].iloc[-1] < 1e-8
    with pytest.raises(SpecificationError, match="residual variance is estimated at 0"):
        fit.caic()
