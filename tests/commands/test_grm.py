"""``bayeslmm grm`` end to end, against a dense NumPy VanRaden GRM."""

import numpy as np
import pandas as pd
import pytest

from bayeslmm.cli import main
from bayeslmm.io import read_gcta_grm, read_matrix_csv


def dense_grm(X, maf=0.0, standardize=False):
    """Reference: mean-impute, keep polymorphic SNPs with MAF >= maf, one matrix product."""
    p = np.nanmean(X, axis=0) / 2
    keep = (p > 0) & (p < 1) & (np.minimum(p, 1 - p) >= maf)
    X, p = X[:, keep], p[keep]
    Z = np.where(np.isnan(X), 2 * p, X) - 2 * p
    if standardize:
        Z = Z / np.sqrt(2 * p * (1 - p))
        return Z @ Z.T / Z.shape[1]
    return Z @ Z.T / (2 * np.sum(p * (1 - p)))


@pytest.fixture
def genotypes():
    rng = np.random.default_rng(0)
    n, m = 24, 150
    X = rng.binomial(2, rng.uniform(0.02, 0.98, m), size=(n, m)).astype(float)
    X[rng.random((n, m)) < 0.05] = np.nan
    X[:, 7] = 2.0  # monomorphic: dropped with a note
    ids = [f"id{k:02d}" for k in range(n)]
    return X, ids


@pytest.mark.parametrize(("maf", "standardize"), [(0.0, False), (0.1, False), (0.05, True)])
def test_dosage_csv_to_csv_and_gcta(tmp_path, genotypes, capsys, maf, standardize):
    X, ids = genotypes
    pd.DataFrame(X, index=pd.Index(ids, name="id")).add_prefix("snp").to_csv(tmp_path / "g.csv")
    expected = dense_grm(X, maf, standardize)
    p = np.nanmean(X, axis=0) / 2
    keep = (p > 0) & (p < 1) & (np.minimum(p, 1 - p) >= maf)
    n_used, n_monomorphic = int(keep.sum()), int(np.sum((p == 0) | (p == 1)))
    flags = ["--maf", str(maf)] + (["--standardize"] if standardize else [])
    common = ["grm", "--dosage", str(tmp_path / "g.csv"), "--block-size", "16", *flags]

    assert main([*common, "--out", str(tmp_path / "out"), "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    assert f"GRM of 24 individuals from {n_used} of 150 SNPs" in out
    assert f"dropped {n_monomorphic} monomorphic SNP(s)" in err
    K = read_matrix_csv(tmp_path / "out.csv")
    assert K.ids == tuple(ids)
    np.testing.assert_allclose(K.matrix, expected, rtol=0, atol=1e-10)

    assert main([*common, "--out", str(tmp_path / "out")]) == 0  # gcta is the default
    G = read_gcta_grm(tmp_path / "out")
    assert G.ids == tuple(ids)
    np.testing.assert_allclose(G.matrix, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())
    # .grm.N.bin: SNPs (of those used) typed in both individuals of each pair.
    observed = (~np.isnan(X[:, keep])).astype(float)
    pairs = observed @ observed.T
    rows, cols = np.tril_indices(24)
    np.testing.assert_array_equal(
        np.fromfile(tmp_path / "out.grm.N.bin", dtype="<f4"), pairs[rows, cols]
    )


def test_bfile(tmp_path, genotypes, capsys):
    to_bed = pytest.importorskip("bed_reader").to_bed
    X, ids = genotypes
    to_bed(tmp_path / "g.bed", X, properties={"iid": ids})
    assert main(["grm", "--bfile", str(tmp_path / "g"), "--out", str(tmp_path / "k"),
                 "--format", "csv"]) == 0  # fmt: skip
    K = read_matrix_csv(tmp_path / "k.csv")
    np.testing.assert_allclose(K.matrix, dense_grm(X), rtol=0, atol=1e-10)
    assert K.ids == tuple(ids)


def test_input_error_is_reported_not_raised(tmp_path, capsys):
    (tmp_path / "bad.csv").write_text("id,s1,s2\na,0,3\nb,1,2\n")
    code = main(["grm", "--dosage", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "bayeslmm grm: error: Dosages must lie in [0, 2]" in capsys.readouterr().err


def test_source_is_required(capsys):
    with pytest.raises(SystemExit):
        main(["grm", "--out", "x"])
    assert "one of the arguments --bfile --dosage is required" in capsys.readouterr().err


def test_normalize_and_the_mean_diagonal_note(tmp_path, capsys):
    rng = np.random.default_rng(2)
    inbred = 2.0 * rng.binomial(1, 0.5, size=(12, 60))  # homozygous lines: K_ii near 2
    pd.DataFrame(inbred, index=pd.Index([f"L{k}" for k in range(12)], name="id")).add_prefix(
        "snp"
    ).to_csv(tmp_path / "lines.csv")
    common = ["grm", "--dosage", str(tmp_path / "lines.csv"), "--format", "csv"]
    assert main([*common, "--out", str(tmp_path / "raw")]) == 0
    out, err = capsys.readouterr()
    assert "far from 1" in err and "--normalize" in err
    raw = read_matrix_csv(tmp_path / "raw.csv")
    assert raw.mean_diagonal > 1.6
    assert main([*common, "--normalize", "--out", str(tmp_path / "norm")]) == 0
    out, err = capsys.readouterr()
    assert "far from 1" not in err and "rescaled from mean diagonal" in out
    norm = read_matrix_csv(tmp_path / "norm.csv")
    assert norm.mean_diagonal == pytest.approx(1.0)
    np.testing.assert_allclose(norm.matrix * raw.mean_diagonal, raw.matrix, rtol=1e-12)


def test_grm_files_replaced_together(tmp_path, genotypes):
    """A second run replaces the whole set; nothing else in the directory is touched."""
    X, ids = genotypes
    pd.DataFrame(X, index=pd.Index(ids, name="id")).add_prefix("snp").to_csv(tmp_path / "g.csv")
    (tmp_path / "other.txt").write_text("mine")
    for maf in ("0", "0.2"):
        assert main(["grm", "--dosage", str(tmp_path / "g.csv"), "--maf", maf,
                     "--out", str(tmp_path / "k.grm")]) == 0  # fmt: skip
        assert read_gcta_grm(tmp_path / "k").ids == tuple(ids)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["g.csv", "k.grm.N.bin", "k.grm.bin", "k.grm.id", "other.txt"]
