"""The spectral strategy's model: one kinship term, the data rotated by its eigenvectors.

For a Gaussian model with exactly one random term, with a kinship, intercept-only, and one
residual variance, V_g = Z K Zᵀ = U S Uᵀ is diagonalised once outside the graph, so that
Uᵀy | β, θ ~ N(Aβ, D) with A = UᵀX and D = σ_g² S + σ_e² I diagonal. By default
(``fixed_effects="marginal"``) β ~ N(μ_β, Σ_β) is integrated out analytically
(:mod:`bayeslmm.engines.bayes.marginal`): only the variances are sampled, and β and the
breeding values are drawn afterwards from their exact conditionals
(:mod:`bayeslmm.engines.bayes.conditional`). Marginalising β removes the funnel between the
intercept and σ_e that a centred GRM (K·1 = 0) otherwise creates: the intercept is then
informed only by the zero-eigenvalue direction, whose variance is σ_e² alone.
``fixed_effects="joint"`` samples β with the variances instead (the product of n independent
normals, O(n) per gradient).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from bayeslmm.engines.bayes.basis import SpectralBasis, spectral_basis
from bayeslmm.engines.bayes.built import (
    BuiltModel,
    add_variance_shares,
    h2_term,
    model_coords,
)
from bayeslmm.engines.bayes.fixed_effects import sampled_fixed_effects
from bayeslmm.engines.bayes.marginal import marginal_fixed_effects, marginal_likelihood
from bayeslmm.engines.bayes.terms import share_variances, term_cholesky, term_variance
from bayeslmm.priors import PriorSet
from bayeslmm.spec import ModelSpec

if TYPE_CHECKING:
    import pymc as pm


def spectral_obstacles(spec: ModelSpec) -> list[str]:
    """Why the spectral strategy does not apply to ``spec`` (empty when it does).

    Examples
    --------
    >>> import pandas as pd, bayeslmm as bl
    >>> df = pd.DataFrame({"y": [1.0, 2.0, 0.5, 1.5], "g": ["a", "a", "b", "b"]})
    >>> spectral_obstacles(bl.specify("y ~ 1 + (1 | g)", df))
    ['term (1|g) has no kinship']
    """
    reasons = []
    if not spec.family.is_gaussian:
        reasons.append(f"family is {spec.family.name}")
    if len(spec.terms) != 1:
        reasons.append(f"{len(spec.terms)} random terms")
    elif spec.terms[0].kinship is None:
        reasons.append(f"term ({spec.terms[0].label}) has no kinship")
    elif not spec.terms[0].is_intercept_only:
        reasons.append(f"term ({spec.terms[0].label}) has slopes")
    if spec.sigma_X is not None:
        reasons.append("the residual variance has a model (sigma formula)")
    return reasons


def build_spectral(
    spec: ModelSpec, priors: PriorSet, fixed_effects: str = "marginal"
) -> BuiltModel:
    """The spectral strategy's :class:`BuiltModel` (``spec`` must pass
    :func:`spectral_obstacles`).

    Parameters
    ----------
    spec : ModelSpec
    priors : PriorSet
        Resolved priors (:func:`bayeslmm.priors.resolve_priors`).
    fixed_effects : {"marginal", "joint"}
        β integrated out (drawn after sampling) or sampled with the variances.

    Returns
    -------
    BuiltModel

    Examples
    --------
    >>> import numpy as np, pandas as pd, bayeslmm as bl
    >>> from bayeslmm.priors import resolve_priors
    >>> K = bl.Kinship(np.eye(6) * 0.5 + 0.5, [f"i{k}" for k in range(6)])
    >>> df = pd.DataFrame({"y": np.arange(6.0), "id": list(K.ids)})
    >>> spec = bl.specify("y ~ 1 + (1 | id)", df, kinship={"id": K})
    >>> sorted(v.name for v in build_spectral(spec, resolve_priors(spec)).model.free_RVs)
    ['sd_id', 'sigma']
    """
    start = time.perf_counter()
    rotation = spectral_basis(spec.terms[0], data=_rotated_columns(spec))
    coords = {**model_coords(spec), "eigen": np.arange(rotation.values.size)}
    components = tuple(coords["component"])
    obs_name = f"{spec.response}_rotated"
    marginal = None
    if fixed_effects == "marginal":
        marginal = marginal_fixed_effects(spec, priors, rotation)

    def pymc_model() -> pm.Model:
        return _spectral_pymc_model(spec, priors, rotation, coords, obs_name, marginal)

    # With β integrated out (or absent) nutpie samples the closed form (spectral_density),
    # which needs no PyMC graph: build it when asked for (importing PyMC alone costs 1-2 s)
    deferred = fixed_effects == "marginal"
    return BuiltModel(
        model=None if deferred else pymc_model(),
        model_factory=pymc_model if deferred else None,
        spec=spec,
        strategy="spectral",
        priors=priors,
        rotation=rotation,
        components=components,
        h2_term=h2_term(spec),
        observed_name=obs_name,
        timing={"build_s": time.perf_counter() - start, "eigh_s": rotation.eigh_s},
        marginal_fixed=marginal,
    )


def _spectral_pymc_model(
    spec: ModelSpec,
    priors: PriorSet,
    rotation: SpectralBasis,
    coords: dict[str, Any],
    obs_name: str,
    marginal: Any,
) -> pm.Model:
    """The spectral strategy's :class:`pymc.Model` (β sampled when ``marginal`` is None)."""
    import pymc as pm

    components = tuple(coords["component"])
    with pm.Model(coords=coords) as model:
        # the order in which variables are created is the order of the sampler's coordinates:
        # β (when sampled), the share parametrisation, the term, the residual
        beta, design = sampled_fixed_effects(spec, priors) if marginal is None else (None, None)
        given_var, var_residual = None, None
        if priors.uses_shares:
            given_vars, var_residual = share_variances(spec, priors)
            given_var = given_vars[0]
        term = spec.terms[0]
        kind, sd_g = term_cholesky(term, priors, given_var)
        var_g = pm.Deterministic(f"var_{term.group}", sd_g**2)
        share_var = term_variance(term, kind, sd_g, "sample")
        var_residual = _residual_variance(priors, var_residual)
        if marginal is not None:
            marginal_likelihood(obs_name, var_g, var_residual, marginal)
        else:
            _rotated_likelihood(obs_name, spec, rotation, var_g, var_residual, beta, design)
        if rotation.n_null:
            # a low-rank kinship's null-space rows left out: data 0, variance σ_e² each
            import pytensor.tensor as pt

            pm.Potential(
                "low_rank_complement",
                -0.5 * rotation.n_null * (np.log(2.0 * np.pi) + pt.log(var_residual)),
            )
        var_residual = pm.Deterministic("var_residual", var_residual)
        add_variance_shares(spec, [share_var], var_residual, components)
    return _shared_prior_parameters(model)


def _rotated_columns(spec: ModelSpec) -> np.ndarray:
    """Every data column the spectral model rotates: y, X (and the constant its centred
    covariates subtract), the offset. A low-rank kinship's rotation needs them all."""
    columns = [np.asarray(spec.y, dtype=float)[:, None], np.ones((spec.n_obs, 1))]
    if spec.X.shape[1]:
        columns.append(np.asarray(spec.X, dtype=float))
    if spec.offset is not None:
        columns.append(np.asarray(spec.offset, dtype=float)[:, None])
    return np.concatenate(columns, axis=1)


def _residual_variance(priors: PriorSet, var_residual: Any) -> Any:
    """σ_e² from the ``sigma`` prior, or (share parametrisation) the given one, with
    ``sigma`` registered either way."""
    import pymc as pm
    import pytensor.tensor as pt

    if var_residual is None:
        sigma = priors.sigma.to_pymc("sigma")
        return sigma**2
    pm.Deterministic("sigma", pt.sqrt(var_residual))
    return var_residual


def _rotated_likelihood(
    name: str,
    spec: ModelSpec,
    rotation: SpectralBasis,
    var_g: Any,
    var_residual: Any,
    beta: Any,
    design: np.ndarray | None,
) -> None:
    """Uᵀy | β, θ ~ N(Uᵀ(offset + Xβ), σ_g² S + σ_e² I): n independent normals."""
    import pymc as pm
    import pytensor.tensor as pt

    offset = np.zeros(spec.n_obs) if spec.offset is None else np.asarray(spec.offset)
    mu_rot = pt.as_tensor(rotation.rotate(offset))
    if beta is not None:
        mu_rot = mu_rot + pt.dot(pt.as_tensor(rotation.rotate(design)), beta)
    sd_rot = pt.sqrt(var_g * pt.as_tensor(rotation.values) + var_residual)
    observed = rotation.rotate(np.asarray(spec.y))
    pm.Normal(name, mu=mu_rot, sigma=sd_rot, observed=observed, dims="eigen")


def _shared_prior_parameters(model: pm.Model) -> pm.Model:
    """The same model with the priors' parameters as shared scalars instead of constants.

    The default priors scale with the data (e.g. HalfStudentT(3, 2.5 sd y)); as constants
    they are inlined into fused C modules, which PyTensor would compile anew (~2 s) for
    every data set although nothing else in the spectral graph depends on the data.
    """
    import pytensor
    from pymc.model.fgraph import fgraph_from_model, model_from_fgraph
    from pytensor.graph.basic import Constant

    fgraph, _ = fgraph_from_model(model, inlined_views=True)
    for k, node in enumerate(list(fgraph.toposort())):
        if node.op.__class__.__name__.endswith("RV") or hasattr(node.op, "dist_params"):
            rv_name = node.outputs[-1].name or f"node{k}"
            for i, inp in enumerate(node.inputs):
                data = getattr(inp, "data", None)
                if (
                    isinstance(inp, Constant)
                    and isinstance(data, np.ndarray)
                    and data.ndim == 0
                    and data.dtype.kind == "f"
                ):
                    # nutpie passes shared variables by (unique) name
                    param = pytensor.shared(data.copy(), name=f"{rv_name}_prior_param{i}")
                    fgraph.replace(inp, param, import_missing=True)
    return model_from_fgraph(fgraph, mutate_fgraph=True)
