"""The result of a REML or ML fit: variance components, fixed effects, BLUPs, likelihoods.

:class:`RemlFit` is plain data produced by :func:`bayeslmm.engines.reml.fit_reml`; it knows
nothing of how it was computed. Its tables follow lme4's conventions so that numbers can be
compared line by line with ``as.data.frame(VarCorr(fit))``, ``summary(fit)$coefficients``,
``REMLcrit(fit)``, ``logLik(fit)``, ``AIC(fit)`` and ``BIC(fit)`` of ``lmer(..., REML =
TRUE)`` or, for a maximum-likelihood fit (``criterion == "ml"``), of ``REML = FALSE``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import linalg

from bayeslmm.errors import SpecificationError
from bayeslmm.results import tables
from bayeslmm.results.display import FitDisplay
from bayeslmm.results.estimate import ParameterLayout, PointEstimate
from bayeslmm.results.fit import FitTables

__all__ = ["RemlFit", "boundary_lrt"]

#: Kinds of covariance parameter, in :attr:`RemlFit.parameters`.
VARIANCE, COVARIANCE, RESIDUAL = "variance", "covariance", "residual"


@dataclass(frozen=True, eq=False)
class RemlFit(FitTables, FitDisplay):
    """A restricted-maximum-likelihood (or maximum-likelihood) fit of a Gaussian LMM.

    Attributes
    ----------
    method : str
        The route that ran: ``"spectral"`` (single kernel, rotated 1-D profile),
        ``"spectral-low-rank"`` (the same with a low-rank kinship, rotated by the thin SVD
        of its markers),
        ``"ai-reml-mme"`` (AI-REML through Henderson's mixed-model equations),
        ``"ai-reml-sparse"`` (the same through sparse ones, for iid factors),
        ``"ai-reml-dense"`` (AI-REML with the dense n × n V) or ``"sparse-pedigree"`` (the
        animal model through the sparse mixed-model equations with a pedigree's A⁻¹).
    formula : str
        The model formula, as given to :func:`bayeslmm.specify`.
    n_obs : int
        Number of observations.
    parameters : pandas.DataFrame
        One row per covariance parameter θ_i (V = Σ θ_i V_i): columns ``grp``, ``var1``,
        ``var2``, ``kind`` (``"variance"``, ``"covariance"`` or ``"residual"``), ``estimate``,
        ``se``, ``kinship`` (name of the kernel, None for iid terms), ``residual_share``
        (fraction of observations behind a residual parameter; 0 for the others).
    parameter_cov : ndarray
        Sampling covariance of θ: the inverse average-information matrix at the estimate.
    fixed_table : pandas.DataFrame
        Index: fixed-effect names (lme4's spelling, e.g. ``"(Intercept)"``); columns
        ``estimate``, ``se``, ``t``.
    fixed_cov : ndarray
        (Xᵀ V̂⁻¹ X)⁻¹.
    blups : dict of str to pandas.DataFrame
        Per random term (keyed by its ``grp`` label): BLUPs indexed by level, one column per
        coefficient (``"(Intercept)"``, ``"Days"``, …) and its prediction error variance in
        ``"pev:<coefficient>"``.
    loglik_reml, loglik_ml : float
        Restricted log-likelihood at the estimate, and the full (ML) log-likelihood: for a
        REML fit at the same covariance shape with the common scale re-profiled (what lme4's
        ``logLik(fit, REML = FALSE)`` returns for a REML fit), for an ML fit its maximum
        (lme4's ``logLik()`` of ``lmer(..., REML = FALSE)``).
    converged : bool
    n_iter : int
        AI-REML: iterations (EM warm-start steps included). Spectral: likelihood evaluations.
    boundary : bool
        True when a variance is estimated at 0 or a covariance matrix is singular (lme4's
        "boundary (singular) fit").
    timing : dict of str to float
        Seconds spent: ``total_s`` and stage timings.
    messages : tuple of str
        Notes from the optimiser (boundary components, failed step halving).
    sigma_formula : str or None
        The residual-variance formula, when residual variances vary by environment.
    criterion : {"reml", "ml"}
        The likelihood that was maximised: restricted (REML) or full (maximum likelihood,
        ``LMM(...).fit(method="ml")``). ``aic``, ``bic`` and ``loglik`` use it; summary.json's
        ``method`` is ``"reml"`` or ``"ml"`` accordingly.
    refitter : callable, optional
        Set by the engine: ``refitter(criterion)`` fits the same model by the other
        criterion (:meth:`refit_ml`).
    """

    method: str
    formula: str
    n_obs: int
    parameters: pd.DataFrame
    parameter_cov: np.ndarray
    fixed_table: pd.DataFrame
    fixed_cov: np.ndarray
    blups: dict[str, pd.DataFrame]
    loglik_reml: float
    loglik_ml: float
    converged: bool
    n_iter: int
    boundary: bool
    timing: dict[str, float] = field(default_factory=dict)
    messages: tuple[str, ...] = ()
    #: The fitted :class:`~bayeslmm.spec.ModelSpec` (reaction norms and per-environment
    #: tables read the terms' designs from it).
    spec: Any = field(default=None, repr=False)
    sigma_formula: str | None = None
    criterion: str = "reml"
    refitter: Callable[[str], RemlFit] | None = field(default=None, repr=False)

    @property
    def engine(self) -> str:  # type: ignore[override]
        """``"reml"`` or ``"ml"`` (summary.json's ``method``): which likelihood was maximised."""
        return "ml" if self.criterion == "ml" else "reml"

    def estimate(self) -> PointEstimate:
        """(θ̂, β̂) with Cov = blockdiag(AI⁻¹, (XᵀV̂⁻¹X)⁻¹), under the estimate protocol."""
        if self.spec is None:
            raise ValueError(
                "This REML result does not carry its model specification; fit it with "
                "LMM(...).fit(method='reml') or bayeslmm.engines.reml.fit_reml(spec)."
            )
        return PointEstimate(
            x=np.r_[
                self.parameters["estimate"].to_numpy(dtype=float),
                self.fixed_table["estimate"].to_numpy(dtype=float),
            ],
            cov=linalg.block_diag(self.parameter_cov, self.fixed_cov),
            layout=reml_layout(self.spec, self.parameters),
            spec=self.spec,
        )

    # -- likelihood-based quantities ------------------------------------------------------
    @property
    def n_fixed(self) -> int:
        return int(self.fixed_table.shape[0])

    @property
    def n_parameters(self) -> int:
        """Degrees of freedom as lme4 counts them: fixed effects + covariance parameters."""
        return self.n_fixed + int(self.parameters.shape[0])

    @property
    def reml_criterion(self) -> float:
        """−2 × restricted log-likelihood at the estimate (lme4's ``REMLcrit``)."""
        return -2.0 * self.loglik_reml

    @property
    def loglik(self) -> float:
        """The maximised log-likelihood, as lme4's ``logLik()``: restricted for a REML fit,
        full for an ML fit."""
        return self.loglik_ml if self.criterion == "ml" else self.loglik_reml

    @property
    def deviance(self) -> float:
        """−2 × the maximised log-likelihood (for an ML fit lme4's ``deviance()``)."""
        return -2.0 * self.loglik

    @property
    def aic(self) -> float:
        """AIC from the maximised log-likelihood, as lme4's ``AIC()``.

        For a REML fit only comparable between fits with the same fixed effects; fits with
        different fixed effects are compared by their ML fits (:meth:`refit_ml`;
        :func:`bayeslmm.compare` refits them).
        """
        return -2.0 * self.loglik + 2.0 * self.n_parameters

    @property
    def bic(self) -> float:
        """BIC from the maximised log-likelihood with log(n_obs) per parameter (lme4's
        ``BIC()``)."""
        return -2.0 * self.loglik + math.log(self.n_obs) * self.n_parameters

    def refit_ml(self) -> RemlFit:
        """The maximum-likelihood fit of the same model and data (this fit if it is one).

        What lme4's ``anova()`` does before comparing REML fits whose fixed effects differ
        ("refitting model(s) with ML (instead of REML)"): restricted likelihoods of
        different fixed-effect designs are likelihoods of different data.

        Returns
        -------
        RemlFit
            ``criterion == "ml"``; its ``loglik``, ``aic`` and ``bic`` are the full
            likelihood's, lme4's ``lmer(..., REML = FALSE)``.

        Examples
        --------
        >>> import numpy as np, pandas as pd, bayeslmm as bl
        >>> rng = np.random.default_rng(1)
        >>> df = pd.DataFrame({"g": np.repeat(list("abcdefgh"), 5), "x": rng.normal(size=40)})
        >>> df["y"] = np.repeat(3 * rng.normal(size=8), 5) + rng.normal(size=40)
        >>> reml = bl.LMM("y ~ x + (1 | g)", df).fit(method="reml")
        >>> ml = reml.refit_ml()
        >>> ml.criterion, ml.n_parameters == reml.n_parameters
        ('ml', True)
        """
        if self.criterion == "ml":
            return self
        if self.refitter is None:
            raise SpecificationError(
                "This REML result cannot refit itself (it was not made by the REML engine); "
                "fit the model with LMM(...).fit(method='ml') instead."
            )
        return self.refitter("ml")

    # -- tables ---------------------------------------------------------------------------
    def fixed_effects(self, hdi_prob: float | None = None) -> pd.DataFrame:
        """Fixed effects: index lme4's names (``"(Intercept)"``, …), columns ``estimate, se,
        ci_low, ci_high`` (Wald) and ``t``."""
        table = tables.fixed_effects(
            self.estimate(), self._prob(hdi_prob), names=list(self.fixed_table.index)
        )
        table["t"] = self.fixed_table["t"].to_numpy()
        return table

    def caic(self, cAIC4: bool = False) -> Any:
        """The conditional AIC of Greven & Kneib (2010): fields ``caic`` and ``df``.

        −2 Σ log N(y_i; ŷ_i, σ̂²) + 2 df with ŷ = Xβ̂ + Zû and df = tr(∂ŷ/∂y) + 1, the
        variance estimates' dependence on y included. It ranks models by how well they
        predict new records of the *same* individuals; ``aic`` by how well they describe the
        population (docs/questions.md). See :mod:`bayeslmm.results.caic`; ``cAIC4=True``
        reproduces R's cAIC4 arithmetic.

        Examples
        --------
        >>> # fit.caic().caic, fit.caic().df
        """
        from bayeslmm.results.caic import conditional_aic

        return conditional_aic(self, cAIC4=cAIC4)

    def lrt(self, reduced: RemlFit) -> dict[str, float]:
        """Likelihood-ratio test of this fit against a fit without one variance component.

        See :func:`boundary_lrt`.
        """
        return boundary_lrt(self, reduced)

    # -- export ---------------------------------------------------------------------------
    def to_summary(self) -> dict[str, Any]:
        """A JSON-serialisable dict following the public ``summary.json`` contract.

        Missing numbers (e.g. a standard error at the boundary) are ``None``, never NaN.

        Examples
        --------
        >>> import json
        >>> json.dumps(fit.to_summary())  # doctest: +SKIP
        """
        from bayeslmm.results.environment import summary_keys
        from bayeslmm.results.summary import assemble_summary

        timing = {"total_s": 0.0, **self.timing}
        if self.criterion == "ml":
            # as Laplace ML writes it: the maximised full likelihood and its deviance
            likelihood = {
                "loglik": {"ml": _num(self.loglik_ml)},
                "deviance": _num(self.deviance),
            }
        else:
            likelihood = {
                "loglik": {"reml": _num(self.loglik_reml), "ml": _num(self.loglik_ml)},
                "reml_criterion": _num(self.reml_criterion),
            }
        return assemble_summary(
            method=self.engine,
            n_obs=self.n_obs,
            formula=self.formula,
            strategy=self.method,
            family="gaussian",
            link="identity",
            **self._summary_sections(),
            diagnostics={
                "converged": bool(self.converged),
                "n_iter": int(self.n_iter),
                "boundary": bool(self.boundary),
                "messages": list(self.messages),
            },
            timing=timing,
            extra={
                "sigma_formula": self.sigma_formula,
                "kinship": self._kinship_summary(),
                **likelihood,
                "n_parameters": int(self.n_parameters),
                "aic": _num(self.aic),
                "bic": _num(self.bic),
                # per-environment h² of a heteroscedastic model (absent otherwise)
                **summary_keys(self),
            },
        )

    def __repr__(self) -> str:
        vc = self.variance_components()[["grp", "var1", "var2", "vcov", "sdcor"]]
        likelihood = (
            f"logLik={self.loglik_ml:.4f}"
            if self.criterion == "ml"
            else f"REML criterion={self.reml_criterion:.4f}"
        )
        return (
            f"RemlFit({self.formula!r}, criterion={self.criterion!r}, method={self.method!r}, "
            f"n_obs={self.n_obs}, {likelihood}, converged={self.converged}, "
            f"boundary={self.boundary})\n{vc.to_string(index=False)}\n"
            f"{self.fixed_table.to_string()}"
        )


def boundary_lrt(full: RemlFit, reduced: RemlFit) -> dict[str, float]:
    """REML likelihood-ratio test for one variance component, with the boundary correction.

    Under H0 the component's variance is 0, on the boundary of the parameter space, so the
    statistic LRT = 2 (ℓ_R(full) − ℓ_R(reduced)) follows ½χ²₀ + ½χ²₁ and
    p = ½ P(χ²₁ > LRT) (Self & Liang 1987; Stram & Lee 1994). Both fits must be REML fits
    with the same fixed effects and data (restricted likelihoods with different X are not
    comparable) and ``reduced`` must lack exactly one variance parameter.

    Parameters
    ----------
    full, reduced : RemlFit

    Returns
    -------
    dict
        ``{"lrt": statistic, "df": 1, "p_value": p}``.

    Examples
    --------
    >>> boundary_lrt(fit_with_kinship, fit_without)  # doctest: +SKIP
    {'lrt': 12.3, 'df': 1, 'p_value': 0.00023}
    """
    if list(full.fixed_table.index) != list(reduced.fixed_table.index):
        raise ValueError(
            "A REML likelihood-ratio test needs the same fixed effects in both fits; got "
            f"{list(full.fixed_table.index)} and {list(reduced.fixed_table.index)}. "
            "Compare fixed effects with ML fits instead."
        )
    if full.n_obs != reduced.n_obs:
        raise ValueError("Both fits must use the same observations.")
    if full.criterion != reduced.criterion:
        raise ValueError(
            f"One fit maximised the {full.criterion.upper()} likelihood and the other the "
            f"{reduced.criterion.upper()} one; fit both the same way (e.g. both by REML)."
        )
    n_extra = full.parameters.shape[0] - reduced.parameters.shape[0]
    if n_extra != 1:
        raise ValueError(
            f"The full model must have exactly one more covariance parameter than the reduced "
            f"one; it has {n_extra} more. The ½χ²₁ boundary reference only holds for one "
            "variance component."
        )
    from scipy import stats  # imported here: scipy.stats takes ~0.4 s to load

    stat = max(2.0 * (full.loglik - reduced.loglik), 0.0)
    p = 0.5 * float(stats.chi2.sf(stat, 1)) if stat > 0 else 1.0
    return {"lrt": stat, "df": 1, "p_value": p}


def _delta_se(grad: np.ndarray, cov: np.ndarray) -> float:
    value = float(grad @ cov @ grad)
    return math.sqrt(value) if np.isfinite(value) and value >= 0 else float("nan")


def _num(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def reml_layout(spec: Any, parameters: pd.DataFrame) -> ParameterLayout:
    """Where each row of a REML ``parameters`` table lives in the model's Σ's / residual."""
    position: dict[tuple, tuple[int, int, int]] = {}
    for t, (term, groups) in enumerate(zip(spec.terms, spec.coefficient_groups(), strict=True)):
        names = [tables.lme4_name(c) for c in term.covariates]
        for j, (grp, name) in enumerate(zip(groups, names, strict=True)):
            position[(grp, name, None)] = (t, j, j)
            for k in range(j + 1, len(names)):
                position[(groups[0], name, names[k])] = (t, j, k)
    entries, residual = [], []
    for i, row in enumerate(parameters.itertuples(index=False)):
        if row.kind == RESIDUAL:
            residual.append(i)
            continue
        var2 = None if row.var2 is None or pd.isna(row.var2) else row.var2
        entries.append(position[(row.grp, row.var1, var2)])
    env = spec.residual_groups()
    rows = np.full(spec.n_obs, residual[0]) if env is None else np.asarray(residual)[env[1]]
    n_theta = parameters.shape[0]
    return ParameterLayout(
        sigma_entries=tuple(entries),
        sd_entries=False,
        residual_rows=rows,
        olre=None,
        beta=slice(n_theta, None),
    )
