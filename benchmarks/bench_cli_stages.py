"""CPU and wall seconds of each stage of one ``bayeslmm fit`` call, in its own process (a
script that prints figures, not a test).

Runs the command line's ``main`` with timers wrapped around its steps (reading the table and
the kinship, the specification, nutpie's import, loading the C callbacks, sampling,
diagnostics, writing the files); ``import bayeslmm.cli`` is timed from the process's start.
CPU seconds are ``time.process_time`` (all threads): on a machine that other jobs keep busy
they move far less than wall seconds.

Usage (the bayeslmm fit arguments follow the script's name)::

    python benchmarks/bench_cli_stages.py fit pheno.csv --formula "y ~ 1 + (1|id)" \\
        --kinship id=grm --seed 1 --out out

(``python benchmarks/bench_startup.py`` writes such a pheno.csv and GCTA grm at n = 1,000 in
a temporary folder; ``make_data`` there does the same for a folder of your choice.)
"""

from __future__ import annotations

import functools
import importlib
import sys
import time

START = (time.process_time(), time.perf_counter())
ROWS: list[tuple[str, float, float]] = []


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


def main() -> int:
    import bayeslmm.cli

    ROWS.append(
        ("import bayeslmm.cli", time.process_time() - START[0], time.perf_counter() - START[1])
    )
    wrap("bayeslmm.commands.fit", "read_data", "read the table")
    wrap("bayeslmm.commands.fit", "parse_kinship_args", "read the kinship (+ eigh)")
    wrap("bayeslmm.model", "LMM.__init__", "model specification")
    wrap("bayeslmm.engines.bayes.sampling", "import_nutpie", "  import nutpie (+ ArviZ)")
    wrap("bayeslmm.engines.bayes.strategies", "SpectralStrategy.nutpie_model", "  C callbacks")
    wrap("bayeslmm.engines.bayes.sampling", "sample", "  sample() (all of the above)")
    wrap("bayeslmm.engines.bayes.sampling", "diagnose", "  R-hat, ESS, divergences")
    wrap("bayeslmm.commands.fit", "fit_model", "fit")
    wrap("bayeslmm.commands.fit", "write_results", "write summary.json, posterior.nc, plot")
    code = bayeslmm.cli.main(sys.argv[1:])
    ROWS.append(("total", time.process_time() - START[0], time.perf_counter() - START[1]))
    for label, cpu, wall in ROWS:
        print(f"{label:42s} CPU {cpu:6.3f} s  wall {wall:6.3f} s", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
