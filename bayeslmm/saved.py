"""Reading a saved fit back: ``bl.load_fit(directory)``.

``fit.save(out)`` and ``bayeslmm fit ... --out out`` write ``summary.json`` (the model's
formula, family, link, strategy, sampler, seed and the estimates), for NUTS
``posterior.nc`` (the draws), and the model's inputs in ``inputs/`` (the data columns it
uses and its kinships, :mod:`bayeslmm.results.inputs`; left out with
``save(..., inputs=False)``). :func:`load_fit` reads them back; data and kinship given
explicitly are used instead (a folder saved without inputs needs them). Either way it checks
that they are the ones the fit saw: the same response, row by row, and (for point fits,
which are refitted: REML, ML and Laplace ML are deterministic) the same estimates. The fit
that comes back answers every call of a fresh one: tables, ``predict``, ``loo``, ``caic``,
``snp_effects``, ``bl.compare``.

Multi-trait fits (summary.json with ``traits``) come back as the class that was saved:
:class:`~bayeslmm.results.multitrait.MultiTraitBayesFit` and the multi-trait GLMM's fit with
the draws of ``posterior.nc`` (checked against the data trait by trait, individual by
individual, through the ``observed_data`` group the fit saves), and
:class:`~bayeslmm.results.multitrait.MultiTraitRemlFit` refitted and checked against the
saved estimates.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bayeslmm.errors import DataError, SpecificationError
from bayeslmm.kinship import Kinship

#: Relative agreement asked of a refitted point estimate with the saved one.
REFIT_RTOL = 1e-6


def _summary(directory: Path) -> dict[str, Any]:
    path = directory / "summary.json"
    if not path.is_file():
        raise DataError(
            f"No saved fit in '{directory}': summary.json is missing. Give the folder that "
            "fit.save(...) or `bayeslmm fit --out` wrote."
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"'{path}' is not valid JSON ({exc}); the saved fit is damaged.") from exc


def _model(summary: dict[str, Any], data: pd.DataFrame, kinship: Any, options: dict) -> Any:
    from bayeslmm.model import LMM

    sigma = options.pop("sigma", summary.get("sigma_formula"))
    return LMM(
        summary["formula"],
        data,
        kinship=kinship,
        family=options.pop("family", summary.get("family", "gaussian")),
        link=options.pop("link", summary.get("link")),
        sigma=sigma,
        **options,
    )


def _hdi_prob(summary: dict[str, Any]) -> float:
    for section in ("heritability", "fixed_effects"):
        for entry in summary.get(section, {}).values():
            if isinstance(entry, Mapping) and entry.get("hdi_prob"):
                return float(entry["hdi_prob"])
    return 0.95


def _stored_inputs(
    directory: Path, summary: dict[str, Any], need_data: bool
) -> tuple[pd.DataFrame | None, dict[str, Kinship] | None, dict[str, Any]]:
    """The data, kinships and options stored with the fit (Nones when not stored)."""
    from bayeslmm.results.inputs import read_inputs

    entry = summary.get("inputs")
    if not isinstance(entry, Mapping):
        if need_data:
            raise DataError(
                f"'{directory}' holds no stored inputs (it was saved with inputs=False, or by "
                "an older bayeslmm): pass the data the fit was made from, "
                "bl.load_fit(folder, data=df, kinship={...})."
            )
        return None, None, {}
    try:
        return read_inputs(directory, entry)
    except DataError:
        if need_data:
            raise
        return None, None, {}  # the data given suffice; damaged inputs are not needed


def load_fit(
    directory: str | os.PathLike,
    data: pd.DataFrame | None = None,
    kinship: Mapping[str, Kinship | pd.DataFrame] | None = None,
    **options: Any,
) -> Any:
    """Read back a fit saved by ``fit.save(directory)`` or ``bayeslmm fit --out directory``.

    Parameters
    ----------
    directory : path
        The folder with ``summary.json`` (and ``posterior.nc`` for NUTS).
    data : pandas.DataFrame, optional
        The data the fit was made from (checked: the response must match row by row).
        Default: the data stored in ``directory/inputs/`` by ``save`` (a folder saved with
        ``inputs=False`` needs it).
    kinship : dict, optional
        Grouping factor → kinship, as given to :class:`bayeslmm.LMM`. Default: the
        kinships stored with the fit.
    **options
        Further :class:`~bayeslmm.LMM` arguments the fit used (``trials=``, ``priors=``);
        default: those recorded with the stored inputs. ``family``, ``link`` and ``sigma``
        are read from summary.json. A multi-trait fit takes ``family=`` (trait → family;
        default: the stored families, else summary.json's) and ``priors=``.

    Returns
    -------
    BayesFit, RemlFit, LaplaceFit, MultiTraitRemlFit, MultiTraitBayesFit or MultiTraitGLMMBayesFit
        The class that was saved. Posteriors (NUTS) are read from ``posterior.nc``, never
        re-sampled. Point fits are refitted to the data and checked against the saved
        estimates: REML, ML and Laplace ML are deterministic, and summary.json holds
        standard errors but not what the tables need besides (a multi-trait REML fit's
        delta-method SEs of correlations and h² need the whole covariance of the
        (co)variance estimates; its sparse-pedigree route gives every animal's EBV).

    Raises
    ------
    DataError
        No data given and none stored; data that are not the fit's (another response, row
        by row for a posterior; other estimates when refitted; other counts of individuals
        or trait records).
    SpecificationError
        An option a multi-trait model does not take.

    Examples
    --------
    >>> # fit.save("results"); fit2 = bl.load_fit("results")
    >>> # fit2.loo(), fit2.predict(new, kinship={"id": K})
    >>> # bl.load_fit("results", df, kinship={"id": K})   # the data given instead
    >>> # multi-trait: mt.save("mt"); bl.load_fit("mt").genetic_correlation()
    """
    directory = Path(directory)
    summary = _summary(directory)
    method = summary.get("method")
    if method not in ("nuts", "reml", "ml", "laplace"):
        raise DataError(
            f"'{directory / 'summary.json'}' has method {method!r}; bayeslmm writes 'nuts', "
            "'reml', 'ml' or 'laplace'."
        )
    if "traits" in summary:  # a multi-trait fit (docs/summary_json.md, "Multi-trait fits")
        return _load_multitrait(directory, summary, data, kinship, options)
    stored_data, stored_kinship, stored_options = _stored_inputs(
        directory, summary, need_data=data is None
    )
    if data is None:
        data = stored_data
    if kinship is None:
        kinship = stored_kinship
    options = {**stored_options, **options}
    model = _model(summary, data, kinship, dict(options))
    spec = model.spec
    if int(summary.get("n_obs", spec.n_obs)) != spec.n_obs:
        raise DataError(
            f"The saved fit has {summary['n_obs']} observations and the data given "
            f"{spec.n_obs}: give load_fit the data the fit was made from."
        )
    if method == "nuts":
        return _load_posterior(directory, summary, model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the boundary notes were given when it was fitted
        fit = model.fit(method=method)
    _check_refit(summary, fit, directory)
    return fit


def _read_posterior(directory: Path) -> Any:
    """The saved draws (``posterior.nc``) of a NUTS fit's folder, as InferenceData."""
    import arviz as az

    path = directory / "posterior.nc"
    if not path.is_file():
        raise DataError(
            f"'{directory}' holds a NUTS summary.json but no posterior.nc: the draws are "
            "needed to read the fit back."
        )
    return az.from_netcdf(str(path))


def _load_posterior(directory: Path, summary: dict[str, Any], model: Any) -> Any:
    from bayeslmm.engines.bayes import build
    from bayeslmm.engines.bayes.strategies import strategy_of
    from bayeslmm.results.bayes_result import BayesFit

    idata = _read_posterior(directory)
    spec = model.spec
    saved = np.asarray(idata.observed_data[spec.response].values, dtype=float)
    bad = np.flatnonzero(saved != np.asarray(spec.y, dtype=float))
    if saved.size != spec.n_obs or bad.size:
        where = f"row {int(bad[0])}" if bad.size else "the number of rows"
        raise DataError(
            f"The data given differ from the data of the saved fit ({where} of "
            f"'{spec.response}'): give load_fit the data the fit was made from, in the same "
            "row order."
        )
    strategy = summary.get("strategy", "auto")
    try:
        # "spectral-low-rank" reports the spectral strategy on a low-rank kinship
        built = build(spec, strategy=strategy.removesuffix("-low-rank"))
    except SpecificationError as exc:
        raise SpecificationError(
            f"The saved fit used the {strategy} strategy, which this model (as rebuilt from "
            f"the data and options given) does not allow: {exc}"
        ) from exc
    diagnostics = dict(summary.get("diagnostics", {}))
    messages = list(diagnostics.pop("messages", []))
    return BayesFit(
        idata=idata,
        built=built,
        timing=dict(summary.get("timing", {})),
        diagnostics=diagnostics,
        messages=messages,
        hdi_prob=_hdi_prob(summary),
        sampler=summary.get("sampler", "pymc"),
        seed=summary.get("seed"),
        breeding_value_sampler=strategy_of(built).breeding_value_sampler(built),
        posterior_predictive_sampler=strategy_of(built).posterior_predictive_sampler(built),
    )


def _check_refit(summary: dict[str, Any], fit: Any, directory: Path) -> None:
    saved = [row.get("vcov") for row in summary.get("variance_components", [])]
    now = fit.variance_components()["vcov"].tolist()
    fixed = {k: v.get("estimate") for k, v in summary.get("fixed_effects", {}).items()}
    now_fixed = dict(zip(fit.spec.fixed_names, fit.fixed_effects()["estimate"], strict=True))
    pairs = list(zip(saved, now, strict=False)) + [(fixed.get(k), v) for k, v in now_fixed.items()]
    ok = len(saved) == len(now) and all(
        a is not None and np.isclose(a, b, rtol=REFIT_RTOL, atol=1e-12 * max(1.0, abs(b)))
        for a, b in pairs
    )
    if not ok:
        raise DataError(
            f"Refitting the model of '{directory}' to the data given does not reproduce the "
            "saved estimates: the data, kinship or options differ from the fit's. Give "
            "load_fit the same data, kinship and options (trials=, priors=)."
        )


# -- multi-trait fits --------------------------------------------------------------------------
def _saved_families(summary: dict[str, Any]) -> dict[str, Any]:
    """trait → (family, link) from summary.json's ``families`` (a folder without inputs); a
    Poisson trait whose residual variance (the observation-level effect) is ``null`` was
    fitted without overdispersion."""
    from bayeslmm.families import Poisson, get_family

    out: dict[str, Any] = {}
    for trait, entry in dict(summary.get("families", {})).items():
        family = get_family(entry.get("family", "gaussian"), entry.get("link"))
        residual = summary.get("residual_covariance", {}).get(trait, {}).get(trait)
        if isinstance(family, Poisson) and residual is None:
            family = Poisson(overdispersion=False)
        out[trait] = family
    return out


def _multitrait_model(
    directory: Path,
    summary: dict[str, Any],
    data: pd.DataFrame | None,
    kinship: Mapping[str, Kinship | pd.DataFrame] | None,
    options: dict[str, Any],
) -> Any:
    """The MultiTraitLMM rebuilt from the inputs (given or stored), checked against the
    summary's counts."""
    from bayeslmm.multitrait_model import MultiTraitLMM

    stored_data, stored_kinship, stored_options = _stored_inputs(
        directory, summary, need_data=data is None
    )
    data = stored_data if data is None else data
    kinship = stored_kinship if kinship is None else kinship
    options = {**stored_options, **options}
    family = options.pop("family", None) or _saved_families(summary)
    priors = options.pop("priors", None)
    if options:
        raise SpecificationError(
            f"load_fit of a multi-trait fit takes data=, kinship=, family= and priors=; got "
            f"{sorted(options)}."
        )
    spec = MultiTraitLMM(
        summary["formula"], data, kinship=kinship, family=family, priors=priors
    ).spec
    saved = {str(k): int(v) for k, v in dict(summary.get("n_records", {})).items()}
    now = {t: int(v) for t, v in zip(spec.traits, spec.observed.sum(axis=0), strict=True)}
    if int(summary.get("n_obs", spec.n)) != spec.n or (saved and saved != now):
        raise DataError(
            f"The saved fit has {summary.get('n_obs')} individuals with records {saved}; the "
            f"data given {spec.n} with {now}: give load_fit the data the fit was made from."
        )
    return spec


def _load_multitrait(
    directory: Path,
    summary: dict[str, Any],
    data: pd.DataFrame | None,
    kinship: Mapping[str, Kinship | pd.DataFrame] | None,
    options: dict[str, Any],
) -> Any:
    spec = _multitrait_model(directory, summary, data, kinship, dict(options))
    if summary["method"] == "nuts":
        return _load_multitrait_posterior(directory, summary, spec)
    if summary["method"] != "reml":
        raise DataError(
            f"'{directory / 'summary.json'}' is a multi-trait fit with method "
            f"{summary['method']!r}; multi-trait fits are 'reml' or 'nuts'."
        )
    from bayeslmm.engines.reml.multitrait import fit_multitrait_reml

    fit = fit_multitrait_reml(spec)
    saved = [
        (summary.get(f"{which}_covariance", {}).get(a, {}).get(b, {}).get("estimate"), S[i, j])
        for which, S in (("genetic", fit.genetic), ("residual", fit.residual))
        for i, a in enumerate(fit.traits)
        for j, b in enumerate(fit.traits)
    ] + [
        (summary.get("fixed_effects", {}).get(f"{trait}:{term}", {}).get("estimate"), value)
        for (trait, term), value in fit.fixed_effects()["estimate"].items()
    ]
    if not all(
        a is not None and np.isclose(a, b, rtol=REFIT_RTOL, atol=1e-12 * max(1.0, abs(b)))
        for a, b in saved
    ):
        raise DataError(
            f"Refitting the multi-trait model of '{directory}' to the data given does not "
            "reproduce the saved estimates: the data, kinship or options differ from the "
            "fit's. Give load_fit the same data, kinship, family= and priors=."
        )
    return fit


def _load_multitrait_posterior(directory: Path, summary: dict[str, Any], spec: Any) -> Any:
    from bayeslmm.results.multitrait import MultiTraitBayesFit
    from bayeslmm.results.multitrait_glmm import MultiTraitGLMMBayesFit

    idata = _read_posterior(directory)
    if "observed_data" in idata.groups():  # written by every save (older folders: counts)
        observed = idata.observed_data
        ids = [str(i) for i in observed[spec.group].values] if spec.group in observed else []
        Y = np.column_stack([observed[t].values for t in spec.traits if t in observed])
        same = ids == list(spec.ids) and Y.shape == spec.Y.shape
        if not (same and np.array_equal(Y, spec.Y, equal_nan=True)):
            bad = (
                np.flatnonzero(~((Y == spec.Y) | (np.isnan(Y) & np.isnan(spec.Y))).all(axis=1))
                if same
                else []
            )
            where = f"individual '{spec.ids[int(bad[0])]}'" if len(bad) else "the individuals"
            raise DataError(
                f"The data given differ from the data of the saved fit ({where} of the traits "
                f"{list(spec.traits)}): give load_fit the data the fit was made from."
            )
    diagnostics = dict(summary.get("diagnostics", {}))
    common = {
        "traits": spec.traits,
        "fixed_names": spec.fixed_names,
        "idata": idata,
        "hdi_prob": _hdi_prob(summary),
        "seed": summary.get("seed"),
        "timing": dict(summary.get("timing", {})),
        "formula": spec.formula,
        "priors": dict(summary.get("priors", {})),
        "messages": list(diagnostics.get("messages", [])),
        "route": summary.get("strategy", "rotated"),
        "sampler": summary.get("sampler", "nutpie"),
        "spec": spec,
    }
    if spec.is_gaussian:
        return MultiTraitBayesFit(**common)
    from bayeslmm.engines.bayes.multitrait_glmm import family_label
    from bayeslmm.multitrait_glmm_spec import residual_traits

    return MultiTraitGLMMBayesFit(
        **common,
        families=tuple(family_label(f) for f in spec.families),
        residual_block=tuple(spec.traits[a] for a in residual_traits(spec.families, spec.traits)),
        latent_traits=tuple(
            t for t, f in zip(spec.traits, spec.families, strict=True) if not f.is_gaussian
        ),
    )
