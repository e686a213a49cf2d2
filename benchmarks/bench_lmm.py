"""Speed of the Bayesian Gaussian LMM (a script that prints ratios, not a test).

1. bayeslmm against the model a careful PyMC user writes by hand for the same data: the
   latent non-centred parametrisation u = σ_g L z, z ~ N(0, I), L = cholesky(K), with the
   same priors (bayeslmm's defaults) and the same sampler. The figure of merit is the bulk
   effective sample size of h² per second of the *whole* fit, from the raw matrix to the
   posterior: kinship validation / Cholesky, model building, compilation and sampling.
   ``speedup`` = (ESS/s of bayeslmm) / (ESS/s of the hand-written model).
2. At large n (default 5000): the whole bayeslmm fit against one ``numpy.linalg.eigh`` of K,
   the irreducible cost of the spectral strategy; target ≤ 2 × eigh + 10 s.

BLAS is pinned to one thread with threadpoolctl and chains run one after the other on one
core (``cores=1``), so the numbers measure work, not how many idle cores the machine has.

Usage::

    python benchmarks/bench_lmm.py                  # sizes 500 1000 2000, eigh check at 5000
    python benchmarks/bench_lmm.py --sizes 500 1000 --large 0
    python benchmarks/bench_lmm.py --quick          # small sizes and few draws, a smoke run
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import warnings

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_info, threadpool_limits

FORMULA = "y ~ 1 + x + (1 | id)"


def simulated_data(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Families of 10 (full and half sibs), VanRaden GRM of 2000 SNPs with a 2% ridge (so
    that the hand-written model's Cholesky exists), h² = 0.5 and a covariate x."""
    from bayeslmm.datasets import simulate

    rng = np.random.default_rng(seed)
    sim = simulate(n_families=n // 10, family_size=10, n_snps=2000, h2=0.5, seed=seed)
    K = 0.98 * sim.kinship.matrix + 0.02 * np.eye(n)
    u = np.linalg.cholesky(K) @ rng.normal(size=n) * np.sqrt(0.5)
    x = rng.normal(size=n)
    y = 1.0 + 0.3 * x + u + rng.normal(scale=np.sqrt(0.5), size=n)
    data = pd.DataFrame({"id": list(sim.kinship.ids), "x": x, "y": y})
    return data, K


def ess_h2(posterior) -> float:
    import arviz as az

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(az.ess(posterior, var_names=["h2"], method="bulk")["h2"])


def fit_bayeslmm(data, K, draws: int, tune: int, chains: int, sampler: str, seed: int) -> dict:
    """Whole bayeslmm fit from the raw matrix; returns times and ESS."""
    import bayeslmm as bl
    from bayeslmm.model import LMM

    start = time.perf_counter()
    kin = bl.Kinship(K, ids=list(data["id"]), name="GRM")  # validation incl. its one eigh
    kinship_s = time.perf_counter() - start
    t = time.perf_counter()
    model = LMM(FORMULA, data, kinship={"id": kin})
    specify_s = time.perf_counter() - t
    fit = model.fit(
        draws=draws,
        tune=tune,
        chains=chains,
        cores=1,
        seed=seed,
        sampler=sampler,
        progressbar=False,
        verbose=False,
    )
    total = time.perf_counter() - start
    tm = fit.timing
    other = tm["total_s"] - tm["build_s"] - tm.get("compile_s", 0.0) - tm["sample_s"]
    ess = ess_h2(fit.posterior)
    # gradients: mean leapfrog steps of the kept draws × all iterations (warm-up included)
    steps = float(fit.idata.sample_stats["n_steps"].mean()) * (draws + tune) * chains
    return {
        "total_s": total,
        "eigh_s": kinship_s,  # Kinship() validation = one eigh + O(n²) checks
        "build_s": specify_s + tm["build_s"],
        "compile_s": tm.get("compile_s", 0.0),
        "sample_s": tm["sample_s"],
        "other_s": other,
        "ess_h2": ess,
        "ess_per_s": ess / total,
        "h2_mean": float(fit.posterior["h2"].mean()),
        "divergences": fit.diagnostics["divergences"],
        "strategy": fit.strategy,
        "us_per_grad": 1e6 * tm["sample_s"] / steps,
        "logp_us": closed_form_logp_us(fit.built) if sampler == "nutpie" else float("nan"),
    }


def closed_form_logp_us(built, calls: int = 5000) -> float:
    """Microseconds per call of the closed-form log posterior and gradient alone (the rest of
    ``us_per_grad`` is nutpie's per-call overhead and its adaptation)."""
    from bayeslmm.engines.bayes.spectral_density import closed_form_applies, spectral_density

    if not closed_form_applies(built):
        return float("nan")
    density = spectral_density(built)
    x = np.array([0.1, float(np.log(np.mean(density.resid**2)))])
    density.logp(x)
    start = time.perf_counter()
    for _ in range(calls):
        density.logp(x)
    return 1e6 * (time.perf_counter() - start) / calls


def hand_written_model(data: pd.DataFrame, K: np.ndarray):
    """What a careful user writes: non-centred u = σ_g L z with L = cholesky(K), and the
    priors bayeslmm uses by default (so that both sample the same posterior)."""
    import pymc as pm
    import pytensor.tensor as pt

    y = data["y"].to_numpy()
    x = data["x"].to_numpy()
    sy = y.std(ddof=1)
    L = np.linalg.cholesky(K)
    with pm.Model() as model:
        # intercept at centred x, as in bayeslmm
        intercept_c = pm.Normal("intercept_c", mu=y.mean(), sigma=2.5 * sy)
        b_x = pm.Normal("b_x", mu=0.0, sigma=2.5 * sy / x.std(ddof=1))
        sd_g = pm.HalfStudentT("sd_g", nu=3, sigma=2.5 * sy)
        sigma = pm.HalfStudentT("sigma", nu=3, sigma=2.5 * sy)
        z = pm.Normal("z", 0.0, 1.0, shape=len(y))
        u = sd_g * pt.dot(pt.as_tensor(L), z)
        pm.Normal("y", mu=intercept_c + b_x * (x - x.mean()) + u, sigma=sigma, observed=y)
        pm.Deterministic("h2", sd_g**2 / (sd_g**2 + sigma**2))
    return model


def fit_hand_written(data, K, draws: int, tune: int, chains: int, sampler: str, seed: int):
    import pymc as pm

    start = time.perf_counter()
    model = hand_written_model(data, K)
    build_s = time.perf_counter() - start
    compile_s = 0.0
    if sampler == "nutpie":
        import nutpie

        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compiled = nutpie.compile_pymc_model(model)
        compile_s = time.perf_counter() - t
        t = time.perf_counter()
        idata = nutpie.sample(
            compiled,
            draws=draws,
            tune=tune,
            chains=chains,
            cores=1,
            seed=seed,
            progress_bar=False,
            target_accept=0.9,
            save_warmup=False,
        )
    else:
        t = time.perf_counter()
        with model, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            idata = pm.sample(
                draws=draws,
                tune=tune,
                chains=chains,
                cores=1,
                random_seed=seed,
                progressbar=False,
                target_accept=0.9,
                compute_convergence_checks=False,
            )
    sample_s = time.perf_counter() - t
    total = time.perf_counter() - start
    ess = ess_h2(idata.posterior)
    return {
        "total_s": total,
        "eigh_s": 0.0,
        "build_s": build_s,  # includes the Cholesky of K
        "compile_s": compile_s,
        "sample_s": sample_s,
        "other_s": total - build_s - compile_s - sample_s,
        "ess_h2": ess,
        "ess_per_s": ess / total,
        "h2_mean": float(idata.posterior["h2"].mean()),
        "divergences": int(np.asarray(idata.sample_stats["diverging"]).sum()),
        "strategy": "hand-written latent (Cholesky)",
    }


def time_eigh(K: np.ndarray) -> float:
    start = time.perf_counter()
    np.linalg.eigh(K)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    from bayeslmm.engines.bayes.sampling import resolve_sampler

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000])
    parser.add_argument("--large", type=int, default=5000, help="n of the eigh check (0: skip)")
    parser.add_argument("--sampler", default="auto", help="auto (nutpie if installed) or pymc")
    parser.add_argument("--draws", type=int, default=1000, help="bayeslmm draws per chain")
    parser.add_argument("--tune", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument(
        "--baseline-draws",
        type=int,
        nargs="+",
        default=[1000, 500, 250],
        help="hand-written model's draws (= tune) per size, the last one for larger sizes",
    )
    parser.add_argument(
        "--no-pymc-row", action="store_true", help="skip bayeslmm on PyMC's NUTS as a third row"
    )
    parser.add_argument("--quick", action="store_true", help="sizes 200 400, few draws")
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.large, args.draws, args.tune = [200, 400], 1000, 300, 300
        args.baseline_draws = [200]
    # nutpie for both models (the baseline's best; for bayeslmm what fit(sampler="auto")
    # picks: the spectral model's closed-form density); the extra "bayeslmm (pymc)" row is
    # the same model on PyMC's own NUTS.
    sampler = resolve_sampler(args.sampler)
    pd.set_option("display.width", 200)

    with threadpool_limits(limits=1, user_api="blas"):
        blas = [
            f"{i['internal_api']} {i.get('version')} threads={i['num_threads']}"
            for i in threadpool_info()
            if i["user_api"] == "blas"
        ]
        print(f"command: python benchmarks/bench_lmm.py {' '.join(sys.argv[1:])}".rstrip())
        print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}")
        print(f"BLAS pinned to 1 thread with threadpoolctl: {blas}; chains sequential (cores=1)")
        print(f"sampler: {sampler} for both models; model {FORMULA}, h2 = 0.5 simulated")
        print(
            f"bayeslmm: {args.chains} chains x {args.tune} tune + {args.draws} draws; "
            "hand-written: tune = draws as listed per n"
        )

        # warm-up: one-off imports and numba/pytensor start-up are not charged to either side
        data, K = simulated_data(100, args.seed)
        fit_bayeslmm(data, K, 50, 50, 1, sampler, args.seed)
        fit_hand_written(data, K, 50, 50, 1, sampler, args.seed)

        rows = []
        for i, n in enumerate(args.sizes):
            data, K = simulated_data(n, args.seed + n)
            base_draws = args.baseline_draws[min(i, len(args.baseline_draws) - 1)]
            ours = fit_bayeslmm(data, K, args.draws, args.tune, args.chains, sampler, args.seed)
            ours.update(n=n, model=f"bayeslmm ({sampler})", draws=args.draws)
            print(f"  n={n} bayeslmm done in {ours['total_s']:.1f} s", file=sys.stderr)
            extra = []
            if sampler != "pymc" and not args.no_pymc_row:
                # the same model on PyMC's own NUTS: no numba compilation
                alt = fit_bayeslmm(data, K, args.draws, args.tune, args.chains, "pymc", args.seed)
                alt.update(n=n, model="bayeslmm (pymc)", draws=args.draws)
                extra.append(alt)
            theirs = fit_hand_written(
                data, K, base_draws, base_draws, args.chains, sampler, args.seed
            )
            theirs.update(n=n, model="hand-written", draws=base_draws)
            print(f"  n={n} hand-written done in {theirs['total_s']:.1f} s", file=sys.stderr)
            for row in (ours, *extra):
                row["speedup"] = row["ess_per_s"] / theirs["ess_per_s"]
            theirs["speedup"] = 1.0
            theirs["model"] = f"hand-written ({sampler})"
            rows += [ours, *extra, theirs]
        cols = [
            "n",
            "model",
            "draws",
            "total_s",
            "eigh_s",
            "build_s",
            "compile_s",
            "sample_s",
            "other_s",
            "ess_h2",
            "ess_per_s",
            "speedup",
            "h2_mean",
            "divergences",
            "us_per_grad",
            "logp_us",
        ]
        print("\n== ESS_bulk(h2) per second of the whole fit ==")
        print(pd.DataFrame(rows)[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        print(
            "\ntotal_s: raw matrix -> posterior. eigh_s: Kinship(K) validation, i.e. its one "
            "eigendecomposition;\nbuild_s: specify + pm.Model (bayeslmm: U'y, U'X), or "
            "Cholesky + pm.Model (hand-written);\ncompile_s: nutpie compilation (bayeslmm: the "
            "closed-form density, loaded from numba's cache; PyMC's NUTS compiles inside "
            "sample_s); other_s: ArviZ conversion, post-hoc draws of beta | y, "
            "theta, diagnostics.\nspeedup: ESS/s of the row / ESS/s of the hand-written model.\n"
            "us_per_grad: sampling seconds per gradient evaluation; logp_us: the closed-form log "
            "posterior alone (bayeslmm nutpie rows)."
        )

        if args.large:
            n = args.large
            data, K = simulated_data(n, args.seed + n)
            eigh_s = time_eigh(K)
            ours = fit_bayeslmm(data, K, args.draws, args.tune, args.chains, sampler, args.seed)
            budget = 2 * eigh_s + 10
            print(f"\n== n = {n}: whole bayeslmm fit vs one numpy.linalg.eigh(K) ==")
            print(
                f"eigh {eigh_s:.1f} s; bayeslmm total {ours['total_s']:.1f} s = "
                f"{ours['total_s'] / eigh_s:.2f} x eigh (target <= 2 x eigh + 10 s = "
                f"{budget:.1f} s: {'met' if ours['total_s'] <= budget else 'NOT met'})"
            )
            print(
                "where the time goes: "
                + ", ".join(
                    f"{k} {ours[k]:.1f} s"
                    for k in ("eigh_s", "build_s", "compile_s", "sample_s", "other_s")
                )
                + f"; ESS_bulk(h2) {ours['ess_h2']:.0f}, {ours['divergences']} divergences"
            )
            if sampler != "pymc" and not args.no_pymc_row:
                alt = fit_bayeslmm(data, K, args.draws, args.tune, args.chains, "pymc", args.seed)
                print(
                    f"same fit on PyMC's NUTS: total {alt['total_s']:.1f} s = "
                    f"{alt['total_s'] / eigh_s:.2f} x eigh (compile + sampling "
                    f"{alt['sample_s']:.1f} s); ESS_bulk(h2) {alt['ess_h2']:.0f}"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
