"""REML beside the posterior: one table and one plot per model.

Reviewers ask for REML; Bayesian users want the posterior. :func:`compare_fits` lines the two
up parameter by parameter (variance components in lme4's ``VarCorr`` layout, variance shares
such as h², fixed effects) and :func:`plot_comparison` draws the posterior densities with the
REML estimate and its ±1.96 SE interval marked. Rows are matched by name, so both fits must
come from the same formula and data.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bayeslmm.results.summary import posterior_summary

#: Columns of the comparison table.
COMPARE_COLUMNS = (
    "kind",
    "parameter",
    "reml_estimate",
    "reml_se",
    "post_mean",
    "post_median",
    "hdi_low",
    "hdi_high",
    "reml_in_hdi",
)


def _vc_label(grp: Any, var1: Any, var2: Any) -> str:
    """``"id"``, ``"line:env"``, ``"line:(Intercept),env"`` or ``"Residual"``."""
    if var1 is None or (isinstance(var1, float) and np.isnan(var1)):
        return str(grp)
    if var2 is None or (isinstance(var2, float) and np.isnan(var2)):
        return f"{grp}:{var1}"
    return f"{grp}:{var1},{var2}"


def _reml_rows(reml) -> dict[tuple[str, str], tuple[float, float]]:
    rows: dict[tuple[str, str], tuple[float, float]] = {}
    for r in reml.variance_components().itertuples(index=False):
        rows[("variance component", _vc_label(r.grp, r.var1, r.var2))] = (r.vcov, r.se)
    for name, r in reml.heritability().iterrows():
        rows[("variance share", str(name))] = (r["estimate"], r["se"])
    for name, r in reml.fixed_effects().iterrows():
        rows[("fixed effect", _fixed_name(str(name)))] = (r["estimate"], r["se"])
    return rows


def _fixed_name(name: str) -> str:
    return "Intercept" if name == "(Intercept)" else name


def _bayes_draws(bayes) -> dict[tuple[str, str], np.ndarray]:
    """Posterior draws (chain, draw) of every parameter the REML table can hold."""
    draws: dict[tuple[str, str], np.ndarray] = {}
    for (grp, var1, var2), values in bayes.variance_component_draws().items():
        draws[("variance component", _vc_label(grp, var1, var2))] = values[0]
    shares = bayes.heritability_draws()
    for comp in shares["component"].values:
        draws[("variance share", str(comp))] = shares.sel(component=comp).values
    if "beta" in bayes.posterior:
        beta = bayes.posterior["beta"].transpose("chain", "draw", ...)
        for name in beta[beta.dims[-1]].values:
            draws[("fixed effect", _fixed_name(str(name)))] = beta.sel({beta.dims[-1]: name}).values
    return draws


def compare_fits(reml, bayes, hdi_prob: float | None = None) -> pd.DataFrame:
    """Side-by-side table of a REML fit and a Bayesian fit of the same model.

    Parameters
    ----------
    reml : RemlFit
        From ``LMM(...).fit(method="reml")``.
    bayes : BayesFit
        From ``LMM(...).fit(method="nuts")``.
    hdi_prob : float, optional
        Mass of the highest-density interval (default: the Bayesian fit's).

    Returns
    -------
    pandas.DataFrame
        One row per parameter (variance components, variance shares such as ``h2``, fixed
        effects) with columns ``kind``, ``parameter``, ``reml_estimate``, ``reml_se``,
        ``post_mean``, ``post_median``, ``hdi_low``, ``hdi_high`` and ``reml_in_hdi``.
        Parameters that only one engine reports have NaN on the other side.

    Examples
    --------
    >>> model = LMM("bp ~ 1 + (1|id)", data=df, kinship={"id": K})  # doctest: +SKIP
    >>> compare_fits(model.fit(method="reml"), model.fit())  # doctest: +SKIP
    """
    hdi_prob = hdi_prob or getattr(bayes, "hdi_prob", 0.95)
    point = _reml_rows(reml)
    draws = _bayes_draws(bayes)
    keys = list(point) + [k for k in draws if k not in point]
    rows = []
    for key in keys:
        est, se = point.get(key, (np.nan, np.nan))
        if key in draws:
            values = np.asarray(draws[key], dtype=float)
            s = posterior_summary(values, hdi_prob)
            mean, median = s["mean"], float(np.median(values))
            low, high = s["hdi_low"], s["hdi_high"]
        else:
            mean = median = low = high = np.nan
        inside = bool(low <= est <= high) if np.isfinite(est) and np.isfinite(low) else None
        rows.append((key[0], key[1], est, se, mean, median, low, high, inside))
    return pd.DataFrame(rows, columns=list(COMPARE_COLUMNS))


def plot_comparison(reml, bayes, kinds: tuple[str, ...] = ("variance share",), axes=None):
    """Posterior densities with the REML estimate and its ±1.96 SE interval marked.

    Parameters
    ----------
    reml, bayes
        The two fits of one model (see :func:`compare_fits`).
    kinds : tuple of str
        Which rows to draw: any of ``"variance share"``, ``"variance component"``,
        ``"fixed effect"``.
    axes : sequence of matplotlib Axes, optional
        One per parameter drawn; created when omitted.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> fig = plot_comparison(reml_fit, bayes_fit)  # doctest: +SKIP
    >>> fig.savefig("reml_vs_posterior.png")  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt
    from scipy.stats import gaussian_kde

    point = _reml_rows(reml)
    draws = _bayes_draws(bayes)
    keys = [k for k in draws if k[0] in kinds]
    if not keys:
        raise ValueError(f"No parameters of kinds {kinds} to plot.")
    if axes is None:
        fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3), squeeze=False)
        axes = axes[0]
    fig = axes[0].figure
    for ax, key in zip(axes, keys, strict=False):
        values = np.asarray(draws[key], dtype=float).ravel()
        grid = np.linspace(values.min(), values.max(), 200)
        if np.ptp(values) > 0:
            ax.plot(grid, gaussian_kde(values)(grid), color="C0", label="posterior")
        est, se = point.get(key, (np.nan, np.nan))
        if np.isfinite(est):
            ax.axvline(est, color="C3", label="REML")
            if np.isfinite(se):
                ax.axvspan(
                    est - 1.96 * se,
                    est + 1.96 * se,
                    color="C3",
                    alpha=0.15,
                    label="REML ± 1.96 SE",
                )
        ax.set_title(key[1])
        ax.set_yticks([])
    axes[0].legend(fontsize="small")
    fig.tight_layout()
    return fig
