"""The marginal PSIS-LOO of a NUTS fit against exact leave-one-out by refitting n times.

``fit.loo(kind="marginal")`` estimates elpd_loo = Σ_i log p(y_i | y_−i) from *one* fit: the
leave-one-out density log p(y_i | y_−i, θ, β) in closed form per draw, then Pareto-smoothed
importance sampling to remove y_i from the posterior of (θ, β). Here the same quantity is
computed the brute-force way: for every i the model is refitted by NUTS to the data without
row i (the kinship restricted to the others), and

    log p(y_i | y_−i) = log (1/S) Σ_s N(y_i; μ_i(θ_s, β_s), v_i(θ_s))

over the refit's S posterior draws, where μ_i and v_i are the Gaussian conditional of y_i
given y_−i under V = σ_g² K + σ_e² I: μ_i = β + V_{i,−i} V_{−i,−i}⁻¹ (y_−i − β),
v_i = V_ii − V_{i,−i} V_{−i,−i}⁻¹ V_{−i,i}, computed densely (a Cholesky factor of the
(n−1) × (n−1) V_{−i,−i} per draw; nothing from the package's algebra). Individual i is
predicted from its relatives through the kinship.

The priors are fixed to the full data's defaults and given explicitly to every fit (the
defaults scale with mean(y) and sd(y), so a refit would otherwise have a slightly different
prior from the one PSIS-LOO assumes).

A third value needs no sampling: log p(y_i | y_−i) = log p(y) − log p(y_−i), the two
evidences integrated on the (σ_g, σ_e) grid of ``validation/grid_posterior.py`` (β integrated
out analytically). It tells the Monte Carlo error of the two sampled estimates apart from a
real difference.

Data: n = 200 offspring of 20 full-sib families of 10, VanRaden GRM of 2,000 SNPs,
``y ~ 1 + (1 | id)`` simulated at h² = 0.4 (:func:`bayeslmm.datasets.simulate`; ``--h2 0.4
0.8`` adds a harder case for importance sampling, where each y_i informs its own breeding
value more). Check: |elpd_loo(PSIS) − elpd_loo(refit)| ≤ the SE of elpd_loo.

Run::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 nice -n 10 python validation/loo_vs_refit.py \\
        --workers 2 > validation/results/loo_vs_refit.txt
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from functools import cache
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import linalg, special

FORMULA = "y ~ 1 + (1 | id)"
HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Settings:
    """Design and NUTS settings of one comparison."""

    n_families: int = 20
    family_size: int = 10
    n_snps: int = 2000
    h2: float = 0.4
    data_seed: int = 15
    draws: int = 500
    tune: int = 1000
    chains: int = 2
    #: the full fit (whose draws every PSIS term shares, so its Monte Carlo error does not
    #: average out over i) runs longer: chains × draws
    full_chains: int = 4
    full_draws: int = 2000

    def full(self) -> Settings:
        """The settings of the full-data fit."""
        return replace(self, chains=self.full_chains, draws=self.full_draws)


@cache
def dataset(settings: Settings) -> tuple[pd.DataFrame, Any, dict[str, tuple]]:
    """The data, its kinship, and the full data's default priors written out explicitly.

    Examples
    --------
    >>> df, K, priors = dataset(Settings(n_families=4, family_size=5, n_snps=200))
    >>> df.shape[0], K.n, sorted(priors)
    (20, 20, ['Intercept', 'sd_id', 'sigma'])
    """
    from bayeslmm.datasets import simulate

    s = settings
    sim = simulate(
        n_families=s.n_families,
        family_size=s.family_size,
        n_snps=s.n_snps,
        h2=s.h2,
        seed=s.data_seed,
    )
    df = sim.data[["id", "y"]].reset_index(drop=True)
    y = df["y"].to_numpy()
    scale = 2.5 * float(np.std(y, ddof=1))
    priors = {
        "Intercept": ("normal", float(np.mean(y)), scale),
        "sd_id": ("halfstudentt", 3.0, scale),
        "sigma": ("halfstudentt", 3.0, scale),
    }
    return df, sim.kinship, priors


def fit_nuts(df: pd.DataFrame, kinship, priors: dict, settings: Settings, seed: int):
    """NUTS fit of ``y ~ 1 + (1 | id)`` (fit()'s defaults: spectral strategy, nutpie)."""
    from bayeslmm.model import LMM

    model = LMM(FORMULA, df, kinship={"id": kinship}, priors=priors)
    return model.fit(
        draws=settings.draws,
        tune=settings.tune,
        chains=settings.chains,
        cores=1,
        seed=seed,
        progressbar=False,
        verbose=False,
    )


def posterior_draws(fit) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """σ_g², σ_e² and the intercept per draw (flattened over chains)."""
    post = fit.posterior
    var_g = np.asarray(post["var_id"]).reshape(-1)
    var_e = np.asarray(post["var_residual"]).reshape(-1)
    beta = np.asarray(post["beta"].sel(fixed="Intercept")).reshape(-1)
    return var_g, var_e, beta


def conditional_log_density(
    y: np.ndarray,
    K: np.ndarray,
    i: int,
    var_g: np.ndarray,
    var_e: np.ndarray,
    beta: np.ndarray,
) -> np.ndarray:
    """log N(y_i; μ_i, v_i) per draw: y_i given y_−i under y ~ N(β1, σ_g² K + σ_e² I).

    Dense: one Cholesky factor of V_{−i,−i} per draw.

    Examples
    --------
    >>> K = np.array([[1.0, 0.5, 0.5], [0.5, 1.0, 0.25], [0.5, 0.25, 1.0]])
    >>> y = np.array([1.0, 2.0, 0.5])
    >>> ll = conditional_log_density(y, K, 0, np.ones(1), np.ones(1), np.zeros(1))
    >>> round(float(ll[0]), 6)   # y_a | y_b, y_c ~ N(5/9, 16/9)
    -1.262176
    """
    keep = np.arange(len(y)) != i
    K_rest = K[np.ix_(keep, keep)]
    k_i = K[keep, i]
    out = np.empty(len(var_g))
    eye = np.eye(K_rest.shape[0])
    for s in range(len(var_g)):
        chol = linalg.cho_factor(var_g[s] * K_rest + var_e[s] * eye, lower=True)
        cov_i = var_g[s] * k_i
        w = linalg.cho_solve(chol, np.column_stack([cov_i, y[keep] - beta[s]]))
        mean = beta[s] + cov_i @ w[:, 1]
        var = var_g[s] * K[i, i] + var_e[s] - cov_i @ w[:, 0]
        out[s] = -0.5 * (np.log(2.0 * np.pi * var) + (y[i] - mean) ** 2 / var)
    return out


@cache
def _grid_module():
    spec = importlib.util.spec_from_file_location("grid_posterior", HERE / "grid_posterior.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("grid_posterior", module)
    spec.loader.exec_module(module)
    return module


def log_evidence(df: pd.DataFrame, kinship, priors: dict, n_theta: int = 200, n_r: int = 120):
    """log p(y) under the model and priors, by quadrature over (σ_g, σ_e), β integrated out
    analytically (the grid of ``validation/grid_posterior.py``); and the grid's edge mass.

    log p(y_i | y_−i) = log p(y) − log p(y_−i) is then exact up to quadrature, with no
    sampling at all.

    Examples
    --------
    >>> # log_evidence(df, K, priors)[0] - log_evidence(df_without_i, K_i, priors)[0]
    """
    import bayeslmm as bl
    from bayeslmm.engines.bayes import build

    grid = _grid_module()
    spec = bl.specify(FORMULA, df, kinship={"id": kinship}, priors=priors)
    post = grid.grid_posterior(spec, build(spec, strategy="spectral").priors, n_theta, n_r)
    cell = (post.theta[1] - post.theta[0]) * (post.log_r[1] - post.log_r[0])
    return float(special.logsumexp(post.log_density) + np.log(cell)), post.edge_mass()


def refit_elpd(task: tuple[int, Settings]) -> dict[str, Any]:
    """Exact log p(y_i | y_−i): refit without row i, average the conditional density."""
    from threadpoolctl import threadpool_limits

    i, settings = task
    df, kinship, priors = dataset(settings)
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        rest = df.drop(index=i).reset_index(drop=True)
        fit = fit_nuts(rest, kinship.subset(rest["id"]), priors, settings, seed=1000 + i)
        fit_s = time.perf_counter() - start
        var_g, var_e, beta = posterior_draws(fit)
        start = time.perf_counter()
        K = kinship.subset(df["id"]).matrix
        ll = conditional_log_density(df["y"].to_numpy(), K, i, var_g, var_e, beta)
        predictive_s = time.perf_counter() - start
        start = time.perf_counter()
        log_z_rest, edge = log_evidence(rest, kinship.subset(rest["id"]), priors)
        grid_s = time.perf_counter() - start
    return {
        "i": i,
        "elpd_refit": float(special.logsumexp(ll) - np.log(ll.size)),
        "log_evidence_rest": log_z_rest,
        "grid_edge_mass": edge,
        "grid_s": grid_s,
        "divergences": int(fit.diagnostics["divergences"]),
        "max_r_hat": float(fit.diagnostics["max_r_hat"]),
        "fit_s": fit_s,
        "predictive_s": predictive_s,
    }


def compare(settings: Settings, workers: int = 1, n_points: int | None = None) -> dict[str, Any]:
    """PSIS marginal LOO of the full fit vs exact refits, pointwise and summed.

    ``n_points`` refits only the first rows (a smoke run); the sums then cover those rows.

    Examples
    --------
    >>> # compare(Settings(), workers=2)["within_1_se"]
    """
    df, kinship, priors = dataset(settings)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = fit_nuts(df, kinship, priors, settings.full(), seed=1)
        loo = fit.loo(kind="marginal")
    full_s = time.perf_counter() - start
    log_z, edge = log_evidence(df, kinship, priors)
    n = len(df) if n_points is None else n_points
    tasks = [(i, settings) for i in range(n)]
    start = time.perf_counter()
    if workers == 1:
        rows = [refit_elpd(t) for t in tasks]
    else:
        # spawn: nutpie's and numba's threads do not survive a fork
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            rows = list(pool.map(refit_elpd, tasks))
    refit_wall = time.perf_counter() - start
    table = pd.DataFrame(rows).set_index("i")
    table["elpd_psis"] = np.asarray(loo["loo_i"])[:n]
    table["pareto_k"] = np.asarray(loo["pareto_k"])[:n]
    table["elpd_grid"] = log_z - table["log_evidence_rest"]
    diff = table["elpd_psis"] - table["elpd_refit"]
    psis, exact = float(table["elpd_psis"].sum()), float(table["elpd_refit"].sum())
    grid = float(table["elpd_grid"].sum())
    se = float(loo["se"]) if n_points is None else float(np.sqrt(n * table["elpd_psis"].var()))
    return {
        "table": table,
        "n": n,
        "elpd_psis": psis,
        "elpd_refit": exact,
        "difference": psis - exact,
        "se": se,
        "within_1_se": abs(psis - exact) <= se,
        "elpd_grid": grid,
        "grid_edge_mass": max(edge, float(table["grid_edge_mass"].max())),
        "max_abs_pointwise_grid": float((table["elpd_psis"] - table["elpd_grid"]).abs().max()),
        "max_abs_refit_grid": float((table["elpd_refit"] - table["elpd_grid"]).abs().max()),
        "max_abs_pointwise": float(diff.abs().max()),
        "sd_pointwise": float(diff.std()),
        "pareto_k_max": float(table["pareto_k"].max()),
        "p_loo": float(loo["p_loo"]),
        "full_divergences": int(fit.diagnostics["divergences"]),
        "full_r_hat": float(fit.diagnostics["max_r_hat"]),
        "h2_mean": float(fit.posterior["h2"].mean()),
        "full_s": full_s,
        "refit_wall_s": refit_wall,
    }


def report(settings: Settings, result: dict[str, Any]) -> None:
    """Print one comparison."""
    t = result["table"]
    print(
        f"\ntrue h2 = {settings.h2}: n = {result['n']}, posterior mean h2 "
        f"{result['h2_mean']:.3f}; full fit: {result['full_divergences']} divergences, "
        f"max R-hat {result['full_r_hat']:.3f}, p_loo {result['p_loo']:.2f}, "
        f"max Pareto k {result['pareto_k_max']:.3f}"
    )
    print(
        f"  elpd_loo  PSIS (fit.loo, marginal) {result['elpd_psis']:.3f}   exact refits "
        f"{result['elpd_refit']:.3f}   difference {result['difference']:+.3f}   "
        f"SE {result['se']:.3f}   |difference| <= 1 SE: {result['within_1_se']}"
    )
    print(
        f"  exact by quadrature (log p(y) - log p(y_-i), no sampling): {result['elpd_grid']:.3f}"
        f"; PSIS - quadrature {result['elpd_psis'] - result['elpd_grid']:+.3f}, refits - "
        f"quadrature {result['elpd_refit'] - result['elpd_grid']:+.3f}; pointwise max |PSIS - "
        f"quadrature| {result['max_abs_pointwise_grid']:.4f}, max |refit - quadrature| "
        f"{result['max_abs_refit_grid']:.4f}; grid edge mass {result['grid_edge_mass']:.1e}"
    )
    print(
        f"  pointwise PSIS - refit: max |diff| {result['max_abs_pointwise']:.4f}, SD "
        f"{result['sd_pointwise']:.4f}; refits: {int((t['divergences'] > 0).sum())} with "
        f"divergences, max R-hat {t['max_r_hat'].max():.3f}"
    )
    print(
        f"  seconds: full fit + loo {result['full_s']:.1f}; {len(t)} refits "
        f"{result['refit_wall_s']:.0f} wall (per refit: NUTS {t['fit_s'].mean():.2f}, "
        f"dense predictive {t['predictive_s'].mean():.2f}, quadrature {t['grid_s'].mean():.2f})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--h2", type=float, nargs="+", default=[0.4])
    parser.add_argument("--draws", type=int, default=Settings.draws)
    parser.add_argument("--tune", type=int, default=Settings.tune)
    parser.add_argument("--chains", type=int, default=Settings.chains)
    parser.add_argument("--workers", type=int, default=1, help="processes (2 at most here)")
    parser.add_argument("--quick", action="store_true", help="smoke run: n = 30, 10 refits")
    args = parser.parse_args(argv)
    base = Settings(draws=args.draws, tune=args.tune, chains=args.chains)
    n_points = None
    if args.quick:
        base = Settings(
            n_families=6, family_size=5, n_snps=300, draws=300, tune=300, full_draws=1000
        )
        n_points = 10
    blas = {v: os.environ.get(v, "unset") for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    print("Marginal PSIS-LOO (fit.loo(kind='marginal')) vs exact leave-one-out by refitting")
    print(
        f"model {FORMULA}; n = {base.n_families * base.family_size} "
        f"({base.n_families} full-sib families of {base.family_size}), VanRaden GRM of "
        f"{base.n_snps} SNPs; NUTS (fit() defaults: spectral, nutpie), tune {base.tune}: "
        f"full fit {base.full_chains} chains x {base.full_draws} draws, every refit "
        f"{base.chains} x {base.draws}; priors: "
        f"the full data's defaults, fixed; {args.workers} worker process(es); BLAS {blas}"
    )
    start = time.perf_counter()
    verdicts = []
    for h2 in args.h2:
        settings = replace(base, h2=h2)
        result = compare(settings, workers=args.workers, n_points=n_points)
        report(settings, result)
        verdicts.append(result["within_1_se"])
    wall = time.perf_counter() - start
    print(f"\nverdict: {'PASS' if all(verdicts) else 'FAIL'} (|PSIS - exact| <= 1 SE in each)")
    print(f"wall time {wall:.0f} s ({wall / 60:.1f} min)")
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
