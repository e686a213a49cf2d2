"""Marginal and conditional leave-one-out: the pointwise densities against brute force, and
the ArviZ objects built from them."""

import warnings

import arviz as az
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import integrate, stats

import bayeslmm as bl
from bayeslmm.engines.bayes import build
from bayeslmm.engines.bayes.conditional import add_posthoc_draws
from bayeslmm.engines.bayes.sampling import diagnose
from bayeslmm.engines.bayes.strategies import strategy_of
from bayeslmm.errors import SpecificationError
from bayeslmm.results.bayes_result import BayesFit
from bayeslmm.results.loo import loo_summary, pointwise_log_likelihood

DIMS = ("chain", "draw")


def _fit(spec, variables, seed=1, draws=40, posthoc=False, strategy="auto"):
    """A BayesFit whose posterior is the given draws (no sampling: the LOO densities are
    functions of the draws, whatever produced them)."""
    built = build(spec, strategy=strategy)
    posterior = xr.Dataset(variables, coords={"chain": [0, 1], "draw": np.arange(draws)})
    idata = az.InferenceData(posterior=posterior)
    if posthoc:
        add_posthoc_draws(built, idata, seed=seed)
    diag, messages = diagnose(idata)
    return BayesFit(
        idata,
        built,
        timing={},
        diagnostics=diag,
        messages=messages,
        seed=seed,
        breeding_value_sampler=strategy_of(built).breeding_value_sampler(built),
    )


def _lognormal(rng, draws, scale=1.0):
    return (DIMS, scale * np.exp(rng.normal(0.0, 0.3, (2, draws))))


def _brute_force_loo(V, y, mean):
    """log N(y_i; E[y_i | y_−i], Var[y_i | y_−i]) by conditioning the dense Gaussian."""
    n = y.size
    out = np.empty(n)
    for i in range(n):
        rest = np.delete(np.arange(n), i)
        w = np.linalg.solve(V[np.ix_(rest, rest)], V[rest, i])
        m = mean[i] + w @ (y[rest] - mean[rest])
        v = V[i, i] - w @ V[rest, i]
        out[i] = stats.norm.logpdf(y[i], m, np.sqrt(v))
    return out


@pytest.fixture(scope="module")
def kinship_data(snp_kinship):
    rng = np.random.default_rng(7)
    n = 40
    K = snp_kinship(rng, n, 300)
    g = np.linalg.cholesky(K.matrix + 1e-8 * np.eye(n)) @ rng.normal(size=n)
    x = rng.normal(size=n)
    df = pd.DataFrame({"y": 2.0 + x + g + rng.normal(size=n), "x": x, "id": list(K.ids)})
    return K, df


def test_marginal_loo_equals_brute_force_conditioning_spectral(kinship_data):
    K, df = kinship_data
    rng = np.random.default_rng(1)
    spec = bl.specify("y ~ x + (1|id)", df, kinship={"id": K})
    fit = _fit(
        spec,
        {"var_id": _lognormal(rng, 40), "var_residual": _lognormal(rng, 40)},
        posthoc=True,
    )
    ll = pointwise_log_likelihood(fit, "marginal")
    assert ll.dims == ("chain", "draw", "obs") and ll.attrs["kind"] == "marginal"
    post = fit.posterior
    X = np.c_[np.ones(len(df)), df["x"]]
    for c, d in [(0, 0), (0, 17), (1, 39)]:
        vg, ve = float(post["var_id"][c, d]), float(post["var_residual"][c, d])
        beta = post["beta"].values[c, d]
        V = vg * K.matrix + ve * np.eye(len(df))
        expected = _brute_force_loo(V, df["y"].to_numpy(), X @ beta)
        np.testing.assert_allclose(ll.values[c, d], expected, rtol=0, atol=1e-8)


def test_marginal_loo_equals_brute_force_dense_two_terms(kinship_data):
    """Two random terms (kinship + iid pen): one Cholesky factor of V per draw."""
    K, df = kinship_data
    df = df.assign(pen=[f"p{k % 5}" for k in range(len(df))])
    rng = np.random.default_rng(2)
    spec = bl.specify("y ~ x + (1|id) + (1|pen)", df, kinship={"id": K})
    beta = (("chain", "draw", "fixed"), rng.normal([2.0, 1.0], 0.1, (2, 10, 2)))
    fit = _fit(
        spec,
        {
            "var_id": _lognormal(rng, 10),
            "var_pen": _lognormal(rng, 10, 0.3),
            "var_residual": _lognormal(rng, 10),
            "beta": beta,
        },
        draws=10,
    )
    ll = pointwise_log_likelihood(fit, "marginal").values
    post = fit.posterior
    pen = pd.get_dummies(df["pen"]).to_numpy(float)
    X = np.c_[np.ones(len(df)), df["x"]]
    for c, d in [(0, 3), (1, 9)]:
        V = (
            float(post["var_id"][c, d]) * K.matrix
            + float(post["var_pen"][c, d]) * pen @ pen.T
            + float(post["var_residual"][c, d]) * np.eye(len(df))
        )
        mean = X @ post["beta"].values[c, d]
        expected = _brute_force_loo(V, df["y"].to_numpy(), mean)
        np.testing.assert_allclose(ll[c, d], expected, rtol=0, atol=1e-8)


def test_conditional_loo_is_the_density_given_the_effects(kinship_data):
    K, df = kinship_data
    rng = np.random.default_rng(3)
    spec = bl.specify("y ~ x + (1|id)", df, kinship={"id": K})
    fit = _fit(
        spec,
        {"var_id": _lognormal(rng, 20), "var_residual": _lognormal(rng, 20)},
        draws=20,
        posthoc=True,
    )
    ll = pointwise_log_likelihood(fit, "conditional").values
    post = fit.posterior
    u = fit.breeding_values_draws("id").values[..., 0]
    X = np.c_[np.ones(len(df)), df["x"]]
    mean = np.einsum("cdp,np->cdn", post["beta"].values, X) + u
    sd = np.sqrt(post["var_residual"].values)[..., None]
    np.testing.assert_allclose(ll, stats.norm.logpdf(df["y"].to_numpy(), mean, sd), atol=1e-10)


def test_loo_and_waic_are_arviz_objects_with_their_kind(kinship_data):
    K, df = kinship_data
    rng = np.random.default_rng(4)
    spec = bl.specify("y ~ x + (1|id)", df, kinship={"id": K})
    fit = _fit(
        spec,
        {"var_id": _lognormal(rng, 200), "var_residual": _lognormal(rng, 200)},
        draws=200,
        posthoc=True,
    )
    marginal = fit.loo()
    assert isinstance(marginal, az.ELPDData) and marginal["kind"] == "marginal"
    conditional = fit.loo("conditional")
    assert conditional["kind"] == "conditional"
    # the same numbers as az.loo on the exported log-likelihood group
    data = fit.log_likelihood("marginal")
    assert data.log_likelihood.attrs["kind"] == "marginal"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        direct = az.loo(data)
    assert direct["elpd_loo"] == pytest.approx(marginal["elpd_loo"], rel=1e-12)
    assert fit.waic()["kind"] == "marginal"
    np.testing.assert_allclose(marginal["loo_i"].values.size, len(df))
    summary = loo_summary(marginal)
    assert set(summary) == {
        "elpd",
        "se",
        "p_loo",
        "kind",
        "pareto_k_max",
        "n_pareto_k_above_0_7",
        "n_draws",
    }
    assert summary["pareto_k_max"] == pytest.approx(float(np.max(marginal["pareto_k"])))


def test_glmm_conditional_loglik_integrates_the_observation_level_effect(snp_kinship):
    rng = np.random.default_rng(5)
    n = 30
    K = snp_kinship(rng, n, 200)
    df = pd.DataFrame({"y": rng.poisson(3.0, n), "id": list(K.ids)})
    spec = bl.specify("y ~ 1 + (1|id)", df, kinship={"id": K}, family="poisson")
    draws = 5
    u = rng.normal(0, 0.3, (2, draws, n, 1))
    fit = _fit(
        spec,
        {
            "var_id": _lognormal(rng, draws, 0.1),
            "var_olre": _lognormal(rng, draws, 0.2),
            "beta": (("chain", "draw", "fixed"), rng.normal(1.0, 0.1, (2, draws, 1))),
            "u_id": (("chain", "draw", "id_level", "id_coef"), u),
        },
        draws=draws,
    )
    ll = pointwise_log_likelihood(fit).values
    assert pointwise_log_likelihood(fit).attrs["kind"] == "conditional"
    post = fit.posterior
    for c, d, i in [(0, 0, 0), (1, 4, 17)]:
        eta = float(post["beta"][c, d, 0]) + u[c, d, i, 0]
        s = np.sqrt(float(post["var_olre"][c, d]))
        y = df["y"][i]

        def integrand(e, eta=eta, s=s, y=y):
            return stats.poisson.pmf(y, np.exp(eta + s * e)) * stats.norm.pdf(e)

        expected = np.log(integrate.quad(integrand, -12, 12, epsabs=1e-13)[0])
        assert ll[c, d, i] == pytest.approx(expected, abs=1e-8)


def test_loo_refuses_what_it_cannot_answer(kinship_data):
    K, df = kinship_data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reml = bl.LMM("y ~ x + (1|id)", df, kinship={"id": K}).fit(method="reml")
    with pytest.raises(SpecificationError, match="posterior draws.*caic"):
        reml.loo()
    with pytest.raises(SpecificationError, match="kind must be"):
        reml.loo("exact")


def test_interpolation_in_delta_equals_the_exact_spectral_terms(kinship_data):
    """fit.loo() on many draws interpolates a, B, c in log δ (δ = σ_e²/σ_g² spanning four
    orders of magnitude here); it must agree with the exact products and brute force."""
    from bayeslmm.engines import gaussian

    K, df = kinship_data
    spec = bl.specify("y ~ x + (1|id)", df, kinship={"id": K})
    rng = np.random.default_rng(6)
    N = 500
    var_g = np.exp(rng.uniform(-4.0, 2.0, N))
    var_e = np.exp(rng.uniform(-3.0, 1.0, N))
    beta = rng.normal([2.0, 1.0], 0.2, (N, 2))
    sigmas, residual = [var_g.reshape(N, 1, 1)], np.repeat(var_e[:, None], len(df), 1)
    inter = gaussian.marginal_loo_loglik(spec, sigmas, residual, beta, method="interpolate")
    exact = gaussian.marginal_loo_loglik(spec, sigmas, residual, beta, method="exact")
    np.testing.assert_allclose(inter, exact, rtol=0, atol=1e-9)
    X = np.c_[np.ones(len(df)), df["x"]]
    for i in (0, 250, 499):
        V = var_g[i] * K.matrix + var_e[i] * np.eye(len(df))
        expected = _brute_force_loo(V, df["y"].to_numpy(), X @ beta[i])
        np.testing.assert_allclose(inter[i], expected, rtol=0, atol=1e-8)
    g = gaussian.vinv_residuals(spec, sigmas, residual, beta, method="interpolate")
    i = 123
    V = var_g[i] * K.matrix + var_e[i] * np.eye(len(df))
    np.testing.assert_allclose(
        g[i], np.linalg.solve(V, df["y"].to_numpy() - X @ beta[i]), rtol=1e-9, atol=1e-9
    )


@pytest.fixture(scope="module")
def grouped_data():
    rng = np.random.default_rng(11)
    n = 31  # uneven levels; one level with a single record
    family = [f"f{k % 6}" for k in range(n - 1)] + ["single"]
    return pd.DataFrame(
        {
            "y": rng.normal(size=n),
            "x": rng.normal(size=n),
            "z": rng.normal(size=n),
            "family": family,
            "env": rng.choice(["a", "b"], n),
        }
    )


def _dense_block_covariance(df, covariates, S, r):
    """V = Σ_jk S_jk Z_j Z_kᵀ + diag(r) from the group dummies, one n × n matrix."""
    dummies = pd.get_dummies(df["family"]).to_numpy(float)
    cols = {"Intercept": np.ones(len(df)), "z": df["z"].to_numpy()}
    Z = [dummies * cols[c][:, None] for c in covariates]
    V = np.diag(r)
    for j, Zj in enumerate(Z):
        for k, Zk in enumerate(Z):
            V = V + S[j, k] * Zj @ Zk.T
    return V


@pytest.mark.parametrize(
    ("formula", "sigma"),
    [
        ("y ~ 1", None),
        ("y ~ x", "~ env"),
        ("y ~ x + (1|family)", None),
        ("y ~ x + (1|family)", "~ env"),
        ("y ~ 0 + (0 + z|family)", None),
        ("y ~ x + (1 + z|family)", None),
        ("y ~ x + (1 + z||family)", "~ env"),
    ],
)
def test_block_diagonal_terms_equal_the_dense_inverse(grouped_data, formula, sigma):
    """No random term or one iid term: closed form per level, no Cholesky factor of V; it
    must equal the dense V⁻¹ per draw (a zero variance included)."""
    from bayeslmm.engines import gaussian

    df = grouped_data
    spec = bl.specify(formula, df, sigma=sigma)
    assert gaussian.blockwise_applies(spec)
    rng = np.random.default_rng(12)
    N, n = 6, len(df)
    covariates = spec.terms[0].covariates if spec.terms else ()
    m = len(covariates)
    L = rng.normal(size=(N, m, m))
    S = L @ L.transpose(0, 2, 1)
    if spec.terms and not spec.terms[0].correlated:
        S = S * np.eye(m)
    S[2] = 0.0  # a variance at 0: Σ singular
    residual = np.exp(rng.normal(0.0, 0.5, (N, n)))
    beta = rng.normal(size=(N, spec.X.shape[1]))
    sigmas = [S] if spec.terms else []
    g, cbar = gaussian.marginal_loo_terms(spec, sigmas, residual, beta)
    vinv_r = gaussian.vinv_residuals(spec, sigmas, residual, beta)
    X = np.asarray(spec.X, float)
    for i in range(N):
        V = _dense_block_covariance(df, covariates, S[i], residual[i])
        Vinv = np.linalg.inv(V)
        e = df["y"].to_numpy() - X @ beta[i]
        np.testing.assert_allclose(g[i], Vinv @ e, rtol=0, atol=1e-10)
        np.testing.assert_allclose(vinv_r[i], Vinv @ e, rtol=0, atol=1e-10)
        np.testing.assert_allclose(cbar[i], np.diag(Vinv), rtol=0, atol=1e-10)


def test_marginal_loo_equals_brute_force_conditioning_iid_group(grouped_data):
    df = grouped_data
    rng = np.random.default_rng(13)
    spec = bl.specify("y ~ x + (1|family)", df)
    beta = (("chain", "draw", "fixed"), rng.normal([0.0, 0.5], 0.1, (2, 10, 2)))
    fit = _fit(
        spec,
        {"var_family": _lognormal(rng, 10), "var_residual": _lognormal(rng, 10), "beta": beta},
        draws=10,
    )
    ll = pointwise_log_likelihood(fit, "marginal").values
    post = fit.posterior
    X = np.c_[np.ones(len(df)), df["x"]]
    for c, d in [(0, 0), (1, 7)]:
        S = np.array([[float(post["var_family"][c, d])]])
        r = np.full(len(df), float(post["var_residual"][c, d]))
        V = _dense_block_covariance(df, ("Intercept",), S, r)
        expected = _brute_force_loo(V, df["y"].to_numpy(), X @ post["beta"].values[c, d])
        np.testing.assert_allclose(ll[c, d], expected, rtol=0, atol=1e-10)


def test_marginal_loo_without_random_terms_is_the_normal_density_at_any_size():
    """y ~ 1: y_i | y_−i, μ, σ ~ N(μ, σ²); above the dense limit too (no factorisation)."""
    from bayeslmm.results.loo import DENSE_LIMIT

    rng = np.random.default_rng(14)
    n = DENSE_LIMIT + 1
    df = pd.DataFrame({"y": rng.normal(1.0, 2.0, n)})
    beta = (("chain", "draw", "fixed"), rng.normal(1.0, 0.1, (2, 4, 1)))
    fit = _fit(
        bl.specify("y ~ 1", df),
        {"var_residual": _lognormal(rng, 4, 4.0), "beta": beta},
        draws=4,
    )
    ll = pointwise_log_likelihood(fit, "marginal").values
    post = fit.posterior
    sd = np.sqrt(post["var_residual"].values)[..., None]
    expected = stats.norm.logpdf(df["y"].to_numpy(), post["beta"].values, sd)
    np.testing.assert_allclose(ll, expected, rtol=0, atol=1e-10)
