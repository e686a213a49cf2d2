"""``bayeslmm report DIR``: a fit's results folder as one self-contained HTML page.

The page is built from what ``bayeslmm fit`` (or ``demo``, or ``fit.save``) wrote into the
folder, nothing else: ``summary.json`` (required) gives the model, the data size, the
engine, the diagnostics and the tables (the same display as a fit in a notebook,
:func:`bayeslmm.results.display.summary_html`); ``posterior.nc`` (NUTS, optional) gives the
response's own summary and the trace and rank plots of the variance parameters;
``h2_posterior.png`` (optional) is embedded as it is. Every plot is a PNG inside the page
(base64 ``data:`` URIs) and the styles are inline, so the file can be mailed or archived
alone and opens without a network or a script.

The page is written to ``DIR/report.html`` (or ``--out FILE``) in one step: a temporary file
beside it, then renamed, so a reader never sees half a page. The page belongs to the fit's
result set: a later ``bayeslmm fit`` into the same folder removes it with the older results
(a page describing another fit never stays beside a new summary), so run ``bayeslmm report``
again after a new fit. A page written elsewhere with ``--out`` is the user's file.
"""

from __future__ import annotations

import argparse
import base64
import datetime as _dt
import html
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bayeslmm._version import __version__
from bayeslmm.errors import DataError
from bayeslmm.results.plots import rank_figure, trace_figure, trace_variables

REPORT_NAME = "report.html"


class ReportError(DataError):
    """A results folder cannot be turned into a report (no summary.json, unreadable files)."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``bayeslmm report``."""
    parser = subparsers.add_parser(
        "report",
        help="turn a results folder into one self-contained HTML page",
        description=(
            "Read DIR/summary.json (and DIR/posterior.nc, DIR/h2_posterior.png when present), "
            "as written by 'bayeslmm fit --out DIR' or 'bayeslmm demo', and write one HTML "
            "page with the model, the data summary, the diagnostics, the tables and the plots "
            "(embedded: the page needs no other file)."
        ),
    )
    parser.add_argument("folder", metavar="DIR", help="a results folder of bayeslmm fit")
    parser.add_argument(
        "--out",
        default=None,
        metavar="FILE",
        help=f"the HTML file to write (default DIR/{REPORT_NAME})",
    )
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Check the folder, build the page, write it in one step."""
    folder = Path(args.folder)
    out = Path(args.out) if args.out else folder / REPORT_NAME
    check_folder(folder, args.folder)
    check_target(out)
    page = build_report(folder)
    write_page(page, out)
    print(f"wrote {out}")
    return 0


# -- checks ------------------------------------------------------------------------------------
def check_folder(folder: Path, shown: str) -> None:
    """Raise :class:`ReportError` unless ``folder`` is a directory holding summary.json."""
    if not folder.exists():
        raise ReportError(
            f"No results folder at {shown!r}: it does not exist. Give the folder that "
            "'bayeslmm fit --out DIR' wrote."
        )
    if not folder.is_dir():
        raise ReportError(
            f"{shown!r} is a file, not a results folder. Give the folder that "
            "'bayeslmm fit --out DIR' wrote (it holds summary.json)."
        )
    if not (folder / "summary.json").is_file():
        raise ReportError(
            f"The folder {shown!r} has no summary.json, so it holds no bayeslmm results. "
            "Run 'bayeslmm fit ... --out DIR' (or 'bayeslmm demo --out DIR') first."
        )


def check_target(out: Path) -> None:
    """Raise :class:`ReportError` when the page cannot be written at ``out``."""
    if out.is_dir():
        raise ReportError(
            f"--out {str(out)!r} is a directory; give the name of the HTML file to write."
        )
    if not out.parent.is_dir():
        raise ReportError(
            f"Cannot write {str(out)!r}: its folder {str(out.parent)!r} does not exist."
        )


def read_summary(folder: Path) -> dict[str, Any]:
    """summary.json of ``folder``; a file that is not JSON is refused with its line."""
    path = folder / "summary.json"
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ReportError(
            f"{path.name} in {str(folder)!r} is not valid JSON (line {exc.lineno}, column "
            f"{exc.colno}: {exc.msg}); it may have been edited or truncated. Rerun the fit."
        ) from None
    except UnicodeDecodeError:
        raise ReportError(
            f"{path.name} in {str(folder)!r} is not UTF-8 text; rerun the fit."
        ) from None
    if not isinstance(summary, dict) or "method" not in summary:
        raise ReportError(
            f"{path.name} in {str(folder)!r} is not a bayeslmm summary (no 'method' key; see "
            "docs/summary_json.md). Rerun the fit."
        )
    return summary


def read_posterior(folder: Path) -> Any | None:
    """``posterior.nc`` as ArviZ InferenceData, or None when the folder has none."""
    path = folder / "posterior.nc"
    if not path.is_file():
        return None
    import arviz as az

    try:
        return az.from_netcdf(str(path))
    except Exception as exc:  # netCDF/HDF5 raise many types for a damaged file
        raise ReportError(
            f"posterior.nc in {str(folder)!r} cannot be read ({type(exc).__name__}); it may be "
            "truncated. Rerun the fit, or move the file away for a report without it."
        ) from None


# -- the page ----------------------------------------------------------------------------------
PAGE_STYLE = """
body {margin: 2em auto; max-width: 62em; padding: 0 1.5em; color: #111; background: #fff;
  font-family: system-ui, -apple-system, "Segoe UI", sans-serif;}
h1 {font-size: 22px; margin-bottom: 0.1em;}
h2 {font-size: 17px; margin-top: 1.8em; border-bottom: 1px solid #ccc; padding-bottom: 3px;}
p.meta {color: #555; margin-top: 0; font-size: 13px;}
figure {margin: 1em 0;}
figure img {max-width: 100%; height: auto; border: 1px solid #eee;}
figcaption {font-size: 13px; color: #444;}
"""


def build_report(folder: Path) -> str:
    """The report page of a results folder, as one HTML string.

    Parameters
    ----------
    folder : Path
        A results folder: summary.json, and optionally posterior.nc and h2_posterior.png.

    Returns
    -------
    str

    Examples
    --------
    >>> import json, tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> entry = {"estimate": 0.4, "se": 0.1, "ci_low": 0.2, "ci_high": 0.6, "ci_prob": 0.95}
    >>> summary = {"method": "reml", "formula": "y ~ 1 + (1 | id)", "n_obs": 50,
    ...            "heritability": {"id": entry, "h2": entry, "residual": entry},
    ...            "variance_components": [{"grp": "id"}, {"grp": "Residual"}]}
    >>> _ = (folder / "summary.json").write_text(json.dumps(summary))
    >>> page = build_report(folder)
    >>> page.startswith("<!DOCTYPE html>"), page.count("data:image/png;base64,")
    (True, 1)
    """
    from bayeslmm.results.display import STYLE, plot_variance_partition, summary_html

    summary = read_summary(folder)
    idata = read_posterior(folder)
    title = f"bayeslmm report: {summary.get('formula', '')}"
    written = summary.get("bayeslmm_version", "unknown")
    now = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',  # no favicon request: the page loads nothing
        f"<title>{html.escape(title)}</title>",
        f"<style>{PAGE_STYLE}</style>",
        STYLE,
        "</head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="meta">Results folder {html.escape(folder.name or str(folder))}; fitted '
        f"with bayeslmm {html.escape(str(written))}; report made {html.escape(now)} by "
        f"bayeslmm {html.escape(__version__)}.</p>",
        "<h2>Model, diagnostics and estimates</h2>",
        summary_html(summary, title="", style=False),
        "<h2>Data</h2>",
        data_section(summary, idata),
        "<h2>Plots</h2>",
    ]
    figures: list[tuple[str, str]] = []
    if summary.get("heritability"):
        try:
            ax = plot_variance_partition(summary)
        except ValueError:  # shares without random terms to draw (an intercept-only model)
            ax = None
        if ax is not None:
            caption = "Variance partition: each random term's share of the variance."
            figures.append((png_uri(ax.figure), caption))
    h2_png = folder / "h2_posterior.png"
    if h2_png.is_file():
        uri = "data:image/png;base64," + base64.b64encode(h2_png.read_bytes()).decode("ascii")
        figures.append((uri, "Posterior density of h² with its highest-density interval."))
    if idata is not None and "posterior" in idata.groups():
        names = trace_variables(idata.posterior)
        if names:
            caption = (
                "Trace plots: each chain's density (left) and its draws in order (right); "
                "the chains should overlap."
            )
            figures.append((png_uri(trace_figure(idata, names)), caption))
            caption = (
                "Rank plots: the ranks of each chain's draws among all draws; flat bars mean "
                "the chains agree."
            )
            figures.append((png_uri(rank_figure(idata, names)), caption))
    if not figures:
        parts.append("<p>No plots: this folder's results have no variance shares or draws.</p>")
    for uri, caption in figures:
        parts.append(
            f'<figure><img src="{uri}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    files = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != REPORT_NAME)
    parts.append(
        f'<p class="meta">Files read: {html.escape(", ".join(files))}. The numbers are those '
        "of summary.json (docs/summary_json.md).</p>"
    )
    parts.append("</body></html>")
    return "\n".join(parts)


def data_section(summary: dict[str, Any], idata: Any | None) -> str:
    """The response's summary (from posterior.nc's observed data) and the kinships."""
    from bayeslmm.results.display import format_number

    rows = [("observations", str(summary.get("n_obs", "")))]
    family = summary.get("family")
    if family:
        rows.append(("family", f"{family} ({summary.get('link')} link)"))
    observed = None
    if idata is not None and "observed_data" in idata.groups():
        observed = response_variable(idata.observed_data)
    if observed is not None:
        name, y = observed
        rows.append(("response", name))
        if np.all(np.isin(y, (0.0, 1.0))):
            rows.append(("cases (y = 1)", f"{int(y.sum())} of {y.size} ({y.mean():.1%})"))
        else:
            stats = {
                "mean": y.mean(),
                "SD": y.std(ddof=1) if y.size > 1 else float("nan"),
                "min": y.min(),
                "median": float(np.median(y)),
                "max": y.max(),
            }
            if np.all(y == np.round(y)) and y.min() >= 0:
                stats["zeros"] = float(np.mean(y == 0))
            rows.append(("summary", ", ".join(f"{k} {format_number(v)}" for k, v in stats.items())))
    for group, info in (summary.get("kinship") or {}).items():
        rows.append(
            (
                f"kinship of {group}",
                f"{info.get('name')}: {info.get('n_levels')} levels, mean diagonal "
                f"{format_number(info.get('mean_diagonal'))}",
            )
        )
    cells = "".join(
        f'<tr><td class="label">{html.escape(a)}</td><td>{html.escape(b)}</td></tr>'
        for a, b in rows
    )
    return f'<div class="bayeslmm"><table class="header">{cells}</table></div>'


def response_variable(observed: Any) -> tuple[str, np.ndarray] | None:
    """The response in ``observed_data``: the variable over the records (the spectral
    strategy also stores the rotated response, which is left out)."""
    for name, da in observed.data_vars.items():
        if str(name).endswith("_rotated") or da.ndim != 1:
            continue
        values = np.asarray(da.values, dtype=float)
        return str(name), values[np.isfinite(values)]
    return None


def png_uri(fig: Any, dpi: int = 100) -> str:
    """A matplotlib Figure as a ``data:image/png;base64,...`` URI."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def write_page(page: str, out: Path) -> None:
    """Write ``page`` to ``out`` in one step (temporary file beside it, then renamed)."""
    fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".html", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(page)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
