"""Tests of bayeslmm.model.LMM: NUTS posteriors against an exact numerical integration,
spectral vs latent agreement, seeds, breeding values and the REML hand-off."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import bayeslmm as bl
from bayeslmm.model import LMM

FAST = {"chains": 2, "cores": 1, "sampler": "pymc", "progressbar": False}


def _load_exact_posterior():
    """The brute-force reference lives with the divergence study in validation/."""
    path = Path(__file__).resolve().parents[1] / "validation" / "spectral_divergences.py"
    spec = importlib.util.spec_from_file_location("spectral_divergences", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.exact_posterior


_exact_posterior = _load_exact_posterior()


def exact_h2_posterior(spec, n_grid: int = 400) -> dict[str, float]:
    """Posterior mean and sd of h² by brute-force integration of the exact marginal
    likelihood (β₀ integrated analytically) times the builder's default priors."""
    exact = _exact_posterior(spec, n_grid)
    return {"mean": exact["h2"], "sd": exact["h2_sd"]}


@pytest.fixture(scope="module")
def small(snp_kinship):
    """n = 60 individuals, one record each, true h² = 0.5 on a GRM-like kernel."""
    rng = np.random.default_rng(2024)
    n = 60
    ids = [f"m{k:02d}" for k in range(n)]
    K = snp_kinship(rng, n, 300, ids="m{k:02d}")
    g = np.linalg.cholesky(K.matrix + 1e-9 * np.eye(n)) @ rng.normal(size=n)
    df = pd.DataFrame({"bp": 100 + 4 * g + 4 * rng.normal(size=n), "id": ids})
    return K, df


@pytest.fixture(scope="module")
def spectral_fit(small):
    K, df = small
    model = LMM("bp ~ 1 + (1|id)", data=df, kinship={"id": K})
    return model, model.fit(draws=1500, tune=1000, seed=11, breeding_values=True, **FAST)


def test_grid_reference_is_converged(small):
    K, df = small
    spec = bl.specify("bp ~ 1 + (1|id)", df, kinship={"id": K})
    coarse, fine = exact_h2_posterior(spec, 200), exact_h2_posterior(spec, 400)
    assert coarse["mean"] == pytest.approx(fine["mean"], abs=1e-3)


def _mcse_mean(fit):
    import arviz as az

    x = fit.posterior["h2"].values
    return float(x.std() / np.sqrt(az.ess(x, method="mean")))


def test_spectral_posterior_matches_exact_integration(small, spectral_fit):
    """Posterior mean and sd of h² from NUTS equal the brute-force integral within MC error."""
    K, df = small
    model, fit = spectral_fit
    exact = exact_h2_posterior(model.spec)
    draws = fit.posterior["h2"].values.ravel()
    assert fit.strategy == "spectral"
    # h² is weakly identified at n = 60 (posterior sd ≈ 0.29): a few divergences at the h² ≈ 0
    # or 1 edges are expected; the test is that the posterior is nevertheless the exact one
    assert fit.diagnostics["divergences"] <= 0.01 * draws.size
    assert abs(draws.mean() - exact["mean"]) < 4 * _mcse_mean(fit) + 0.005
    assert draws.std() == pytest.approx(exact["sd"], rel=0.12)


def test_latent_agrees_with_spectral_and_exact(small, spectral_fit):
    K, df = small
    model, spec_fit = spectral_fit
    lat = model.fit(draws=500, tune=500, seed=12, strategy="latent", **FAST)
    assert lat.strategy == "latent"
    exact = exact_h2_posterior(model.spec)
    mc = np.hypot(_mcse_mean(lat), _mcse_mean(spec_fit))
    h_lat = float(lat.posterior["h2"].mean())
    h_spec = float(spec_fit.posterior["h2"].mean())
    assert abs(h_lat - h_spec) < 4 * mc + 0.01
    assert abs(h_lat - exact["mean"]) < 4 * _mcse_mean(lat) + 0.01
    # the latent strategy samples u; its posterior means match the spectral conditional draws
    u_lat = lat.breeding_values()["mean"].to_numpy()
    u_spec = spec_fit.breeding_values()["mean"].to_numpy()
    assert np.corrcoef(u_lat, u_spec)[0, 1] > 0.98


def test_fit_result_tables(spectral_fit):
    model, fit = spectral_fit
    h = fit.heritability()
    assert h.index.tolist() == ["id", "h2"]
    assert h.columns.tolist() == [
        "estimate", "se", "ci_low", "ci_high",  # every engine's columns, then the posterior's
        "mean", "sd", "hdi_low", "hdi_high", "ess_bulk", "ess_tail", "r_hat",
    ]  # fmt: skip
    assert 0 <= h.loc["h2", "hdi_low"] < h.loc["h2", "mean"] < h.loc["h2", "hdi_high"] <= 1
    vc = fit.variance_components()
    assert vc["grp"].tolist() == ["id", "Residual"]
    # posterior means of the variances agree with h² (the mean of a ratio is not the ratio of
    # means, so only roughly)
    ratio = vc["vcov"].iloc[0] / vc["vcov"].sum()
    assert ratio == pytest.approx(h.loc["h2", "mean"], abs=0.1)
    fe = fit.fixed_effects()
    assert fe.index.tolist() == ["Intercept"]
    assert fe.loc["Intercept", "hdi_low"] < 100 < fe.loc["Intercept", "hdi_high"] + 3
    assert set(fit.timing) >= {"eigh_s", "build_s", "sample_s", "total_s"}
    assert fit.idata.posterior["u_id"].dims == ("chain", "draw", "id_level", "id_coef")
    assert {"posterior", "sample_stats", "observed_data", "constant_data"} <= set(
        fit.idata.groups()
    )
    assert model.build() is model.build()  # built once per strategy


def test_seed_reproduces_draws(small):
    K, df = small
    model = LMM("bp ~ 1 + (1|id)", data=df, kinship={"id": K})
    a = model.fit(draws=100, tune=100, seed=5, **FAST)
    b = model.fit(draws=100, tune=100, seed=5, log_likelihood=True, **FAST)
    np.testing.assert_array_equal(a.posterior["h2"].values, b.posterior["h2"].values)
    loglik = b.idata.log_likelihood["bp_rotated"]
    assert loglik.dims == ("chain", "draw", "eigen") and loglik.shape == (2, 100, 60)
    # rotation is orthogonal: the summed log-density equals the dense one at each draw

    post = b.posterior.isel(chain=0, draw=0)
    V = float(post["var_id"]) * K.matrix + float(post["var_residual"]) * np.eye(60)
    dense = stats.multivariate_normal(np.full(60, float(post["beta"][0])), V).logpdf(df["bp"])
    assert float(loglik.isel(chain=0, draw=0).sum()) == pytest.approx(dense, rel=1e-8)


def test_nutpie_sampler_runs(small):
    """Spectral model: nutpie samples the closed-form density (no numba graph compile)."""
    K, df = small
    model = LMM("bp ~ 1 + (1|id)", data=df, kinship={"id": K})
    fit = model.fit(draws=200, tune=200, chains=2, cores=1, seed=1, sampler="nutpie")
    assert fit.sampler == "nutpie" and fit.timing["compile_s"] > 0
    again = model.fit(draws=200, tune=200, chains=2, cores=1, seed=1, sampler="nutpie")
    assert again.timing["compile_s"] == 0.0  # compiled once per model object
    np.testing.assert_array_equal(fit.posterior["h2"].values, again.posterior["h2"].values)


def test_reml_method_dispatches(small):
    K, df = small
    model = LMM("bp ~ 1 + (1|id)", data=df, kinship={"id": K})
    reml = model.fit(method="reml")
    assert reml.method == "spectral"
    assert 0 <= reml.heritability().loc["h2", "estimate"] <= 1
    with pytest.raises(bl.SpecificationError, match="Unknown method"):
        model.fit(method="gibbs")
    with pytest.raises(bl.SpecificationError, match="use method='reml'"):
        model.fit(method="laplace")


def test_laplace_method_dispatches(small):
    K, df = small
    counts = df.assign(n=np.random.default_rng(3).poisson(3.0, size=len(df)))
    model = LMM("n ~ 1 + (1|id)", data=counts, kinship={"id": K}, family="poisson")
    with pytest.raises(bl.SpecificationError, match="method='laplace'"):
        model.fit(method="reml")
    fit = model.fit(method="laplace")
    assert fit.converged and np.isfinite(fit.loglik)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cores": 0}, "cores must be a positive integer"),
        ({"draws": 0}, "draws must be a positive integer"),
        ({"draws": -5}, "draws must be a positive integer"),
        ({"tune": -1}, "tune must be a positive integer"),
        ({"chains": 0}, "chains must be a positive integer"),
        ({"draws": 10.5}, "draws must be a whole number"),
        ({"chains": True}, "chains must be a whole number"),
        ({"seed": 1.5}, "seed must be a whole number"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"target_accept": 1.5}, "target_accept must lie strictly between 0 and 1"),
        ({"target_accept": 0}, "target_accept must lie strictly between 0 and 1"),
        ({"hdi_prob": 1.5}, "hdi_prob must lie strictly between 0 and 1"),
        ({"hdi_prob": "high"}, "hdi_prob must lie strictly between 0 and 1"),
    ],
)
def test_sampler_arguments_are_checked_before_anything_runs(small, kwargs, message, monkeypatch):
    K, df = small
    model = LMM("bp ~ 1 + (1|id)", data=df, kinship={"id": K})

    def no_build(*args, **kw):  # the check must come before the model is built or sampled
        raise AssertionError("built before the arguments were checked")

    monkeypatch.setattr(model, "_build", no_build)
    with pytest.raises(bl.SpecificationError, match=message):
        model.fit(**(FAST | kwargs))


def test_integral_float_draws_are_accepted_and_a_missing_seed_is_drawn_and_recorded(small):
    K, df = small
    model = LMM("bp ~ 1 + (1|id)", data=df, kinship={"id": K})
    quick = {"chains": 2, "cores": 1, "progressbar": False, "verbose": False}  # nutpie
    fit = model.fit(draws=100.0, tune=100, seed=None, **quick)
    assert isinstance(fit.seed, int) and fit.seed >= 0
    assert fit.summary()["seed"] == fit.seed
    again = model.fit(draws=100, tune=100, seed=fit.seed, **quick)
    np.testing.assert_array_equal(fit.posterior["h2"].values, again.posterior["h2"].values)


@pytest.mark.r_golden
def test_poisson_factor_with_one_level_per_row_is_the_observation_level_effect():
    """glmer's grouseticks model written as in lme4, with the default Poisson family: INDEX
    (one level per row) is the observation-level effect, none is added on top, and the
    Laplace fit equals glmer's."""
    golden = Path(__file__).resolve().parent / "golden" / "glmer"
    ref = json.loads((golden / "grouseticks.json").read_text())
    df = pd.read_csv(
        golden / "grouseticks.csv",
        dtype={"INDEX": str, "BROOD": str, "LOCATION": str, "YEAR": str},
    )
    # HEIGHT_s is R's scale(HEIGHT) (sample SD), precomputed by glmer.R
    model = LMM(
        "TICKS ~ YEAR + HEIGHT_s + (1|BROOD) + (1|INDEX) + (1|LOCATION)", df, family="poisson"
    )
    assert not model.spec.family.has_observation_level_effect
    fit = model.fit(method="laplace")
    # lme4 orders the terms INDEX, BROOD, LOCATION (decreasing number of levels)
    np.testing.assert_allclose(fit.theta, np.array(ref["theta"])[[1, 0, 2]], rtol=1e-4)
    np.testing.assert_allclose(fit.beta, list(ref["fixef"].values()), rtol=1e-4)
    np.testing.assert_allclose(fit.fixed_effects()["se"], list(ref["se"].values()), rtol=1e-3)
    assert fit.loglik == pytest.approx(ref["logLik"], rel=1e-6)
    assert fit.converged
    vc = fit.variance_components().set_index("grp")["vcov"]
    for row in ref["varcorr"]:
        assert vc[row["grp"]] == pytest.approx(row["vcov"], rel=1e-4)
