"""bl.load_fit of multi-trait folders: a saved fit read back answers like the fit saved.

Round trips of REML (refitted from the stored inputs), NUTS and multi-trait GLMM posteriors
(the draws of posterior.nc) on a dense, a low-rank and a sparse pedigree kinship: every
table of the fit read back equals the original's to 1e-12. Then the checks: a folder saved
with ``inputs=False`` asks for the data, data that are not the fit's are refused, and data
and kinship given explicitly replace the stored ones.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

import bayeslmm as bl
from bayeslmm.errors import DataError
from bayeslmm.kinship.low_rank import LowRankKinship
from bayeslmm.kinship.pedigree_inverse import SparsePedigreeKinship
from bayeslmm.results.multitrait import MultiTraitBayesFit, MultiTraitRemlFit
from bayeslmm.results.multitrait_glmm import MultiTraitGLMMBayesFit
from bayeslmm.results.summary import json_safe

# NUTS on a small sparse pedigree kinship forms the dense A, and says so
pytestmark = pytest.mark.filterwarnings(
    "ignore::bayeslmm.kinship.pedigree_inverse.PedigreeDensifyWarning"
)
FORMULA = "mvbind(y1, y2) ~ x + (1 | id)"
NUTS = {"draws": 40, "tune": 60, "chains": 1, "cores": 1, "progressbar": False, "verbose": False}
TABLES = (
    "genetic_covariance",
    "residual_covariance",
    "genetic_correlation",
    "residual_correlation",
    "heritability",
    "fixed_effects",
)


def _traits(rng: np.random.Generator, root: np.ndarray, ids: list, missing: bool) -> pd.DataFrame:
    """Two correlated traits with genetic values root @ z (K = root rootᵀ), a covariate x;
    with ``missing``, y2 is not recorded for 3 individuals."""
    n = len(ids)
    U = root @ rng.normal(size=(root.shape[1], 2))
    U = U @ np.linalg.cholesky(np.array([[1.0, 0.6], [0.6, 1.0]])).T
    x = rng.normal(size=n)
    Y = U + rng.normal(size=(n, 2)) + np.array([1.0, 2.0]) + np.outer(x, [0.5, 0.0])
    if missing:
        Y[[1, 5, 9], 1] = np.nan
    return pd.DataFrame({"y1": Y[:, 0], "y2": Y[:, 1], "x": x, "id": ids, "unused": 0})


def dense_case() -> tuple[pd.DataFrame, bl.Kinship]:
    rng = np.random.default_rng(11)
    n, p = 40, 120
    ids = [f"i{k}" for k in range(n)]
    W = rng.normal(size=(n, p))
    W = (W - W.mean(axis=0)) / W.std(axis=0)
    K = bl.Kinship(W @ W.T / p + 1e-3 * np.eye(n), ids)
    return _traits(rng, W / np.sqrt(p), ids, missing=True), K


def low_rank_case() -> tuple[pd.DataFrame, LowRankKinship]:
    rng = np.random.default_rng(12)
    n, p = 40, 25
    ids = [f"g{k}" for k in range(n)]
    dosages = rng.binomial(2, rng.uniform(0.2, 0.8, size=p), size=(n, p)).astype(float)
    K = bl.grm(dosages, ids=ids, low_rank=True)
    assert isinstance(K, LowRankKinship)
    # complete data: the NUTS low-rank route takes every trait recorded
    return _traits(rng, np.asarray(K.markers), ids, missing=False), K


def pedigree_case() -> tuple[pd.DataFrame, SparsePedigreeKinship]:
    """60 animals (12 founders, later ones offspring of earlier ones), the last 40 recorded,
    some ids integers in the data; A's Cholesky factor gives the genetic values."""
    rng = np.random.default_rng(13)
    n_animals, founders = 60, 12
    sire, dam = np.zeros(n_animals, dtype=int), np.zeros(n_animals, dtype=int)
    for i in range(founders, n_animals):
        sire[i], dam[i] = rng.choice(i, size=2, replace=False) + 1
    ped = pd.DataFrame({"id": np.arange(1, n_animals + 1), "sire": sire, "dam": dam})
    A = bl.pedigree_relationship(ped, sparse=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dense = bl.pedigree_relationship(ped)
    recorded = [str(i) for i in range(n_animals - 40 + 1, n_animals + 1)]
    sub = dense.subset(recorded).matrix
    root = np.linalg.cholesky(sub + 1e-9 * np.eye(len(recorded)))
    return _traits(rng, root, recorded, missing=True), A


CASES = {"dense": dense_case, "low-rank": low_rank_case, "pedigree": pedigree_case}


def assert_same_tables(back, fit) -> None:
    assert type(back) is type(fit)
    assert back.traits == fit.traits and back.fixed_names == fit.fixed_names
    for name in TABLES:
        got, want = getattr(back, name)(), getattr(fit, name)()
        pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-12, atol=1e-12)


@pytest.fixture(scope="module")
def case():
    cache: dict[str, tuple] = {}

    def get(name: str):
        if name not in cache:
            cache[name] = CASES[name]()
        return cache[name]

    return get


# -- REML ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CASES))
def test_reml_round_trip_from_the_stored_inputs(name, case, tmp_path):
    df, K = case(name)
    fit = bl.LMM(FORMULA, df, kinship={"id": K}).fit(method="reml")
    fit.save(tmp_path / "out")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert set(summary["inputs"]["columns"]) == {"y1", "y2", "x", "id"}  # not "unused"
    back = bl.load_fit(tmp_path / "out")
    assert isinstance(back, MultiTraitRemlFit) and back.route == fit.route
    assert back.spec.ids == fit.spec.ids
    assert type(back.spec.kinship) is type(fit.spec.kinship)
    np.testing.assert_array_equal(back.spec.Y, fit.spec.Y)  # NaN where not recorded
    assert_same_tables(back, fit)
    assert back.loglik == pytest.approx(fit.loglik, rel=1e-12)
    if name == "pedigree":  # every pedigree animal's EBV, ancestors included
        pd.testing.assert_frame_equal(back.breeding_values, fit.breeding_values, rtol=1e-12)


def test_reml_checks_the_data_given(case, tmp_path):
    df, K = case("dense")
    fit = bl.LMM(FORMULA, df, kinship={"id": K}).fit(method="reml")
    fit.save(tmp_path / "bare", inputs=False)
    assert not (tmp_path / "bare" / "inputs").exists()
    with pytest.raises(DataError, match="holds no stored inputs"):
        bl.load_fit(tmp_path / "bare")
    # the data given (rows in another order: the same individuals) replace the stored ones
    shuffled = df.sample(frac=1.0, random_state=3)
    assert_same_tables(bl.load_fit(tmp_path / "bare", shuffled, kinship={"id": K}), fit)
    changed = df.assign(y1=df["y1"] * 1.1)
    with pytest.raises(DataError, match="does not reproduce the saved estimates"):
        bl.load_fit(tmp_path / "bare", changed, kinship={"id": K})
    with pytest.raises(DataError, match="individuals with records"):
        bl.load_fit(tmp_path / "bare", df.iloc[2:], kinship={"id": K})
    fewer = df.assign(y2=df["y2"].where(df.index != 0))  # one more value missing
    with pytest.raises(DataError, match="individuals with records"):
        bl.load_fit(tmp_path / "bare", fewer, kinship={"id": K})


# -- NUTS ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CASES))
def test_nuts_round_trip_reads_the_draws(name, case, tmp_path):
    df, K = case(name)
    fit = bl.LMM(FORMULA, df, kinship={"id": K}).fit(seed=5, **NUTS)
    fit.save(tmp_path / "out", plot=False)
    back = bl.load_fit(tmp_path / "out")
    assert isinstance(back, MultiTraitBayesFit) and back.route == fit.route
    assert (back.seed, back.hdi_prob, back.priors) == (fit.seed, fit.hdi_prob, fit.priors)
    np.testing.assert_array_equal(  # the draws themselves, not a new sample
        back.posterior["genetic_covariance"].values, fit.posterior["genetic_covariance"].values
    )
    assert_same_tables(back, fit)
    # its summary is the one saved (timing and all), the inputs entry aside
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    saved.pop("inputs")
    assert json.loads(json.dumps(json_safe(back.summary()))) == saved


def test_sparse_pedigree_posterior_round_trip(case, tmp_path):
    """The posterior of the sparse A⁻¹ (importance sampling, no dense A) reads back too."""
    df, K = case("pedigree")
    settings = {k: v for k, v in NUTS.items() if k != "tune"} | {"draws": 200}
    fit = bl.LMM(FORMULA, df, kinship={"id": K}).fit(sampler="importance", seed=4, **settings)
    assert fit.route == "sparse-pedigree"
    fit.save(tmp_path / "out", plot=False)
    back = bl.load_fit(tmp_path / "out")
    assert back.route == "sparse-pedigree" and isinstance(back.spec.kinship, SparsePedigreeKinship)
    assert back.sampler == "importance"  # what ran, not the NUTS default
    assert_same_tables(back, fit)
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    saved.pop("inputs")
    assert json.loads(json.dumps(json_safe(back.summary()))) == saved


def test_nuts_checks_the_data_row_by_row(case, tmp_path):
    df, K = case("dense")
    fit = bl.LMM(FORMULA, df, kinship={"id": K}).fit(seed=6, **NUTS)
    fit.save(tmp_path / "bare", plot=False, inputs=False)
    with pytest.raises(DataError, match="holds no stored inputs"):
        bl.load_fit(tmp_path / "bare")
    assert_same_tables(bl.load_fit(tmp_path / "bare", df, kinship={"id": K}), fit)
    changed = df.copy()
    changed.loc[changed["id"] == "i7", "y2"] += 0.5
    with pytest.raises(DataError, match="individual 'i7'"):
        bl.load_fit(tmp_path / "bare", changed, kinship={"id": K})
    # a value recorded where the fit saw none is a difference too
    filled = df.assign(y2=df["y2"].fillna(0.0))
    with pytest.raises(DataError):
        bl.load_fit(tmp_path / "bare", filled, kinship={"id": K})


# -- multi-trait GLMM ------------------------------------------------------------------------
GLMM_CASES = {
    # a count trait without overdispersion: the family's option must come back too
    "dense": {"y1": bl.Poisson(overdispersion=False)},
    "low-rank": {"y1": ("bernoulli", "probit")},
}


def _glmm_data(df: pd.DataFrame, family: dict) -> pd.DataFrame:
    if isinstance(family["y1"], bl.Poisson):
        return df.assign(y1=np.round(np.exp(0.3 * df["y1"])))
    return df.assign(y1=(df["y1"] > df["y1"].median()).astype(float))


@pytest.mark.parametrize("name", list(GLMM_CASES))
def test_glmm_round_trip(name, case, tmp_path):
    df, K = case(name)
    family = GLMM_CASES[name]
    data = _glmm_data(df, family)
    fit = bl.LMM(FORMULA, data, kinship={"id": K}, family=family).fit(seed=7, **NUTS)
    fit.save(tmp_path / "out", plot=False)
    back = bl.load_fit(tmp_path / "out")
    assert isinstance(back, MultiTraitGLMMBayesFit)
    assert back.families == fit.families and back.latent_traits == fit.latent_traits
    assert back.residual_block == fit.residual_block
    assert back.spec.families == fit.spec.families
    assert_same_tables(back, fit)
    pd.testing.assert_frame_equal(
        back.heritability(scale="latent"), fit.heritability(scale="latent"), rtol=1e-12
    )
    # without stored inputs the families are read from summary.json
    fit.save(tmp_path / "bare", plot=False, inputs=False)
    bare = bl.load_fit(tmp_path / "bare", data, kinship={"id": K})
    assert bare.spec.families == fit.spec.families
    assert_same_tables(bare, fit)


def test_glmm_sparse_pedigree_round_trip(case, tmp_path):
    """The GLMM on a sparse pedigree kinship (its dense root, up to 5,000 animals)."""
    df, K = case("pedigree")
    family = {"y1": "bernoulli"}
    data = _glmm_data(df, family)
    fit = bl.LMM(FORMULA, data, kinship={"id": K}, family=family).fit(seed=8, **NUTS)
    fit.save(tmp_path / "out", plot=False)
    back = bl.load_fit(tmp_path / "out")
    assert isinstance(back.spec.kinship, SparsePedigreeKinship)
    assert_same_tables(back, fit)


# -- the pieces ------------------------------------------------------------------------------
def test_family_records_read_back_with_their_options():
    from bayeslmm.results.inputs import _family_from_record, _family_record

    for family in (
        bl.Poisson(overdispersion=False),
        bl.Poisson(),
        bl.Bernoulli(link="probit"),
        bl.families.Gaussian(),
    ):
        record = json.loads(json.dumps(_family_record(family)))
        assert _family_from_record(record, "t") == family
    assert _family_record(bl.Poisson(overdispersion=False)) == {
        "family": "poisson",
        "link": "log",
        "overdispersion": False,
    }
    with pytest.raises(DataError, match="stored family of trait 't'"):
        _family_from_record({"family": "poisson", "link": "log", "zero_inflation": 1}, "t")


def test_load_fit_refuses_unknown_options_for_several_traits(case, tmp_path):
    df, K = case("dense")
    bl.LMM(FORMULA, df, kinship={"id": K}).fit(method="reml").save(tmp_path / "out")
    with pytest.raises(bl.errors.SpecificationError, match="sigma"):
        bl.load_fit(tmp_path / "out", sigma="~ x")
