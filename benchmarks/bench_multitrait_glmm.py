"""Mixing of the latent-scale multi-trait GLMM: nutpie's diagonal mass matrix (the fit's
default) against its low-rank modified one, on a probit + Gaussian animal model.

400 offspring of 40 sires × 2 dams (full sibs ½, half sibs ¼), probit liability d and
Gaussian w with V_A = 1 each, r_g = 0.6, residual correlation 0.3 (liability variance 1,
V_E(w) = 1). Two chains × (500 tune + 500 draws), target_accept 0.8 (nutpie's default), one
BLAS thread. Reports CPU and wall seconds, divergences and bulk ESS of Σ_G,dd, Σ_G,ww, r_g,
Σ_E,ww and r_e.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/bench_multitrait_glmm.py
"""

from __future__ import annotations

import time

import arviz as az
import numpy as np
import nutpie
import pandas as pd

import bayeslmm as bl
from bayeslmm.engines.bayes.multitrait_glmm import multitrait_glmm_density, nutpie_model


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


def main() -> None:
    K = sib_kinship()
    frame = simulate(K, np.random.default_rng(0))
    model = bl.LMM(
        "mvbind(d, w) ~ x + (1 | id)",
        frame,
        family={"d": ("bernoulli", "probit")},
        kinship={"id": K},
    )
    density = multitrait_glmm_density(model.spec)
    quantities = {
        "G_dd": ("genetic_covariance", (0, 0)),
        "G_ww": ("genetic_covariance", (1, 1)),
        "r_g": ("genetic_correlation", (0, 1)),
        "E_ww": ("residual_covariance", (1, 1)),
        "r_e": ("residual_correlation", (0, 1)),
    }
    for low_rank in (False, True):
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


if __name__ == "__main__":
    main()
