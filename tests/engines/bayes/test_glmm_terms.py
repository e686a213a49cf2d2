"""The multi-term closed-form GLMM density against the PyMC model it replaces.

Checked against independent computations: the built PyMC model's ``logp`` at random points
(plus the Jacobian of partial non-centring, with weights spread over (0, 1)), finite
differences of the density for the gradient, and (slow) the posterior of a nutpie fit of
the density against PyMC's own NUTS on the PyMC graph.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import bayeslmm as bl
from bayeslmm.engines.bayes import build
from bayeslmm.engines.bayes.glmm_density import glmm_closed_form_obstacles
from bayeslmm.engines.bayes.glmm_terms import (
    merged_term,
    multiterm_density,
    multiterm_obstacles,
)
from bayeslmm.engines.bayes.strategies import get_strategy
from bayeslmm.families import Poisson

N = 24


@pytest.fixture(scope="module")
def kinship() -> bl.Kinship:
    rng = np.random.default_rng(0)
    G = rng.binomial(2, 0.4, (N, 50)).astype(float)
    G -= G.mean(0)
    K = 0.9 * G @ G.T / 50 + 0.1 * np.eye(N)
    return bl.Kinship(K / np.mean(np.diag(K)), [f"i{k}" for k in range(N)])


def _data(kinship: bl.Kinship, family: str, reps: int = 1, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = N * reps
    trials = rng.integers(1, 6, n)
    y = {
        "poisson": rng.poisson(3.0, n),
        "bernoulli": rng.integers(0, 2, n),
        "binomial": rng.binomial(trials, 0.4),
    }[family]
    ids = np.repeat(np.asarray(kinship.ids), reps)
    return pd.DataFrame(
        {
            "y": y,
            "x": rng.normal(size=n),
            "id": ids,
            "id2": ids,
            "herd": [f"h{k}" for k in rng.integers(0, 5, n)],
            "site": [f"s{k}" for k in rng.integers(0, 3, n)],
            "t": trials,
            "x2": rng.normal(size=n),
        }
    )


#: (name, formula, family, link, olre, records per individual, rank_share, epistatic)
CASES = [
    ("poisson K+iid olre", "y ~ x + (1|id) + (1|herd)", "poisson", "log", True, 1, None, False),
    ("poisson K+iid", "y ~ x + (1|id) + (1|herd)", "poisson", "log", False, 1, None, False),
    ("poisson K+KK olre", "y ~ 1 + (1|id) + (1|id2)", "poisson", "log", True, 1, None, True),
    ("bernoulli K+KK", "y ~ x + (1|id) + (1|id2)", "bernoulli", "logit", False, 1, None, True),
    ("probit K+iid", "y ~ x + (1|id) + (1|herd)", "bernoulli", "probit", False, 1, None, False),
    ("binomial crossed", "y ~ x + (1|herd) + (1|site)", "binomial", "logit", False, 2, None, False),
    ("poisson crossed olre", "y ~ x + (1|herd) + (1|site)", "poisson", "log", True, 2, None, False),
    ("poisson K reps olre", "y ~ x + (1|id)", "poisson", "log", True, 2, None, False),
    ("poisson K rank olre", "y ~ x + (1|id)", "poisson", "log", True, 1, 0.9, False),
    ("poisson iid", "y ~ x + (1|herd)", "poisson", "log", False, 2, None, False),
]


def _built(kinship, case):
    _, formula, family, link, olre, reps, rank_share, epistatic = case
    kw: dict = {"family": Poisson(overdispersion=olre) if family == "poisson" else family}
    if family != "poisson":
        kw["link"] = link
    if family == "binomial":
        kw["trials"] = "t"
    kin = {"id": kinship}
    if epistatic:
        kin["id2"] = kinship.hadamard()
    df = _data(kinship, family, reps)
    spec = bl.specify(formula, df, kinship={k: v for k, v in kin.items() if k in formula}, **kw)
    return build(spec, strategy="latent", rank_share=rank_share)


def _pymc_point(density, x):
    out = density.expand(x)
    point = {}
    if density.n_fixed:
        point[density.meta["beta_name"]] = out[density.meta["beta_name"]]
    for block in density.blocks:
        name = block.name
        point[f"sd_{name}_log__"] = np.log(out[f"sd_{name}"])
        point[f"z_{name}"] = out[f"z_{name}"]
    return point


def _spread_weights(density):
    """Partial non-centring with fixed weights spread over (0, 1)."""
    for block in density.blocks:
        block.information = block.shift_beta = block.shift_c = None
        block.implicit_shift = False
        block.weights = np.linspace(0.05, 0.95, block.n_basis)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_logp_equals_pymc_model(kinship, case):
    built = _built(kinship, case)
    assert multiterm_obstacles(built) == []
    density = multiterm_density(built, dtype="float64", merge_olre=False)
    _spread_weights(density)
    logp_pymc = built.model.compile_logp()
    rng = np.random.default_rng(2)
    for _ in range(3):
        x = density.initial_point(int(rng.integers(100))) + rng.normal(0, 0.3, density.ndim)
        expected = float(logp_pymc(_pymc_point(density, x))) + density.log_jacobian(x)
        # probit: PyMC's invprobit differs from scipy's log_ndtr by up to ~1e-7 per record
        tolerance = 1e-5 if case[3] == "probit" else 1e-8
        assert density.logp(x)[0] == pytest.approx(expected, abs=tolerance)


@pytest.mark.parametrize("case", CASES[:7], ids=[c[0] for c in CASES[:7]])
def test_gradient_matches_finite_differences(kinship, case):
    density = multiterm_density(_built(kinship, case), dtype="float64", merge_olre=False)
    _spread_weights(density)
    x = density.initial_point(3) + np.random.default_rng(3).normal(0, 0.3, density.ndim)
    _, grad = density.logp(x)
    step = 1e-6
    numeric = [
        (density.logp(x + step * e)[0] - density.logp(x - step * e)[0]) / (2 * step)
        for e in np.eye(density.ndim)
    ]
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-5)


def test_deterministics_equal_pymc_model(kinship):
    """expand() gives the PyMC model's deterministics (u, var, shares, residual) at a point
    (the observation-level effect a block of its own)."""
    built = _built(kinship, CASES[0])
    density = multiterm_density(built, dtype="float64", merge_olre=False)
    _spread_weights(density)
    x = density.initial_point(5)
    out = density.expand(x)
    point = _pymc_point(density, x)
    names = ["u_id", "u_herd", "var_id", "var_herd", "var_residual", "variance_share", "beta"]
    # deterministics as functions of the value variables (not of the random variables,
    # which compile_fn would draw)
    outputs = built.model.replace_rvs_by_values([built.model[nm] for nm in names])
    fn = built.model.compile_fn(
        outputs, inputs=built.model.value_vars, on_unused_input="ignore", point_fn=False
    )
    for name, value in zip(names, fn(**point), strict=True):
        np.testing.assert_allclose(out[name], value, rtol=1e-10, err_msg=name)


def test_weights_follow_information(kinship):
    """Partial non-centring: a level seen in more records gets a larger weight (closer to
    centred), and every weight lies in (0, 1)."""
    density = multiterm_density(_built(kinship, CASES[6]), dtype="float64", weights="partial")
    (herd,) = [b for b in density.blocks if b.name == "herd"]
    counts = np.bincount(herd.index, minlength=herd.n_levels)
    assert np.all((herd.weights > 0) & (herd.weights < 1))
    assert np.all(np.diff(herd.weights[np.argsort(counts)]) >= -1e-9)


def test_routes(kinship):
    """The one-term density keeps its models; the rest that are intercept-only go here."""
    one = _built(kinship, ("", "y ~ x + (1|id)", "poisson", "log", True, 1, None, False))
    assert glmm_closed_form_obstacles(one) == []
    assert type(get_strategy("latent").closed_form(one)).__name__ == "GLMMDensity"
    many = _built(kinship, CASES[0])
    assert glmm_closed_form_obstacles(many) != []
    assert type(get_strategy("latent").closed_form(many)).__name__ == "MultiTermDensity"
    df = _data(kinship, "poisson")
    spec = bl.specify("y ~ 1 + (1 + x | herd)", df, family="poisson")
    slopes = build(spec, strategy="latent")
    assert multiterm_obstacles(slopes) == []
    assert type(get_strategy("latent").closed_form(slopes)).__name__ == "MultiTermDensity"
    gaussian = build(bl.specify("x2 ~ 1 + (1 + x | herd)", df), strategy="latent")
    assert "no closed-form GLMM density" in multiterm_obstacles(gaussian)[0]
    assert get_strategy("latent").closed_form(gaussian) is None


@pytest.mark.slow
def test_posterior_matches_pymc_nuts(kinship):
    """Poisson K + iid herd + olre (the OLRE merged into the kinship term, the split drawn
    per draw): nutpie on the density against PyMC's NUTS on the graph; posterior means of
    the SDs within MC error (4 pooled SEs)."""
    import arviz as az
    import pymc as pm

    from bayeslmm.engines.bayes.sampling import sample

    built = _built(kinship, CASES[0])
    assert multiterm_density(built).merged
    idata, _ = sample(built, draws=1000, tune=1000, chains=2, seed=4, sampler="nutpie")
    assert "sd_herd" in idata.posterior
    with built.model, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = pm.sample(
            draws=1000, tune=1000, chains=2, random_seed=5, progressbar=False, target_accept=0.95
        )
    for name in ["sd_id", "sd_herd", "sd_olre", "beta"]:
        a = idata.posterior[name].values.reshape(-1, *idata.posterior[name].shape[2:])
        b = ref.posterior[name].values.reshape(-1, *ref.posterior[name].shape[2:])
        se = np.sqrt(
            (a.std(0) / np.sqrt(az.ess(idata, var_names=[name])[name].values)) ** 2
            + (b.std(0) / np.sqrt(az.ess(ref, var_names=[name])[name].values)) ** 2
        )
        assert np.all(np.abs(a.mean(0) - b.mean(0)) < 4 * se), name


@pytest.mark.parametrize("case", CASES[:3] + CASES[6:8], ids=[c[0] for c in CASES[:3] + CASES[6:8]])
def test_conditional_scaling_logp_and_gradient(kinship, case):
    """The default (conditional scaling with the β-dependent centre): logp equals the PyMC
    model's plus the Jacobian, and the gradient equals finite differences."""
    built = _built(kinship, case)
    density = multiterm_density(built, dtype="float64", merge_olre=False)
    assert all(b.information is not None for b in density.blocks)
    assert all(b.shift_beta is not None for b in density.blocks[:-1])
    last = density.blocks[-1]  # its centre's slopes implicit, or as matrices (kinship last)
    assert last.implicit_shift != (last.shift_beta is not None)
    logp_pymc = built.model.compile_logp()
    rng = np.random.default_rng(7)
    x = density.initial_point(1) + rng.normal(0, 0.3, density.ndim)
    expected = float(logp_pymc(_pymc_point(density, x))) + density.log_jacobian(x)
    assert density.logp(x)[0] == pytest.approx(expected, abs=1e-8)
    _, grad = density.logp(x)
    step = 1e-6
    numeric = [
        (density.logp(x + step * e)[0] - density.logp(x - step * e)[0]) / (2 * step)
        for e in np.eye(density.ndim)
    ]
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-5)


# -- the observation-level effect merged into a kinship term -------------------------

#: Poisson + OLRE with a kinship term of one record per individual: K + iid herd, K + K∘K,
#: a truncated basis (rank_share), and K + iid herd with the records shuffled (the term's
#: levels a permutation of the records)
MERGED_CASES = [CASES[0], CASES[2], CASES[8], ("shuffled", *CASES[0][1:])]


def _merged_built(kinship, case):
    built = _built(kinship, case)
    if case[0] != "shuffled":
        return built
    df = _data(kinship, "poisson").sample(frac=1.0, random_state=3).reset_index(drop=True)
    spec = bl.specify(case[1], df, kinship={"id": kinship}, family=Poisson(overdispersion=True))
    assert not np.array_equal(spec.terms[0].index, np.arange(N))
    return build(spec, strategy="latent")


def _merged_effect(density, x):
    """(merged block, its effect per level f = a + e, the map v -> (z of the other blocks,
    f): affine at fixed β and hyperparameters)."""
    (merged,) = [b for b in density.blocks if getattr(b, "merged", False)]
    k = density.blocks.index(merged)
    start = density.n_hyper

    def latent_map(v):
        y = np.concatenate([x[:start], v])
        latent = density.latent(y)
        parts = [z for j, (_, z) in enumerate(latent) if j != k]
        return np.concatenate([*parts, merged.vectors @ latent[k][0]])

    return merged, merged.vectors @ density.latent(x)[k][0], latent_map


@pytest.mark.parametrize("weights", ["auto", "conditional", "spread"])
@pytest.mark.parametrize("case", MERGED_CASES, ids=[c[0] for c in MERGED_CASES])
def test_merged_olre_logp_equals_pymc_model_with_dense_normal(kinship, case, weights):
    """The merged density is the PyMC model with a + e integrated to its dense normal:
    logp = PyMC logp − log N(z_id) − log N(z_olre) + log N(f; 0, σ_a² K_r + σ_o² I)
    + log |∂(z_others, f)/∂v| (the map v → f is affine at fixed hyperparameters, so its
    Jacobian from finite differences is exact to rounding)."""
    built = _merged_built(kinship, case)
    density = multiterm_density(built, dtype="float64", weights=weights.replace("spread", "auto"))
    assert density.merged and "olre" not in [b.name for b in density.blocks]
    if weights == "spread":
        _spread_weights(density)
    logp_pymc = built.model.compile_logp()
    r = len(built.model.coords["id_basis"])
    F = kinship.root().factor[:, :r]
    rng = np.random.default_rng(21)
    for _ in range(2):
        x = density.initial_point(int(rng.integers(100))) + rng.normal(0, 0.3, density.ndim)
        out = density.expand(x, np.random.default_rng(1))
        point = {density.meta["beta_name"]: out[density.meta["beta_name"]]}
        for name in [b.name for b in density.blocks] + ["olre"]:
            point[f"sd_{name}_log__"] = np.log(out[f"sd_{name}"])
            point[f"z_{name}"] = out[f"z_{name}"]
        merged, f, latent_map = _merged_effect(density, x)
        cov = out["var_id"] * F @ F.T + out["var_olre"] * np.eye(N)
        v = x[density.n_hyper :]
        step = 1e-3
        jac = np.column_stack(
            [
                (latent_map(v + step * e) - latent_map(v - step * e)) / (2 * step)
                for e in np.eye(v.size)
            ]
        )
        expected = (
            float(logp_pymc(point))
            - stats.norm.logpdf(out["z_id"]).sum()
            - stats.norm.logpdf(out["z_olre"]).sum()
            + stats.multivariate_normal.logpdf(f, np.zeros(N), cov)
            + np.linalg.slogdet(jac)[1]
        )
        assert density.logp(x)[0] == pytest.approx(expected, abs=1e-7)


@pytest.mark.parametrize("weights", ["auto", "conditional", "spread"])
@pytest.mark.parametrize("case", MERGED_CASES, ids=[c[0] for c in MERGED_CASES])
def test_merged_olre_gradient_matches_finite_differences(kinship, case, weights):
    density = multiterm_density(
        _merged_built(kinship, case), dtype="float64", weights=weights.replace("spread", "auto")
    )
    if weights == "spread":
        _spread_weights(density)
    x = density.initial_point(3) + np.random.default_rng(3).normal(0, 0.3, density.ndim)
    _, grad = density.logp(x)
    step = 1e-6
    numeric = [
        (density.logp(x + step * e)[0] - density.logp(x - step * e)[0]) / (2 * step)
        for e in np.eye(density.ndim)
    ]
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", [CASES[0], MERGED_CASES[3]], ids=["K+iid", "shuffled"])
def test_merged_olre_split_gives_the_pymc_models_deterministics(kinship, case):
    """The drawn split keeps the linear predictor (u_id + σ_o z_olre = a + e per record),
    puts nothing of a outside the kinship basis, and the stored deterministics are the PyMC
    model's at the drawn point."""
    built = _merged_built(kinship, case)
    density = multiterm_density(built, dtype="float64")
    x = density.initial_point(5) + np.random.default_rng(5).normal(0, 0.3, density.ndim)
    out = density.expand(x, np.random.default_rng(6))
    merged, f, _ = _merged_effect(density, x)
    index = np.asarray(built.spec.terms[0].index)
    np.testing.assert_allclose(
        out["u_id"][:, 0][index] + out["sd_olre"] * out["z_olre"], f[index], atol=1e-10
    )
    assert out["z_id"].shape == (len(built.model.coords["id_basis"]), 1)
    point = {density.meta["beta_name"]: out[density.meta["beta_name"]]}
    for name in ["id", "herd", "olre"]:
        point[f"sd_{name}_log__"] = np.log(out[f"sd_{name}"])
        point[f"z_{name}"] = out[f"z_{name}"]
    names = ["u_id", "u_herd", "var_id", "var_herd", "var_olre", "var_residual", "variance_share"]
    model = built.model
    outputs = model.replace_rvs_by_values([model[nm] for nm in names])
    fn = model.compile_fn(
        outputs, inputs=model.value_vars, on_unused_input="ignore", point_fn=False
    )
    for name, value in zip(names, fn(**point), strict=True):
        np.testing.assert_allclose(out[name], value, rtol=1e-10, err_msg=name)
    # the split's draws follow a | a + e: mean σ_a² s / A · c in the eigenbasis
    draws = np.array(
        [density.expand(x, np.random.default_rng(s))["u_id"][:, 0] for s in range(400)]
    )
    c = merged.vectors.T @ f
    s_ = merged.eigenvalues
    var_a, var_o = float(out["var_id"]), float(out["var_olre"])
    share = var_a * s_ / (var_a * s_ + var_o)
    a = draws @ merged.vectors  # each draw in the eigenbasis
    se = np.sqrt(share * var_o / len(draws)) + 1e-12
    assert np.max(np.abs(a.mean(0) - share * c) / se) < 5.0


@pytest.mark.parametrize("case", [CASES[0], MERGED_CASES[3]], ids=["K+iid", "shuffled"])
def test_explicit_last_shift_equals_implicit(kinship, case):
    """A kinship block last after few iid levels takes its centre's slopes as matrices
    (G_β = Bᵀ W X, G_c = Bᵀ W B_herd): the same density and gradient as the implicit form
    Bᵀ (W ∘ (η − η̂))."""
    built = _merged_built(kinship, case)
    explicit = multiterm_density(built, dtype="float64", weights="conditional")
    implicit = multiterm_density(built, dtype="float64", weights="conditional")
    last = explicit.blocks[-1]
    assert last.merged and not last.implicit_shift and last.shift_c is not None
    implicit.blocks[-1].shift_beta = implicit.blocks[-1].shift_c = None
    implicit.blocks[-1].implicit_shift = True
    rng = np.random.default_rng(8)
    for _ in range(3):
        x = explicit.initial_point(int(rng.integers(100))) + rng.normal(0, 0.3, explicit.ndim)
        value, grad = explicit.logp(x)
        ref_value, ref_grad = implicit.logp(x)
        assert value == pytest.approx(ref_value, abs=1e-10)
        np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-10)


def test_merged_olre_only_where_it_applies(kinship):
    """Merged: a kinship term with one record per individual. Not merged: repeated records,
    no kinship (crossed iid), no observation-level effect, or merge_olre=False."""
    assert merged_term(_built(kinship, CASES[0])) == "id"
    assert merged_term(_built(kinship, CASES[2])) == "id"  # the first of K, K∘K
    for case in (CASES[1], CASES[6], CASES[7]):
        built = _built(kinship, case)
        assert merged_term(built) is None
        assert not multiterm_density(built, dtype="float64").merged
    unmerged = multiterm_density(_built(kinship, CASES[0]), merge_olre=False)
    assert not unmerged.merged and unmerged.blocks[-1].name == "olre"
    # merged: non-centred by default (measured better), conditional scaling on request
    merged = multiterm_density(_built(kinship, CASES[0]), dtype="float64")
    assert all(b.information is None and not b.weights.any() for b in merged.blocks)
    scaled = multiterm_density(_built(kinship, CASES[0]), dtype="float64", weights="conditional")
    assert all(b.information is not None for b in scaled.blocks)


# -- terms with slopes ------------------------------------------------------------------

#: (name, formula, family, link, olre, records per individual, rank_share, epistatic)
SLOPE_CASES = [
    ("bernoulli K slope", "y ~ x + (1 + x|id)", "bernoulli", "logit", False, 1, None, False),
    ("poisson K slope olre", "y ~ x + (1 + x|id)", "poisson", "log", True, 1, None, False),
    ("bernoulli iid ||", "y ~ x + (1 + x||herd)", "bernoulli", "logit", False, 2, None, False),
    (
        "binomial K slope + iid",
        "y ~ x + (1 + x|id) + (1|herd)",
        "binomial",
        "logit",
        False,
        1,
        None,
        False,
    ),
    ("poisson K slope reps olre", "y ~ x + (1 + x|id)", "poisson", "log", True, 2, None, False),
    ("probit K slope rank", "y ~ x + (1 + x|id)", "bernoulli", "probit", False, 1, 0.9, False),
    (
        "poisson iid 3 coefs + 0 + x",
        "y ~ x + (1 + x + x2|herd) + (0 + x2|site)",
        "poisson",
        "log",
        False,
        2,
        None,
        False,
    ),
]


def _value_vars(density, x):
    """The PyMC model's point (value variables) at x, and for each value variable the
    indices of x it is (noncentred coordinates: the same numbers, reshaped)."""
    p = density.n_fixed
    point, where = {}, {}
    if p:
        point[density.meta["beta_name"]] = x[:p]
        where[density.meta["beta_name"]] = np.arange(p)
    latent = density.latent(x)
    for block, hs, sl, (_, z) in zip(
        density.blocks, density._hyper_slices, density._slices, latent, strict=True
    ):
        g = block.name
        kind = getattr(block, "kind", "scalar")
        name = f"chol_{g}_cholesky-cov-packed__" if kind == "chol" else f"sd_{g}_log__"
        point[name] = x[hs] if kind in ("chol", "diag") else x[hs][0]
        where[name] = np.arange(hs.start, hs.stop)
        shape = (z.size,) if g == "olre" else (block.n_basis, getattr(block, "n_coef", 1))
        point[f"z_{g}"] = z.reshape(shape)
        where[f"z_{g}"] = np.arange(sl.start, sl.stop)
    return point, where


@pytest.mark.parametrize("case", SLOPE_CASES, ids=[c[0] for c in SLOPE_CASES])
def test_slopes_logp_and_gradient_equal_pymc_model(kinship, case):
    """Non-centred coordinates are the PyMC model's value variables: the density and its
    gradient equal model.compile_logp / compile_dlogp at the same point."""
    built = _built(kinship, case)
    assert multiterm_obstacles(built) == []
    density = multiterm_density(built, dtype="float64", weights="noncentred")
    assert density.slope_blocks
    model = built.model
    logp_pymc, dlogp_pymc = model.compile_logp(), model.compile_dlogp()
    rng = np.random.default_rng(11)
    for _ in range(3):
        x = density.initial_point(int(rng.integers(100))) + rng.normal(0, 0.4, density.ndim)
        point, where = _value_vars(density, x)
        assert density.log_jacobian(x) == 0.0
        value, grad = density.logp(x)
        tolerance = 1e-5 if case[3] == "probit" else 1e-8
        assert value == pytest.approx(float(logp_pymc(point)), abs=tolerance)
        expected = dlogp_pymc(point)
        order = np.concatenate([where[v.name] for v in model.value_vars])
        np.testing.assert_allclose(grad[order], expected, rtol=1e-7, atol=1e-6)


@pytest.mark.parametrize(
    "case",
    [SLOPE_CASES[1], SLOPE_CASES[4], SLOPE_CASES[6]],
    ids=[SLOPE_CASES[i][0] for i in (1, 4, 6)],
)
def test_slopes_conditionally_scaled(kinship, case):
    """Poisson, slopes="conditional": the slopes are conditionally scaled (Z_j = R_j⁻ᵀ v_j)
    and the observation-level effect too, its centre following η and so the slopes'
    effects; by default everything is non-centred (Jacobian 0). logp equals the PyMC
    model's plus the Jacobian and the gradient equals finite differences."""
    built = _built(kinship, case)
    logp_pymc = built.model.compile_logp()
    for slopes in ("noncentred", "conditional"):
        density = multiterm_density(built, dtype="float64", slopes=slopes)
        conditional = slopes == "conditional"
        assert all(b.implicit_shift == conditional for b in density.intercept_blocks[-1:])
        scaled = [b.information is not None for b in density.slope_blocks]
        assert all(scaled) if conditional else not any(scaled)
        assert (density.log_jacobian(density.initial_point(1)) != 0.0) == conditional
        rng = np.random.default_rng(12)
        x = density.initial_point(2) + rng.normal(0, 0.4, density.ndim)
        point, _ = _value_vars(density, x)
        expected = float(logp_pymc(point)) + density.log_jacobian(x)
        value, grad = density.logp(x)
        assert value == pytest.approx(expected, abs=1e-8)
        step = 1e-6
        numeric = [
            (density.logp(x + step * e)[0] - density.logp(x - step * e)[0]) / (2 * step)
            for e in np.eye(density.ndim)
        ]
        np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-5)


def test_slope_deterministics_equal_pymc_model(kinship):
    """expand() gives the PyMC model's slope deterministics (sd, chol, corr, cov, u, var,
    shares) at a point."""
    case = ("", "y ~ x + (1 + x|id) + (1 + x||herd)", "poisson", "log", True, 1, None, False)
    built = _built(kinship, case)
    density = multiterm_density(built, dtype="float64")
    x = density.initial_point(5) + np.random.default_rng(5).normal(0, 0.4, density.ndim)
    out = density.expand(x)
    point, _ = _value_vars(density, x)
    names = [
        "sd_id",
        "chol_id",
        "corr_id",
        "cov_id",
        "u_id",
        "var_id",
        "sd_herd",
        "cov_herd",
        "u_herd",
        "var_herd",
        "var_residual",
        "variance_share",
        "beta",
    ]
    model = built.model
    outputs = model.replace_rvs_by_values([model[nm] for nm in names])
    fn = model.compile_fn(
        outputs, inputs=model.value_vars, on_unused_input="ignore", point_fn=False
    )
    for name, value in zip(names, fn(**point), strict=True):
        np.testing.assert_allclose(out[name], value, rtol=1e-10, atol=1e-12, err_msg=name)


def test_slope_draws_carry_the_pymc_models_names_and_dims(kinship):
    """A short nutpie run of the closed form stores every variable of the PyMC model (free
    and deterministic, constrained) with the model's dims; ``chol_<g>`` as ArviZ names it."""
    from bayeslmm.engines.bayes.sampling import sample

    case = ("", "y ~ x + (1 + x|id) + (1 + x||herd)", "poisson", "log", True, 1, None, False)
    built = _built(kinship, case)
    idata, timing = sample(built, draws=10, tune=10, chains=1, seed=1, sampler="nutpie")
    assert timing["compile_s"] < 5.0  # nothing compiled
    model = built.model
    for var in model.free_RVs + model.deterministics:
        dims = model.named_vars_to_dims.get(var.name) or (
            (f"{var.name}_dim_0",) if var.name.startswith("chol_") else ()
        )
        assert idata.posterior[var.name].dims == ("chain", "draw", *dims), var.name


def test_merged_draws_carry_the_pymc_models_names_and_dims(kinship):
    """A short nutpie run of the merged closed form (the fused kernel, the split drawn per
    draw with a generator per chain) stores every variable of the PyMC model with its
    dims, and the same seed gives the same draws."""
    from bayeslmm.engines.bayes.sampling import sample

    built = _built(kinship, CASES[0])
    runs = [sample(built, draws=10, tune=10, chains=1, seed=1, sampler="nutpie") for _ in "ab"]
    idata, timing = runs[0]
    assert timing["compile_s"] < 5.0  # nothing compiled
    model = built.model
    for var in model.free_RVs + model.deterministics:
        dims = model.named_vars_to_dims.get(var.name) or ()
        assert idata.posterior[var.name].dims == ("chain", "draw", *dims), var.name
    np.testing.assert_array_equal(idata.posterior["u_id"], runs[1][0].posterior["u_id"])


@pytest.mark.slow
def test_slope_posterior_matches_pymc_nuts(kinship):
    """Poisson kinship (1 + x | id), 2 records each: nutpie on the closed form against
    PyMC's NUTS on the PyMC graph; posterior means of the slope variance, the correlation
    and β within MC error (4 pooled SEs)."""
    import arviz as az
    import pymc as pm

    from bayeslmm.engines.bayes.sampling import sample

    case = ("", "y ~ x + (1 + x|id)", "poisson", "log", False, 2, None, False)
    built = _built(kinship, case)
    assert type(get_strategy("latent").closed_form(built)).__name__ == "MultiTermDensity"
    idata, _ = sample(built, draws=1000, tune=1000, chains=2, seed=4, sampler="nutpie")
    with built.model, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = pm.sample(
            draws=1000, tune=1000, chains=2, random_seed=5, progressbar=False, target_accept=0.95
        )

    def draws(idata, name, index):
        values = idata.posterior[name].values
        return values.reshape(-1, *values.shape[2:])[(slice(None), *index)]

    for name, index in [("cov_id", (1, 1)), ("corr_id", (0, 1)), ("beta", (1,))]:
        a, b = draws(idata, name, index), draws(ref, name, index)
        se = np.sqrt(a.var() / az.ess(a.reshape(2, -1)) + b.var() / az.ess(b.reshape(2, -1)))
        assert abs(a.mean() - b.mean()) < 4 * se, name


# -- the fused kernel ---------------------------------------------------------------------

KERNEL_CASES = [*CASES, MERGED_CASES[3]]


@pytest.mark.parametrize("merge", [True, False], ids=["merged", "separate"])
@pytest.mark.parametrize("weights", ["auto", "conditional", "partial", "spread", "noncentred"])
@pytest.mark.parametrize("case", KERNEL_CASES, ids=[c[0] for c in KERNEL_CASES])
def test_fused_kernel_equals_numpy_density(kinship, case, weights, merge):
    """The numba kernel's value and gradient equal the numpy density's at random points,
    in every intercept-only configuration and weighting (1e-10)."""
    from bayeslmm.engines.bayes.glmm_terms_kernels import fused_logp

    built = _merged_built(kinship, case)
    density = multiterm_density(
        built,
        dtype="float64",
        weights="partial" if weights == "spread" else weights,
        merge_olre=merge,
    )
    if weights == "spread":
        _spread_weights(density)
    fused = fused_logp(density)
    assert fused is not None
    rng = np.random.default_rng(13)
    for _ in range(4):
        x = density.initial_point(int(rng.integers(100))) + rng.normal(0, 0.5, density.ndim)
        value, grad = fused(x)
        ref_value, ref_grad = density.numpy_logp(x)
        assert value == pytest.approx(ref_value, rel=1e-12, abs=1e-10)
        np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-10)


def test_fused_kernel_routes(kinship):
    """logp is the fused kernel for intercept-only models; slopes keep numpy."""
    from bayeslmm.engines.bayes.glmm_terms_kernels import fused_logp

    density = multiterm_density(_built(kinship, CASES[0]))
    x = density.initial_point(2)
    value, grad = density.logp(x)
    assert callable(density._fused)
    ref_value, ref_grad = density.numpy_logp(x)  # float32 eigenvectors: the BLAS may differ
    assert value == pytest.approx(ref_value, abs=1e-6)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-6)
    slopes = multiterm_density(_built(kinship, SLOPE_CASES[1]))
    assert fused_logp(slopes) is None
    slopes.logp(slopes.initial_point(1))
    assert slopes._fused is False
