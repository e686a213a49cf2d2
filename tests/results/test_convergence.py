"""R-hat and ESS of bayeslmm.results.convergence against ArviZ's own functions, to the bit.

ArviZ is the independent computation: ``az.rhat`` (rank method) and ``az.ess`` (bulk, tail)
with its numba variance. Draws cover independent and strongly autocorrelated chains, one to
five chains, odd and even lengths, large offsets (where E[x²] − E[x]² loses digits, so any
change in the order of the sums would show) and ties.
"""

from __future__ import annotations

import warnings

import arviz as az
import numpy as np
import pytest

from bayeslmm.results.convergence import ess_bulk, ess_tail, rank_rhat


def _draws(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    chains, draws = int(rng.integers(1, 6)), int(rng.integers(4, 1200))
    x = rng.normal(size=(chains, draws))
    if seed % 3 == 0:  # AR(1), phi = 0.9: ESS far below the number of draws
        for t in range(1, draws):
            x[:, t] = 0.9 * x[:, t - 1] + x[:, t]
    if seed % 4 == 0:
        x = 1e3 * x + 5e4
    if seed % 5 == 0:
        x = np.round(x, 1)  # ties in the ranks
    if seed % 7 == 0:
        x[0] += 3.0  # one chain elsewhere: R-hat far above 1
    return x


def _arviz(x: np.ndarray) -> tuple[float, float, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rhat = float(az.rhat(x)) if x.shape[0] > 1 else float("nan")
        return rhat, float(az.ess(x, method="bulk")), float(az.ess(x, method="tail"))


@pytest.mark.parametrize("seed", range(40))
def test_rhat_and_ess_equal_arviz_to_the_bit(seed):
    x = _draws(seed)
    ours = (rank_rhat(x), ess_bulk(x), ess_tail(x))
    np.testing.assert_array_equal(ours, _arviz(x))


def test_the_cases_reach_both_sides_of_the_thresholds():
    # the comparison above is only worth something if it covers bad as well as good chains
    rhats = [rank_rhat(_draws(s)) for s in range(40)]
    ess = [ess_bulk(_draws(s)) / _draws(s).size for s in range(40)]
    assert np.nanmax(rhats) > 1.1 and np.nanmin(rhats) < 1.01
    assert min(ess) < 0.2 and max(ess) > 0.8


def test_constant_draws_and_nan_follow_arviz():
    constant = np.full((2, 50), 0.3)
    assert ess_bulk(constant) == float(az.ess(constant, method="bulk")) == 100.0
    with_nan = np.random.default_rng(1).normal(size=(2, 50))
    with_nan[1, 7] = np.nan
    assert np.isnan(rank_rhat(with_nan)) and np.isnan(ess_bulk(with_nan))
    assert np.isnan(rank_rhat(np.zeros((1, 50)) + np.arange(50)))  # one chain: no R-hat
    assert np.isnan(ess_bulk(np.arange(3.0)[None, :]))  # under 4 draws


def test_ess_of_independent_draws_is_near_their_number():
    # a known truth besides ArviZ: white noise has ESS ≈ number of draws
    x = np.random.default_rng(5).normal(size=(4, 2000))
    assert 0.9 < ess_bulk(x) / x.size < 1.1
    assert 0.85 < ess_tail(x) / x.size < 1.15
    assert abs(rank_rhat(x) - 1.0) < 0.005


def _columns(chains: int, draws: int) -> np.ndarray:
    """(chain, draw, column) draws of every kind the one-column tests cover, side by side,
    plus constant, two-valued and NaN columns: independent, AR(1) with long Geyer walks,
    alternating AR(1) (pair sums that rise at the end of short walks), large offsets, ties,
    a chain elsewhere."""
    rng = np.random.default_rng(chains * 1000 + draws)
    x = rng.normal(size=(chains, draws, 24))
    for t in range(1, draws):
        x[:, t, ::3] = 0.95 * x[:, t - 1, ::3] + x[:, t, ::3]
        x[:, t, 4::9] = -0.7 * x[:, t - 1, 4::9] + x[:, t, 4::9]
    x[:, :, 1::4] = 1e3 * x[:, :, 1::4] + 5e4
    x[:, :, 2::5] = np.round(x[:, :, 2::5], 1)
    x[0, :, 5::6] += 3.0
    x[:, :, 7] = 0.3
    x[:, :, 8] = x[:, :, 8] > 0.0
    x[:, :, 9] = np.round(x[:, :, 9] / 4.0)  # a few values, many ties
    x[0, 1, 10] = np.nan
    return x


@pytest.mark.parametrize(
    "shape", [(4, 1000), (1, 7), (2, 4), (3, 501), (5, 64), (2, 5), (4, 12), (4, 20), (6, 30)]
)
def test_many_columns_equal_each_column_alone(shape, monkeypatch):
    from bayeslmm.results import convergence

    x = _columns(*shape)
    # blocks of three columns: the 24 columns are worked in eight blocks, the last partial
    monkeypatch.setattr(convergence, "_BLOCK_VALUES", 3 * x.shape[0] * x.shape[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one_by_one = np.array(
            [
                [rank_rhat(x[:, :, k]) for k in range(x.shape[2])],
                [ess_bulk(x[:, :, k]) for k in range(x.shape[2])],
                [ess_tail(x[:, :, k]) for k in range(x.shape[2])],
            ]
        )
    np.testing.assert_array_equal(np.array(convergence.convergence_columns(x)), one_by_one)


@pytest.mark.parametrize("shape", [(4, 1000), (4, 12), (4, 20), (6, 30)])
def test_many_columns_equal_arviz_to_the_bit(shape):
    from bayeslmm.results.convergence import convergence_columns

    x = _columns(*shape)
    r_hat, bulk, tail = convergence_columns(x)
    for k in range(x.shape[2]):
        if k in (7, 10):  # constant (ArviZ: NaN R-hat with a warning), NaN draws
            continue
        np.testing.assert_array_equal((r_hat[k], bulk[k], tail[k]), _arviz(x[:, :, k]))
    assert np.isnan([r_hat[10], bulk[10], tail[10]]).all()


def test_many_columns_reach_every_kind_of_chain():
    from bayeslmm.results.convergence import convergence_columns

    x = _columns(4, 1000)
    r_hat, bulk, _ = convergence_columns(x)
    # the columns reach short and long Geyer walks and both sides of the R-hat threshold
    assert np.nanmin(bulk) < 0.05 * x[:, :, 0].size < 0.9 * x[:, :, 0].size < np.nanmax(bulk)
    assert np.nanmax(r_hat) > 1.1 and np.nanmin(r_hat) < 1.01


def test_columns_need_three_dimensions():
    from bayeslmm.results.convergence import convergence_columns

    with pytest.raises(ValueError, match="chain, draw, column"):
        convergence_columns(np.zeros((4, 100)))
