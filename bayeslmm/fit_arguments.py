"""The fit arguments every model checks alike (:class:`~bayeslmm.LMM` and
:class:`~bayeslmm.multitrait_model.MultiTraitLMM`): NUTS's settings before anything is
built or sampled, and the diagnostic messages printed after a fit."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from bayeslmm.errors import SpecificationError


def _integer(value: Any, name: str) -> int:
    """``value`` as an int; integral floats (``1e3``) are accepted, fractions and bools not."""
    ok = isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)
    if not ok and isinstance(value, float | np.floating) and float(value).is_integer():
        ok = True
    if not ok:
        raise SpecificationError(
            f"{name} must be a whole number; got {type(value).__name__} {value!r}."
        )
    return int(value)


def _positive_int(value: Any, name: str) -> int:
    out = _integer(value, name)
    if out < 1:
        raise SpecificationError(
            f"{name} must be a positive integer; got {value!r}. "
            + {
                "draws": "Use e.g. draws=1000 kept draws per chain.",
                "tune": "Use e.g. tune=1000 warm-up draws per chain (NUTS adapts its step size "
                "there).",
                "chains": "Use e.g. chains=4 (at least 2 for R-hat).",
                "cores": "Use cores=None (one per chain, up to the CPU count) or cores=1.",
            }.get(name, "")
        )
    return out


def _seed(value: Any) -> int | None:
    if value is None:
        return None
    out = _integer(value, "seed")
    if out < 0:
        raise SpecificationError(f"seed must be a non-negative integer; got {value!r}.")
    return out


def _probability(value: Any, name: str) -> None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = float("nan")
    if not 0.0 < x < 1.0:
        hint = {
            "target_accept": "e.g. 0.9, or 0.95 / 0.99 against divergences",
            "hdi_prob": "e.g. 0.95",
        }
        raise SpecificationError(
            f"{name} must lie strictly between 0 and 1; got {value!r} ({hint.get(name, '')})."
        )


def nuts_arguments(
    draws: Any,
    tune: Any,
    chains: Any,
    cores: Any,
    seed: Any,
    target_accept: Any,
    hdi_prob: Any,
) -> tuple[int, int | None, int, int | None, int]:
    """``(draws, tune, chains, cores, seed)`` checked, the seed drawn when None; raises
    :class:`~bayeslmm.errors.SpecificationError` naming a bad value. ``tune`` and
    ``target_accept`` may be None (the route's defaults). Used by every model's NUTS fit.

    Examples
    --------
    >>> nuts_arguments(1e3, None, 2, None, 7, 0.9, 0.95)
    (1000, None, 2, None, 7)
    """
    # checked before anything is built or sampled: a bad value must not cost a run
    # (cores=0 deadlocks the sampler, hdi_prob was only read after sampling)
    draws, chains = _positive_int(draws, "draws"), _positive_int(chains, "chains")
    tune = None if tune is None else _positive_int(tune, "tune")
    cores = None if cores is None else _positive_int(cores, "cores")
    seed = _seed(seed)
    if seed is None:
        # drawn here, used, and recorded in the fit: every run can be repeated
        seed = int(np.random.default_rng().integers(2**31 - 1))
    if target_accept is not None:
        _probability(target_accept, "target_accept")
    _probability(hdi_prob, "hdi_prob")
    return draws, tune, chains, cores, seed


def print_messages(messages: list[str]) -> None:
    """A fit's diagnostic messages on stderr (``verbose=True``)."""
    for message in messages:
        print(f"bayeslmm: {message}", file=sys.stderr)
