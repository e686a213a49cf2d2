"""summary.json: the public, engine-independent layout of a fit's results.

Both engines write the same layout (documented in ``docs/summary_json.md``)::

    {
      "bayeslmm_version": "0.1.0",
      "method": "nuts" | "reml",
      "n_obs": 250,
      "formula": "bp ~ 1 + (1 | id)",
      "family": "gaussian", "link": "identity",
      "strategy": "spectral",                    # engine detail (REML: its algorithm)
      "heritability": {"h2": ENTRY, "<group>": ENTRY, ...},
      "variance_components": [{"grp", "var1", "var2", "vcov", "sdcor", ...}, ...],
      "fixed_effects": {"Intercept": ENTRY, ...},
      "diagnostics": {...},
      "timing": {"total_s": ..., ...}
    }

An ENTRY for NUTS is a posterior summary: ``mean, sd, hdi_low, hdi_high, hdi_prob, ess_bulk,
ess_tail, r_hat`` (:func:`posterior_summary`). REML writes ``estimate, se`` and optionally
``ci_low, ci_high, ci_prob`` in the same places. Every number is finite or ``null`` (no NaN,
which is not JSON).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: Keys of a posterior summary entry, in order.
POSTERIOR_KEYS = ("mean", "sd", "hdi_low", "hdi_high", "hdi_prob", "ess_bulk", "ess_tail", "r_hat")


def posterior_summary(draws: Any, hdi_prob: float = 0.95) -> dict[str, float]:
    """Summarise the draws of one scalar: mean, sd, HDI, bulk/tail ESS and rank R-hat.

    Parameters
    ----------
    draws : array_like, shape (chain, draw)
        Posterior draws of one quantity (an ``xarray.DataArray`` with dims chain, draw, or a
        2-D array).
    hdi_prob : float
        Probability mass of the highest-density interval.

    Returns
    -------
    dict
        Keys :data:`POSTERIOR_KEYS`; R-hat is NaN with a single chain.

    Examples
    --------
    >>> import numpy as np
    >>> s = posterior_summary(np.random.default_rng(0).normal(size=(2, 500)))
    >>> sorted(s) == sorted(POSTERIOR_KEYS), abs(s["mean"]) < 0.1
    (True, True)
    """
    x = np.asarray(draws, dtype=float)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"draws must have shape (chain, draw); got {x.shape}.")
    columns = posterior_summaries(x[:, :, None], hdi_prob)
    return {key: float(columns[key][0]) for key in POSTERIOR_KEYS}


def posterior_summaries(draws: np.ndarray, hdi_prob: float = 0.95) -> dict[str, np.ndarray]:
    """:func:`posterior_summary` of every column of ``draws`` at once, as arrays.

    Each statistic is computed for all columns together (sums along one contiguous axis, R-hat
    and ESS by :func:`~bayeslmm.results.convergence.convergence_columns`), with each column's
    numbers equal to what the one-column summary gives: a table of thousands of markers or
    levels costs a few passes over its draws, not a Python loop over its columns.

    Parameters
    ----------
    draws : array_like, shape (chain, draw, k)
    hdi_prob : float
        Probability mass of the highest-density interval.

    Returns
    -------
    dict of str to ndarray
        Keys :data:`POSTERIOR_KEYS` (``hdi_prob`` repeated), each of shape (k,).

    Examples
    --------
    >>> x = np.random.default_rng(0).normal(size=(2, 500, 3))
    >>> s = posterior_summaries(x)
    >>> bool(s["ess_bulk"][1] == posterior_summary(x[:, :, 1])["ess_bulk"])
    True
    """
    from bayeslmm.results.convergence import convergence_columns

    x = np.asarray(draws, dtype=float)
    if x.ndim != 3:
        raise ValueError(f"draws must have shape (chain, draw, column); got {x.shape}.")
    n_chain, _, k = x.shape
    flat = np.ascontiguousarray(x.reshape(-1, k).T)  # column × all draws, chains in order
    low, high = hdi_columns(flat, hdi_prob)
    # ArviZ's numbers, without compiling its numba variance (bayeslmm.results.convergence);
    # NaN for constant draws, whose ESS ArviZ reports as the number of draws
    r_hat, bulk, tail = convergence_columns(x)
    constant = np.ptp(flat, axis=-1) == 0
    bulk[constant] = tail[constant] = r_hat[constant] = np.nan
    if n_chain < 2:
        r_hat[:] = np.nan
    return {
        "mean": flat.mean(axis=-1),
        "sd": flat.std(axis=-1, ddof=1) if flat.shape[1] > 1 else np.full(k, np.nan),
        "hdi_low": low,
        "hdi_high": high,
        "hdi_prob": np.full(k, float(hdi_prob)),
        "ess_bulk": bulk,
        "ess_tail": tail,
        "r_hat": r_hat,
    }


def hdi_columns(values: np.ndarray, hdi_prob: float) -> tuple[np.ndarray, np.ndarray]:
    """Highest-density interval of each row of ``values``: ArviZ's ``az.hdi`` of that row
    (the narrowest window of ⌊hdi_prob · n⌋ + 1 sorted draws, the first of equal widths).

    Parameters
    ----------
    values : array_like, shape (k, n)
    hdi_prob : float
        In (0, 1].

    Returns
    -------
    low, high : ndarray, shape (k,)

    Examples
    --------
    >>> low, high = hdi_columns(np.arange(10.0)[None, :], 0.5)
    >>> float(low[0]), float(high[0])
    (0.0, 5.0)
    """
    if not 1 >= hdi_prob > 0:
        raise ValueError(f"hdi_prob must be in (0, 1]; got {hdi_prob}.")
    ordered = np.sort(np.asarray(values, dtype=float), axis=-1)
    n = ordered.shape[-1]
    width = int(np.floor(hdi_prob * n))
    if width >= n:
        raise ValueError(
            f"Too few draws ({n}) for a {hdi_prob:.0%} highest-density interval; draw more."
        )
    start = np.argmin(ordered[:, width:] - ordered[:, : n - width], axis=-1)
    rows = np.arange(ordered.shape[0])
    return ordered[rows, start], ordered[rows, start + width]


def json_safe(value: Any) -> Any:
    """Recursively convert to JSON types; NaN / inf become ``None``.

    Examples
    --------
    >>> json_safe({"a": np.float64("nan"), "b": np.arange(2), "c": (1.5, np.int64(2))})
    {'a': None, 'b': [0, 1], 'c': [1.5, 2]}
    """
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return [json_safe(v) for v in value.tolist()]
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    raise TypeError(f"Cannot write {type(value).__name__} to summary.json: {value!r}")


def point_variance_rows(table) -> list[dict[str, Any]]:
    """summary.json ``variance_components`` rows of a point-estimate fit (REML, Laplace).

    ``table`` is the fit's ``variance_components()`` frame: grp, var1, var2, vcov, sdcor, se.
    """
    keys = ("grp", "var1", "var2", "vcov", "sdcor", "se")
    return [{k: getattr(r, k) for k in keys} for r in table.itertuples(index=False)]


def point_entries(table, columns: Sequence[str]) -> dict[str, dict[str, Any]]:
    """summary.json ENTRYs ``{name: {column: value}}`` from a point-estimate table."""
    return {str(name): {c: row[c] for c in columns} for name, row in table.iterrows()}


def assemble_summary(
    *,
    method: str,
    n_obs: int,
    formula: str,
    strategy: str,
    heritability: Mapping[str, Mapping[str, float]],
    variance_components: Sequence[Mapping[str, Any]],
    fixed_effects: Mapping[str, Mapping[str, float]],
    diagnostics: Mapping[str, Any],
    timing: Mapping[str, float],
    family: str = "gaussian",
    link: str = "identity",
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble the summary.json dictionary (JSON-safe) from an engine's pieces.

    Parameters
    ----------
    method : str
        ``"nuts"`` or ``"reml"``.
    n_obs : int
    formula : str
    strategy : str
        How the engine ran (``"spectral"``/``"latent"`` for NUTS).
    heritability : dict
        Label (``"h2"`` or a group name) → ENTRY (see the module docs).
    variance_components : list of dict
        lme4 ``as.data.frame(VarCorr(fit))`` rows: ``grp, var1, var2, vcov, sdcor`` (and
        optional extra keys such as ``vcov_sd`` or ``se``), ``"Residual"`` last.
    fixed_effects : dict
        Coefficient name → ENTRY.
    diagnostics : dict
        NUTS: ``divergences, max_r_hat, min_ess_bulk`` (+ ``messages``); REML: convergence.
    timing : dict
        Seconds; must include ``total_s``.
    family, link : str
    extra : dict, optional
        Further top-level keys (e.g. ``"priors"``).

    Returns
    -------
    dict

    Examples
    --------
    >>> s = assemble_summary(method="reml", n_obs=10, formula="y ~ (1|id)", strategy="eigen",
    ...     heritability={"h2": {"estimate": 0.4, "se": 0.1}}, variance_components=[],
    ...     fixed_effects={}, diagnostics={}, timing={"total_s": 0.1})
    >>> s["heritability"]["h2"]["estimate"], s["method"]
    (0.4, 'reml')
    """
    if "total_s" not in timing:
        raise ValueError("timing must include 'total_s'.")
    from bayeslmm._version import __version__

    out: dict[str, Any] = {
        "bayeslmm_version": __version__,
        "method": method,
        "n_obs": int(n_obs),
        "formula": formula,
        "family": family,
        "link": link,
        "strategy": strategy,
        "heritability": dict(heritability),
        "variance_components": [dict(r) for r in variance_components],
        "fixed_effects": dict(fixed_effects),
        "diagnostics": dict(diagnostics),
        "timing": dict(timing),
    }
    out.update(extra or {})
    return json_safe(out)


def write_summary(summary: Mapping[str, Any], path: str | Path) -> Path:
    """Write a summary dictionary as indented JSON (NaN refused); return the path.

    Examples
    --------
    >>> import tempfile, os
    >>> p = write_summary({"method": "nuts"}, os.path.join(tempfile.mkdtemp(), "s.json"))
    >>> p.read_text().startswith("{")
    True
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_safe(summary), indent=2, allow_nan=False) + "\n")
    return path
