"""Tests of bayeslmm.results.heritability: shares, labels and tables."""

import numpy as np
import pytest
import xarray as xr

from bayeslmm.results.heritability import (
    TABLE_COLUMNS,
    heritability_draws,
    heritability_table,
    variance_shares,
)


def _posterior(components, draws, h2=None):
    data = {"variance_share": (("chain", "draw", "component"), draws)}
    if h2 is not None:
        data["h2"] = (("chain", "draw"), h2)
    return xr.Dataset(data, coords={"component": components})


def test_variance_shares_sum_to_one():
    shares = variance_shares({"id": 2.0, "litter": 0.5}, residual=1.5)
    assert shares == {"id": 0.5, "litter": 0.125, "residual": 0.375}
    assert sum(shares.values()) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        variance_shares({"id": 0.0}, residual=0.0)


def test_table_rows_follow_components_and_h2():
    rng = np.random.default_rng(0)
    draws = rng.dirichlet([3, 2, 5], size=(2, 300))
    post = _posterior(["id", "litter", "residual"], draws, h2=draws[..., 0])
    table = heritability_table(post, hdi_prob=0.9)
    assert table.index.tolist() == ["id", "litter", "h2"]
    assert table.columns.tolist() == list(TABLE_COLUMNS)
    assert table.loc["id", "mean"] == pytest.approx(draws[..., 0].mean())
    assert table.loc["h2", "mean"] == table.loc["id", "mean"]
    assert table.loc["litter", "hdi_low"] < table.loc["litter", "hdi_high"]
    full = heritability_draws(post, include_residual=True)
    assert full["component"].values.tolist() == ["id", "litter", "residual", "h2"]
    np.testing.assert_allclose(full.sel(component=["id", "litter", "residual"]).sum("component"), 1)


def test_missing_variance_share_is_explained():
    with pytest.raises(ValueError, match="variance_share"):
        heritability_table(xr.Dataset({"x": (("chain", "draw"), np.zeros((1, 3)))}))
