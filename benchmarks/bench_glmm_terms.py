"""Multi-term GLMMs by NUTS: the closed-form density (glmm_terms) against the PyMC graph.

Each model sampled up to four ways with nutpie (2 chains, one core, BLAS pinned to one
thread, the same draws / tune / seed):

- ``closed``: the default, ``bayeslmm.engines.bayes.glmm_terms`` with conditional scaling
  (Poisson; binomial families are non-centred);
- ``closed-cs``: the density with ``weights="conditional"`` (conditional scaling also
  where the default samples non-centred: a merged observation-level effect);
- ``closed-unmerged``: the default with the observation-level effect a block of its own
  (``multiterm_density(built, merge_olre=False)``; the default merges it into a kinship
  term with one record per individual, as in ``k-iid``);
- ``closed-nc``: the same density with every weight 0 (the PyMC model's own non-centred
  coordinates): what the closed form buys in speed alone;
- ``closed-slope-cs`` (slope models): the default with the slope terms conditionally
  scaled (``multiterm_density(built, slopes="conditional")``; the default samples them
  non-centred);
- ``graph``: nutpie's numba compilation of the built PyMC model (non-centred z · σ for every
  term and the observation-level effect, as brms writes ``(1 | g)``): the brms-style model,
  the stand-in for brms in this run.

Models:

- ``arabidopsis``: the Arabidopsis-shaped data of ``benchmarks/bench_crossed.py`` (625
  counts, 24 genotypes in 9 populations, ``total ~ nutrient * amd + rack + (1|popu) +
  (1|gen)``, Poisson with the observation-level effect);
- ``k-iid``: Poisson with the observation-level effect, n individuals, ``y ~ 1 + (1|id) +
  (1|herd)`` (a GRM and 20 herds);
- ``k-kk``: Bernoulli, ``y ~ 1 + (1|id) + (1|id2)`` with K and K∘K;
- random slopes, n records of n/2 individuals (two each, a standard-normal covariate x):
  ``k-slope`` Poisson with the observation-level effect and ``k-slope-bern`` Bernoulli,
  ``y ~ x + (1 + x|id)`` on a GRM (correlated, LKJ prior); ``iid-slope`` Bernoulli,
  ``y ~ x + (1 + x||herd)`` with 25 herds (uncorrelated).

Reported per fit: seconds (whole: density or compile + sampling; and CPU seconds), the
minimum bulk ESS over the SDs and fixed effects, ESS per draw, max R-hat, divergences and
the ESS of the first term's variance per second.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_glmm_terms.py [--models arabidopsis k-iid k-kk]
        [--n 500] [--seeds 1 2] [--draws 1000] [--tune 1000] [--ways closed closed-nc graph]
    OMP_NUM_THREADS=1 python benchmarks/bench_glmm_terms.py --models k-slope k-slope-bern
        iid-slope
    OMP_NUM_THREADS=1 python benchmarks/bench_glmm_terms.py --part gradient
        [--models arabidopsis k-iid k-kk] [--sizes 500 2000] [--calls 1000]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import warnings
from pathlib import Path

import arviz as az
import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

import bayeslmm as bl
from bayeslmm.engines.bayes import build
from bayeslmm.engines.bayes.glmm_terms import multiterm_density, nutpie_model
from bayeslmm.families import Poisson

sys.path.insert(0, str(Path(__file__).parent))
from bench_crossed import arabidopsis_shaped  # noqa: E402
from bench_glmm import grm  # noqa: E402


def simulate(model: str, n: int, seed: int):
    """(formula, data, kinship dict, family) of one data set."""
    rng = np.random.default_rng(seed)
    if model == "arabidopsis":
        formula = "total ~ nutrient * amd + rack + (1|popu) + (1|gen)"
        return formula, arabidopsis_shaped(seed), {}, Poisson(overdispersion=True)
    if "slope" in model:
        return simulate_slopes(model, n, rng)
    K = grm(n, 2 * n, rng)
    ids = [f"i{k:05d}" for k in range(n)]
    kin = bl.Kinship(K, ids, name="GRM")
    L = np.linalg.cholesky(K)
    if model == "k-iid":
        herd = rng.integers(0, 20, n)
        eta = 0.5 + np.sqrt(0.4) * L @ rng.normal(size=n) + rng.normal(0, 0.5, 20)[herd]
        y = rng.poisson(np.exp(eta + rng.normal(0, np.sqrt(0.4), n)))
        data = pd.DataFrame({"id": ids, "herd": [f"h{h}" for h in herd], "y": y})
        return "y ~ 1 + (1|id) + (1|herd)", data, {"id": kin}, Poisson(overdispersion=True)
    KK = kin.hadamard()
    Lkk = np.linalg.cholesky(KK.matrix + 1e-8 * np.eye(n))
    eta = np.sqrt(1.5) * L @ rng.normal(size=n) + np.sqrt(0.7) * Lkk @ rng.normal(size=n)
    y = rng.binomial(1, 1 / (1 + np.exp(-eta)))
    data = pd.DataFrame({"id": ids, "id2": ids, "y": y})
    return "y ~ 1 + (1|id) + (1|id2)", data, {"id": kin, "id2": KK}, "bernoulli"


def simulate_slopes(model: str, n: int, rng: np.random.Generator):
    """Random intercepts and slopes: n records, two per level (n/2 individuals on a GRM, or
    25 herds), intercept variance 0.4, slope variance 0.2, correlation 0.3."""
    x = rng.normal(size=n)
    if model == "iid-slope":
        herd = rng.integers(0, 25, n)
        z = rng.normal(size=(25, 2))
        u0, u1 = np.sqrt(0.4) * z[:, 0], np.sqrt(0.2) * z[:, 1]
        eta = -0.3 + 0.5 * x + u0[herd] + x * u1[herd]
        y = rng.binomial(1, 1 / (1 + np.exp(-eta)))
        data = pd.DataFrame({"herd": [f"h{h}" for h in herd], "x": x, "y": y})
        return "y ~ x + (1 + x||herd)", data, {}, "bernoulli"
    m = n // 2
    K = grm(m, 2 * m, rng)
    ids = [f"i{k:05d}" for k in range(m)]
    L = np.linalg.cholesky(K)
    z0, z1 = L @ rng.normal(size=m), L @ rng.normal(size=m)
    u0 = np.sqrt(0.4) * z0
    u1 = np.sqrt(0.2) * (0.3 * z0 + np.sqrt(1 - 0.3**2) * z1)
    level = np.repeat(np.arange(m), 2)
    eta = 0.3 * x + u0[level] + x * u1[level]
    data = pd.DataFrame({"id": [ids[k] for k in level], "x": x})
    kin = {"id": bl.Kinship(K, ids, name="GRM")}
    if model == "k-slope":
        data["y"] = rng.poisson(np.exp(0.5 + eta + rng.normal(0, np.sqrt(0.3), n)))
        return "y ~ x + (1 + x|id)", data, kin, Poisson(overdispersion=True)
    data["y"] = rng.binomial(1, 1 / (1 + np.exp(-eta)))
    return "y ~ x + (1 + x|id)", data, kin, "bernoulli"


def diagnostics(idata, names: list[str]) -> dict[str, float]:
    ess = az.ess(idata, var_names=names, method="bulk")
    rhat = az.rhat(idata, var_names=names)
    draws = idata.posterior.sizes["chain"] * idata.posterior.sizes["draw"]
    min_ess = min(float(np.min(ess[v].values)) for v in names)
    div = int(idata.sample_stats["diverging"].sum()) if "diverging" in idata.sample_stats else -1
    return {
        "min_ess": min_ess,
        "ess_per_draw": min_ess / draws,
        "max_rhat": max(float(np.max(rhat[v].values)) for v in names),
        "divergences": div,
        "ess_first_var": float(np.min(ess[names[0]].values)),
    }


def run(model: str, n: int, seed: int, args) -> list[dict]:
    import nutpie

    formula, data, kin, family = simulate(model, n, seed)
    spec = bl.specify(formula, data, kinship=kin, family=family)
    names = [f"sd_{t.group}" for t in spec.terms]
    if isinstance(family, Poisson):
        names.append("sd_olre")
    names.append("beta")
    rows = []
    for how in args.ways:
        built = build(spec, strategy="latent")
        w0, c0 = time.perf_counter(), time.process_time()
        if how == "graph":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                compiled = nutpie.compile_pymc_model(built.model)
        else:
            density = multiterm_density(
                built,
                weights={"closed-nc": "noncentred", "closed-cs": "conditional"}.get(how, "auto"),
                slopes="conditional" if how == "closed-slope-cs" else "noncentred",
                merge_olre=how != "closed-unmerged",
            )
            compiled = nutpie_model(density, built.model.coords)
        prep = time.perf_counter() - w0
        idata = nutpie.sample(
            compiled,
            draws=args.draws,
            tune=args.tune,
            chains=2,
            cores=1,
            seed=seed,
            progress_bar=False,
            target_accept=0.8,
            save_warmup=False,
        )
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        d = diagnostics(idata, names)
        rows.append(
            {
                "model": model,
                "n": len(data),
                "seed": seed,
                "way": how,
                "prep_s": prep,
                "total_s": wall,
                "cpu_s": cpu,
                **d,
                "ess_first_var_per_s": d["ess_first_var"] / wall,
            }
        )
    return rows


def gradient_cost(models: list[str], sizes: list[int], calls: int) -> None:
    """Thread CPU µs per call of the default density's value and gradient at points
    around the pilot, in numpy (``numpy_logp``) and through the fused numba kernel
    (``logp``), beside the floor: the bare mat-vecs one gradient needs (U c and Uᵀ g per
    kinship block, in the eigenvectors' float32), timed the same way."""
    print(
        "# per-gradient cost: thread CPU us per call (value + gradient), best of 3 rounds of "
        f"{calls} calls; numpy = numpy_logp, fused = logp (numba kernel); floor = U c and "
        "U^T g per kinship block (float32 BLAS)"
    )
    rows = []
    with threadpool_limits(limits=1):
        for model in models:
            for n in sizes[:1] if model == "arabidopsis" else sizes:  # its size is fixed
                formula, data, kin, family = simulate(model, n, 1)
                spec = bl.specify(formula, data, kinship=kin, family=family)
                density = multiterm_density(build(spec, strategy="latent"))
                rng = np.random.default_rng(0)
                points = [
                    density.initial_point(k) + rng.normal(0, 0.1, density.ndim) for k in range(16)
                ]
                # the first call builds the kernel's data and loads it from numba's cache
                # (compiles it where no cache exists yet)
                w0 = time.perf_counter()
                density.logp(points[0])
                first = time.perf_counter() - w0
                numpy_cost = _best_us(
                    lambda k, d=density, pts=points: d.numpy_logp(pts[k % 16]), calls
                )
                fused = _best_us(lambda k, d=density, pts=points: d.logp(pts[k % 16]), calls)
                kinship = [b for b in density.blocks if b.vectors is not None]
                vecs = [rng.normal(size=b.n_basis).astype(np.float32) for b in kinship]
                recs = [rng.normal(size=b.n_levels).astype(np.float32) for b in kinship]

                def matvecs(k, kinship=kinship, vecs=vecs, recs=recs):
                    for b, c, g in zip(kinship, vecs, recs, strict=True):
                        b.vectors @ c
                        b.vectors_t @ g

                floor = _best_us(matvecs, calls) if kinship else 0.0
                rows.append(
                    {
                        "model": model,
                        "n": len(data),
                        "ndim": density.ndim,
                        "blocks": " ".join(
                            f"{b.name}{'+olre' if getattr(b, 'merged', False) else ''}({b.n_basis})"
                            for b in density.blocks
                        ),
                        "first_s": first,
                        "numpy_us": numpy_cost,
                        "fused_us": fused,
                        "floor_us": floor,
                        "numpy/floor": numpy_cost / floor if floor else float("nan"),
                        "fused/floor": fused / floor if floor else float("nan"),
                    }
                )
                print(pd.DataFrame(rows[-1:]).to_string(index=False, float_format="%.3g"))
    print(pd.DataFrame(rows).to_string(index=False, float_format="%.3g"), flush=True)


def _best_us(call, calls: int) -> float:
    """Thread CPU µs per call, the best of three rounds (after a warm-up round)."""
    best = float("inf")
    for round_ in range(4):
        t0 = time.thread_time()
        for k in range(calls):
            call(k)
        if round_:
            best = min(best, (time.thread_time() - t0) / calls * 1e6)
    return best


def default_fit(seeds: list[int]) -> None:
    """``LMM(...).fit(seed=...)`` with every default (4 chains × 1000 draws after 1000
    warm-up, nutpie, the closed form) on the Arabidopsis-shaped data: what a user waits for
    and gets."""
    for seed in seeds:
        data = arabidopsis_shaped(seed)
        model = bl.LMM(
            "total ~ nutrient * amd + rack + (1|popu) + (1|gen)",
            data,
            family=Poisson(overdispersion=True),
        )
        w0, c0 = time.perf_counter(), time.process_time()
        fit = model.fit(seed=seed, progressbar=False, verbose=False)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        post = fit.idata.posterior
        d = diagnostics(fit.idata, ["sd_popu", "sd_gen", "sd_olre", "beta"])
        print(
            f"# default fit, arabidopsis seed {seed}: {post.sizes['chain']} x "
            f"{post.sizes['draw']} draws, {wall:.1f} s ({cpu:.1f} CPU s), min ESS "
            f"{d['min_ess']:.0f}, max R-hat {d['max_rhat']:.4f}, divergences {d['divergences']}",
            flush=True,
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["arabidopsis", "k-iid", "k-kk"])
    parser.add_argument("--ways", nargs="+", default=["closed", "closed-nc", "graph"])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--tune", type=int, default=1000)
    parser.add_argument(
        "--part",
        choices=["sample", "gradient"],
        default="sample",
        help="gradient: thread CPU us per logp call of the default density at --sizes",
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 2000])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument(
        "--default-fit",
        action="store_true",
        help="instead: LMM.fit() with every default on the Arabidopsis-shaped data per seed",
    )
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    if args.default_fit:
        default_fit(args.seeds)
        return 0
    if args.part == "gradient":
        gradient_cost(args.models, args.sizes, args.calls)
        return 0
    print(
        f"# bench_glmm_terms: python {platform.python_version()}, draws={args.draws} "
        f"tune={args.tune} chains=2 cores=1 nutpie, BLAS 1 thread; min_ess = min bulk ESS "
        "over the SDs and beta"
    )
    results = []
    with threadpool_limits(limits=1):
        for model in args.models:
            for seed in args.seeds:
                rows = run(model, args.n, seed, args)
                results.extend(rows)
                print(pd.DataFrame(rows).to_string(index=False, float_format="%.4g"), flush=True)
    frame = pd.DataFrame(results)
    wide = frame.pivot_table(index=["model", "seed"], columns="way", values="ess_per_draw")
    print("# ESS per draw (min over SDs and beta)")
    print(wide.to_string(float_format="%.3f"))
    wide = frame.pivot_table(index=["model", "seed"], columns="way", values="ess_first_var_per_s")
    print("# ESS of the first SD per second of the whole call")
    print(wide.to_string(float_format="%.3g"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
