"""fit.snp_effects: the LMM on K = W Wᵀ/c is ridge regression on the markers W."""

import warnings

import arviz as az
import numpy as np
import pandas as pd
import pytest
import xarray as xr

import bayeslmm as bl
from bayeslmm.engines.bayes import build
from bayeslmm.engines.bayes.conditional import add_posthoc_draws
from bayeslmm.engines.bayes.sampling import diagnose
from bayeslmm.engines.bayes.strategies import strategy_of
from bayeslmm.errors import DataError, SpecificationError
from bayeslmm.results.bayes_result import BayesFit


@pytest.fixture(scope="module")
def markers():
    """60 individuals, 150 markers (more markers than individuals, as usual), VanRaden GRM."""
    rng = np.random.default_rng(21)
    n, m = 60, 150
    freq = rng.uniform(0.1, 0.5, m)
    dosages = rng.binomial(2, freq, size=(n, m)).astype(float)
    ids = [f"a{k}" for k in range(n)]
    geno = pd.DataFrame(dosages, index=ids, columns=[f"snp{j}" for j in range(m)])
    K = bl.grm(geno)
    W = dosages - dosages.mean(0)
    x = rng.normal(size=n)
    y = 1.0 + 0.4 * x + W @ rng.normal(0, 0.15, m) + rng.normal(size=n)
    return geno, K, pd.DataFrame({"y": y, "x": x, "id": ids}), W


def test_reml_snp_effects_equal_ridge_regression(markers):
    geno, K, df, W = markers
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = bl.LMM("y ~ x + (1|id)", df, kinship={"id": K}).fit(method="reml")
    effects = fit.snp_effects(geno)
    c = effects.attrs["scale"]
    np.testing.assert_allclose(W @ W.T / c, K.matrix, atol=1e-10)
    sg, se = fit.variance_components()["vcov"].to_numpy()
    lam = se / (sg / c)  # λ = σ_e² / σ_β²
    X = np.c_[np.ones(len(df)), df["x"]]
    m = W.shape[1]
    # ridge with unpenalised fixed effects: [XᵀX XᵀW; WᵀX WᵀW + λI] [β; b] = [Xᵀy; Wᵀy]
    A = np.block([[X.T @ X, X.T @ W], [W.T @ X, W.T @ W + lam * np.eye(m)]])
    sol = np.linalg.solve(A, np.r_[X.T @ df["y"], W.T @ df["y"]])
    np.testing.assert_allclose(effects["estimate"], sol[2:], rtol=0, atol=1e-8)
    assert list(effects.index) == list(geno.columns)
    # W b̂ are the genomic breeding values (the BLUPs of the kinship model)
    np.testing.assert_allclose(
        W @ effects["estimate"], fit.blups["id"]["(Intercept)"].to_numpy(), atol=1e-7
    )
    # prediction error variances: σ_e² (A⁻¹)_bb of the ridge system
    pev = se * np.diag(np.linalg.inv(A))[2:]
    np.testing.assert_allclose(effects["se"], np.sqrt(pev), rtol=1e-7)


def _posterior_fit(df, K, draws, seed):
    """A BayesFit of 'y ~ x + (1|id)' on given draws of (σ_g², σ_e²) (β drawn post hoc):
    the effects per draw can then be checked against the ridge solution at each draw."""
    built = build(bl.specify("y ~ x + (1|id)", df, kinship={"id": K}))
    rng = np.random.default_rng(seed)
    dims = ("chain", "draw")
    post = xr.Dataset(
        {
            "var_id": (dims, np.exp(rng.normal(0, 0.3, (2, draws)))),
            "var_residual": (dims, np.exp(rng.normal(0, 0.3, (2, draws)))),
        },
        coords={"chain": [0, 1], "draw": np.arange(draws)},
    )
    idata = add_posthoc_draws(built, az.InferenceData(posterior=post), seed=1)
    diag, messages = diagnose(idata)
    sampler = strategy_of(built).breeding_value_sampler(built)
    fit = BayesFit(
        idata,
        built,
        timing={},
        diagnostics=diag,
        messages=messages,
        seed=3,
        breeding_value_sampler=sampler,
    )
    return fit, post, idata


def test_nuts_snp_effects_per_draw_are_the_ridge_solution(markers):
    geno, K, df, W = markers
    fit, post, idata = _posterior_fit(df, K, draws=30, seed=1)
    draws = fit.snp_effects(geno, draws=True, kind="conditional_mean")
    assert draws.dims == ("chain", "draw", "marker")
    c = float(np.trace(W @ W.T) / np.trace(K.matrix))
    X = np.c_[np.ones(len(df)), df["x"]]
    for chain, d in [(0, 0), (1, 29)]:
        vg, ve = float(post["var_id"][chain, d]), float(post["var_residual"][chain, d])
        beta = idata.posterior["beta"].values[chain, d]
        # given β: ridge on the residual, b = (WᵀW + λI)⁻¹ Wᵀ (y − Xβ), λ = σ_e² c / σ_g²
        b = np.linalg.solve(W.T @ W + ve * c / vg * np.eye(W.shape[1]), W.T @ (df["y"] - X @ beta))
        np.testing.assert_allclose(draws.values[chain, d], b, rtol=0, atol=1e-9)
    table = fit.snp_effects(geno, kind="conditional_mean")
    np.testing.assert_allclose(table["estimate"], draws.values.mean(axis=(0, 1)), atol=1e-12)
    assert "ess_bulk" in table.columns
    assert table.attrs["kind"] == "conditional_mean"


def test_snp_effects_check_the_genotypes(markers):
    geno, K, df, W = markers
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = bl.LMM("y ~ x + (1|id)", df, kinship={"id": K}).fit(method="reml")
    # an array in level order gives the same effects as the table
    from_array = fit.snp_effects(geno.loc[list(fit.spec.terms[0].levels)].to_numpy())
    np.testing.assert_allclose(from_array["estimate"], fit.snp_effects(geno)["estimate"])
    with pytest.raises(DataError, match="a0"):
        fit.snp_effects(geno.iloc[1:])
    with pytest.raises(DataError, match="is not W Wᵀ / c"):
        fit.snp_effects(geno.iloc[:, :100])
    with pytest.raises(DataError, match="is not W Wᵀ / c for these genotypes with scale=3"):
        fit.snp_effects(geno, scale=3.0)
    with pytest.raises(SpecificationError, match="draws=True"):
        fit.snp_effects(geno, draws=True)
    with pytest.raises(SpecificationError, match="point estimate"):
        fit.snp_effects(geno, kind="conditional_mean")
    with pytest.raises(SpecificationError, match="kind must be one of"):
        fit.snp_effects(geno, kind="mean")
    two = df.assign(pen=[f"p{k % 5}" for k in range(len(df))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit2 = bl.LMM("y ~ x + (1|id) + (1|pen)", two, kinship={"id": K}).fit(method="reml")
    with pytest.raises(SpecificationError, match="one kinship term and no other"):
        fit2.snp_effects(geno)


def test_kinship_of_more_individuals_than_records(markers):
    """K built on all 60 (centred over 60), 45 with a record: the full table matches it."""
    geno, K, df, W = markers
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = bl.LMM("y ~ x + (1|id)", df.iloc[:45], kinship={"id": K}).fit(method="reml")
    effects = fit.snp_effects(geno)
    levels = list(fit.spec.terms[0].levels)
    rows = [list(geno.index).index(i) for i in levels]
    u = W[rows] @ effects["estimate"].to_numpy()
    np.testing.assert_allclose(u, fit.blups["id"]["(Intercept)"].to_numpy(), atol=1e-7)
    with pytest.raises(DataError, match="is not W Wᵀ / c"):
        fit.snp_effects(geno.loc[levels])  # centred over 45, not the kinship's 60


# -- the SNP-space route: a low-rank kinship (never n × n) ---------------------------------
@pytest.fixture(scope="module")
def low_rank_markers():
    """200 individuals, 60 markers (fewer markers than individuals), some with 2 records."""
    rng = np.random.default_rng(5)
    n, m = 200, 60
    dosages = rng.binomial(2, rng.uniform(0.1, 0.5, m), size=(n, m)).astype(float)
    ids = [f"a{k}" for k in range(n)]
    geno = pd.DataFrame(dosages, index=ids, columns=[f"snp{j}" for j in range(m)])
    K = bl.grm(geno, low_rank=True)
    W = dosages - dosages.mean(0)
    x = rng.normal(size=n)
    y = 1.0 + 0.4 * x + W @ rng.normal(0, 0.15, m) + rng.normal(size=n)
    df = pd.DataFrame({"y": y, "x": x, "id": ids})
    repeat = df.iloc[::4].assign(y=lambda d: d["y"] + rng.normal(size=len(d)))
    return geno, K, df, pd.concat([df, repeat]).sample(frac=1.0, random_state=1), W


def _ridge(M, X, y, lam):
    """[β; b] of the ridge system with unpenalised X and its inverse (independent)."""
    m = M.shape[1]
    A = np.block([[X.T @ X, X.T @ M], [M.T @ X, M.T @ M + lam * np.eye(m)]])
    return np.linalg.solve(A, np.r_[X.T @ y, M.T @ y]), np.linalg.inv(A)


@pytest.mark.parametrize("records", ["one", "repeated"])
def test_low_rank_reml_snp_effects_equal_ridge_regression(low_rank_markers, records):
    geno, K, one, repeated, W = low_rank_markers
    df = one if records == "one" else repeated
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = bl.LMM("y ~ x + (1|id)", df, kinship={"id": K}).fit(method="reml")
    assert fit.method == "spectral-low-rank"
    sg, se = fit.variance_components()["vcov"].to_numpy()
    X = np.c_[np.ones(len(df)), df["x"]]
    rows = [int(i[1:]) for i in df["id"]]
    for genotypes, M, c in [
        (geno, W[rows], np.sum(W**2) / np.sum(K.markers**2)),
        (None, np.asarray(K.markers)[rows], 1.0),
    ]:
        effects = fit.snp_effects(genotypes)
        assert effects.attrs["scale"] == pytest.approx(c, rel=1e-12)
        sol, inv = _ridge(M, X, df["y"].to_numpy(), se / (sg / c))
        np.testing.assert_allclose(effects["estimate"], sol[2:], rtol=0, atol=1e-8)
        np.testing.assert_allclose(effects["se"], np.sqrt(se * np.diag(inv)[2:]), rtol=1e-7)
    assert list(fit.snp_effects(geno).index) == list(geno.columns)
    assert list(fit.snp_effects().index)[:2] == ["m0", "m1"]


def test_low_rank_nuts_snp_effects_per_draw_are_the_ridge_solution(low_rank_markers):
    geno, K, df, _, W = low_rank_markers
    fit, post, idata = _posterior_fit(df, K, draws=20, seed=2)
    draws = fit.snp_effects(geno, draws=True, kind="conditional_mean")
    c = np.sum(W**2) / np.sum(K.markers**2)
    X = np.c_[np.ones(len(df)), df["x"]]
    for chain, d in [(0, 0), (1, 19)]:
        vg, ve = float(post["var_id"][chain, d]), float(post["var_residual"][chain, d])
        beta = idata.posterior["beta"].values[chain, d]
        b = np.linalg.solve(W.T @ W + ve * c / vg * np.eye(W.shape[1]), W.T @ (df["y"] - X @ beta))
        np.testing.assert_allclose(draws.values[chain, d], b, rtol=0, atol=1e-9)
    table = fit.snp_effects(geno, kind="conditional_mean")
    np.testing.assert_allclose(table["estimate"], draws.values.mean(axis=(0, 1)), atol=1e-12)


def test_low_rank_snp_effects_check_the_genotypes(low_rank_markers):
    geno, K, df, _, _ = low_rank_markers
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = bl.LMM("y ~ x + (1|id)", df, kinship={"id": K}).fit(method="reml")
    with pytest.raises(DataError, match="low-rank kinship of 'id' is not W Wᵀ / c"):
        fit.snp_effects(geno.iloc[:, :50])
    with pytest.raises(DataError, match="a0"):
        fit.snp_effects(geno.iloc[1:])
    with pytest.raises(SpecificationError, match="own markers"):
        fit.snp_effects(scale=2.0)
    dense = bl.LMM("y ~ x + (1|id)", df, kinship={"id": bl.grm(geno)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dense_fit = dense.fit(method="reml")
    with pytest.raises(SpecificationError, match="needs the genotypes"):
        dense_fit.snp_effects()
