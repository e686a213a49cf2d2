"""How close is strategy="laplace-marginal" to the exact posterior? (a script; output beside it).

For simulated kinship GLMMs, fit the same model twice with NUTS: ``strategy="latent"``
(every latent value sampled: the exact posterior) and ``strategy="laplace-marginal"`` (the latent
field integrated out by a Laplace approximation). Report, for V_A (``var_id``) and h², the
posterior mean and 10/50/90 % quantiles of both, their difference in units of the exact
posterior SD, and the Monte Carlo SE of the difference of means.

Cases: Poisson (log, with the observation-level effect) with 2 records per individual and
mean count ≈ 3; Bernoulli (logit) with 1 record per individual (the hard case for Laplace)
and with 4 records per individual.

Usage::

    OMP_NUM_THREADS=1 python validation/laplace_accuracy.py [--n 100] [--seeds 1 2 3] \
        > validation/laplace_accuracy.txt
"""

from __future__ import annotations

import argparse
import time
import warnings

import arviz as az
import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

import bayeslmm as bl
from bayeslmm.model import LMM


def grm(n: int, rng: np.random.Generator) -> np.ndarray:
    G = rng.binomial(2, 0.4, (n, 2 * n)).astype(float)
    G -= G.mean(0)
    K = G @ G.T / (2 * n * 0.48)
    return 0.9 * K + 0.1 * np.eye(n)


def simulate(case: str, n: int, seed: int):
    rng = np.random.default_rng(seed)
    K = grm(n, rng)
    ids = [f"i{k:04d}" for k in range(n)]
    L = np.linalg.cholesky(K)
    if case == "poisson_2rec":
        reps, va = 2, 0.5
        eta = np.repeat(0.7 + np.sqrt(va) * L @ rng.normal(size=n), reps)
        eta = eta + rng.normal(0, np.sqrt(0.3), eta.size)
        y = rng.poisson(np.exp(eta))
    else:
        reps = 1 if case == "bernoulli_1rec" else 4
        va = 1.5
        eta = np.repeat(np.sqrt(va) * L @ rng.normal(size=n), reps)
        y = rng.binomial(1, 1 / (1 + np.exp(-eta)))
    df = pd.DataFrame({"y": y, "id": np.repeat(ids, reps)})
    family = "poisson" if case.startswith("poisson") else "bernoulli"
    return df, bl.Kinship(K, ids), family, va


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument(
        "--cases", nargs="+", default=["poisson_2rec", "bernoulli_1rec", "bernoulli_4rec"]
    )
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    print(
        f"# laplace_accuracy: n={args.n} individuals, draws={args.draws} tune={args.draws} "
        "chains=2, nutpie; d_* = (laplace - latent) / posterior SD (latent)"
    )
    cols = [
        "case",
        "seed",
        "var",
        "latent_mean",
        "laplace_mean",
        "d_mean",
        "mcse_d",
        "d_q10",
        "d_q50",
        "d_q90",
        "ess_latent",
        "ess_laplace",
        "s_latent",
        "s_laplace",
    ]
    rows = []
    with threadpool_limits(limits=1):
        for case in args.cases:
            for seed in args.seeds:
                df, kin, family, _ = simulate(case, args.n, seed)
                post, secs = {}, {}
                for strategy in ("latent", "laplace"):
                    t0 = time.perf_counter()
                    fit = LMM("y ~ 1 + (1|id)", df, kinship={"id": kin}, family=family).fit(
                        draws=args.draws,
                        tune=args.draws,
                        chains=2,
                        cores=1,
                        seed=seed,
                        strategy=strategy,
                        progressbar=False,
                        verbose=False,
                    )
                    secs[strategy] = time.perf_counter() - t0
                    post[strategy] = fit.idata
                for var in ("var_id", "h2"):
                    a = post["latent"].posterior[var].values.ravel()
                    b = post["laplace"].posterior[var].values.ravel()
                    ea = float(az.ess(post["latent"], var_names=[var])[var])
                    eb = float(az.ess(post["laplace"], var_names=[var])[var])
                    sd = a.std()
                    q = [(np.quantile(b, p) - np.quantile(a, p)) / sd for p in (0.1, 0.5, 0.9)]
                    mcse = np.sqrt(a.var() / ea + b.var() / eb) / sd
                    rows.append(
                        [
                            case,
                            seed,
                            var,
                            a.mean(),
                            b.mean(),
                            (b.mean() - a.mean()) / sd,
                            mcse,
                            *q,
                            ea,
                            eb,
                            secs["latent"],
                            secs["laplace"],
                        ]
                    )
                frame = pd.DataFrame(rows[-2:], columns=cols)
                print(frame.to_string(index=False, float_format="%.3g"), flush=True)
    frame = pd.DataFrame(rows, columns=cols)
    print("\n# mean over seeds of d_mean (and of |d_mean|) by case and variable")
    summary = frame.groupby(["case", "var"]).agg(
        d_mean=("d_mean", "mean"),
        abs_d_mean=("d_mean", lambda x: np.abs(x).mean()),
        mcse_d=("mcse_d", "mean"),
    )
    print(summary.to_string(float_format="%.3g"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
