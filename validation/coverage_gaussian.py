"""Frequentist coverage of the 95% posterior intervals of h² at fixed true h².

For each true h² ∈ {0.1, 0.5, 0.8}, data sets y = 1 + 0.3 x + u + e with u ~ N(0, h² K) and
e ~ N(0, (1 - h²) I) are drawn on the fixed design of ``validation/sbc_gaussian.py``
(n = 200, VanRaden GRM of full/half-sib families) and fitted with the builder's *default*
priors, as ``LMM("y ~ 1 + x + (1 | id)").fit()`` does. We count how often the 95%
equal-tailed interval and the 95% HDI of h² contain the truth.

A Bayesian interval need not have exact frequentist coverage at a fixed parameter (the prior
pulls, most at n = 200 where the posterior of h² is wide), so this is a check of sanity and
of the size of the departure, not a pass/fail test of correctness (SBC is that).

Speed: the default priors scale with mean(y) and sd(y) (:mod:`bayeslmm.priors`), and they are
equivariant under y → (y - m)/s: the default prior for the standardised data is the image of
the default prior for y, and h² is invariant. So the posterior of h² under the defaults
equals that of the model built for *standardised* y, whose priors are the same for every data
set. That model is compiled once by nutpie and its data swapped per data set (as in the SBC
script); the equivalence is checked below against the exact grid posterior of
``validation/grid_posterior.py`` on raw and standardised data.

Run (≈ 5 min on one core)::

    OMP_NUM_THREADS=1 python validation/coverage_gaussian.py \\
        > validation/results/coverage_gaussian.txt
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

HERE = Path(__file__).resolve().parent
TRUE_H2 = (0.1, 0.5, 0.8)
FORMULA = "y ~ 1 + x + (1 | id)"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact binomial confidence interval for a proportion k/n.

    Examples
    --------
    >>> [round(v, 3) for v in clopper_pearson(95, 100)]
    [0.887, 0.984]
    """
    a = 1 - level
    lo = stats.beta.ppf(a / 2, k, n - k + 1) if k > 0 else 0.0
    hi = stats.beta.ppf(1 - a / 2, k + 1, n - k) if k < n else 1.0
    return float(lo), float(hi)


def standardised(y: np.ndarray) -> np.ndarray:
    return (y - y.mean()) / y.std(ddof=1)


def check_equivariance(data: pd.DataFrame, kinship) -> float:
    """|grid E[h² | y] − grid E[h² | standardised y]| under the default priors of each."""
    import bayeslmm as bl
    from bayeslmm.engines.bayes import build

    grid = _load("grid_posterior")
    means = []
    for frame in (data, data.assign(y=standardised(data["y"].to_numpy()))):
        spec = bl.specify(FORMULA, frame, kinship={"id": kinship})
        post = grid.grid_posterior(spec, build(spec, strategy="spectral").priors, 200, 120)
        means.append(post.summary()["h2 mean"])
    return abs(means[0] - means[1])


def main(argv: list[str] | None = None) -> int:
    import arviz as az
    import nutpie
    from threadpoolctl import threadpool_limits

    import bayeslmm as bl
    from bayeslmm.engines.bayes import build

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-datasets", type=int, default=200, help="per true h2")
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--tune", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    threadpool_limits(1)

    sbc = _load("sbc_gaussian")
    data, kinship, root = sbc.design()
    rng = np.random.default_rng(args.seed)
    x = data["x"].to_numpy()
    n = len(data)

    def response(h2: float) -> np.ndarray:
        u = np.sqrt(h2) * (root @ rng.normal(size=n))
        return 1.0 + 0.3 * x + u + np.sqrt(1 - h2) * rng.normal(size=n)

    print(f"Coverage of 95% intervals for h2: {FORMULA}, n = {n}, default priors,")
    print(
        f"{args.n_datasets} data sets per true h2; nutpie, {args.chains} chains x {args.tune} "
        f"tune + {args.draws} draws; BLAS pinned to 1 thread; seed {args.seed}."
    )
    err = check_equivariance(data.assign(y=response(0.5)), kinship)
    print(f"grid E[h2|y] on raw vs standardised y (default priors): |diff| = {err:.1e}")
    if err > 1e-6:
        raise AssertionError("The default priors are not equivariant as assumed.")

    base = data.assign(y=standardised(response(0.5)))
    spec = bl.specify(FORMULA, base, kinship={"id": kinship})
    built = build(spec, strategy="spectral")
    print(f"priors of the standardised model: {built.priors.table()}")
    swapped, shared = sbc.swappable_model(built.model, built.observed_name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled = nutpie.compile_pymc_model(swapped)

    records = []
    start = time.perf_counter()
    for h2 in TRUE_H2:
        for k in range(args.n_datasets):
            y = standardised(response(h2))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                idata = nutpie.sample(
                    compiled.with_data(**{shared.name: sbc.observed_vector(built, y)}),
                    draws=args.draws,
                    tune=args.tune,
                    chains=args.chains,
                    cores=1,
                    seed=args.seed * 1_000_000 + int(h2 * 10) * 10_000 + k,
                    progress_bar=False,
                    target_accept=0.9,
                    save_warmup=False,
                )
                draws = np.asarray(idata.posterior["h2"]).reshape(-1)
                hdi = az.hdi(draws, hdi_prob=0.95)
                ess = float(az.ess(idata.posterior, var_names=["h2"], method="bulk")["h2"])
            lo, hi = np.quantile(draws, [0.025, 0.975])
            records.append(
                {
                    "true_h2": h2,
                    "mean": draws.mean(),
                    "median": np.median(draws),
                    "eti_covers": lo <= h2 <= hi,
                    "hdi_covers": hdi[0] <= h2 <= hdi[1],
                    "eti_width": hi - lo,
                    "divergences": int(np.asarray(idata.sample_stats["diverging"]).sum()),
                    "ess_h2": ess,
                }
            )
        print(f"  h2 = {h2} done, {time.perf_counter() - start:.0f} s", file=sys.stderr)
    table = pd.DataFrame(records)

    rows = []
    for h2, grp in table.groupby("true_h2"):
        m = len(grp)
        k_eti, k_hdi = int(grp["eti_covers"].sum()), int(grp["hdi_covers"].sum())
        eti_lo, eti_hi = clopper_pearson(k_eti, m)
        rows.append(
            {
                "true h2": h2,
                "data sets": m,
                "ETI coverage": k_eti / m,
                "ETI 95% CI": f"[{eti_lo:.3f}, {eti_hi:.3f}]",
                "HDI coverage": k_hdi / m,
                "mean of post. means": grp["mean"].mean(),
                "mean of post. medians": grp["median"].mean(),
                "mean ETI width": grp["eti_width"].mean(),
                "with divergences": int((grp["divergences"] > 0).sum()),
                "median ESS(h2)": grp["ess_h2"].median(),
            }
        )
    print(f"\nsampling {time.perf_counter() - start:.0f} s in all")
    pd.set_option("display.width", 200)
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(
        "\nETI: central 2.5-97.5% interval; HDI: 95% highest-density interval (ArviZ). "
        "ETI 95% CI: Clopper-Pearson interval of the coverage."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
