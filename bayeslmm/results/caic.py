"""The conditional AIC of a Gaussian REML fit (Greven & Kneib 2010).

The marginal AIC (``reml_fit.aic``) scores the model for a new data set of new
individuals, the random effects integrated out. The conditional AIC scores it for new
records of the *same* individuals, given their predicted effects û: its likelihood is
Σ log N(y_i; ŷ_i, σ̂²) with ŷ = Xβ̂ + Zû, and its penalty is twice the effective degrees of
freedom tr(∂ŷ/∂y) + 1 (Stein's formula), which Greven & Kneib (2010) showed must include
how the variance estimates move with y; without that correction the criterion favours
random effects that are not there. Which to use: docs/questions.md.

The degrees of freedom are computed densely at the REML estimate
(:func:`bayeslmm.engines.gaussian.conditional_aic`; O(n³), for n up to a few thousand).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bayeslmm.errors import SpecificationError
from bayeslmm.results.algebra import gaussian_algebra


@dataclass(frozen=True)
class ConditionalAIC:
    """The conditional AIC of a REML fit.

    Attributes
    ----------
    caic : float
        −2 ``loglik_conditional`` + 2 ``df``.
    df : float
        Effective degrees of freedom: tr(∂ŷ/∂y) (the variance estimates' dependence on y
        included) + 1 for σ².
    loglik_conditional : float
        Σ log N(y_i; ŷ_i, σ̂²), ŷ = Xβ̂ + Zû.
    hat_trace : float
        tr(∂ŷ/∂y) at fixed variances (the correction's baseline).
    dropped : tuple of str
        Covariance parameters at the boundary (a variance at 0 and the covariances of its
        coefficient): constant in y, left out of the correction, as cAIC4 does.
    method : str
        ``"exact"`` or ``"cAIC4"`` (R's cAIC4 1.0 arithmetic).
    """

    caic: float
    df: float
    loglik_conditional: float
    hat_trace: float
    dropped: tuple[str, ...]
    method: str

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)


def conditional_aic(fit: Any, cAIC4: bool = False) -> ConditionalAIC:
    """Greven & Kneib's conditional AIC of a homoscedastic Gaussian REML fit.

    Parameters
    ----------
    fit : RemlFit
    cAIC4 : bool
        Reproduce R's cAIC4 (1.0) instead of the exact derivative: cAIC4 halves one term of
        the derivative of the variance estimates in y, so its df differs from tr(∂ŷ/∂y) + 1
        (0.007 on lme4's sleepstudy with a random intercept).

    Examples
    --------
    >>> # conditional_aic(reml_fit).caic, conditional_aic(reml_fit).df
    """
    if getattr(fit, "engine", None) != "reml":
        raise SpecificationError(
            "The conditional AIC here is for Gaussian REML fits (fit(method='reml')); "
            f"got a {getattr(fit, 'engine', type(fit).__name__)} fit."
        )
    if fit.spec.sigma_X is not None:
        raise SpecificationError(
            "The conditional AIC (Greven & Kneib 2010, R's cAIC4) is defined for one residual "
            f"variance; this model has residual variances by group ({fit.sigma_formula!r})."
        )
    theta = fit.parameters["estimate"].to_numpy(dtype=float)
    out = gaussian_algebra().conditional_aic(fit.spec, theta, cAIC4=cAIC4)
    labels = [
        "|".join(str(v) for v in (row.grp, row.var1, row.var2) if v is not None and v == v)
        for row in fit.parameters.itertuples(index=False)
    ]
    return ConditionalAIC(
        caic=out.caic,
        df=out.df,
        loglik_conditional=out.cll,
        hat_trace=out.hat_trace,
        dropped=tuple(labels[i] for i in out.dropped),
        method="cAIC4" if cAIC4 else "exact",
    )
