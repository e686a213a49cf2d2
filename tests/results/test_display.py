"""Notebook and terminal display of fits, models and kinships (bayeslmm/results/display.py).

The display is drawn from the summary.json dictionary, so the tests check that what is shown
is what the fit's tables say (numbers, rows, warnings), for each engine, and that HTML text is
escaped. The NUTS fit is prior draws standing in for a posterior (the display reads draws,
whatever produced them), which keeps the tests fast.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

import bayeslmm as bl
from bayeslmm.engines.bayes import build
from bayeslmm.engines.bayes.sampling import diagnose
from bayeslmm.results.bayes_result import BayesFit
from bayeslmm.results.display import (
    format_number,
    plot_variance_partition,
    summary_html,
    summary_tables,
    summary_text,
)
from bayeslmm.results.summary import write_summary


@pytest.fixture(scope="module")
def data(random_kinship):
    rng = np.random.default_rng(11)
    n = 40
    K = random_kinship(rng, n, 80, ridge=0.05, name="GRM")
    g = np.linalg.cholesky(K.matrix) @ rng.normal(size=n)
    x = rng.normal(size=n)
    df = pd.DataFrame(
        {
            "id": list(K.ids),
            "y": 5 + 0.5 * x + g + rng.normal(size=n),
            "x": x,
        }
    )
    return df, K


@pytest.fixture(scope="module")
def reml(data):
    df, K = data
    return bl.LMM("y ~ x + (1 | id)", df, kinship={"id": K}).fit(method="reml")


@pytest.fixture(scope="module")
def laplace():
    # repeated binary records per individual: the genetic variance is away from 0
    sim = bl.datasets.simulate(
        n_families=8, family_size=5, n_snps=300, repeats=4, h2=0.5, family="bernoulli", seed=2
    )
    model = bl.LMM("y ~ 1 + (1 | id)", sim.data, kinship={"id": sim.kinship}, family="bernoulli")
    return model.fit(method="laplace")


@pytest.fixture(scope="module")
def nuts(data):
    """Hand-made draws (2 chains × 100) of the model's variances and β, the second chain
    shifted so that R-hat flags it: the display must carry the diagnostics' words."""
    import arviz as az
    import xarray as xr

    df, K = data
    built = build(bl.specify("y ~ x + (1 | id)", df, kinship={"id": K}))  # no sampling
    rng = np.random.default_rng(4)
    shape = (2, 100)
    var_id = rng.gamma(20.0, 0.05, shape) + np.array([[0.0], [0.3]])
    var_residual = rng.gamma(30.0, 0.03, shape)
    beta = np.stack([rng.normal(5.0, 0.2, shape), rng.normal(0.5, 0.1, shape)], axis=-1)
    dims = ("chain", "draw")
    posterior = xr.Dataset(
        {
            "var_id": (dims, var_id),
            "var_residual": (dims, var_residual),
            "beta": ((*dims, "fixed"), beta),
        },
        coords={"chain": [0, 1], "draw": np.arange(100), "fixed": ["Intercept", "x"]},
    )
    idata = az.InferenceData(posterior=posterior)
    diag, messages = diagnose(idata)
    return BayesFit(
        idata, built, timing={"total_s": 1.5}, diagnostics=diag, messages=messages, seed=9
    )


def _number(text: str, label: str) -> float:
    """The first number after ``label`` at the start of a line of ``text``."""
    match = re.search(rf"^{re.escape(label)}\s+(-?[0-9.]+)", text, flags=re.MULTILINE)
    assert match, f"no line starting with {label!r} in\n{text}"
    return float(match.group(1))


def test_reml_text_shows_the_fit_tables(reml):
    text = str(reml)
    assert text == reml.summary_text()
    h2 = reml.heritability().loc["h2"]
    assert _number(text, "h2") == pytest.approx(h2["estimate"], abs=6e-4)
    for line in ("Formula: y ~ x + (1 | id)", "Data: 40 observations", "Engine: REML (spectral)"):
        assert line in text
    assert "Kinship: id ~ GRM (40 levels" in text
    assert "REML criterion" in text and "t value" in text
    fixed = reml.fixed_effects()
    assert _number(text, "x") == pytest.approx(fixed.loc["x", "estimate"], rel=2e-3)
    vc = reml.variance_components()
    assert _number(text, "Residual") == pytest.approx(vc["vcov"].iloc[-1], rel=2e-3)
    # repr stays the short description
    assert repr(reml).startswith("RemlFit(")


def test_nuts_text_has_posterior_columns_priors_and_warnings(nuts):
    text = nuts.summary_text()
    header = next(line for line in text.splitlines() if line.lstrip().startswith("Estimate"))
    assert header.split()[:7] == [
        "Estimate", "Est.Error", "l-95%", "HDI", "u-95%", "HDI", "Rhat"
    ]  # fmt: skip
    h2 = nuts.heritability().loc["h2"]
    assert _number(text, "h2") == pytest.approx(h2["mean"], abs=6e-4)
    assert "2 chains × 100 draws" in text
    for key, prior in nuts.built.priors.table().items():
        assert f"{key} ~ {prior}" in text
    # prior draws are not a converged posterior: the diagnostics' words are shown
    assert nuts.messages
    for message in nuts.messages:
        assert message in text


def test_laplace_text_has_scales_and_liability_with_prevalence(laplace):
    text = laplace.summary_text(prevalence=0.1)
    assert "Engine: Laplace maximum likelihood (nAGQ=1)" in text
    assert "h² on each scale" in text
    for row in ("h2_latent", "h2_link", "h2_observed", "h2_liability"):
        assert re.search(rf"^{row}\b", text, flags=re.MULTILINE), row
    assert "h2_liability" not in laplace.summary_text()
    assert "z value" in text
    scales = laplace.heritability_scales(prevalence=0.1)
    for row in ("h2_latent", "h2_observed", "h2_liability"):
        assert _number(text, row) == pytest.approx(scales.loc[row, "estimate"], abs=6e-4)


def test_prevalence_on_a_gaussian_fit_is_refused(reml):
    with pytest.raises(ValueError, match="binary trait.*'gaussian'"):
        reml.summary_text(prevalence=0.1)


@pytest.mark.parametrize("which", ["reml", "laplace", "nuts"])
def test_html_holds_the_same_tables(which, request):
    fit = request.getfixturevalue(which)
    page = fit._repr_html_()
    summary = fit._display_summary()
    assert page.startswith("\n<style>") and '<div class="bayeslmm">' in page
    for _, table in summary_tables(summary).values():
        for cell in table.to_numpy().ravel():
            if cell:
                assert f">{cell}<" in page
    assert page.count("<table") == 1 + len(summary_tables(summary)) + bool(summary.get("priors"))


def test_html_escapes_text():
    summary = {
        "method": "reml",
        "formula": "y ~ x + (1 | <id>)",
        "n_obs": 3,
        "diagnostics": {"converged": True, "messages": ["a & b <script>"]},
    }
    page = summary_html(summary)
    assert "<script>" not in page and "<id>" not in page
    assert "a &amp; b &lt;script&gt;" in page and "(1 | &lt;id&gt;)" in page


def test_summary_json_file_shows_as_the_fit(reml, tmp_path):
    path = write_summary(reml.to_summary(), tmp_path / "summary.json")
    assert summary_text(json.loads(path.read_text())) == reml.summary_text()


def test_format_number():
    assert format_number(float("nan")) == "" and format_number(None) == ""
    assert format_number(-0.04417) == "-0.0442"
    assert format_number(12345.6) == "12346"
    assert format_number(2.5e7) == "2.50e+07"


def test_variance_partition_plot(reml):
    import matplotlib.pyplot as plt

    open_figures = plt.get_fignums()
    ax = reml.plot_variance_partition()
    assert type(ax.figure).__name__ == "Figure" and plt.get_fignums() == open_figures
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["id", "residual"]
    shares = reml.to_summary()["heritability"]
    widths = {lab: bar.get_width() for lab, bar in zip(labels, ax.patches, strict=True)}
    for lab in labels:
        assert widths[lab] == pytest.approx(shares[lab]["estimate"])
    assert "phenotypic variance" in ax.get_xlabel() and "95% CI" in ax.get_xlabel()


def test_variance_partition_needs_shares():
    with pytest.raises(ValueError, match="no variance shares"):
        plot_variance_partition({"method": "reml", "heritability": {}})


def test_model_and_kinship_html(data):
    df, K = data
    model = bl.LMM("y ~ x + (1 | id)", df, kinship={"id": K})
    page = model._repr_html_()
    assert "bayeslmm · model (not fitted)" in page and "40 observations of y" in page
    for key, prior in bl.priors.resolve_priors(model.spec).table().items():
        assert f">{key}<" in page and f">{prior}<" in page
    unchecked = bl.Kinship(K.matrix, K.ids, name="A & B", check_psd=False)
    page = unchecked._repr_html_()
    assert "A &amp; B" in page and "40 × 40" in page
    assert "_eigh" not in unchecked.__dict__  # displaying never costs an eigendecomposition
    off = K.matrix[~np.eye(K.n, dtype=bool)]
    assert f"{off.min():.3g} / {off.mean():.3g} / {off.max():.3g}" in page


def test_engine_line_says_exact_draws_when_no_nuts_ran():
    """The sparse-pedigree strategy draws independently from the exact posterior: the header
    must not call that NUTS; a NUTS fit's header names its sampler."""
    from bayeslmm.results.display import _engine_line

    diagnostics = {"chains": 4, "draws": 1000}
    exact = {"method": "nuts", "sampler": "exact", "strategy": "sparse-pedigree"}
    nuts = {"method": "nuts", "sampler": "nutpie", "strategy": "spectral"}
    line = _engine_line({**exact, "diagnostics": diagnostics})
    assert line == "Exact posterior draws (sparse-pedigree strategy, 4 chains × 1000 draws)"
    assert "NUTS" not in line
    assert _engine_line({**nuts, "diagnostics": diagnostics}).startswith("NUTS (nutpie sampler")
