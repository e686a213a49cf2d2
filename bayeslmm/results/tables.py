"""The tables every fit answers, written once against the estimate protocol.

Each function takes an :class:`~bayeslmm.results.estimate.Estimate` (posterior draws or a
point estimate with its covariance) and returns a labelled pandas table whose leading
columns are the same for every engine (:data:`~bayeslmm.results.estimate.COMMON_COLUMNS`:
``estimate, se, ci_low, ci_high``); posterior tables add ArviZ's summary columns after them.

Definitions
-----------
Variance share of random term t (h² for the sole kinship term with one coefficient):

    share_t = v_t / (Σ_s v_s + V_e),    v_t = Σ_jk Σ_t,jk W_t,jk,

with W_t the term's :meth:`~bayeslmm.spec.RandomTerm.variance_weights` at the sample's own
scale (Legarra 2016 for kinship terms: σ_g² (mean diag K − mean K) for an intercept, so h² is
unchanged by K → cK; lme4's between-level variance for iid terms; the mean over observations
of d_iᵀ Σ d_i for random slopes, Johnson 2014). V_e is the mean residual variance over the
observations (Gaussian) or the family's latent-scale residual variance (GLMMs: π²/3 logit,
1 probit, ln(1 + 1/λ̄) + σ²_olre Poisson; Nakagawa, Johnson & Schielzeth 2017). Where the
kinship's scale makes them differ, ``h2_gcta`` gives GCTA's convention (σ_g² at K_ii = 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from bayeslmm.results.estimate import (
    COMMON_COLUMNS,
    POSTERIOR_COLUMNS,
    Draws,
    Estimate,
    Params,
    PosteriorEstimate,
    Quantity,
)

#: Columns of ``variance_components()`` shared by every engine (lme4's VarCorr layout +
#: uncertainty of ``vcov`` and of ``sdcor``).
VARIANCE_COLUMNS = ("grp", "var1", "var2", "vcov", "sdcor", "se", "se_sdcor", "ci_low", "ci_high")


def lme4_name(name: str) -> str:
    """lme4's spelling of a coefficient (``Intercept`` → ``(Intercept)``)."""
    return "(Intercept)" if name == "Intercept" else name


def table(q: Quantity, index: Sequence[Any], prob: float, name: str) -> pd.DataFrame:
    """One row per quantity: the common columns, then a posterior's own summary columns."""
    rows = q.summary(prob)
    columns = list(COMMON_COLUMNS) + (list(POSTERIOR_COLUMNS) if isinstance(q, Draws) else [])
    frame = pd.DataFrame([{c: r[c] for c in columns} for r in rows], columns=columns)
    frame.index = pd.Index([str(i) for i in index], name=name)
    return frame


# ---------------------------------------------------------------------------------------
# variance shares (h²)
# ---------------------------------------------------------------------------------------
def term_labels(spec) -> list[str]:
    """One label per random term: its lme4 ``grp`` (``g``, ``g.1`` for a repeated factor)."""
    return [groups[0] for groups in spec.coefficient_groups()]


def _term_variances(p: Params, spec, scale: str) -> list[np.ndarray]:
    return [
        np.einsum("...jk,jk->...", p.sigma(i), t.variance_weights(scale))
        for i, t in enumerate(spec.terms)
    ]


def _eta_fixed(p: Params, spec) -> np.ndarray:
    X = np.asarray(spec.X, dtype=float)
    eta = p.beta @ X.T if X.shape[1] else np.zeros(p.beta.shape[:-1] + (spec.n_obs,))
    if spec.offset is not None:
        eta = eta + np.asarray(spec.offset, dtype=float)
    return eta


def residual_variance(p: Params, spec) -> np.ndarray:
    """V_e of the shares: Gaussian mean σ_i², or the family's latent-scale variance."""
    if spec.family.is_gaussian:
        return p.residual_variance()
    # λ̄ of a Poisson integrates the random effects at their marginal (unit) scale, as the
    # sampled model's own ``var_residual`` does
    var_random = sum(_term_variances(p, spec, "unit")) if spec.terms else 0.0
    value = spec.family.latent_residual_variance(
        _eta_fixed(p, spec), var_random, p.olre_variance, xp=np
    )
    return np.broadcast_to(np.asarray(value, dtype=float), np.shape(p.olre_variance))


def _shares(p: Params, spec, scale: str) -> np.ndarray:
    variances = _term_variances(p, spec, scale)
    total = residual_variance(p, spec) + sum(variances)
    return np.stack([v / total for v in variances], axis=-1)


def h2_term(spec) -> int | None:
    """Index of the term whose share is called ``h2``: the sole kinship term, when it has
    a single coefficient; None otherwise."""
    kin = [i for i, t in enumerate(spec.terms) if t.kinship is not None]
    if len(kin) == 1 and spec.terms[kin[0]].n_coef == 1:
        return kin[0]
    return None


def _gcta_differs(spec) -> bool:
    i = h2_term(spec)
    if i is None:
        return False
    term = spec.terms[i]
    sample, unit = term.variance_weights("sample"), term.variance_weights("unit")
    return not np.allclose(sample, unit, rtol=1e-6, atol=0.0)


def share_quantity(
    estimate: Estimate, include_residual: bool = False
) -> tuple[list[str], Quantity]:
    """The variance shares as one quantity, with their labels (see :func:`heritability`)."""
    spec = estimate.spec
    labels = term_labels(spec)
    i = h2_term(spec)
    gcta = _gcta_differs(spec)

    def shares(p: Params) -> np.ndarray:
        out = _shares(p, spec, "sample")
        extra = []
        if include_residual:
            extra.append(1.0 - out.sum(axis=-1))
        if i is not None:
            extra.append(out[..., i])
        if gcta:
            extra.append(_shares(p, spec, "unit")[..., i])
        return np.concatenate([out, np.stack(extra, axis=-1)], axis=-1) if extra else out

    index = (
        labels
        + (["residual"] if include_residual else [])
        + (["h2"] if i is not None else [])
        + (["h2_gcta"] if gcta else [])
    )
    return index, estimate.evaluate(shares)


def heritability(estimate: Estimate, prob: float = 0.95) -> pd.DataFrame:
    """Variance share of each random term, ``h2`` for a sole kinship term (and ``h2_gcta``
    where GCTA's K_ii = 1 convention differs): see the module docs.

    Examples
    --------
    >>> # heritability(fit.estimate()).loc["h2", ["estimate", "ci_low", "ci_high"]]
    """
    if not estimate.spec.terms:
        columns = list(COMMON_COLUMNS)
        return pd.DataFrame(columns=columns, index=pd.Index([], name="component"), dtype=float)
    index, q = share_quantity(estimate)
    return table(q, index, prob, "component")


# ---------------------------------------------------------------------------------------
# variance components (lme4's as.data.frame(VarCorr(fit)))
# ---------------------------------------------------------------------------------------
def variance_component_keys(spec) -> list[tuple[str, str | None, str | None]]:
    """The (grp, var1, var2) rows, in lme4's order: per term its variances then its
    covariances; ``olre`` (Poisson observation-level effect); ``Residual`` rows last."""
    keys: list[tuple[str, str | None, str | None]] = []
    for term, groups in zip(spec.terms, spec.coefficient_groups(), strict=True):
        names = [lme4_name(c) for c in term.covariates]
        keys.extend((g, nm, None) for g, nm in zip(groups, names, strict=True))
        if term.correlated:
            for j in range(len(names)):
                for k in range(j + 1, len(names)):
                    keys.append((groups[0], names[j], names[k]))
    if spec.family.has_observation_level_effect:
        keys.append(("olre", "(Intercept)", None))
    if spec.family.is_gaussian:
        env = spec.residual_groups()
        if env is None:
            keys.append(("Residual", None, None))
        else:
            keys.extend(("Residual", label, None) for label in env[0])
    return keys


def variance_components(estimate: Estimate, prob: float = 0.95) -> pd.DataFrame:
    """lme4's ``as.data.frame(VarCorr(fit))`` layout with uncertainty, for any engine.

    Columns ``grp, var1, var2, vcov, sdcor, se, se_sdcor, ci_low, ci_high``: ``vcov`` is the
    variance (covariance) and ``sdcor`` the SD (correlation); for posterior draws both are
    posterior means (so ``sdcor`` is the mean of σ, not the root of the mean of σ²) and
    ``se`` / ``se_sdcor`` are posterior SDs; for point estimates they are delta-method SEs.
    ``ci_low``/``ci_high`` bound ``vcov`` (HDI, or Wald).
    """
    spec = estimate.spec
    keys = variance_component_keys(spec)
    env = spec.residual_groups() if spec.family.is_gaussian else None

    def vcov_sdcor(p: Params) -> np.ndarray:
        vcov, sdcor = [], []
        for t, term in enumerate(spec.terms):
            S = p.sigma(t)
            m = term.n_coef
            for j in range(m):
                vcov.append(S[..., j, j])
                sdcor.append(np.sqrt(np.clip(S[..., j, j], 0.0, None)))
            if term.correlated:
                for j in range(m):
                    for k in range(j + 1, m):
                        vcov.append(S[..., j, k])
                        with np.errstate(invalid="ignore", divide="ignore"):
                            sdcor.append(S[..., j, k] / np.sqrt(S[..., j, j] * S[..., k, k]))
        if spec.family.has_observation_level_effect:
            v = p.olre_variance
            vcov.append(v)
            sdcor.append(np.sqrt(v))
        if spec.family.is_gaussian:
            groups = [None] if env is None else [env[1] == g for g in range(len(env[0]))]
            for rows in groups:
                rows = None if rows is None else np.flatnonzero(rows)
                v = p.residual_variance(rows)
                vcov.append(v)
                sdcor.append(np.sqrt(v))
        return np.stack(vcov + sdcor, axis=-1)

    q = estimate.evaluate(vcov_sdcor)
    k = len(keys)
    rows = q.summary(prob)
    if not isinstance(q, Draws):
        # a variance estimated on its bound (0) has no standard error or Wald interval: the
        # likelihood is not locally quadratic there (lme4 and GCTA print none either)
        variances = [i for i, key in enumerate(keys) if key[2] is None]
        scale = max((abs(rows[i]["estimate"]) for i in variances), default=0.0)
        for i in variances:
            if rows[i]["estimate"] <= 1e-10 * scale:
                for r in (rows[i], rows[k + i]):
                    r.update(se=float("nan"), ci_low=float("nan"), ci_high=float("nan"))
    frame = pd.DataFrame(
        {
            "grp": pd.Series([key[0] for key in keys], dtype=object),
            "var1": pd.Series([key[1] for key in keys], dtype=object),
            "var2": pd.Series([key[2] for key in keys], dtype=object),
            "vcov": [r["estimate"] for r in rows[:k]],
            "sdcor": [r["estimate"] for r in rows[k:]],
            "se": [r["se"] for r in rows[:k]],
            "se_sdcor": [r["se"] for r in rows[k:]],
            "ci_low": [r["ci_low"] for r in rows[:k]],
            "ci_high": [r["ci_high"] for r in rows[:k]],
        },
        columns=list(VARIANCE_COLUMNS),
    )
    return frame


# ---------------------------------------------------------------------------------------
# fixed effects
# ---------------------------------------------------------------------------------------
def fixed_effects(
    estimate: Estimate, prob: float = 0.95, names: Sequence[str] | None = None
) -> pd.DataFrame:
    """One row per fixed effect (index ``term``; ``names`` default to the spec's)."""
    spec = estimate.spec
    names = list(spec.fixed_names) if names is None else list(names)
    if not names:
        columns = list(COMMON_COLUMNS)
        return pd.DataFrame(columns=columns, index=pd.Index([], name="term"), dtype=float)
    return table(estimate.evaluate(lambda p: p.beta), names, prob, "term")


# ---------------------------------------------------------------------------------------
# GLMM heritability on every scale
# ---------------------------------------------------------------------------------------
def scale_quantity(
    estimate: Estimate,
    prevalence: float | None = None,
    case_fraction: float | None = None,
    term: str | None = None,
    link_variance_method: str = "lognormal",
    include_fixed_variance: bool = False,
) -> tuple[list[str], Quantity]:
    """The GLMM heritability scales as one quantity with their labels (``h2_latent``, …);
    see :func:`heritability_scales`."""
    from bayeslmm.results.scales import heritability_scales as scales_at

    spec = estimate.spec
    if spec.family.is_gaussian:
        raise ValueError(
            "Heritability scales are for GLMMs; a Gaussian model's h² is on the data scale "
            "already (fit.heritability())."
        )
    groups = [t.group for t in spec.terms]
    if term is None:
        kin = [t.group for t in spec.terms if t.kinship is not None]
        if len(kin) != 1:
            raise ValueError(
                f"Name the genetic term: term='GROUP' (random terms: {groups}); the default "
                "needs exactly one kinship term."
            )
        term = kin[0]
    if term not in groups:
        raise ValueError(f"term='{term}' is not a random term of the model ({groups}).")
    focal = groups.index(term)
    if prevalence is not None and case_fraction is None:
        case_fraction = float(np.mean(spec.y))
    names: list[str] = []

    def scales(p: Params) -> np.ndarray:
        variances = _term_variances(p, spec, "sample")
        lead = np.shape(p.olre_variance)
        flat = int(np.prod(lead))
        va = np.reshape(variances[focal], flat)
        others = [np.reshape(v, flat) for i, v in enumerate(variances) if i != focal]
        if spec.family.has_observation_level_effect:
            others.append(np.reshape(p.olre_variance, flat))
        eta = np.reshape(_eta_fixed(p, spec), (flat, spec.n_obs))
        h = scales_at(
            va,
            others,
            eta,
            spec.family,
            trials=spec.trials,
            prevalence=prevalence,
            case_fraction=case_fraction,
            link_variance_method=link_variance_method,
            include_fixed_variance=include_fixed_variance,
        )
        names[:] = [f"h2_{k}" for k in h]
        return np.stack([np.reshape(v, lead) for v in h.values()], axis=-1)

    q = estimate.evaluate(scales)
    return names, q


def heritability_scales(
    estimate: Estimate,
    prevalence: float | None = None,
    case_fraction: float | None = None,
    term: str | None = None,
    prob: float = 0.95,
) -> pd.DataFrame:
    """h² of a GLMM's genetic term on the latent, link, observed (and liability) scales.

    The genetic variance is the term's at the sample's scale (as :func:`heritability`); the
    other terms and the observation-level variance make up the rest of the latent variance.
    See :func:`bayeslmm.results.scales.heritability_scales` and docs/glmm_scales.md.
    """
    names, q = scale_quantity(estimate, prevalence, case_fraction, term)
    return table(q, names, prob, "scale")


def posterior_heritability_scales(
    posterior,
    spec,
    term: str | None = None,
    prevalence: float | None = None,
    case_fraction: float | None = None,
    link_variance_method: str = "lognormal",
    include_fixed_variance: bool = False,
):
    """Heritability on every scale for each posterior draw of a bayeslmm GLMM.

    Reads the model's variances (``var_<group>`` / ``cov_<group>``, ``var_olre``) and ``beta``
    and applies :func:`bayeslmm.results.scales.heritability_scales` draw by draw, the genetic
    variance at the sample's kinship scale (as :func:`heritability_scales`).

    Parameters
    ----------
    posterior : xarray.Dataset
        ``idata.posterior`` (dims chain, draw).
    spec : ModelSpec
        The specification the model was built from.
    term : str, optional
        Group of the focal (genetic) term; default: the sole kinship term.
    prevalence, case_fraction, link_variance_method, include_fixed_variance
        As :func:`bayeslmm.results.scales.heritability_scales`; ``case_fraction`` defaults to
        the observed proportion of cases.

    Returns
    -------
    xarray.Dataset
        ``h2_latent``, ``h2_link``, ``h2_observed`` (and ``h2_liability``), dims
        (chain, draw).

    Examples
    --------
    >>> h = posterior_heritability_scales(fit.posterior, fit.spec)  # doctest: +SKIP
    >>> float(h["h2_observed"].mean())  # doctest: +SKIP
    """
    import xarray as xr

    names, q = scale_quantity(
        PosteriorEstimate(posterior, spec),
        prevalence,
        case_fraction,
        term,
        link_variance_method,
        include_fixed_variance,
    )
    return xr.Dataset(
        {name: (("chain", "draw"), q.values[..., i]) for i, name in enumerate(names)},
        coords={"chain": posterior["chain"].values, "draw": posterior["draw"].values},
    )
