"""Prior families: one table (bayeslmm.priors.PRIORS) that every consumer reads.

A new family is one class. ``Gamma`` below is registered for the tests that need it and
goes through everything a built-in positive family does: parameter checks, the readable name,
the PyMC variable and ``.dist`` (checked against scipy), the closed-form log density of
log θ, and the closed-form spectral posterior, which must equal the built PyMC model's logp.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import special, stats

import bayeslmm as bl
from bayeslmm.errors import SpecificationError
from bayeslmm.priors import (
    POSITIVE,
    PRIOR_FAMILIES,
    PRIOR_PARAMETER_NAMES,
    PRIORS,
    Prior,
    PriorFamily,
    register_prior,
)


class Gamma(PriorFamily):
    """Gamma(alpha, beta), rate parametrisation, on a positive parameter."""

    name = "gamma"
    parameter_names = ("shape (alpha)", "rate (beta)")
    support = "positive"

    def pymc(self, name, params, dims=None, **kwargs):
        import pymc as pm

        return pm.Gamma(name, alpha=params[0], beta=params[1], dims=dims, **kwargs)

    def pymc_dist(self, params, shape):
        import pymc as pm

        return pm.Gamma.dist(alpha=params[0], beta=params[1], shape=shape)

    def log_density_of_log(self, params):
        a, b = params
        const = a * math.log(b) - math.lgamma(a)

        def gamma(t):
            value = b * math.exp(t)
            return const + (a - 1.0) * t - value, (a - 1.0) - value

        return gamma


@pytest.fixture
def gamma():
    register_prior(Gamma)
    yield Gamma
    del PRIORS["gamma"]


# -- the table and its views --------------------------------------------------------------


def test_views_read_the_table(gamma):
    assert list(PRIOR_FAMILIES) == list(PRIORS)
    assert PRIOR_FAMILIES["gamma"] == 2 and PRIOR_FAMILIES["dirichlet"] is None
    assert PRIOR_PARAMETER_NAMES["gamma"] == ("shape (alpha)", "rate (beta)")
    assert "gamma" in POSITIVE and "beta" not in POSITIVE and "nonsense" not in POSITIVE
    assert list(POSITIVE) == [
        "halfnormal",
        "halfstudentt",
        "halfcauchy",
        "exponential",
        "invgamma",
        "scaled_inv_chi2",
        "gamma",
    ]


def test_builtin_readable_names_and_supports():
    cases = {
        ("normal", 0, 2.5): ("Normal(0, 2.5)", "real"),
        ("halfnormal", 3): ("HalfNormal(3)", "positive"),
        ("halfstudentt", 3, 2.5): ("HalfStudentT(3, 2.5)", "positive"),
        ("halfcauchy", 1): ("HalfCauchy(1)", "positive"),
        ("exponential", 0.5): ("Exponential(0.5)", "positive"),
        ("beta", 2, 2): ("Beta(2, 2)", "unit"),
        ("invgamma", 2, 1): ("InverseGamma(2, 1)", "positive"),
        ("scaled_inv_chi2", 4, 0.5): ("ScaledInvChi2(4, 0.5)", "positive"),
        ("dirichlet", (1, 2, 3)): ("Dirichlet([1, 2, 3])", "simplex"),
        ("lkj", 2): ("LKJ(2)", "correlation"),
    }
    for value, (text, support) in cases.items():
        prior = Prior.parse(value, "x")
        assert prior.describe() == text
        assert prior.distribution.support == support
        assert prior.is_positive == (support == "positive")
        assert prior.has_closed_form == (support == "positive")


def test_register_prior_refuses_what_the_table_cannot_hold(gamma):
    with pytest.raises(TypeError, match="takes a PriorFamily subclass"):
        register_prior(dict)

    class Upper(Gamma):
        name = "Gamma2"

    with pytest.raises(SpecificationError, match="needs a lower-case name"):
        register_prior(Upper)

    class Odd(Gamma):
        name = "odd"
        support = "integer"

    with pytest.raises(SpecificationError, match="declares support 'integer'"):
        register_prior(Odd)

    class Other(Gamma):
        pass

    with pytest.raises(SpecificationError, match=r"'gamma' is already registered \(Gamma\)"):
        register_prior(Other)
    assert register_prior(Gamma) is Gamma  # the same class again is a no-op


def test_what_a_family_lacks_is_refused_with_its_name(gamma):
    import pymc as pm

    with pm.Model(), pytest.raises(SpecificationError, match="'lkj' prior cannot be used for"):
        Prior("lkj", (2.0,)).to_pymc("cor_g")
    # the list of usable SD families is the table's, the new one included
    with pytest.raises(SpecificationError, match="halfcauchy, exponential or gamma"):
        Prior("invgamma", (2.0, 1.0)).to_dist(2)
    with pytest.raises(ValueError, match="No closed-form density for a 'beta' prior"):
        Prior("beta", (2.0, 2.0)).log_density_of_log()


# -- a new family, end to end -------------------------------------------------------------


def test_new_family_parameters_are_checked_from_its_declaration(gamma):
    with pytest.raises(SpecificationError, match=r"A 'gamma' prior takes 2 parameter\(s\); got 1"):
        Prior("gamma", (2.0,))
    with pytest.raises(SpecificationError, match="The rate \\(beta\\) of a 'gamma' prior must be"):
        Prior("Gamma", (2.0, -1.0))
    assert Prior("Gamma", (2.0, 0.5)).describe() == "Gamma(2, 0.5)"


def test_new_family_pymc_variable_and_closed_form_density(gamma):
    import pymc as pm

    prior = Prior.parse(("gamma", 2.5, 1.5), "sd_id")
    with pm.Model():
        rv = prior.to_pymc("theta")
    dist = prior.to_dist(3)
    log_density = prior.log_density_of_log()
    for theta in (0.05, 0.8, 3.0):
        want = stats.gamma(2.5, scale=1 / 1.5).logpdf(theta)
        assert float(pm.logp(rv, theta).eval()) == pytest.approx(want, rel=1e-8)
        got = pm.logp(dist, np.full(3, theta)).eval()
        np.testing.assert_allclose(got, want, rtol=1e-8)
        value, slope = log_density(math.log(theta))
        assert value == pytest.approx(want, rel=1e-10)
        t, eps = math.log(theta), 1e-6
        numeric = (log_density(t + eps)[0] - log_density(t - eps)[0]) / (2 * eps)
        assert slope == pytest.approx(numeric, rel=1e-6)


@pytest.fixture(scope="module")
def spectral_data(random_kinship):
    rng = np.random.default_rng(21)
    n = 20
    K = random_kinship(rng, n, 30, ridge=0.05)
    df = pd.DataFrame(
        {"y": rng.normal(3, 1.5, 2 * n), "x": rng.normal(size=2 * n), "id": np.repeat(K.ids, 2)}
    )
    return K, df


def _pymc_point(built, x):
    """The PyMC model's value variables at x = (logit h², log σ²_P) and the log-Jacobian
    from PyMC's coordinates to x (as tests/engines/bayes/test_spectral_density.py)."""
    h, total = special.expit(x[0]), np.exp(x[1])
    free = {v.name for v in built.model.free_RVs}
    if "sd_id" in free:
        point = {
            "sd_id_log__": 0.5 * np.log(h * total),
            "sigma_log__": 0.5 * np.log((1 - h) * total),
        }
        return point, np.log(0.25)
    return {"h2_logodds__": x[0], "total_variance_log__": x[1]}, 0.0


@pytest.mark.parametrize(
    "priors",
    [
        {"sd_id": ("gamma", 2.0, 1.0), "sigma": ("gamma", 3.0, 2.0)},
        {"h2": ("beta", 2.0, 2.0), "total_variance": ("gamma", 2.0, 0.5)},
    ],
)
def test_new_family_in_the_pymc_model_and_the_spectral_closed_form(gamma, spectral_data, priors):
    from bayeslmm.engines.bayes import build
    from bayeslmm.engines.bayes.spectral_density import closed_form_applies, spectral_density

    K, df = spectral_data
    built = build(bl.specify("y ~ 1 + x + (1|id)", df, kinship={"id": K}, priors=priors))
    assert built.priors.table()[next(iter(priors))].startswith(("Gamma(", "Beta("))
    assert closed_form_applies(built)
    density = spectral_density(built)
    pymc_logp = built.model.compile_logp()
    for x in np.random.default_rng(3).normal([0.0, 1.0], [1.5, 1.0], size=(4, 2)):
        point, log_jac = _pymc_point(built, x)
        got, _ = density.logp(x)
        assert got == pytest.approx(float(pymc_logp(point)) + log_jac, rel=1e-10, abs=1e-8)


class GammaWithoutClosedForm(Gamma):
    """The same Gamma, declaring only its PyMC variable."""

    name = "gamma_pymc"
    log_density_of_log = PriorFamily.log_density_of_log


def test_a_family_without_closed_form_is_sampled_as_the_pymc_model(spectral_data):
    from bayeslmm.engines.bayes import build
    from bayeslmm.engines.bayes.glmm_density import glmm_closed_form_applies
    from bayeslmm.engines.bayes.spectral_density import closed_form_applies

    register_prior(GammaWithoutClosedForm)
    try:
        assert not Prior("gamma_pymc", (2.0, 1.0)).has_closed_form
        K, df = spectral_data
        priors = {"sd_id": ("gamma_pymc", 2.0, 1.0)}
        built = build(bl.specify("y ~ 1 + x + (1|id)", df, kinship={"id": K}, priors=priors))
        assert built.strategy == "spectral" and not closed_form_applies(built)
        assert np.isfinite(built.model.compile_logp()(built.model.initial_point()))
        counts = df.drop_duplicates("id").assign(y=np.arange(K.n) % 4)  # one record each
        glmm = build(
            bl.specify("y ~ 1 + (1|id)", counts, kinship={"id": K}, family="poisson", priors=priors)
        )
        assert glmm.strategy == "latent" and not glmm_closed_form_applies(glmm)
        # the same model with the closed form's prior is covered: only the prior decides
        priors = {"sd_id": ("halfnormal", 1.0)}
        glmm = build(
            bl.specify("y ~ 1 + (1|id)", counts, kinship={"id": K}, family="poisson", priors=priors)
        )
        assert glmm_closed_form_applies(glmm)
    finally:
        del PRIORS["gamma_pymc"]
