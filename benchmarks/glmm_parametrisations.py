"""Parametrisations of the closed-form GLMM density, side by side (a script).

Samples ``y ~ 1 + (1 | id)`` with nutpie on ``bayeslmm.engines.bayes.glmm_density`` in
the forms its docstring describes: conditional centring (the default for binary traits,
also with each of its two ingredients taken out in turn: the information following σ_a²,
the marginal-scale β) against partial non-centring (``parametrisation="partial"``: the
non-centred form for binary traits, their default until session 4; moment-pilot weights
for Poisson, its default), and for binary traits the non-centred form with nutpie's
low-rank mass matrix. Data: bench_glmm's simulations — Bernoulli (logit) at n = 1000
(V_A = 2.19) and an n = 300 data set whose posterior sits near V_A = 0; Poisson with an
observation-level effect on three n = 1000 data sets and one n = 300; ``variants``:
binary-trait variants at n = 500 (low prevalence, probit, binomial with trials and a
covariate, logit with a strong covariate). Same sampler settings as bench_glmm (2 chains
× 1000 tune + 1000 draws, target_accept 0.9, one core). Prints ESS_bulk(var_id), seconds
and R-hat per row: the figures behind docs/bayesian.md's "closed-form latent GLMM".

Usage::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/glmm_parametrisations.py \
        [--families bernoulli poisson variants]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import warnings
from pathlib import Path

import arviz as az
import numpy as np
import nutpie
import pandas as pd
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
# (label, parametrisation, nutpie's low-rank mass matrix, ablation of the default)
FORMS = {
    "bernoulli": [
        ("conditional centring (default)", "conditional", False, None),
        ("conditional, information fixed at pilot", "conditional", False, "fixed information"),
        ("non-centred", "partial", False, None),
        ("non-centred + low-rank mass matrix", "partial", True, None),
    ],
    "poisson": [
        ("conditional centring", "conditional", False, None),
        ("partial non-centring (default)", "partial", False, None),
    ],
    "variants": [
        ("conditional centring (default)", "conditional", False, None),
        ("conditional, beta not marginal-scale", "conditional", False, "no attenuation"),
        ("non-centred", "partial", False, None),
    ],
}


def ablate(density: G.GLMMDensity, ablation: str | None) -> G.GLMMDensity:
    """The default with one ingredient taken out, to show what each one buys.

    ``"fixed information"``: the surrogate's information τ held at its value at the pilot
    variance instead of following σ_a²; ``"no attenuation"``: β sampled as it is, not on
    the marginal scale.
    """
    if ablation == "fixed information":
        t = density.transform
        V0 = density._variances(density.pilot)[3]
        fixed = t.bin_weights @ G.expected_information(t.family, t.link, t.bins, V0)[0]
        density.transform = dataclasses.replace(
            t,
            information=t.information + fixed,
            bins=np.zeros(0),
            bin_weights=np.zeros((t.bin_weights.shape[0], 0)),
        )
    elif ablation == "no attenuation":
        density.attenuation = 0.0
    return density


def binary_variants(n: int = 500, seed: int = 7):
    """(label, built model, true V_A) for four binary-trait variants on one GRM."""
    from scipy.stats import norm

    rng = np.random.default_rng(seed)
    K = bench_glmm.grm(n, 2 * n, rng)
    ids = [f"i{k:05d}" for k in range(n)]
    kin = bl.Kinship(K, ids)
    L = np.linalg.cholesky(K)
    x = rng.normal(size=n)
    trials = rng.integers(1, 6, n)
    variants = [  # label, family, link, formula, SD of the genetic effect, η without it
        ("logit, prevalence ~10%", "bernoulli", "logit", "y ~ 1 + (1|id)", 1.2, -2.5 + 0 * x),
        ("probit", "bernoulli", "probit", "y ~ 1 + (1|id)", 0.8, 0.3 + 0 * x),
        ("binomial 1-5 trials + covariate", "binomial", "logit", "y ~ 1 + x + (1|id)", 1.0,
         -0.5 + 0.8 * x),
        ("logit + strong covariate", "bernoulli", "logit", "y ~ 1 + x + (1|id)", 1.5,
         0.2 + 1.5 * x),
    ]  # fmt: skip
    for label, family, link, formula, sd, eta_fixed in variants:
        eta = eta_fixed + sd * (L @ rng.normal(size=n))
        p = norm.cdf(eta) if link == "probit" else 1 / (1 + np.exp(-eta))
        kw = {"family": family, "link": link}
        if family == "binomial":
            y, kw["trials"] = rng.binomial(trials, p), "t"
        else:
            y = rng.binomial(1, p)
        data = pd.DataFrame({"id": ids, "x": x, "y": y, "t": trials})
        spec = bl.specify(formula, data, kinship={"id": kin}, **kw)
        yield label, build(spec, strategy="latent"), sd**2


def data_sets(family: str):
    """(label, built model, true V_A) for each data set of a row group."""
    if family == "variants":
        yield from binary_variants()
        return
    for n, seed in DATA[family]:
        data, kin, va = bench_glmm.simulate(n, family, seed=seed)
        spec = bl.specify("y ~ 1 + (1|id)", data, kinship={"id": kin}, family=family)
        yield f"n={n:4d} data seed {seed:4d}", build(spec, strategy="latent"), va


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--families", nargs="+", default=["bernoulli", "poisson", "variants"], choices=list(FORMS)
    )
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    print("2 chains x 1000 tune + 1000 draws, nutpie, target_accept 0.9, cores=1, BLAS 1 thread")
    for family in args.families:
        for data_label, built, va in data_sets(family):
            for label, parametrisation, low_rank, ablation in FORMS[family]:
                with threadpool_limits(1):
                    start = time.perf_counter()
                    density = ablate(
                        G.glmm_density(built, parametrisation=parametrisation), ablation
                    )
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
                    f"{family:9s} {data_label:32s} true V_A={va:.2f} {label:40s} "
                    f"ESS {ess:6.0f}  {seconds:5.1f} s  ESS/s {ess / seconds:6.1f}  "
                    f"R-hat {rhat:.3f}  median {float(post.median()):.3f}"
                )
                sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
