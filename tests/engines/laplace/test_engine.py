"""Laplace GLMM engine: lme4 glmer reference fits, and a brute-force Laplace computation."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import special

import bayeslmm as bl
from bayeslmm.engines.laplace import LaplaceProblem, fit_laplace

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "glmer"


def golden(name):
    return json.loads((GOLDEN / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def cbpp():
    df = pd.read_csv(GOLDEN / "cbpp.csv", dtype={"herd": str, "period": str})
    return bl.specify("incidence ~ period + (1|herd)", df, family="binomial", trials="size")


@pytest.fixture(scope="module")
def grouse():
    # HEIGHT_s is R's scale(HEIGHT) (SD with n - 1), precomputed by glmer.R: formulae's
    # scale() divides by the SD with n, which would change the coefficient by √(n/(n-1)).
    df = pd.read_csv(
        GOLDEN / "grouseticks.csv",
        dtype={"INDEX": str, "BROOD": str, "LOCATION": str, "YEAR": str},
    )
    return bl.specify(
        "TICKS ~ YEAR + HEIGHT_s + (1|BROOD) + (1|INDEX) + (1|LOCATION)",
        df,
        family=bl.Poisson(overdispersion=False),
    )


@pytest.fixture(scope="module")
def kin_data():
    K = bl.Kinship.from_dataframe(pd.read_csv(GOLDEN / "kin_K.csv", index_col=0), name="K")
    return K, pd.read_csv(GOLDEN / "kin_data.csv")


def assert_matches_glmer(fit, ref, theta_order=None, rel=1e-4, se_rel=1e-3):
    """Fixed effects, variance components and logLik to `rel`; SEs (lme4's finite-difference
    Hessian) to `se_rel`."""
    theta_ref = np.atleast_1d(ref["theta"])
    if theta_order is not None:
        theta_ref = theta_ref[theta_order]
    np.testing.assert_allclose(fit.theta, theta_ref, rtol=rel)
    np.testing.assert_allclose(fit.beta, list(ref["fixef"].values()), rtol=rel)
    np.testing.assert_allclose(fit.fixed_effects()["se"], list(ref["se"].values()), rtol=se_rel)
    vc_ref = pd.DataFrame(ref["varcorr"]).set_index("grp")
    vc = fit.variance_components().set_index("grp")
    for grp in vc_ref.index:
        assert vc.loc[grp, "vcov"] == pytest.approx(vc_ref.loc[grp, "vcov"], rel=rel)
        assert vc.loc[grp, "sdcor"] == pytest.approx(vc_ref.loc[grp, "sdcor"], rel=rel)
    assert fit.loglik == pytest.approx(ref["logLik"], rel=rel)
    assert fit.aic == pytest.approx(ref["AIC"], rel=rel)
    assert fit.bic == pytest.approx(ref["BIC"], rel=rel)
    assert fit.converged


# ---------------------------------------------------------------------------------------
# the deviance function itself, at fixed parameters (no optimiser involved)
# ---------------------------------------------------------------------------------------
@pytest.mark.r_golden
@pytest.mark.parametrize("case", ["cbpp", "cbpp_probit"])
def test_cbpp_deviance_matches_lme4_devfun(cbpp, case):
    spec = cbpp
    if case == "cbpp_probit":
        spec = bl.specify(spec.formula, spec.data, family="binomial", link="probit", trials="size")
    problem = LaplaceProblem(spec)
    for point in golden(case)["devfun_points"]:
        assert problem.objective(np.array(point["par"])) == pytest.approx(
            point["deviance"], rel=1e-8
        )


@pytest.mark.r_golden
def test_grouseticks_deviance_matches_lme4_devfun(grouse):
    problem = LaplaceProblem(grouse)
    # lme4 orders terms by decreasing number of levels: INDEX, BROOD, LOCATION
    for point in golden("grouseticks")["devfun_points"]:
        x = np.array(point["par"])
        x[:3] = x[[1, 0, 2]]
        assert problem.objective(x) == pytest.approx(point["deviance"], rel=1e-8)


# ---------------------------------------------------------------------------------------
# full fits
# ---------------------------------------------------------------------------------------
@pytest.mark.r_golden
def test_cbpp_binomial_logit_matches_glmer(cbpp):
    fit = fit_laplace(cbpp)
    assert_matches_glmer(fit, golden("cbpp"))
    assert list(fit.fixed_effects().index) == ["(Intercept)", "period[2]", "period[3]", "period[4]"]


@pytest.mark.r_golden
def test_cbpp_binomial_probit_matches_glmer(cbpp):
    spec = bl.specify(cbpp.formula, cbpp.data, family="binomial", link="probit", trials="size")
    assert_matches_glmer(fit_laplace(spec), golden("cbpp_probit"))


@pytest.mark.r_golden
def test_grouseticks_poisson_three_terms_matches_glmer(grouse):
    fit = fit_laplace(grouse)
    assert_matches_glmer(fit, golden("grouseticks"), theta_order=[1, 0, 2])
    assert list(fit.variance_components()["grp"]) == ["BROOD", "INDEX", "LOCATION"]


@pytest.mark.r_golden
@pytest.mark.parametrize(
    ("case", "formula", "family"),
    [
        ("kin_bernoulli", "ybin ~ x + (1|id)", "bernoulli"),
        ("kin_poisson", "ycount ~ x + (1|id)", bl.Poisson(overdispersion=False)),
    ],
)
def test_kinship_glmm_matches_lme4_cholesky_substitution(kin_data, case, formula, family):
    """lme4 with Z* = Z chol(K)ᵀ (lme4qtl) fits the same model as our eigen-root path."""
    K, df = kin_data
    spec = bl.specify(formula, df, kinship={"id": K}, family=family)
    ref = golden(case)
    problem = LaplaceProblem(spec)
    for point in ref["devfun_points"]:
        assert problem.objective(np.array(point["par"])) == pytest.approx(
            point["deviance"], rel=1e-8
        )
    assert_matches_glmer(fit_laplace(spec), ref)


# ---------------------------------------------------------------------------------------
# an independent brute-force Laplace approximation (no spherical parametrisation)
# ---------------------------------------------------------------------------------------
def brute_force_laplace_deviance(y, X, Z, G, beta, family):
    """-2 × Laplace log-likelihood in the natural parametrisation u ~ N(0, G):

    log L ≈ ℓ(û) − ½ ûᵀG⁻¹û − ½ log det(G) − ½ log det(ZᵀWZ + G⁻¹),

    û the mode of the joint density found by dense Newton with the exact Hessian (canonical
    links: exact = Fisher), the log-likelihood written out from its formula.
    """
    Ginv = np.linalg.inv(G)
    eta0 = X @ beta
    u = np.zeros(Z.shape[1])

    def loglik_parts(eta):
        if family == "poisson":
            mu = np.exp(eta)
            ll = np.sum(y * eta - mu - special.gammaln(y + 1))
            return ll, y - mu, mu
        p = 1 / (1 + np.exp(-eta))
        ll = np.sum(y * np.log(p) + (1 - y) * np.log1p(-p))
        return ll, y - p, p * (1 - p)

    for _ in range(100):
        ll, resid, w = loglik_parts(eta0 + Z @ u)
        grad = Z.T @ resid - Ginv @ u
        hess = Z.T @ (w[:, None] * Z) + Ginv
        step = np.linalg.solve(hess, grad)
        u = u + step
        if np.max(np.abs(step)) < 1e-13:
            break
    ll, _, w = loglik_parts(eta0 + Z @ u)
    hess = Z.T @ (w[:, None] * Z) + Ginv
    logdet_G = np.linalg.slogdet(G)[1]
    logdet_h = np.linalg.slogdet(hess)[1]
    return -2 * (ll - 0.5 * u @ Ginv @ u - 0.5 * logdet_G - 0.5 * logdet_h)


@pytest.mark.parametrize("family", ["bernoulli", "poisson"])
def test_kinship_deviance_matches_brute_force(family):
    rng = np.random.default_rng(11)
    n = 40
    W = rng.normal(size=(n, 120))
    K = 0.9 * W @ W.T / 120 + 0.1 * np.eye(n)
    ids = [f"s{i}" for i in range(n)]
    L = np.linalg.cholesky(K)
    a = L @ rng.normal(size=n) * 0.7
    x = rng.normal(size=n)
    eta = -0.2 + 0.5 * x + a
    y = (
        rng.binomial(1, 1 / (1 + np.exp(-eta)))
        if family == "bernoulli"
        else rng.poisson(np.exp(eta))
    )
    # shuffle rows so that the data order differs from the kinship order
    order = rng.permutation(n)
    df = pd.DataFrame({"y": y[order], "x": x[order], "id": np.array(ids)[order]})
    fam = "bernoulli" if family == "bernoulli" else bl.Poisson(overdispersion=False)
    spec = bl.specify("y ~ x + (1|id)", df, kinship={"id": bl.Kinship(K, ids)}, family=fam)
    problem = LaplaceProblem(spec)
    Z = np.zeros((n, n))
    Z[np.arange(n), [ids.index(i) for i in df["id"]]] = 1.0
    X = np.column_stack([np.ones(n), df["x"]])
    for theta, beta in [(0.8, [-0.1, 0.4]), (0.3, [0.2, 0.7]), (1.7, [-0.5, 0.2])]:
        expected = brute_force_laplace_deviance(
            df["y"].to_numpy(float), X, Z, theta**2 * K, np.array(beta), family
        )
        assert problem.deviance([theta], beta) == pytest.approx(expected, rel=1e-10)
    if family == "poisson":
        # kinship + observation-level effect: the implicit identity block (Schur path)
        olre = LaplaceProblem(
            bl.specify("y ~ x + (1|id)", df, kinship={"id": bl.Kinship(K, ids)}, family="poisson")
        )
        assert olre._diag_block == 1
        Z2 = np.hstack([Z, np.eye(n)])
        for theta, beta in [([0.8, 0.5], [-0.1, 0.4]), ([0.3, 1.2], [0.2, 0.7])]:
            G = np.zeros((2 * n, 2 * n))
            G[:n, :n] = theta[0] ** 2 * K
            G[n:, n:] = theta[1] ** 2 * np.eye(n)
            expected = brute_force_laplace_deviance(
                df["y"].to_numpy(float), X, Z2, G, np.array(beta), family
            )
            assert olre.deviance(theta, beta) == pytest.approx(expected, rel=1e-10)


def test_iid_term_equals_kinship_identity(kin_data):
    """The sparse iid path and the dense kinship path agree when K = I."""
    _, df = kin_data
    ids = sorted(df["id"].unique())
    eye = bl.Kinship(np.eye(len(ids)), ids)
    iid = LaplaceProblem(bl.specify("ybin ~ x + (1|id)", df, family="bernoulli"))
    kin = LaplaceProblem(
        bl.specify("ybin ~ x + (1|id)", df, kinship={"id": eye}, family="bernoulli")
    )
    assert not iid.dense and kin.dense
    for x in ([0.9, -0.2, 0.5], [0.0, 0.1, 0.3], [2.0, -1.0, 1.0]):
        assert iid.objective(np.array(x)) == pytest.approx(kin.objective(np.array(x)), rel=1e-12)


def test_poisson_overdispersion_adds_observation_level_effect(kin_data):
    _, df = kin_data
    df = df.assign(obs=[f"o{i}" for i in range(len(df))])
    olre = LaplaceProblem(bl.specify("ycount ~ x + (1|id)", df, family="poisson"))
    explicit = LaplaceProblem(
        bl.specify("ycount ~ x + (1|id) + (1|obs)", df, family=bl.Poisson(overdispersion=False))
    )
    assert [b.grp for b in olre.blocks] == ["id", "olre"]
    # the olre block is in data order, (1|obs) in sorted level order: same model
    x = np.array([0.5, 0.3, 0.1, 0.4])
    assert olre.objective(x) == pytest.approx(explicit.objective(x), rel=1e-10)


# ---------------------------------------------------------------------------------------
# summary and heritability
# ---------------------------------------------------------------------------------------
def test_summary_layout_and_heritability(kin_data):
    K, df = kin_data
    df = df.assign(site=np.tile(["a", "b", "c", "d"], len(df) // 4))
    spec = bl.specify("ybin ~ x + (1|id) + (1|site)", df, kinship={"id": K}, family="bernoulli")
    fit = fit_laplace(spec)
    summary = fit.to_summary(prevalence=0.05)
    json.dumps(summary)  # serialisable
    assert summary["method"] == "laplace"
    assert summary["n_obs"] == len(df)
    herit = summary["heritability"]
    assert set(herit) == {
        "id",
        "site",
        "residual",
        "h2",
        "h2_gcta",  # this kinship's mean diagonal - mean is not 1
        "h2_latent",
        "h2_link",
        "h2_observed",
        "h2_liability",
    }
    # the genetic variance at the sample's scale: σ_a² (mean diag K - mean K), Legarra 2016
    c = float(np.mean(np.diag(K.matrix)) - np.mean(K.matrix))
    va, vs = fit.theta**2 * [c, 1.0]
    assert herit["h2_gcta"]["estimate"] == pytest.approx(
        fit.theta[0] ** 2 / (fit.theta[0] ** 2 + vs + np.pi**2 / 3)
    )
    assert herit["h2_latent"]["estimate"] == pytest.approx(va / (va + vs))
    assert herit["h2_link"]["estimate"] == pytest.approx(va / (va + vs + np.pi**2 / 3))
    assert herit["h2"] == herit["h2_link"]
    assert herit["id"]["estimate"] == pytest.approx(va / (va + vs + np.pi**2 / 3))
    assert herit["residual"]["estimate"] == pytest.approx(np.pi**2 / 3 / (va + vs + np.pi**2 / 3))
    # observed < link for a logit model, and every SE is a positive number
    assert herit["h2_observed"]["estimate"] < herit["h2_link"]["estimate"]
    assert all(v["se"] is None or v["se"] >= 0 for v in herit.values())
    assert herit["h2_link"]["se"] > 0
    rows = summary["variance_components"]
    assert [r["grp"] for r in rows] == ["id", "site"]
    assert {"grp", "var1", "var2", "vcov", "sdcor", "se"} <= set(rows[0])
    assert set(summary["fixed_effects"]) == {"Intercept", "x"}
    assert summary["loglik"]["ml"] == pytest.approx(fit.loglik)
    assert summary["timing"]["total_s"] > 0
    # random effects: breeding values on the level scale, u = θ R b
    bv = fit.random_effects["id"]
    assert list(bv.index) == list(spec.terms[0].levels)


def test_heritability_delta_se_matches_simulation_of_estimates(kin_data):
    """The delta-method SE of h²_link agrees with the spread of h²_link over draws of
    (θ, β) from N(estimate, 2H⁻¹) (the same linearisation, computed without derivatives)."""
    K, df = kin_data
    fit = fit_laplace(
        bl.specify(
            "ycount ~ x + (1|id)", df, kinship={"id": K}, family=bl.Poisson(overdispersion=False)
        )
    )
    h = fit.heritability_scales()
    rng = np.random.default_rng(5)
    x = rng.multivariate_normal(np.r_[fit.theta, fit.beta], fit.parameter_cov, 4000)
    c = fit.spec.terms[0].variance_weights()[0, 0]
    va = x[:, 0] ** 2
    lam = np.mean(np.exp(np.asarray(fit.spec.X) @ x[:, 1:].T + va / 2), axis=0)
    link = c * va / (c * va + np.log1p(1 / lam))
    assert h.loc["h2_link", "se"] == pytest.approx(np.std(link), rel=0.1)


def test_rejects_gaussian_and_counts_slope_parameters(kin_data):
    _, df = kin_data
    with pytest.raises(bl.SpecificationError, match="REML"):
        LaplaceProblem(bl.specify("x ~ 1 + (1|id)", df))
    # uncorrelated slopes are two variance parameters, correlated ones T's lower triangle
    # (tests/engines/laplace/test_correlated.py)
    pr = LaplaceProblem(bl.specify("ybin ~ x + (1 + x||id)", df, family="bernoulli"))
    assert [(b.grp, b.var1) for b in pr.blocks] == [("id", "(Intercept)"), ("id", "x")]
    assert pr.n_theta == 2
    pr = LaplaceProblem(bl.specify("ybin ~ x + (1 + x|id)", df, family="bernoulli"))
    assert [(b.grp, b.var1) for b in pr.blocks] == [("id", "(Intercept)"), ("id", "x")]
    assert pr.n_theta == 3


@pytest.mark.r_golden
def test_kinship_poisson_with_olre_matches_lme4_at_the_boundary(kin_data):
    """Kinship + observation-level effect (the implicit-identity Schur path, stages 1 and 2):
    these counts carry no overdispersion, so both fits put σ_olre on the boundary 0."""
    K, df = kin_data
    spec = bl.specify("ycount ~ x + (1|id)", df, kinship={"id": K}, family="poisson")
    ref = golden("kin_poisson_olre")
    assert ref["term_order"] == ["obs", "id"]
    problem = LaplaceProblem(spec)
    for point in ref["devfun_points"]:
        x = np.array(point["par"])
        x[:2] = x[[1, 0]]
        assert problem.objective(x) == pytest.approx(point["deviance"], rel=1e-8)
    fit = fit_laplace(spec)
    assert fit.theta[0] == pytest.approx(ref["theta"][1], rel=1e-4)
    assert fit.theta[1] < 1e-3
    assert fit.boundary
    np.testing.assert_allclose(fit.beta, list(ref["fixef"].values()), rtol=1e-4)
    assert fit.loglik == pytest.approx(ref["logLik"], rel=1e-6)
