"""REML engine against lme4 / nlme reference fits (tests/golden/lme4_reml.R → lme4_reml.json).

The R script exports the datasets it fits as CSV, so these tests need no R. Tolerance: 1e-5
relative on variance components, fixed effects, SEs and likelihoods (both optimisers are run
to tolerances well below that).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bayeslmm import Kinship, specify
from bayeslmm.engines.reml import BoundaryFitWarning, fit_reml

pytestmark = pytest.mark.r_golden

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
REF = json.loads((GOLDEN / "lme4_reml.json").read_text())
RTOL = 1e-5

LME4_CASES = {
    "sleepstudy_corr": ("sleepstudy", ["ai-reml"]),
    "sleepstudy_uncorr": ("sleepstudy", ["ai-reml"]),
    "sleepstudy_dblbar": ("sleepstudy", ["ai-reml"]),
    "sleepstudy_intercept": ("sleepstudy", ["spectral", "ai-reml"]),
    "dyestuff": ("Dyestuff", ["spectral", "ai-reml"]),
    "dyestuff2_singular": ("Dyestuff2", ["spectral", "ai-reml"]),
    "penicillin": ("Penicillin", ["ai-reml"]),
    "slope_singular": ("slope_singular", ["ai-reml"]),
}


def _data(name: str) -> pd.DataFrame:
    data = pd.read_csv(GOLDEN / "data" / f"{name}.csv")
    if name == "slope_singular":
        data["g"] = data["g"].astype(str)  # an R factor written as integers
    return data


def _kinship() -> Kinship:
    return Kinship.from_dataframe(pd.read_csv(GOLDEN / "data" / "kin_K.csv", index_col=0), "GRM")


def _fit(key: str, method: str):
    ref = REF[key]
    if key.startswith("kinship"):
        spec = specify(ref["formula"], _data(ref["dataset"]), kinship={"id": _kinship()})
    else:
        spec = specify(ref["formula"], _data(LME4_CASES[key][0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BoundaryFitWarning)
        return fit_reml(spec, method=method)


def _close(a: float, b: float, rtol: float = RTOL, atol: float = 0.0) -> bool:
    return math.isclose(a, b, rel_tol=rtol, abs_tol=atol)


# every AI-REML case runs through both evaluators: dense n × n V and mixed-model equations
ROUTES = {"spectral": ["spectral"], "ai-reml": ["ai-reml-dense", "ai-reml-mme"]}
CASES = (
    [(k, route) for k, (_, methods) in LME4_CASES.items() for m in methods for route in ROUTES[m]]
    + [
        ("kinship", "spectral"),
        ("kinship", "ai-reml-dense"),
        ("kinship", "ai-reml-mme"),
        ("kinship_rep", "spectral"),
        ("kinship_rep", "ai-reml-dense"),
        ("kinship_rep", "ai-reml-mme"),
    ]
    + [
        # the sparse mixed-model equations (iid terms, one residual variance), including a zero
        # variance and a singular correlated Σ
        (k, "ai-reml-sparse")
        for k in (
            "sleepstudy_corr",
            "sleepstudy_uncorr",
            "sleepstudy_dblbar",
            "sleepstudy_intercept",
            "dyestuff",
            "dyestuff2_singular",
            "penicillin",
            "slope_singular",
        )
    ]
)


@pytest.mark.parametrize(("key", "method"), CASES)
def test_variance_components_match_lme4(key: str, method: str) -> None:
    fit = _fit(key, method)
    assert fit.method == method and fit.converged
    ours = fit.variance_components()
    ref = REF[key]["variance_components"]
    assert len(ours) == len(ref)
    table = {(r.grp, r.var1, r.var2): r for r in ours.itertuples(index=False)}
    scale = max(r["vcov"] for r in ref)
    for row in ref:
        mine = table[(row["grp"], row["var1"], row["var2"])]
        # a variance at exactly 0 (singular fit) is compared on the scale of the others
        assert _close(mine.vcov, row["vcov"], atol=RTOL * scale * 1e-3), (row, mine)
        assert _close(mine.sdcor, row["sdcor"], atol=1e-6), (row, mine)
    # lme4 orders a term's variances before its covariances, residual last
    assert list(ours["grp"]) == [r["grp"] for r in ref]
    assert ours["grp"].iloc[-1] == "Residual"


@pytest.mark.parametrize(("key", "method"), CASES)
def test_fixed_effects_and_likelihoods_match_lme4(key: str, method: str) -> None:
    fit = _fit(key, method)
    ref = REF[key]
    for row in ref["fixed_effects"]:
        mine = fit.fixed_effects().loc[row["name"]]
        assert _close(mine["estimate"], row["estimate"], atol=1e-9), row
        assert _close(mine["se"], row["se"]), row
        assert _close(mine["t"], row["t"]), row
    assert _close(fit.reml_criterion, ref["reml_criterion"], rtol=1e-8)
    assert _close(fit.loglik_reml, ref["loglik_reml"], rtol=1e-8)
    assert _close(fit.loglik_ml, ref["loglik_ml"], rtol=1e-8)
    assert fit.n_parameters == ref["df"]
    assert _close(fit.aic, ref["aic"], rtol=1e-8)
    assert _close(fit.bic, ref["bic"], rtol=1e-8)
    assert fit.boundary == ref["singular"]


@pytest.mark.parametrize(("key", "method"), CASES)
def test_blups_match_lme4_conditional_modes(key: str, method: str) -> None:
    fit = _fit(key, method)
    for block in REF[key]["blups"]:
        group = block["group"]
        # lme4 merges terms with the same grouping factor in ranef(); ours keeps one per term
        frames = [f for label, f in fit.blups.items() if label.split(".")[0] == group]
        ours = pd.concat(frames, axis=1)
        for coef, values in block["values"].items():
            ref = pd.Series(values, index=[str(v) for v in block["levels"]])
            got = ours[coef].reindex(ref.index)
            scale = max(float(np.abs(ref).max()), 1e-3)
            np.testing.assert_allclose(got.to_numpy(), ref.to_numpy(), atol=1e-5 * scale)


def test_singular_fit_warns_like_lme4() -> None:
    spec = specify(REF["dyestuff2_singular"]["formula"], _data("Dyestuff2"))
    for method in ("spectral", "ai-reml-dense", "ai-reml-mme", "ai-reml-sparse"):
        with pytest.warns(BoundaryFitWarning, match="boundary \\(singular\\) fit"):
            fit = fit_reml(spec, method=method)
        assert fit.boundary and fit.to_summary()["diagnostics"]["boundary"] is True
        assert fit.variance_components()["vcov"].iloc[0] == 0.0


def test_residual_variance_by_environment_matches_nlme_varident() -> None:
    ref = REF["het_env"]
    data = _data("het_env")
    for sigma in ("~ 0 + env", "~ env"):
        fit = fit_reml(specify(ref["formula"], data, sigma=sigma))
        vc = fit.variance_components()
        assert list(vc["var1"].iloc[1:]) == ["env[a]", "env[b]", "env[c]"]
        assert list(vc["grp"].iloc[1:]) == ["Residual"] * 3
        assert _close(vc["vcov"].iloc[0], ref["grp_variance"])
        for level, value in ref["residual_variance"].items():
            assert _close(vc.set_index("var1").loc[f"env[{level}]", "vcov"], value)
        for row in ref["fixed_effects"]:
            assert _close(fit.fixed_effects().loc[row["name"], "estimate"], row["estimate"])
            assert _close(fit.fixed_effects().loc[row["name"], "se"], row["se"])
        # nlme's REML log-likelihood uses the same constant as lme4's
        assert _close(fit.loglik_reml, ref["loglik_reml"], rtol=1e-8)
