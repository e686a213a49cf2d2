"""Per-environment residual variance and heritability of heteroscedastic (GxE) models.

For a model with residual variances by environment (``sigma="~ env"``) and possibly random
slopes, the variance of an observation i is d_iᵀ Σ_g d_i (genetic term, at K_ii = 1) plus the
other random terms plus σ²_i. For each level e of an environment column, with the n_e
observations recorded there:

    V_E(e) = mean_i∈e σ²_i,     V_G(e) = mean_i∈e d_iᵀ Σ_g d_i,
    V_P(e) = V_G(e) + Σ_other mean_i∈e d_iᵀ Σ_t d_i + V_E(e),     h²(e) = V_G(e) / V_P(e).

With a categorical sigma formula σ²_i is the same for all observations of a level (NUTS:
σ_i = exp(s_iᵀ γ), REML: the level's residual variance), and an intercept-only genetic term
gives V_G(e) = σ²_g for every level, so h² differs between environments only through the
residual. NUTS: per posterior draw (HDIs); REML: at θ̂ with delta-method standard errors.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bayeslmm.results._variance_source import (
    Quantity,
    VarianceSource,
    identifiers,
    summary_frame,
)

#: Quantities of :func:`environment_table`, in column order.
ENV_QUANTITIES = ("var_residual", "var_genetic", "var_other", "var_phenotypic", "h2")


def _default_environment(spec: Any) -> str:
    if spec.sigma_formula:
        cols = identifiers(spec.sigma_formula.split("~", 1)[-1], spec.data.columns)
        if len(cols) == 1:
            return cols[0]
    raise ValueError(
        "Name the environment column, e.g. environment='env' (it defaults to the only "
        f"variable of the sigma formula; this model's is {spec.sigma_formula!r})."
    )


def environment_quantities(
    fit: Any,
    environment: str | None = None,
    *,
    group: str | None = None,
    spec: Any = None,
) -> tuple[list[Any], np.ndarray, dict[str, Quantity]]:
    """Levels, their observation counts and the quantities of :data:`ENV_QUANTITIES`.

    Quantities are :class:`~bayeslmm.results._variance_source.Draws` (NUTS) or ``Linear``
    (REML) with one entry per level. See :func:`environment_table`.
    """
    source = VarianceSource(fit, spec)
    spec = source.spec
    environment = environment or _default_environment(spec)
    if environment not in spec.data.columns:
        raise ValueError(
            f"'{environment}' is not a column of the data; columns: {list(spec.data.columns)}."
        )
    group = source.genetic_group(group)
    column = spec.data[environment]
    codes, levels = pd.factorize(column, sort=True)
    indices = [np.flatnonzero(codes == k) for k in range(len(levels))]
    counts = np.array([idx.size for idx in indices])
    v_e = source.observation_residual(indices)
    # variances at the records of each environment, at the sample's kinship scale
    v_g = source.average_variance(group, [source.term(group).design[idx] for idx in indices])
    v_other = source.constant(np.zeros(len(levels)))
    for g in source.groups:
        if g != group:
            design = source.term(g).design
            v_other = v_other + source.average_variance(g, [design[idx] for idx in indices])
    v_p = v_g + v_other + v_e
    quantities = {
        "var_residual": v_e,
        "var_genetic": v_g,
        "var_other": v_other,
        "var_phenotypic": v_p,
        "h2": v_g / v_p,
    }
    return [_plain(v) for v in levels], counts, quantities


def environment_table(
    fit: Any,
    environment: str | None = None,
    *,
    group: str | None = None,
    spec: Any = None,
    hdi_prob: float | None = None,
) -> pd.DataFrame:
    """One row per environment level: residual, genetic and phenotypic variance and h².

    Parameters
    ----------
    fit : BayesFit or RemlFit
        E.g. a fit of ``y ~ env + (1 | id)`` with ``sigma="~ env"`` and a kinship on ``id``.
    environment : str, optional
        Column whose levels make the rows; default the only variable of the sigma formula.
    group : str, optional
        The genetic term; default the sole kinship term.
    spec : ModelSpec, optional
        The fitted specification, needed for a RemlFit (``model.spec``).
    hdi_prob : float, optional
        Interval mass (default the fit's, or 0.95).

    Returns
    -------
    pandas.DataFrame
        Index: the levels; columns a MultiIndex (quantity, statistic) with quantities
        ``n_obs`` and :data:`ENV_QUANTITIES`; statistics ``mean, sd, hdi_low, hdi_high, ...``
        (NUTS) or ``estimate, se, ci_low, ci_high, ci_prob`` (REML).

    Examples
    --------
    >>> # table = environment_table(fit, "env"); table["h2"]
    """
    levels, counts, quantities = environment_quantities(fit, environment, group=group, spec=spec)
    prob = hdi_prob or getattr(fit, "hdi_prob", 0.95)
    parts = {"n_obs": pd.DataFrame({"count": counts}, index=levels)}
    for name in ENV_QUANTITIES:
        parts[name] = summary_frame(quantities[name], levels, prob)
    table = pd.concat(parts, axis=1)
    table.index.name = environment or _default_environment(VarianceSource(fit, spec).spec)
    return table


def environment_summary(
    fit: Any,
    environment: str | None = None,
    *,
    group: str | None = None,
    spec: Any = None,
    hdi_prob: float | None = None,
) -> dict[str, dict[str, Any]]:
    """The ``heritability_by_environment`` entry of summary.json.

    ``{level: {"n_obs": n, "h2": ENTRY, "var_residual": ENTRY, "var_genetic": ENTRY,
    "var_phenotypic": ENTRY}}`` with ENTRY a posterior summary (NUTS) or
    ``estimate, se, ci_low, ci_high, ci_prob`` (REML), as elsewhere in summary.json.

    Examples
    --------
    >>> # environment_summary(fit)["A"]["h2"]["mean"]
    """
    levels, counts, quantities = environment_quantities(fit, environment, group=group, spec=spec)
    prob = hdi_prob or getattr(fit, "hdi_prob", 0.95)
    entries = {name: quantities[name].summary(prob) for name in ENV_QUANTITIES}
    out: dict[str, dict[str, Any]] = {}
    for k, level in enumerate(levels):
        row: dict[str, Any] = {"n_obs": int(counts[k])}
        for name in ("h2", "var_residual", "var_genetic", "var_other", "var_phenotypic"):
            row[name] = entries[name][k]
        out[str(level)] = row
    return out


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def summary_keys(fit: Any, spec: Any = None, hdi_prob: float | None = None) -> dict[str, Any]:
    """Extra summary.json keys for a heteroscedastic model: ``heritability_by_environment``.

    Present when the model has a sigma formula with exactly one variable (the environment);
    empty otherwise, so callers can always ``summary.update(summary_keys(fit, spec))``.

    Examples
    --------
    >>> # summary = reml.to_summary(); summary.update(summary_keys(reml, model.spec))
    """
    spec = getattr(fit, "spec", None) if spec is None else spec
    if spec is None or spec.sigma_formula is None or not spec.family.is_gaussian:
        return {}
    cols = identifiers(spec.sigma_formula.split("~", 1)[-1], spec.data.columns)
    if len(cols) != 1 or not spec.terms:
        return {}
    try:
        by_env = environment_summary(fit, cols[0], spec=spec, hdi_prob=hdi_prob)
    except ValueError:  # e.g. no single genetic term to call h²: an optional key is omitted
        return {}
    return {"heritability_by_environment": by_env}
