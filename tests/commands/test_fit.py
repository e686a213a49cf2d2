"""Tests of ``bayeslmm fit`` and ``bayeslmm demo`` (command line, end to end).

``tiny_files`` (data.csv and kin.csv of 40 individuals) comes from tests/conftest.py.
"""

import json

import numpy as np
import pandas as pd
import pytest

from bayeslmm.cli import main


def test_fit_command_writes_contract(tiny_files, capsys):
    out = tiny_files / "out"
    rc = main(
        [
            "fit", str(tiny_files / "data.csv"), "--formula", "y ~ x + (1|id)",
            "--kinship", f"id={tiny_files / 'kin.csv'}", "--draws", "200", "--tune", "200",
            "--chains", "2", "--cores", "1", "--seed", "4", "--sampler", "pymc",
            "--out", str(out),
        ]
    )  # fmt: skip
    assert rc == 0
    text = capsys.readouterr().out
    assert "h2: posterior mean" in text and "95% HDI" in text
    assert "seed 4 (--seed 4 repeats this run)" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "nuts" and summary["n_obs"] == 40
    assert summary["strategy"] == "spectral"
    # the residual's share always; h2_gcta where K's scale makes GCTA's convention differ
    assert {"id", "h2", "residual"} <= set(summary["heritability"]) <= {
        "id", "h2", "residual", "h2_gcta",
    }  # fmt: skip
    assert set(summary["fixed_effects"]) == {"Intercept", "x"}
    assert summary["variance_components"][-1]["grp"] == "Residual"
    assert (out / "posterior.nc").stat().st_size > 0
    assert (out / "h2_posterior.png").read_bytes()[:4] == b"\x89PNG"
    import arviz as az

    idata = az.from_netcdf(out / "posterior.nc")
    assert float(idata.posterior["h2"].mean()) == pytest.approx(
        summary["heritability"]["h2"]["mean"]
    )


def test_fit_command_reports_input_errors(tiny_files, capsys):
    rc = main(
        [
            "fit", str(tiny_files / "data.csv"), "--formula", "y ~ x + (1|id)",
            "--kinship", "id", "--out", str(tiny_files / "o"),
        ]
    )  # fmt: skip
    assert rc == 2
    assert "GROUP=PATH" in capsys.readouterr().err
    rc = main(
        [
            "fit", str(tiny_files / "data.csv"), "--formula", "y ~ z + (1|id)",
            "--out", str(tiny_files / "o"),
        ]
    )  # fmt: skip
    assert rc == 2
    assert "Available columns" in capsys.readouterr().err


def test_fit_command_reml(tiny_files, capsys):
    out = tiny_files / "reml"
    rc = main(
        [
            "fit", str(tiny_files / "data.csv"), "--formula", "y ~ x + (1|id)",
            "--kinship", f"id={tiny_files / 'kin.csv'}", "--method", "reml", "--out", str(out),
        ]
    )  # fmt: skip
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "reml" and "h2" in summary["heritability"]


def test_demo_quick(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(
        [
            "demo", "--draws", "150", "--tune", "150", "--sampler", "pymc",
            "--prior", "h2=beta(2, 2)", "--out", str(out),
        ]
    )  # fmt: skip
    assert rc == 0
    text = capsys.readouterr().out
    assert "250 mice" in text and "h2: posterior mean" in text and "(REML" in text
    summary = json.loads((out / "summary.json").read_text())
    assert 0.1 < summary["heritability"]["h2"]["mean"] < 0.9
    assert summary["priors"]["h2"] == "Beta(2, 2)"
    assert (out / "h2_posterior.png").exists()


@pytest.mark.slow
def test_demo_default_settings_under_a_minute(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out)])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["timing"]["total_s"] < 60
    assert summary["diagnostics"]["max_r_hat"] < 1.01


def test_parse_prior_args():
    from bayeslmm.commands.fit import parse_prior_args
    from bayeslmm.errors import SpecificationError

    assert parse_prior_args(["sd_id = halfnormal(10)", "shares=dirichlet([1, 1, 2])"]) == {
        "sd_id": ("halfnormal", 10.0),
        "shares": ("dirichlet", [1.0, 1.0, 2.0]),
    }
    with pytest.raises(SpecificationError, match="KEY=FAMILY"):
        parse_prior_args(["h2:beta"])
    with pytest.raises(SpecificationError, match="numbers"):
        parse_prior_args(["h2=beta(a, 2)"])


@pytest.fixture
def binary_files(tiny_files):
    """The same kinship with a binary trait (liability threshold model, ~30% cases)."""
    data = pd.read_csv(tiny_files / "data.csv")
    data["case"] = (data["y"] > data["y"].quantile(0.7)).astype(int)
    data.to_csv(tiny_files / "binary.csv", index=False)
    return tiny_files


def test_fit_command_laplace_glmm_with_prevalence(binary_files):
    out = binary_files / "out_laplace"
    rc = main(
        [
            "fit", str(binary_files / "binary.csv"), "--formula", "case ~ 1 + (1|id)",
            "--kinship", f"id={binary_files / 'kin.csv'}", "--family", "bernoulli",
            "--link", "probit", "--method", "laplace", "--prevalence", "0.1",
            "--out", str(out),
        ]
    )  # fmt: skip
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "laplace" and summary["family"] == "bernoulli"
    assert summary["link"] == "probit" and "bayeslmm_version" in summary
    h = summary["heritability"]
    assert {"h2_latent", "h2_link", "h2_observed", "h2_liability", "h2"} <= set(h)
    # Latent scale has no residual for a Bernoulli model without other effects (QGglmm), the
    # link scale adds the probit's unit variance, and the observed scale shrinks further.
    assert h["h2_latent"]["estimate"] == pytest.approx(1.0)
    assert 0 < h["h2_observed"]["estimate"] < h["h2_link"]["estimate"] < 1
    assert h["h2"] == h["h2_link"]


def test_fit_command_nuts_glmm_writes_scales(binary_files):
    out = binary_files / "out_nuts"
    rc = main(
        [
            "fit", str(binary_files / "binary.csv"), "--formula", "case ~ 1 + (1|id)",
            "--kinship", f"id={binary_files / 'kin.csv'}", "--family", "bernoulli",
            "--prevalence", "0.1", "--draws", "100", "--tune", "100", "--chains", "1",
            "--cores", "1", "--seed", "2", "--sampler", "pymc", "--out", str(out),
        ]
    )  # fmt: skip
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    h = summary["heritability"]
    assert {"h2_latent", "h2_link", "h2_observed", "h2_liability"} <= set(h)
    assert 0 <= h["h2_observed"]["mean"] <= h["h2_latent"]["mean"] <= 1


def test_reml_method_rejects_glmm_with_advice(binary_files, capsys):
    rc = main(
        [
            "fit", str(binary_files / "binary.csv"), "--formula", "case ~ 1 + (1|id)",
            "--kinship", f"id={binary_files / 'kin.csv'}",
            "--family", "bernoulli", "--method", "reml", "--out",
            str(binary_files / "x"),
        ]
    )  # fmt: skip
    assert rc == 2
    assert "method='laplace'" in capsys.readouterr().err


def test_poisson_no_overdispersion_flag(tiny_files):
    data = pd.read_csv(tiny_files / "data.csv")
    data["n"] = np.random.default_rng(5).poisson(np.exp(1 + 0.3 * data["x"]))
    data.to_csv(tiny_files / "counts.csv", index=False)
    groups = {}
    for flag in ([], ["--no-overdispersion"]):
        out = tiny_files / f"poisson{len(flag)}"
        rc = main(
            [
                "fit", str(tiny_files / "counts.csv"), "--formula", "n ~ x + (1|id)",
                "--kinship", f"id={tiny_files / 'kin.csv'}", "--family", "poisson",
                "--method", "laplace", *flag, "--out", str(out),
            ]
        )  # fmt: skip
        assert rc == 0
        summary = json.loads((out / "summary.json").read_text())
        groups[bool(flag)] = [row["grp"] for row in summary["variance_components"]]
    assert groups[False] == ["id", "olre"]  # the observation-level effect by default
    assert groups[True] == ["id"]


def test_reml_run_replaces_an_older_nuts_result(tiny_files, capsys):
    """A REML summary never sits beside the posterior of an older NUTS run; the user's own
    files in the folder stay."""
    out = tiny_files / "results"
    out.mkdir()
    for name in ("summary.json", "posterior.nc", "h2_posterior.png"):
        (out / name).write_text("from an older NUTS run")
    (out / "my_notes.txt").write_text("keep me")
    rc = main(
        [
            "fit", str(tiny_files / "data.csv"), "--formula", "y ~ x + (1|id)",
            "--kinship", f"id={tiny_files / 'kin.csv'}", "--method", "reml", "--out", str(out),
        ]
    )  # fmt: skip
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["inputs", "my_notes.txt", "summary.json"]
    assert json.loads((out / "summary.json").read_text())["method"] == "reml"
    assert (out / "my_notes.txt").read_text() == "keep me"
    assert f"wrote {out / 'summary.json'}" in capsys.readouterr().out
    assert not [p for p in tiny_files.iterdir() if "bayeslmm" in p.name]  # no scratch left


def test_failed_fit_leaves_the_folder_alone(tiny_files):
    out = tiny_files / "results"
    out.mkdir()
    (out / "summary.json").write_text('{"method": "nuts"}')
    rc = main(
        [
            "fit", str(tiny_files / "data.csv"), "--formula", "y ~ nosuch + (1|id)",
            "--kinship", f"id={tiny_files / 'kin.csv'}", "--method", "reml", "--out", str(out),
        ]
    )  # fmt: skip
    assert rc == 2
    assert [p.name for p in out.iterdir()] == ["summary.json"]
    assert (out / "summary.json").read_text() == '{"method": "nuts"}'


def test_ids_are_text_on_both_sides(tiny_files):
    """Ids 000-039 (leading zeros) in the data and in a GCTA kinship match as text."""
    from bayeslmm import Kinship
    from bayeslmm.io import write_gcta_grm

    data = pd.read_csv(tiny_files / "data.csv")
    K = pd.read_csv(tiny_files / "kin.csv", index_col=0).to_numpy()
    ids = [f"{k:03d}" for k in range(len(data))]
    data["id"] = ids
    data.to_csv(tiny_files / "zeros.csv", index=False)
    write_gcta_grm(Kinship(K, ids=ids), tiny_files / "zeros")
    out = tiny_files / "zeros_out"
    rc = main(
        [
            "fit", str(tiny_files / "zeros.csv"), "--formula", "y ~ x + (1|id)",
            "--kinship", f"id={tiny_files / 'zeros'}", "--method", "reml", "--out", str(out),
        ]
    )  # fmt: skip
    assert rc == 0
    assert json.loads((out / "summary.json").read_text())["n_obs"] == 40


def test_fit_command_reads_lme4_and_brms_responses(binary_files):
    """cbind(s, f), s | trials(n) and a two-level text response work from the command line
    as in Python (the same Laplace fit as trials= / 0-1 coding)."""
    import warnings

    data = pd.read_csv(binary_files / "binary.csv")
    rng = np.random.default_rng(0)
    data["n"] = rng.integers(1, 5, len(data))
    data["s"] = rng.binomial(data["n"], 0.4)
    data["f"] = data["n"] - data["s"]
    data["status"] = np.where(data["case"] == 1, "sick", "healthy")
    data.to_csv(binary_files / "counts.csv", index=False)
    runs = {
        "cbind": ("cbind(s, f) ~ 1 + (1|id)", "binomial"),
        "trials": ("s | trials(n) ~ 1 + (1|id)", "binomial"),
        "text": ("status ~ 1 + (1|id)", "bernoulli"),
        "coded": ("case ~ 1 + (1|id)", "bernoulli"),
    }
    h2 = {}
    for name, (formula, family) in runs.items():
        out = binary_files / f"out_{name}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rc = main(
                [
                    "fit", str(binary_files / "counts.csv"), "--formula", formula,
                    "--kinship", f"id={binary_files / 'kin.csv'}", "--family", family,
                    "--method", "laplace", "--out", str(out),
                ]
            )  # fmt: skip
        assert rc == 0, name
        h2[name] = json.loads((out / "summary.json").read_text())["heritability"]["h2"]
    assert h2["cbind"]["estimate"] == pytest.approx(h2["trials"]["estimate"], rel=1e-8)
    # "sick" is the second level in sorted order: coded 1, as the 0/1 column
    assert h2["text"]["estimate"] == pytest.approx(h2["coded"]["estimate"], rel=1e-8)


def test_fit_command_ml(tiny_files, capsys):
    out = tiny_files / "ml"
    args = ["fit", str(tiny_files / "data.csv"), "--formula", "y ~ x + (1|id)"]
    args += ["--kinship", f"id={tiny_files / 'kin.csv'}", "--method", "ml", "--out", str(out)]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "ml" and "(ML, SE" in capsys.readouterr().out


def test_fit_command_leaves_warm_up_and_target_accept_to_the_route():
    """Without --tune / --target-accept the command passes None, so LMM.fit fills in the
    route's defaults (300 / 0.8 for a one-term closed-form GLMM without an observation-level
    effect, 1000 / 0.9 otherwise) exactly as in Python; given ones are passed through."""
    import argparse

    from bayeslmm.commands.fit import add_fit_options, fit_model

    class Recorder:
        def fit(self, **options):
            self.options = options
            return options

    parser = argparse.ArgumentParser()
    add_fit_options(parser)
    model = Recorder()
    fit_model(model, parser.parse_args([]))
    assert model.options["tune"] is None and model.options["target_accept"] is None
    fit_model(model, parser.parse_args(["--tune", "500", "--target-accept", "0.95"]))
    assert model.options["tune"] == 500 and model.options["target_accept"] == 0.95
