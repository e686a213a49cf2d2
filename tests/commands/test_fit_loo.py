"""``bayeslmm fit --loo``: leave-one-out cross-validation in summary.json."""

import json

import pytest

from bayeslmm.cli import main


def test_fit_loo_adds_the_loo_section(tiny_files, capsys):
    out = tiny_files / "out"
    rc = main(
        [
            "fit", str(tiny_files / "data.csv"), "--formula", "y ~ x + (1|id)",
            "--kinship", f"id={tiny_files / 'kin.csv'}", "--draws", "200", "--tune", "200",
            "--chains", "2", "--cores", "1", "--seed", "4", "--loo", "--out", str(out),
        ]
    )  # fmt: skip
    assert rc == 0
    assert "LOO (marginal): elpd" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    loo = summary["loo"]
    assert loo["kind"] == "marginal" and loo["n_draws"] == 400
    assert set(loo) == {
        "elpd", "se", "p_loo", "kind", "pareto_k_max", "n_pareto_k_above_0_7", "n_draws"
    }  # fmt: skip
    # 40 observations, each log p(y_i | y_−i) of a unit-scale trait: elpd of order −40 to −80
    assert -120 < loo["elpd"] < -20 and loo["se"] > 0 and 0 < loo["p_loo"] < 10


def test_fit_without_loo_has_no_loo_section(tiny_files):
    out = tiny_files / "reml"
    rc = main(
        [
            "fit", str(tiny_files / "data.csv"), "--formula", "y ~ x + (1|id)",
            "--kinship", f"id={tiny_files / 'kin.csv'}", "--method", "reml", "--out", str(out),
        ]
    )  # fmt: skip
    assert rc == 0
    assert "loo" not in json.loads((out / "summary.json").read_text())


@pytest.mark.parametrize("method", ["reml", "laplace"])
def test_fit_loo_refuses_point_methods(tiny_files, capsys, method):
    rc = main(
        [
            "fit", str(tiny_files / "data.csv"), "--formula", "y ~ x + (1|id)",
            "--kinship", f"id={tiny_files / 'kin.csv'}", "--method", method, "--loo",
            "--out", str(tiny_files / "o"),
        ]
    )  # fmt: skip
    assert rc == 2
    assert f"a --method {method} summary.json already has aic" in capsys.readouterr().err
