"""Genotype-by-environment: reaction norms on a genomic relationship matrix.

120 genotypes (full-sib/half-sib families, VanRaden GRM) are grown in two environments,
x = −1 (A, benign) and x = +1 (B, stressful), two plots each. Each genotype has a reaction
norm a₀ + a₁ x with Cov(vec a) = Σ ⊗ K, and the stressful environment is noisier.

The script fits ``y ~ x + (1 + x | line)`` with residual variances by environment by REML and
by NUTS, prints the genetic (co)variances, h² per environment and the genetic correlation
between environments, and plots h²(x) and V_G(x) with their intervals.

Run:  python examples/gxe_reaction_norm.py [out_dir]      (about a minute)
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import bayeslmm as bl
from bayeslmm.datasets import simulate
from bayeslmm.results.environment import environment_table
from bayeslmm.results.reaction_norm import plot_reaction_norm, reaction_norm


def make_data(seed: int = 7) -> tuple[pd.DataFrame, bl.Kinship]:
    sim = simulate(n_families=15, family_size=8, n_snps=2000, seed=seed)
    K = sim.kinship
    rng = np.random.default_rng(seed)
    Sigma = np.array([[1.0, -0.3], [-0.3, 0.4]])  # stress re-ranks genotypes: corr −0.47
    values, vectors = np.linalg.eigh(K.matrix)
    a = (vectors * np.sqrt(np.clip(values, 0, None))) @ rng.normal(size=(K.n, 2))
    a = a @ np.linalg.cholesky(Sigma).T
    rows = []
    for i, line in enumerate(K.ids):
        for env, x, sd in (("A", -1.0, 0.7), ("B", 1.0, 1.2)):
            for plot in range(2):
                y = 10 - 1.0 * x + a[i, 0] + x * a[i, 1] + rng.normal(0, sd)
                rows.append({"line": line, "env": env, "x": x, "plot": plot, "yield": y})
    return pd.DataFrame(rows), K


def main(out_dir: str = ".") -> None:
    data, K = make_data()
    model = bl.LMM("yield ~ x + (1 + x | line)", data, kinship={"line": K}, sigma="~ env")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reml = model.fit(method="reml")
    print("REML variance components (Σ at K_ii = 1; covariance row has var2 set):")
    print(reml.variance_components().round(3).to_string(index=False))

    nuts = model.fit(draws=500, tune=500, chains=2, cores=1, seed=1, progressbar=False)

    rn_bayes = reaction_norm(nuts, "x")
    rn_reml = reaction_norm(reml, "x")
    pd.set_option("display.width", 120)
    cols = ["mean", "hdi_low", "hdi_high", "r_hat"]
    print("\nh²(x), NUTS (posterior mean and 95% HDI):")
    print(rn_bayes.summary("h2")[cols].round(3))
    print("\nh²(x), REML (estimate, delta-method SE):")
    print(rn_reml.summary("h2")[["estimate", "se"]].round(3))
    print("\ngenetic correlation between x = -1 and x = +1:")
    print(rn_bayes.genetic_correlation()[["x1", "x2", *cols]].round(3).to_string(index=False))

    print("\nper environment (NUTS): residual variance and h²")
    table = environment_table(nuts, "env")
    print(table[["var_residual", "h2"]].xs("mean", axis=1, level=1).round(3))

    # a smooth curve on the continuous axis: V_G(x) is a quadratic in x
    grid = np.linspace(-1.5, 1.5, 31)
    vg = reaction_norm(nuts, "x", values=grid)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    plot_reaction_norm(rn_bayes, "h2", ax=axes[0], reference=rn_reml)
    plot_reaction_norm(vg, "V_G", ax=axes[1])
    fig.tight_layout()
    path = Path(out_dir) / "gxe_reaction_norm.png"
    fig.savefig(path, dpi=120)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
