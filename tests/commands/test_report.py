"""``bayeslmm report DIR`` and ``bayeslmm --version``.

The report of a results folder must be one self-contained page (no script, no file or
network reference: every image a ``data:`` URI) that shows the folder's numbers. A headless
Chromium opens it, takes a screenshot and the test checks that the page is not blank, that
every image loaded and that the browser's console stayed silent. Chromium is Debian's
``chromium`` package (``.ci/run`` installs it when missing); without it the browser test is
skipped on a developer's machine and fails in CI (``CI`` set), where it must run.

The results folder is written by ``BayesFit.save`` from hand-made draws (the report reads
files, whatever sampler produced them), which keeps the tests fast.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bayeslmm as bl
from bayeslmm._version import __version__
from bayeslmm.cli import main
from bayeslmm.engines.bayes import build
from bayeslmm.engines.bayes.sampling import diagnose
from bayeslmm.results.bayes_result import BayesFit
from bayeslmm.results.display import format_number

DOCS = Path(__file__).resolve().parents[2] / "docs" / "errors.md"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


@pytest.fixture(scope="module")
def data(random_kinship):
    rng = np.random.default_rng(21)
    n = 40
    K = random_kinship(rng, n, 80, ridge=0.05, name="GRM")
    g = np.linalg.cholesky(K.matrix) @ rng.normal(size=n)
    df = pd.DataFrame({"id": list(K.ids), "y": 20 + 2 * g + rng.normal(size=n)})
    return df, K


@pytest.fixture(scope="module")
def nuts_folder(data, tmp_path_factory):
    """summary.json, posterior.nc and h2_posterior.png of a NUTS-like fit (2 × 100 draws)."""
    import arviz as az
    import xarray as xr

    df, K = data
    built = build(bl.specify("y ~ 1 + (1 | id)", df, kinship={"id": K}))
    rng = np.random.default_rng(8)
    dims, shape = ("chain", "draw"), (2, 100)
    var_id = rng.gamma(20.0, 0.2, shape)
    var_residual = rng.gamma(20.0, 0.05, shape)
    posterior = xr.Dataset(
        {
            "var_id": (dims, var_id),
            "var_residual": (dims, var_residual),
            "h2": (dims, var_id / (var_id + var_residual)),
            "beta": ((*dims, "fixed"), rng.normal(20.0, 0.3, (*shape, 1))),
        },
        coords={"chain": [0, 1], "draw": np.arange(100), "fixed": ["Intercept"]},
    )
    observed = xr.Dataset({"y": (("obs",), df["y"].to_numpy())})
    idata = az.InferenceData(posterior=posterior, observed_data=observed)
    diag, messages = diagnose(idata)
    fit = BayesFit(idata, built, timing={"total_s": 2.0}, diagnostics=diag, messages=messages)
    folder = tmp_path_factory.mktemp("nuts") / "results"
    fit.save(folder)
    return folder, fit


@pytest.fixture(scope="module")
def reml_folder(data, tmp_path_factory):
    from bayeslmm.results.summary import write_summary

    df, K = data
    fit = bl.LMM("y ~ 1 + (1 | id)", df, kinship={"id": K}).fit(method="reml")
    folder = tmp_path_factory.mktemp("reml") / "results"
    folder.mkdir()
    write_summary(fit.to_summary(), folder / "summary.json")
    return folder, fit


def report(folder: Path, capsys, *extra: str) -> str:
    assert main(["report", str(folder), *extra]) == 0
    out = capsys.readouterr().out
    assert out.startswith("wrote ")
    return out


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"bayeslmm {__version__}"


def test_nuts_report_is_self_contained_and_shows_the_folder(nuts_folder, capsys):
    folder, fit = nuts_folder
    report(folder, capsys)
    page = (folder / "report.html").read_text(encoding="utf-8")
    sources = re.findall(r'<img src="([^"]*)"', page)
    # variance partition, the saved h² density, trace and rank plots
    assert len(sources) == 4
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert "<title>bayeslmm report: y ~ 1 + (1 | id)</title>" in page
    summary = json.loads((folder / "summary.json").read_text())
    h2 = summary["heritability"]["h2"]
    assert f">{h2['mean']:.3f}<" in page and f">{h2['hdi_low']:.3f}<" in page
    for message in fit.messages:
        assert html.escape(message) in page
    # the data section: the response's own summary from posterior.nc
    y = fit.idata.observed_data["y"].values
    assert "response</td><td>y<" in page and f"max {format_number(y.max())}" in page
    # the folder is left as it was, plus the page
    assert sorted(p.name for p in folder.iterdir()) == [
        "h2_posterior.png", "inputs", "posterior.nc", "report.html", "summary.json"
    ]  # fmt: skip


def test_reml_report_and_out_option(reml_folder, tmp_path, capsys):
    folder, fit = reml_folder
    target = tmp_path / "page.html"
    report(folder, capsys, "--out", str(target))
    page = target.read_text(encoding="utf-8")
    assert page.count("<img ") == 1  # the variance partition: REML has no draws to plot
    assert f">{fit.heritability().loc['h2', 'estimate']:.3f}<" in page
    assert "REML criterion" in page and "observations</td><td>40<" in page
    assert not (folder / "report.html").exists()


def test_a_new_fit_removes_the_report_of_the_old_one(data, tmp_path, capsys):
    # A page describing an older fit must not stay beside a newer fit's summary.json.
    from bayeslmm.results.output import result_directory
    from bayeslmm.results.summary import write_summary

    df, K = data
    folder = tmp_path / "results"
    fit = bl.LMM("y ~ 1 + (1 | id)", df, kinship={"id": K}).fit(method="reml")
    with result_directory(folder) as stage:
        write_summary(fit.to_summary(), stage / "summary.json")
    (folder / "notes.txt").write_text("mine")
    report(folder, capsys)
    assert (folder / "report.html").exists()
    with result_directory(folder) as stage:  # the next run writes its own set
        write_summary(fit.to_summary(), stage / "summary.json")
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt", "summary.json"]


# -- the page in a browser ---------------------------------------------------------------------
def browser() -> str | None:
    return next((path for b in BROWSERS if (path := shutil.which(b))), None)


@dataclass
class Rendered:
    console: list[str]  # lines the page wrote to the browser console
    images: tuple[int, int]  # <img> elements, of which loaded
    pixels: np.ndarray  # the screenshot, RGB in [0, 1]


#: Injected into a copy of the page (the report itself has no script): after loading, the
#: title reports how many images there are and how many decoded.
PROBE = (
    "<script>window.addEventListener('load', () => { const im = [...document.images]; "
    "document.title = 'probe:' + im.length + ':' + "
    "im.filter(i => i.complete && i.naturalWidth > 0).length; });</script>"
)


def render(page: Path, workdir: Path) -> Rendered:
    """Open ``page`` in headless Chromium: its console, its images, a screenshot."""
    from matplotlib.image import imread

    exe = browser()
    flags = [
        "--headless",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--hide-scrollbars",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=5000",
        f"--user-data-dir={workdir / 'profile'}",
    ]
    shot = workdir / "screenshot.png"
    run = subprocess.run(
        [exe, *flags, "--window-size=1100,2200", f"--screenshot={shot}", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert shot.exists(), f"Chromium wrote no screenshot:\n{run.stderr[-2000:]}"
    probe = workdir / "probe.html"
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"))
    dom = subprocess.run(
        [exe, *flags, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120
    )
    match = re.search(r"<title>probe:(\d+):(\d+)</title>", dom.stdout)
    assert match, f"the probe did not run:\n{dom.stderr[-2000:]}"
    console = [line for line in (run.stderr + dom.stderr).splitlines() if ":CONSOLE" in line]
    return Rendered(console, (int(match[1]), int(match[2])), imread(shot)[..., :3])


@pytest.fixture
def chromium():
    if browser() is None:
        message = (
            "Chromium is not installed (Debian: apt-get install chromium); the report's "
            "browser test needs it"
        )
        if os.environ.get("CI"):
            pytest.fail(message + ", and CI must run it (.ci/run installs it).")
        pytest.skip(message)


def test_report_renders_in_chromium(chromium, nuts_folder, tmp_path, capsys):
    folder, _ = nuts_folder
    report(folder, capsys)
    shown = render(folder / "report.html", tmp_path)
    assert shown.console == [], "the browser console reported:\n" + "\n".join(shown.console)
    assert shown.images == (4, 4), f"images on the page, loaded: {shown.images}"
    ink = shown.pixels.min(axis=-1) < 0.9  # anything that is not white
    assert ink.mean() > 0.03, f"the screenshot is nearly blank ({ink.mean():.1%} ink)"
    # the plots drew: pixels of matplotlib's first colour (31, 119, 180), not just text
    blue = np.abs(shown.pixels - np.array([31, 119, 180]) / 255).max(axis=-1) < 0.08
    assert blue.sum() > 500, f"no plot colours on the page ({blue.sum()} blue pixels)"


def test_browser_check_sees_console_errors_and_broken_images(chromium, tmp_path):
    page = tmp_path / "bad.html"
    page.write_text(
        '<!DOCTYPE html><html><head><meta charset="utf-8"><link rel="icon" href="data:,">'
        '<title>t</title></head><body><p>text</p><img src="missing.png">'
        '<script>console.error("boom")</script></body></html>'
    )
    shown = render(page, tmp_path)
    assert any('"boom"' in line for line in shown.console)
    assert shown.images == (1, 0)


# -- bad input ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    id: str
    args: str  # {folder}: a results folder made for the case
    phrase: str
    given: str  # for docs/errors.md


CASES = (
    Case(
        "report-missing",
        "nowhere",
        "No results folder at 'nowhere'",
        "a folder that does not exist",
    ),  # fmt: skip
    Case("report-file", "{folder}/summary.json", "is a file, not a results folder", "a file"),
    Case("report-no-summary", "{empty}", "has no summary.json", "a folder without summary.json"),
    Case("report-bad-json", "{broken}", "is not valid JSON (line", "a truncated summary.json"),
    Case("report-not-summary", "{alien}", "is not a bayeslmm summary", "JSON without 'method'"),
    Case("report-out-directory", "{folder} --out {folder}", "is a directory", "--out a folder"),
)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_report_errors(case, reml_folder, tmp_path, monkeypatch, capsys):
    folder, _ = reml_folder
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "summary.json").write_text('{"method": "reml", "n_obs"')
    (tmp_path / "alien").mkdir()
    (tmp_path / "alien" / "summary.json").write_text("[1, 2]")
    monkeypatch.chdir(tmp_path)
    args = case.args.format(folder=folder, empty="empty", broken="broken", alien="alien")
    assert main(["report", *args.split()]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and case.phrase in err, err
    assert err.startswith("bayeslmm report: error: ")


def test_report_errors_are_documented():
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("## Reports", 1)[1]
    documented = set(re.findall(r"`(report-[a-z0-9-]+)`", section))
    assert documented == {c.id for c in CASES}
