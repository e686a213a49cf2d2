"""fit.predict: conditional and marginal predictions of every engine, checked against
independent computations (dense mixed-model equations, brute-force integration)."""

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import special, stats

import bayeslmm as bl
from bayeslmm.engines.bayes import build
from bayeslmm.engines.bayes.conditional import add_posthoc_draws
from bayeslmm.engines.bayes.sampling import diagnose
from bayeslmm.engines.bayes.strategies import strategy_of
from bayeslmm.errors import DataError, SpecificationError
from bayeslmm.results.bayes_result import BayesFit
from bayeslmm.results.predict import mean_response


@pytest.fixture(scope="module")
def kinship_data(random_kinship):
    """60 related individuals, 45 with a record; K over all 60."""
    rng = np.random.default_rng(11)
    n_all, n = 60, 45
    K = random_kinship(rng, n_all, 200)
    x = rng.normal(size=n_all)
    g = np.linalg.cholesky(K.matrix + 1e-9 * np.eye(n_all)) @ rng.normal(size=n_all)
    y = 1.0 + 0.5 * x + 1.5 * g + rng.normal(size=n_all)
    ids = list(K.ids)
    df = pd.DataFrame({"y": y[:n], "x": x[:n], "id": ids[:n]})
    new = pd.DataFrame({"x": x[n:], "id": ids[n:]}, index=[f"new{k}" for k in range(n_all - n)])
    return K, df, new


def _henderson_dense(X, Z, y, G, R):
    """Henderson's equations with G⁻¹ (G invertible): solution and C⁻¹ (prediction errors)."""
    Ri = np.linalg.inv(R)
    C = np.block([[X.T @ Ri @ X, X.T @ Ri @ Z], [Z.T @ Ri @ X, Z.T @ Ri @ Z + np.linalg.inv(G)]])
    sol = np.linalg.solve(C, np.r_[X.T @ Ri @ y, Z.T @ Ri @ y])
    return sol, np.linalg.inv(C)


def test_reml_conditional_equals_dense_mme_blup_for_unphenotyped(kinship_data):
    K, df, new = kinship_data
    n, n_all = df.shape[0], K.n
    fit = bl.LMM("y ~ x + (1|id)", df, kinship={"id": K}).fit(method="reml")
    vc = fit.variance_components()
    sg, se = vc["vcov"].to_numpy()
    # the mixed-model equations over all 60 individuals: Z has no record for the last 15
    X = np.c_[np.ones(n), df["x"]]
    Z = np.zeros((n, n_all))
    Z[np.arange(n), np.arange(n)] = 1.0
    sol, Cinv = _henderson_dense(X, Z, df["y"].to_numpy(), sg * K.matrix, se * np.eye(n))
    L = np.c_[np.ones(n_all - n), new["x"], np.zeros((n_all - n, n)), np.eye(n_all - n)]
    expected = L @ sol
    pred = fit.predict(new, kinship={"id": K})
    assert list(pred.index) == list(new.index)
    assert pred.attrs["kind"] == "conditional"
    np.testing.assert_allclose(pred["estimate"], expected, rtol=0, atol=1e-8)
    # standard errors: the prediction error variance L C⁻¹ Lᵀ (the error of β̂ included)
    np.testing.assert_allclose(
        pred["se"], np.sqrt(np.einsum("ij,jk,ik->i", L, Cinv, L)), rtol=1e-8, atol=0
    )
    z = stats.norm.ppf(0.975)
    np.testing.assert_allclose(pred["ci_high"] - pred["estimate"], z * pred["se"], rtol=1e-12)
    # the fitted individuals: Xβ̂ + û, and û is the engine's own BLUP
    fitted = fit.predict()
    assert list(fitted.index) == list(range(n)) and fitted.index.name == "row"
    np.testing.assert_allclose(fitted["estimate"], X @ sol[:2] + sol[2 : 2 + n], atol=1e-8)
    np.testing.assert_allclose(
        fitted["estimate"] - X @ fit.fixed_table["estimate"].to_numpy(),
        fit.blups["id"]["(Intercept)"].to_numpy(),
        atol=1e-7,
    )


def test_reml_conditional_two_terms_new_levels_of_both(random_kinship):
    """A kinship term and an iid pen: a new animal gets its BLUP through K, a new pen 0."""
    rng = np.random.default_rng(3)
    n_all = 36
    K = random_kinship(rng, n_all, 100, ridge=0.05)
    ids = list(K.ids)
    pens = [f"p{k % 6}" for k in range(n_all)]
    y = rng.normal(size=n_all) + np.repeat(rng.normal(size=6), 6)[np.argsort(np.arange(n_all) % 6)]
    df = pd.DataFrame({"y": y[:30], "id": ids[:30], "pen": pens[:30]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = bl.LMM("y ~ 1 + (1|id) + (1|pen)", df, kinship={"id": K}).fit(method="reml")
    new = pd.DataFrame({"id": ["i31", "i3", "i32"], "pen": ["p1", "p_new", "p_new"]})
    pred = fit.predict(new, kinship={"id": K})
    vc = fit.variance_components().set_index("grp")["vcov"]
    # dense equations over all 36 animals and the 6 fitted pens
    pen_levels = sorted(set(pens[:30]))
    Za = np.zeros((30, n_all))
    Za[np.arange(30), np.arange(30)] = 1.0
    Zp = np.array([[float(p == q) for q in pen_levels] for p in pens[:30]])
    G = np.block(
        [
            [vc["id"] * K.matrix, np.zeros((n_all, 6))],
            [np.zeros((6, n_all)), vc["pen"] * np.eye(6)],
        ]
    )
    sol, _ = _henderson_dense(
        np.ones((30, 1)), np.c_[Za, Zp], df["y"].to_numpy(), G, vc["Residual"] * np.eye(30)
    )
    b, ua, up = sol[0], sol[1 : 1 + n_all], sol[1 + n_all :]
    expected = [b + ua[31] + up[pen_levels.index("p1")], b + ua[3], b + ua[32]]
    np.testing.assert_allclose(pred["estimate"], expected, atol=1e-8)


def test_reml_conditional_correlated_slopes_and_a_new_subject():
    """lme4's sleepstudy with (Days | Subject): Xβ̂ + û₀ + û₁ Days for the fitted rows; a
    new subject (an iid level) gets E[u] = 0, with Σ's variance in its standard error."""
    from pathlib import Path

    golden = Path(__file__).resolve().parents[1] / "golden" / "data" / "sleepstudy.csv"
    df = pd.read_csv(golden, dtype={"Subject": str})
    fit = bl.LMM("Reaction ~ Days + (Days|Subject)", df).fit(method="reml")
    b = fit.fixed_table["estimate"].to_numpy()
    blup = fit.blups["Subject"].to_numpy()[fit.spec.terms[0].index]
    expected = b[0] + b[1] * df["Days"] + blup[:, 0] + blup[:, 1] * df["Days"]
    np.testing.assert_allclose(fit.predict()["estimate"], expected, atol=1e-8)
    new = fit.predict(pd.DataFrame({"Days": [3.0], "Subject": ["new"]}))
    marginal = fit.predict(pd.DataFrame({"Days": [3.0]}), kind="marginal")
    assert new["estimate"].iloc[0] == pytest.approx(marginal["estimate"].iloc[0], rel=1e-12)
    vc = fit.variance_components()
    d = np.array([1.0, 3.0])
    S = np.array([[vc["vcov"][0], vc["vcov"][2]], [vc["vcov"][2], vc["vcov"][1]]])
    assert new["se"].iloc[0] ** 2 == pytest.approx(marginal["se"].iloc[0] ** 2 + d @ S @ d)


def test_reml_marginal_is_x_beta_with_its_standard_error(kinship_data):
    K, df, new = kinship_data
    fit = bl.LMM("y ~ x + (1|id)", df, kinship={"id": K}).fit(method="reml")
    pred = fit.predict(pd.DataFrame({"x": [-1.0, 0.0, 2.0]}), kind="marginal")
    X = np.c_[np.ones(3), [-1.0, 0.0, 2.0]]
    np.testing.assert_allclose(pred["estimate"], X @ fit.fixed_table["estimate"], atol=1e-10)
    var = np.einsum("ij,jk,ik->i", X, fit.fixed_cov, X)
    np.testing.assert_allclose(pred["se"], np.sqrt(var), rtol=1e-6)
    assert pred.attrs["kind"] == "marginal"


# ---------------------------------------------------------------------------------------
# NUTS (prior draws stand in for the posterior: predictions are functions of the draws)
# ---------------------------------------------------------------------------------------
def _draws_fit(spec, seed=2, draws=300):
    """A spectral BayesFit whose "posterior" is drawn by hand: θ from a log-normal around 1,
    then β | y, θ and u | y, θ exactly as after sampling (no compilation, no NUTS)."""
    import arviz as az
    import xarray as xr

    built = build(spec)
    rng = np.random.default_rng(seed)
    dims = ("chain", "draw")
    posterior = xr.Dataset(
        {
            "var_id": (dims, np.exp(rng.normal(0.0, 0.3, (2, draws)))),
            "var_residual": (dims, np.exp(rng.normal(0.0, 0.3, (2, draws)))),
        },
        coords={"chain": [0, 1], "draw": np.arange(draws)},
    )
    idata = add_posthoc_draws(built, az.InferenceData(posterior=posterior), seed=seed)
    diag, messages = diagnose(idata)
    return BayesFit(
        idata,
        built,
        timing={"total_s": 0.0},
        diagnostics=diag,
        messages=messages,
        seed=seed,
        breeding_value_sampler=strategy_of(built).breeding_value_sampler(built),
    )


@pytest.fixture(scope="module")
def spectral_fit(kinship_data):
    K, df, _ = kinship_data
    return _draws_fit(bl.specify("y ~ x + (1|id)", df, kinship={"id": K}))


def test_nuts_conditional_new_individuals_through_the_kinship(spectral_fit, kinship_data):
    K, df, new = kinship_data
    fit = spectral_fit
    draws = fit.predict(new, kinship={"id": K}, draws=True, seed=4)
    assert draws.dims == ("chain", "draw", "row") and list(draws["row"].values) == list(new.index)
    post = fit.posterior
    beta = post["beta"].values.reshape(-1, 2)
    var_g = post["var_id"].values.reshape(-1)
    u = fit.breeding_values_draws("id").values.reshape(var_g.size, -1)
    n = df.shape[0]
    Ktt, Knt, Knn = K.matrix[:n, :n], K.matrix[n:, :n], K.matrix[n:, n:]
    A = Knt @ np.linalg.inv(Ktt)
    mean = beta @ np.c_[np.ones(len(new)), new["x"]].T + u @ A.T
    # what the relatives do not predict: N(0, σ_g² (K_nn − A K_tn)) per draw
    rest = draws.values.reshape(var_g.size, -1) - mean
    schur = np.diag(Knn - A @ Knt.T)
    standard = rest / np.sqrt(var_g[:, None] * schur)
    assert abs(standard.mean()) < 4 / np.sqrt(standard.size)
    assert abs(standard.var() - 1) < 0.1
    table = fit.predict(new, kinship={"id": K}, seed=4)
    np.testing.assert_allclose(table["estimate"], draws.values.mean(axis=(0, 1)), atol=1e-12)
    assert list(table.columns[:4]) == ["estimate", "se", "ci_low", "ci_high"]
    assert "ess_bulk" in table.columns


def test_nuts_conditional_fitted_rows_and_marginal(spectral_fit, kinship_data):
    _, df, _ = kinship_data
    fit = spectral_fit
    beta = fit.posterior["beta"].values.reshape(-1, 2)
    u = fit.breeding_values_draws("id").values.reshape(beta.shape[0], -1)
    X = np.c_[np.ones(df.shape[0]), df["x"]]
    cond = fit.predict()
    np.testing.assert_allclose(cond["estimate"], (beta @ X.T + u).mean(0), atol=1e-10)
    marg = fit.predict(kind="marginal")
    np.testing.assert_allclose(marg["estimate"], (beta @ X.T).mean(0), atol=1e-10)
    np.testing.assert_allclose(marg["se"], (beta @ X.T).std(0, ddof=1), rtol=1e-6)


# ---------------------------------------------------------------------------------------
# GLMMs: population-averaged means
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("family", "inverse"),
    [
        (bl.Bernoulli(), special.expit),
        (bl.Bernoulli(link="probit"), special.ndtr),
        (bl.Poisson(), np.exp),
    ],
)
def test_marginal_mean_equals_monte_carlo_and_many_node_quadrature(family, inverse):
    eta = np.array([-1.5, 0.0, 0.7, 1.2])
    var = np.array([0.3, 1.0, 2.5, 4.0])
    got = mean_response(family, eta, var)
    # a quadrature with many nodes (scipy's roots, not the one predict uses)
    x, w = special.roots_hermite(1000)
    fine = inverse(eta[:, None] + np.sqrt(2 * var)[:, None] * x) @ (w / np.sqrt(np.pi))
    np.testing.assert_allclose(got, fine, rtol=1e-6, atol=1e-6)
    # brute-force Monte Carlo average over the random effect
    z = np.random.default_rng(0).standard_normal((200_000, 1))
    values = inverse(eta + np.sqrt(var) * z)
    mc, mc_se = values.mean(0), values.std(0) / np.sqrt(z.shape[0])
    assert np.all(np.abs(got - mc) < 4 * mc_se)


@pytest.fixture(scope="module")
def binary_fit(random_kinship):
    rng = np.random.default_rng(2)
    n_all, n = 80, 70
    K = random_kinship(rng, n_all, 200)
    x = rng.normal(size=n_all)
    g = np.linalg.cholesky(K.matrix + 1e-9 * np.eye(n_all)) @ rng.normal(size=n_all)
    y = rng.binomial(1, special.expit(-0.3 + 0.8 * x + 1.2 * g))
    ids = list(K.ids)
    df = pd.DataFrame({"y": y[:n], "x": x[:n], "id": ids[:n]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = bl.LMM("y ~ x + (1|id)", df, kinship={"id": K}, family="bernoulli").fit(
            method="laplace"
        )
    return fit, K, df, pd.DataFrame({"x": x[n:], "id": ids[n:]})


def test_laplace_conditional_uses_the_modes_and_kinship(binary_fit):
    fit, K, df, new = binary_fit
    n = df.shape[0]
    beta = fit.beta
    u = fit.random_effects["id"]["(Intercept)"].to_numpy()
    fitted = fit.predict()
    np.testing.assert_allclose(
        fitted["estimate"], special.expit(beta[0] + beta[1] * df["x"] + u), atol=1e-12
    )
    pred = fit.predict(new, kinship={"id": K})
    A = K.matrix[n:, :n] @ np.linalg.inv(K.matrix[:n, :n])
    expected = special.expit(beta[0] + beta[1] * new["x"].to_numpy() + A @ u)
    np.testing.assert_allclose(pred["estimate"], expected, atol=1e-8)
    assert np.all(pred["se"] > 0)


def test_laplace_marginal_integrates_the_genetic_variance(binary_fit):
    fit, K, df, _ = binary_fit
    var_g = fit.theta[0] ** 2
    mean_diag = float(np.mean(np.diag(fit.spec.terms[0].kinship.matrix)))
    newx = pd.DataFrame({"x": [-1.0, 0.0, 1.0]})
    pred = fit.predict(newx, kind="marginal")
    eta = fit.beta[0] + fit.beta[1] * newx["x"].to_numpy()
    x, w = special.roots_hermite(1000)
    fine = special.expit(eta[:, None] + np.sqrt(2 * var_g * mean_diag) * x) @ (w / np.sqrt(np.pi))
    np.testing.assert_allclose(pred["estimate"], fine, atol=1e-9)
    # averaging over the random effect pulls probabilities towards 1/2
    conditional_at_zero = special.expit(eta)
    assert np.all(np.abs(pred["estimate"] - 0.5) < np.abs(conditional_at_zero - 0.5))
    assert np.all(pred["se"] > 0)


# ---------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------
def test_predict_errors_name_the_problem(kinship_data):
    K, df, new = kinship_data
    fit = bl.LMM("y ~ x + (1|id)", df, kinship={"id": K}).fit(method="reml")
    with pytest.raises(DataError, match=r"i45.*kinship=\{'id': K\}"):
        fit.predict(new)
    with pytest.raises(DataError, match="lacks the grouping column \\['id'\\]"):
        fit.predict(new[["x"]])
    with pytest.raises(DataError, match="lacks the column"):
        fit.predict(new[["id"]], kinship={"id": K})
    with pytest.raises(SpecificationError, match="draws=True"):
        fit.predict(draws=True)
    with pytest.raises(SpecificationError, match="kind must be"):
        fit.predict(kind="population")
    with pytest.raises(SpecificationError, match="not grouping factors"):
        fit.predict(new, kinship={"sire": K})
    # marginal predictions need no kinship and no ids
    assert fit.predict(new[["x"]], kind="marginal").shape[0] == len(new)
