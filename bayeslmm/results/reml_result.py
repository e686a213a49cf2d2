"""The result of a REML fit: variance components, fixed effects, BLUPs, likelihoods.

:class:`RemlFit` is plain data produced by :func:`bayeslmm.engines.reml.fit_reml`; it knows
nothing of how it was computed. Its tables follow lme4's conventions so that numbers can be
compared line by line with ``as.data.frame(VarCorr(fit))``, ``summary(fit)$coefficients``,
``REMLcrit(fit)``, ``logLik(fit)``, ``AIC(fit)`` and ``BIC(fit)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["RemlFit", "boundary_lrt"]

#: Kinds of covariance parameter, in :attr:`RemlFit.parameters`.
VARIANCE, COVARIANCE, RESIDUAL = "variance", "covariance", "residual"


@dataclass(frozen=True, eq=False)
class RemlFit:
    """A restricted-maximum-likelihood fit of a Gaussian linear mixed model.

    Attributes
    ----------
    method : str
        The route that ran: ``"spectral"`` (single kernel, rotated 1-D profile),
        ``"ai-reml-mme"`` (AI-REML through Henderson's mixed-model equations) or
        ``"ai-reml-dense"`` (AI-REML with the dense n × n V).
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
        Restricted log-likelihood at the estimate, and the full (ML) log-likelihood at the same
        covariance shape with the common scale re-profiled (what lme4's
        ``logLik(fit, REML = FALSE)`` returns for a REML fit).
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
        """−2 × restricted log-likelihood (lme4's ``REMLcrit``)."""
        return -2.0 * self.loglik_reml

    @property
    def aic(self) -> float:
        """AIC from the REML log-likelihood, as lme4's ``AIC()`` does for a REML fit.

        Only comparable between fits with the same fixed effects.
        """
        return -2.0 * self.loglik_reml + 2.0 * self.n_parameters

    @property
    def bic(self) -> float:
        """BIC from the REML log-likelihood with log(n_obs) per parameter (lme4's ``BIC()``)."""
        return -2.0 * self.loglik_reml + math.log(self.n_obs) * self.n_parameters

    # -- tables ---------------------------------------------------------------------------
    def fixed_effects(self) -> pd.DataFrame:
        """Fixed effects: index lme4's names (``"(Intercept)"``, …), columns estimate, se, t."""
        return self.fixed_table.copy()

    def variance_components(self) -> pd.DataFrame:
        """lme4's ``as.data.frame(VarCorr(fit))`` layout, plus standard errors.

        Columns ``grp``, ``var1``, ``var2``, ``vcov``, ``sdcor``, ``se`` (of ``vcov``) and
        ``se_sdcor`` (delta method). Variances first within a term, then covariances
        (``vcov`` = covariance, ``sdcor`` = correlation); residual row(s) last.

        Examples
        --------
        >>> fit.variance_components()  # doctest: +SKIP
               grp         var1  var2        vcov      sdcor ...
        0  Subject  (Intercept)  None  612.089748  24.740448 ...
        """
        par = self.parameters
        est = par["estimate"].to_numpy(dtype=float)
        cov = self.parameter_cov
        rows = []
        lookup = {
            (g, v): i
            for i, (g, v, k) in enumerate(zip(par["grp"], par["var1"], par["kind"], strict=True))
            if k != COVARIANCE
        }
        for i, row in enumerate(par.itertuples(index=False)):
            if row.kind == COVARIANCE:
                a, b = lookup[(row.grp, row.var1)], lookup[(row.grp, row.var2)]
                denom = math.sqrt(max(est[a], 0.0) * max(est[b], 0.0))
                corr = est[i] / denom if denom > 0 else float("nan")
                grad = np.zeros(est.size)
                if denom > 0:
                    grad[i] = 1.0 / denom
                    grad[a] = -0.5 * corr / est[a]
                    grad[b] = -0.5 * corr / est[b]
                sd_se = _delta_se(grad, cov) if denom > 0 else float("nan")
                rows.append((row.grp, row.var1, row.var2, est[i], corr, row.se, sd_se))
            else:
                sd = math.sqrt(max(est[i], 0.0))
                sd_se = row.se / (2.0 * sd) if sd > 0 else float("nan")
                rows.append((row.grp, row.var1, None, est[i], sd, row.se, sd_se))
        columns = ["grp", "var1", "var2", "vcov", "sdcor", "se", "se_sdcor"]
        frame = pd.DataFrame(rows, columns=columns)
        for col in ("grp", "var1", "var2"):  # keep None (lme4's NA) rather than NaN
            frame[col] = pd.Series([r[columns.index(col)] for r in rows], dtype=object)
        return frame

    def heritability(self) -> pd.DataFrame:
        """Share of the phenotypic variance explained by each variance parameter.

        V_p = Σ (variance parameters of the random terms) + residual variance (with residual
        variances by environment: their average over observations). Each variance parameter's
        share is θ_i / V_p, with a delta-method standard error from the inverse AI matrix
        (GCTA's formula: Var(h²) = (∂h²/∂θ)ᵀ AI⁻¹ (∂h²/∂θ)). Rows are named by ``grp`` for
        single-coefficient terms and ``grp:var1`` otherwise; when the model has exactly one
        kinship term with a single coefficient, a row ``"h2"`` repeats its share (the
        narrow-sense heritability at the scale of K as given).

        Returns
        -------
        pandas.DataFrame
            Index: component names; columns ``estimate``, ``se``.

        Examples
        --------
        >>> fit.heritability().loc["h2", "estimate"]  # doctest: +SKIP
        0.708
        """
        par = self.parameters
        est = par["estimate"].to_numpy(dtype=float)
        kinds = par["kind"].to_numpy()
        weights = np.zeros(est.size)
        weights[kinds == VARIANCE] = 1.0
        residual = np.flatnonzero(kinds == RESIDUAL)
        shares = par["residual_share"].to_numpy(dtype=float)
        weights[residual] = shares[residual]
        vp = float(weights @ est)
        counts = par[kinds == VARIANCE].groupby("grp", sort=False).size()
        rows, names = [], []
        for i in np.flatnonzero(kinds == VARIANCE):
            grp = par["grp"].iat[i]
            name = grp if counts[grp] == 1 else f"{grp}:{par['var1'].iat[i]}"
            grad = -est[i] * weights / vp**2
            grad[i] += 1.0 / vp
            rows.append((est[i] / vp, _delta_se(grad, self.parameter_cov)))
            names.append(name)
        # h² only when the kinship enters through exactly one variance parameter (covariances
        # of a kinship random slope would make "the genetic share" ambiguous)
        kinship_rows = [
            k
            for k, i in enumerate(np.flatnonzero(kinds == VARIANCE))
            if par["kinship"].iat[i] is not None
        ]
        kinship_covariances = ((kinds == COVARIANCE) & par["kinship"].notna().to_numpy()).any()
        if len(kinship_rows) == 1 and not kinship_covariances:
            rows.append(rows[kinship_rows[0]])
            names.append("h2")
        return pd.DataFrame(
            rows, index=pd.Index(names, name="component"), columns=["estimate", "se"]
        )

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
        from bayeslmm.results.summary import (
            assemble_summary,
            point_entries,
            point_variance_rows,
        )

        h2 = self.heritability()
        vc = self.variance_components()
        timing = {"total_s": 0.0, **self.timing}
        return assemble_summary(
            method="reml",
            n_obs=self.n_obs,
            formula=self.formula,
            strategy=self.method,
            family="gaussian",
            link="identity",
            heritability=point_entries(h2, ("estimate", "se")),
            variance_components=point_variance_rows(vc),
            fixed_effects=point_entries(self.fixed_table, ("estimate", "se", "t")),
            diagnostics={
                "converged": bool(self.converged),
                "n_iter": int(self.n_iter),
                "boundary": bool(self.boundary),
                "messages": list(self.messages),
            },
            timing=timing,
            extra={
                "sigma_formula": self.sigma_formula,
                "loglik": {"reml": _num(self.loglik_reml), "ml": _num(self.loglik_ml)},
                "reml_criterion": _num(self.reml_criterion),
                "n_parameters": int(self.n_parameters),
                "aic": _num(self.aic),
                "bic": _num(self.bic),
                # per-environment h² of a heteroscedastic model (absent otherwise)
                **summary_keys(self),
            },
        )

    def __repr__(self) -> str:
        vc = self.variance_components()[["grp", "var1", "var2", "vcov", "sdcor"]]
        return (
            f"RemlFit({self.formula!r}, method={self.method!r}, n_obs={self.n_obs}, "
            f"REML criterion={self.reml_criterion:.4f}, converged={self.converged}, "
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
    n_extra = full.parameters.shape[0] - reduced.parameters.shape[0]
    if n_extra != 1:
        raise ValueError(
            f"The full model must have exactly one more covariance parameter than the reduced "
            f"one; it has {n_extra} more. The ½χ²₁ boundary reference only holds for one "
            "variance component."
        )
    stat = max(2.0 * (full.loglik_reml - reduced.loglik_reml), 0.0)
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
