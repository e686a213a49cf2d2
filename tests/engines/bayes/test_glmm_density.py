"""The closed-form latent GLMM density against the PyMC model it replaces.

The density is a second implementation of the built model's posterior, so each of its
reparametrisations is checked against an independent one: the PyMC model's ``logp`` (plus
the Jacobian of the change of variables), a dense multivariate normal for the merged
Poisson effect, finite differences for the gradient, quadrature against scipy's adaptive
integration for the expected information, and the posterior of a short fit against PyMC's
own NUTS on the PyMC graph.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, stats

import bayeslmm as bl
from bayeslmm.engines.bayes import build
from bayeslmm.engines.bayes.glmm_density import (
    PartialNonCentring,
    expected_information,
    glmm_closed_form_applies,
    glmm_density,
    nuts_defaults,
    unit_information,
)
from bayeslmm.families import Poisson

N = 30


@pytest.fixture(scope="module")
def kinship() -> bl.Kinship:
    rng = np.random.default_rng(0)
    G = rng.binomial(2, 0.4, (N, 60)).astype(float)
    G -= G.mean(0)
    K = 0.9 * G @ G.T / 60 + 0.1 * np.eye(N)
    return bl.Kinship(K / np.mean(np.diag(K)), [f"i{k}" for k in range(N)])


def _data(kinship: bl.Kinship, family: str, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    trials = rng.integers(1, 6, N)
    y = {
        "poisson": rng.poisson(2.0, N),
        "bernoulli": rng.integers(0, 2, N),
        "binomial": rng.binomial(trials, 0.4),
    }[family]
    return pd.DataFrame({"y": y, "x": rng.normal(size=N), "id": kinship.ids, "t": trials})


CASES = [
    ("bernoulli", "logit"),
    ("bernoulli", "probit"),
    ("binomial", "logit"),
    ("binomial", "probit"),
    ("poisson", "log"),
]


def _built(kinship, family, link, formula="y ~ x + (1|id)", olre=False, **kwargs):
    kw: dict = {"family": Poisson(overdispersion=olre) if family == "poisson" else family}
    if family != "poisson":
        kw["link"] = link
    if family == "binomial":
        kw["trials"] = "t"
    spec = bl.specify(formula, _data(kinship, family), kinship={"id": kinship}, **kw)
    return build(spec, strategy="latent", **kwargs)


def _pymc_point(density, x):
    out = density.expand(x, np.random.default_rng(0))
    point = {
        f"sd_{density.group}_log__": np.log(out[f"sd_{density.group}"]),
        f"z_{density.group}": out[f"z_{density.group}"],
    }
    point[density.meta["beta_name"]] = out[density.meta["beta_name"]]
    return point


def _density(built, parametrisation):
    """``"weights"``: partial non-centring with weights spread over (0, 1)."""
    if parametrisation != "weights":
        return glmm_density(built, dtype="float64", parametrisation=parametrisation)
    density = glmm_density(built, dtype="float64", parametrisation="partial")
    density.transform = PartialNonCentring(np.linspace(0.05, 0.95, density.n_basis))
    return density


@pytest.mark.parametrize(("family", "link"), CASES)
@pytest.mark.parametrize("parametrisation", ["partial", "weights", "conditional"])
def test_logp_equals_pymc_model(kinship, family, link, parametrisation):
    built = _built(kinship, family, link)
    assert glmm_closed_form_applies(built)
    density = _density(built, parametrisation)
    logp_pymc = built.model.compile_logp()
    rng = np.random.default_rng(2)
    for _ in range(3):
        x = density.initial_point(int(rng.integers(100))) + rng.normal(0, 0.3, density.ndim)
        expected = float(logp_pymc(_pymc_point(density, x))) + density.log_jacobian(x)
        # probit: PyMC's invprobit differs from scipy's log_ndtr (which we use) by up to
        # 1.7e-7 per record at η = −3 (log Φ), so 30 binomial records drift ~1e-6
        tolerance = 1e-5 if link == "probit" else 1e-8
        assert density.logp(x)[0] == pytest.approx(expected, abs=tolerance)


@pytest.mark.parametrize(("family", "link"), [*CASES, ("poisson-olre", "log")])
@pytest.mark.parametrize("parametrisation", ["weights", "conditional"])
def test_gradient_matches_finite_differences(kinship, family, link, parametrisation):
    fam = family.split("-")[0]
    built = _built(kinship, fam, link, olre=family.endswith("olre"))
    density = _density(built, parametrisation)
    x = density.initial_point(3) + np.random.default_rng(3).normal(0, 0.3, density.ndim)
    _, grad = density.logp(x)
    step = 1e-6
    numeric = [
        (density.logp(x + step * e)[0] - density.logp(x - step * e)[0]) / (2 * step)
        for e in np.eye(density.ndim)
    ]
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-6)


def test_default_parametrisation_and_surrogates(kinship):
    """Conditional centring for binary traits (centred on the score, information falling
    with V), partial non-centring for Poisson; Poisson's opt-in surrogate scales by the
    counts' own information y + ½."""
    binary = glmm_density(_built(kinship, "bernoulli", "logit"), dtype="float64")
    assert type(binary.transform).__name__ == "ConditionalCentring"
    built_counts = _built(kinship, "poisson", "log")
    assert type(glmm_density(built_counts).transform).__name__ == "PartialNonCentring"
    counts = glmm_density(built_counts, dtype="float64", parametrisation="conditional")
    assert np.any(binary.transform.score != 0) and binary.transform.bins.size == 16
    intercept_only = _built(kinship, "bernoulli", "logit", formula="y ~ 1 + (1|id)")
    assert glmm_density(intercept_only).transform.bins.size == 1  # one distinct μ̂
    assert not np.any(counts.transform.score) and counts.transform.bins.size == 0
    squares = counts.vectors**2
    np.testing.assert_allclose(counts.transform.information, squares.T @ (counts.y + 0.5))
    # τ(V) for binary traits: Σ_i U²_ij E[p(1 − p)], falling as V grows
    c = binary.transform
    small, large = (c.bin_weights @ expected_information("binomial", "logit", c.bins, V)[0]
                    for V in (0.1, 4.0))  # fmt: skip
    assert np.all(large < small)
    with pytest.raises(ValueError, match="Unknown parametrisation"):
        glmm_density(_built(kinship, "bernoulli", "logit"), parametrisation="shear")


@pytest.mark.parametrize(("family", "link"), [("binomial", "logit"), ("binomial", "probit")])
def test_expected_information_against_adaptive_quadrature(family, link):
    """E[I(η)], η ~ N(μ, V), by 20-point Gauss–Hermite against scipy.integrate.quad; its
    V-derivative against finite differences of itself; I'(η) against finite differences.

    The quadrature only shapes the surrogate (any surrogate keeps the posterior exact), so
    1e-3 is ample; its derivative must be the quadrature's own, for the gradient's sake."""
    eta = np.linspace(-4.0, 4.0, 9)
    info, d_info = unit_information(family, link, eta)
    step = 1e-6
    numeric = (
        unit_information(family, link, eta + step)[0]
        - unit_information(family, link, eta - step)[0]
    ) / (2 * step)
    np.testing.assert_allclose(d_info, numeric, rtol=1e-6, atol=1e-10)
    mu = np.array([-2.0, 0.0, 1.5])
    for V in (0.05, 1.0, 4.0):
        f, df = expected_information(family, link, mu, V)

        def integrand(z, m, V=V):
            return unit_information(family, link, np.array([m + np.sqrt(V) * z]))[0][0]

        exact = [
            integrate.quad(lambda z, m=m: integrand(z, m) * stats.norm.pdf(z), -12, 12)[0]
            for m in mu
        ]
        np.testing.assert_allclose(f, exact, rtol=1e-3)
        numeric = (
            expected_information(family, link, mu, V + 1e-6)[0]
            - expected_information(family, link, mu, V - 1e-6)[0]
        ) / 2e-6
        np.testing.assert_allclose(df, numeric, rtol=1e-5)
    f, df = expected_information("poisson", "log", mu, 0.7)
    np.testing.assert_allclose(f, np.exp(mu + 0.35))  # lognormal mean
    np.testing.assert_allclose(df, 0.5 * f)


@pytest.mark.parametrize("parametrisation", ["conditional", "partial"])
def test_merged_poisson_effect_equals_dense_normal(kinship, parametrisation):
    """a + e ~ N(0, σ_a² K + σ_o² I): the merged density against scipy's dense MVN."""
    built = _built(kinship, "poisson", "log", olre=True)
    density = glmm_density(built, dtype="float64", parametrisation=parametrisation)
    assert density.olre
    spec, priors = built.spec, built.priors
    K = kinship.matrix
    y = np.asarray(spec.y, dtype=float)
    fe_mu, fe_sd = density.beta_mu, density.beta_sd

    def half_t(prior, sd):
        nu, scale = (float(np.ravel(v)[0]) for v in prior.params)
        return np.log(2.0) + stats.t.logpdf(sd, nu, scale=scale)

    assert priors.sd["id"].family == "halfstudentt" and priors.sd_olre.family == "halfstudentt"
    rng = np.random.default_rng(4)
    for _ in range(3):
        x = density.initial_point(int(rng.integers(100))) + rng.normal(0, 0.3, density.ndim)
        p = density.n_fixed
        beta, t_a, t_o = x[:p], x[p], x[p + 1]
        c, A, log_jacobian = density.latent(x)
        effect = density.vectors @ c  # a + e per individual
        eta = density.offset + density.design @ beta + effect[density.index]
        cov = np.exp(2 * t_a) * K + np.exp(2 * t_o) * np.eye(N)
        expected = (
            stats.poisson.logpmf(y, np.exp(eta)).sum()
            + stats.multivariate_normal.logpdf(effect, np.zeros(N), cov)
            + stats.norm.logpdf(beta, fe_mu, fe_sd).sum()
            + half_t(priors.sd["id"], np.exp(t_a))
            + t_a
            + half_t(priors.sd_olre, np.exp(t_o))
            + t_o
            + log_jacobian  # log |d effect / dv|
        )
        assert density.logp(x)[0] == pytest.approx(expected, abs=1e-8)


def test_merged_poisson_split_keeps_the_linear_predictor(kinship):
    """The drawn split a | a + e: u_id + σ_o z_olre is the merged effect, and the split's
    mean and variance are the Gaussian conditional's."""
    density = glmm_density(_built(kinship, "poisson", "log", olre=True), dtype="float64")
    x = density.initial_point(5)
    c, A, _ = density.latent(x)
    rng = np.random.default_rng(6)
    draws = [density.expand(x, rng) for _ in range(4000)]
    out = draws[0]
    merged = density.vectors @ c
    np.testing.assert_allclose(
        out["u_id"][:, 0][density.index] + out["sd_olre"] * out["z_olre"],
        merged[density.index], atol=1e-10,
    )  # fmt: skip
    var_a = float(out["var_id"])
    share = var_a * density.eigenvalues / A
    a = np.array([d["z_id"][:, 0] for d in draws]) * np.sqrt(var_a * density.eigenvalues)
    se = np.sqrt(share * float(out["var_olre"]) / len(draws))
    assert np.max(np.abs((a.mean(0) - share * c) / se)) < 5.0
    np.testing.assert_allclose(a.var(0), share * float(out["var_olre"]), rtol=0.15)


def test_applies_only_to_what_it_covers(kinship):
    assert not glmm_closed_form_applies(
        build(
            bl.specify(
                "y ~ x + (1|id)",
                _data(kinship, "poisson").assign(y=lambda d: d.y * 1.0),
                kinship={"id": kinship},
            ),
            strategy="latent",
        )
    )  # Gaussian
    # the observation-level effect merges only with the full eigenbasis
    assert not glmm_closed_form_applies(
        _built(kinship, "poisson", "log", olre=True, rank_share=0.8)
    )
    assert glmm_closed_form_applies(_built(kinship, "bernoulli", "logit", rank_share=0.8))
    # repeated records: the observation-level effect cannot merge
    df = pd.concat([_data(kinship, "poisson"), _data(kinship, "poisson", seed=2)])
    spec = bl.specify("y ~ x + (1|id)", df, kinship={"id": kinship}, family="poisson")
    assert spec.terms[0].n_levels < spec.n_obs
    assert not glmm_closed_form_applies(build(spec, strategy="latent"))
    # a model changed after building is sampled as the PyMC model it now is
    built = _built(kinship, "bernoulli", "logit")
    import pymc as pm

    with built.model:
        pm.Potential("extra", 0.0 * built.model["sd_id"])
    assert not glmm_closed_form_applies(built)


def test_nuts_defaults_shorter_only_on_the_closed_form(kinship):
    """Unset tune/target_accept: 300 and 0.8 where nutpie samples the one-term closed form
    without an observation-level effect; 1000 and 0.9 with it, and for the PyMC graph
    (sampler='pymc', or a model the closed form does not cover); values the caller sets
    are kept."""
    for family, link in [("poisson", "log"), ("bernoulli", "logit"), ("binomial", "probit")]:
        built = _built(kinship, family, link)
        assert glmm_closed_form_applies(built)
        for sampler in ("auto", "nutpie"):
            assert nuts_defaults(built, sampler, None, None) == (300, 0.8)
        assert nuts_defaults(built, "pymc", None, None) == (1000, 0.9)
        assert nuts_defaults(built, "nutpie", 700, None) == (700, 0.8)
        assert nuts_defaults(built, "nutpie", None, 0.95) == (300, 0.95)
    olre = _built(kinship, "poisson", "log", olre=True)
    assert glmm_closed_form_applies(olre)
    assert nuts_defaults(olre, "auto", None, None) == (1000, 0.9)
    # without nutpie, "auto" is PyMC's NUTS on the graph: the usual defaults
    import importlib.util

    real_find_spec = importlib.util.find_spec
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(
            importlib.util,
            "find_spec",
            lambda name, *a: None if name == "nutpie" else real_find_spec(name, *a),
        )
        assert nuts_defaults(built, "auto", None, None) == (1000, 0.9)
    # the observation-level effect on a truncated basis: the PyMC graph, the usual defaults
    truncated = _built(kinship, "poisson", "log", olre=True, rank_share=0.8)
    assert nuts_defaults(truncated, "auto", None, None) == (1000, 0.9)
    gaussian = build(
        bl.specify(
            "y ~ x + (1|id)",
            _data(kinship, "poisson").assign(y=lambda d: d.y * 1.0),
            kinship={"id": kinship},
        ),
        strategy="latent",
    )
    assert nuts_defaults(gaussian, "auto", None, None) == (1000, 0.9)


@pytest.mark.parametrize(
    ("family", "olre"), [("poisson", True), ("poisson", False)] + [("bernoulli", False)]
)
def test_posterior_agrees_with_pymc_nuts(kinship, family, olre):
    """nutpie on the closed form, with the route's default warm-up and target acceptance
    (300 and 0.8 without an observation-level effect), and PyMC's NUTS on the PyMC graph:
    same posterior."""
    rng = np.random.default_rng(11)
    df = _data(kinship, family)
    eta = 0.3 + np.linalg.cholesky(kinship.matrix) @ rng.normal(size=N)
    df["y"] = (
        rng.poisson(np.exp(eta)) if family == "poisson" else rng.binomial(1, 1 / (1 + np.exp(-eta)))
    )
    fam = Poisson(overdispersion=olre) if family == "poisson" else family
    model = bl.LMM("y ~ x + (1|id)", df, kinship={"id": kinship}, family=fam)
    fits = {}
    for sampler in ("nutpie", "pymc"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fits[sampler] = model.fit(
                draws=1000,
                tune=None if sampler == "nutpie" else 700,
                chains=2,
                seed=3,
                sampler=sampler,
                progressbar=False,
            )
    import arviz as az

    for name in ("var_id", "beta"):
        a, b = fits["nutpie"].idata.posterior[name], fits["pymc"].idata.posterior[name]
        se = np.sqrt(
            az.mcse(a.to_dataset(), method="mean")[name] ** 2
            + az.mcse(b.to_dataset(), method="mean")[name] ** 2
        )
        z = np.abs(a.mean(("chain", "draw")) - b.mean(("chain", "draw"))) / se
        assert float(z.max()) < 4.5, (name, float(z.max()))


@pytest.mark.parametrize(
    ("family", "olre"), [("poisson", True), ("poisson", False), ("bernoulli", False)]
)
def test_expanded_deterministics_equal_the_pymc_model(kinship, family, olre):
    """var_residual, variance_share and h2 from ``expand`` are the PyMC model's own
    deterministics at the same point (one latent-residual formula serves both)."""
    built = _built(kinship, family, "logit", olre=olre)
    density = glmm_density(built, dtype="float64")
    model = built.model
    names = ["var_residual", "variance_share", "h2"]
    outputs = model.replace_rvs_by_values([model[name] for name in names])
    evaluate = model.compile_fn(outputs, inputs=model.value_vars, on_unused_input="ignore")
    x = density.initial_point(4) + np.random.default_rng(5).normal(0, 0.3, density.ndim)
    out = density.expand(x, np.random.default_rng(6))
    point = _pymc_point(density, x)
    if olre:
        point["sd_olre_log__"] = np.log(out["sd_olre"])
        point["z_olre"] = out["z_olre"]
    for name, value in zip(names, evaluate(point), strict=True):
        np.testing.assert_allclose(out[name], value, rtol=1e-10, err_msg=name)


@pytest.fixture(scope="module")
def centred_grm() -> bl.Kinship:
    """A GRM of centred markers: singular (1ᵀK = 0), as every centred GRM is."""
    rng = np.random.default_rng(7)
    G = rng.binomial(2, 0.3, (N, 200)).astype(float)
    G -= G.mean(0)
    K = G @ G.T / 200
    return bl.Kinship(K / np.mean(np.diag(K)), [f"i{k}" for k in range(N)])


def test_merged_poisson_effect_with_a_singular_kinship(centred_grm):
    """A centred GRM loses one eigenpair: the merged density adds K's null space back, where
    a + e is e alone, and stays the dense N(0, σ_a² K + σ_o² I); the split puts nothing of the
    kinship effect in the null space and gives the PyMC model's z_id its own length."""
    built = _built(centred_grm, "poisson", "log", olre=True)
    r = centred_grm.root().rank
    assert r == N - 1 and len(built.model.coords["id_basis"]) == r
    assert glmm_closed_form_applies(built)
    density = glmm_density(built, dtype="float64")
    assert density.n_basis == N and density.kinship_rank == r
    y = np.asarray(built.spec.y, dtype=float)
    rng = np.random.default_rng(8)
    p = density.n_fixed
    x = density.initial_point(3) + rng.normal(0, 0.3, density.ndim)
    beta, t_a, t_o = x[:p], x[p], x[p + 1]
    c, _, log_jacobian = density.latent(x)
    effect = density.vectors @ c
    eta = density.offset + density.design @ beta + effect[density.index]
    cov = np.exp(2 * t_a) * centred_grm.matrix + np.exp(2 * t_o) * np.eye(N)
    priors = built.priors

    def half_t(prior, log_sd):  # log density of σ = e^t, with the Jacobian of t = log σ
        nu, scale = (float(np.ravel(v)[0]) for v in prior.params)
        return np.log(2.0) + stats.t.logpdf(np.exp(log_sd), nu, scale=scale) + log_sd

    assert priors.sd["id"].family == "halfstudentt" == priors.sd_olre.family
    prior = half_t(priors.sd["id"], t_a) + half_t(priors.sd_olre, t_o)
    expected = (
        stats.poisson.logpmf(y, np.exp(eta)).sum()
        + stats.multivariate_normal.logpdf(effect, np.zeros(N), cov)
        + stats.norm.logpdf(beta, density.beta_mu, density.beta_sd).sum()
        + prior
        + log_jacobian
    )
    assert density.logp(x)[0] == pytest.approx(expected, abs=1e-8)
    out = density.expand(x, np.random.default_rng(9))
    assert out["z_id"].shape == (r, 1)
    u = out["u_id"][:, 0]
    np.testing.assert_allclose(np.ones(N) @ u, 0.0, atol=1e-10)  # in K's column space
    np.testing.assert_allclose(
        u[density.index] + out["sd_olre"] * out["z_olre"], effect[density.index], atol=1e-10
    )
