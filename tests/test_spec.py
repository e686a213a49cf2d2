"""Tests of bayeslmm.spec: formula parsing, alignment and every validation error."""

import warnings

import numpy as np
import pandas as pd
import pytest

import bayeslmm as bl
from bayeslmm.spec import split_formula


@pytest.fixture
def kin_data(random_kinship):
    rng = np.random.default_rng(1)
    n = 20
    ids = [f"i{k}" for k in range(n)]
    K = random_kinship(rng, n, 40)
    df = pd.DataFrame(
        {
            "y": rng.normal(size=2 * n),
            "x": rng.normal(size=2 * n),
            "env": np.tile([0.0, 1.0], n),
            "id": np.repeat(ids, 2),
            "site": np.tile(list("abcd"), n // 2),
        }
    )
    return K, df


def test_split_formula_blocks():
    resp, fixed, blocks = split_formula("y ~ x + log(z) + (1 + e | g) + (0 + e || h:k)")
    assert resp == "y"
    assert fixed == "x + log(z)"
    assert [(b.lhs, b.group, b.correlated) for b in blocks] == [
        ("1 + e", "g", True),
        ("0 + e", "h:k", False),
    ]
    assert split_formula("y ~ (1|g)")[1] == "1"


def test_specify_aligns_kinship_and_repeated_records(kin_data):
    K, df = kin_data
    big = bl.Kinship(
        np.pad(K.matrix, ((0, 1), (0, 1))) + np.diag([0.0] * K.n + [1.0]),
        list(K.ids) + ["extra"],
    )
    spec = bl.specify("y ~ x + (1 + env | id) + (1 | site)", df, kinship={"id": big})
    kin, site = spec.terms
    assert kin.levels == K.ids  # the extra id is dropped, kinship order kept
    np.testing.assert_allclose(kin.kinship.matrix, K.matrix)
    assert kin.covariates == ("Intercept", "env")
    # Each record points at its individual's row of u.
    assert [kin.levels[i] for i in kin.index] == df["id"].tolist()
    np.testing.assert_array_equal(kin.design[:, 1], df["env"].to_numpy())
    assert site.kinship is None and site.levels == ("a", "b", "c", "d")
    Z = kin.z(1).toarray()
    assert Z.shape == (40, 20) and Z.sum() == df["env"].sum()


def test_no_fixed_effects():
    df = pd.DataFrame({"y": [1.0, 2.0, 0.5, 1.5], "g": list("aabb")})
    spec = bl.specify("y ~ 0 + (1|g)", df)
    assert spec.X.shape == (4, 0) and spec.fixed_names == ()


def test_offset_is_separated():
    df = pd.DataFrame({"y": [1, 2, 3, 5, 4, 2], "t": [1.0, 2, 3, 4, 5, 6], "g": list("aabbcc")})
    spec = bl.specify("y ~ 1 + offset(np.log(t)) + (1|g)", df, family="poisson")
    assert spec.fixed_names == ("Intercept",)
    np.testing.assert_allclose(spec.offset, np.log(df["t"]))


@pytest.mark.parametrize(
    ("change", "kwargs", "error", "message"),
    [
        (
            lambda d: d.assign(y=np.where(np.arange(len(d)) == 3, np.nan, d.y)),
            {},
            bl.DataError,
            "Column 'y' has 1 missing",
        ),
        (
            lambda d: d.assign(x=np.where(np.arange(len(d)) == 0, np.inf, d.x)),
            {},
            bl.DataError,
            "Column 'x' has 1 missing or infinite",
        ),
        (lambda d: d.assign(y=1.0), {}, bl.DataError, "is constant"),
        (
            lambda d: d.assign(x2=2 * d.x),
            {"formula": "y ~ x + x2 + (1|id)"},
            bl.DataError,
            "column 'x2' is a linear combination of ['x']",
        ),
        (lambda d: d, {"family": "gamma"}, bl.SpecificationError, "Unknown family 'gamma'"),
        (lambda d: d, {"formula": "y ~ nosuch + (1|id)"}, bl.SpecificationError, "nosuch"),
        (
            lambda d: d,
            {"formula": "y ~ x + (1|nosuch)", "kinship": {}},
            bl.SpecificationError,
            "Grouping factor ['nosuch']",
        ),
        (
            lambda d: d.assign(id=d.id.where(d.index > 1, "ghost")),
            {},
            bl.DataError,
            "missing from kinship",
        ),
        (
            lambda d: d,
            {"formula": "y ~ x + (1|site)"},
            bl.SpecificationError,
            "A kinship is given for 'id'",
        ),
        (
            lambda d: d.assign(one="z"),
            {"formula": "y ~ x + (1|one)", "kinship": {}},
            bl.DataError,
            "at least two groups",
        ),
        (
            lambda d: d.assign(y=d.y.abs() + 0.5),
            {"family": "poisson"},
            bl.DataError,
            "non-negative integers",
        ),
        (lambda d: d.assign(y=2), {"family": "bernoulli"}, bl.DataError, "must be 0 or 1"),
        (
            lambda d: d,
            {"family": "bernoulli", "link": "cloglog"},
            bl.SpecificationError,
            "Link 'cloglog'",
        ),
        (
            lambda d: d.assign(y=3, n=2),
            {"family": "binomial", "trials": "n"},
            bl.DataError,
            "Successes exceed trials",
        ),
    ],
)
def test_validation_errors(kin_data, change, kwargs, error, message):
    K, df = kin_data
    kwargs = {"formula": "y ~ x + (1|id)", "kinship": {"id": K}} | kwargs
    with pytest.raises(error) as info:
        bl.specify(data=change(df), **kwargs)
    assert message in str(info.value)


def test_different_effects_of_one_grouping_factor_are_kept(kin_data):
    K, df = kin_data
    spec = bl.specify("y ~ x + (1|id) + (0 + env|id)", df, kinship={"id": K})
    assert [t.covariates for t in spec.terms] == [("Intercept",), ("env",)]
    epistatic = bl.specify(
        "y ~ x + (1|id) + (1|id2)", df.assign(id2=df.id), kinship={"id": K, "id2": K.hadamard()}
    )
    assert len(epistatic.terms) == 2


@pytest.mark.parametrize(
    ("formula", "change", "kinship"),
    [
        ("y ~ x + (1|site) + (1|site2)", lambda d: d.assign(site2=d.site.map(str.upper)), {}),
        ("y ~ x + (1|site) + (1 + x||site)", lambda d: d, {}),
        ("y ~ (1|id) + (1|id2)", lambda d: d.assign(id2=d.id), "scaled"),
    ],
    ids=["relabelled-copy", "intercept-in-both", "kinship-times-two"],
)
def test_the_same_effect_twice_is_refused(kin_data, formula, change, kinship):
    K, df = kin_data
    if kinship == "scaled":
        kinship = {"id": K, "id2": bl.Kinship(2 * K.matrix, K.ids)}
    with pytest.raises(bl.SpecificationError, match="the same effect twice"):
        bl.specify(formula, change(df), kinship=kinship)


def test_response_check_ignores_function_names():
    df = pd.DataFrame({"C": [1.0, 2.0, 0.5, 1.5, 2.5, 0.0], "g": list("aabbcc")})
    assert bl.specify("C ~ 1 + (1|g)", df).response == "C"
    df = df.assign(h=list("xyxyxy"))
    assert bl.specify("C ~ C(h) + (1|g)", df).fixed_names == ("Intercept", "C(h)[y]")


def test_poisson_factor_with_one_level_per_row_replaces_the_observation_level_effect():
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {"n": rng.poisson(3.0, 24), "g": np.repeat(list("abcd"), 6), "obs": np.arange(24)}
    )
    spec = bl.specify("n ~ 1 + (1|g) + (1|obs)", df, family="poisson")
    assert not spec.family.has_observation_level_effect
    assert bl.specify("n ~ 1 + (1|g)", df, family="poisson").family.has_observation_level_effect
    # binomial with several trials per row: an observation-level effect is identifiable
    binomial = bl.specify("n ~ 1 + (1|g) + (1|obs)", df.assign(t=10), family="binomial", trials="t")
    assert [t.group for t in binomial.terms] == ["g", "obs"]
    with pytest.raises(bl.SpecificationError, match="not identifiable from binary data"):
        bl.specify("b ~ 1 + (1|obs)", df.assign(b=df.n % 2, t=1), family="binomial", trials="t")


def test_identity_kinship_with_one_level_per_row_is_the_residual(kin_data):
    K, df = kin_data
    one = df.drop_duplicates("id")
    eye = bl.Kinship(np.eye(K.n), K.ids)
    with pytest.raises(bl.SpecificationError, match="cannot be told apart from the residual"):
        bl.specify("y ~ x + (1|id)", one, kinship={"id": eye})
    assert len(bl.specify("y ~ x + (1|id)", one, kinship={"id": K}).terms) == 1


def test_covariate_with_a_huge_mean_is_not_collinear_with_the_intercept(kin_data):
    K, df = kin_data
    spec = bl.specify("y ~ pos + (1|id)", df.assign(pos=1e12 + df.x), kinship={"id": K})
    assert spec.fixed_names == ("Intercept", "pos")


def test_single_level_boolean_fixed_effect_is_refused(kin_data):
    K, df = kin_data
    with pytest.raises(bl.DataError, match="'male' has a single level"):
        bl.specify("y ~ male + (1|id)", df.assign(male=True), kinship={"id": K})


def test_kinship_scale_warning(kin_data):
    K, df = kin_data
    unit = K.normalized()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bl.specify("y ~ x + (1|id)", df, kinship={"id": unit})
    with pytest.warns(bl.kinship.KinshipScaleWarning, match="mean diagonal 2.5 .* far from 1"):
        bl.specify("y ~ x + (1|id)", df, kinship={"id": bl.Kinship(2.5 * unit.matrix, K.ids)})
