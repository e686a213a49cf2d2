"""``bayeslmm fit`` run as a program (``python -m bayeslmm.cli``, what the console script
runs) writes the same complete files as the same command called in this process.

The program freezes what it imported and leaves those objects to the operating system at exit
(:func:`bayeslmm._imports.command_process`): nothing it writes may depend on a finaliser that
never runs, so every file is read back here after the process has ended and compared with the
files of a library call (``main([...])``), which the interpreter tears down normally.
``tiny_files`` (data.csv and kin.csv of 40 individuals) comes from tests/conftest.py.
"""

from __future__ import annotations

import json
import subprocess
import sys

import arviz as az
import numpy as np
import xarray as xr
from matplotlib.image import imread

from bayeslmm.cli import main


def test_the_program_writes_every_file_complete(tiny_files, capsys):
    args = [
        "fit", str(tiny_files / "data.csv"), "--formula", "y ~ x + (1|id)",
        "--kinship", f"id={tiny_files / 'kin.csv'}", "--draws", "100", "--tune", "100",
        "--chains", "2", "--seed", "3",
    ]  # fmt: skip
    program, library = tiny_files / "program", tiny_files / "library"
    done = subprocess.run(
        [sys.executable, "-m", "bayeslmm.cli", *args, "--out", str(program)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "h2: posterior mean" in done.stdout and "wrote " in done.stdout  # stdout flushed
    assert main([*args, "--out", str(library)]) == 0
    capsys.readouterr()

    files = sorted(p.relative_to(library) for p in library.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(program) for p in program.rglob("*") if p.is_file())
    assert {"summary.json", "posterior.nc", "h2_posterior.png"} <= {str(f) for f in files}

    def summary(folder):
        content = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        content.pop("timing")  # seconds of this run
        return content

    assert summary(program) == summary(library)
    posterior = {name: az.from_netcdf(name / "posterior.nc") for name in (program, library)}
    assert posterior[program].groups() == posterior[library].groups()
    for group in posterior[library].groups():
        xr.testing.assert_equal(posterior[program][group], posterior[library][group])
    np.testing.assert_array_equal(
        imread(program / "h2_posterior.png"), imread(library / "h2_posterior.png")
    )
    for name in files:
        if name.parts[0] == "inputs":
            assert (program / name).read_bytes() == (library / name).read_bytes(), name
