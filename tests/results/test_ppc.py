"""Posterior predictive checks: hand-computed p-values, power against a wrong model, plots."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from bayeslmm.results.ppc import plot_ppc, ppc_summary, response_kind


def test_hand_computed_statistics_and_mid_p_values():
    y = np.array([0, 1, 2, 5])  # mean 2, var (ddof 1) 14/3, zeros 1/4, max 5
    y_rep = np.array(
        [
            [0, 0, 2, 2],  # mean 1,    zeros .5, max 2
            [1, 1, 3, 3],  # mean 2,    zeros 0,  max 3
            [0, 2, 4, 6],  # mean 3,    zeros .25, max 6
            [0, 0, 0, 8],  # mean 2,    zeros .75, max 8
        ]
    )
    t = ppc_summary(y, y_rep)
    assert t.loc["mean", "observed"] == 2.0
    assert t.loc["variance", "observed"] == pytest.approx(14 / 3)
    assert t.loc["prop_zeros", "observed"] == 0.25
    # mean: one draw above (3), two ties (2, 2) → 1/4 + ½ · 2/4
    assert t.loc["mean", "p_value"] == pytest.approx(0.5)
    # zeros: above .25 → .5 and .75 (2 draws); one tie → 2/4 + ½ · 1/4
    assert t.loc["prop_zeros", "p_value"] == pytest.approx(0.625)
    # max: 6 and 8 above 5 → 2/4
    assert t.loc["max", "p_value"] == pytest.approx(0.5)
    assert t.loc["mean", "rep_mean"] == pytest.approx(2.0)
    assert list(t.columns) == [
        "observed",
        "rep_mean",
        "rep_sd",
        "rep_lower",
        "rep_upper",
        "p_value",
    ]


def test_detects_overdispersion_of_a_poisson_model():
    """Overdispersed counts checked against a plain Poisson with the right mean: the variance
    and zero-fraction p-values are extreme; against the true model they are not."""
    rng = np.random.default_rng(1)
    n = 300
    lam = np.exp(0.5 + rng.normal(0, 0.9, n))
    y = rng.poisson(lam)
    wrong = rng.poisson(y.mean(), (500, n))
    t = ppc_summary(y, wrong)
    assert t.loc["variance", "p_value"] < 0.01
    assert t.loc["prop_zeros", "p_value"] < 0.01
    right = rng.poisson(np.exp(0.5 + rng.normal(0, 0.9, (500, n))))
    t = ppc_summary(y, right)
    assert 0.02 < t.loc["variance", "p_value"] < 0.98
    assert 0.02 < t.loc["prop_zeros", "p_value"] < 0.98


def test_binary_case_fraction_and_chain_draw_layout():
    rng = np.random.default_rng(2)
    y = rng.binomial(1, 0.3, 80)
    y_rep = rng.binomial(1, 0.3, (2, 100, 80))  # (chain, draw, obs)
    t = ppc_summary(y, y_rep)
    assert list(t.index) == ["case_fraction"]
    assert t.loc["case_fraction", "observed"] == pytest.approx(y.mean())
    assert 0.0 <= t.loc["case_fraction", "p_value"] <= 1.0
    assert t.loc["case_fraction", "rep_lower"] < 0.3 < t.loc["case_fraction", "rep_upper"]


def test_custom_statistic_and_errors():
    y = np.array([0.5, 1.5, 2.0])
    t = ppc_summary(y, np.tile(y, (3, 1)), statistics={"range": lambda a: np.ptp(a, axis=1)})
    assert t.loc["range", "p_value"] == 0.5  # all ties
    with pytest.raises(ValueError, match="observations per draw"):
        ppc_summary(y, np.zeros((4, 5)))
    assert response_kind(y) == "continuous"


@pytest.mark.parametrize("kind", ["count", "binary", "continuous"])
def test_plots(tmp_path, kind):
    rng = np.random.default_rng(3)
    if kind == "count":
        y, y_rep = rng.poisson(3, 60), rng.poisson(3, (100, 60))
    elif kind == "binary":
        y, y_rep = rng.binomial(1, 0.4, 60), rng.binomial(1, 0.4, (100, 60))
    else:
        y, y_rep = rng.normal(size=60), rng.normal(size=(100, 60))
    ax = plot_ppc(y, y_rep)
    ax.figure.savefig(tmp_path / f"{kind}.png")
    assert (tmp_path / f"{kind}.png").stat().st_size > 1000
    if kind == "count":
        # one observed bar per count 0..max_count, heights = observed frequencies
        heights = [p.get_height() for p in ax.patches]
        top = len(heights) - 1
        expected = np.bincount(np.minimum(y, top), minlength=top + 1)
        np.testing.assert_array_equal(heights, expected)
    if kind == "binary":
        assert ax.lines[0].get_xdata()[0] == pytest.approx(y.mean())
    assert isinstance(ppc_summary(y, y_rep), pd.DataFrame)


def test_plot_names_the_response_and_keeps_count_ticks_readable():
    rng = np.random.default_rng(4)
    y, y_rep = rng.poisson(30, 200), rng.poisson(30, (100, 200))
    ax = plot_ppc(y, y_rep, name="eggs")
    assert ax.get_xlabel() == "eggs (count)" and "eggs" in ax.get_title()
    labels = [t.get_text() for t in ax.get_xticklabels()]
    # ~45 bars, at most a dozen labels; the last one pools the tail
    assert len(ax.patches) > 30 and 5 <= len(labels) <= 13
    assert labels[0] == "0" and labels[-1].startswith("≥")
    ticks = ax.get_xticks()
    assert np.all(np.diff(ticks) >= 2)  # no two labels crowd each other
    for kind, (yy, rep) in {
        "binary": (rng.binomial(1, 0.3, 50), rng.binomial(1, 0.3, (50, 50))),
        "continuous": (rng.normal(size=50), rng.normal(size=(50, 50))),
    }.items():
        assert "bp" in plot_ppc(yy, rep, kind=kind, name="bp").get_xlabel()
