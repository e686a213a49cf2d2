"""Simulation-based calibration (Talts et al. 2018) of the Bayesian Gaussian LMM.

If data are drawn from the prior predictive distribution of a model and the posterior is
computed exactly, the rank of each true parameter among L independent posterior draws is
uniform on {0, ..., L}. Any error — a wrong likelihood, a prior that differs from the one
sampled, a biased or badly adapted sampler — shows up as a non-uniform rank histogram.

Procedure
---------
1. Design (fixed over data sets): n = 200 offspring of 40 full-sib families of 5 (pairs of
   families are paternal half-sibs), VanRaden GRM of 1000 simulated SNPs
   (:func:`bayeslmm.datasets.simulate`), a covariate x ~ N(1, 1); model
   ``y ~ 1 + x + (1 | id)``.
2. Priors: data-independent versions of the defaults of :mod:`bayeslmm.priors` at unit scale
   (the defaults scale with sd(y), which would make the prior depend on the data and break
   SBC's premise): centred intercept ~ Normal(0, 2.5), b_x ~ Normal(0, 2.5), and either
   ``sd_id``, ``sigma`` ~ HalfStudentT(3, 2.5) (``--parametrisation default``) or
   h² ~ Beta(1, 1), σ_P ~ HalfStudentT(3, 2.5) (``--parametrisation h2``).
3. True parameters: draws of :func:`pymc.sample_prior_predictive` from the very
   :class:`pymc.Model` that :func:`bayeslmm.engines.bayes.build` writes, so the prior matches
   the sampled one by construction.
4. Data, by hand and independently of the builder's rotation:
   y = X β + σ_g K^{1/2} z + σ_e ε (K^{1/2} the symmetric square root of the GRM).
5. Posterior: the builder's model is compiled once by nutpie; only its observed data (a
   constant in the graph) is made a shared variable and swapped per data set with
   ``CompiledModel.with_data``. The swapped model's log-density is checked against a model
   freshly built from the data set's ``y`` at random points, so what is sampled is exactly
   what ``LMM(...).fit`` samples. One chain per data set, ``tune`` warm-up draws, then
   L · thin draws thinned to L = 99 (ranks 0..99, 20 bins of 5).
6. Uniformity: chi-square test over the 20 bins, per parameter (h², σ_g², σ_e², β); pass
   when p > 0.01. The rank histograms with the 99% band of a uniform histogram are plotted.

Run (≈ 0.3–2 s per data set on one core, by load; 400 data sets as recorded)::

    OMP_NUM_THREADS=1 python validation/sbc_gaussian.py --n-datasets 400 \\
        --plot docs/img/sbc_rank_histogram.png > validation/results/sbc_gaussian.txt
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

FORMULA = "y ~ 1 + x + (1 | id)"

#: Parameters whose ranks are tested: (label, posterior variable, coordinate selection).
PARAMETERS = (
    ("h2", "h2", None),
    ("var_g", "var_id", None),
    ("var_e", "var_residual", None),
    ("beta_Intercept", "beta", {"fixed": "Intercept"}),
    ("beta_x", "beta", {"fixed": "x"}),
)

#: Data-independent priors (the defaults of bayeslmm.priors at sd(y) = 1, mean(y) = 0).
FIXED_PRIORS = {
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

#: Negative control: the fitted model's prior differs from the generating one in this entry.
NEGATIVE_CONTROL = {
    "default": {"sd_id": ("halfnormal", 0.3)},
    "h2": {"h2": ("beta", 2.0, 4.0)},
}

#: Uniformity passes when the chi-square p-value exceeds this.
MIN_P = 0.01


def design(seed: int = 2018, n_families: int = 40, family_size: int = 5):
    """The fixed design: (data frame with a placeholder y, Kinship, K^{1/2})."""
    from bayeslmm.datasets import simulate

    sim = simulate(n_families=n_families, family_size=family_size, n_snps=1000, seed=seed)
    rng = np.random.default_rng(seed + 1)
    data = sim.data[["id"]].assign(x=rng.normal(1.0, 1.0, len(sim.data)), y=sim.data["y"])
    # symmetric square root, computed here (not the builder's eigenbasis)
    s, U = np.linalg.eigh(sim.kinship.matrix)
    root = (U * np.sqrt(np.clip(s, 0.0, None))) @ U.T
    return data, sim.kinship, root


def swappable_model(model, observed_name: str):
    """The same model with its observed data as a shared variable ``<observed>_data``.

    nutpie can only swap shared variables (``CompiledModel.with_data``). The spectral builder
    already observes a named shared variable (its compiled module is reused across data sets);
    elsewhere PyMC stores observed data as a graph constant, which is replaced in the model's
    FunctionGraph.
    """
    import pytensor
    from pymc.model.fgraph import ModelObservedRV, fgraph_from_model, model_from_fgraph
    from pytensor.compile.sharedvalue import SharedVariable

    fgraph, _ = fgraph_from_model(model, inlined_views=True)
    for node in fgraph.toposort():
        if isinstance(node.op, ModelObservedRV) and node.outputs[0].name == observed_name:
            constant = node.inputs[1]
            if isinstance(constant, SharedVariable) and constant.name:
                return model, constant
            shared = pytensor.shared(np.asarray(constant.data), name=f"{observed_name}_data")
            fgraph.replace(constant, shared, import_missing=True)
            return model_from_fgraph(fgraph, mutate_fgraph=True), shared
    raise ValueError(f"No observed variable '{observed_name}' in the model.")


def observed_vector(built, y: np.ndarray) -> np.ndarray:
    """What the builder observes for response y: Uᵀy (spectral) or y (latent)."""
    if built.rotation is not None:
        return built.rotation.vectors.T @ y
    return y


def check_swap(built, swapped, shared, data: pd.DataFrame, y, rng, n_points: int = 5) -> float:
    """Max |logp(swapped model with y) − logp(model built from data with y)| at random points."""
    import bayeslmm as bl
    from bayeslmm.engines.bayes import build

    spec = built.spec
    fresh = build(
        fixed_effects="joint" if built.marginal_fixed is None else "marginal",
        spec=bl.specify(
            FORMULA,
            data.assign(y=y),
            kinship={"id": spec.terms[0].kinship},
            priors=dict(spec.priors),
        ),
        strategy=built.strategy,
    )
    shared.set_value(observed_vector(built, y))
    logp_fresh = fresh.model.compile_logp()
    logp_swapped = swapped.compile_logp()
    worst = 0.0
    for _ in range(n_points):
        point = {
            k: v + rng.normal(0, 0.3, size=np.shape(v))
            for k, v in fresh.model.initial_point().items()
        }
        worst = max(worst, abs(float(logp_fresh(point)) - float(logp_swapped(point))))
    return worst


def posterior_beta(built, posterior, observed: np.ndarray, rng) -> np.ndarray:
    """Posterior draws of the uncentred β, shape (draws, p).

    When β is integrated out of the sampled model (spectral, ``fixed_effects="marginal"``)
    one β per draw of θ comes from the exact conditional β | y, θ, as
    :func:`bayeslmm.engines.bayes.conditional.add_posthoc_draws` does after ``fit`` (here
    with the swapped data set's Uᵀy).
    """
    from bayeslmm.engines.bayes.conditional import draw_fixed_effects

    marginal = built.marginal_fixed
    if marginal is None:
        return np.asarray(posterior["beta"].transpose(..., "fixed")).reshape(
            -1, len(built.spec.fixed_names)
        )
    group = built.spec.terms[0].group
    var_g = np.asarray(posterior[f"var_{group}"]).reshape(-1)
    var_e = np.asarray(posterior["var_residual"]).reshape(-1)
    return marginal.prior.uncentre(draw_fixed_effects(marginal, var_g, var_e, observed, rng))


def rank_of(truth: float, draws: np.ndarray) -> int:
    """Number of posterior draws below the true value (0..len(draws))."""
    return int(np.sum(np.asarray(draws) < truth))


def uniformity(ranks: pd.DataFrame, n_ranks: int, n_bins: int) -> pd.DataFrame:
    """Chi-square test of uniform ranks per parameter (ranks 0..n_ranks-1 in n_bins bins)."""
    rows = {}
    for col in ranks.columns:
        counts = np.bincount(ranks[col].to_numpy() * n_bins // n_ranks, minlength=n_bins)
        chi2, p = stats.chisquare(counts)
        rows[col] = {
            "chi2": chi2,
            "df": n_bins - 1,
            "p": p,
            "mean rank / L": ranks[col].mean() / (n_ranks - 1),
            "min bin": counts.min(),
            "max bin": counts.max(),
            "uniform": p > MIN_P,
        }
    return pd.DataFrame(rows).T


def plot_ranks(ranks: pd.DataFrame, n_ranks: int, n_bins: int, path: Path, title: str) -> None:
    """Rank histograms with the central 99% band of each bin count under uniformity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(ranks)
    lo, hi = stats.binom.ppf([0.005, 0.995], n, 1.0 / n_bins)
    fig, axes = plt.subplots(1, len(ranks.columns), figsize=(3.2 * len(ranks.columns), 3.0))
    for ax, col in zip(np.atleast_1d(axes), ranks.columns, strict=True):
        counts = np.bincount(ranks[col].to_numpy() * n_bins // n_ranks, minlength=n_bins)
        ax.axhspan(lo, hi, color="0.85", label="99% band (uniform)")
        ax.axhline(n / n_bins, color="0.5", lw=0.8)
        ax.bar(np.arange(n_bins), counts, width=1.0, color="C0", edgecolor="white")
        ax.set_title(col)
        ax.set_xlabel(f"rank bin ({n_ranks // n_bins} ranks each)")
        ax.set_xticks([])
    np.atleast_1d(axes)[0].set_ylabel("data sets")
    np.atleast_1d(axes)[0].legend(loc="lower left", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    import nutpie
    import pymc as pm
    from threadpoolctl import threadpool_limits

    import bayeslmm as bl
    from bayeslmm.engines.bayes import build

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-datasets", type=int, default=1000)
    parser.add_argument("--strategy", choices=("spectral", "latent"), default="spectral")
    parser.add_argument("--parametrisation", choices=tuple(FIXED_PRIORS), default="default")
    parser.add_argument(
        "--fixed-effects",
        choices=("marginal", "joint"),
        default="marginal",
        help="spectral strategy: beta integrated out (default, as fit() does) or sampled",
    )
    parser.add_argument(
        "--closed-form",
        action="store_true",
        help="spectral, beta integrated out: sample the closed-form density "
        "(bayeslmm.engines.bayes.spectral_density), as fit(sampler='auto') does",
    )
    parser.add_argument("--tune", type=int, default=1000)
    parser.add_argument("--thin", type=int, default=20, help="keep every thin-th draw")
    parser.add_argument("--n-ranks", type=int, default=100, help="L + 1 possible ranks")
    parser.add_argument("--bins", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--negative-control",
        action="store_true",
        help="fit with a prior that differs from the generating one (the test must then fail)",
    )
    parser.add_argument("--plot", type=Path, default=None, help="PNG of the rank histograms")
    parser.add_argument("--ranks-csv", type=Path, default=None, help="write the ranks here")
    args = parser.parse_args(argv)
    if args.n_ranks % args.bins:
        parser.error("--n-ranks must be a multiple of --bins")
    n_keep = args.n_ranks - 1  # L posterior draws give ranks 0..L
    draws = n_keep * args.thin

    threadpool_limits(1)
    rng = np.random.default_rng(args.seed)
    data, kinship, root = design()
    priors = FIXED_PRIORS[args.parametrisation]
    spec = bl.specify(FORMULA, data, kinship={"id": kinship}, priors=priors)
    built = build(spec, strategy=args.strategy, fixed_effects=args.fixed_effects)
    X = np.asarray(spec.X)
    names = list(spec.fixed_names)
    print(f"SBC of the Gaussian LMM: {FORMULA}, n = {spec.n_obs}, strategy {built.strategy},")
    print(f"parametrisation '{args.parametrisation}', priors {built.priors.table()}")
    if built.strategy == "spectral":
        print(
            f"fixed effects '{args.fixed_effects}'"
            + (
                " (beta integrated out of the sampled model, drawn from beta | y, theta)"
                if built.marginal_fixed is not None
                else " (beta sampled jointly with the variances)"
            )
        )
    print(
        f"{args.n_datasets} data sets; nutpie, 1 chain, {args.tune} tune + {draws} draws "
        f"thinned by {args.thin} to L = {n_keep}; BLAS threads pinned to 1; seed {args.seed}."
    )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prior = pm.sample_prior_predictive(
            draws=args.n_datasets, model=built.model, random_seed=args.seed
        ).prior
    if "beta" in prior:
        betas = np.asarray(prior["beta"].transpose(..., "fixed")).reshape(args.n_datasets, -1)
    else:  # β integrated out of the model: draw it from its normal prior here
        fe = built.marginal_fixed.prior
        betas = fe.uncentre(rng.normal(fe.mu, fe.sd, size=(args.n_datasets, len(fe.mu))))
    truths = {
        label: (
            betas[:, names.index(sel["fixed"])]
            if var == "beta"
            else np.asarray(prior[var]).reshape(-1)
        )
        for label, var, sel in PARAMETERS
    }
    sd_g = np.sqrt(truths["var_g"])
    sd_e = np.sqrt(truths["var_e"])

    def response(k: int) -> np.ndarray:
        n = spec.n_obs
        return X @ betas[k] + sd_g[k] * (root @ rng.normal(size=n)) + sd_e[k] * rng.normal(size=n)

    if args.negative_control:
        # power check: generate from the prior above, fit with a different one
        wrong = {**priors, **NEGATIVE_CONTROL[args.parametrisation]}
        built = build(
            bl.specify(FORMULA, data, kinship={"id": kinship}, priors=wrong),
            strategy=args.strategy,
            fixed_effects=args.fixed_effects,
        )
        print(f"NEGATIVE CONTROL: fitted with priors {built.priors.table()}")
    swapped, shared = swappable_model(built.model, built.observed_name)
    swap_err = check_swap(built, swapped, shared, data, response(0), np.random.default_rng(0))
    print(
        f"log-density of the data-swapped model vs a freshly built one: max |diff| {swap_err:.1e}"
    )
    if swap_err > 1e-6:
        raise AssertionError("The data-swapped model differs from the builder's model.")

    start = time.perf_counter()
    if args.closed_form:
        import dataclasses

        from bayeslmm.engines.bayes.spectral_density import nutpie_model, spectral_density

        density = spectral_density(built)
        print("sampler: the closed-form density (spectral_density.py), nutpie")

        def model_for(y):
            resid = observed_vector(built, y) - built.marginal_fixed.prior_mean
            return nutpie_model(dataclasses.replace(density, resid=resid))
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compiled = nutpie.compile_pymc_model(swapped)

        def model_for(y):
            return compiled.with_data(**{shared.name: observed_vector(built, y)})

    compile_s = time.perf_counter() - start

    import arviz as az

    records = []
    start = time.perf_counter()
    for k in range(args.n_datasets):
        y = response(k)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            idata = nutpie.sample(
                model_for(y),
                draws=draws,
                tune=args.tune,
                chains=1,
                cores=1,
                seed=args.seed * 100_000 + k,
                progress_bar=False,
                target_accept=0.9,
                save_warmup=False,
            )
            ess_h2 = float(az.ess(idata.posterior, var_names=["h2"], method="bulk")["h2"])
        post = idata.posterior
        beta_draws = posterior_beta(built, post, observed_vector(built, y), rng)
        rec = {"dataset": k}
        for label, var, sel in PARAMETERS:
            if var == "beta":
                chain = beta_draws[:, names.index(sel["fixed"])]
            else:
                chain = np.asarray(post[var]).reshape(-1)
            rec[label] = rank_of(truths[label][k], chain[:: args.thin][:n_keep])
        rec.update({f"true_{label}": truths[label][k] for label, _, _ in PARAMETERS})
        rec["divergences"] = int(np.asarray(idata.sample_stats["diverging"]).sum())
        rec["ess_h2"] = ess_h2
        records.append(rec)
        if (k + 1) % 100 == 0:
            print(f"  {k + 1} data sets, {time.perf_counter() - start:.0f} s", file=sys.stderr)
    sample_s = time.perf_counter() - start
    table = pd.DataFrame(records).set_index("dataset")
    ranks = table[[p[0] for p in PARAMETERS]]

    print(f"nutpie compile {compile_s:.1f} s (once); sampling {sample_s:.1f} s in all")
    div = table["divergences"]
    print(
        f"divergences: {int(div.sum())} in all, in {int((div > 0).sum())} of {len(table)} data sets"
    )
    bands = pd.cut(table["true_h2"], [0.0, 0.05, 0.2, 0.8, 0.95, 1.0])
    by_band = table.groupby(bands, observed=True).agg(
        data_sets=("divergences", "size"),
        with_divergences=("divergences", lambda d: int((d > 0).sum())),
        median_ess_h2=("ess_h2", "median"),
    )
    print("by true h2:\n" + by_band.to_string(float_format=lambda v: f"{v:.0f}"))
    ess = table["ess_h2"]
    print(
        f"ESS_bulk(h2) per data set ({draws} draws): median {ess.median():.0f}, 5% "
        f"{ess.quantile(0.05):.0f}, min {ess.min():.0f}; data sets with ESS < L = {n_keep} "
        f"(thinned draws not independent): {int((ess < n_keep).sum())}"
    )
    print(
        "true h2 over data sets: quantiles 5/50/95% "
        + " / ".join(f"{q:.3f}" for q in np.quantile(truths["h2"], [0.05, 0.5, 0.95]))
    )
    result = uniformity(ranks, args.n_ranks, args.bins)
    print(f"\nRank uniformity, chi-square over {args.bins} bins (pass: p > {MIN_P}):")
    print(result.to_string(float_format=lambda v: f"{v:.3f}"))
    ok = bool(result["uniform"].all())
    print(f"\n{'PASS' if ok else 'FAIL'}: ranks of all parameters uniform at p > {MIN_P}")
    if args.ranks_csv is not None:
        args.ranks_csv.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.ranks_csv)
    if args.plot is not None:
        plot_ranks(
            ranks,
            args.n_ranks,
            args.bins,
            args.plot,
            f"SBC rank histograms: {len(ranks)} data sets, n = {spec.n_obs}, "
            f"{built.strategy} strategy, '{args.parametrisation}' priors, L = {n_keep}",
        )
        print(f"rank histograms: {args.plot}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
