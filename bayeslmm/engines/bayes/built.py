"""What every strategy's build returns: :class:`BuiltModel`, the model's coordinates, the
labels of its variance components and the variance shares it reports.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bayeslmm.engines.bayes.basis import SpectralBasis
from bayeslmm.engines.bayes.marginal import MarginalFixedEffects
from bayeslmm.priors import PriorSet
from bayeslmm.spec import ModelSpec


@dataclass(eq=False)
class BuiltModel:
    """A built :class:`pymc.Model` together with what is needed to interpret its draws.

    The :class:`pymc.Model` may be built when it is first asked for (``model_factory``):
    a closed-form sampler never needs it, and importing PyMC and writing its graph cost a
    command-line fit more than its sampling.

    Attributes
    ----------
    model : pymc.Model
        Built on first access when the strategy deferred it (``model_factory``).
    spec : ModelSpec
    strategy : str
        ``"spectral"``, ``"latent"`` or ``"laplace-marginal"``: the name of the
        :class:`~bayeslmm.engines.bayes.strategies.Strategy` that built it.
    priors : PriorSet
    rotation : SpectralBasis or None
        The spectral strategy's eigenbasis.
    components : tuple of str
        Labels of the ``variance_share`` coordinate: the group of each random term and
        ``"residual"``.
    h2_term : str or None
        Group of the term whose share is reported as ``h2`` (the sole kinship term, when it
        is intercept-only), else None.
    observed_name : str
        Name of the observed variable in the model.
    timing : dict
        ``build_s`` and ``eigh_s``.
    marginal_fixed : MarginalFixedEffects or None
        Set when β is integrated out of the sampled model (spectral strategy, default):
        β is then drawn after sampling by
        :func:`~bayeslmm.engines.bayes.conditional.add_posthoc_draws`.
    model_factory : callable or None
        Builds ``model`` on first access (pass ``model=None`` with it).

    Examples
    --------
    >>> import numpy as np, pandas as pd, bayeslmm as bl
    >>> from bayeslmm.engines.bayes import build
    >>> K = bl.Kinship(np.eye(6) * 0.5 + 0.5, [f"i{k}" for k in range(6)])
    >>> df = pd.DataFrame({"y": np.arange(6.0), "id": list(K.ids)})
    >>> built = build(bl.specify("y ~ 1 + (1 | id)", df, kinship={"id": K}))
    >>> built.model_is_built
    False
    >>> sorted(v.name for v in built.model.free_RVs), built.model_is_built
    (['sd_id', 'sigma'], True)
    """

    model: Any
    spec: ModelSpec
    strategy: str
    priors: PriorSet
    rotation: SpectralBasis | None
    components: tuple[str, ...]
    observed_name: str
    h2_term: str | None = None
    timing: dict[str, float] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)
    marginal_fixed: MarginalFixedEffects | None = None
    model_factory: Callable[[], Any] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.model is None and self.model_factory is not None:
            # no instance attribute: the first ``built.model`` goes to __getattr__
            del self.__dict__["model"]

    def __getattr__(self, name: str) -> Any:
        # called only for attributes not found: here, a model not built yet
        factory = self.__dict__.get("model_factory")
        if name != "model" or factory is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        model = factory()
        self.__dict__["model"] = model
        return model

    @property
    def model_is_built(self) -> bool:
        """Whether :attr:`model` exists yet (False until a deferred model is asked for: then
        nobody can have changed it since it was built)."""
        return "model" in self.__dict__


def component_labels(spec: ModelSpec) -> tuple[str, ...]:
    """Labels of the variance components: each random term's group, then ``"residual"``.

    Examples
    --------
    >>> import numpy as np, pandas as pd, bayeslmm as bl
    >>> df = pd.DataFrame({"y": [1.0, 2.0, 0.5, 1.5], "g": ["a", "a", "b", "b"]})
    >>> component_labels(bl.specify("y ~ 1 + (1 | g)", df))
    ('g', 'residual')
    """
    return (*(t.group for t in spec.terms), "residual")


def h2_term(spec: ModelSpec) -> str | None:
    """The group whose variance share is called ``h2``: the sole kinship term, when it has
    a single coefficient (as in the REML engine); None otherwise.

    Examples
    --------
    >>> import numpy as np, pandas as pd, bayeslmm as bl
    >>> df = pd.DataFrame({"y": [1.0, 2.0, 0.5, 1.5], "g": ["a", "a", "b", "b"]})
    >>> h2_term(bl.specify("y ~ 1 + (1 | g)", df)) is None
    True
    """
    kin = spec.kinship_terms
    if len(kin) == 1 and kin[0].n_coef == 1:
        return kin[0].group
    return None


def model_coords(spec: ModelSpec) -> dict[str, Any]:
    """The coordinates every strategy's model starts from: ``fixed``, ``obs``, ``component``,
    each term's ``<g>_level`` / ``<g>_coef`` (``<g>_coef_bis`` with slopes) and
    ``sigma_fixed`` for a sigma formula.

    Examples
    --------
    >>> import pandas as pd, bayeslmm as bl
    >>> df = pd.DataFrame({"y": [1.0, 2.0, 0.5, 1.5], "g": ["a", "a", "b", "b"]})
    >>> sorted(model_coords(bl.specify("y ~ 1 + (1 | g)", df)))
    ['component', 'fixed', 'g_coef', 'g_level', 'obs']
    """
    coords: dict[str, Any] = {
        "fixed": list(spec.fixed_names),
        "obs": np.arange(spec.n_obs),
        "component": list(component_labels(spec)),
    }
    for t in spec.terms:
        coords[f"{t.group}_level"] = list(t.levels)
        coords[f"{t.group}_coef"] = list(t.covariates)
        if t.n_coef > 1:
            coords[f"{t.group}_coef_bis"] = list(t.covariates)
    if spec.sigma_X is not None:
        coords["sigma_fixed"] = list(spec.sigma_names)
    return coords


def add_variance_shares(
    spec: ModelSpec, share_vars: list[Any], var_residual: Any, components: tuple[str, ...]
) -> None:
    """Register ``variance_share`` (dims ``component``) and, when one term is the heritable
    one, ``h2``, inside a model context.

    ``share_vars`` are the terms' variances at the sample's kinship scale, as every results
    table reports them.

    Examples
    --------
    >>> import pandas as pd, pymc as pm, bayeslmm as bl
    >>> df = pd.DataFrame({"y": [1.0, 2.0, 0.5, 1.5], "g": ["a", "a", "b", "b"]})
    >>> spec = bl.specify("y ~ 1 + (1 | g)", df)
    >>> with pm.Model(coords=model_coords(spec)) as m:
    ...     add_variance_shares(spec, [pm.math.constant(1.0)], 3.0, component_labels(spec))
    >>> m["variance_share"].eval().tolist()
    [0.25, 0.75]
    """
    import pymc as pm
    import pytensor.tensor as pt

    model = pm.modelcontext(None)
    total = var_residual + (sum(share_vars) if share_vars else 0.0)
    shares = pt.stack([*share_vars, var_residual]) / total
    pm.Deterministic("variance_share", shares, dims="component")
    h2_group = h2_term(spec)
    if h2_group is not None and "h2" not in model.named_vars:
        pm.Deterministic("h2", shares[components.index(h2_group)])
