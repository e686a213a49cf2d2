"""Posterior predictive checks from observed data and replicated draws.

Works on plain arrays, whatever produced the draws (``pm.sample_posterior_predictive``, a
Laplace fit's parametric bootstrap, a simulation): ``y_rep`` has one row per draw. Arrays with
leading (chain, draw) dimensions, e.g. ``idata.posterior_predictive["y"]``, are flattened.

For each test statistic T the summary reports T(y), the distribution of T(y_rep) and the
posterior predictive p-value p = P(T(y_rep) > T(y)) + ½ P(T(y_rep) = T(y)) (the mid-p value:
discrete statistics such as a proportion of zeros tie often; Gelman et al. 2013, *Bayesian
Data Analysis*, ch. 6). Values near 0 or 1 flag a feature of the data the model does not
reproduce (e.g. excess zeros or overdispersion for a Poisson model without an
observation-level effect).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

__all__ = ["plot_ppc", "ppc_statistics", "ppc_summary", "response_kind"]

Statistic = Callable[[np.ndarray], np.ndarray]


def _as_draws(y_rep: ArrayLike, n_obs: int) -> np.ndarray:
    arr = np.asarray(y_rep, dtype=float)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim > 2:
        arr = arr.reshape(-1, arr.shape[-1])
    if arr.shape[-1] != n_obs:
        raise ValueError(
            f"y_rep has {arr.shape[-1]} observations per draw but y has {n_obs}; pass draws "
            "as an (n_draws, n_obs) array (or (chain, draw, n_obs))."
        )
    return arr


def response_kind(y: ArrayLike) -> str:
    """``"binary"`` (all 0/1), ``"count"`` (non-negative integers) or ``"continuous"``.

    Examples
    --------
    >>> response_kind([0, 1, 1]), response_kind([0, 3, 7]), response_kind([0.5, 1.2])
    ('binary', 'count', 'continuous')
    """
    y = np.asarray(y, dtype=float)
    if np.all((y == 0) | (y == 1)):
        return "binary"
    if np.all((y >= 0) & (y == np.round(y))):
        return "count"
    return "continuous"


def ppc_statistics(kind: str) -> dict[str, Statistic]:
    """The default test statistics for a response kind; each maps (n_draws, n_obs) → (n_draws,).

    - binary: ``case_fraction`` (mean);
    - count: ``mean``, ``variance``, ``prop_zeros``, ``max``, ``dispersion`` (variance/mean);
    - continuous: ``mean``, ``variance``, ``min``, ``max``.

    Examples
    --------
    >>> sorted(ppc_statistics("binary"))
    ['case_fraction']
    """
    if kind == "binary":
        return {"case_fraction": lambda a: a.mean(axis=1)}
    if kind == "count":
        return {
            "mean": lambda a: a.mean(axis=1),
            "variance": lambda a: a.var(axis=1, ddof=1),
            "prop_zeros": lambda a: (a == 0).mean(axis=1),
            "max": lambda a: a.max(axis=1),
            "dispersion": lambda a: a.var(axis=1, ddof=1) / np.maximum(a.mean(axis=1), 1e-300),
        }
    if kind == "continuous":
        return {
            "mean": lambda a: a.mean(axis=1),
            "variance": lambda a: a.var(axis=1, ddof=1),
            "min": lambda a: a.min(axis=1),
            "max": lambda a: a.max(axis=1),
        }
    raise ValueError(f"Unknown response kind '{kind}'; use 'binary', 'count' or 'continuous'.")


def ppc_summary(
    y: ArrayLike,
    y_rep: ArrayLike,
    kind: str | None = None,
    statistics: Mapping[str, Statistic] | None = None,
    interval: float = 0.9,
) -> pd.DataFrame:
    """Observed vs replicated test statistics with posterior predictive p-values.

    Parameters
    ----------
    y : array_like, shape (n_obs,)
        Observed response.
    y_rep : array_like, shape (n_draws, n_obs) or (chain, draw, n_obs)
        Replicated responses, one row per posterior draw.
    kind : str, optional
        ``"binary"``, ``"count"`` or ``"continuous"``; inferred from ``y`` when omitted.
    statistics : dict, optional
        Name → function of an (n_draws, n_obs) array returning (n_draws,); replaces the
        defaults of :func:`ppc_statistics`.
    interval : float
        Central probability of the reported replicated interval.

    Returns
    -------
    pandas.DataFrame
        Index: statistic; columns ``observed``, ``rep_mean``, ``rep_sd``, ``rep_lower``,
        ``rep_upper``, ``p_value`` (mid-p, P(T_rep > T_obs) + ½ P(T_rep = T_obs)).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = rng.poisson(2.0, 50)
    >>> table = ppc_summary(y, rng.poisson(2.0, (400, 50)))
    >>> list(table.index)
    ['mean', 'variance', 'prop_zeros', 'max', 'dispersion']
    """
    y = np.asarray(y, dtype=float).ravel()
    draws = _as_draws(y_rep, y.size)
    kind = kind or response_kind(y)
    stats = dict(statistics) if statistics is not None else ppc_statistics(kind)
    lo, hi = (1.0 - interval) / 2.0, 1.0 - (1.0 - interval) / 2.0
    rows = {}
    for name, fun in stats.items():
        t_obs = float(np.asarray(fun(y[None, :])).ravel()[0])
        t_rep = np.asarray(fun(draws), dtype=float).ravel()
        p = float(np.mean(t_rep > t_obs) + 0.5 * np.mean(t_rep == t_obs))
        rows[name] = {
            "observed": t_obs,
            "rep_mean": float(t_rep.mean()),
            "rep_sd": float(t_rep.std(ddof=1)) if t_rep.size > 1 else float("nan"),
            "rep_lower": float(np.quantile(t_rep, lo)),
            "rep_upper": float(np.quantile(t_rep, hi)),
            "p_value": p,
        }
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "statistic"
    return out


def plot_ppc(
    y: ArrayLike,
    y_rep: ArrayLike,
    kind: str | None = None,
    ax=None,
    interval: float = 0.9,
    max_count: int | None = None,
    name: str | None = None,
):
    """Plot observed data against replicated draws.

    - counts: bars of the observed frequency of each count 0, 1, …, ``max_count`` (larger
      counts pooled in the last bar) with the replicated median and ``interval`` band;
    - binary: histogram of the replicated case fraction with the observed one as a line;
    - continuous: histogram of y with replicated density quantiles.

    Parameters
    ----------
    y, y_rep, kind, interval
        As :func:`ppc_summary`.
    ax : matplotlib Axes, optional
        Where to draw; a new figure otherwise.
    max_count : int, optional
        Largest count shown separately (default: the 99th percentile of y and y_rep, at
        least max(y) when that is ≤ 30).
    name : str, optional
        The response's name, for the axis label and title (a fit's ``spec.response``).

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> rng = np.random.default_rng(0)
    >>> ax = plot_ppc(rng.poisson(2, 40), rng.poisson(2, (200, 40)))
    >>> ax.get_xlabel()
    'count'
    """
    import matplotlib.pyplot as plt

    y = np.asarray(y, dtype=float).ravel()
    draws = _as_draws(y_rep, y.size)
    kind = kind or response_kind(y)
    if ax is None:
        _, ax = plt.subplots(figsize=(6.0, 3.8), layout="constrained")
    lo, hi = (1.0 - interval) / 2.0, 1.0 - (1.0 - interval) / 2.0
    label = f"replicated median and {int(round(100 * interval))}% interval"
    if kind == "count":
        if max_count is None:
            top = np.quantile(np.r_[y, draws.ravel()], 0.99)
            max_count = int(max(top, y.max() if y.max() <= 30 else 0))
        edges = np.arange(max_count + 1)
        obs = np.bincount(np.minimum(y, max_count).astype(int), minlength=max_count + 1)
        capped = np.minimum(draws, max_count).astype(int)
        rep = np.stack([np.bincount(row, minlength=max_count + 1) for row in capped]).astype(float)
        med, low, up = np.median(rep, 0), np.quantile(rep, lo, 0), np.quantile(rep, hi, 0)
        ax.bar(edges, obs, color="0.75", edgecolor="0.35", label="observed")
        ax.errorbar(
            edges,
            med,
            yerr=[med - low, up - med],
            fmt="o",
            color="C3",
            ms=4,
            capsize=3,
            label=label,
        )
        ax.set_xlabel(f"{name} (count)" if name else "count")
        ax.set_ylabel("number of observations")
        # At most ~12 labelled ticks: a label per count crowds the axis beyond that.
        step = max(1, int(np.ceil(edges.size / 12)))
        shown = [k for k in edges if k % step == 0 and k <= max_count - step / 2] + [max_count]
        pooled = draws.max() > max_count or y.max() > max_count
        ax.set_xticks(shown)
        ax.set_xticklabels(
            [str(k) for k in shown[:-1]] + [f"≥{max_count}" if pooled else str(max_count)]
        )
    elif kind == "binary":
        frac = draws.mean(axis=1)
        ax.hist(
            frac,
            bins=min(40, max(10, int(np.sqrt(frac.size)))),
            color="C0",
            alpha=0.6,
            label="replicated case fraction",
        )
        ax.axvline(y.mean(), color="k", lw=2, label=f"observed ({y.mean():.3f})")
        ax.set_xlabel(f"fraction of {name} = 1" if name else "case fraction")
        ax.set_ylabel("draws")
    else:
        bins = np.histogram_bin_edges(np.r_[y, draws.ravel()], bins=30)
        centres = 0.5 * (bins[1:] + bins[:-1])
        dens = np.stack([np.histogram(row, bins=bins, density=True)[0] for row in draws])
        ax.hist(y, bins=bins, density=True, color="0.75", edgecolor="0.35", label="observed")
        ax.plot(centres, np.median(dens, 0), color="C3", label=label)
        ax.fill_between(
            centres, np.quantile(dens, lo, 0), np.quantile(dens, hi, 0), color="C3", alpha=0.25
        )
        ax.set_xlabel(name or "y")
        ax.set_ylabel("density")
    ax.legend(frameon=False, fontsize="small")
    ax.set_title(f"Posterior predictive check of {name}" if name else "Posterior predictive check")
    return ax
