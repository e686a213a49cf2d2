"""What a command-line NUTS fit of the spectral closed form imports, in a fresh interpreter.

The path needs nutpie (and the ArviZ it imports), xarray and matplotlib; it does not need
Dask (xarray would import ``dask.array`` and ``dask.distributed`` only to ask whether the
draws are Dask arrays), PyMC/PyTensor (the closed form is sampled as a C callback), nor
ArviZ's numba variance, which ArviZ compiles at its first R-hat in every process (the
summary's R-hat and ESS come from bayeslmm.results.convergence, equal to ArviZ's).
"""

from __future__ import annotations

import json
import subprocess
import sys

import bayeslmm as bl

UNNEEDED = ("dask", "dask.array", "distributed", "pymc", "pytensor")

PROBE = """
import json, sys
from bayeslmm.cli import main
code = main(["fit", {data!r}, "--formula", "y ~ 1 + (1|id)", "--kinship", "id={grm}",
             "--draws", "100", "--tune", "100", "--chains", "2", "--seed", "1",
             "--out", {out!r}])
from arviz.stats.stats_utils import stats_variance_1d
print(json.dumps({{
    "code": code,
    "loaded": sorted(m for m in {unneeded!r} if m in sys.modules),
    "needed": sorted(m for m in ("nutpie", "arviz", "xarray", "matplotlib") if m in sys.modules),
    "arviz_numba_compiled": len(stats_variance_1d.numba_fn.signatures),
}}))
"""


def test_spectral_command_line_fit_imports_only_its_path(tmp_path):
    sim = bl.datasets.simulate(n_families=4, family_size=10, n_snps=200, h2=0.5, seed=2)
    sim.data.to_csv(tmp_path / "pheno.csv", index=False)
    sim.kinship.normalized().to_dataframe().to_csv(tmp_path / "grm.csv")
    out = tmp_path / "out"
    code = PROBE.format(
        data=str(tmp_path / "pheno.csv"),
        grm=tmp_path / "grm.csv",
        out=str(out),
        unneeded=UNNEEDED,
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["code"] == 0
    assert report["needed"] == ["arviz", "matplotlib", "nutpie", "xarray"]  # it did sample
    assert report["loaded"] == []
    assert report["arviz_numba_compiled"] == 0
    assert {p.name for p in out.iterdir()} >= {"summary.json", "posterior.nc", "h2_posterior.png"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["strategy"] == "spectral" and summary["heritability"]["h2"]["r_hat"] > 0.9
