"""Exceptions raised on bad input.

Every error a user can trigger with their data names the problem and what to do about it.
They subclass :class:`ValueError` so generic handlers keep working.
"""

from __future__ import annotations


class BayesLMMError(ValueError):
    """Base class of every input error raised by bayeslmm."""


class KinshipError(BayesLMMError):
    """A kinship / relationship matrix is malformed (asymmetric, not PSD, bad ids...)."""


class DataError(BayesLMMError):
    """The data frame cannot be used as given (missing values, constant response...)."""


class SpecificationError(BayesLMMError):
    """The model specification is inconsistent (unknown term, family, kinship key...)."""


def preview(items, k: int = 5) -> str:
    """Format the first ``k`` items of a collection for an error message."""
    items = list(items)
    shown = ", ".join(repr(i) for i in items[:k])
    more = f" ... and {len(items) - k} more" if len(items) > k else ""
    return f"[{shown}{more}]"
