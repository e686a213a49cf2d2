"""The names the Bayesian engine accepts: strategies, samplers and the treatment of β.

One word means one algorithm. ``method="laplace"`` (:meth:`bayeslmm.LMM.fit`) is Laplace
maximum likelihood (lme4's ``glmer``); the NUTS strategy that integrates the latent field out
by a Laplace approximation is ``strategy="laplace-marginal"``. Its former name
``"laplace"`` is still accepted for one release, with a :class:`DeprecationWarning`.

Examples
--------
>>> STRATEGIES
('auto', 'spectral', 'latent', 'laplace-marginal', 'sparse-pedigree', 'sparse-pedigree-nuts')
>>> strategy_name("latent")
'latent'
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Literal, get_args

from bayeslmm.errors import SpecificationError

#: How the model is fitted with NUTS: ``"auto"`` picks sparse-pedigree (Gaussian) or
#: sparse-pedigree-nuts (GLMMs) for a sparse pedigree kinship, spectral when it applies, else
#: latent.
StrategyName = Literal[
    "auto", "spectral", "latent", "laplace-marginal", "sparse-pedigree", "sparse-pedigree-nuts"
]
#: Which NUTS implementation samples the model.
SamplerName = Literal["auto", "pymc", "nutpie", "numpyro", "blackjax"]
#: How the spectral strategy treats β: integrated out (default) or sampled with θ.
FixedEffectsMode = Literal["marginal", "joint"]

STRATEGIES: tuple[str, ...] = get_args(StrategyName)
SAMPLERS: tuple[str, ...] = get_args(SamplerName)
FIXED_EFFECTS: tuple[str, ...] = get_args(FixedEffectsMode)

#: Former strategy names → current ones (accepted with a DeprecationWarning for one release).
RENAMED_STRATEGIES = {"laplace": "laplace-marginal"}

_PACKAGE_DIR = str(Path(__file__).resolve().parents[2])


def strategy_name(requested: str) -> str:
    """The current name of a requested strategy; a former name warns, an unknown one fails.

    Parameters
    ----------
    requested : str
        One of :data:`STRATEGIES`, or a former name (``"laplace"``).

    Returns
    -------
    str
        The name in :data:`STRATEGIES`.

    Raises
    ------
    SpecificationError
        For a name that is neither current nor former.

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     name = strategy_name("laplace")
    >>> name, caught[0].category.__name__
    ('laplace-marginal', 'DeprecationWarning')
    """
    if requested in RENAMED_STRATEGIES:
        new = RENAMED_STRATEGIES[requested]
        warnings.warn(
            f"strategy='{requested}' is renamed strategy='{new}' (the NUTS strategy that "
            f"integrates the latent field out by a Laplace approximation; method='laplace' is "
            f"Laplace maximum likelihood, a different algorithm). Use strategy='{new}'; the "
            "old name will be removed in the next release.",
            DeprecationWarning,
            stacklevel=_caller_stacklevel(),
        )
        return new
    if requested not in STRATEGIES:
        raise SpecificationError(f"Unknown strategy '{requested}'; choose one of {STRATEGIES}.")
    return requested


def check_sampler(sampler: str) -> str:
    """``sampler`` itself when it is one of :data:`SAMPLERS`; a clear error otherwise.

    Examples
    --------
    >>> check_sampler("nutpie")
    'nutpie'
    """
    if sampler not in SAMPLERS:
        raise SpecificationError(f"Unknown sampler '{sampler}'; choose one of {SAMPLERS}.")
    return sampler


def check_build_options(fixed_effects: str, rank_share: float | None) -> None:
    """Refuse an unknown ``fixed_effects`` or a ``rank_share`` outside (0, 1].

    Examples
    --------
    >>> check_build_options("marginal", 0.99) is None
    True
    """
    if fixed_effects not in FIXED_EFFECTS:
        raise SpecificationError(
            f"Unknown fixed_effects '{fixed_effects}'; choose one of {FIXED_EFFECTS}."
        )
    if rank_share is not None and not 0.0 < rank_share <= 1.0:
        raise SpecificationError(f"rank_share must lie in (0, 1]; got {rank_share}.")


def _caller_stacklevel() -> int:
    """The stack level of the first frame outside the package, so that the warning names the
    user's line (Python shows a DeprecationWarning by default only when the line that
    triggered it is the user's own code in ``__main__``)."""
    level, frame = 1, sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        level += 1
        frame = frame.f_back
    return level
