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
    (tmp_path / "out" / "posterior.nc").unlink()
    with pytest.raises(DataError, match="holds a NUTS summary.json but no posterior.nc"):
        bl.load_fit(tmp_path / "out", df, kinship={"id": K})


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


# -- the inputs stored with a fit: load_fit(dir) without data --------------------------------
def _awkward(df: pd.DataFrame) -> pd.DataFrame:
    """The data with columns whose types must survive the round trip: a categorical whose
    level order is not alphabetical (it sets the reference level), integers, and floats
    that a short decimal would not reproduce."""
    rng = np.random.default_rng(11)
    n = df.shape[0]
    return df.assign(
        sex=pd.Categorical(rng.choice(["M", "F"], n), categories=["M", "F"]),
        age=rng.integers(20, 60, n),
        x=df["x"] + 0.1 + 0.2,
        unused=["not in the model"] * n,
    )


def _same_tables(back, fit) -> None:
    for table in ("heritability", "variance_components", "fixed_effects"):
        pd.testing.assert_frame_equal(getattr(back, table)(), getattr(fit, table)())


def test_nuts_fit_read_back_without_data(data, tmp_path):
    K, df = data
    df = _awkward(df)
    fit = _posterior_fit(bl.specify("y ~ x + sex + age + (1|id)", df, kinship={"id": K}))
    paths = fit.save(tmp_path / "out", plot=False)
    assert paths["inputs"] == tmp_path / "out" / "inputs"
    back = bl.load_fit(tmp_path / "out")
    # the model's columns, every row, bit for bit and with their dtypes; nothing else
    used = ["y", "x", "id", "sex", "age"]
    pd.testing.assert_frame_equal(back.spec.data, fit.spec.data[used])
    np.testing.assert_array_equal(back.spec.terms[0].kinship.matrix, K.matrix)
    _same_tables(back, fit)
    assert float(back.loo()["elpd_loo"]) == pytest.approx(float(fit.loo()["elpd_loo"]), rel=1e-12)
    pd.testing.assert_frame_equal(back.predict(), fit.predict())


def test_reml_and_ml_fits_read_back_without_data(data, tmp_path):
    K, df = data
    df = _awkward(df)
    model = bl.LMM("y ~ x + sex + (1|id)", df, kinship={"id": K})
    for method in ("reml", "ml"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = model.fit(method=method)
        fit.save(tmp_path / method)
        back = bl.load_fit(tmp_path / method)
        assert back.criterion == method
        _same_tables(back, fit)
        assert back.aic == fit.aic and back.bic == fit.bic
        pd.testing.assert_frame_equal(back.predict(), fit.predict())
        if method == "reml":
            assert back.caic().caic == pytest.approx(fit.caic().caic, rel=1e-12)
    # the data given explicitly are still checked against the saved fit
    with pytest.raises(DataError, match="does not reproduce the saved estimates"):
        bl.load_fit(tmp_path / "reml", df.assign(y=df["y"] * 1.1), kinship={"id": K})


def test_laplace_fit_read_back_without_data(data, tmp_path):
    """A binomial GLMM: its trials column is recorded with the inputs."""
    K, df = data
    rng = np.random.default_rng(5)
    n = df.shape[0]
    trials = rng.integers(3, 9, n)
    eta = -0.3 + 0.5 * df["x"].to_numpy()
    df = df.assign(k=rng.binomial(trials, 1 / (1 + np.exp(-eta))), n=trials)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = bl.LMM("k ~ x + (1|id)", df, kinship={"id": K}, family="binomial", trials="n").fit(
            method="laplace"
        )
    fit.save(tmp_path / "glmm")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = bl.load_fit(tmp_path / "glmm")
    np.testing.assert_array_equal(back.spec.trials, trials)
    _same_tables(back, fit)
    assert back.aic == pytest.approx(fit.aic, rel=1e-12)
    pd.testing.assert_frame_equal(back.predict(), fit.predict())


def test_load_fit_without_stored_inputs_asks_for_the_data(data, tmp_path):
    import shutil

    K, df = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = bl.LMM("y ~ x + (1|id)", df, kinship={"id": K}).fit(method="reml")
    fit.save(tmp_path / "plain", inputs=False)
    assert sorted(p.name for p in (tmp_path / "plain").iterdir()) == ["summary.json"]
    with pytest.raises(DataError, match=r"holds no stored inputs.*pass the data"):
        bl.load_fit(tmp_path / "plain")
    fit.save(tmp_path / "removed")
    shutil.rmtree(tmp_path / "removed" / "inputs")
    with pytest.raises(DataError, match=r"inputs/data.csv' is missing; pass the data"):
        bl.load_fit(tmp_path / "removed")
    # with the data given, the missing inputs are not needed
    back = bl.load_fit(tmp_path / "removed", df, kinship={"id": K})
    _same_tables(back, fit)


def test_command_line_output_reads_back_without_data(tiny_files, tmp_path, capsys):
    from bayeslmm.cli import main

    out = tmp_path / "cli"
    rc = main(
        [
            "fit", str(tiny_files / "data.csv"), "--formula", "y ~ x + (1|id)",
            "--kinship", f"id={tiny_files / 'kin.csv'}", "--method", "reml", "--out", str(out),
        ]
    )  # fmt: skip
    assert rc == 0
    back = bl.load_fit(out)
    df = pd.read_csv(tiny_files / "data.csv")
    np.testing.assert_array_equal(back.spec.y, df["y"].to_numpy(dtype=float))
    summary = back.to_summary()
    saved = pd.read_json(out / "summary.json", typ="series")
    assert saved["variance_components"][0]["vcov"] == pytest.approx(
        summary["variance_components"][0]["vcov"], rel=1e-10
    )
