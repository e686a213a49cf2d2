"""Tests of bayeslmm.results.summary: posterior summaries and the summary.json layout."""

import json
import warnings

import numpy as np
import pytest

from bayeslmm.results.summary import (
    POSTERIOR_KEYS,
    assemble_summary,
    hdi_columns,
    json_safe,
    posterior_summaries,
    posterior_summary,
    write_summary,
)


def test_posterior_summary_matches_direct_computation():
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, size=(2, 4000))
    s = posterior_summary(x, hdi_prob=0.9)
    assert tuple(s) == POSTERIOR_KEYS
    assert s["mean"] == pytest.approx(x.mean())
    assert s["sd"] == pytest.approx(x.std(ddof=1))
    # for a normal sample the 90% HDI is close to the central interval
    lo, hi = np.quantile(x, [0.05, 0.95])
    assert s["hdi_low"] == pytest.approx(lo, abs=0.15) and s["hdi_high"] == pytest.approx(
        hi, abs=0.15
    )
    assert s["hdi_prob"] == 0.9
    assert 6000 < s["ess_bulk"] < 10000  # iid draws: ESS ≈ number of draws
    assert s["r_hat"] == pytest.approx(1.0, abs=0.01)
    # chains stuck in different places are flagged
    bad = np.stack([rng.normal(0, 1, 500), rng.normal(3, 1, 500)])
    assert posterior_summary(bad)["r_hat"] > 1.5


def test_constant_and_single_chain_give_nan_not_errors():
    s = posterior_summary(np.ones((2, 10)))
    assert np.isnan(s["ess_bulk"]) and np.isnan(s["r_hat"])
    assert np.isnan(posterior_summary(np.arange(50.0))["r_hat"])  # one chain


def _mixed_columns() -> np.ndarray:
    """(chain, draw, column): normal, AR(1), skewed, rounded (ties), constant, with a NaN."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 401, 12))
    for t in range(1, x.shape[1]):
        x[:, t, ::4] = 0.9 * x[:, t - 1, ::4] + x[:, t, ::4]
    x[:, :, 1::4] = np.exp(x[:, :, 1::4])
    x[:, :, 2::4] = np.round(x[:, :, 2::4], 1)
    x[:, :, 3] = 2.5
    x[1, 3, 7] = np.nan
    return x


def test_hdi_of_each_row_is_arviz_hdi():
    import arviz as az

    x = _mixed_columns().reshape(-1, 12).T
    for prob in (0.5, 0.9, 0.95, 0.999):
        low, high = hdi_columns(x, prob)
        expected = np.array([az.hdi(row, hdi_prob=prob) for row in x])
        np.testing.assert_array_equal(np.c_[low, high], expected)
    with pytest.raises(ValueError, match="hdi_prob"):
        hdi_columns(x, 1.5)
    with pytest.raises(ValueError, match="Too few"):  # as az.hdi: no window of n + 1 draws
        hdi_columns(x, 1.0)


def test_many_columns_equal_each_column_alone():
    from bayeslmm.results.estimate import Draws

    x = _mixed_columns()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        columns = posterior_summaries(x, 0.8)
        rows = Draws(x).summary(0.8)
    for k in range(x.shape[2]):
        one = posterior_summary(x[:, :, k], 0.8)
        np.testing.assert_array_equal(
            [columns[key][k] for key in POSTERIOR_KEYS], list(one.values())
        )
        np.testing.assert_array_equal([rows[k][key] for key in POSTERIOR_KEYS], list(one.values()))
        # independent pieces: NumPy's mean, SD and median of the column
        column = x[:, :, k].ravel()
        np.testing.assert_array_equal([one["mean"], one["sd"]], [column.mean(), column.std(ddof=1)])
        np.testing.assert_array_equal(rows[k]["median"], np.median(column))
    assert np.isnan(columns["ess_bulk"][3]) and np.isnan(columns["r_hat"][3])  # constant


def test_json_safe_and_write(tmp_path):
    obj = {"a": np.nan, "b": [np.inf, 1.0], "c": np.int64(3), "d": None, "e": np.bool_(True)}
    assert json_safe(obj) == {"a": None, "b": [None, 1.0], "c": 3, "d": None, "e": True}
    with pytest.raises(TypeError):
        json_safe({"f": object()})
    path = write_summary(obj, tmp_path / "x" / "s.json")
    assert json.loads(path.read_text())["a"] is None


def test_assemble_summary_layout():
    entry = posterior_summary(np.random.default_rng(1).beta(3, 3, size=(2, 200)))
    s = assemble_summary(
        method="nuts",
        n_obs=12,
        formula="y ~ 1 + (1|id)",
        strategy="spectral",
        heritability={"id": entry, "h2": entry},
        variance_components=[{"grp": "id", "var1": "(Intercept)", "var2": None,
                              "vcov": 1.0, "sdcor": 1.0}],
        fixed_effects={"Intercept": entry},
        diagnostics={"divergences": 0, "max_r_hat": float("nan"), "min_ess_bulk": 100.0},
        timing={"total_s": 1.5},
    )  # fmt: skip
    assert list(s)[:3] == ["bayeslmm_version", "method", "n_obs"]
    for key in ("formula", "strategy", "heritability", "variance_components",
                "fixed_effects", "diagnostics", "timing"):  # fmt: skip
        assert key in s
    assert s["diagnostics"]["max_r_hat"] is None
    json.dumps(s, allow_nan=False)
    with pytest.raises(ValueError, match="total_s"):
        assemble_summary(method="nuts", n_obs=1, formula="", strategy="", heritability={},
                         variance_components=[], fixed_effects={}, diagnostics={},
                         timing={})  # fmt: skip
