"""Tests of BayesFit tables on a correlated-slopes model (prior draws stand in for the
posterior: the tables are functions of the draws, whatever produced them)."""

import numpy as np
import pandas as pd
import pytest

import bayeslmm as bl
from bayeslmm.engines.bayes import build
from bayeslmm.engines.bayes.sampling import diagnose
from bayeslmm.results.bayes_result import BayesFit


@pytest.fixture(scope="module")
def slope_fit(random_kinship):
    import pymc as pm

    rng = np.random.default_rng(5)
    n = 20
    ids = [f"i{k}" for k in range(n)]
    K = random_kinship(rng, n, 40, ridge=0.1)
    df = pd.DataFrame(
        {
            "y": rng.normal(size=3 * n),
            "env": np.tile([0.0, 1.0, 2.0], n),
            "id": np.repeat(ids, 3),
            "pen": np.repeat([f"p{k % 4}" for k in range(n)], 3),
        }
    )
    spec = bl.specify("y ~ env + (1 + env | id) + (1 | pen)", df, kinship={"id": K})
    built = build(spec)
    with built.model:
        prior = pm.sample_prior_predictive(draws=400, random_seed=2)
    prior.add_groups(posterior=prior.prior)
    diag, messages = diagnose(prior)
    return BayesFit(prior, built, timing={"total_s": 0.0}, diagnostics=diag, messages=messages)


def test_variance_components_layout_like_lme4(slope_fit):
    vc = slope_fit.variance_components()
    post = slope_fit.posterior
    assert vc[["grp", "var1", "var2"]].astype(object).where(vc.notna(), None).values.tolist() == [
        ["id", "(Intercept)", None],
        ["id", "env", None],
        ["id", "(Intercept)", "env"],
        ["pen", "(Intercept)", None],
        ["Residual", None, None],
    ]
    cov = post["cov_id"]
    assert vc.loc[1, "vcov"] == pytest.approx(
        float(cov.sel(id_coef="env", id_coef_bis="env").mean())
    )
    assert vc.loc[2, "sdcor"] == pytest.approx(
        float(post["corr_id"].sel(id_coef="Intercept", id_coef_bis="env").mean())
    )
    # per draw: cov diagonal = sd², correlation = cov / (sd sd)
    sd = post["sd_id"].values
    np.testing.assert_allclose(np.diagonal(cov.values, axis1=-2, axis2=-1), sd**2, rtol=1e-10)
    corr = post["corr_id"].values[..., 0, 1]
    np.testing.assert_allclose(corr, cov.values[..., 0, 1] / (sd[..., 0] * sd[..., 1]))


def test_slope_term_variance_is_mean_contribution(slope_fit):
    """var_id = mean_i d_iᵀ Σ d_i with d_i = (1, env_i)."""
    post = slope_fit.posterior
    env = slope_fit.spec.data["env"].to_numpy()
    D = np.column_stack([np.ones_like(env), env])
    cov = post["cov_id"].values.reshape(-1, 2, 2)
    want = np.einsum("ij,djk,ik->d", D, cov, D) / D.shape[0]
    np.testing.assert_allclose(post["var_id"].values.ravel(), want, rtol=1e-10)


def test_heritability_rows_without_single_kinship_coefficient(slope_fit):
    table = slope_fit.heritability()
    assert table.index.tolist() == ["id", "pen"]  # no "h2": the kinship term has a slope
    shares = slope_fit.heritability_draws(include_residual=True)
    np.testing.assert_allclose(shares.sum("component"), 1.0)


def test_summary_is_json_safe_and_complete(slope_fit, tmp_path):
    import json

    s = slope_fit.summary()
    text = json.dumps(s, allow_nan=False)
    assert set(s["heritability"]) == {"id", "pen", "residual"}
    assert set(s["fixed_effects"]) == {"Intercept", "env"}
    assert s["priors"]["cor_id"] == "LKJ(2)"
    assert "messages" in s["diagnostics"]
    assert len(text) > 100
    paths = slope_fit.save(tmp_path, plot=True)
    assert paths["plot"].exists() and paths["posterior"].exists()


def test_breeding_values_table(slope_fit):
    table = slope_fit.breeding_values("id")
    assert table.index.names == ["id", "coef"]
    assert len(table) == 2 * 20
    assert slope_fit.breeding_values().equals(table)  # default: the sole kinship term
    pen = slope_fit.breeding_values("pen")
    assert pen.index.tolist() == ["p0", "p1", "p2", "p3"]
    u = slope_fit.posterior["u_pen"].sel(pen_coef="Intercept")
    np.testing.assert_allclose(pen["mean"], u.mean(("chain", "draw")))
    with pytest.raises(ValueError, match="No random term 'litter'"):
        slope_fit.breeding_values("litter")
