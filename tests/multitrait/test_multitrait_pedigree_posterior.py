"""The multi-trait posterior on a sparse pedigree (every breeding value and β integrated out)
against dense computations with A itself.

The pedigrees have inbreeding, unknown parents, unsorted rows and ancestors without records;
about 20 % of the trait values are missing. References: the dense multi-trait NUTS density
(:class:`MultiTraitDensity`, eigendecomposition of the dense A, β integrated by Woodbury) on
complete data; on missing data the multivariate normal density of the observed entries with
the stacked V = Σ_G ⊗ A + Σ_E ⊗ I + B D² Bᵀ (scipy), plus the dense density's priors and
Jacobian, and its finite-difference gradient; the dense NUTS posterior (slow test).
"""

from __future__ import annotations

import arviz as az
import numpy as np
import pandas as pd
import pytest
from scipy import stats

import bayeslmm as bl
import bayeslmm.multitrait_model as multitrait_model
from bayeslmm.engines.bayes import multitrait_pedigree as mtp
from bayeslmm.engines.bayes.multitrait_density import (
    matrix_log_prior,
    multitrait_density,
    resolve_multitrait_priors,
)
from bayeslmm.engines.multitrait_gaussian import cholesky_from_params
from bayeslmm.errors import SpecificationError
from bayeslmm.multitrait_spec import specify_multitrait

FORMULA = "mvbind(y1, y2) ~ x + (1 | id)"
WINDOW = 100  # each animal's parents among the 100 before it


@pytest.fixture(scope="module")
def small(pedigree_cases) -> tuple[pd.DataFrame, pd.DataFrame, bl.Kinship]:
    return pedigree_cases(np.random.default_rng(31), 160, 100, window=WINDOW, missing=0.2)


def dense_log_posterior(spec, A_dense: bl.Kinship, x: np.ndarray) -> float:
    """log N(y_obs; B μ, Σ_G ⊗ A + Σ_E ⊗ I + B D² Bᵀ on the observed entries) plus the
    dense density's priors and Jacobian, all with dense scipy."""
    Y = np.asarray(spec.Y, dtype=float)
    X = np.asarray(spec.X, dtype=float)
    n, t = Y.shape
    Xc = X - np.r_[0.0, X[:, 1:].mean(axis=0)]
    priors = resolve_multitrait_priors(spec, Xc, True)
    scale = np.nanstd(Y, axis=0)
    k = t + t * (t - 1) // 2
    LG = scale[:, None] * cholesky_from_params(x[:k], t)
    LE = scale[:, None] * cholesky_from_params(x[k:], t)
    index = pd.Index(A_dense.ids).get_indexer(list(spec.ids))
    A = A_dense.matrix[np.ix_(index, index)]
    V = np.kron(LG @ LG.T, A) + np.kron(LE @ LE.T, np.eye(n))  # trait-major stacking
    B = np.kron(np.eye(t), Xc)  # column (a, k) at a p + k
    V += B @ np.diag(priors.beta_sd.ravel() ** 2) @ B.T
    mean = B @ priors.beta_mean.ravel()
    observed = ~np.isnan(Y.T.ravel())
    value = stats.multivariate_normal(mean[observed], V[np.ix_(observed, observed)]).logpdf(
        Y.T.ravel()[observed]
    )
    gp = tuple(p.log_density_of_log() for p in priors.genetic_sd)
    ep = tuple(p.log_density_of_log() for p in priors.residual_sd)
    value += matrix_log_prior(LG, gp, priors.genetic_eta)[0]
    value += matrix_log_prior(LE, ep, priors.residual_eta)[0]
    return float(value)


def test_log_posterior_equals_the_dense_stacked_normal_with_missing_values(small) -> None:
    ped, df, A_dense = small
    assert df[["y1", "y2"]].isna().to_numpy().mean() > 0.1
    spec = specify_multitrait(
        FORMULA, df, kinship={"id": bl.pedigree_relationship(ped, sparse=True)}
    )
    density = mtp.pedigree_multitrait_density(spec)
    assert density.equations.N == len(ped) > spec.n  # ancestors without records included
    rng = np.random.default_rng(3)
    for _ in range(5):
        x = density.centre_point() + rng.uniform(-0.8, 0.8, size=density.ndim)
        value, grad = density.logp(x)
        reference = dense_log_posterior(spec, A_dense, x)
        assert value == pytest.approx(reference, abs=1e-8, rel=0)
        h = 1e-5
        fd = np.array(
            [
                (
                    dense_log_posterior(spec, A_dense, x + h * e)
                    - dense_log_posterior(spec, A_dense, x - h * e)
                )
                / (2 * h)
                for e in np.eye(x.size)
            ]
        )
        np.testing.assert_allclose(grad, fd, atol=2e-5, rtol=1e-6)


def test_log_posterior_equals_the_dense_nuts_density_on_complete_records(small) -> None:
    ped, df, A_dense = small
    rng = np.random.default_rng(8)
    complete = df.assign(
        y1=df["y1"].fillna(pd.Series(1.0 + rng.normal(size=len(df)), index=df.index)),
        y2=df["y2"].fillna(pd.Series(2.0 + rng.normal(size=len(df)), index=df.index)),
    )
    assert not complete[["y1", "y2"]].isna().any().any()
    sparse_spec = specify_multitrait(
        FORMULA, complete, kinship={"id": bl.pedigree_relationship(ped, sparse=True)}
    )
    dense_spec = specify_multitrait(FORMULA, complete, kinship={"id": A_dense})
    sparse, dense = (
        mtp.pedigree_multitrait_density(sparse_spec),
        multitrait_density(dense_spec),
    )
    assert sparse.ndim == dense.ndim == 6
    for _ in range(5):
        x = sparse.centre_point() + rng.uniform(-1.0, 1.0, size=6)
        value, grad = sparse.logp(x)
        ref_value, ref_grad = dense.logp(x)
        assert value == pytest.approx(ref_value, abs=1e-8, rel=0)
        np.testing.assert_allclose(grad, ref_grad, atol=1e-8, rtol=0)


def test_conditional_beta_draws_match_the_dense_conditional_posterior(small) -> None:
    """β | y, Σ from the equations: mean and covariance against dense GLS with its prior."""
    ped, df, A_dense = small
    spec = specify_multitrait(
        FORMULA, df, kinship={"id": bl.pedigree_relationship(ped, sparse=True)}
    )
    density = mtp.pedigree_multitrait_density(spec)
    x = density.centre_point() + 0.3
    _, _, at = density.log_posterior(x)
    draws = np.stack([density.beta_draw(at, np.random.default_rng(s)).ravel() for s in range(4000)])
    # dense: β (centred covariates) | y ~ N(m, P⁻¹), P = Bᵀ V⁻¹ B + D⁻², m = P⁻¹ (Bᵀ V⁻¹ y + D⁻² μ)
    Y = np.asarray(spec.Y, dtype=float)
    X = np.asarray(spec.X, dtype=float)
    n, t = Y.shape
    xbar = X[:, 1:].mean(axis=0)
    Xc = X - np.r_[0.0, xbar]
    priors = resolve_multitrait_priors(spec, Xc, True)
    G = np.outer(density.scale, density.scale) * (lambda L: L @ L.T)(density.factors(x)[0])
    E = np.outer(density.scale, density.scale) * (lambda L: L @ L.T)(density.factors(x)[1])
    index = pd.Index(A_dense.ids).get_indexer(list(spec.ids))
    A = A_dense.matrix[np.ix_(index, index)]
    obs = ~np.isnan(Y.T.ravel())
    V = (np.kron(G, A) + np.kron(E, np.eye(n)))[np.ix_(obs, obs)]
    B = np.kron(np.eye(t), Xc)[obs]
    Dinv2 = np.diag(priors.beta_sd.ravel() ** -2.0)
    P = B.T @ np.linalg.solve(V, B) + Dinv2
    m = np.linalg.solve(
        P, B.T @ np.linalg.solve(V, Y.T.ravel()[obs]) + Dinv2 @ priors.beta_mean.ravel()
    )
    # to the formula's intercept: β₀ = β₀c − β₁ x̄
    T = np.eye(t * 2)
    for a in range(t):
        T[2 * a, 2 * a + 1] = -xbar[0]
    mean, cov = T @ m, T @ np.linalg.inv(P) @ T.T
    np.testing.assert_allclose(density.beta_draw(at, None).ravel(), mean, atol=1e-8)
    se = np.sqrt(np.diag(cov) / draws.shape[0])
    assert np.all(np.abs(draws.mean(axis=0) - mean) < 4.5 * se)
    np.testing.assert_allclose(np.cov(draws.T), cov, rtol=0.12, atol=0.02 * np.max(np.diag(cov)))


def test_systematic_resampling_keeps_each_proposal_floor_or_ceil_times() -> None:
    rng = np.random.default_rng(0)
    weights = rng.gamma(2.0, size=500)
    weights /= weights.sum()
    index = mtp._systematic_resample(weights, 800, rng)
    counts = np.bincount(index, minlength=500)
    assert counts.sum() == 800
    assert np.all(counts >= np.floor(800 * weights) - 1e-9)
    assert np.all(counts <= np.ceil(800 * weights) + 1e-9)


def test_posterior_mode_has_zero_gradient_and_the_hessian_matches_differences(small) -> None:
    ped, df, _ = small
    spec = specify_multitrait(
        FORMULA, df, kinship={"id": bl.pedigree_relationship(ped, sparse=True)}
    )
    density = mtp.pedigree_multitrait_density(spec)
    mode, H, converged = mtp.posterior_mode(density)
    assert converged
    h = 1e-3
    value0 = density.logp(mode)[0]
    for j in range(mode.size):  # second differences of the value: the Hessian's diagonal
        e = np.zeros(mode.size)
        e[j] = h
        second = (density.logp(mode + e)[0] - 2 * value0 + density.logp(mode - e)[0]) / h**2
        assert -second == pytest.approx(H[j, j], rel=1e-3)
    assert np.all(np.linalg.eigvalsh(H) > 0)


def test_importance_fit_on_a_sparse_pedigree(small) -> None:
    ped, df, _ = small
    A = bl.pedigree_relationship(ped, sparse=True)
    fit = bl.LMM(FORMULA, df, kinship={"id": A}).fit(
        sampler="importance", draws=150, chains=2, seed=4, progressbar=False
    )
    assert (fit.route, fit.sampler) == ("sparse-pedigree", "importance")
    summary = fit.summary()
    assert summary["sampler"] == "importance"  # summary.json says what ran
    # resampled draws are no more informative than the importance ESS, however they mix
    limit = fit.timing["importance_ess"]
    assert summary["diagnostics"]["min_ess_bulk"] <= limit
    rg = summary["genetic_correlation"]
    assert all(e["ess_bulk"] <= limit and e["ess_tail"] <= limit for e in rg.values())
    assert (fit.genetic_correlation()[["ess_bulk", "ess_tail"]] <= limit).all().all()
    assert fit.posterior.sizes["chain"] == 2 and fit.posterior.sizes["draw"] == 150
    assert fit.timing["pareto_k"] < 1.0 and fit.timing["importance_ess"] > 20  # k̂ may be < 0
    G = fit.genetic_covariance(draws=True).values
    assert np.all(np.linalg.eigvalsh(G.reshape(-1, 2, 2)) > 0)
    rg = fit.genetic_correlation()
    assert -1 < rg["mean"].iloc[0] < 1
    # the named variables are functions of the covariance draws
    post = fit.posterior
    gsd = np.sqrt(np.diagonal(G, axis1=-2, axis2=-1))
    np.testing.assert_allclose(post["genetic_sd"].values, gsd)
    np.testing.assert_allclose(
        post["genetic_correlation"].values[..., 0, 1], G[..., 0, 1] / (gsd[..., 0] * gsd[..., 1])
    )
    assert np.all(np.isfinite(post["beta"].values))


def test_large_sparse_pedigree_takes_the_sparse_route_and_glmm_is_refused(
    pedigree_cases, monkeypatch
) -> None:
    rng = np.random.default_rng(5)
    ped, df, _ = pedigree_cases(rng, 120, 80, window=WINDOW, missing=0.2)
    A = bl.pedigree_relationship(ped, sparse=True)
    binary = df.assign(b=(df["y1"].fillna(0) > 1).astype(float), y2=df["y2"].fillna(0.0))
    model = bl.LMM(
        "mvbind(b, y2) ~ x + (1 | id)", binary, kinship={"id": A}, family={"b": "bernoulli"}
    )
    with pytest.raises(SpecificationError, match="sampler='importance' samples"):
        model.fit(sampler="importance", draws=10, tune=10, chains=1)
    monkeypatch.setattr(multitrait_model, "DENSE_PEDIGREE_LIMIT", 100)
    fit = bl.LMM(FORMULA, df, kinship={"id": A}).fit(draws=40, chains=1, seed=1, progressbar=False)
    assert (fit.route, fit.sampler) == ("sparse-pedigree", "importance")
    with pytest.raises(SpecificationError, match="fit the Gaussian traits alone"):
        model.fit(draws=10, tune=10, chains=1)


def test_importance_falls_back_to_nuts_on_the_same_density(pedigree_cases, monkeypatch) -> None:
    """Where k̂ stays above the limit, sampler='auto' runs NUTS on the same marginal density
    (the fit says so), and sampler='importance' keeps the draws with a message."""
    rng = np.random.default_rng(8)
    ped, df, _ = pedigree_cases(rng, 120, 80, window=WINDOW, missing=0.2)
    A = bl.pedigree_relationship(ped, sparse=True)
    monkeypatch.setattr(multitrait_model, "DENSE_PEDIGREE_LIMIT", 100)
    monkeypatch.setattr(mtp, "PARETO_K_LIMIT", -np.inf)  # no proposal is good enough
    model = bl.LMM(FORMULA, df, kinship={"id": A})
    fit = model.fit(draws=30, tune=30, chains=2, seed=3, progressbar=False)
    assert (fit.route, fit.sampler) == ("sparse-pedigree", "nutpie")
    assert fit.posterior.sizes["draw"] == 30 and fit.summary()["sampler"] == "nutpie"
    assert np.all(np.isfinite(fit.posterior["genetic_covariance"].values))
    assert any("sampled by NUTS on the same density" in m for m in fit.messages)
    # the fallback words R-hat as every multi-trait NUTS fit does (30 draws: the chains
    # disagree, so the message is expected here)
    worst = max(
        float(np.nanmax(az.rhat(fit.posterior[name]).to_array().values))
        for name in ("genetic_covariance", "residual_covariance")
    )
    assert worst > 1.01
    assert any(m.startswith(f"R-hat up to {worst:.3f}") for m in fit.messages)
    kept = model.fit(
        sampler="importance", draws=30, chains=1, seed=3, progressbar=False, verbose=False
    )
    assert kept.sampler == "importance"
    assert any("the weights are unreliable" in m for m in kept.messages)


@pytest.mark.slow
def test_posterior_means_equal_the_dense_nuts_posterior_on_300_animals(pedigree_cases) -> None:
    """Posterior means of Σ_G, Σ_E and r_g: importance sampling on the sparse equations
    against dense NUTS (dense A, missing values sampled) within Monte Carlo error."""
    rng = np.random.default_rng(2025)
    ped, df, A_dense = pedigree_cases(rng, 300, 260, window=WINDOW, missing=0.2)
    A = bl.pedigree_relationship(ped, sparse=True)
    sparse = bl.LMM(FORMULA, df, kinship={"id": A}).fit(
        sampler="importance", draws=2000, chains=4, seed=11, progressbar=False
    )
    dense = bl.LMM(FORMULA, df, kinship={"id": A_dense}).fit(
        draws=1500, tune=1000, chains=4, cores=1, seed=12, progressbar=False
    )
    assert sparse.timing["pareto_k"] < mtp.PARETO_K_LIMIT
    ess_is = sparse.timing["importance_ess"]
    for name in ("genetic_covariance", "residual_covariance", "genetic_correlation"):
        a = sparse.posterior[name].values.reshape(-1, 2, 2)
        b = dense.posterior[name].values.reshape(-1, 2, 2)
        for i, j in ((0, 0), (1, 0), (1, 1)):
            if name == "genetic_correlation" and i == j:
                continue
            ess_b = float(bl_ess(dense.posterior[name].values[..., i, j]))
            se = np.sqrt(a[:, i, j].var() / ess_is + b[:, i, j].var() / ess_b)
            assert abs(a[:, i, j].mean() - b[:, i, j].mean()) < 4.0 * se, (name, i, j)


def bl_ess(values: np.ndarray) -> float:
    import arviz as az

    return float(az.ess(values, method="mean"))
