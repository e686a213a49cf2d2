"""The fixed effects' normal prior, in the coordinates the model samples them in.

With an intercept and at least one slope the covariates are centred, so the sampled
``beta_centered`` is nearly uncorrelated with the slopes and the intercept prior of
:mod:`bayeslmm.priors` (at centred covariates) applies as written; ``beta`` is the usual
uncentred vector. The spectral strategy integrates β out under the same prior
(:mod:`bayeslmm.engines.bayes.marginal`); the laplace-marginal strategy and the closed-form
GLMM density read it from here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bayeslmm.errors import SpecificationError
from bayeslmm.priors import Prior, PriorSet
from bayeslmm.spec import ModelSpec


def normal_vector(priors: list[Prior], what: str) -> tuple[np.ndarray, np.ndarray]:
    """Means and SDs of independent normal priors; any other family is refused.

    Examples
    --------
    >>> normal_vector([Prior("normal", (0.0, 2.0)), Prior("normal", (1.0, 3.0))], "slopes")
    (array([0., 1.]), array([2., 3.]))
    """
    bad = [p.describe() for p in priors if p.family != "normal"]
    if bad:
        raise SpecificationError(f"Priors of {what} must be ('normal', mu, sigma); got {bad}.")
    mu = np.array([float(p.params[0]) for p in priors])
    sd = np.array([float(p.params[1]) for p in priors])
    return mu, sd


@dataclass(frozen=True, eq=False)
class FixedEffectsPrior:
    """The normal prior of the fixed effects, in the coordinates the model samples them in.

    With an intercept and at least one slope the covariates are centred (the intercept prior
    of :mod:`bayeslmm.priors` is at centred covariates): ``beta_centered`` ~ N(mu, diag(sd²))
    multiplies ``design`` = X − 1 meansᵀ, and the usual β equals ``beta_centered`` except
    β₀ = β₀ᶜ − meansᵀ ``beta_centered``.

    Attributes
    ----------
    mu, sd : ndarray, shape (p,)
        Prior means and SDs of the sampled coefficients.
    design : ndarray, shape (n, p)
        The design matrix they multiply (centred covariates when ``centred``).
    means : ndarray, shape (p,)
        Column means subtracted (0 for the intercept column; all 0 when not centred).
    intercept : int or None
        Column of the intercept.
    centred : bool
        Whether the sampled vector is ``beta_centered`` rather than ``beta``.
    """

    mu: np.ndarray
    sd: np.ndarray
    design: np.ndarray
    means: np.ndarray
    intercept: int | None
    centred: bool

    @property
    def sampled_name(self) -> str:
        """``"beta_centered"`` or ``"beta"``."""
        return "beta_centered" if self.centred else "beta"

    def uncentre(self, beta_sampled: np.ndarray) -> np.ndarray:
        """The usual β from sampled coefficients (last axis = coefficients)."""
        beta = np.array(beta_sampled, dtype=float, copy=True)
        if self.centred:
            beta[..., self.intercept] -= beta @ self.means
        return beta


def fixed_effects_prior(spec: ModelSpec, priors: PriorSet) -> FixedEffectsPrior | None:
    """The fixed effects' normal prior and design as sampled (None without fixed effects).

    Examples
    --------
    >>> import pandas as pd, bayeslmm as bl
    >>> from bayeslmm.priors import resolve_priors
    >>> df = pd.DataFrame({"y": [1.0, 2.0, 0.5, 1.5], "x": [0.0, 1.0, 2.0, 3.0],
    ...                    "g": ["a", "a", "b", "b"]})
    >>> spec = bl.specify("y ~ x + (1 | g)", df)
    >>> fe = fixed_effects_prior(spec, resolve_priors(spec))
    >>> fe.sampled_name, fe.means.tolist()
    ('beta_centered', [0.0, 1.5])
    """
    names = list(spec.fixed_names)
    if not names:
        return None
    plist = [priors.intercept if nm == "Intercept" else priors.slopes[nm] for nm in names]
    mu, sd = normal_vector(plist, "fixed effects")
    X = np.asarray(spec.X, dtype=float)
    k0 = names.index("Intercept") if "Intercept" in names else None
    means = np.zeros(len(names))
    centred = k0 is not None and len(names) > 1
    if centred:
        means = X.mean(axis=0)
        means[k0] = 0.0
    return FixedEffectsPrior(
        mu=mu, sd=sd, design=X - means, means=means, intercept=k0, centred=centred
    )


def sampled_fixed_effects(spec: ModelSpec, priors: PriorSet) -> tuple[Any, np.ndarray | None]:
    """β with its prior, inside a model context; returns (sampled β, the design it multiplies),
    or (None, None) without fixed effects. Registers ``beta`` (and ``beta_centered``)."""
    import pymc as pm
    import pytensor.tensor as pt

    fe = fixed_effects_prior(spec, priors)
    if fe is None:
        return None, None
    if fe.centred:
        beta_c = pm.Normal("beta_centered", mu=fe.mu, sigma=fe.sd, dims="fixed")
        shift = pt.dot(pt.as_tensor(fe.means), beta_c)
        k0 = fe.intercept
        pm.Deterministic("beta", pt.set_subtensor(beta_c[k0], beta_c[k0] - shift), dims="fixed")
        return beta_c, fe.design
    beta = pm.Normal("beta", mu=fe.mu, sigma=fe.sd, dims="fixed")
    return beta, fe.design
