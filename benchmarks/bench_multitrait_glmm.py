"""The latent-scale multi-trait GLMM on a probit + Gaussian animal model (a script).

Two parts, each run on its own (``--part``):

``mixing`` (the default)
    nutpie's diagonal mass matrix (the fit's default) against its low-rank modified one.
    400 offspring of 40 sires × 2 dams (full sibs ½, half sibs ¼), probit liability d and
    Gaussian w with V_A = 1 each, r_g = 0.6, residual correlation 0.3 (liability variance 1,
    V_E(w) = 1). Two chains × (500 tune + 500 draws), target_accept 0.8 (nutpie's default),
    one BLAS thread. Reports CPU and wall seconds, divergences and bulk ESS of Σ_G,dd,
    Σ_G,ww, r_g, Σ_E,ww and r_e. ``--non-centred`` samples the Gaussian trait's genetic
    field non-centred (``multitrait_glmm_density(..., centre_gaussian_fields=False)``), the
    parametrisation the conditional centring replaces; ``--mass-matrix`` runs one of the
    two mass matrices only.

``gradient``
    CPU seconds of one log-posterior gradient (``MultiTraitGLMMDensity.logp``, the calling
    thread's ``time.thread_time``, median of 5 batches) on the same design at n = 1,000 and
    3,000 (``--n``; 100 or 300 sires), a dense kinship (full rank, r = n).

Usage (BLAS pinned to one thread, the machine is shared)::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/bench_multitrait_glmm.py
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/bench_multitrait_glmm.py \\
        --non-centred --mass-matrix diagonal
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/bench_multitrait_glmm.py \\
        --part gradient --n 1000 3000
"""

from __future__ import annotations

import argparse
import time

import arviz as az
import numpy as np
import nutpie
import pandas as pd

import bayeslmm as bl
from bayeslmm.engines.bayes.multitrait_glmm import (
    MultiTraitGLMMDensity,
    multitrait_glmm_density,
    nutpie_model,
)


def sib_kinship(n_sires: int = 40, dams: int = 2, kids: int = 5) -> bl.Kinship:
    sire = np.repeat(np.arange(n_sires), dams * kids)
    dam = np.repeat(np.arange(n_sires * dams), kids)
    off = 1.0 - np.eye(sire.size)
    A = np.eye(sire.size) + 0.25 * off * ((sire[:, None] == sire) + (dam[:, None] == dam))
    return bl.Kinship(A, [f"k{i}" for i in range(sire.size)])


def simulate(K: bl.Kinship, rng: np.random.Generator) -> pd.DataFrame:
    n = K.n
    G = np.array([[1.0, 0.6], [0.6, 1.0]])
    E = np.array([[1.0, 0.3], [0.3, 1.0]])
    U = np.linalg.cholesky(K.matrix) @ rng.standard_normal((n, 2)) @ np.linalg.cholesky(G).T
    e = rng.standard_normal((n, 2)) @ np.linalg.cholesky(E).T
    x = rng.normal(size=n)
    return pd.DataFrame(
        {
            "id": list(K.ids),
            "x": x,
            "d": (-0.3 + 0.5 * x + U[:, 0] + e[:, 0] > 0).astype(float),
            "w": 1.0 + 0.8 * x + U[:, 1] + e[:, 1],
        }
    )


def density_for(n_sires: int, centred: bool = True) -> MultiTraitGLMMDensity:
    """The benchmark's density: 10 offspring per sire, simulated with seed 0."""
    K = sib_kinship(n_sires)
    frame = simulate(K, np.random.default_rng(0))
    model = bl.LMM(
        "mvbind(d, w) ~ x + (1 | id)",
        frame,
        family={"d": ("bernoulli", "probit")},
        kinship={"id": K},
    )
    return multitrait_glmm_density(model.spec, centre_gaussian_fields=centred)


def gradient_cost(sizes: list[int]) -> None:
    """CPU seconds per gradient (calling thread), median of 5 batches."""
    for n in sizes:
        density = density_for(n // 10)
        x = density.initial_point(1)
        density.logp(x)  # warm up
        batch = max(3, 3000 // n)
        times = []
        for _ in range(5):
            start = time.thread_time()
            for _ in range(batch):
                density.logp(x)
            times.append((time.thread_time() - start) / batch)
        print(
            f"n = {n:,}, rank {density.rank}: {1e3 * float(np.median(times)):.2f} CPU ms per "
            "gradient",
            flush=True,
        )


def mixing(centred: bool, mass_matrices: tuple[bool, ...]) -> None:
    density = density_for(40, centred)
    print(f"Gaussian field {'conditionally centred' if centred else 'non-centred'}")
    quantities = {
        "G_dd": ("genetic_covariance", (0, 0)),
        "G_ww": ("genetic_covariance", (1, 1)),
        "r_g": ("genetic_correlation", (0, 1)),
        "E_ww": ("residual_covariance", (1, 1)),
        "r_e": ("residual_correlation", (0, 1)),
    }
    for low_rank in mass_matrices:
        cpu, wall = time.process_time(), time.perf_counter()
        idata = nutpie.sample(
            nutpie_model(density),
            draws=500,
            tune=500,
            chains=2,
            cores=2,
            seed=1,
            progress_bar=False,
            low_rank_modified_mass_matrix=low_rank,
        )
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        post = idata.posterior
        ess = {
            name: float(np.ravel(az.ess(post[var].values[:, :, a, b]))[0])
            for name, (var, (a, b)) in quantities.items()
        }
        divergent = int(idata.sample_stats["diverging"].values.sum())
        means = {
            name: float(post[var].values[:, :, a, b].mean())
            for name, (var, (a, b)) in quantities.items()
        }
        print(
            f"mass matrix {'low-rank' if low_rank else 'diagonal'}: CPU {cpu:.1f} s, wall "
            f"{wall:.1f} s, divergences {divergent}",
            flush=True,
        )
        print("  ESS  " + "  ".join(f"{k} {v:.0f}" for k, v in ess.items()), flush=True)
        print("  ESS per CPU s  " + "  ".join(f"{k} {v / cpu:.2f}" for k, v in ess.items()))
        print("  mean " + "  ".join(f"{k} {v:.3f}" for k, v in means.items()), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("mixing", "gradient"), default="mixing")
    parser.add_argument("--non-centred", action="store_true")
    parser.add_argument("--mass-matrix", choices=("diagonal", "low-rank", "both"), default="both")
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 3000])
    args = parser.parse_args()
    if args.part == "gradient":
        gradient_cost(args.n)
        return
    mass = {"diagonal": (False,), "low-rank": (True,), "both": (False, True)}[args.mass_matrix]
    mixing(not args.non_centred, mass)


if __name__ == "__main__":
    main()
