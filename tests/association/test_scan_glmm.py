"""Scans of binary and count traits: the null GLMM, score tests, saddle-point p-values.

Every check is against an independent computation: the null fit's criterion against the
Laplace engine's (``LaplaceProblem.deviance_nagq0``), the score and its variance against dense
algebra on Σ and P, the saddle-point p-values against the exact distribution of the
independent sum (Poisson-binomial convolutions), the Wald refit against the Laplace engine
with the marker as a covariate.
"""

from __future__ import annotations

import itertools
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, special, stats

import bayeslmm as bl
from bayeslmm.association.glmm import NullProblem, ScoreTester, saddlepoint_pvalue
from bayeslmm.cli import main
from bayeslmm.engines.laplace.engine import LaplaceProblem
from bayeslmm.errors import DataError, SpecificationError
from bayeslmm.families import Bernoulli
from bayeslmm.results.scan_result import ScanResult

DOCS = Path(__file__).resolve().parents[2] / "docs" / "errors.md"


def _kinship(rng: np.random.Generator, n: int, m: int = 400) -> np.ndarray:
    W = rng.binomial(2, 0.3, size=(n, m)).astype(float)
    W -= W.mean(axis=0)
    return W @ W.T / (2 * 0.3 * 0.7 * m)


def _binary_data(seed: int = 3, n: int = 100, prevalence: float = 0.2):
    rng = np.random.default_rng(seed)
    K = _kinship(rng, n)
    s, U = np.linalg.eigh(K)
    u = U @ (np.sqrt(np.clip(s, 0, None)) * rng.normal(size=n))
    x = rng.normal(size=n)
    eta = special.logit(prevalence) + 0.5 * x + u
    y = (rng.uniform(size=n) < special.expit(eta)).astype(float)
    return y, np.column_stack([np.ones(n), x]), K, rng


# -- the null model -----------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["bernoulli", "poisson"])
def test_null_criterion_is_the_laplace_engines_and_theta_minimises_it(family):
    y, X, K, rng = _binary_data()
    n = y.size
    if family == "poisson":
        y = rng.poisson(np.exp(0.3 + 0.3 * X[:, 1] + 0.4 * rng.normal(size=n))).astype(float)
    ids = [f"i{k}" for k in range(n)]
    frame = pd.DataFrame({"y": y, "x": X[:, 1], "id": ids})
    kin = bl.Kinship(K, ids=ids, name="K", check_psd=False)
    spec = bl.specify("y ~ x + (1|id)", frame, kinship={"id": kin}, family=family)
    engine = LaplaceProblem(spec)
    problem = NullProblem(y, X, K, spec.family)
    theta = np.array([0.8, 0.3])[: problem.n_theta]
    assert problem.deviance(theta) == pytest.approx(engine.deviance_nagq0(theta)[0], rel=1e-9)
    if problem.n_theta == 1:
        fit = problem.fit()
        ref = optimize.minimize_scalar(
            lambda t: engine.deviance_nagq0(np.array([t]))[0], bounds=(0, 5), method="bounded"
        )
        assert fit.theta[0] == pytest.approx(ref.x, abs=2e-3)
        np.testing.assert_allclose(fit.beta, engine.deviance_nagq0(fit.theta)[1], rtol=1e-6)


# -- (a) the score and its variance against dense algebra ----------------------------------------
def test_score_and_variance_equal_the_dense_computation():
    y, X, K, rng = _binary_data(seed=5, n=90)
    problem = NullProblem(y, X, K, Bernoulli())
    mode = problem.mode(np.array([0.9]))  # the algebra at any τ, here one that matters
    tau = mode.theta[0] ** 2
    G = rng.binomial(2, [0.05, 0.3, 0.5], size=(y.size, 3)).astype(float)
    out = ScoreTester(problem, mode).test(G)
    # dense: μ̂ from the mode's η, W = μ̂(1 − μ̂) (logit), Σ = W⁻¹ + τK, P, g̃
    mu = special.expit(mode.eta)
    W = mu * (1 - mu)
    Sigma = np.diag(1 / W) + tau * K
    Si = np.linalg.inv(Sigma)
    P = Si - Si @ X @ np.linalg.solve(X.T @ Si @ X, X.T @ Si)
    Gt = G - X @ np.linalg.solve(X.T @ (W[:, None] * X), X.T @ (W[:, None] * G))
    np.testing.assert_allclose(out.score, Gt.T @ (y - mu), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(out.score_se**2, np.einsum("ij,ik,kj->j", Gt, P, Gt), rtol=1e-8)
    z = out.score / out.score_se
    np.testing.assert_allclose(out.p_normal, 2 * stats.norm.sf(np.abs(z)), rtol=1e-10)


# -- (b) the saddle-point p-value against the exact independent-sum distribution -----------------
def _poisson_binomial(p: np.ndarray) -> np.ndarray:
    pmf = np.array([1.0])
    for pi in p:
        pmf = np.convolve(pmf, [1.0 - pi, pi])
    return pmf


def test_saddlepoint_matches_the_exact_tail_of_a_rare_variant_at_5_percent_prevalence():
    rng = np.random.default_rng(1)
    n = 800
    eta = special.logit(0.05) + 0.5 * rng.normal(size=n)
    mu = special.expit(eta)
    g = np.zeros(n)
    g[rng.choice(n, 10, replace=False)] = 1.0  # 10 carriers: MAF 0.6%
    w = mu * (1 - mu)
    centre = np.sum(w * g) / np.sum(w)
    a = g - centre  # g̃ for an intercept-only model; S = Σ a_i (y_i − μ_i)
    carriers = _poisson_binomial(mu[g == 1])
    others_cdf = np.cumsum(_poisson_binomial(mu[g == 0]))
    m1, m0 = mu[g == 1].sum(), mu[g == 0].sum()

    def exact(q: float) -> float:
        """P(|S| ≥ q): S = (1 − c)(Y₁ − m₁) − c(Y₀ − m₀), Y₁ and Y₀ independent."""
        total = 0.0
        for y1, p1 in enumerate(carriers):
            top = np.floor(((1 - centre) * (y1 - m1) - q) / centre + m0 + 1e-12)
            if top >= 0:
                total += p1 * others_cdf[int(min(top, others_cdf.size - 1))]
            bottom = np.ceil((q + (1 - centre) * (y1 - m1)) / centre + m0 - 1e-12)
            if bottom <= 0:
                total += p1
            elif bottom < others_cdf.size:
                total += p1 * (1.0 - others_cdf[int(bottom) - 1])
        return total

    sd = np.sqrt(np.sum(a * a * w))
    for carriers_cases in (4, 5, 6):  # halfway between the carriers' lattice points
        q = (1 - centre) * (carriers_cases - 0.5 - m1)
        truth = exact(q)
        p, ok = saddlepoint_pvalue(np.array([q]), a[:, None], eta, Bernoulli())
        normal = 2 * stats.norm.sf(q / sd)
        assert ok[0]
        # within a factor 2 (conservative here) where the tail is 1e-3 to 1e-6
        assert 0.7 < p[0] / truth < 2.0, (carriers_cases, p[0], truth)
        # the normal approximation is off by orders of magnitude out there
        assert abs(np.log(normal / truth)) > 5 * abs(np.log(p[0] / truth))
    assert truth < 1e-4


def test_saddlepoint_test_has_its_nominal_size_for_a_common_marker_and_26_cases():
    """The exact type-I error of the SPA test (intercept known): every outcome of the three
    genotype classes' case counts enumerated, with its probability."""
    n, p, maf = 1000, 26 / 1000, 0.3
    counts = np.round(n * np.array([(1 - maf) ** 2, 2 * maf * (1 - maf), maf**2])).astype(int)
    counts[0] = n - counts[1:].sum()
    g = np.repeat([0.0, 1.0, 2.0], counts)
    a = g - g.mean()
    top = 40  # P(more than 40 cases in a class) < 1e-14
    pmf = [stats.binom.pmf(np.arange(top), k, p) for k in counts]
    y0, y1, y2 = np.meshgrid(np.arange(top), np.arange(top), np.arange(top), indexing="ij")
    prob = (pmf[0][:, None, None] * pmf[1][None, :, None] * pmf[2][None, None, :]).ravel()
    S = sum((j - g.mean()) * (yj - counts[j] * p) for j, yj in enumerate((y0, y1, y2))).ravel()
    likely = prob > 1e-13  # the rest weighs less than 1e-9 in all
    values, which = np.unique(np.round(S[likely], 9), return_inverse=True)
    mass = np.bincount(which, prob[likely])
    q = np.abs(values)
    sd = np.sqrt(np.sum(a * a * p * (1 - p)))
    pvalue = 2 * stats.norm.sf(q / sd)
    tail = q / sd >= 2
    spa, ok = saddlepoint_pvalue(
        q[tail],
        np.repeat(a[:, None], tail.sum(), axis=1),
        np.full(n, special.logit(p)),
        Bernoulli(),
    )
    assert ok.all()
    normal = pvalue.copy()
    pvalue[tail] = spa
    for alpha in (1e-3, 1e-4):
        assert 0.8 < mass[pvalue < alpha].sum() / alpha < 1.25
    assert mass[normal < 1e-4].sum() / 1e-4 > 1.5  # the normal test: too many


# -- (c) calibration on null data ------------------------------------------------------------------
def test_null_pvalues_of_common_markers_are_uniform():
    rng = np.random.default_rng(8)
    n, m = 400, 900
    freq = rng.uniform(0.1, 0.5, m)
    G = rng.binomial(2, freq, size=(n, m)).astype(float)
    ids = [f"i{k}" for k in range(n)]
    snps = pd.DataFrame({"chr": np.repeat([1, 2, 3], m // 3), "bp": np.tile(np.arange(m // 3), 3)})
    Z = (G - 2 * freq) / np.sqrt(2 * freq * (1 - freq))
    genetic = Z @ rng.normal(0, np.sqrt(1.0 / m), m)  # latent h² about 0.2 (logit)
    x = rng.normal(size=n)
    y = (rng.uniform(size=n) < special.expit(-1.5 + 0.3 * x + genetic)).astype(float)
    pheno = pd.DataFrame({"id": ids, "y": y, "x": x})
    res = bl.scan(
        "y ~ x + (1|id)", pheno, pd.DataFrame(G, index=ids), snps,
        family="bernoulli", progressbar=False,
    )  # fmt: skip
    table = res.table
    assert table.shape[0] == m and res.test == "score"
    assert stats.kstest(table["p"], "uniform").pvalue > 0.01
    assert 0.85 < res.lambda_gc() < 1.15
    np.testing.assert_allclose(table["chi2"], stats.chi2.isf(table["p"], 1), rtol=1e-8)
    # the SPA is used exactly in the tails, and agrees with the normal for common markers
    z = (table["score"] / table["score_se"]).abs()
    assert (table["spa"] == (z >= 2)).all()
    both = table[table["spa"]]
    assert np.all(np.abs(np.log(both["p"] / both["p_normal"])) < 0.5)
    assert table["beta"].isna().all()  # nothing below 5e-8
    assert set(res.null_models.columns) >= {"chr", "tau", "h2_latent", "deviance"}


def test_null_pvalues_of_an_overdispersed_count_trait_are_uniform():
    rng = np.random.default_rng(9)
    n, m = 300, 1500
    G = rng.binomial(2, rng.uniform(0.05, 0.5, m), size=(n, m)).astype(float)
    ids = [f"i{k}" for k in range(n)]
    snps = pd.DataFrame({"chr": np.repeat([1, 2, 3], m // 3), "bp": np.tile(np.arange(m // 3), 3)})
    x = rng.normal(size=n)
    y = rng.poisson(np.exp(0.5 + 0.2 * x + rng.normal(0, 0.4, n)))
    pheno = pd.DataFrame({"id": ids, "y": y, "x": x})
    res = bl.scan(
        "y ~ x + (1|id)", pheno, pd.DataFrame(G, index=ids), snps,
        family="poisson", progressbar=False,
    )  # fmt: skip
    assert stats.kstest(res.table["p"], "uniform").pvalue > 0.01
    assert 0.85 < res.lambda_gc() < 1.15
    # the observation-level variance (0.4² simulated) is estimated beside the kinship's
    assert res.null_models["sigma_olre2"].between(0.05, 0.4).all()


# -- the Wald refit ------------------------------------------------------------------------------
def test_wald_refit_equals_the_laplace_engine_with_the_marker_as_covariate():
    y, X, K, rng = _binary_data(seed=11, n=120)
    n = y.size
    ids = [f"i{k}" for k in range(n)]
    g = rng.binomial(2, 0.3, n).astype(float)
    problem = NullProblem(y, X, K, Bernoulli())
    mode = problem.fit()
    beta, se = ScoreTester(problem, mode).wald(g)
    frame = pd.DataFrame({"y": y, "x": X[:, 1], "g": g, "id": ids})
    kin = bl.Kinship(K, ids=ids, name="K", check_psd=False)
    spec = bl.specify("y ~ x + g + (1|id)", frame, kinship={"id": kin}, family="bernoulli")
    engine = LaplaceProblem(spec)
    _, beta_ref = engine.deviance_nagq0(mode.theta)
    assert beta == pytest.approx(beta_ref[-1], rel=1e-6)
    # SE: (X̃ᵀΣ⁻¹X̃)⁻¹ at the refit's mode, dense
    X1 = np.column_stack([X, g])
    eta = engine.mode(mode.theta, beta_ref)[1]
    W = special.expit(eta) * (1 - special.expit(eta))
    Si = np.linalg.inv(np.diag(1 / W) + mode.theta[0] ** 2 * K)
    assert se == pytest.approx(np.sqrt(np.linalg.inv(X1.T @ Si @ X1)[-1, -1]), rel=1e-5)


def test_scan_reports_beta_below_the_wald_threshold_only():
    rng = np.random.default_rng(2)
    n, m = 200, 60
    G = rng.binomial(2, 0.4, size=(n, m)).astype(float)
    ids = [f"i{k}" for k in range(n)]
    snps = pd.DataFrame({"chr": np.repeat([1, 2], m // 2), "bp": np.tile(np.arange(m // 2), 2)})
    y = (rng.uniform(size=n) < special.expit(-1.0 + 1.2 * (G[:, 3] - 0.8))).astype(float)
    pheno = pd.DataFrame({"id": ids, "y": y})
    res = bl.scan(
        "y ~ 1 + (1|id)", pheno, pd.DataFrame(G, index=ids), snps, family="bernoulli",
        wald_threshold=1e-3, progressbar=False,
    )  # fmt: skip
    table = res.table
    hit = table["p"] < 1e-3
    assert table.loc[3, "p"] < 1e-6 and hit[3]
    assert table.loc[hit, "beta"].notna().all() and table.loc[~hit, "beta"].isna().all()
    assert table.loc[3, "beta"] == pytest.approx(1.2, abs=0.5)


# -- (d) the command line ------------------------------------------------------------------------
def test_cli_scan_family_bernoulli_writes_the_score_table(tmp_path, capsys):
    from bed_reader import to_bed

    rng = np.random.default_rng(5)
    n, m = 120, 45
    G = rng.binomial(2, rng.uniform(0.1, 0.5, m), size=(n, m)).astype(float)
    ids = [f"00{k}" for k in range(n)]
    snps = [f"rs{j}" for j in range(m)]
    chrom = np.repeat(["1", "2", "3"], m // 3)
    bp = np.tile(100 * np.arange(1, m // 3 + 1), 3)
    props = {"iid": ids, "sid": snps, "chromosome": chrom, "bp_position": bp}
    to_bed(tmp_path / "geno.bed", G, properties=props)
    pheno = pd.DataFrame({"id": ids, "sex": rng.integers(0, 2, n)})
    pheno["case"] = (rng.uniform(size=n) < 0.25).astype(int)
    pheno.to_csv(tmp_path / "pheno.csv", index=False)
    out = tmp_path / "gwas"
    args = ["scan", "--bfile", str(tmp_path / "geno"), "--pheno", str(tmp_path / "pheno.csv")]
    args += ["--formula", "case ~ sex + (1|id)", "--family", "bernoulli", "--out", str(out)]
    assert main(args) == 0
    stdout = capsys.readouterr().out
    assert "45 markers on 3 chromosomes tested in 120 individuals (LOCO, score)" in stdout
    table = pd.read_csv(out / "scan.tsv", sep="\t", dtype={"chr": str, "SNP": str})
    assert list(table.columns) == [
        "SNP", "chr", "bp", "A1", "A2", "freq", "n", "mac", "score", "score_se", "beta", "se",
        "chi2", "p", "p_normal", "spa",
    ]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ref = bl.scan(
            "case ~ sex + (1|id)", pd.read_csv(tmp_path / "pheno.csv", dtype={"id": str}),
            str(tmp_path / "geno"), family="bernoulli", progressbar=False,
        )  # fmt: skip
    np.testing.assert_allclose(table["p"], ref.table["p"], rtol=1e-10)
    assert (out / "scan_null.tsv").exists() and (out / "qq.png").exists()
    # --rare-mac reaches the scan (and its check)
    bad = [*args[:-1], str(tmp_path / "other"), "--rare-mac", "-1"]
    assert main(bad) != 0
    assert "rare_mac must be a minor allele count >= 0" in capsys.readouterr().err


# -- very rare markers and separated Wald refits -----------------------------------------------
def _carriers_given_others(y, X, K, theta, rows):
    """Mean and variance of the carriers' η given the others' outcomes, by refitting the null
    model without the carriers (same θ) and predicting them (GLS kriging, β estimated)."""
    rest = np.setdiff1d(np.arange(y.size), rows)
    sub = NullProblem(y[rest], X[rest], K[np.ix_(rest, rest)], Bernoulli())
    fit = sub.mode(theta)
    tau = theta[0] ** 2
    mu = special.expit(fit.eta)
    Sigma = np.diag(1 / (mu * (1 - mu))) + tau * K[np.ix_(rest, rest)]
    Si = np.linalg.inv(Sigma)
    k = tau * K[np.ix_(rest, rows)]  # Cov(z_rest, η_C)
    Xr = X[rest]
    M = np.linalg.inv(Xr.T @ Si @ Xr)
    lever = X[rows] - k.T @ Si @ Xr  # what β̂'s uncertainty adds
    mean = X[rows] @ fit.beta + tau * K[np.ix_(rows, rest)] @ fit.a
    cov = tau * K[np.ix_(rows, rows)] - k.T @ Si @ k + lever @ M @ lever.T
    return mean, np.diag(cov)


def _exact_carrier_tail(y, dose, mean, var):
    """P(|Σ d (y − π)| ≥ observed) over every outcome of the carriers, π = E expit(η)."""
    z, w = np.polynomial.hermite_e.hermegauss(60)
    pi = special.expit(mean[:, None] + np.sqrt(var)[:, None] * z[None, :]) @ w / w.sum()
    observed = abs(np.sum(dose * (y - pi)))
    tail = 0.0
    for outcome in itertools.product([0.0, 1.0], repeat=dose.size):
        outcome = np.array(outcome)
        if abs(np.sum(dose * (outcome - pi))) >= observed - 1e-12:
            tail += np.prod(np.where(outcome == 1, pi, 1 - pi))
    return tail


def test_rare_marker_pvalues_are_the_exact_tail_of_the_carriers_given_the_others():
    y, X, K, _ = _binary_data(seed=11, n=120, prevalence=0.05)
    problem = NullProblem(y, X, K, Bernoulli())
    mode = problem.fit()
    cases, controls = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    G = np.zeros((y.size, 4))
    G[cases[0], 0] = 1  # one copy, carried by a case
    G[cases[[1, 2]], 1] = 1  # two carriers, both cases
    G[[cases[3], controls[0]], 2] = 1  # two carriers, one case
    G[cases[4], 3] = 2  # one homozygous case
    out = ScoreTester(problem, mode).test(G)
    mu = special.expit(mode.eta)
    np.testing.assert_allclose(out.mac, [1, 2, 2, 2])
    assert not out.spa.any()
    for j in range(G.shape[1]):
        rows = np.flatnonzero(G[:, j])
        mean, var = _carriers_given_others(y, X, K, mode.theta, rows)
        truth = _exact_carrier_tail(y[rows], G[rows, j], mean, var)
        assert 0.8 < out.p[j] / truth < 1.25, (j, out.p[j], truth)
        # against the carriers' outcomes given μ̂ (which leans towards them): a little smaller
        given_fit = _exact_carrier_tail(y[rows], G[rows, j], mode.eta[rows], 0 * mu[rows])
        assert 0.4 < out.p[j] / given_fit <= 1.0, (j, out.p[j], given_fit)


def test_separated_markers_get_no_wald_estimate_and_the_scan_completes():
    """A rare allele carried by cases only (or by controls only) has no finite Wald estimate:
    beta and se are NaN with a warning that counts them; every other refit stands."""
    rng = np.random.default_rng(4)
    n, m = 150, 30
    G = rng.binomial(2, 0.4, size=(n, m)).astype(float)
    ids = [f"i{k}" for k in range(n)]
    y = (rng.uniform(size=n) < special.expit(-2.0 + 0.3 * G[:, 0])).astype(float)
    cases, controls = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    extra = np.zeros((n, 3))
    extra[cases[0], 0] = 1  # one copy, a case
    extra[cases[[1, 2]], 1] = 1  # two copies, both cases
    extra[controls[:6], 2] = 1  # six copies, all controls
    G = np.column_stack([G, extra])
    snps = pd.DataFrame({"chr": np.repeat([1, 2, 3], 11), "bp": np.tile(np.arange(11), 3)})
    pheno = pd.DataFrame({"id": ids, "y": y})
    with pytest.warns(UserWarning, match="3 markers below wald_threshold have no Wald estimate"):
        res = bl.scan(
            "y ~ 1 + (1|id)", pheno, pd.DataFrame(G, index=ids), snps, family="bernoulli",
            wald_threshold=1.0, progressbar=False,
        )  # fmt: skip
    table = res.table
    assert table.iloc[-3:][["beta", "se"]].isna().all().all()
    assert table.iloc[:-3][["beta", "se"]].notna().all().all()
    assert table.iloc[-3:]["p"].between(0, 1).all()
    np.testing.assert_allclose(table.iloc[-3:]["mac"], [1, 2, 6])


def test_rare_mac_sets_which_markers_get_the_exact_carrier_test():
    """rare_mac = 10 (default), 1 and 0 on markers with 1, 2 and 6 copies: the exact tail
    where mac <= rare_mac, the saddle point or normal test elsewhere; other markers as they
    were."""
    rng = np.random.default_rng(4)
    n = 150
    ids = [f"i{k}" for k in range(n)]
    common = rng.binomial(2, 0.4, size=(n, 5)).astype(float)
    y = (rng.uniform(size=n) < special.expit(-2.0 + 0.3 * common[:, 0])).astype(float)
    cases, controls = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    rare = np.zeros((n, 3))
    rare[cases[0], 0] = 1
    rare[cases[[1, 2]], 1] = 1
    rare[np.r_[cases[3:5], controls[:4]], 2] = 1
    G = pd.DataFrame(np.column_stack([common, rare]), index=ids)
    snps = pd.DataFrame({"chr": np.repeat([1, 2], 4), "bp": np.tile(np.arange(4), 2)})
    pheno = pd.DataFrame({"id": ids, "y": y})

    def p(**kw):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            res = bl.scan("y ~ 1 + (1|id)", pheno, G, snps, family="bernoulli",
                          progressbar=False, **kw)  # fmt: skip
        np.testing.assert_allclose(res.table["mac"].iloc[-3:], [1, 2, 6])
        return res.table["p"].to_numpy()

    default, one, none = p(), p(rare_mac=1), p(rare_mac=0)
    np.testing.assert_array_equal(default[:5], none[:5])
    assert one[5] == default[5] and one[6] == none[6] and one[7] == none[7]
    assert all(abs(default[j] / none[j] - 1) > 1e-3 for j in (5, 6, 7))


# -- errors (docs/errors.md, "Association scans") ------------------------------------------------
def _error_data(y) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(0)
    n = len(y)
    ids = [f"i{k}" for k in range(n)]
    G = pd.DataFrame(rng.binomial(2, 0.4, size=(n, 20)).astype(float), index=ids)
    snps = pd.DataFrame({"chr": np.repeat([1, 2], 10), "bp": np.tile(np.arange(10), 2)})
    return pd.DataFrame({"id": ids, "y": y}), G, snps


def _scan(y, **kw):
    pheno, G, snps = _error_data(y)
    return bl.scan("y ~ 1 + (1|id)", pheno, G, snps, progressbar=False, **kw)


def _binomial_scan(y, trials):
    pheno, G, snps = _error_data(y)
    pheno["n"] = trials
    return bl.scan(
        "y ~ 1 + (1|id)", pheno, G, snps, family="binomial", trials="n", progressbar=False
    )


def _loco_grms() -> dict:
    _, G, snps = _error_data(BINARY)
    return bl.loco_grms(G, snps["chr"])


BINARY = [0, 1] * 10
ERRORS = {
    "scan-family-unknown": (
        lambda: _scan(BINARY, family="logistic"),
        SpecificationError,
        "Unknown family 'logistic'",
    ),
    "scan-link-unavailable": (
        lambda: _scan(BINARY, family="poisson", link="logit"),
        SpecificationError,
        "Link 'logit' is not available for the poisson family",
    ),
    "scan-family-without-cgf": (
        lambda: _scan(BINARY, family=_NoCgf()),
        SpecificationError,
        "has no cumulant-generating function",
    ),
    "scan-all-controls": (
        lambda: _scan([0] * 20, family="bernoulli"),
        DataError,
        "The response 'y' is constant (0)",
    ),
    "scan-all-cases": (
        lambda: _scan([1] * 20, family="bernoulli"),
        DataError,
        "The response 'y' is constant (1)",
    ),
    "scan-binomial-no-failures": (
        lambda: _binomial_scan([1, 2, 3, 4] * 5, [1, 2, 3, 4] * 5),
        DataError,
        "The response has no failures",
    ),
    "scan-binomial-no-successes": (
        lambda: _binomial_scan([0] * 20, [1, 2, 3, 4] * 5),
        DataError,
        "The response has no cases",
    ),
    "scan-bernoulli-not-binary": (
        lambda: _scan([0, 2] * 10, family="bernoulli"),
        DataError,
        "The bernoulli response must be 0 or 1",
    ),
    "scan-poisson-negative": (
        lambda: _scan([-1, 3] * 10, family="poisson"),
        DataError,
        "The poisson response must hold non-negative integers",
    ),
    "scan-glmm-lrt": (
        lambda: _scan(BINARY, family="bernoulli", test="lrt"),
        SpecificationError,
        "test='lrt' is for Gaussian traits",
    ),
    "scan-glmm-exact": (
        lambda: _scan(BINARY, family="bernoulli", exact=["0"]),
        SpecificationError,
        "exact= refits markers of a Gaussian scan",
    ),
    "scan-rare-mac-invalid": (
        lambda: _scan(BINARY, family="bernoulli", rare_mac=-1),
        SpecificationError,
        "rare_mac must be a minor allele count >= 0",
    ),
    "scan-rare-mac-gaussian": (
        lambda: _scan(BINARY, rare_mac=5),
        SpecificationError,
        "rare_mac sets the exact rare-marker test of binary and count traits",
    ),
    "scan-low-rank-invalid": (
        lambda: _scan(BINARY, low_rank="yes"),
        SpecificationError,
        "low_rank must be True, False or None (choose by cost); got 'yes'.",
    ),
    "scan-low-rank-glmm": (
        lambda: _scan(BINARY, family="bernoulli", low_rank=True),
        SpecificationError,
        "low_rank=True is for Gaussian traits",
    ),
    "scan-low-rank-dense-kinship": (
        lambda: _scan(BINARY, low_rank=True, kinship=_loco_grms()),
        SpecificationError,
        "low_rank=True needs kinships held as their markers",
    ),
    "scan-posterior-shares-binary": (
        lambda: _scan(BINARY, family="bernoulli").posterior_shares(),
        SpecificationError,
        "posterior_shares refits markers of a Gaussian trait",
    ),
    "scan-posterior-shares-no-data": (
        lambda: ScanResult(
            pd.DataFrame({"SNP": ["a"], "p": [0.1]}), pd.DataFrame(), "y ~ (1|id)", "wald", True, 10
        ).posterior_shares(),
        SpecificationError,
        "This ScanResult holds no data to refit",
    ),
    "scan-posterior-shares-top": (
        lambda: _scan(BINARY).posterior_shares(top=0),
        SpecificationError,
        "top must be a whole number >= 1; got 0.",
    ),
}


class _NoCgf(Bernoulli):
    """A binary family without a cumulant-generating function."""

    def response_cgf(self, t, eta, trials=None):
        raise NotImplementedError("no CGF")


@pytest.mark.parametrize("case_id", list(ERRORS))
def test_scan_error_catalogue(case_id):
    call, error, phrase = ERRORS[case_id]
    with pytest.raises(error, match=re.escape(phrase)):
        call()


def test_scan_error_catalogue_is_documented():
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("## Association scans", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`(scan-[a-z0-9-]+)`", section))
    assert documented == set(ERRORS)
