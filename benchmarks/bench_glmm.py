"""Kinship GLMMs by NUTS: bayeslmm's latent model vs the plain PyMC model of brms (a script).

Both models are the same GLMM, y ~ 1 + (1 | id) with u ~ N(0, σ² K), the same priors
(bayeslmm's defaults, read from the built model) and the same sampler (nutpie, 2 chains,
one core, BLAS pinned to one thread with threadpoolctl):

- ``bayeslmm``: ``LMM(...).fit()``: the one-term closed-form density in the eigenbasis of K
  (``bayeslmm.engines.bayes.glmm_density``) with the fit's warm-up and target_accept for
  the route unless ``--tune`` is given (300 at 0.8 without an observation-level effect,
  1000 at 0.9 with it);
- ``brms``: the way brms writes it (``gr(id, cov = K)``): u = σ · L z with L = cholesky(K)
  computed once, written directly in PyMC, 1000 warm-up draws (brms's) at target_accept 0.9.

For each family (Poisson log with an observation-level effect; Bernoulli logit) and n, the
script reports the bulk ESS of the latent genetic variance σ² (``var_id``) per second of the
whole fit (model build + compile + sampling: what a user waits for) and per second of
sampling alone, and the ratio bayeslmm / brms. Data: a GRM from simulated genotypes
(0.98 K + 0.02 I, so that its Cholesky factor exists), σ² = 0.4 (Poisson, with V_olre = 0.6)
or 2.19 (Bernoulli, link-scale h² = 0.4).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_glmm.py [--n 500 1000] [--seeds 1 2 3] \
        [--families poisson bernoulli] [--laplace] [--out benchmarks/results/bench_glmm.txt]

Each seed is a new data set and sampler seed; the file ends with the ratio per seed and
their mean (a single ESS varies up to threefold between sampler seeds, see
docs/bayesian.md).

``--families poisson-noolre`` is the Poisson model without the observation-level effect
(simulated and fitted without it). ``--write-csv DIR`` writes each data set (id, y, K) for
``benchmarks/brms_glmm.R`` (real brms, run separately); when
``benchmarks/results/brms_glmm.txt`` holds a recorded brms figure for a case, the script also
prints bayeslmm's whole-call ESS/s over that figure.

With ``--laplace`` the script also fits ``strategy="laplace-marginal"`` (the latent field integrated
out by a Laplace approximation, NUTS (nutpie) on the SDs only; its log-density is a Python
Op that nutpie calls in object mode).
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
from bayeslmm.model import LMM


def grm(n: int, n_snp: int, rng: np.random.Generator) -> np.ndarray:
    freq = rng.uniform(0.05, 0.95, n_snp)
    G = rng.binomial(2, freq, size=(n, n_snp)).astype(float)
    p = G.mean(0) / 2
    W = G - 2 * p
    K = W @ W.T / (2 * np.sum(p * (1 - p)))
    return 0.98 * K + 0.02 * np.eye(n)


def simulate(n: int, family: str, seed: int) -> tuple[pd.DataFrame, bl.Kinship, float]:
    rng = np.random.default_rng(seed)
    K = grm(n, 2 * n, rng)
    ids = [f"i{k:05d}" for k in range(n)]
    L = np.linalg.cholesky(K)
    if family in ("poisson", "poisson-noolre"):
        va = 0.4
        # 'poisson-noolre': the same draws with no observation-level variance
        v_olre = 0.6 if family == "poisson" else 0.0
        eta = 0.5 + np.sqrt(va) * L @ rng.normal(size=n) + rng.normal(0, np.sqrt(v_olre), n)
        y = rng.poisson(np.exp(eta))
    else:
        va = 0.4 / 0.6 * np.pi**2 / 3
        eta = np.sqrt(va) * L @ rng.normal(size=n)
        y = rng.binomial(1, 1 / (1 + np.exp(-eta)))
    return pd.DataFrame({"id": ids, "y": y}), bl.Kinship(K, ids, name="GRM"), va


def brms_model(data: pd.DataFrame, kin: bl.Kinship, family: str, priors):
    """u = σ L z, L = cholesky(K): brms's ``gr(id, cov = K)`` written in PyMC."""
    import pymc as pm
    import pytensor.tensor as pt

    L = np.linalg.cholesky(kin.matrix)
    idx = np.asarray([kin.ids.index(i) for i in data["id"]])
    n = kin.n
    mu0, sd0 = priors.intercept.params
    nu, scale = priors.sd["id"].params
    with pm.Model() as model:
        beta = pm.Normal("beta", mu0, sd0)
        sd_id = pm.HalfStudentT("sd_id", nu=nu, sigma=float(np.ravel(scale)[0]))
        z = pm.Normal("z_id", 0.0, 1.0, shape=n)
        u = sd_id * pt.dot(pt.as_tensor(L), z)
        eta = beta + u[idx]
        if family == "poisson-noolre":
            pm.Poisson("y", mu=pt.exp(eta), observed=data["y"].to_numpy())
        elif family == "poisson":
            nu_o, scale_o = priors.sd_olre.params
            sd_olre = pm.HalfStudentT("sd_olre", nu=nu_o, sigma=scale_o)
            z_olre = pm.Normal("z_olre", 0.0, 1.0, shape=len(data))
            eta = eta + sd_olre * z_olre
            pm.Poisson("y", mu=pt.exp(eta), observed=data["y"].to_numpy())
        else:
            pm.Bernoulli("y", logit_p=eta, observed=data["y"].to_numpy())
        pm.Deterministic("var_id", sd_id**2)
    return model


def model_family(family: str) -> str | bl.families.Family:
    """bayeslmm's family for a benchmark family name ('poisson' carries the observation-level
    effect, as bayeslmm's Poisson does by default; 'poisson-noolre' does not)."""
    if family == "poisson-noolre":
        return bl.families.Poisson(overdispersion=False)
    return family


def write_csv(directory: Path, ns, families, seeds) -> None:
    """Write each simulated data set for R (benchmarks/brms_glmm.R): ``glmm_{family}_n{n}_
    seed{seed}_data.csv`` (id, y) and ``..._K.csv`` (the kinship, ids as header and first
    column, 17 significant digits so that R reads the same matrix)."""
    directory.mkdir(parents=True, exist_ok=True)
    for family in families:
        for n in ns:
            for seed in seeds:
                data, kin, va = simulate(n, family, seed=seed)
                stem = directory / f"glmm_{family}_n{n}_seed{seed}"
                data.to_csv(f"{stem}_data.csv", index=False)
                frame = pd.DataFrame(kin.matrix, index=kin.ids, columns=kin.ids)
                frame.to_csv(f"{stem}_K.csv", float_format="%.17g")
                print(f"wrote {stem}_data.csv, {stem}_K.csv (true V_A {va:.4g})")


BRMS_RESULTS = Path(__file__).parent / "results" / "brms_glmm.txt"
#: brms's default warm-up (iter = 2000, warmup = iter / 2), for the brms-style PyMC model
BRMS_TUNE = 1000


def read_brms(path: Path) -> pd.DataFrame | None:
    """The brms figures recorded by benchmarks/brms_glmm.R (R, run separately), or None."""
    if not path.exists():
        return None
    return pd.read_csv(path, sep=r"\s+", comment="#")


def brms_ratio_line(brms: pd.DataFrame | None, frame: pd.DataFrame, family, n, seed) -> str:
    """bayeslmm's whole-call ESS/s over the recorded real-brms whole-call ESS/s."""
    if brms is None:
        return ""
    rec = brms[(brms["family"] == family) & (brms["n"] == n) & (brms["seed"] == seed)]
    if rec.empty:
        return f"# {family} n={n} seed {seed}: no recorded brms (R) figure\n"
    # the latest run of the case (brms_glmm.R appends): a rerun on this machine replaces a
    # figure recorded on another
    r = rec.iloc[-1]
    ratio = frame.loc["bayeslmm", "ess_per_s"] / r["ess_per_s"]
    # per CPU second as well: the two runs met different loads on a shared machine
    ratio_cpu = frame.loc["bayeslmm", "ess_per_cpu_s"] / (r["ess_bulk"] / r["cpu_s"])
    return (
        f"# {family} n={n} seed {seed}: ESS/s ratio bayeslmm / real brms (R, run separately "
        f"on this machine {r['date']}, whole call {r['total_s']:.1f} s, {r['cpu_s']:.1f} CPU s,"
        f" ESS {r['ess_bulk']:.0f}) = {ratio:.1f} (whole call, wall), {ratio_cpu:.1f} "
        "(whole call, CPU)\n"
    )


def warm_up() -> None:
    """Compile and sample a tiny model first: the first nutpie compile in a process also
    pays one-off JIT and import costs, which must not be charged to whichever model runs
    first."""
    import nutpie
    import pymc as pm

    with pm.Model() as tiny:
        pm.Normal("x", 0.0, 1.0, shape=3)
    nutpie.sample(nutpie.compile_pymc_model(tiny), draws=20, tune=20, chains=1, progress_bar=False)


def ess_var(idata) -> float:
    return float(az.ess(idata, var_names=["var_id"], method="bulk")["var_id"])


def run(n: int, family: str, seed: int, args) -> list[dict]:
    data, kin, va = simulate(n, family, seed=seed)
    rows = []
    cpu: dict[str, float] = {}
    # bayeslmm
    t0 = time.perf_counter()
    c0 = time.process_time()  # CPU of all threads: robust to a busy machine
    model = LMM("y ~ 1 + (1|id)", data, kinship={"id": kin}, family=model_family(family))
    # tune None: LMM.fit's default for the route (300 on the closed-form GLMM without an
    # observation-level effect, with target_accept 0.8; 1000 and 0.9 otherwise)
    fit = model.fit(
        draws=args.draws,
        tune=args.tune,
        chains=2,
        cores=1,
        seed=seed,
        sampler="nutpie",
        progressbar=False,
        verbose=False,
    )
    total = time.perf_counter() - t0
    cpu["bayeslmm"] = time.process_time() - c0
    sample_s = fit.timing.get("sample_s", float("nan"))
    compile_s = fit.timing.get("compile_s", float("nan"))
    ess = ess_var(fit.idata)
    va_med = float(np.median(fit.posterior["var_id"].values))
    rows.append(("bayeslmm", total, compile_s, sample_s, ess, va_med))
    priors = model._build().priors
    if args.laplace:
        # the same model with the latent field integrated out (Laplace), NUTS on the SDs
        t0 = time.perf_counter()
        c0 = time.process_time()  # CPU of all threads: robust to a busy machine
        fit = model.fit(
            draws=args.draws,
            tune=args.tune,
            chains=2,
            cores=1,
            seed=seed,
            strategy="laplace-marginal",
            progressbar=False,
            verbose=False,
        )
        total = time.perf_counter() - t0
        cpu["laplace"] = time.process_time() - c0
        va_med = float(np.median(fit.posterior["var_id"].values))
        smp = fit.timing.get("sample_s", float("nan"))
        comp = fit.timing.get("compile_s", float("nan"))
        rows.append(("laplace", total, comp, smp, ess_var(fit.idata), va_med))
    # brms way, sampled exactly as bayeslmm's nutpie path does (same settings)
    import nutpie

    t0 = time.perf_counter()
    c0 = time.process_time()  # CPU of all threads: robust to a busy machine
    brms = brms_model(data, kin, family, priors)
    t_compile = time.perf_counter()
    compiled = nutpie.compile_pymc_model(brms)
    t1 = time.perf_counter()
    compile_s = t1 - t_compile
    idata = nutpie.sample(
        compiled,
        draws=args.draws,
        tune=BRMS_TUNE if args.tune is None else args.tune,
        chains=2,
        cores=1,
        seed=seed,
        progress_bar=False,
        target_accept=0.9,
        save_warmup=False,
    )
    total = time.perf_counter() - t0
    cpu["brms"] = time.process_time() - c0
    sample_s = time.perf_counter() - t1
    va_med = float(np.median(idata.posterior["var_id"].values))
    rows.append(("brms", total, compile_s, sample_s, ess_var(idata), va_med))
    return [
        {
            "n": n,
            "family": family,
            "seed": seed,
            "model": name,
            "true_VA": va,
            "VA_median": med,
            "ess_bulk": e,
            "total_s": tot,
            "compile_s": comp,
            "sample_s": smp,
            "ess_per_s": e / tot,
            "ess_per_sample_s": e / smp,
            "cpu_s": cpu[name],
            "ess_per_cpu_s": e / cpu[name],
        }
        for name, tot, comp, smp, e, med in rows
    ]


def summary(results: pd.DataFrame) -> str:
    """Per family and n: the whole-fit ESS/s ratio bayeslmm / brms per seed and its mean."""
    lines = ["# summary: whole-fit ESS/s ratio bayeslmm / brms per seed, and the mean"]
    wide = results.pivot_table(index=["family", "n", "seed"], columns="model", values="ess_per_s")
    ratios = (wide["bayeslmm"] / wide["brms"]).rename("ratio")
    for (family, n), group in ratios.groupby(level=["family", "n"]):
        per_seed = ", ".join(f"{r:.2f}" for r in group.to_numpy())
        lines.append(f"# {family} n={n}: {per_seed}; mean {group.mean():.2f}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[500, 1000])
    parser.add_argument("--families", nargs="+", default=["poisson", "bernoulli"])
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument(
        "--tune",
        type=int,
        default=None,
        help="warm-up draws per chain; default: LMM.fit's for bayeslmm (the route's), "
        f"{BRMS_TUNE} (brms's) for the brms-style model",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[1, 2, 3],
        help="data and sampler seeds; one ESS is noisy (x2 between sampler seeds), so the "
        "summary reports the ratio per seed and their mean",
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--write-csv",
        type=Path,
        default=None,
        metavar="DIR",
        help="write each data set (id, y and K) to CSV files in DIR for benchmarks/brms_glmm.R "
        "and stop (no fits)",
    )
    parser.add_argument(
        "--brms",
        type=Path,
        default=BRMS_RESULTS,
        help="real brms figures (benchmarks/brms_glmm.R); each case also prints bayeslmm's "
        "ratio to the recorded brms whole-call ESS/s",
    )
    parser.add_argument(
        "--laplace",
        action="store_true",
        help="also fit strategy='laplace' (latent field integrated out by a Laplace approximation)",
    )
    args = parser.parse_args(argv)
    if args.write_csv is not None:
        write_csv(args.write_csv, args.n, args.families, args.seeds)
        return 0
    brms = read_brms(args.brms)
    warnings.simplefilter("ignore")
    out = open(args.out, "w") if args.out else sys.stdout  # noqa: SIM115
    out.write(
        f"# bench_glmm: python {platform.python_version()}, {platform.machine()}, "
        f"draws={args.draws} tune={args.tune or 'default'} chains=2 cores=1 sampler=nutpie, "
        "BLAS 1 thread\n"
        "# ess_per_s = bulk ESS of var_id / whole-fit seconds (build + compile + sampling);\n"
        "# ess_per_sample_s = the same per second of sampling alone (compile excluded);\n"
        "# cpu_s = CPU seconds of the whole fit (all threads), ess_per_cpu_s = ESS per CPU second\n"
    )
    out.flush()
    results = []
    with threadpool_limits(limits=1):
        warm_up()
        for family in args.families:
            for n in args.n:
                for seed in args.seeds:
                    rows = run(n, family, seed, args)
                    results.extend(rows)
                    frame = pd.DataFrame(rows)
                    frame = frame.set_index("model", drop=False)
                    ratio = frame.loc["bayeslmm", "ess_per_s"] / frame.loc["brms", "ess_per_s"]
                    ratio_s = (
                        frame.loc["bayeslmm", "ess_per_sample_s"]
                        / frame.loc["brms", "ess_per_sample_s"]
                    )
                    out.write(frame.to_string(index=False, float_format="%.4g") + "\n")
                    out.write(
                        f"# {family} n={n} seed {seed}: ESS/s ratio bayeslmm / brms = "
                        f"{ratio:.2f} (whole fit), {ratio_s:.2f} (sampling alone)\n"
                    )
                    if "laplace" in frame.index:
                        lap = frame.loc["laplace", "ess_per_s"] / frame.loc["brms", "ess_per_s"]
                        lap_s = (
                            frame.loc["laplace", "ess_per_sample_s"]
                            / frame.loc["brms", "ess_per_sample_s"]
                        )
                        out.write(
                            f"# {family} n={n} seed {seed}: ESS/s ratio laplace / brms = "
                            f"{lap:.2f} (whole fit), {lap_s:.2f} (sampling alone)\n"
                        )
                    out.write(brms_ratio_line(brms, frame, family, n, seed))
                    out.write("\n")
                    out.flush()
    out.write(summary(pd.DataFrame(results)))
    out.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
