"""summary.json of multi-trait fits, and their results folders.

A multi-trait fit (``mvbind(y1, y2) ~ x + (1 | id)``; REML, NUTS, or the latent-scale
multi-trait GLMM) writes the single-trait layout of ``docs/summary_json.md`` (the same
top-level keys, the same ENTRY keys, lme4's VarCorr rows) read trait by trait, plus keys of
its own:

* ``heritability``: trait → ENTRY (the sample-scale h² of each trait; GLMM: link scale);
* ``variance_components``: lme4's ``as.data.frame(VarCorr(fit))`` of a multivariate model,
  ``grp`` the grouping factor (``"id"``) or ``"Residual"``, ``var1`` a trait, ``var2``
  ``None`` for a variance and the other trait for a covariance (``sdcor`` then the
  correlation); per group the variances first, then the covariances;
* ``fixed_effects``: ``"trait:term"`` → ENTRY (``"y1:Intercept"``, ``"y2:x"``);
* ``traits`` (formula order), ``n_records`` (trait → recorded values), ``families`` (trait
  → ``{"family", "link"}``);
* ``genetic_correlation``, ``residual_correlation``: ``"y1:y2"`` → ENTRY;
* ``genetic_covariance``, ``residual_covariance``: trait → trait → ENTRY (the whole
  symmetric matrix: ``summary["genetic_covariance"]["y1"]["y2"]["estimate"]``); ``None``
  where the model has no such parameter (a logit or Poisson trait's residual covariances).

``save`` adds ``inputs`` (the model's data, kinship and each trait's family,
:mod:`bayeslmm.results.inputs`) unless ``inputs=False``; ``bl.load_fit`` reads the folder back.

The numbers are those of the fit's own tables (:meth:`genetic_correlation`,
:meth:`heritability`, ...): REML ENTRYs are estimate, delta-method SE and Wald interval;
NUTS ENTRYs posterior summaries (:func:`~bayeslmm.results.summary.posterior_summary`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from bayeslmm.results.multitrait_layout import vech_index, wald_z
from bayeslmm.results.summary import assemble_summary, posterior_summary

__all__ = ["bayes_summary", "reml_summary", "save_bayes", "save_reml"]

#: File name of the r_g posterior plot a NUTS multi-trait fit writes beside posterior.nc.
RG_PLOT = "rg_posterior.png"


# -- entries ---------------------------------------------------------------------------------
def _point_entry(estimate: float, se: float, prob: float) -> dict[str, Any]:
    """REML ENTRY: estimate, delta-method SE, Wald interval."""
    z = wald_z(prob)
    return {
        "estimate": float(estimate),
        "se": float(se),
        "ci_low": float(estimate - z * se),
        "ci_high": float(estimate + z * se),
        "ci_prob": float(prob),
    }


def _posterior_entry(draws: np.ndarray, prob: float) -> dict[str, Any]:
    """NUTS ENTRY: the common keys (posterior mean, SD, HDI), then the posterior's own.

    A quantity constant up to rounding (a logit trait's latent h², 1 by construction) is
    summarised as the constant it is: ESS and R-hat ``None``, not noise divided by noise.
    """
    draws = np.asarray(draws, dtype=float)
    if np.ptp(draws) <= 1e-12 * max(1.0, float(np.max(np.abs(draws)))):
        draws = np.full_like(draws, float(np.mean(draws)))
    s = posterior_summary(draws, hdi_prob=prob)
    common = {
        "estimate": s["mean"],
        "se": s["sd"],
        "ci_low": s["hdi_low"],
        "ci_high": s["hdi_high"],
        "ci_prob": float(prob),
    }
    return {**common, **s}


def _limit_ess(entries: Any, limit: float) -> None:
    """Cap every ``ess_bulk``/``ess_tail`` in nested ENTRY dicts at ``limit`` (in place): an
    importance-sampled posterior has no more effective draws than its importance ESS."""
    if limit == float("inf"):
        return
    if isinstance(entries, dict):
        for key, value in entries.items():
            if key in ("ess_bulk", "ess_tail") and value is not None:
                entries[key] = min(float(value), limit)
            else:
                _limit_ess(value, limit)
    elif isinstance(entries, list):
        for value in entries:
            _limit_ess(value, limit)


def _pair(a: str, b: str) -> str:
    return f"{a}:{b}"


def _group(formula: str) -> str:
    """The grouping factor of the model's one random term (``"id"``)."""
    from bayeslmm.spec import split_formula

    return split_formula(formula)[2][0].group


def _families(fit: Any) -> dict[str, dict[str, str]]:
    """trait → {"family", "link"} from the specification's families (a multi-trait GLMM's),
    Gaussian with the identity link for every trait otherwise."""
    families = getattr(getattr(fit, "spec", None), "families", None)
    if not families:  # a Gaussian multi-trait specification has none
        return {trait: {"family": "gaussian", "link": "identity"} for trait in fit.traits}
    return {
        trait: {"family": f.name, "link": f.link}
        for trait, f in zip(fit.traits, families, strict=True)
    }


def _common(values: list[str], mixed: str = "mixed") -> str:
    """One family (or link) shared by every trait, else ``"mixed"``."""
    return values[0] if len(set(values)) == 1 else mixed


def _kinship(fit: Any) -> dict[str, Any]:
    """summary.json ``kinship`` from the specification the fit was made from."""
    spec = fit.spec
    K = spec.kinship
    return {
        spec.group: {
            "name": K.name,
            "n_levels": int(spec.n),
            "mean_diagonal": float(np.mean(K.diagonal())),
            "sample_scale": float(spec.kinship_scale),
        }
    }


# -- REML ------------------------------------------------------------------------------------
def _reml_variance_rows(fit: Any, prob: float, group: str) -> list[dict[str, Any]]:
    traits, t = fit.traits, len(fit.traits)
    position = vech_index(t)
    m = t * (t + 1) // 2
    order = [(a, a) for a in range(t)] + [(a, b) for a in range(t) for b in range(a + 1, t)]
    se_phi = np.sqrt(np.clip(np.diag(fit.covariance), 0.0, None))

    def sdcor(G: np.ndarray, E: np.ndarray) -> np.ndarray:
        out = []
        for S in (G, E):
            d = np.sqrt(np.clip(np.diag(S), 0.0, None))
            for a, b in order:
                with np.errstate(invalid="ignore", divide="ignore"):
                    out.append(d[a] if a == b else S[a, b] / (d[a] * d[b]))
        return np.array(out)

    sdcor_value, sdcor_se = fit._delta(sdcor)
    z = wald_z(prob)
    out = []
    for which, (name, S) in enumerate(((group, fit.genetic), ("Residual", fit.residual))):
        for j, (a, b) in enumerate(order):
            k = which * len(order) + j
            vcov, se = float(S[a, b]), float(se_phi[which * m + position[(a, b)]])
            value, value_se = float(sdcor_value[k]), float(sdcor_se[k])
            if a != b and not abs(value) < 1.0 - 1e-6:  # a correlation at ±1 (or undefined)
                value_se = float("nan")
            out.append(
                {
                    "grp": name,
                    "var1": traits[a],
                    "var2": None if a == b else traits[b],
                    "vcov": vcov,
                    "sdcor": value,
                    "se": se,
                    "se_sdcor": value_se,
                    "ci_low": vcov - z * se,
                    "ci_high": vcov + z * se,
                }
            )
    return out


def _reml_matrix(fit: Any, prob: float, which: str) -> dict[str, dict[str, Any]]:
    table = fit.covariance_table(prob).loc[which]
    out: dict[str, dict[str, Any]] = {a: {} for a in fit.traits}
    for (a, b), row in table.iterrows():
        entry = _point_entry(row["estimate"], row["se"], prob)
        out[a][b] = out[b][a] = entry
    return {a: {b: out[a][b] for b in fit.traits} for a in fit.traits}


def _reml_pairs(table: Any, prob: float) -> dict[str, dict[str, Any]]:
    return {
        _pair(a, b): _point_entry(row["estimate"], row["se"], prob)
        for (a, b), row in table.iterrows()
    }


def reml_summary(fit: Any, prob: float = 0.95) -> dict[str, Any]:
    """The summary.json dictionary of a :class:`~bayeslmm.results.multitrait.MultiTraitRemlFit`.

    Parameters
    ----------
    fit : MultiTraitRemlFit
    prob : float
        Mass of the Wald intervals.

    Returns
    -------
    dict
        The layout of the module docstring (JSON-safe: NaN is ``None``).

    Examples
    --------
    >>> # summary = reml_summary(bl.LMM("mvbind(y1, y2) ~ (1|id)", df, kinship={"id": K})
    >>> #                        .fit(method="reml"))
    >>> # summary["genetic_correlation"]["y1:y2"]["estimate"]
    """
    group = _group(fit.formula)
    herit = fit.heritability(prob)
    fixed = fit.fixed_effects(prob)
    fixed_entries = {}
    for (trait, term), row in fixed.iterrows():
        entry = _point_entry(row["estimate"], row["se"], prob)
        entry["t"] = row["estimate"] / row["se"] if row["se"] > 0 else float("nan")
        fixed_entries[_pair(trait, term)] = entry
    t, p = len(fit.traits), len(fit.fixed_names)
    n_parameters = t * p + t * (t + 1)
    n_records = int(sum(fit.n_records))
    loglik = float(fit.loglik)
    families = _families(fit)
    return assemble_summary(
        method="reml",
        n_obs=fit.n,
        formula=fit.formula,
        strategy=fit.route,
        heritability={
            trait: _point_entry(row["estimate"], row["se"], prob) for trait, row in herit.iterrows()
        },
        variance_components=_reml_variance_rows(fit, prob, group),
        fixed_effects=fixed_entries,
        diagnostics={
            "converged": bool(fit.converged),
            "boundary": bool(fit.at_boundary),
            "gradient_max": float(fit.gradient_max),
            "messages": list(fit.messages),
        },
        timing={"total_s": float(fit.seconds), **fit.timing},
        family=_common([f["family"] for f in families.values()]),
        link=_common([f["link"] for f in families.values()]),
        extra={
            "traits": list(fit.traits),
            "n_records": dict(zip(fit.traits, fit.n_records, strict=True)),
            "families": families,
            "genetic_correlation": _reml_pairs(fit.genetic_correlation(prob), prob),
            "residual_correlation": _reml_pairs(fit.residual_correlation(prob), prob),
            "genetic_covariance": _reml_matrix(fit, prob, "genetic"),
            "residual_covariance": _reml_matrix(fit, prob, "residual"),
            "kinship": _kinship(fit),
            "loglik": {"reml": loglik},
            "reml_criterion": -2.0 * loglik,
            "n_parameters": n_parameters,
            "aic": -2.0 * loglik + 2.0 * n_parameters,
            "bic": -2.0 * loglik + n_parameters * math.log(n_records),
        },
    )


# -- NUTS ------------------------------------------------------------------------------------
def _defined(draws: np.ndarray) -> bool:
    return bool(np.isfinite(draws).all())


def _bayes_matrix(fit: Any, name: str, prob: float) -> dict[str, dict[str, Any]]:
    draws = fit.posterior[name].values
    traits = fit.traits
    out: dict[str, dict[str, Any]] = {}
    for a, ta in enumerate(traits):
        out[ta] = {}
        for b, tb in enumerate(traits):
            x = draws[:, :, a, b]
            out[ta][tb] = _posterior_entry(x, prob) if _defined(x) else None
    return out


def _bayes_pairs(fit: Any, name: str, prob: float) -> dict[str, dict[str, Any]]:
    draws = fit.posterior[name].values
    traits, out = fit.traits, {}
    for a in range(len(traits)):
        for b in range(a + 1, len(traits)):
            x = draws[:, :, a, b]
            if _defined(x):
                out[_pair(traits[a], traits[b])] = _posterior_entry(x, prob)
    return out


def _bayes_variance_rows(fit: Any, prob: float, group: str) -> list[dict[str, Any]]:
    post, traits, t = fit.posterior, fit.traits, len(fit.traits)
    order = [(a, a) for a in range(t)] + [(a, b) for a in range(t) for b in range(a + 1, t)]
    out = []
    for grp, prefix in ((group, "genetic"), ("Residual", "residual")):
        cov = post[f"{prefix}_covariance"].values
        sd = post[f"{prefix}_sd"].values
        cor = post[f"{prefix}_correlation"].values
        for a, b in order:
            vcov = cov[:, :, a, b]
            sdcor = sd[:, :, a] if a == b else cor[:, :, a, b]
            if not (_defined(vcov) and _defined(sdcor)):
                continue  # not a parameter of this model (a GLMM's logit / Poisson residual)
            v, s = posterior_summary(vcov, prob), posterior_summary(sdcor, prob)
            out.append(
                {
                    "grp": grp,
                    "var1": traits[a],
                    "var2": None if a == b else traits[b],
                    "vcov": v["mean"],
                    "sdcor": s["mean"],
                    "se": v["sd"],
                    "se_sdcor": s["sd"],
                    "ci_low": v["hdi_low"],
                    "ci_high": v["hdi_high"],
                }
            )
    return out


def _checked(entries: list[dict[str, Any] | None], key: str) -> list[float]:
    values = [e[key] for e in entries if e is not None]
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def bayes_summary(fit: Any, hdi_prob: float | None = None) -> dict[str, Any]:
    """The summary.json dictionary of a multi-trait posterior (Gaussian or GLMM).

    Parameters
    ----------
    fit : MultiTraitBayesFit or MultiTraitGLMMBayesFit
    hdi_prob : float, optional
        HDI mass (default: the fit's ``hdi_prob``).

    Returns
    -------
    dict
        The layout of the module docstring; a multi-trait GLMM adds ``heritability_latent``
        (trait → ENTRY) and ``residual_block`` (the traits whose residuals are correlated).

    Examples
    --------
    >>> # bayes_summary(fit)["heritability"]["y1"]["mean"]
    """
    prob = float(hdi_prob or fit.hdi_prob)
    spec = fit.spec
    post, traits = fit.posterior, fit.traits
    group = _group(fit.formula)
    herit = post["heritability"].values
    heritability = {trait: _posterior_entry(herit[:, :, a], prob) for a, trait in enumerate(traits)}
    beta = post["beta"].values
    fixed = {
        _pair(trait, term): _posterior_entry(beta[:, :, a, j], prob)
        for a, trait in enumerate(traits)
        for j, term in enumerate(fit.fixed_names)
    }
    genetic = _bayes_matrix(fit, "genetic_covariance", prob)
    residual = _bayes_matrix(fit, "residual_covariance", prob)
    checked = [
        *fixed.values(),
        *heritability.values(),
        *(e for row in (*genetic.values(), *residual.values()) for e in row.values()),
    ]
    r_hats, ess = _checked(checked, "r_hat"), _checked(checked, "ess_bulk")
    sizes = post.sizes
    families = _families(fit)
    extra: dict[str, Any] = {
        "traits": list(traits),
        "n_records": {t: int(v) for t, v in zip(traits, spec.observed.sum(axis=0), strict=True)},
        "families": families,
        "genetic_correlation": _bayes_pairs(fit, "genetic_correlation", prob),
        "residual_correlation": _bayes_pairs(fit, "residual_correlation", prob),
        "genetic_covariance": genetic,
        "residual_covariance": residual,
        "kinship": _kinship(fit),
        "sampler": fit.sampler,  # "nutpie", or "importance" (sparse pedigree)
        "seed": fit.seed,
        "priors": dict(fit.priors),
    }
    if "heritability_latent" in post:  # a multi-trait GLMM (MultiTraitGLMMBayesFit)
        latent = post["heritability_latent"].values
        extra["heritability_latent"] = {
            trait: _posterior_entry(latent[:, :, a], prob) for a, trait in enumerate(traits)
        }
        extra["residual_block"] = list(fit.residual_block)
    _limit_ess(extra, fit.ess_limit)
    for entry in checked:
        _limit_ess(entry, fit.ess_limit)
    ess = [min(e, fit.ess_limit) for e in ess]
    return assemble_summary(
        method="nuts",
        n_obs=spec.n,
        formula=fit.formula,
        strategy=fit.route,
        heritability=heritability,
        variance_components=_bayes_variance_rows(fit, prob, group),
        fixed_effects=fixed,
        diagnostics={
            "divergences": int(fit.divergences),
            "max_r_hat": max(r_hats) if r_hats else float("nan"),
            "min_ess_bulk": min(ess) if ess else float("nan"),
            "chains": int(sizes["chain"]),
            "draws": int(sizes["draw"]),
            "messages": list(fit.messages),
        },
        timing=fit.timing,
        family=_common([f["family"] for f in families.values()]),
        link=_common([f["link"] for f in families.values()]),
        extra=extra,
    )


# -- folders ---------------------------------------------------------------------------------
def _rg_figure(fit: Any, prob: float) -> Any:
    """Histogram of the r_g draws of each pair of traits, its HDI marked; outside pyplot."""
    from bayeslmm.results.plots import figure_axes

    ax = figure_axes()
    draws, traits = fit.posterior["genetic_correlation"].values, fit.traits
    for a in range(len(traits)):
        for b in range(a + 1, len(traits)):
            x = draws[:, :, a, b].ravel()
            patches = ax.hist(x, bins=40, range=(-1, 1), density=True, alpha=0.5)[2]
            entry = posterior_summary(draws[:, :, a, b], prob)
            color = patches[0].get_facecolor()
            ax.plot([entry["hdi_low"], entry["hdi_high"]], [0, 0], lw=4, color=color)
            patches[0].set_label(
                f"{traits[a]}:{traits[b]} (mean {entry['mean']:.2f}, "
                f"{int(round(100 * prob))}% HDI {entry['hdi_low']:.2f} to "
                f"{entry['hdi_high']:.2f})"
            )
    ax.axvline(0.0, color="grey", lw=0.8)
    ax.set_xlim(-1, 1)
    ax.set_xlabel("genetic correlation r_g")
    ax.set_ylabel("posterior density")
    ax.legend(fontsize=7)
    ax.figure.tight_layout()
    return ax.figure


def save_reml(fit: Any, out_dir: str | os.PathLike, inputs: bool = True) -> dict[str, Path]:
    """Write a multi-trait REML fit's ``summary.json`` and (``inputs``) ``inputs/`` to
    ``out_dir``, all or nothing.

    Examples
    --------
    >>> # save_reml(fit, "results")["summary"]
    """
    from bayeslmm.results.output import _write_summary_and_inputs, result_directory

    with result_directory(out_dir) as stage:
        staged = _write_summary_and_inputs(fit.to_summary(), fit.spec, Path(stage), inputs)
    return {key: Path(out_dir) / path.name for key, path in staged.items()}


def save_bayes(
    fit: Any, out_dir: str | os.PathLike, plot: bool = True, inputs: bool = True
) -> dict[str, Path]:
    """Write a multi-trait posterior's ``summary.json``, ``posterior.nc``, (``inputs``)
    ``inputs/`` and (``plot``) ``rg_posterior.png`` to ``out_dir``, all or nothing.

    Examples
    --------
    >>> # save_bayes(fit, "results")["posterior"]
    """
    from bayeslmm.results.output import _write_summary_and_inputs, result_directory

    with result_directory(out_dir) as stage:
        stage = Path(stage)
        staged = _write_summary_and_inputs(fit.summary(), fit.spec, stage, inputs)
        staged["posterior"] = stage / "posterior.nc"
        fit.idata.to_netcdf(str(staged["posterior"]))
        if plot:
            staged["plot"] = stage / RG_PLOT
            _rg_figure(fit, fit.hdi_prob).savefig(staged["plot"], dpi=120)
    return {key: Path(out_dir) / path.name for key, path in staged.items()}
