"""Speed of kinship-structured random regression (GxE): bayeslmm's builder vs a hand-written
PyMC model (a script that prints ratios, not a test).

Data: n genotypes (full-sib/half-sib families, VanRaden GRM K, which is singular and has
negative entries) × 2 environments x = ∓1, one record each; reaction norms with
Cov(vec u) = Σ ⊗ K, Σ = [[1, −0.3], [−0.3, 0.4]]; residual variance 0.5 in A and 1.5 in B.

Models, both sampled by nutpie with the same draws, chains and seed, BLAS pinned to one
thread (threadpoolctl) and chains run one after the other (cores=1), so ESS per second does
not depend on how busy the machine is:

- **bayeslmm**: ``LMM("y ~ x + (1 + x | line)", kinship={"line": K}, sigma="~ env")``,
  i.e. u = U √S Z L_Σᵀ (eigenbasis of K, LKJ Cholesky of Σ), log-σ by environment;
- **hand-written** (the careful user's model): u = L_K Z L_Σᵀ with L_K = cholesky(K + εI)
  (ε = 1e-6 × mean diagonal: a centred GRM is singular, so the Cholesky needs a jitter),
  the same LKJ prior on Σ with HalfStudentT(3, ·) SDs, Normal priors on β and a
  HalfStudentT residual SD per environment.

Reported: compile and sampling seconds, bulk ESS of the slope variance σ²_a1 (and of σ²_a0),
ESS per second of sampling, and the ratio bayeslmm / hand-written.

Usage::

    python benchmarks/bench_gxe.py [n_genotypes] [draws]     # default 1000 1000
"""

from __future__ import annotations

import os
import platform
import sys
import time
import warnings

import arviz as az
import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from bayeslmm.datasets import simulate
from bayeslmm.model import LMM

SIGMA = np.array([[1.0, -0.3], [-0.3, 0.4]])
RESIDUAL = {"A": 0.5, "B": 1.5}
X = {"A": -1.0, "B": 1.0}


def make_data(n: int, seed: int = 1):
    sim = simulate(n_families=n // 10, family_size=10, n_snps=3000, seed=seed)
    K = sim.kinship
    rng = np.random.default_rng(seed)
    values, vectors = np.linalg.eigh(K.matrix)
    u = (vectors * np.sqrt(np.clip(values, 0, None))) @ rng.normal(size=(K.n, 2))
    u = u @ np.linalg.cholesky(SIGMA).T
    rows = []
    for i, line in enumerate(K.ids):
        for env, x in X.items():
            e = rng.normal(0, np.sqrt(RESIDUAL[env]))
            rows.append({"line": line, "env": env, "x": x, "y": 2 + 0.3 * x + u[i] @ [1, x] + e})
    return pd.DataFrame(rows), K


def hand_written_model(df: pd.DataFrame, K):
    """u = L_K Z L_Σᵀ: what a careful PyMC user writes for Σ ⊗ K."""
    import pymc as pm
    import pytensor.tensor as pt

    ids = list(K.ids)
    pos = {g: k for k, g in enumerate(ids)}
    idx = df["line"].map(pos).to_numpy()
    x = df["x"].to_numpy()
    env = (df["env"] == "B").to_numpy().astype(int)
    y = df["y"].to_numpy()
    jitter = 1e-6 * float(np.mean(np.diag(K.matrix)))
    L_K = np.linalg.cholesky(K.matrix + jitter * np.eye(K.n))
    sy = float(np.std(y))
    coords = {"line": ids, "coef": ["Intercept", "x"], "env": ["A", "B"]}
    with pm.Model(coords=coords) as model:
        beta = pm.Normal("beta", mu=[float(np.mean(y)), 0.0], sigma=2.5 * sy, dims="coef")
        sd_dist = pm.HalfStudentT.dist(nu=np.array([3.0, 3.0]), sigma=np.array([2.5 * sy] * 2))
        chol = pm.LKJCholeskyCov("chol", n=2, eta=2.0, sd_dist=sd_dist, compute_corr=False)
        chol = pm.expand_packed_triangular(2, chol, lower=True)
        cov = pm.Deterministic("cov", chol @ chol.T)
        pm.Deterministic("var_a1", cov[1, 1])
        pm.Deterministic("var_a0", cov[0, 0])
        z = pm.Normal("z", 0.0, 1.0, dims=("line", "coef"))
        u = pt.dot(pt.dot(pt.as_tensor(L_K), z), chol.T)
        sigma = pm.HalfStudentT("sigma", nu=3.0, sigma=2.5 * sy, dims="env")
        mu = beta[0] + beta[1] * x + u[idx, 0] + x * u[idx, 1]
        pm.Normal("y", mu=mu, sigma=sigma[env], observed=y)
    return model


def _ess(draws) -> float:
    """Bulk ESS of one scalar's (chain, draw) draws."""
    return float(az.ess(np.asarray(draws.transpose("chain", "draw").values), method="bulk"))


def run_hand(df, K, draws: int, seed: int) -> dict:
    import nutpie

    model = hand_written_model(df, K)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled = nutpie.compile_pymc_model(model)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    idata = nutpie.sample(
        compiled, draws=draws, tune=draws, chains=2, cores=1, seed=seed, progress_bar=False
    )
    sample_s = time.perf_counter() - t0
    post = idata.posterior
    return {
        "compile_s": compile_s,
        "sample_s": sample_s,
        "ess_var_a1": _ess(post["var_a1"]),
        "ess_var_a0": _ess(post["var_a0"]),
        "mean_var_a1": float(post["var_a1"].mean()),
        "mean_var_a0": float(post["var_a0"].mean()),
        "divergences": int(idata.sample_stats["diverging"].sum()),
        "steps_per_draw": float(idata.sample_stats["n_steps"].mean()),
    }


def run_bayeslmm(df, K, draws: int, seed: int) -> dict:
    model = LMM("y ~ x + (1 + x | line)", df, kinship={"line": K}, sigma="~ env")
    fit = model.fit(
        draws=draws,
        tune=draws,
        chains=2,
        cores=1,
        seed=seed,
        sampler="nutpie",
        progressbar=False,
        verbose=False,
    )
    cov = fit.posterior["cov_line"]
    a1 = cov.sel(line_coef="x", line_coef_bis="x")
    a0 = cov.sel(line_coef="Intercept", line_coef_bis="Intercept")
    return {
        "compile_s": fit.timing["compile_s"],
        "sample_s": fit.timing["sample_s"],
        "ess_var_a1": _ess(a1),
        "ess_var_a0": _ess(a0),
        "mean_var_a1": float(a1.mean()),
        "mean_var_a0": float(a0.mean()),
        "divergences": int(fit.diagnostics["divergences"]),
        "steps_per_draw": float(fit.idata.sample_stats["n_steps"].mean()),
    }


def main(n: int = 1000, draws: int = 1000) -> None:
    print(f"bench_gxe: {n} genotypes x 2 environments ({2 * n} records), Sigma = {SIGMA.tolist()}")
    print(
        f"nutpie, 2 chains x {draws} draws ({draws} tune), cores=1, BLAS threads = 1; "
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}"
    )
    df, K = make_data(n)
    off = K.matrix[~np.eye(K.n, dtype=bool)]
    print(
        f"GRM: mean diagonal {K.mean_diagonal:.3f}, {100 * (off < 0).mean():.0f}% negative "
        f"off-diagonal entries, smallest eigenvalue {np.linalg.eigvalsh(K.matrix)[0]:.2e}"
    )
    rows = {}
    load = [os.getloadavg()[0]]
    with threadpool_limits(limits=1):
        rows["bayeslmm"] = run_bayeslmm(df, K, draws, seed=1)
        load.append(os.getloadavg()[0])
        rows["hand-written"] = run_hand(df, K, draws, seed=1)
        load.append(os.getloadavg()[0])
    table = pd.DataFrame(rows).T
    table["ess_per_s_var_a1"] = table["ess_var_a1"] / table["sample_s"]
    table["ess_per_s_var_a0"] = table["ess_var_a0"] / table["sample_s"]
    pd.set_option("display.width", 140)
    print(table.round(3).to_string())
    ours, hand = rows["bayeslmm"], rows["hand-written"]
    r1 = (ours["ess_var_a1"] / ours["sample_s"]) / (hand["ess_var_a1"] / hand["sample_s"])
    r0 = (ours["ess_var_a0"] / ours["sample_s"]) / (hand["ess_var_a0"] / hand["sample_s"])
    total = (ours["ess_var_a1"] / (ours["sample_s"] + ours["compile_s"])) / (
        hand["ess_var_a1"] / (hand["sample_s"] + hand["compile_s"])
    )
    print(
        f"\nratio bayeslmm / hand-written, ESS per second of sampling: "
        f"slope variance {r1:.2f}, intercept variance {r0:.2f}; "
        f"slope variance incl. compilation {total:.2f}"
    )
    print(f"truth: var_a0 = {SIGMA[0, 0]}, var_a1 = {SIGMA[1, 1]}")
    print(
        f"1-min load average before / between / after the two runs: "
        f"{' / '.join(f'{v:.1f}' for v in load)} ({os.cpu_count()} CPUs)"
    )


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
