"""The association scan (``bl.scan``) against dense linear algebra written here.

Every reference below forms V = σ_g² K + σ_e² I (K the chromosome's LOCO GRM from
``loco_grms``) and solves with it directly; the scan works in K's eigenbasis, block by block.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

import bayeslmm as bl
from bayeslmm.errors import BayesLMMError, DataError, SpecificationError
from bayeslmm.results.scan_result import ScanResult

N, M, CHROMS = 36, 75, (1, 2, 3)


@pytest.fixture(scope="module")
def data():
    """36 individuals, 75 markers on 3 chromosomes (5% missing), a covariate, a causal marker
    and a polygenic background."""
    rng = np.random.default_rng(11)
    G = rng.binomial(2, rng.uniform(0.1, 0.9, M), size=(N, M)).astype(float)
    G[rng.random((N, M)) < 0.05] = np.nan
    ids = [f"i{k:02d}" for k in range(N)]
    dos = pd.DataFrame(G, index=ids, columns=[f"rs{j}" for j in range(M)])
    snps = pd.DataFrame(
        {
            "snp": dos.columns,
            "chrom": np.repeat(CHROMS, M // len(CHROMS)),
            "bp": np.tile(1000 * np.arange(M // len(CHROMS)), len(CHROMS)),
            "a1": "A",
            "a2": "G",
        }
    )
    Z = np.nan_to_num(G - np.nanmean(G, 0))
    causal = int(np.argmax(np.nanvar(G[:, :25], axis=0)))  # a common marker on chromosome 1
    pheno = pd.DataFrame({"id": ids, "x": rng.normal(size=N)})
    pheno.attrs["causal"] = f"rs{causal}"
    pheno["y"] = (
        2.0
        + 0.5 * pheno["x"]
        + 1.2 * Z[:, causal]
        + Z @ rng.normal(0, 0.15, M)
        + rng.normal(size=N)
    )
    return dos, snps, pheno


def quiet_scan(*args, **kwargs) -> ScanResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return bl.scan(*args, progressbar=False, **kwargs)


def imputed(dos: pd.DataFrame, snp: str) -> np.ndarray:
    x = dos[snp].to_numpy(dtype=float)
    return np.where(np.isnan(x), np.nanmean(x), x)


def dense_gls(y, X, V):
    """β̂ and Cov(β̂) of y ~ N(Xβ, V), V known."""
    Vi = np.linalg.inv(V)
    cov = np.linalg.inv(X.T @ Vi @ X)
    return cov @ X.T @ Vi @ y, cov


def ml_profile(y, X, K, h2):
    """−2ℓ_ML at h², σ² and β profiled out, with the dense D = h²K + (1 − h²)I."""
    D = h2 * K + (1.0 - h2) * np.eye(y.size)
    Di = np.linalg.inv(D)
    beta = np.linalg.solve(X.T @ Di @ X, X.T @ Di @ y)
    r = y - X @ beta
    n = y.size
    return np.linalg.slogdet(D)[1] + n * np.log(r @ Di @ r / n) + n * (1 + np.log(2 * np.pi))


def ml_minimum(y, X, K):
    """min of :func:`ml_profile` over h² ∈ [0, 1/(1 + 1e-5)] (GEMMA's λ ≤ 1e5: with an
    intercept and a centred GRM the ML likelihood is unbounded as h² → 1)."""
    top = 1.0 / (1.0 + 1e-5)
    res = optimize.minimize_scalar(
        lambda h: ml_profile(y, X, K, h), bounds=(0.0, top), method="bounded",
        options={"xatol": 1e-12},
    )  # fmt: skip
    return min(res.fun, ml_profile(y, X, K, 0.0), ml_profile(y, X, K, top))


# -- the bulk test: variance components held at the null ------------------------------------
@pytest.mark.parametrize("test", ["wald", "lrt"])
def test_each_marker_equals_gls_with_v_fixed_at_the_null(data, test):
    dos, snps, pheno = data
    res = quiet_scan("y ~ x + (1 | id)", pheno, dos, snps, test=test)
    loco = bl.loco_grms(dos, snps["chrom"])
    y = pheno["y"].to_numpy()
    table = res.table.set_index("SNP")
    nulls = res.null_models.set_index("chr")
    for snp in ("rs3", "rs30", "rs71"):
        chrom = snps.set_index("snp").loc[snp, "chrom"]
        K = loco[str(chrom)].matrix
        # the null's variance components: a REML fit of its own on the LOCO GRM
        null_fit = bl.LMM("y ~ x + (1 | id)", pheno, kinship={"id": loco[str(chrom)]}).fit(
            method="reml"
        )
        theta = null_fit.parameters["estimate"].to_numpy()
        row = nulls.loc[str(chrom)]
        np.testing.assert_allclose([row.sigma_g2, row.sigma_e2], theta, rtol=1e-10)
        V = theta[0] * K + theta[1] * np.eye(N)
        X0 = np.column_stack([np.ones(N), pheno["x"]])
        X1 = np.column_stack([X0, imputed(dos, snp)])
        beta, cov = dense_gls(y, X1, V)
        got = table.loc[snp]
        assert got.beta == pytest.approx(beta[-1], rel=1e-8)
        assert got.se == pytest.approx(np.sqrt(cov[-1, -1]), rel=1e-8)
        wald = beta[-1] ** 2 / cov[-1, -1]
        if test == "wald":
            assert got.chi2 == pytest.approx(wald, rel=1e-8)
        else:  # ML with h² at the null value, σ² profiled under both models
            h2 = theta[0] / theta.sum()
            lrt = ml_profile(y, X0, K, h2) - ml_profile(y, X1, K, h2)
            assert got.chi2 == pytest.approx(lrt, rel=1e-8)
        assert got.p == pytest.approx(stats.chi2.sf(got.chi2, 1), rel=1e-12)
        assert not got.exact


def test_without_a_constant_the_dosage_itself_is_tested(data):
    """``y ~ 0 + x``: no intercept, so centring the marker would change the model."""
    dos, snps, pheno = data
    res = quiet_scan("y ~ 0 + x + (1 | id)", pheno, dos, snps)
    K = bl.loco_grms(dos, snps["chrom"])["2"].matrix
    row = res.null_models.set_index("chr").loc["2"]
    V = row.sigma_g2 * K + row.sigma_e2 * np.eye(N)
    X1 = np.column_stack([pheno["x"], imputed(dos, "rs40")])
    beta, cov = dense_gls(pheno["y"].to_numpy(), X1, V)
    got = res.table.set_index("SNP").loc["rs40"]
    assert got.beta == pytest.approx(beta[-1], rel=1e-8)
    assert got.se == pytest.approx(np.sqrt(cov[-1, -1]), rel=1e-8)


# -- exact: each marker's own variance components --------------------------------------------
def test_exact_wald_equals_a_full_reml_refit(data):
    dos, snps, pheno = data
    res = quiet_scan("y ~ x + (1 | id)", pheno, dos, snps, exact=["rs3", "rs55"])
    loco = bl.loco_grms(dos, snps["chrom"])
    table = res.table.set_index("SNP")
    assert table["exact"].sum() == 2
    for snp, chrom in (("rs3", "1"), ("rs55", "3")):
        frame = pheno.assign(marker=imputed(dos, snp))
        fit = bl.LMM("y ~ x + marker + (1 | id)", frame, kinship={"id": loco[chrom]}).fit(
            method="reml"
        )
        ref = fit.fixed_effects().loc["marker"]
        got = table.loc[snp]
        assert got.exact
        assert got.beta == pytest.approx(ref["estimate"], rel=1e-6)
        assert got.se == pytest.approx(ref["se"], rel=1e-6)
        assert got.chi2 == pytest.approx((ref["estimate"] / ref["se"]) ** 2, rel=1e-6)
        refit = res.exact_fits.set_index("SNP").loc[snp]
        assert refit.chr == chrom and refit.beta == got.beta
        theta = fit.parameters["estimate"].to_numpy()
        np.testing.assert_allclose([refit.sigma_g2, refit.sigma_e2], theta, rtol=1e-6)
        assert refit.h2 == pytest.approx(fit.heritability().loc["h2", "estimate"], rel=1e-6)
    # the refit moved the variance components, so exact and fixed-V answers differ
    fixed = quiet_scan("y ~ x + (1 | id)", pheno, dos, snps).table.set_index("SNP")
    assert table.loc["rs3", "se"] != pytest.approx(fixed.loc["rs3", "se"], rel=1e-6)
    others = table.index.difference(["rs3", "rs55"])
    np.testing.assert_allclose(table.loc[others, "p"], fixed.loc[others, "p"], rtol=1e-12)


def test_exact_lrt_maximises_h2_under_both_models(data):
    dos, snps, pheno = data
    res = quiet_scan("y ~ x + (1 | id)", pheno, dos, snps, exact=["rs3"], test="lrt")
    K = bl.loco_grms(dos, snps["chrom"])["1"].matrix
    y = pheno["y"].to_numpy()
    X0 = np.column_stack([np.ones(N), pheno["x"]])
    X1 = np.column_stack([X0, imputed(dos, "rs3")])
    lrt = ml_minimum(y, X0, K) - ml_minimum(y, X1, K)
    got = res.table.set_index("SNP").loc["rs3"]
    assert got.chi2 == pytest.approx(lrt, rel=1e-6)
    assert got.p == pytest.approx(stats.chi2.sf(lrt, 1), rel=1e-5)


# -- kinships ------------------------------------------------------------------------------
@pytest.mark.parametrize("buffers", [0, 1, 2])
def test_built_loco_kinships_equal_loco_grms_and_block_size_does_not_matter(
    data, monkeypatch, buffers
):
    """Crossproducts kept from the first pass, two to an n × n buffer (0, 2 or all 3
    chromosomes: a pair, and one alone), recomputed for the others: the same kinships."""
    from bayeslmm.association.engine import scan

    cached = min(2 * buffers, len(CHROMS))
    names = scan.__globals__  # the module the function runs in
    monkeypatch.setitem(names, "CROSSPRODUCT_CACHE_BYTES", buffers * N * N * 8)
    provider = names["_KinshipProvider"]
    calls = []
    original = provider._crossproduct

    def counted(self, c, *args):
        calls.append(c)
        return original(self, c, *args)

    monkeypatch.setattr(provider, "_crossproduct", counted)
    dos, snps, pheno = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        built = scan("y ~ x + (1 | id)", pheno, dos, snps, block_size=7, progressbar=False)
    assert len(calls) == 2 * len(CHROMS) - cached  # first pass, then the ones not kept
    given = quiet_scan(
        "y ~ x + (1 | id)", pheno, dos, snps, kinship=bl.loco_grms(dos, snps["chrom"]),
        block_size=1000,
    )  # fmt: skip
    cols = ["beta", "se", "chi2", "p"]
    np.testing.assert_allclose(built.table[cols], given.table[cols], rtol=1e-9)
    np.testing.assert_allclose(
        built.null_models["h2"], given.null_models["h2"], rtol=1e-9, atol=1e-12
    )


@pytest.mark.parametrize("noise", [0.0, 1.0])
def test_loco_false_uses_one_kinship_from_all_markers(data, noise):
    # noise 1.0: the tridiagonal REML's ℓ(h² = 1) on the centred GRM (σ_e² = 0, rank n − 1)
    # is a rounding artefact that once beat the interior optimum for the given kinship only
    dos, snps, pheno = data
    pheno = pheno.assign(y=pheno["y"] + noise * np.random.default_rng(3).normal(size=len(pheno)))
    res = quiet_scan("y ~ x + (1 | id)", pheno, dos, snps, loco=False)
    given = quiet_scan("y ~ x + (1 | id)", pheno, dos, snps, loco=False, kinship=bl.grm(dos))
    np.testing.assert_allclose(res.table["p"], given.table["p"], rtol=1e-9)
    assert res.null_models["h2"].nunique() == 1  # one null model for every chromosome
    assert (res.null_models["reduce_s"].iloc[1:] == 0).all()  # one reduction of the kinship
    assert not res.loco
    loco = quiet_scan("y ~ x + (1 | id)", pheno, dos, snps)
    assert res.table["p"].to_numpy() != pytest.approx(loco.table["p"].to_numpy())


# -- inputs ------------------------------------------------------------------------------------
def test_inputs_plink_array_dask_and_row_order_agree(data, tmp_path):
    from bed_reader import to_bed

    dos, snps, pheno = data
    ref = quiet_scan("y ~ x + (1 | id)", pheno, dos, snps)
    to_bed(
        tmp_path / "g.bed",
        np.array(dos.to_numpy()),
        properties={
            "iid": dos.index, "sid": dos.columns, "chromosome": snps["chrom"].astype(str),
            "bp_position": snps["bp"], "allele_1": snps["a1"], "allele_2": snps["a2"],
        },
    )  # fmt: skip
    plink = quiet_scan("y ~ x + (1 | id)", pheno, str(tmp_path / "g"), block_size=10)
    pd.testing.assert_frame_equal(plink.table, ref.table, rtol=1e-9)
    array = quiet_scan("y ~ x + (1 | id)", pheno, dos.to_numpy(), snps, ids=dos.index)
    np.testing.assert_allclose(array.table["p"], ref.table["p"], rtol=1e-9)
    import dask.array as da

    lazy = quiet_scan(
        "y ~ x + (1 | id)", pheno, da.from_array(dos.to_numpy(), chunks=(N, 20)), snps,
        ids=dos.index,
    )  # fmt: skip
    np.testing.assert_allclose(lazy.table["p"], ref.table["p"], rtol=1e-9)
    # phenotype rows shuffled, genotype rows reversed, one extra individual without genotypes
    extra = pd.DataFrame({"id": ["nobody"], "x": [0.0], "y": [1.0]})
    shuffled = pd.concat([pheno.sample(frac=1, random_state=1), extra])
    with pytest.warns(UserWarning, match="1 phenotyped individuals have no genotypes"):
        moved = bl.scan("y ~ x + (1 | id)", shuffled, dos.iloc[::-1], snps, progressbar=False)
    np.testing.assert_allclose(moved.table["p"], ref.table["p"], rtol=1e-8)
    assert moved.n_obs == N


def test_dask_input_scans_unchanged_on_a_distributed_client(data):
    """The marker loop reads Dask blocks on a dask.distributed cluster: same table."""
    import dask.array as da
    import distributed

    dos, snps, pheno = data
    ref = quiet_scan("y ~ x + (1 | id)", pheno, dos, snps)
    with distributed.Client(
        processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None
    ):
        lazy = quiet_scan(
            "y ~ x + (1 | id)", pheno, da.from_array(dos.to_numpy(), chunks=(N // 2, 15)),
            snps, ids=dos.index,
        )  # fmt: skip
    np.testing.assert_allclose(lazy.table["p"], ref.table["p"], rtol=1e-9)
    np.testing.assert_allclose(lazy.table["beta"], ref.table["beta"], rtol=1e-9)


def test_sgkit_dataset_input_equals_the_dosage_table(data):
    """An sgkit-layout xarray Dataset (variants × samples), with call_dosage as a Dask array
    or call_genotype (allele 1 counted, -1 missing): the same table as the DataFrame."""
    import dask.array as da
    import xarray as xr

    dos, snps, pheno = data
    ref = quiet_scan("y ~ x + (1 | id)", pheno, dos, snps)
    G = dos.to_numpy().T  # variants × samples
    contigs = sorted(snps["chrom"].astype(str).unique())
    coords = {
        "variant_contig": ("variants", [contigs.index(str(c)) for c in snps["chrom"]]),
        "variant_position": ("variants", snps["bp"].to_numpy()),
        "variant_id": ("variants", snps["snp"].to_numpy()),
        "variant_allele": (("variants", "alleles"), np.column_stack([snps["a2"], snps["a1"]])),
        "sample_id": ("samples", dos.index.to_numpy()),
    }
    lazy = xr.Dataset(
        {"call_dosage": (("variants", "samples"), da.from_array(G, chunks=(20, N))), **coords},
        attrs={"contigs": contigs},
    )
    called = np.nan_to_num(G, nan=-1).astype(int)
    gt = np.stack(
        [np.where(called < 0, -1, called >= 2), np.where(called < 0, -1, called >= 1)], -1
    )
    calls = xr.Dataset(
        {"call_genotype": (("variants", "samples", "ploidy"), gt.astype(np.int8)), **coords},
        attrs={"contigs": contigs},
    )
    for ds in (lazy, calls):
        got = quiet_scan("y ~ x + (1 | id)", pheno, ds)
        pd.testing.assert_frame_equal(got.table, ref.table, rtol=1e-9)
    with pytest.raises(DataError, match="lacks variant_position"):
        bl.scan("y ~ x + (1 | id)", pheno, lazy.drop_vars("variant_position"))


def test_table_columns_alleles_frequencies_and_counts(data):
    dos, snps, pheno = data
    res = quiet_scan("y ~ x + (1 | id)", pheno, dos, snps)
    t = res.table
    assert list(t.columns) == [
        "SNP", "chr", "bp", "A1", "A2", "freq", "n", "beta", "se", "chi2", "p", "exact",
    ]  # fmt: skip
    np.testing.assert_allclose(t["freq"], np.nanmean(dos.to_numpy(), 0) / 2)
    np.testing.assert_array_equal(t["n"], dos.notna().sum().to_numpy())
    assert t["chr"].tolist() == snps["chrom"].astype(str).tolist()
    assert (t["A1"] == "A").all()
    # the causal marker stands out
    assert res.top(1)["SNP"].item() == pheno.attrs["causal"]


def test_monomorphic_markers_are_left_out_with_a_note(data):
    dos, snps, pheno = data
    dos = dos.copy()
    dos["rs10"] = 2.0
    with pytest.warns(UserWarning, match="1 monomorphic"):
        res = bl.scan("y ~ x + (1 | id)", pheno, dos, snps, progressbar=False)
    assert "rs10" not in set(res.table["SNP"])
    assert res.table.shape[0] == M - 1


# -- result object -----------------------------------------------------------------------------
def test_result_plots_on_figures_lambda_and_tsv(data, tmp_path):
    import matplotlib

    dos, snps, pheno = data
    res = quiet_scan("y ~ x + (1 | id)", pheno, dos, snps)
    backend = matplotlib.get_backend()
    from matplotlib.figure import Figure

    assert isinstance(res.manhattan(), Figure) and isinstance(res.qq(), Figure)
    assert matplotlib.get_backend() == backend
    chi2 = stats.chi2.isf(res.table["p"], 1)
    assert res.lambda_gc() == pytest.approx(np.median(chi2) / stats.chi2.ppf(0.5, 1))
    back = pd.read_csv(res.to_tsv(tmp_path / "scan.tsv"), sep="\t", dtype={"chr": str})
    np.testing.assert_array_equal(back["p"], res.table["p"])  # full precision
    assert "lambda_gc" in repr(res)


# -- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"formula": "y ~ x"}, SpecificationError, "exactly one random term"),
        ({"formula": "y ~ x + (1 | id) + (1 | x)"}, SpecificationError, "exactly one random"),
        ({"formula": "y ~ (x | id)"}, SpecificationError, r"\(1 \| id\)"),
        ({"exact": ["nope"]}, DataError, "names that are not in the genotypes"),
        ({"test": "score"}, SpecificationError, "test must be one of"),
        ({"maf": 0.7}, DataError, "maf must lie"),
        ({"kinship": "K"}, SpecificationError, "one kinship per chromosome"),
        ({"formula": "y ~ x + (1 | sample)"}, SpecificationError, "'sample' is not a column"),
    ],
)
def test_bad_input_names_the_problem(data, kwargs, error, match):
    dos, snps, pheno = data
    args = {"formula": "y ~ x + (1 | id)", **kwargs}
    formula = args.pop("formula")
    with pytest.raises(error, match=match):
        bl.scan(formula, pheno, dos, snps, progressbar=False, **args)


def test_bad_genotype_input(data):
    dos, snps, pheno = data
    with pytest.raises(DataError, match="more than one row"):
        bl.scan("y ~ x + (1 | id)", pd.concat([pheno, pheno.iloc[:1]]), dos, snps)
    with pytest.raises(DataError, match="at least two chromosomes"):
        bl.scan("y ~ x + (1 | id)", pheno, dos, snps.assign(chrom=1))
    with pytest.raises(SpecificationError, match="SNP map"):
        bl.scan("y ~ x + (1 | id)", pheno, dos)
    with pytest.raises(DataError, match="no row in the SNP map"):
        bl.scan("y ~ x + (1 | id)", pheno, dos, snps.iloc[1:])
    with pytest.raises(DataError, match="holds the genotype ids"):
        bl.scan("y ~ x + (1 | id)", pheno.assign(id="x" + pheno["id"]), dos, snps)
    with pytest.raises(BayesLMMError, match="does not exist"):
        bl.scan("y ~ x + (1 | id)", pheno, "/nonexistent/prefix")


def test_a_kinship_scale_note_is_given_once_not_per_chromosome(data):
    from bayeslmm.kinship._kinship import KinshipScaleWarning

    dos, snps, pheno = data
    small = {
        c: bl.Kinship(0.2 * K.matrix, K.ids, name=f"small{c}")
        for c, K in bl.loco_grms(dos, snps["chrom"]).items()
    }
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bl.scan("y ~ x + (1 | id)", pheno, dos, snps, kinship=small, progressbar=False)
    scale = [w for w in caught if issubclass(w.category, KinshipScaleWarning)]
    assert len(scale) == 1 and "other chromosomes' kinships" in str(scale[0].message)
    assert scale[0].filename == __file__  # points at the caller
