"""Engine-neutral access to fitted covariance parameters, for GxE and epistasis summaries.

A :class:`VarianceSource` wraps a :class:`~bayeslmm.results.bayes_result.BayesFit` (posterior
draws) or a :class:`~bayeslmm.results.reml_result.RemlFit` (point estimate θ̂ with its
sampling covariance, the inverse AI matrix) and answers the same questions for both:

- the variance a random term adds at given covariate values, d Σ dᵀ (Σ at K_ii = 1);
- the covariance of a term's contributions at two covariate vectors, d₁ Σ d₂ᵀ;
- the residual variance of given observations or of new covariate values.

Answers are :class:`Draws` (posterior draws, shape (chain, draw, k)) or :class:`Linear`
(a point estimate linear in θ, kept with its Jacobian so that ratios such as h² get
delta-method standard errors). Both support ``+`` and ``/`` so that every formula is written
once for both engines.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from bayeslmm.results.summary import posterior_summary

_IDENT = re.compile(r"[A-Za-z_.][A-Za-z0-9_.]*")


def _lme4_name(name: str) -> str:
    return "(Intercept)" if name == "Intercept" else name


@dataclass(frozen=True)
class Draws:
    """Posterior draws of k quantities, ``values`` of shape (chain, draw, k)."""

    values: np.ndarray

    def __add__(self, other: Draws) -> Draws:
        return Draws(self.values + other.values)

    def __truediv__(self, other: Draws) -> Draws:
        return Draws(self.values / other.values)

    def summary(self, prob: float) -> list[dict[str, float]]:
        """One :func:`~bayeslmm.results.summary.posterior_summary` dict per quantity."""
        return [
            {**posterior_summary(self.values[..., i], prob), "median": _median(self.values[..., i])}
            for i in range(self.values.shape[-1])
        ]


def _median(x: np.ndarray) -> float:
    return float(np.median(x))


@dataclass(frozen=True)
class Linear:
    """Point estimates g(θ̂) of k quantities with their Jacobian ∂g/∂θ (k × P) and Cov(θ̂)."""

    value: np.ndarray
    jacobian: np.ndarray
    cov: np.ndarray

    def __add__(self, other: Linear) -> Linear:
        return Linear(self.value + other.value, self.jacobian + other.jacobian, self.cov)

    def __truediv__(self, other: Linear) -> Linear:
        a, b = self.value, other.value
        with np.errstate(divide="ignore", invalid="ignore"):
            jac = (self.jacobian * b[:, None] - a[:, None] * other.jacobian) / (b**2)[:, None]
            return Linear(a / b, jac, self.cov)

    def se(self) -> np.ndarray:
        """Delta-method standard errors sqrt(diag(J Cov Jᵀ)) (NaN where undefined)."""
        var = np.einsum("kp,pq,kq->k", self.jacobian, self.cov, self.jacobian)
        return np.sqrt(np.where(np.isfinite(var) & (var >= 0), var, np.nan))

    def summary(self, prob: float) -> list[dict[str, float]]:
        """``estimate, se, ci_low, ci_high, ci_prob`` per quantity (Wald intervals)."""
        z = float(stats.norm.ppf(0.5 + prob / 2))
        se = self.se()
        return [
            {
                "estimate": float(v),
                "se": float(s),
                "ci_low": float(v - z * s),
                "ci_high": float(v + z * s),
                "ci_prob": float(prob),
            }
            for v, s in zip(self.value, se, strict=True)
        ]


Quantity = Draws | Linear


def ratio(num: Quantity, den: Quantity) -> Quantity:
    """num / den for either engine (the delta method for :class:`Linear`)."""
    return num / den


def identifiers(text: str, columns: Sequence[Any]) -> list[str]:
    """Data columns named in a formula fragment (in data order)."""
    tokens = set(_IDENT.findall(text))
    return [str(c) for c in columns if str(c) in tokens]


class VarianceSource:
    """Covariance parameters of a fitted model, as draws (NUTS) or θ̂ + Jacobian (REML).

    Parameters
    ----------
    fit : BayesFit or RemlFit
    spec : ModelSpec, optional
        The fitted specification; needed for a RemlFit that does not carry one
        (``LMM(...).spec``).

    Examples
    --------
    >>> # VarianceSource(fit).term_variance("line", np.array([[1.0, 0.5]]))
    """

    def __init__(self, fit: Any, spec: Any = None) -> None:
        spec = getattr(fit, "spec", None) if spec is None else spec
        if spec is None:
            raise ValueError(
                "This result does not carry its model specification; pass spec=model.spec "
                "(the LMM or bayeslmm.specify(...) object that was fitted)."
            )
        self.fit = fit
        self.spec = spec
        self.is_bayes = hasattr(fit, "idata")
        from bayeslmm.spec import split_formula

        _, _, blocks = split_formula(spec.formula)
        self.lhs = {t.group: b.lhs for t, b in zip(spec.terms, blocks, strict=True)}
        self._terms = {t.group: t for t in spec.terms}
        if len(self._terms) != len(spec.terms):
            raise ValueError(
                "GxE summaries need distinct grouping factors per random term; this model "
                f"repeats one: {[t.group for t in spec.terms]}. Use (1 + x | g) instead of "
                "(1 | g) + (0 + x | g)."
            )
        if self.is_bayes:
            post = fit.posterior
            self._post = post
            self.shape = (post.sizes["chain"], post.sizes["draw"])
        else:
            par = fit.parameters
            self._theta = par["estimate"].to_numpy(dtype=float)
            self._cov = np.asarray(fit.parameter_cov, dtype=float)
            labels = _reml_term_labels([t.group for t in spec.terms])
            self._label = dict(zip([t.group for t in spec.terms], labels, strict=True))

    # -- terms ----------------------------------------------------------------------------
    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(self._terms)

    def term(self, group: str):
        if group not in self._terms:
            raise ValueError(f"No random term '{group}'; terms: {list(self._terms)}.")
        return self._terms[group]

    def genetic_group(self, group: str | None = None) -> str:
        """``group`` if given, else the sole kinship term (else the sole term)."""
        if group is not None:
            self.term(group)
            return group
        kin = [t.group for t in self.spec.terms if t.kinship is not None]
        if len(kin) == 1:
            return kin[0]
        if len(self.spec.terms) == 1:
            return self.spec.terms[0].group
        raise ValueError(
            f"This model has several random terms {list(self._terms)} and "
            f"{len(kin)} with a kinship; name the genetic one with group=..."
        )

    def sigma_draws(self, group: str) -> np.ndarray:
        """Posterior draws of a term's Σ, shape (chain, draw, m, m)."""
        term = self.term(group)
        post = self._post
        if term.n_coef == 1:
            sd = post[f"sd_{group}"].transpose("chain", "draw", ...).values
            return (sd**2).reshape(*self.shape, 1, 1)
        cov = post[f"cov_{group}"].transpose("chain", "draw", f"{group}_coef", ...).values
        return cov

    def _sigma_index(self, group: str) -> dict[tuple[int, int], int]:
        """REML: (j, k) of the term's Σ (j ≤ k) → row of the parameter table."""
        term = self.term(group)
        par = self.fit.parameters
        label = self._label[group]
        names = [_lme4_name(c) for c in term.covariates]
        out = {}
        for i, row in enumerate(par.itertuples(index=False)):
            if row.grp != label or row.kind == "residual":
                continue
            j = names.index(row.var1)
            k = j if row.var2 is None or pd.isna(row.var2) else names.index(row.var2)
            out[(min(j, k), max(j, k))] = i
        return out

    def cross(self, group: str, D1: np.ndarray, D2: np.ndarray | None = None) -> Quantity:
        """d₁ᵢ Σ d₂ᵢᵀ for each row i of the designs D1, D2 (k × m); D2 defaults to D1."""
        D1 = np.atleast_2d(np.asarray(D1, dtype=float))
        D2 = D1 if D2 is None else np.atleast_2d(np.asarray(D2, dtype=float))
        if self.is_bayes:
            S = self.sigma_draws(group)
            return Draws(np.einsum("ij,cdjl,il->cdi", D1, S, D2))
        jac = np.zeros((D1.shape[0], self._theta.size))
        for (j, k), i in self._sigma_index(group).items():
            jac[:, i] = D1[:, j] * D2[:, k] + (D1[:, k] * D2[:, j] if j != k else 0.0)
        return Linear(jac @ self._theta, jac, self._cov)

    def average_variance(self, group: str, rows: Sequence[np.ndarray]) -> Quantity:
        """For each design block (r × m) the mean over its rows of d Σ dᵀ."""
        m = self.term(group).n_coef
        # E[d Σ dᵀ] over rows = Σ_jk Σ_jk M_jk with M = mean dᵀd: one "row" per block whose
        # contribution is exact through the second-moment matrix.
        if self.is_bayes:
            S = self.sigma_draws(group)
            moments = np.stack(
                [np.asarray(R, float).T @ np.asarray(R, float) / len(R) for R in rows]
            )
            return Draws(np.einsum("ijl,cdjl->cdi", moments, S))
        out = []
        for R in rows:
            R = np.asarray(R, dtype=float).reshape(-1, m)
            out.append(self.cross(group, R))
        value = np.array([q.value.mean() for q in out])
        jac = np.stack([q.jacobian.mean(axis=0) for q in out])
        return Linear(value, jac, self._cov)

    # -- residual -------------------------------------------------------------------------
    def observation_residual(self, indices: Sequence[np.ndarray]) -> Quantity:
        """Mean residual variance σ²_i over each set of observation indices."""
        spec = self.spec
        if self.is_bayes:
            post = self._post
            if spec.sigma_X is not None and spec.family.is_gaussian:
                gamma = post["sigma_coef"].transpose("chain", "draw", ...).values
                S = np.asarray(spec.sigma_X, dtype=float)
                vals = [
                    np.exp(2.0 * np.einsum("rp,cdp->cdr", S[idx], gamma)).mean(axis=-1)
                    for idx in indices
                ]
                return Draws(np.stack(vals, axis=-1))
            var = post["var_residual"].transpose("chain", "draw").values
            return Draws(np.repeat(var[..., None], len(indices), axis=-1))
        from bayeslmm.engines.reml._structure import build_structure

        params = build_structure(spec).params
        res = [(i, p.mask) for i, p in enumerate(params) if p.is_residual]
        jac = np.zeros((len(indices), self._theta.size))
        for r, idx in enumerate(indices):
            idx = np.asarray(idx)
            for i, mask in res:
                jac[r, i] = mask[idx].mean()
        return Linear(jac @ self._theta, jac, self._cov)

    def residual_at(self, frame: pd.DataFrame) -> Quantity | None:
        """Residual variance at new covariate values (Bayesian sigma formula or homoscedastic);
        None when it can only be read from observed environments."""
        spec = self.spec
        k = len(frame)
        if spec.sigma_X is None or not spec.family.is_gaussian:
            if self.is_bayes:
                var = self._post["var_residual"].transpose("chain", "draw").values
                return Draws(np.repeat(var[..., None], k, axis=-1))
            return self.observation_residual([np.arange(spec.n_obs)] * k)
        if not self.is_bayes:
            return None
        rhs = (spec.sigma_formula or "").split("~", 1)[-1]
        S = evaluate_design(rhs, spec.data, frame)
        gamma = self._post["sigma_coef"].transpose("chain", "draw", ...).values
        return Draws(np.exp(2.0 * np.einsum("rp,cdp->cdr", S, gamma)))

    # -- helpers --------------------------------------------------------------------------
    def constant(self, value: np.ndarray) -> Quantity:
        value = np.asarray(value, dtype=float)
        if self.is_bayes:
            return Draws(np.broadcast_to(value, (*self.shape, value.size)).copy())
        return Linear(value, np.zeros((value.size, self._theta.size)), self._cov)


def evaluate_design(rhs: str, data: pd.DataFrame, frame: pd.DataFrame) -> np.ndarray:
    """A formula right-hand side evaluated at new rows, with the training data's encoding
    (factor levels, stateful transforms) as formulae does for predictions."""
    import warnings

    import formulae

    if rhs.strip() == "1":
        return np.ones((len(frame), 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dm = formulae.design_matrices(rhs, data, na_action="error")
        new = dm.common.evaluate_new_data(frame)
    return np.asarray(new.design_matrix, dtype=float)


def _reml_term_labels(groups: list[str]) -> list[str]:
    """lme4's labels of repeated grouping factors (``g``, ``g.1``, …), as the REML engine."""
    seen: dict[str, int] = {}
    out = []
    for g in groups:
        n = seen.get(g, 0)
        out.append(g if n == 0 else f"{g}.{n}")
        seen[g] = n + 1
    return out


def stack(quantities: Sequence[Quantity]) -> Quantity:
    """Concatenate quantities along their last axis."""
    first = quantities[0]
    if isinstance(first, Draws):
        return Draws(np.concatenate([q.values for q in quantities], axis=-1))
    return Linear(
        np.concatenate([q.value for q in quantities]),
        np.concatenate([q.jacobian for q in quantities]),
        first.cov,
    )


def summary_frame(q: Quantity, index: Sequence[Any], prob: float) -> pd.DataFrame:
    """A table with one row per quantity (index) and the engine's summary columns."""
    return pd.DataFrame(q.summary(prob), index=list(index))
