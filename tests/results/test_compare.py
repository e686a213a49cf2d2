"""REML beside the posterior: the comparison table and plot."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

import bayeslmm as bl


@pytest.fixture(scope="module")
def both_fits(snp_kinship):
    rng = np.random.default_rng(11)
    n = 150
    ids = [f"i{k}" for k in range(n)]
    K = snp_kinship(rng, n, 400)
    s, U = np.linalg.eigh(K.matrix)
    g = U @ (np.sqrt(np.clip(s, 0, None)) * rng.normal(size=n))
    x = rng.normal(size=n)
    df = pd.DataFrame({"y": 3 + 0.5 * x + 1.2 * g + rng.normal(size=n), "x": x, "id": ids})
    model = bl.LMM("y ~ x + (1|id)", data=df, kinship={"id": K})
    bayes = model.fit(draws=1000, tune=600, chains=2, cores=1, seed=5, sampler="pymc")
    return model.fit(method="reml"), bayes


def test_table_lines_up_every_parameter(both_fits):
    reml, bayes = both_fits
    table = bl.compare_fits(reml, bayes)
    assert list(table.columns) == [
        "kind", "parameter",
        "reml_estimate", "reml_se", "reml_ci_low", "reml_ci_high",
        "nuts_estimate", "nuts_se", "nuts_ci_low", "nuts_ci_high", "agree",
        # the REML-beside-posterior names this table has always had
        "post_mean", "post_median", "hdi_low", "hdi_high", "reml_in_hdi",
    ]  # fmt: skip
    rows = table.set_index("parameter")
    assert {"id:(Intercept)", "Residual", "h2", "id", "Intercept", "x"} <= set(rows.index)
    # Same posterior numbers as the Bayesian tables, same point numbers as the REML tables.
    assert rows.loc["h2", "post_mean"] == pytest.approx(bayes.heritability().loc["h2", "mean"])
    assert rows.loc["h2", "reml_estimate"] == pytest.approx(
        reml.heritability().loc["h2", "estimate"]
    )
    assert rows.loc["x", "reml_se"] == pytest.approx(reml.fixed_effects().loc["x", "se"])
    # Weak priors, n = 150: the REML estimates of β sit inside the 95% HDI and close to the
    # posterior means (within half a posterior sd of the REML SE scale).
    for name in ("Intercept", "x"):
        r = rows.loc[name]
        assert r["reml_in_hdi"]
        assert abs(r["post_mean"] - r["reml_estimate"]) < 0.5 * r["reml_se"]
    assert rows.loc["h2", "reml_in_hdi"]


def test_plot_marks_reml_on_the_posterior(both_fits):
    reml, bayes = both_fits
    fig = bl.plot_comparison(reml, bayes, kinds=("variance share", "variance component"))
    shown = [ax for ax in fig.axes if ax.get_visible()]
    titles = [ax.get_title() for ax in shown]
    # one panel per quantity: the share of the only kinship term is h² and is drawn once
    assert titles[0] == "heritability h²" and "residual variance" in titles
    assert len(titles) == len(set(titles)) == 1 + len(reml.variance_components())
    ax = shown[0]
    assert ax.get_xlabel() == "proportion of phenotypic variance"
    assert shown[titles.index("residual variance")].get_xlabel() == "variance (y units²)"
    est = reml.heritability().loc["h2", "estimate"]
    assert any(np.allclose(line.get_xdata(), est) for line in ax.get_lines())
    with pytest.raises(ValueError, match="No parameters"):
        bl.plot_comparison(reml, bayes, kinds=("nothing",))
