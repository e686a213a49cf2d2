"""fit.snp_effects() on a posterior: draws of b | y, θ, β, checked against dense exact algebra.

At a fixed (θ, β) the marker effects are N(σ_β² MᵀV⁻¹y*, σ_β² I − σ_β⁴ MᵀV⁻¹M) with M = Z W,
V = σ_β² M Mᵀ + σ_e² I (or R), y* = y − Xβ: the tests form V with dense numpy and compare the
sample mean and covariance of many draws with it (within Monte Carlo error), compare W b with
the fit's own breeding-value draws u | y, θ, β, and check the intervals' coverage when the
data come from the prior.
"""

import types
import warnings

import arviz as az
import numpy as np
import pandas as pd
import pytest
import xarray as xr

import bayeslmm as bl
from bayeslmm.engines.bayes import build
from bayeslmm.engines.bayes.sampling import diagnose
from bayeslmm.engines.bayes.strategies import strategy_of
from bayeslmm.results.bayes_result import BayesFit
from bayeslmm.results.snp import _matheron_draws, effect_draws, right_basis

#: Posterior draws at the fixed (θ, β): Monte Carlo SE of a mean is sd / 141.
N_DRAWS = 20_000
VAR_G, VAR_E = 1.3, 0.8
BETA = np.array([0.7, -0.4])


def _data(m: int, repeated: bool, seed: int = 4):
    """60 genotyped individuals with m markers; a third of them with a second record."""
    rng = np.random.default_rng(seed)
    n = 60
    dosages = rng.binomial(2, rng.uniform(0.1, 0.5, m), size=(n, m)).astype(float)
    ids = [f"a{k}" for k in range(n)]
    geno = pd.DataFrame(dosages, index=ids, columns=[f"snp{j}" for j in range(m)])
    x = rng.normal(size=n)
    y = 1.0 + 0.4 * x + (dosages - dosages.mean(0)) @ rng.normal(0, 0.15, m) + rng.normal(size=n)
    df = pd.DataFrame({"y": y, "x": x, "id": ids})
    if repeated:
        again = df.iloc[::3].assign(y=lambda d: d["y"] + rng.normal(size=len(d)))
        df = pd.concat([df, again]).sample(frac=1.0, random_state=2)
    return geno, df


def _fixed_fit(df, K, draws=N_DRAWS, seed=11):
    """A BayesFit whose posterior is ``draws`` copies of (σ_g², σ_e², β) = (1.3, 0.8, BETA):
    the effect draws are then draws of the exact conditional at that point."""
    built = build(bl.specify("y ~ x + (1|id)", df, kinship={"id": K}))
    dims = ("chain", "draw")
    shape = (1, draws)
    post = xr.Dataset(
        {
            "var_id": (dims, np.full(shape, VAR_G)),
            "var_residual": (dims, np.full(shape, VAR_E)),
            "beta": (dims + ("fixed",), np.broadcast_to(BETA, shape + (2,)).copy()),
        },
        coords={"chain": [0], "draw": np.arange(draws), "fixed": list(built.spec.fixed_names)},
    )
    idata = az.InferenceData(posterior=post)
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


def _exact(M, X, y, var_beta, var_e, R=None):
    """Dense N(μ, Σ) of b | y, θ, β: V = σ_β² M Mᵀ + R, formed and inverted outright."""
    R = var_e * np.eye(len(y)) if R is None else R
    vinv = np.linalg.inv(var_beta * M @ M.T + R)
    mean = var_beta * M.T @ vinv @ (y - X @ BETA)
    cov = var_beta * np.eye(M.shape[1]) - var_beta**2 * M.T @ vinv @ M
    return mean, cov


def _assert_normal(sample, mean, cov):
    """Sample mean and covariance equal (mean, cov) within Monte Carlo error: each entry's
    error in units of its standard error (normal theory), at most 5 / 5.5 over all entries."""
    n = sample.shape[0]
    z_mean = (sample.mean(0) - mean) / np.sqrt(np.diag(cov) / n)
    assert np.abs(z_mean).max() < 5.0, np.abs(z_mean).max()
    S = np.cov(sample, rowvar=False)
    se = np.sqrt((cov**2 + np.outer(np.diag(cov), np.diag(cov))) / n)
    z_cov = (S - cov) / se
    assert np.abs(z_cov).max() < 5.5, np.abs(z_cov).max()


def _records_markers(df, W, levels):
    """M = Z W: each record's row of W (W in the order of ``levels``)."""
    pos = {i: k for k, i in enumerate(levels)}
    return W[[pos[i] for i in df["id"]]]


CASES = [
    # (markers, kinship, repeated records, genotypes given)
    pytest.param(100, "dense", False, True, id="dense-m100"),
    pytest.param(30, "dense", False, True, id="dense-m30"),
    pytest.param(100, "dense", True, True, id="dense-m100-repeated"),
    pytest.param(30, "low-rank", False, False, id="low-rank-m30-own-markers"),
    pytest.param(30, "low-rank", False, True, id="low-rank-m30-genotypes"),
    pytest.param(30, "low-rank", True, True, id="low-rank-m30-repeated"),
]


@pytest.mark.parametrize(("m", "kinship", "repeated", "given"), CASES)
def test_effect_draws_are_the_exact_conditional(m, kinship, repeated, given):
    geno, df = _data(m, repeated)
    K = bl.grm(geno, low_rank=kinship == "low-rank")
    fit = _fixed_fit(df, K)
    draws = fit.snp_effects(geno if given else None, draws=True)
    assert draws.dims == ("chain", "draw", "marker") and draws.attrs["kind"] == "posterior"
    levels = list(fit.spec.terms[0].levels)
    if given:
        W = (geno - geno.mean()).loc[levels].to_numpy()
        c = np.sum(W**2) / (np.trace(K.matrix) if kinship == "dense" else np.sum(K.markers**2))
    else:
        W, c = np.asarray(K.subset(levels).markers), 1.0
    M = _records_markers(df, W, levels)
    X = np.c_[np.ones(len(df)), df["x"]]
    mean, cov = _exact(M, X, df["y"].to_numpy(), VAR_G / c, VAR_E)
    sample = draws.values.reshape(-1, draws.sizes["marker"])
    _assert_normal(sample, mean, cov)
    # the conditional means are the exact mean, with no spread at a fixed (θ, β)
    means = fit.snp_effects(geno if given else None, draws=True, kind="conditional_mean")
    np.testing.assert_allclose(means.values[0, :3], np.tile(mean, (3, 1)), atol=1e-9)
    # W b is the breeding value: its draws have the distribution of the fit's u | y, θ, β
    u = fit.breeding_values_draws().values.reshape(N_DRAWS, -1)
    wb = sample @ W.T
    var_u = u.var(0)
    z = (wb.mean(0) - u.mean(0)) / np.sqrt(2 * var_u / N_DRAWS)
    assert np.abs(z).max() < 5.0, np.abs(z).max()
    # log variance ratio of two samples of 20,000: SE sqrt(2 · 2 / N) = 0.014
    assert np.abs(np.log(wb.var(0) / var_u)).max() < 5.0 * np.sqrt(4.0 / N_DRAWS)


def test_low_rank_dosages_reuse_the_kinship_svd(monkeypatch):
    """The dosage table bl.grm(..., low_rank=True) was built from is √c × its markers: with
    one record per individual the effects come from the kinship's SVD (nothing factored)."""
    geno, df = _data(30, False)
    fit = _fixed_fit(df, bl.grm(geno, low_rank=True), draws=50)
    expected = fit.snp_effects(geno, draws=True).values
    monkeypatch.setattr("bayeslmm.results.snp.right_basis", None)  # calling it would fail
    np.testing.assert_array_equal(fit.snp_effects(geno, draws=True).values, expected)


def test_table_summarises_the_posterior_draws():
    geno, df = _data(100, False)
    fit = _fixed_fit(df, bl.grm(geno), draws=2000)
    table = fit.snp_effects(geno)
    draws = fit.snp_effects(geno, draws=True)
    assert table.attrs["kind"] == "posterior"
    np.testing.assert_allclose(table["estimate"], draws.values.mean(axis=(0, 1)), rtol=1e-12)
    np.testing.assert_allclose(table["se"], draws.values.std(axis=(0, 1), ddof=1), rtol=1e-6)
    # reproducible from the fit's seed; another seed gives other draws of the same law
    np.testing.assert_array_equal(fit.snp_effects(geno, draws=True).values, draws.values)
    other = fit.snp_effects(geno, draws=True, seed=12).values
    assert not np.allclose(other, draws.values)
    # the conditional-mean table has the same columns
    assert list(fit.snp_effects(geno, kind="conditional_mean").columns) == list(table.columns)


def test_effect_draws_do_not_depend_on_the_chunking(monkeypatch):
    rng = np.random.default_rng(3)
    M = rng.normal(size=(20, 35))
    vecs, d2 = right_basis(M)
    proj = vecs.T @ (M.T @ np.c_[rng.normal(size=20), np.ones(20)])
    args = (vecs, d2, proj, rng.normal(size=(700, 1)), np.exp(rng.normal(size=700)),
            np.exp(rng.normal(size=700)), 5)  # fmt: skip
    whole = effect_draws(*args)
    monkeypatch.setattr("bayeslmm.results.snp._DRAW_CHUNK", 7)
    # the same normals: equal up to the matrix products' rounding
    np.testing.assert_allclose(effect_draws(*args), whole, rtol=0, atol=1e-12)


def test_right_basis_of_wide_and_tall_marker_matrices():
    rng = np.random.default_rng(8)
    for shape in [(30, 80), (80, 30)]:
        M = rng.normal(size=shape)
        M[:, 0] = M[:, 1]  # one direction fewer in the tall case
        vecs, d2 = right_basis(M)
        _, s, _ = np.linalg.svd(M)
        np.testing.assert_allclose(np.sort(d2), np.sort(s[s > 1e-8 * s[0]] ** 2), rtol=1e-9)
        np.testing.assert_allclose(vecs.T @ vecs, np.eye(d2.size), atol=1e-10)
        np.testing.assert_allclose((vecs * d2) @ vecs.T, M.T @ M, atol=1e-8)


def test_several_residual_variances_draw_the_exact_conditional():
    """Records with their own residual variances (σ_e² per environment): Matheron's rule with
    one V solve per draw, against the dense conditional with R = diag(residuals)."""
    geno, df = _data(100, False)
    K = bl.grm(geno)
    spec = bl.specify("y ~ x + (1|id)", df, kinship={"id": K})
    n = len(df)
    residual = np.where(np.arange(n) % 2 == 0, 0.4, 1.6)
    N = 4000
    values = types.SimpleNamespace(
        sigmas=[np.full((N, 1, 1), VAR_G)],
        residual=np.broadcast_to(residual, (N, n)),
        beta=np.broadcast_to(BETA, (N, 2)),
    )
    W = (geno - geno.mean()).to_numpy()
    c = np.sum(W**2) / np.trace(K.matrix)
    sample = _matheron_draws(spec, W, values, np.full(N, VAR_G / c), seed=2)
    X = np.c_[np.ones(n), df["x"]]
    mean, cov = _exact(W, X, df["y"].to_numpy(), VAR_G / c, None, R=np.diag(residual))
    _assert_normal(sample, mean, cov)


def test_intervals_cover_effects_drawn_from_the_prior():
    """Data simulated from the prior at known (θ, β): the 90 % intervals of b | y, θ, β cover
    the simulated effects 90 % of the time (200 data sets × 100 markers, SE about 0.01);
    E[b | y, θ, β] alone covers far less (the markers' conditional variance is missing)."""
    rng = np.random.default_rng(6)
    n, m, var_beta, var_e = 60, 100, 0.02, 1.0
    X = np.c_[np.ones(n), rng.normal(size=n)]
    W = rng.binomial(2, 0.3, size=(n, m)).astype(float)
    W -= W.mean(0)
    vecs, d2 = right_basis(W)
    covered, covered_mean = [], []
    for k in range(200):
        b = rng.normal(0.0, np.sqrt(var_beta), m)
        y = X @ BETA + W @ b + rng.normal(0.0, np.sqrt(var_e), n)
        proj = vecs.T @ (W.T @ np.c_[y, X])
        args = (vecs, d2, proj, np.tile(BETA, (400, 1)), np.full(400, var_beta),
                np.full(400, var_e), k)  # fmt: skip
        for out, conditional_mean in [(covered, False), (covered_mean, True)]:
            draws = effect_draws(*args, conditional_mean=conditional_mean)
            low, high = np.quantile(draws, [0.05, 0.95], axis=0)
            out.append(np.mean((low <= b) & (b <= high)))
    assert abs(np.mean(covered) - 0.9) < 0.03, np.mean(covered)
    assert np.mean(covered_mean) < 0.1


@pytest.mark.slow
def test_nuts_intervals_cover_effects_drawn_from_the_prior():
    """Whole NUTS fits (θ and β estimated) on data from the prior, 8 seeds × 150 markers:
    the 90 % HDIs of the marker effects cover the simulated effects at about 90 %."""
    coverage = []
    for seed in range(8):
        rng = np.random.default_rng(100 + seed)
        n, m = 120, 150
        dosages = rng.binomial(2, rng.uniform(0.1, 0.5, m), size=(n, m)).astype(float)
        ids = [f"a{k}" for k in range(n)]
        geno = pd.DataFrame(dosages, index=ids)
        K = bl.grm(geno)
        W = dosages - dosages.mean(0)
        c = np.sum(W**2) / np.trace(K.matrix)
        b = rng.normal(0.0, np.sqrt(1.0 / c), m)  # σ_g² = 1, σ_e² = 1
        df = pd.DataFrame({"y": W @ b + rng.normal(size=n), "id": ids})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = bl.LMM("y ~ 1 + (1|id)", df, kinship={"id": K}).fit(
                draws=500, tune=500, chains=2, cores=1, seed=seed, progressbar=False, verbose=False
            )
        table = fit.snp_effects(geno, hdi_prob=0.9)
        coverage.append(np.mean((table["ci_low"] <= b) & (b <= table["ci_high"])))
    assert 0.84 < np.mean(coverage) < 0.96, coverage


@pytest.mark.slow
def test_nuts_fit_with_residual_variance_per_environment():
    """A σ_e² per environment (latent strategy) takes Matheron's rule: the posterior draws'
    means equal the conditional means' within the noise added (independent per draw)."""
    geno, df = _data(40, False)
    df["env"] = np.where(np.arange(len(df)) % 2 == 0, "A", "B")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = bl.LMM("y ~ x + (1|id)", df, kinship={"id": bl.grm(geno)}, sigma="~ 0 + env").fit(
            draws=200, tune=300, chains=2, cores=1, seed=1, progressbar=False, verbose=False
        )
    post = fit.snp_effects(geno, draws=True).values.reshape(400, -1)
    means = fit.snp_effects(geno, draws=True, kind="conditional_mean").values.reshape(400, -1)
    noise_sd = (post - means).std(0)
    # the markers' conditional variance, mostly larger than θ's and β's share
    assert np.median(noise_sd / means.std(0)) > 2.0
    z = (post - means).mean(0) / (noise_sd / np.sqrt(400))
    assert np.abs(z).max() < 5.0, np.abs(z).max()
