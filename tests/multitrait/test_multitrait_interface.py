"""mvbind/cbind dispatch, input errors and a short NUTS fit of a multi-trait model."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import bayeslmm as bl
from bayeslmm.multitrait_model import MultiTraitLMM
from bayeslmm.multitrait_spec import MultiTraitWarning, is_multitrait

G_TRUE = np.array([[1.0, 0.6], [0.6, 1.5]])
E_TRUE = np.array([[1.0, -0.3], [-0.3, 0.8]])


def test_dispatch_by_response(multitrait_data) -> None:
    df, K = multitrait_data(np.random.default_rng(1), 30, G_TRUE, E_TRUE)
    for lhs in ("mvbind(y1, y2)", "cbind(y1, y2)"):
        model = bl.LMM(f"{lhs} ~ x + (1 | id)", df, kinship={"id": K})
        assert isinstance(model, MultiTraitLMM)
        assert model.spec.traits == ("y1", "y2")
    assert isinstance(bl.LMM("y1 ~ x + (1 | id)", df, kinship={"id": K}), bl.LMM)
    assert not is_multitrait("cbind(s, f) ~ 1", family="binomial")
    assert not is_multitrait("cbind(s, n - s) ~ 1")
    # binomial cbind keeps meaning successes/failures
    df["s"] = np.arange(30) % 4
    df["f"] = 3 - df["s"]
    binom = bl.LMM("cbind(s, f) ~ 1 + (1 | id)", df, kinship={"id": K}, family="binomial")
    assert isinstance(binom, bl.LMM) and binom.spec.trials is not None


def test_gaussian_cbind_of_counts_warns(multitrait_data) -> None:
    df, K = multitrait_data(np.random.default_rng(2), 30, G_TRUE, E_TRUE)
    df["s"] = np.arange(30) % 4
    df["f"] = (np.arange(30) * 7) % 5
    with pytest.warns(MultiTraitWarning, match="family='binomial'"):
        bl.LMM("cbind(s, f) ~ 1 + (1 | id)", df, kinship={"id": K})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bl.LMM("cbind(y1, y2) ~ 1 + (1 | id)", df, kinship={"id": K})


def test_bad_input_gives_clear_errors(multitrait_data) -> None:
    df, K = multitrait_data(np.random.default_rng(3), 30, G_TRUE, E_TRUE)
    kin = {"id": K}
    f = "mvbind(y1, y2) ~ x + (1 | id)"
    bad = df.copy()
    bad["y2"] = np.nan
    with pytest.raises(bl.DataError, match="'y2' is missing .* for every individual"):
        bl.LMM(f, bad, kinship=kin)
    bad = df.copy().astype({"y2": object})
    bad.loc[3, "y2"] = "tall"
    with pytest.raises(bl.DataError, match="'y2' must be numeric"):
        bl.LMM(f, bad, kinship=kin)
    with pytest.raises(bl.DataError, match="several rows"):
        bl.LMM(f, df.iloc[[0, 0, 1, 2, 3, 4, 5, 6]], kinship=kin)
    with pytest.raises(bl.SpecificationError, match="needs the relationship matrix"):
        bl.LMM(f, df)
    with pytest.raises(bl.SpecificationError, match="exactly one random term"):
        bl.LMM("mvbind(y1, y2) ~ x + (1 + x | id)", df, kinship=kin)
    with pytest.raises(bl.SpecificationError, match="at least two"):
        bl.LMM("mvbind(y1) ~ x + (1 | id)", df, kinship=kin)
    # one non-Gaussian family applies to every trait (a multi-trait GLMM): continuous
    # traits are then not counts
    with pytest.raises(bl.DataError, match="'y1' \\(poisson\\).*non-negative integers"):
        bl.LMM(f, df, kinship=kin, family="poisson")
    with pytest.raises(bl.SpecificationError, match="not available"):
        bl.LMM(f, df, kinship=kin, sigma="~ x")
    with pytest.raises(bl.SpecificationError, match="not a column"):
        bl.LMM("mvbind(y1, y9) ~ x + (1 | id)", df, kinship=kin)
    many = df.copy()
    for a in range(3, 7):
        many[f"y{a}"] = np.random.default_rng(a).normal(size=30)
    with pytest.warns(MultiTraitWarning, match="6 traits"):
        bl.LMM("mvbind(y1, y2, y3, y4, y5, y6) ~ 1 + (1 | id)", many, kinship=kin)
    # the NUTS arguments are checked as the single-trait fit's, before anything is built
    model = bl.LMM(f, df, kinship=kin)
    for given, words in [
        ({"draws": 0}, "draws must be a positive integer; got 0. Use e.g. draws=1000"),
        ({"chains": 2.5}, "chains must be a whole number"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"target_accept": 1.5}, "target_accept must lie strictly between 0 and 1"),
        ({"tune": None}, "takes tune and target_accept as numbers"),
        ({"target_accept": None}, "takes tune and target_accept as numbers"),
    ]:
        with pytest.raises(bl.SpecificationError, match=words):
            model.fit(**given)


def test_all_missing_individuals_are_dropped(multitrait_data) -> None:
    df, K = multitrait_data(np.random.default_rng(4), 30, G_TRUE, E_TRUE)
    df.loc[[2, 5], ["y1", "y2"]] = np.nan
    spec = bl.LMM("mvbind(y1, y2) ~ x + (1 | id)", df, kinship={"id": K}).spec
    assert spec.n == 28 and set(spec.dropped) == {"i2", "i5"}
    assert spec.kinship.n == 28


def test_nuts_fit_tables(multitrait_data) -> None:
    df, K = multitrait_data(np.random.default_rng(10), 60, G_TRUE, E_TRUE, missing=0.1)
    fit = bl.LMM("cbind(y1, y2) ~ x + (1 | id)", df, kinship={"id": K}).fit(
        draws=60, tune=60, chains=1, seed=1, progressbar=False, verbose=False
    )
    draws = fit.genetic_covariance(draws=True).values
    assert draws.shape == (1, 60, 2, 2)
    np.testing.assert_allclose(fit.genetic_covariance().to_numpy(), draws.mean(axis=(0, 1)))
    np.testing.assert_allclose(draws, np.swapaxes(draws, 2, 3))
    rg = fit.posterior["genetic_correlation"].values[..., 0, 1]
    assert fit.genetic_correlation()["mean"].iloc[0] == pytest.approx(rg.mean())
    expected = draws[..., 0, 1] / np.sqrt(draws[..., 0, 0] * draws[..., 1, 1])
    np.testing.assert_allclose(rg, expected, rtol=1e-12)
    assert fit.posterior["missing_values"].shape[-1] == int(df[["y1", "y2"]].isna().sum().sum())


@pytest.mark.slow
def test_short_nuts_fit_recovers_the_covariances(multitrait_data) -> None:
    df, K = multitrait_data(np.random.default_rng(9), 400, G_TRUE, E_TRUE, missing=0.05)
    model = bl.LMM("mvbind(y1, y2) ~ x + (1 | id)", df, kinship={"id": K})
    fit = model.fit(draws=300, tune=300, chains=2, cores=1, seed=2, progressbar=False)
    G = fit.genetic_covariance().to_numpy()
    E = fit.residual_covariance().to_numpy()
    assert np.max(np.abs(G - G_TRUE)) < 0.6 and np.max(np.abs(E - E_TRUE)) < 0.5
    rg = fit.genetic_correlation()
    assert list(rg.columns[:4]) == ["mean", "sd", "hdi_low", "hdi_high"]
    # the interval holds the REML estimate (n = 400, weak priors; the simulated value lies
    # outside a 95 % interval in one data set of twenty)
    reml = model.fit(method="reml")
    r_reml = reml.genetic[0, 1] / np.sqrt(reml.genetic[0, 0] * reml.genetic[1, 1])
    assert rg["hdi_low"].iloc[0] < r_reml < rg["hdi_high"].iloc[0]
    draws = fit.genetic_covariance(draws=True)
    assert draws.dims == ("chain", "draw", "trait", "trait_")
    assert list(fit.heritability().index) == ["y1", "y2"]
    # posterior means near the REML estimates
    assert np.max(np.abs(G - reml.genetic)) < 0.25
    assert fit.fixed_effects().loc[("y1", "x"), "mean"] == pytest.approx(0.5, abs=0.25)
    assert "missing_values" in fit.posterior


def test_command_line_fits_multitrait_formulas(multitrait_data, tmp_path, capsys) -> None:
    """``bayeslmm fit`` with mvbind writes the multi-trait folder (numbers checked against the
    Python API in test_multitrait_summary.py)."""
    from bayeslmm.cli import main

    df, K = multitrait_data(np.random.default_rng(12), 60, G_TRUE, E_TRUE)
    df.to_csv(tmp_path / "d.csv", index=False)
    K.to_dataframe().to_csv(tmp_path / "K.csv")
    rc = main(["fit", str(tmp_path / "d.csv"), "--formula", "mvbind(y1, y2) ~ 1 + (1|id)",
               "--kinship", f"id={tmp_path / 'K.csv'}", "--method", "reml",
               "--out", str(tmp_path / "out")])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["traits"] == ["y1", "y2"] and summary["method"] == "reml"
    assert "r_g y1:y2" in capsys.readouterr().out
