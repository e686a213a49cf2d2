"""The lme4 / brms formula grammar: factor(), nested and interaction grouping, binomial
responses written in the formula, two-level text responses, one-term-per-factor models in
every engine, and formulas suggested by error messages. Each test compares against an
independent construction (the row-wise reference, the written-out formula, the trials=
argument), never against a stored output of the code itself."""

from __future__ import annotations

import ast
import re
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bayeslmm as bl
from bayeslmm.errors import BayesLMMError, DataError, SpecificationError
from bayeslmm.spec import (
    BinaryResponseWarning,
    _grouping_levels,
    _parse_response,
    one_term_per_group,
    split_formula,
)

ROOT = Path(__file__).resolve().parents[1]
POISSON = bl.Poisson(overdispersion=False)


def _frame(n: int = 120, seed: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    site = rng.choice(["s1", "s2", "s3", "s4"], n)
    plot = rng.integers(1, 4, n)
    x = rng.normal(size=n)
    site_effect = {"s1": -0.4, "s2": 0.1, "s3": 0.5, "s4": -0.2}
    eta = 0.2 + 0.4 * x + np.array([site_effect[s] for s in site]) + 0.3 * (plot - 2)
    trials = rng.integers(3, 9, n)
    successes = rng.binomial(trials, 1.0 / (1.0 + np.exp(-eta)))
    return pd.DataFrame(
        {
            "y": eta + rng.normal(0.0, 0.6, n),
            "x": x,
            "dose": rng.integers(1, 4, n),
            "site": site,
            "plot": plot,
            "n": trials,
            "s": successes,
            "f": trials - successes,
            "b": (rng.random(n) < 1.0 / (1.0 + np.exp(-eta))).astype(int),
            "c": rng.poisson(np.exp(eta)),
        }
    )


DF = _frame()


# ---------------------------------------------------------------------------------------
# grouping labels: vectorised, identical to the row-wise join
# ---------------------------------------------------------------------------------------
def _rowwise_reference(data: pd.DataFrame, parts: list[str]) -> tuple[tuple, np.ndarray]:
    """What the grouping labels were defined as: each row's values as text joined by ':',
    levels sorted (pandas' row-wise join and factorize)."""
    joined = data[parts].astype(str).agg(":".join, axis=1).to_numpy()
    codes, uniques = pd.factorize(joined, sort=True)
    return tuple(str(u) for u in uniques), codes


@pytest.mark.parametrize(
    "parts",
    [["a"], ["num"], ["a", "num"], ["flt", "cat", "a"], ["flag", "a"], ["cat", "num", "flag"]],
)
def test_grouping_levels_equal_the_rowwise_join(parts):
    rng = np.random.default_rng(1)
    n = 400
    data = pd.DataFrame(
        {
            "y": rng.normal(size=n),
            "a": rng.choice(["b", "a", "c:d", "é", "10", "9"], n),
            "num": rng.integers(0, 12, n),
            "flt": rng.choice([0.5, 1.0, 12.25], n),
            "cat": pd.Categorical(rng.choice(["z", "y", "x"], n), categories=["z", "y", "x"]),
            "flag": rng.random(n) < 0.5,
        }
    )
    levels, codes = _rowwise_reference(data, parts)
    term = bl.specify(f"y ~ (1 | {':'.join(parts)})", data).terms[0]
    assert term.levels == levels
    np.testing.assert_array_equal(term.index, codes)
    row_level, labels = _grouping_levels(data, parts)
    np.testing.assert_array_equal(labels[row_level], np.array(levels, dtype=object)[codes])


def test_grouping_levels_with_a_kinship_follow_its_order():
    """An interaction factor with a kinship: levels in the kinship's order, rows mapped to
    them as by a dictionary lookup of the joined label."""
    rng = np.random.default_rng(2)
    data = DF.assign(y=rng.normal(size=len(DF)))
    labels = sorted(set(data["site"] + ":" + data["plot"].astype(str)))[::-1]
    W = rng.normal(size=(len(labels) + 2, 30))
    ids = ["ghost1"] + labels + ["ghost2"]
    K = bl.Kinship(W @ W.T / 30, ids)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        term = bl.specify("y ~ (1 | site:plot)", data, kinship={"site:plot": K}).terms[0]
    assert term.levels == tuple(labels)
    position = {lvl: k for k, lvl in enumerate(labels)}
    expected = [position[f"{s}:{p}"] for s, p in zip(data["site"], data["plot"], strict=True)]
    np.testing.assert_array_equal(term.index, expected)


def test_crossed_design_of_instEval_size_builds_in_seconds():
    """73,421 rows, crossed factors of 2,972 and 1,128 levels and an interaction term (lme4's
    InstEval): the grouping labels are built per level, not per row (the row-wise join
    took over 10 s here)."""
    rng = np.random.default_rng(0)
    n = 73_421
    data = pd.DataFrame(
        {
            "y": rng.integers(1, 6, n).astype(float),
            "s": rng.integers(0, 2972, n).astype(str),
            "d": rng.integers(0, 1128, n).astype(str),
            "dept": rng.integers(0, 14, n).astype(str),
            "service": rng.integers(0, 2, n).astype(str),
        }
    )
    start = time.perf_counter()
    spec = bl.specify("y ~ service + (1|s) + (1|d) + (1|dept:service)", data)
    elapsed = time.perf_counter() - start
    assert [t.n_levels for t in spec.terms] == [
        data["s"].nunique(),
        data["d"].nunique(),
        data.groupby(["dept", "service"]).ngroups,
    ]
    assert elapsed < 5.0, f"{elapsed:.1f} s"


# ---------------------------------------------------------------------------------------
# factor(), nested and interaction grouping
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("spelling", ["factor(dose)", "as.factor(dose)"])
def test_factor_is_C(spelling):
    reference = bl.specify("y ~ x + C(dose) + (1 | site)", DF)
    spec = bl.specify(f"y ~ x + {spelling} + (1 | site)", DF)
    np.testing.assert_array_equal(spec.X, reference.X)
    assert spec.fixed_names == ("Intercept", "x", "factor(dose)[2]", "factor(dose)[3]")


def test_factor_in_random_terms():
    reference = bl.specify("y ~ x + (0 + C(dose) || site) + (1 | plot)", DF)
    spec = bl.specify("y ~ x + (0 + factor(dose) || site) + (1 | factor(plot))", DF)
    for a, b in zip(spec.terms, reference.terms, strict=True):
        assert (a.group, a.levels) == (b.group, b.levels)
        np.testing.assert_array_equal(a.index, b.index)
        np.testing.assert_array_equal(a.design, b.design)


def test_nested_grouping_is_the_written_out_formula():
    nested = bl.specify("y ~ x + (1 | site/plot)", DF)
    written = bl.specify("y ~ x + (1 | site) + (1 | site:plot)", DF)
    assert [t.group for t in nested.terms] == ["site", "site:plot"]
    for a, b in zip(nested.terms, written.terms, strict=True):
        assert a.levels == b.levels
        np.testing.assert_array_equal(a.index, b.index)
    # the interaction's levels are the distinct (site, plot) pairs, by brute force
    pairs = sorted({f"{s}:{p}" for s, p in zip(DF["site"], DF["plot"], strict=True)})
    assert nested.terms[1].levels == tuple(pairs)
    fit_nested, fit_written = (bl.LMM.from_spec(s).fit(method="reml") for s in (nested, written))
    assert fit_nested.loglik_reml == pytest.approx(fit_written.loglik_reml, abs=1e-10)
    assert list(fit_nested.variance_components()["grp"]) == ["site", "site:plot", "Residual"]


def test_three_level_nesting_and_uncorrelated_blocks():
    blocks = split_formula("y ~ x + (1 + x || a/b/c)")[2]
    assert [(b.lhs, b.group, b.correlated) for b in blocks] == [
        ("1 + x", "a", False),
        ("1 + x", "a:b", False),
        ("1 + x", "a:b:c", False),
    ]


# ---------------------------------------------------------------------------------------
# binomial responses in the formula, two-level text responses
# ---------------------------------------------------------------------------------------
BINOMIAL_FORMS = ["cbind(s, f)", "cbind(s, n - s)", "s | trials(n)"]


@pytest.mark.parametrize("response", BINOMIAL_FORMS)
def test_binomial_response_forms_fit_as_trials_argument(response):
    reference = bl.LMM("s ~ x + (1 | site)", DF, family="binomial", trials="n")
    model = bl.LMM(f"{response} ~ x + (1 | site)", DF, family="binomial")
    np.testing.assert_array_equal(model.spec.y, reference.spec.y)
    np.testing.assert_array_equal(model.spec.trials, reference.spec.trials)
    fit, ref = model.fit(method="laplace"), reference.fit(method="laplace")
    assert fit.loglik == pytest.approx(ref.loglik, abs=1e-10)
    np.testing.assert_allclose(fit.theta, ref.theta, atol=1e-10)
    np.testing.assert_allclose(fit.beta, ref.beta, atol=1e-10)


def test_brms_constant_trials():
    data = DF.assign(s=np.minimum(DF["s"], 3))
    spec = bl.specify("s | trials(3) ~ x + (1 | site)", data, family="binomial")
    np.testing.assert_array_equal(spec.trials, np.full(len(data), 3.0))
    assert _parse_response("s | trials(3)", "").columns == ["s"]


@pytest.mark.parametrize(
    ("formula", "kw", "error", "phrase"),
    [
        ("cbind(s, f) ~ x + (1 | site)", {}, SpecificationError, "use family='binomial'"),
        ("cbind(s, f) ~ x + (1 | site)", {"family": "binomial", "trials": "n"},
         SpecificationError, "given twice"),
        ("cbind(s, x) ~ x2 + (1 | site)", {"family": "binomial"}, DataError,
         "must be non-negative whole numbers"),
        ("cbind(s) ~ x + (1 | site)", {"family": "binomial"}, SpecificationError,
         "not one lme4 writes"),
        ("s | weights(n) ~ x + (1 | site)", {"family": "binomial"}, SpecificationError,
         "not one brms writes"),
        ("s | trials(nn) ~ x + (1 | site)", {"family": "binomial"}, SpecificationError,
         "the name 'nn' is not a column"),
        ("s | trials(0) ~ x + (1 | site)", {"family": "binomial"}, SpecificationError,
         "must be at least 1"),
        ("f ~ s + (1 | site)", {"family": "binomial", "trials": "site"}, DataError,
         "The trials column 'site' must be numeric"),
        ("cbind(s, f) ~ f + (1 | site)", {"family": "binomial"}, SpecificationError,
         "also appears on the right-hand side"),
    ],
)  # fmt: skip
def test_binomial_response_errors(formula, kw, error, phrase):
    data = DF.assign(x2=DF["x"])
    with pytest.raises(error, match=re.escape(phrase)):
        bl.specify(formula, data, **kw)


def test_two_level_text_response_is_coded_second_level_one():
    text = DF.assign(sick=np.where(DF["b"] == 1, "yes", "no"))
    with pytest.warns(BinaryResponseWarning, match="'no' = 0 and 'yes' = 1"):
        model = bl.LMM("sick ~ x + (1 | site)", text, family="bernoulli")
    np.testing.assert_array_equal(model.spec.y, DF["b"].to_numpy(dtype=float))
    reference = bl.LMM("b ~ x + (1 | site)", DF, family="bernoulli")
    assert model.fit(method="laplace").loglik == pytest.approx(
        reference.fit(method="laplace").loglik, abs=1e-10
    )


def test_categorical_response_follows_its_categories_and_booleans_need_no_note():
    # categories in the order given: "yes" first, so "yes" is the failure (lme4's rule)
    cat = pd.Categorical(np.where(DF["b"] == 1, "yes", "no"), categories=["yes", "no", "gone"])
    with pytest.warns(BinaryResponseWarning, match="'yes' = 0 and 'no' = 1"):
        spec = bl.specify("sick ~ x + (1 | site)", DF.assign(sick=cat), family="bernoulli")
    np.testing.assert_array_equal(spec.y, 1.0 - DF["b"].to_numpy(dtype=float))
    with warnings.catch_warnings():
        warnings.simplefilter("error", BinaryResponseWarning)
        spec = bl.specify("sick ~ x + (1 | site)", DF.assign(sick=DF["b"] == 1), family="bernoulli")
    np.testing.assert_array_equal(spec.y, DF["b"].to_numpy(dtype=float))


def test_text_response_with_three_levels_is_refused():
    data = DF.assign(grade=np.array(["low", "mid", "high"])[np.arange(len(DF)) % 3])
    with pytest.raises(DataError, match=r"has 3 levels \['high', 'low', 'mid'\]"):
        bl.specify("grade ~ x + (1 | site)", data, family="bernoulli")


# ---------------------------------------------------------------------------------------
# variance-component names: the same in every engine
# ---------------------------------------------------------------------------------------
def _patients() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    q, m = 12, 8
    which = np.repeat(np.arange(q), m)
    x = np.tile(np.linspace(-1.0, 1.0, m), q)
    eta = 0.3 + 0.5 * x + rng.normal(0, 1, q)[which] + rng.normal(0, 0.7, q)[which] * x
    return pd.DataFrame(
        {
            "patient": [f"p{k:02d}" for k in which],
            "x": x,
            "y": eta + rng.normal(0.0, 0.5, q * m),
            "c": rng.poisson(np.exp(eta)),
        }
    )


TWO_TERMS = "(1 | patient) + (0 + x | patient)"
LME4_NAMES = [("patient", "(Intercept)"), ("patient.1", "x")]


def _names(fit) -> list[tuple[str, str]]:
    vc = fit.variance_components()
    return [(g, v) for g, v in zip(vc["grp"], vc["var1"], strict=True) if g != "Residual"]


def test_two_terms_of_one_factor_have_lme4_names_in_reml_and_laplace():
    data = _patients()
    reml = bl.LMM(f"y ~ x + {TWO_TERMS}", data).fit(method="reml")
    laplace = bl.LMM(f"c ~ x + {TWO_TERMS}", data, family=POISSON).fit(method="laplace")
    assert _names(reml) == LME4_NAMES
    assert _names(laplace) == LME4_NAMES


def test_one_term_per_group_is_the_uncorrelated_block():
    """What the Bayesian builder receives for two terms of one factor: the || block, with
    the same variance-component names."""
    data = _patients()
    spec = bl.specify(f"y ~ x + {TWO_TERMS}", data)
    joined = one_term_per_group(spec)
    block = bl.specify("y ~ x + (1 + x || patient)", data)
    (a,), (b,) = joined.terms, block.terms
    assert (a.covariates, a.correlated, a.levels) == (b.covariates, b.correlated, b.levels)
    np.testing.assert_array_equal(a.design, b.design)
    np.testing.assert_array_equal(a.index, b.index)
    flat = [g for groups in spec.coefficient_groups() for g in groups]
    assert [g for groups in joined.coefficient_groups() for g in groups] == flat
    model = bl.LMM.from_spec(spec).build()
    assert sorted(v.name for v in model.free_RVs) == sorted(
        v.name for v in bl.LMM.from_spec(block).build().free_RVs
    )


def test_correlated_block_sharing_its_factor_is_refused_by_the_bayesian_engine():
    spec = bl.specify(
        "y ~ x + (1 + x | patient) + (0 + z | patient)", _patients().assign(z=lambda d: d["x"] ** 2)
    )
    with pytest.raises(SpecificationError, match="one covariance per grouping factor"):
        bl.LMM.from_spec(spec).build()


@pytest.mark.slow
def test_two_terms_of_one_factor_have_lme4_names_in_nuts():
    fit = bl.LMM(f"y ~ x + {TWO_TERMS}", _patients()).fit(
        draws=20,
        tune=20,
        chains=1,
        cores=1,
        seed=1,
        sampler="pymc",
        progressbar=False,
        verbose=False,
    )
    assert _names(fit) == LME4_NAMES


# ---------------------------------------------------------------------------------------
# every formula an error message suggests is one the parser accepts
# ---------------------------------------------------------------------------------------
_TERM = r"\((?:[^()]|\([^()]*\))*\|(?:[^()]|\([^()]*\))*\)"


def suggested_formulas(message: str) -> list[str]:
    """The formulas (or pieces) a message suggests, each as a full formula to parse:
    quoted ones with a '~', random terms ``(... | g)``, ``cbind(...)`` and ``s | trials(n)``
    responses. Suggestions follow "e.g.", "write" or "add"; before that a message quotes
    the user's own (bad) input."""
    cue = re.search(r"e\.g\.|\b[Ww]rite\b|\bAdd\b", message)
    if cue is None:
        return []
    message = message[cue.end() :]
    quoted = r"'([^'~]*\w[^'~]*~[^'~]*\w[^'~]*)'"  # words on both sides of the '~'
    out = re.findall(quoted, message)
    rest = re.sub(quoted, " ", message)
    out += [f"y ~ x + {m}" for m in re.findall(_TERM, rest)]
    out += [f"{m} ~ x" for m in re.findall(r"cbind\([^()]*\)", rest)]
    out += [f"{m} ~ x" for m in re.findall(r"[A-Za-z_]\w* \| trials\([^()]*\)", rest)]
    return out


def _parses(formula: str) -> None:
    response, _, blocks = split_formula(formula)
    _parse_response(response, formula)
    for block in blocks:
        assert block.group and block.lhs


def _message_texts(path: Path) -> list[str]:
    """The text of every message raised or warned in a source file, placeholders of
    f-strings replaced by a name (the parser must accept the shape of the suggestion)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))

    def text(node) -> str:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.JoinedStr):
            return "".join(text(v) if isinstance(v, ast.Constant) else "g" for v in node.values)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return text(node.left) + text(node.right)
        return ""

    out = []
    for node in ast.walk(tree):
        call = None
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            call = node.exc
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "warn":
            call = node
        if call is not None and call.args:
            out.append(text(call.args[0]))
    return out


SOURCES = ["bayeslmm/spec.py", "bayeslmm/model.py", "bayeslmm/engines/laplace/engine.py"]


@pytest.mark.parametrize("source", SOURCES)
def test_formulas_in_source_messages_parse(source):
    found = [f for message in _message_texts(ROOT / source) for f in suggested_formulas(message)]
    if source == "bayeslmm/spec.py":
        assert len(found) >= 8  # the extraction finds the messages' suggestions
    for formula in found:
        _parses(formula)


def _raised(call) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(BayesLMMError) as info:
            call()
    return str(info.value)


TRIGGERS = {
    "empty right-hand side": lambda: bl.specify("y ~", DF),
    "bar outside parentheses": lambda: bl.specify("y ~ x + 1|site", DF),
    "random term without group": lambda: bl.specify("y ~ x + (1|)", DF),
    "kinship for an unknown term": lambda: bl.specify(
        "y ~ x + (1|site)", DF, kinship={"plot": np.eye(3)}
    ),
    "binomial without trials": lambda: bl.specify("s ~ x + (1|site)", DF, family="binomial"),
    "malformed cbind": lambda: bl.specify("cbind(s) ~ x", DF, family="binomial"),
    "malformed brms": lambda: bl.specify("s | n ~ x", DF, family="binomial"),
    "cbind of trials": lambda: bl.specify("cbind(s, x) ~ dose", DF, family="binomial"),
    "many fixed columns": lambda: bl.specify("y ~ C(x) + (1|site)", DF),
    "bayes correlated sharing": lambda: bl.LMM(
        "y ~ x + (1 + x|site) + (0 + dose|site)", DF
    ).build(),
}


@pytest.mark.parametrize("name", list(TRIGGERS))
def test_formulas_in_raised_messages_parse_and_fit(name):
    message = _raised(TRIGGERS[name])
    found = suggested_formulas(message)
    assert found, message
    for formula in found:
        _parses(formula)
