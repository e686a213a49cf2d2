"""bl.load_fit: a saved fit read back answers like the fit that was saved."""

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
from bayeslmm.errors import DataError
from bayeslmm.results.bayes_result import BayesFit
from bayeslmm.results.summary import write_summary


@pytest.fixture(scope="module")
def data(random_kinship):
    rng = np.random.default_rng(4)
    n = 30
    K = random_kinship(rng, n, 80)
    g = np.linalg.cholesky(K.matrix + 1e-9 * np.eye(n)) @ rng.normal(size=n)
    x = rng.normal(size=n)
    df = pd.DataFrame({"y": 1 + x + 1.5 * g + rng.normal(size=n), "x": x, "id": list(K.ids)})
    return K, df


def _posterior_fit(spec):
    built = build(spec)
    rng = np.random.default_rng(2)
    dims = ("chain", "draw")
    post = xr.Dataset(
        {
            "var_id": (dims, np.exp(rng.normal(0, 0.3, (2, 100)))),
            "var_residual": (dims, np.exp(rng.normal(0, 0.3, (2, 100)))),
        },
        coords={"chain": [0, 1], "draw": np.arange(100)},
    )
    idata = add_posthoc_draws(built, az.InferenceData(posterior=post), seed=2)
    idata.add_groups(observed_data=xr.Dataset({"y": ("obs", np.asarray(spec.y))}))
    diag, messages = diagnose(idata)
    return BayesFit(
        idata, built, timing={"total_s": 1.0}, diagnostics=diag, messages=messages, seed=2,
        sampler="nutpie",
        breeding_value_sampler=strategy_of(built).breeding_value_sampler(built),
    )  # fmt: skip


def test_nuts_fit_read_back_answers_the_same(data, tmp_path):
    K, df = data
    fit = _posterior_fit(bl.specify("y ~ x + (1|id)", df, kinship={"id": K}))
    fit.save(tmp_path / "out", plot=False)
    back = bl.load_fit(tmp_path / "out", df, kinship={"id": K})
    assert back.strategy == "spectral" and back.seed == 2 and back.sampler == "nutpie"
    pd.testing.assert_frame_equal(back.heritability(), fit.heritability())
    assert float(back.loo()["elpd_loo"]) == pytest.approx(float(fit.loo()["elpd_loo"]), rel=1e-12)
    np.testing.assert_allclose(back.predict()["estimate"], fit.predict()["estimate"], atol=1e-12)
    with pytest.raises(DataError, match="differ from the data of the saved fit"):
        bl.load_fit(tmp_path / "out", df.assign(y=df["y"][::-1].to_numpy()), kinship={"id": K})


def test_point_fit_is_refitted_and_checked(data, tmp_path):
    K, df = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = bl.LMM("y ~ x + (1|id)", df, kinship={"id": K}).fit(method="reml")
    write_summary(fit.to_summary(), tmp_path / "reml" / "summary.json")
    back = bl.load_fit(tmp_path / "reml", df, kinship={"id": K})
    assert back.caic().caic == pytest.approx(fit.caic().caic, rel=1e-10)
    with pytest.raises(DataError, match="does not reproduce the saved estimates"):
        bl.load_fit(tmp_path / "reml", df.assign(y=df["y"] * 1.1), kinship={"id": K})
    with pytest.raises(DataError, match="30 observations and the data given 29"):
        bl.load_fit(tmp_path / "reml", df.iloc[1:], kinship={"id": K})
    with pytest.raises(DataError, match="summary.json is missing"):
        bl.load_fit(tmp_path / "nothing", df, kinship={"id": K})
