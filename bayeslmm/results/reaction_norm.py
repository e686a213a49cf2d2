"""Reaction norms: genetic variance and heritability along an environment axis.

A random-regression (GxE) term ``(1 + x | line)`` gives each genotype a reaction norm
a₀ + a₁ x with Cov(a₀, a₁) = Σ (and Σ ⊗ K across genotypes when a kinship is attached). At
environment value x the genotypic value is φ(x)ᵀ a with φ(x) = (1, x), so

    V_G(x) = φ(x)ᵀ Σ φ(x) = σ²_a0 + 2 x σ_a01 + x² σ²_a1,

and, with V_E(x) the residual variance there (per environment with ``sigma="~ env"``) and
V_other(x) the variance of the other random terms at x,

    h²(x) = V_G(x) / (V_G(x) + V_other(x) + V_E(x)).

The same holds for any number of slope covariates that are functions of one environment
variable, e.g. ``(1 + x + I(x**2) | line)``: φ(x) is the term's design evaluated at x with the
encoding used for the fit. The genetic correlation between environments x₁ and x₂ is
r_G(x₁, x₂) = φ(x₁)ᵀ Σ φ(x₂) / sqrt(V_G(x₁) V_G(x₂)).

NUTS: every quantity is computed per posterior draw, so intervals are HDIs of its posterior.
REML: the quantities at θ̂, with delta-method standard errors from the inverse AI matrix
(each variance is linear in θ, h² and r_G are ratios) and Wald intervals.

Variances are at a kinship diagonal of 1, as in :mod:`bayeslmm.results.heritability`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from bayeslmm.results._variance_source import (
    Draws,
    Quantity,
    VarianceSource,
    evaluate_design,
    identifiers,
    summary_frame,
)

#: Quantities of a reaction norm, in the order of :attr:`ReactionNorm.table`.
QUANTITIES = ("V_G", "V_other", "V_E", "V_P", "h2")


@dataclass(eq=False)
class ReactionNorm:
    """Genetic variance and heritability along one environment axis.

    Attributes
    ----------
    environment : str
        Name of the environment column.
    values : ndarray
        Environment values at which everything is evaluated.
    group : str
        The genetic random term.
    method : str
        ``"nuts"`` or ``"reml"``.
    quantities : dict
        ``"V_G"``, ``"V_other"``, ``"V_E"``, ``"V_P"``, ``"h2"`` → :class:`Draws` (NUTS, shape
        (chain, draw, len(values))) or :class:`Linear` (REML). ``V_E``, ``V_P`` and ``h2``
        are absent when the residual variance cannot be evaluated at some of the values
        (residual variances by level, values not observed); asking for them then raises.
    hdi_prob : float
        Interval mass of the tables and plots.
    """

    environment: str
    values: np.ndarray
    group: str
    method: str
    quantities: dict[str, Quantity]
    hdi_prob: float = 0.95
    _source: Any = field(default=None, repr=False)
    _design: np.ndarray | None = field(default=None, repr=False)
    _missing: str | None = field(default=None, repr=False)

    def draws(self, quantity: str = "h2") -> np.ndarray:
        """Posterior draws (chain, draw, len(values)) of a quantity (NUTS fits only)."""
        q = self._get(quantity)
        if not isinstance(q, Draws):
            raise ValueError("A REML reaction norm has point estimates, not draws.")
        return q.values

    def summary(self, quantity: str = "h2", hdi_prob: float | None = None) -> pd.DataFrame:
        """One row per environment value: NUTS ``mean, sd, hdi_low, hdi_high, hdi_prob,
        ess_bulk, ess_tail, r_hat, median``; REML ``estimate, se, ci_low, ci_high, ci_prob``.

        Examples
        --------
        >>> # reaction_norm(fit, "x").summary("h2")
        """
        table = summary_frame(self._get(quantity), self.values.tolist(), hdi_prob or self.hdi_prob)
        table.index.name = self.environment
        return table

    @property
    def table(self) -> pd.DataFrame:
        """All quantities in long form: columns environment value, ``quantity`` and stats."""
        frames = []
        for name in (q for q in QUANTITIES if q in self.quantities):
            part = self.summary(name).reset_index()
            part.insert(1, "quantity", name)
            frames.append(part)
        return pd.concat(frames, ignore_index=True)

    def genetic_correlation(self, hdi_prob: float | None = None) -> pd.DataFrame:
        """r_G(x₁, x₂) between every pair of environment values (long form).

        Columns ``x1``, ``x2`` and the engine's summary columns.

        Examples
        --------
        >>> # reaction_norm(fit, "x", values=[-1, 1]).genetic_correlation()
        """
        D = self._design
        k = D.shape[0]
        i1, i2 = np.triu_indices(k, 1)
        src = self._source
        cov = src.cross(self.group, D[i1], D[i2])
        v1 = src.cross(self.group, D[i1])
        v2 = src.cross(self.group, D[i2])
        if isinstance(cov, Draws):
            r = Draws(cov.values / np.sqrt(v1.values * v2.values))
        else:
            a, b, c = v1.value, v2.value, cov.value
            with np.errstate(divide="ignore", invalid="ignore"):
                root = np.sqrt(a * b)
                value = c / root
                jac = cov.jacobian / root[:, None] - 0.5 * value[:, None] * (
                    v1.jacobian / a[:, None] + v2.jacobian / b[:, None]
                )
            from bayeslmm.results._variance_source import Linear

            r = Linear(value, jac, cov.cov)
        table = summary_frame(r, range(i1.size), hdi_prob or self.hdi_prob)
        table.insert(0, "x2", self.values[i2])
        table.insert(0, "x1", self.values[i1])
        return table.reset_index(drop=True)

    def plot(self, quantity: str = "h2", ax: Any = None, label: str | None = None, **kw: Any):
        """Plot a quantity against the environment axis with its interval band.

        See :func:`plot_reaction_norm`.
        """
        return plot_reaction_norm(self, quantity=quantity, ax=ax, label=label, **kw)

    def _get(self, quantity: str) -> Quantity:
        if quantity in QUANTITIES and quantity not in self.quantities and self._missing:
            raise ValueError(f"{quantity} is not available here: {self._missing}")
        if quantity not in self.quantities:
            raise ValueError(f"Unknown quantity '{quantity}'; choose one of {QUANTITIES}.")
        return self.quantities[quantity]


def reaction_norm(
    fit: Any,
    environment: str,
    values: Any = None,
    *,
    group: str | None = None,
    spec: Any = None,
    hdi_prob: float | None = None,
) -> ReactionNorm:
    """V_G(x), V_E(x) and h²(x) of a random-regression model along an environment axis.

    Parameters
    ----------
    fit : BayesFit or RemlFit
        A fit of e.g. ``y ~ x + (1 + x | line)`` (kinship on ``line`` optional).
    environment : str
        Data column the slope covariates are functions of (``"x"``).
    values : array_like, optional
        Environment values; default the distinct observed values when there are at most
        25, else 50 points between the observed minimum and maximum.
    group : str, optional
        The genetic term; default the sole kinship term.
    spec : ModelSpec, optional
        The fitted specification, needed for a RemlFit (``model.spec``).
    hdi_prob : float, optional
        Interval mass (default the fit's, or 0.95).

    Returns
    -------
    ReactionNorm

    Notes
    -----
    The genetic term's design at x is its formula evaluated at x, so it may use only the
    environment column. The residual variance at x comes from the sigma formula (NUTS) when
    it depends only on the environment; otherwise (REML residuals by level, or a sigma
    formula on another column) it is the mean σ²_i of the observations recorded at x, so x
    must be an observed value. Other random terms contribute their variance at x in the
    same way (an intercept-only term: its variance).

    Examples
    --------
    >>> # rn = reaction_norm(fit, "x"); rn.summary("h2"); rn.plot("h2")
    """
    source = VarianceSource(fit, spec)
    spec = source.spec
    if environment not in spec.data.columns:
        raise ValueError(
            f"'{environment}' is not a column of the data; columns: {list(spec.data.columns)}."
        )
    group = source.genetic_group(group)
    observed = spec.data[environment]
    if values is None:
        uniq = np.unique(observed.to_numpy())
        if uniq.size <= 25 or not pd.api.types.is_numeric_dtype(observed):
            values = uniq
        else:
            values = np.linspace(float(uniq.min()), float(uniq.max()), 50)
    values = np.atleast_1d(np.asarray(values))
    if values.size == 0:
        raise ValueError("values must hold at least one environment value.")
    frame = pd.DataFrame({environment: values})
    obs_at = [_observations_at(observed, v) for v in values]

    def term_rows(g: str) -> list[np.ndarray]:
        term = source.term(g)
        if term.is_intercept_only:
            return [np.ones((1, 1))] * values.size
        used = identifiers(source.lhs[g], spec.data.columns)
        if set(used) <= {environment}:
            D = evaluate_design(source.lhs[g], spec.data, frame)
            return [D[i : i + 1] for i in range(values.size)]
        if g == group:
            raise ValueError(
                f"The term ({term.label}) uses {used}; a reaction norm along '{environment}' "
                "needs slope covariates that are functions of that column only."
            )
        return [
            _rows_or_fail(term.design, idx, v, environment, term.label)
            for idx, v in zip(obs_at, values, strict=True)
        ]

    genetic_rows = term_rows(group)
    design = np.vstack(genetic_rows)
    v_g = source.cross(group, design)
    quantities = {"V_G": v_g}
    missing = None
    try:  # V_G and r_G are defined at any x; the rest may need records at x
        v_other = source.constant(np.zeros(values.size))
        for g in (g for g in source.groups if g != group):
            v_other = v_other + source.average_variance(g, term_rows(g))
        quantities["V_other"] = v_other
        v_e = _residual(source, frame, obs_at, values, environment)
    except ValueError as exc:
        missing = str(exc)
    else:
        v_p = v_g + v_other + v_e
        quantities.update({"V_E": v_e, "V_P": v_p, "h2": v_g / v_p})
    prob = hdi_prob or getattr(fit, "hdi_prob", 0.95)
    return ReactionNorm(
        environment=environment,
        values=values,
        group=group,
        method="nuts" if source.is_bayes else "reml",
        quantities=quantities,
        hdi_prob=prob,
        _source=source,
        _design=design,
        _missing=missing,
    )


def _observations_at(observed: pd.Series, value: Any) -> np.ndarray:
    col = observed.to_numpy()
    if pd.api.types.is_numeric_dtype(observed):
        return np.flatnonzero(np.isclose(col.astype(float), float(value), rtol=1e-9, atol=1e-12))
    return np.flatnonzero(col == value)


def _rows_or_fail(design: np.ndarray, idx: np.ndarray, value: Any, env: str, what: str):
    if idx.size == 0:
        raise ValueError(
            f"No observation has {env} = {value!r}, and ({what}) cannot be evaluated there "
            f"from '{env}' alone; choose observed values of '{env}'."
        )
    return np.asarray(design)[idx]


def _residual(source: VarianceSource, frame, obs_at, values, environment: str) -> Quantity:
    spec = source.spec
    sigma_cols = identifiers((spec.sigma_formula or "").split("~", 1)[-1], spec.data.columns)
    if spec.sigma_X is None or (source.is_bayes and set(sigma_cols) <= {environment}):
        return source.residual_at(frame)
    missing = [v for v, idx in zip(values, obs_at, strict=True) if idx.size == 0]
    if missing:
        raise ValueError(
            f"The residual variance is modelled by {sigma_cols} (sigma={spec.sigma_formula!r}) "
            f"and cannot be evaluated at {environment} = {missing[:5]} where nothing was "
            f"observed; choose observed values of '{environment}'."
        )
    return source.observation_residual(obs_at)


def plot_reaction_norm(
    norm: ReactionNorm,
    quantity: str = "h2",
    ax: Any = None,
    label: str | None = None,
    reference: ReactionNorm | None = None,
    color: str | None = None,
) -> Any:
    """Plot a reaction-norm quantity against the environment with its interval band.

    Parameters
    ----------
    norm : ReactionNorm
    quantity : {"h2", "V_G", "V_E", "V_P", "V_other"}
    ax : matplotlib Axes, optional
    label : str, optional
        Legend label (default: the method and interval).
    reference : ReactionNorm, optional
        A second reaction norm (e.g. the REML one) drawn as a dashed line with its band.
    color : str, optional

    Returns
    -------
    matplotlib Axes

    Examples
    --------
    >>> # ax = plot_reaction_norm(reaction_norm(fit, "x"), "h2",
    >>> #                         reference=reaction_norm(reml, "x", spec=model.spec))
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.8))
    for k, (rn, style) in enumerate(((norm, "-"), (reference, "--"))):
        if rn is None:
            continue
        table = rn.summary(quantity)
        x = np.asarray(rn.values)
        numeric = np.issubdtype(x.dtype, np.number)
        xs = x.astype(float) if numeric else np.arange(x.size)
        if rn.method == "nuts":
            mid, low, high = table["mean"], table["hdi_low"], table["hdi_high"]
            text = f"posterior mean, {round(100 * rn.hdi_prob)}% HDI"
        else:
            mid, low, high = table["estimate"], table["ci_low"], table["ci_high"]
            text = f"REML ± {round(100 * rn.hdi_prob)}% Wald interval"
        c = color if (k == 0 and color) else f"C{k}"
        text = label if (k == 0 and label) else text
        if x.size <= 8:  # a few environments: intervals as error bars, not a band
            span = float(np.ptp(xs)) or 1.0
            shift = 0.015 * span * (1 if k else -1) if reference is not None else 0.0
            yerr = np.vstack([np.asarray(mid) - low, high - np.asarray(mid)])
            ax.errorbar(
                xs + shift,
                mid,
                yerr=yerr,
                fmt="o" + style,
                color=c,
                capsize=3,
                label=text,
                alpha=0.9,
            )
        else:
            ax.plot(xs, mid, style, color=c, label=text)
            ax.fill_between(xs, low, high, color=c, alpha=0.2 if k == 0 else 0.1, linewidth=0)
        if not numeric:
            ax.set_xticks(xs, [str(v) for v in x])
    names = {
        "h2": "h²",
        "V_G": "genetic variance V_G",
        "V_E": "residual variance V_E",
        "V_P": "phenotypic variance V_P",
        "V_other": "other random variance",
    }
    ax.set_xlabel(norm.environment)
    ax.set_ylabel(names.get(quantity, quantity))
    if quantity == "h2":
        ax.set_ylim(0, 1)
    ax.legend(frameon=False, fontsize="small")
    return ax


def plot_genotype_norms(
    fit: Any,
    environment: str,
    *,
    group: str | None = None,
    ax: Any = None,
    highlight: int = 3,
    max_lines: int = 500,
) -> Any:
    """Each genotype's predicted reaction norm, drawn over the environment's observed range.

    The genotypic value of level j at x is φ(x)ᵀ a_j, with φ(x) the genetic term's design at
    x (``(1, x)`` for ``(1 + x | line)``; any functions of x) and a_j the level's random
    effects: REML BLUPs for a REML fit, posterior means for a Bayesian fit. The lines with
    the most extreme slopes of genotypic value (steepest rise and fall) are highlighted:
    the genotypes whose ranking changes most across environments.

    Parameters
    ----------
    fit : BayesFit or RemlFit
        A random-regression fit, e.g. of ``y ~ x + (1 + x | line)``.
    environment : str
        The numeric data column the slopes are functions of.
    group : str, optional
        The genetic term (default: the sole kinship term, or the only slope term).
    ax : matplotlib Axes, optional
        Where to draw (default: a new figure outside pyplot).
    highlight : int
        How many genotypes at each end of the change across the range to highlight and label.
    max_lines : int
        At most this many genotypes are drawn (an even subset when there are more, the
        highlighted ones always included).

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> # ax = plot_genotype_norms(reml, "x")    # REML BLUPs
    >>> # ax = plot_genotype_norms(fit, "x")     # posterior means
    """
    from bayeslmm.results.plots import figure_axes

    spec = fit.spec
    if environment not in spec.data.columns:
        raise ValueError(
            f"'{environment}' is not a column of the data; columns: {list(spec.data.columns)}."
        )
    observed = spec.data[environment]
    if not pd.api.types.is_numeric_dtype(observed):
        raise ValueError(
            f"'{environment}' is not numeric: reaction norms are drawn along a numeric "
            "environment (use plot_reaction_norm for environments given as levels)."
        )
    source = VarianceSource(fit, None)
    group = source.genetic_group(group)
    term = source.term(group)
    if term.is_intercept_only:
        raise ValueError(
            f"The term ({term.label}) has no slope: every genotype's norm is flat. Fit a "
            f"random regression such as (1 + {environment} | {group})."
        )
    used = identifiers(source.lhs[group], spec.data.columns)
    if not set(used) <= {environment}:
        raise ValueError(
            f"The term ({term.label}) uses {used}; genotype norms along '{environment}' need "
            "slope covariates that are functions of that column only."
        )
    effects = _genotype_effects(fit, group, term.covariates)
    grid = np.linspace(float(observed.min()), float(observed.max()), 50)
    phi = evaluate_design(source.lhs[group], spec.data, pd.DataFrame({environment: grid}))
    values = effects.to_numpy() @ phi.T  # genotypes × grid points
    change = values[:, -1] - values[:, 0]
    order = np.argsort(change)
    k = max(0, min(int(highlight), values.shape[0] // 2))
    marked = set(order[:k]) | set(order[values.shape[0] - k :]) if k else set()
    shown = np.arange(values.shape[0])
    if shown.size > max_lines:
        shown = np.unique(np.r_[np.linspace(0, shown.size - 1, max_lines).astype(int), *marked])
    if ax is None:
        ax = figure_axes((6.0, 4.0))
    for j in shown:
        if j not in marked:
            ax.plot(grid, values[j], color="0.55", alpha=0.35, lw=0.8)
    for n, j in enumerate(sorted(marked, key=lambda j: change[j])):
        ax.plot(grid, values[j], color=f"C{n % 10}", lw=2, label=str(effects.index[j]))
    what = "posterior mean" if source.is_bayes else "BLUP"
    ax.set_xlabel(environment)
    ax.set_ylabel(f"genotypic value ({spec.response} units)")
    ax.set_title(f"Reaction norms of {values.shape[0]} levels of {group} ({what})")
    if marked:
        ax.legend(frameon=False, fontsize="small", title="largest changes", ncols=2)
    return ax


def _genotype_effects(fit: Any, group: str, covariates: list[str]) -> pd.DataFrame:
    """Levels × coefficients: BLUPs (point fits) or posterior means (Bayesian fits)."""
    blups = getattr(fit, "blups", None)
    if blups is not None:  # columns: the coefficients in the term's order, then "pev:…"
        frame = blups[group]
        return frame[[c for c in frame.columns if not str(c).startswith("pev:")]]
    means = fit.breeding_values(group)["mean"]
    return means.unstack("coef")[list(covariates)] if len(covariates) > 1 else means.to_frame()
