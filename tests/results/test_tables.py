"""The tables every engine answers (bayeslmm.results.tables): one layout, one definition.

Posterior tables are functions of the draws whatever produced them, so prior draws of the
built PyMC model stand in for a posterior where a sampler run would only cost time.
"""

import numpy as np
import pandas as pd
import pytest

import bayeslmm as bl
from bayeslmm.engines.bayes import build
from bayeslmm.engines.bayes.sampling import diagnose
from bayeslmm.results import tables
from bayeslmm.results.bayes_result import BayesFit
from bayeslmm.results.estimate import COMMON_COLUMNS, POSTERIOR_COLUMNS

LEADING = list(COMMON_COLUMNS)


def _prior_fit(spec, draws=300):
    import pymc as pm

    built = build(spec)
    with built.model:
        names = [v.name for v in built.model.free_RVs + built.model.deterministics]
        prior = pm.sample_prior_predictive(draws=draws, random_seed=2, var_names=names)
    prior.add_groups(posterior=prior.prior)
    diag, messages = diagnose(prior)
    return BayesFit(prior, built, timing={"total_s": 0.0}, diagnostics=diag, messages=messages)


@pytest.fixture(scope="module")
def kin_data():
    """A kinship far from GCTA's scale (mean diagonal 2.1, rows not centred) and data."""
    rng = np.random.default_rng(7)
    n = 40
    ids = [f"i{k}" for k in range(n)]
    W = rng.binomial(2, 0.3, size=(n, 120)).astype(float)  # uncentred dosages
    K = bl.Kinship(W @ W.T / 120 + 0.5 * np.eye(n), ids)
    x = rng.normal(size=2 * n)
    s, U = np.linalg.eigh(K.matrix)
    g = np.repeat(U @ (np.sqrt(np.clip(s, 0, None)) * rng.normal(size=n)), 2)
    df = pd.DataFrame(
        {
            "y": 1.0 + 0.5 * x + g + 0.8 * rng.normal(size=2 * n),
            "x": x,
            "env": np.tile([0.0, 1.0], n),
            "id": np.repeat(ids, 2),
            "pen": np.repeat([f"p{k % 5}" for k in range(n)], 2),
            "count": rng.poisson(np.exp(0.3 + 0.3 * g)),
        }
    )
    return K, df


def test_layouts_are_identical_across_engines(kin_data):
    """REML and a posterior of one Gaussian slope model, Laplace ML and a posterior of one
    GLMM: the same rows, and the same leading columns in the same order."""
    K, df = kin_data
    gauss = bl.specify("y ~ x + (1 + env | id) + (1 | pen)", df, kinship={"id": K})
    reml = bl.LMM.from_spec(gauss).fit(method="reml")
    nuts = _prior_fit(gauss)
    glmm = bl.specify("count ~ x + (1 | id) + (1 | pen)", df, kinship={"id": K}, family="poisson")
    laplace = bl.LMM.from_spec(glmm).fit(method="laplace")
    nuts_glmm = _prior_fit(glmm)
    extra = {"reml": ["t"], "laplace": ["z"]}
    for point, draws in ((reml, nuts), (laplace, nuts_glmm)):
        # the same rows
        assert list(point.heritability().index) == list(draws.heritability().index)
        vc_a, vc_b = point.variance_components(), draws.variance_components()
        assert vc_a[["grp", "var1", "var2"]].equals(vc_b[["grp", "var1", "var2"]])
        assert len(point.fixed_effects()) == len(draws.fixed_effects())
        # the same leading columns; a posterior's own summary after them, never instead
        assert list(vc_a.columns) == list(vc_b.columns) == list(tables.VARIANCE_COLUMNS)
        assert list(point.heritability().columns) == LEADING
        assert list(draws.heritability().columns) == LEADING + list(POSTERIOR_COLUMNS)
        assert list(point.fixed_effects().columns) == LEADING + extra[point.engine]
        assert list(draws.fixed_effects().columns) == LEADING + list(POSTERIOR_COLUMNS)
    # a slope term is one variance share in every engine (GxE rows align by name)
    assert list(reml.heritability().index) == ["id", "pen"]
    # scales: the same rows, columns as every table
    assert list(laplace.heritability_scales().index) == list(nuts_glmm.heritability_scales().index)


def test_posterior_deterministics_equal_the_tables(kin_data):
    """The model's own ``variance_share`` / ``h2`` (what idata users read) is the shares the
    tables compute from the variances: one definition at the sample's kinship scale."""
    K, df = kin_data
    for formula in ("y ~ x + (1 | id)", "y ~ x + (1 + env | id) + (1 | pen)"):
        fit = _prior_fit(bl.specify(formula, df, kinship={"id": K}))
        draws = fit.heritability_draws(include_residual=True)
        model = fit.posterior["variance_share"]
        for comp in model["component"].values:
            np.testing.assert_allclose(
                draws.sel(component=comp).values,
                model.sel(component=comp).values,
                rtol=1e-8,
                atol=1e-14,
            )
        if "h2" in fit.posterior:
            np.testing.assert_allclose(
                draws.sel(component="h2").values, fit.posterior["h2"].values, rtol=1e-10
            )


def test_h2_is_at_the_sample_scale_and_gcta_is_kept(kin_data):
    """h² = c σ_g² / (c σ_g² + σ_e²) with c = mean diag K − mean K (Legarra 2016); GCTA's
    σ_g² / (σ_g² + σ_e²) is the ``h2_gcta`` row; a centred, normalised GRM has no such row."""
    K, df = kin_data
    fit = bl.LMM("y ~ x + (1 | id)", df, kinship={"id": K}).fit(method="reml")
    vg, ve = fit.variance_components()["vcov"]
    Z = (df["id"].to_numpy()[:, None] == np.array(K.ids)[None, :]).astype(float)
    Kobs = Z @ K.matrix @ Z.T
    c = np.mean(np.diag(Kobs)) - np.mean(Kobs)
    h = fit.heritability()
    assert h.loc["h2", "estimate"] == pytest.approx(c * vg / (c * vg + ve), rel=1e-10)
    assert h.loc["h2_gcta", "estimate"] == pytest.approx(vg / (vg + ve), rel=1e-10)
    # the same fit on K rescaled and centred to a GCTA-style GRM: the same h², no h2_gcta
    n = K.n
    P = np.eye(n) - 1.0 / n
    Kc = P @ K.matrix @ P
    centred = bl.Kinship(Kc / np.mean(np.diag(Kc)), K.ids)
    df1 = df.groupby("id", sort=False).head(1)  # one record each: Z = I, mean K = 0 exactly
    h1 = bl.LMM("y ~ x + (1 | id)", df1, kinship={"id": centred}).fit(method="reml")
    table = h1.heritability()
    assert "h2_gcta" not in table.index
    vg1, ve1 = h1.variance_components()["vcov"]
    assert table.loc["h2", "estimate"] == pytest.approx(vg1 / (vg1 + ve1), rel=1e-10)


def test_delta_method_se_equals_the_exact_gradient(kin_data):
    """Point fits get SEs from a finite-difference Jacobian of the same formula the
    posterior uses; it equals the analytic gradient of c θ_g / (c θ_g + θ_e)."""
    K, df = kin_data
    fit = bl.LMM("y ~ x + (1 | id)", df, kinship={"id": K}).fit(method="reml")
    theta = fit.parameters["estimate"].to_numpy()
    c = fit.spec.terms[0].variance_weights()[0, 0]
    total = c * theta[0] + theta[1]
    grad = np.array([c * theta[1], -c * theta[0]]) / total**2
    se = np.sqrt(grad @ fit.parameter_cov @ grad)
    assert fit.heritability().loc["h2", "se"] == pytest.approx(se, rel=1e-8)


def test_compare_fits_any_two_fits_of_one_model(kin_data):
    K, df = kin_data
    model = bl.LMM("count ~ x + (1 | id)", df, kinship={"id": K}, family="poisson")
    laplace = model.fit(method="laplace")
    nuts = _prior_fit(model.spec)
    table = bl.compare_fits(laplace, nuts)
    assert list(table.columns[:6]) == [
        "kind",
        "parameter",
        "laplace_estimate",
        "laplace_se",
        "laplace_ci_low",
        "laplace_ci_high",
    ]
    rows = table.set_index("parameter")
    assert rows.loc["h2", "laplace_estimate"] == pytest.approx(
        laplace.heritability().loc["h2", "estimate"]
    )
    assert rows.loc["h2", "nuts_estimate"] == pytest.approx(nuts.heritability().loc["h2", "mean"])
    # two fits from one engine: labelled _a and _b
    same = bl.compare_fits(laplace, laplace)
    assert same["laplace_a_estimate"].equals(same["laplace_b_estimate"])
    assert same["agree"].all()


def test_compare_fits_refuses_different_models_or_data(kin_data):
    K, df = kin_data
    a = bl.LMM("y ~ x + (1 | id)", df, kinship={"id": K}).fit(method="reml")
    b = bl.LMM("y ~ 1 + (1 | id)", df, kinship={"id": K}).fit(method="reml")
    with pytest.raises(bl.SpecificationError, match="ONE model and data set"):
        bl.compare_fits(a, b)
    shuffled = df.sample(frac=1.0, random_state=1)
    c = bl.LMM("y ~ x + (1 | id)", shuffled, kinship={"id": K}).fit(method="reml")
    with pytest.raises(bl.SpecificationError, match="different responses"):
        bl.compare_fits(a, c)
    with pytest.raises(bl.SpecificationError, match="two fits made by bayeslmm"):
        bl.compare_fits(a, a.variance_components())


def test_variance_components_point_se_is_the_parameter_se(kin_data):
    K, df = kin_data
    fit = bl.LMM("y ~ x + (1 | id) + (1 | pen)", df, kinship={"id": K}).fit(method="reml")
    vc = fit.variance_components()
    inside = vc["vcov"].to_numpy() > 0
    assert not inside.all()  # this fit puts the pen variance on its bound
    np.testing.assert_allclose(vc["se"][inside], fit.parameters["se"][inside], rtol=1e-8)
    # a variance on its bound has no standard error (the likelihood is not quadratic there)
    assert vc["se"][~inside].isna().all() and vc["ci_low"][~inside].isna().all()
    np.testing.assert_allclose(vc["sdcor"], np.sqrt(fit.parameters["estimate"]), rtol=1e-12)
