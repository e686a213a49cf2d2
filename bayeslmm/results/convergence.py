"""Rank-normalised split R-hat and bulk / tail effective sample sizes (Vehtari et al. 2021).

The numbers are ArviZ's (``az.rhat(method="rank")``, ``az.ess(method="bulk" | "tail")``),
computed in the same order of operations, so they agree to the last bit (tests/results/
test_convergence.py checks it). ArviZ computes the chain variances in a numba function that it
compiles in every process at its first call (about 0.2 CPU seconds, a twentieth of a
command-line fit at n = 1,000); here the same sums (left to right, E[x²] − E[x]²) come from
NumPy's sequential accumulation, with nothing to compile, and without ArviZ's xarray wrapping.

Every step works on a stack of columns at once (:func:`convergence_columns`: the markers of a
SNP-effect table, the levels of a breeding-value table), each column's numbers equal to the
one-column functions': the sums run along the same contiguous axis in the same order (NumPy's
pairwise summation per row), and Geyer's sequences, a loop over lags in ArviZ, are built for
all columns with array operations that reproduce the loop's values.

Reference: Vehtari, Gelman, Simpson, Carpenter & Bürkner (2021), Rank-normalization, folding,
and localization: an improved R-hat for assessing convergence of MCMC. Bayesian Analysis
16(2), 667-718.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["convergence_columns", "ess_bulk", "ess_tail", "rank_rhat"]

#: Blom's (1958) fractional offset of the rank back-transform (ArviZ's default).
BLOM_OFFSET = 3 / 8
#: Fewest draws per chain for which ArviZ reports a diagnostic (NaN below).
MIN_DRAWS = 4
#: Draws (columns × chains × draws) worked at once by :func:`convergence_columns`: bounds
#: the rank and FFT work arrays (about 50 MB at this size) whatever the number of columns.
_BLOCK_VALUES = 2**20


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
    x = np.asarray(draws, dtype=float)
    if _not_valid(x, min_chains=2):
        return float("nan")
    split = _split_chains(_one_column(x))
    return float(_rank_rhat(_rhat(_z_scale(split)), split)[0])


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
    x = np.asarray(draws, dtype=float)
    if _not_valid(x, min_chains=1):
        return float("nan")
    return float(_ess(_z_scale(_split_chains(_one_column(x))))[0])


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
    x = np.asarray(draws, dtype=float)
    if _not_valid(x, min_chains=1):
        return float("nan")
    return float(_ess_tail(_one_column(x), prob)[0])


def convergence_columns(
    draws: np.ndarray, prob: Sequence[float] = (0.05, 0.95)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rank R-hat, bulk ESS and tail ESS of every column of ``draws`` at once.

    Each column's numbers are those of :func:`rank_rhat`, :func:`ess_bulk` and
    :func:`ess_tail` on that column, to the bit, at the cost of a few array passes over all
    columns instead of a Python loop over them; the rank-normalised split chains are shared
    by R-hat and the bulk ESS. Columns are worked in blocks of about :data:`_BLOCK_VALUES`
    draws, so the work arrays stay bounded.

    Parameters
    ----------
    draws : array_like, shape (chain, draw, k)
    prob : pair of float
        Quantiles of the tail ESS.

    Returns
    -------
    r_hat, ess_bulk, ess_tail : ndarray, shape (k,)
        NaN for a column with a NaN draw; R-hat NaN with one chain, all NaN under 4 draws.

    Examples
    --------
    >>> x = np.random.default_rng(1).normal(size=(4, 500, 3))
    >>> r_hat, bulk, tail = convergence_columns(x)
    >>> bool(bulk[2] == ess_bulk(x[:, :, 2])), bool(r_hat[0] == rank_rhat(x[:, :, 0]))
    (True, True)
    """
    x = np.asarray(draws, dtype=float)
    if x.ndim != 3:
        raise ValueError(f"draws must have shape (chain, draw, column); got {x.shape}.")
    n_chain, n_draw, k = x.shape
    r_hat, bulk, tail = np.full(k, np.nan), np.full(k, np.nan), np.full(k, np.nan)
    if n_chain < 1 or n_draw < MIN_DRAWS:
        return r_hat, bulk, tail
    columns = np.flatnonzero(~np.isnan(x).any(axis=(0, 1)))
    step = max(1, _BLOCK_VALUES // (n_chain * n_draw))
    for lo in range(0, columns.size, step):
        at = columns[lo : lo + step]
        rows = np.ascontiguousarray(np.moveaxis(x[:, :, at], -1, 0))  # block × chain × draw
        split = _split_chains(rows)
        z = _z_scale(split)
        bulk[at] = _ess(z)
        tail[at] = _ess_tail(rows, prob)
        if n_chain >= 2:
            r_hat[at] = _rank_rhat(_rhat(z), split)
    return r_hat, bulk, tail


# -- ArviZ's steps, in its order, on blocks of columns (column × chain × draw) -----------------
def _not_valid(x: np.ndarray, min_chains: int) -> bool:
    x2 = np.atleast_2d(x)
    return bool(np.isnan(x).any()) or x2.shape[0] < min_chains or x2.shape[1] < MIN_DRAWS


def _one_column(x: np.ndarray) -> np.ndarray:
    """(chain, draw) draws, or one chain's (draw,), as a block of one column."""
    return np.atleast_2d(x)[None]


def _split_chains(x: np.ndarray) -> np.ndarray:
    half = x.shape[-1] // 2
    return np.concatenate((x[..., :half], x[..., -half:]), axis=-2)


def _z_scale(x: np.ndarray) -> np.ndarray:
    """Normal scores of each column's average ranks over all its chains (Blom's offset)."""
    from scipy import special

    flat = x.reshape(x.shape[0], -1)
    rank = (_average_ranks(flat) - BLOM_OFFSET) / (flat.shape[1] - 2 * BLOM_OFFSET + 1)
    # stats.norm.ppf is ndtri(q) * 1 + 0; called directly, without its argument checks
    return special.ndtri(rank).reshape(x.shape)


def _average_ranks(flat: np.ndarray) -> np.ndarray:
    """Ranks 1..n of each row, ties given their mean rank: scipy.stats.rankdata(method=
    "average") row by row (exact half-integers either way), with an unstable sort, which
    ties do not mind and which takes half the time of rankdata's stable one."""
    order = np.argsort(flat, axis=-1)
    ordered = np.take_along_axis(flat, order, axis=-1)
    n = flat.shape[1]
    change = ordered[:, 1:] != ordered[:, :-1]
    position = np.arange(n)
    starts = np.ones(flat.shape, dtype=bool)  # a run of equal values begins here
    starts[:, 1:] = change
    ends = np.ones(flat.shape, dtype=bool)  # ... or ends here
    ends[:, :-1] = change
    first = np.maximum.accumulate(np.where(starts, position, 0), axis=-1)
    last = np.minimum.accumulate(np.where(ends, position, n)[:, ::-1], axis=-1)[:, ::-1]
    ranks = np.empty(flat.shape)
    np.put_along_axis(ranks, order, (first + 1) + (last - first) / 2, axis=-1)
    return ranks


def _sequential_variance(x: np.ndarray, ddof: int) -> np.ndarray:
    """Variance along the last axis as ArviZ's numba ``stats_variance_1d``: Σx and Σx²
    accumulated left to right, then E[x²] − E[x]², times n / (n − ddof)."""
    n = x.shape[-1]
    total = np.add.accumulate(x, axis=-1)[..., -1]
    total_sq = np.add.accumulate(x * x, axis=-1)[..., -1]
    mean = total / n
    return (total_sq / n - mean * mean) * (n / (n - ddof))


def _rhat(x: np.ndarray) -> np.ndarray:
    num_samples = x.shape[-1]
    chain_mean = np.mean(x, axis=-1)
    chain_var = _sequential_variance(x, ddof=1)
    between = num_samples * _sequential_variance(chain_mean, ddof=1)
    within = np.mean(chain_var, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):  # constant draws: NaN, as ArviZ
        return np.sqrt((between / within + num_samples - 1) / num_samples)


def _rank_rhat(bulk: np.ndarray, split: np.ndarray) -> np.ndarray:
    """The larger of the bulk R-hat and the folded one (|x − median| ranked), as Python's
    ``max(bulk, folded)``: the bulk value unless the folded one is larger."""
    median = np.median(split.reshape(split.shape[0], -1), axis=-1)
    folded = _rhat(_z_scale(abs(split - median[:, None, None])))
    return np.where(folded > bulk, folded, bulk)


def _autocov(x: np.ndarray) -> np.ndarray:
    """Autocovariance of each chain at every lag, by FFT (ArviZ's ``autocov``)."""
    from scipy.fftpack import next_fast_len  # ArviZ's padding length, for the same rounding

    n = x.shape[-1]
    m = next_fast_len(2 * n)
    x = x - x.mean(axis=-1, keepdims=True)
    spectrum = np.fft.rfft(x, n=m, axis=-1)
    spectrum *= np.conjugate(spectrum)
    cov = np.fft.irfft(spectrum, n=m, axis=-1)[..., :n]
    cov /= n
    return cov


def _ess(x: np.ndarray) -> np.ndarray:
    """ESS of each column's (chain, draw) values: Geyer's initial monotone sequence
    (ArviZ's ``_ess``); a column whose range is below float resolution gets its size."""
    x = np.asarray(x, dtype=float)
    k, n_chain, n_draw = x.shape
    out = np.full(k, float(n_chain * n_draw))
    flat = x.reshape(k, -1)
    varies = ~((flat.max(axis=-1) - flat.min(axis=-1)) < np.finfo(float).resolution)
    if not varies.any():
        return out
    x = x[varies]
    acov = _autocov(x)
    chain_mean = x.mean(axis=-1)
    # each lag's mean over the chains, summed along a contiguous axis: NumPy's pairwise sum
    # in the order ArviZ's np.mean(acov[:, t]) takes
    lag_mean = np.ascontiguousarray(acov.transpose(0, 2, 1)).mean(axis=-1)  # column × lag
    mean_var = lag_mean[:, 0] * n_draw / (n_draw - 1.0)
    var_plus = mean_var * (n_draw - 1.0) / n_draw
    if n_chain > 1:
        var_plus += _sequential_variance(chain_mean, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = 1.0 - (mean_var[:, None] - lag_mean) / var_plus[:, None]
    rho[:, 0] = 1.0
    out[varies] = _geyer_ess(rho, n_chain)
    return out


def _geyer_ess(rho_all: np.ndarray, n_chain: int) -> np.ndarray:
    """ESS from every lag's autocorrelation ``rho_all`` (column × lag, lag 0 at 1), with the
    values ArviZ's loops leave: its first loop walks pairs (ρ_2j, ρ_2j+1) while their sum is
    positive, keeping a pair whose sum is ≥ 0, and its last even term when positive; its
    second loop lowers each pair sum to the running minimum of those before (each ρ of the
    pair set to half of it, which sums back to the minimum exactly)."""
    k, n_draw = rho_all.shape
    n_pairs = len(range(1, n_draw - 3, 2))  # the first loop's iterations at most
    rows = np.arange(k)
    even = rho_all[:, 0 : 2 * n_pairs + 1 : 2]
    odd = rho_all[:, 1 : 2 * n_pairs + 2 : 2]
    pair = even + odd  # column × (n_pairs + 1)
    stops = ~(pair[:, :n_pairs] > 0.0)
    last = np.full(k, n_pairs)  # pairs walked
    if n_pairs:
        last = np.where(stops.any(axis=1), stops.argmax(axis=1), n_pairs)
    lag = np.arange(n_draw)
    rho = np.where(lag < np.maximum(2 * last, 2)[:, None], rho_all, 0.0)
    last_even, last_odd = even[rows, last], odd[rows, last]
    keep = (last > 0) & (pair[rows, last] >= 0)
    rho[rows[keep], 2 * last[keep]] = last_even[keep]
    rho[rows[keep], 2 * last[keep] + 1] = last_odd[keep]
    positive = last_even > 0
    rho[rows[positive], 2 * last[positive]] = last_even[positive]
    sums = rho[:, 0 : 2 * n_pairs : 2] + rho[:, 1 : 2 * n_pairs : 2]  # pairs before the last
    floor = np.minimum.accumulate(sums, axis=1)
    lower = (sums[:, 1:] > floor[:, :-1]) & (np.arange(1, n_pairs) < last[:, None])
    half = floor[:, :-1] / 2.0
    rho[:, 2 : 2 * n_pairs : 2] = np.where(lower, half, rho[:, 2 : 2 * n_pairs : 2])
    rho[:, 3 : 2 * n_pairs : 2] = np.where(lower, half, rho[:, 3 : 2 * n_pairs : 2])
    # Σρ over the first 2·last lags, summed row by row as ArviZ sums its one column
    total = np.empty(k)
    for walked in np.unique(last):
        sel = last == walked
        total[sel] = np.sum(rho[sel, : 2 * walked], axis=1)
    ess = n_chain * n_draw
    tau = -1.0 + 2.0 * total + rho[rows, 2 * last]
    tau = np.maximum(tau, 1 / np.log10(ess))
    return np.where(np.isnan(rho).any(axis=1), np.nan, ess / tau)


def _ess_tail(x: np.ndarray, prob: Sequence[float]) -> np.ndarray:
    """The smaller ESS of the two quantile indicators, as Python's ``min(low, high)``."""
    low, high = _ess_quantile(x, prob[0]), _ess_quantile(x, prob[1])
    return np.where(high < low, high, low)


def _ess_quantile(x: np.ndarray, prob: float) -> np.ndarray:
    # R's type-7 quantile over all of a column's draws, in the arithmetic of SciPy's
    # mquantiles(alphap=1, betap=1) that ArviZ calls
    flat = x.reshape(x.shape[0], -1)
    n = flat.shape[1]
    alphap = betap = 1
    p = np.atleast_1d(np.asarray(prob))
    aleph = n * p + (alphap + p * (1.0 - alphap - betap))
    at = int(np.floor(aleph.clip(1, n - 1)).astype(int)[0])
    gamma = (aleph - at).clip(0, 1)
    part = np.partition(flat, (at - 1, at), axis=-1)
    quantile = (1.0 - gamma) * part[:, at - 1] + gamma * part[:, at]
    return _ess(_split_chains(x <= quantile[:, None, None]))
