"""The Bayesian animal model on a sparse pedigree, against dense computations.

References are independent of the code under test: the dense relationship matrix of
``pedigree_relationship(ped)`` (the tabular method, not Henderson's factors), dense inverses
and scipy's multivariate normal, the dense-kinship spectral density (whose priors are
tested against PyMC in test_spectral_density.py) and brute-force quadrature of it.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import bayeslmm as bl
from bayeslmm.engines.bayes import build
from bayeslmm.engines.bayes.pedigree_density import (
    mendelian_backward,
    mendelian_forward,
    parents_first,
    pedigree_density,
)
from bayeslmm.engines.bayes.pedigree_marginal import (
    _normal_from_factor,
    draw_posterior,
    pedigree_marginal,
)
from bayeslmm.engines.bayes.spectral_density import spectral_density
from bayeslmm.errors import SpecificationError
from bayeslmm.kinship.pedigree_inverse import PedigreeDensifyWarning

#: Mrode (2005) Example 2.1 extended: inbreeding (5, 6), a selfed animal (7), unknown
#: parents (4, 8), an offspring of two inbred parents (9); rows deliberately unsorted
MRODE = pd.DataFrame(
    {
        "id": [9, 6, 1, 7, 3, 2, 5, 4, 8],
        "sire": [5, 5, 0, 3, 1, 0, 4, 1, 0],
        "dam": [6, 2, 0, 3, 2, 0, 3, 0, 7],
    }
)


def _random_pedigree(rng, n=120, founders=12, unknown=0.1):
    sire = np.r_[np.zeros(founders, int), np.zeros(n - founders, int)]
    dam = sire.copy()
    for k in range(founders, n):
        # parents among earlier animals (overlapping generations: inbreeding accrues)
        sire[k], dam[k] = rng.integers(1, k + 1, 2)
    sire[rng.random(n) < unknown] = 0
    dam[rng.random(n) < unknown] = 0
    order = rng.permutation(n)  # unsorted rows
    return pd.DataFrame({"id": np.arange(1, n + 1), "sire": sire, "dam": dam}).iloc[order]


def _dense_A(ped, ids):
    K = bl.pedigree_relationship(ped)
    pos = {i: k for k, i in enumerate(K.ids)}
    idx = [pos[i] for i in ids]
    return np.asarray(K.matrix)[np.ix_(idx, idx)]


@pytest.mark.parametrize("which", ["mrode", "random"])
def test_mendelian_map_has_covariance_A(which):
    ped = MRODE if which == "mrode" else _random_pedigree(np.random.default_rng(3))
    A = bl.pedigree_relationship(ped, sparse=True)
    order, P = parents_first(A.inverse_factor)
    # parents before offspring: P strictly lower triangular
    assert P.nnz and np.all(P.tocoo().col < P.tocoo().row)
    N = A.n_pedigree
    sqrt_d = np.sqrt(A.mendelian_variances[order])
    M = np.column_stack(
        [mendelian_forward(sqrt_d * e, P.indptr, P.indices, P.data) for e in np.eye(N)]
    )
    dense = _dense_A(ped, [A.pedigree_ids[k] for k in order])
    assert np.allclose(M @ M.T, dense, atol=1e-12, rtol=0)
    if which == "mrode":
        assert A.inbreeding.max() > 0.2  # the selfed animal: F = ½(1 + F_parent)


def test_backward_pass_is_the_adjoint():
    A = bl.pedigree_relationship(_random_pedigree(np.random.default_rng(4)), sparse=True)
    _, P = parents_first(A.inverse_factor)
    rng = np.random.default_rng(5)
    v, g = rng.normal(size=(2, A.n_pedigree))
    forward = mendelian_forward(v, P.indptr, P.indices, P.data)
    backward = mendelian_backward(g, P.indptr, P.indices, P.data)
    assert np.isclose(g @ forward, backward @ v, rtol=1e-12)
    L = np.linalg.inv(np.eye(A.n_pedigree) - P.toarray())
    assert np.allclose(forward, L @ v) and np.allclose(backward, L.T @ g)


@pytest.fixture(scope="module")
def animal_data():
    """A 150-animal pedigree with records on 110 of them (some twice), a covariate."""
    rng = np.random.default_rng(7)
    ped = _random_pedigree(rng, n=150, founders=15)
    A = bl.pedigree_relationship(ped, sparse=True)
    recorded = rng.choice(A.pedigree_ids, size=110, replace=False)
    ids = np.r_[recorded, recorded[:20]]
    values = dict(zip(A.pedigree_ids, rng.normal(size=A.n_pedigree), strict=True))
    df = pd.DataFrame({"id": ids, "x": rng.normal(size=ids.size)})
    df["y"] = 3.0 + 0.5 * df["x"] + np.array([values[i] for i in ids]) + rng.normal(size=ids.size)
    return ped, A, df


def _built_pair(animal_data, formula="y ~ x + (1 | id)", priors=None):
    _, A, df = animal_data
    sparse = build(bl.specify(formula, df, kinship={"id": A}, priors=priors))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PedigreeDensifyWarning)
        dense = build(bl.specify(formula, df, kinship={"id": A.to_dense()}, priors=priors))
    return sparse, dense


PRIORS = [
    None,
    {"h2": ("beta", 2.0, 3.0), "total_variance": ("halfnormal", 5.0)},
    {"sd_id": ("halfnormal", 2.0), "sigma": ("exponential", 1.0)},
]


@pytest.mark.parametrize("priors", PRIORS)
@pytest.mark.parametrize("formula", ["y ~ x + (1 | id)", "y ~ 0 + (1 | id)"])
def test_nuts_density_equals_the_dense_joint_density(animal_data, priors, formula):
    sparse, dense = _built_pair(animal_data, formula, priors)
    assert sparse.strategy == "sparse-pedigree" and dense.strategy == "spectral"
    density, reference = pedigree_density(sparse), spectral_density(dense)
    _, A, df = animal_data
    spec = sparse.spec
    term = spec.terms[0]
    ids = list(A.pedigree_ids)
    order, _ = parents_first(A.inverse_factor)
    # the map written densely: u = σ_a (I − P)⁻¹ D^½ z, in parents-first order
    T = A.inverse_factor.toarray()[np.ix_(order, order)]
    root = np.linalg.inv(T) * np.sqrt(A.mendelian_variances[order])
    pos = {ids[k]: r for r, k in enumerate(order)}
    Z = np.zeros((spec.n_obs, A.n_pedigree))
    Z[np.arange(spec.n_obs), [pos[term.levels[j]] for j in term.index]] = 1.0
    rng = np.random.default_rng(8)
    for _ in range(4):
        t = rng.normal(size=2) * [1.0, 0.5] + [0.0, np.log(np.var(df["y"]))]
        z = rng.normal(size=A.n_pedigree)
        h = 1.0 / (1.0 + np.exp(-t[0]))
        total = np.exp(t[1])
        scale = density.variance_scale
        var_a, var_e = scale * h * total, (1.0 - h) * total
        # dense: log p(y | z, θ) with β integrated + log N(z) + log prior(t), where the prior
        # is the spectral density minus its (dense) marginal likelihood
        fe_mu, fe_sd, Xc = _fixed(sparse)
        u = np.sqrt(var_a) * root @ z
        mean = Xc @ fe_mu + Z @ u
        cov = var_e * np.eye(spec.n_obs) + (Xc * fe_sd**2) @ Xc.T
        cond = stats.multivariate_normal(mean, cov).logpdf(spec.y)
        marginal_cov = cov + var_a * Z @ (root @ root.T) @ Z.T
        marg = stats.multivariate_normal(Xc @ fe_mu, marginal_cov).logpdf(spec.y)
        prior = reference.logp(t)[0] - marg
        expected = cond + stats.norm.logpdf(z).sum() + prior
        value, _ = density.logp(np.r_[t, z])
        assert np.isclose(value, expected, rtol=1e-10, atol=1e-8)


def _fixed(built):
    from bayeslmm.engines.bayes.fixed_effects import fixed_effects_prior

    fe = fixed_effects_prior(built.spec, built.priors)
    if fe is None:
        return np.zeros(0), np.zeros(0), np.zeros((built.spec.n_obs, 0))
    return np.asarray(fe.mu, float), np.asarray(fe.sd, float), fe.design


def test_nuts_density_gradient_matches_finite_differences(animal_data):
    sparse, _ = _built_pair(animal_data, priors={"h2": ("beta", 2.0, 3.0)})
    density = pedigree_density(sparse)
    rng = np.random.default_rng(9)
    x = density.initial_point(3)
    x[2:] = rng.normal(size=density.n_animals)
    _, grad = density.logp(x)
    eps = 1e-6
    for k in [0, 1, 2, 5, 40, density.ndim - 1]:
        step = np.zeros_like(x)
        step[k] = eps
        numeric = (density.logp(x + step)[0] - density.logp(x - step)[0]) / (2 * eps)
        assert np.isclose(grad[k], numeric, rtol=1e-5, atol=1e-5), k


@pytest.mark.parametrize("priors", PRIORS)
def test_marginal_posterior_density_equals_the_dense_one(animal_data, priors):
    sparse, dense = _built_pair(animal_data, priors=priors)
    marginal, reference = pedigree_marginal(sparse), spectral_density(dense)
    rng = np.random.default_rng(10)
    for _ in range(4):
        t = rng.normal(size=2) * [1.5, 0.5] + [0.0, np.log(2.0)]
        h = 1.0 / (1.0 + np.exp(-t[0]))
        values = marginal.node(t[0])
        mine = marginal.loglik(values, np.array([(1 - h) * np.exp(t[1])]))[0]
        mine += marginal.log_prior(t[0], np.array([t[1]]))[0]
        assert np.isclose(mine, reference.logp(t)[0], rtol=1e-10, atol=1e-8)


def _brute_force(reference, t1, t2):
    grid = np.array([[reference.logp(np.array([a, b]))[0] for b in t2] for a in t1])
    w = np.exp(grid - grid.max())
    return w / w.sum()


def test_marginal_draws_match_brute_force_quadrature(animal_data):
    sparse, dense = _built_pair(animal_data)
    marginal, reference = pedigree_marginal(sparse), spectral_density(dense)
    out = draw_posterior(marginal, 20_000, np.random.default_rng(11))
    t = out["t"]
    # the reference: the dense density on a wide, fine grid (the tails of logit h are long)
    t1 = np.linspace(-14.0, 14.0, 400)
    t2 = np.linspace(t[:, 1].min() - 1.0, t[:, 1].max() + 1.0, 150)
    w = _brute_force(reference, t1, t2)
    assert w[[0, -1]].sum() + w[:, [0, -1]].sum() < 1e-6  # the grid holds the mass
    for draws, ref in ((t[:, 0], t1), (t[:, 1], t2)):
        axis = 1 if ref is t1 else 0
        weights = w.sum(axis=axis)
        mean = weights @ ref
        sd = np.sqrt(weights @ (ref - mean) ** 2)
        assert abs(draws.mean() - mean) < 4 * sd / np.sqrt(draws.size)
        assert abs(draws.std() / sd - 1.0) < 0.03


@pytest.mark.parametrize("backend", ["cholmod", "superlu"])
def test_normal_draws_from_the_factor_have_covariance_C_inverse(animal_data, backend, monkeypatch):
    if backend == "superlu":
        monkeypatch.setitem(sys.modules, "sksparse", None)
        monkeypatch.setitem(sys.modules, "sksparse.cholmod", None)
    else:
        pytest.importorskip("sksparse.cholmod")
    sparse, _ = _built_pair(animal_data)
    marginal = pedigree_marginal(sparse)
    assert marginal.chol.backend == backend
    C = marginal._C(1.7)
    marginal.chol.factor(C)
    N = marginal.N
    X = _normal_from_factor(marginal.chol, np.eye(N))
    assert np.allclose(X @ X.T, np.linalg.inv(C.toarray()), atol=1e-10)


def test_fit_reports_strategy_heritability_and_breeding_values(animal_data):
    ped, A, df = animal_data
    model = bl.LMM("y ~ x + (1 | id)", df, kinship={"id": A})
    fit = model.fit(draws=100, chains=2, seed=1, progressbar=False, verbose=False)
    assert fit.strategy == "sparse-pedigree" and fit.sampler == "exact"
    h2 = fit.heritability()
    assert 0.0 < h2.loc["h2", "mean"] < 1.0 and h2.loc["h2", "ess_bulk"] > 150
    assert list(fit.fixed_effects().index) == ["Intercept", "x"]
    summary = fit.summary()
    assert summary["strategy"] == "sparse-pedigree"
    # replicated data before any breeding values are drawn: u drawn for them
    y_rep = fit.posterior_predictive(seed=2)
    assert y_rep.shape == (2, 100, fit.spec.n_obs) and "u_id" not in fit.posterior
    assert abs(y_rep.mean() - df["y"].mean()) < 0.5
    # breeding values: the posterior mean against the dense BLUP averaged over the draws
    bv = fit.breeding_values()
    assert list(bv.index) == list(fit.spec.terms[0].levels)
    post = fit.posterior
    var_a = post["var_id"].values.ravel()
    var_e = post["var_residual"].values.ravel()
    beta = post["beta"].values.reshape(-1, 2)
    spec = fit.spec
    term = spec.terms[0]
    K = _dense_A(ped, list(term.levels))
    Z = np.zeros((spec.n_obs, term.n_levels))
    Z[np.arange(spec.n_obs), term.index] = 1.0
    blup = np.zeros(term.n_levels)
    for va, ve, b in zip(var_a, var_e, beta, strict=True):
        V = va * Z @ K @ Z.T + ve * np.eye(spec.n_obs)
        blup += va * K @ Z.T @ np.linalg.solve(V, spec.y - spec.X @ b)
    blup /= var_a.size
    # the draws' mean = Rao–Blackwellised mean + noise of sd/√draws per animal
    se = bv["sd"].to_numpy() / np.sqrt(var_a.size)
    assert np.all(np.abs(bv["mean"].to_numpy() - blup) < 5 * se)
    assert np.all(bv["sd"] > 0)


def test_nuts_strategy_samples_the_same_model(animal_data):
    _, A, df = animal_data
    fit = bl.LMM("y ~ x + (1 | id)", df, kinship={"id": A}).fit(
        draws=100, tune=100, chains=1, seed=1, progressbar=False, verbose=False,
        strategy="sparse-pedigree-nuts",
    )  # fmt: skip
    assert fit.strategy == "sparse-pedigree-nuts"
    assert {"h2", "beta", "u_id", "var_id", "var_residual"} <= set(fit.posterior)
    assert fit.posterior["u_id"].shape == (1, 100, fit.spec.terms[0].n_levels, 1)


def test_unsupported_models_are_refused_with_what_is_supported(animal_data):
    _, A, df = animal_data
    df = df.assign(b=(df["y"] > df["y"].median()).astype(int), g=np.arange(len(df)) % 5)
    with pytest.raises(SpecificationError, match="Gaussian animal model.*sparse-pedigree-nuts"):
        bl.LMM("b ~ 1 + (1 | id)", df, kinship={"id": A}, family="bernoulli").build(
            strategy="sparse-pedigree"
        )
    with pytest.raises(SpecificationError, match="2 random terms"):
        bl.LMM("y ~ 1 + (1 | id) + (1 | g)", df, kinship={"id": A}).build(
            strategy="sparse-pedigree"
        )
    built = build(bl.specify("y ~ 1 + (1 | id)", df, kinship={"id": A}))
    with pytest.raises(SpecificationError, match="no PyMC model"):
        built.model  # noqa: B018
    with pytest.raises(SpecificationError, match="log-likelihoods"):
        bl.LMM("y ~ 1 + (1 | id)", df, kinship={"id": A}).fit(
            draws=10, chains=1, log_likelihood=True, progressbar=False
        )


@pytest.mark.slow
def test_posterior_equals_the_dense_kinship_path_within_mc_error():
    """~300 animals: the sparse-pedigree draws against NUTS on the dense A (spectral)."""
    rng = np.random.default_rng(21)
    ped = _random_pedigree(rng, n=300, founders=30)
    A = bl.pedigree_relationship(ped, sparse=True)
    recorded = rng.choice(A.pedigree_ids, size=240, replace=False)
    values = dict(zip(A.pedigree_ids, rng.normal(size=A.n_pedigree) * 0.8, strict=True))
    df = pd.DataFrame({"id": recorded, "x": rng.normal(size=recorded.size)})
    df["y"] = 1.0 + 0.3 * df["x"] + np.array([values[i] for i in recorded])
    df["y"] += rng.normal(size=len(df))
    kw = dict(draws=1000, chains=4, seed=3, progressbar=False, verbose=False)
    sparse = bl.LMM("y ~ x + (1 | id)", df, kinship={"id": A}).fit(**kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PedigreeDensifyWarning)
        dense = bl.LMM("y ~ x + (1 | id)", df, kinship={"id": A.to_dense()}).fit(**kw)
    assert sparse.strategy == "sparse-pedigree" and dense.strategy == "spectral"
    import arviz as az

    for name in ("h2", "var_id", "var_residual", "beta"):
        a, b = sparse.posterior[name], dense.posterior[name]
        se = np.sqrt(
            (a.std(("chain", "draw")) ** 2 / az.ess(sparse.posterior, var_names=[name])[name])
            + (b.std(("chain", "draw")) ** 2 / az.ess(dense.posterior, var_names=[name])[name])
        )
        diff = np.abs(a.mean(("chain", "draw")) - b.mean(("chain", "draw")))
        assert np.all(diff < 4 * se), name
        ratio = a.std(("chain", "draw")) / b.std(("chain", "draw"))
        assert np.all(np.abs(ratio - 1.0) < 0.1), name


def test_posterior_breeding_values_of_any_animal_match_dense_blups(animal_data):
    from bayeslmm.engines.bayes.pedigree import posterior_breeding_values

    ped, A, df = animal_data
    fit = bl.LMM("y ~ x + (1 | id)", df, kinship={"id": A}).fit(
        draws=60, chains=2, seed=4, progressbar=False, verbose=False
    )
    unrecorded = sorted(set(A.pedigree_ids) - set(df["id"]))[:5]
    ids = unrecorded + list(df["id"].iloc[:5])
    table = posterior_breeding_values(fit, ids)
    assert list(table.columns) == ["ebv", "sd", "ci_low", "ci_high", "accuracy", "F"]
    # dense reference: E[u | y, β, θ] = σ_a² A_{·,rec} Zᵀ V⁻¹ (y − Xβ) over the whole pedigree
    spec = fit.spec
    term = spec.terms[0]
    full = _dense_A(ped, list(A.pedigree_ids))
    pos = {i: k for k, i in enumerate(A.pedigree_ids)}
    Z = np.zeros((spec.n_obs, A.n_pedigree))
    Z[np.arange(spec.n_obs), [pos[term.levels[j]] for j in term.index]] = 1.0
    post = fit.posterior
    mean = np.zeros(len(ids))
    rows = [pos[i] for i in ids]
    for va, ve, b in zip(
        post["var_id"].values.ravel(),
        post["var_residual"].values.ravel(),
        post["beta"].values.reshape(-1, 2),
        strict=True,
    ):
        V = va * Z @ full @ Z.T + ve * np.eye(spec.n_obs)
        mean += va * full[rows] @ Z.T @ np.linalg.solve(V, spec.y - spec.X @ b)
    mean /= post["var_id"].size
    se = table["sd"].to_numpy() / np.sqrt(post["var_id"].size)
    assert np.all(np.abs(table["ebv"].to_numpy() - mean) < 5 * se)
    assert np.all(table["ci_low"] < table["ebv"]) and np.all(table["ebv"] < table["ci_high"])
    assert np.allclose(table["F"], A.inbreeding[rows])


GLMMS = [
    ("bernoulli", {}),
    ("poisson", {"sd_olre": ("halfnormal", 0.7)}),
    ("binomial", {}),
]


@pytest.mark.parametrize(("family", "extra"), GLMMS)
def test_glmm_density_equals_the_dense_joint_density(animal_data, family, extra):
    from bayeslmm.engines.bayes.pedigree_density import pedigree_glmm_density

    _, A, df = animal_data
    rng = np.random.default_rng(12)
    df = df.assign(t=rng.integers(1, 6, len(df)))
    eta0 = 0.3 * df["x"].to_numpy() + 0.5 * rng.normal(size=len(df))
    if family == "poisson":
        df["c"] = rng.poisson(np.exp(0.5 + eta0))
    elif family == "binomial":
        df["c"] = rng.binomial(df["t"], 1 / (1 + np.exp(-eta0)))
    else:
        df["c"] = (eta0 + rng.logistic(size=len(df)) > 0).astype(int)
    priors = {"sd_id": ("halfnormal", 1.5), "Intercept": ("normal", 0.2, 2.0), **extra}
    kw = {"trials": "t"} if family == "binomial" else {}
    spec = bl.specify("c ~ x + (1 | id)", df, kinship={"id": A}, family=family, priors=priors, **kw)
    built = build(spec)
    assert built.strategy == "sparse-pedigree-nuts"
    density = pedigree_glmm_density(built)
    assert density.olre == (family == "poisson")
    order, _ = parents_first(A.inverse_factor)
    T = A.inverse_factor.toarray()[np.ix_(order, order)]
    root = np.linalg.inv(T) * np.sqrt(A.mendelian_variances[order])
    ids = list(A.pedigree_ids)
    pos = {ids[k]: r for r, k in enumerate(order)}
    term = spec.terms[0]
    Z = np.zeros((spec.n_obs, A.n_pedigree))
    Z[np.arange(spec.n_obs), [pos[term.levels[j]] for j in term.index]] = 1.0
    fe_mu, fe_sd, Xc = _fixed(built)
    y = np.asarray(spec.y)
    for _ in range(3):
        x = density.initial_point(int(rng.integers(100)))
        x[density.n_hyper :] = rng.normal(size=density.ndim - density.n_hyper)
        p = density.n_fixed
        beta, sd_a = x[:p], np.exp(x[p])
        z = x[density.n_hyper : density.n_hyper + A.n_pedigree]
        eta = Xc @ beta + Z @ (sd_a * root @ z)
        expected = stats.norm.logpdf(z).sum() + stats.norm.logpdf(beta, fe_mu, fe_sd).sum()
        expected += stats.halfnorm(scale=1.5).logpdf(sd_a) + x[p]  # + log-Jacobian
        if family == "poisson":
            sd_o = np.exp(x[p + 1])
            z_o = x[density.n_hyper + A.n_pedigree :]
            eta = eta + sd_o * z_o
            expected += stats.norm.logpdf(z_o).sum()
            expected += stats.halfnorm(scale=0.7).logpdf(sd_o) + x[p + 1]
            expected += stats.poisson.logpmf(y, np.exp(eta)).sum()
        elif family == "binomial":
            expected += stats.binom.logpmf(y, df["t"], 1 / (1 + np.exp(-eta))).sum()
        else:
            expected += stats.bernoulli.logpmf(y, 1 / (1 + np.exp(-eta))).sum()
        value, grad = density.logp(x)
        assert np.isclose(value, expected, rtol=1e-10, atol=1e-8)
        eps = 1e-6
        for k in [0, 1, p, density.n_hyper - 1, density.n_hyper + 3, density.ndim - 1]:
            step = np.zeros_like(x)
            step[k] = eps
            numeric = (density.logp(x + step)[0] - density.logp(x - step)[0]) / (2 * eps)
            assert np.isclose(grad[k], numeric, rtol=1e-5, atol=1e-5), k


def test_glmm_fit_on_a_sparse_pedigree(animal_data):
    _, A, df = animal_data
    df = df.assign(b=(df["y"] > df["y"].median()).astype(int))
    fit = bl.LMM("b ~ x + (1 | id)", df, kinship={"id": A}, family="bernoulli").fit(
        draws=100, tune=100, chains=1, seed=1, progressbar=False, verbose=False
    )
    assert fit.strategy == "sparse-pedigree-nuts"
    assert {"h2", "beta", "beta_centered", "u_id", "var_id", "var_residual"} <= set(fit.posterior)
    assert np.allclose(fit.posterior["var_residual"], np.pi**2 / 3)
    assert fit.breeding_values().shape[0] == fit.spec.terms[0].n_levels
