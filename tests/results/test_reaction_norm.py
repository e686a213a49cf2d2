"""Reaction norms: V_G(x), h²(x) and r_G against direct computations.

Posterior draws are hand-made (a Σ per draw) so that every number has an independent
reference: the Monte Carlo variance of simulated genotypic values u₀ + x u₁ (+ x² u₂), exact
quadratic forms, and for REML finite-difference delta-method standard errors.
"""

import dataclasses
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import bayeslmm as bl
from bayeslmm.engines.reml import fit_reml
from bayeslmm.results.reaction_norm import plot_reaction_norm, reaction_norm


def _data(seed=0, n_lines=40, xs=(-1.0, 0.0, 1.0), sd=(0.7, 1.0, 1.4)):
    rng = np.random.default_rng(seed)
    rows = []
    Sigma = np.array([[1.0, -0.3], [-0.3, 0.5]])
    u = rng.multivariate_normal(np.zeros(2), Sigma, size=n_lines)
    for i in range(n_lines):
        for x, s in zip(xs, sd, strict=True):
            for _ in range(2):
                y = 1.0 + u[i, 0] + x * u[i, 1] + rng.normal(0, s)
                rows.append({"line": f"l{i}", "x": x, "env": f"e{x:+.0f}", "y": y})
    return pd.DataFrame(rows)


def _fake_bayes(spec, group, sigmas, residual=None, gamma=None):
    """A stand-in for BayesFit holding chosen draws of Σ (draw, m, m)."""
    sigmas = np.asarray(sigmas, dtype=float)
    m = sigmas.shape[-1]
    coefs = list(spec.terms[0].covariates)
    data = {
        f"cov_{group}": (("chain", "draw", f"{group}_coef", f"{group}_coef_bis"), sigmas[None]),
        f"sd_{group}": (
            ("chain", "draw", f"{group}_coef"),
            np.sqrt(np.einsum("djj->dj", sigmas))[None],
        ),
    }
    if residual is not None:
        data["var_residual"] = (("chain", "draw"), np.asarray(residual, float)[None])
    if gamma is not None:
        data["sigma_coef"] = (("chain", "draw", "sigma_fixed"), np.asarray(gamma, float)[None])
    coords = {f"{group}_coef": coefs, f"{group}_coef_bis": coefs}
    if gamma is not None:
        coords["sigma_fixed"] = list(spec.sigma_names)
    post = xr.Dataset(data, coords=coords)
    assert post[f"cov_{group}"].shape[-1] == m
    return SimpleNamespace(spec=spec, idata=object(), posterior=post, hdi_prob=0.95)


def test_vg_matches_variance_of_simulated_genotypic_values():
    """V_G(x) per draw = Var(u₀ + x u₁) over many simulated u ~ N(0, Σ) at that draw's Σ."""
    df = _data()
    spec = bl.specify("y ~ x + (1 + x | line)", df)
    rng = np.random.default_rng(5)
    sigmas = []
    for _ in range(3):
        A = rng.normal(size=(2, 2))
        sigmas.append(A @ A.T + 0.1 * np.eye(2))
    sigmas[0] = np.array([[1.0, -0.6], [-0.6, 0.8]])  # negative covariance
    residual = np.array([0.5, 1.0, 2.0])
    fit = _fake_bayes(spec, "line", sigmas, residual=residual)
    xs = np.array([-1.5, -0.2, 0.7, 2.0])
    rn = reaction_norm(fit, "x", values=xs)
    vg = rn.draws("V_G")[0]  # draw × value
    h2 = rn.draws("h2")[0]
    for d, S in enumerate(sigmas):
        u = rng.multivariate_normal(np.zeros(2), S, size=400_000)
        for k, x in enumerate(xs):
            g = u[:, 0] + x * u[:, 1]
            mc = g.var()
            se = mc * np.sqrt(2.0 / g.size)  # sd of a normal sample variance
            assert abs(vg[d, k] - mc) < 5 * se
            closed = S[0, 0] + 2 * x * S[0, 1] + x**2 * S[1, 1]
            np.testing.assert_allclose(vg[d, k], closed, rtol=1e-12)
            np.testing.assert_allclose(h2[d, k], closed / (closed + residual[d]), rtol=1e-12)


def test_quadratic_reaction_norm_and_genetic_correlation():
    """Three slope covariates (1, x, x²): V_G and r_G against simulation."""
    df = _data()
    spec = bl.specify("y ~ x + (1 + x + I(x**2) | line)", df)
    assert spec.terms[0].n_coef == 3
    S = np.array([[1.0, -0.3, 0.1], [-0.3, 0.6, -0.2], [0.1, -0.2, 0.3]])
    fit = _fake_bayes(spec, "line", [S], residual=[1.0])
    xs = np.array([-1.0, 0.5, 1.5])
    rn = reaction_norm(fit, "x", values=xs)
    rng = np.random.default_rng(11)
    u = rng.multivariate_normal(np.zeros(3), S, size=400_000)
    g = u[:, 0][:, None] + xs * u[:, 1][:, None] + xs**2 * u[:, 2][:, None]
    vg = rn.draws("V_G")[0, 0]
    np.testing.assert_allclose(vg, g.var(axis=0), rtol=0.02)
    rg = rn.genetic_correlation()
    mc = np.corrcoef(g.T)
    for row in rg.itertuples(index=False):
        i, j = list(xs).index(row.x1), list(xs).index(row.x2)
        assert abs(row.mean - mc[i, j]) < 0.01
    assert len(rg) == 3


def test_heteroscedastic_residual_from_sigma_formula():
    """V_E(x) = exp(2 sᵀγ) with s the sigma design at x (categorical env coded by level)."""
    df = _data()
    spec = bl.specify("y ~ x + (1 + x | line)", df, sigma="~ x")
    S = np.array([[1.0, 0.2], [0.2, 0.4]])
    gamma = np.array([[0.1, 0.3], [-0.2, 0.1]])
    fit = _fake_bayes(spec, "line", [S, S], gamma=gamma)
    xs = np.array([-2.0, 0.25, 3.0])  # unobserved values are fine: σ(x) is a formula in x
    rn = reaction_norm(fit, "x", values=xs)
    ve = rn.draws("V_E")[0]
    for d in range(2):
        np.testing.assert_allclose(ve[d], np.exp(2 * (gamma[d, 0] + gamma[d, 1] * xs)))


def test_reml_reaction_norm_and_delta_method():
    """REML V_G(x), h²(x) at θ̂ and their SEs against finite differences of θ ↦ h²(x)."""
    df = _data(seed=3)
    spec = bl.specify("y ~ x + (1 + x | line)", df, sigma="~ env")
    fit = fit_reml(spec)
    rn = reaction_norm(fit, "x", spec=spec)
    par = fit.parameters
    theta = par["estimate"].to_numpy()
    C = fit.parameter_cov
    names = list(zip(par["grp"], par["var1"], par["var2"], strict=True))

    def h2_at(th, x, env):
        v = dict(zip(names, th, strict=True))
        vg = (
            v[("line", "(Intercept)", None)]
            + 2 * x * v[("line", "(Intercept)", "x")]
            + x**2 * v[("line", "x", None)]
        )
        ve = v[("Residual", f"env[{env}]", None)]
        return vg, vg / (vg + ve)

    table = rn.summary("h2")
    vg_table = rn.summary("V_G")
    for x in (-1.0, 0.0, 1.0):
        env = f"e{x:+.0f}"
        vg, h2 = h2_at(theta, x, env)
        np.testing.assert_allclose(vg_table.loc[x, "estimate"], vg, rtol=1e-10)
        np.testing.assert_allclose(table.loc[x, "estimate"], h2, rtol=1e-10)
        eps = 1e-6
        grad = np.array(
            [
                (h2_at(theta + eps * e, x, env)[1] - h2_at(theta - eps * e, x, env)[1]) / (2 * eps)
                for e in np.eye(theta.size)
            ]
        )
        np.testing.assert_allclose(table.loc[x, "se"], np.sqrt(grad @ C @ grad), rtol=1e-5)
        assert table.loc[x, "ci_low"] < h2 < table.loc[x, "ci_high"]
    # x not observed: the residual variance by level cannot be evaluated there
    unobserved = reaction_norm(fit, "x", values=[0.5], spec=spec)
    with pytest.raises(ValueError, match="nothing was observed"):
        unobserved.summary("h2")
    vg = unobserved.summary("V_G").loc[0.5, "estimate"]  # V_G needs no residual
    np.testing.assert_allclose(vg, h2_at(theta, 0.5, "e-1")[0], rtol=1e-10)
    assert set(unobserved.table["quantity"]) == {"V_G", "V_other"}
    # A RemlFit carries its specification: no spec argument needed.
    pd.testing.assert_frame_equal(reaction_norm(fit, "x").table, rn.table)
    with pytest.raises(ValueError, match="spec=model.spec"):
        reaction_norm(dataclasses.replace(fit, spec=None), "x")


def test_plot_and_table_shapes():
    import matplotlib

    matplotlib.use("Agg")
    df = _data()
    spec = bl.specify("y ~ x + (1 + x | line)", df)
    S = np.array([[1.0, -0.3], [-0.3, 0.5]])
    fit = _fake_bayes(spec, "line", [S] * 50, residual=np.linspace(0.8, 1.2, 50))
    rn = reaction_norm(fit, "x")
    assert rn.values.tolist() == [-1.0, 0.0, 1.0]
    assert set(rn.table["quantity"]) == {"V_G", "V_other", "V_E", "V_P", "h2"}
    assert len(rn.table) == 15
    reml = fit_reml(spec)
    ax = plot_reaction_norm(rn, "h2", reference=reaction_norm(reml, "x", spec=spec))
    assert len(ax.containers) == 2 and ax.get_xlabel() == "x"  # error bars: 3 environments
    ax = reaction_norm(fit, "x", values=np.linspace(-1, 1, 21)).plot("V_G")
    assert "genetic variance" in ax.get_ylabel()
    assert len(ax.lines) == 1 and len(ax.collections) == 1  # a curve with its HDI band


def test_genotype_norms_draw_each_levels_blup_line_over_the_observed_range():
    from bayeslmm.results.reaction_norm import plot_genotype_norms

    df = _data(seed=3, xs=(-1.0, 0.0, 2.0))
    reml = bl.LMM("y ~ x + (1 + x | line)", df).fit(method="reml")
    ax = plot_genotype_norms(reml, "x", highlight=2)
    blup = reml.blups["line"]
    lines = ax.get_lines()
    assert len(lines) == blup.shape[0]
    change = 3.0 * blup["x"]  # the range is [-1, 2]: change = 3 × slope
    expected = set(change.sort_values().index[:2]) | set(change.sort_values().index[-2:])
    labelled = {line.get_label(): line for line in lines if not line.get_label().startswith("_")}
    assert set(labelled) == expected
    for level, line in labelled.items():
        x, y = line.get_xdata(), line.get_ydata()
        assert (x[0], x[-1]) == (-1.0, 2.0)
        a0, a1 = blup.loc[level, "(Intercept)"], blup.loc[level, "x"]
        np.testing.assert_allclose(y, a0 + a1 * x, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="no slope"):
        plot_genotype_norms(bl.LMM("y ~ x + (1 | line)", df).fit(method="reml"), "x")
    with pytest.raises(ValueError, match="not numeric"):
        plot_genotype_norms(reml, "env")
