"""Ranking fits of the same data by a criterion that names its question.

:func:`compare` ranks several fits like ArviZ's ``az.compare`` (best first, differences to
the best, weights), but first checks that the fits describe the same observations (the same
response, the same rows in the same order) and that the criterion is one they can all answer,
and it says which question the ranking answers (``frame.attrs["question"]``; docs/questions.md):

- ``"loo"``, ``"waic"`` with ``kind="marginal"`` (NUTS, Gaussian): which model best
  predicts a new record from the others' records, the random effects integrated out (which
  kinship; kinship or none);
- ``"loo"``, ``"waic"`` with ``kind="conditional"`` (NUTS): which model best predicts an
  individual's next record given its own fitted effect;
- ``"aic"``, ``"bic"`` (REML, ML, Laplace ML): marginal likelihood, which model best
  describes the population (AIC: predicts a new data set; BIC: is most probable a
  posteriori). REML fits are ranked by their restricted likelihoods when their fixed effects
  are the same; when they differ (or ML fits are among them) each REML fit is refitted by
  maximum likelihood first, with a warning, as lme4's ``anova()`` does ("refitting model(s)
  with ML (instead of REML)"): restricted likelihoods of different fixed-effect designs are
  likelihoods of different data. ``frame.attrs["refitted_ml"]`` names the refitted fits;
- ``"caic"`` (REML): the conditional AIC (Greven & Kneib 2010), which model best predicts new
  records of the same individuals, given their random effects.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from bayeslmm.errors import DataError, SpecificationError
from bayeslmm.results.estimate import PosteriorEstimate
from bayeslmm.results.fit import FitTables

CRITERIA = ("loo", "waic", "aic", "bic", "caic")

#: The question each criterion (and LOO/WAIC kind) answers, written into the result.
QUESTIONS = {
    ("loo", "marginal"): (
        "Which model best predicts a new record from the other records, relatives included, "
        "with the random effects integrated out (exact marginal LOO: which kinship, kinship "
        "or none)?"
    ),
    ("loo", "conditional"): (
        "Which model best predicts an individual's next record given its own fitted random "
        "effect (conditional LOO)?"
    ),
    ("waic", "marginal"): (
        "Which model best predicts a new record from the other records, the random effects "
        "integrated out (WAIC of the marginal likelihood)?"
    ),
    ("waic", "conditional"): (
        "Which model best predicts an individual's next record given its own fitted random "
        "effect (WAIC of the conditional likelihood)?"
    ),
    ("aic", None): (
        "Which model best describes the population, the random effects integrated out "
        "(marginal AIC: expected fit to a new data set of new individuals)?"
    ),
    ("bic", None): (
        "Which model is most probable a posteriori among these, the random effects "
        "integrated out (marginal BIC)?"
    ),
    ("caic", None): (
        "Which model best predicts new records of the same individuals, given their random "
        "effects (conditional AIC, Greven & Kneib 2010)?"
    ),
}


def _named(fits: Mapping[str, Any] | Sequence[Any]) -> dict[str, Any]:
    if isinstance(fits, Mapping):
        named = {str(k): v for k, v in fits.items()}
    else:
        named = {f"model{k + 1}": f for k, f in enumerate(fits)}
    if len(named) < 2:
        raise SpecificationError(
            f"compare ranks two or more fits; got {len(named)}. Pass e.g. "
            "bl.compare({'kinship': fit1, 'no kinship': fit2})."
        )
    for name, fit in named.items():
        if not isinstance(fit, FitTables):
            raise SpecificationError(
                f"compare takes fits made by bayeslmm (LMM(...).fit(...)); '{name}' is a "
                f"{type(fit).__name__}."
            )
    return named


def check_same_data(named: Mapping[str, Any]) -> None:
    """Refuse fits of different responses or rows: their criteria are not comparable.

    Examples
    --------
    >>> # check_same_data({"a": fit1, "b": fit2})   # DataError naming the first difference
    """
    names = list(named)
    first = named[names[0]].spec
    y0 = np.asarray(first.y, dtype=float)
    for name in names[1:]:
        spec = named[name].spec
        y = np.asarray(spec.y, dtype=float)
        if spec.response != first.response:
            raise DataError(
                f"'{names[0]}' models {first.response!r} and '{name}' models "
                f"{spec.response!r}: criteria of different responses are not comparable. "
                "Fit every model to the same response."
            )
        if y.size != y0.size:
            raise DataError(
                f"'{names[0]}' has {y0.size} observations and '{name}' {y.size}: fits of "
                "different rows are not comparable. Fit every model to the same rows (drop "
                "rows with missing values before fitting, once for all models)."
            )
        bad = np.flatnonzero(y != y0)
        if bad.size:
            i = int(bad[0])
            raise DataError(
                f"'{names[0]}' and '{name}' differ in the response at row {i} ({y0[i]:g} vs "
                f"{y[i]:g}; {bad.size} rows differ): they were fitted to different data or "
                "rows in a different order. Fit every model to the same data frame."
            )
        t0 = None if first.trials is None else np.asarray(first.trials)
        t1 = None if spec.trials is None else np.asarray(spec.trials)
        if (t0 is None) != (t1 is None) or (t0 is not None and not np.array_equal(t0, t1)):
            raise DataError(
                f"'{names[0]}' and '{name}' have different numbers of trials: their "
                "likelihoods are of different data."
            )


def _posterior(named: Mapping[str, Any], criterion: str) -> None:
    point = [n for n, f in named.items() if not isinstance(f.estimate(), PosteriorEstimate)]
    if point:
        raise SpecificationError(
            f"criterion={criterion!r} needs posterior draws; {point} are point fits. Rank "
            "REML/Laplace fits with criterion='aic', 'bic' or (REML) 'caic'."
        )


#: The warning given when REML fits are refitted by ML before ranking (lme4's words).
REFIT_MESSAGE = "refitting model(s) with ML (instead of REML)"


def _marginal_fits(named: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The fits whose (full or restricted) likelihoods are comparable, and which were refitted.

    REML fits with the same fixed effects keep their restricted likelihoods; otherwise (fixed
    effects differ, or ML fits are among them) every REML fit is refitted by ML.
    """
    reml = [n for n, f in named.items() if f.engine == "reml"]
    if not reml:
        return dict(named), []
    gaussian_ml = [n for n, f in named.items() if f.engine == "ml"]
    others = [n for n in named if n not in reml and n not in gaussian_ml]
    if others:
        raise SpecificationError(
            f"{sorted(reml)} are REML fits and the others are not: restricted and full "
            "likelihoods are not comparable. Compare fits of one engine."
        )
    fixed = {n: tuple(named[n].spec.fixed_names) for n in named}
    if len(set(fixed.values())) == 1 and not gaussian_ml:
        return dict(named), []
    why = (
        f"their fixed effects differ ({fixed})"
        if len(set(fixed.values())) > 1
        else f"{sorted(gaussian_ml)} are ML fits"
    )
    warnings.warn(
        f"{REFIT_MESSAGE}: {sorted(reml)}; {why}, and restricted likelihoods of different "
        "fixed effects are not comparable.",
        UserWarning,
        stacklevel=4,
    )
    return {n: (f.refit_ml() if n in reml else f) for n, f in named.items()}, reml


def _information(named: Mapping[str, Any], criterion: str) -> pd.DataFrame:
    values = {}
    for name, fit in named.items():
        if isinstance(fit.estimate(), PosteriorEstimate):
            raise SpecificationError(
                f"criterion={criterion!r} is for point fits (REML, Laplace ML); '{name}' is a "
                "posterior. Rank NUTS fits with criterion='loo' or 'waic'."
            )
    refitted: list[str] = []
    if criterion in ("aic", "bic"):
        named, refitted = _marginal_fits(named)
    for name, fit in named.items():
        if criterion == "caic":
            if fit.engine != "reml":
                raise SpecificationError(
                    f"The conditional AIC is defined here for Gaussian REML fits; '{name}' is "
                    f"a {fit.engine} fit."
                )
            values[name] = float(fit.caic().caic)
        else:
            values[name] = float(getattr(fit, criterion))
    frame = pd.DataFrame({criterion: values})
    frame = frame.sort_values(criterion)
    best = float(frame[criterion].iloc[0])
    frame.insert(0, "rank", np.arange(frame.shape[0]))
    frame[f"d_{criterion}"] = frame[criterion] - best
    w = np.exp(-0.5 * frame[f"d_{criterion}"].to_numpy())
    frame["weight"] = w / w.sum()
    frame.attrs["refitted_ml"] = refitted
    return frame


def compare(
    fits: Mapping[str, Any] | Sequence[Any],
    criterion: str = "loo",
    kind: str | None = None,
) -> pd.DataFrame:
    """Rank fits of the same data by one criterion, best first.

    Parameters
    ----------
    fits : dict of name → fit, or a list of fits (named model1, model2, …)
        Fits of the same response and rows (checked: a different response, number of rows,
        row order or trials is refused).
    criterion : {"loo", "waic", "aic", "bic", "caic"}
        ``"loo"``/``"waic"``: posterior fits (ArviZ's ``az.compare`` of :meth:`fit.loo
        <bayeslmm.results.fit.FitTables.loo>`); ``"aic"``/``"bic"``: point fits;
        ``"caic"``: REML fits' conditional AIC. See the module for the question each
        answers.
    kind : {"marginal", "conditional"}, optional
        LOO/WAIC: which pointwise likelihood (default: marginal for Gaussian models,
        conditional for GLMMs); every fit uses the same one.

    Returns
    -------
    pandas.DataFrame
        LOO/WAIC: ``az.compare``'s columns (``rank``, ``elpd_loo``, ``p_loo``, ``elpd_diff``,
        ``weight``, ``se``, ``dse``, ``warning``, ``scale``) and ``kind``; AIC/BIC/cAIC:
        ``rank``, the criterion, its difference to the best and Akaike weights.
        ``frame.attrs["question"]`` says what the ranking answers; ``attrs["criterion"]``
        and ``attrs["kind"]`` what produced it; ``attrs["refitted_ml"]`` the REML fits that
        were refitted by maximum likelihood first (AIC/BIC of REML fits whose fixed effects
        differ; a :class:`UserWarning` says so), else ``[]``.

    Examples
    --------
    >>> # bl.compare({"kinship": fit_k, "no kinship": fit_0}, criterion="loo")
    >>> # bl.compare([reml_a, reml_b], criterion="caic").attrs["question"]
    >>> # bl.compare([reml_x, reml_1], "aic").attrs["refitted_ml"]  # fixed effects differ
    """
    if criterion not in CRITERIA:
        raise SpecificationError(f"criterion must be one of {CRITERIA}; got {criterion!r}.")
    named = _named(fits)
    check_same_data(named)
    if criterion in ("loo", "waic"):
        import arviz as az

        _posterior(named, criterion)
        families = {n: f.spec.family.is_gaussian for n, f in named.items()}
        if kind is None:
            kind = "marginal" if all(families.values()) else "conditional"
        elpd = {n: getattr(f, criterion)(kind) for n, f in named.items()}
        with warnings.catch_warnings():
            # ArviZ's own deprecation notes (pandas' inplace sort), not the user's business
            warnings.filterwarnings("ignore", module="arviz")
            frame = az.compare(elpd, ic=criterion)
        frame["kind"] = kind
    else:
        if kind is not None:
            raise SpecificationError(
                f"kind= chooses the likelihood of LOO/WAIC; criterion={criterion!r} has none. "
                "Leave kind out."
            )
        frame = _information(named, criterion)
    frame.attrs.update(
        {"criterion": criterion, "kind": kind, "question": QUESTIONS[(criterion, kind)]}
    )
    frame.attrs.setdefault("refitted_ml", [])
    return frame
