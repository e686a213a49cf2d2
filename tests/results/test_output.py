"""All-or-nothing result sets (bayeslmm.results.output): a run's files appear together or not
at all, stale files of an older run go, the user's own files stay, and a process killed at any
step of writing leaves the previous complete set or the new complete set."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import bayeslmm
from bayeslmm.results import output
from bayeslmm.results.output import (
    KILL_AT_ENV,
    OutputError,
    check_output_dir,
    check_output_prefix,
    recover,
    result_directory,
    result_files,
)

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")

IS_ROOT = getattr(os, "geteuid", lambda: -1)() == 0
PACKAGE = Path(bayeslmm.__file__).parent

# The child imports bayeslmm.results.output alone: empty stand-ins for the packages skip their
# __init__ (which imports PyMC, seconds per child), so each kill costs a few milliseconds.
CHILD = textwrap.dedent(
    """
    import json, os, sys, time, types
    package = sys.argv[1]
    for name, path in (("bayeslmm", package), ("bayeslmm.results", package + "/results")):
        module = types.ModuleType(name)
        module.__path__ = [path]
        sys.modules[name] = module
    from bayeslmm.results import output
    if os.environ.get("NO_EXCHANGE"):
        output._renameat2 = None
    run, out, chunks = int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    with output.result_directory(out) as stage:
        if run % 2 == 0:  # a NUTS-like run: three files
            with open(stage / "posterior.nc", "wb") as handle:
                for k in range(chunks):
                    handle.write(bytes([run % 256]) * 65536)
                    handle.flush()
                    if os.environ.get("KILL_MID_WRITE") and k == chunks // 2:
                        os.kill(os.getpid(), 9)
            (stage / "h2_posterior.png").write_bytes(b"png" + bytes([run % 256]))
        # a REML-like run (odd) writes the summary only
        (stage / "summary.json").write_text(json.dumps({"run": run, "chunks": chunks}))
    """
)


def spawn(tmp_path, run, out, chunks=4, env=None):
    script = tmp_path / "child.py"
    if not script.exists():
        script.write_text(CHILD)
    return subprocess.Popen(
        [sys.executable, str(script), str(PACKAGE), str(run), str(out), str(chunks)],
        env={**os.environ, **(env or {})},
        stderr=subprocess.PIPE,
    )


def result_state(out: Path) -> int | None:
    """The run whose complete set ``out`` holds; None if it holds no set; fail on a mix."""
    names = {p.name for p in out.iterdir()} & output.RESULT_NAMES if out.exists() else set()
    if not names:
        return None
    assert "summary.json" in names, f"result files without their summary: {names}"
    summary = json.loads((out / "summary.json").read_text())  # complete JSON or it raises
    run = summary["run"]
    if run % 2:
        assert names == {"summary.json"}, f"REML-like run {run} beside stale files {names}"
    else:
        assert names == output.FIT_FILES, f"NUTS-like run {run} incomplete: {names}"
        posterior = (out / "posterior.nc").read_bytes()
        assert posterior == bytes([run % 256]) * 65536 * summary["chunks"], "mixed posterior"
        assert (out / "h2_posterior.png").read_bytes() == b"png" + bytes([run % 256])
    return run


def runs_of_files(out: Path) -> set[int]:
    """The runs that the result files present in ``out`` come from."""
    runs = set()
    if (out / "summary.json").exists():
        runs.add(json.loads((out / "summary.json").read_text())["run"])
    for name in ("posterior.nc", "h2_posterior.png"):
        if (out / name).exists():
            runs.add((out / name).read_bytes()[-1])  # run % 256, and the runs here are < 256
    return runs


def user_files_intact(out: Path) -> None:
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "mine" / "data.csv").read_text() == "x"


@pytest.fixture
def results(tmp_path):
    """A results folder holding run 2 (three files) and the user's own file and folder."""
    out = tmp_path / "results"
    assert spawn(tmp_path, 2, out).wait() == 0
    (out / "notes.txt").write_text("mine")
    (out / "mine").mkdir()
    (out / "mine" / "data.csv").write_text("x")
    return out


def test_new_set_replaces_old_and_keeps_user_files(tmp_path, results):
    assert result_state(results) == 2
    assert spawn(tmp_path, 3, results).wait() == 0  # REML-like: the stale posterior goes
    assert result_state(results) == 3
    user_files_intact(results)
    assert spawn(tmp_path, 4, results).wait() == 0
    assert result_state(results) == 4
    user_files_intact(results)
    # Nothing of the machinery is left beside or inside the folder.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["child.py", "results"]
    assert sorted(p.name for p in results.iterdir()) == sorted(
        [*output.FIT_FILES, "notes.txt", "mine"]
    )


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "journal"])
def test_killed_at_every_step_leaves_old_or_new_set(tmp_path, results, exchange):
    if exchange and output._renameat2 is None:
        pytest.skip("renameat2 is not available here")
    env = {} if exchange else {"NO_EXCHANGE": "1"}
    steps = ["staged", "linked", "exchanged"] if exchange else ["staged", "journal", "removed"]
    steps.append("renamed-first" if not exchange else "mid-write")
    seen = set()
    run = 2
    for step in steps:
        run += 1
        kill = {"KILL_MID_WRITE": "1"} if step == "mid-write" else {KILL_AT_ENV: step}
        child = spawn(tmp_path, run + (run % 2 == 1), results, env={**env, **kill})
        assert child.wait() == -signal.SIGKILL, child.stderr.read().decode()
        if exchange:
            # One atomic swap: the old set before it, the new set after it, nothing between.
            before = result_state(results)
        else:
            # Journalled: once the journal exists the set may be incomplete on disk, but its
            # files never come from two runs, and the next write completes it first.
            assert len(runs_of_files(results)) <= 1, step
            recover(results)
            before = result_state(results)
        seen.add("old" if before is not None and before < run else "new")
        assert (results / "notes.txt").read_text() == "mine"  # plain files never leave
        assert spawn(tmp_path, run + 10, results, env=env).wait() == 0  # the next run recovers
        assert result_state(results) == run + 10
        user_files_intact(results)
        run += 10
    assert seen == {"old", "new"}  # both outcomes were exercised
    leftovers = [p.name for p in [*tmp_path.iterdir(), *results.iterdir()] if "bayeslmm" in p.name]
    assert leftovers == []


def test_killed_at_random_moments(tmp_path, results):
    """Kills at arbitrary times while a larger set is written: never a mix of two runs."""
    for k, delay in enumerate([0.0, 0.02, 0.05, 0.08, 0.12]):
        child = spawn(tmp_path, 100 + 2 * k, results, chunks=64)
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait()
        result_state(results)
        assert (results / "notes.txt").read_text() == "mine"
    assert spawn(tmp_path, 200, results).wait() == 0
    assert result_state(results) == 200
    user_files_intact(results)


def test_exception_while_writing_changes_nothing(tmp_path, results):
    with pytest.raises(RuntimeError, match="boom"), result_directory(results) as stage:
        (stage / "summary.json").write_text("{")
        raise RuntimeError("boom")
    assert result_state(results) == 2
    user_files_intact(results)
    assert not [p for p in tmp_path.iterdir() if "bayeslmm" in p.name]


def test_result_files_replace_a_set_in_a_shared_directory(tmp_path):
    (tmp_path / "geno.bed").write_text("genotypes")
    for run in (1, 2):
        with result_files([tmp_path / "k.grm.bin", tmp_path / "k.grm.id"]) as (a, b):
            a.write_text(f"bin {run}")
            b.write_text(f"id {run}")
        assert (tmp_path / "k.grm.bin").read_text() == f"bin {run}"
        assert (tmp_path / "k.grm.id").read_text() == f"id {run}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["geno.bed", "k.grm.bin", "k.grm.id"]
    with pytest.raises(RuntimeError, match="not written"):
        with result_files([tmp_path / "k.grm.bin", tmp_path / "k.grm.id"]) as (a, _):
            a.write_text("bin 3")
    assert (tmp_path / "k.grm.bin").read_text() == "bin 2"


def test_output_locations_checked_up_front(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(OutputError, match="is an existing file"):
        check_output_dir(tmp_path / "file.txt")
    with pytest.raises(OutputError, match="which is a file"):
        check_output_dir(tmp_path / "file.txt" / "out")
    with pytest.raises(OutputError, match="does not exist"):
        check_output_dir(tmp_path / "a" / "b")
    with pytest.raises(OutputError, match="is a directory"):
        check_output_prefix(tmp_path)
    assert check_output_dir(tmp_path / "new") == tmp_path / "new"
    assert not (tmp_path / "new").exists()  # checking creates nothing


def test_unwritable_directory(tmp_path):
    if IS_ROOT:  # root writes anywhere a mode allows nothing: use a read-only mount
        if not Path("/sys").is_dir():
            pytest.skip("no read-only location for root")
        target = Path("/sys/bayeslmm-results")
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        target = locked / "results"
    with pytest.raises(OutputError, match="Cannot write into"):
        check_output_dir(target)


def test_save_keeps_the_matplotlib_backend(tmp_path):
    """fit.save() draws on a Figure: the user's backend is not switched to Agg."""
    import matplotlib

    from bayeslmm.results.bayes_result import BayesFit
    from bayeslmm.results.output import write_bayes_files

    class FakeFit:  # the three things write_bayes_files reads, without sampling
        def __init__(self):
            import arviz as az
            import numpy as np

            self.idata = az.from_dict(
                posterior={"h2": np.random.default_rng(0).beta(3, 5, (2, 50))}
            )
            self.spec = type("Spec", (), {"terms": ("id",)})()

        def summary(self, prevalence=None):
            return {"method": "nuts"}

        def plot_heritability(self, ax=None, **kwargs):
            from bayeslmm.results.plots import plot_posterior_density

            return plot_posterior_density(self.idata.posterior["h2"].values, ax=ax, **kwargs)

    before = matplotlib.get_backend()
    matplotlib.use("svg")  # a backend other than the Agg that the old code forced
    try:
        BayesFit.save(FakeFit(), tmp_path / "out", inputs=False)  # a fake has no data
        with result_directory(tmp_path / "demo") as stage:  # as the demo writes
            write_bayes_files(FakeFit(), stage, reference=0.4, title="h²", inputs=False)
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
    for folder in ("out", "demo"):
        assert (tmp_path / folder / "h2_posterior.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_cli_killed_while_writing(tmp_path):
    """End to end: ``bayeslmm fit --method reml`` killed at each commit step (a few seconds per
    run: the CLI imports the whole package)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(1)
    ids = [f"{k:03d}" for k in range(30)]
    W = rng.normal(size=(30, 60))
    pd.DataFrame(W @ W.T / 60, index=ids, columns=ids).to_csv(tmp_path / "kin.csv")
    pd.DataFrame({"id": ids, "y": rng.normal(size=30)}).to_csv(tmp_path / "d.csv", index=False)
    out = tmp_path / "out"
    out.mkdir()
    (out / "posterior.nc").write_text("old")
    (out / "summary.json").write_text('{"method": "nuts"}')
    command = [
        sys.executable, "-m", "bayeslmm.cli", "fit", str(tmp_path / "d.csv"),
        "--formula", "y ~ (1|id)", "--kinship", f"id={tmp_path / 'kin.csv'}",
        "--method", "reml", "--out", str(out),
    ]  # fmt: skip
    for step, new in [("staged", False), ("linked", False), ("exchanged", True)]:
        done = subprocess.run(command, env={**os.environ, KILL_AT_ENV: step}, check=False)
        assert done.returncode == -signal.SIGKILL
        summary = json.loads((out / "summary.json").read_text())
        assert summary["method"] == ("reml" if new else "nuts"), step
        assert (out / "posterior.nc").exists() is (not new), step


def test_recover_leaves_a_live_commit_alone_and_completes_a_dead_one(tmp_path):
    for pid, completed in [(os.getpid(), False), (2**22 + 12345, True)]:  # the 2nd runs nowhere
        stage = tmp_path / f".bayeslmm-stage-{pid}-abc"
        stage.mkdir()
        (stage / "summary.json").write_text(f"new {pid}")
        (tmp_path / "summary.json").write_text("old")
        plan = {"stage": stage.name, "files": ["summary.json"], "remove": []}
        (tmp_path / f".bayeslmm-commit-{pid}-abc.json").write_text(json.dumps(plan))
        actions = recover(tmp_path)
        assert (tmp_path / "summary.json").read_text() == (f"new {pid}" if completed else "old")
        assert bool(actions) is completed
        if completed:
            assert not [
                p for p in tmp_path.iterdir() if p.name.startswith(f".bayeslmm-commit-{pid}")
            ]
    with pytest.warns(UserWarning, match="removed the leftovers"):  # the note a user sees
        (tmp_path / ".bayeslmm-stage-4199999-x").mkdir()
        with result_directory(tmp_path / "out") as stage:
            (stage / "summary.json").write_text("{}")
