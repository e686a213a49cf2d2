"""How a fit shows itself: an HTML table in notebooks, a brms-style summary in terminals.

Every fit (:class:`~bayeslmm.results.bayes_result.BayesFit`,
:class:`~bayeslmm.results.reml_result.RemlFit`,
:class:`~bayeslmm.results.laplace_result.LaplaceFit`) has :class:`FitDisplay` among its bases:

- in Jupyter a fit displays itself as HTML (``_repr_html_``): model, data size, engine and
  strategy, diagnostics and warnings, the heritability (variance share) table, the GLMM
  scales, the variance components and the fixed effects;
- ``print(fit)`` (or ``fit.summary_text()``, ``fit.print_summary()``) writes the same in plain
  text, laid out as brms' ``summary(fit)``: a header, then one table per section with
  ``Estimate``, ``Est.Error`` (a posterior SD) or ``Std.Error`` (a standard error), the
  interval bounds, and for a posterior ``Rhat``, ``Bulk_ESS`` and ``Tail_ESS``;
- ``fit.plot_variance_partition()`` draws each random term's share of the variance, with its
  interval, on a matplotlib Figure.

``repr(fit)`` stays the short one-screen description, and a NUTS fit's ``fit.summary()`` stays
the summary.json dictionary. Everything here is drawn from that dictionary
(docs/summary_json.md), so a results folder written by ``bayeslmm fit`` shows exactly as the
fit that wrote it: :func:`summary_text` and :func:`summary_html` take the dictionary (or the
parsed ``summary.json``), and ``bayeslmm report DIR`` builds its page from them.

Examples
--------
>>> summary = {"method": "reml", "formula": "y ~ 1 + (1 | id)", "n_obs": 40,
...            "family": "gaussian", "link": "identity", "strategy": "spectral",
...            "heritability": {"h2": {"estimate": 0.41, "se": 0.12, "ci_low": 0.17,
...                                    "ci_high": 0.65, "ci_prob": 0.95}},
...            "diagnostics": {"converged": True, "n_iter": 12, "boundary": False}}
>>> print(summary_text(summary))
     Family: gaussian (identity link)
    Formula: y ~ 1 + (1 | id)
       Data: 40 observations
     Engine: REML (spectral)
Diagnostics: converged after 12 iterations
<BLANKLINE>
Heritability (variance shares, 95% CI):
   Estimate Std.Error l-95% CI u-95% CI
h2    0.410     0.120    0.170    0.650
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from bayeslmm.families import get_family

__all__ = [
    "FitDisplay",
    "model_html",
    "plot_variance_partition",
    "summary_html",
    "summary_tables",
    "summary_text",
]

#: Heritability rows that are not one random term's share (summary.json ``heritability``).
_SPECIAL_SHARES = ("h2", "h2_gcta", "residual")

_ENGINES = {
    "nuts": "NUTS",
    "reml": "REML",
    "ml": "Maximum likelihood",
    "laplace": "Laplace maximum likelihood",
}


# -- numbers -----------------------------------------------------------------------------------
def _finite(x: Any) -> float | None:
    """``x`` as a float, or None when missing or not finite (summary.json writes null)."""
    if x is None or isinstance(x, bool):
        return None
    try:
        value = float(x)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def format_number(x: Any, digits: int = 3) -> str:
    """A number for a table: ``digits`` significant figures, but at least two decimals below
    100 and one below 1000 (an intercept of 101.6 keeps its decimal); a blank for a missing
    value.

    Examples
    --------
    >>> [format_number(v) for v in (0.49719, 101.6285, 34.16, 1234.5, 3.2e-05, None)]
    ['0.497', '101.6', '34.16', '1234', '3.20e-05', '']
    """
    value = _finite(x)
    if value is None:
        return ""
    size = abs(value)
    if size == 0:
        return "0"
    if size < 10 ** -(digits - 1) / 10 or size >= 1e6:
        return f"{value:.{digits - 1}e}"
    # decimals so that about ``digits`` significant figures show, never fewer than 0
    decimals = max(digits - 1 - math.floor(math.log10(size)), 0)
    decimals = max(decimals, 2 if size < 100 else 1 if size < 1000 else 0)
    return f"{value:.{decimals}f}"


def _count(x: Any) -> str:
    value = _finite(x)
    return "" if value is None else f"{value:.0f}"


def _rhat(x: Any) -> str:
    value = _finite(x)
    return "" if value is None else f"{value:.3f}"


def _percent(prob: Any) -> str:
    value = _finite(prob)
    return f"{100 * value:g}%" if value is not None else "95%"


# -- tables from summary.json ------------------------------------------------------------------
def _posterior(summary: Mapping[str, Any]) -> bool:
    return summary.get("method") == "nuts"


def _entry_table(
    entries: Mapping[str, Mapping[str, Any]], posterior: bool, extra: Sequence[str] = ()
) -> pd.DataFrame:
    """ENTRYs (label → dict) as a display table of strings, brms' column names."""
    rows = {}
    prob = None
    for label, entry in entries.items():
        prob = entry.get("ci_prob", entry.get("hdi_prob", prob))
        pct = _percent(prob)
        bound = "HDI" if posterior else "CI"
        row = {
            "Estimate": format_number(entry.get("estimate", entry.get("mean"))),
            "Est.Error" if posterior else "Std.Error": format_number(
                entry.get("se", entry.get("sd"))
            ),
            f"l-{pct} {bound}": format_number(entry.get("ci_low", entry.get("hdi_low"))),
            f"u-{pct} {bound}": format_number(entry.get("ci_high", entry.get("hdi_high"))),
        }
        if posterior:
            row["Rhat"] = _rhat(entry.get("r_hat"))
            row["Bulk_ESS"] = _count(entry.get("ess_bulk"))
            row["Tail_ESS"] = _count(entry.get("ess_tail"))
        for key in extra:
            if key in entry:
                row[f"{key} value"] = format_number(entry[key])
        rows[label] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def _interval(summary: Mapping[str, Any]) -> str:
    """``"95% HDI"`` (a posterior) or ``"95% CI"`` (Wald), from the summary's first ENTRY."""
    prob = None
    for section in ("heritability", "fixed_effects"):
        for entry in (summary.get(section) or {}).values():
            prob = entry.get("ci_prob", entry.get("hdi_prob"))
            break
        if prob is not None:
            break
    return f"{_percent(prob)} {'HDI' if _posterior(summary) else 'CI'}"


def _term_groups(summary: Mapping[str, Any]) -> list[str]:
    """The random terms' group labels, in model order (variance components' ``grp``)."""
    groups: list[str] = []
    for row in summary.get("variance_components") or []:
        grp = row.get("grp")
        if grp not in ("Residual", "olre", None) and grp not in groups:
            groups.append(grp)
    return groups


def _share_rows(summary: Mapping[str, Any]) -> tuple[dict, dict]:
    """Split ``heritability`` into the variance shares and the GLMM scale rows.

    The sole kinship term's share is repeated under ``"h2"`` in summary.json; it is shown once,
    as ``h2``.
    """
    herit = dict(summary.get("heritability") or {})
    kinship = list((summary.get("kinship") or {}).keys())
    if "h2" in herit and len(kinship) == 1:
        herit.pop(kinship[0], None)
    shares, scales = {}, {}
    for label, entry in herit.items():
        is_scale = label.startswith("h2_") and label != "h2_gcta"
        (scales if is_scale else shares)[label] = entry
    # the h² row first, the residual's share last
    order = sorted(shares, key=lambda k: (k != "h2", k == "residual"))
    return {k: shares[k] for k in order}, scales


def _variance_table(summary: Mapping[str, Any]) -> pd.DataFrame:
    """variance_components rows as lme4 prints VarCorr: Variance and Std.Dev., or Corr."""
    rows = []
    posterior = _posterior(summary)
    interval = _interval(summary)
    for row in summary.get("variance_components") or []:
        covariance = row.get("var2") is not None
        name = row.get("var1") or ""
        if covariance:
            name = f"{row['var1']} : {row['var2']}"
        rows.append(
            {
                "Group": row.get("grp") or "",
                "Name": name,
                "Variance": format_number(row.get("vcov")),
                "Std.Dev.": "" if covariance else format_number(row.get("sdcor")),
                "Corr": format_number(row.get("sdcor")) if covariance else "",
                "Est.Error" if posterior else "Std.Error": format_number(row.get("se")),
                f"l-{interval}": format_number(row.get("ci_low")),
                f"u-{interval}": format_number(row.get("ci_high")),
            }
        )
    table = pd.DataFrame(rows)
    if not table.empty and not (table["Corr"] != "").any():
        table = table.drop(columns="Corr")
    return table


def _environment_table(summary: Mapping[str, Any]) -> pd.DataFrame:
    interval = _interval(summary)
    rows = {}
    for level, entry in (summary.get("heritability_by_environment") or {}).items():
        h2 = entry.get("h2") or {}
        res = entry.get("var_residual") or {}
        rows[str(level)] = {
            "n_obs": _count(entry.get("n_obs")),
            "h2": format_number(h2.get("estimate", h2.get("mean"))),
            f"l-{interval}": format_number(h2.get("ci_low", h2.get("hdi_low"))),
            f"u-{interval}": format_number(h2.get("ci_high", h2.get("hdi_high"))),
            "residual variance": format_number(res.get("estimate", res.get("mean"))),
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def summary_tables(summary: Mapping[str, Any]) -> dict[str, tuple[str, pd.DataFrame]]:
    """The display tables of a summary.json dictionary: section key → (title, table).

    Sections, in order, present only when the fit has them: ``heritability`` (each random
    term's share, ``h2``, ``h2_gcta``, the residual's share), ``scales`` (GLMM h² on the
    latent, link, observed and liability scales), ``by_environment`` (h² and residual
    variance per environment), ``variance_components`` (lme4's VarCorr layout) and
    ``fixed_effects``. Cells are formatted strings; the numbers themselves are
    ``fit.heritability()``, ``fit.variance_components()`` and ``fit.fixed_effects()``.

    Examples
    --------
    >>> s = {"method": "reml", "heritability": {}, "variance_components": [
    ...      {"grp": "id", "var1": "(Intercept)", "var2": None, "vcov": 2.0, "sdcor": 1.414,
    ...       "se": 0.5, "ci_low": 1.0, "ci_high": 3.0}]}
    >>> title, table = summary_tables(s)["variance_components"]
    >>> title, table.loc[0, "Variance"], table.loc[0, "Std.Dev."]
    ('Variance components (lme4 VarCorr layout)', '2.00', '1.41')
    """
    posterior = _posterior(summary)
    out: dict[str, tuple[str, pd.DataFrame]] = {}
    shares, scales = _share_rows(summary)
    if shares:
        title = f"Heritability (variance shares, {_interval(summary)})"
        out["heritability"] = (title, _entry_table(shares, posterior))
    if scales:
        title = f"h² on each scale ({_interval(summary)})"
        out["scales"] = (title, _entry_table(scales, posterior))
    env = _environment_table(summary)
    if not env.empty:
        out["by_environment"] = ("h² by environment", env)
    vc = _variance_table(summary)
    if not vc.empty:
        out["variance_components"] = ("Variance components (lme4 VarCorr layout)", vc)
    fixed = summary.get("fixed_effects") or {}
    if fixed:
        title = f"Fixed effects ({_interval(summary)})"
        out["fixed_effects"] = (title, _entry_table(fixed, posterior, extra=("t", "z")))
    return out


# -- header lines ------------------------------------------------------------------------------
def _engine_line(summary: Mapping[str, Any]) -> str:
    method = summary.get("method", "")
    name = _ENGINES.get(method, str(method))
    diag = summary.get("diagnostics") or {}
    if method == "nuts" and summary.get("sampler") == "exact":
        # the strategy drew independent draws from the exact posterior: no NUTS ran
        name = "Exact posterior draws"
        parts = [f"{summary.get('strategy')} strategy"]
        if diag.get("chains") is not None:
            parts.append(f"{diag.get('chains')} chains × {diag.get('draws')} draws")
        return f"{name} ({', '.join(parts)})"
    if method == "nuts":
        parts = [f"{summary.get('sampler', 'NUTS')} sampler", f"{summary.get('strategy')} strategy"]
        if diag.get("chains") is not None:
            parts.append(f"{diag.get('chains')} chains × {diag.get('draws')} draws")
        if summary.get("seed") is not None:
            parts.append(f"seed {summary['seed']}")
        return f"{name} ({', '.join(parts)})"
    # Laplace's strategy reads "laplace (nAGQ=1)": the method's name is already said
    strategy = str(summary.get("strategy") or "").removeprefix("laplace").strip(" ()")
    return f"{name} ({strategy})" if strategy else name


def _diagnostics_line(summary: Mapping[str, Any]) -> str:
    diag = summary.get("diagnostics") or {}
    if summary.get("method") == "nuts":
        parts = []
        if diag.get("divergences") is not None:
            parts.append(f"{diag['divergences']} divergent transitions")
        if _finite(diag.get("max_r_hat")) is not None:
            parts.append(f"max R-hat {diag['max_r_hat']:.3f}")
        if _finite(diag.get("min_ess_bulk")) is not None:
            parts.append(f"min bulk ESS {diag['min_ess_bulk']:.0f}")
        return ", ".join(parts)
    if "converged" not in diag:
        return ""
    text = "converged" if diag["converged"] else "NOT converged"
    if diag.get("n_iter") is not None:
        n_iter = int(diag["n_iter"])
        text += f" after {n_iter} iteration{'s' if n_iter != 1 else ''}"
    if diag.get("boundary"):
        text += "; boundary (singular) fit: a variance is estimated at 0"
    return text


def _likelihood_line(summary: Mapping[str, Any]) -> str:
    parts = []
    loglik = summary.get("loglik") or {}
    if _finite(summary.get("reml_criterion")) is not None:
        parts.append(f"REML criterion {summary['reml_criterion']:.2f}")
    if _finite(loglik.get("reml")) is not None:  # lme4's logLik() of a REML fit
        parts.append(f"logLik (REML) {loglik['reml']:.2f}")
    elif _finite(loglik.get("ml")) is not None:
        parts.append(f"logLik {loglik['ml']:.2f}")
    if _finite(summary.get("deviance")) is not None:
        parts.append(f"deviance {summary['deviance']:.2f}")
    for key in ("aic", "bic"):
        if _finite(summary.get(key)) is not None:
            parts.append(f"{key.upper()} {summary[key]:.2f}")
    return ", ".join(parts)


def _kinship_lines(summary: Mapping[str, Any]) -> list[str]:
    lines = []
    for group, info in (summary.get("kinship") or {}).items():
        lines.append(
            f"{group} ~ {info.get('name', 'K')} ({_count(info.get('n_levels'))} levels, "
            f"mean diagonal {format_number(info.get('mean_diagonal'))}, sample scale "
            f"{format_number(info.get('sample_scale'))})"
        )
    return lines


def _header(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, value) lines of the summary's header, brms' order."""
    family = summary.get("family", "gaussian")
    link = summary.get("link")
    rows = [
        ("Family", f"{family} ({link} link)" if link else str(family)),
        ("Formula", str(summary.get("formula", ""))),
    ]
    if summary.get("sigma_formula"):
        rows.append(("Sigma", str(summary["sigma_formula"])))
    rows.append(("Data", f"{_count(summary.get('n_obs'))} observations"))
    rows.extend(("Kinship", line) for line in _kinship_lines(summary))
    rows.append(("Engine", _engine_line(summary)))
    timing = _finite((summary.get("timing") or {}).get("total_s"))
    if timing:  # point-estimate engines may not time themselves (0)
        rows.append(("Time", f"{timing:.1f} s" if timing >= 0.1 else f"{1000 * timing:.0f} ms"))
    diag = _diagnostics_line(summary)
    if diag:
        rows.append(("Diagnostics", diag))
    lik = _likelihood_line(summary)
    if lik:
        rows.append(("Likelihood", lik))
    return rows


def _messages(summary: Mapping[str, Any]) -> list[str]:
    return [str(m) for m in (summary.get("diagnostics") or {}).get("messages") or []]


# -- text --------------------------------------------------------------------------------------
def summary_text(summary: Mapping[str, Any]) -> str:
    """A fit's summary for a terminal, laid out as brms' ``summary(fit)``.

    Parameters
    ----------
    summary : mapping
        A summary.json dictionary: ``fit.summary()`` (NUTS), ``fit.to_summary()`` (REML,
        Laplace) or ``json.load`` of a results folder's ``summary.json``.

    Returns
    -------
    str

    Examples
    --------
    >>> s = {"method": "nuts", "formula": "y ~ 1", "n_obs": 10, "sampler": "nutpie",
    ...      "strategy": "spectral", "diagnostics": {"divergences": 0, "chains": 2,
    ...      "draws": 100, "messages": ["R-hat reaches 1.02"]}}
    >>> print(summary_text(s))
         Family: gaussian
        Formula: y ~ 1
           Data: 10 observations
         Engine: NUTS (nutpie sampler, spectral strategy, 2 chains × 100 draws)
    Diagnostics: 0 divergent transitions
    <BLANKLINE>
    Warnings:
      - R-hat reaches 1.02
    """
    header = _header(summary)
    width = max(len(label) for label, _ in header)
    lines = [f"{label.rjust(width)}: {value}" for label, value in header]
    for key, (title, table) in summary_tables(summary).items():
        left = ("Group", "Name") if key == "variance_components" else ()
        lines += ["", f"{title}:", _table_text(table, left)]
    messages = _messages(summary)
    if messages:
        lines += ["", "Warnings:", *(f"  - {m}" for m in messages)]
    priors = summary.get("priors") or {}
    if priors:
        lines += ["", "Priors:", *(f"  {k} ~ {v}" for k, v in priors.items())]
    return "\n".join(lines)


def _table_text(table: pd.DataFrame, left: Sequence[str] = ()) -> str:
    """Plain-text table: numbers right-aligned, the row labels and ``left`` columns
    left-aligned (as R prints lme4's VarCorr)."""
    show_index = not isinstance(table.index, pd.RangeIndex)
    columns: list[tuple[bool, list[str]]] = []
    if show_index:
        columns.append((True, ["", *(str(i) for i in table.index)]))
    for c in table.columns:
        columns.append((c in left, [str(c), *(str(v) for v in table[c])]))
    widths = [max(len(cell) for cell in cells) for _, cells in columns]
    lines = []
    for r in range(len(table) + 1):
        cells = [
            cells[r].ljust(w) if is_left else cells[r].rjust(w)
            for (is_left, cells), w in zip(columns, widths, strict=True)
        ]
        lines.append(" ".join(cells).rstrip())
    return "\n".join(lines)


# -- HTML --------------------------------------------------------------------------------------
#: Styles scoped to the ``bayeslmm`` class, so a notebook's own styles are untouched.
STYLE = """
<style>
.bayeslmm {font-family: system-ui, -apple-system, "Segoe UI", sans-serif; font-size: 13px;
  line-height: 1.4; max-width: 60em; margin-bottom: 1.2em;}
.bayeslmm h3 {font-size: 15px; margin: 0.2em 0 0.4em 0;}
.bayeslmm h4 {font-size: 13px; margin: 1em 0 0.3em 0;}
.bayeslmm table {border-collapse: collapse; margin: 0.2em 0;}
.bayeslmm th, .bayeslmm td {padding: 2px 9px; text-align: right; border-bottom: 1px solid #ddd;}
.bayeslmm th {font-weight: 600;}
.bayeslmm td.label, .bayeslmm th.label {text-align: left;}
.bayeslmm table.header td {border: none; padding: 1px 9px 1px 0; text-align: left;}
.bayeslmm table.header td.label {color: #555; font-weight: 600;}
.bayeslmm .warn {background: #fff4e0; border-left: 4px solid #e69500; padding: 4px 10px;
  margin: 0.6em 0; color: #000;}
.bayeslmm .ok {color: #2a7d2a;}
.bayeslmm details {margin-top: 0.6em;}
</style>
"""


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def table_html(table: pd.DataFrame, label_columns: Sequence[str] = ()) -> str:
    """A display table as an HTML ``<table>`` (escaped text; the index, when it is not a
    plain row count, as the first column).

    Examples
    --------
    >>> table_html(pd.DataFrame({"Estimate": ["0.50"]}, index=["h2"]))
    '<table><thead><tr><th class="label"></th><th>Estimate</th></tr></thead><tbody><tr><td class="label">h2</td><td>0.50</td></tr></tbody></table>'
    """  # noqa: E501
    show_index = not isinstance(table.index, pd.RangeIndex)
    head = ['<th class="label"></th>'] if show_index else []
    for c in table.columns:
        cls = ' class="label"' if c in label_columns else ""
        head.append(f"<th{cls}>{_esc(c)}</th>")
    body = []
    for idx, row in table.iterrows():
        cells = [f'<td class="label">{_esc(idx)}</td>'] if show_index else []
        for c in table.columns:
            cls = ' class="label"' if c in label_columns else ""
            cells.append(f"<td{cls}>{_esc(row[c])}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{''.join(head)}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _header_html(rows: Sequence[tuple[str, str]]) -> str:
    cells = "".join(
        f'<tr><td class="label">{_esc(label)}</td><td>{_esc(value)}</td></tr>'
        for label, value in rows
    )
    return f'<table class="header">{cells}</table>'


def summary_html(summary: Mapping[str, Any], title: str | None = None, style: bool = True) -> str:
    """A fit's summary as an HTML fragment (a ``<div class="bayeslmm">``): what a notebook
    shows for a fit, and the body of ``bayeslmm report``.

    Parameters
    ----------
    summary : mapping
        A summary.json dictionary (see :func:`summary_text`).
    title : str, optional
        Heading; default e.g. ``"bayeslmm · NUTS fit"``; ``""`` for none.
    style : bool
        Include the scoped ``<style>`` block.

    Returns
    -------
    str

    Examples
    --------
    >>> s = {"method": "reml", "formula": "y ~ 1 + (1 | id)", "n_obs": 40,
    ...      "diagnostics": {"converged": True, "n_iter": 3, "messages": ["a <b> note"]}}
    >>> page = summary_html(s)
    >>> "REML (" in page or "REML" in page, "a &lt;b&gt; note" in page
    (True, True)
    """
    method = _ENGINES.get(summary.get("method", ""), "")
    title = f"bayeslmm · {method} fit" if title is None else title
    parts = [STYLE if style else "", '<div class="bayeslmm">']
    if title:
        parts.append(f"<h3>{_esc(title)}</h3>")
    parts.append(_header_html(_header(summary)))
    messages = _messages(summary)
    if messages:
        items = "".join(f"<li>{_esc(m)}</li>" for m in messages)
        parts.append(f'<div class="warn"><b>Warnings</b><ul>{items}</ul></div>')
    elif summary.get("method") == "nuts":
        parts.append('<div class="ok">No sampler warnings.</div>')
    for key, (heading, table) in summary_tables(summary).items():
        labels = ("Group", "Name") if key == "variance_components" else ()
        parts.append(f"<h4>{_esc(heading)}</h4>")
        parts.append(table_html(table, labels))
    priors = summary.get("priors") or {}
    if priors:
        table = pd.DataFrame({"prior": list(priors.values())}, index=list(priors))
        parts.append("<details><summary>Priors</summary>")
        parts.append(table_html(table, ("prior",)))
        parts.append("</details>")
    parts.append("</div>")
    return "".join(parts)


def model_html(spec: Any) -> str:
    """A model before fitting, as HTML: formula, family, data size, the random terms with
    their kinships, the fixed effects and the priors NUTS would use.

    Parameters
    ----------
    spec : ModelSpec
        ``LMM(...).spec``.

    Returns
    -------
    str

    Examples
    --------
    >>> import numpy as np, pandas as pd, bayeslmm as bl
    >>> df = pd.DataFrame({"y": np.arange(8.0), "g": list("aabbccdd")})
    >>> page = model_html(bl.specify("y ~ 1 + (1 | g)", df))
    >>> "HalfStudentT" in page and "4 levels" in page
    True
    """
    from bayeslmm.priors import resolve_priors

    family = spec.family
    rows = [
        ("Formula", spec.formula),
        ("Family", f"{family.name} ({family.link} link)"),
        ("Data", f"{spec.n_obs} observations of {spec.response}"),
    ]
    if spec.sigma_formula:
        rows.append(("Sigma", spec.sigma_formula))
    rows.append(("Fixed effects", ", ".join(spec.fixed_names) or "none"))
    parts = [STYLE, '<div class="bayeslmm">', "<h3>bayeslmm · model (not fitted)</h3>"]
    parts.append(_header_html(rows))
    terms = []
    for t in spec.terms:
        K = t.kinship
        terms.append(
            {
                "Term": t.label,
                "Group": t.group,
                "Levels": f"{t.n_levels} levels",
                "Coefficients": ", ".join(t.covariates),
                "Covariance": "iid"
                if K is None
                else f"{K.name} (mean diagonal {format_number(K.mean_diagonal)})",
            }
        )
    if terms:
        parts.append("<h4>Random terms</h4>")
        parts.append(table_html(pd.DataFrame(terms), ("Term", "Group", "Covariance")))
    try:
        priors = resolve_priors(spec).table()
    except Exception as exc:  # the display must not hide the model behind a prior error
        priors = {"(priors)": f"cannot be resolved: {exc}"}
    if priors:
        parts.append("<h4>Priors (NUTS)</h4>")
        table = pd.DataFrame({"prior": list(priors.values())}, index=list(priors))
        parts.append(table_html(table, ("prior",)))
    parts.append("</div>")
    return "".join(parts)


# -- plots -------------------------------------------------------------------------------------
def plot_variance_partition(summary: Mapping[str, Any], ax: Any = None) -> Any:
    """Each random term's share of the variance and the residual's, with their intervals.

    One horizontal bar per component (the estimate: posterior mean or point estimate), its
    interval as an error bar and its value written beside it. Gaussian traits: shares of the
    phenotypic variance; GLMMs: shares of the link-scale variance (the distribution-specific
    variance counted as residual).

    Parameters
    ----------
    summary : mapping
        A summary.json dictionary (``fit.summary()``, ``fit.to_summary()``, a results
        folder's ``summary.json``).
    ax : matplotlib Axes, optional
        Drawn on a new :class:`~matplotlib.figure.Figure` (not pyplot) when not given.

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> e = {"estimate": 0.4, "ci_low": 0.2, "ci_high": 0.6, "ci_prob": 0.95}
    >>> s = {"method": "reml", "family": "gaussian",
    ...      "heritability": {"id": e, "h2": e, "residual": {**e, "estimate": 0.6}},
    ...      "variance_components": [{"grp": "id"}, {"grp": "Residual"}]}
    >>> ax = plot_variance_partition(s)
    >>> [t.get_text() for t in ax.get_yticklabels()]
    ['id', 'residual']
    """
    from bayeslmm.results.plots import figure_axes

    herit = summary.get("heritability") or {}
    labels = [g for g in _term_groups(summary) if g in herit]
    if "residual" in herit:
        labels.append("residual")
    if not labels:
        raise ValueError(
            "This summary has no variance shares to plot (a model without random terms, or a "
            "summary.json without its 'heritability' section)."
        )
    est = [_finite(herit[k].get("estimate", herit[k].get("mean"))) or 0.0 for k in labels]
    low = [_finite(herit[k].get("ci_low", herit[k].get("hdi_low"))) for k in labels]
    high = [_finite(herit[k].get("ci_high", herit[k].get("hdi_high"))) for k in labels]
    ax = ax if ax is not None else figure_axes((6.0, 0.9 + 0.55 * len(labels)))
    ypos = list(range(len(labels)))[::-1]  # first term on top
    colors = [f"C{i % 10}" for i in range(len(labels) - 1)] + ["0.6"]
    if labels[-1] != "residual":
        colors[-1] = f"C{(len(labels) - 1) % 10}"
    ax.barh(ypos, est, color=colors, height=0.6)
    err_lo = [e - lo if lo is not None else 0.0 for e, lo in zip(est, low, strict=True)]
    err_hi = [hi - e if hi is not None else 0.0 for e, hi in zip(est, high, strict=True)]
    ax.errorbar(est, ypos, xerr=[err_lo, err_hi], fmt="none", ecolor="black", capsize=3, lw=1)
    for y, e, hi in zip(ypos, est, high, strict=True):
        ax.text((hi if hi is not None else e) + 0.02, y, f"{e:.2f}", va="center", fontsize=9)
    ax.set_yticks(ypos, labels)
    ax.set_xlim(0, 1.1)
    interval = _interval(summary)
    family = get_family(summary.get("family", "gaussian"), summary.get("link") or None)
    scale = "phenotypic" if family.is_gaussian else "link-scale"
    ax.set_xlabel(f"share of {scale} variance (bars: estimate; whiskers: {interval})")
    ax.set_title("Variance partition")
    ax.spines[["top", "right"]].set_visible(False)
    ax.figure.tight_layout()
    return ax


# -- the mixin ---------------------------------------------------------------------------------
class FitDisplay:
    """Mixin of every fit: ``_repr_html_`` for notebooks, ``print(fit)`` for terminals.

    A subclass answers ``summary()`` (NUTS) or ``to_summary()`` (point estimates) with the
    summary.json dictionary; the display is drawn from it.
    """

    def _display_summary(self, prevalence: float | None = None) -> dict[str, Any]:
        spec = getattr(self, "spec", None)
        if prevalence is not None and spec is not None and not spec.family.binary_response():
            raise ValueError(
                f"prevalence gives h² on the liability scale of a binary trait; this fit's "
                f"family is '{spec.family.name}'. Leave prevalence out."
            )
        kwargs = {} if prevalence is None else {"prevalence": prevalence}
        to_summary = getattr(self, "to_summary", None)
        summary = to_summary(**kwargs) if callable(to_summary) else self.summary(**kwargs)
        # summary.json of a NUTS fit has no sigma_formula key; the header shows it for all
        if summary.get("sigma_formula") is None and getattr(spec, "sigma_formula", None):
            summary["sigma_formula"] = spec.sigma_formula
        return summary

    def summary_text(self, prevalence: float | None = None) -> str:
        """The fit's summary as brms prints it: header, diagnostics, h², variance
        components, fixed effects, warnings (and a posterior's priors).

        Parameters
        ----------
        prevalence : float, optional
            Binary traits: adds h² on the liability scale.

        Returns
        -------
        str

        Examples
        --------
        >>> # print(fit.summary_text()), or simply print(fit)
        """
        return summary_text(self._display_summary(prevalence))

    def print_summary(self, prevalence: float | None = None) -> None:
        """Print :meth:`summary_text` (what ``print(fit)`` shows).

        Examples
        --------
        >>> # fit.print_summary(prevalence=0.05)
        """
        print(self.summary_text(prevalence))

    def __str__(self) -> str:
        if getattr(self, "spec", None) is None:  # a bare result without its model: no tables
            return repr(self)
        return self.summary_text()

    def _repr_html_(self) -> str:
        """What a Jupyter notebook shows for the fit (see :func:`summary_html`)."""
        return summary_html(self._display_summary())

    def plot_variance_partition(self, ax: Any = None) -> Any:
        """Each random term's share of the variance with its interval
        (:func:`plot_variance_partition`); returns the matplotlib Axes.

        Examples
        --------
        >>> # fit.plot_variance_partition().figure.savefig("partition.png")
        """
        return plot_variance_partition(self._display_summary(), ax=ax)
