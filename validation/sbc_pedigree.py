"""Simulation-based calibration (Talts et al. 2018) of the Bayesian animal model on a sparse
pedigree (strategy ``"sparse-pedigree"``).

If data are drawn from the prior predictive distribution and the posterior is computed
exactly, the rank of each true parameter among L independent posterior draws is uniform on
{0, ..., L}. An error in the marginal likelihood, the priors, the grid or the draws of β
shows up as a non-uniform rank histogram.

Procedure
---------
1. Design (fixed): a pedigree of 200 animals over 5 overlapping generations (20 founders;
   each later animal's parents drawn among earlier animals, 10% of parents unknown, rows
   shuffled), records on 150 non-founders, 30 of them twice; a covariate x ~ N(1, 1);
   model ``y ~ 1 + x + (1 | id)`` with ``kinship={"id": pedigree_relationship(ped,
   sparse=True)}``.
2. Priors, data-independent (the defaults of bayeslmm.priors at sd(y) = 1, as in
   validation/sbc_gaussian.py): centred intercept and b_x ~ Normal(0, 2.5), and either
   ``sd_id``, ``sigma`` ~ HalfStudentT(3, 2.5) (``--parametrisation default``) or h² ~
   Beta(1, 1) at the sample's kinship scale c and σ_P ~ HalfStudentT(3, 2.5)
   (``--parametrisation h2``).
3. True parameters drawn here with scipy, and data by hand from the *dense* relationship
   matrix of ``pedigree_relationship(ped)`` (the tabular method, not the sparse factors):
   y = X_c β + Z σ_a A^{1/2} z + σ_e ε over the whole pedigree.
4. Posterior: ``LMM(...).fit(draws=L / 3, chains=3)``: L = 99 independent draws (ranks
   0..99, 20 bins of 5).
5. Uniformity: chi-square over the 20 bins per parameter (h², σ_a², σ_e², β); pass when
   p > 0.01.

Run (≈ 0.5–2 s per data set on one core, by load)::

    OMP_NUM_THREADS=1 python validation/sbc_pedigree.py --n-datasets 300 \\
        > validation/results/sbc_pedigree.txt
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np
import pandas as pd
from scipy import stats

import bayeslmm as bl

FORMULA = "y ~ 1 + x + (1 | id)"
PRIORS = {
    "default": {
        "Intercept": ("normal", 0.0, 2.5),
        "b_x": ("normal", 0.0, 2.5),
        "sd_id": ("halfstudentt", 3.0, 2.5),
        "sigma": ("halfstudentt", 3.0, 2.5),
    },
    "h2": {
        "Intercept": ("normal", 0.0, 2.5),
        "b_x": ("normal", 0.0, 2.5),
        "h2": ("beta", 1.0, 1.0),
        "total_sd": ("halfstudentt", 3.0, 2.5),
    },
}
PARAMETERS = ("h2", "var_id", "var_residual", "beta_Intercept", "beta_x")


def design(seed: int = 19):
    """The pedigree, the records and the dense square root of A over the pedigree."""
    rng = np.random.default_rng(seed)
    n, founders = 200, 20
    sire = np.zeros(n, int)
    dam = np.zeros(n, int)
    for k in range(founders, n):
        sire[k], dam[k] = rng.integers(max(1, k - 80), k + 1, 2)
    sire[founders:][rng.random(n - founders) < 0.1] = 0
    dam[founders:][rng.random(n - founders) < 0.1] = 0
    ped = pd.DataFrame({"id": np.arange(1, n + 1), "sire": sire, "dam": dam})
    ped = ped.iloc[rng.permutation(n)].reset_index(drop=True)
    dense = bl.pedigree_relationship(ped)
    sparse = bl.pedigree_relationship(ped, sparse=True)
    recorded = rng.choice(np.arange(founders + 1, n + 1).astype(str), 150, replace=False)
    ids = np.r_[recorded, recorded[:30]]
    data = pd.DataFrame({"id": ids, "x": rng.normal(1.0, 1.0, ids.size)})
    pos = {i: k for k, i in enumerate(dense.ids)}
    Z = np.zeros((ids.size, dense.n))
    Z[np.arange(ids.size), [pos[i] for i in ids]] = 1.0
    w, V = np.linalg.eigh(np.asarray(dense.matrix))
    root = V * np.sqrt(np.clip(w, 0.0, None))
    return ped, sparse, data, Z, root


def draw_truth(parametrisation: str, c: float, rng: np.random.Generator) -> dict:
    """θ and β from the priors (scipy), independently of the package."""
    beta = rng.normal(0.0, 2.5, 2)  # centred intercept, slope
    half_t = lambda: abs(stats.t.rvs(3, random_state=rng)) * 2.5  # noqa: E731
    if parametrisation == "default":
        var_a, var_e = half_t() ** 2, half_t() ** 2
    else:
        h, total = rng.beta(1.0, 1.0), half_t() ** 2
        var_a, var_e = h * total / c, (1.0 - h) * total
    return {"var_id": var_a, "var_residual": var_e, "beta_c": beta}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-datasets", type=int, default=300)
    parser.add_argument("--parametrisation", choices=tuple(PRIORS), default="default")
    parser.add_argument("--draws", type=int, default=99, help="a multiple of 3")
    parser.add_argument("--bins", type=int, default=20)
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    print(f"$ OMP_NUM_THREADS=1 python {' '.join(sys.argv)}")
    ped, A, data, Z, root = design()
    priors = PRIORS[args.parametrisation]
    base = bl.LMM(FORMULA, data.assign(y=data["x"]), kinship={"id": A}, priors=priors)
    c = float(base.spec.terms[0].variance_weights("sample")[0, 0])
    xc = data["x"].to_numpy() - data["x"].mean()
    print(
        f"SBC of the sparse-pedigree animal model: {FORMULA}, pedigree of {A.n_pedigree} "
        f"animals (F > 0 in {(A.inbreeding > 0).sum()}, max F {A.inbreeding.max():.3f}), "
        f"{len(data)} records on {data['id'].nunique()} animals; sample kinship scale c = "
        f"{c:.4f}\nparametrisation '{args.parametrisation}', priors {priors}\n"
        f"{args.n_datasets} data sets, L = {args.draws} independent draws each"
    )
    rng = np.random.default_rng(args.seed)
    ranks = []
    start = time.perf_counter()
    for k in range(args.n_datasets):
        truth = draw_truth(args.parametrisation, c, rng)
        u = np.sqrt(truth["var_id"]) * root @ rng.normal(size=root.shape[1])
        b0, b1 = truth["beta_c"]
        y = b0 + b1 * xc + Z @ u + np.sqrt(truth["var_residual"]) * rng.normal(size=len(data))
        model = bl.LMM(FORMULA, data.assign(y=y), kinship={"id": A}, priors=priors)
        # L independent draws, as 3 "chains" of L/3 (diagnostics want more than one)
        fit = model.fit(
            draws=args.draws // 3, chains=3, seed=k + 1, progressbar=False, verbose=False
        )
        assert fit.strategy == "sparse-pedigree"
        post = fit.posterior
        h2_true = c * truth["var_id"] / (c * truth["var_id"] + truth["var_residual"])
        beta = post["beta"].sel(fixed=["Intercept", "x"]).values.reshape(-1, 2)
        values = {
            "h2": (h2_true, post["h2"].values.ravel()),
            "var_id": (truth["var_id"], post["var_id"].values.ravel()),
            "var_residual": (truth["var_residual"], post["var_residual"].values.ravel()),
            # the uncentred intercept: b0 − b1 · mean(x)
            "beta_Intercept": (b0 - b1 * data["x"].mean(), beta[:, 0]),
            "beta_x": (b1, beta[:, 1]),
        }
        ranks.append({p: int(np.sum(d < t)) for p, (t, d) in values.items()})
        if (k + 1) % 50 == 0:
            print(f"  {k + 1} data sets, {time.perf_counter() - start:.0f} s", flush=True)
    table = pd.DataFrame(ranks)
    rows = []
    for p in PARAMETERS:
        counts = np.bincount(table[p] * args.bins // (args.draws + 1), minlength=args.bins)
        chi2, pval = stats.chisquare(counts)
        rows.append(
            {
                "parameter": p,
                "chi2": chi2,
                "df": args.bins - 1,
                "p": pval,
                "mean rank / L": table[p].mean() / args.draws,
                "min bin": counts.min(),
                "max bin": counts.max(),
                "uniform": pval > 0.01,
            }
        )
    print(f"wall {time.perf_counter() - start:.0f} s, CPU {time.process_time():.0f} s")
    print(f"\nRank uniformity, chi-square over {args.bins} bins (pass: p > 0.01):")
    print(pd.DataFrame(rows).set_index("parameter").round(3).to_string())
    return 0 if all(r["uniform"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
