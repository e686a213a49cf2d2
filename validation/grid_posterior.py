"""Grid check: the NUTS posterior of h² against brute-force numerical integration.

For a Gaussian LMM with one kinship term,

    y = X β + Z u + e,   u ~ N(0, σ_g² K),   e ~ N(0, σ_e² I),

and the normal prior of β that :mod:`bayeslmm.priors` uses (on the intercept at centred
covariates, exactly as the builder samples it), β integrates out in closed form:

    y | σ_g, σ_e ~ N(X_c μ₀, σ_g² Z K Zᵀ + σ_e² I + X_c S₀ X_cᵀ).

So the posterior of (σ_g, σ_e) is this dense multivariate normal density times the builder's
priors of the variance parameters, a two-dimensional function we integrate on a grid. The grid
is polar, σ_g = r sin θ and σ_e = r cos θ, so that h² = sin² θ is a function of θ alone and
the density is smooth up to h² = 0 and 1; r is gridded on the log scale. The grid's posterior
mean, SD and quantiles of h² (and the means of σ_g², σ_e²) are then compared with those of
NUTS draws from the model that :func:`bayeslmm.engines.bayes.build` writes, for the spectral
and the latent strategy, in units of their Monte Carlo standard errors (ArviZ ``mcse`` from
the effective sample size).

Nothing here shares code with the builder: the likelihood is the dense covariance (no
eigenbasis), the priors are evaluated with SciPy from the resolved :class:`PriorSet`.

Run (≈ 3–8 min on one core, 8 NUTS fits)::

    OMP_NUM_THREADS=1 python validation/grid_posterior.py > validation/results/grid_posterior.txt
"""

from __future__ import annotations

import argparse
import time
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

#: Quantiles of h² compared between the grid and NUTS.
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)

#: A NUTS summary passes when it lies within this many Monte Carlo SEs of the grid's value.
MAX_Z = 4.0


def log_prior_density(prior, x: np.ndarray) -> np.ndarray:
    """Log density of a :class:`bayeslmm.priors.Prior` at ``x``, evaluated with SciPy.

    Examples
    --------
    >>> from bayeslmm.priors import Prior
    >>> float(np.exp(log_prior_density(Prior("halfnormal", (1.0,)), np.array([0.0])))[0])
    0.7978845608028654
    """
    p = [float(np.asarray(v).ravel()[0]) for v in prior.params]
    fam = prior.family
    x = np.asarray(x, dtype=float)
    if fam == "halfstudentt":
        return np.log(2.0) + stats.t.logpdf(x, df=p[0], scale=p[1])
    if fam == "halfnormal":
        return np.log(2.0) + stats.norm.logpdf(x, scale=p[0])
    if fam == "halfcauchy":
        return np.log(2.0) + stats.cauchy.logpdf(x, scale=p[0])
    if fam == "exponential":
        return stats.expon.logpdf(x, scale=1.0 / p[0])
    if fam == "beta":
        return stats.beta.logpdf(x, p[0], p[1])
    if fam == "invgamma":
        return stats.invgamma.logpdf(x, p[0], scale=p[1])
    if fam == "scaled_inv_chi2":
        return stats.invgamma.logpdf(x, p[0] / 2, scale=p[0] * p[1] / 2)
    raise ValueError(f"No grid density for a '{fam}' prior.")


def centred_design(spec) -> np.ndarray:
    """The design the intercept prior refers to: covariates centred, intercept column kept."""
    X = np.asarray(spec.X, dtype=float)
    names = list(spec.fixed_names)
    if "Intercept" in names and len(names) > 1:
        means = X.mean(axis=0)
        means[names.index("Intercept")] = 0.0
        return X - means
    return X


def fixed_prior_moments(spec, priors) -> tuple[np.ndarray, np.ndarray]:
    """Mean vector and (diagonal) covariance of the normal prior of the centred β."""
    plist = [priors.intercept if n == "Intercept" else priors.slopes[n] for n in spec.fixed_names]
    if any(p.family != "normal" for p in plist):
        raise ValueError("The grid integrates β analytically and needs normal priors.")
    mu = np.array([float(p.params[0]) for p in plist])
    sd = np.array([float(p.params[1]) for p in plist])
    return mu, np.diag(sd**2)


def dense_marginal_loglik(spec, priors, sd_g: float, sd_e: float) -> float:
    """log N(y; X_c μ₀, σ_g² Z K Zᵀ + σ_e² I + X_c S₀ X_cᵀ) by SciPy (reference, slow)."""
    term = spec.terms[0]
    Z = term.incidence().toarray()
    Xc = centred_design(spec)
    mu0, S0 = fixed_prior_moments(spec, priors)
    V = sd_g**2 * Z @ term.kinship.matrix @ Z.T + sd_e**2 * np.eye(spec.n_obs) + Xc @ S0 @ Xc.T
    return float(stats.multivariate_normal(Xc @ mu0, V).logpdf(spec.y))


@dataclass
class GridPosterior:
    """The posterior of (θ, log r) on a grid and its h² summaries."""

    theta: np.ndarray
    log_r: np.ndarray
    log_lik: np.ndarray  # (theta, log_r): log p(y | σ_g, σ_e), β integrated out
    log_prior: np.ndarray  # (theta, log_r): log prior density w.r.t. dθ d(log r)

    @property
    def log_density(self) -> np.ndarray:
        """Unnormalised log posterior density w.r.t. dθ d(log r)."""
        return self.log_lik + self.log_prior

    @property
    def weights(self) -> np.ndarray:
        w = np.exp(self.log_density - self.log_density.max())
        return w / w.sum()

    @property
    def h2(self) -> np.ndarray:
        return np.sin(self.theta) ** 2

    def expectation(self, f) -> float:
        """Posterior mean of f(h², σ_g², σ_e²) (arrays over the grid)."""
        r2 = np.exp(2 * self.log_r)[None, :]
        h2 = self.h2[:, None]
        return float(np.sum(self.weights * f(h2, h2 * r2, (1 - h2) * r2)))

    def h2_quantile(self, q: float) -> float:
        """Quantile of h² from the θ-marginal (piecewise-linear CDF between cell edges)."""
        marginal = self.weights.sum(axis=1)
        dtheta = self.theta[1] - self.theta[0]
        edges = np.concatenate([[self.theta[0] - dtheta / 2], self.theta + dtheta / 2])
        cdf = np.concatenate([[0.0], np.cumsum(marginal)])
        return float(np.sin(np.interp(q, cdf, edges)) ** 2)

    def edge_mass(self) -> float:
        """Posterior mass in the outermost log r cells (should be negligible)."""
        w = self.weights
        return float(w[:, 0].sum() + w[:, -1].sum())

    def summary(self) -> dict[str, float]:
        mean = self.expectation(lambda h2, vg, ve: h2)
        second = self.expectation(lambda h2, vg, ve: h2**2)
        out = {"h2 mean": mean, "h2 sd": float(np.sqrt(second - mean**2))}
        out.update({f"h2 q{q:.2f}": self.h2_quantile(q) for q in QUANTILES})
        out["var_g mean"] = self.expectation(lambda h2, vg, ve: vg)
        out["var_e mean"] = self.expectation(lambda h2, vg, ve: ve)
        return out


def grid_posterior(
    spec, priors, n_theta: int = 400, n_r: int = 240, log_r_span: tuple[float, float] = (-2.5, 1.5)
) -> GridPosterior:
    """Exact (up to quadrature) posterior of (σ_g, σ_e) on a polar grid.

    Parameters
    ----------
    spec : ModelSpec
        Gaussian, one intercept-only kinship term, homoscedastic residual.
    priors : PriorSet
        The builder's resolved priors (``build(spec).priors``): either ``sd_<g>`` and
        ``sigma``, or the share parametrisation (``h2`` Beta and ``total_sd``/``total_variance``).
    n_theta, n_r : int
        Grid points in θ ∈ (0, π/2) and in log r.
    log_r_span : (float, float)
        log r runs over log sd(y) + span.

    Returns
    -------
    GridPosterior

    Notes
    -----
    For each θ the covariance without β is r² A_θ, A_θ = sin²θ ZKZᵀ + cos²θ I; with its
    Cholesky factor L (one per θ) the β-marginal density for every r costs O(n p):
    whitening by L/r leaves N(0, I + X̃ S₀ X̃ᵀ), X̃ = L⁻¹X_c / r, handled by the matrix
    determinant lemma and Woodbury with the p × p matrix S₀⁻¹ + X̃ᵀX̃. This is the same
    dense density (checked against SciPy in :func:`main`), only organised to be cheap.

    Examples
    --------
    >>> # grid = grid_posterior(spec, build(spec).priors); grid.summary()["h2 mean"]
    """
    term = spec.terms[0]
    Z = term.incidence().toarray()
    G = Z @ term.kinship.matrix @ Z.T
    n = spec.n_obs
    y = np.asarray(spec.y, dtype=float)
    Xc = centred_design(spec)
    mu0, S0 = fixed_prior_moments(spec, priors)
    resid0 = y - Xc @ mu0
    S0_inv = np.linalg.inv(S0)
    logdet_S0 = np.linalg.slogdet(S0)[1]

    dtheta = (np.pi / 2) / n_theta
    theta = (np.arange(n_theta) + 0.5) * dtheta
    sy = float(np.std(y, ddof=1))
    log_r = np.log(sy) + np.linspace(log_r_span[0], log_r_span[1], n_r)
    r = np.exp(log_r)

    log_lik = np.empty((n_theta, n_r))
    for i, th in enumerate(theta):
        A = np.sin(th) ** 2 * G + np.cos(th) ** 2 * np.eye(n)
        L = np.linalg.cholesky(A)
        logdet_A = 2 * np.sum(np.log(np.diag(L)))
        ey = np.linalg.solve(L, resid0)  # L⁻¹ (y - X_c μ₀)
        eX = np.linalg.solve(L, Xc)
        yy, Xy, XX = ey @ ey, eX.T @ ey, eX.T @ eX
        for j, rj in enumerate(r):
            # Σ = r² (A + X S0 Xᵀ / r²); whiten by L r: M = I + X̃ S0 X̃ᵀ, X̃ = eX / r
            C = S0_inv + XX / rj**2  # p × p
            logdet_M = np.linalg.slogdet(C)[1] + logdet_S0
            b = Xy / rj**2
            quad = yy / rj**2 - b @ np.linalg.solve(C, b)
            logdet = logdet_A + 2 * n * np.log(rj) + logdet_M
            log_lik[i, j] = -0.5 * (quad + logdet + n * np.log(2 * np.pi))

    TH, R = np.meshgrid(theta, r, indexing="ij")
    if priors.uses_shares:
        h2 = np.sin(TH) ** 2
        lp = log_prior_density(priors.shares, h2) + np.log(np.sin(2 * TH))  # dh²/dθ
        if priors.total_is_variance:  # density of σ²_P at r², d(r²)/dr = 2r
            lp = lp + log_prior_density(priors.total, R**2) + np.log(2 * R)
        else:
            lp = lp + log_prior_density(priors.total, R)
    else:
        group = term.group
        # (σ_g, σ_e) = r (sin θ, cos θ): polar Jacobian r
        lp = log_prior_density(priors.sd[group], R * np.sin(TH))
        lp = lp + log_prior_density(priors.sigma, R * np.cos(TH)) + np.log(R)
    lp = lp + np.log(R)  # d r = r d(log r)
    return GridPosterior(theta=theta, log_r=log_r, log_lik=log_lik, log_prior=lp)


def nuts_summary(h2_draws, var_g_draws, var_e_draws) -> pd.DataFrame:
    """NUTS estimates of the grid's summaries with their Monte Carlo SEs (ArviZ).

    Each argument is an array of draws shaped (chain, draw).
    """
    import arviz as az

    def mcse(draws, **kwargs) -> float:
        ds = az.convert_to_dataset({"x": np.asarray(draws)})
        return float(az.mcse(ds, **kwargs)["x"])

    h2 = np.asarray(h2_draws)
    rows = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows["h2 mean"] = (float(h2.mean()), mcse(h2, method="mean"))
        # MCSE of the SD by the delta method on the variance, with the ESS of the squared
        # centred draws (ArviZ's method="sd" fails under NumPy 2.4 in arviz 0.23.4)
        dev2 = (h2 - h2.mean()) ** 2
        ess_dev2 = float(az.ess(az.convert_to_dataset({"x": dev2}), method="bulk")["x"])
        mcse_var = float(np.std(dev2) / np.sqrt(ess_dev2))
        rows["h2 sd"] = (float(h2.std()), mcse_var / (2 * float(h2.std())))
        for q in QUANTILES:
            rows[f"h2 q{q:.2f}"] = (
                float(np.quantile(h2, q)),
                mcse(h2, method="quantile", prob=q),
            )
        rows["var_g mean"] = (float(np.mean(var_g_draws)), mcse(var_g_draws))
        rows["var_e mean"] = (float(np.mean(var_e_draws)), mcse(var_e_draws))
    return pd.DataFrame(rows, index=["nuts", "mcse"]).T


def compare(grid: GridPosterior, fit) -> pd.DataFrame:
    """Table grid vs NUTS: columns grid, nuts, mcse, z = (nuts - grid) / mcse.

    ``fit`` is a :class:`~bayeslmm.results.bayes_result.BayesFit`.
    """
    post = fit.posterior
    g = fit.built.spec.terms[0].group
    table = nuts_summary(
        np.asarray(post["h2"]), np.asarray(post[f"var_{g}"]), np.asarray(post["var_residual"])
    )
    table.insert(0, "grid", pd.Series(grid.summary()))
    table["z"] = (table["nuts"] - table["grid"]) / table["mcse"]
    return table


def simulated_case(h2: float = 0.5, seed: int = 1, n_families: int = 20, family_size: int = 5):
    """n = n_families × family_size offspring (full- and half-sib families), VanRaden GRM
    from 1000 simulated SNPs, true h² = ``h2`` (total variance 1) plus a covariate x with
    effect 0.5 and intercept 3, so that the centred-intercept path of the builder is used.

    Returns (data, kinship).
    """
    from bayeslmm.datasets import simulate

    sim = simulate(n_families=n_families, family_size=family_size, n_snps=1000, h2=h2, seed=seed)
    rng = np.random.default_rng(seed + 1)
    x = rng.normal(1.0, 1.0, size=len(sim.data))
    data = sim.data.assign(x=x, y=sim.data["y"] + 0.5 * x + 3.0)
    return data, sim.kinship


#: The two data sets of the check: (label, simulated h², seed). The second one's posterior
#: has much mass near h² = 1 (σ_e → 0), a hard geometry for NUTS.
CASES = (
    ("moderate: simulated h2 = 0.5, seed 1", 0.5, 1),
    ("high: simulated h2 = 0.5, seed 11 (posterior mass near h2 = 1)", 0.5, 11),
)

#: Prior settings: None = the builder's defaults.
PRIOR_CASES = (
    ("default priors (sd_id, sigma ~ HalfStudentT(3, 2.5 sd(y)))", None),
    ("h2 parametrisation (h2 ~ Beta(2, 2), total_sd default)", {"h2": ("beta", 2.0, 2.0)}),
)

#: A fit is judged only when its h² chain has at least this bulk ESS (else MCSEs are noise).
MIN_ESS = 100


def check_grid_likelihood(spec, priors) -> float:
    """Max |grid log-likelihood − SciPy dense MVN log-density| at 12 grid points."""
    small = grid_posterior(spec, priors, n_theta=4, n_r=3)
    radii = np.exp(small.log_r)
    diffs = [
        small.log_lik[i, j] - dense_marginal_loglik(spec, priors, r * np.sin(th), r * np.cos(th))
        for i, th in enumerate(small.theta)
        for j, r in enumerate(radii)
    ]
    return float(np.max(np.abs(diffs)))


def fit_nuts(data, kinship, priors, strategy: str, sampler: str, draws: int, chains: int, seed):
    """``LMM("y ~ 1 + x + (1 | id)").fit`` with the given strategy (sequential chains)."""
    from bayeslmm.model import LMM

    model = LMM("y ~ 1 + x + (1 | id)", data, kinship={"id": kinship}, priors=priors)
    return model.fit(
        draws=draws,
        tune=1000,
        chains=chains,
        cores=1,
        seed=seed,
        sampler=sampler,
        strategy=strategy,
        verbose=False,
    )


def h2_ess(fit) -> float:
    import arviz as az

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(az.ess(fit.posterior, var_names=["h2"], method="bulk")["h2"])


def main(argv: list[str] | None = None) -> int:
    import bayeslmm as bl
    from bayeslmm.engines.bayes import build

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--sampler", default="nutpie")
    parser.add_argument("--seed", type=int, default=20261121, help="NUTS seed")
    args = parser.parse_args(argv)

    print("Grid check of the h2 posterior: n = 100 (20 full-sib families of 5), VanRaden GRM")
    print("of 1000 simulated SNPs; model y ~ 1 + x + (1 | id).")
    print(
        f"NUTS: sampler {args.sampler}, {args.chains} chains x {args.draws} draws (1000 tune), "
        f"seed {args.seed}."
    )
    print(f"A fit agrees when every |z| = |nuts - grid| / mcse < {MAX_Z}; it is judged only when")
    print(f"ESS_bulk(h2) >= {MIN_ESS}.\n")
    worst, unmixed = 0.0, []
    for case_label, true_h2, data_seed in CASES:
        data, kinship = simulated_case(h2=true_h2, seed=data_seed)
        for prior_label, priors in PRIOR_CASES:
            spec = bl.specify(
                "y ~ 1 + x + (1 | id)", data, kinship={"id": kinship}, priors=priors or {}
            )
            resolved = build(spec, strategy="spectral").priors
            print(f"=== data {case_label}; {prior_label}")
            print("priors:", resolved.table())
            lik_err = check_grid_likelihood(spec, resolved)
            print(f"grid likelihood vs SciPy dense MVN: max |diff| = {lik_err:.1e}")
            if lik_err > 1e-6:
                raise AssertionError("The grid's likelihood disagrees with the dense MVN.")
            start = time.perf_counter()
            grid = grid_posterior(spec, resolved)
            coarse = grid_posterior(spec, resolved, n_theta=200, n_r=120)
            grid_s = time.perf_counter() - start
            fine_s, coarse_s = grid.summary(), coarse.summary()
            quad_err = max(abs(fine_s[k] - coarse_s[k]) for k in fine_s)
            print(
                f"grid 400 x 240 in {grid_s:.1f} s (with a 200 x 120 grid); "
                f"max |fine - coarse| = {quad_err:.1e}; posterior mass in the outer "
                f"log r cells {grid.edge_mass():.1e}"
            )
            for strategy in ("spectral", "latent"):
                fit = fit_nuts(
                    data,
                    kinship,
                    priors,
                    strategy,
                    args.sampler,
                    args.draws,
                    args.chains,
                    args.seed,
                )
                table = compare(grid, fit)
                ess = h2_ess(fit)
                d = fit.diagnostics
                judged = ess >= MIN_ESS
                verdict = (
                    ("agrees" if table["z"].abs().max() < MAX_Z else "DISAGREES")
                    if judged
                    else f"NOT JUDGED: ESS_bulk(h2) = {ess:.0f} < {MIN_ESS} (poor mixing)"
                )
                if judged:
                    worst = max(worst, float(table["z"].abs().max()))
                else:
                    unmixed.append(f"{strategy} / {case_label} / {prior_label}")
                print(
                    f"\n-- NUTS {strategy}: {d['divergences']} divergences, max R-hat "
                    f"{d['max_r_hat']:.3f}, ESS_bulk(h2) {ess:.0f}, "
                    f"{fit.timing['total_s']:.1f} s -> {verdict}"
                )
                print(table.to_string(float_format=lambda v: f"{v:.4f}"))
            print()
    ok = worst < MAX_Z
    print(
        f"{'PASS' if ok else 'FAIL'}: largest |z| over the judged fits = {worst:.2f} "
        f"(threshold {MAX_Z})"
    )
    for item in unmixed:
        print(f"not judged (poor mixing): {item}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
