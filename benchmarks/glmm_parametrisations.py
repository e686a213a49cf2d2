"""Parametrisations of the closed-form GLMM density, side by side (a script).

Samples ``y ~ 1 + (1 | id)`` with nutpie on ``bayeslmm.engines.bayes.glmm_density`` in
the forms its docstring describes: conditional centring (the default) against partial
non-centring (``parametrisation="partial"``: the non-centred form for binary traits, moment
pilot weights for Poisson; the defaults until session 4), and for binary traits also the
non-centred form with nutpie's low-rank mass matrix. Data: bench_glmm's simulations —
Bernoulli (logit) at n = 1000 (V_A = 2.19) and an n = 300 data set whose posterior sits
near V_A = 0; Poisson with an observation-level effect on three n = 1000 data sets and
one n = 300. Same sampler settings as bench_glmm (2 chains × 1000 tune + 1000 draws,
target_accept 0.9, one core). Prints ESS_bulk(var_id), seconds and R-hat per row: the
figures behind docs/bayesian.md's "closed-form latent GLMM".

Usage::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/glmm_parametrisations.py \
        [--families bernoulli poisson]
"""

from __future__ import annotations

import argparse
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

DATA = {
    "bernoulli": [(1000, 2024), (300, 3)],
    "poisson": [(1000, 1), (1000, 2), (1000, 3), (300, 1)],
}
FORMS = {
    "bernoulli": [
        ("conditional centring (default)", "conditional", False),
        ("non-centred", "partial", False),
        ("non-centred + low-rank mass matrix", "partial", True),
    ],
    "poisson": [
        ("conditional centring (default)", "conditional", False),
        ("partial non-centring", "partial", False),
    ],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=["bernoulli", "poisson"])
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    print("2 chains x 1000 tune + 1000 draws, nutpie, target_accept 0.9, cores=1, BLAS 1 thread")
    for family in args.families:
        for n, seed in DATA[family]:
            data, kin, va = bench_glmm.simulate(n, family, seed=seed)
            spec = bl.specify("y ~ 1 + (1|id)", data, kinship={"id": kin}, family=family)
            built = build(spec, strategy="latent")
            for label, parametrisation, low_rank in FORMS[family]:
                with threadpool_limits(1):
                    start = time.perf_counter()
                    density = G.glmm_density(built, parametrisation=parametrisation)
                    idata = nutpie.sample(
                        G.nutpie_model(density, built.model.coords), draws=1000, tune=1000,
                        chains=2, cores=1, seed=1, progress_bar=False, target_accept=0.9,
                        low_rank_modified_mass_matrix=low_rank,
                    )  # fmt: skip
                    seconds = time.perf_counter() - start
                post = idata.posterior["var_id"]
                ess = float(az.ess(post.to_dataset())["var_id"])
                rhat = float(az.rhat(post.to_dataset())["var_id"])
                print(
                    f"{family:9s} n={n:4d} data seed {seed:4d} true V_A={va:.2f} {label:35s} "
                    f"ESS {ess:6.0f}  {seconds:5.1f} s  ESS/s {ess / seconds:6.1f}  "
                    f"R-hat {rhat:.3f}  median {float(post.median()):.3f}"
                )
                sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
