"""Properties every fit must have, checked on generated data (hypothesis).

A model's answer may not depend on how the data are presented: the order of the rows, the
spelling of the ids, the units of the response (y → a + c·y), the scale of the kinship
(K → cK: h² is the genetic variance at the sample's own kinship scale, σ_g² (mean diag K −
mean K) (Legarra 2016), over the phenotypic variance) or a kinship given for more individuals
than the data hold. REML estimates must agree to optimiser precision; NUTS
posteriors either draw identically with the same seed (when the model's arrays are
identical) or agree within Monte-Carlo error.
"""

from __future__ import annotations

import warnings

import arviz as az
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import bayeslmm as bl

FORMULAS = ("y ~ x + (1|id)", "y ~ x + (1|id) + (1|g)")  # spectral REML and AI-REML
NUTS = {"draws": 200, "tune": 200, "chains": 2, "cores": 1, "progressbar": False}
# no example database: a run leaves nothing behind in the working tree
# derandomize: the same examples on every run, so that CI never meets a new one by chance
# (run with --hypothesis-seed=random or a larger max_examples to explore)
REML_SETTINGS = settings(
    max_examples=8,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
NUTS_SETTINGS = settings(
    max_examples=2,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


def make_data(seed: int, n: int, extra: int = 0) -> tuple[bl.Kinship, pd.DataFrame]:
    """A GRM of n + ``extra`` individuals (standardised markers, mean diagonal 1) and one
    record for each of the first n, h² about 0.5."""
    rng = np.random.default_rng(seed)
    total = n + extra
    X = rng.binomial(2, rng.uniform(0.1, 0.9, 3 * total), size=(total, 3 * total)).astype(float)
    Z = (X - X.mean(0)) / np.where(X.std(0) > 0, X.std(0), 1.0)
    ids = [f"ind{k:03d}" for k in range(total)]
    K = bl.Kinship(Z @ Z.T / Z.shape[1], ids, name="K")
    s, U = np.linalg.eigh(K.matrix[:n, :n])
    g = U @ (np.sqrt(np.clip(s, 0.0, None)) * rng.normal(size=n))
    x = rng.normal(size=n)
    df = pd.DataFrame(
        {
            "y": 1.0 + 0.5 * x + g + rng.normal(size=n),
            "x": x,
            "id": ids[:n],
            "g": np.resize(["a", "b", "c", "d"], n),
        }
    )
    return K, df


def reml(formula: str, df: pd.DataFrame, K: bl.Kinship):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # boundary fits are fine here: both sides agree
        return bl.LMM(formula, df, kinship={"id": K}).fit(method="reml")


def components(fit) -> pd.Series:
    return fit.variance_components().set_index("grp")["vcov"]


def assert_same_reml(a, b, c: float = 1.0) -> None:
    """Same fit, up to the response scale c (variances × c², fixed effects × c)."""
    va, vb = components(a), components(b)
    total = float(va.sum())
    np.testing.assert_allclose(vb.to_numpy(), c**2 * va.to_numpy(), rtol=1e-5, atol=1e-7 * total)
    h2a, h2b = (float(v["id"] / v.sum()) for v in (va, vb))
    assert h2b == pytest.approx(h2a, abs=1e-6)


# ---------------------------------------------------------------------------------------
# REML
# ---------------------------------------------------------------------------------------
@REML_SETTINGS
@given(
    seed=st.integers(0, 2**16),
    n=st.integers(24, 60),
    formula=st.sampled_from(FORMULAS),
    order=st.randoms(use_true_random=False),
)
def test_reml_is_unchanged_by_row_order(seed, n, formula, order):
    K, df = make_data(seed, n)
    rows = list(range(n))
    order.shuffle(rows)
    a, b = reml(formula, df, K), reml(formula, df.iloc[rows], K)
    assert_same_reml(a, b)
    np.testing.assert_allclose(
        b.fixed_effects()["estimate"], a.fixed_effects()["estimate"], rtol=1e-5, atol=1e-7
    )
    assert b.loglik_reml == pytest.approx(a.loglik_reml, abs=1e-7)


@REML_SETTINGS
@given(seed=st.integers(0, 2**16), n=st.integers(24, 60), formula=st.sampled_from(FORMULAS))
@example(seed=1952, n=60, formula="y ~ x + (1|id)")  # optimum at h² = 1, where V is singular
def test_reml_is_unchanged_by_id_relabelling(seed, n, formula):
    K, df = make_data(seed, n)
    # new names in the reverse alphabetical order of the old ones, numbers as text
    new = {old: str(1000 - k) for k, old in enumerate(K.ids)}
    K2 = bl.Kinship(K.matrix, [new[i] for i in K.ids], name="K")
    a, b = reml(formula, df, K), reml(formula, df.assign(id=df["id"].map(new)), K2)
    assert_same_reml(a, b)
    assert b.loglik_reml == pytest.approx(a.loglik_reml, abs=1e-7)
    ua = a.blups["id"]["(Intercept)"].rename(index=new)
    ub = b.blups["id"]["(Intercept)"]
    scale = float(np.abs(ua).max()) + 1e-12
    np.testing.assert_allclose(ub.loc[ua.index], ua, rtol=1e-4, atol=1e-5 * scale)


@REML_SETTINGS
@given(
    seed=st.integers(0, 2**16),
    n=st.integers(24, 60),
    formula=st.sampled_from(FORMULAS),
    shift=st.floats(-1e6, 1e6),
    c=st.floats(1e-4, 1e4) | st.floats(-1e4, -1e-4),
)
def test_reml_is_equivariant_under_affine_response(seed, n, formula, shift, c):
    K, df = make_data(seed, n)
    a, b = reml(formula, df, K), reml(formula, df.assign(y=shift + c * df["y"]), K)
    assert_same_reml(a, b, c)
    fa, fb = a.fixed_effects()["estimate"], b.fixed_effects()["estimate"]
    assert fb["x"] == pytest.approx(c * fa["x"], rel=1e-5, abs=1e-6 * abs(c))
    assert fb["(Intercept)"] == pytest.approx(shift + c * fa["(Intercept)"], rel=1e-6, abs=1e-5)
    # y → a + c·y multiplies the REML density by |c|^-(n - p); the shifted data carry rounding
    # of ε·|a| against a spread |c|·sd(y), which moves each residual's square by that much
    p = len(fa)
    rounding = len(df) * np.finfo(float).eps * abs(shift) / (abs(c) * df["y"].std())
    assert b.loglik_reml == pytest.approx(
        a.loglik_reml - (n - p) * np.log(abs(c)), abs=1e-6 + 10 * rounding
    )


@REML_SETTINGS
@given(
    seed=st.integers(0, 2**16),
    n=st.integers(24, 60),
    formula=st.sampled_from(FORMULAS),
    c=st.floats(0.01, 100.0),
)
def test_reml_h2_is_unchanged_by_the_scale_of_the_kinship(seed, n, formula, c):
    """K → cK divides σ_g² by c and leaves h² (and the fit) unchanged."""
    K, df = make_data(seed, n)
    a = reml(formula, df, K)
    b = reml(formula, df, bl.Kinship(c * K.matrix, K.ids, name="K"))
    ha, hb = (f.heritability().loc["h2"] for f in (a, b))
    assert hb["estimate"] == pytest.approx(ha["estimate"], abs=1e-6)
    assert hb["se"] == pytest.approx(ha["se"], rel=1e-3, abs=1e-6)
    va, vb = components(a), components(b)
    assert vb["id"] == pytest.approx(va["id"] / c, rel=1e-5, abs=1e-7 * va.sum())
    assert b.loglik_reml == pytest.approx(a.loglik_reml, abs=1e-6)


@REML_SETTINGS
@given(
    seed=st.integers(0, 2**16),
    n=st.integers(24, 50),
    extra=st.integers(1, 20),
    formula=st.sampled_from(FORMULAS),
    order=st.randoms(use_true_random=False),
)
def test_reml_with_a_kinship_for_a_superset_of_ids(seed, n, extra, formula, order):
    """A GRM of more individuals (in any order) than the data: the same fit as the data's own
    sub-matrix."""
    K, df = make_data(seed, n, extra)
    own = bl.Kinship(K.matrix[:n, :n], K.ids[:n], name="K")
    ids = list(K.ids)
    order.shuffle(ids)
    shuffled = K.subset(ids)
    a, b = reml(formula, df, own), reml(formula, df, shuffled)
    assert_same_reml(a, b)
    assert b.loglik_reml == pytest.approx(a.loglik_reml, abs=1e-7)


# ---------------------------------------------------------------------------------------
# NUTS (nutpie on the spectral model's closed-form density: nothing compiled per data set)
# ---------------------------------------------------------------------------------------
def nuts(df: pd.DataFrame, K: bl.Kinship, seed: int = 1):
    model = bl.LMM("y ~ x + (1|id)", df, kinship={"id": K})
    return model.fit(seed=seed, verbose=False, **NUTS)


def assert_posteriors_agree(a, b, name: str = "h2", z: float = 4.5) -> None:
    """Posterior means within z Monte-Carlo standard errors of each other."""
    da, db = a.posterior[name], b.posterior[name]
    se = float(np.hypot(az.mcse(da).to_array().item(), az.mcse(db).to_array().item()))
    assert abs(float(da.mean()) - float(db.mean())) <= z * se, (float(da.mean()), float(db.mean()))


@NUTS_SETTINGS
@given(seed=st.integers(0, 2**16), n=st.integers(20, 30), order=st.randoms(use_true_random=False))
def test_nuts_is_unchanged_by_row_order(seed, n, order):
    K, df = make_data(seed, n)
    rows = list(range(n))
    order.shuffle(rows)
    assert_posteriors_agree(nuts(df, K), nuts(df.iloc[rows], K))


@NUTS_SETTINGS
@given(seed=st.integers(0, 2**16), n=st.integers(20, 30))
def test_nuts_draws_are_identical_after_id_relabelling(seed, n):
    """The levels follow the kinship's order, so relabelled ids give the same arrays and,
    with the same seed, the same draws."""
    K, df = make_data(seed, n)
    new = {old: f"x{1000 - k}" for k, old in enumerate(K.ids)}
    K2 = bl.Kinship(K.matrix, [new[i] for i in K.ids], name="K")
    a, b = nuts(df, K), nuts(df.assign(id=df["id"].map(new)), K2)
    np.testing.assert_array_equal(a.posterior["h2"].values, b.posterior["h2"].values)


@NUTS_SETTINGS
@given(
    seed=st.integers(0, 2**16),
    n=st.integers(20, 30),
    shift=st.floats(-1e3, 1e3),
    c=st.floats(1e-2, 1e2),
)
def test_nuts_h2_is_unchanged_by_the_units_of_the_response(seed, n, shift, c):
    """Priors are scaled to the data, so y → a + c·y leaves the h² posterior unchanged."""
    K, df = make_data(seed, n)
    assert_posteriors_agree(nuts(df, K), nuts(df.assign(y=shift + c * df["y"]), K))


@NUTS_SETTINGS
@given(seed=st.integers(0, 2**16), n=st.integers(20, 30), extra=st.integers(1, 15))
def test_nuts_draws_are_identical_with_a_kinship_for_a_superset_of_ids(seed, n, extra):
    K, df = make_data(seed, n, extra)
    own = bl.Kinship(K.matrix[:n, :n], K.ids[:n], name="K")
    a, b = nuts(df, own), nuts(df, K)
    np.testing.assert_array_equal(a.posterior["h2"].values, b.posterior["h2"].values)


@NUTS_SETTINGS
@given(seed=st.integers(0, 2**16), n=st.integers(20, 30), c=st.floats(0.5, 2.0))
def test_nuts_h2_is_unchanged_by_the_scale_of_the_kinship(seed, n, c):
    """Within Monte-Carlo error: the SD prior is not scaled by K, so the two posteriors are
    not identical (c stays within a factor 2)."""
    K, df = make_data(seed, n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bl.kinship.KinshipScaleWarning)
        a = nuts(df, K).heritability().loc["h2"]
        b = nuts(df, bl.Kinship(c * K.matrix, K.ids, name="K")).heritability().loc["h2"]
    mcse = np.hypot(a["sd"] / np.sqrt(a["ess_bulk"]), b["sd"] / np.sqrt(b["ess_bulk"]))
    assert abs(a["mean"] - b["mean"]) <= 4.5 * mcse, (a["mean"], b["mean"])
