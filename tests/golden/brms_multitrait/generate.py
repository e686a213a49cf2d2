"""Data of the brms multi-trait golden (issue #19): a half-sib/full-sib pedigree, two traits.

Writes, next to this file:

* ``pedigree.csv`` (id, sire, dam; founders have empty parents),
* ``A.csv``: the numerator relationship matrix from ``bayeslmm.pedigree_relationship``
  (ids as header and first column, 17 significant digits), the ``cov`` of brms's
  ``gr(id, cov = A)``,
* ``data.csv`` (id, x, y1, y2; 17 significant digits): every individual has both records,
* ``priors.csv``: bayeslmm's default multi-trait priors on these data as numbers, for
  brms (see brms_multitrait.R).

Design (seed 19): 12 sires and 48 dams (unrelated founders, with records), each dam mated to
one sire (4 dams per sire) with 5 offspring: 300 individuals, sire half-sib families of 20,
full-sib families of 5, parent-offspring pairs. Covariate x ~ N(0, 1); traits

    y_t = b0_t + b1_t x + u_t + e_t,   vec(U) ~ N(0, Σ_G ⊗ A),   e_i ~ N(0, Σ_E),
    Σ_G = [[0.4, 0.4], [0.4, 1.6]]  (σ_g = 0.63, 1.26; r_g = 0.5),
    Σ_E = [[0.6, -0.24], [-0.24, 2.4]]  (σ_e = 0.77, 1.55; r_e = −0.2),
    h² = 0.4 for both, b0 = (10, 5), b1 = (0.5, −0.3).

The genetic values are drawn by Mendelian sampling down the pedigree (founders
N(0, Σ_G); offspring ½(sire + dam) + N(0, ½ Σ_G)), independently of A.csv.

Usage::

    python tests/golden/brms_multitrait/generate.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

import bayeslmm as bl

HERE = Path(__file__).resolve().parent
SEED = 19
N_SIRES, DAMS_PER_SIRE, OFFSPRING_PER_DAM = 12, 4, 5
GENETIC_COV = np.array([[0.4, 0.4], [0.4, 1.6]])
RESIDUAL_COV = np.array([[0.6, -0.24], [-0.24, 2.4]])
INTERCEPTS = np.array([10.0, 5.0])
SLOPES = np.array([0.5, -0.3])


def pedigree() -> pd.DataFrame:
    """Founder sires and dams first, then their offspring (parents before progeny)."""
    sires = [f"s{k:02d}" for k in range(1, N_SIRES + 1)]
    dams = [f"d{k:02d}" for k in range(1, N_SIRES * DAMS_PER_SIRE + 1)]
    rows = [(s, "", "") for s in sires] + [(d, "", "") for d in dams]
    for j, dam in enumerate(dams):
        sire = sires[j // DAMS_PER_SIRE]
        rows += [(f"o{j + 1:02d}_{k}", sire, dam) for k in range(1, OFFSPRING_PER_DAM + 1)]
    return pd.DataFrame(rows, columns=["id", "sire", "dam"])


def simulate(ped: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    n, t = len(ped), GENETIC_COV.shape[0]
    chol_g = np.linalg.cholesky(GENETIC_COV)
    index = {name: i for i, name in enumerate(ped["id"])}
    U = np.zeros((n, t))
    for i, (sire, dam) in enumerate(zip(ped["sire"], ped["dam"], strict=True)):
        z = chol_g @ rng.standard_normal(t)
        if sire and dam:
            U[i] = 0.5 * (U[index[sire]] + U[index[dam]]) + np.sqrt(0.5) * z
        else:
            U[i] = z
    x = rng.standard_normal(n)
    residual = rng.standard_normal((n, t)) @ np.linalg.cholesky(RESIDUAL_COV).T
    Y = INTERCEPTS + np.outer(x, SLOPES) + U + residual
    return pd.DataFrame({"id": ped["id"], "x": x, "y1": Y[:, 0], "y2": Y[:, 1]})


def default_priors(data: pd.DataFrame) -> pd.DataFrame:
    """bayeslmm's default multi-trait priors on these data, as numbers (see
    bayeslmm/engines/bayes/multitrait_density.py: resolve_multitrait_priors)."""
    rows = []
    sd_x = float(np.std(data["x"]))  # of the centred covariate (NumPy's ddof = 0)
    for trait in ("y1", "y2"):
        mean, sd = float(np.mean(data[trait])), float(np.std(data[trait]))
        rows += [
            (trait, "sd", "student_t", 3.0, 0.0, 2.5 * sd),
            (trait, "sigma", "student_t", 3.0, 0.0, 2.5 * sd),
            (trait, "Intercept", "normal", np.nan, mean, 2.5 * sd),
            (trait, "b_x", "normal", np.nan, 0.0, 2.5 * sd / sd_x),
        ]
    rows += [("", "cor", "lkj", 2.0, np.nan, np.nan), ("", "rescor", "lkj", 2.0, np.nan, np.nan)]
    return pd.DataFrame(rows, columns=["resp", "class", "family", "df_or_eta", "location", "scale"])


def main() -> None:
    rng = np.random.default_rng(SEED)
    ped = pedigree()
    data = simulate(ped, rng)
    A = bl.pedigree_relationship(ped)
    assert list(A.ids) == list(ped["id"])
    ped.to_csv(HERE / "pedigree.csv", index=False)
    data.to_csv(HERE / "data.csv", index=False, float_format="%.17g")
    pd.DataFrame(A.matrix, index=A.ids, columns=A.ids).to_csv(HERE / "A.csv", float_format="%.17g")
    default_priors(data).to_csv(HERE / "priors.csv", index=False, float_format="%.17g")
    print(f"wrote {len(data)} individuals to {HERE}")


if __name__ == "__main__":
    main()
