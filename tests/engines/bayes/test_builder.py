"""Tests of the PyMC builder: structure, exact log-densities (spectral with β sampled or
integrated out), covariance of the latent parametrisation, GLMM likelihoods and the
conditional draws of β and of the breeding values."""

import numpy as np
import pandas as pd
import pytest
from scipy import special, stats

import bayeslmm as bl
from bayeslmm.engines.bayes import build, choose_strategy, spectral_basis
from bayeslmm.engines.bayes.conditional import (
    add_posthoc_draws,
    conditional_breeding_values,
    fixed_effects_conditional,
    rotated_log_likelihood,
)
from bayeslmm.priors import resolve_priors


@pytest.fixture(scope="module")
def data(random_kinship):
    rng = np.random.default_rng(7)
    n = 30
    ids = [f"i{k}" for k in range(n)]
    K = random_kinship(rng, n, 50, ridge=0.05)
    # two records per individual, shuffled, so that Z is not the identity
    df = pd.DataFrame(
        {
            "y": rng.normal(10, 2, 2 * n),
            "x": rng.normal(size=2 * n),
            "env": np.tile([0.0, 1.0], n),
            "id": np.repeat(ids, 2),
            "fam": np.repeat([f"f{k % 6}" for k in range(n)], 2),
            "count": rng.poisson(3, 2 * n),
            "case": rng.integers(0, 2, 2 * n),
            "trials": 6,
            "succ": rng.integers(0, 7, 2 * n),
            "expo": rng.uniform(1, 3, 2 * n),
        }
    ).sample(frac=1.0, random_state=3)
    return K, df


def _logp_fn(model, var_name):
    """Log-density of one variable (observed) as a function of the free value variables."""
    return model.compile_logp(vars=[model[var_name]], jacobian=False, sum=True)


def _value_fn(model, name):
    """A deterministic as a function of the value variables (a point dict)."""
    (out,) = model.replace_rvs_by_values([model[name]])
    return model.compile_fn(out, inputs=model.value_vars, on_unused_input="ignore")


def _dense_cov(spec, var_g, var_e):
    """σ_g² Z K Zᵀ + σ_e² I, formed densely."""
    term = spec.terms[0]
    Z = term.incidence().toarray()
    return var_g * Z @ term.kinship.matrix @ Z.T + var_e * np.eye(spec.n_obs)


def _offset(spec):
    return np.zeros(spec.n_obs) if spec.offset is None else np.asarray(spec.offset)


def _dense_logpdf(spec, beta, var_g, var_e):
    V = _dense_cov(spec, var_g, var_e)
    return stats.multivariate_normal(spec.X @ beta + _offset(spec), V).logpdf(spec.y)


def _uncentred_prior(spec):
    """Prior of the usual (uncentred) β implied by the builder's priors, derived here.

    The intercept prior is at centred covariates: β₀ᶜ = β₀ + x̄ᵀβ_slopes ~ N(m0, s0²) and the
    slopes are independent normals, so β = T βᶜ with T the identity except row 0 = (1, −x̄ᵀ).
    """
    ps = resolve_priors(spec)
    names = list(spec.fixed_names)
    plist = [ps.intercept if nm == "Intercept" else ps.slopes[nm] for nm in names]
    mu_c = np.array([float(p.params[0]) for p in plist])
    cov_c = np.diag([float(p.params[1]) ** 2 for p in plist])
    T = np.eye(len(names))
    if "Intercept" in names and len(names) > 1:
        k0 = names.index("Intercept")
        xbar = spec.X.mean(axis=0)
        xbar[k0] = 0.0
        T[k0] -= xbar
    return T @ mu_c, T @ cov_c @ T.T, T


def _dense_marginal_logpdf(spec, var_g, var_e):
    """log N(y; Xμ_β + offset, σ_g² ZKZᵀ + σ_e² I + X Σ_β Xᵀ), everything dense."""
    mu_b, cov_b, _ = _uncentred_prior(spec)
    V = _dense_cov(spec, var_g, var_e) + spec.X @ cov_b @ spec.X.T
    return stats.multivariate_normal(spec.X @ mu_b + _offset(spec), V).logpdf(spec.y)


def _point_spectral(spec, beta, sd_g, sigma):
    """Value-variable point for given uncentred β (inverting the centring of the builder)."""
    X = spec.X
    names = list(spec.fixed_names)
    beta_c = np.array(beta, dtype=float)
    if "Intercept" in names and len(names) > 1:
        k0 = names.index("Intercept")
        means = X.mean(axis=0)
        means[k0] = 0.0
        beta_c[k0] = beta[k0] + means @ beta
        key = "beta_centered"
    else:
        key = "beta"
    return {key: beta_c, "sd_id_log__": np.log(sd_g), "sigma_log__": np.log(sigma)}


MARGINAL_FORMULAS = [
    "y ~ x + (1|id)",
    "y ~ 1 + (1|id)",
    "y ~ x + env + offset(np.log(expo)) + (1|id)",
    "y ~ 0 + x + (1|id)",
    # six fixed effects: PyTensor's Cholesky / SolveTriangular (above MAX_UNROLLED_P)
    "y ~ x * env + count + expo + (1|id)",
]


@pytest.mark.parametrize("formula", MARGINAL_FORMULAS)
def test_spectral_marginal_logp_equals_dense_mvn(data, formula):
    """β integrated out: the observed node's log-density equals the dense N(y; Xμ_β,
    σ_g² ZKZᵀ + σ_e² I + X Σ_β Xᵀ) with the uncentred prior of β derived independently."""
    K, df = data
    spec = bl.specify(formula, df, kinship={"id": K})
    built = build(spec)
    assert built.strategy == "spectral" and built.marginal_fixed is not None
    assert sorted(v.name for v in built.model.free_RVs) == ["sd_id", "sigma"]
    logp = _logp_fn(built.model, built.observed_name)
    rng = np.random.default_rng(0)
    for _ in range(3):
        sd_g, sigma = rng.uniform(0.05, 3.0, 2)
        point = {"sd_id_log__": np.log(sd_g), "sigma_log__": np.log(sigma)}
        want = _dense_marginal_logpdf(spec, sd_g**2, sigma**2)
        assert logp(point) == pytest.approx(want, rel=1e-10, abs=1e-8)


@pytest.mark.parametrize(
    "formula", ["y ~ x + env + (1|id)", "y ~ 1 + (1|id)", "y ~ x * env + count + expo + (1|id)"]
)
def test_spectral_marginal_gradient_matches_dense_finite_differences(data, formula):
    """The gradient of the observed node's log-density (through the p × p Cholesky factor and
    triangular solve in the graph; elementwise when p = 1) equals central differences of the
    dense marginal one."""
    import pytensor.tensor as pt

    K, df = data
    spec = bl.specify(formula, df, kinship={"id": K})
    built = build(spec)
    model = built.model
    logp_obs = model.logp(vars=[model[built.observed_name]], jacobian=False)
    names = ["sd_id_log__", "sigma_log__"]
    wrt = [model.rvs_to_values[model[nm.removesuffix("_log__")]] for nm in names]
    grad = model.compile_fn(pt.grad(logp_obs, wrt), inputs=wrt, on_unused_input="ignore")
    x0, h = np.log([1.1, 0.7]), 1e-5

    def dense(x):
        return _dense_marginal_logpdf(spec, np.exp(2 * x[0]), np.exp(2 * x[1]))

    want = [(dense(x0 + h * e) - dense(x0 - h * e)) / (2 * h) for e in np.eye(2)]
    got = np.ravel(grad(dict(zip(names, x0, strict=True))))
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_spectral_without_fixed_effects_is_plain_product(data):
    K, df = data
    spec = bl.specify("y ~ 0 + (1|id)", df, kinship={"id": K})
    built = build(spec)
    assert built.marginal_fixed is None
    point = {"sd_id_log__": np.log(1.2), "sigma_log__": np.log(0.9)}
    got = _logp_fn(built.model, built.observed_name)(point)
    assert got == pytest.approx(_dense_logpdf(spec, np.zeros(0), 1.44, 0.81), rel=1e-10)


@pytest.mark.parametrize("formula", ["y ~ x + (1|id)", "y ~ 1 + (1|id)"])
def test_spectral_joint_logp_equals_dense_mvn(data, formula):
    K, df = data
    spec = bl.specify(formula, df, kinship={"id": K})
    built = build(spec, fixed_effects="joint")
    assert built.strategy == "spectral" and built.marginal_fixed is None
    logp = _logp_fn(built.model, built.observed_name)
    rng = np.random.default_rng(0)
    for _ in range(3):
        beta = rng.normal(size=len(spec.fixed_names)) + np.r_[10.0, np.zeros(spec.X.shape[1] - 1)]
        sd_g, sigma = rng.uniform(0.3, 3.0, 2)
        point = _point_spectral(spec, beta, sd_g, sigma)
        assert logp(point) == pytest.approx(_dense_logpdf(spec, beta, sd_g**2, sigma**2), rel=1e-9)


def test_spectral_identity_incidence_reuses_kinship_eigh(data):
    K, _ = data
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"y": rng.normal(size=K.n), "id": list(K.ids)})
    spec = bl.specify("y ~ 1 + (1|id)", df, kinship={"id": K})
    basis = spectral_basis(spec.terms[0])
    assert spec.terms[0].is_identity_incidence
    assert basis.vectors is spec.terms[0].kinship.eigenvectors or np.array_equal(
        basis.vectors, spec.terms[0].kinship.eigenvectors
    )
    assert spectral_basis(spec.terms[0]) is basis  # cached per term
    built = build(spec, fixed_effects="joint")
    point = _point_spectral(spec, np.array([0.3]), 1.2, 0.7)
    got = _logp_fn(built.model, built.observed_name)(point)
    assert got == pytest.approx(_dense_logpdf(spec, np.array([0.3]), 1.44, 0.49), rel=1e-9)


def test_h2_prior_parametrisation_logp(data):
    K, df = data
    spec = bl.specify("y ~ 1 + (1|id)", df, kinship={"id": K}, priors={"h2": ("beta", 2, 3)})
    marginal = build(spec)
    assert sorted(v.name for v in marginal.model.free_RVs) == ["h2", "total_sd"]
    h2, total_sd = 0.3, 2.0
    point = {"h2_logodds__": special.logit(h2), "total_sd_log__": np.log(total_sd)}
    got = _logp_fn(marginal.model, marginal.observed_name)(point)
    # h² is at the sample's kinship scale: σ_g² = h² σ²_P / c, c = mean diag K - mean K
    c = spec.terms[0].variance_weights()[0, 0]
    want = _dense_marginal_logpdf(spec, h2 * total_sd**2 / c, (1 - h2) * total_sd**2)
    assert got == pytest.approx(want, rel=1e-10)
    built = build(spec, fixed_effects="joint")
    free = sorted(v.name for v in built.model.free_RVs)
    assert free == ["beta", "h2", "total_sd"]
    h2, total_sd = 0.3, 2.0
    point = {"beta": np.array([9.5]), "h2_logodds__": special.logit(h2), "total_sd_log__": 0.0}
    point["total_sd_log__"] = np.log(total_sd)
    got = _logp_fn(built.model, built.observed_name)(point)
    want = _dense_logpdf(spec, np.array([9.5]), h2 * total_sd**2 / c, (1 - h2) * total_sd**2)
    assert got == pytest.approx(want, rel=1e-9)
    # the Beta prior's density enters the joint log-density unchanged
    prior = built.model.compile_logp(vars=[built.model["h2"]], jacobian=False)(point)
    assert prior == pytest.approx(stats.beta(2, 3).logpdf(h2), rel=1e-9)


def test_dims_and_coords(data):
    K, df = data
    spec = bl.specify("y ~ x + (1 + env | id) + (1 | fam)", df, kinship={"id": K})
    built = build(spec)
    model = built.model
    assert built.strategy == "latent"
    assert list(model.coords["fixed"]) == ["Intercept", "x"]
    assert list(model.coords["id_level"]) == list(spec.terms[0].levels)
    assert list(model.coords["id_coef"]) == ["Intercept", "env"]
    assert list(model.coords["component"]) == ["id", "fam", "residual"]
    dims = model.named_vars_to_dims
    assert dims["beta"] == ("fixed",)
    assert dims["u_id"] == ("id_level", "id_coef")
    assert dims["u_fam"] == ("fam_level", "fam_coef")
    assert dims["corr_id"] == ("id_coef", "id_coef_bis")
    assert dims["y"] == ("obs",)
    assert dims["variance_share"] == ("component",)
    assert "h2" not in model.named_vars  # the kinship term has slopes: no single h2
    assert built.h2_term is None


def _jacobian(fn, dim, point, key):
    """Columns of a linear map z -> u (evaluated at unit vectors)."""
    base = np.zeros(dim)
    cols = []
    for k in range(dim):
        e = base.copy()
        e[k] = 1.0
        cols.append(np.asarray(fn({**point, key: e.reshape(point[key].shape)})).ravel())
    return np.array(cols).T


@pytest.mark.parametrize("correlated", [True, False])
def test_latent_random_effects_have_covariance_sigma_kron_k(data, correlated):
    """u = U√S z L_Σᵀ must have Cov(vec u) = K ⊗ Σ (row-major vec): checked exactly via the
    linear map z -> u at a fixed Σ (no sampling, no inverse of K)."""
    K, df = data
    bar = "|" if correlated else "||"
    spec = bl.specify(f"y ~ 1 + (1 + env {bar} id)", df, kinship={"id": K})
    built = build(spec, strategy="latent")
    model = built.model
    fn = _value_fn(model, "u_id")
    ip = model.initial_point()
    q = spec.terms[0].n_levels
    if correlated:
        # an arbitrary point of the packed, transformed Cholesky factor
        ip["chol_id_cholesky-cov-packed__"] = np.array([0.4, 0.5, -0.3])
    else:
        ip["sd_id_log__"] = np.log([1.5, 0.8])
    cov_fn = _value_fn(model, "cov_id")
    Sigma = np.asarray(cov_fn(ip))
    if correlated:
        assert abs(Sigma[0, 1]) > 0.1  # a genuinely correlated Σ
    else:
        np.testing.assert_allclose(Sigma, np.diag([1.5**2, 0.8**2]))
    J = _jacobian(fn, ip["z_id"].size, ip, "z_id")
    assert J.shape == (2 * q, ip["z_id"].size)
    np.testing.assert_allclose(J @ J.T, np.kron(spec.terms[0].kinship.matrix, Sigma), atol=1e-10)


def test_rank_share_truncates_basis(data):
    K, df = data
    spec = bl.specify("y ~ 1 + (1|id) + (1|fam)", df, kinship={"id": K})
    full = build(spec)
    trunc = build(spec, rank_share=0.9)
    r_full = len(full.model.coords["id_basis"])
    r_trunc = len(trunc.model.coords["id_basis"])
    values, _ = K.low_rank(0.9)
    assert r_trunc == values.size < r_full == K.n
    assert values.sum() >= 0.9 * np.trace(K.matrix) - 1e-9


def test_strategy_choice_and_errors(data):
    K, df = data
    assert choose_strategy(bl.specify("y ~ x + (1|id)", df, kinship={"id": K})) == "spectral"
    for formula, kw in [
        ("y ~ x + (1|fam)", {}),
        ("y ~ x + (1+env|id)", {}),
        ("y ~ x + (1|id) + (1|fam)", {}),
        ("y ~ x + (1|id)", {"sigma": "~ env"}),
        ("count ~ x + (1|id)", {"family": "poisson"}),
    ]:
        kin = {"id": K} if "id" in formula else None
        spec = bl.specify(formula, df, kinship=kin, **kw)
        assert choose_strategy(spec) == "latent"
        with pytest.raises(bl.SpecificationError, match="spectral strategy needs"):
            choose_strategy(spec, "spectral")
    with pytest.raises(bl.SpecificationError, match="Unknown strategy"):
        choose_strategy(bl.specify("y ~ (1|fam)", df), "fast")


def _latent_point(model, spec, beta):
    """Initial point with all z = 0, so η = Xβ (+ offset)."""
    ip = model.initial_point()
    for k in ip:
        if k.startswith("z_"):
            ip[k] = np.zeros_like(ip[k])
    X = spec.X
    names = list(spec.fixed_names)
    k0 = names.index("Intercept")
    means = X.mean(axis=0)
    means[k0] = 0.0
    beta_c = np.array(beta, dtype=float)
    beta_c[k0] = beta[k0] + means @ beta
    ip["beta_centered"] = beta_c
    return ip


@pytest.mark.parametrize(
    ("formula", "family", "kwargs", "reference"),
    [
        (
            "count ~ x + offset(np.log(expo)) + (1|id)",
            "poisson",
            {},
            lambda eta, d: stats.poisson.logpmf(d["count"], np.exp(eta)).sum(),
        ),
        (
            "case ~ x + (1|id)",
            "bernoulli",
            {"link": "logit"},
            lambda eta, d: stats.bernoulli.logpmf(d["case"], special.expit(eta)).sum(),
        ),
        (
            "case ~ x + (1|id)",
            "bernoulli",
            {"link": "probit"},
            lambda eta, d: stats.bernoulli.logpmf(d["case"], stats.norm.cdf(eta)).sum(),
        ),
        (
            "succ ~ x + (1|fam)",
            "binomial",
            {"trials": "trials", "link": "logit"},
            lambda eta, d: stats.binom.logpmf(d["succ"], d["trials"], special.expit(eta)).sum(),
        ),
    ],
)
def test_glmm_likelihoods(data, formula, family, kwargs, reference):
    K, df = data
    kin = {"id": K} if "id" in formula else None
    spec = bl.specify(formula, df, kinship=kin, family=family, **kwargs)
    built = build(spec)
    assert built.strategy == "latent"
    beta = np.array([0.3, -0.4])
    point = _latent_point(built.model, spec, beta)
    eta = spec.X @ beta + (0.0 if spec.offset is None else spec.offset)
    got = _logp_fn(built.model, spec.response)(point)
    d = spec.data
    # PyMC clips invprobit at 1e-8 relative (numerical guard), hence rel=1e-7
    assert got == pytest.approx(reference(eta, d), rel=1e-7)
    assert ("sd_olre" in built.model.named_vars) == (family == "poisson")


def test_heteroscedastic_gaussian_logp(data):
    K, df = data
    spec = bl.specify("y ~ x + (1|id)", df, kinship={"id": K}, sigma="~ env")
    built = build(spec)
    point = _latent_point(built.model, spec, np.array([10.0, 0.5]))
    gamma = np.array([0.2, -0.5])
    point["sigma_coef"] = gamma
    sd = np.exp(spec.sigma_X @ gamma)
    want = stats.norm(spec.X @ np.array([10.0, 0.5]), sd).logpdf(spec.y).sum()
    assert _logp_fn(built.model, "y")(point) == pytest.approx(want, rel=1e-9)
    var_res = _value_fn(built.model, "var_residual")
    assert float(var_res(point)) == pytest.approx(np.mean(sd**2), rel=1e-9)


def test_priors_scale_with_data_and_overrides(data):
    K, df = data
    spec = bl.specify("y ~ x + (1|id)", df, kinship={"id": K})
    ps = resolve_priors(spec)
    sy = np.std(spec.y, ddof=1)
    assert ps.intercept.params == (pytest.approx(np.mean(spec.y)), pytest.approx(2.5 * sy))
    assert ps.slopes["x"].params[1] == pytest.approx(2.5 * sy / np.std(df["x"], ddof=1))
    assert float(np.ravel(ps.sd["id"].params[1])[0]) == pytest.approx(2.5 * sy)
    # rescaling y rescales every default prior
    spec10 = bl.specify("y ~ x + (1|id)", df.assign(y=df["y"] * 10), kinship={"id": K})
    assert resolve_priors(spec10).sigma.params[1] == pytest.approx(10 * ps.sigma.params[1])
    over = resolve_priors(spec, {"sd_id": ("halfnormal", 3.0), "b_x": ("normal", 0, 1)})
    assert over.sd["id"].describe() == "HalfNormal(3)"
    assert over.slopes["x"].params == (0, 1)
    with pytest.raises(bl.SpecificationError, match="Unknown prior key"):
        resolve_priors(spec, {"sd_idd": ("halfnormal", 1.0)})
    with pytest.raises(bl.SpecificationError, match="positive support"):
        resolve_priors(spec, {"sd_id": ("normal", 0, 1)})
    with pytest.raises(bl.SpecificationError, match="shares"):
        two = bl.specify("y ~ (1|id) + (1|fam)", df, kinship={"id": K})
        resolve_priors(two, {"h2": ("beta", 1, 1)})
    glmm = bl.specify("case ~ x + (1|id)", df, kinship={"id": K}, family="bernoulli")
    gp = resolve_priors(glmm)
    assert float(np.ravel(gp.sd["id"].params[1])[0]) == 1.0  # link scale, not sd(y)
    assert gp.intercept.params[0] == pytest.approx(special.logit(df["case"].mean()))


def test_conditional_breeding_values_match_blup(data):
    """Mean and variance of the conditional draws at a fixed θ equal the dense BLUP
    σ_g² K Zᵀ V⁻¹ (y - Xβ) and its prediction error variance."""
    import xarray as xr

    K, df = data
    spec = bl.specify("y ~ x + (1|id)", df, kinship={"id": K})
    built = build(spec)
    n_draws = 4000
    beta, var_g, var_e = np.array([9.8, 0.3]), 2.0, 1.5
    post = xr.Dataset(
        {
            "beta": (("chain", "draw", "fixed"), np.tile(beta, (1, n_draws, 1))),
            "var_id": (("chain", "draw"), np.full((1, n_draws), var_g)),
            "var_residual": (("chain", "draw"), np.full((1, n_draws), var_e)),
        },
        coords={"chain": [0], "draw": np.arange(n_draws), "fixed": ["Intercept", "x"]},
    )
    u = conditional_breeding_values(built, post, seed=3).values[0, :, :, 0]
    term = spec.terms[0]
    Z = term.incidence().toarray()
    Km = term.kinship.matrix
    V = var_g * Z @ Km @ Z.T + var_e * np.eye(spec.n_obs)
    Vinv_r = np.linalg.solve(V, spec.y - spec.X @ beta)
    blup = var_g * Km @ Z.T @ Vinv_r
    pev = var_g * Km - var_g**2 * Km @ Z.T @ np.linalg.solve(V, Z @ Km)
    se = np.sqrt(np.diag(pev) / n_draws)
    assert np.all(np.abs(u.mean(axis=0) - blup) < 4.5 * se)
    np.testing.assert_allclose(np.cov(u.T), pev, atol=0.12 * np.max(np.diag(pev)))


def test_dirichlet_share_parametrisation(data):
    """σ_k² = share_k σ²_P for every term and the residual; the Dirichlet density is the prior."""
    K, df = data
    spec = bl.specify(
        "y ~ 1 + (1|id) + (1|fam)",
        df,
        kinship={"id": K},
        priors={"shares": ("dirichlet", [2, 1, 3]), "total_variance": ("scaled_inv_chi2", 4, 5)},
    )
    built = build(spec)
    model = built.model
    assert sorted(v.name for v in model.free_RVs) == [
        "beta",
        "shares",
        "total_variance",
        "z_fam",
        "z_id",
    ]
    point = model.initial_point()
    shares = np.array([0.2, 0.3, 0.5])
    # map the shares to the sampler's unconstrained space with the model's own transform
    point["shares_simplex__"] = model.rvs_to_transforms[model["shares"]].forward(shares).eval()
    point["total_variance_log__"] = np.log(4.0)
    values = {n: float(_value_fn(model, n)(point)) for n in ("var_id", "var_fam", "var_residual")}
    # shares are at the sample's kinship scale: c σ²_id with c = mean diag K - mean K
    c = spec.terms[0].variance_weights()[0, 0]
    assert values["var_id"] == pytest.approx(0.2 * 4.0 / c)
    assert values["var_fam"] == pytest.approx(0.3 * 4.0)
    assert values["var_residual"] == pytest.approx(0.5 * 4.0)
    share_fn = _value_fn(model, "variance_share")
    np.testing.assert_allclose(share_fn(point), shares, rtol=1e-10)
    prior = model.compile_logp(vars=[model["shares"]], jacobian=False)(point)
    assert prior == pytest.approx(stats.dirichlet([2, 1, 3]).logpdf(shares), rel=1e-9)
    tv = model.compile_logp(vars=[model["total_variance"]], jacobian=False)(point)
    assert tv == pytest.approx(stats.invgamma(2, scale=10).logpdf(4.0), rel=1e-9)


def _fixed_theta_posterior(n_draws, var_g, var_e, names):
    import arviz as az
    import xarray as xr

    ds = xr.Dataset(
        {
            "var_id": (("chain", "draw"), np.full((1, n_draws), var_g)),
            "var_residual": (("chain", "draw"), np.full((1, n_draws), var_e)),
        },
        coords={"chain": [0], "draw": np.arange(n_draws), "fixed": names},
    )
    return az.InferenceData(posterior=ds)


def _dense_beta_posterior(spec, var_g, var_e):
    """β | y, θ by the textbook Bayesian GLS formulas, dense and uncentred:
    precision Σ_β⁻¹ + Xᵀ V⁻¹ X, mean = precision⁻¹ (Σ_β⁻¹ μ_β + Xᵀ V⁻¹ (y − offset))."""
    mu_b, cov_b, _ = _uncentred_prior(spec)
    V = _dense_cov(spec, var_g, var_e)
    X = spec.X
    prior_prec = np.linalg.inv(cov_b)
    precision = prior_prec + X.T @ np.linalg.solve(V, X)
    cov = np.linalg.inv(precision)
    mean = cov @ (prior_prec @ mu_b + X.T @ np.linalg.solve(V, spec.y - _offset(spec)))
    return mean, cov


@pytest.mark.parametrize(
    "formula", ["y ~ x + env + offset(np.log(expo)) + (1|id)", "y ~ 1 + (1|id)"]
)
def test_fixed_effects_conditional_equals_dense_gls(data, formula):
    """The conditional moments of β | y, θ used after a marginal fit equal the dense formulas
    (after mapping the centred coefficients back with β = T βᶜ)."""
    K, df = data
    spec = bl.specify(formula, df, kinship={"id": K})
    marginal = build(spec).marginal_fixed
    _, _, T = _uncentred_prior(spec)
    for var_g, var_e in [(2.0, 1.5), (0.01, 3.0), (5.0, 0.02)]:
        mean_c, factor_c = fixed_effects_conditional(
            marginal, np.array([var_g]), np.array([var_e]), marginal.rotated_response
        )
        want_mean, want_cov = _dense_beta_posterior(spec, var_g, var_e)
        np.testing.assert_allclose(T @ mean_c[0], want_mean, rtol=1e-8, atol=1e-10)
        cov = T @ factor_c[0] @ factor_c[0].T @ T.T
        np.testing.assert_allclose(cov, want_cov, rtol=1e-8, atol=1e-14)
        np.testing.assert_allclose(marginal.prior.uncentre(mean_c[0]), want_mean, rtol=1e-8)


def test_posthoc_beta_draws_have_conditional_moments(data):
    """add_posthoc_draws: the drawn β at a fixed θ have the dense conditional mean and
    covariance (Monte Carlo bounds), and beta / beta_centered are the same draws."""
    K, df = data
    spec = bl.specify("y ~ x + env + (1|id)", df, kinship={"id": K})
    built = build(spec)
    n_draws, var_g, var_e = 20000, 1.2, 2.5
    idata = _fixed_theta_posterior(n_draws, var_g, var_e, list(spec.fixed_names))
    add_posthoc_draws(built, idata, seed=4)
    beta = idata.posterior["beta"]
    assert beta.dims == ("chain", "draw", "fixed")
    assert list(beta["fixed"].values) == ["Intercept", "x", "env"]
    draws = beta.values[0]
    want_mean, want_cov = _dense_beta_posterior(spec, var_g, var_e)
    se = np.sqrt(np.diag(want_cov) / n_draws)
    assert np.all(np.abs(draws.mean(axis=0) - want_mean) < 4.5 * se)
    sd = np.sqrt(np.diag(want_cov))
    # sample covariance: correlation-scale error ~ 1/sqrt(n) = 0.007
    np.testing.assert_allclose(np.cov(draws.T) / np.outer(sd, sd), want_cov / np.outer(sd, sd),
                               atol=0.035)  # fmt: skip
    centred = idata.posterior["beta_centered"].values[0]
    np.testing.assert_allclose(built.marginal_fixed.prior.uncentre(centred), draws)
    # calling again does not redraw
    before = beta.values.copy()
    add_posthoc_draws(built, idata, seed=5)
    np.testing.assert_array_equal(idata.posterior["beta"].values, before)


def test_prior_predictive_and_prior_beta_draws(data):
    """pm.sample_prior_predictive works on the marginal model; β drawn with
    add_posthoc_draws(group="prior") given each draw's own simulated data has the prior as
    its marginal (it would shrink to the posterior if the observed y were used instead), and
    the simulated Uᵀy have covariance D + A Σ_β Aᵀ averaged over θ."""
    import pymc as pm

    K, df = data
    spec = bl.specify("y ~ x + (1|id)", df, kinship={"id": K})
    built = build(spec)
    n_draws = 4000
    prior = pm.sample_prior_predictive(draws=n_draws, model=built.model, random_seed=3)
    sim = prior.prior_predictive[built.observed_name]
    assert sim.shape == (1, n_draws, spec.n_obs)
    add_posthoc_draws(built, prior, seed=6, group="prior")
    centred = prior.prior["beta_centered"].values[0]
    fe = built.marginal_fixed.prior
    se = fe.sd / np.sqrt(n_draws)
    assert np.all(np.abs(centred.mean(axis=0) - fe.mu) < 4.5 * se)
    np.testing.assert_allclose(centred.std(axis=0), fe.sd, rtol=0.06)
    # each simulated Uᵀy whitened by its own D + B Bᵀ must be N(0, I) (pooled over draws)
    marginal = built.marginal_fixed
    vg = prior.prior["var_id"].values[0]
    ve = prior.prior["var_residual"].values[0]
    B = marginal.scaled_design
    V = np.einsum(
        "ki,ij->kij", vg[:, None] * marginal.eigenvalues + ve[:, None], np.eye(B.shape[0])
    )
    resid = sim.values[0] - marginal.prior_mean
    white = np.linalg.solve(np.linalg.cholesky(V + B @ B.T), resid[..., None])[..., 0]
    assert abs(white.mean()) < 0.01 and white.var() == pytest.approx(1.0, abs=0.015)


def test_rotated_log_likelihood_sums_to_dense_conditional(data):
    K, df = data
    spec = bl.specify("y ~ x + (1|id)", df, kinship={"id": K})
    built = build(spec)
    idata = _fixed_theta_posterior(3, 1.3, 0.8, list(spec.fixed_names))
    add_posthoc_draws(built, idata, seed=1)
    ll = rotated_log_likelihood(built, idata.posterior)
    assert ll.dims == ("chain", "draw", "eigen") and ll.shape == (1, 3, spec.n_obs)
    for k in range(3):
        beta = idata.posterior["beta"].values[0, k]
        want = _dense_logpdf(spec, beta, 1.3, 0.8)
        assert float(ll[0, k].sum()) == pytest.approx(want, rel=1e-10)


def _exact_intercept_posterior(spec, n_grid=300):
    """Posterior mean and sd of β₀ and mean of h² for y ~ 1 + (1|id) by brute force: a grid
    over (log σ_g, log σ_e) with the default priors, β₀ ~ N(m0, s0²) integrated out in
    closed form (K's eigenbasis, Sherman-Morrison); E and Var of β₀ | y, θ in closed form."""
    ps = resolve_priors(spec)
    m0, s0 = (float(p) for p in ps.intercept.params)
    nu_g, a_g = (float(np.ravel(p)[0]) for p in ps.sd["id"].params)
    nu_e, a_e = (float(p) for p in ps.sigma.params)
    s, U = spec.terms[0].kinship.eigenvalues, spec.terms[0].kinship.eigenvectors
    r, a = U.T @ (spec.y - m0), U.T @ np.ones(spec.n_obs)
    sd_y = np.std(spec.y)
    lg, le = np.meshgrid(*[np.linspace(np.log(1e-4 * sd_y), np.log(20 * sd_y), n_grid)] * 2,
                         indexing="ij")  # fmt: skip
    vg, ve = np.exp(2 * lg), np.exp(2 * le)
    D = vg[..., None] * s + ve[..., None]
    aDa, aDr = np.sum(a**2 / D, -1), np.sum(a * r / D, -1)
    loglik = -0.5 * (np.sum(np.log(D), -1) + np.log1p(s0**2 * aDa))
    loglik += -0.5 * (np.sum(r**2 / D, -1) - s0**2 * aDr**2 / (1 + s0**2 * aDa))
    logprior = stats.t(nu_g, scale=a_g).logpdf(np.exp(lg)) + stats.t(nu_e, scale=a_e).logpdf(
        np.exp(le)
    )
    w = np.exp(loglik + logprior + lg + le - np.max(loglik + logprior + lg + le))
    w /= w.sum()
    cond_var = 1.0 / (1.0 / s0**2 + aDa)
    cond_mean = m0 + cond_var * aDr
    mean = float(np.sum(w * cond_mean))
    var = float(np.sum(w * (cond_var + cond_mean**2))) - mean**2
    return {"beta0": mean, "beta0_sd": np.sqrt(var), "h2": float(np.sum(w * vg / (vg + ve)))}


def test_marginal_fit_beta_posterior_matches_exact_integration():
    """End to end (sample → post-hoc β): with a centred GRM at n = 60, the posterior mean and
    sd of β₀ and the mean of h² equal the brute-force integral within Monte Carlo error."""
    import arviz as az

    from bayeslmm.engines.bayes.sampling import sample

    rng = np.random.default_rng(2024)
    n = 60
    ids = [f"m{k:02d}" for k in range(n)]
    snps = rng.binomial(2, 0.4, size=(n, 300)).astype(float)
    Zs = (snps - snps.mean(0)) / snps.std(0)
    K = bl.Kinship(Zs @ Zs.T / 300, ids)  # centred: K·1 = 0
    g = np.linalg.cholesky(K.matrix + 1e-9 * np.eye(n)) @ rng.normal(size=n)
    df = pd.DataFrame({"bp": 100 + 4 * g + 4 * rng.normal(size=n), "id": ids})
    spec = bl.specify("bp ~ 1 + (1|id)", df, kinship={"id": K})
    built = build(spec)
    idata, timing = sample(
        built, draws=1000, tune=1000, chains=2, cores=1, seed=3, sampler="pymc", progressbar=False
    )
    assert "posthoc_s" in timing
    exact = _exact_intercept_posterior(spec)
    post = idata.posterior
    for name, values in [("beta0", post["beta"].sel(fixed="Intercept")), ("h2", post["h2"])]:
        mcse = float(az.mcse(values.drop_vars("fixed", errors="ignore").to_dataset(name="v"))["v"])
        assert abs(float(values.mean()) - exact[name]) < 4 * mcse + 1e-3, name
    beta0 = post["beta"].sel(fixed="Intercept").values
    assert beta0.std() == pytest.approx(exact["beta0_sd"], rel=0.08)


def test_posthoc_beta_conditions_on_given_response(data):
    """add_posthoc_draws(y=...) conditions on that response (data swapped into a compiled
    model): same draws as a model built from it."""
    K, df = data
    priors = {"Intercept": ("normal", 5.0, 10.0), "b_x": ("normal", 0.0, 3.0)}  # not data-scaled
    spec = bl.specify("y ~ x + (1|id)", df, kinship={"id": K}, priors=priors)
    y_new = df["y"].to_numpy() * 0.5 + 3.0
    spec_new = bl.specify("y ~ x + (1|id)", df.assign(y=y_new), kinship={"id": K}, priors=priors)
    names = list(spec.fixed_names)
    swapped = add_posthoc_draws(
        build(spec), _fixed_theta_posterior(50, 1.0, 1.0, names), 2, y=y_new
    )
    fresh = add_posthoc_draws(build(spec_new), _fixed_theta_posterior(50, 1.0, 1.0, names), 2)
    original = add_posthoc_draws(build(spec), _fixed_theta_posterior(50, 1.0, 1.0, names), 2)
    np.testing.assert_allclose(swapped.posterior["beta"], fresh.posterior["beta"], rtol=1e-10)
    assert not np.allclose(original.posterior["beta"], fresh.posterior["beta"])


def test_spectral_basis_reports_the_kinships_eigh_seconds(data):
    K, _ = data
    rng = np.random.default_rng(2)
    df = pd.DataFrame({"y": rng.normal(size=K.n), "id": list(K.ids)})
    spec = bl.specify("y ~ 1 + (1|id)", df, kinship={"id": K})
    basis = spectral_basis(spec.terms[0])
    # the Kinship's PSD check computed the decomposition; its seconds are reported, not ~0
    assert K.__dict__["eigh_seconds"] > 0.0
    assert basis.eigh_s == K.__dict__["eigh_seconds"]


def _marginal_model(n, seed, K=None):
    rng = np.random.default_rng(seed)
    ids = [f"i{k}" for k in range(n)]
    if K is None:
        W = rng.normal(size=(n, 2 * n))
        K = bl.Kinship(W @ W.T / (2 * n), ids)
    df = pd.DataFrame({"y": rng.normal(3.0, 2.0, n), "x": rng.normal(size=n), "id": ids})
    return build(bl.specify("y ~ 1 + x + (1 | id)", df, kinship={"id": K}))


def test_spectral_data_are_shared_so_one_compiled_logp_serves_any_data_set():
    import pytensor
    from pytensor.graph.basic import Constant
    from pytensor.graph.traversal import ancestors

    small, large = _marginal_model(12, 1), _marginal_model(17, 2)
    model = small.model
    # the likelihood of Uᵀy (the priors' scales follow each data set's sd of y)
    logp = model.logp(vars=model.observed_RVs)
    big_constants = [
        v for v in ancestors([logp]) if isinstance(v, Constant) and np.asarray(v.data).size >= 12
    ]
    assert big_constants == []  # data as constants would key the compile cache on their values
    # nor the data-scaled prior parameters (HalfStudentT(3, 2.5 sd y)) anywhere in the model
    scale = small.priors.sigma.params[1]
    scalars = [
        float(v.data)
        for v in ancestors([model.logp()])
        if isinstance(v, Constant) and np.asarray(v.data).size == 1
    ]
    assert not np.isclose(scalars, scale).any()
    fn = pytensor.function(model.value_vars, logp)
    point = {"sd_id_log__": np.log(1.3), "sigma_log__": np.log(0.8)}
    own = fn(*[point[v.name] for v in model.value_vars])
    # load the other data set (another n) into the shared variables of the same function
    shared_small = {
        v.name: v for v in ancestors([logp]) if isinstance(v, pytensor.compile.SharedVariable)
    }
    shared_large = {
        v.name: v
        for v in ancestors([large.model.logp(vars=large.model.observed_RVs)])
        if isinstance(v, pytensor.compile.SharedVariable)
    }
    assert set(shared_small) == set(shared_large) and len(shared_small) == 4
    for name, var in shared_small.items():
        var.set_value(shared_large[name].get_value())
    swapped = fn(*[point[v.name] for v in model.value_vars])
    expected = large.model.compile_logp(vars=large.model.observed_RVs)(point)
    assert swapped == pytest.approx(expected, rel=1e-12)
    assert not np.isclose(own, swapped)
