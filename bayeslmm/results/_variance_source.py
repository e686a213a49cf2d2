"""Engine-neutral access to fitted covariance parameters, for GxE and epistasis summaries.

A :class:`VarianceSource` reads any fit through the estimate protocol
(:mod:`bayeslmm.results.estimate`: posterior draws or a point estimate with its covariance)
and answers the same questions for both:

- the variance a random term adds at given covariate values, c · d Σ dᵀ, at the sample's
  kinship scale c (:meth:`~bayeslmm.spec.RandomTerm.kinship_scale`: the variance of the
  sample's genetic values d u_l, Legarra 2016; c = 1 for iid terms);
- the covariance of a term's contributions at two covariate vectors, c · d₁ Σ d₂ᵀ;
- the residual variance of given observations or of new covariate values.

Answers are :class:`~bayeslmm.results.estimate.Draws` or
:class:`~bayeslmm.results.estimate.Point` (kept with its Jacobian so that ratios such as h²
get delta-method standard errors). Both support ``+`` and ``/`` so that every formula is
written once for both engines.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from bayeslmm.results.estimate import Draws, Point, PosteriorEstimate, Quantity, stack

#: The point-estimate quantity under its earlier name.
Linear = Point

__all__ = ["Draws", "Linear", "Point", "Quantity", "VarianceSource", "stack"]

_IDENT = re.compile(r"[A-Za-z_.][A-Za-z0-9_.]*")


def ratio(num: Quantity, den: Quantity) -> Quantity:
    """num / den for either engine (the delta method for :class:`Point`)."""
    return num / den


def identifiers(text: str, columns: Sequence[Any]) -> list[str]:
    """Data columns named in a formula fragment (in data order)."""
    tokens = set(_IDENT.findall(text))
    return [str(c) for c in columns if str(c) in tokens]


class VarianceSource:
    """Covariance parameters of a fitted model, as draws (NUTS) or a point estimate.

    Parameters
    ----------
    fit : any fit (BayesFit, RemlFit, LaplaceFit)
    spec : ModelSpec, optional
        The fitted specification; needed for a result that does not carry one
        (``LMM(...).spec``).

    Examples
    --------
    >>> # VarianceSource(fit).cross("line", np.array([[1.0, 0.5]]))
    """

    def __init__(self, fit: Any, spec: Any = None) -> None:
        spec = getattr(fit, "spec", None) if spec is None else spec
        if spec is None:
            raise ValueError(
                "This result does not carry its model specification; pass spec=model.spec "
                "(the LMM or bayeslmm.specify(...) object that was fitted)."
            )
        if getattr(fit, "spec", None) is None and dataclasses.is_dataclass(fit):
            fit = dataclasses.replace(fit, spec=spec)
        self.fit = fit
        self.spec = spec
        # any fit answers estimate(); a bare object with a posterior is read as draws
        estimate = getattr(fit, "estimate", None)
        self.estimate = estimate() if callable(estimate) else PosteriorEstimate(fit.posterior, spec)
        self.is_bayes = isinstance(self.estimate, PosteriorEstimate)
        from bayeslmm.spec import split_formula

        _, _, blocks = split_formula(spec.formula)
        self.lhs = {t.group: b.lhs for t, b in zip(spec.terms, blocks, strict=True)}
        self._index = {t.group: i for i, t in enumerate(spec.terms)}
        if len(self._index) != len(spec.terms):
            raise ValueError(
                "GxE summaries need distinct grouping factors per random term; this model "
                f"repeats one: {[t.group for t in spec.terms]}. Use (1 + x | g) instead of "
                "(1 | g) + (0 + x | g)."
            )

    # -- terms ----------------------------------------------------------------------------
    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(self._index)

    def term(self, group: str):
        if group not in self._index:
            raise ValueError(f"No random term '{group}'; terms: {list(self._index)}.")
        return self.spec.terms[self._index[group]]

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
            f"This model has several random terms {list(self._index)} and "
            f"{len(kin)} with a kinship; name the genetic one with group=..."
        )

    def cross(self, group: str, D1: np.ndarray, D2: np.ndarray | None = None) -> Quantity:
        """c · d₁ᵢ Σ d₂ᵢᵀ for each row i of the designs D1, D2 (k × m); D2 defaults to D1."""
        D1 = np.atleast_2d(np.asarray(D1, dtype=float))
        D2 = D1 if D2 is None else np.atleast_2d(np.asarray(D2, dtype=float))
        c = self.term(group).kinship_scale()
        t = self._index[group]
        return self.estimate.evaluate(
            lambda p: c * np.einsum("ij,...jl,il->...i", D1, p.sigma(t), D2)
        )

    def average_variance(self, group: str, rows: Sequence[np.ndarray]) -> Quantity:
        """For each design block (r × m) the mean over its rows of c · d Σ dᵀ."""
        term = self.term(group)
        c, t = term.kinship_scale(), self._index[group]
        moments = []
        for R in rows:
            R = np.asarray(R, dtype=float).reshape(-1, term.n_coef)
            moments.append(c * R.T @ R / len(R))
        W = np.stack(moments)
        return self.estimate.evaluate(lambda p: np.einsum("ijl,...jl->...i", W, p.sigma(t)))

    # -- residual -------------------------------------------------------------------------
    def observation_residual(self, indices: Sequence[np.ndarray]) -> Quantity:
        """Mean residual variance σ²_i over each set of observation indices."""
        sets = [np.asarray(idx) for idx in indices]
        return self.estimate.evaluate(
            lambda p: np.stack([p.residual_variance(idx) for idx in sets], axis=-1)
        )

    def residual_at(self, frame: pd.DataFrame) -> Quantity | None:
        """Residual variance at new covariate values (Bayesian sigma formula or homoscedastic);
        None when it can only be read from observed environments."""
        spec = self.spec
        k = len(frame)
        if spec.sigma_X is None or not spec.family.is_gaussian:
            return self.observation_residual([np.arange(spec.n_obs)] * k)
        if not self.is_bayes:
            return None
        rhs = (spec.sigma_formula or "").split("~", 1)[-1]
        S = evaluate_design(rhs, spec.data, frame)
        return self.estimate.evaluate(
            lambda p: np.exp(2.0 * np.einsum("rp,...p->...r", S, p.sigma_coef))
        )

    # -- helpers --------------------------------------------------------------------------
    def constant(self, value: np.ndarray) -> Quantity:
        value = np.asarray(value, dtype=float)
        return self.estimate.evaluate(
            lambda p: np.broadcast_to(value, np.shape(p.olre_variance) + value.shape)
        )


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


def summary_frame(q: Quantity, index: Sequence[Any], prob: float) -> pd.DataFrame:
    """A table with one row per quantity (index) and the engine's summary columns."""
    return pd.DataFrame(q.summary(prob), index=list(index))
