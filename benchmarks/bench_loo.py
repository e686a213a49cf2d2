"""Speed of the exact marginal LOO of a Gaussian kinship model (a script, not a test).

A GRM of n individuals (default 10,000) from simulated markers, a phenotype with h² = 0.5,
a NUTS fit (spectral strategy, nutpie, 4 chains × 1000 draws), then ``fit.loo()``: for each
of the 4,000 draws log p(y_i | y_−i, θ, β) of every observation from the kinship's cached
eigendecomposition, and Pareto-smoothed importance sampling (ArviZ). Target: the LOO (both
stages) in at most one minute with BLAS pinned to one thread.

Printed: seconds of each stage, the LOO's seconds as a ratio to one ``eigh`` of K measured in
the same process, and the largest difference between the δ-interpolated log-likelihood that
``fit.loo()`` uses and the exact one (two n × n matrix products per block of draws) on the
first 200 draws.

``--low-rank`` holds the GRM as its markers (``LowRankKinship``, no 2% identity: K = W Wᵀ
exactly) with fewer markers than individuals: the LOO then runs on the n × p SVD and the
complement in closed form, never an n × n matrix (the "eigh" stage is the thin SVD).

Usage::

    python benchmarks/bench_loo.py [--n 10000] [--markers 2000] [--draws 1000] [--chains 4]
        [--low-rank]
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

import bayeslmm as bl
from bayeslmm.engines import gaussian
from bayeslmm.kinship import LowRankKinship
from bayeslmm.results.loo import pointwise_log_likelihood
from bayeslmm.results.predict import parameter_values


def simulated(
    n: int, markers: int, rng: np.random.Generator, low_rank: bool = False
) -> tuple[bl.Kinship, pd.DataFrame]:
    """A VanRaden GRM of ``markers`` biallelic loci (plus 2% identity, or held as its
    markers with ``low_rank``) and y with h² = 0.5."""
    freq = rng.uniform(0.05, 0.5, markers)
    G = rng.binomial(2, freq, size=(n, markers)).astype(float)
    W = G - 2 * freq
    ids = [f"i{k}" for k in range(n)]
    if low_rank:
        K = LowRankKinship(W / np.sqrt(2 * np.sum(freq * (1 - freq))), ids)
    else:
        K = W @ W.T / (2 * np.sum(freq * (1 - freq)))
        K = bl.Kinship(0.98 * K + 0.02 * np.eye(n), ids, check_psd=False)
    g = W @ rng.normal(0.0, np.sqrt(1.0 / (2 * np.sum(freq * (1 - freq)))), markers)
    x = rng.normal(size=n)
    y = 1.0 + 0.3 * x + np.sqrt(0.5) * g / g.std() + np.sqrt(0.5) * rng.normal(size=n)
    return K, pd.DataFrame({"id": ids, "x": x, "y": y})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--markers", type=int, default=2000)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--low-rank", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    print(
        f"# python benchmarks/bench_loo.py --n {args.n} --markers {args.markers} "
        f"--draws {args.draws} --chains {args.chains}{' --low-rank' if args.low_rank else ''}"
    )
    print(f"# {platform.platform()}, Python {sys.version.split()[0]}, numpy {np.__version__}")
    with threadpool_limits(1):
        pinned = sorted(
            {f"{i['internal_api']} ({i['num_threads']} thread)" for i in threadpool_info()}
        )
        print(f"# BLAS pinned: {', '.join(pinned)}")
        t = time.perf_counter()
        K, data = simulated(args.n, args.markers, rng, args.low_rank)
        t_data = time.perf_counter() - t
        t = time.perf_counter()
        # the one decomposition, cached on the kinship (the thin SVD of a low-rank one)
        _ = K.positive_eigenvalues if args.low_rank else K.eigenvalues
        t_eigh = time.perf_counter() - t
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = bl.LMM("y ~ x + (1|id)", data, kinship={"id": K}).fit(
                draws=args.draws, tune=1000, chains=args.chains, cores=1, seed=1,
                progressbar=False, verbose=False,
            )  # fmt: skip
        t_fit = time.perf_counter() - t
        n_draws = args.draws * args.chains
        t = time.perf_counter()
        ll = pointwise_log_likelihood(fit, "marginal")
        t_ll = time.perf_counter() - t
        t = time.perf_counter()
        loo = fit.loo()
        t_loo = time.perf_counter() - t  # both stages again: what a user waits for
        values = parameter_values(fit)
        first = slice(0, 200)
        exact = gaussian.marginal_loo_loglik(
            fit.spec, [values.sigmas[0][first]], values.residual[first], values.beta[first],
            method="exact",
        )  # fmt: skip
        diff = float(np.abs(exact - ll.values.reshape(n_draws, -1)[first]).max())
    print(
        f"n = {args.n}, {args.markers} markers, {n_draws} draws "
        f"({args.chains} chains × {args.draws}), sampler {fit.sampler}, {fit.strategy}"
    )
    print(f"simulate data + GRM     {t_data:8.1f} s")
    print(f"eigh of K (once)        {t_eigh:8.1f} s")
    print(f"NUTS fit                {t_fit:8.1f} s")
    print(f"pointwise log p(y_i | y_-i, θ, β)   {t_ll:8.1f} s")
    print(
        f"fit.loo() (log-lik + PSIS)          {t_loo:8.1f} s   ({t_loo / t_eigh:.2f} × one eigh)"
        f"   target ≤ 60 s: {'met' if t_loo <= 60 else 'NOT met'}"
    )
    print(
        f"elpd_loo {float(loo['elpd_loo']):.1f} (SE {float(loo['se']):.1f}), p_loo "
        f"{float(loo['p_loo']):.1f}, worst Pareto k {float(np.max(loo['pareto_k'])):.3f}, "
        f"kind {loo['kind']}"
    )
    print(f"max |interpolated − exact| log-lik over the first 200 draws: {diff:.2e}")


if __name__ == "__main__":
    main()
