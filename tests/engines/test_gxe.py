"""GxE with both engines: random regression on a GRM, heteroscedastic residuals, sleepstudy.

- The builder's latent map z ↦ u = U√S z L_Σᵀ has Cov(vec u) = Σ ⊗ K *exactly* for a
  VanRaden GRM, which has negative off-diagonal entries and is singular (brms issue 1939:
  a sparse-Cholesky shortcut that drops negative entries gets this wrong).
- REML with such a GRM, correlated slopes and residual variances by environment reaches the
  optimum of an independent dense restricted likelihood.
- sleepstudy ``Reaction ~ Days + (Days | Subject)``: posterior medians under the default
  priors are close to lme4's REML estimates (slow: NUTS compilation).
"""

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import optimize

import bayeslmm as bl
from bayeslmm.engines.bayes import build
from bayeslmm.engines.reml import fit_reml
from bayeslmm.kinship import grm
from bayeslmm.model import LMM
from bayeslmm.results.environment import environment_table
from bayeslmm.results.reaction_norm import reaction_norm

GOLDEN = Path(__file__).parents[1] / "golden"


@pytest.fixture(scope="module")
def gxe_data():
    """40 lines, VanRaden GRM, two environments x = ∓1 with two records each, shuffled."""
    rng = np.random.default_rng(20)
    q = 40
    ids = [f"L{k:02d}" for k in range(q)]
    founders = rng.binomial(2, rng.uniform(0.1, 0.9, 500), size=(8, 500))
    # lines descend from 8 founders, so relatedness varies and many pairs are below average
    parents = rng.integers(0, 8, size=(q, 2))
    pick = rng.random((q, 500)) < 0.5
    G = np.where(pick, founders[parents[:, 0]], founders[parents[:, 1]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a few SNPs are monomorphic among 8 founders
        K = grm(pd.DataFrame(G, index=ids))
    Sigma = np.array([[1.0, -0.35], [-0.35, 0.5]])
    values, vectors = np.linalg.eigh(K.matrix)
    u = (vectors * np.sqrt(np.clip(values, 0, None))) @ rng.normal(size=(q, 2))
    u = u @ np.linalg.cholesky(Sigma).T
    rows = []
    for i, line in enumerate(ids):
        for env, x, sd in (("A", -1.0, 0.6), ("B", 1.0, 1.1)):
            for _ in range(2):
                y = 3.0 + 0.4 * x + u[i, 0] + x * u[i, 1] + rng.normal(0, sd)
                rows.append({"line": line, "env": env, "x": x, "y": y})
    df = pd.DataFrame(rows).sample(frac=1.0, random_state=1).reset_index(drop=True)
    return df, K


def test_grm_has_negative_entries_and_is_singular(gxe_data):
    _, K = gxe_data
    off = K.matrix[~np.eye(K.n, dtype=bool)]
    assert (off < 0).mean() > 0.3
    assert np.linalg.eigvalsh(K.matrix)[0] < 1e-8  # centred GRM: rank q - 1


def _value_fn(model, name):
    (out,) = model.replace_rvs_by_values([model[name]])
    return model.compile_fn(out, inputs=model.value_vars, on_unused_input="ignore")


def test_latent_map_covariance_is_sigma_kron_grm(gxe_data):
    """A Aᵀ = Σ ⊗ K for the linear map A: vec(z) ↦ vec(u) (column-major vec: all levels of
    the intercept, then all levels of the slope), at a Σ with negative correlation."""
    df, K = gxe_data
    spec = bl.specify("y ~ x + (1 + x | line)", df, kinship={"line": K}, sigma="~ env")
    model = build(spec, strategy="latent").model
    u_fn, cov_fn = _value_fn(model, "u_line"), _value_fn(model, "cov_line")
    point = model.initial_point()
    point["chol_line_cholesky-cov-packed__"] = np.array([0.2, -0.9, -0.4])
    Sigma = np.asarray(cov_fn(point))
    assert Sigma[0, 1] / np.sqrt(Sigma[0, 0] * Sigma[1, 1]) < -0.5
    z_shape = point["z_line"].shape
    columns = []
    for k in range(int(np.prod(z_shape))):
        z = np.zeros(int(np.prod(z_shape)))
        z[k] = 1.0
        u = np.asarray(u_fn({**point, "z_line": z.reshape(z_shape)}))
        columns.append(u.ravel(order="F"))
    A = np.array(columns).T
    Kt = spec.terms[0].kinship.matrix
    np.testing.assert_allclose(A @ A.T, np.kron(Sigma, Kt), atol=1e-10)
    # and the linear predictor places u[level] on the right rows: u at z = 0 is 0
    assert np.allclose(u_fn({**point, "z_line": np.zeros(z_shape)}), 0.0)


def _dense_reml(spec, theta):
    """−ℓ_R for θ = (Σ00, Σ11, Σ01, σ²_A, σ²_B), built from scratch (no engine code)."""
    term = spec.terms[0]
    n = spec.n_obs
    Z = np.zeros((n, term.n_levels))
    Z[np.arange(n), term.index] = 1.0
    Z1 = Z * term.design[:, [1]]
    K = term.kinship.matrix
    s00, s11, s01, ea, eb = theta
    V = s00 * Z @ K @ Z.T + s11 * Z1 @ K @ Z1.T + s01 * (Z @ K @ Z1.T + Z1 @ K @ Z.T)
    env = spec.data["env"].to_numpy()
    V[np.diag_indices(n)] += np.where(env == "A", ea, eb)
    X, y = spec.X, spec.y
    L = np.linalg.cholesky(V)
    Vi_X = np.linalg.solve(V, X)
    XtViX = X.T @ Vi_X
    beta = np.linalg.solve(XtViX, Vi_X.T @ y)
    r = y - X @ beta
    ypy = r @ np.linalg.solve(V, r)
    p = X.shape[1]
    logdet = 2 * np.log(np.diag(L)).sum() + np.linalg.slogdet(XtViX)[1]
    return 0.5 * (logdet + ypy + (n - p) * np.log(2 * np.pi))


def test_reml_with_grm_matches_dense_optimum(gxe_data):
    df, K = gxe_data
    spec = bl.specify("y ~ x + (1 + x | line)", df, kinship={"line": K}, sigma="~ env")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = fit_reml(spec)
    par = fit.parameters
    key = list(zip(par["grp"], par["var1"], par["var2"], strict=True))
    est = dict(zip(key, par["estimate"], strict=True))
    theta = np.array(
        [
            est[("line", "(Intercept)", None)],
            est[("line", "x", None)],
            est[("line", "(Intercept)", "x")],
            est[("Residual", "env[A]", None)],
            est[("Residual", "env[B]", None)],
        ]
    )
    np.testing.assert_allclose(-_dense_reml(spec, theta), fit.loglik_reml, rtol=1e-9)

    def objective(w):  # Cholesky and log parametrisation: unconstrained
        L = np.array([[np.exp(w[0]), 0.0], [w[1], np.exp(w[2])]])
        S = L @ L.T
        return _dense_reml(spec, [S[0, 0], S[1, 1], S[0, 1], np.exp(w[3]), np.exp(w[4])])

    start = np.array([0.0, 0.0, np.log(0.5), 0.0, 0.0])
    opt = optimize.minimize(objective, start, method="BFGS", options={"gtol": 1e-8})
    L = np.array([[np.exp(opt.x[0]), 0.0], [opt.x[1], np.exp(opt.x[2])]])
    S = L @ L.T
    dense = np.array([S[0, 0], S[1, 1], S[0, 1], np.exp(opt.x[3]), np.exp(opt.x[4])])
    assert -opt.fun <= fit.loglik_reml + 1e-6  # the engine found the maximum
    np.testing.assert_allclose(theta, dense, rtol=2e-3, atol=2e-3)
    # reaction norm and environment table agree where they overlap (x = ∓1 ↔ env A/B)
    rn = reaction_norm(fit, "x", spec=spec).summary("h2")
    env = environment_table(fit, "env", spec=spec)["h2"]
    np.testing.assert_allclose(rn.loc[-1.0, "estimate"], env.loc["A", "estimate"], rtol=1e-12)
    np.testing.assert_allclose(rn.loc[1.0, "se"], env.loc["B", "se"], rtol=1e-10)


@pytest.mark.slow
def test_sleepstudy_posterior_medians_near_lme4():
    """Weak default priors: posterior medians within half a posterior SD of lme4's REML
    estimates for the variances and the covariance, a quarter SD for the fixed effects."""
    df = pd.read_csv(GOLDEN / "data" / "sleepstudy.csv")
    ref = json.loads((GOLDEN / "lme4_reml.json").read_text())["sleepstudy_corr"]
    vc = {(r["var1"], r.get("var2")): r["vcov"] for r in ref["variance_components"]}
    fit = LMM("Reaction ~ Days + (Days | Subject)", df).fit(
        draws=500, tune=500, chains=2, cores=1, seed=3, progressbar=False, verbose=False
    )
    assert fit.diagnostics["divergences"] == 0
    post = fit.posterior.stack(sample=("chain", "draw"))
    cov = post["cov_Subject"].rename(Subject_coef="a", Subject_coef_bis="b")
    checks = [
        (
            cov.sel(a="Intercept", b="Intercept"),
            vc[("(Intercept)", None)],
        ),
        (cov.sel(a="Days", b="Days"), vc[("Days", None)]),
        (cov.sel(a="Intercept", b="Days"), vc[("(Intercept)", "Days")]),
        (post["var_residual"], vc[(None, None)]),
    ]
    for draws, reml in checks:
        assert abs(float(draws.median()) - reml) < 0.5 * float(draws.std()), (reml, draws.name)
    for k, row in enumerate(ref["fixed_effects"]):
        beta = post["beta"].isel(fixed=k)
        assert abs(float(beta.median()) - row["estimate"]) < 0.25 * float(beta.std())


@pytest.mark.r_golden
def test_sleepstudy_reml_reaction_norm_matches_lme4():
    """V_G(Days) = σ²_0 + 2 Days σ_01 + Days² σ²_1 and h²(Days) at lme4's REML estimates."""
    df = pd.read_csv(GOLDEN / "data" / "sleepstudy.csv")
    ref = json.loads((GOLDEN / "lme4_reml.json").read_text())["sleepstudy_corr"]
    vc = {(r["var1"], r.get("var2")): r["vcov"] for r in ref["variance_components"]}
    model = LMM("Reaction ~ Days + (Days | Subject)", df)
    rn = reaction_norm(model.fit(method="reml"), "Days", spec=model.spec)
    a, b, c = vc[("(Intercept)", None)], vc[("Days", None)], vc[("(Intercept)", "Days")]
    days = np.arange(10)
    vg = a + 2 * days * c + days**2 * b
    np.testing.assert_allclose(rn.summary("V_G")["estimate"], vg, rtol=1e-4)
    np.testing.assert_allclose(
        rn.summary("h2")["estimate"], vg / (vg + vc[(None, None)]), rtol=1e-4
    )


def test_fit_command_writes_covariances_and_h2_by_environment(gxe_data, tmp_path):
    """``bayeslmm fit`` with slopes, a kinship and --sigma: covariance rows (var2 set) and
    ``heritability_by_environment`` equal to the Python API's numbers."""
    from bayeslmm.cli import main

    df, K = gxe_data
    df.to_csv(tmp_path / "pheno.csv", index=False)
    pd.DataFrame(K.matrix, index=K.ids, columns=K.ids).to_csv(tmp_path / "K.csv")
    argv = ["fit", str(tmp_path / "pheno.csv"), "--formula", "y ~ x + (1 + x | line)"]
    argv += ["--kinship", f"line={tmp_path / 'K.csv'}", "--sigma", "~ env", "--method", "reml"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main([*argv, "--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    cov_rows = [r for r in summary["variance_components"] if r["var2"] is not None]
    assert [(r["grp"], r["var1"], r["var2"]) for r in cov_rows] == [("line", "(Intercept)", "x")]
    by_env = summary["heritability_by_environment"]
    assert list(by_env) == ["A", "B"]
    spec = bl.specify("y ~ x + (1 + x | line)", df, kinship={"line": K}, sigma="~ env")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = environment_table(fit_reml(spec), "env", spec=spec)
    for level in ("A", "B"):
        np.testing.assert_allclose(
            by_env[level]["h2"]["estimate"], table.loc[level, ("h2", "estimate")]
        )
        assert by_env[level]["n_obs"] == 80


def test_character_state_and_random_regression_agree(gxe_data):
    """With two environments, (0 + env | line) and (1 + x | line) are the same model: h² per
    environment and r_G agree, and r_G's delta-method SE equals the engine's SE of the
    correlation in the character-state model (computed by independent code)."""
    df, K = gxe_data
    kw = {"kinship": {"line": K}, "sigma": "~ env"}
    states = bl.specify("y ~ env + (0 + env | line)", df, **kw)
    slopes = bl.specify("y ~ x + (1 + x | line)", df, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit_s, fit_r = fit_reml(states), fit_reml(slopes)
    # the REML likelihoods differ only by log|det T| of the fixed-effect reparametrisation
    # (x = 2·env[B] − 1: |det T| = 2), so the estimates must coincide
    np.testing.assert_allclose(fit_s.loglik_reml - fit_r.loglik_reml, np.log(2), atol=1e-5)
    h2_s = reaction_norm(fit_s, "env", spec=states).summary("h2")
    h2_r = reaction_norm(fit_r, "x", spec=slopes).summary("h2")
    np.testing.assert_allclose(h2_s["estimate"].to_numpy(), h2_r["estimate"].to_numpy(), rtol=1e-4)
    rg_s = reaction_norm(fit_s, "env", spec=states).genetic_correlation()
    rg_r = reaction_norm(fit_r, "x", spec=slopes).genetic_correlation()
    np.testing.assert_allclose(rg_s["estimate"], rg_r["estimate"], rtol=1e-4)
    vc = fit_s.variance_components()
    corr = vc[vc["var2"].notna()].iloc[0]
    np.testing.assert_allclose(rg_s["estimate"].iat[0], corr["sdcor"], rtol=1e-10)
    np.testing.assert_allclose(rg_s["se"].iat[0], corr["se_sdcor"], rtol=1e-8)
