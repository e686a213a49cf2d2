"""Families own their maths: no family or link name is compared outside ``families.py``,
and a new family is one class that the engines take as it is.

The new family here is the geometric distribution with a log link (a negative binomial with
shape 1): its likelihood is checked against scipy.stats, its Laplace-ML fit against an
independent implementation of the Laplace deviance (scipy's scalar optimiser on
scipy.stats' log-pmf, group by group), and its observed-scale moments against their closed
forms.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, special, stats

import bayeslmm as bl
from bayeslmm.errors import DataError
from bayeslmm.families import FAMILIES, Family, register_family
from bayeslmm.results.scales import observed_scale_parameters

PACKAGE = Path(bl.__file__).resolve().parent

# -- (a) no family or link name comparisons outside families.py ----------------------------

NAMES = {"gaussian", "poisson", "bernoulli", "binomial", "identity", "log", "logit", "probit"}
COMPARISONS = (ast.Eq, ast.NotEq, ast.In, ast.NotIn, ast.Is, ast.IsNot)


def _strings(node: ast.AST) -> set[str]:
    """The string constants of a constant or of a tuple / list / set display."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return set().union(*(_strings(e) for e in node.elts)) if node.elts else set()
    return set()


def _family_attribute(node: ast.AST) -> bool:
    """``<family>.name`` or any ``.link`` (or a variable called ``link``)."""
    if isinstance(node, ast.Name):
        return node.id == "link"
    if isinstance(node, ast.Attribute):
        if node.attr == "link":
            return True
        return node.attr == "name" and "fam" in ast.unparse(node.value).lower()
    return False


def name_comparisons(source: str) -> list[tuple[int, str]]:
    """(line, code) of each family or link name comparison in ``source``.

    Comparisons (==, !=, in, not in, is) against a family or link name, or of a family's
    ``.name`` / a ``.link`` against anything; dictionaries keyed by those names (a lookup
    table is a comparison in disguise); ``match`` cases on them. Docstrings and messages
    are not comparisons and do not count.
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare) and any(isinstance(o, COMPARISONS) for o in node.ops):
            operands = [node.left, *node.comparators]
            if any(_strings(o) & NAMES or _family_attribute(o) for o in operands):
                found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.Dict):
            if any(k is not None and _strings(k) & NAMES for k in node.keys):
                found.append((node.lineno, ast.unparse(node)[:80]))
        elif isinstance(node, ast.MatchValue) and _strings(node.value) & NAMES:
            found.append((node.lineno, f"case {ast.unparse(node.value)}"))
    return found


def test_the_check_sees_comparisons_and_not_docstrings():
    source = '''
def f(fam, spec, link, x):
    """Poisson: if family == "poisson" in a docstring does not count."""
    a = fam.name == "poisson"
    b = spec.family.link in ("logit", "probit")
    c = link != x
    d = {"logit": 3.29, "probit": 1.0}[x]
    e = x == "identity"
    g = fam.name
    h = x == "normal"  # a prior family, not a response family
    match x:
        case "bernoulli":
            pass
    raise ValueError(f"the {fam.name} family has no link {link}")
'''
    lines = sorted(line for line, _ in name_comparisons(source))
    assert lines == [4, 5, 6, 7, 8, 12]


def test_no_family_or_link_name_comparisons_outside_families_py():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "families.py":
            continue
        for line, code in name_comparisons(path.read_text(encoding="utf-8")):
            offenders.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {code}")
    assert not offenders, (
        "Family-specific branches belong to the family (bayeslmm/families.py): ask it through "
        "a method or attribute instead of comparing names:\n" + "\n".join(offenders)
    )


# -- (b) a new family is one class -------------------------------------------------------


@dataclass(frozen=True)
class Geometric(Family):
    """Counts with P(y) = μ^y / (1 + μ)^(y + 1), log link: a negative binomial, shape 1."""

    name: ClassVar[str] = "geometric"
    links: ClassVar[tuple[str, ...]] = ("log",)

    def validate(self, y, trials=None):
        bad = np.flatnonzero((y < 0) | (y != np.round(y)))
        if bad.size:
            raise DataError(
                f"The geometric response must hold non-negative integers; rows "
                f"{bad[:5].tolist()} hold {y[bad[:5]].tolist()}. Fix the counts."
            )

    def variance_function(self, eta):
        mu = np.exp(eta)
        return mu * (1.0 + mu)

    def loglik(self, y, eta, trials=None):
        # y log μ − (y + 1) log(1 + μ), log(1 + e^η) without overflow
        return y * eta - (y + 1.0) * np.logaddexp(0.0, eta)

    def score(self, y, eta, trials=None):
        return y - (y + 1.0) * special.expit(eta)

    def fisher_weight(self, eta, trials=None):
        return special.expit(eta)  # (dμ/dη)² / Var(y) = μ² / (μ (1 + μ))

    def link_variance(self, mean=None, method="lognormal"):
        # ln(1 + 1/λ + 1/θ) with θ = 1 (Nakagawa, Johnson & Schielzeth 2017, table 1)
        return np.log(2.0 + 1.0 / np.asarray(mean, dtype=float))

    def latent_residual_variance(self, eta_fixed, var_random, var_olre, xp=np):
        lam = xp.mean(xp.exp(eta_fixed), axis=-1) * xp.exp(0.5 * (var_random + var_olre))
        return xp.log(2.0 + 1.0 / lam) + var_olre

    def pymc_likelihood(self, name, eta, y, trials=None, sigma=None, dims="obs"):
        import pymc as pm

        counts = np.asarray(y).astype("int64")
        return pm.NegativeBinomial(name, mu=pm.math.exp(eta), alpha=1.0, observed=counts, dims=dims)


@pytest.fixture
def geometric():
    """Geometric in the family table for one test (``family="geometric"`` resolves)."""
    register_family(Geometric)
    yield Geometric
    del FAMILIES[Geometric.name]


def _geometric_data(seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    groups = np.repeat([f"g{k}" for k in range(8)], 5)
    x = rng.normal(size=groups.size)
    u = 0.8 * rng.normal(size=8)
    eta = 0.4 + 0.5 * x + np.repeat(u, 5)
    # numpy's negative binomial counts failures before one success: mean (1 − p)/p = μ
    y = rng.negative_binomial(1, 1.0 / (1.0 + np.exp(eta)))
    return pd.DataFrame({"y": y, "x": x, "g": groups})


def test_geometric_likelihood_against_scipy():
    fam = Geometric()
    y = np.arange(8.0)
    eta = np.linspace(-2.0, 3.0, 8)
    mu = np.exp(eta)
    expected = stats.nbinom.logpmf(y, 1, 1.0 / (1.0 + mu))
    np.testing.assert_allclose(fam.loglik(y, eta), expected, rtol=1e-12)
    step = 1e-6
    numeric = (fam.loglik(y, eta + step) - fam.loglik(y, eta - step)) / (2 * step)
    np.testing.assert_allclose(fam.score(y, eta), numeric, rtol=1e-7, atol=1e-9)
    # Fisher weight = E[score²] (the information identity), summed over the support
    support = np.arange(4000.0)[:, None]
    pmf = stats.nbinom.pmf(support, 1, 1.0 / (1.0 + mu))
    information = (pmf * fam.score(support, eta) ** 2).sum(0)
    np.testing.assert_allclose(fam.fisher_weight(eta), information, rtol=1e-10)
    with pytest.raises(DataError, match="rows \\[1\\] hold \\[1.5\\]"):
        fam.validate(np.array([1.0, 1.5]))


def _independent_laplace_deviance(df: pd.DataFrame, theta: float, beta: np.ndarray) -> float:
    """glmer's Laplace deviance of y ~ 1 + x + (1 | g), group by group, from scipy alone:
    −2 [max_b Σ_i log p(y_i | η_i) − b²/2] + log(1 + θ² Σ_i w_i), η = Xβ + θ b, w the
    Fisher weight μ/(1 + μ) at the conditional mode (the PIRLS weight, as lme4)."""
    total = 0.0
    for _, rows in df.groupby("g"):
        eta0 = beta[0] + beta[1] * rows["x"].to_numpy()
        y = rows["y"].to_numpy()

        def objective(b, eta0=eta0, y=y):
            mu = np.exp(eta0 + theta * b)
            return -stats.nbinom.logpmf(y, 1, 1.0 / (1.0 + mu)).sum() + 0.5 * b * b

        res = optimize.minimize_scalar(objective, bounds=(-10, 10), method="bounded",
                                       options={"xatol": 1e-10})  # fmt: skip
        mu = np.exp(eta0 + theta * res.x)
        total += 2.0 * res.fun + np.log1p(theta**2 * np.sum(mu / (1.0 + mu)))
    return float(total)


def test_a_new_family_fits_by_laplace_ml(geometric):
    df = _geometric_data()
    fit = bl.LMM("y ~ 1 + x + (1 | g)", df, family="geometric").fit(method="laplace")
    assert fit.converged
    theta, beta = float(fit.theta[0]), np.asarray(fit.beta, dtype=float)
    assert fit.deviance == pytest.approx(_independent_laplace_deviance(df, theta, beta), abs=1e-6)
    # the estimate minimises the independent deviance: its gradient there is ~0
    x0, step = np.r_[theta, beta], 1e-4

    def deviance(v):
        return _independent_laplace_deviance(df, float(v[0]), v[1:])

    grad = [(deviance(x0 + step * e) - deviance(x0 - step * e)) / (2 * step) for e in np.eye(3)]
    np.testing.assert_allclose(grad, 0.0, atol=2e-3)
    assert 0.1 < theta < 2.0 and 0.0 < beta[1] < 1.0  # near the simulated 0.8 and 0.5


def test_a_new_family_on_the_observed_scale_and_in_pymc(geometric):
    """The observed scale by quadrature of the family's h, v, h' against the lognormal
    closed forms; its PyMC likelihood against scipy."""
    fam = Geometric()
    eta, va, vp = np.array([-0.5, 0.0, 0.7]), 0.3, 0.8
    obs = observed_scale_parameters(va, vp, eta, fam)
    mean = np.exp(eta + vp / 2).mean()
    second = np.exp(2 * eta + 2 * vp).mean()  # E h²; E v = E h + E h² for μ(1 + μ)
    var_obs = second - mean**2 + mean + second
    assert obs["mean_obs"] == pytest.approx(mean, rel=1e-10)
    assert obs["var_obs"] == pytest.approx(var_obs, rel=1e-8)
    assert obs["h2_obs"] == pytest.approx(mean**2 * va / var_obs, rel=1e-8)
    lam = float(np.exp(eta).mean() * np.exp(0.5 * vp))
    assert fam.latent_residual_variance(eta, vp, 0.0) == pytest.approx(np.log(2 + 1 / lam))

    import pymc as pm

    y = np.array([0, 3, 1, 7])
    with pm.Model():
        node = fam.pymc_likelihood("y", np.array([0.1, 1.0, -0.3, 1.5]), y, dims=None)
        # FAST_COMPILE: no C compilation for four numbers
        value = float(pm.logp(node, y).sum().eval(mode="FAST_COMPILE"))
    expected = Geometric().loglik(y.astype(float), np.array([0.1, 1.0, -0.3, 1.5])).sum()
    assert value == pytest.approx(expected, rel=1e-10)


def test_routes_a_family_does_not_cover_say_so(geometric):
    df = _geometric_data()
    spec = bl.specify("y ~ 1 + x + (1 | g)", df, family="geometric")
    from bayeslmm.engines.bayes.laplace_marginal import laplace_obstacles

    assert laplace_obstacles(spec) == ["the geometric family's log link is not its canonical link"]
    with pytest.raises(NotImplementedError, match="geometric family has no information"):
        Geometric().information(np.zeros(2))
    with pytest.raises(ValueError, match="family must be one of"):
        bl.datasets.simulate(family="geometric")


def test_register_family_refuses_a_clash(geometric):
    @dataclass(frozen=True)
    class Other(Geometric):
        pass

    with pytest.raises(bl.SpecificationError, match="already registered"):
        register_family(Other)
    with pytest.raises(TypeError, match="Family subclass"):
        register_family(int)


def test_the_architecture_page_shows_this_class():
    """docs/architecture.md's "Adding a family" is the class fitted above, verbatim."""
    import inspect

    page = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
    if not page.exists():
        pytest.skip("docs/ is not next to the tests (installed package)")
    assert inspect.getsource(Geometric) in page.read_text(encoding="utf-8")
