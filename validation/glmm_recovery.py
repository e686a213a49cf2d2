"""Recovery of the latent genetic variance of count and binary traits by NUTS (and Laplace).

For each family (Poisson with an observation-level effect, Bernoulli logit) and each seed:
simulate full-sib / half-sib families with a VanRaden GRM and known latent V_A
(:func:`bayeslmm.datasets.simulate`), fit ``LMM("y ~ 1 + (1|id)", family=...)`` by NUTS, and
check that the central posterior interval of V_A (``var_id``) covers the truth. The
heritability on the scale the simulation defines it is checked too, computed per draw with
:func:`bayeslmm.results.scales.heritability_scales` (Poisson: latent scale, V_A / (V_A + V_e);
Bernoulli: link scale, V_A / (V_A + π²/3)). The Laplace ML estimate of V_A
(:func:`bayeslmm.engines.laplace.fit_laplace`) is reported beside the posterior median.

Run (about 1-2 minutes per fit on one core, nutpie compiles each model once)::

    OMP_NUM_THREADS=1 python validation/glmm_recovery.py --seeds 8 \
        --out validation/glmm_recovery.txt
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from bayeslmm.datasets import simulate
from bayeslmm.engines.laplace import fit_laplace
from bayeslmm.model import LMM
from bayeslmm.results.scales import heritability_scales


def one_fit(family: str, seed: int, args) -> dict:
    sim = simulate(
        n_families=args.n_families,
        family_size=args.family_size,
        n_snps=args.n_snps,
        h2=args.h2,
        family=family,
        repeats=args.repeats,
        seed=seed,
    )
    model = LMM("y ~ 1 + (1|id)", sim.data, kinship={"id": sim.kinship}, family=family)
    t0 = time.perf_counter()
    fit = model.fit(
        draws=args.draws,
        tune=args.tune,
        chains=2,
        cores=1,
        seed=seed,
        sampler=args.sampler,
        progressbar=False,
        verbose=False,
    )
    nuts_s = time.perf_counter() - t0
    post = fit.posterior
    va = post["var_id"].values.reshape(-1)
    beta = post["beta"].values.reshape(va.size, -1)
    eta = beta @ np.asarray(model.spec.X).T
    if family == "poisson":
        other = post["var_olre"].values.reshape(-1)
        scales = heritability_scales(va, [other], eta, "poisson")
        h2_draws = scales["latent"]
    else:
        scales = heritability_scales(va, 0.0, eta, "bernoulli")
        h2_draws = scales["link"]
    lo, hi = (1 - args.interval) / 2, 1 - (1 - args.interval) / 2
    va_lo, va_hi = np.quantile(va, [lo, hi])
    h_lo, h_hi = np.quantile(h2_draws, [lo, hi])
    t0 = time.perf_counter()
    lap = fit_laplace(model.spec)
    lap_s = time.perf_counter() - t0
    diag = fit.diagnostics if isinstance(fit.diagnostics, dict) else {}
    return {
        "family": family,
        "seed": seed,
        "n_obs": model.spec.n_obs,
        "true_VA": sim.truth["V_A"],
        "VA_median": float(np.median(va)),
        "VA_lo": float(va_lo),
        "VA_hi": float(va_hi),
        "VA_cover": bool(va_lo <= sim.truth["V_A"] <= va_hi),
        "true_h2": sim.truth["h2"],
        "h2_median": float(np.median(h2_draws)),
        "h2_cover": bool(h_lo <= sim.truth["h2"] <= h_hi),
        "h2_obs_median": float(np.median(scales["observed"])),
        "laplace_VA": float(lap.theta[0] ** 2),
        "max_rhat": diag.get("max_r_hat", float("nan")),
        "min_ess": diag.get("min_ess_bulk", float("nan")),
        "divergences": diag.get("divergences", float("nan")),
        "nuts_s": nuts_s,
        "laplace_s": lap_s,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--families", nargs="+", default=["poisson", "bernoulli"])
    parser.add_argument("--n-families", type=int, default=20)
    parser.add_argument("--family-size", type=int, default=10)
    parser.add_argument("--n-snps", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--h2", type=float, default=0.4)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--tune", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=0.9)
    parser.add_argument("--sampler", default="nutpie")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    out = open(args.out, "w") if args.out else sys.stdout  # noqa: SIM115
    header = (
        f"# glmm_recovery: n_families={args.n_families} family_size={args.family_size} "
        f"repeats={args.repeats} n_snps={args.n_snps} h2={args.h2} draws={args.draws} "
        f"tune={args.tune} chains=2 sampler={args.sampler} interval={args.interval}\n"
        "# h2 scale: poisson latent V_A/(V_A+V_e); bernoulli link V_A/(V_A+pi^2/3)\n"
    )
    out.write(header)
    cols = (
        "family seed n_obs true_VA VA_median VA_lo VA_hi VA_cover true_h2 h2_median "
        "h2_cover h2_obs_median laplace_VA max_rhat min_ess divergences nuts_s laplace_s"
    ).split()
    out.write("\t".join(cols) + "\n")
    out.flush()
    results = []
    for family in args.families:
        for seed in range(1, args.seeds + 1):
            r = one_fit(family, seed, args)
            results.append(r)
            out.write(
                "\t".join(f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in cols)
                + "\n"
            )
            out.flush()
    out.write("\n# coverage of the central posterior interval\n")
    for family in args.families:
        rs = [r for r in results if r["family"] == family]
        va_cov = sum(r["VA_cover"] for r in rs)
        h_cov = sum(r["h2_cover"] for r in rs)
        bias = np.mean([r["VA_median"] - r["true_VA"] for r in rs])
        lap_bias = np.mean([r["laplace_VA"] - r["true_VA"] for r in rs])
        out.write(
            f"{family}: V_A covered {va_cov}/{len(rs)}, h2 covered {h_cov}/{len(rs)}; "
            f"mean(posterior median - truth) = {bias:+.3f}, "
            f"mean(Laplace - truth) = {lap_bias:+.3f}\n"
        )
    out.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
