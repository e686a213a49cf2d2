"""The closed-form spectral log posterior against the PyMC model it stands in for.

PyMC computes the reference: the built model's joint log-density on its own unconstrained
coordinates (log σ's, logit h²) with its transforms' Jacobians. The closed form samples
x = (logit h², log σ²_P); the two densities differ by the constant log-Jacobian between the
coordinate systems (−log 4 for (log σ_g, log σ_e), −log 2 for (logit h², log σ_P), 0 for
(logit h², log σ²_P)).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import special

import bayeslmm as bl
from bayeslmm.engines.bayes import build
from bayeslmm.engines.bayes.spectral_density import (
    closed_form_applies,
    marginal_loglik_grad,
    nutpie_model,
    positive_log_prior,
    spectral_density,
)
from bayeslmm.priors import Prior


@pytest.fixture(scope="module")
def data(random_kinship):
    rng = np.random.default_rng(11)
    n = 25
    ids = [f"i{k}" for k in range(n)]
    K = random_kinship(rng, n, 40, ridge=0.05)
    df = pd.DataFrame(
        {
            "y": rng.normal(5, 2, 2 * n),
            "x": rng.normal(size=2 * n),
            "x2": rng.normal(size=2 * n),
            "x3": rng.uniform(size=2 * n),
            "id": np.repeat(ids, 2),
            "expo": rng.uniform(0.5, 2, 2 * n),
        }
    ).sample(frac=1.0, random_state=4)
    return K, df


def _pymc_coordinates(built, x):
    """PyMC's value variables at the point x = (logit h², log σ²_P); the log-Jacobian of
    PyMC's coordinates with respect to x."""
    h = special.expit(x[0])
    total = np.exp(x[1])
    group = built.spec.terms[0].group
    free = {v.name for v in built.model.free_RVs}
    if f"sd_{group}" in free:
        point = {
            f"sd_{group}_log__": 0.5 * np.log(h * total),
            "sigma_log__": 0.5 * np.log((1 - h) * total),
        }
        return point, np.log(0.25)
    point = {"h2_logodds__": x[0]}
    if "total_sd" in free:
        point["total_sd_log__"] = 0.5 * x[1]
        return point, np.log(0.5)
    point["total_variance_log__"] = x[1]
    return point, 0.0


PRIORS = [
    None,
    {"sd_id": ("halfnormal", 1.5), "sigma": ("exponential", 0.7)},
    {"sd_id": ("halfcauchy", 2.0), "sigma": ("invgamma", 3.0, 2.0)},
    {"sd_id": ("scaled_inv_chi2", 4.0, 1.5), "sigma": ("halfstudentt", 5.0, 1.0)},
    {"h2": ("beta", 2.0, 3.0)},
    {"h2": ("beta", 0.7, 1.4), "total_sd": ("halfnormal", 4.0)},
    {"h2": ("beta", 1.0, 1.0), "total_variance": ("scaled_inv_chi2", 3.0, 4.0)},
    {"h2": ("beta", 3.0, 1.0), "total_variance": ("invgamma", 2.0, 5.0)},
]

FORMULAS = [
    "y ~ 1 + (1|id)",
    "y ~ 0 + (1|id)",
    "y ~ 1 + x + x2 + x3 + offset(expo) + (1|id)",  # p = 4: the general Cholesky loop
    "y ~ 1 + x + x2 + x3 + expo + (1|id)",
]


@pytest.mark.parametrize("formula", FORMULAS)
@pytest.mark.parametrize("priors", PRIORS)
def test_closed_form_equals_pymc_logp(data, formula, priors):
    K, df = data
    built = build(bl.specify(formula, df, kinship={"id": K}, priors=priors))
    assert closed_form_applies(built)
    density = spectral_density(built)
    pymc_logp = built.model.compile_logp()
    rng = np.random.default_rng(5)
    for x in rng.normal([0.0, 1.0], [2.0, 1.5], size=(6, 2)):
        point, log_jac = _pymc_coordinates(built, x)
        got, _ = density.logp(x)
        assert got == pytest.approx(float(pymc_logp(point)) + log_jac, rel=1e-10, abs=1e-8)


@pytest.mark.parametrize("priors", PRIORS)
def test_gradient_matches_finite_differences(data, priors):
    K, df = data
    built = build(bl.specify("y ~ 1 + x + x2 + (1|id)", df, kinship={"id": K}, priors=priors))
    density = spectral_density(built)
    eps = 1e-6
    for x in np.random.default_rng(2).normal([0.0, 1.0], [2.0, 1.0], size=(4, 2)):
        _, grad = density.logp(x)
        for k in range(2):
            step = np.zeros(2)
            step[k] = eps
            numeric = (density.logp(x + step)[0] - density.logp(x - step)[0]) / (2 * eps)
            assert grad[k] == pytest.approx(numeric, rel=1e-5, abs=1e-6)


def test_marginal_likelihood_equals_dense_normal():
    from scipy import stats

    rng = np.random.default_rng(3)
    n, p = 40, 3
    s = rng.gamma(1.0, 1.0, n)
    s[:3] = 0.0  # zero eigenvalues (a singular kinship) are allowed
    B = rng.normal(size=(n, p))
    r = rng.normal(size=n)
    ll, d_g, d_e = marginal_loglik_grad(0.7, 0.4, s, r, B)
    V = np.diag(0.7 * s + 0.4) + B @ B.T
    assert ll == pytest.approx(stats.multivariate_normal(np.zeros(n), V).logpdf(r), rel=1e-12)
    Vinv = np.linalg.inv(V)
    alpha = Vinv @ r
    # ∂ log N / ∂θ = −½ tr(V⁻¹ ∂V) + ½ αᵀ ∂V α
    assert d_g == pytest.approx(-0.5 * np.sum(np.diag(Vinv) * s) + 0.5 * alpha @ (s * alpha))
    assert d_e == pytest.approx(-0.5 * np.trace(Vinv) + 0.5 * alpha @ alpha)


@pytest.mark.parametrize(
    "prior", [("halfnormal", 2.0), ("halfstudentt", 3.0, 1.5), ("halfcauchy", 0.5),
              ("exponential", 1.3), ("invgamma", 2.5, 1.5), ("scaled_inv_chi2", 4.0, 0.8)],
)  # fmt: skip
def test_positive_priors_are_pymc_densities(prior):
    import pymc as pm

    p = Prior.parse(prior, "sd")
    log_prior = positive_log_prior(p)
    with pm.Model():
        dist = p.to_pymc("theta")
    for theta in (0.05, 0.8, 3.0):
        want = float(pm.logp(dist, theta).eval())
        value, slope = log_prior(np.log(theta))
        assert value == pytest.approx(want, rel=1e-8)  # PyMC's C gammaln: ~1e-9
        eps = 1e-6
        numeric = (log_prior(np.log(theta) + eps)[0] - log_prior(np.log(theta) - eps)[0]) / 2e-6
        assert slope == pytest.approx(numeric, rel=1e-6)


def test_expand_names_match_the_pymc_model(data):
    K, df = data
    for priors in (None, {"h2": ("beta", 2, 2)}, {"total_variance": ("invgamma", 2, 1)}):
        built = build(bl.specify("y ~ 1 + x + (1|id)", df, kinship={"id": K}, priors=priors))
        density = spectral_density(built)
        names = {v.name for v in built.model.free_RVs + built.model.deterministics}
        assert set(density.expand(np.array([0.3, 0.1]))) == names
        values = density.expand(np.array([0.3, 0.1]))
        # h² at the sample's kinship scale c σ_g² / (c σ_g² + σ_e²), c = mean diag K - mean K
        c = built.spec.terms[0].variance_weights()[0, 0]
        var_g, var_e = values["var_id"], values["var_residual"]
        assert values["h2"] == pytest.approx(c * var_g / (c * var_g + var_e))
        if priors is None:  # the sampler's coordinates: logit of σ_g²/σ²_P and log σ²_P
            assert var_g / (var_g + var_e) == pytest.approx(special.expit(0.3))
            assert var_g + var_e == pytest.approx(np.exp(0.1))
        else:  # share priors: h² (sample scale) and σ²_P = c σ_g² + σ_e² are the coordinates
            assert values["h2"] == pytest.approx(special.expit(0.3))
            assert c * var_g + var_e == pytest.approx(np.exp(0.1))
        assert nutpie_model(density).n_dim == 2


def test_joint_fixed_effects_and_latent_models_are_not_closed_form(data):
    K, df = data
    spec = bl.specify("y ~ 1 + x + (1|id)", df, kinship={"id": K})
    assert not closed_form_applies(build(spec, fixed_effects="joint"))
    assert not closed_form_applies(build(spec, strategy="latent"))
    with pytest.raises(ValueError, match="spectral"):
        spectral_density(build(spec, strategy="latent"))


# -- the C callback nutpie calls without the GIL -------------------------------------------


def _call_c_logp(buffer, x):
    """Call the compiled C logp through its address, as nutpie's Rust sampler does."""
    import ctypes

    from bayeslmm.engines.bayes.spectral_density import c_callbacks

    logp_c, _ = c_callbacks()
    x = np.ascontiguousarray(x, dtype=float)
    grad = np.full(2, np.nan)
    value = np.full(1, np.nan)
    ptr = ctypes.POINTER(ctypes.c_double)
    code = logp_c.ctypes(
        ctypes.c_uint64(2),
        x.ctypes.data_as(ptr),
        grad.ctypes.data_as(ptr),
        value.ctypes.data_as(ptr),
        ctypes.c_void_p(buffer.ctypes.data),
    )
    return int(code), float(value[0]), grad


@pytest.mark.parametrize("formula", FORMULAS[:3])
@pytest.mark.parametrize("priors", PRIORS)
def test_c_callback_equals_the_python_logp(data, formula, priors):
    """The cfunc nutpie calls is the Python reference density, value and gradient, for every
    prior family and parametrisation (a separate implementation of the same formulas)."""
    K, df = data
    density = spectral_density(build(bl.specify(formula, df, kinship={"id": K}, priors=priors)))
    buffer = density.c_buffer()
    assert buffer is not None
    rng = np.random.default_rng(8)
    points = [*rng.normal([0.0, 1.0], [3.0, 2.0], size=(8, 2)), np.array([-30.0, -20.0])]
    for x in points:
        want, want_grad = density.logp(x)
        code, got, grad = _call_c_logp(buffer, x)
        assert code == 0
        assert got == pytest.approx(want, rel=1e-12, abs=1e-10)
        np.testing.assert_allclose(grad, want_grad, rtol=1e-10, atol=1e-10)


def test_c_callback_rejects_points_outside_the_support(data):
    K, df = data
    density = spectral_density(build(bl.specify("y ~ 1 + (1|id)", df, kinship={"id": K})))
    # h² = 1 exactly leaves σ_e² = 0 (−inf in Python); σ²_P = e^800 overflows (Python's
    # math.exp raises there)
    assert density.logp(np.array([40.0, 0.0]))[0] == -np.inf
    buffer = density.c_buffer()
    for x in (np.array([40.0, 0.0]), np.array([0.0, 800.0])):
        code, value, _ = _call_c_logp(buffer, x)
        assert code == 4  # recoverable for nutpie: the step is rejected, the run goes on
        assert value == -np.inf


@pytest.mark.parametrize("priors", [PRIORS[0], PRIORS[4], PRIORS[5], PRIORS[6]])
def test_c_expand_equals_the_python_expand(data, priors):
    import ctypes

    from bayeslmm.engines.bayes.spectral_density import c_callbacks

    K, df = data
    density = spectral_density(
        build(bl.specify("y ~ 1 + x + (1|id)", df, kinship={"id": K}, priors=priors))
    )
    _, expand_c = c_callbacks()
    ptr = ctypes.POINTER(ctypes.c_double)
    buffer = density.c_buffer()  # held: the callback reads it through a raw address
    for x in np.random.default_rng(3).normal(size=(4, 2)):
        want = np.concatenate([np.ravel(v) for v in density.expand(x).values()])
        out = np.full(want.size, np.nan)
        x = np.ascontiguousarray(x)
        code = expand_c.ctypes(
            ctypes.c_uint64(2),
            ctypes.c_uint64(want.size),
            x.ctypes.data_as(ptr),
            out.ctypes.data_as(ptr),
            ctypes.c_void_p(buffer.ctypes.data),
        )
        assert code == 0
        np.testing.assert_allclose(out, want, rtol=1e-14)


def test_nutpie_samples_the_c_callback_with_the_python_draws(data):
    """Same seed, same draws through the C callback as through the Python one (nutpie runs
    the same NUTS on the same density), and the C model is what nutpie_model hands out."""
    import nutpie
    from nutpie.compiled_pyfunc import PyFuncModel

    from bayeslmm.engines.bayes.spectral_density import _nutpie_python_model

    K, df = data
    density = spectral_density(
        build(bl.specify("y ~ 1 + x + (1|id)", df, kinship={"id": K}, priors=PRIORS[5]))
    )
    c_model = nutpie_model(density)
    assert not isinstance(c_model, PyFuncModel)
    draws = {}
    for label, model in (("c", c_model), ("python", _nutpie_python_model(density))):
        idata = nutpie.sample(
            model, draws=50, tune=50, chains=2, cores=2, seed=4, progress_bar=False
        )
        draws[label] = idata.posterior
    assert set(draws["c"].data_vars) == set(draws["python"].data_vars)
    for name in draws["python"].data_vars:
        np.testing.assert_allclose(draws["c"][name], draws["python"][name], rtol=1e-12)
    assert draws["c"]["variance_share"].dims[-1] == "component"


def test_a_family_without_a_c_form_keeps_the_python_callback(data):
    from nutpie.compiled_pyfunc import PyFuncModel

    from bayeslmm.priors import PRIORS, PriorFamily, register_prior

    class HalfNormalCopy(PriorFamily):
        """A user's family: PyMC's half-normal under another name, own log_density_of_log."""

        name = "halfnormal_copy_c_test"
        parameter_names = ("scale (sigma)",)
        support = "positive"

        def pymc(self, name, params, dims=None, **kwargs):
            import pymc as pm

            return pm.HalfNormal(name, sigma=params[0], dims=dims, **kwargs)

        def log_density_of_log(self, params):
            return PRIORS["halfnormal"].log_density_of_log(params)

    register_prior(HalfNormalCopy)
    try:
        K, df = data
        priors = {"sigma": ("halfnormal_copy_c_test", 2.0)}
        density = spectral_density(
            build(bl.specify("y ~ 1 + (1|id)", df, kinship={"id": K}, priors=priors))
        )
        assert density.c_buffer() is None
        assert isinstance(nutpie_model(density), PyFuncModel)
    finally:
        del PRIORS["halfnormal_copy_c_test"]


@pytest.mark.parametrize("priors", [PRIORS[0], PRIORS[4], PRIORS[7]])
def test_c_callback_counts_the_low_rank_left_out_rows(priors):
    """A low-rank kinship's density carries −½ m (log 2π + log σ_e²) for the m rows left
    out of the rotation (SpectralDensity.multiplicity); the C callback carries it too."""
    rng = np.random.default_rng(21)
    n, p = 80, 20
    K = bl.grm(rng.binomial(2, 0.3, size=(n, p)).astype(np.int8), low_rank=True)
    df = pd.DataFrame({"id": list(K.ids), "y": rng.normal(size=n), "x": rng.normal(size=n)})
    built = build(bl.specify("y ~ 1 + x + (1|id)", df, kinship={"id": K}, priors=priors))
    density = spectral_density(built)
    assert density.multiplicity > 0
    buffer = density.c_buffer()
    for x in np.random.default_rng(1).normal([0.0, 0.5], 1.5, size=(5, 2)):
        want, want_grad = density.logp(x)
        code, got, grad = _call_c_logp(buffer, x)
        assert code == 0
        assert got == pytest.approx(want, rel=1e-12)
        np.testing.assert_allclose(grad, want_grad, rtol=1e-10)
