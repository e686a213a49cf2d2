"""The result of a Laplace maximum-likelihood fit of a GLMM (lme4's ``glmer``, nAGQ = 1).

:class:`LaplaceFit` is plain data produced by :func:`bayeslmm.engines.laplace.fit_laplace`:
θ̂ (the random effects' SDs, lme4's ``getME(fit, "theta")``), β̂ and their covariance 2H⁻¹.
Its tables (:class:`~bayeslmm.results.fit.FitTables`) have the rows and leading columns of
every other engine's; heritability on the latent, link, observed and liability scales comes
with delta-method SEs through the same formulas as the posterior's.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from bayeslmm.results import tables
from bayeslmm.results.display import FitDisplay
from bayeslmm.results.estimate import ParameterLayout, PointEstimate
from bayeslmm.results.fit import FitTables

__all__ = ["LaplaceFit"]


@dataclass(frozen=True, eq=False)
class LaplaceFit(FitTables, FitDisplay):
    """A Laplace-approximation ML fit of a GLMM (lme4's ``glmer`` with nAGQ = 1).

    Attributes
    ----------
    formula, family, link : str
    n_obs : int
    theta : ndarray
        Standard deviations of the random effects, one per variance parameter (lme4's θ:
        ``getME(fit, "theta")``); for a correlated term ``(1 + x | g)`` the lower triangle,
        by columns, of T with Σ = T Tᵀ; the observation-level effect's last when present.
    beta : ndarray
        Fixed effects.
    parameter_cov : ndarray
        2 H⁻¹ over (θ, β), H the finite-difference Hessian of the Laplace deviance.
    deviance : float
        The Laplace deviance at the optimum (−2 logLik).
    fixed_table : pandas.DataFrame
        Index: names (``"(Intercept)"``, …); columns ``estimate``, ``se``, ``z``.
    random_effects : dict of str to pandas.DataFrame
        Conditional modes u = θ R b* per variance parameter, indexed by level.
    spec : ModelSpec
        The fitted specification.
    layout : ParameterLayout
        Where each entry of (θ, β) lives in the model.
    """

    formula: str
    family: str
    link: str
    n_obs: int
    theta: np.ndarray
    beta: np.ndarray
    parameter_cov: np.ndarray
    deviance: float
    fixed_table: pd.DataFrame
    random_effects: dict[str, pd.DataFrame]
    converged: bool
    n_iter: int
    n_evals: int
    messages: tuple[str, ...]
    timing: dict[str, float]
    spec: Any = field(repr=False)
    layout: ParameterLayout = field(repr=False)

    engine: ClassVar[str] = "laplace"

    def estimate(self) -> PointEstimate:
        """(θ̂, β̂) with Cov = 2H⁻¹, under the estimate protocol."""
        return PointEstimate(
            x=np.r_[self.theta, self.beta],
            cov=self.parameter_cov,
            layout=self.layout,
            spec=self.spec,
        )

    @property
    def variance_table(self) -> pd.DataFrame:
        """lme4's ``as.data.frame(VarCorr(fit))`` layout (kept for existing callers of
        :meth:`variance_components`)."""
        return self.variance_components()

    def fixed_effects(self, hdi_prob: float | None = None) -> pd.DataFrame:
        """Fixed effects: index lme4's names, columns ``estimate, se, ci_low, ci_high``, ``z``."""
        table = tables.fixed_effects(
            self.estimate(), self._prob(hdi_prob), names=list(self.fixed_table.index)
        )
        table["z"] = self.fixed_table["z"].to_numpy()
        return table

    def heritability(
        self,
        hdi_prob: float | None = None,
        prevalence: float | None = None,
        case_fraction: float | None = None,
    ) -> pd.DataFrame:
        """Link-scale variance shares of each random term (``h2`` for a sole kinship term),
        with delta-method SEs; the same rows and columns as every engine's.

        GLMM heritability on the latent, link, observed and liability scales:
        :meth:`heritability_scales`. (Passing ``prevalence`` or ``case_fraction`` here still
        returns that long table, one row per term and scale, with a DeprecationWarning.)
        """
        if prevalence is not None or case_fraction is not None:
            warnings.warn(
                "LaplaceFit.heritability(prevalence=...) is deprecated: use "
                "fit.heritability_scales(prevalence=...), which has the columns of every "
                "engine's tables.",
                DeprecationWarning,
                stacklevel=2,
            )
            rows = []
            for term in (t.group for t in self.spec.kinship_terms):
                scales = self.heritability_scales(prevalence, case_fraction, term, hdi_prob)
                for name, row in scales.iterrows():
                    rows.append((term, name.removeprefix("h2_"), row["estimate"], row["se"]))
            return pd.DataFrame(rows, columns=["term", "scale", "estimate", "se"])
        return super().heritability(hdi_prob)

    def variance_shares(self) -> pd.DataFrame:
        """Link-scale variance shares with ``"residual"`` (the distribution-specific
        variance plus σ²_olre), columns ``estimate, se, ci_low, ci_high``."""
        index, q = tables.share_quantity(self.estimate(), include_residual=True)
        return tables.table(q, index, self._prob(None), "component")

    def conditional_modes(self) -> np.ndarray:
        """The random effects' conditional modes û as one vector: term by term,
        coefficient by coefficient, level by level (the observation-level effect left out).

        Examples
        --------
        >>> # u = fit.conditional_modes()   # fit.random_effects, concatenated
        """
        frames = list(self.random_effects.values())
        n_blocks = sum(t.n_coef for t in self.spec.terms)
        return np.concatenate([f.iloc[:, 0].to_numpy(dtype=float) for f in frames[:n_blocks]])

    @property
    def loglik(self) -> float:
        """Laplace approximation of the marginal log-likelihood (lme4's ``logLik``)."""
        return -0.5 * self.deviance

    @property
    def n_parameters(self) -> int:
        return int(self.theta.size + self.beta.size)

    @property
    def aic(self) -> float:
        return self.deviance + 2.0 * self.n_parameters

    @property
    def bic(self) -> float:
        return self.deviance + math.log(self.n_obs) * self.n_parameters

    @property
    def boundary(self) -> bool:
        # SDs and diagonals of T (an off-diagonal entry of a Cholesky factor may be ≤ 0)
        diagonal = [j == k for _, j, k in self.layout.sigma_entries]
        diagonal += [True] * (self.theta.size - len(diagonal))  # the observation-level SD
        return bool(np.any(self.theta[np.asarray(diagonal, dtype=bool)] < 1e-6))

    @property
    def eta_fixed(self) -> np.ndarray:
        """Fixed-effect linear predictor Xβ̂ + offset per observation."""
        eta = np.asarray(self.spec.X, dtype=float) @ self.beta
        return eta if self.spec.offset is None else eta + np.asarray(self.spec.offset)

    # -- export ------------------------------------------------------------------------------
    def to_summary(
        self, prevalence: float | None = None, case_fraction: float | None = None
    ) -> dict[str, Any]:
        """A JSON-serialisable dict in the project's ``summary.json`` layout.

        ``heritability`` holds each random term's link-scale share (and ``h2``) and, with one
        kinship term, ``h2_latent``, ``h2_link``, ``h2_observed`` (and ``h2_liability`` with
        ``prevalence``), as every engine writes them.

        Examples
        --------
        >>> import json
        >>> json.dumps(fit.to_summary(prevalence=0.1))  # doctest: +SKIP
        """
        from bayeslmm.results.summary import assemble_summary

        return assemble_summary(
            method=self.engine,
            n_obs=self.n_obs,
            formula=self.formula,
            family=self.family,
            link=self.link,
            strategy="laplace (nAGQ=1)",
            **self._summary_sections(prevalence=prevalence, case_fraction=case_fraction),
            diagnostics={
                "converged": bool(self.converged),
                "n_iter": int(self.n_iter),
                "n_evals": int(self.n_evals),
                "boundary": self.boundary,
                "messages": list(self.messages),
            },
            timing={"total_s": 0.0, **self.timing},
            extra={
                "kinship": self._kinship_summary(),
                "loglik": {"ml": _num(self.loglik)},
                "deviance": _num(self.deviance),
                "n_parameters": self.n_parameters,
                "aic": _num(self.aic),
                "bic": _num(self.bic),
            },
        )

    def __repr__(self) -> str:
        vc = self.variance_components()[["grp", "var1", "vcov", "sdcor"]]
        return (
            f"LaplaceFit({self.formula!r}, family={self.family}({self.link}), "
            f"n_obs={self.n_obs}, logLik={self.loglik:.4f}, converged={self.converged})\n"
            f"{vc.to_string(index=False)}\n{self.fixed_table.to_string()}"
        )


def _num(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None
