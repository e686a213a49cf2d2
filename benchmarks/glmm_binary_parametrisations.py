"""Binary-trait parametrisations of the closed-form GLMM density, side by side (a script).

Samples ``y ~ 1 + (1 | id)`` (Bernoulli, logit) with nutpie on
``bayeslmm.engines.bayes.glmm_density`` in three forms: the default non-centred one, the
shear anchored at the pilot (``shear=True``), and the default with nutpie's low-rank mass
matrix; on bench_glmm's n = 1000 data (V_A = 2.19) and on an n = 300 data set whose
posterior sits near V_A = 0. Prints ESS_bulk(var_id), seconds and R-hat per row: the
figures behind docs/bayesian.md's "what was tried for binary traits".

Usage::

    OMP_NUM_THREADS=1 python benchmarks/glmm_binary_parametrisations.py
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import arviz as az
import nutpie
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_glmm  # noqa: E402

import bayeslmm as bl  # noqa: E402
from bayeslmm.engines.bayes import build  # noqa: E402
from bayeslmm.engines.bayes import glmm_density as G  # noqa: E402


def main() -> int:
    warnings.simplefilter("ignore")
    print("2 chains x 1000 tune + 1000 draws, nutpie, cores=1, BLAS 1 thread")
    for n, seed in [(1000, 2024), (300, 3)]:
        data, kin, va = bench_glmm.simulate(n, "bernoulli", seed=seed)
        spec = bl.specify("y ~ 1 + (1|id)", data, kinship={"id": kin}, family="bernoulli")
        built = build(spec, strategy="latent")
        for label, shear, low_rank in [
            ("non-centred (default)", False, False),
            ("shear at the pilot", True, False),
            ("non-centred + low-rank mass matrix", False, True),
        ]:
            with threadpool_limits(1):
                start = time.perf_counter()
                density = G.glmm_density(built, shear=shear)
                idata = nutpie.sample(
                    G.nutpie_model(density, built.model.coords), draws=1000, tune=1000,
                    chains=2, cores=1, seed=1, progress_bar=False,
                    low_rank_modified_mass_matrix=low_rank,
                )  # fmt: skip
                seconds = time.perf_counter() - start
            post = idata.posterior["var_id"]
            ess = float(az.ess(post.to_dataset())["var_id"])
            rhat = float(az.rhat(post.to_dataset())["var_id"])
            print(
                f"n={n} true V_A={va:.2f} {label:36s} ESS {ess:6.0f}  {seconds:5.1f} s  "
                f"ESS/s {ess / seconds:6.1f}  R-hat {rhat:.3f}  median {float(post.median()):.3f}"
            )
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
