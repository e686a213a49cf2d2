"""Rank-normalised split R-hat and bulk / tail effective sample sizes (Vehtari et al. 2021).

The numbers are ArviZ's (``az.rhat(method="rank")``, ``az.ess(method="bulk" | "tail")``),
computed in the same order of operations, so they agree to the last bit (tests/results/
test_convergence.py checks it). ArviZ computes the chain variances in a numba function that it
compiles in every process at its first call (about 0.2 CPU seconds, a twentieth of a
command-line fit at n = 1,000); here the same sums (left to right, E[x²] − E[x]²) come from
NumPy's sequential accumulation, with nothing to compile, and without ArviZ's xarray wrapping.

Reference: Vehtari, Gelman, Simpson, Carpenter & Bürkner (2021), Rank-normalization, folding,
and localization: an improved R-hat for assessing convergence of MCMC. Bayesian Analysis
16(2), 667-718.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["ess_bulk", "ess_tail", "rank_rhat"]

#: Blom's (1958) fractional offset of the rank back-transform (ArviZ's default).
BLOM_OFFSET = 3 / 8
#: Fewest draws per chain for which ArviZ reports a diagnostic (NaN below).
MIN_DRAWS = 4


def rank_rhat(draws: np.ndarray) -> float:
    """Rank-normalised split R-hat: the larger of the bulk and the folded (tail) R-hat.

    Parameters
    ----------
    draws : array_like, shape (chain, draw)

    Returns
    -------
    float
        NaN with fewer than 2 chains or 4 draws, or with a NaN draw.

    Examples
    --------
    >>> x = np.random.default_rng(1).normal(size=(4, 500))
    >>> bool(abs(rank_rhat(x) - 1.0) < 0.01)
    True
    """
    x = np.asarray(draws)
    if _not_valid(x, min_chains=2):
        return float("nan")
    split = _split_chains(x)
    bulk = _rhat(_z_scale(split))
    folded = _rhat(_z_scale(abs(split - np.median(split))))
    return float(max(bulk, folded))


def ess_bulk(draws: np.ndarray) -> float:
    """Bulk effective sample size: ESS of the rank-normalised split chains.

    Parameters
    ----------
    draws : array_like, shape (chain, draw)

    Returns
    -------
    float

    Examples
    --------
    >>> x = np.random.default_rng(1).normal(size=(4, 500))
    >>> bool(1500 < ess_bulk(x) < 2500)
    True
    """
    x = np.asarray(draws)
    if _not_valid(x, min_chains=1):
        return float("nan")
    return float(_ess(_z_scale(_split_chains(x))))


def ess_tail(draws: np.ndarray, prob: Sequence[float] = (0.05, 0.95)) -> float:
    """Tail effective sample size: the smaller ESS of the indicators of the 5% and 95%
    quantiles (``prob``), from split chains.

    Parameters
    ----------
    draws : array_like, shape (chain, draw)
    prob : pair of float
        Lower and upper quantile.

    Returns
    -------
    float

    Examples
    --------
    >>> x = np.random.default_rng(1).normal(size=(4, 500))
    >>> bool(1000 < ess_tail(x) < 2500)
    True
    """
    x = np.asarray(draws)
    if _not_valid(x, min_chains=1):
        return float("nan")
    return float(min(_ess_quantile(x, prob[0]), _ess_quantile(x, prob[1])))


# -- ArviZ's steps, in its order --------------------------------------------------------------
def _not_valid(x: np.ndarray, min_chains: int) -> bool:
    x2 = np.atleast_2d(x)
    return bool(np.isnan(x).any()) or x2.shape[0] < min_chains or x2.shape[1] < MIN_DRAWS


def _split_chains(x: np.ndarray) -> np.ndarray:
    x = np.atleast_2d(np.asarray(x))
    half = x.shape[1] // 2
    return np.vstack((x[:, :half], x[:, -half:]))


def _z_scale(x: np.ndarray) -> np.ndarray:
    from scipy import stats

    rank = stats.rankdata(x, method="average", nan_policy="omit")
    rank = (rank - BLOM_OFFSET) / (rank.size - 2 * BLOM_OFFSET + 1)
    return stats.norm.ppf(rank).reshape(x.shape)


def _sequential_variance(x: np.ndarray, ddof: int) -> np.ndarray:
    """Variance along the last axis as ArviZ's numba ``stats_variance_1d``: Σx and Σx²
    accumulated left to right, then E[x²] − E[x]², times n / (n − ddof)."""
    n = x.shape[-1]
    total = np.add.accumulate(x, axis=-1)[..., -1]
    total_sq = np.add.accumulate(x * x, axis=-1)[..., -1]
    mean = total / n
    return (total_sq / n - mean * mean) * (n / (n - ddof))


def _rhat(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=float)
    if np.isnan(x).any():
        return float("nan")
    num_samples = x.shape[1]
    chain_mean = np.mean(x, axis=1)
    chain_var = _sequential_variance(x, ddof=1)
    between = num_samples * _sequential_variance(chain_mean, ddof=1)
    within = np.mean(chain_var)
    return float(np.sqrt((between / within + num_samples - 1) / num_samples))


def _autocov(x: np.ndarray) -> np.ndarray:
    """Autocovariance of each row at every lag, by FFT (ArviZ's ``autocov``)."""
    from scipy.fftpack import next_fast_len  # ArviZ's padding length, for the same rounding

    n = x.shape[1]
    m = next_fast_len(2 * n)
    x = x - x.mean(1, keepdims=True)
    spectrum = np.fft.rfft(x, n=m, axis=1)
    spectrum *= np.conjugate(spectrum)
    cov = np.fft.irfft(spectrum, n=m, axis=1)[:, :n]
    cov /= n
    return cov


def _ess(x: np.ndarray) -> float:
    """ESS of 2-D (chain, draw) values: Geyer's initial monotone sequence (ArviZ's ``_ess``)."""
    x = np.asarray(x, dtype=float)
    if np.isnan(x).any():
        return float("nan")
    if (np.max(x) - np.min(x)) < np.finfo(float).resolution:
        return float(x.size)
    n_chain, n_draw = x.shape
    acov = _autocov(x)
    chain_mean = x.mean(axis=1)
    mean_var = np.mean(acov[:, 0]) * n_draw / (n_draw - 1.0)
    var_plus = mean_var * (n_draw - 1.0) / n_draw
    if n_chain > 1:
        var_plus += _sequential_variance(chain_mean, ddof=1)
    rho = np.zeros(n_draw)
    rho_even = 1.0
    rho[0] = rho_even
    rho_odd = 1.0 - (mean_var - np.mean(acov[:, 1])) / var_plus
    rho[1] = rho_odd
    t = 1  # Geyer's initial positive sequence
    while t < (n_draw - 3) and (rho_even + rho_odd) > 0.0:
        rho_even = 1.0 - (mean_var - np.mean(acov[:, t + 1])) / var_plus
        rho_odd = 1.0 - (mean_var - np.mean(acov[:, t + 2])) / var_plus
        if (rho_even + rho_odd) >= 0:
            rho[t + 1] = rho_even
            rho[t + 2] = rho_odd
        t += 2
    max_t = t - 2
    if rho_even > 0:
        rho[max_t + 1] = rho_even
    t = 1  # Geyer's initial monotone sequence
    while t <= max_t - 2:
        if (rho[t + 1] + rho[t + 2]) > (rho[t - 1] + rho[t]):
            rho[t + 1] = (rho[t - 1] + rho[t]) / 2.0
            rho[t + 2] = rho[t + 1]
        t += 2
    ess = n_chain * n_draw
    tau = -1.0 + 2.0 * np.sum(rho[: max_t + 1]) + np.sum(rho[max_t + 1 : max_t + 2])
    tau = max(tau, 1 / np.log10(ess))
    return float("nan") if np.isnan(rho).any() else float(ess / tau)


def _ess_quantile(x: np.ndarray, prob: float) -> float:
    from scipy.stats.mstats import mquantiles

    # R's type-7 quantile over all draws, as ArviZ
    (quantile,) = mquantiles(x, prob, alphap=1, betap=1, axis=None, limit=())
    return _ess(_split_chains(x <= quantile))
