"""Divergences of the spectral strategy with a centred GRM: β sampled vs integrated out.

A centred GRM (K·1 = 0, as VanRaden / GCTA matrices are) leaves the intercept informed only
by the zero-eigenvalue direction of the spectral basis, whose variance is σ_e² alone, so β₀
and σ_e form a funnel when β is sampled jointly with the variances
(``build(spec, fixed_effects="joint")``). The default (``fixed_effects="marginal"``)
integrates β out of the sampled density and draws it afterwards from β | y, θ.

Design: the n = 60 data of ``tests/test_model.py`` (300 SNPs, standardised genotypes, so
K·1 = 0; true h² = 0.5; ``bp ~ 1 + (1 | id)``, default priors). For each seed: PyMC NUTS,
2 chains × 1000 draws after 1000 warm-up, target_accept 0.9, one core. Both
parametrisations see the same seeds. ``div_h2_gt_0.9`` counts the divergent transitions
whose h² exceeds 0.9 (the σ_e → 0 edge, where the β₀–σ_e funnel sits), ``div_h2_lt_0.1``
those below 0.1 (the σ_g → 0 edge). For reference the exact posterior means of h² and β₀
are computed by brute-force 2-D integration over (σ_g, σ_e) with β₀ integrated out in
closed form (independent of the builder).

Run (≈ 1.5 min on one core; ``--seeds 30`` ≈ 6 min)::

    OMP_NUM_THREADS=1 python validation/spectral_divergences.py \\
        > validation/spectral_divergences.txt
    OMP_NUM_THREADS=1 python validation/spectral_divergences.py --seeds 30 \\
        > validation/spectral_divergences_30.txt
    OMP_NUM_THREADS=1 python validation/spectral_divergences.py --target-accept 0.95 \\
        > validation/spectral_divergences_ta095.txt

``--h2-prior`` samples h² ~ Beta(1, 1) and σ_P instead (a different prior: its exact means
differ from the printed default-prior ones).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pandas as pd
from scipy import stats


def centred_grm_data(seed: int = 2024, n: int = 60, n_snps: int = 300):
    """The data of tests/test_model.py: (Kinship, DataFrame)."""
    import bayeslmm as bl

    rng = np.random.default_rng(seed)
    ids = [f"m{k:02d}" for k in range(n)]
    snps = rng.binomial(2, 0.4, size=(n, n_snps)).astype(float)
    Zs = (snps - snps.mean(0)) / snps.std(0)
    K = bl.Kinship(Zs @ Zs.T / n_snps, ids)
    g = np.linalg.cholesky(K.matrix + 1e-9 * np.eye(n)) @ rng.normal(size=n)
    df = pd.DataFrame({"bp": 100 + 4 * g + 4 * rng.normal(size=n), "id": ids})
    return K, df


def exact_posterior(spec, n_grid: int = 400) -> dict[str, float]:
    """Posterior mean (and sd) of h², mean of β₀, by grid integration with the builder's
    default priors (σ_g, σ_e ~ HalfStudentT, β₀ ~ Normal; integrated on a fine log grid with
    its Jacobian, wide enough that the truncated mass is negligible). Also the reference of
    tests/test_model.py.

    y ~ N(1 m0, σ_g² K + σ_e² I + s0² 1 1ᵀ) with β₀ ~ N(m0, s0²) integrated out; in K's
    eigenbasis with a = Uᵀ1, r = Uᵀ(y − m0), d = σ_g² s + σ_e²:
    E(β₀ | y, θ) = m0 + s0² aᵀD⁻¹r / (1 + s0² aᵀD⁻¹a).
    """
    from bayeslmm.priors import resolve_priors

    priors = resolve_priors(spec)
    m0, s0 = (float(p) for p in priors.intercept.params)
    nu_g, a_g = (float(np.ravel(p)[0]) for p in priors.sd[spec.terms[0].group].params)
    nu_e, a_e = (float(p) for p in priors.sigma.params)
    term = spec.terms[0]
    s, U = term.kinship.eigenvalues, term.kinship.eigenvectors
    r = U.T @ (spec.y - m0)
    a = U.T @ np.ones(spec.n_obs)
    sd_y = np.std(spec.y)
    log_sd = np.linspace(np.log(1e-4 * sd_y), np.log(20 * sd_y), n_grid)
    lg, le = np.meshgrid(log_sd, log_sd, indexing="ij")
    vg, ve = np.exp(2 * lg), np.exp(2 * le)
    D = vg[..., None] * s + ve[..., None]
    aDa = np.sum(a**2 / D, axis=-1)
    aDr = np.sum(a * r / D, axis=-1)
    logdet = np.sum(np.log(D), axis=-1) + np.log1p(s0**2 * aDa)
    quad = np.sum(r**2 / D, axis=-1) - s0**2 * aDr**2 / (1 + s0**2 * aDa)
    logprior = (
        stats.t(nu_g, scale=a_g).logpdf(np.exp(lg))
        + stats.t(nu_e, scale=a_e).logpdf(np.exp(le))
        + lg
        + le  # Jacobian of the log-scale grid
    )
    logpost = -0.5 * (logdet + quad) + logprior
    w = np.exp(logpost - logpost.max())
    w /= w.sum()
    beta0 = m0 + s0**2 * aDr / (1 + s0**2 * aDa)
    h2 = vg / (vg + ve)
    mean = float(np.sum(w * h2))
    return {
        "h2": mean,
        "h2_sd": float(np.sqrt(np.sum(w * (h2 - mean) ** 2))),
        "beta0": float(np.sum(w * beta0)),
    }


def main(argv: list[str] | None = None) -> int:
    import bayeslmm as bl
    from bayeslmm.engines.bayes import build
    from bayeslmm.engines.bayes.sampling import sample

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--tune", type=int, default=1000)
    parser.add_argument("--sampler", default="pymc")
    parser.add_argument("--target-accept", type=float, default=0.9)
    parser.add_argument(
        "--h2-prior", action="store_true", help="priors={'h2': ('beta', 1, 1)} instead"
    )
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")

    K, df = centred_grm_data()
    priors = {"h2": ("beta", 1.0, 1.0)} if args.h2_prior else None
    spec = bl.specify("bp ~ 1 + (1 | id)", df, kinship={"id": K}, priors=priors)
    row_sums = np.abs(K.matrix.sum(axis=1)).max()
    exact = exact_posterior(bl.specify("bp ~ 1 + (1 | id)", df, kinship={"id": K}))
    print(
        f"# n = {spec.n_obs}, centred GRM (max |K·1| = {row_sums:.1e}), bp ~ 1 + (1 | id); "
        f"{args.sampler} NUTS, 2 chains x {args.draws} draws after {args.tune} warm-up, "
        f"seeds 1..{args.seeds}, target_accept {args.target_accept}"
        + (", priors h2 ~ Beta(1, 1), total_sd default" if args.h2_prior else ", default priors")
    )
    print(
        f"# exact posterior means (grid, default priors): h2 {exact['h2']:.4f}, "
        f"beta0 {exact['beta0']:.4f}"
    )
    rows = []
    for fixed in ("joint", "marginal"):
        built = build(spec, fixed_effects=fixed)
        for seed in range(1, args.seeds + 1):
            start = time.perf_counter()
            idata, _ = sample(
                built,
                draws=args.draws,
                tune=args.tune,
                chains=2,
                cores=1,
                seed=seed,
                sampler=args.sampler,
                progressbar=False,
                target_accept=args.target_accept,
            )
            post = idata.posterior
            diverging = np.asarray(idata.sample_stats["diverging"], dtype=bool)
            h2_div = np.asarray(post["h2"])[diverging]
            rows.append(
                {
                    "fixed_effects": fixed,
                    "seed": seed,
                    "divergences": int(diverging.sum()),
                    "div_h2_lt_0.1": int(np.sum(h2_div < 0.1)),
                    "div_h2_gt_0.9": int(np.sum(h2_div > 0.9)),
                    "h2_mean": float(post["h2"].mean()),
                    "beta0_mean": float(post["beta"].sel(fixed="Intercept").mean()),
                    "seconds": time.perf_counter() - start,
                }
            )
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    summary = table.groupby("fixed_effects", sort=False).agg(
        divergences=("divergences", "sum"),
        div_h2_lt_01=("div_h2_lt_0.1", "sum"),
        div_h2_gt_09=("div_h2_gt_0.9", "sum"),
        seeds_with_div=("divergences", lambda d: int((d > 0).sum())),
        draws=("seed", lambda s: 2 * args.draws * len(s)),
        h2_mean=("h2_mean", "mean"),
        beta0_mean=("beta0_mean", "mean"),
        seconds=("seconds", "sum"),
    )
    print("\n" + summary.to_string(float_format=lambda v: f"{v:.4f}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
