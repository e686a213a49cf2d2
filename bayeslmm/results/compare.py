"""Two fits of one model side by side: REML beside the posterior, Laplace ML beside NUTS, …

Reviewers ask for REML; Bayesian users want the posterior. :func:`compare_fits` lines up any
two fits of the same model and data, parameter by parameter (variance components in lme4's
``VarCorr`` layout, variance shares such as h², fixed effects): every engine's tables share
their rows and leading columns (:mod:`bayeslmm.results.tables`), so the comparison is a join.
:func:`plot_comparison` draws the posterior densities of a Bayesian fit with a point fit's
estimate and its ±1.96 SE interval marked.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bayeslmm.errors import SpecificationError
from bayeslmm.results.fit import FitTables

#: Leading columns of the comparison table; then, per fit, ``<label>_estimate``,
#: ``<label>_se``, ``<label>_ci_low``, ``<label>_ci_high`` (label: the engine's name).
KEY_COLUMNS = ("kind", "parameter")

#: The columns a REML-beside-posterior comparison has always had (kept for that pair).
LEGACY_COLUMNS = (
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


def _check_same_model(a: Any, b: Any) -> None:
    for fit in (a, b):
        if not isinstance(fit, FitTables):
            raise SpecificationError(
                f"compare_fits takes two fits made by bayeslmm (LMM(...).fit(...)); got a "
                f"{type(fit).__name__}."
            )
    sa, sb = a.spec, b.spec
    problems = []
    if sa.formula.replace(" ", "") != sb.formula.replace(" ", ""):
        problems.append(f"formulas {sa.formula!r} and {sb.formula!r}")
    if sa.family != sb.family:
        problems.append(f"families {sa.family!r} and {sb.family!r}")
    if sa.n_obs != sb.n_obs:
        problems.append(f"{sa.n_obs} and {sb.n_obs} observations")
    elif not np.array_equal(np.asarray(sa.y, float), np.asarray(sb.y, float)):
        problems.append("the same number of rows but different responses (other data or order)")
    if problems:
        raise SpecificationError(
            "compare_fits lines up two fits of ONE model and data set; these differ in "
            + "; ".join(problems)
            + ". Fit both engines from the same LMM object (model.fit(method='reml') and "
            "model.fit()); to choose between different models use likelihood-ratio tests "
            "(RemlFit.lrt) or information criteria."
        )


def _rows(fit: FitTables, prob: float) -> pd.DataFrame:
    """The fit's common table rows (kind, parameter) with its estimate, se and interval."""
    parts = []
    vc = fit.variance_components(prob)
    parts.append(
        pd.DataFrame(
            {
                "kind": "variance component",
                "parameter": [
                    _vc_label(g, v1, v2)
                    for g, v1, v2 in zip(vc["grp"], vc["var1"], vc["var2"], strict=True)
                ],
                "estimate": vc["vcov"],
                "se": vc["se"],
                "ci_low": vc["ci_low"],
                "ci_high": vc["ci_high"],
            }
        )
    )
    for kind, table in (
        ("variance share", fit.heritability(prob)),
        ("fixed effect", _spec_names(fit, fit.fixed_effects(prob))),
    ):
        parts.append(
            pd.DataFrame(
                {
                    "kind": kind,
                    "parameter": [str(i) for i in table.index],
                    **{c: table[c].to_numpy() for c in ("estimate", "se", "ci_low", "ci_high")},
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def _spec_names(fit: FitTables, table: pd.DataFrame) -> pd.DataFrame:
    table = table.copy()
    table.index = list(fit.spec.fixed_names)
    return table


def _label(fit: FitTables) -> str:
    return "nuts" if fit.engine == "nuts" else fit.engine


def compare_fits(fit_a: Any, fit_b: Any, hdi_prob: float | None = None) -> pd.DataFrame:
    """Side-by-side table of two fits of the same model (any engines).

    Parameters
    ----------
    fit_a, fit_b : BayesFit, RemlFit or LaplaceFit
        Two fits of one model and data set (e.g. ``model.fit(method="reml")`` and
        ``model.fit()``). Fits of different formulas, families or data are refused with a
        message.
    hdi_prob : float, optional
        Interval mass (default: a Bayesian fit's own, else 0.95).

    Returns
    -------
    pandas.DataFrame
        One row per parameter (variance components, variance shares such as ``h2``, fixed
        effects) with ``kind``, ``parameter`` and, per fit, ``<label>_estimate``,
        ``<label>_se``, ``<label>_ci_low``, ``<label>_ci_high`` (label ``reml``, ``nuts`` or
        ``laplace``; ``_a``/``_b`` appended when both fits come from one engine), then
        ``agree``: whether each estimate lies in the other's interval. A REML fit beside a
        posterior also has the columns ``reml_estimate, reml_se, post_mean, post_median,
        hdi_low, hdi_high, reml_in_hdi``.

    Examples
    --------
    >>> model = LMM("bp ~ 1 + (1|id)", data=df, kinship={"id": K})  # doctest: +SKIP
    >>> compare_fits(model.fit(method="reml"), model.fit())  # doctest: +SKIP
    """
    _check_same_model(fit_a, fit_b)
    if hdi_prob is None:
        hdi_prob = next((f.hdi_prob for f in (fit_a, fit_b) if hasattr(f, "hdi_prob")), 0.95)
    la, lb = _label(fit_a), _label(fit_b)
    if la == lb:
        la, lb = f"{la}_a", f"{lb}_b"
    ra, rb = _rows(fit_a, hdi_prob), _rows(fit_b, hdi_prob)
    merged = pd.merge(
        ra.add_prefix(f"{la}_").rename(
            columns={f"{la}_kind": "kind", f"{la}_parameter": "parameter"}
        ),
        rb.add_prefix(f"{lb}_").rename(
            columns={f"{lb}_kind": "kind", f"{lb}_parameter": "parameter"}
        ),
        on=list(KEY_COLUMNS),
        how="outer",
        sort=False,
    )

    def inside(est: str, lo: str, hi: str) -> pd.Series:
        ok = merged[[est, lo, hi]].notna().all(axis=1)
        return (merged[est] >= merged[lo]) & (merged[est] <= merged[hi]) | ~ok

    merged["agree"] = inside(f"{la}_estimate", f"{lb}_ci_low", f"{lb}_ci_high") & inside(
        f"{lb}_estimate", f"{la}_ci_low", f"{la}_ci_high"
    )
    engines = {fit_a.engine, fit_b.engine}
    if engines == {"reml", "nuts"}:
        r, p = ("reml", "nuts")
        merged["reml_estimate"] = merged[f"{r}_estimate"]
        merged["reml_se"] = merged[f"{r}_se"]
        merged["post_mean"] = merged[f"{p}_estimate"]
        bayes = fit_a if fit_a.engine == "nuts" else fit_b
        medians = {k: float(np.median(v)) for k, v in _posterior_draws(bayes).items()}
        merged["post_median"] = [
            medians.get((k, par), np.nan)
            for k, par in zip(merged["kind"], merged["parameter"], strict=True)
        ]
        merged["hdi_low"] = merged[f"{p}_ci_low"]
        merged["hdi_high"] = merged[f"{p}_ci_high"]
        merged["reml_in_hdi"] = [
            bool(lo <= est <= hi) if np.isfinite([est, lo, hi]).all() else None
            for est, lo, hi in zip(
                merged["reml_estimate"], merged["hdi_low"], merged["hdi_high"], strict=True
            )
        ]
    return merged


def plot_comparison(
    fit_a,
    fit_b,
    kinds: tuple[str, ...] = ("variance share",),
    axes=None,
    columns: int = 3,
):
    """Posterior densities of the Bayesian fit with the point fit's estimate and ±1.96 SE.

    One panel per quantity (a variance share that repeats another, such as the share of the
    only kinship term beside ``h2``, is drawn once), titled with what it is and with the
    x axis in the quantity's units: a proportion for variance shares, the response's units
    squared for variance components, the response's units for fixed effects.

    Parameters
    ----------
    fit_a, fit_b
        A point fit (REML or Laplace) and a Bayesian fit of one model, in either order.
    kinds : tuple of str
        Which rows to draw: any of ``"variance share"``, ``"variance component"``,
        ``"fixed effect"``.
    axes : sequence of matplotlib Axes, optional
        One per parameter drawn; created when omitted.
    columns : int
        Panels per row when the axes are created (rows are added as needed).

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> fig = plot_comparison(reml_fit, bayes_fit)  # doctest: +SKIP
    >>> fig.savefig("reml_vs_posterior.png")  # doctest: +SKIP
    """
    from scipy.stats import gaussian_kde

    _check_same_model(fit_a, fit_b)
    bayes = [f for f in (fit_a, fit_b) if f.engine == "nuts"]
    point = [f for f in (fit_a, fit_b) if f.engine != "nuts"]
    if len(bayes) != 1 or len(point) != 1:
        raise SpecificationError(
            "plot_comparison draws a posterior with a point estimate: give one Bayesian fit "
            "and one REML or Laplace fit (compare_fits tabulates any two fits)."
        )
    bayes, point = bayes[0], point[0]
    draws = _posterior_draws(bayes)
    estimates = _rows(point, 0.95).set_index(["kind", "parameter"])
    order = ("variance share", "variance component", "fixed effect")  # the headline first
    keys = sorted(
        (k for k in _distinct(draws) if k[0] in kinds),
        key=lambda k: order.index(k[0]) if k[0] in order else len(order),
    )
    if not keys:
        raise ValueError(f"No parameters of kinds {kinds} to plot.")
    if axes is None:
        from matplotlib.figure import Figure

        ncol = max(1, min(columns, len(keys)))
        nrow = -(-len(keys) // ncol)
        fig = Figure(figsize=(3.8 * ncol, 3.0 * nrow + 0.6), layout="constrained")
        grid = fig.subplots(nrow, ncol, squeeze=False).ravel()
        for extra in grid[len(keys) :]:
            extra.set_visible(False)
        axes = grid[: len(keys)]
    axes = list(axes)
    if len(axes) < len(keys):
        raise ValueError(f"plot_comparison draws {len(keys)} panels; {len(axes)} axes given.")
    fig = axes[0].figure
    response = bayes.spec.response
    for ax, key in zip(axes, keys, strict=False):
        values = np.asarray(draws[key], dtype=float).ravel()
        grid = np.linspace(values.min(), values.max(), 200)
        if np.ptp(values) > 0:
            ax.plot(grid, gaussian_kde(values)(grid), color="C0", label="posterior (NUTS)")
        if key in estimates.index:
            est, se = estimates.loc[key, ["estimate", "se"]]
            if np.isfinite(est):
                ax.axvline(est, color="C3", label=f"{point.engine.upper()} estimate")
                if np.isfinite(se):
                    ax.axvspan(
                        est - 1.96 * se,
                        est + 1.96 * se,
                        color="C3",
                        alpha=0.15,
                        label=f"{point.engine.upper()} ± 1.96 SE",
                    )
        title, xlabel = _panel_labels(key, response)
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("posterior density")
        ax.set_yticks([])
        ax.set_ylim(bottom=0)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(
        handles, labels, loc="outside lower center", ncols=len(labels), frameon=False,
        fontsize="small",
    )  # fmt: skip
    return fig


def _distinct(draws: dict[tuple[str, str], np.ndarray]) -> list[tuple[str, str]]:
    """Keys in order, without a variance share whose draws repeat an earlier one's.

    ``h2`` and the share of the only kinship term are the same quantity: one panel.
    """
    seen: list[np.ndarray] = []
    keys = []
    for key, values in draws.items():
        if key[0] == "variance share":
            if any(v.shape == values.shape and np.array_equal(v, values) for v in seen):
                continue
            seen.append(values)
        keys.append(key)
    return keys


def _panel_labels(key: tuple[str, str], response: str) -> tuple[str, str]:
    """A panel's title and x-axis label (with units) for a (kind, parameter) key."""
    kind, name = key
    if kind == "variance share":
        title = "heritability h²" if name == "h2" else f"variance share of {name}"
        return title, "proportion of phenotypic variance"
    if kind == "variance component":
        title = "residual variance" if name == "Residual" else f"variance of {name}"
        if "," in name:
            title = f"covariance {name}"
        return title, f"variance ({response} units²)"
    return f"fixed effect {name}", f"effect ({response} units)"


def _posterior_draws(bayes) -> dict[tuple[str, str], np.ndarray]:
    """Posterior draws (chain, draw) of the variance shares, components and fixed effects."""
    draws: dict[tuple[str, str], np.ndarray] = {}
    for (grp, var1, var2), values in bayes.variance_component_draws().items():
        draws[("variance component", _vc_label(grp, var1, var2))] = values[0]
    shares = bayes.heritability_draws()
    components = [str(c) for c in shares["component"].values]
    for comp in sorted(components, key=lambda c: c != "h2"):  # h2 first: the headline
        draws[("variance share", str(comp))] = shares.sel(component=comp).values
    if "beta" in bayes.posterior:
        beta = bayes.posterior["beta"].transpose("chain", "draw", ...)
        for name in beta[beta.dims[-1]].values:
            draws[("fixed effect", str(name))] = beta.sel({beta.dims[-1]: name}).values
    return draws
