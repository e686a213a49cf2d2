"""Heritability scales: closed forms vs quadrature vs direct simulation from the model."""

import numpy as np
import pytest
from scipy import integrate, special, stats

from bayeslmm.families import Bernoulli, Binomial, Poisson
from bayeslmm.results.scales import (
    _moments_quadrature,
    heritability_scales,
    liability_from_observed,
    link_scale_variance,
    observed_scale_parameters,
)


def simulate(family, eta_fixed, va, v_other, n_per_pred, seed, trials=None):
    """Draw (a, y) from the GLMM: y | a, e ~ family(h(η_i + a + e))."""
    rng = np.random.default_rng(seed)
    eta = np.repeat(np.asarray(eta_fixed, dtype=float), n_per_pred)
    a = rng.normal(0.0, np.sqrt(va), eta.size)
    e = rng.normal(0.0, np.sqrt(v_other), eta.size)
    mu = family.inverse_link(eta + a + e)
    if family.name == "poisson":
        y = rng.poisson(mu)
    elif family.name == "bernoulli":
        y = rng.binomial(1, mu)
    else:
        y = rng.binomial(np.repeat(trials, n_per_pred).astype(int), mu)
    return a, y.astype(float)


def check_against_simulation(family, eta_fixed, va, v_other, trials=None, n=150_000, seed=0):
    """Mean and Var(y) of the simulated data, and ψ = Cov(y, a)/V_A (Stein's lemma: exact
    for Gaussian a at any V_A), agree with the formulas within Monte Carlo error."""
    par = observed_scale_parameters(va, va + v_other, eta_fixed, family, trials=trials)
    a, y = simulate(family, eta_fixed, va, v_other, n // len(eta_fixed), seed, trials)
    m = y.size
    assert abs(y.mean() - par["mean_obs"]) < 5 * y.std() / np.sqrt(m)
    # SE of a sample variance ≈ sqrt((μ4 − σ⁴)/m)
    yc = y - y.mean()
    se_var = np.sqrt((np.mean(yc**4) - np.mean(yc**2) ** 2) / m)
    assert abs(y.var() - par["var_obs"]) < 5 * se_var
    slope = np.cov(y, a)[0, 1] / va
    se_slope = np.std(y * (a - a.mean())) / np.sqrt(m) / va
    assert abs(slope - par["psi"]) < 5 * se_slope
    return par


@pytest.mark.parametrize(
    ("family", "eta", "va", "v_other", "trials"),
    [
        (Poisson(), [0.2, 0.8, -0.3], 0.3, 0.2, None),
        (Bernoulli(link="probit"), [-0.5, 0.4], 0.6, 0.4, None),
        (Bernoulli(link="logit"), [-1.0, 0.5, 1.5], 1.2, 0.5, None),
        (Binomial(link="logit"), [-0.7, 0.3], 0.8, 0.3, np.array([3.0, 8.0])),
        (Binomial(link="probit"), [-0.2, 0.6], 0.5, 0.2, np.array([5.0, 2.0])),
    ],
)
def test_observed_scale_matches_simulation(family, eta, va, v_other, trials):
    par = check_against_simulation(family, eta, va, v_other, trials=trials)
    assert par["h2_obs"] == pytest.approx(par["var_a_obs"] / par["var_obs"])
    assert par["var_a_obs"] == pytest.approx(par["psi"] ** 2 * va)


def test_poisson_closed_form_matches_quadrature_and_qgglmm_formula():
    fam, eta, va, vp = Poisson(), np.array([0.1, 0.9, 1.4]), 0.25, 0.7
    par = observed_scale_parameters(va, vp, eta, fam)
    quad = _moments_quadrature(fam, eta[None, :], np.array([vp]), 80, ("h", "h2", "v", "dh"))
    lam = quad["h"].mean()
    assert par["mean_obs"] == pytest.approx(lam, rel=1e-10)
    var_obs = quad["h2"].mean() - lam**2 + quad["v"].mean()
    assert par["var_obs"] == pytest.approx(var_obs, rel=1e-10)
    # QGglmm qg.Poisson.log, written out: lambda_sq * exp(var.p) - lambda^2 + lambda
    lam_sq = np.mean(np.exp(2 * (eta + vp / 2)))
    assert par["var_obs"] == pytest.approx(lam_sq * np.exp(vp) - lam**2 + lam, rel=1e-12)
    assert par["var_a_obs"] == pytest.approx(lam**2 * va, rel=1e-12)


def test_probit_closed_form_matches_quadrature():
    fam, eta, va, vp = Bernoulli(link="probit"), np.array([-1.2, 0.0, 0.7]), 0.4, 1.3
    par = observed_scale_parameters(va, vp, eta, fam)
    quad = _moments_quadrature(fam, eta[None, :], np.array([vp]), 80, ("h", "dh"))
    assert par["mean_obs"] == pytest.approx(quad["h"].mean(), rel=1e-10)
    assert par["psi"] == pytest.approx(quad["dh"].mean(), rel=1e-10)
    p = par["mean_obs"]
    assert par["var_obs"] == pytest.approx(p * (1 - p), rel=1e-12)


def test_logit_quadrature_matches_adaptive_integration():
    """Gauss–Hermite vs scipy's adaptive quad over ±10 SD, as QGglmm's integrate() does."""
    eta, va, vp = np.array([-2.0, 0.3, 1.1]), 0.9, 2.5
    par = observed_scale_parameters(va, vp, eta, "bernoulli", "logit")
    sd = np.sqrt(vp)

    def expect(f, m):
        g = lambda x: f(x) * stats.norm.pdf(x, m, sd)  # noqa: E731
        return integrate.quad(g, m - 10 * sd, m + 10 * sd, epsabs=1e-13, epsrel=1e-12)[0]

    mean = np.mean([expect(special.expit, m) for m in eta])
    psi = np.mean([expect(lambda x: special.expit(x) * special.expit(-x), m) for m in eta])
    assert par["mean_obs"] == pytest.approx(mean, rel=1e-9)
    assert par["psi"] == pytest.approx(psi, rel=1e-9)
    assert par["h2_obs"] == pytest.approx(psi**2 * va / (mean * (1 - mean)), rel=1e-8)


def test_liability_transform_hand_number():
    """GCTA's transform, written out: K = 0.01, P = 0.5, h²_o = 0.2.

    t = Φ⁻¹(0.99) = 2.3263479, z = φ(t) = 0.0266521; h²_l = 0.2 · 0.0099² / (z² · 0.25).
    """
    z = np.exp(-(2.3263478740408408**2) / 2) / np.sqrt(2 * np.pi)
    assert z == pytest.approx(0.026652142, rel=1e-7)
    expected = 0.2 * 0.0099**2 / (z**2 * 0.25)
    assert liability_from_observed(0.2, 0.01, 0.5) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.110383, abs=5e-6)


def test_liability_of_probit_observed_equals_probit_link_scale():
    """Dempster–Lerner is exact for the threshold (probit) model: with P = K and no fixed
    effects, the liability transform of the observed h² is V_A / (V_P + 1)."""
    va, other, mu = 0.45, 0.3, -1.1
    par = observed_scale_parameters(va, va + other, mu, "bernoulli", "probit")
    K = par["mean_obs"]
    h = heritability_scales(va, other, mu, "bernoulli", "probit", prevalence=K)
    assert h["liability"] == pytest.approx(va / (va + other + 1.0), rel=1e-12)
    assert h["link"] == pytest.approx(va / (va + other + 1.0), rel=1e-12)


def test_link_scale_variances():
    assert link_scale_variance("bernoulli") == pytest.approx(np.pi**2 / 3)
    assert link_scale_variance("binomial", "probit") == 1.0
    lam = np.array([0.5, 2.0, 10.0])
    np.testing.assert_allclose(link_scale_variance("poisson", mean_obs=lam), np.log1p(1 / lam))
    np.testing.assert_allclose(
        link_scale_variance("poisson", mean_obs=lam, method="delta"), 1 / lam
    )
    np.testing.assert_allclose(
        link_scale_variance("poisson", mean_obs=lam, method="trigamma"),
        special.polygamma(1, lam),
    )
    # the three agree for large λ (all ≈ 1/λ)
    big = 1e4
    vals = [
        link_scale_variance("poisson", mean_obs=big, method=m)
        for m in ("lognormal", "delta", "trigamma")
    ]
    np.testing.assert_allclose(vals, 1 / big, rtol=1e-3)
    with pytest.raises(ValueError, match="mean count"):
        link_scale_variance("poisson")


def test_poisson_link_scale_uses_observed_mean():
    va, olre, eta = 0.2, 0.3, np.array([0.5, 1.0])
    h = heritability_scales(va, [olre], eta, Poisson(), link_variance_method="delta")
    lam = np.mean(np.exp(eta + (va + olre) / 2))
    assert h["link"] == pytest.approx(va / (va + olre + 1 / lam), rel=1e-12)
    assert h["latent"] == pytest.approx(va / (va + olre))
    assert "liability" not in h


def test_vectorised_over_draws_matches_loop():
    rng = np.random.default_rng(3)
    n_draws, n_obs = 7, 5
    va = rng.uniform(0.1, 1.0, n_draws)
    other = rng.uniform(0.1, 0.5, (n_draws, 2))
    eta = rng.normal(size=(n_draws, n_obs))
    for fam in (Bernoulli(), Bernoulli(link="probit"), Poisson()):
        prev = 0.1 if fam.name == "bernoulli" else None
        h = heritability_scales(va, other, eta, fam, prevalence=prev)
        for d in range(n_draws):
            hd = heritability_scales(va[d], list(other[d]), eta[d], fam, prevalence=prev)
            for key, value in hd.items():
                assert h[key][d] == pytest.approx(value, rel=1e-12), (fam, key)


def test_include_fixed_variance_and_observed_includes_it():
    eta = np.array([-1.0, 0.0, 1.0])
    h0 = heritability_scales(0.5, 0.5, eta, "bernoulli", "probit")
    h1 = heritability_scales(0.5, 0.5, eta, "bernoulli", "probit", include_fixed_variance=True)
    assert h1["latent"] == pytest.approx(0.5 / (1.0 + eta.var()))
    assert h1["link"] == pytest.approx(0.5 / (2.0 + eta.var()))
    assert h0["observed"] == h1["observed"]
    # marginalising over fixed effects: spreading predictions lowers observed-scale h²
    hc = heritability_scales(0.5, 0.5, np.zeros(3), "bernoulli", "probit")
    assert hc["observed"] > h0["observed"]


def test_liability_rejects_counts_and_bad_prevalence():
    with pytest.raises(ValueError, match="binary"):
        heritability_scales(0.3, 0.1, 0.0, "poisson", prevalence=0.1)
    with pytest.raises(ValueError, match="prevalence"):
        liability_from_observed(0.2, 1.5, 0.5)


def test_posterior_heritability_scales_reads_builder_names():
    """A hand-made posterior with the builder's variable names gives, draw by draw, what
    heritability_scales gives on the same numbers."""
    import pandas as pd
    import xarray as xr

    import bayeslmm as bl
    from bayeslmm.results.tables import posterior_heritability_scales

    rng = np.random.default_rng(4)
    n = 12
    ids = [f"i{k}" for k in range(n)]
    W = rng.normal(size=(n, 30))
    K = bl.Kinship(W @ W.T / 30 + 0.05 * np.eye(n), ids)
    df = pd.DataFrame(
        {
            "y": rng.poisson(2, 2 * n),
            "x": rng.normal(size=2 * n),
            "id": ids * 2,
            "site": ["a", "b", "c"] * (2 * n // 3),
        }
    )
    spec = bl.specify("y ~ x + (1|id) + (1|site)", df, kinship={"id": K}, family="poisson")
    chains, draws = 2, 5
    post = xr.Dataset(
        {
            "var_id": (("chain", "draw"), rng.uniform(0.1, 1, (chains, draws))),
            "var_site": (("chain", "draw"), rng.uniform(0.1, 1, (chains, draws))),
            "var_olre": (("chain", "draw"), rng.uniform(0.1, 1, (chains, draws))),
            "beta": (("chain", "draw", "fixed"), rng.normal(0, 0.3, (chains, draws, 2))),
        },
        coords={"chain": [0, 1], "draw": np.arange(draws)},
    )
    h = posterior_heritability_scales(post, spec)
    assert set(h.data_vars) == {"h2_latent", "h2_link", "h2_observed"}
    c, d = 1, 3
    # the genetic variance at the sample's kinship scale, c σ² (c = mean diag K − mean K)
    va = float(post["var_id"][c, d]) * spec.terms[0].variance_weights()[0, 0]
    others = [float(post["var_site"][c, d]), float(post["var_olre"][c, d])]
    eta = spec.X @ post["beta"].values[c, d]
    ref = heritability_scales(va, others, eta, "poisson")
    for key, value in ref.items():
        assert float(h[f"h2_{key}"][c, d]) == pytest.approx(value, rel=1e-12)
    with pytest.raises(ValueError, match="not a random term"):
        posterior_heritability_scales(post, spec, term="nope")
