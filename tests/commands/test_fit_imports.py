"""What a command-line NUTS fit of the spectral closed form imports and collects, in a fresh
interpreter that runs it as the ``bayeslmm`` program does (``main()`` reading ``sys.argv``).

The path needs nutpie (and the ArviZ it imports), xarray and matplotlib. It does not need
Dask (xarray would import ``dask.array`` and ``dask.distributed`` only to ask whether the
draws are Dask arrays), PyMC/PyTensor (the closed form is sampled as a C callback), ArviZ's
numba variance, which ArviZ compiles at its first R-hat in every process (the summary's R-hat
and ESS come from bayeslmm.results.convergence, equal to ArviZ's), nor the layers that the
package's front door imports only when asked (bayeslmm/_imports.py): the association scan
(and its tqdm), the REML engine and the simulators.

The program keeps what it imports out of the cyclic collector's reach
(:func:`bayeslmm._imports.command_process`): the objects alive after the command are frozen,
and the collector does at most a couple of full collections over the whole run (five, over
an ever larger heap, before the imports were frozen).
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys

import bayeslmm as bl
from bayeslmm.cli import main

UNNEEDED = (
    "dask",
    "dask.array",
    "distributed",
    "pymc",
    "pytensor",
    "bayeslmm.association",
    "bayeslmm.engines.reml",
    "bayeslmm.datasets",
    "tqdm",
)

PROBE = """
import gc, json, sys
full_collections = gc.get_stats()[2]["collections"]
from bayeslmm.cli import main
sys.argv = ["bayeslmm", "fit", {data!r}, "--formula", "y ~ 1 + (1|id)", "--kinship", "id={grm}",
            "--draws", "100", "--tune", "100", "--chains", "2", "--seed", "1", "--out", {out!r}]
code = main()
full_collections = gc.get_stats()[2]["collections"] - full_collections
from arviz.stats.stats_utils import stats_variance_1d
print(json.dumps({{
    "code": code,
    "loaded": sorted(m for m in {unneeded!r} if m in sys.modules),
    "needed": sorted(m for m in ("nutpie", "arviz", "xarray", "matplotlib") if m in sys.modules),
    "arviz_numba_compiled": len(stats_variance_1d.numba_fn.signatures),
    "full_collections": full_collections,
    "frozen": gc.get_freeze_count(),
    "tracked": len(gc.get_objects()),
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
    # the imported libraries were frozen, not walked by full collections again and again
    assert report["frozen"] > 100_000 and report["frozen"] > 2 * report["tracked"]
    assert report["full_collections"] <= 2
    assert {p.name for p in out.iterdir()} >= {"summary.json", "posterior.nc", "h2_posterior.png"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["strategy"] == "spectral" and summary["heritability"]["h2"]["r_hat"] > 0.9


def test_a_library_call_of_main_leaves_the_collector_alone(tiny_files, capsys):
    frozen, enabled = gc.get_freeze_count(), gc.isenabled()
    args = ["fit", str(tiny_files / "data.csv"), "--formula", "y ~ (1|id)", "--kinship", "id"]
    assert main([*args, "--out", str(tiny_files / "o")]) == 2  # an input error, after parsing
    assert "GROUP=PATH" in capsys.readouterr().err
    assert (gc.get_freeze_count(), gc.isenabled()) == (frozen, enabled)
