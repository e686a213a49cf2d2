"""bl.compare with AIC/BIC on REML fits whose fixed effects differ: refitted by ML first.

The ranking must be that of independent ML fits (``fit(method="ml")``), with lme4's warning;
with the same fixed effects REML fits keep their restricted likelihoods.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest

import bayeslmm as bl
from bayeslmm.errors import SpecificationError
from bayeslmm.results.criteria import REFIT_MESSAGE


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    rng = np.random.default_rng(8)
    groups = np.repeat([f"g{k}" for k in range(12)], 6)
    x = rng.normal(size=groups.size)
    z = rng.normal(size=groups.size)
    u = dict(zip(np.unique(groups), rng.normal(size=12), strict=True))
    y = 2.0 + 0.6 * x + np.array([u[g] for g in groups]) + rng.normal(size=groups.size)
    return pd.DataFrame({"y": y, "x": x, "z": z, "g": groups})


def _fit(formula: str, df: pd.DataFrame, method: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bl.LMM(formula, df).fit(method=method)


def test_reml_fits_with_different_fixed_effects_are_ranked_by_ml(data):
    formulas = {"x": "y ~ x + (1 | g)", "x+z": "y ~ x + z + (1 | g)", "1": "y ~ 1 + (1 | g)"}
    reml = {name: _fit(f, data, "reml") for name, f in formulas.items()}
    ml = {name: _fit(f, data, "ml") for name, f in formulas.items()}
    for criterion in ("aic", "bic"):
        with pytest.warns(UserWarning, match=r"refitting model\(s\) with ML \(instead of REML\)"):
            table = bl.compare(reml, criterion=criterion)
        expected = {name: getattr(fit, criterion) for name, fit in ml.items()}
        assert list(table.index) == sorted(expected, key=expected.get)
        np.testing.assert_allclose(table[criterion], [expected[n] for n in table.index], rtol=1e-10)
        assert table.attrs["refitted_ml"] == list(formulas)
        assert table.attrs["criterion"] == criterion
    # the ML AIC is −2ℓ + 2k from the full likelihood, k = fixed effects + 2 variances
    aic = bl.compare(ml, "aic")
    assert aic.loc["x+z", "aic"] == pytest.approx(-2 * ml["x+z"].loglik_ml + 2 * 5, rel=1e-12)
    assert aic.attrs["refitted_ml"] == []


def test_ml_fits_compare_without_refitting(data):
    fits = [_fit("y ~ x + (1 | g)", data, "ml"), _fit("y ~ 1 + (1 | g)", data, "ml")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no refit, no warning
        table = bl.compare(fits, "bic")
    n = data.shape[0]
    by_hand = [-2 * f.loglik_ml + math.log(n) * f.n_parameters for f in fits]
    np.testing.assert_allclose(table.loc[["model1", "model2"], "bic"], by_hand, rtol=1e-12)


def test_reml_fits_with_the_same_fixed_effects_keep_reml(data):
    fits = {
        "g": _fit("y ~ x + (1 | g)", data, "reml"),
        "g+slope": _fit("y ~ x + (1 + z | g)", data, "reml"),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        table = bl.compare(fits, "aic")
    assert table.attrs["refitted_ml"] == []
    for name, fit in fits.items():
        assert table.loc[name, "aic"] == pytest.approx(
            -2 * fit.loglik_reml + 2 * fit.n_parameters, rel=1e-12
        )


def test_a_reml_fit_beside_an_ml_fit_is_refitted(data):
    reml = _fit("y ~ x + (1 | g)", data, "reml")
    ml = _fit("y ~ x + (1 | g)", data, "ml")
    with pytest.warns(UserWarning, match=REFIT_MESSAGE.replace("(", r"\(").replace(")", r"\)")):
        table = bl.compare({"reml": reml, "ml": ml}, "aic")
    assert table.attrs["refitted_ml"] == ["reml"]
    assert table.loc["reml", "aic"] == pytest.approx(table.loc["ml", "aic"], rel=1e-10)


def test_a_reml_fit_without_its_engine_cannot_refit(data):
    import dataclasses

    reml = dataclasses.replace(_fit("y ~ x + (1 | g)", data, "reml"), refitter=None)
    other = _fit("y ~ 1 + (1 | g)", data, "reml")
    with pytest.raises(SpecificationError, match="cannot refit itself"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bl.compare([reml, other], "aic")
