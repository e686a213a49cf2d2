"""Model specification: one immutable object that every engine consumes.

:func:`specify` turns a formula in the lme4 / brms grammar, a data frame, named kinship
matrices, a family and priors into a :class:`ModelSpec`: numeric arrays with their labels,
validated once with errors that say what is wrong and how to fix it. The engines (PyMC
builder, REML, Laplace) read only this object; they never see formula text.

Grammar
-------
``y ~ x1 + x2 + (1 | g) + (1 + env | line) + (1 + env || line) + offset(log(t))``

- fixed effects: anything `formulae` understands (categoricals, interactions, transforms);
- ``(expr | g)``: a random effect per level of ``g`` for each column of ``expr`` (an intercept
  is implied as in lme4; ``0 +`` removes it), correlated within the block;
- ``(expr || g)``: the same, uncorrelated (diagonal covariance);
- ``(1 | a:b)``: one level per combination; ``(1 | a/b)`` is ``(1 | a) + (1 | a:b)``;
- ``factor(x)`` (R's spelling) is formulae's ``C(x)``, also around a grouping factor;
- binomial counts on the left: ``cbind(s, f)``, ``cbind(s, n - s)`` or ``s | trials(n)``;
  a two-level text response of a Bernoulli model is coded 0/1 (second level = 1);
- ``kinship={"g": K}``: the levels of ``g`` are correlated by the relationship matrix K
  (Cov(u) = Σ ⊗ K); without it they are iid.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from bayeslmm.errors import DataError, SpecificationError, preview
from bayeslmm.families import Family, get_family
from bayeslmm.kinship import Kinship, KinshipScaleWarning

#: Mean diagonals of a kinship (on the data's ids) accepted without a warning.
KINSHIP_SCALE_RANGE = (0.625, 1.6)


@dataclass(frozen=True, eq=False)
class RandomTerm:
    """One random-effect block ``(covariates | group)``.

    The contribution to the linear predictor of observation i is
    ``sum_j design[i, j] * u[index[i], j]`` with ``vec(u) ~ N(0, Σ ⊗ K)``, Σ an m × m
    covariance (diagonal when ``correlated`` is False) and K the kinship (identity when None).

    Attributes
    ----------
    group : str
        Name of the grouping factor (lme4's ``grp``).
    levels : tuple of str
        The q levels, in the order of ``u``'s rows (kinship order when a kinship is attached).
    index : ndarray of int, shape (n,)
        Level of each observation.
    covariates : tuple of str
        Names of the m coefficients, e.g. ``("Intercept", "env")``.
    design : ndarray, shape (n, m)
        Value multiplying each coefficient for each observation.
    correlated : bool
        Whether the coefficients of a level are correlated (``|``) or not (``||``).
    kinship : Kinship or None
        Relationship matrix aligned to ``levels``; None for iid levels.
    """

    group: str
    levels: tuple[str, ...]
    index: np.ndarray
    covariates: tuple[str, ...]
    design: np.ndarray
    correlated: bool = True
    kinship: Kinship | None = None

    @property
    def n_levels(self) -> int:
        return len(self.levels)

    @property
    def n_coef(self) -> int:
        return len(self.covariates)

    @property
    def is_intercept_only(self) -> bool:
        return self.covariates == ("Intercept",)

    @property
    def label(self) -> str:
        """A readable label, e.g. ``"1|id"`` or ``"1 + env|line"`` (``||`` if uncorrelated)."""
        lhs = " + ".join("1" if c == "Intercept" else c for c in self.covariates)
        if "Intercept" not in self.covariates:
            lhs = "0 + " + lhs
        return f"{lhs}{'|' if self.correlated else '||'}{self.group}"

    def incidence(self) -> sp.csr_matrix:
        """The n × q 0/1 incidence matrix (observation → level)."""
        n = self.index.size
        return sp.csr_matrix((np.ones(n), (np.arange(n), self.index)), shape=(n, self.n_levels))

    def z(self, j: int = 0) -> sp.csr_matrix:
        """The n × q design of coefficient j: incidence scaled by ``design[:, j]``."""
        n = self.index.size
        return sp.csr_matrix(
            (self.design[:, j], (np.arange(n), self.index)), shape=(n, self.n_levels)
        )

    @property
    def is_identity_incidence(self) -> bool:
        """True when each level has exactly one observation, in level order (Z = I).

        Examples
        --------
        >>> RandomTerm("g", ("a", "b"), np.array([0, 1]), ("Intercept",),
        ...            np.ones((2, 1))).is_identity_incidence
        True
        """
        return self.index.size == self.n_levels and bool(
            np.array_equal(self.index, np.arange(self.n_levels))
        )

    def kinship_scale(self) -> float:
        """c = mean_i K_ii − mean_ii' K_ii' over the observations (1 for iid levels).

        The variance of the genetic values d u_l of the sample's records for a covariate
        vector d shared by all is c · d Σ dᵀ (Legarra 2016), so reaction norms and
        per-environment tables report variances at this scale.

        Examples
        --------
        >>> K = Kinship(np.array([[2.0, 1.0], [1.0, 2.0]]), ["a", "b"])
        >>> RandomTerm("g", ("a", "b"), np.array([0, 1]), ("Intercept",), np.ones((2, 1)),
        ...            kinship=K).kinship_scale()
        0.5
        """
        if self.kinship is None:
            return 1.0
        # diagonal() and dot(): a kinship held as a sparse pedigree inverse is never densified
        counts = np.bincount(self.index, minlength=self.n_levels).astype(float)
        n = float(self.index.size)
        diagonal = self.kinship.diagonal()
        return float(diagonal[self.index].mean() - counts @ self.kinship.dot(counts) / n**2)

    def variance_weights(self, scale: str = "sample", rows: np.ndarray | None = None) -> np.ndarray:
        """The m × m matrix W with ``variance = Σ_jk Σ_jk W_jk`` for this term's Σ.

        ``scale="sample"`` (the default of every h² table): the expected variance of the
        term's contributions g_i = d_iᵀ u_{l(i)} *across the sample's observations*,
        E[(1/n) Σ_i (g_i − ḡ)²] = Σ_jk Σ_jk W_jk with

            W = (D ∘ k)ᵀ D / n − Dᵀ Z K Zᵀ D / n²,    k_i = K_{l(i) l(i)},

        (Legarra 2016, Theor. Popul. Biol. 107:26: σ_g² (mean diag K − mean K) for an
        intercept). It is unchanged by K → cK after σ_g² → σ_g²/c, equals σ_g² for a GRM of
        centred markers normalised to mean diagonal 1, and is what a heritability "of this
        sample" means. iid terms keep lme4's convention W = DᵀD/n (Johnson 2014): the
        between-level variance without the 1/q finite-sample correction.

        ``scale="diagonal"``: (D ∘ k)ᵀ D / n, the mean marginal variance of g_i (what a
        latent-scale mean such as a Poisson λ̄ integrates over). ``scale="unit"``: DᵀD/n,
        GCTA's convention (σ_g² at K_ii = 1). ``rows`` restricts the sample to those
        observations (e.g. one environment).

        Examples
        --------
        >>> K = Kinship(np.array([[2.0, 1.0], [1.0, 2.0]]), ["a", "b"])
        >>> t = RandomTerm("g", ("a", "b"), np.array([0, 1]), ("Intercept",),
        ...                np.ones((2, 1)), kinship=K)
        >>> t.variance_weights("sample").tolist(), t.variance_weights("unit").tolist()
        ([[0.5]], [[1.0]])
        """
        if scale not in ("sample", "diagonal", "unit"):
            raise ValueError(f"scale must be 'sample', 'diagonal' or 'unit'; got {scale!r}.")
        if rows is None:
            # every table asks again (a point estimate's Jacobian many times): O(q²) once
            cache = self.__dict__.setdefault("_weights_cache", {})
            if scale not in cache:
                cache[scale] = self._variance_weights(scale, None)
                cache[scale].flags.writeable = False
            return cache[scale]
        return self._variance_weights(scale, rows)

    def _variance_weights(self, scale: str, rows: np.ndarray | None) -> np.ndarray:
        D = np.asarray(self.design, dtype=float)
        index = np.asarray(self.index)
        if rows is not None:
            D, index = D[np.asarray(rows)], index[np.asarray(rows)]
        n = D.shape[0]
        if scale == "unit" or self.kinship is None:
            return D.T @ D / n
        k = self.kinship.diagonal()[index]
        diagonal = (D * k[:, None]).T @ D / n
        if scale == "diagonal":
            return diagonal
        # Wᵀ K W with W (q × m) the column sums of D per level: Dᵀ Z K Zᵀ D in O(q² m)
        W = np.zeros((self.n_levels, D.shape[1]))
        np.add.at(W, index, D)
        return diagonal - W.T @ self.kinship.dot(W) / n**2


@dataclass(frozen=True, eq=False)
class ModelSpec:
    """A validated model: response, fixed design, random terms, family and priors.

    Build it with :func:`specify`. All arrays are read-only.
    """

    formula: str
    response: str
    y: np.ndarray
    X: np.ndarray
    fixed_names: tuple[str, ...]
    terms: tuple[RandomTerm, ...]
    family: Family
    data: pd.DataFrame
    trials: np.ndarray | None = None
    offset: np.ndarray | None = None
    sigma_formula: str | None = None
    sigma_X: np.ndarray | None = None
    sigma_names: tuple[str, ...] = ()
    priors: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def n_obs(self) -> int:
        return int(self.y.size)

    @property
    def kinship_terms(self) -> tuple[RandomTerm, ...]:
        return tuple(t for t in self.terms if t.kinship is not None)

    @property
    def iid_terms(self) -> tuple[RandomTerm, ...]:
        return tuple(t for t in self.terms if t.kinship is None)

    @property
    def has_heteroscedastic_residual(self) -> bool:
        return self.sigma_X is not None

    def coefficient_groups(self) -> list[list[str]]:
        """lme4's ``grp`` label of each coefficient of each term (``g``, ``g.1``, …).

        A grouping factor used again is named ``g.1``, ``g.2``, …; lme4 expands
        ``(a + b || g)`` into one term per coefficient, so those coefficients are numbered
        the same way. Every engine labels its variance components with these.

        Examples
        --------
        >>> df = pd.DataFrame({"y": [1.0, 2.0, 0.5, 1.5], "x": [0.0, 1.0, 0.0, 1.0],
        ...                    "g": ["a", "a", "b", "b"]})
        >>> specify("y ~ (1 | g) + (0 + x | g)", df).coefficient_groups()
        [['g'], ['g.1']]
        """
        seen: dict[str, int] = {}
        out = []
        for term in self.terms:
            width = 1 if term.correlated else term.n_coef
            labels = []
            for _ in range(width):
                n = seen.get(term.group, 0)
                labels.append(term.group if n == 0 else f"{term.group}.{n}")
                seen[term.group] = n + 1
            out.append(labels if width == term.n_coef else labels * term.n_coef)
        return out

    def residual_groups(self) -> tuple[tuple[str, ...], np.ndarray] | None:
        """The environments of a categorical residual-variance formula, or None.

        Returns ``(labels, group)``: one label per distinct row of ``sigma_X`` (e.g.
        ``"env[dry]"``), sorted, and the group of each observation. None for a homoscedastic
        model or when ``sigma_X`` is not one indicator per level (a continuous covariate).

        Examples
        --------
        >>> df = pd.DataFrame({"y": [1.0, 2.0, 0.5, 1.5], "env": ["w", "d", "w", "d"]})
        >>> labels, group = specify("y ~ 1", df, sigma="~ 0 + env").residual_groups()
        >>> labels, group.tolist()
        (('env[d]', 'env[w]'), [1, 0, 1, 0])
        """
        if self.sigma_X is None:
            return None
        S = np.asarray(self.sigma_X, dtype=float)
        patterns, group = np.unique(np.round(S, 12), axis=0, return_inverse=True)
        group = group.ravel()
        if patterns.shape[0] != S.shape[1]:
            return None
        rhs = (self.sigma_formula or "").split("~", 1)[-1]
        tokens = set(re.findall(r"[A-Za-z_.][A-Za-z0-9_.]*", rhs))
        columns = [c for c in self.data.columns if str(c) in tokens]
        first = [int(np.flatnonzero(group == g)[0]) for g in range(patterns.shape[0])]
        labels = [
            ":".join(f"{c}[{self.data[c].iat[i]}]" for c in columns) or f"sigma[{g}]"
            for g, i in enumerate(first)
        ]
        order = sorted(range(len(labels)), key=lambda g: labels[g])
        rank = np.empty(len(order), dtype=int)
        rank[order] = np.arange(len(order))
        return tuple(labels[g] for g in order), rank[group]


def one_term_per_group(spec: ModelSpec) -> ModelSpec:
    """The same model with the terms of each grouping factor joined in one block.

    ``(1 | g) + (0 + x | g)`` (independent intercepts and slopes, each with its own
    variance) is ``(1 + x || g)``: Σ = diag(σ²_1, σ²_x) ⊗ K either way. Engines that keep one
    covariance per grouping factor (the Bayesian builder) take the joined form; the variance
    components keep their names (``g``, ``g.1``: :meth:`ModelSpec.coefficient_groups`), so
    they match the engines that fit the terms separately. A correlated block sharing its
    factor with another term has a block-diagonal covariance that no single block writes:
    refused with a formula that does.

    Examples
    --------
    >>> df = pd.DataFrame({"y": [1.0, 2.0, 0.5, 1.5, 1.2], "x": [0.0, 1.0, 0.0, 1.0, 2.0],
    ...                    "g": ["a", "a", "b", "b", "b"]})
    >>> spec = specify("y ~ (1 | g) + (0 + x | g)", df)
    >>> [t.label for t in one_term_per_group(spec).terms]
    ['1 + x||g']
    """
    by_group: dict[str, list[RandomTerm]] = {}
    for term in spec.terms:
        by_group.setdefault(term.group, []).append(term)
    if all(len(ts) == 1 for ts in by_group.values()):
        return spec
    joined = []
    for group, ts in by_group.items():
        if len(ts) == 1:
            joined.append(ts[0])
            continue
        correlated = [t for t in ts if t.correlated and t.n_coef > 1]
        covariates = [c for t in ts for c in t.covariates]
        if correlated:  # (repeated covariates were refused by specify as duplicates)
            lhs = " + ".join(dict.fromkeys("1" if c == "Intercept" else c for c in covariates))
            if "Intercept" not in covariates:
                lhs = "0 + " + lhs
            raise SpecificationError(
                f"The terms {' and '.join(f'({t.label})' for t in ts)} share the grouping "
                f"factor '{group}', and one of them has correlated coefficients: the Bayesian "
                "engine fits one covariance per grouping factor, which this block-diagonal one "
                f"is not. Write one block, e.g. ({lhs} | {group}) (all correlated) or "
                f"({lhs} || {group}) (none), or fit with method='reml' / 'laplace'."
            )
        joined.append(
            replace(
                ts[0],
                covariates=tuple(covariates),
                design=np.column_stack([t.design for t in ts]),
                correlated=False,
            )
        )
    return replace(spec, terms=tuple(joined))


# ---------------------------------------------------------------------------------------
# formula parsing
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Block:
    lhs: str
    group: str
    correlated: bool


def split_formula(formula: str) -> tuple[str, str, list[_Block]]:
    """Split ``"y ~ x + (1 + e | g)"`` into response, fixed part and random blocks.

    Examples
    --------
    >>> split_formula("y ~ x + (1 + e || g)")
    ('y', 'x', [_Block(lhs='1 + e', group='g', correlated=False)])
    """
    if not isinstance(formula, str):
        raise SpecificationError(
            f"The formula must be a string such as 'y ~ x + (1 | id)'; got "
            f"{type(formula).__name__} {formula!r}."
        )
    if formula.count("~") != 1:
        raise SpecificationError(
            f"A formula needs exactly one '~' between response and predictors; got {formula!r}."
        )
    lhs, rhs = (s.strip() for s in formula.split("~"))
    if not lhs:
        raise SpecificationError(f"The formula {formula!r} has no response on the left of '~'.")
    if not rhs:
        raise SpecificationError(
            f"The formula {formula!r} has nothing on the right of '~'; write '{lhs} ~ 1' for a "
            "model with an intercept only."
        )
    blocks: list[_Block] = []
    fixed_parts: list[str] = []
    depth, start, buf = 0, None, []
    for k, ch in enumerate(rhs):
        if ch == "(":
            if depth == 0:
                start = k
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise SpecificationError(f"Unbalanced ')' in formula {formula!r}.")
            if depth == 0:
                inner = rhs[start + 1 : k]
                if "|" in _top_level(inner):
                    blocks.extend(_parse_block(inner, formula))
                    buf.append("\0")  # placeholder, removed below
                else:
                    buf.append(rhs[start : k + 1])
                continue
        if depth == 0 and ch not in "()":
            buf.append(ch)
    if depth != 0:
        raise SpecificationError(f"Unbalanced '(' in formula {formula!r}.")
    fixed = "".join(buf)
    if "|" in fixed:
        # formulae would read '1|g' as a Boolean "or" and drop it without a word
        raise SpecificationError(
            f"The formula {formula!r} has a '|' outside parentheses; write each random term "
            "in parentheses, e.g. 'y ~ x + (1 | g)'."
        )
    fixed_parts = [p.strip() for p in fixed.split("+")]
    fixed = " + ".join(p for p in fixed_parts if p and p != "\0")
    return lhs, (fixed or "1"), blocks


def _top_level(text: str) -> str:
    """The characters of ``text`` outside nested parentheses."""
    out, depth = [], 0
    for ch in text:
        depth += ch == "("
        if depth == 0:
            out.append(ch)
        depth -= ch == ")"
    return "".join(out)


#: ``factor(g)``, ``as.factor(g)`` and ``C(g)`` around a grouping factor: R users write them,
#: and a grouping factor is categorical anyway.
_AS_FACTOR = re.compile(r"^(?:factor|as\.factor|C)\(\s*([^()]+?)\s*\)$")


def _grouping_name(text: str) -> str:
    """``"factor(a) : b"`` → ``"a:b"``: the parts of an interaction, without factor()/C()."""
    parts = []
    for part in text.split(":"):
        part = part.strip()
        match = _AS_FACTOR.match(part)
        parts.append(match.group(1) if match else part)
    return ":".join(parts)


def _parse_block(inner: str, formula: str) -> list[_Block]:
    """One ``(expr | g)`` block; a nested ``(expr | a/b)`` is lme4's ``(expr | a) +
    (expr | a:b)`` (and ``a/b/c`` adds ``a:b:c``)."""
    correlated = "||" not in inner
    lhs, _, group = inner.partition("||" if not correlated else "|")
    lhs, group = lhs.strip(), group.strip()
    nesting = [seg.strip() for seg in group.split("/")]
    if not lhs or not all(nesting):
        raise SpecificationError(
            f"Random term '({inner})' in {formula!r} needs an expression and a grouping factor, "
            "e.g. (1 | id), (1 + env | line) or (1 | site/plot)."
        )
    names = [_grouping_name(seg) for seg in nesting]
    return [
        _Block(lhs=lhs, group=":".join(names[: k + 1]), correlated=correlated)
        for k in range(len(names))
    ]


# ---------------------------------------------------------------------------------------
# design matrices
# ---------------------------------------------------------------------------------------
def _design(rhs: str, data: pd.DataFrame, where: str) -> tuple[np.ndarray, list[str]]:
    """Evaluate a right-hand side with formulae; return the matrix and its column names."""
    import formulae
    from formulae.transforms import C

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # factor(x) and as.factor(x): R's spellings of formulae's C(x) (formulae reads
            # a dotted name as an attribute, hence the rewrite); the column names keep factor
            dm = formulae.design_matrices(
                re.sub(r"(?<![\w.])as\.factor\(", "factor(", rhs),
                data,
                na_action="error",
                extra_namespace={"factor": C},
            )
    except KeyError as exc:
        raise SpecificationError(
            f"Cannot build the {where} '{rhs}': {exc} is neither a column of the data nor a "
            "function that formulae knows (use np.log, np.sqrt, C(...) or factor(...), "
            f"scale(...), ...). Available columns: {preview(data.columns, 12)}."
        ) from exc
    except Exception as exc:  # formulae raises ParseError/ValueError/...
        raise SpecificationError(
            f"Cannot build the {where} '{rhs}': {type(exc).__name__}: {exc}. "
            f"Available columns: {preview(data.columns, 12)}."
        ) from exc
    common = dm.common
    if common is None:  # e.g. "0": no columns at all
        return np.zeros((data.shape[0], 0)), []
    names: list[str] = []
    for term_name, term in common.terms.items():
        width = common.slices[term_name].stop - common.slices[term_name].start
        labels = list(getattr(term, "labels", None) or [term_name])
        if len(labels) != width:
            labels = [f"{term_name}[{i}]" for i in range(width)]
        names.extend(labels)
    return np.asarray(common.design_matrix, dtype=float), names


def _identifiers(formula: str) -> set[str]:
    return set(re.findall(r"[A-Za-z_.][A-Za-z0-9_.]*", formula))


def _variables(text: str) -> set[str]:
    """Identifiers of ``text`` that are not function names (``C`` in ``C(g)`` is not)."""
    out = set()
    for match in re.finditer(r"[A-Za-z_.][A-Za-z0-9_.]*", text):
        if not text[match.end() :].lstrip().startswith("("):
            out.add(match.group())
    return out


@dataclass(frozen=True)
class _Response:
    """The left-hand side of a formula: the response column, and for binomial counts where
    the number of trials comes from (lme4's ``cbind(s, f)``, brms's ``s | trials(n)``)."""

    text: str
    column: str
    failures: str | None = None  # cbind(s, f): a column, or "n - s" of two columns
    trials: str | None = None  # s | trials(n): a column ...
    trials_constant: int | None = None  # ... or a whole number

    @property
    def gives_trials(self) -> bool:
        return self.failures is not None or self.trials is not None or bool(self.trials_constant)

    @property
    def columns(self) -> list[str]:
        """Every data column the left-hand side reads."""
        out = [self.column]
        if self.failures is not None:
            out += [c.strip() for c in self.failures.split(" - ")]
        if self.trials is not None:
            out.append(self.trials)
        return out


_NAME = r"[A-Za-z_.][A-Za-z0-9_.]*"
_CBIND = re.compile(rf"^cbind\(\s*({_NAME})\s*,\s*({_NAME}(?:\s*-\s*{_NAME})?)\s*\)$")
_BRMS_TRIALS = re.compile(rf"^({_NAME})\s*\|\s*trials\(\s*({_NAME}|[0-9]+)\s*\)$")


def _parse_response(lhs: str, formula: str) -> _Response:
    """Read ``y``, ``cbind(s, f)``, ``cbind(s, n - s)`` or ``s | trials(n)``.

    Examples
    --------
    >>> _parse_response("cbind(sick, n - sick)", "").failures
    'n - sick'
    >>> _parse_response("sick | trials(10)", "").trials_constant
    10
    """
    text = lhs.strip()
    if text.startswith("cbind("):
        match = _CBIND.match(text)
        if not match:
            raise SpecificationError(
                f"The response {text!r} of {formula!r} is not one lme4 writes for binomial "
                "counts: write cbind(successes, failures) or cbind(successes, n - successes) "
                "with columns of the data."
            )
        failures = re.sub(r"\s*-\s*", " - ", match.group(2))
        return _Response(text, match.group(1), failures=failures)
    if "|" in text:
        match = _BRMS_TRIALS.match(text)
        if not match:
            raise SpecificationError(
                f"The response {text!r} of {formula!r} is not one brms writes for binomial "
                "counts: write successes | trials(n), with n a column of the data or a whole "
                "number."
            )
        arg = match.group(2)
        if arg.isdigit():
            if int(arg) < 1:
                raise SpecificationError(
                    f"The number of trials in {text!r} must be at least 1; got {arg}."
                )
            return _Response(text, match.group(1), trials_constant=int(arg))
        return _Response(text, match.group(1), trials=arg)
    return _Response(text, text)


def _numeric_column(data: pd.DataFrame, column: str, what: str) -> np.ndarray:
    values = pd.to_numeric(data[column], errors="coerce").to_numpy(dtype=float)
    if np.isnan(values).any():
        rows = np.flatnonzero(np.isnan(values))
        raise DataError(
            f"The {what} '{column}' must be numeric; rows {preview(rows.tolist())} hold "
            f"{preview(data[column].iloc[rows[:5]].tolist())}."
        )
    return values


def _trials_from_response(lhs: _Response, y: np.ndarray, data: pd.DataFrame) -> np.ndarray:
    """The number of trials a ``cbind(s, f)`` or ``s | trials(n)`` response states."""
    n = data.shape[0]
    if lhs.trials_constant is not None:
        return np.full(n, float(lhs.trials_constant))
    if lhs.trials is not None:
        return _numeric_column(data, lhs.trials, "trials column")
    assert lhs.failures is not None
    parts = lhs.failures.split(" - ")
    failures = _numeric_column(data, parts[0], "column")
    if len(parts) == 2:
        failures = failures - _numeric_column(data, parts[1], "column")
    bad = np.flatnonzero((failures < 0) | (failures != np.round(failures)))
    if bad.size:
        raise DataError(
            f"The failures {lhs.failures!r} of {lhs.text!r} must be non-negative whole numbers; "
            f"rows {preview(bad.tolist())} hold {failures[bad[:5]].tolist()}. cbind() takes "
            "successes and failures (not trials): write cbind(s, n - s) for s successes out "
            "of n."
        )
    return y + failures


class BinaryResponseWarning(UserWarning):
    """A two-level text, categorical or boolean response was coded 0/1 for a binary family."""


def _binary_response(values: pd.Series, response: str) -> np.ndarray | None:
    """A two-level non-numeric response as 0/1 (lme4: the first level is the failure), or
    None for a numeric one.

    The levels are a categorical's categories (those present, in their order) or the sorted
    distinct values (R's ``factor()`` sorts them); booleans are False = 0, True = 1.
    """
    if pd.api.types.is_bool_dtype(values):
        return values.to_numpy(dtype=float)
    if isinstance(values.dtype, pd.CategoricalDtype):
        levels = [c for c in values.cat.categories if (values == c).any()]
    elif pd.api.types.is_numeric_dtype(values):
        return None
    elif not pd.to_numeric(values, errors="coerce").isna().any():
        return None  # text of numbers ("0"/"1"): the numbers are the coding
    else:
        levels = sorted(pd.unique(values).tolist(), key=str)
    if len(levels) > 2:
        raise DataError(
            f"The bernoulli response '{response}' has {len(levels)} levels "
            f"{preview([str(v) for v in levels])}; a binary response has two. Recode it as 0/1 "
            f"(e.g. data['{response}'] == {str(levels[-1])!r}), or model the counts with "
            "another family."
        )
    coded = (values == levels[-1]).to_numpy(dtype=float)
    if len(levels) == 2:
        warnings.warn(
            f"The bernoulli response '{response}' is coded {str(levels[0])!r} = 0 and "
            f"{str(levels[1])!r} = 1 (the second level is the success, as in lme4's glmer). "
            f"Pass a 0/1 column, e.g. data['{response}'] == {str(levels[0])!r}, to code it the "
            "other way.",
            BinaryResponseWarning,
            stacklevel=3,
        )
    return coded


def _check_response_not_predictor(
    response: str, fixed: str, blocks: list[_Block], formula: str
) -> None:
    """A response on the right-hand side explains itself perfectly: refuse it."""
    places = []
    if response in _variables(fixed):
        places.append("the fixed effects")
    for b in blocks:
        if response in _variables(b.lhs) or response in _variables(b.group):
            places.append(f"the random term ({b.lhs} | {b.group})")
    if places:
        raise SpecificationError(
            f"The response '{response}' also appears on the right-hand side of {formula!r} "
            f"(in {' and '.join(places)}); a variable cannot explain itself. Remove it from the "
            "predictors."
        )


#: Gaussian responses must have a spread within these bounds: their variances (sd²) and the
#: covariance of the variance estimates (sd⁴) must stay within double precision.
RESPONSE_SD_RANGE = (1e-60, 1e60)


def _check_response_scale(y: np.ndarray, response: str) -> None:
    top = float(np.max(np.abs(y)))
    sd = top * float(np.std(y / top))  # y / top first: y² would overflow for |y| near 1e300
    lo, hi = RESPONSE_SD_RANGE
    if not lo <= sd <= hi:
        power = f"1e{int(np.floor(np.log10(sd)))}"
        raise DataError(
            f"The response '{response}' has a spread (sd = {sd:.3g}) beyond what double "
            f"precision holds for its variances (sd² = {sd * sd:.3g}) and their standard "
            f"errors. Rescale it, e.g. data['{response}'] / {power}, and scale the estimates "
            "back (variances by the square of that factor)."
        )


def _check_fixed_values(X: np.ndarray, names: list[str], data: pd.DataFrame) -> None:
    """Every entry of the fixed design (offsets included) must be finite."""
    bad = ~np.isfinite(X)
    for j in np.flatnonzero(bad.any(axis=0)):
        rows = data.index[bad[:, j]].tolist()
        values = sorted({str(v) for v in X[bad[:, j], j]})
        what = "offset" if names[j].startswith("offset(") else "fixed-effect column"
        raise DataError(
            f"The {what} '{names[j]}' is {' / '.join(values)} in {len(rows)} row(s) "
            f"{preview(rows)} (e.g. log(0) or log of a negative number). Fix or drop those rows, "
            "or transform the variable differently."
        )


def _check_single_level_factors(fixed: str, data: pd.DataFrame) -> None:
    """A categorical fixed effect with one level would silently vanish into the intercept."""
    for col in data.columns:
        if str(col) not in _variables(fixed):
            continue
        values = data[col]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            continue
        levels = pd.unique(values)
        if len(levels) == 1:
            raise DataError(
                f"The fixed effect '{col}' has a single level ({levels[0]!r}) in the data, so it "
                "has no effect to estimate. Drop it from the formula (or check that the data "
                "were not filtered to one group by mistake)."
            )


def _check_columns(formula: str, data: pd.DataFrame, extra: list[str]) -> list[str]:
    """Columns the formula uses; raise for NaN / inf in them."""
    tokens = _identifiers(formula)
    used = [c for c in data.columns if str(c) in tokens] + [c for c in extra if c]
    for col in dict.fromkeys(used):
        values = data[col]
        bad = values.isna().to_numpy().copy()
        if pd.api.types.is_numeric_dtype(values):
            bad |= ~np.isfinite(values.to_numpy(dtype=float, na_value=np.nan))
        if bad.any():
            rows = data.index[bad].tolist()
            raise DataError(
                f"Column '{col}' has {int(bad.sum())} missing or infinite values (rows "
                f"{preview(rows)}). bayeslmm does not drop rows silently: remove them first, "
                f"e.g. data = data.dropna(subset=['{col}'])."
            )
    return used


def centred_design(X: np.ndarray) -> np.ndarray:
    """X with every non-constant column centred, when X has a constant (intercept) column.

    Centring subtracts a multiple of the constant column, so the column space, and every
    fitted value and likelihood, are unchanged (the transformation has determinant 1); only
    the coefficients of the constant column change. It removes the ill-conditioning of a
    covariate whose mean is huge relative to its spread (e.g. a year, or positions in base
    pairs). Without a constant column X is returned as is.

    Examples
    --------
    >>> X = np.column_stack([np.ones(3), [1e9, 1e9 + 1, 1e9 + 2]])
    >>> centred_design(X).tolist()
    [[1.0, -1.0], [1.0, 0.0], [1.0, 1.0]]
    """
    X = np.asarray(X, dtype=float)
    if X.shape[0] < 2 or X.shape[1] < 2:
        return X
    constant = np.flatnonzero(np.all(X == X[0], axis=0) & (X[0] != 0))
    if constant.size == 0:
        return X
    c = int(constant[0])
    out = X - np.outer(np.ones(X.shape[0]), X.mean(axis=0))
    out[:, c] = X[:, c]
    return out


def _collinear_columns(X: np.ndarray, names: list[str]) -> str | None:
    """Describe the first column that is a linear combination of earlier ones, if any."""
    if X.shape[1] == 0:
        return None
    X = centred_design(X)  # a covariate with a huge mean is not collinear with the intercept
    scale = np.linalg.norm(X, axis=0)
    scale[scale == 0] = 1.0
    Xs = X / scale
    tol = max(X.shape) * np.finfo(float).eps * 1e4
    kept: list[int] = []
    for j in range(X.shape[1]):
        if not np.any(X[:, j]):
            return f"column '{names[j]}' is all zeros"
        cols = kept + [j]
        s = np.linalg.svd(Xs[:, cols], compute_uv=False)
        if s[-1] <= tol * s[0]:
            coef, *_ = np.linalg.lstsq(Xs[:, kept], Xs[:, j], rcond=None)
            partners = [names[kept[i]] for i in np.flatnonzero(np.abs(coef) > 1e-8)]
            return f"column '{names[j]}' is a linear combination of {partners}"
        kept.append(j)
    return None


def _as_kinship(value: Any, group: str) -> Kinship:
    if isinstance(value, Kinship):
        return value
    if isinstance(value, pd.DataFrame):
        return Kinship.from_dataframe(value, name=group)
    raise SpecificationError(
        f"kinship['{group}'] must be a bayeslmm.Kinship or a square pandas DataFrame labelled "
        f"by id; got {type(value).__name__}. Load files with bayeslmm.io.read_kinship(PATH)."
    )


def _grouping_levels(data: pd.DataFrame, parts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The level of each row of the grouping factor ``a:b:…`` and the levels' labels.

    A level's label is its values as text joined by ``":"`` (``"3:A"``). The work is per
    column (factorising) and per distinct level (joining labels), never a Python loop over
    the rows: crossed factors of large data sets (lme4's InstEval, 73,421 rows) cost
    milliseconds.

    Returns
    -------
    row_level : ndarray of int, shape (n,)
        Index of each row's level in ``labels``.
    labels : ndarray of str (object), shape (q,)
        The distinct labels, in order of first appearance.

    Examples
    --------
    >>> df = pd.DataFrame({"a": [1, 1, 2, 1], "b": ["x", "y", "x", "x"]})
    >>> row_level, labels = _grouping_levels(df, ["a", "b"])
    >>> row_level.tolist(), labels.tolist()
    ([0, 1, 2, 0], ['1:x', '1:y', '2:x'])
    """
    columns = [data[p].astype(str).to_numpy(dtype=object) for p in parts]
    row_level = np.zeros(data.shape[0], dtype=np.int64)
    for column in columns:
        codes, uniques = pd.factorize(column)
        # a pair (level so far, code) is one integer; refactorising keeps it below n · q
        row_level, _ = pd.factorize(row_level * len(uniques) + codes)
    _, first_row = np.unique(row_level, return_index=True)
    labels = columns[0][first_row]
    for column in columns[1:]:
        labels = labels + ":" + column[first_row]
    return np.asarray(row_level, dtype=np.intp), labels


def _random_term(
    block: _Block, data: pd.DataFrame, kinship: Kinship | None, formula: str
) -> RandomTerm:
    parts = [p.strip() for p in block.group.split(":")]
    missing = [p for p in parts if p not in data.columns]
    if missing:
        raise SpecificationError(
            f"Grouping factor {missing} of term ({block.lhs} | {block.group}) is not a column of "
            f"the data; available columns: {preview(data.columns, 12)}."
        )
    row_level, labels = _grouping_levels(data, parts)
    design, covariates = _design(block.lhs, data, f"random term ({block.lhs} | {block.group})")
    if kinship is None:
        # levels in sorted order of their labels (as pd.factorize(sort=True) of the labels)
        order = np.argsort(labels, kind="stable")
        rank = np.empty(order.size, dtype=np.intp)
        rank[order] = np.arange(order.size)
        codes = rank[row_level]
        levels = tuple(str(u) for u in labels[order])
    else:
        present = set(labels.tolist())
        missing_ids = sorted(present.difference(kinship.ids))
        if missing_ids:
            raise DataError(
                f"{len(missing_ids)} of the {len(present)} '{block.group}' ids in the data are "
                f"missing from kinship '{kinship.name}': {preview(missing_ids)}. Drop those "
                "records or supply a kinship that covers them (check id spelling and type)."
            )
        levels = tuple(i for i in kinship.ids if i in present)
        kinship = kinship.subset(levels)
        codes = pd.Index(levels).get_indexer(labels)[row_level]
    if len(levels) < 2:
        raise DataError(
            f"The grouping factor '{block.group}' has {len(levels)} level; a random effect needs "
            "at least two groups. Use it as a fixed effect or drop the term."
        )
    index = np.asarray(codes, dtype=int)
    design.setflags(write=False)
    index.setflags(write=False)
    return RandomTerm(
        group=block.group,
        levels=levels,
        index=index,
        covariates=tuple(covariates),
        design=design,
        correlated=block.correlated,
        kinship=kinship,
    )


def _kernel_matches(a: RandomTerm, b: RandomTerm) -> bool:
    """Whether two terms with the same partition of the rows have proportional kernels.

    Level l of ``a`` is level ``map_ab[l]`` of ``b``; an iid term's kernel is the identity.
    The off-diagonal parts are compared through products with two random vectors, so no
    q × q copy is made.
    """
    q = a.n_levels
    map_ab = np.empty(q, dtype=int)
    map_ab[a.index] = b.index
    da = np.ones(q) if a.kinship is None else a.kinship.diagonal()
    db = np.ones(q) if b.kinship is None else b.kinship.diagonal()[map_ab]
    c = float(np.mean(db) / np.mean(da))
    if not np.allclose(db, c * da, rtol=1e-8, atol=0.0):
        return False
    v = np.random.default_rng(0).normal(size=(q, 2))
    ka = v if a.kinship is None else a.kinship.dot(v)
    if b.kinship is None:
        kb = v
    else:
        w = np.zeros((b.n_levels, 2))
        w[map_ab] = v
        kb = b.kinship.dot(w)[map_ab]
    return bool(np.allclose(kb, c * ka, rtol=1e-8, atol=1e-10 * float(np.abs(kb).max())))


def _check_duplicate_terms(terms: tuple[RandomTerm, ...]) -> None:
    """Refuse one random effect written twice: its two variances cannot be separated."""
    partitions = [pd.factorize(t.index)[0] for t in terms]
    for a in range(len(terms)):
        for b in range(a + 1, len(terms)):
            ta, tb = terms[a], terms[b]
            if ta.n_levels != tb.n_levels or not np.array_equal(partitions[a], partitions[b]):
                continue
            for j, k in ((j, k) for j in range(ta.n_coef) for k in range(tb.n_coef)):
                dj, dk = ta.design[:, j], tb.design[:, k]
                ratio = float(dj @ dk) / max(float(dj @ dj), 1e-300)
                if ratio == 0 or not np.allclose(dk, ratio * dj, rtol=1e-10, atol=0.0):
                    continue
                if not _kernel_matches(ta, tb):
                    continue
                same = "kinship" if ta.kinship is not None else "iid levels"
                raise SpecificationError(
                    f"The random terms ({ta.label}) and ({tb.label}) are the same effect twice "
                    f"(the same grouping of the rows, the same covariate "
                    f"'{ta.covariates[j]}', {same} proportional to each other): their variances "
                    "cannot be told apart. Remove one of them (for an epistatic kernel give a "
                    "different matrix, e.g. K.hadamard())."
                )


def _is_observation_level(term: RandomTerm, n: int) -> bool:
    """One level per row, a constant design and an identity kernel: a per-row iid effect."""
    if term.n_levels != n or term.n_coef != 1:
        return False
    d = term.design[:, 0]
    if d[0] == 0 or not np.all(d == d[0]):
        return False
    if term.kinship is None:
        return True
    diag = term.kinship.diagonal()
    if not np.allclose(diag, diag[0], rtol=1e-10, atol=0.0):
        return False  # a GRM never has an exactly constant diagonal: no n × n work below
    # K = c I exactly when K v = c v for two random v (through dot(): a sparse pedigree
    # kinship is not densified)
    v = np.random.default_rng(0).normal(size=(n, 2))
    Kv = term.kinship.dot(v)
    return bool(np.abs(Kv - diag[0] * v).max() <= 1e-10 * abs(diag[0]) * np.abs(v).max())


def _observation_level_effect(
    terms: tuple[RandomTerm, ...], fam: Family, trials: np.ndarray | None, n: int
) -> Family:
    """A factor with one level per row is the observation-level effect.

    Gaussian and binary responses cannot separate it from the residual (refused); for
    Poisson counts it *is* the observation-level effect, so none is added on top.
    """
    obs = [t for t in terms if _is_observation_level(t, n)]
    if not obs:
        return fam
    label = f"({obs[0].label})"
    if fam.is_gaussian:
        raise SpecificationError(
            f"The random term {label} has one level per row of the data and independent levels, "
            "so it cannot be told apart from the residual: the two variances are not "
            "identifiable (lme4 refuses this model too). Drop the term: the residual already is "
            "the observation-level effect of a Gaussian model."
        )
    if fam.binary_response(trials):
        raise SpecificationError(
            f"The random term {label} has one level per row of a 0/1 response: an "
            "observation-level variance is not identifiable from binary data (it only rescales "
            "the fixed effects). Drop the term."
        )
    if fam.has_observation_level_effect:
        # the user's factor is the observation-level effect (glmer's grouseticks model):
        # adding a second one would make the model singular
        return fam.without_observation_level_effect()
    return fam


def _check_enough_rows(
    terms: tuple[RandomTerm, ...], fam: Family, p: int, sigma_X: np.ndarray | None, n: int
) -> None:
    """n − p must at least match the number of variance parameters."""
    n_var = sum(t.n_coef * (t.n_coef + 1) // 2 if t.correlated else t.n_coef for t in terms)
    if fam.is_gaussian:
        n_var += 1 if sigma_X is None else sigma_X.shape[1]
    elif fam.has_observation_level_effect:
        n_var += 1
    if n - p < n_var:
        raise DataError(
            f"The model has {n} rows, {p} fixed effect(s) and {n_var} variance parameter(s); "
            f"the {n - p} row(s) left after the fixed effects cannot determine "
            f"{n_var} variances. Use more data or a simpler model (fewer random terms, no "
            "random slopes)."
        )


def _warn_kinship_scale(terms: tuple[RandomTerm, ...]) -> None:
    """Warn when a kinship's mean diagonal (on the data's ids) is far from 1."""
    lo, hi = KINSHIP_SCALE_RANGE
    for t in terms:
        if t.kinship is None:
            continue
        md = t.kinship.mean_diagonal
        if lo <= md <= hi:
            continue
        hint = (
            " Kinship coefficients (diagonal 0.5) are half the relationships: use 2·K."
            if 0.4 <= md <= 0.6
            else ""
        )
        warnings.warn(
            f"Kinship '{t.kinship.name}' has mean diagonal {md:.4g} on the data's "
            f"{t.n_levels} '{t.group}' ids, far from 1. Its variance σ²_{t.group} is then the "
            "variance at this matrix's scale, not that of a non-inbred individual (the "
            f"heritability is the share at the sample's own scale).{hint} Use "
            "K.normalized() to put it at mean diagonal 1, or check how K was computed.",
            KinshipScaleWarning,
            stacklevel=4,
        )


def specify(
    formula: str,
    data: pd.DataFrame,
    kinship: Mapping[str, Kinship | pd.DataFrame] | None = None,
    family: str | Family = "gaussian",
    link: str | None = None,
    trials: str | None = None,
    sigma: str | None = None,
    priors: Mapping[str, Any] | None = None,
) -> ModelSpec:
    """Validate a model and turn it into numeric arrays.

    Parameters
    ----------
    formula : str
        lme4/brms-style formula, e.g. ``"bp ~ sex + (1 | id)"``.
    data : pandas.DataFrame
        One row per observation (several rows per individual are fine).
    kinship : dict, optional
        Maps a grouping-factor name to its relationship matrix; kinship matrices may hold
        more ids than the data (they are subset).
    family : str or Family
        ``"gaussian"`` (default), ``"poisson"``, ``"bernoulli"`` or ``"binomial"``.
    link : str, optional
        Link function, when the family offers several (``"logit"``, ``"probit"``).
    trials : str, optional
        Column holding the number of trials (binomial family).
    sigma : str, optional
        Right-hand side for the log residual SD, e.g. ``"~ env"`` (Gaussian only).
    priors : dict, optional
        Prior overrides, passed to the engines unchanged.

    Returns
    -------
    ModelSpec

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> df = pd.DataFrame({"y": [1.0, 2.0, 0.5, 1.5], "g": ["a", "a", "b", "b"]})
    >>> spec = specify("y ~ 1 + (1 | g)", df)
    >>> spec.fixed_names, spec.terms[0].levels
    (('Intercept',), ('a', 'b'))
    """
    if not isinstance(data, pd.DataFrame):
        raise DataError(f"data must be a pandas DataFrame; got {type(data).__name__}.")
    if data.shape[0] == 0:
        raise DataError("The data frame has no rows.")
    dupes = data.columns[data.columns.duplicated()].unique().tolist()
    if dupes:
        raise DataError(
            f"The data frame has duplicate column names {preview(dupes)}; a formula cannot tell "
            "them apart. Rename or drop the repeated columns."
        )
    if kinship is not None and not isinstance(kinship, Mapping):
        raise SpecificationError(
            "kinship must be a dict mapping a grouping factor to its matrix, e.g. "
            f"kinship={{'id': K}}; got {type(kinship).__name__}."
        )
    fam = get_family(family, link)
    lhs_text, fixed, blocks = split_formula(formula)
    lhs = _parse_response(lhs_text, formula)
    response = lhs.column
    for column in lhs.columns:
        _check_response_not_predictor(column, fixed, blocks, formula)
    data = data.reset_index(drop=True)
    for column in lhs.columns:
        if column not in data.columns:
            what = "The response" if column == response else f"In {lhs.text!r}, the name"
            raise SpecificationError(
                f"{what} '{column}' is not a column of the data; available columns: "
                f"{preview(data.columns, 12)}."
            )
    if lhs.gives_trials:
        if trials is not None:
            raise SpecificationError(
                f"The number of trials is given twice: by the response {lhs.text!r} and by "
                f"trials='{trials}'. Drop trials=, or write the response as '{response}'."
            )
        if not fam.needs_trials:
            raise SpecificationError(
                f"The response {lhs.text!r} counts successes out of trials, but the family is "
                f"{fam.name}: use family='binomial' (link='logit' or 'probit')."
            )
    if trials is not None and trials not in data.columns:
        raise SpecificationError(f"The trials column '{trials}' is not in the data.")
    if trials is not None and not fam.needs_trials:
        raise SpecificationError(
            f"trials='{trials}' is given but the {fam.name} family has no number of trials; "
            "use family='binomial' for successes out of trials, or drop trials=."
        )
    _check_columns(formula + (sigma or ""), data, [*lhs.columns, trials])

    y = None
    if fam.binary_trials and not fam.needs_trials:
        y = _binary_response(data[response], response)
    if y is None:
        y = pd.to_numeric(data[response], errors="coerce").to_numpy(dtype=float)
    if np.isnan(y).any():
        raise DataError(f"The response '{response}' must be numeric.")
    if lhs.gives_trials:
        n_trials = _trials_from_response(lhs, y, data)
    elif trials is not None:
        n_trials = _numeric_column(data, trials, "trials column")
    else:
        n_trials = None
    if fam.needs_trials and n_trials is None:
        raise SpecificationError(
            f"The {fam.name} family needs the number of trials: pass trials='COLUMN' "
            "(command line: --trials COLUMN), or write the response as "
            f"'cbind({response}, failures)' or '{response} | trials(n)'."
        )
    fam.validate(y, n_trials)
    if np.ptp(y) == 0 and not fam.needs_trials:
        raise DataError(
            f"The response '{response}' is constant ({y[0]:g}); there is no variation to model."
        )
    if fam.is_gaussian:
        _check_response_scale(y, response)

    _check_single_level_factors(fixed, data)
    X, names = _design(fixed, data, "fixed effects")
    _check_fixed_values(X, names, data)
    offset_cols = [k for k, nm in enumerate(names) if nm.startswith("offset(")]
    offset = X[:, offset_cols].sum(axis=1) if offset_cols else None
    keep = [k for k in range(len(names)) if k not in offset_cols]
    X, names = X[:, keep], [names[k] for k in keep]
    if X.shape[1] >= data.shape[0]:
        raise DataError(
            f"The model has {X.shape[1]} fixed-effect columns but only {data.shape[0]} rows; "
            "the fixed effects need fewer columns than rows (and the variance components some "
            "rows to spare). Use fewer covariates or factor levels, or more data "
            "(a factor with many levels may belong in a random term, e.g. (1 | g))."
        )
    problem = _collinear_columns(X, names)
    if problem:
        raise DataError(
            f"The fixed effects are collinear: {problem}. Drop or recode one of these columns "
            "(e.g. remove a redundant dummy, or a covariate fixed within the intercept)."
        )

    kinship = dict(kinship or {})
    groups = [b.group for b in blocks]
    for key in kinship:
        if key not in groups:
            raise SpecificationError(
                f"A kinship is given for '{key}' but the formula has no random term "
                f"'(... | {key})'; its grouping factors are {groups}. Add e.g. '(1 | {key})'."
            )
    kin = {g: _as_kinship(k, g) for g, k in kinship.items()}
    terms = tuple(_random_term(b, data, kin.get(b.group), formula) for b in blocks)
    _check_duplicate_terms(terms)
    fam = _observation_level_effect(terms, fam, n_trials, data.shape[0])

    sigma_X, sigma_names, sigma_formula = None, (), None
    if sigma is not None:
        if not fam.is_gaussian:
            raise SpecificationError("A model for sigma is only available for family='gaussian'.")
        sigma_formula = sigma.strip()
        rhs = sigma_formula.split("~", 1)[-1].strip()
        sigma_X, sn = _design(rhs, data, "sigma formula")
        sigma_names = tuple(sn)
        problem = _collinear_columns(sigma_X, sn)
        if problem:
            raise DataError(f"The sigma formula's design is collinear: {problem}.")
    _check_enough_rows(terms, fam, X.shape[1], sigma_X, data.shape[0])
    _warn_kinship_scale(terms)

    for arr in (y, X, offset, n_trials, sigma_X):
        if arr is not None:
            arr.setflags(write=False)
    return ModelSpec(
        formula=formula,
        response=response,
        y=y,
        X=X,
        fixed_names=tuple(names),
        terms=terms,
        family=fam,
        data=data,
        trials=n_trials,
        offset=offset,
        sigma_formula=sigma_formula,
        sigma_X=sigma_X,
        sigma_names=sigma_names,
        priors=MappingProxyType(dict(priors or {})),
    )
