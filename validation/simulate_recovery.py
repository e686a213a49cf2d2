"""Does ``bayeslmm.datasets.simulate`` mean what its ``truth`` says? Checked with REML.

For Gaussian data, REML estimates of (V_A, V_e) in ``y ~ 1 + (1 | id)`` with the simulator's
GRM are close to unbiased; averaged over many seeds they must match ``truth["V_A"]`` and
``truth["V_e"]`` within Monte-Carlo error, and the 95% Wald intervals must cover about 95%.
This also checks that the truth refers to K as given (not to a normalised K).

Usage::

    python validation/simulate_recovery.py [n_seeds]      # default 200; output beside it
"""

from __future__ import annotations

import sys
import warnings

import numpy as np

import bayeslmm
from bayeslmm.datasets import simulate
from bayeslmm.engines.reml import fit_reml

CONFIGS = [
    {"h2": 0.3, "repeats": 1},
    {"h2": 0.6, "repeats": 1},
    {"h2": 0.5, "repeats": 3},
]


def main(n_seeds: int) -> None:
    print(f"simulate(n_families=50, family_size=10, n_snps=2000), {n_seeds} seeds per row")
    print("REML on y ~ 1 + (1 | id) with kinship = sim.kinship")
    header = "h2   repeats  par  truth   mean_est  mc_se   z      cover95"
    print(header)
    for config in CONFIGS:
        est = {"V_A": [], "V_e": []}
        cover = {"V_A": 0, "V_e": 0}
        for seed in range(n_seeds):
            sim = simulate(n_families=50, family_size=10, n_snps=2000, seed=seed, **config)
            spec = bayeslmm.specify("y ~ 1 + (1 | id)", sim.data, kinship={"id": sim.kinship})
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                vc = fit_reml(spec).variance_components()
            values = {
                "V_A": vc.loc[vc["grp"] == "id", ["vcov", "se"]].iloc[0],
                "V_e": vc.loc[vc["grp"] == "Residual", ["vcov", "se"]].iloc[0],
            }
            for par, (value, se) in values.items():
                est[par].append(value)
                cover[par] += abs(value - sim.truth[par]) <= 1.96 * se
        for par in ("V_A", "V_e"):
            x = np.asarray(est[par])
            truth = sim.truth[par]
            mc_se = x.std(ddof=1) / np.sqrt(len(x))
            z = (x.mean() - truth) / mc_se
            print(
                f"{config['h2']:<4} {config['repeats']:<8} {par}  {truth:<7.3f} "
                f"{x.mean():<9.4f} {mc_se:<7.4f} {z:+6.2f} {cover[par] / n_seeds:7.3f}"
            )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
