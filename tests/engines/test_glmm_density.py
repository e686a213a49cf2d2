"""The closed-form latent GLMM density against the PyMC model it replaces.

The density is a second implementation of the built model's posterior, so each of its
reparametrisations is checked against an independent one: the PyMC model's ``logp`` (plus
the partial non-centring's Jacobian; the shear has none), a dense multivariate normal for
the merged Poisson effect, finite differences for the gradient, and the posterior of a
short fit against PyMC's own NUTS on the PyMC graph.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import bayeslmm as bl
from bayeslmm.engines.bayes import build
from bayeslmm.engines.bayes.glmm_density import glmm_closed_form_applies, glmm_density
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


@pytest.mark.parametrize(("family", "link"), CASES)
@pytest.mark.parametrize("reparam", ["default", "partial", "shear"])
def test_logp_equals_pymc_model(kinship, family, link, reparam):
    built = _built(kinship, family, link)
    assert glmm_closed_form_applies(built)
    density = glmm_density(built, dtype="float64", shear=reparam == "shear")
    if reparam == "partial":
        density.weights = np.linspace(0.05, 0.95, density.n_basis)
    logp_pymc = built.model.compile_logp()
    rng = np.random.default_rng(2)
    for _ in range(3):
        x = density.initial_point(int(rng.integers(100))) + rng.normal(0, 0.3, density.ndim)
        _, _, A = density.latent(x)
        jacobian = -float(density.weights @ (0.5 * np.log(A)))  # log |dz/dv|
        expected = float(logp_pymc(_pymc_point(density, x))) + jacobian
        # probit: PyMC's invprobit differs from scipy's log_ndtr (which we use) by up to
        # 1.7e-7 per record at η = −3 (log Φ), so 30 binomial records drift ~1e-6
        tolerance = 1e-5 if link == "probit" else 1e-8
        assert density.logp(x)[0] == pytest.approx(expected, abs=tolerance)


@pytest.mark.parametrize(("family", "link"), [*CASES, ("poisson-olre", "log")])
def test_gradient_matches_finite_differences(kinship, family, link):
    fam = family.split("-")[0]
    density = glmm_density(
        _built(kinship, fam, link, olre=family.endswith("olre")), dtype="float64", shear=True
    )
    density.weights = np.linspace(0.1, 0.9, density.n_basis)
    x = density.initial_point(3) + np.random.default_rng(3).normal(0, 0.3, density.ndim)
    _, grad = density.logp(x)
    step = 1e-6
    numeric = [
        (density.logp(x + step * e)[0] - density.logp(x - step * e)[0]) / (2 * step)
        for e in np.eye(density.ndim)
    ]
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-6)


def test_merged_poisson_effect_equals_dense_normal(kinship):
    """a + e ~ N(0, σ_a² K + σ_o² I): the merged density against scipy's dense MVN."""
    built = _built(kinship, "poisson", "log", olre=True)
    density = glmm_density(built, dtype="float64")
    assert density.olre and np.any(density.weights > 0)
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
        _, c, A = density.latent(x)
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
            + float((0.5 * (1.0 - density.weights)) @ np.log(A))  # log |d effect / dv|
        )
        assert density.logp(x)[0] == pytest.approx(expected, abs=1e-8)


def test_merged_poisson_split_keeps_the_linear_predictor(kinship):
    """The drawn split a | a + e: u_id + σ_o z_olre is the merged effect, and the split's
    mean and variance are the Gaussian conditional's."""
    density = glmm_density(_built(kinship, "poisson", "log", olre=True), dtype="float64")
    x = density.initial_point(5)
    _, c, A = density.latent(x)
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


@pytest.mark.parametrize("family", ["poisson", "bernoulli"])
def test_posterior_agrees_with_pymc_nuts(kinship, family):
    """nutpie on the closed form and PyMC's NUTS on the PyMC graph: same posterior."""
    rng = np.random.default_rng(11)
    df = _data(kinship, family)
    eta = 0.3 + np.linalg.cholesky(kinship.matrix) @ rng.normal(size=N)
    df["y"] = (
        rng.poisson(np.exp(eta)) if family == "poisson" else rng.binomial(1, 1 / (1 + np.exp(-eta)))
    )
    model = bl.LMM("y ~ x + (1|id)", df, kinship={"id": kinship}, family=family)
    fits = {}
    for sampler in ("nutpie", "pymc"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fits[sampler] = model.fit(
                draws=1000, tune=700, chains=2, seed=3, sampler=sampler, progressbar=False
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
