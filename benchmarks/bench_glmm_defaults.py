"""Do the closed-form GLMM's NUTS defaults adapt? (a script)

``LMM.fit()`` leaves ``tune`` and ``target_accept`` to the route when they are not given
(:func:`bayeslmm.engines.bayes.glmm_density.nuts_defaults`): 300 warm-up draws and
target_accept 0.8 where nutpie samples the one-term closed-form kinship GLMM without an
observation-level effect, 1000 and 0.9 elsewhere. This script fits the data sets of
``benchmarks/bench_glmm.py`` (``y ~ 1 + (1 | id)``, a dense GRM, one data and sampler seed
each) with those defaults and with ``tune=1000, target_accept=0.9``, 2 chains of 1000 kept
draws on one core, and reports per fit: bulk ESS and R-hat of V_A (``var_id``), the largest
R-hat over the hyperparameters (``var_id``, ``beta``), divergences, leapfrog steps of the
warm-up and of the kept draws (per chain, summed) and CPU seconds of the whole call (all
threads), with ESS per CPU second; then per family and n the medians over seeds.

Usage (BLAS pinned to one thread, the machine is shared)::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 \\
        python benchmarks/bench_glmm_defaults.py --n 500 1000 --seeds 1 2 3 4 5 \\
        --families bernoulli poisson-noolre --out benchmarks/results/bench_glmm_defaults.txt
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import arviz as az
import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_glmm import model_family, simulate, warm_up  # noqa: E402

from bayeslmm.engines.bayes.glmm_density import nuts_defaults  # noqa: E402
from bayeslmm.model import LMM  # noqa: E402

SETTINGS = {"defaults": (None, None), "tune1000_ta0.9": (1000, 0.9)}


def run(n: int, family: str, seed: int, setting: str) -> dict:
    tune, target_accept = SETTINGS[setting]
    data, kin, _ = simulate(n, family, seed=seed)
    c0 = time.process_time()
    model = LMM("y ~ 1 + (1|id)", data, kinship={"id": kin}, family=model_family(family))
    kwargs = {} if tune is None else {"tune": tune, "target_accept": target_accept}
    fit = model.fit(
        draws=1000, chains=2, cores=1, seed=seed, progressbar=False, verbose=False, **kwargs
    )
    cpu = time.process_time() - c0
    used = nuts_defaults(model._build(), "auto", tune, target_accept)
    idata = fit.idata
    hyper = [name for name in ("var_id", "beta") if name in idata.posterior]
    ess = float(az.ess(idata, var_names=["var_id"], method="bulk")["var_id"])
    rhat = az.rhat(idata, var_names=hyper)
    stats = idata.sample_stats
    return {
        "n": n,
        "family": family,
        "seed": seed,
        "setting": setting,
        "tune": used[0],
        "target_accept": used[1],
        "ess_bulk": ess,
        "rhat_VA": float(rhat["var_id"]),
        "rhat_max": max(float(np.max(rhat[name])) for name in hyper),
        "divergent": int(stats["diverging"].sum()),
        "steps_draws": int(stats["n_steps"].sum()),
        "step_size": float(stats["step_size"].mean()),
        "cpu_s": cpu,
        "ess_per_cpu_s": ess / cpu,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[500, 1000])
    parser.add_argument("--families", nargs="+", default=["bernoulli", "poisson-noolre"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    out = open(args.out, "a") if args.out else sys.stdout  # noqa: SIM115
    rows = []
    with threadpool_limits(limits=1):
        warm_up()
        for n in args.n:
            for family in args.families:
                for seed in args.seeds:
                    for setting in args.settings:
                        row = run(n, family, seed, setting)
                        rows.append(row)
                        out.write(
                            pd.DataFrame([row]).to_string(
                                index=False, header=len(rows) == 1, float_format="%.4g"
                            )
                            + "\n"
                        )
                        out.flush()
    frame = pd.DataFrame(rows)
    medians = frame.groupby(["family", "n", "setting"])[
        ["ess_bulk", "cpu_s", "ess_per_cpu_s", "rhat_max", "divergent"]
    ].agg(
        {
            "ess_bulk": "median",
            "cpu_s": "median",
            "ess_per_cpu_s": "median",
            "rhat_max": "max",
            "divergent": "sum",
        }
    )
    out.write(
        "# per family and n: medians over seeds (rhat_max: the largest, divergent: the sum)\n"
    )
    out.write(medians.to_string(float_format="%.4g") + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
