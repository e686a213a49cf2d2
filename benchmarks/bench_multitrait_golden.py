"""bayeslmm's whole multi-trait fit on the brms golden's data, for the measured n = 300 ratio
against brms (a script that prints figures, not a test).

The data and pedigree A of ``tests/golden/brms_multitrait/`` (300 animals, two traits), the
fit the golden test makes (``mvbind(y1, y2) ~ x + (1 | id)``, 4 chains × (1000 + 1000), cores
= 1, seed 2026) timed from model construction under one BLAS thread, and ESS(r_g) per CPU
second beside brms's figure from ``brms_multitrait.json`` (its whole ``brm()`` call).

Usage::

    python benchmarks/bench_multitrait_golden.py
"""

from __future__ import annotations

import time
from pathlib import Path

import arviz as az
import pandas as pd
from threadpoolctl import threadpool_limits

import bayeslmm as bl

GOLDEN = Path(__file__).parents[1] / "tests" / "golden" / "brms_multitrait"


def main() -> None:
    data = pd.read_csv(GOLDEN / "data.csv", dtype={"id": str})
    A = pd.read_csv(GOLDEN / "A.csv", index_col=0)
    with threadpool_limits(1):
        c0, t0 = time.process_time(), time.perf_counter()
        kinship = bl.Kinship(A.to_numpy(), tuple(A.index.astype(str)), name="A")
        model = bl.LMM("mvbind(y1, y2) ~ x + (1 | id)", data, kinship={"id": kinship})
        fit = model.fit(draws=1000, tune=1000, chains=4, cores=1, seed=2026, progressbar=False)
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    r_g = fit.posterior["genetic_correlation"].values[:, :, 0, 1]  # chain, draw, trait, trait
    ess = float(az.ess(r_g))
    print(f"bayeslmm: {cpu:.2f} CPU s ({wall:.2f} s wall), ESS(r_g) {ess:.0f} -> "
          f"{ess / cpu:.1f} per CPU s")  # fmt: skip
    print(
        f"brms figures: {GOLDEN / 'brms_multitrait.json'} (see benchmarks/results/"
        "brms_multitrait.txt for its whole-call CPU s and ESS(r_g))"
    )


if __name__ == "__main__":
    main()
