"""Crossed iid designs against lme4 (a script that prints seconds and ratios, not a test).

Three simulated data sets with the shapes of lme4's classic crossed examples:

- **InstEval-shaped**, REML: 73,421 ratings, students ``s`` (2,972 levels, ~25 ratings each,
  unbalanced) crossed with lecturers ``d`` (1,128 levels, popularity skewed),
  ``y ~ 1 + (1|s) + (1|d)``;
- **VerbAgg-shaped**, Laplace: 316 ids × 24 items = 7,584 binary responses,
  ``r ~ x1 + x2 + (1|id) + (1|item)`` (x1 a trait of the id, x2 a property of the item);
- **Arabidopsis-shaped**, Laplace: 625 Poisson counts, 24 genotypes ``gen`` in 9
  populations ``popu``, ``total ~ nutrient * amd + rack + (1|popu) + (1|gen)`` with the
  observation-level effect (``Poisson(overdispersion=True)``, the default).

Each row is the whole call a user makes, ``bl.LMM(...).fit(method=...)``, best of
``--repeats``, with BLAS pinned to one thread (threadpoolctl). When ``Rscript`` with lme4 is
on the PATH, the same data are written to CSV and ``lmer``/``glmer`` are timed in the same
run (``benchmarks/lme4_crossed.R``, default settings; the fitting call alone, R's start-up
and ``read.csv`` excluded); otherwise the lme4 seconds recorded in
``benchmarks/results/lme4_crossed.txt`` are used, and the output says so. ``glmer`` is also
run at ``tolPwrss = 1e-10`` (its tight-tolerance accuracy): the deviance column compares
bayeslmm's optimum with that one.

Usage::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/bench_crossed.py \
        [--repeats 3] [--no-r] [--csv-dir DIR]
"""

from __future__ import annotations

import argparse
import platform
import shutil
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_info, threadpool_limits

import bayeslmm as bl

HERE = Path(__file__).resolve().parent
R_SCRIPT = HERE / "lme4_crossed.R"
RECORDED = HERE / "results" / "lme4_crossed.txt"


def insteval_shaped(seed: int = 1) -> pd.DataFrame:
    """73,421 ratings: 2,972 students × 1,128 lecturers, unbalanced as InstEval.

    Students rate between 1 and ~100 lecturers (~25 on average, a skewed count); lecturers
    are picked with log-normal popularity, each student rating a lecturer at most once.
    Variances near lmer's InstEval estimates (s 0.10, d 0.26, residual 1.38).
    """
    rng = np.random.default_rng(seed)
    n_s, n_d, n = 2972, 1128, 73_421
    counts = 1 + rng.negative_binomial(2, 2 / (2 + 23.7), n_s)
    counts = np.maximum(1, np.round(counts * (n / counts.sum()))).astype(int)
    while counts.sum() > n:  # rounding: take the excess from the busiest students
        counts[np.argmax(counts)] -= 1
    while counts.sum() < n:
        counts[rng.integers(n_s)] += 1
    popularity = rng.lognormal(0.0, 1.0, n_d)
    popularity /= popularity.sum()
    s_idx, d_idx = [], []
    for s, c in enumerate(counts):
        d_idx.append(rng.choice(n_d, size=min(c, n_d), replace=False, p=popularity))
        s_idx.append(np.full(d_idx[-1].size, s))
    s_idx, d_idx = np.concatenate(s_idx), np.concatenate(d_idx)
    u_s = rng.normal(0, np.sqrt(0.10), n_s)
    u_d = rng.normal(0, np.sqrt(0.26), n_d)
    y = 3.2 + u_s[s_idx] + u_d[d_idx] + rng.normal(0, np.sqrt(1.38), s_idx.size)
    return pd.DataFrame({"y": y, "s": [f"s{i}" for i in s_idx], "d": [f"d{i}" for i in d_idx]})


def verbagg_shaped(seed: int = 2) -> pd.DataFrame:
    """316 ids × 24 items, binary; id SD 1.15, item SD 0.65 (near glmer's VerbAgg fit)."""
    rng = np.random.default_rng(seed)
    n_id, n_item = 316, 24
    x1 = rng.normal(0, 1, n_id)  # a trait of the person (VerbAgg's Anger, standardised)
    x2 = np.tile([0.0, 1.0], n_item // 2)  # a property of the item (VerbAgg's mode)
    u_id = rng.normal(0, 1.15, n_id)
    u_item = rng.normal(0, 0.65, n_item)
    i_id = np.repeat(np.arange(n_id), n_item)
    i_item = np.tile(np.arange(n_item), n_id)
    eta = -0.2 + 0.3 * x1[i_id] - 0.7 * x2[i_item] + u_id[i_id] + u_item[i_item]
    r = rng.binomial(1, 1 / (1 + np.exp(-eta)))
    return pd.DataFrame(
        {
            "r": r,
            "x1": x1[i_id],
            "x2": x2[i_item],
            "id": [f"p{i}" for i in i_id],
            "item": [f"i{i}" for i in i_item],
        }
    )


def arabidopsis_shaped(seed: int = 3) -> pd.DataFrame:
    """625 counts: 24 genotypes in 9 populations, 2 × 2 treatments, 2 racks, overdispersed."""
    rng = np.random.default_rng(seed)
    n, n_pop, n_gen = 625, 9, 24
    gen_pop = np.r_[np.arange(n_pop), rng.integers(0, n_pop, n_gen - n_pop)]
    gen = rng.integers(0, n_gen, n)
    nutrient = rng.integers(0, 2, n).astype(float)
    amd = rng.integers(0, 2, n).astype(float)
    rack = rng.integers(0, 2, n).astype(float)
    u_pop = rng.normal(0, 0.6, n_pop)
    u_gen = rng.normal(0, 0.5, n_gen)
    eta = (
        2.5
        + 0.9 * nutrient
        - 0.3 * amd
        + 0.2 * nutrient * amd
        - 0.7 * rack
        + u_pop[gen_pop[gen]]
        + u_gen[gen]
        + rng.normal(0, 1.2, n)
    )
    total = rng.poisson(np.exp(eta))
    return pd.DataFrame(
        {
            "total": total,
            "nutrient": nutrient,
            "amd": amd,
            "rack": rack,
            "popu": [f"p{i}" for i in gen_pop[gen]],
            "gen": [f"g{i}" for i in gen],
        }
    )


#: name -> (simulator, formula, family, bayeslmm method, lme4 call)
CASES = {
    "insteval": (insteval_shaped, "y ~ 1 + (1|s) + (1|d)", "gaussian", "reml"),
    "verbagg": (verbagg_shaped, "r ~ x1 + x2 + (1|id) + (1|item)", "bernoulli", "laplace"),
    "arabidopsis": (
        arabidopsis_shaped,
        "total ~ nutrient * amd + rack + (1|popu) + (1|gen)",
        "poisson",
        "laplace",
    ),
}


def fit_once(name: str, data: pd.DataFrame):
    _, formula, family, method = CASES[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bl.LMM(formula, data, family=family).fit(method=method)


def deviance_of(fit) -> float:
    """−2 × the criterion lme4 reports: REML criterion (lmer) or Laplace deviance (glmer)."""
    if hasattr(fit, "loglik_reml"):
        return -2.0 * float(fit.loglik_reml)
    return float(fit.deviance)


def run_r(csv_dir: Path) -> dict[str, dict[str, float]] | None:
    """Time lmer/glmer on the CSVs in ``csv_dir``; None when R or lme4 is missing."""
    if shutil.which("Rscript") is None:
        return None
    out = subprocess.run(
        ["Rscript", str(R_SCRIPT), str(csv_dir)], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        print(f"# Rscript failed ({out.stderr.strip().splitlines()[-1:]}); using recorded")
        return None
    return parse_lme4(out.stdout)


def parse_lme4(text: str) -> dict[str, dict[str, float]]:
    """Lines ``case setting seconds deviance`` (comments start with #)."""
    table: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        case, setting, seconds, dev = line.split()[:4]
        table.setdefault(case, {})[f"{setting}_s"] = float(seconds)
        table[case][f"{setting}_dev"] = float(dev)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-r", action="store_true", help="use the recorded lme4 seconds")
    parser.add_argument("--csv-dir", type=Path, default=None, help="keep the CSVs here")
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    args = parser.parse_args()
    threadpool_limits(1)
    print(f"# python {platform.python_version()}, bayeslmm {bl.__version__}")
    print(
        "# BLAS pinned to 1 thread:",
        [(i["internal_api"], i["num_threads"]) for i in threadpool_info()],
    )
    datasets = {name: CASES[name][0]() for name in args.cases}
    csv_dir = args.csv_dir or Path(tempfile.mkdtemp(prefix="bench_crossed_"))
    csv_dir.mkdir(parents=True, exist_ok=True)
    for name, data in datasets.items():
        data.to_csv(csv_dir / f"{name}.csv", index=False)
    lme4 = None if args.no_r else run_r(csv_dir)
    source = "measured in this run"
    if lme4 is None:
        lme4 = parse_lme4(RECORDED.read_text())
        source = f"recorded in {RECORDED.relative_to(HERE.parent)}"
    print(f"# lme4 seconds {source}")
    header = (
        f"{'case':<12} {'method':<8} {'route':<18} {'bayeslmm_s':>10} {'lme4_s':>8} "
        f"{'ratio':>6} {'deviance':>14} {'lme4_tight_dev':>14} {'d_dev':>9}"
    )
    print(header)
    for name, data in datasets.items():
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fit = fit_once(name, data)
            times.append(time.perf_counter() - start)
        best = min(times)
        ref = lme4.get(name, {})
        ref_s = ref.get("default_s", float("nan"))
        tight = ref.get("tight_dev", ref.get("default_dev", float("nan")))
        dev = deviance_of(fit)
        route = getattr(fit, "method", "laplace")
        print(
            f"{name:<12} {CASES[name][3]:<8} {route:<18} {best:>10.2f} {ref_s:>8.2f} "
            f"{best / ref_s:>6.2f} {dev:>14.4f} {tight:>14.4f} {dev - tight:>9.1e}"
        )


if __name__ == "__main__":
    main()
