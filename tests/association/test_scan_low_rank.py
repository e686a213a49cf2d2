"""The scan's SNP-space route (LOCO kinships held as their markers) against the dense route
and against dense linear algebra written here.

The data have fewer LOCO markers (40) than individuals (120), the case the route is for. Every
reference forms the n × n LOCO GRM (``loco_grms``) and V = σ_g² K + σ_e² I and solves with
them directly; the route itself never forms an n × n matrix (checked by making
``LowRankKinship.matrix`` raise).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

import bayeslmm as bl
from bayeslmm.association.low_rank import LOW_RANK_ROUTE, low_rank_cheaper
from bayeslmm.association.tridiagonal import ROUTE as DENSE_ROUTE
from bayeslmm.errors import SpecificationError
from bayeslmm.kinship.low_rank import LowRankKinship

N, M, CHROMS = 120, 60, (1, 2, 3)
COLUMNS = ["beta", "se", "chi2", "p"]


@pytest.fixture(scope="module")
def data():
    """120 individuals in 30 families of four sibs (relatives: h² is well away from 0), 60
    markers on 3 chromosomes (4% missing), a covariate, a causal marker on chromosome 1."""
    rng = np.random.default_rng(21)
    freq = rng.uniform(0.1, 0.9, M)
    parents = rng.binomial(1, freq, size=(30, 4, M))  # two haplotypes per parent
    pick = rng.integers(0, 2, size=(30, 4, 2, M))  # each sib's transmitted haplotype
    mother = np.take_along_axis(parents[:, None, :2].repeat(4, 1), pick[:, :, :1], axis=2)
    father = np.take_along_axis(parents[:, None, 2:].repeat(4, 1), pick[:, :, 1:], axis=2)
    G = (mother + father).reshape(N, M).astype(float)
    G[rng.random((N, M)) < 0.04] = np.nan
    ids = [f"i{k:03d}" for k in range(N)]
    dos = pd.DataFrame(G, index=ids, columns=[f"rs{j}" for j in range(M)])
    snps = pd.DataFrame(
        {
            "snp": dos.columns,
            "chrom": np.repeat(CHROMS, M // len(CHROMS)),
            "bp": np.tile(1000 * np.arange(M // len(CHROMS)), len(CHROMS)),
        }
    )
    Z = np.nan_to_num(G - np.nanmean(G, 0))
    family = np.repeat(rng.normal(0.0, 0.8, 30), 4)  # shared by sibs: polygenic background
    pheno = pd.DataFrame({"id": ids, "x": rng.normal(size=N)})
    pheno["y"] = (
        1.0
        + 0.5 * pheno["x"]
        + 0.6 * Z[:, 4]
        + Z @ rng.normal(0, 0.15, M)
        + family
        + rng.normal(size=N)
    )
    return dos, snps, pheno


def quiet_scan(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return bl.scan(*args, progressbar=False, **kwargs)


def imputed(dos: pd.DataFrame, snp: str) -> np.ndarray:
    x = dos[snp].to_numpy(dtype=float)
    return np.where(np.isnan(x), np.nanmean(x), x)


def reml_profile(y, X, K, h2):
    """−2ℓ_R at h² (σ² profiled out) with the dense D = h²K + (1 − h²)I."""
    n, p = X.shape
    D = h2 * K + (1.0 - h2) * np.eye(n)
    Di = np.linalg.inv(D)
    xdx = X.T @ Di @ X
    r = y - X @ np.linalg.solve(xdx, X.T @ Di @ y)
    return np.linalg.slogdet(D)[1] + np.linalg.slogdet(xdx)[1] + (n - p) * np.log(r @ Di @ r)


def reml_h2(y, X, K):
    """h² = σ_g²/(σ_g² + σ_e²) maximising the dense restricted likelihood."""
    res = optimize.minimize_scalar(
        lambda h: reml_profile(y, X, K, h), bounds=(0.0, 1.0), method="bounded",
        options={"xatol": 1e-12},
    )  # fmt: skip
    return float(res.x)


def gls_residual_ss(y, X, Vi):
    """rᵀV⁻¹r of the GLS fit of y on X."""
    r = y - X @ np.linalg.solve(X.T @ Vi @ X, X.T @ Vi @ y)
    return r @ Vi @ r


def no_dense_matrix(monkeypatch):
    """Make any use of a low-rank kinship's n × n matrix fail."""

    def refuse(self):
        raise AssertionError(f"the n × n matrix of {self.name} was formed")

    monkeypatch.setattr(LowRankKinship, "matrix", property(refuse))


# -- the routes agree ------------------------------------------------------------------------
@pytest.mark.parametrize("test", ["wald", "lrt"])
def test_low_rank_route_equals_the_dense_route(data, monkeypatch, test):
    dos, snps, pheno = data
    options = dict(test=test, exact=["rs4", "rs45"], block_size=7)
    dense = quiet_scan("y ~ x + (1 | id)", pheno, dos, snps, low_rank=False, **options)
    no_dense_matrix(monkeypatch)
    low = quiet_scan("y ~ x + (1 | id)", pheno, dos, snps, low_rank=True, **options)
    assert (dense.null_models["route"] == DENSE_ROUTE).all()
    assert (low.null_models["route"] == LOW_RANK_ROUTE).all()
    assert (low.null_models["rank"] == 2 * M // 3).all()  # 40 LOCO markers, n = 120
    np.testing.assert_allclose(low.table[COLUMNS], dense.table[COLUMNS], rtol=1e-8)
    assert low.table["exact"].sum() == 2
    for name in ("sigma_g2", "sigma_e2", "h2", "h2_se", "loglik_reml"):
        np.testing.assert_allclose(low.null_models[name], dense.null_models[name], rtol=1e-6)
    refits = ["beta", "se", "chi2", "sigma_g2", "sigma_e2", "h2"]
    np.testing.assert_allclose(low.exact_fits[refits], dense.exact_fits[refits], rtol=1e-6)
    assert low.lambda_gc() == pytest.approx(dense.lambda_gc(), rel=1e-8)


def test_one_marker_equals_dense_gls_with_v_at_the_null(data, monkeypatch):
    """beta, SE, Wald and likelihood-ratio statistics of a marker from V = σ_g² K + σ_e² I
    formed here, with the null's variance components found here by a dense REML search."""
    dos, snps, pheno = data
    no_dense_matrix(monkeypatch)
    wald = quiet_scan("y ~ x + (1 | id)", pheno, dos, snps, low_rank=True)
    lrt = quiet_scan("y ~ x + (1 | id)", pheno, dos, snps, low_rank=True, test="lrt")
    loco = bl.loco_grms(dos, snps["chrom"])
    y = pheno["y"].to_numpy()
    X0 = np.column_stack([np.ones(N), pheno["x"]])
    for snp, chrom in (("rs4", "1"), ("rs33", "2"), ("rs58", "3")):
        K = loco[chrom].matrix
        row = wald.null_models.set_index("chr").loc[chrom]
        h2 = reml_h2(y, X0, K)
        assert row.sigma_g2 / (row.sigma_g2 + row.sigma_e2) == pytest.approx(h2, abs=1e-6)
        assert 0.05 < h2 < 0.95  # an interior estimate: the check has teeth
        V = row.sigma_g2 * K + row.sigma_e2 * np.eye(N)
        X1 = np.column_stack([X0, imputed(dos, snp)])
        Vi = np.linalg.inv(V)
        cov = np.linalg.inv(X1.T @ Vi @ X1)
        beta = cov @ X1.T @ Vi @ y
        got = wald.table.set_index("SNP").loc[snp]
        assert got.beta == pytest.approx(beta[-1], rel=1e-8)
        assert got.se == pytest.approx(np.sqrt(cov[-1, -1]), rel=1e-8)
        assert got.chi2 == pytest.approx(beta[-1] ** 2 / cov[-1, -1], rel=1e-8)
        assert got.p == pytest.approx(stats.chi2.sf(got.chi2, 1), rel=1e-12)
        # ML with h² at the null value, σ² profiled: n log(q₀ / q₁) in V's units

        q0, q1 = (gls_residual_ss(y, X, Vi) for X in (X0, X1))
        got = lrt.table.set_index("SNP").loc[snp]
        assert got.chi2 == pytest.approx(N * np.log(q0 / q1), rel=1e-8)


def test_exact_refit_equals_a_dense_reml_refit(data, monkeypatch):
    dos, snps, pheno = data
    no_dense_matrix(monkeypatch)
    res = quiet_scan("y ~ x + (1 | id)", pheno, dos, snps, low_rank=True, exact=["rs4"])
    K = bl.loco_grms(dos, snps["chrom"])["1"].matrix
    y = pheno["y"].to_numpy()
    X1 = np.column_stack([np.ones(N), pheno["x"], imputed(dos, "rs4")])
    h2 = reml_h2(y, X1, K)
    D = h2 * K + (1.0 - h2) * np.eye(N)
    Di = np.linalg.inv(D)
    xdx_inv = np.linalg.inv(X1.T @ Di @ X1)
    beta = xdx_inv @ X1.T @ Di @ y
    r = y - X1 @ beta
    sigma2 = r @ Di @ r / (N - 3)
    got = res.table.set_index("SNP").loc["rs4"]
    assert got.exact
    assert got.beta == pytest.approx(beta[-1], rel=1e-6)
    assert got.se == pytest.approx(np.sqrt(sigma2 * xdx_inv[-1, -1]), rel=1e-6)
    refit = res.exact_fits.set_index("SNP").loc["rs4"]
    assert refit.sigma_g2 == pytest.approx(h2 * sigma2, rel=1e-6)
    assert refit.sigma_e2 == pytest.approx((1 - h2) * sigma2, rel=1e-6)


def test_without_a_constant_the_dosage_itself_is_tested(data, monkeypatch):
    dos, snps, pheno = data
    no_dense_matrix(monkeypatch)
    res = quiet_scan("y ~ 0 + x + (1 | id)", pheno, dos, snps, low_rank=True)
    dense = quiet_scan("y ~ 0 + x + (1 | id)", pheno, dos, snps, low_rank=False)
    np.testing.assert_allclose(res.table[COLUMNS], dense.table[COLUMNS], rtol=1e-8)
    K = bl.loco_grms(dos, snps["chrom"])["2"].matrix
    row = res.null_models.set_index("chr").loc["2"]
    V = row.sigma_g2 * K + row.sigma_e2 * np.eye(N)
    X1 = np.column_stack([pheno["x"], imputed(dos, "rs30")])
    Vi = np.linalg.inv(V)
    cov = np.linalg.inv(X1.T @ Vi @ X1)
    beta = cov @ X1.T @ Vi @ pheno["y"].to_numpy()
    assert res.table.set_index("SNP").loc["rs30", "beta"] == pytest.approx(beta[-1], rel=1e-8)


def test_loco_false_and_standardised_markers(data, monkeypatch):
    dos, snps, pheno = data
    no_dense_matrix(monkeypatch)
    freq = dos.mean() / 2.0  # NaN skipped: the called genotypes' frequency
    minor = np.minimum(freq, 1.0 - freq)
    for options in (dict(loco=False), dict(standardize=True, maf=0.15)):
        kept = int((minor >= options.get("maf", 0.0)).sum())
        low = quiet_scan("y ~ x + (1 | id)", pheno, dos, snps, low_rank=True, **options)
        dense = quiet_scan("y ~ x + (1 | id)", pheno, dos, snps, low_rank=False, **options)
        assert (low.null_models["route"] == LOW_RANK_ROUTE).all()
        assert low.table.shape[0] == kept < N
        # one kinship of all kept markers, or LOCO kinships of fewer
        assert (low.null_models["rank"] == kept).all() == ("loco" in options)
        np.testing.assert_allclose(low.table[COLUMNS], dense.table[COLUMNS], rtol=1e-8)
        np.testing.assert_allclose(low.null_models["h2"], dense.null_models["h2"], rtol=1e-6)


def test_dask_input_and_shuffled_rows_give_the_same_low_rank_table(data):
    """Genotypes as a Dask array (read a block at a time into the marker matrix) and the
    phenotype rows in another order than the genotype rows: the same table."""
    import dask.array as da

    dos, snps, pheno = data
    ref = quiet_scan("y ~ x + (1 | id)", pheno, dos, snps, low_rank=True)
    lazy = quiet_scan(
        "y ~ x + (1 | id)", pheno.sample(frac=1, random_state=2),
        da.from_array(dos.to_numpy(), chunks=(N // 3, 13)), snps, ids=dos.index,
        low_rank=True, block_size=11,
    )  # fmt: skip
    assert (lazy.null_models["route"] == LOW_RANK_ROUTE).all()
    np.testing.assert_allclose(lazy.table[COLUMNS], ref.table[COLUMNS], rtol=1e-9)


# -- which route -------------------------------------------------------------------------
def test_the_cheaper_route_is_taken_by_default(data):
    dos, snps, pheno = data
    assert low_rank_cheaper(N, [M // 3] * 3)  # 40 LOCO markers for 120 individuals
    auto = quiet_scan("y ~ x + (1 | id)", pheno, dos, snps)
    assert (auto.null_models["route"] == LOW_RANK_ROUTE).all()
    # 40 individuals for the same 40 LOCO markers: the dense route
    few = pheno.iloc[:40]
    assert not low_rank_cheaper(40, [M // 3] * 3)
    auto = quiet_scan("y ~ x + (1 | id)", few, dos, snps)
    assert (auto.null_models["route"] == DENSE_ROUTE).all()


def test_cost_model_crosses_over_below_n_markers():
    """SNP space pays for LOCO kinships of up to about 0.8 n markers, never beyond n."""
    n = 10_000
    share = np.arange(10, 121, 5) / 100  # LOCO markers / n: 9 chromosomes of 10
    cheaper = [low_rank_cheaper(n, [round(f * n / 9)] * 10) for f in share]
    assert all(cheaper[: int(np.sum(share <= 0.7))])
    assert not any(np.array(cheaper)[share >= 1.0])


def test_given_low_rank_kinships_take_the_low_rank_route(data):
    dos, snps, pheno = data
    chrom = snps.set_index("snp")["chrom"]
    given = {
        c: bl.grm(dos.loc[:, chrom.index[chrom != c]], low_rank=True, name=f"loco{c}")
        for c in CHROMS
    }
    assert all(isinstance(k, LowRankKinship) for k in given.values())
    low = quiet_scan("y ~ x + (1 | id)", pheno, dos, snps, kinship=given)
    built = quiet_scan("y ~ x + (1 | id)", pheno, dos, snps, low_rank=False)
    assert (low.null_models["route"] == LOW_RANK_ROUTE).all()
    np.testing.assert_allclose(low.table[COLUMNS], built.table[COLUMNS], rtol=1e-8)
    # forced dense: the same kinships formed as n × n matrices
    dense = quiet_scan("y ~ x + (1 | id)", pheno, dos, snps, kinship=given, low_rank=False)
    assert (dense.null_models["route"] == DENSE_ROUTE).all()
    np.testing.assert_allclose(dense.table[COLUMNS], built.table[COLUMNS], rtol=1e-8)
    with pytest.raises(SpecificationError, match="low_rank=True needs kinships held as"):
        bl.scan("y ~ x + (1 | id)", pheno, dos, snps, low_rank=True,
                kinship=bl.loco_grms(dos, snps["chrom"]), progressbar=False)  # fmt: skip


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(low_rank="yes"), "low_rank must be True, False or None"),
        (dict(low_rank=True, family="bernoulli"), "low_rank=True is for Gaussian traits"),
    ],
)
def test_bad_low_rank_option_names_the_problem(data, kwargs, match):
    dos, snps, pheno = data
    frame = pheno.assign(case=(pheno["y"] > pheno["y"].median()).astype(int))
    response = "case" if "family" in kwargs else "y"
    with pytest.raises(SpecificationError, match=match):
        bl.scan(f"{response} ~ x + (1 | id)", frame, dos, snps, progressbar=False, **kwargs)


def test_binary_scan_keeps_the_dense_kinship(data):
    """A binary trait's null GLMM needs the n × n kinship; low_rank=None does not change it."""
    dos, snps, pheno = data
    frame = pheno.assign(case=(pheno["y"] > pheno["y"].quantile(0.7)).astype(int))
    res = quiet_scan("case ~ x + (1 | id)", frame, dos, snps, family="bernoulli")
    assert "route" not in res.null_models and res.table["p"].notna().all()


def test_cli_low_rank_flag(data, tmp_path):
    from bayeslmm.cli import main

    dos, snps, pheno = data
    dos.rename_axis("id").to_csv(tmp_path / "dos.csv")
    snps.rename(columns={"chrom": "chr"}).to_csv(tmp_path / "map.csv", index=False)
    pheno.to_csv(tmp_path / "pheno.csv", index=False)
    base = ["scan", "--dosage", str(tmp_path / "dos.csv"), "--map", str(tmp_path / "map.csv"),
            "--pheno", str(tmp_path / "pheno.csv"), "--formula", "y ~ x + (1|id)"]  # fmt: skip
    tables = {}
    for flag in ("--low-rank", "--no-low-rank"):
        out = tmp_path / flag.strip("-")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            assert main([*base, flag, "--out", str(out)]) == 0
        null = pd.read_csv(out / "scan_null.tsv", sep="\t")
        assert (null["route"] == (LOW_RANK_ROUTE if flag == "--low-rank" else DENSE_ROUTE)).all()
        tables[flag] = pd.read_csv(out / "scan.tsv", sep="\t")
    np.testing.assert_allclose(
        tables["--low-rank"][COLUMNS], tables["--no-low-rank"][COLUMNS], rtol=1e-8
    )
