"""Per-environment residual variance and h² tables, against nlme and direct computations."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import bayeslmm as bl
from bayeslmm.engines.reml import fit_reml
from bayeslmm.results.environment import environment_summary, environment_table

GOLDEN = Path(__file__).parents[1] / "golden"


@pytest.fixture(scope="module")
def het():
    df = pd.read_csv(GOLDEN / "data" / "het_env.csv")
    ref = json.loads((GOLDEN / "lme4_reml.json").read_text())["het_env"]
    return df, ref


def test_reml_table_matches_nlme_varident(het):
    """REML per-level residual variances and h²(e) = σ²_g/(σ²_g + σ²_e(e)) equal nlme's
    lme(..., weights = varIdent(~ 1 | env)) fit (tests/golden)."""
    df, ref = het
    spec = bl.specify("y ~ x + (1 | grp)", df, sigma="~ 0 + env")
    fit = fit_reml(spec)
    table = environment_table(fit, "env", spec=spec)
    assert table.index.tolist() == ["a", "b", "c"]
    vg = ref["grp_variance"]
    for level, ve in ref["residual_variance"].items():
        np.testing.assert_allclose(table.loc[level, ("var_residual", "estimate")], ve, rtol=2e-4)
        np.testing.assert_allclose(table.loc[level, ("var_genetic", "estimate")], vg, rtol=2e-4)
        np.testing.assert_allclose(table.loc[level, ("h2", "estimate")], vg / (vg + ve), rtol=2e-4)
        assert table.loc[level, ("n_obs", "count")] == (df["env"] == level).sum()
    # the residual variance SEs are the engine's own (inverse AI) SEs
    par = fit.parameters.set_index("var1")
    for level in "abc":
        np.testing.assert_allclose(
            table.loc[level, ("var_residual", "se")], par.loc[f"env[{level}]", "se"], rtol=1e-10
        )
    # default environment: the sigma formula's only variable
    assert environment_table(fit, spec=spec).index.name == "env"


def test_reml_homoscedastic_equals_engine_heritability():
    """Homoscedastic intercept-only model: every level's h² (estimate and SE) equals
    RemlFit.heritability()'s h2, computed by the engine's own code."""
    rng = np.random.default_rng(2)
    n = 60
    ids = [f"i{k}" for k in range(n)]
    W = rng.binomial(2, 0.4, size=(n, 300)).astype(float)
    W -= W.mean(axis=0)
    K = bl.Kinship(W @ W.T / W.var(axis=0).sum() + 0.01 * np.eye(n), ids)
    g = np.linalg.cholesky(K.matrix) @ rng.normal(size=n)
    df = pd.DataFrame({"id": np.repeat(ids, 2), "env": np.tile(["dry", "wet"], n)})
    df["y"] = np.repeat(g, 2) + rng.normal(size=2 * n)
    spec = bl.specify("y ~ 1 + (1 | id)", df, kinship={"id": K})
    fit = fit_reml(spec)
    table = environment_table(fit, "env", spec=spec)
    h2 = fit.heritability().loc["h2"]
    for level in ("dry", "wet"):
        np.testing.assert_allclose(table.loc[level, ("h2", "estimate")], h2["estimate"])
        np.testing.assert_allclose(table.loc[level, ("h2", "se")], h2["se"], rtol=1e-6)


def test_bayes_levels_from_sigma_coefficients(het):
    """NUTS: σ²_e(level) = exp(2(γ₀ + γ_level)) per draw; h² per draw from the term's SD."""
    df, _ = het
    spec = bl.specify("y ~ x + (1 | grp)", df, sigma="~ env")
    rng = np.random.default_rng(0)
    draws = 40
    gamma = rng.normal(0, 0.5, size=(2, draws, 3))
    sd = rng.uniform(0.5, 2.0, size=(2, draws))
    post = xr.Dataset(
        {
            "sigma_coef": (("chain", "draw", "sigma_fixed"), gamma),
            "sd_grp": (("chain", "draw"), sd),
        },
        coords={"sigma_fixed": list(spec.sigma_names)},
    )
    fit = SimpleNamespace(spec=spec, idata=object(), posterior=post, hdi_prob=0.9)
    table = environment_table(fit, "env")
    coded = {"a": 0.0, "b": gamma[..., 1], "c": gamma[..., 2]}
    for level in "abc":
        ve = np.exp(2 * (gamma[..., 0] + coded[level]))
        h2 = sd**2 / (sd**2 + ve)
        np.testing.assert_allclose(table.loc[level, ("var_residual", "mean")], ve.mean())
        np.testing.assert_allclose(table.loc[level, ("h2", "mean")], h2.mean())
        np.testing.assert_allclose(table.loc[level, ("h2", "median")], np.median(h2))
        assert table.loc[level, ("h2", "hdi_prob")] == 0.9
    summary = environment_summary(fit)
    assert list(summary) == ["a", "b", "c"]
    assert set(summary["a"]) == {
        "n_obs",
        "h2",
        "var_residual",
        "var_genetic",
        "var_other",
        "var_phenotypic",
    }
    json.dumps(summary)  # plain JSON types


def test_slopes_average_over_level_observations():
    """With slopes, V_G(level) is the mean of d_iᵀΣd_i over the level's observations."""
    rng = np.random.default_rng(4)
    df = pd.DataFrame(
        {
            "line": np.repeat([f"l{k}" for k in range(10)], 6),
            "env": np.tile(["A", "A", "A", "B", "B", "B"], 10),
            "t": rng.uniform(0, 2, 60),
            "y": rng.normal(size=60),
        }
    )
    spec = bl.specify("y ~ t + (1 + t | line)", df)
    S = np.array([[1.0, -0.4], [-0.4, 0.9]])
    post = xr.Dataset(
        {
            "cov_line": (("chain", "draw", "line_coef", "line_coef_bis"), S[None, None]),
            "var_residual": (("chain", "draw"), np.array([[0.7]])),
        },
        coords={"line_coef": ["Intercept", "t"], "line_coef_bis": ["Intercept", "t"]},
    )
    fit = SimpleNamespace(spec=spec, idata=object(), posterior=post, hdi_prob=0.95)
    table = environment_table(fit, "env")
    for level in ("A", "B"):
        t = df.loc[df["env"] == level, "t"].to_numpy()
        vg = np.mean(S[0, 0] + 2 * t * S[0, 1] + t**2 * S[1, 1])
        np.testing.assert_allclose(table.loc[level, ("var_genetic", "mean")], vg)
        np.testing.assert_allclose(table.loc[level, ("h2", "mean")], vg / (vg + 0.7))
    with pytest.raises(ValueError, match="Name the environment column"):
        environment_table(fit)
