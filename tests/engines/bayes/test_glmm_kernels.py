"""The GLMM closed form's C callbacks against the numpy density they compile.

:class:`~bayeslmm.engines.bayes.glmm_density.GLMMDensity.logp` is itself tested against the
PyMC model's ``logp`` and finite differences (test_glmm_density.py); here the cfuncs nutpie
calls, through their addresses, are a second implementation checked against it at random
points for every family, link, transform and record layout the C form covers, and the
sampler's draws through either callback are compared with one seed.
"""

from __future__ import annotations

import ctypes
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import special, stats

import bayeslmm as bl
from bayeslmm.engines.bayes import build, glmm_kernels
from bayeslmm.engines.bayes.glmm_density import (
    PartialNonCentring,
    glmm_density,
    nutpie_model,
)
from bayeslmm.families import Poisson

N = 30
PTR = ctypes.POINTER(ctypes.c_double)


@pytest.fixture(scope="module")
def kinship() -> bl.Kinship:
    rng = np.random.default_rng(0)
    G = rng.binomial(2, 0.4, (N, 60)).astype(float)
    G -= G.mean(0)
    K = 0.9 * G @ G.T / 60 + 0.1 * np.eye(N)
    return bl.Kinship(K / np.mean(np.diag(K)), [f"i{k}" for k in range(N)])


def _data(kinship: bl.Kinship, family: str, repeated: bool, seed: int = 1) -> pd.DataFrame:
    """One record per individual in level order, or 2 per individual shuffled."""
    rng = np.random.default_rng(seed)
    ids = np.asarray(kinship.ids)
    if repeated:
        ids = rng.permutation(np.repeat(ids, 2))
    n = ids.size
    trials = rng.integers(1, 6, n)
    y = {
        "poisson": rng.poisson(2.0, n),
        "bernoulli": rng.integers(0, 2, n),
        "binomial": rng.binomial(trials, 0.4),
    }[family]
    x = rng.normal(size=n)
    return pd.DataFrame({"y": y, "x": x, "id": ids, "t": trials, "off": 0.1 * x})


CASES = [
    ("bernoulli", "logit", False),
    ("bernoulli", "probit", False),
    ("binomial", "logit", False),
    ("binomial", "probit", False),
    ("poisson", "log", False),
    ("poisson", "log", True),
]


def _density(kinship, family, link, olre, parametrisation, repeated=False, dtype="float64"):
    kw: dict = {"family": Poisson(overdispersion=olre) if family == "poisson" else family}
    if family != "poisson":
        kw["link"] = link
    if family == "binomial":
        kw["trials"] = "t"
    data = _data(kinship, family, repeated)
    formula = "y ~ x + offset(off) + (1|id)"
    spec = bl.specify(formula, data, kinship={"id": kinship}, **kw)
    built = build(spec, strategy="latent")
    par = "partial" if parametrisation == "weights" else parametrisation
    density = glmm_density(built, dtype=dtype, parametrisation=par)
    if parametrisation == "weights":  # partial non-centring with weights across (0, 1)
        density.transform = PartialNonCentring(np.linspace(0.05, 0.95, density.n_basis))
    return density, built


def _call_logp(buffer: np.ndarray, x: np.ndarray) -> tuple[int, float, np.ndarray]:
    """The compiled C logp through its address, as nutpie's Rust sampler calls it."""
    logp_c, _ = glmm_kernels.c_callbacks(single=bool(buffer[glmm_kernels._H_FLOAT32]))
    x = np.ascontiguousarray(x, dtype=float)
    grad = np.full(x.size, np.nan)
    value = np.full(1, np.nan)
    code = logp_c.ctypes(
        ctypes.c_uint64(x.size),
        x.ctypes.data_as(PTR),
        grad.ctypes.data_as(PTR),
        value.ctypes.data_as(PTR),
        ctypes.c_void_p(buffer.ctypes.data),
    )
    return int(code), float(value[0]), grad


def _call_expand(buffer: np.ndarray, x: np.ndarray, size: int) -> tuple[int, np.ndarray]:
    _, expand_c = glmm_kernels.c_callbacks(single=bool(buffer[glmm_kernels._H_FLOAT32]))
    x = np.ascontiguousarray(x, dtype=float)
    out = np.full(size, np.nan)
    code = expand_c.ctypes(
        ctypes.c_uint64(x.size),
        ctypes.c_uint64(size),
        x.ctypes.data_as(PTR),
        out.ctypes.data_as(PTR),
        ctypes.c_void_p(buffer.ctypes.data),
    )
    return int(code), out


def _points(density, count: int = 4, seed: int = 2) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        density.initial_point(int(rng.integers(1000))) + rng.normal(0, 0.5, density.ndim)
        for _ in range(count)
    ]


# the merged observation-level effect needs one record per individual: no repeated records
LAYOUTS = [
    (*case, repeated) for case in CASES for repeated in (False, True) if not (case[2] and repeated)
]


@pytest.mark.parametrize(("family", "link", "olre", "repeated"), LAYOUTS)
@pytest.mark.parametrize("parametrisation", ["weights", "conditional"])
def test_c_logp_equals_the_python_logp(kinship, family, link, olre, parametrisation, repeated):
    """Value and gradient of the cfunc equal GLMMDensity.logp (float64 eigenvectors), with
    an offset and a covariate, records in level order or gathered by an index."""
    density, _ = _density(kinship, family, link, olre, parametrisation, repeated)
    buffer = glmm_kernels.c_buffer(density)
    assert buffer is not None
    for x in _points(density):
        want, want_grad = density.logp(x)
        code, value, grad = _call_logp(buffer, x)
        assert code == 0
        assert value == pytest.approx(want, rel=1e-12, abs=1e-10)
        np.testing.assert_allclose(grad, want_grad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(("family", "link", "olre"), [CASES[0], CASES[5]])
def test_c_logp_float32_basis(kinship, family, link, olre):
    """The default single-precision eigenvectors: both callbacks round U c and Uᵀ w to
    float32, so they agree to float32's precision, not to the last bit."""
    density, _ = _density(kinship, family, link, olre, "conditional", dtype="float32")
    buffer = glmm_kernels.c_buffer(density)
    for x in _points(density, 2):
        want, want_grad = density.logp(x)
        code, value, grad = _call_logp(buffer, x)
        assert code == 0
        assert value == pytest.approx(want, rel=1e-6)
        np.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-4 * np.abs(want_grad).max())


def test_c_logp_rejects_non_finite_and_wrong_dimension(kinship):
    density, _ = _density(kinship, "poisson", "log", False, "weights")
    buffer = glmm_kernels.c_buffer(density)
    x = density.initial_point(0)
    x[density.n_fixed] = 400.0  # σ_a = e^400: the density overflows
    assert _call_logp(buffer, x)[0] == 4
    assert _call_logp(buffer, np.zeros(density.ndim + 1))[0] == -1


@pytest.mark.parametrize(("family", "link", "olre"), CASES[:5])
def test_c_expand_equals_the_python_expand(kinship, family, link, olre):
    density, _ = _density(kinship, family, link, olre, "conditional", repeated=True)
    buffer = glmm_kernels.c_buffer(density)
    for x in _points(density, 3):
        want = np.concatenate([np.ravel(v) for v in density.expand(x).values()])
        code, out = _call_expand(buffer, x, want.size)
        assert code == 0
        np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-13)


def test_c_expand_splits_the_merged_poisson_effect(kinship):
    """With the observation-level effect merged, every named variable but the split equals
    the Python expand; the split a + e is the merged field U c exactly, and a | c is drawn
    from its Gaussian (mean share · c, variance share · σ_o² per basis vector), reproducibly
    from x."""
    density, _ = _density(kinship, "poisson", "log", True, "weights")
    buffer = glmm_kernels.c_buffer(density)
    layout = density.expand(density.initial_point(0), np.random.default_rng(0))
    names, sizes = list(layout), [np.size(v) for v in layout.values()]
    bounds = dict(zip(names, np.split(np.arange(sum(sizes)), np.cumsum(sizes)[:-1]), strict=True))
    x = _points(density, 1)[0]
    want = density.expand(x, np.random.default_rng(0))
    code, out = _call_expand(buffer, x, sum(sizes))
    assert code == 0
    assert np.array_equal(out, _call_expand(buffer, x, sum(sizes))[1])  # same x, same draw
    for name in names:
        if name not in ("z_olre", "z_id", "u_id"):
            np.testing.assert_allclose(out[bounds[name]], np.ravel(want[name]), rtol=1e-12)
    u = out[bounds["u_id"]]
    e = out[bounds["z_olre"]] * out[bounds["sd_olre"]]
    c, _, _ = density.latent(x)
    np.testing.assert_allclose(u + e, density.vectors @ c, rtol=1e-10, atol=1e-12)
    # the basis coordinates of a, standardised by their conditional law, are N(0, 1)
    var_a, var_o = out[bounds["var_id"]][0], out[bounds["var_olre"]][0]
    s = density.eigenvalues
    share = var_a * s / (var_a * s + var_o)
    a = density.vectors.T @ u
    standardised = (a - share * c) / np.sqrt(share * var_o)
    assert abs(standardised.mean()) < 4 / np.sqrt(N) and 0.5 < standardised.std() < 1.6


def test_normals_are_standard_normal():
    """The expand's generator (splitmix64 + Box–Muller) against N(0, 1), and distinct
    streams for distinct x."""
    out = np.empty(20_001)
    glmm_kernels._normals(np.array([0.3, -1.2]), out)
    assert stats.kstest(out, "norm").pvalue > 1e-3
    other = np.empty(20_001)
    glmm_kernels._normals(np.array([0.3, -1.2000000001]), other)
    assert abs(np.corrcoef(out, other)[0, 1]) < 0.05


def test_exp_inplace_matches_numpy():
    """The vectorised exp of the Poisson means and partial non-centring's scales: within
    2 ulp of numpy's exp where exp is a normal number, inf above the overflow point, 0 far
    below (under 3.3e-308), NaN kept."""
    rng = np.random.default_rng(0)
    x = np.concatenate([np.linspace(-708.0, 709.78, 400_001), rng.normal(0.0, 5.0, 100_000)])
    ours = x.copy()
    glmm_kernels._exp_inplace(ours)
    np.testing.assert_allclose(ours, np.exp(x), rtol=2 * np.finfo(float).eps, atol=0)
    edges = np.array([709.79, 1e300, np.inf, -708.01, -1e4, -np.inf, np.nan, 0.0, -0.0])
    glmm_kernels._exp_inplace(edges)
    assert np.all(np.isposinf(edges[:3]))
    assert np.all(edges[3:6] == 0.0)
    assert np.isnan(edges[6]) and np.all(edges[7:] == 1.0)


def test_c_callbacks_refuse_a_buffer_of_the_other_precision(kinship):
    """Each precision has its own (logp, expand) pair; handed a buffer of the other
    precision, either callback returns -1 instead of reading the eigenvectors wrongly."""
    for dtype, other in (("float64", True), ("float32", False)):
        density, _ = _density(kinship, "poisson", "log", False, "weights", dtype=dtype)
        buffer = glmm_kernels.c_buffer(density)
        logp_c, expand_c = glmm_kernels.c_callbacks(single=other)
        x = density.initial_point(0)
        grad, value = np.empty_like(x), np.empty(1)
        size = int(buffer[glmm_kernels._H_N_EXPANDED])
        code = logp_c.ctypes(
            ctypes.c_uint64(x.size),
            x.ctypes.data_as(PTR),
            grad.ctypes.data_as(PTR),
            value.ctypes.data_as(PTR),
            ctypes.c_void_p(buffer.ctypes.data),
        )
        assert code == -1
        out = np.empty(size)
        code = expand_c.ctypes(
            ctypes.c_uint64(x.size),
            ctypes.c_uint64(size),
            x.ctypes.data_as(PTR),
            out.ctypes.data_as(PTR),
            ctypes.c_void_p(buffer.ctypes.data),
        )
        assert code == -1
        assert _call_logp(buffer, x)[0] == 0  # the pair of its own precision


def test_log_ndtr_matches_scipy():
    x = np.concatenate([np.linspace(-60, 40, 2001), [-20.0, -19.999, 6.0, 6.001, 38.0]])
    ours = np.array([glmm_kernels._log_ndtr(float(v)) for v in x])
    np.testing.assert_allclose(ours, special.log_ndtr(x), rtol=1e-12, atol=1e-300)


def test_nutpie_samples_the_c_callback_with_the_python_draws(kinship):
    """nutpie_model hands nutpie the C pair by default; with one seed the draws through it
    are those through the Python callback (same NUTS on the same density; the two differ
    by rounding, ~1e-14 in logp, so equality is checked to 1e-6)."""
    import nutpie
    from nutpie.compiled_pyfunc import PyFuncModel

    density, built = _density(kinship, "bernoulli", "logit", False, "conditional")
    c_model = nutpie_model(density, built.model.coords)
    python_model = nutpie_model(density, built.model.coords, callback="python")
    assert not isinstance(c_model, PyFuncModel) and isinstance(python_model, PyFuncModel)
    draws = {}
    for label, model in (("c", c_model), ("python", python_model)):
        idata = nutpie.sample(
            model, draws=30, tune=30, chains=2, cores=2, seed=4, progress_bar=False
        )
        draws[label] = idata.posterior
    assert set(draws["c"].data_vars) == set(draws["python"].data_vars)
    for name in draws["python"].data_vars:
        np.testing.assert_allclose(draws["c"][name], draws["python"][name], rtol=1e-6, atol=1e-8)
    assert draws["c"]["u_id"].dims[2:] == ("id_level", "id_coef")


def test_a_prior_without_a_c_form_keeps_the_python_callback(kinship):
    """A user's SD prior family (no C number): the Python callback, and callback='c' says
    why it cannot be used."""
    from nutpie.compiled_pyfunc import PyFuncModel

    density, built = _density(kinship, "bernoulli", "logit", False, "conditional")

    class UsersFamily:
        def log_density_of_log(self, params):  # pragma: no cover - never called
            raise AssertionError

    density.prior_specs = (SimpleNamespace(distribution=UsersFamily(), params=(1.0,)), None)
    assert glmm_kernels.c_buffer(density) is None
    assert isinstance(nutpie_model(density, built.model.coords), PyFuncModel)
    with pytest.raises(ValueError, match="callback='python'"):
        nutpie_model(density, built.model.coords, callback="c")


def test_families_and_transforms_the_c_form_does_not_know(kinship):
    """A family subclass with its own likelihood and a transform subclass are not numbered:
    c_buffer declines them (the Python callback samples them) rather than dropping what
    they change."""

    class TemperedPoisson(Poisson):
        def loglik_kernel(self, y, eta, trials=None):  # pragma: no cover - never called
            value, grad = super().loglik_kernel(y, eta, trials)
            return 0.5 * value, 0.5 * grad

    assert glmm_kernels.family_code(Poisson()) == glmm_kernels._POISSON
    assert glmm_kernels.family_code(TemperedPoisson()) is None
    assert glmm_kernels.family_code(bl.families.get_family("gaussian")) is None

    class ShiftedCentring(PartialNonCentring):
        pass

    density, _ = _density(kinship, "poisson", "log", False, "weights")
    assert glmm_kernels.c_buffer(density) is not None
    density.transform = ShiftedCentring(density.transform.weights)
    assert glmm_kernels.c_buffer(density) is None
