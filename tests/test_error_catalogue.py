"""The Python API's error catalogue: every bad input stops with a bayeslmm error that names the
problem, or (odd but legal input) warns and gives the correct result.

Each case has an id (``api-...``) that docs/errors.md lists under "## Python API", with what
was given, the error type and the message; a test below checks that the two agree.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bayeslmm as bl
from bayeslmm.engines.reml import BoundaryFitWarning
from bayeslmm.errors import BayesLMMError, DataError, KinshipError, SpecificationError
from bayeslmm.kinship import KinshipScaleWarning, LowRankKinship
from bayeslmm.kinship.low_rank import LowRankDensifyWarning

DOCS = Path(__file__).resolve().parents[1] / "docs" / "errors.md"

N = 30
IDS = [f"i{k:02d}" for k in range(N)]


def _kinship_matrix() -> np.ndarray:
    rng = np.random.default_rng(7)
    W = rng.normal(size=(N, 80))
    return W @ W.T / 80


def _data() -> pd.DataFrame:
    rng = np.random.default_rng(11)
    s, U = np.linalg.eigh(_kinship_matrix())
    genetic = U @ (np.sqrt(np.clip(s, 0, None)) * rng.normal(size=N))  # h² about 0.6
    return pd.DataFrame(
        {
            "y": 10.0 + 1.5 * genetic + rng.normal(0.0, 1.2, N),
            "x": rng.normal(size=N),
            "id": IDS,
            "g": np.repeat(list("abcde"), N // 5),
            "c": rng.poisson(3.0, N),
            "b": np.tile([0, 1, 1], N // 3),
            "t": np.arange(1.0, N + 1.0),
        }
    )


K = bl.Kinship(_kinship_matrix(), IDS, name="K")
DF = _data()
FAST = {"draws": 20, "tune": 20, "chains": 1, "cores": 1, "progressbar": False}


def spec(formula: str = "y ~ x + (1|id)", data: pd.DataFrame | None = None, **kw):
    kw.setdefault("kinship", {"id": K} if "(1|id)" in formula.replace(" ", "") else None)
    return bl.specify(formula, DF if data is None else data, **kw)


def model(formula: str = "y ~ x + (1|id)", data: pd.DataFrame | None = None, **kw) -> bl.LMM:
    kw.setdefault("kinship", {"id": K} if "(1|id)" in formula.replace(" ", "") else None)
    return bl.LMM(formula, DF if data is None else data, **kw)


def kin_frame(matrix: np.ndarray, rows=IDS, cols=IDS) -> pd.DataFrame:
    return pd.DataFrame(matrix, index=rows, columns=cols)


def separated() -> pd.DataFrame:
    return DF.assign(s=(DF["x"] > 0).astype(int))


def low_rank_fit() -> bl.RemlFit:
    """REML on the low-rank GRM of 30 individuals × 8 markers."""
    dosages = np.random.default_rng(4).binomial(2, 0.3, size=(N, 8)).astype(float)
    return model(kinship={"id": bl.grm(dosages, ids=IDS, low_rank=True)}).fit(method="reml")


def low_rank_outside_the_snp_path() -> None:
    """A second random term on a 5,001-individual low-rank kinship: K would be n × n."""
    rng = np.random.default_rng(5)
    ids = [f"j{k}" for k in range(5001)]
    data = pd.DataFrame(
        {
            "y": rng.normal(size=5001),
            "x": rng.normal(size=5001),
            "id": ids,
            "g": ["a", "b"] * 2500 + ["a"],
        }
    )
    LMM = bl.LMM(
        "y ~ x + (1|id) + (1|g)",
        data,
        kinship={"id": LowRankKinship(rng.normal(size=(5001, 3)), ids)},
    )
    LMM.fit(method="reml")


@dataclass(frozen=True)
class Case:
    """``call`` must raise ``error`` whose message contains ``phrase``."""

    id: str
    given: str
    call: Callable[[], object]
    error: type[BayesLMMError]
    phrase: str


CASES = [
    # -- formula ---------------------------------------------------------------------------
    Case("api-formula-not-a-string", "formula=3", lambda: bl.specify(3, DF),
         SpecificationError, "must be a string"),
    Case("api-formula-without-tilde", "'y (1|g)'", lambda: spec("y (1|g)"),
         SpecificationError, "exactly one '~'"),
    Case("api-formula-two-tildes", "'y ~ x ~ g'", lambda: spec("y ~ x ~ g"),
         SpecificationError, "exactly one '~'"),
    Case("api-formula-without-response", "'~ x + (1|g)'", lambda: spec("~ x + (1|g)"),
         SpecificationError, "no response on the left"),
    Case("api-formula-empty-right-hand-side", "'y ~'", lambda: spec("y ~"),
         SpecificationError, "nothing on the right of '~'"),
    Case("api-unbalanced-open-parenthesis", "'y ~ x + (1|g'", lambda: spec("y ~ x + (1|g"),
         SpecificationError, "Unbalanced '('"),
    Case("api-unbalanced-close-parenthesis", "'y ~ x) + (1|g)'",
         lambda: spec("y ~ x) + (1|g)"), SpecificationError, "Unbalanced ')'"),
    Case("api-bar-outside-parentheses", "'y ~ x + 1|g'", lambda: spec("y ~ x + 1|g"),
         SpecificationError, "'|' outside parentheses"),
    Case("api-unknown-function", "'y ~ foo(x) + (1|g)'", lambda: spec("y ~ foo(x) + (1|g)"),
         SpecificationError, "'foo' is neither a column of the data nor a function"),
    Case("api-unknown-column", "'y ~ nosuch + (1|g)'", lambda: spec("y ~ nosuch + (1|g)"),
         SpecificationError, "'nosuch' is neither a column"),
    Case("api-response-not-a-column", "'z ~ x + (1|g)'", lambda: spec("z ~ x + (1|g)"),
         SpecificationError, "The response 'z' is not a column"),
    Case("api-response-on-right-hand-side", "'y ~ y + x + (1|g)'",
         lambda: spec("y ~ y + x + (1|g)"), SpecificationError,
         "also appears on the right-hand side"),
    Case("api-response-as-grouping-factor", "'y ~ x + (1|y)'", lambda: spec("y ~ x + (1|y)"),
         SpecificationError, "in the random term (1 | y)"),
    Case("api-random-term-without-group", "'y ~ x + (1|)'", lambda: spec("y ~ x + (1|)"),
         SpecificationError, "needs an expression and a grouping factor"),
    Case("api-grouping-factor-not-a-column", "'y ~ x + (1|site)'",
         lambda: spec("y ~ x + (1|site)"), SpecificationError, "Grouping factor ['site']"),
    # -- data ------------------------------------------------------------------------------
    Case("api-data-not-a-dataframe", "data as a dict", lambda: bl.specify("y ~ (1|g)", {}),
         DataError, "must be a pandas DataFrame"),
    Case("api-empty-data-frame", "a data frame with no rows",
         lambda: spec("y ~ x + (1|g)", DF.iloc[:0]), DataError, "has no rows"),
    Case("api-duplicate-column-names", "two columns named 'x'",
         lambda: spec("y ~ x + (1|g)", pd.concat([DF, DF[["x"]]], axis=1)), DataError,
         "duplicate column names ['x']"),
    Case("api-nan-in-covariate", "x is NaN in row 3",
         lambda: spec(data=DF.assign(x=np.where(DF.index == 3, np.nan, DF.x))), DataError,
         "Column 'x' has 1 missing or infinite values (rows [3])"),
    Case("api-inf-in-covariate", "x is inf in row 0",
         lambda: spec(data=DF.assign(x=np.where(DF.index == 0, np.inf, DF.x))), DataError,
         "Column 'x' has 1 missing or infinite"),
    Case("api-nan-in-response", "y is NaN in row 5",
         lambda: spec(data=DF.assign(y=np.where(DF.index == 5, np.nan, DF.y))), DataError,
         "Column 'y' has 1 missing"),
    Case("api-non-numeric-response", "'g ~ x + (1|id)'",
         lambda: spec("g ~ x + (1|id)"), DataError, "The response 'g' must be numeric"),
    Case("api-constant-response", "y = 1 in every row", lambda: spec(data=DF.assign(y=1.0)),
         DataError, "is constant (1)"),
    Case("api-response-extreme-scale", "y × 1e150 (Gaussian)",
         lambda: spec(data=DF.assign(y=DF.y * 1e150)), DataError,
         "beyond what double precision holds"),
    Case("api-one-level-factor-as-fixed-effect", "'y ~ f + (1|id)', f = 'a' everywhere",
         lambda: spec("y ~ f + (1|id)", DF.assign(f="a")), DataError,
         "The fixed effect 'f' has a single level ('a')"),
    Case("api-collinear-covariates", "x2 = 2·x", lambda: spec(
         "y ~ x + x2 + (1|id)", DF.assign(x2=2 * DF.x)), DataError,
         "column 'x2' is a linear combination of ['x']"),
    Case("api-more-fixed-effects-than-rows", "'y ~ id + (1|g)': 30 columns, 30 rows",
         lambda: spec("y ~ id + (1|g)"), DataError, "30 fixed-effect columns but only 30 rows"),
    Case("api-two-rows", "two rows, '(1|id)' with a kinship",
         lambda: spec("y ~ 1 + (1|id)", DF.iloc[[0, 1]]), DataError,
         "cannot determine 2 variances"),
    Case("api-log-of-zero-covariate", "'y ~ np.log(x0)', x0 = 0 in row 2", lambda: spec(
         "y ~ np.log(x0) + (1|id)", DF.assign(x0=np.where(DF.index == 2, 0.0, DF.t))),
         DataError, "'np.log(x0)' is -inf in 1 row(s) [2]"),
    Case("api-offset-log-zero", "'offset(np.log(t0))', t0 = 0 in row 0", lambda: spec(
         "c ~ offset(np.log(t0)) + (1|g)", DF.assign(t0=DF.t - 1), family="poisson"),
         DataError, "The offset 'offset(np.log(t0))' is -inf"),
    # -- random terms ----------------------------------------------------------------------
    Case("api-same-kinship-twice", "'(1|id) + (1|id)' with one kinship",
         lambda: spec("y ~ x + (1|id) + (1|id)"), SpecificationError,
         "are the same effect twice"),
    Case("api-same-kinship-under-two-names", "'(1|id) + (1|id2)', id2 = id, both K",
         lambda: spec("y ~ x + (1|id) + (1|id2)", DF.assign(id2=DF.id),
                      kinship={"id": K, "id2": K}), SpecificationError,
         "are the same effect twice"),
    Case("api-same-iid-term-twice", "'(1|g) + (1|g)'", lambda: spec("y ~ x + (1|g) + (1|g)"),
         SpecificationError, "(1|g) and (1|g) are the same effect twice"),
    Case("api-iid-factor-one-level-per-row", "'(1|id)' without kinship, Gaussian",
         lambda: spec("y ~ x + (1|id)", kinship=None), SpecificationError,
         "cannot be told apart from the residual"),
    Case("api-observation-level-factor-binary", "'b ~ x + (1|g) + (1|id)', bernoulli",
         lambda: spec("b ~ x + (1|g) + (1|id)", kinship=None, family="bernoulli"),
         SpecificationError, "not identifiable from binary data"),
    Case("api-one-level-grouping-factor", "'(1|one)', one = 'z' everywhere",
         lambda: spec("y ~ x + (1|one)", DF.assign(one="z")), DataError,
         "at least two groups"),
    # -- family ----------------------------------------------------------------------------
    Case("api-unknown-family", "family='gamma'", lambda: spec(family="gamma"),
         SpecificationError, "Unknown family 'gamma'"),
    Case("api-family-link-mismatch", "family='poisson', link='logit'",
         lambda: spec("c ~ x + (1|g)", family="poisson", link="logit"), SpecificationError,
         "Link 'logit' is not available for the poisson family"),
    Case("api-trials-without-binomial", "family='poisson', trials='t'",
         lambda: spec("c ~ x + (1|g)", family="poisson", trials="t"), SpecificationError,
         "the poisson family has no number of trials"),
    Case("api-binomial-without-trials", "family='binomial' without trials",
         lambda: spec("c ~ x + (1|g)", family="binomial"), SpecificationError,
         "needs the number of trials"),
    Case("api-trials-less-than-successes", "trials = 1, successes up to 8",
         lambda: spec("c ~ x + (1|g)", DF.assign(n=1), family="binomial", trials="n"),
         DataError, "Successes exceed trials"),
    Case("api-negative-counts", "poisson response -c",
         lambda: spec("c ~ x + (1|g)", DF.assign(c=-DF.c - 1), family="poisson"), DataError,
         "must hold non-negative integers"),
    Case("api-non-integer-counts", "poisson response 1.5",
         lambda: spec("c ~ x + (1|g)", DF.assign(c=DF.c + 0.5), family="poisson"), DataError,
         "must hold non-negative integers"),
    Case("api-bernoulli-not-binary", "bernoulli response 0/1/2",
         lambda: spec("c ~ x + (1|g)", family="bernoulli"), DataError, "must be 0 or 1"),
    Case("api-bernoulli-text-three-levels", "bernoulli response 'lo'/'mid'/'hi'",
         lambda: spec("r ~ x + (1|g)", DF.assign(r=np.resize(["lo", "mid", "hi"], N)),
                      family="bernoulli"), DataError, "has 3 levels"),
    Case("api-trials-not-numeric", "family='binomial', trials='g' (text)",
         lambda: spec("c ~ x + (1|id)", family="binomial", trials="g"), DataError,
         "The trials column 'g' must be numeric"),
    # -- binomial responses written in the formula -----------------------------------------
    Case("api-cbind-without-binomial", "'cbind(c, t) ~ x + (1|g)', family gaussian",
         lambda: spec("cbind(c, t) ~ x + (1|g)"), SpecificationError,
         "counts successes out of trials"),
    Case("api-trials-given-twice", "'c | trials(t) ~ ...' and trials='t'",
         lambda: spec("c | trials(t) ~ x + (1|g)", family="binomial", trials="t"),
         SpecificationError, "The number of trials is given twice"),
    Case("api-cbind-malformed", "'cbind(c) ~ x + (1|g)'",
         lambda: spec("cbind(c) ~ x + (1|g)", family="binomial"), SpecificationError,
         "is not one lme4 writes for binomial counts"),
    Case("api-cbind-negative-failures", "'cbind(c, t - c)' with t < c in some rows",
         lambda: spec("cbind(c, t - c) ~ x + (1|g)", DF.assign(t=DF.c - 1),
                      family="binomial"), DataError, "must be non-negative whole numbers"),
    Case("api-brms-response-malformed", "'c | weights(t) ~ x + (1|g)'",
         lambda: spec("c | weights(t) ~ x + (1|g)", family="binomial"), SpecificationError,
         "is not one brms writes for binomial counts"),
    Case("api-brms-trials-zero", "'c | trials(0) ~ x + (1|g)'",
         lambda: spec("c | trials(0) ~ x + (1|g)", family="binomial"), SpecificationError,
         "must be at least 1"),
    Case("api-brms-trials-not-a-column", "'c | trials(nn) ~ x + (1|g)'",
         lambda: spec("c | trials(nn) ~ x + (1|g)", family="binomial"), SpecificationError,
         "the name 'nn' is not a column"),
    Case("api-sigma-formula-non-gaussian", "family='poisson', sigma='~ g'",
         lambda: spec("c ~ x + (1|g)", family="poisson", sigma="~ g"), SpecificationError,
         "only available for family='gaussian'"),
    # -- kinship ---------------------------------------------------------------------------
    Case("api-kinship-not-a-mapping", "kinship=[K]", lambda: spec(kinship=[K]),
         SpecificationError, "kinship must be a dict"),
    Case("api-kinship-wrong-type", "kinship={'id': ndarray}",
         lambda: spec(kinship={"id": K.matrix}), SpecificationError,
         "must be a bayeslmm.Kinship or a square pandas DataFrame"),
    Case("api-kinship-for-unknown-term", "kinship={'site': K}",
         lambda: spec("y ~ x + (1|g)", kinship={"site": K}), SpecificationError,
         "A kinship is given for 'site'"),
    Case("api-ids-missing-from-kinship", "two data ids not in K",
         lambda: spec(data=DF.assign(id=DF.id.where(DF.index > 1, "ghost"))), DataError,
         "missing from kinship 'K': ['ghost']"),
    Case("api-kinship-with-nan", "a kinship DataFrame holding NaN",
         lambda: spec(kinship={"id": kin_frame(np.where(np.eye(N) > 0, np.nan, K.matrix))}),
         KinshipError, "holds 30 NaN/inf entries"),
    Case("api-kinship-non-square-dataframe", "a 30 × 5 kinship DataFrame",
         lambda: spec(kinship={"id": kin_frame(K.matrix[:, :5], cols=IDS[:5])}), KinshipError,
         "row ids and column ids differ"),
    Case("api-kinship-non-numeric-entries", "a kinship DataFrame holding 'x'",
         lambda: spec(kinship={"id": kin_frame(K.matrix).astype(object).where(
             ~np.eye(N, k=1, dtype=bool) & ~np.eye(N, k=-1, dtype=bool), "x")}),
         KinshipError, "non-numeric entries, e.g. 'x' at row 'i00', column 'i01'"),
    Case("api-kinship-non-square-array", "Kinship(3 × 2 array)",
         lambda: bl.Kinship(np.ones((3, 2)), ["a", "b", "c"]), KinshipError,
         "must be a square matrix"),
    Case("api-kinship-wrong-number-of-ids", "Kinship(2 × 2, three ids)",
         lambda: bl.Kinship(np.eye(2), ["a", "b", "c"]), KinshipError, "2 rows but 3 ids"),
    Case("api-kinship-duplicate-ids", "a kinship DataFrame with 'i00' twice", lambda: spec(
         kinship={"id": kin_frame(K.matrix, IDS[:-1] + ["i00"], IDS[:-1] + ["i00"])}),
         KinshipError, "duplicate ids ['i00']"),
    Case("api-kinship-asymmetric", "K[0, 1] ≠ K[1, 0]",
         lambda: bl.Kinship(np.array([[1.0, 0.5], [0.1, 1.0]]), ["a", "b"]), KinshipError,
         "is not symmetric"),
    Case("api-kinship-not-psd", "a matrix with eigenvalue -0.8",
         lambda: bl.Kinship(np.array([[1.0, 0.9, 0.9], [0.9, 1.0, -0.9], [0.9, -0.9, 1.0]]),
                            ["a", "b", "c"]), KinshipError, "not positive semi-definite"),
    Case("api-kinship-all-zero", "Kinship(zeros)",
         lambda: spec(kinship={"id": kin_frame(np.zeros((N, N)))}), KinshipError,
         "is all zero"),
    Case("api-kinship-constant", "Kinship(ones)",
         lambda: spec(kinship={"id": kin_frame(np.ones((N, N)))}), KinshipError,
         "cannot be told apart from the intercept"),
    Case("api-grm-dosage-out-of-range", "grm() of dosages coded 1/2/3",
         lambda: bl.grm(np.array([[1.0, 3.0], [2.0, 1.0]])), DataError,
         "Dosages must lie in [0, 2]"),
    Case("api-grm-bad-maf", "grm(maf=0.5)", lambda: bl.grm(np.eye(3), maf=0.5), DataError,
         "maf must lie in [0, 0.5)"),
    # -- methods and sampler arguments -----------------------------------------------------
    Case("api-unknown-method", "fit(method='mcmc')", lambda: model().fit(method="mcmc"),
         SpecificationError, "Unknown method 'mcmc'"),
    Case("api-reml-for-glmm", "poisson model, fit(method='reml')",
         lambda: model("c ~ x + (1|g)", family="poisson").fit(method="reml"),
         SpecificationError, "REML is defined for Gaussian responses"),
    Case("api-laplace-for-gaussian", "fit(method='laplace')",
         lambda: model().fit(method="laplace"), SpecificationError,
         "method='laplace' is for GLMMs"),
    Case("api-bayes-correlated-block-sharing-a-factor", "'(1 + x|g) + (0 + t|g)', build()",
         lambda: model("y ~ x + (1 + x|g) + (0 + t|g)").build(), SpecificationError,
         "one covariance per grouping factor"),
    Case("api-laplace-perfect-separation", "bernoulli s = (x > 0), fit(method='laplace')",
         lambda: model("s ~ x + (1|g)", separated(), family="bernoulli").fit(method="laplace"),
         DataError, "separate the outcomes"),
    Case("api-cores-zero", "fit(cores=0)", lambda: model().fit(**FAST | {"cores": 0}),
         SpecificationError, "cores must be a positive integer"),
    Case("api-draws-zero", "fit(draws=0)", lambda: model().fit(**FAST | {"draws": 0}),
         SpecificationError, "draws must be a positive integer"),
    Case("api-draws-negative", "fit(draws=-10)", lambda: model().fit(**FAST | {"draws": -10}),
         SpecificationError, "draws must be a positive integer"),
    Case("api-draws-fractional", "fit(draws=10.5)",
         lambda: model().fit(**FAST | {"draws": 10.5}), SpecificationError,
         "draws must be a whole number"),
    Case("api-tune-negative", "fit(tune=-1)", lambda: model().fit(**FAST | {"tune": -1}),
         SpecificationError, "tune must be a positive integer"),
    Case("api-chains-zero", "fit(chains=0)", lambda: model().fit(**FAST | {"chains": 0}),
         SpecificationError, "chains must be a positive integer"),
    Case("api-seed-fractional", "fit(seed=1.5)", lambda: model().fit(**FAST | {"seed": 1.5}),
         SpecificationError, "seed must be a whole number"),
    Case("api-seed-negative", "fit(seed=-1)", lambda: model().fit(**FAST | {"seed": -1}),
         SpecificationError, "seed must be a non-negative integer"),
    Case("api-target-accept-outside-unit-interval", "fit(target_accept=1.2)",
         lambda: model().fit(**FAST | {"target_accept": 1.2}), SpecificationError,
         "target_accept must lie strictly between 0 and 1"),
    Case("api-hdi-prob-outside-unit-interval", "fit(hdi_prob=95)",
         lambda: model().fit(**FAST | {"hdi_prob": 95}), SpecificationError,
         "hdi_prob must lie strictly between 0 and 1"),
    Case("api-unknown-sampler", "fit(sampler='stan')",
         lambda: model().fit(**FAST | {"sampler": "stan"}), SpecificationError,
         "Unknown sampler 'stan'"),
    Case("api-unknown-strategy", "fit(strategy='gibbs')",
         lambda: model().fit(**FAST | {"strategy": "gibbs"}), SpecificationError,
         "Unknown strategy 'gibbs'"),
    # -- priors ----------------------------------------------------------------------------
    Case("api-prior-negative-scale", "priors={'sigma': ('halfnormal', -1)}",
         lambda: model(priors={"sigma": ("halfnormal", -1)}).build(), SpecificationError,
         "The scale (sigma) of a 'halfnormal' prior must be positive"),
    Case("api-prior-zero-scale", "priors={'b': ('normal', 0, 0)}",
         lambda: model(priors={"b": ("normal", 0, 0)}).build(), SpecificationError,
         "The scale (sigma) of a 'normal' prior must be positive"),
    Case("api-prior-not-finite", "priors={'sigma': ('halfnormal', nan)}",
         lambda: model(priors={"sigma": ("halfnormal", np.nan)}).build(), SpecificationError,
         "must be finite"),
    Case("api-prior-not-a-number", "priors={'sigma': ('halfnormal', 'wide')}",
         lambda: model(priors={"sigma": ("halfnormal", "wide")}).build(), SpecificationError,
         "must be a number"),
    Case("api-prior-unknown-family", "priors={'sigma': ('gamma', 1, 1)}",
         lambda: model(priors={"sigma": ("gamma", 1, 1)}).build(), SpecificationError,
         "Unknown prior family 'gamma'"),
    Case("api-prior-wrong-arity", "priors={'sigma': ('halfnormal', 1, 2)}",
         lambda: model(priors={"sigma": ("halfnormal", 1, 2)}).build(), SpecificationError,
         "takes 1 parameter(s); got 2"),
    Case("api-prior-unknown-key", "priors={'sd_site': ...}",
         lambda: model(priors={"sd_site": ("halfnormal", 1)}).build(), SpecificationError,
         "Unknown prior key(s) ['sd_site']"),
    # -- multi-trait models (mvbind / Gaussian cbind) ---------------------------------------
    Case("api-multitrait-trait-all-missing", "'mvbind(y, y2)', y2 NaN everywhere",
         lambda: model("mvbind(y, y2) ~ x + (1|id)", DF.assign(y2=np.nan)), DataError,
         "'y2' is missing (NaN) for every individual"),
    Case("api-multitrait-trait-not-numeric", "'mvbind(y, g)', g holds text",
         lambda: model("mvbind(y, g) ~ x + (1|id)"), DataError, "'g' must be numeric"),
    Case("api-multitrait-one-trait", "'mvbind(y) ~ x + (1|id)'",
         lambda: model("mvbind(y) ~ x + (1|id)"), SpecificationError,
         "needs at least two"),
    Case("api-multitrait-without-kinship", "'mvbind(y, t) ~ x + (1|g)'",
         lambda: model("mvbind(y, t) ~ x + (1|g)"), SpecificationError,
         "needs the relationship matrix of 'g'"),
    Case("api-multitrait-random-slope", "'mvbind(y, t) ~ x + (1 + x|id)'",
         lambda: model("mvbind(y, t) ~ x + (1 + x|id)"), SpecificationError,
         "exactly one random term"),
    Case("api-multitrait-repeated-ids", "'mvbind(y, t)', id 'i00' on two rows",
         lambda: model("mvbind(y, t) ~ x + (1|id)", DF.assign(id=["i00"] + IDS[1:-1] + ["i00"])),
         DataError, "have several rows"),
    Case("api-multitrait-binomial-trait", "'mvbind(c, y)', family={'c': 'binomial'}",
         lambda: model("mvbind(c, y) ~ x + (1|id)", family={"c": "binomial"}),
         SpecificationError, "multi-trait models take ['gaussian', 'bernoulli', 'poisson']"),
    Case("api-multitrait-family-not-a-trait", "'mvbind(b, y)', family={'z': 'poisson'}",
         lambda: model("mvbind(b, y) ~ x + (1|id)", family={"z": "poisson"}),
         SpecificationError, "which are not traits of the model"),
    Case("api-multitrait-two-probit-traits", "'mvbind(b, b2, y)', b and b2 probit",
         lambda: model("mvbind(b, b2, y) ~ x + (1|id)", DF.assign(b2=1 - DF["b"]),
                       family={"b": ("bernoulli", "probit"), "b2": ("bernoulli", "probit")}),
         SpecificationError, "needs a multivariate normal probability"),
    Case("api-multitrait-glmm-reml", "'mvbind(b, y)', family={'b': 'bernoulli'}, REML",
         lambda: model("mvbind(b, y) ~ x + (1|id)", family={"b": "bernoulli"}).fit(
             method="reml"), SpecificationError, "fit it with method='nuts'"),
    Case("api-multitrait-nuts-large-pedigree",
         "'mvbind(b, y)', b Bernoulli, sparse pedigree of 5,030 animals, NUTS",
         lambda: model("mvbind(b, y) ~ x + (1|id)", family={"b": "bernoulli"},
                       kinship={"id": bl.pedigree_relationship(
             pd.DataFrame({"id": IDS + [f"p{k}" for k in range(5000)], "sire": None,
                           "dam": None}), sparse=True)}).fit(**FAST),
         SpecificationError, "or fit the Gaussian traits alone"),
    # -- the SNP-space low-rank kinship (bl.grm(..., low_rank=True)) -------------------------
    Case("api-low-rank-nan-markers", "LowRankKinship(W) with 5 NaN values",
         lambda: LowRankKinship(np.where(np.eye(N, 5) > 0, np.nan, 1.0), IDS), KinshipError,
         "NaN/inf marker values; impute missing genotypes"),
    Case("api-low-rank-duplicate-ids", "LowRankKinship(W, ids) with 'i00' twice",
         lambda: LowRankKinship(np.ones((N, 2)), ["i00", *IDS[:-1]]), KinshipError,
         "duplicate ids ['i00']"),
    Case("api-low-rank-rows-vs-ids", "LowRankKinship(W) of 30 rows, 29 ids",
         lambda: LowRankKinship(np.ones((N, 2)), IDS[:-1]), KinshipError,
         "has 30 marker rows but 29 ids"),
    Case("api-low-rank-dense-refused", "'y ~ x + (1|id) + (1|g)' on a low-rank kinship of "
         "5,001 individuals", low_rank_outside_the_snp_path, KinshipError,
         "formed only for at most 5000 individuals. The SNP-space low-rank path supports"),
    Case("api-low-rank-snp-effects-scale", "fit.snp_effects(scale=2) on a low-rank kinship "
         "without genotypes", lambda: low_rank_fit().snp_effects(scale=2.0),
         SpecificationError, "own markers have K = W Wᵀ exactly"),
    Case("api-snp-effects-unknown-kind", "fit.snp_effects(kind='mean')",
         lambda: low_rank_fit().snp_effects(kind="mean"), SpecificationError,
         "kind must be one of 'posterior', 'conditional_mean'; got 'mean'"),
    Case("api-snp-effects-conditional-mean-on-reml",
         "fit.snp_effects(kind='conditional_mean') on a REML fit",
         lambda: low_rank_fit().snp_effects(kind="conditional_mean"), SpecificationError,
         "this reml fit is a point estimate"),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_raises_a_named_error(case: Case) -> None:
    assert issubclass(case.error, BayesLMMError)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. the kinship-scale warning of a sub-matrix
        with pytest.raises(BayesLMMError) as info:
            case.call()
    assert type(info.value) is case.error, f"{type(info.value).__name__}: {info.value}"
    assert case.phrase in str(info.value)


# ---------------------------------------------------------------------------------------
# odd but legal input: a warning and a correct result
# ---------------------------------------------------------------------------------------
def _h2(fit) -> float:
    vc = fit.variance_components().set_index("grp")["vcov"]
    return float(vc["id"] / (vc["id"] + vc["Residual"]))


def warn_kinship_scale() -> None:
    """K/2 (kinship coefficients): a warning, and σ²_id doubles while the fit is the same."""
    base = model().fit(method="reml")
    with pytest.warns(KinshipScaleWarning, match=r"mean diagonal 0\.4\d+ .*use 2·K"):
        half = model(kinship={"id": bl.Kinship(K.matrix / 2, IDS)})
    fit = half.fit(method="reml")
    vc, vc0 = (f.variance_components().set_index("grp")["vcov"] for f in (fit, base))
    assert vc["id"] == pytest.approx(2 * vc0["id"], rel=1e-6)
    assert vc["Residual"] == pytest.approx(vc0["Residual"], rel=1e-6)
    assert fit.loglik_reml == pytest.approx(base.loglik_reml, abs=1e-6)  # the same V


def warn_grm_zero_variance_markers() -> None:
    """400 all-heterozygous markers: dropped with a count, the GRM is unchanged."""
    rng = np.random.default_rng(3)
    X = rng.binomial(2, 0.4, size=(N, 200)).astype(float)
    with pytest.warns(UserWarning, match=r"400 SNP\(s\) with zero genotype variance"):
        Kh = bl.grm(np.column_stack([X, np.ones((N, 400))]))
    np.testing.assert_allclose(Kh.matrix, bl.grm(X).matrix, atol=1e-12)


def warn_low_rank_densify() -> None:
    """A model outside the SNP-space path on a small low-rank kinship: K is formed (with a
    warning) and the fit equals the one on the dense GRM."""
    dosages = np.random.default_rng(6).binomial(2, 0.3, size=(N, 12)).astype(float)
    low, dense = bl.grm(dosages, ids=IDS, low_rank=True), bl.grm(dosages, ids=IDS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BoundaryFitWarning)
        warnings.simplefilter("ignore", KinshipScaleWarning)
        with pytest.warns(LowRankDensifyWarning, match="outside the SNP-space path"):
            fit = model("y ~ x + (1|id) + (1|g)", kinship={"id": low}).fit(method="reml")
        reference = model("y ~ x + (1|id) + (1|g)", kinship={"id": dense}).fit(method="reml")
    np.testing.assert_allclose(fit.loglik, reference.loglik, rtol=1e-10)
    np.testing.assert_allclose(
        fit.variance_components()["vcov"], reference.variance_components()["vcov"], atol=1e-6
    )


def warn_low_rank_more_markers() -> None:
    """p ≥ n: the dense GRM is returned (the low-rank SVD would cost more than eigh)."""
    dosages = np.random.default_rng(7).binomial(2, 0.3, size=(N, 60)).astype(float)
    with pytest.warns(UserWarning, match="the dense n × n GRM is returned"):
        K60 = bl.grm(dosages, low_rank=True)
    assert not isinstance(K60, LowRankKinship)
    np.testing.assert_allclose(K60.matrix, bl.grm(dosages).matrix, atol=1e-12)


def warn_laplace_boundary() -> None:
    """Every group with the same counts: lme4's boundary message, estimate 0."""
    counts = DF.assign(k=np.tile([2, 3, 4, 5, 3, 4], N // 6))
    with pytest.warns(BoundaryFitWarning, match="variance of g is estimated at 0"):
        fit = model("k ~ 1 + (1|g)", counts, family=bl.Poisson(overdispersion=False)).fit(
            method="laplace"
        )
    assert fit.theta[0] < 1e-6 and "variance of g is estimated at 0" in fit.messages


def correct_covariate_with_huge_mean() -> None:
    """x + 1e9 (a position in base pairs): the same REML fit, only the intercept moves."""
    base = model().fit(method="reml")
    far = model(data=DF.assign(x=DF.x + 1e9)).fit(method="reml")
    np.testing.assert_allclose(
        far.variance_components()["vcov"], base.variance_components()["vcov"], rtol=1e-6
    )
    b, b0 = far.fixed_effects()["estimate"], base.fixed_effects()["estimate"]
    assert b.iloc[1] == pytest.approx(b0.iloc[1], rel=1e-6)
    assert b.iloc[0] == pytest.approx(b0.iloc[0] - 1e9 * b0.iloc[1], rel=1e-6)


def correct_laplace_covariate_with_huge_mean() -> None:
    """Laplace ML with x + 1e9: the same fit, only the intercept moves."""
    family = bl.Poisson(overdispersion=False)
    base = model("c ~ x + (1|g)", family=family).fit(method="laplace")
    far = model("c ~ x + (1|g)", DF.assign(x=DF.x + 1e9), family=family).fit(method="laplace")
    assert far.loglik == pytest.approx(base.loglik, abs=1e-6)
    b, b0 = far.fixed_effects(), base.fixed_effects()
    assert b["estimate"].iloc[1] == pytest.approx(b0["estimate"].iloc[1], rel=1e-4)
    assert b["se"].iloc[1] == pytest.approx(b0["se"].iloc[1], rel=1e-3)


def correct_response_times_1e_minus_55() -> None:
    """y × 1e-55: variances × 1e-110, the same h²."""
    base = model().fit(method="reml")
    tiny = model(data=DF.assign(y=DF.y * 1e-55)).fit(method="reml")
    assert _h2(tiny) == pytest.approx(_h2(base), rel=1e-8)
    np.testing.assert_allclose(
        tiny.variance_components()["vcov"], base.variance_components()["vcov"] * 1e-110, rtol=1e-8
    )


def correct_nested_grouping() -> None:
    """(1|g/id) is lme4's (1|g) + (1|g:id): the same terms and the same REML fit."""
    data = DF.assign(h=np.resize(["u", "v", "w"], N))
    nested = spec("y ~ x + (1|g/h)", data)
    written = spec("y ~ x + (1|g) + (1|g:h)", data)
    assert [t.group for t in nested.terms] == ["g", "g:h"]
    fits = [bl.LMM.from_spec(s).fit(method="reml") for s in (nested, written)]
    assert fits[0].loglik_reml == pytest.approx(fits[1].loglik_reml, abs=1e-10)


def warn_bernoulli_text_response() -> None:
    """A yes/no response: coded no = 0, yes = 1 (lme4's second level), said once."""
    text = DF.assign(sick=np.where(DF.b == 1, "yes", "no"))
    with pytest.warns(UserWarning, match="coded 'no' = 0 and 'yes' = 1"):
        coded = spec("sick ~ x + (1|g)", text, kinship=None, family="bernoulli")
    np.testing.assert_array_equal(coded.y, DF.b.to_numpy(dtype=float))


def correct_poisson_observation_level_factor() -> None:
    """A factor with one level per row in a Poisson model is the observation-level effect:
    none is added on top (glmer's grouseticks model)."""
    s = spec("c ~ x + (1|g) + (1|id)", kinship=None, family="poisson")
    assert not s.family.has_observation_level_effect
    assert [t.group for t in s.terms] == ["g", "id"]


LEGAL = {
    "api-kinship-scale-far-from-one": (
        "kinship coefficients K/2 (mean diagonal 0.5)",
        "KinshipScaleWarning",
        warn_kinship_scale,
    ),
    "api-grm-zero-variance-markers": (
        "grm() of dosages with 400 all-heterozygous markers",
        "UserWarning",
        warn_grm_zero_variance_markers,
    ),
    "api-laplace-variance-at-zero": (
        "Laplace fit whose grouping factor has no effect",
        "BoundaryFitWarning",
        warn_laplace_boundary,
    ),
    "api-covariate-with-huge-mean": (
        "x + 1e9, fit(method='reml')",
        "(correct result)",
        correct_covariate_with_huge_mean,
    ),
    "api-laplace-covariate-with-huge-mean": (
        "x + 1e9, fit(method='laplace')",
        "(correct result)",
        correct_laplace_covariate_with_huge_mean,
    ),
    "api-response-times-1e-55": (
        "y × 1e-55, fit(method='reml')",
        "(correct result)",
        correct_response_times_1e_minus_55,
    ),
    "api-nested-grouping": (
        "'y ~ x + (1|g/h)'",
        "(correct result)",
        correct_nested_grouping,
    ),
    "api-bernoulli-text-response": (
        "bernoulli response 'yes'/'no'",
        "BinaryResponseWarning",
        warn_bernoulli_text_response,
    ),
    "api-poisson-observation-level-factor": (
        "poisson '(1|g) + (1|INDEX)', INDEX one level per row",
        "(correct result)",
        correct_poisson_observation_level_factor,
    ),
    "api-low-rank-densify": (
        "'y ~ x + (1|id) + (1|g)' on a low-rank kinship of 30 individuals",
        "LowRankDensifyWarning",
        warn_low_rank_densify,
    ),
    "api-grm-low-rank-more-markers-than-individuals": (
        "bl.grm(dosages, low_rank=True) with 60 markers for 30 individuals",
        "UserWarning",
        warn_low_rank_more_markers,
    ),
}


@pytest.mark.parametrize("case_id", list(LEGAL))
def test_odd_but_legal_input_warns_and_gives_the_correct_result(case_id: str) -> None:
    LEGAL[case_id][2]()


def test_catalogue_is_large_and_ids_are_unique() -> None:
    ids = [c.id for c in CASES] + list(LEGAL)
    assert len(CASES) >= 40 and len(ids) == len(set(ids))
    assert all(re.fullmatch(r"api-[a-z0-9-]+", i) for i in ids)


def test_every_case_is_documented_in_errors_md() -> None:
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    missing = [i for i in [c.id for c in CASES] + list(LEGAL) if f"`{i}`" not in section]
    assert not missing, f"docs/errors.md (## Python API) lacks {missing}"
