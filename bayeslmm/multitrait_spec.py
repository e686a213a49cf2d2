"""Specification of a multi-trait (multivariate) Gaussian animal model.

``mvbind(y1, y2) ~ x + (1 | id)`` (brms's syntax) or ``cbind(y1, y2) ~ x + (1 | id)`` with
the Gaussian family, and ``kinship={"id": K}``: for individual i and trait t

    y_it = x_iᵀ β_t + u_it + e_it,   vec(U) ~ N(0, Σ_G ⊗ K),   e_i ~ N(0, Σ_E),

one record (row) per individual, a column per trait, missing trait values (NaN) allowed.
:func:`specify_multitrait` validates once and hands the engines numeric arrays
(:class:`MultiTraitSpec`); the engines never read the formula.

What is supported today: 2–5 Gaussian traits (more work but warn), one intercept-only
kinship-structured term ``(1 | id)`` on a dense kinship (``bl.Kinship``, including a GRM)
or a SNP-space low-rank one (``bl.grm(dosages, low_rank=True)``, missing values allowed),
or a pedigree's sparse A⁻¹ (``bl.pedigree_relationship(ped, sparse=True)``: REML on
Henderson's equations, any size; the posterior of Gaussian traits at any size, by NUTS on
the dense A up to 5,000 animals and above by importance sampling of the marginal posterior
of Σ_G and Σ_E on the sparse equations), the same fixed-effect formula
for every trait, complete covariates. With a family per trait
(``family={"disease": "bernoulli", "weight": "gaussian"}``) the model is a latent-scale
multi-trait GLMM; :mod:`bayeslmm.multitrait_glmm_spec` lists the combinations it covers.
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

from bayeslmm.errors import DataError, SpecificationError, preview
from bayeslmm.families import Family, get_family
from bayeslmm.kinship import Kinship
from bayeslmm.spec import (
    _as_kinship,
    _check_columns,
    _check_single_level_factors,
    _collinear_columns,
    _design,
    _grouping_levels,
    split_formula,
)

#: The number of traits above which a fit warns (parameters grow as t(t + 1)).
MAX_TRAITS = 5

_NAME = r"[A-Za-z_.][A-Za-z0-9_.]*"
_MULTI = re.compile(r"^(mvbind|cbind)\((.*)\)$", re.DOTALL)


class MultiTraitWarning(UserWarning):
    """A multi-trait model was accepted but something about it deserves a look."""


def _family_name(family: str | Family) -> str:
    return family.name if isinstance(family, Family) else str(family).lower()


def _is_gaussian(family: str | Family) -> bool:
    """Whether ``family`` names the Gaussian family (an unknown name is not: the single-trait
    specification reports it)."""
    try:
        return get_family(family).is_gaussian
    except SpecificationError:
        return False


def response_traits(formula: Any) -> tuple[str, list[str]] | None:
    """``("mvbind" | "cbind", [trait, ...])`` when the formula's left side binds columns.

    Examples
    --------
    >>> response_traits("mvbind(y1, y2) ~ x + (1 | id)")
    ('mvbind', ['y1', 'y2'])
    >>> response_traits("y ~ 1") is None
    True
    """
    if not isinstance(formula, str) or formula.count("~") != 1:
        return None
    lhs = formula.split("~")[0].strip()
    match = _MULTI.match(lhs)
    if not match:
        return None
    return match.group(1), [part.strip() for part in match.group(2).split(",")]


def is_multitrait(formula: Any, family: str | Family | Mapping[str, Any] = "gaussian") -> bool:
    """Whether :class:`~bayeslmm.LMM` should build a multi-trait model.

    ``mvbind(...)`` always does; ``cbind(a, b, ...)`` does under the Gaussian family when
    every argument is a plain column name (``cbind(s, n - s)`` and every non-Gaussian
    ``cbind`` keep their binomial meaning: successes and failures).

    Examples
    --------
    >>> is_multitrait("cbind(y1, y2) ~ 1 + (1 | id)")
    True
    >>> is_multitrait("cbind(s, f) ~ 1 + (1 | id)", family="binomial")
    False
    """
    found = response_traits(formula)
    if found is None:
        return False
    kind, names = found
    if kind == "mvbind":
        return True
    if isinstance(family, Mapping):  # a family per trait (a multi-trait GLMM)
        return all(re.fullmatch(_NAME, name) for name in names)
    return _is_gaussian(family) and all(re.fullmatch(_NAME, name) for name in names)


@dataclass(frozen=True, eq=False)
class MultiTraitSpec:
    """A validated multi-trait model; rows are individuals in kinship order.

    Attributes
    ----------
    formula : str
    traits : tuple of str
        Trait names in formula order (the order of every table).
    Y : ndarray, shape (n, t)
        Responses, NaN where a trait is missing.
    X : ndarray, shape (n, p)
        Fixed design, shared by all traits.
    fixed_names : tuple of str
    group : str
        The grouping factor of the kinship term.
    ids : tuple of str
        The individual of each row (kinship order).
    kinship : Kinship
        K restricted to ``ids``, in the same order.
    data : pandas.DataFrame
        The data rows used, in the order of ``ids``.
    dropped : tuple of str
        Individuals whose every trait was missing (left out).
    priors : Mapping
        Prior overrides, passed to the Bayesian engine.
    families : tuple of Family
        One per trait when a trait is not Gaussian (a latent-scale multi-trait GLMM,
        :mod:`bayeslmm.multitrait_glmm_spec`); empty when every trait is Gaussian.
    """

    formula: str
    traits: tuple[str, ...]
    Y: np.ndarray
    X: np.ndarray
    fixed_names: tuple[str, ...]
    group: str
    ids: tuple[str, ...]
    kinship: Kinship
    data: pd.DataFrame
    dropped: tuple[str, ...] = ()
    priors: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    families: tuple[Family, ...] = ()

    @property
    def is_gaussian(self) -> bool:
        """Whether every trait is Gaussian (else: a latent-scale multi-trait GLMM)."""
        return not self.families

    @property
    def n(self) -> int:
        """Number of individuals."""
        return int(self.Y.shape[0])

    @property
    def n_traits(self) -> int:
        return int(self.Y.shape[1])

    @property
    def observed(self) -> np.ndarray:
        """Boolean (n, t): which trait values were recorded."""
        return ~np.isnan(self.Y)

    @property
    def complete(self) -> bool:
        """True when no trait value is missing."""
        return bool(self.observed.all())

    @property
    def kinship_scale(self) -> float:
        """c = mean diag K − mean K over the individuals: h² = c σ²_G / (c σ²_G + σ²_E), the
        sample-scale heritability of the single-trait tables (Legarra 2016)."""
        # through diagonal() and K·1 (O(n p) for a low-rank kinship, no n × n matrix)
        K = self.kinship
        return float(np.mean(K.diagonal()) - np.sum(K.dot(np.ones(K.n))) / K.n**2)


def _trait_values(data: pd.DataFrame, name: str, family: Family | None = None) -> np.ndarray:
    column = data[name]
    if family is not None and not family.is_gaussian:
        column = column.astype(float) if pd.api.types.is_bool_dtype(column) else column
    if pd.api.types.is_bool_dtype(column):
        raise DataError(
            f"The trait '{name}' is True/False; a multi-trait model takes Gaussian (numeric) "
            "traits. Code it 0/1 only if a linear model for it is what you want."
        )
    values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)
    bad = np.isnan(values) & column.notna().to_numpy()
    if bad.any():
        rows = np.flatnonzero(bad)
        raise DataError(
            f"The trait '{name}' must be numeric (NaN marks a missing value); rows "
            f"{preview(data.index[rows].tolist())} hold {preview(column.iloc[rows[:5]].tolist())}."
        )
    if np.isinf(values).any():
        rows = np.flatnonzero(np.isinf(values))
        raise DataError(
            f"The trait '{name}' is infinite in rows {preview(data.index[rows].tolist())}; "
            "use NaN for a missing value."
        )
    if family is not None and not family.is_gaussian:
        recorded = values[~np.isnan(values)]
        try:
            family.validate(recorded)
        except DataError as err:
            raise DataError(f"The trait '{name}' ({family.name}): {err}") from None
    return values


def specify_multitrait(
    formula: str,
    data: pd.DataFrame,
    kinship: Mapping[str, Kinship | pd.DataFrame] | None = None,
    family: str | Family | Mapping[str, Any] = "gaussian",
    priors: Mapping[str, Any] | None = None,
) -> MultiTraitSpec:
    """Validate a multi-trait model and turn it into arrays.

    Parameters
    ----------
    formula : str
        ``"mvbind(y1, y2) ~ x + (1 | id)"`` or ``"cbind(y1, y2) ~ x + (1 | id)"``.
    data : pandas.DataFrame
        One row per individual; NaN marks a missing trait value.
    kinship : dict
        ``{"id": K}`` for the grouping factor of the random term.
    family : str, Family or dict
        Gaussian (the default), or a family per trait ``{trait: family}`` for a latent-scale
        multi-trait GLMM (:mod:`bayeslmm.multitrait_glmm_spec`).
    priors : dict, optional
        Overrides (see :mod:`bayeslmm.engines.bayes.multitrait_density`).

    Returns
    -------
    MultiTraitSpec

    Examples
    --------
    >>> import numpy as np, pandas as pd, bayeslmm as bl
    >>> K = bl.Kinship(np.eye(4) * 0.5 + 0.5, ["a", "b", "c", "d"])
    >>> df = pd.DataFrame({"y1": [1.0, 2.0, 0.5, 1.5], "y2": [0.3, np.nan, 1.0, 2.0],
    ...                    "id": ["a", "b", "c", "d"]})
    >>> spec = specify_multitrait("mvbind(y1, y2) ~ 1 + (1 | id)", df, kinship={"id": K})
    >>> spec.traits, spec.complete
    (('y1', 'y2'), False)
    """
    if response_traits(formula) is not None and response_traits(formula)[0] == "cbind":
        if not isinstance(family, Mapping) and not _is_gaussian(family):
            raise SpecificationError(
                f"cbind() of traits with the single family '{_family_name(family)}': for "
                "binomial counts write cbind(successes, failures) with family='binomial' (a "
                "single response); for several non-Gaussian traits write mvbind(...) or give "
                "family={trait: family}."
            )
    if not isinstance(data, pd.DataFrame):
        raise DataError(f"data must be a pandas DataFrame; got {type(data).__name__}.")
    found = response_traits(formula)
    if found is None:
        raise SpecificationError(
            f"{formula!r} has no multi-trait response; write mvbind(y1, y2) ~ ... ."
        )
    kind, traits = found
    lhs_text, fixed, blocks = split_formula(formula)
    for name in traits:
        if not re.fullmatch(_NAME, name):
            raise SpecificationError(
                f"{kind}() in {formula!r} takes column names of the traits, e.g. "
                f"{kind}(y1, y2); got {name!r}. Compute a transformed trait as a new column "
                "first."
            )
    if len(traits) < 2:
        raise SpecificationError(
            f"{lhs_text!r} names one trait; a multi-trait model needs at least two. For one "
            f"trait write '{traits[0]} ~ ...'."
        )
    if len(set(traits)) != len(traits):
        dupes = sorted({t for t in traits if traits.count(t) > 1})
        raise SpecificationError(f"{lhs_text!r} names the trait(s) {dupes} more than once.")
    if len(traits) > MAX_TRAITS:
        warnings.warn(
            f"{len(traits)} traits: multi-trait models are built and tested for 2–{MAX_TRAITS} "
            f"traits; with t traits Σ_G and Σ_E hold t(t + 1) = {len(traits) * (len(traits) + 1)}"
            " parameters, which need many individuals to be estimated. Consider fewer traits.",
            MultiTraitWarning,
            stacklevel=3,
        )
    for name in traits:
        if name not in data.columns:
            raise SpecificationError(
                f"The trait '{name}' is not a column of the data; available columns: "
                f"{preview(data.columns, 12)}."
            )
    from bayeslmm.multitrait_glmm_spec import residual_traits, trait_families

    families = trait_families(family, traits)
    if all(f.is_gaussian for f in families):
        families = ()
    else:
        residual_traits(families, traits)  # refuses the combinations not built
    if len(blocks) != 1 or blocks[0].lhs.replace(" ", "") not in ("1", "1+1"):
        got = ", ".join(f"({b.lhs} | {b.group})" for b in blocks) or "none"
        raise SpecificationError(
            f"A multi-trait model takes exactly one random term, the genetic one '(1 | id)' "
            f"with a kinship; {formula!r} has {got}. Random slopes, several kernels and "
            "iid terms are not supported for several traits."
        )
    group = blocks[0].group
    if not blocks[0].correlated:
        raise SpecificationError(
            f"'(1 || {group})' in a multi-trait model: write '(1 | {group})'; the genetic "
            "covariance between traits is always estimated."
        )
    if not kinship or group not in kinship:
        raise SpecificationError(
            f"A multi-trait animal model needs the relationship matrix of '{group}': pass "
            f"kinship={{'{group}': K}} (a bl.Kinship, e.g. a GRM or a pedigree A)."
        )
    extra = set(kinship) - {group}
    if extra:
        raise SpecificationError(
            f"A kinship is given for {sorted(extra)} but the formula's random term is "
            f"'(1 | {group})'."
        )
    data = data.reset_index(drop=True)
    for name in traits:
        if name in re.findall(_NAME, fixed):
            raise SpecificationError(
                f"The trait '{name}' is also a predictor in {formula!r}; remove it from the "
                "right-hand side."
            )
    if ":" in group or "/" in group:
        raise SpecificationError(
            f"The genetic term of a multi-trait model groups by one id column; got '{group}'."
        )
    _check_columns(fixed + " " + group, data, [])
    Y = np.column_stack(
        [
            _trait_values(data, name, families[k] if families else None)
            for k, name in enumerate(traits)
        ]
    )
    observed = ~np.isnan(Y)
    for k, name in enumerate(traits):
        values = Y[observed[:, k], k]
        if values.size == 0:
            raise DataError(
                f"The trait '{name}' is missing (NaN) for every individual; drop it from {kind}()."
            )
        if values.size < 3 or np.ptp(values) == 0:
            raise DataError(
                f"The trait '{name}' has {values.size} recorded value(s) with no variation "
                f"({preview(np.unique(values).tolist())}); there is nothing to model. Drop it "
                f"from {kind}()."
            )
    if (
        kind == "cbind"
        and not families
        and all(
            np.all(Y[observed[:, k], k] >= 0) and np.all(np.mod(Y[observed[:, k], k], 1) == 0)
            for k in range(len(traits))
        )
    ):
        warnings.warn(
            f"Every column of {lhs_text!r} holds non-negative whole numbers: under the "
            "Gaussian family cbind() binds traits for a multi-trait model. If these are "
            "successes and failures of a binomial model, pass family='binomial'.",
            MultiTraitWarning,
            stacklevel=3,
        )
    keep = observed.any(axis=1)
    row_level, labels = _grouping_levels(data, [group])
    counts = np.bincount(row_level)
    if (counts > 1).any():
        repeated = labels[counts > 1].tolist()
        raise DataError(
            f"{int((counts > 1).sum())} '{group}' id(s) have several rows, e.g. "
            f"{preview(repeated)}. A multi-trait model takes one row per individual with a "
            "column per trait; combine repeated records (e.g. their mean) first."
        )
    ids_all = labels[row_level]
    dropped = tuple(str(i) for i in ids_all[~keep])
    data = data.loc[keep].reset_index(drop=True)
    Y, ids_all = Y[keep], ids_all[keep]
    K = _as_kinship(kinship[group], group)
    missing = sorted(set(ids_all.tolist()).difference(K.ids))
    if missing:
        raise DataError(
            f"{len(missing)} of the {len(ids_all)} '{group}' ids in the data are missing from "
            f"kinship '{K.name}': {preview(missing)}. Drop those rows or supply a kinship "
            "that covers them (check id spelling and type)."
        )
    present = set(ids_all.tolist())
    ids = tuple(i for i in K.ids if i in present)
    order = pd.Index(ids_all).get_indexer(ids)
    data = data.iloc[order].reset_index(drop=True)
    Y = Y[order]
    K = K.subset(ids)
    _check_single_level_factors(fixed, data)
    X, names = _design(fixed, data, "fixed effects")
    if any(name.startswith("offset(") for name in names):
        raise SpecificationError("offset() is not supported in multi-trait models.")
    if not np.isfinite(X).all():
        raise DataError("The fixed-effect design holds non-finite values (e.g. log(0)).")
    problem = _collinear_columns(X, names)
    if problem:
        raise DataError(
            f"The fixed effects are collinear: {problem}. Drop or recode one of these columns."
        )
    for k, name in enumerate(traits):
        n_obs = int((~np.isnan(Y[:, k])).sum())
        if n_obs <= X.shape[1] + 1:
            raise DataError(
                f"The trait '{name}' has {n_obs} recorded values for {X.shape[1]} fixed "
                "effects; it needs more records than fixed effects (and some to spare for "
                "the variances)."
            )
    for arr in (Y, X):
        arr.setflags(write=False)
    return MultiTraitSpec(
        formula=formula,
        traits=tuple(traits),
        Y=Y,
        X=X,
        fixed_names=tuple(names),
        group=group,
        ids=ids,
        kinship=K,
        data=data,
        dropped=dropped,
        priors=MappingProxyType(dict(priors or {})),
        families=families,
    )
