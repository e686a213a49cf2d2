"""GxE recovery: kinship-structured random regression with per-environment residuals.

Simulates, for each seed, genotypes of full-sib/half-sib families (a VanRaden GRM with
negative off-diagonal entries), reaction norms u = (a₀, a₁) per genotype with
Cov(vec u) = Σ ⊗ K drawn exactly (u = U √S Z L_Σᵀ), two environments x = −1 (A) and +1 (B)
with residual variances σ²_e(A) ≠ σ²_e(B), and fits

    y ~ x + (1 + x | line),  kinship={"line": K},  sigma="~ env"

with REML (AI-REML) and NUTS (nutpie). For the variances, the covariance (the truth has a
negative intercept-slope correlation), the residual variance of each environment and h² of
each environment it records the estimate and whether the 95 % interval (REML: Wald with the
AI standard error; NUTS: HDI) covers the truth, then prints coverage across seeds.

Run:   OMP_NUM_THREADS=1 python validation/gxe_recovery.py [n_seeds] > validation/gxe_recovery.txt
"""

from __future__ import annotations

import sys
import time
import warnings

import numpy as np
import pandas as pd

import bayeslmm as bl
from bayeslmm.datasets import simulate
from bayeslmm.model import LMM
from bayeslmm.results.environment import environment_table

SIGMA = np.array([[1.0, -0.3], [-0.3, 0.4]])  # corr(a0, a1) = -0.47
RESIDUAL = {"A": 0.5, "B": 1.5}
X = {"A": -1.0, "B": 1.0}
REPS = 2


def truth() -> dict[str, float]:
    out = {
        "var_a0": SIGMA[0, 0],
        "var_a1": SIGMA[1, 1],
        "cov_a01": SIGMA[0, 1],
        "var_e[A]": RESIDUAL["A"],
        "var_e[B]": RESIDUAL["B"],
    }
    for env, x in X.items():
        phi = np.array([1.0, x])
        vg = phi @ SIGMA @ phi
        out[f"h2[{env}]"] = vg / (vg + RESIDUAL[env])
    return out


def simulate_gxe(seed: int) -> tuple[pd.DataFrame, bl.Kinship]:
    rng = np.random.default_rng(seed)
    sim = simulate(n_families=15, family_size=8, n_snps=2000, h2=0.5, seed=seed)
    K = sim.kinship
    values, vectors = np.linalg.eigh(K.matrix)
    basis = vectors * np.sqrt(np.clip(values, 0.0, None))
    u = basis @ rng.normal(size=(K.n, 2)) @ np.linalg.cholesky(SIGMA).T
    rows = []
    for i, line in enumerate(K.ids):
        for env, x in X.items():
            for _ in range(REPS):
                e = rng.normal(0.0, np.sqrt(RESIDUAL[env]))
                rows.append(
                    {
                        "line": line,
                        "env": env,
                        "x": x,
                        "y": 10.0 + 0.5 * x + u[i, 0] + x * u[i, 1] + e,
                    }
                )
    return pd.DataFrame(rows), K


def estimates(fit, model) -> pd.DataFrame:
    """Rows of truth(): estimate, low, high for either engine."""
    is_bayes = hasattr(fit, "idata")
    env = environment_table(fit, "env", spec=model.spec)
    rows = {}
    if is_bayes:
        cov = fit.posterior["cov_line"].stack(s=("chain", "draw"))
        import arviz as az

        def post(values):
            lo, hi = az.hdi(np.asarray(values), hdi_prob=0.95)
            return float(np.mean(values)), float(lo), float(hi)

        rows["var_a0"] = post(cov.isel(line_coef=0, line_coef_bis=0).values)
        rows["var_a1"] = post(cov.isel(line_coef=1, line_coef_bis=1).values)
        rows["cov_a01"] = post(cov.isel(line_coef=0, line_coef_bis=1).values)
        for lev in ("A", "B"):
            for q, name in (("var_residual", f"var_e[{lev}]"), ("h2", f"h2[{lev}]")):
                r = env.loc[lev, q]
                rows[name] = (r["mean"], r["hdi_low"], r["hdi_high"])
    else:
        vc = fit.variance_components()
        z = 1.959964

        def wald(row):
            return float(row.vcov), float(row.vcov - z * row.se), float(row.vcov + z * row.se)

        for r in vc.itertuples(index=False):
            if r.grp == "line" and r.var2 is None:
                rows["var_a0" if r.var1 == "(Intercept)" else "var_a1"] = wald(r)
            elif r.grp == "line":
                rows["cov_a01"] = wald(r)
        for lev in ("A", "B"):
            for q, name in (("var_residual", f"var_e[{lev}]"), ("h2", f"h2[{lev}]")):
                r = env.loc[lev, q]
                rows[name] = (r["estimate"], r["ci_low"], r["ci_high"])
    return pd.DataFrame.from_dict(rows, orient="index", columns=["estimate", "low", "high"])


def main(n_seeds: int = 20) -> None:
    true = truth()
    print(f"truth: {', '.join(f'{k}={v:.3f}' for k, v in true.items())}")
    print(f"design: 120 genotypes (15 full-sib families of 8) x 2 environments x {REPS} reps")
    records = []
    for seed in range(n_seeds):
        df, K = simulate_gxe(seed)
        model = LMM("y ~ x + (1 + x | line)", df, kinship={"line": K}, sigma="~ env")
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reml = model.fit(method="reml")
        t_reml = time.perf_counter() - t0
        t0 = time.perf_counter()
        nuts = model.fit(
            draws=1000, tune=1000, chains=2, cores=1, seed=seed, progressbar=False, verbose=False
        )
        t_nuts = time.perf_counter() - t0
        for method, fit, secs in (("reml", reml, t_reml), ("nuts", nuts, t_nuts)):
            est = estimates(fit, model)
            for name, row in est.iterrows():
                records.append(
                    {
                        "seed": seed,
                        "method": method,
                        "quantity": name,
                        "truth": true[name],
                        **row.to_dict(),
                        "seconds": secs,
                    }
                )
        d = nuts.diagnostics
        print(
            f"seed {seed:2d}: reml {t_reml:5.1f}s converged={reml.converged}  "
            f"nuts {t_nuts:5.1f}s divergences={d['divergences']} max_r_hat={d['max_r_hat']:.3f} "
            f"min_ess_bulk={d['min_ess_bulk']:.0f}",
            flush=True,
        )
    res = pd.DataFrame(records)
    res["covered"] = (res["low"] <= res["truth"]) & (res["truth"] <= res["high"])
    table = res.groupby(["quantity", "method"], sort=False).agg(
        truth=("truth", "first"),
        mean_estimate=("estimate", "mean"),
        sd_estimate=("estimate", "std"),
        coverage=("covered", "mean"),
        n=("covered", "size"),
    )
    pd.set_option("display.width", 120)
    print("\nestimates across seeds and coverage of the 95% intervals (REML Wald, NUTS HDI):")
    print(table.round(3).to_string())
    from scipy import stats

    low = stats.binom.ppf(0.005, n_seeds, 0.95) / n_seeds
    print(
        f"\n99% binomial acceptance region for a calibrated 95% interval over {n_seeds} seeds: "
        f"coverage >= {low:.2f}"
    )
    bad = table[table["coverage"] < low]
    print("all coverages within it" if bad.empty else f"BELOW:\n{bad}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
