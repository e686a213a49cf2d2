"""Prototype for issue 5's speed target: a closed-form kinship GLMM density for nutpie.

Not used by the package (yet): it measures how far three ideas take the latent strategy
against the brms-style PyMC model (u = σ L z, L = cholesky(K); ``bench_glmm.brms_model``) on
the same data, same priors, same sampler settings, in one process:

1. **no graph compilation**: the log posterior and its gradient written in numpy (two BLAS
   matrix-vector products with the eigenvectors per gradient), sampled by nutpie through
   ``nutpie.compiled_pyfunc.from_pyfunc``, as the spectral strategy now does;
2. **Poisson observation-level effect merged into the kinship effect**: a + e ~
   N(0, σ_a² K + σ_o² I) = U diag(σ_a² s + σ_o²) Uᵀ, so one n-vector of latent values instead
   of two (the likelihood sees only a + e; a is recoverable afterwards from a | a + e);
3. **partial non-centring per eigen-component** (Papaspiliopoulos, Roberts & Sköld 2007):
   u_j = a_j^(1−w_j) v_j, v_j ~ N(0, a_j^(2 w_j)), a_j² the prior variance of component j,
   w_j = I a_j² / (1 + I a_j²) with I the Fisher information per observation at the mean
   response (Poisson: mean y; Bernoulli: p̄(1 − p̄)) and pilot variances from moments of y
   (Poisson: log(1 + (var y − ȳ)/ȳ²) split evenly; Bernoulli: σ² = 1);
   ``--float32`` keeps the eigenvectors in single precision (half the memory traffic).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/proto_glmm_closed_form.py [--n 1000]
        [--families poisson bernoulli] [--modes nc partial] [--float32]

Prints ESS_bulk(var_id) per second of the whole fit for each row and its ratio to the brms
row (same data). Results: benchmarks/results/proto_glmm_closed_form.txt.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path

import arviz as az
import numpy as np
from scipy import special
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_glmm  # noqa: E402

import bayeslmm as bl  # noqa: E402
from bayeslmm.engines.bayes.spectral_density import positive_log_prior  # noqa: E402
from bayeslmm.priors import resolve_priors  # noqa: E402


def closed_form_model(data, kin, family: str, mode: str, dtype: str):
    """nutpie model of y ~ 1 + (1 | id) (+ OLRE for Poisson), latent field in the eigenbasis."""
    from nutpie.compiled_pyfunc import from_pyfunc

    spec = bl.specify("y ~ 1 + (1|id)", data, kinship={"id": kin}, family=family)
    priors = resolve_priors(spec)
    s = np.clip(kin.eigenvalues, 0.0, None)
    U = np.ascontiguousarray(kin.eigenvectors.astype(dtype))
    UT = np.ascontiguousarray(U.T)
    y = np.asarray(spec.y, dtype=float)
    n = y.size
    mu0, sd0 = (float(np.ravel(v)[0]) for v in priors.intercept.params)
    olre = family == "poisson"
    if olre:
        mean = y.mean()
        total = math.log1p(max(y.var() - mean, 1e-3 * mean) / mean**2)
        info, pilot = mean, 0.5 * total * s + 0.5 * total
    else:
        info, pilot = y.mean() * (1 - y.mean()), 1.0 * s
    w = info * pilot / (1 + info * pilot) if mode == "partial" else np.zeros(n)

    # log prior of log σ plus the log-transform's Jacobian (t), and its derivative
    prior_a = positive_log_prior(priors.sd["id"])
    prior_o = positive_log_prior(priors.sd_olre) if olre else None

    def log_prior(prior, t):
        value, slope = prior(t)
        return value + t, slope + 1.0

    k = 3 if olre else 2

    def logp(x):
        b0, t_a = x[0], x[1]
        v = x[k:]
        var_a = math.exp(2 * t_a)
        var_o = math.exp(2 * x[2]) if olre else 0.0
        a2 = var_a * s + var_o
        log_a = 0.5 * np.log(a2)
        scale_u = np.exp((1 - w) * log_a)
        prec_v = np.exp(-2 * w * log_a)
        u = scale_u * v
        eta = b0 + (U @ u.astype(dtype)).astype(float)
        if olre:
            mu = np.exp(eta)
            loglik, g = float(y @ eta - mu.sum()), y - mu
        else:
            loglik = float(y @ eta - np.logaddexp(0, eta).sum())
            g = y - special.expit(eta)
        G = (UT @ g.astype(dtype)).astype(float)
        lp = loglik - 0.5 * float((v * v) @ prec_v) - float(w @ log_a)
        lp -= 0.5 * ((b0 - mu0) / sd0) ** 2
        grad = np.empty_like(x)
        grad[0] = g.sum() - (b0 - mu0) / sd0**2
        d_log_a = (1 - w) * u * G + w * (v * v * prec_v - 1)
        pa, dpa = log_prior(prior_a, t_a)
        lp += pa
        grad[1] = float(d_log_a @ (var_a * s / a2)) + dpa
        if olre:
            po, dpo = log_prior(prior_o, x[2])
            lp += po
            grad[2] = float(d_log_a @ (var_o / a2)) + dpo
        grad[k:] = scale_u * G - v * prec_v
        return lp, grad

    def expand(x):
        return {"var_id": np.asarray(math.exp(2 * x[1]))}

    def initial_point(seed):
        rng = np.random.default_rng(seed)
        x = np.zeros(n + k)
        x[0] = mu0
        x[:k] += rng.uniform(-1, 1, k)
        x[k:] = rng.uniform(-0.1, 0.1, n)
        return x

    model = from_pyfunc(
        n + k,
        lambda: logp,
        lambda *_: expand,
        [np.dtype("float64")],
        [()],
        ["var_id"],
        make_initial_point_fn=initial_point,
    )
    return model, logp


def run_closed_form(data, kin, family, mode, dtype, args) -> dict:
    import nutpie

    start = time.perf_counter()
    model, _ = closed_form_model(data, kin, family, mode, dtype)
    idata = nutpie.sample(
        model, draws=args.draws, tune=args.tune, chains=2, cores=1, seed=args.seed,
        progress_bar=False,
    )  # fmt: skip
    total = time.perf_counter() - start
    return _row(f"closed form {mode} {dtype}", idata, total)


def run_brms(data, kin, family, args) -> dict:
    import nutpie

    start = time.perf_counter()
    spec = bl.specify("y ~ 1 + (1|id)", data, kinship={"id": kin}, family=family)
    model = bench_glmm.brms_model(data, kin, family, resolve_priors(spec))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled = nutpie.compile_pymc_model(model)
    idata = nutpie.sample(
        compiled, draws=args.draws, tune=args.tune, chains=2, cores=1, seed=args.seed,
        progress_bar=False,
    )  # fmt: skip
    return _row("brms-style (L = chol K)", idata, time.perf_counter() - start)


def _row(name, idata, total) -> dict:
    ess = float(az.ess(idata, var_names=["var_id"], method="bulk")["var_id"])
    stats = idata.sample_stats
    return {
        "model": name,
        "total_s": total,
        "ess_var_id": ess,
        "ess_per_s": ess / total,
        "steps": float(stats["n_steps"].mean()),
        "divergences": int(stats["diverging"].sum()),
        "var_id_median": float(idata.posterior["var_id"].median()),
    }


def main(argv=None) -> int:
    import pandas as pd

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1000])
    parser.add_argument("--families", nargs="+", default=["poisson", "bernoulli"])
    parser.add_argument("--modes", nargs="+", default=["nc", "partial"])
    parser.add_argument("--float32", action="store_true")
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--tune", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args(argv)
    print(f"command: python benchmarks/proto_glmm_closed_form.py {' '.join(sys.argv[1:])}")
    print(f"2 chains x {args.tune} tune + {args.draws} draws, nutpie, cores=1, BLAS 1 thread")
    bench_glmm.warm_up()
    dtypes = ["float64", "float32"] if args.float32 else ["float64"]
    with threadpool_limits(limits=1, user_api="blas"):
        for n in args.n:
            for family in args.families:
                data, kin, va = bench_glmm.simulate(n, family, seed=args.seed)
                kin.eigenvalues  # noqa: B018  (the eigh, charged to neither side)
                rows = [run_brms(data, kin, family, args)]
                for mode in args.modes:
                    for dtype in dtypes:
                        rows.append(run_closed_form(data, kin, family, mode, dtype, args))
                table = pd.DataFrame(rows)
                table["ratio"] = table["ess_per_s"] / table["ess_per_s"].iloc[0]
                print(f"\n{family}, n = {n}, true var_id = {va:.3f}")
                print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
                sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
