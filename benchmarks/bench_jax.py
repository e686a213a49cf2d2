"""JAX-based NUTS (numpyro, blackjax) against the default nutpie sampler, on CPU or GPU (a script).

The same models, data and priors are sampled three ways through the user's call,
``bl.LMM(...).fit(sampler=...)``:

- ``nutpie`` (the default): the closed-form densities written by hand in numpy/numba
  (``engines/bayes/spectral_density.py``, ``glmm_density.py``), sampled by nutpie's Rust NUTS;
- ``numpyro`` / ``blackjax``: the model's PyMC graph — for the Gaussian kinship model the
  same closed form (β integrated out, a sum over the rotated observations), for GLMMs the
  latent field u = σ U √S z — translated to JAX by PyMC and sampled by numpyro's or
  blackjax's NUTS on whatever device JAX sees (``jax.devices()``: a GPU when one is
  present and jax was installed with CUDA, else the CPU).

For each case the script prints the device, the whole-call seconds (model build, JAX
compilation and sampling), the bulk ESS of h² (Gaussian) or of the genetic variance
(GLMM), ESS per second, and the ratio of each JAX sampler's ESS/s to nutpie's in the same
run. BLAS is pinned to one thread (threadpoolctl) and chains run one after the other, so
the CPU rows compare like with like; on a GPU the JAX rows use the GPU and nutpie the CPU.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_jax.py [--gaussian 1000 5000] \
        [--bernoulli 500] [--samplers nutpie numpyro blackjax] [--draws 1000]

Needs ``pip install "bayeslmm[jax]"`` (``jax[cuda12]`` for a GPU).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import warnings

import arviz as az
import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

import bayeslmm as bl


def simulate(n: int, family: str, seed: int) -> tuple[pd.DataFrame, bl.Kinship]:
    """A GRM from 2n simulated markers and a trait with latent-scale h² = 0.4."""
    rng = np.random.default_rng(seed)
    freq = rng.uniform(0.05, 0.95, 2 * n)
    G = rng.binomial(2, freq, size=(n, 2 * n)).astype(float)
    W = (G - G.mean(0)) / np.maximum(G.std(0), 1e-9)
    K = W @ W.T / W.shape[1]
    K = 0.98 * K + 0.02 * np.eye(n)
    ids = [f"i{k:05d}" for k in range(n)]
    g = np.linalg.cholesky(K) @ rng.normal(size=n)
    if family == "gaussian":
        y = np.sqrt(0.4) * g + np.sqrt(0.6) * rng.normal(size=n)
    else:
        va = 0.4 / 0.6 * np.pi**2 / 3
        y = rng.binomial(1, 1.0 / (1.0 + np.exp(-np.sqrt(va) * g)))
    return pd.DataFrame({"id": ids, "y": y}), bl.Kinship(K, ids, name="GRM")


def one_fit(data, kin, family: str, sampler: str, draws: int, seed: int) -> dict:
    t0 = time.perf_counter()
    model = bl.LMM("y ~ 1 + (1 | id)", data, kinship={"id": kin}, family=family)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = model.fit(
            draws=draws,
            tune=draws,
            chains=2,
            cores=1,
            seed=seed,
            sampler=sampler,
            progressbar=False,
            verbose=False,
        )
    seconds = time.perf_counter() - t0
    var = "h2" if family == "gaussian" else "var_id"
    ess = float(az.ess(fit.idata, var_names=[var], method="bulk")[var])
    divergences = (
        int(fit.idata.sample_stats["diverging"].sum())
        if "diverging" in (fit.idata.sample_stats)
        else -1
    )
    return {
        "family": family,
        "n": kin.n,
        "sampler": sampler,
        "seconds": seconds,
        "quantity": var,
        "mean": float(fit.posterior[var].mean()),
        "ess_bulk": ess,
        "ess_per_s": ess / seconds,
        "divergences": divergences,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gaussian", type=int, nargs="*", default=[1000, 5000])
    parser.add_argument("--bernoulli", type=int, nargs="*", default=[500])
    parser.add_argument("--samplers", nargs="+", default=["nutpie", "numpyro", "blackjax"])
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        import jax
    except ImportError:
        print("jax is not installed: pip install 'bayeslmm[jax]'", file=sys.stderr)
        return 1
    devices = ", ".join(str(d) for d in jax.devices())
    versions = f"python {platform.python_version()}, jax {jax.__version__}"
    print(f"# bench_jax: {versions}, devices: {devices}")
    print(f"# command: python benchmarks/bench_jax.py {' '.join(argv or sys.argv[1:])}")
    print("# BLAS pinned to 1 thread (threadpoolctl); 2 chains one after the other; whole call")
    cases = [("gaussian", n) for n in args.gaussian] + [("bernoulli", n) for n in args.bernoulli]
    rows = []
    with threadpool_limits(limits=1, user_api="blas"):
        for family, n in cases:
            data, kin = simulate(n, family, args.seed)
            kin.eigenvalues  # noqa: B018  (the eigendecomposition is shared by every sampler)
            for sampler in args.samplers:
                try:
                    rows.append(one_fit(data, kin, family, sampler, args.draws, args.seed))
                except Exception as err:  # a missing backend: say so and go on
                    print(f"# {family} n={n} {sampler}: {type(err).__name__}: {err}")
                    continue
                print(pd.DataFrame([rows[-1]]).to_string(index=False, header=len(rows) == 1))
    table = pd.DataFrame(rows)
    print()
    for (family, n), block in table.groupby(["family", "n"], sort=False):
        base = block.loc[block["sampler"] == "nutpie", "ess_per_s"]
        if base.empty:
            continue
        for _, row in block[block["sampler"] != "nutpie"].iterrows():
            ratio = row["ess_per_s"] / float(base.iloc[0])
            print(f"# {family} n={n}: ESS/s {row['sampler']} / nutpie = {ratio:.3g} ({devices})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
