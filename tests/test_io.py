"""Readers and writers: round trips, the GCTA byte layout, PLINK through bed-reader, errors."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bayeslmm import Kinship
from bayeslmm.errors import DataError, KinshipError
from bayeslmm.io import (
    read_data_table,
    read_dosage_csv,
    read_gcta_grm,
    read_kinship,
    read_matrix_csv,
    read_plink,
    write_gcta_grm,
    write_matrix_csv,
)
from bayeslmm.kinship import grm


@pytest.fixture
def kinship():
    rng = np.random.default_rng(0)
    X = rng.binomial(2, rng.uniform(0.1, 0.9, 300), size=(9, 300)).astype(float)
    X = X[:, X.std(axis=0) > 0]
    return grm(X, ids=[f"00{k}" for k in range(9)])  # leading zeros must survive


def test_gcta_round_trip_and_byte_layout(tmp_path, kinship):
    counts = np.arange(81, dtype=float).reshape(9, 9)
    counts = counts + counts.T
    paths = write_gcta_grm(kinship, tmp_path / "g", n_snps=counts)
    assert [p.name for p in paths] == ["g.grm.bin", "g.grm.id", "g.grm.N.bin"]
    # Layout: lower triangle incl. diagonal, row by row, little-endian float32.
    raw = np.fromfile(tmp_path / "g.grm.bin", dtype="<f4")
    K = kinship.matrix
    expected = [K[i, j] for i in range(9) for j in range(i + 1)]
    np.testing.assert_array_equal(raw, np.float32(expected))
    raw_n = np.fromfile(tmp_path / "g.grm.N.bin", dtype="<f4")
    np.testing.assert_array_equal(raw_n, [counts[i, j] for i in range(9) for j in range(i + 1)])
    lines = (tmp_path / "g.grm.id").read_text().splitlines()
    assert lines[0] == "000\t000" and len(lines) == 9
    back = read_gcta_grm(tmp_path / "g")
    assert back.ids == kinship.ids and back.name == "g"
    np.testing.assert_allclose(back.matrix, K, rtol=1e-6, atol=1e-7)
    for spelled in ("g.grm", "g.grm.bin"):
        np.testing.assert_array_equal(read_gcta_grm(tmp_path / spelled).matrix, back.matrix)


def test_gcta_scalar_count_and_no_count(tmp_path, kinship):
    write_gcta_grm(kinship, tmp_path / "a", n_snps=300)
    np.testing.assert_array_equal(np.fromfile(tmp_path / "a.grm.N.bin", dtype="<f4"), 300)
    paths = write_gcta_grm(kinship, tmp_path / "b")
    assert len(paths) == 2 and not (tmp_path / "b.grm.N.bin").exists()


def test_gcta_reads_space_separated_ids_and_uses_iid(tmp_path, kinship):
    write_gcta_grm(kinship, tmp_path / "g")
    (tmp_path / "g.grm.id").write_text("".join(f"fam{k} {i}\n" for k, i in enumerate(kinship.ids)))
    assert read_gcta_grm(tmp_path / "g").ids == kinship.ids


def test_gcta_errors(tmp_path, kinship):
    with pytest.raises(KinshipError, match=r"g.grm.bin does not exist"):
        read_gcta_grm(tmp_path / "g")
    write_gcta_grm(kinship, tmp_path / "g")
    (tmp_path / "g.grm.id").write_text("a\ta\nb\tb\n")
    with pytest.raises(KinshipError, match=r"holds 45 values but .* lists 2 individuals"):
        read_gcta_grm(tmp_path / "g")
    (tmp_path / "g.grm.id").write_text("a\n")
    with pytest.raises(KinshipError, match="line 1 has 1 field"):
        read_gcta_grm(tmp_path / "g")


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".txt", ".csv.gz"])
def test_matrix_table_round_trip_is_exact(tmp_path, kinship, suffix):
    path = write_matrix_csv(kinship, tmp_path / f"K{suffix}")
    back = read_matrix_csv(path)
    assert back.ids == kinship.ids and back.name == "K"
    np.testing.assert_array_equal(back.matrix, kinship.matrix)
    np.testing.assert_array_equal(read_kinship(path).matrix, kinship.matrix)


def test_matrix_table_with_permuted_columns(tmp_path, kinship):
    frame = kinship.to_dataframe()
    perm = list(reversed(kinship.ids))
    frame[perm].to_csv(tmp_path / "K.csv", index_label="")
    back = read_matrix_csv(tmp_path / "K.csv")
    np.testing.assert_array_equal(back.matrix, kinship.matrix)


def test_matrix_table_errors(tmp_path):
    (tmp_path / "bad.csv").write_text("id,a,b\na,1,x\nb,0.5,1\n")
    with pytest.raises(KinshipError, match=r"columns \['b'\] hold non-numeric"):
        read_matrix_csv(tmp_path / "bad.csv")
    (tmp_path / "short.csv").write_text("id,a\na,1,0\nb,0,1\n")
    with pytest.raises(KinshipError, match="header names 1 ids but the rows have 2"):
        read_matrix_csv(tmp_path / "short.csv")
    (tmp_path / "asym.csv").write_text("id,a,b\na,1,0.5\nb,0.4,1\n")
    with pytest.raises(KinshipError, match="not symmetric"):
        read_matrix_csv(tmp_path / "asym.csv")


def test_read_kinship_dispatch_and_error(tmp_path, kinship):
    write_gcta_grm(kinship, tmp_path / "g")
    assert read_kinship(tmp_path / "g").ids == kinship.ids
    assert read_kinship(str(tmp_path / "g.grm")).ids == kinship.ids
    with pytest.raises(KinshipError, match=r"No kinship found at .*nothing.*\.grm\.bin"):
        read_kinship(tmp_path / "nothing")


def test_plink_round_trip(tmp_path):
    to_bed = pytest.importorskip("bed_reader").to_bed
    rng = np.random.default_rng(1)
    values = rng.integers(0, 3, size=(6, 5)).astype(float)
    values[2, 3] = np.nan
    props = {
        "iid": ["i1", "i2", "i3", "i4", "i5", "007"],
        "fid": ["f"] * 6,
        "sid": [f"rs{k}" for k in range(5)],
        "chromosome": ["1", "1", "2", "X", "2"],
        "cm_position": [0.0, 1.5, 0.0, 3.25, 7.0],
        "bp_position": [100, 2000, 300, 40, 5000],
        "allele_1": ["A", "C", "G", "T", "A"],
        "allele_2": ["G", "T", "A", "C", "C"],
    }
    to_bed(tmp_path / "toy.bed", values, properties=props)
    dosages, snp_map = read_plink(tmp_path / "toy")
    assert dosages.index.tolist() == props["iid"]
    assert dosages.columns.tolist() == props["sid"]
    np.testing.assert_array_equal(dosages.to_numpy(), values)  # counts A1, NaN missing
    assert snp_map["chrom"].tolist() == props["chromosome"]
    assert snp_map["snp"].tolist() == props["sid"]
    np.testing.assert_array_equal(snp_map["cm"], props["cm_position"])
    np.testing.assert_array_equal(snp_map["bp"], props["bp_position"])
    assert snp_map["a1"].tolist() == props["allele_1"]
    assert snp_map["a2"].tolist() == props["allele_2"]
    f32, _ = read_plink(str(tmp_path / "toy.bed"), dtype="float32")
    assert f32.dtypes.iloc[0] == np.float32


def test_plink_errors(tmp_path):
    to_bed = pytest.importorskip("bed_reader").to_bed
    with pytest.raises(DataError, match=r"nope.bed does not exist"):
        read_plink(tmp_path / "nope")
    to_bed(
        tmp_path / "dup.bed",
        np.zeros((2, 1)),
        properties={"iid": ["x", "x"], "fid": ["f1", "f2"]},
    )
    with pytest.raises(DataError, match=r"repeats IIDs \['x'\].*FID_IID"):
        read_plink(tmp_path / "dup")


def test_dosage_csv(tmp_path):
    path = tmp_path / "g.csv"
    path.write_text("sample,s1,s2,s3\n001,0,1,2\n002,2,,1\n003,1,NA,0.5\n")
    frame = read_dosage_csv(path)
    assert frame.index.tolist() == ["001", "002", "003"]
    assert frame.columns.tolist() == ["s1", "s2", "s3"]
    np.testing.assert_array_equal(frame.to_numpy(), [[0, 1, 2], [2, np.nan, 1], [1, np.nan, 0.5]])
    (tmp_path / "blank.csv").write_text(",s1\n007,1\n")  # empty first header cell
    assert read_dosage_csv(tmp_path / "blank.csv").index.tolist() == ["007"]
    # Tab-separated by suffix, and a round trip through pandas.
    frame.to_csv(tmp_path / "g.tsv", sep="\t", index_label="id")
    pd.testing.assert_frame_equal(read_dosage_csv(tmp_path / "g.tsv"), frame)


def test_dosage_csv_errors(tmp_path):
    (tmp_path / "a.csv").write_text("id,s1,s2\na,0,AA\nb,1,AG\n")
    with pytest.raises(DataError, match=r"SNP columns \['s2'\] hold non-numeric"):
        read_dosage_csv(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text("id,s1\na,0\na,1\n")
    with pytest.raises(DataError, match=r"ids \['a'\] appear on more than one row"):
        read_dosage_csv(tmp_path / "b.csv")
    # A semicolon-separated file is recognised (it used to fail as "no SNP columns").
    (tmp_path / "c.csv").write_text("id;s1\na;0\n")
    with pytest.warns(UserWarning, match="semicolon-separated"):
        assert read_dosage_csv(tmp_path / "c.csv").shape == (1, 1)
    (tmp_path / "d.csv").write_text("id\na\n")
    with pytest.raises(DataError, match="no SNP columns"):
        read_dosage_csv(tmp_path / "d.csv")


def test_kinship_from_file_is_validated(tmp_path):
    (tmp_path / "np.csv").write_text("id,a,b\na,1,2\nb,2,1\n")
    with pytest.raises(KinshipError, match="smallest eigenvalue -1"):
        read_kinship(tmp_path / "np.csv")
    (tmp_path / "ok.csv").write_text("id,a,b\na,1,0.5\nb,0.5,1\n")
    assert isinstance(read_kinship(tmp_path / "ok.csv"), Kinship)


GOLDEN = Path(__file__).parent / "golden" / "gcta"


def test_gcta_layout_against_r():
    """R (tests/golden/gcta/gcta_layout.R) reads our files with GCTA's documented ReadGRMBin,
    and writes K in GCTA's layout with writeBin; both directions must agree."""
    K = read_matrix_csv(GOLDEN / "K.csv")
    n = K.n
    N = 400 + np.add.outer(np.arange(n), np.arange(n))
    # Our writer reproduces the committed files byte for byte ...
    for suffix in ("grm.bin", "grm.N.bin", "grm.id"):
        assert (GOLDEN / f"py_written.{suffix}").read_bytes() == _written(K, N, suffix)
    # ... and R's reading of them splits diagonal and off-diagonal as expected.
    r = json.loads((GOLDEN / "r_read_py.json").read_text())
    assert r["id"] == list(K.ids)
    np.testing.assert_allclose(r["diag"], np.diag(K.matrix), rtol=1e-7)
    rows, cols = np.tril_indices(n, k=-1)
    order = np.lexsort((cols, rows))  # row by row, as in the file
    np.testing.assert_allclose(r["off"], K.matrix[rows[order], cols[order]], rtol=1e-6)
    np.testing.assert_array_equal(r["N"], N[np.tril_indices(n)])
    # R's files read back as K.
    back = read_gcta_grm(GOLDEN / "r_written")
    assert back.ids == K.ids
    np.testing.assert_allclose(back.matrix, K.matrix, rtol=1e-6)
    np.testing.assert_array_equal(
        np.fromfile(GOLDEN / "r_written.grm.N.bin", dtype="<f4"), N[np.tril_indices(n)]
    )


def _written(K, N, suffix):
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        write_gcta_grm(K, Path(tmp) / "x", n_snps=N)
        return (Path(tmp) / f"x.{suffix}").read_bytes()


# -- data tables: types decided, not guessed -------------------------------------------------
def test_data_table_ids_stay_text_and_covariates_numeric(tmp_path):
    rows = "\n".join(f"{k:03d},{k / 10},{k % 3},{'AB'[k % 2]}" for k in range(100))
    (tmp_path / "d.csv").write_text("id,y,x,grp\n" + rows + "\n")
    df = read_data_table(tmp_path / "d.csv", text_columns=["id"], numeric_columns=["y"])
    assert df["id"].tolist()[:3] == ["000", "001", "002"]  # would be 0, 1, 2 by inference
    assert df["x"].dtype.kind in "if" and df["y"].dtype.kind == "f"
    assert df["grp"].tolist()[:2] == ["A", "B"]


@pytest.mark.parametrize(
    ("cells", "line", "value"),
    [
        ([1, 2, ".", 4], 4, "'.'"),  # stray token: always refused
        ([1, 2, 3, "-"], 5, "'-'"),
        ([1, "missing", 3, 4], 3, "'missing'"),
        ([*range(1, 12), "1..5"], 13, "'1..5'"),  # one typo in ten numbers
    ],
)
def test_data_table_stray_cell_in_numeric_column(tmp_path, cells, line, value):
    body = "".join(f"a{k},{k},{c}\n" for k, c in enumerate(cells))
    (tmp_path / "d.csv").write_text("id,y,x\n" + body)
    with pytest.raises(DataError, match=rf"line {line}, column 'x': {value} is not a number"):
        read_data_table(tmp_path / "d.csv", text_columns=["id"], numeric_columns=["y"])
    # Not used by the model: left as text, no error.
    df = read_data_table(tmp_path / "d.csv", text_columns=["id"], checked_columns=["y"])
    assert not pd.api.types.is_numeric_dtype(df["x"])


def test_data_table_response_must_be_numeric_and_c_marks_factors(tmp_path):
    (tmp_path / "d.csv").write_text("id,y,dose\na,1,0\nb,oops,10\nc,3,ctrl\n")
    with pytest.raises(DataError, match=r"line 3, column 'y': 'oops' is not a number"):
        read_data_table(tmp_path / "d.csv", numeric_columns=["y"], factor_columns=["dose"])
    (tmp_path / "e.csv").write_text("id,y,dose\na,1,0\nb,2,10\nc,3,ctrl\n")
    df = read_data_table(tmp_path / "e.csv", numeric_columns=["y"], factor_columns=["dose"])
    assert df["dose"].tolist() == ["0", "10", "ctrl"]


def test_data_table_missing_values_blank_lines_and_booleans(tmp_path):
    (tmp_path / "d.csv").write_text("id,y,x,flag\na,1,,TRUE\n\nb,NA,2,false\n")
    df = read_data_table(tmp_path / "d.csv", numeric_columns=["y"])
    assert df.shape == (2, 4)  # the blank line is not a record
    assert np.isnan(df["y"][1]) and np.isnan(df["x"][0])
    assert df["flag"].tolist() == [True, False]


def test_data_table_separators(tmp_path):
    (tmp_path / "semi.csv").write_text("id;y;x\na;1,5;2\nb;2,5;3\n")
    with pytest.warns(UserWarning, match="semicolon-separated"):
        df = read_data_table(tmp_path / "semi.csv", numeric_columns=["y"])
    assert df["y"].tolist() == [1.5, 2.5]  # decimal commas in a semicolon file
    (tmp_path / "tab.csv").write_text("id\ty\na\t1\nb\t2\n")
    with pytest.warns(UserWarning, match="tab-separated"):
        assert read_data_table(tmp_path / "tab.csv").shape == (2, 2)
    (tmp_path / "quoted.csv").write_text('id,x\na,"1,5"\nb,2\nc,3\n')
    with pytest.raises(DataError, match="decimal comma"):
        read_data_table(tmp_path / "quoted.csv", checked_columns=["x"])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"\n\n", "is empty"),
        (b"id,y\n", "no data rows"),
        (b"PK\x03\x04\x14\x00\x06\x00", "Excel workbook"),
        (b"\x00\x01\x02binary", "binary, not text"),
        (b"id,y\ncaf\xe9,1\n", "not UTF-8 text"),
        (b"id,y,id\na,1,b\n", "column name 'id' twice"),
        (b"id,y\na,1\nb,2,3,4\n", "not a regular table"),
    ],
)
def test_data_table_file_errors(tmp_path, content, message):
    (tmp_path / "d.csv").write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_data_table(tmp_path / "d.csv")
    with pytest.raises(DataError, match="does not exist"):
        read_data_table(tmp_path / "nope.csv")


def test_kinship_table_with_duplicated_id_or_binary_content(tmp_path):
    (tmp_path / "k.csv").write_text("id,a,a\na,1,0\nb,0,1\n")
    with pytest.raises(KinshipError, match="column name 'a' twice"):
        read_matrix_csv(tmp_path / "k.csv")
    (tmp_path / "b.csv").write_bytes(b"\x1f\x8b\x08\x00data")
    with pytest.raises(KinshipError, match="gzip-compressed"):
        read_kinship(tmp_path / "b.csv")
