"""Marker effects: ordinary least squares per marker vs the LMM's ridge form (docs/questions.md).

500 individuals, 2,000 markers, 200 of them causal; 400 individuals with a phenotype and
100 genotyped without one. Compares, against the true effects and on the 100 unphenotyped
individuals:

- per-marker least squares (one regression per marker, as a marginal scan does), summed
  into a genetic value;
- the LMM on K = W Wᵀ / c: ``fit.snp_effects(dosages)`` (ridge regression with
  λ = σ_e²/σ_β²) and ``fit.predict(newdata, kinship=...)`` for the unphenotyped (their
  BLUP through the kinship, which equals W b̂).

Run: ``python examples/snp_effects.py`` (a few seconds).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

import bayeslmm as bl


def main() -> None:
    rng = np.random.default_rng(2024)
    n, m, n_causal, n_train = 500, 2000, 200, 400
    freq = rng.uniform(0.05, 0.5, m)
    dosages = rng.binomial(2, freq, size=(n, m)).astype(float)
    ids = [f"a{k:03d}" for k in range(n)]
    geno = pd.DataFrame(dosages, index=ids, columns=[f"snp{j}" for j in range(m)])
    effects = np.zeros(m)
    effects[rng.choice(m, n_causal, replace=False)] = rng.normal(0, 0.1, n_causal)
    W = dosages - dosages.mean(axis=0)
    genetic = W @ effects
    y = 10 + genetic / genetic.std() + rng.normal(size=n)  # h² = 0.5
    data = pd.DataFrame({"id": ids, "y": y})
    train, test = data.iloc[:n_train], data.iloc[n_train:]

    # per-marker least squares on the phenotyped individuals
    Wt = geno.iloc[:n_train].to_numpy() - geno.iloc[:n_train].to_numpy().mean(axis=0)
    yt = train["y"].to_numpy() - train["y"].mean()
    ols = (Wt.T @ yt) / np.einsum("ij,ij->j", Wt, Wt)

    # the LMM with the GRM of all 500 (the 100 without phenotype are in the kinship)
    K = bl.grm(geno)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = bl.LMM("y ~ 1 + (1|id)", train, kinship={"id": K}).fit(method="reml")
    snp = fit.snp_effects(geno)["estimate"].to_numpy()  # the table K was built from
    pred = fit.predict(test[["id"]], kinship={"id": K})

    Wtest = W[n_train:]  # centred as bl.grm centred them (over all 500)
    truth = genetic[n_train:] / genetic.std()  # on the phenotype's scale
    print(f"h² (REML): {fit.heritability().loc['h2', 'estimate']:.2f}")
    print(
        f"correlation with the true marker effects: per-marker least squares "
        f"{np.corrcoef(ols, effects)[0, 1]:.3f}, LMM {np.corrcoef(snp, effects)[0, 1]:.3f}"
    )
    print(
        "genetic values of the 100 unphenotyped individuals "
        "(correlation, slope of truth on prediction, mean squared error):"
    )
    rows = {
        "sum of least-squares effects": Wtest @ ols,
        "fit.predict (BLUP through K)": pred["estimate"].to_numpy()
        - fit.fixed_effects()["estimate"].iloc[0],
        "sum of LMM marker effects": Wtest @ snp,
    }
    for label, value in rows.items():
        r = np.corrcoef(value, truth)[0, 1]
        slope = np.polyfit(value, truth, 1)[0]
        mse = np.mean((value - truth) ** 2)
        print(f"  {label:30s} r {r:.3f}   slope {slope:6.3f}   MSE {mse:7.3f}")


if __name__ == "__main__":
    main()
