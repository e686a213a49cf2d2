"""bl.compare: ranking fits of the same data, refusing fits of different data, naming the
question each criterion answers."""

import warnings

import arviz as az
import numpy as np
import pandas as pd
import pytest
import xarray as xr

import bayeslmm as bl
from bayeslmm.engines.bayes import build
from bayeslmm.engines.bayes.conditional import add_posthoc_draws
from bayeslmm.engines.bayes.sampling import diagnose
from bayeslmm.engines.bayes.strategies import strategy_of
from bayeslmm.errors import DataError, SpecificationError
from bayeslmm.results.bayes_result import BayesFit
from bayeslmm.results.criteria import QUESTIONS


@pytest.fixture(scope="module")
def data(snp_kinship):
    rng = np.random.default_rng(9)
    n = 40
    K = snp_kinship(rng, n, 300)
    g = np.linalg.cholesky(K.matrix + 1e-8 * np.eye(n)) @ rng.normal(size=n)
    x = rng.normal(size=n)
    df = pd.DataFrame(
        {
            "y": 1.0 + x + 1.5 * g + rng.normal(size=n),
            "x": x,
            "id": list(K.ids),
            "pen": [f"p{k % 8}" for k in range(n)],
        }
    )
    return K, df


def _reml(formula, df, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bl.LMM(formula, df, **kw).fit(method="reml")


def _posterior(spec, seed):
    """A spectral fit whose posterior of θ is drawn by hand around the REML estimate."""
    built = build(spec)
    reml = bl.LMM.from_spec(spec).fit(method="reml")
    vg, ve = reml.variance_components()["vcov"].to_numpy()
    rng = np.random.default_rng(seed)
    dims = ("chain", "draw")
    post = xr.Dataset(
        {
            "var_id": (dims, vg * np.exp(rng.normal(0, 0.2, (2, 200)))),
            "var_residual": (dims, ve * np.exp(rng.normal(0, 0.2, (2, 200)))),
        },
        coords={"chain": [0, 1], "draw": np.arange(200)},
    )
    idata = add_posthoc_draws(built, az.InferenceData(posterior=post), seed=seed)
    diag, messages = diagnose(idata)
    return BayesFit(
        idata,
        built,
        timing={},
        diagnostics=diag,
        messages=messages,
        seed=seed,
        breeding_value_sampler=strategy_of(built).breeding_value_sampler(built),
    )


def test_information_criteria_rank_point_fits(data):
    K, df = data
    fits = {
        "kinship": _reml("y ~ x + (1|id)", df, kinship={"id": K}),
        "pen": _reml("y ~ x + (1|pen)", df),
    }
    for criterion in ("aic", "bic", "caic"):
        table = bl.compare(fits, criterion=criterion)
        values = {n: (f.caic().caic if criterion == "caic" else getattr(f, criterion))
                  for n, f in fits.items()}  # fmt: skip
        assert list(table.index) == sorted(values, key=values.get)
        assert table["rank"].tolist() == [0, 1]
        np.testing.assert_allclose(table[criterion], sorted(values.values()))
        assert table[f"d_{criterion}"].iloc[0] == 0.0
        assert table["weight"].sum() == pytest.approx(1.0)
        assert table.attrs["question"] == QUESTIONS[(criterion, None)]
        assert table.attrs["criterion"] == criterion


def test_loo_ranks_posteriors_with_their_kind(data):
    K, df = data
    fits = [
        _posterior(bl.specify("y ~ x + (1|id)", df, kinship={"id": K}), 1),
        _posterior(bl.specify("y ~ x + (1|id)", df, kinship={"id": K.hadamard()}), 2),
    ]
    table = bl.compare(fits)
    assert set(table.index) == {"model1", "model2"}
    assert (table["kind"] == "marginal").all()
    assert table.attrs["kind"] == "marginal"
    assert "integrated out" in table.attrs["question"]
    elpd = {f"model{k + 1}": float(f.loo()["elpd_loo"]) for k, f in enumerate(fits)}
    assert table.index[0] == max(elpd, key=elpd.get)
    assert table["elpd_loo"].iloc[0] == pytest.approx(max(elpd.values()))
    cond = bl.compare({"a": fits[0], "b": fits[1]}, criterion="waic", kind="conditional")
    assert cond.attrs["question"] == QUESTIONS[("waic", "conditional")]


def test_compare_refuses_different_data(data):
    K, df = data
    base = _reml("y ~ x + (1|id)", df, kinship={"id": K})
    shifted = df.assign(y=df["y"] + np.r_[0.0, 0.0, 0.5, np.zeros(len(df) - 3)])
    with pytest.raises(DataError, match=r"response at row 2 \(.* 1 rows differ\)"):
        bl.compare([base, _reml("y ~ x + (1|id)", shifted, kinship={"id": K})], "aic")
    with pytest.raises(DataError, match="40 observations and 'model2' 39"):
        bl.compare([base, _reml("y ~ x + (1|id)", df.iloc[1:], kinship={"id": K})], "aic")
    reordered = df.iloc[::-1].reset_index(drop=True)
    with pytest.raises(DataError, match="different order"):
        bl.compare([base, _reml("y ~ x + (1|id)", reordered, kinship={"id": K})], "aic")
    logged = df.assign(z=df["y"])
    with pytest.raises(DataError, match="models 'y' and 'model2' models 'z'"):
        bl.compare([base, _reml("z ~ x + (1|id)", logged, kinship={"id": K})], "aic")


def test_compare_refuses_criteria_the_fits_cannot_answer(data):
    K, df = data
    a = _reml("y ~ x + (1|id)", df, kinship={"id": K})
    b = _reml("y ~ 1 + (1|id)", df, kinship={"id": K})
    # different fixed effects: ranked by their ML refits (tests/results/test_criteria_ml.py)
    with pytest.warns(UserWarning, match=r"refitting model\(s\) with ML \(instead of REML\)"):
        assert bl.compare([a, b], "aic").attrs["refitted_ml"] == ["model1", "model2"]
    with pytest.raises(SpecificationError, match="needs posterior draws"):
        bl.compare([a, b], "loo")
    with pytest.raises(SpecificationError, match="criterion must be one of"):
        bl.compare([a, b], "dic")
    with pytest.raises(SpecificationError, match="kind= chooses"):
        bl.compare([a, a], "aic", kind="marginal")
    with pytest.raises(SpecificationError, match="two or more fits"):
        bl.compare([a], "aic")
    post = _posterior(bl.specify("y ~ x + (1|id)", df, kinship={"id": K}), 3)
    with pytest.raises(SpecificationError, match="is a posterior"):
        bl.compare({"reml": a, "nuts": post}, "aic")
