"""Response families as small declarative classes (bambi style).

A family states its link, validates the response's support with a clear error, and gives the
distribution-specific variance used on the link scale (Nakagawa & Schielzeth 2010, 2017).
The engines look up what they need here; nothing here knows about PyMC.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from bayeslmm.errors import DataError, SpecificationError


@dataclass(frozen=True)
class Family:
    """Base class: a response distribution and its link function."""

    name: ClassVar[str] = "family"
    links: ClassVar[tuple[str, ...]] = ()
    needs_trials: ClassVar[bool] = False
    link: str = ""

    def __post_init__(self) -> None:
        link = self.link or self.links[0]
        if link not in self.links:
            raise SpecificationError(
                f"Link '{link}' is not available for the {self.name} family; "
                f"choose one of {list(self.links)}."
            )
        object.__setattr__(self, "link", link)

    def validate(self, y: np.ndarray, trials: np.ndarray | None = None) -> None:
        """Raise :class:`DataError` when ``y`` lies outside the family's support."""

    @property
    def is_gaussian(self) -> bool:
        return False


@dataclass(frozen=True)
class Gaussian(Family):
    """Normal response, identity link."""

    name: ClassVar[str] = "gaussian"
    links: ClassVar[tuple[str, ...]] = ("identity",)

    @property
    def is_gaussian(self) -> bool:
        return True


def _check_integers(y: np.ndarray, what: str) -> None:
    bad = np.flatnonzero((y < 0) | (y != np.round(y)))
    if bad.size:
        raise DataError(
            f"The {what} response must hold non-negative integers; rows {bad[:5].tolist()} hold "
            f"{y[bad[:5]].tolist()}. Round or fix the counts, or use family='gaussian'."
        )


@dataclass(frozen=True)
class Poisson(Family):
    """Counts, log link. ``overdispersion=True`` adds an observation-level random effect."""

    name: ClassVar[str] = "poisson"
    links: ClassVar[tuple[str, ...]] = ("log",)
    overdispersion: bool = True

    def validate(self, y, trials=None):
        _check_integers(y, "poisson")


@dataclass(frozen=True)
class Bernoulli(Family):
    """Binary 0/1 response, logit or probit link."""

    name: ClassVar[str] = "bernoulli"
    links: ClassVar[tuple[str, ...]] = ("logit", "probit")

    def validate(self, y, trials=None):
        bad = np.flatnonzero((y != 0) & (y != 1))
        if bad.size:
            raise DataError(
                f"The bernoulli response must be 0 or 1; rows {bad[:5].tolist()} hold "
                f"{y[bad[:5]].tolist()}. Recode cases as 1 and controls as 0, or use "
                "family='binomial' with a trials column for proportions."
            )


@dataclass(frozen=True)
class Binomial(Family):
    """Successes out of a number of trials, logit or probit link."""

    name: ClassVar[str] = "binomial"
    links: ClassVar[tuple[str, ...]] = ("logit", "probit")
    needs_trials: ClassVar[bool] = True

    def validate(self, y, trials=None):
        if trials is None:
            raise SpecificationError(
                "The binomial family needs the number of trials: pass trials='COLUMN' "
                "(command line: --trials COLUMN)."
            )
        _check_integers(y, "binomial")
        _check_integers(trials, "binomial trials")
        bad = np.flatnonzero(y > trials)
        if bad.size:
            raise DataError(
                f"Successes exceed trials in rows {bad[:5].tolist()} "
                f"({y[bad[:5]].tolist()} > {trials[bad[:5]].tolist()}); check the trials column."
            )


FAMILIES: dict[str, type[Family]] = {
    cls.name: cls for cls in (Gaussian, Poisson, Bernoulli, Binomial)
}


def get_family(family: str | Family, link: str | None = None) -> Family:
    """Resolve a family name (and optional link) to a :class:`Family` instance.

    Examples
    --------
    >>> get_family("bernoulli", link="probit")
    Bernoulli(link='probit')
    """
    if isinstance(family, Family):
        return family
    key = str(family).lower()
    if key not in FAMILIES:
        raise SpecificationError(f"Unknown family '{family}'; choose one of {sorted(FAMILIES)}.")
    return FAMILIES[key](link=link or "")
