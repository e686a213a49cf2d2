"""Write a :class:`pymc.Model` from a :class:`~bayeslmm.spec.ModelSpec`: :func:`build`.

:func:`build` asks :func:`~bayeslmm.engines.bayes.strategies.choose` for the strategy and
lets it write the model. The pieces live by concept: the spectral basis
(:mod:`~bayeslmm.engines.bayes.basis`), the fixed effects' prior
(:mod:`~bayeslmm.engines.bayes.fixed_effects`), the marginal Gaussian likelihood
(:mod:`~bayeslmm.engines.bayes.marginal`), the random terms
(:mod:`~bayeslmm.engines.bayes.terms`), :class:`BuiltModel`
(:mod:`~bayeslmm.engines.bayes.built`) and one module per strategy
(:mod:`~bayeslmm.engines.bayes.spectral`, :mod:`~bayeslmm.engines.bayes.latent`,
:mod:`~bayeslmm.engines.bayes.laplace_marginal`). The names that used to be defined here are
still importable from here.

Two automatic strategies, one set of parameter names (the opt-in ``"laplace-marginal"``
strategy for GLMMs is described in :mod:`~bayeslmm.engines.bayes.laplace_marginal`):

``"spectral"`` (Gaussian, one intercept-only kinship term, homoscedastic residual)
    The relationship matrix of the observations, V_g = Z K Zᵀ = U S Uᵀ, is diagonalised once
    outside the graph, so that Uᵀy | β, θ ~ N(Aβ, D) with A = UᵀX and D = σ_g² S + σ_e² I
    diagonal. By default (``fixed_effects="marginal"``) β ~ N(μ_β, Σ_β) is integrated out
    analytically: Uᵀy | θ ~ N(Aμ_β, D + A Σ_β Aᵀ), evaluated with the Woodbury identity and
    the matrix determinant lemma in O(n p²) (one p × p Cholesky factor, never an n × n
    matrix). Only the variances are sampled; β and the breeding values are drawn afterwards
    from their exact conditionals β | y, θ and u | y, β, θ
    (:mod:`bayeslmm.engines.bayes.conditional`). Marginalising β removes the funnel between
    the intercept and σ_e that a centred GRM (K·1 = 0) otherwise creates: the intercept is
    then informed only by the zero-eigenvalue direction, whose variance is σ_e² alone.
    ``fixed_effects="joint"`` samples β with the variances instead (the product of n
    independent normals, O(n) per gradient).

``"latent"`` (everything else)
    Non-centred random effects u = U √S z L_Σᵀ with z ~ N(0, I) (q × m), U √S the (optionally
    truncated) eigenbasis of K and L_Σ the Cholesky factor of the m × m covariance of the
    term's coefficients; iid terms use u = z L_Σᵀ. No Cholesky or inverse of K is ever inside
    the sampled graph.

Names in the model (``g`` = grouping factor, e.g. ``id``)
---------------------------------------------------------
free:           ``beta`` (or ``beta_centered`` when the covariates are centred, see below;
                in the spectral strategy only with ``fixed_effects="joint"``: by default
                both are drawn after sampling by
                :func:`~bayeslmm.engines.bayes.conditional.add_posthoc_draws`),
                ``sd_g`` (scalar, or dims ``g_coef``), ``chol_g`` (correlated slopes),
                ``sigma``, ``sigma_coef`` (log-σ regression), ``z_g``, ``sd_olre``, ``z_olre``,
                ``h2`` / ``shares`` and ``total_sd`` / ``total_variance`` (share parametrisation)
deterministic:  ``beta`` (dims ``fixed``), ``var_g``, ``cov_g``/``corr_g`` (slopes),
                ``u_g`` (latent; dims ``g_level, g_coef``), ``var_residual``,
                ``variance_share`` (dims ``component``), ``h2`` (one kinship term)
observed:       the response (dims ``obs``), or ``<response>_rotated`` (dims ``eigen``) for the
                spectral strategy.

The intercept is sampled at centred covariates (``beta_centered``), which decorrelates it
from the slopes and matches the intercept prior of :mod:`bayeslmm.priors`; ``beta`` is the
usual uncentred vector.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from bayeslmm.engines.bayes.basis import SpectralBasis, spectral_basis
from bayeslmm.engines.bayes.built import BuiltModel, component_labels, h2_term, model_coords
from bayeslmm.engines.bayes.fixed_effects import FixedEffectsPrior, fixed_effects_prior
from bayeslmm.engines.bayes.marginal import (
    MAX_UNROLLED_P,
    MarginalFixedEffects,
    marginal_gaussian_logp,
    marginal_gaussian_random,
)
from bayeslmm.engines.bayes.options import (
    FIXED_EFFECTS,
    STRATEGIES,
    FixedEffectsMode,
    StrategyName,
    check_build_options,
)
from bayeslmm.engines.bayes.spectral import spectral_obstacles
from bayeslmm.engines.bayes.strategies import choose
from bayeslmm.priors import resolve_priors
from bayeslmm.spec import ModelSpec

if TYPE_CHECKING:
    import pymc as pm

__all__ = [
    "FIXED_EFFECTS",
    "MAX_UNROLLED_P",
    "STRATEGIES",
    "BuiltModel",
    "FixedEffectsPrior",
    "MarginalFixedEffects",
    "SpectralBasis",
    "build",
    "build_model",
    "choose_strategy",
    "component_labels",
    "fixed_effects_prior",
    "h2_term",
    "marginal_gaussian_logp",
    "marginal_gaussian_random",
    "model_coords",
    "spectral_basis",
    "spectral_obstacles",
]


def choose_strategy(spec: ModelSpec, strategy: StrategyName | str = "auto") -> str:
    """Resolve ``"auto"`` to ``"spectral"`` or ``"latent"``; check a forced choice.

    The name of :func:`~bayeslmm.engines.bayes.strategies.choose`'s strategy.

    Examples
    --------
    >>> import numpy as np, pandas as pd, bayeslmm as bl
    >>> df = pd.DataFrame({"y": [1.0, 2.0, 0.5, 1.5], "g": ["a", "a", "b", "b"]})
    >>> choose_strategy(bl.specify("y ~ 1 + (1 | g)", df))
    'latent'
    """
    return choose(spec, strategy).name


def build(
    spec: ModelSpec,
    strategy: StrategyName | str = "auto",
    rank_share: float | None = None,
    priors: dict[str, Any] | None = None,
    fixed_effects: FixedEffectsMode = "marginal",
) -> BuiltModel:
    """Build the PyMC model for ``spec``.

    Parameters
    ----------
    spec : ModelSpec
        From :func:`bayeslmm.specify`.
    strategy : {"auto", "spectral", "latent", "laplace-marginal"}
        ``"auto"`` takes the spectral strategy whenever it applies, else the latent one.
        ``"laplace-marginal"`` (experimental, opt-in; Poisson / logit-binomial with
        intercept-only terms) integrates the latent field out by a Laplace approximation and
        samples only the SDs (see :mod:`bayeslmm.engines.bayes.laplace_marginal`); its former
        name ``"laplace"`` still works, with a :class:`DeprecationWarning`. See
        :mod:`bayeslmm.engines.bayes.strategies`.
    rank_share : float, optional
        Latent strategy: keep the leading eigenvectors of each kinship holding this share of
        its trace (e.g. 0.99); default all with a positive eigenvalue.
    priors : dict, optional
        Prior overrides (see :mod:`bayeslmm.priors`); default ``spec.priors``.
    fixed_effects : {"marginal", "joint"}
        Spectral strategy only: ``"marginal"`` integrates β out of the sampled model (it is
        drawn afterwards from β | y, θ; see
        :func:`~bayeslmm.engines.bayes.conditional.add_posthoc_draws`); ``"joint"`` samples
        β together with the variances. Same posterior; the marginal form has no
        intercept–σ_e funnel with centred kinships. Ignored by the latent strategy.

    Returns
    -------
    BuiltModel
        ``.model`` is the :class:`pymc.Model`.

    Examples
    --------
    >>> import numpy as np, pandas as pd, bayeslmm as bl
    >>> rng = np.random.default_rng(0)
    >>> K = bl.Kinship(np.eye(6) * 0.5 + 0.5, [f"i{k}" for k in range(6)])
    >>> df = pd.DataFrame({"y": rng.normal(size=6), "id": list(K.ids)})
    >>> built = build(bl.specify("y ~ 1 + (1 | id)", df, kinship={"id": K}))
    >>> built.strategy, sorted(v.name for v in built.model.free_RVs)
    ('spectral', ['sd_id', 'sigma'])
    >>> sorted(v.name for v in build(built.spec, fixed_effects="joint").model.free_RVs)
    ['beta', 'sd_id', 'sigma']
    """
    start = time.perf_counter()
    # checked in this order: the strategy, the options, then the priors (the strategy's own
    # conditions on the priors when it builds)
    strategy_obj = choose(spec, strategy)
    check_build_options(fixed_effects, rank_share)
    prior_set = resolve_priors(spec, priors)
    built = strategy_obj.build(spec, prior_set, rank_share=rank_share, fixed_effects=fixed_effects)
    built.timing["build_s"] = time.perf_counter() - start
    return built


def build_model(
    spec: ModelSpec,
    strategy: StrategyName | str = "auto",
    rank_share: float | None = None,
    priors: dict[str, Any] | None = None,
    fixed_effects: FixedEffectsMode = "marginal",
) -> pm.Model:
    """Build and return only the :class:`pymc.Model` (see :func:`build` for the options).

    Examples
    --------
    >>> import pandas as pd, bayeslmm as bl
    >>> df = pd.DataFrame({"y": [1.0, 2.0, 0.5, 1.5], "g": ["a", "a", "b", "b"]})
    >>> model = build_model(bl.specify("y ~ 1 + (1 | g)", df))
    >>> model.named_vars_to_dims["u_g"]
    ('g_level', 'g_coef')
    """
    return build(
        spec, strategy=strategy, rank_share=rank_share, priors=priors, fixed_effects=fixed_effects
    ).model
