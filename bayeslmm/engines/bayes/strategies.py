"""The NUTS strategies, each one object behind one interface, chosen in one place.

A :class:`Strategy` answers four questions about a model:

``applies(spec)``
    Why it does not apply (an empty list when it does).
``build(spec, priors, ...)``
    The :class:`~bayeslmm.engines.bayes.built.BuiltModel` (the :class:`pymc.Model` and what
    is needed to read its draws).
``closed_form(built)``
    The hand-written log posterior that nutpie samples instead of compiling the PyMC graph,
    or None when there is none for this model.
``posthoc(built, idata)``
    The draws added after sampling: what the sampled model integrated out.

:func:`choose` turns a requested name (``"auto"`` or a strategy's name) into a strategy;
:func:`strategy_of` gives back the strategy that built a model. The strategies:

=====================  ====================================================================
``"spectral"``          Gaussian, one intercept-only kinship term, one residual variance:
                        the data rotated by the eigenvectors of Z K Zᵀ, β integrated out,
                        β (and on request u) drawn afterwards from their exact conditionals.
``"latent"``            everything else: every random effect sampled, non-centred.
``"laplace-marginal"``  opt-in (never chosen by ``"auto"``), GLMMs with intercept-only terms:
                        the latent field integrated out by a Laplace approximation, β and u
                        drawn afterwards from that Gaussian approximation.
``"sparse-pedigree"``   Gaussian animal model with a sparse pedigree kinship (tried first):
                        independent draws from the exact marginal posterior of the
                        variances (sparse factorisations), β and u from their conditionals;
                        ``"sparse-pedigree-nuts"``: NUTS on the Mendelian-sampling
                        parametrisation (GLMMs by ``"auto"``; Gaussian when asked for).
=====================  ====================================================================

Examples
--------
>>> import pandas as pd, bayeslmm as bl
>>> df = pd.DataFrame({"y": [1.0, 2.0, 0.5, 1.5], "g": ["a", "a", "b", "b"]})
>>> spec = bl.specify("y ~ 1 + (1 | g)", df)
>>> choose(spec).name
'latent'
>>> get_strategy("spectral").applies(spec)
['term (1|g) has no kinship']
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

from bayeslmm.engines.bayes.built import BuiltModel
from bayeslmm.engines.bayes.conditional import (
    add_posthoc_draws,
    conditional_breeding_values,
    rotated_log_likelihood,
)
from bayeslmm.engines.bayes.laplace_marginal import (
    REQUIREMENT as LAPLACE_MARGINAL_REQUIREMENT,
)
from bayeslmm.engines.bayes.laplace_marginal import (
    add_laplace_draws,
    build_laplace_marginal,
    laplace_obstacles,
)
from bayeslmm.engines.bayes.latent import build_latent
from bayeslmm.engines.bayes.options import FixedEffectsMode, StrategyName, strategy_name
from bayeslmm.engines.bayes.pedigree import REQUIREMENT as PEDIGREE_REQUIREMENT
from bayeslmm.engines.bayes.pedigree import (
    build_pedigree,
    draw_marginal_posterior,
    marginal_breeding_values,
    pedigree_obstacles,
    pedigree_posterior_predictive,
)
from bayeslmm.engines.bayes.predictive import (
    laplace_posterior_predictive,
    pymc_posterior_predictive,
    spectral_posterior_predictive,
)
from bayeslmm.engines.bayes.spectral import build_spectral, spectral_obstacles
from bayeslmm.errors import SpecificationError
from bayeslmm.priors import PriorSet
from bayeslmm.spec import ModelSpec

if TYPE_CHECKING:
    import arviz as az

    from bayeslmm.engines.bayes.glmm_density import GLMMDensity
    from bayeslmm.engines.bayes.glmm_terms import MultiTermDensity
    from bayeslmm.engines.bayes.spectral_density import SpectralDensity


class Strategy(ABC):
    """One way of writing and sampling a model with NUTS.

    Attributes
    ----------
    name : str
        The name users pass as ``strategy=`` and ``BuiltModel.strategy`` records.
    requirement : str
        What the strategy needs, in words (the start of the error when it does not apply).
    automatic : bool
        Whether ``strategy="auto"`` may choose it.
    """

    name: ClassVar[str]
    requirement: ClassVar[str]
    automatic: ClassVar[bool] = True

    @abstractmethod
    def applies(self, spec: ModelSpec, priors: PriorSet | None = None) -> list[str]:
        """Why the strategy does not apply to ``spec`` (and ``priors``, when given); empty
        when it does."""

    def check(self, spec: ModelSpec, priors: PriorSet | None = None) -> None:
        """Raise :class:`~bayeslmm.errors.SpecificationError` naming every obstacle, with
        what to use instead.

        Examples
        --------
        >>> import pandas as pd, bayeslmm as bl
        >>> df = pd.DataFrame({"y": [1.0, 2.0, 0.5, 1.5], "g": ["a", "a", "b", "b"]})
        >>> get_strategy("latent").check(bl.specify("y ~ 1 + (1 | g)", df)) is None
        True
        """
        reasons = self.applies(spec, priors)
        if reasons:
            raise SpecificationError(
                f"{self.requirement}; here: {'; '.join(reasons)}. Use strategy='latent'."
            )

    @abstractmethod
    def build(
        self,
        spec: ModelSpec,
        priors: PriorSet,
        *,
        rank_share: float | None = None,
        fixed_effects: FixedEffectsMode = "marginal",
    ) -> BuiltModel:
        """The model of ``spec`` with resolved ``priors`` (options checked by the caller,
        :func:`bayeslmm.engines.bayes.build`)."""

    def closed_form(self, built: BuiltModel) -> Any | None:
        """The closed-form log posterior nutpie samples for ``built``, or None (then nutpie
        compiles the PyMC graph). A model changed after building has none."""
        return None

    def nutpie_model(self, built: BuiltModel) -> Any:
        """What ``nutpie.sample`` runs: the closed form when there is one, else the PyMC
        graph compiled with numba."""
        import nutpie

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return nutpie.compile_pymc_model(built.model)

    def posthoc(
        self, built: BuiltModel, idata: az.InferenceData, seed: Any = None
    ) -> az.InferenceData:
        """Add to ``idata.posterior`` (in place) the draws of what the sampled model
        integrated out; nothing by default."""
        return idata

    #: Whether the strategy draws its posterior itself (:meth:`draw`) instead of by NUTS.
    draws_directly: ClassVar[bool] = False

    def draw(self, built: BuiltModel, *, draws: int, chains: int, seed: Any) -> Any:
        """The posterior drawn without NUTS (strategies with :attr:`draws_directly`)."""
        raise NotImplementedError(f"The {self.name} strategy is sampled by NUTS.")

    def check_log_likelihood(self) -> None:
        """Raise :class:`~bayeslmm.errors.SpecificationError` when a fit cannot store the
        pointwise log-likelihood (asked before sampling, so that no run is wasted); every
        strategy that writes the likelihood on the data has one."""
        return None

    def add_log_likelihood(self, built: BuiltModel, idata: az.InferenceData) -> None:
        """Add the ``log_likelihood`` group (per observation) to ``idata``."""
        import pymc as pm

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pm.compute_log_likelihood(idata, model=built.model, progressbar=False)

    def breeding_value_sampler(self, built: BuiltModel) -> Callable[..., Any] | None:
        """``(posterior, seed) -> DataArray`` drawing the random effects a fit of ``built``
        did not sample, or None when they are in the posterior already."""
        return None

    def posterior_predictive_sampler(self, built: BuiltModel) -> Callable[..., Any]:
        """``(posterior, seed, variables=None) -> Dataset``: one replicate of the observed
        data per posterior draw (:mod:`bayeslmm.engines.bayes.predictive`); by default
        :func:`pymc.sample_posterior_predictive` on the model, whose likelihood is on the
        observations.

        Examples
        --------
        >>> import pandas as pd, bayeslmm as bl
        >>> from bayeslmm.engines.bayes import build
        >>> df = pd.DataFrame({"y": [1.0, 2.0, 0.5, 1.5], "g": ["a", "a", "b", "b"]})
        >>> built = build(bl.specify("y ~ 1 + (1 | g)", df))
        >>> strategy_of(built).posterior_predictive_sampler(built).func.__name__
        'pymc_posterior_predictive'
        """
        return partial(pymc_posterior_predictive, built)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class SpectralStrategy(Strategy):
    """Rotate by the eigenvectors of Z K Zᵀ; sample only the variances
    (:mod:`bayeslmm.engines.bayes.spectral`).

    Examples
    --------
    >>> SpectralStrategy().name
    'spectral'
    """

    name = "spectral"
    requirement = (
        "The spectral strategy needs a Gaussian model with exactly one random term, with a "
        "kinship, intercept-only, and one residual variance"
    )

    def applies(self, spec: ModelSpec, priors: PriorSet | None = None) -> list[str]:
        return spectral_obstacles(spec)

    def build(
        self,
        spec: ModelSpec,
        priors: PriorSet,
        *,
        rank_share: float | None = None,
        fixed_effects: FixedEffectsMode = "marginal",
    ) -> BuiltModel:
        return build_spectral(spec, priors, fixed_effects)

    def closed_form(self, built: BuiltModel) -> SpectralDensity | None:
        # imported here: the closed forms load numba, which building a model does not need
        from bayeslmm.engines.bayes.spectral_density import closed_form_applies, spectral_density

        if not closed_form_applies(built):
            return None
        return spectral_density(built)

    def nutpie_model(self, built: BuiltModel) -> Any:
        from bayeslmm.engines.bayes.spectral_density import nutpie_model

        density = self.closed_form(built)
        if density is None:
            return super().nutpie_model(built)
        return nutpie_model(density)

    def posthoc(
        self, built: BuiltModel, idata: az.InferenceData, seed: Any = None
    ) -> az.InferenceData:
        """β drawn from β | y, θ for every draw (when it was integrated out)."""
        return add_posthoc_draws(built, idata, seed=seed)

    def add_log_likelihood(self, built: BuiltModel, idata: az.InferenceData) -> None:
        if built.marginal_fixed is None:
            super().add_log_likelihood(built, idata)
            return
        # the model's observed node is the joint density of Uᵀy; store the per-component
        # log-likelihood given the drawn β instead (same layout as when β is sampled)
        loglik = rotated_log_likelihood(built, idata.posterior)
        idata.add_groups(log_likelihood=loglik.to_dataset())

    def breeding_value_sampler(self, built: BuiltModel) -> Callable[..., Any] | None:
        """u | y, θ for every posterior draw (the exact conditional)."""
        return partial(conditional_breeding_values, built)

    def posterior_predictive_sampler(self, built: BuiltModel) -> Callable[..., Any]:
        """offset + Xβ + Zu + e per draw, u from its exact conditional (and Uᵀ of it for
        the rotated observed node)."""
        return partial(spectral_posterior_predictive, built)


class LatentStrategy(Strategy):
    """Sample every random effect, non-centred (:mod:`bayeslmm.engines.bayes.latent`).

    Examples
    --------
    >>> LatentStrategy().automatic
    True
    """

    name = "latent"
    requirement = "The latent strategy applies to every model"

    def applies(self, spec: ModelSpec, priors: PriorSet | None = None) -> list[str]:
        return []

    def build(
        self,
        spec: ModelSpec,
        priors: PriorSet,
        *,
        rank_share: float | None = None,
        fixed_effects: FixedEffectsMode = "marginal",
    ) -> BuiltModel:
        return build_latent(spec, priors, rank_share)

    def closed_form(self, built: BuiltModel) -> GLMMDensity | MultiTermDensity | None:
        """The one-kinship-term GLMM density when it applies, else the multi-term one
        (several terms, iid factors or random slopes), else None."""
        # imported here: the closed forms load numba, which building a model does not need
        from bayeslmm.engines.bayes.glmm_density import glmm_closed_form_applies, glmm_density
        from bayeslmm.engines.bayes.glmm_terms import multiterm_density, multiterm_obstacles

        if glmm_closed_form_applies(built):
            return glmm_density(built)
        if not multiterm_obstacles(built):
            return multiterm_density(built)
        return None

    def nutpie_model(self, built: BuiltModel) -> Any:
        from bayeslmm.engines.bayes import glmm_density, glmm_terms

        density = self.closed_form(built)
        if density is None:
            return super().nutpie_model(built)
        module = glmm_terms if isinstance(density, glmm_terms.MultiTermDensity) else glmm_density
        return module.nutpie_model(density, built.model.coords)


class LaplaceMarginalStrategy(Strategy):
    """GLMMs: the latent field integrated out by a Laplace approximation, NUTS on the
    variances (:mod:`bayeslmm.engines.bayes.laplace_marginal`). Opt-in.

    Examples
    --------
    >>> LaplaceMarginalStrategy().automatic
    False
    """

    name = "laplace-marginal"
    requirement = LAPLACE_MARGINAL_REQUIREMENT
    automatic = False

    def applies(self, spec: ModelSpec, priors: PriorSet | None = None) -> list[str]:
        return laplace_obstacles(spec, priors)

    def build(
        self,
        spec: ModelSpec,
        priors: PriorSet,
        *,
        rank_share: float | None = None,
        fixed_effects: FixedEffectsMode = "marginal",
    ) -> BuiltModel:
        return build_laplace_marginal(spec, priors)

    def posthoc(
        self, built: BuiltModel, idata: az.InferenceData, seed: Any = None
    ) -> az.InferenceData:
        """β and u drawn from the Laplace approximation of p(β, u | y, v) for every draw."""
        return add_laplace_draws(built, idata, seed=seed)

    def check_log_likelihood(self) -> None:
        raise SpecificationError(
            "The laplace-marginal strategy has no pointwise log-likelihood (the latent field "
            "is integrated out); use strategy='latent' for LOO / WAIC."
        )

    def add_log_likelihood(self, built: BuiltModel, idata: az.InferenceData) -> None:
        self.check_log_likelihood()

    def posterior_predictive_sampler(self, built: BuiltModel) -> Callable[..., Any]:
        """y from the family given η = Xβ + Σ Z u (+ e), drawn from the Laplace
        approximation of the latent field."""
        return partial(laplace_posterior_predictive, built)


class SparsePedigreeStrategy(Strategy):
    """The Gaussian animal model on a sparse pedigree: the variances drawn independently from
    their exact marginal posterior (every animal integrated out by sparse factorisations of
    Henderson's equations), β from β | y, θ and, on request, the breeding values from
    u | y, β, θ (:mod:`bayeslmm.engines.bayes.pedigree_marginal`). A is never formed.

    Examples
    --------
    >>> SparsePedigreeStrategy().name, SparsePedigreeStrategy().draws_directly
    ('sparse-pedigree', True)
    """

    name = "sparse-pedigree"
    requirement = PEDIGREE_REQUIREMENT
    draws_directly = True

    def applies(self, spec: ModelSpec, priors: PriorSet | None = None) -> list[str]:
        return pedigree_obstacles(spec)

    def build(
        self,
        spec: ModelSpec,
        priors: PriorSet,
        *,
        rank_share: float | None = None,
        fixed_effects: FixedEffectsMode = "marginal",
    ) -> BuiltModel:
        return build_pedigree(spec, priors, self.name)

    def draw(self, built: BuiltModel, *, draws: int, chains: int, seed: Any) -> Any:
        return draw_marginal_posterior(built, draws=draws, chains=chains, seed=seed)

    def check_log_likelihood(self) -> None:
        raise SpecificationError(
            f"The {self.name} strategy does not store pointwise log-likelihoods yet; for "
            "LOO / WAIC of a small pedigree give the dense kinship pedigree_relationship(ped)."
        )

    def add_log_likelihood(self, built: BuiltModel, idata: az.InferenceData) -> None:
        self.check_log_likelihood()

    def breeding_value_sampler(self, built: BuiltModel) -> Callable[..., Any] | None:
        """u | y, β, θ for every posterior draw (one sparse factorisation each)."""
        return partial(marginal_breeding_values, built)

    def posterior_predictive_sampler(self, built: BuiltModel) -> Callable[..., Any]:
        """offset + Xβ + Zu + e per draw, with the draws' β and u."""
        return partial(pedigree_posterior_predictive, built)


class SparsePedigreeNutsStrategy(SparsePedigreeStrategy):
    """NUTS on the non-centred Mendelian-sampling parametrisation of every animal's value,
    O(N) per gradient (:mod:`bayeslmm.engines.bayes.pedigree_density`): the animal model
    with a Gaussian (opt-in: the exact strategy above is chosen first, as NUTS mixes
    poorly for h² there, docs/animal_model.md), Poisson or binomial family.

    Examples
    --------
    >>> SparsePedigreeNutsStrategy().draws_directly
    False
    """

    name = "sparse-pedigree-nuts"
    draws_directly = False

    def applies(self, spec: ModelSpec, priors: PriorSet | None = None) -> list[str]:
        return pedigree_obstacles(spec, gaussian=False)

    def closed_form(self, built: BuiltModel) -> Any:
        # imported here: the closed form loads numba, which choosing a strategy does not need
        from bayeslmm.engines.bayes.pedigree_density import (
            pedigree_density,
            pedigree_glmm_density,
        )

        if built.spec.family.is_gaussian:
            return pedigree_density(built)
        return pedigree_glmm_density(built)

    def check_log_likelihood(self) -> None:
        raise SpecificationError(
            f"The {self.name} strategy does not store pointwise log-likelihoods yet; for "
            "LOO / WAIC of a small pedigree give the dense kinship pedigree_relationship(ped)."
        )

    def posterior_predictive_sampler(self, built: BuiltModel) -> Callable[..., Any]:
        """offset + Xβ + Zu + e per draw (Gaussian); GLMMs have none yet."""
        if built.spec.family.is_gaussian:
            return partial(pedigree_posterior_predictive, built)
        return partial(_no_glmm_replicates, built.spec.family.name)

    def nutpie_model(self, built: BuiltModel) -> Any:
        from bayeslmm.engines.bayes.built import model_coords
        from bayeslmm.engines.bayes.pedigree_density import nutpie_model

        return nutpie_model(self.closed_form(built), model_coords(built.spec))

    def breeding_value_sampler(self, built: BuiltModel) -> Callable[..., Any] | None:
        """None: ``u_<group>`` is in the posterior (up to the stored-levels limit), else
        drawn from u | y, β, θ as the marginal strategy does."""
        from bayeslmm.engines.bayes.pedigree_density import STORED_LEVELS_LIMIT

        if built.spec.terms[0].n_levels <= STORED_LEVELS_LIMIT:
            return None
        if not built.spec.family.is_gaussian:
            return partial(_no_glmm_replicates, built.spec.family.name)
        return partial(marginal_breeding_values, built)


def _no_glmm_replicates(family: str, *args: Any, **kwargs: Any) -> Any:
    raise SpecificationError(
        f"A sparse-pedigree NUTS fit of a {family} model has no replicated data, and no "
        "breeding values when it has more levels than it stores (bayeslmm.engines.bayes."
        "pedigree_density.STORED_LEVELS_LIMIT); these need the dense kinship for now."
    )


#: Every strategy, by name, in the order ``"auto"`` tries them.
STRATEGY_REGISTRY: dict[str, Strategy] = {
    s.name: s
    for s in (
        SparsePedigreeStrategy(),
        SparsePedigreeNutsStrategy(),
        SpectralStrategy(),
        LatentStrategy(),
        LaplaceMarginalStrategy(),
    )
}


def get_strategy(name: StrategyName | str) -> Strategy:
    """The strategy called ``name`` (a former name warns and is translated).

    Examples
    --------
    >>> get_strategy("latent")
    LatentStrategy()
    """
    current = strategy_name(name)
    if current == "auto":
        raise SpecificationError(
            "'auto' is a choice, not a strategy; call choose(spec, 'auto') to resolve it."
        )
    return STRATEGY_REGISTRY[current]


def choose(
    spec: ModelSpec, requested: StrategyName | str = "auto", priors: PriorSet | None = None
) -> Strategy:
    """The strategy that fits ``spec``: the first automatic one that applies for
    ``"auto"``, else the one named, checked against ``spec`` (and ``priors``, when given).

    Parameters
    ----------
    spec : ModelSpec
    requested : {"auto", "spectral", "latent", "laplace-marginal"}
        ``"laplace"``, the former name of ``"laplace-marginal"``, is accepted with a
        :class:`DeprecationWarning`.
    priors : PriorSet, optional
        Checked too where a strategy depends on them (laplace-marginal refuses the share
        parametrisation); otherwise checked when the model is built.

    Returns
    -------
    Strategy

    Raises
    ------
    SpecificationError
        For an unknown name, or a named strategy that does not apply (every reason named).

    Examples
    --------
    >>> import numpy as np, pandas as pd, bayeslmm as bl
    >>> K = bl.Kinship(np.eye(4) * 0.5 + 0.5, ["a", "b", "c", "d"])
    >>> df = pd.DataFrame({"y": [1.0, 2.0, 0.5, 1.5], "id": ["a", "b", "c", "d"]})
    >>> choose(bl.specify("y ~ 1 + (1 | id)", df, kinship={"id": K})).name
    'spectral'
    """
    name = strategy_name(requested)
    if name == "auto":
        # the latent strategy applies to every model, so one is always found
        return next(
            s for s in STRATEGY_REGISTRY.values() if s.automatic and not s.applies(spec, priors)
        )
    strategy = STRATEGY_REGISTRY[name]
    strategy.check(spec, priors)
    return strategy


def strategy_of(built: BuiltModel) -> Strategy:
    """The strategy that built ``built``.

    Examples
    --------
    >>> import pandas as pd, bayeslmm as bl
    >>> from bayeslmm.engines.bayes import build
    >>> df = pd.DataFrame({"y": [1.0, 2.0, 0.5, 1.5], "g": ["a", "a", "b", "b"]})
    >>> strategy_of(build(bl.specify("y ~ 1 + (1 | g)", df))).name
    'latent'
    """
    try:
        return STRATEGY_REGISTRY[built.strategy]
    except KeyError:
        raise SpecificationError(
            f"Unknown strategy '{built.strategy}' on the built model; build it with "
            f"bayeslmm.engines.bayes.build (strategies: {tuple(STRATEGY_REGISTRY)})."
        ) from None
