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
- ``kinship={"g": K}``: the levels of ``g`` are correlated by the relationship matrix K
  (Cov(u) = Σ ⊗ K); without it they are iid.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from bayeslmm.errors import DataError, SpecificationError, preview
from bayeslmm.families import Family, get_family
from bayeslmm.kinship import Kinship


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
        """True when each level has exactly one observation, in level order (Z = I)."""
        return self.index.size == self.n_levels and bool(
            np.array_equal(self.index, np.arange(self.n_levels))
        )


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
    if formula.count("~") != 1:
        raise SpecificationError(
            f"A formula needs exactly one '~' between response and predictors; got {formula!r}."
        )
    lhs, rhs = (s.strip() for s in formula.split("~"))
    if not lhs:
        raise SpecificationError(f"The formula {formula!r} has no response on the left of '~'.")
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
                    blocks.append(_parse_block(inner, formula))
                    buf.append("\0")  # placeholder, removed below
                else:
                    buf.append(rhs[start : k + 1])
                continue
        if depth == 0 and ch not in "()":
            buf.append(ch)
    if depth != 0:
        raise SpecificationError(f"Unbalanced '(' in formula {formula!r}.")
    fixed = "".join(buf)
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


def _parse_block(inner: str, formula: str) -> _Block:
    correlated = "||" not in inner
    lhs, _, group = inner.partition("||" if not correlated else "|")
    lhs, group = lhs.strip(), group.strip()
    if not lhs or not group:
        raise SpecificationError(
            f"Random term '({inner})' in {formula!r} needs an expression and a grouping factor, "
            "e.g. (1 | id) or (1 + env | line)."
        )
    if "/" in group:
        raise SpecificationError(
            f"Nested grouping '{group}' is not supported; write it out, e.g. (1 | a) + (1 | a:b)."
        )
    return _Block(lhs=lhs, group=group, correlated=correlated)


# ---------------------------------------------------------------------------------------
# design matrices
# ---------------------------------------------------------------------------------------
def _design(rhs: str, data: pd.DataFrame, where: str) -> tuple[np.ndarray, list[str]]:
    """Evaluate a right-hand side with formulae; return the matrix and its column names."""
    import formulae

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dm = formulae.design_matrices(rhs, data, na_action="error")
    except Exception as exc:  # formulae raises KeyError/ParseError/ValueError
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


def _collinear_columns(X: np.ndarray, names: list[str]) -> str | None:
    """Describe the first column that is a linear combination of earlier ones, if any."""
    if X.shape[1] == 0:
        return None
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
    groups = data[parts].astype(str).agg(":".join, axis=1).to_numpy()
    design, covariates = _design(block.lhs, data, f"random term ({block.lhs} | {block.group})")
    if kinship is None:
        codes, uniques = pd.factorize(groups, sort=True)
        levels = tuple(str(u) for u in uniques)
    else:
        present = set(groups)
        missing_ids = sorted(present.difference(kinship.ids))
        if missing_ids:
            raise DataError(
                f"{len(missing_ids)} of the {len(present)} '{block.group}' ids in the data are "
                f"missing from kinship '{kinship.name}': {preview(missing_ids)}. Drop those "
                "records or supply a kinship that covers them (check id spelling and type)."
            )
        levels = tuple(i for i in kinship.ids if i in present)
        kinship = kinship.subset(levels)
        pos = {lvl: k for k, lvl in enumerate(levels)}
        codes = np.fromiter((pos[g] for g in groups), dtype=int, count=groups.size)
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
    fam = get_family(family, link)
    response, fixed, blocks = split_formula(formula)
    data = data.reset_index(drop=True)
    if response not in data.columns:
        raise SpecificationError(
            f"The response '{response}' is not a column of the data; available columns: "
            f"{preview(data.columns, 12)}."
        )
    if trials is not None and trials not in data.columns:
        raise SpecificationError(f"The trials column '{trials}' is not in the data.")
    _check_columns(formula + (sigma or ""), data, [response, trials])

    y = pd.to_numeric(data[response], errors="coerce").to_numpy(dtype=float)
    if np.isnan(y).any():
        raise DataError(f"The response '{response}' must be numeric.")
    n_trials = None if trials is None else data[trials].to_numpy(dtype=float)
    fam.validate(y, n_trials)
    if np.ptp(y) == 0 and not fam.needs_trials:
        raise DataError(
            f"The response '{response}' is constant ({y[0]:g}); there is no variation to model."
        )

    X, names = _design(fixed, data, "fixed effects")
    offset_cols = [k for k, nm in enumerate(names) if nm.startswith("offset(")]
    offset = X[:, offset_cols].sum(axis=1) if offset_cols else None
    keep = [k for k in range(len(names)) if k not in offset_cols]
    X, names = X[:, keep], [names[k] for k in keep]
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
