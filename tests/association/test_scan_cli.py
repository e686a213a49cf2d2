"""``bayeslmm scan`` end to end: files, equality with ``bl.scan``, argument checks."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import bayeslmm as bl
from bayeslmm.cli import main

N, M = 40, 60


@pytest.fixture
def files(tmp_path):
    """A PLINK fileset (ids with leading zeros), the same dosages as CSV with a map, and a
    phenotype file with a covariate and one missing value."""
    from bed_reader import to_bed

    rng = np.random.default_rng(5)
    G = rng.binomial(2, rng.uniform(0.2, 0.8, M), size=(N, M)).astype(float)
    ids = [f"00{k}" for k in range(N)]
    snps = [f"rs{j}" for j in range(M)]
    chrom = np.repeat(["1", "2", "3"], M // 3)
    bp = np.tile(100 * np.arange(1, M // 3 + 1), 3)
    to_bed(
        tmp_path / "geno.bed",
        G,
        properties={"iid": ids, "sid": snps, "chromosome": chrom, "bp_position": bp},
    )
    pd.DataFrame(G, index=pd.Index(ids, name="id"), columns=snps).to_csv(tmp_path / "dos.csv")
    pd.DataFrame({"snp": snps, "chr": chrom, "bp": bp}).to_csv(tmp_path / "map.csv", index=False)
    pheno = pd.DataFrame({"id": ids, "sex": rng.integers(0, 2, N)})
    pheno["y"] = 1.5 * G[:, 2] + pheno["sex"] + rng.normal(size=N)
    pheno.loc[7, "y"] = np.nan
    pheno.to_csv(tmp_path / "pheno.csv", index=False)
    return tmp_path


def test_scan_writes_the_table_the_null_models_and_plots(files, capsys):
    out = files / "gwas"
    args = ["scan", "--bfile", str(files / "geno"), "--pheno", str(files / "pheno.csv")]
    assert main([*args, "--formula", "y ~ sex + (1|id)", "--out", str(out)]) == 0
    stdout, stderr = capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == [
        "manhattan.png", "qq.png", "scan.tsv", "scan_null.tsv",
    ]  # fmt: skip
    assert "60 markers on 3 chromosomes tested in 39 individuals" in stdout
    assert "1 individuals without a value of 'y' are left out" in stderr
    table = pd.read_csv(out / "scan.tsv", sep="\t", dtype={"chr": str, "SNP": str})
    pheno = pd.read_csv(files / "pheno.csv", dtype={"id": str})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ref = bl.scan("y ~ sex + (1|id)", pheno, str(files / "geno"), progressbar=False)
    np.testing.assert_allclose(table["p"], ref.table["p"], rtol=1e-12)
    assert table["SNP"].tolist() == ref.table["SNP"].tolist()
    assert f"smallest p: {ref.top(1)['SNP'].item()}" in stdout
    null = pd.read_csv(out / "scan_null.tsv", sep="\t", dtype={"chr": str})
    assert null["chr"].tolist() == ["1", "2", "3"]


def test_dosage_csv_with_map_no_loco_and_exact(files):
    out = files / "gwas"
    common = ["scan", "--pheno", str(files / "pheno.csv"), "--formula", "y ~ sex + (1|id)"]
    dosage = ["--dosage", str(files / "dos.csv"), "--map", str(files / "map.csv")]
    flags = ["--no-loco", "--exact", "rs2", "--test", "lrt", "--block-size", "7"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert main([*common, *dosage, *flags, "--out", str(out)]) == 0
        ref = bl.scan(
            "y ~ sex + (1|id)",
            pd.read_csv(files / "pheno.csv", dtype={"id": str}),
            str(files / "geno"),
            loco=False,
            exact=["rs2"],
            test="lrt",
            progressbar=False,
        )
    table = pd.read_csv(out / "scan.tsv", sep="\t")
    # the exact LRT optimises h² under both models: agreement to the optimiser's tolerance
    np.testing.assert_allclose(table["p"], ref.table["p"], rtol=1e-8)
    assert table.loc[table["SNP"] == "rs2", "exact"].item()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--formula", "y ~ sex"], "exactly one random term"),
        (["--formula", "y ~ sex + (1|id)", "--dosage", "DOS"], "--dosage needs --map"),
        (["--formula", "y ~ sex + (1|id)", "--exact", "rs999"], "not in the genotypes"),
        (["--formula", "y ~ sex + (1|sample)"], "'sample' is not a column"),
    ],
)
def test_bad_input_stops_with_one_line_and_leaves_the_folder_alone(files, capsys, extra, message):
    out = files / "gwas"
    out.mkdir()
    (out / "scan.tsv").write_text("an older result\n")
    source = ["--bfile", str(files / "geno")]
    if "--dosage" in extra:
        source = []
        extra = [e.replace("DOS", str(files / "dos.csv")) for e in extra]
    args = ["scan", *source, "--pheno", str(files / "pheno.csv"), *extra, "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert (out / "scan.tsv").read_text() == "an older result\n"
    assert sorted(p.name for p in out.iterdir()) == ["scan.tsv"]


def test_posterior_top_writes_each_hits_share_and_a_later_run_removes_it(files, capsys):
    out = files / "gwas"
    args = ["scan", "--bfile", str(files / "geno"), "--pheno", str(files / "pheno.csv"),
            "--formula", "y ~ sex + (1|id)", "--out", str(out)]  # fmt: skip
    assert main([*args, "--posterior-top", "1", "--seed", "2"]) == 0
    stdout = capsys.readouterr().out
    shares = pd.read_csv(out / "posterior_shares.tsv", sep="\t", dtype={"chr": str, "SNP": str})
    pheno = pd.read_csv(files / "pheno.csv", dtype={"id": str})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ref = bl.scan("y ~ sex + (1|id)", pheno, str(files / "geno"), progressbar=False)
        expected = ref.posterior_shares(top=1, seed=2)
    assert shares["SNP"].tolist() == ["rs2"] == expected["SNP"].tolist()
    np.testing.assert_allclose(shares["share"], expected["share"], rtol=1e-10)
    assert 0 < shares.loc[0, "share_low"] < shares.loc[0, "share"] < shares.loc[0, "share_high"]
    assert "rs2 (chr 1:300): share of the phenotypic variance" in stdout
    assert main(args) == 0  # without --posterior-top: the older shares are not left behind
    assert not (out / "posterior_shares.tsv").exists()
