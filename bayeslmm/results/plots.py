"""Plots of posterior distributions (matplotlib; no display needed)."""

from __future__ import annotations

from typing import Any

import numpy as np

#: Posterior variables drawn in the trace and rank plots (scalars per draw), in this order;
#: other ``var_*`` variables follow, the residual last. At most :data:`MAX_TRACE` are drawn.
TRACE_FIRST = ("h2", "var_residual", "var_olre")
MAX_TRACE = 6


def figure_axes(figsize: tuple[float, float] = (5.5, 3.5)) -> Any:
    """Axes on a stand-alone :class:`~matplotlib.figure.Figure`, outside pyplot.

    Files written by bayeslmm are drawn here: pyplot is not imported, so the user's backend,
    open figures and interactive state stay as they were, and nothing needs closing.

    Examples
    --------
    >>> ax = figure_axes()
    >>> type(ax.figure).__name__
    'Figure'
    """
    from matplotlib.figure import Figure

    return Figure(figsize=figsize).add_subplot()


def plot_posterior_density(
    draws: Any,
    *,
    label: str = "h²",
    hdi_prob: float = 0.95,
    ax: Any = None,
    bounds: tuple[float, float] | None = (0.0, 1.0),
    reference: float | None = None,
    reference_label: str = "REML",
) -> Any:
    """Kernel density of posterior draws with the HDI shaded and the mean marked.

    Parameters
    ----------
    draws : array_like
        Posterior draws (any shape; flattened).
    label : str
        Name of the quantity, for the axis and legend.
    hdi_prob : float
        Mass of the shaded highest-density interval.
    ax : matplotlib Axes, optional
        Axes to draw into (default: a new figure).
    bounds : tuple, optional
        Support of the quantity, used to reflect the density at the edges (proportions lie
        in [0, 1]); None for an unbounded quantity.
    reference : float, optional
        A point estimate to mark (e.g. the REML h²).
    reference_label : str

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> ax = plot_posterior_density(np.random.default_rng(0).beta(4, 6, 500))
    >>> ax.get_xlabel()
    'h²'
    """
    import arviz as az
    import matplotlib.pyplot as plt
    from scipy import stats

    x = np.asarray(draws, dtype=float).ravel()
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.5))
    lo, hi = (float(x.min()), float(x.max())) if bounds is None else bounds
    pad = 0.05 * (x.max() - x.min() or 1.0)
    grid = np.linspace(max(lo, x.min() - pad), min(hi, x.max() + pad), 400)
    if np.ptp(x) > 0:
        kde = stats.gaussian_kde(x)
        dens = kde(grid)
        if bounds is not None:  # reflection keeps mass from leaking past the support
            dens = dens + kde(2 * lo - grid) + kde(2 * hi - grid)
    else:
        dens = np.zeros_like(grid)
    low, high = az.hdi(x, hdi_prob=hdi_prob)
    ax.plot(grid, dens, color="C0", lw=2)
    inside = (grid >= low) & (grid <= high)
    ax.fill_between(
        grid[inside], dens[inside], color="C0", alpha=0.3,
        label=f"{int(round(100 * hdi_prob))}% HDI [{low:.3f}, {high:.3f}]",
    )  # fmt: skip
    ax.axvline(x.mean(), color="C0", ls="--", lw=1, label=f"mean {x.mean():.3f}")
    if reference is not None and np.isfinite(reference):
        ax.axvline(reference, color="C3", lw=1.5, label=f"{reference_label} {reference:.3f}")
    ax.set_xlabel(label)
    ax.set_ylabel("posterior density")
    ax.set_ylim(bottom=0)
    ax.legend(frameon=False, fontsize="small")
    return ax


def trace_variables(posterior: Any) -> list[str]:
    """Scalar-per-draw variance parameters to draw: h², the variances, the residual."""
    scalar = [
        str(v)
        for v, da in posterior.data_vars.items()
        if set(da.dims) == {"chain", "draw"} and (str(v) == "h2" or str(v).startswith("var_"))
    ]
    first = [v for v in TRACE_FIRST if v in scalar and v != "var_residual"]
    rest = [v for v in scalar if v not in first and v != "var_residual"]
    ordered = first + rest + (["var_residual"] if "var_residual" in scalar else [])
    return ordered[:MAX_TRACE]


def trace_figure(idata: Any, names: list[str]) -> Any:
    """ArviZ trace plots on a stand-alone Figure (pyplot untouched)."""
    import arviz as az
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.0, 1.9 * len(names)), dpi=80)
    axes = fig.subplots(len(names), 2, squeeze=False)
    az.plot_trace(idata, var_names=names, axes=axes, compact=False)
    fig.tight_layout()
    return fig


def rank_figure(idata: Any, names: list[str]) -> Any:
    """ArviZ rank plots on a stand-alone Figure, one panel per variable."""
    import arviz as az
    from matplotlib.figure import Figure

    ncols = min(len(names), 3)
    nrows = -(-len(names) // ncols)
    fig = Figure(figsize=(3.2 * ncols, 2.6 * nrows), dpi=80)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    az.plot_rank(idata, var_names=names, ax=axes[: len(names)])
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig
