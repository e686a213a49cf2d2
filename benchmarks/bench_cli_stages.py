"""CPU and wall seconds of each stage of one ``bayeslmm fit`` call, from process start to exit
(a script that prints figures, not a test).

The script starts itself again as a child process that runs the command line as the
``bayeslmm`` console script does (``bayeslmm.cli.main()`` reading ``sys.argv``), with timers
wrapped around its steps: importing ``bayeslmm.cli``, building the parser (which imports
every subcommand's module), reading the table and the kinship, the specification, nutpie's
import, loading the C callbacks, sampling, diagnostics and writing the files. What
``main()`` spends outside those steps is the row "other, in main()". Wrapping the steps
imports their modules (the fit command with pandas, the model, the Bayesian engine) before
``main()`` runs: that is a row of its own, "import the timed modules", which an unwrapped
run spends inside ``main()`` (with the collector paused there too). The parent measures the
whole process: the interpreter's start before the script's first line, and its exit after
``main()`` returned (the teardown), both from the system-wide monotonic clock that
``time.perf_counter`` reads on Linux. CPU seconds are ``time.process_time`` (all threads) in
the child and the child's user + system time for the whole process; on a machine that other
jobs keep busy they move far less than wall seconds. The row "cyclic garbage collector" is
the time the collector ran, inside the other rows (``gc.callbacks``).

Usage (the bayeslmm fit arguments follow the script's name)::

    python benchmarks/bench_cli_stages.py fit pheno.csv --formula "y ~ 1 + (1|id)" \\
        --kinship id=grm --seed 1 --out out

(``python benchmarks/bench_startup.py`` writes such a pheno.csv and GCTA grm at n = 1,000 in
a temporary folder; ``make_data`` there does the same for a folder of your choice.)
"""

from __future__ import annotations

import time

START = (time.process_time(), time.perf_counter())

import contextlib  # noqa: E402  (after the start time, which the first row is measured from)
import functools  # noqa: E402
import gc  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

ROWS: list[tuple[str, float, float]] = []
#: Rows that together make up main(); the rest of main() is "other, in main()".
IN_MAIN = (
    "build the parser (imports every subcommand)",
    "read the table",
    "read the kinship (+ eigh)",
    "model specification",
    "fit",
    "write summary.json, posterior.nc, plot",
)


def wrap(module_name: str, attribute: str, label: str) -> None:
    """Replace ``module.attribute`` (``Class.method`` allowed) by a timed version."""
    owner = importlib.import_module(module_name)
    *path, name = attribute.split(".")
    for part in path:
        owner = getattr(owner, part)
    function = getattr(owner, name)

    @functools.wraps(function)
    def timed(*args, **kwargs):
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            ROWS.append((label, time.process_time() - cpu, time.perf_counter() - wall))

    setattr(owner, name, timed)


def collector_timer() -> list[float]:
    """CPU and wall seconds the cyclic collector runs from now on: ``[cpu, wall]``, updated."""
    spent, started = [0.0, 0.0], [0.0, 0.0]

    def callback(phase: str, info: dict) -> None:
        if phase == "start":
            started[:] = time.process_time(), time.perf_counter()
        else:
            spent[0] += time.process_time() - started[0]
            spent[1] += time.perf_counter() - started[1]

    gc.callbacks.append(callback)
    return spent


def wrap_steps() -> None:
    """Timers around the steps of a command-line fit."""
    wrap("bayeslmm.cli", "build_parser", IN_MAIN[0])
    wrap("bayeslmm.commands.fit", "read_data", IN_MAIN[1])
    wrap("bayeslmm.commands.fit", "parse_kinship_args", IN_MAIN[2])
    wrap("bayeslmm.model", "LMM.__init__", IN_MAIN[3])
    wrap("bayeslmm.engines.bayes.sampling", "import_nutpie", "  import nutpie (+ ArviZ)")
    wrap("bayeslmm.engines.bayes.strategies", "SpectralStrategy.nutpie_model", "  C callbacks")
    wrap("bayeslmm.engines.bayes.sampling", "sample", "  sample() (all of the above)")
    wrap("bayeslmm.engines.bayes.sampling", "diagnose", "  R-hat, ESS, divergences")
    wrap("bayeslmm.commands.fit", "fit_model", IN_MAIN[4])
    wrap("bayeslmm.commands.fit", "write_results", IN_MAIN[5])


def child(argv: list[str]) -> int:
    collector = collector_timer()
    import bayeslmm.cli

    try:
        from bayeslmm._imports import long_lived_imports
    except ImportError:  # a checkout from before bayeslmm/_imports.py, for comparison
        long_lived_imports = contextlib.nullcontext
    ROWS.append(
        ("import bayeslmm.cli", time.process_time() - START[0], time.perf_counter() - START[1])
    )
    # wrapping imports the modules below, which main() would import with the collector paused
    cpu, wall = time.process_time(), time.perf_counter()
    with long_lived_imports():
        wrap_steps()
    ROWS.append(
        (
            "import the timed modules (fit command, model, engine)",
            time.process_time() - cpu,
            time.perf_counter() - wall,
        )
    )
    sys.argv = ["bayeslmm", *argv]
    cpu, wall = time.process_time(), time.perf_counter()
    code = bayeslmm.cli.main()  # as the console script runs it
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    ROWS.append(
        (
            "other, in main()",
            cpu - sum(r[1] for r in ROWS if r[0] in IN_MAIN),
            wall - sum(r[2] for r in ROWS if r[0] in IN_MAIN),
        )
    )
    ROWS.append(("cyclic garbage collector (in the rows above)", *collector))
    ROWS.append(("main() returned", time.process_time() - START[0], time.perf_counter() - START[1]))
    print(
        "STAGES " + json.dumps({"rows": ROWS, "start": START[1], "returned": time.perf_counter()}),
        file=sys.stderr,
        flush=True,
    )
    return code


def main() -> int:
    if sys.argv[1:2] == ["--child"]:
        return child(sys.argv[2:])
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    spawned = time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, "--child", *sys.argv[1:]],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    ended = time.perf_counter()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    marker = [line for line in done.stderr.splitlines() if line.startswith("STAGES ")]
    if done.returncode != 0 or not marker:
        print(done.stderr, file=sys.stderr)
        return done.returncode or 1
    report = json.loads(marker[-1][len("STAGES ") :])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    rows = [
        ("interpreter start (before the script)", float("nan"), report["start"] - spawned),
        *[tuple(row) for row in report["rows"]],
        ("exit: interpreter teardown", float("nan"), ended - report["returned"]),
        ("whole process", cpu, ended - spawned),
    ]
    for label, cpu_s, wall_s in rows:
        print(f"{label:46s} CPU {cpu_s:6.3f} s  wall {wall_s:6.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
