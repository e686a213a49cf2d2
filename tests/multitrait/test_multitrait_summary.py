"""summary.json of multi-trait fits, their results folders and ``bayeslmm fit`` with mvbind.

The summary's numbers are checked against the fit's own tables and, where a closed form
exists, against an independent computation from the estimates or the draws (σ = √v and its
delta-method SE se(v) / (2√v), r = Σ_ab / √(Σ_aa Σ_bb), posterior means of the draws).
The key layout is fixed by the self-golden test (tests/results/test_summary_golden.py).
"""

from __future__ import annotations

import json
import math
from statistics import NormalDist

import arviz as az
import numpy as np
import pandas as pd
import pytest

import bayeslmm as bl
from bayeslmm.cli import main
from bayeslmm.errors import SpecificationError
from bayeslmm.io import read_kinship

FORMULA = "mvbind(y1, y2) ~ x + (1 | id)"
Z95 = NormalDist().inv_cdf(0.975)
NUTS = {"draws": 100, "tune": 100, "chains": 2, "cores": 1, "progressbar": False}
TOP_LEVEL = {
    "method", "n_obs", "formula", "family", "link", "strategy", "heritability",
    "variance_components", "fixed_effects", "diagnostics", "timing",
    "traits", "genetic_correlation", "residual_correlation", "genetic_covariance",
    "residual_covariance",
}  # fmt: skip


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, bl.Kinship]:
    """60 individuals, Σ_G = [[1, .5], [.5, 1]], Σ_E = [[1, .2], [.2, 1]], 10% of the trait
    values missing, a GRM of random markers."""
    rng = np.random.default_rng(5)
    n = 60
    ids = [f"i{k}" for k in range(n)]
    W = rng.normal(size=(n, 300))
    W = (W - W.mean(axis=0)) / W.std(axis=0)
    K = W @ W.T / 300 + 1e-3 * np.eye(n)
    s, Q = np.linalg.eigh(K)
    U = Q @ (np.sqrt(np.clip(s, 0, None))[:, None] * rng.normal(size=(n, 2)))
    U = U @ np.linalg.cholesky(np.array([[1.0, 0.5], [0.5, 1.0]])).T
    E = rng.normal(size=(n, 2)) @ np.linalg.cholesky(np.array([[1.0, 0.2], [0.2, 1.0]])).T
    x = rng.normal(size=n)
    Y = U + E + np.array([1.0, 2.0]) + np.outer(x, [0.5, 0.0])
    holes = rng.random(size=(n, 2)) < 0.1
    holes[holes.all(axis=1), 0] = False  # every individual keeps a record
    Y[holes] = np.nan
    frame = pd.DataFrame({"y1": Y[:, 0], "y2": Y[:, 1], "x": x, "id": ids})
    return frame, bl.Kinship(K, ids)


@pytest.fixture(scope="module")
def reml_fit(data):
    df, K = data
    return bl.LMM(FORMULA, df, kinship={"id": K}).fit(method="reml")


@pytest.fixture(scope="module")
def nuts_fit(data):
    df, K = data
    return bl.LMM(FORMULA, df, kinship={"id": K}).fit(seed=2, verbose=False, **NUTS)


def no_nan(summary: dict) -> str:
    """The summary as JSON text; raises if any number is NaN or infinite."""
    return json.dumps(summary, allow_nan=False)


def close(a, b, rel=1e-10) -> bool:
    if a is None or b is None or (isinstance(b, float) and math.isnan(b)):
        return a is None and (b is None or math.isnan(b))
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-14)


# -- REML ------------------------------------------------------------------------------------
def test_reml_summary_numbers_are_the_fit_tables(reml_fit, data):
    s = reml_fit.to_summary()
    no_nan(s)
    assert TOP_LEVEL <= set(s)
    assert s["method"] == "reml" and s["traits"] == ["y1", "y2"]
    assert s["family"] == "gaussian" and s["link"] == "identity"
    df, K = data
    assert s["n_obs"] == len(df)
    assert s["n_records"] == {t: int(df[t].notna().sum()) for t in ("y1", "y2")}
    for trait, row in reml_fit.heritability().iterrows():
        entry = s["heritability"][trait]
        assert close(entry["estimate"], row["estimate"]) and close(entry["se"], row["se"])
        assert close(entry["ci_low"], row["estimate"] - Z95 * row["se"])
        assert entry["ci_prob"] == 0.95
    for table, key in (
        (reml_fit.genetic_correlation(), "genetic_correlation"),
        (reml_fit.residual_correlation(), "residual_correlation"),
    ):
        for (a, b), row in table.iterrows():
            assert close(s[key][f"{a}:{b}"]["estimate"], row["estimate"])
            assert close(s[key][f"{a}:{b}"]["se"], row["se"])
    for key, matrix in (
        ("genetic_covariance", reml_fit.genetic_covariance()),
        ("residual_covariance", reml_fit.residual_covariance()),
    ):
        for a in matrix.index:
            for b in matrix.columns:
                assert close(s[key][a][b]["estimate"], matrix.loc[a, b])
        assert s[key]["y1"]["y2"] == s[key]["y2"]["y1"]
    for (trait, term), row in reml_fit.fixed_effects().iterrows():
        entry = s["fixed_effects"][f"{trait}:{term}"]
        assert close(entry["estimate"], row["estimate"]) and close(entry["se"], row["se"])
        assert close(entry["t"], row["estimate"] / row["se"])
    assert s["kinship"]["id"]["sample_scale"] == pytest.approx(reml_fit.kinship_scale)
    assert s["loglik"]["reml"] == pytest.approx(reml_fit.loglik)
    # t traits, p fixed effects: t p + t (t + 1) parameters
    assert s["n_parameters"] == 2 * 2 + 2 * 3
    assert s["aic"] == pytest.approx(-2 * reml_fit.loglik + 2 * 10)


def test_reml_variance_rows_follow_lme4_and_closed_forms(reml_fit):
    s = reml_fit.to_summary()
    rows = s["variance_components"]
    layout = [(r["grp"], r["var1"], r["var2"]) for r in rows]
    assert layout == [
        ("id", "y1", None), ("id", "y2", None), ("id", "y1", "y2"),
        ("Residual", "y1", None), ("Residual", "y2", None), ("Residual", "y1", "y2"),
    ]  # fmt: skip
    se = reml_fit.covariance_table()["se"]  # index (matrix, trait1, trait2), lower triangle
    for row in rows:
        matrix = "genetic" if row["grp"] == "id" else "residual"
        S = reml_fit.genetic if matrix == "genetic" else reml_fit.residual
        a = reml_fit.traits.index(row["var1"])
        b = a if row["var2"] is None else reml_fit.traits.index(row["var2"])
        assert close(row["vcov"], S[a, b])
        lower = (reml_fit.traits[max(a, b)], reml_fit.traits[min(a, b)])
        assert close(row["se"], se.loc[(matrix, *lower)])
        assert close(row["ci_high"], S[a, b] + Z95 * row["se"])
        if row["var2"] is None:
            assert close(row["sdcor"], math.sqrt(S[a, a]))
            # delta method for σ = √v: se(σ) = se(v) / (2 √v) (central differences: 1e-5)
            assert row["se_sdcor"] == pytest.approx(row["se"] / (2 * math.sqrt(S[a, a])), rel=1e-5)
        else:
            assert close(row["sdcor"], S[a, b] / math.sqrt(S[a, a] * S[b, b]))


def test_reml_nan_is_null_never_nan():
    """A boundary fit has correlations at ±1 without an SE: NaN in the table, null here."""
    rng = np.random.default_rng(0)
    n = 50
    ids = [f"i{k}" for k in range(n)]
    W = rng.normal(size=(n, 200))
    K = bl.Kinship(W @ W.T / 200 + 1e-3 * np.eye(n), ids)
    y1 = rng.normal(size=n)
    df = pd.DataFrame({"y1": y1, "y2": 2 * y1 + 1, "id": ids})  # residual correlation 1
    fit = bl.LMM("mvbind(y1, y2) ~ 1 + (1 | id)", df, kinship={"id": K}).fit(method="reml")
    s = fit.to_summary()
    no_nan(s)
    table = fit.residual_correlation()
    nan_se = [f"{a}:{b}" for (a, b), row in table.iterrows() if math.isnan(row["se"])]
    assert nan_se, "the case must produce a NaN to be written as null"
    for pair in nan_se:
        assert s["residual_correlation"][pair]["se"] is None


def test_reml_save_then_read_back(reml_fit, tmp_path):
    out = tmp_path / "results"
    paths = reml_fit.save(out)
    assert sorted(p.name for p in out.iterdir()) == ["inputs", "summary.json"]
    assert paths == {"summary": out / "summary.json", "inputs": out / "inputs"}
    written = json.loads((out / "summary.json").read_text())
    stored = written.pop("inputs")  # the one key save adds to to_summary()
    assert written == json.loads(no_nan(reml_fit.to_summary()))
    assert stored["kinship"] == {"id": "inputs/kinship_id.npz"}
    assert reml_fit.save(tmp_path / "bare", inputs=False) == {
        "summary": tmp_path / "bare" / "summary.json"
    }
    assert "inputs" not in json.loads((tmp_path / "bare" / "summary.json").read_text())


# -- NUTS ------------------------------------------------------------------------------------
def test_nuts_summary_numbers_are_the_fit_tables_and_the_draws(nuts_fit, data):
    s = nuts_fit.summary()
    no_nan(s)
    assert TOP_LEVEL <= set(s) and s["method"] == "nuts"
    assert s["n_obs"] == len(data[0]) and s["sampler"] == "nutpie" and s["seed"] == 2
    post = nuts_fit.posterior
    columns = ["mean", "sd", "hdi_low", "hdi_high", "ess_bulk", "ess_tail", "r_hat"]
    for trait, row in nuts_fit.heritability().iterrows():
        entry = s["heritability"][trait]
        assert all(close(entry[c], row[c]) for c in columns)
        assert entry["estimate"] == entry["mean"] and entry["ci_low"] == entry["hdi_low"]
    for (a, b), row in nuts_fit.genetic_correlation().iterrows():
        assert all(close(s["genetic_correlation"][f"{a}:{b}"][c], row[c]) for c in columns)
    for (a, b), row in nuts_fit.residual_correlation().iterrows():
        assert all(close(s["residual_correlation"][f"{a}:{b}"][c], row[c]) for c in columns)
    for (trait, term), row in nuts_fit.fixed_effects().iterrows():
        entry = s["fixed_effects"][f"{trait}:{term}"]
        assert all(close(entry[c], row[c]) for c in columns)
    G = nuts_fit.genetic_covariance()
    for a in G.index:
        for b in G.columns:
            assert close(s["genetic_covariance"][a][b]["mean"], G.loc[a, b])
    # variance rows: posterior means of the covariance draws, of √variance and of r
    draws = post["residual_covariance"].values
    rows = {(r["grp"], r["var1"], r["var2"]): r for r in s["variance_components"]}
    row = rows[("Residual", "y2", None)]
    assert close(row["vcov"], draws[:, :, 1, 1].mean())
    assert close(row["sdcor"], np.sqrt(draws[:, :, 1, 1]).mean(), rel=1e-8)
    assert close(row["se"], draws[:, :, 1, 1].std(ddof=1))
    row = rows[("Residual", "y1", "y2")]
    r = draws[:, :, 0, 1] / np.sqrt(draws[:, :, 0, 0] * draws[:, :, 1, 1])
    assert close(row["sdcor"], r.mean(), rel=1e-8)
    d = s["diagnostics"]
    assert d["divergences"] == nuts_fit.divergences and (d["chains"], d["draws"]) == (2, 100)
    r_hats = [e["r_hat"] for e in s["heritability"].values()]
    assert d["max_r_hat"] >= max(r_hats)


def test_nuts_save_writes_summary_draws_and_plot(nuts_fit, reml_fit, tmp_path):
    out = tmp_path / "results"
    paths = nuts_fit.save(out)
    assert sorted(p.name for p in out.iterdir()) == [
        "inputs", "posterior.nc", "rg_posterior.png", "summary.json",
    ]  # fmt: skip
    assert set(paths) == {"summary", "posterior", "plot", "inputs"}
    written = json.loads((out / "summary.json").read_text())
    written.pop("inputs")
    assert written == json.loads(no_nan(nuts_fit.summary()))
    back = az.from_netcdf(out / "posterior.nc")
    np.testing.assert_array_equal(
        back.posterior["genetic_correlation"].values,
        nuts_fit.posterior["genetic_correlation"].values,
    )
    assert (out / "rg_posterior.png").read_bytes()[:4] == b"\x89PNG"
    # a REML run into the same folder leaves no stale draws or plot of the NUTS run
    reml_fit.save(out)
    assert sorted(p.name for p in out.iterdir()) == ["inputs", "summary.json"]


def test_multitrait_glmm_summary(data):
    df, K = data
    df = df.assign(b=(df["y1"] > df["y1"].median()).astype(float))
    fit = bl.LMM(
        "mvbind(b, y2) ~ x + (1 | id)", df, kinship={"id": K}, family={"b": "bernoulli"}
    ).fit(seed=3, verbose=False, **NUTS)
    s = fit.summary()
    no_nan(s)
    assert s["family"] == "mixed" and s["link"] == "mixed"
    assert s["families"] == {
        "b": {"family": "bernoulli", "link": "logit"},
        "y2": {"family": "gaussian", "link": "identity"},
    }
    # a logit trait's residual is not a parameter: no entry, no row, no correlation
    assert s["residual_covariance"]["b"] == {"b": None, "y2": None}
    assert s["residual_covariance"]["y2"]["b"] is None
    assert s["residual_correlation"] == {}
    residual_rows = [r for r in s["variance_components"] if r["grp"] == "Residual"]
    assert [(r["var1"], r["var2"]) for r in residual_rows] == [("y2", None)]
    latent = fit.heritability(scale="latent")
    link = fit.heritability(scale="link")
    for trait in ("b", "y2"):
        assert close(s["heritability"][trait]["mean"], link.loc[trait, "mean"])
        assert close(s["heritability_latent"][trait]["mean"], latent.loc[trait, "mean"])
    assert s["residual_block"] == list(fit.residual_block)


# -- the command line ------------------------------------------------------------------------
def test_cli_reml_writes_the_folder_with_the_api_numbers(data, tmp_path, capsys):
    df, K = data
    df.to_csv(tmp_path / "pheno.csv", index=False)
    pd.DataFrame(K.matrix, index=K.ids, columns=K.ids).to_csv(tmp_path / "kin.csv")
    argv = [
        "fit", str(tmp_path / "pheno.csv"), "--formula", "mvbind(y1, y2) ~ x + (1|id)",
        "--kinship", f"id={tmp_path / 'kin.csv'}", "--method", "reml",
        "--out", str(tmp_path / "out"),
    ]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "r_g y1:y2" in printed and "wrote" in printed
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["inputs", "summary.json"]
    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    api = bl.LMM(
        "mvbind(y1, y2) ~ x + (1|id)",
        pd.read_csv(tmp_path / "pheno.csv"),
        kinship={"id": read_kinship(str(tmp_path / "kin.csv"), name="id")},
    ).fit(method="reml")
    for (a, b), row in api.genetic_correlation().iterrows():
        assert written["genetic_correlation"][f"{a}:{b}"]["estimate"] == pytest.approx(
            row["estimate"], rel=1e-8
        )
    for trait, row in api.heritability().iterrows():
        assert written["heritability"][trait]["estimate"] == pytest.approx(row["estimate"])
        assert written["heritability"][trait]["se"] == pytest.approx(row["se"], rel=1e-6)
    for (trait, term), row in api.fixed_effects().iterrows():
        entry = written["fixed_effects"][f"{trait}:{term}"]
        assert entry["estimate"] == pytest.approx(row["estimate"], rel=1e-8)
    assert written["genetic_covariance"]["y1"]["y2"]["estimate"] == pytest.approx(
        api.genetic_covariance().loc["y1", "y2"], rel=1e-8
    )
    # the folder reads back without the CSV files: the fit's inputs are stored in it
    back = bl.load_fit(tmp_path / "out")
    pd.testing.assert_frame_equal(back.genetic_correlation(), api.genetic_correlation(), rtol=1e-8)


@pytest.mark.parametrize(
    ("options", "phrase"),
    [
        (["--method", "laplace"], "is fitted with --method reml"),
        (["--trials", "x"], "--trials does not apply"),
        (["--loo"], "--loo does not apply"),
        (["--strategy", "latent"], "chooses its route from the kinship"),
    ],
)
def test_cli_refuses_single_trait_options(options, phrase, tmp_path, capsys):
    argv = [
        "fit", "nothing-read.csv", "--formula", "mvbind(y1, y2) ~ x + (1|id)",
        "--kinship", "id=k.csv", *options, "--out", str(tmp_path / "out"),
    ]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert phrase in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_multitrait_formula_detection_needs_no_files():
    from bayeslmm.commands.fit import is_multitrait, multitrait_column_roles

    assert is_multitrait("cbind(a, b) ~ 1 + (1 | id)", "gaussian")
    assert not is_multitrait("cbind(s, f) ~ 1 + (1 | id)", "binomial")
    roles = multitrait_column_roles("mvbind(a, b) ~ x + C(site) + (1 | id)")
    assert roles["numeric_columns"] == {"a", "b"}
    assert roles["factor_columns"] == {"site"} and roles["checked_columns"] == {"x"}
    with pytest.raises(SpecificationError):
        bl.LMM("mvbind(a, b) ~ 1 + (1 | id)", pd.DataFrame({"a": [1.0]}), sigma="~ x")


def test_families_come_from_the_specification_not_the_display_labels():
    """A Poisson trait without overdispersion is labelled 'poisson(log, no overdispersion)'
    for display; summary.json's families still read family 'poisson', link 'log'."""
    from types import SimpleNamespace

    from bayeslmm.results.multitrait_summary import _families

    spec = SimpleNamespace(families=(bl.Poisson(overdispersion=False), bl.families.Gaussian()))
    fit = SimpleNamespace(
        traits=("c", "w"), spec=spec, families=("poisson(log, no overdispersion)", "gaussian")
    )
    assert _families(fit) == {
        "c": {"family": "poisson", "link": "log"},
        "w": {"family": "gaussian", "link": "identity"},
    }
    gaussian = SimpleNamespace(traits=("a", "b"), spec=SimpleNamespace())
    assert _families(gaussian)["b"] == {"family": "gaussian", "link": "identity"}
