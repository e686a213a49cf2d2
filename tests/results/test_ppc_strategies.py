"""Posterior predictive draws for every NUTS strategy.

The spectral strategy's replicates are checked against the dense closed form of
p(y_rep | y, θ, β) and the laplace-marginal strategy's linear predictor against a dense
Laplace approximation computed here; end to end, ``fit.ppc()`` and ArviZ's ``plot_ppc`` /
``plot_bpv`` run on fits of each strategy.
"""

import matplotlib

matplotlib.use("Agg")

import arviz as az
import numpy as np
import pandas as pd
import pytest
import xarray as xr

import bayeslmm as bl
from bayeslmm.engines.bayes import build
from bayeslmm.engines.bayes.conditional import conditional_breeding_values
from bayeslmm.engines.bayes.laplace_marginal import add_laplace_draws
from bayeslmm.engines.bayes.predictive import (
    laplace_linear_predictor,
    spectral_posterior_predictive,
)

FIT = dict(chains=2, cores=1, seed=1, sampler="pymc", progressbar=False, verbose=False)


def _constant_posterior(n_draws: int, fixed: list[str], beta: np.ndarray, **scalars: float):
    """A posterior of ``n_draws`` identical draws (one chain)."""
    data = {
        name: xr.DataArray(np.full((1, n_draws), value), dims=("chain", "draw"))
        for name, value in scalars.items()
    }
    data["beta"] = xr.DataArray(
        np.broadcast_to(beta, (1, n_draws, beta.size)).copy(),
        dims=("chain", "draw", "fixed"),
        coords={"fixed": fixed},
    )
    return xr.Dataset(data)


@pytest.fixture(scope="module")
def kinship_case(random_kinship):
    """30 records of 20 related individuals (10 with two records), a covariate, an offset."""
    rng = np.random.default_rng(11)
    K = random_kinship(rng, 20, 40, ridge=0.05)
    ids = list(K.ids) + list(K.ids[:10])
    df = pd.DataFrame(
        {"y": rng.normal(size=30), "x": rng.normal(size=30), "t": rng.normal(size=30), "id": ids}
    )
    spec = bl.specify("y ~ x + offset(t) + (1 | id)", df, kinship={"id": K})
    built = build(spec)
    assert built.strategy == "spectral"
    return df, K, built


def test_spectral_replicates_have_the_closed_form_mean_and_covariance(kinship_case):
    """At fixed θ, β: y_rep ~ N(t + Xβ + E[Zu | y], Z Cov(u | y) Zᵀ + σ_e² I), densely."""
    df, K, built = kinship_case
    var_g, var_e, beta = 0.8, 0.5, np.array([0.3, -0.7])
    n_draws = 20000
    post = _constant_posterior(
        n_draws, list(built.spec.fixed_names), beta, var_id=var_g, var_residual=var_e
    )
    y_rep = spectral_posterior_predictive(built, post, seed=1)["y"].values.reshape(n_draws, -1)
    # dense: K over the records, V = σ_g² Z K Zᵀ + σ_e² I
    pos = {name: k for k, name in enumerate(K.ids)}
    rows = np.array([pos[i] for i in df["id"]])
    G = var_g * np.asarray(K.matrix)[np.ix_(rows, rows)]
    V = G + var_e * np.eye(len(df))
    X = np.column_stack([np.ones(len(df)), df["x"]])
    fixed = df["t"].to_numpy() + X @ beta
    mean = fixed + G @ np.linalg.solve(V, df["y"].to_numpy() - fixed)
    cov = G - G @ np.linalg.solve(V, G) + var_e * np.eye(len(df))
    se = np.sqrt(np.diag(cov) / n_draws)
    assert np.max(np.abs(y_rep.mean(0) - mean) / se) < 4.5
    # each sample covariance entry has variance (Σ_ii Σ_jj + Σ_ij²) / N
    sd = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n_draws)
    assert np.max(np.abs(np.cov(y_rep.T) - cov) / sd) < 5.0
    # leaving out the residual (or the genetic part) would be far outside that band
    assert var_e / sd.max() > 20


def test_spectral_replicates_use_the_stored_breeding_values(kinship_case):
    df, _, built = kinship_case
    n_draws = 4000
    post = _constant_posterior(
        n_draws, list(built.spec.fixed_names), np.array([0.3, -0.7]), var_id=0.8, var_residual=0.5
    )
    post["u_id"] = conditional_breeding_values(built, post, seed=2)
    reps = spectral_posterior_predictive(built, post, seed=3)
    y_rep = reps["y"].values.reshape(n_draws, -1)
    u = post["u_id"].values.reshape(n_draws, -1)
    level = {name: k for k, name in enumerate(built.spec.terms[0].levels)}
    Zu = u[:, [level[i] for i in df["id"]]]
    X = np.column_stack([np.ones(len(df)), df["x"]])
    resid = y_rep - df["t"].to_numpy() - X @ np.array([0.3, -0.7]) - Zu
    # given u, what is left is the residual alone: mean 0, variance σ_e², uncorrelated
    assert np.max(np.abs(resid.mean(0))) < 4.5 * np.sqrt(0.5 / n_draws)
    np.testing.assert_allclose(resid.var(0), 0.5, rtol=0.15)
    assert np.max(np.abs(np.corrcoef(resid.T) - np.eye(len(df)))) < 0.09
    # the rotated node's replicate is Uᵀ y_rep
    U = built.rotation.vectors
    rotated = reps["y_rotated"].values.reshape(n_draws, -1)
    np.testing.assert_allclose(rotated @ U.T, y_rep, atol=1e-10)
    assert reps["y"].dims == ("chain", "draw", "obs")
    assert reps["y_rotated"].dims == ("chain", "draw", "eigen")


@pytest.fixture(scope="module")
def simulated():
    return bl.datasets.simulate(n_families=10, family_size=4, n_snps=200, h2=0.5, seed=3)


@pytest.fixture(scope="module")
def spectral_fit(simulated):
    sim = simulated
    model = bl.LMM("y ~ 1 + (1|id)", sim.data, kinship={"id": sim.kinship})
    fit = model.fit(draws=300, tune=300, **FIT)
    assert fit.strategy == "spectral"
    return fit


def test_spectral_ppc_on_data_from_the_model(spectral_fit):
    fit = spectral_fit
    y_rep = fit.posterior_predictive(seed=4)
    assert y_rep.shape == (2, 300, fit.spec.n_obs)
    np.testing.assert_array_equal(y_rep, fit.posterior_predictive(seed=4))
    assert not np.array_equal(y_rep, fit.posterior_predictive(seed=5))
    table = fit.ppc(seed=4)
    assert list(table.index) == ["mean", "variance", "min", "max"]
    # data simulated from the model: no statistic is extreme among the replicates
    assert table["p_value"].between(0.02, 0.98).all(), table


def test_arviz_plots_run_on_a_spectral_fit(spectral_fit):
    fit = spectral_fit
    idata = fit.add_posterior_predictive(seed=4)
    assert idata is fit.idata
    pp, observed = idata.posterior_predictive, idata.observed_data
    assert pp["y"].dims == ("chain", "draw", "obs")
    assert set(pp.data_vars) == set(observed.data_vars) == {"y", "y_rotated"}
    np.testing.assert_array_equal(pp["y"].values, fit.posterior_predictive(seed=4))
    axes = az.plot_ppc(idata)
    assert np.size(axes) == 2
    az.plot_bpv(idata)
    az.plot_ppc(idata, var_names=["y"], kind="cumulative")
    matplotlib.pyplot.close("all")


def test_fit_plot_methods(spectral_fit):
    fit = spectral_fit
    ax = fit.plot_ppc(seed=4)
    assert ax.get_xlabel() == "y" and "y" in ax.get_title()
    fig = fit.plot_trace()
    # h² first and the residual last, a density and a trace panel each
    names = [a.get_title() for a in fig.axes[::2]]
    assert names[0] == "h2" and names[-1] == "var_residual" and len(fig.axes) == 2 * len(names)
    assert len([a for a in fit.plot_rank(["h2"]).axes if a.get_visible()]) == 1


def test_a_fit_read_back_draws_the_same_replicates(spectral_fit, simulated, tmp_path):
    spectral_fit.save(tmp_path / "out", plot=False)
    back = bl.load_fit(tmp_path / "out", simulated.data, kinship={"id": simulated.kinship})
    np.testing.assert_allclose(
        back.posterior_predictive(seed=7), spectral_fit.posterior_predictive(seed=7)
    )


def test_laplace_linear_predictor_is_the_dense_laplace_gaussian():
    """At fixed variances, η drawn from β, u (add_laplace_draws) and then the
    observation-level effect has the Laplace approximation N(f̂, (Σ⁻¹ + W)⁻¹) of p(f | y, v),
    with f̂ found here by Newton on the dense prior Σ = v_g Z K Zᵀ + v_e I + X S_β Xᵀ."""
    rng = np.random.default_rng(5)
    n_ind = 15
    W = rng.normal(size=(n_ind, 30))
    K = bl.Kinship(W @ W.T / 30 + 0.05 * np.eye(n_ind), [f"i{k}" for k in range(n_ind)])
    ids = list(K.ids) * 2
    x = rng.normal(size=len(ids))
    y = rng.poisson(np.exp(0.5 + 0.3 * x + rng.normal(0, 0.6, len(ids))))
    df = pd.DataFrame({"y": y, "x": x, "id": ids})
    spec = bl.specify("y ~ x + (1|id)", df, kinship={"id": K}, family="poisson")
    built = build(spec, strategy="laplace-marginal")
    fe = built.cache["laplace_fixed"]
    v_g, v_e, n_draws = 0.5, 0.3, 4000
    post = {"var_id": np.full((1, n_draws), v_g), "var_olre": np.full((1, n_draws), v_e)}
    idata = add_laplace_draws(built, az.from_dict(posterior=post), seed=3)
    eta = laplace_linear_predictor(built, idata.posterior, np.random.default_rng(4))
    # dense prior of f in the sampled coordinates (centred covariate)
    pos = {name: k for k, name in enumerate(K.ids)}
    rows = np.array([pos[i] for i in ids])
    Xd = np.asarray(fe.design)
    S = v_g * np.asarray(K.matrix)[np.ix_(rows, rows)] + v_e * np.eye(len(ids))
    S += Xd @ np.diag(fe.sd**2) @ Xd.T
    m = Xd @ fe.mu
    S_inv = np.linalg.inv(S)
    f = m.copy()
    for _ in range(100):  # Newton on log p(y | f) − ½ (f − m)ᵀ Σ⁻¹ (f − m)
        grad = y - np.exp(f) - S_inv @ (f - m)
        step = np.linalg.solve(S_inv + np.diag(np.exp(f)), grad)
        f += step
        if np.max(np.abs(step)) < 1e-12:
            break
    cov = np.linalg.inv(S_inv + np.diag(np.exp(f)))
    se = np.sqrt(np.diag(cov) / n_draws)
    assert np.max(np.abs(eta.mean(0) - f) / se) < 4.5
    sd = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n_draws)
    assert np.max(np.abs(np.cov(eta.T) - cov) / sd) < 5.0


def test_laplace_marginal_fit_ppc_and_arviz_plots():
    sim = bl.datasets.simulate(
        n_families=10, family_size=4, n_snps=200, h2=0.5, family="poisson", seed=3
    )
    model = bl.LMM("y ~ 1 + (1|id)", sim.data, kinship={"id": sim.kinship}, family="poisson")
    fit = model.fit(draws=150, tune=150, strategy="laplace-marginal", **{**FIT, "chains": 1})
    y_rep = fit.posterior_predictive(seed=2)
    assert y_rep.shape == (1, 150, fit.spec.n_obs)
    assert np.all(y_rep >= 0) and np.all(y_rep == np.round(y_rep))
    table = fit.ppc(seed=2)
    assert table.loc["mean", "p_value"] > 0.01 and table.loc["mean", "p_value"] < 0.99
    idata = fit.add_posterior_predictive(seed=2)
    assert idata.posterior_predictive["y"].dims == ("chain", "draw", "obs")
    az.plot_ppc(idata)
    az.plot_bpv(idata)
    matplotlib.pyplot.close("all")


def test_latent_fit_stores_replicates_for_arviz():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"y": rng.normal(size=24), "g": np.repeat(list("abcdef"), 4)})
    fit = bl.LMM("y ~ 1 + (1|g)", df).fit(draws=100, tune=100, **{**FIT, "chains": 1})
    assert fit.strategy == "latent"
    idata = fit.add_posterior_predictive(seed=1)
    assert idata.posterior_predictive["y"].shape == (1, 100, 24)
    np.testing.assert_array_equal(
        idata.posterior_predictive["y"].values, fit.posterior_predictive(seed=1)
    )
    az.plot_ppc(idata)
    az.plot_bpv(idata)
    matplotlib.pyplot.close("all")
