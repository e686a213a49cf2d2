"""The command line's error catalogue (docs/errors.md, "Command line and files").

Every case runs ``bayeslmm.cli.main`` on a small set of files and checks the exit status, that
no Python traceback is printed, and a specific phrase of the message. Every case id must appear
in docs/errors.md, so the documentation lists what the program really says.
"""

import errno
import gzip
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bayeslmm.cli import main

IS_ROOT = getattr(os, "geteuid", lambda: -1)() == 0
DOCS = Path(__file__).resolve().parents[2] / "docs" / "errors.md"

FIT = "fit data.csv --formula 'y ~ x + (1|id)' --kinship id=kin.csv --method reml"
BINARY = "fit data.csv --formula 'case ~ x + (1|id)' --kinship id=kin.csv --family bernoulli"
OUT = "--out out"
MULTI = "fit data.csv --formula 'mvbind(y, x) ~ 1 + (1|id)' --kinship id=kin.csv"


@dataclass(frozen=True)
class Case:
    id: str
    args: str  # shell words; {unwritable} is replaced by a directory nobody may write to
    code: int
    phrase: str  # must appear in the error output (stderr)
    given: str  # for docs/errors.md


# fmt: off
CASES = [
    # -- the data file --------------------------------------------------------------------
    Case("cli-data-missing", f"{FIT.replace('data.csv', 'nope.csv')} {OUT}", 2,
         "the file does not exist", "a data file that does not exist"),
    Case("cli-data-directory", f"{FIT.replace('data.csv', 'folder')} {OUT}", 2,
         "is a directory", "a directory as the data file"),
    Case("cli-empty-file", f"{FIT.replace('data.csv', 'empty.csv')} {OUT}", 2,
         "is empty", "an empty data file (0 bytes)"),
    Case("cli-blank-file", f"{FIT.replace('data.csv', 'blank.csv')} {OUT}", 2,
         "is empty", "a data file of blank lines"),
    Case("cli-header-only", f"{FIT.replace('data.csv', 'header.csv')} {OUT}", 2,
         "but no data rows", "a header and no rows"),
    Case("cli-binary-file", f"{FIT.replace('data.csv', 'binary.csv')} {OUT}", 2,
         "is binary, not text", "binary content"),
    Case("cli-excel-file", f"{FIT.replace('data.csv', 'book.xlsx')} {OUT}", 2,
         "Excel workbook", "an Excel workbook"),
    Case("cli-gzip-unnamed", f"{FIT.replace('data.csv', 'packed.csv')} {OUT}", 2,
         "gzip-compressed", "a gzip file named .csv"),
    Case("cli-not-utf8", f"{FIT.replace('data.csv', 'latin1.csv')} {OUT}", 2,
         "is not UTF-8 text", "Latin-1 text"),
    Case("cli-duplicate-header", f"{FIT.replace('data.csv', 'dupcol.csv')} {OUT}", 2,
         "has the column name 'x' twice", "two columns named x"),
    Case("cli-ragged-rows", f"{FIT.replace('data.csv', 'ragged.csv')} {OUT}", 2,
         "is not a regular table", "a row with more fields than the header"),
    Case("cli-semicolon-file", f"{FIT.replace('data.csv', 'semi.csv')} {OUT}", 0,
         "is semicolon-separated", "a semicolon-separated .csv (read, with a note)"),
    Case("cli-tab-file", f"{FIT.replace('data.csv', 'tab.csv')} {OUT}", 0,
         "is tab-separated", "a tab-separated .csv (read, with a note)"),
    Case("cli-stray-dot", f"{FIT.replace('data.csv', 'dot.csv')} {OUT}", 2,
         "line 5, column 'x': '.' is not a number", "'.' in a numeric covariate"),
    Case("cli-stray-word", f"{FIT.replace('data.csv', 'word.csv')} {OUT}", 2,
         "line 9, column 'x': 'missing' is not a number", "'missing' in a numeric covariate"),
    Case("cli-decimal-comma", f"{FIT.replace('data.csv', 'comma.csv')} {OUT}", 2,
         "(a decimal comma? write 1.5, not 1,5)", 'a quoted "1,5" in a comma-separated file'),
    Case("cli-response-text", f"{FIT.replace('data.csv', 'texty.csv')} {OUT}", 2,
         "'abc' is not a number, and 'y' must be numeric", "text in the response"),
    Case("cli-response-missing-value", f"{FIT.replace('data.csv', 'nay.csv')} {OUT}", 2,
         "missing or infinite values", "NA in the response"),
    Case("cli-ids-leading-zeros", f"{FIT} {OUT}", 0,
         "", "ids 000-029 in the data and the kinship (they match: ids are text)"),
    Case("cli-factor-column", f"{FIT.replace('x + ', 'sex + ')} {OUT}", 0,
         "", "a categorical covariate (F/M) stays a factor"),
    # -- formula and model ----------------------------------------------------------------
    Case("cli-formula-missing", "fit data.csv --out out", 2,
         "the following arguments are required: --formula", "no --formula"),
    Case("cli-formula-no-tilde", "fit data.csv --formula 'y x' --out out", 2,
         "exactly one '~'", "a formula without '~'"),
    Case("cli-formula-unbalanced", "fit data.csv --formula 'y ~ (1|id' --out out", 2,
         "Unbalanced '('", "an unclosed parenthesis"),
    Case("cli-formula-unknown-column", f"{FIT.replace('x + ', 'z + ')} {OUT}", 2,
         "Available columns", "a predictor that is not a column"),
    Case("cli-response-not-a-column", f"{FIT.replace('y ~', 'w ~')} {OUT}", 2,
         "The response 'w' is not a column", "a response that is not a column"),
    Case("cli-multitrait-method-ml", f"{MULTI} --method ml {OUT}", 2,
         "is fitted with --method reml", "--method ml for a multi-trait (mvbind) formula"),
    Case("cli-multitrait-single-trait-option", f"{MULTI} --method reml --sigma '~ sex' {OUT}",
         2, "--sigma does not apply to a multi-trait model", "--sigma with a multi-trait formula"),
    Case("cli-multitrait-sampler", f"{MULTI} --sampler pymc {OUT}", 2,
         "multi-trait models are sampled by nutpie", "--sampler pymc with a multi-trait formula"),
    Case("cli-family-unknown", f"{FIT} --family gamma {OUT}", 2,
         "invalid choice: 'gamma'", "--family gamma"),
    Case("cli-link-unknown", f"{BINARY} --link cloglog --method laplace {OUT}", 2,
         "Link 'cloglog' is not available", "--link cloglog for a binary trait"),
    Case("cli-trials-not-a-column",
         f"{BINARY.replace('bernoulli', 'binomial')} --trials nn --method laplace {OUT}", 2,
         "The trials column 'nn'", "--trials naming no column"),
    Case("cli-poisson-not-counts",
         "fit frac.csv --formula 'cnt ~ x + (1|id)' --kinship id=kin.csv --family poisson "
         f"--method laplace {OUT}", 2,
         "non-negative integers", "2.5 in a Poisson response"),
    Case("cli-no-overdispersion-not-poisson", f"{FIT} --no-overdispersion {OUT}", 2,
         "the family 'gaussian' has none to leave out", "--no-overdispersion, Gaussian"),
    Case("cli-method-unknown", f"{FIT} --method foo {OUT}", 2,
         "invalid choice: 'foo'", "--method foo"),
    Case("cli-laplace-gaussian", f"{FIT.replace('reml', 'laplace')} {OUT}", 2,
         "method='laplace' is for GLMMs", "--method laplace for a Gaussian trait"),
    Case("cli-reml-binary", f"{BINARY} --method reml {OUT}", 2,
         "Use method='laplace'", "--method reml for a binary trait"),
    Case("cli-prevalence-above-one", f"{BINARY} --prevalence 1.5 {OUT}", 2,
         "argument --prevalence: must lie strictly between 0 and 1", "--prevalence 1.5"),
    Case("cli-prevalence-zero", f"{BINARY} --prevalence 0 {OUT}", 2,
         "argument --prevalence: must lie strictly between 0 and 1", "--prevalence 0"),
    Case("cli-prevalence-not-binary", f"{FIT} --prevalence 0.1 {OUT}", 2,
         "--prevalence gives h² on the liability scale", "--prevalence, Gaussian trait"),
    Case("cli-loo-not-nuts", f"{FIT} --loo {OUT}", 2,
         "--loo is leave-one-out cross-validation of the posterior", "--loo with --method reml"),
    # -- kinship ----------------------------------------------------------------------------
    Case("cli-kinship-missing", f"{FIT.replace('kin.csv', 'nokin.csv')} {OUT}", 2,
         "No kinship table at 'nokin.csv': the file does not exist",
         "a kinship .csv that does not exist"),
    Case("cli-kinship-prefix-missing", f"{FIT.replace('kin.csv', 'nogrm')} {OUT}", 2,
         "No kinship found at 'nogrm'", "a GCTA prefix without its files"),
    Case("cli-kinship-no-equals", f"{FIT.replace('id=kin.csv', 'kin.csv')} {OUT}", 2,
         "--kinship takes GROUP=PATH", "--kinship without '='"),
    Case("cli-kinship-twice", f"{FIT} --kinship id=kin.csv {OUT}", 2,
         "names the grouping factor 'id' twice", "--kinship id=... twice"),
    Case("cli-kinship-unused-group", f"{FIT.replace('id=kin', 'line=kin')} {OUT}", 2,
         "has no random term", "a kinship for a factor the formula lacks"),
    Case("cli-kinship-ids-mismatch", f"{FIT.replace('data.csv', 'ids7.csv')} {OUT}", 2,
         "30 of the 30 'id' ids in the data are missing from kinship",
         "data ids 0-29, kinship ids 000-029"),
    Case("cli-kinship-id-missing", f"{FIT.replace('data.csv', 'oneoff.csv')} {OUT}", 2,
         "1 of the 30 'id' ids in the data are missing", "one data id absent from the kinship"),
    Case("cli-kinship-empty", f"{FIT.replace('kin.csv', 'empty.csv')} {OUT}", 2,
         "The kinship table 'empty.csv' is empty", "an empty kinship file"),
    Case("cli-kinship-binary", f"{FIT.replace('kin.csv', 'binary.csv')} {OUT}", 2,
         "The kinship table 'binary.csv' is binary", "a binary kinship .csv"),
    Case("cli-kinship-duplicate-id", f"{FIT.replace('kin.csv', 'kdup.csv')} {OUT}", 2,
         "has the column name '001' twice", "an id twice in the kinship header"),
    Case("cli-kinship-text-cell", f"{FIT.replace('kin.csv', 'ktext.csv')} {OUT}", 2,
         "hold non-numeric entries", "text in a kinship cell"),
    Case("cli-kinship-not-psd", f"{FIT.replace('kin.csv', 'knpsd.csv')} {OUT}", 2,
         "not positive semi-definite", "a kinship with a negative eigenvalue"),
    Case("cli-kinship-gcta-mismatch", f"{FIT.replace('kin.csv', 'kbad')} {OUT}", 2,
         "do not belong together", "a .grm.bin and a .grm.id of different sizes"),
    Case("cli-kinship-scale-note", f"{FIT.replace('kin.csv', 'kin2.csv')} {OUT}", 0,
         "bayeslmm grm --normalize", "a kinship with mean diagonal 2 (fitted, with a note)"),
    # -- sampler arguments (checked by the command line itself) ----------------------------
    Case("cli-draws-negative", f"{FIT} --draws -1 {OUT}", 2,
         "argument --draws: must be a whole number >= 1", "--draws -1"),
    Case("cli-draws-fraction", f"{FIT} --draws 1.5 {OUT}", 2,
         "argument --draws: must be a whole number >= 1", "--draws 1.5"),
    Case("cli-tune-negative", f"{FIT} --tune -5 {OUT}", 2,
         "argument --tune: must be a whole number >= 0", "--tune -5"),
    Case("cli-chains-zero", f"{FIT} --chains 0 {OUT}", 2,
         "argument --chains: must be a whole number >= 1", "--chains 0"),
    Case("cli-cores-zero", f"{FIT} --cores 0 {OUT}", 2,
         "argument --cores: must be a whole number >= 1", "--cores 0"),
    Case("cli-seed-text", f"{FIT} --seed abc {OUT}", 2,
         "argument --seed: must be a whole number between 0 and 4294967295", "--seed abc"),
    Case("cli-seed-negative", f"{FIT} --seed -1 {OUT}", 2,
         "argument --seed: must be a whole number between 0", "--seed -1"),
    Case("cli-target-accept-above-one", f"{FIT} --target-accept 1.5 {OUT}", 2,
         "argument --target-accept: must lie strictly between 0 and 1", "--target-accept 1.5"),
    Case("cli-hdi-prob-zero", f"{FIT} --hdi-prob 0 {OUT}", 2,
         "argument --hdi-prob: must lie strictly between 0 and 1", "--hdi-prob 0"),
    Case("cli-sampler-unknown", f"{FIT} --sampler stan {OUT}", 2,
         "argument --sampler: invalid choice: 'stan'", "--sampler stan"),
    Case("cli-strategy-unknown", f"{FIT} --strategy dense {OUT}", 2,
         "argument --strategy: invalid choice: 'dense'", "--strategy dense"),
    Case("cli-prior-syntax", f"{FIT} --prior h2:beta {OUT}", 2,
         "--prior takes KEY=FAMILY(ARGS)", "--prior h2:beta"),
    Case("cli-prior-numbers", f"{FIT} --prior 'h2=beta(a, 1)' {OUT}", 2,
         "Cannot read the numbers of --prior", "--prior 'h2=beta(a, 1)'"),
    Case("cli-prior-unknown-key", f"{FIT.replace('reml', 'nuts')} --prior 'foo=normal(0, 1)' "
         f"{OUT}", 2, "Unknown prior key", "--prior for a parameter the model lacks"),
    Case("cli-prior-unknown-family", f"{FIT.replace('reml', 'nuts')} --prior 'h2=wibble(1)' "
         f"{OUT}", 2, "Unknown prior family 'wibble'", "--prior 'h2=wibble(1)'"),
    # -- the output location (checked before reading or fitting) ---------------------------
    Case("cli-out-is-file", f"{FIT} --out data.csv", 2,
         "is an existing file; --out names a directory", "--out naming a file"),
    Case("cli-out-under-file", f"{FIT} --out data.csv/results", 2,
         "which is a file", "--out under a file"),
    Case("cli-out-missing-parent", f"{FIT} --out nowhere/results", 2,
         "its parent", "--out in a directory that does not exist"),
    Case("cli-out-unwritable", f"{FIT} --out {{unwritable}}/results", 2,
         "Cannot write into the directory", "--out in a directory one cannot write to"),
    Case("cli-demo-out-is-file", "demo --out data.csv", 2,
         "is an existing file", "demo --out naming a file"),
    Case("cli-demo-out-missing-parent", "demo --out nowhere/demo", 2,
         "does not exist. Create it first", "demo --out in a missing directory"),
    Case("cli-demo-out-unwritable", "demo --out {unwritable}/demo", 2,
         "Cannot write into the directory", "demo --out in a read-only directory"),
    Case("cli-demo-draws-zero", "demo --draws 0", 2,
         "argument --draws: must be a whole number >= 1", "demo --draws 0"),
    # -- grm ----------------------------------------------------------------------------------
    Case("cli-grm-dosage-missing", "grm --dosage nope.csv --out k", 2,
         "No dosage table at 'nope.csv'", "grm --dosage naming no file"),
    Case("cli-grm-dosage-empty", "grm --dosage empty.csv --out k", 2,
         "The dosage table 'empty.csv' is empty", "an empty dosage file"),
    Case("cli-grm-dosage-binary", "grm --dosage binary.csv --out k", 2,
         "is binary, not text", "a binary dosage file"),
    Case("cli-grm-dosage-text", "grm --dosage gtext.csv --out k", 2,
         "hold non-numeric entries", "genotype letters (AG) in a dosage table"),
    Case("cli-grm-dosage-range", "grm --dosage grange.csv --out k", 2,
         "Dosages must lie in [0, 2]", "a dosage of 3"),
    Case("cli-grm-bfile-missing", "grm --bfile nope --out k", 2,
         "PLINK file nope.bed does not exist", "grm --bfile naming no files"),
    Case("cli-grm-source-missing", "grm --out k", 2,
         "one of the arguments --bfile --dosage is required", "neither --bfile nor --dosage"),
    Case("cli-grm-out-directory", "grm --dosage g.csv --out folder", 2,
         "it takes a file prefix", "grm --out naming a directory"),
    Case("cli-grm-out-missing-dir", "grm --dosage g.csv --out nowhere/k", 2,
         "in a directory that does not exist", "grm --out in a missing directory"),
    Case("cli-grm-out-under-file", "grm --dosage g.csv --out data.csv/k", 2,
         "which is a file", "grm --out under a file"),
    Case("cli-grm-out-unwritable", "grm --dosage g.csv --out {unwritable}/k", 2,
         "Cannot write into the directory", "grm --out in a read-only directory"),
    Case("cli-grm-maf-range", "grm --dosage g.csv --maf 0.7 --out k", 2,
         "argument --maf: must be a number in [0, 0.5)", "--maf 0.7"),
    Case("cli-grm-block-size-zero", "grm --dosage g.csv --block-size 0 --out k", 2,
         "argument --block-size: must be a whole number >= 1", "--block-size 0"),
    Case("cli-grm-inbred-note", "grm --dosage ginbred.csv --out k", 0,
         "--normalize rescales it", "inbred lines: mean diagonal near 2 (written, with a note)"),
    # -- usage, and what is not the user's fault ------------------------------------------
    Case("cli-no-command", "", 2, "the following arguments are required: command",
         "no subcommand"),
    Case("cli-unknown-command", "frobnicate", 2, "invalid choice: 'frobnicate'",
         "an unknown subcommand"),
    Case("cli-unexpected-error", f"{FIT} {OUT}", 1, "This looks like a bug in bayeslmm",
         "an internal error (simulated)"),
    Case("cli-disk-full", f"{FIT} {OUT}", 2, "No space left on device",
         "the disk fills while writing (simulated)"),
    Case("cli-interrupted", f"{FIT} {OUT}", 130, "interrupted", "Ctrl-C (simulated)"),
]
# fmt: on

#: Faults injected for the cases that are not caused by the input.
FAULTS = {
    "cli-unexpected-error": RuntimeError("simulated internal error"),
    "cli-disk-full": OSError(errno.ENOSPC, "No space left on device", "out/posterior.nc"),
    "cli-interrupted": KeyboardInterrupt(),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory, random_kinship):
    """The good files and every bad one the catalogue names."""
    d = tmp_path_factory.mktemp("catalogue")
    rng = np.random.default_rng(3)
    n = 30
    ids = [f"{k:03d}" for k in range(n)]
    K = random_kinship(rng, n, 60).normalized().matrix
    data = pd.DataFrame(
        {
            "id": ids,
            "y": (np.linalg.cholesky(K) @ rng.normal(size=n) + rng.normal(size=n)).round(3),
            "x": rng.normal(size=n).round(3),
            "sex": ["F", "M"] * (n // 2),
            "cnt": rng.poisson(3, n),
            "case": [0, 1, 1] * (n // 3),
        }
    )
    data.to_csv(d / "data.csv", index=False)
    pd.DataFrame(K, index=ids, columns=ids).to_csv(d / "kin.csv")
    pd.DataFrame(2 * K, index=ids, columns=ids).to_csv(d / "kin2.csv")
    text = (d / "data.csv").read_text()
    lines = text.splitlines()

    def edit(name, column, row, value):
        frame = pd.read_csv(d / "data.csv", dtype=str)
        frame[column] = frame[column].astype(object)
        frame.loc[row, column] = value
        frame.to_csv(d / name, index=False)

    (d / "folder").mkdir()
    (d / "empty.csv").write_bytes(b"")
    (d / "blank.csv").write_text("\n\n\n")
    (d / "header.csv").write_text(lines[0] + "\n")
    (d / "binary.csv").write_bytes(bytes(range(256)) * 4)
    (d / "book.xlsx").write_bytes(b"PK\x03\x04" + bytes(100))
    (d / "packed.csv").write_bytes(gzip.compress(text.encode()))
    (d / "latin1.csv").write_bytes(text.replace("F", "é", 1).encode("latin-1"))
    (d / "dupcol.csv").write_text(text.replace("sex", "x", 1))
    (d / "ragged.csv").write_text("\n".join([*lines[:4], lines[4] + ",1,2", *lines[5:]]) + "\n")
    (d / "semi.csv").write_text(text.replace(",", ";"))
    (d / "tab.csv").write_text(text.replace(",", "\t"))
    edit("dot.csv", "x", 3, ".")  # row 3 is on line 5 (header on line 1)
    edit("word.csv", "x", 7, "missing")
    edit("comma.csv", "x", 0, "1,5")
    edit("texty.csv", "y", 3, "abc")
    edit("nay.csv", "y", 3, "NA")
    edit("frac.csv", "cnt", 3, "2.5")
    edit("oneoff.csv", "id", 0, "999")
    frame = pd.read_csv(d / "data.csv", dtype=str)
    frame["id"] = [str(int(i)) for i in frame["id"]]
    frame.to_csv(d / "ids7.csv", index=False)
    (d / "kdup.csv").write_text("id,000,001,001\n000,1,0,0\n001,0,1,0\n001,0,0,1\n")
    (d / "ktext.csv").write_text("id,000,001\n000,1,x\n001,0,1\n")
    (d / "knpsd.csv").write_text("id,000,001\n000,1,2\n001,2,1\n")
    (d / "kbad.grm.bin").write_bytes(np.ones(10, dtype="<f4").tobytes())
    (d / "kbad.grm.id").write_text("000\t000\n001\t001\n")
    X = rng.binomial(2, 0.4, size=(12, 40)).astype(float)
    snps = [f"snp{k}" for k in range(40)]
    dosage = pd.DataFrame(X, index=pd.Index(ids[:12], name="id"), columns=snps)
    dosage.to_csv(d / "g.csv")
    dosage.astype(object).assign(snp3="AG").to_csv(d / "gtext.csv")
    dosage.assign(snp3=3.0).to_csv(d / "grange.csv")
    inbred = 2.0 * rng.binomial(1, 0.5, size=(12, 40))
    pd.DataFrame(inbred, index=dosage.index, columns=snps).to_csv(d / "ginbred.csv")
    if not IS_ROOT:
        (d / "locked").mkdir(mode=0o500)
    return d


def unwritable(files: Path) -> str:
    if not IS_ROOT:
        return str(files / "locked")
    if Path("/sys").is_dir():  # root may write anywhere a file mode forbids; not here
        return "/sys"
    pytest.skip("no directory that root cannot write to")


def run_cli(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's usage errors
        return int(exc.code)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_cli_error_catalogue(case, files, monkeypatch, capsys):
    monkeypatch.chdir(files)
    argv = shlex.split(
        case.args.replace("{unwritable}", unwritable(files) if "{" in case.args else "")
    )
    if case.id in FAULTS:
        fault = FAULTS[case.id]

        def broken(*args, **kwargs):
            raise fault

        # Simulated where the damage would happen: inside the fit, or while writing.
        target = "_fsync_files" if isinstance(fault, OSError) else None
        if target:
            monkeypatch.setattr("bayeslmm.results.output._fsync_files", broken)
        else:
            monkeypatch.setattr("bayeslmm.commands.fit.fit_model", broken)
    before = sorted(p.name for p in files.iterdir())
    code = run_cli(argv)
    out, err = capsys.readouterr()
    assert code == case.code, err
    assert "Traceback" not in out + err
    assert case.phrase in err
    if code == 0:
        assert "wrote" in out or "written to" in out
    else:
        # A failed run leaves every file as it was: nothing half-written, no scratch files.
        assert sorted(p.name for p in files.iterdir()) == before
        # The message is one line, the last one (argparse's usage lines come before it).
        assert err.strip().splitlines()[-1].startswith("bayeslmm")


def test_debug_prints_the_traceback(files, monkeypatch, capsys):
    """--debug (before or after the subcommand) adds the traceback to the same message."""
    monkeypatch.chdir(files)

    def broken(*args, **kwargs):
        raise RuntimeError("simulated internal error")

    monkeypatch.setattr("bayeslmm.commands.fit.fit_model", broken)
    words = shlex.split(FIT)
    for argv, code in [
        (["--debug", *words, "--out", "out"], 1),  # a bug
        ([*words, "--out", "data.csv", "--debug"], 2),  # bad input
    ]:
        assert run_cli(argv) == code
        err = capsys.readouterr().err
        assert "Traceback" in err
        assert err.strip().splitlines()[-1].startswith("bayeslmm fit: ")


def test_catalogue_is_documented():
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("## Command line and files", 1)[1].split("## Python API", 1)[0]
    documented = set(re.findall(r"`(cli-[a-z0-9-]+)`", section))
    ids = {c.id for c in CASES}
    assert len(ids) == len(CASES) >= 45
    assert sorted(ids - documented) == [], "cases missing from docs/errors.md"
    assert sorted(documented - ids) == [], "docs/errors.md lists cases that are not tested"


@pytest.mark.slow
@pytest.mark.parametrize("case_id", ["cli-stray-dot", "cli-seed-text", "cli-out-is-file"])
def test_console_script_prints_no_traceback(case_id, files):
    """The real entry point (a fresh interpreter: a few seconds each)."""
    case = next(c for c in CASES if c.id == case_id)
    done = subprocess.run(
        [sys.executable, "-m", "bayeslmm.cli", *shlex.split(case.args)],
        cwd=files,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == case.code
    assert "Traceback" not in done.stdout + done.stderr
    assert case.phrase in done.stderr
