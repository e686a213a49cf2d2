"""The notebooks in examples/ run from top to bottom, so that they never rot.

Each notebook is executed with nbclient in a fresh Jupyter kernel, in a scratch folder (a
notebook that writes files writes them there). Executing them all takes a few minutes, most
of it NUTS compiling the latent-strategy models, so these tests carry the ``docs`` marker
(with the code blocks of the documentation, tests/test_docs.py) and are left out of the
default ``python -m pytest``; CI (``.ci/run``) runs them as a second step:

    python -m pytest -m docs tests/test_notebooks.py tests/test_docs.py

The checks of the notebook files themselves (valid, a title, no stored errors, every
notebook listed here) are fast and run by default.

To re-execute the notebooks and store their outputs in place (after changing one):

    OMP_NUM_THREADS=1 python tests/test_notebooks.py --write
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

#: Every notebook of examples/, in reading order; a notebook missing here fails
#: ``test_every_notebook_is_executed``.
NOTEBOOKS = (
    "01_heritability_blood_pressure.ipynb",
    "02_count_and_binary_traits.ipynb",
    "03_gxe_reaction_norms.ipynb",
    "04_epistasis.ipynb",
    "05_coming_from_r_and_gcta.ipynb",
    "06_association_scan.ipynb",
    "07_prediction_and_comparison.ipynb",
    "08_animal_model.ipynb",
)

#: Seconds one cell may run before the notebook fails (NUTS compiles a model in ~20–50 s).
CELL_TIMEOUT = 600


def kernel_env() -> dict[str, str]:
    """The kernel's environment: one BLAS thread (chains run in parallel) and matplotlib's
    inline backend (a backend forced for headless tests would hide the figures)."""
    env = dict(os.environ)
    env.pop("MPLBACKEND", None)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, "1")
    return env


def execute(path: Path, workdir: Path):
    """Run the notebook at ``path`` in a new kernel with ``workdir`` as its current folder;
    return the executed notebook (nbclient raises on the first cell that fails)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(workdir)}},
    )
    client.execute(env=kernel_env())
    return nb


def test_every_notebook_is_executed():
    assert sorted(p.name for p in EXAMPLES.glob("*.ipynb")) == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_file_is_clean(name):
    import nbformat

    nb = nbformat.read(EXAMPLES / name, as_version=4)
    nbformat.validate(nb)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# "), (
        f"{name}: the first cell should be a markdown cell with the notebook's title"
    )
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, f"{name}, cell {i} holds a stored error: {errors[0].get('ename')}"
        # a user reading the notebook must not meet the machine's own folders
        for output in cell.get("outputs", []):
            text = output.get("text", "") or output.get("data", {}).get("text/plain", "")
            assert "/work/" not in text and "/root/" not in text, (name, i, text[:200])


@pytest.mark.docs
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, tmp_path):
    nb = execute(EXAMPLES / name, tmp_path)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.get("execution_count") for c in code), f"{name}: a cell did not run"


def _write_outputs(names: tuple[str, ...]) -> None:
    """Execute each notebook and store it with its outputs (stable cell ids)."""
    import tempfile

    import nbformat

    for name in names:
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            nb = execute(EXAMPLES / name, Path(tmp))
        for i, cell in enumerate(nb.cells):
            cell.id = f"cell-{i:02d}"  # stable ids keep diffs to what changed
            if cell.cell_type == "code":
                cell.outputs = [o for o in cell.outputs if not _is_noise(o)]
        nbformat.write(nb, EXAMPLES / name)
        print(f"{name}: {time.perf_counter() - start:.0f} s")


def _is_noise(output) -> bool:
    """Stream output that says nothing about the analysis (tqdm's ipywidgets notice, which
    also names the machine's site-packages folder)."""
    return output.get("output_type") == "stream" and "IProgress not found" in output.get("text", "")


if __name__ == "__main__":
    if "--write" not in sys.argv:
        sys.exit(f"usage: python {sys.argv[0]} --write [NOTEBOOK ...]")
    _write_outputs(tuple(a for a in sys.argv[1:] if a != "--write") or NOTEBOOKS)
