"""Leave-one-out cross-validation of a posterior: marginal or conditional, named by its question.

The pointwise log-likelihood that LOO leaves out one observation at a time can be written
two ways for a mixed model, and they answer different questions (docs/questions.md):

- ``kind="marginal"``: log p(y_i | y_−i, θ, β), the random effects integrated out. It asks
  how well the model predicts a *new record* from everything else, relatives included: the
  question behind choosing a kinship, or kinship vs none. For a Gaussian model y ~ N(Xβ, V)
  the leave-one-out density is exact and needs no refit (Sundararajan & Keerthi 2001;
  Bürkner, Gabry & Vehtari 2021, non-factorised models):

      log p(y_i | y_−i, θ, β) = −½ log 2π + ½ log c̄_ii − ½ g_i² / c̄_ii,
      g = V⁻¹(y − Xβ),  c̄ = diag V⁻¹,

  computed per draw from the kinship's cached eigendecomposition for one kinship term (two
  matrix products per block of draws, no factorisation; see
  :func:`bayeslmm.engines.gaussian.marginal_loo_terms`), in closed form when V is diagonal
  or block-diagonal by level (no random term: c̄_ii = 1/σ², g = (y − Xβ)/σ²; one iid
  grouping term: Woodbury's identity level by level), and from a Cholesky factor of V per
  draw otherwise. Pareto-smoothed importance sampling over the draws (ArviZ's ``az.loo``)
  then removes observation i from the posterior of (θ, β).
- ``kind="conditional"``: log p(y_i | u, θ, β), the fitted random effects given. It asks
  how well the model predicts *this individual's next record* given its own effect; with one
  record per individual its importance weights are unstable (large Pareto k), because u_i is
  informed mostly by y_i itself. A Poisson model's observation-level effect is integrated
  out (Gauss–Hermite), so that its density is that of an overdispersed count.

The rotated per-component log-likelihood the spectral strategy can store
(``fit(log_likelihood=True)``) is neither: components of Uᵀy are not observations, and their
"LOO" depends on the kinship used to rotate, so it must not compare models.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from bayeslmm.errors import SpecificationError
from bayeslmm.results.algebra import gaussian_algebra
from bayeslmm.results.estimate import PosteriorEstimate
from bayeslmm.results.predict import GH_NODES, parameter_values, posterior_effects

if TYPE_CHECKING:
    import arviz as az
    import xarray as xr

LOO_KINDS = ("marginal", "conditional")
#: Largest number of observations of the marginal LOO without a shortcut (spectral or
#: block-diagonal V): one Cholesky factor of the n × n V per draw.
DENSE_LIMIT = 5000


def resolve_kind(fit: Any, kind: str | None) -> str:
    """``kind`` checked; None means marginal for Gaussian models, conditional for GLMMs."""
    if kind is None:
        return "marginal" if fit.spec.family.is_gaussian else "conditional"
    if kind not in LOO_KINDS:
        raise SpecificationError(f"kind must be 'marginal' or 'conditional'; got {kind!r}.")
    return kind


def _posterior_fit(fit: Any, what: str) -> None:
    if not isinstance(fit.estimate(), PosteriorEstimate):
        raise SpecificationError(
            f"{what} needs posterior draws; this is a {fit.engine} fit (a point estimate). "
            "Compare REML fits with reml_fit.aic, .bic or .caic(), Laplace fits with .aic."
        )


def pointwise_log_likelihood(fit: Any, kind: str | None = None) -> xr.DataArray:
    """Per draw and observation: the log-likelihood of ``kind`` (dims chain, draw, obs).

    ``attrs["kind"]`` records which one. See the module for the two kinds.

    Examples
    --------
    >>> # ll = pointwise_log_likelihood(fit, "marginal")   # (chain, draw, obs)
    """
    import xarray as xr

    kind = resolve_kind(fit, kind)
    _posterior_fit(fit, "A pointwise log-likelihood")
    spec = fit.spec
    values = parameter_values(fit)
    y = np.asarray(spec.y, dtype=float)
    if kind == "marginal":
        if not spec.family.is_gaussian:
            raise SpecificationError(
                f"The marginal leave-one-out likelihood is exact for Gaussian models only; "
                f"this model's family is {spec.family.name}. Use kind='conditional'."
            )
        algebra = gaussian_algebra()
        shortcut = algebra.spectral_applies(spec) or algebra.blockwise_applies(spec)
        if not shortcut and spec.n_obs > DENSE_LIMIT:
            raise SpecificationError(
                f"The marginal LOO of this model factorises the {spec.n_obs} × {spec.n_obs} V "
                f"once per draw (it is not one kinship term with one residual variance, nor at "
                f"most one iid term, which need no factorisation); above {DENSE_LIMIT} "
                "observations that is too slow. "
                "Use kind='conditional', or thin the draws."
            )
        ll = algebra.marginal_loo_loglik(spec, values.sigmas, values.residual, values.beta)
    else:
        effects = posterior_effects(fit)
        eta = values.beta @ np.asarray(spec.X, float).T
        if spec.offset is not None:
            eta = eta + np.asarray(spec.offset, float)
        for term, u in zip(spec.terms, effects, strict=True):
            eta = eta + np.einsum("nrj,rj->nr", u[:, term.index, :], term.design)
        if spec.family.is_gaussian:
            var = values.residual
            ll = -0.5 * (np.log(2.0 * np.pi * var) + (y - eta) ** 2 / var)
        else:
            ll = _glmm_loglik(spec, eta, values.olre)
    post = fit.posterior
    shape = (post.sizes["chain"], post.sizes["draw"], spec.n_obs)
    return xr.DataArray(
        ll.reshape(shape),
        dims=("chain", "draw", "obs"),
        coords={"chain": post["chain"].values, "draw": post["draw"].values},
        name=spec.response,
        attrs={"kind": kind},
    )


def _glmm_loglik(spec: Any, eta: np.ndarray, olre: np.ndarray) -> np.ndarray:
    """log p(y_i | η_i), a Poisson observation-level effect integrated out by Gauss–Hermite."""
    from scipy import special

    fam = spec.family
    y = np.asarray(spec.y, dtype=float)
    trials = None if spec.trials is None else np.asarray(spec.trials, float)
    if not np.any(olre > 0):
        return fam.loglik(y, eta, trials)
    x, w = special.roots_hermite(GH_NODES // 2)
    logw = np.log(w / np.sqrt(np.pi))
    out = np.empty_like(eta)
    for i in range(eta.shape[0]):  # one draw at a time: rows × nodes
        grid = eta[i][:, None] + np.sqrt(2.0 * olre[i]) * x[None, :]
        out[i] = special.logsumexp(fam.loglik(y[:, None], grid, trials) + logw, axis=1)
    return out


def log_likelihood_data(fit: Any, kind: str | None = None) -> az.InferenceData:
    """An InferenceData with the fit's posterior and a ``log_likelihood`` group of ``kind``
    (per observation; ``attrs["kind"]`` records it), for ``az.loo``/``az.waic``/``az.compare``.

    Examples
    --------
    >>> # az.loo(log_likelihood_data(fit, "marginal"))
    """
    import arviz as az

    ll = pointwise_log_likelihood(fit, kind)
    post = fit.posterior
    # the parameters only (not u or per-observation draws): ArviZ's relative efficiency of
    # the importance weights averages the ESS of every variable it is given
    keep = [
        v
        for v in post.data_vars
        if not any(str(d).endswith("_level") or str(d) == "obs" for d in post[v].dims)
    ]
    return az.InferenceData(
        posterior=post[keep],
        log_likelihood=ll.to_dataset().assign_attrs(kind=ll.attrs["kind"]),
    )


def loo(fit: Any, kind: str | None = None, pointwise: bool = True) -> az.ELPDData:
    """PSIS-LOO (ArviZ's ``az.loo``) of the pointwise log-likelihood of ``kind``.

    The returned ``ELPDData`` holds ArviZ's entries (``elpd_loo``, ``se``, ``p_loo``,
    ``pareto_k``, …) and ``kind``.

    Examples
    --------
    >>> # loo(fit, "marginal")["elpd_loo"]
    """
    import arviz as az

    data = log_likelihood_data(fit, kind)
    with warnings.catch_warnings():
        # ArviZ's Pareto-k warning: the result's pareto_k (and worst k) tell it per point
        warnings.simplefilter("ignore", UserWarning)
        out = az.loo(data, pointwise=pointwise)
    out["kind"] = data.log_likelihood.attrs["kind"]
    return out


def waic(fit: Any, kind: str | None = None, pointwise: bool = True) -> az.ELPDData:
    """WAIC (ArviZ's ``az.waic``) from the same pointwise log-likelihood as :func:`loo`.

    Examples
    --------
    >>> # waic(fit, "marginal")["elpd_waic"]
    """
    import arviz as az

    data = log_likelihood_data(fit, kind)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        out = az.waic(data, pointwise=pointwise)
    out["kind"] = data.log_likelihood.attrs["kind"]
    return out


def loo_summary(elpd: Any) -> dict[str, Any]:
    """summary.json's ``loo``: elpd, se, p_loo, kind, worst Pareto k and the count above 0.7.

    Examples
    --------
    >>> # loo_summary(fit.loo())["elpd"]
    """
    k = np.asarray(elpd["pareto_k"], dtype=float)
    return {
        "elpd": float(elpd["elpd_loo"]),
        "se": float(elpd["se"]),
        "p_loo": float(elpd["p_loo"]),
        "kind": str(elpd["kind"]),
        "pareto_k_max": float(np.max(k)),
        "n_pareto_k_above_0_7": int(np.sum(k > 0.7)),
        "n_draws": int(elpd["n_samples"]),
    }
