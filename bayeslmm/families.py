"""Response families as small declarative classes (bambi style).

A family states its link, validates the response's support with a clear error, and gives the
pieces the engines and the heritability scales need, all vectorised NumPy functions of the
linear predictor η:

- :meth:`Family.inverse_link` (h, the mean per trial), :meth:`Family.d_inverse_link` (dh/dη);
- :meth:`Family.variance_function` (the distribution variance per trial as a function of η);
- :meth:`Family.loglik` (pointwise log-likelihood, with all normalising constants, as R's
  ``family()$aic`` uses), :meth:`Family.score` and :meth:`Family.fisher_weight` (for penalised
  iteratively reweighted least squares);
- :meth:`Family.link_variance`: the distribution-specific variance on the link scale
  (Nakagawa & Schielzeth 2010, Biol. Rev. 85:935; 2017, J. R. Soc. Interface 14:20170213).

The names of QGglmm's models (de Villemereuil et al. 2016, Genetics 204:1281) are given by
:attr:`Family.qg_model`. Nothing here knows about PyMC.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from scipy import special

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

    @property
    def has_observation_level_effect(self) -> bool:
        """Whether the model adds an observation-level random effect (``olre``)."""
        return False

    def latent_residual_variance(self, eta_fixed, var_random, var_olre, xp=np):
        """Latent-scale residual variance of a GLMM (Nakagawa, Johnson & Schielzeth 2017).

        The distribution-specific variance on the link scale plus the observation-level
        variance. ``xp`` is the array module (numpy for draws, ``pytensor.tensor`` inside a
        PyMC model) so that every engine uses one formula.
        """
        raise NotImplementedError(f"The {self.name} family has no latent residual variance.")

    @property
    def qg_model(self) -> str:
        """QGglmm's name for this family and link, e.g. ``"binom1.logit"``."""
        return self.name

    # -- link and moments (per trial), vectorised over η ---------------------------------
    def inverse_link(self, eta: np.ndarray) -> np.ndarray:
        """The mean per trial h(η) (the expected count for Poisson)."""
        return _inverse_link(self.link, np.asarray(eta, dtype=float))

    def d_inverse_link(self, eta: np.ndarray) -> np.ndarray:
        """dh/dη, the slope of the mean per trial on the linear predictor."""
        return _d_inverse_link(self.link, np.asarray(eta, dtype=float))

    def variance_function(self, eta: np.ndarray) -> np.ndarray:
        """Variance of one trial given η (the Poisson variance for Poisson)."""
        raise NotImplementedError(f"The {self.name} family has no variance function here.")

    def loglik(
        self, y: np.ndarray, eta: np.ndarray, trials: np.ndarray | None = None
    ) -> np.ndarray:
        """Pointwise log-likelihood log p(y_i | η_i), normalising constants included."""
        raise NotImplementedError(f"The {self.name} family has no likelihood here.")

    def score(self, y: np.ndarray, eta: np.ndarray, trials: np.ndarray | None = None) -> np.ndarray:
        """d log p(y_i | η_i) / dη_i."""
        raise NotImplementedError(f"The {self.name} family has no score here.")

    def fisher_weight(self, eta: np.ndarray, trials: np.ndarray | None = None) -> np.ndarray:
        """Expected information E[-d² log p / dη²] = n (dh/dη)² / V, the PIRLS weight."""
        raise NotImplementedError(f"The {self.name} family has no Fisher weight here.")

    def link_variance(self, mean: np.ndarray | float | None = None, method: str = "lognormal"):
        """Distribution-specific variance on the link scale (Nakagawa & Schielzeth 2017).

        Parameters
        ----------
        mean : float or ndarray, optional
            The observed-scale mean λ (Poisson only; ignored for binary families).
        method : str
            Poisson-log approximation: ``"lognormal"`` (ln(1 + 1/λ), recommended),
            ``"delta"`` (1/λ) or ``"trigamma"`` (ψ₁(λ)).
        """
        raise NotImplementedError(f"The {self.name} family has no link-scale variance.")


@dataclass(frozen=True)
class Gaussian(Family):
    """Normal response, identity link."""

    name: ClassVar[str] = "gaussian"
    links: ClassVar[tuple[str, ...]] = ("identity",)

    @property
    def is_gaussian(self) -> bool:
        return True

    @property
    def qg_model(self) -> str:
        return "Gaussian"

    def variance_function(self, eta):
        return np.zeros_like(np.asarray(eta, dtype=float))


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

    @property
    def qg_model(self) -> str:
        return "Poisson.log"

    def variance_function(self, eta):
        return np.exp(np.asarray(eta, dtype=float))

    def loglik(self, y, eta, trials=None):
        y = np.asarray(y, dtype=float)
        eta = np.asarray(eta, dtype=float)
        return y * eta - np.exp(eta) - special.gammaln(y + 1.0)

    def score(self, y, eta, trials=None):
        return np.asarray(y, dtype=float) - np.exp(np.asarray(eta, dtype=float))

    def fisher_weight(self, eta, trials=None):
        return np.exp(np.asarray(eta, dtype=float))

    @property
    def has_observation_level_effect(self) -> bool:
        return self.overdispersion

    def latent_residual_variance(self, eta_fixed, var_random, var_olre, xp=np):
        """ln(1 + 1/λ̄) + σ²_olre with λ̄ = mean(exp(η_fixed)) · exp((σ²_random + σ²_olre)/2)
        (the lognormal approximation).

        Examples
        --------
        >>> round(float(Poisson().latent_residual_variance(np.zeros(1), 0.0, 0.0)), 4)
        0.6931
        """
        lam = xp.mean(xp.exp(eta_fixed), axis=-1) * xp.exp(0.5 * (var_random + var_olre))
        return xp.log1p(1.0 / lam) + var_olre

    def link_variance(self, mean=None, method="lognormal"):
        if mean is None:
            raise ValueError(
                "The Poisson link-scale variance depends on the mean count λ; pass mean=λ."
            )
        lam = np.asarray(mean, dtype=float)
        if method == "lognormal":
            return np.log1p(1.0 / lam)
        if method == "delta":
            return 1.0 / lam
        if method == "trigamma":
            return special.polygamma(1, lam)
        raise ValueError(
            f"Unknown method '{method}' for the Poisson link-scale variance; choose "
            "'lognormal', 'delta' or 'trigamma'."
        )


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

    @property
    def qg_model(self) -> str:
        return f"binom1.{self.link}"

    def variance_function(self, eta):
        return _binary_variance(self.link, np.asarray(eta, dtype=float))

    def loglik(self, y, eta, trials=None):
        return _binomial_loglik(self.link, y, eta, None)

    def score(self, y, eta, trials=None):
        return _binomial_score(self.link, y, eta, None)

    def fisher_weight(self, eta, trials=None):
        return _binomial_weight(self.link, eta, None)

    def link_variance(self, mean=None, method="lognormal"):
        return _binary_link_variance(self.link)

    def latent_residual_variance(self, eta_fixed, var_random, var_olre, xp=np):
        """π²/3 (logit) or 1 (probit)."""
        return _binary_link_variance(self.link)


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

    @property
    def qg_model(self) -> str:
        return f"binomN.{self.link}"

    def variance_function(self, eta):
        return _binary_variance(self.link, np.asarray(eta, dtype=float))

    def loglik(self, y, eta, trials=None):
        return _binomial_loglik(self.link, y, eta, _require_trials(trials))

    def score(self, y, eta, trials=None):
        return _binomial_score(self.link, y, eta, _require_trials(trials))

    def fisher_weight(self, eta, trials=None):
        return _binomial_weight(self.link, eta, _require_trials(trials))

    def link_variance(self, mean=None, method="lognormal"):
        return _binary_link_variance(self.link)

    def latent_residual_variance(self, eta_fixed, var_random, var_olre, xp=np):
        """π²/3 (logit) or 1 (probit)."""
        return _binary_link_variance(self.link)


# ---------------------------------------------------------------------------------------
# link helpers (vectorised, numerically stable in the tails)
# ---------------------------------------------------------------------------------------
def _inverse_link(link: str, eta: np.ndarray) -> np.ndarray:
    if link == "identity":
        return eta
    if link == "log":
        return np.exp(eta)
    if link == "logit":
        return special.expit(eta)
    if link == "probit":
        return special.ndtr(eta)
    raise ValueError(f"Unknown link '{link}'.")


def _d_inverse_link(link: str, eta: np.ndarray) -> np.ndarray:
    if link == "identity":
        return np.ones_like(eta)
    if link == "log":
        return np.exp(eta)
    if link == "logit":
        p = special.expit(eta)
        return p * (1.0 - p)
    if link == "probit":
        return np.exp(-0.5 * eta**2) / np.sqrt(2.0 * np.pi)
    raise ValueError(f"Unknown link '{link}'.")


def _log_p_q(link: str, eta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log h(η) and log(1 - h(η)) for a binary link, accurate in both tails."""
    if link == "logit":
        return special.log_expit(eta), special.log_expit(-eta)
    return special.log_ndtr(eta), special.log_ndtr(-eta)


def _binary_variance(link: str, eta: np.ndarray) -> np.ndarray:
    log_p, log_q = _log_p_q(link, eta)
    return np.exp(log_p + log_q)


def _require_trials(trials: np.ndarray | None) -> np.ndarray:
    if trials is None:
        raise SpecificationError("The binomial family needs the number of trials.")
    return np.asarray(trials, dtype=float)


def _binomial_loglik(link, y, eta, trials):
    y = np.asarray(y, dtype=float)
    eta = np.asarray(eta, dtype=float)
    n = np.ones_like(y) if trials is None else trials
    log_p, log_q = _log_p_q(link, eta)
    const = special.gammaln(n + 1.0) - special.gammaln(y + 1.0) - special.gammaln(n - y + 1.0)
    # y log p with y = 0 and p = 0 is 0 (and likewise for failures)
    return const + np.where(y > 0, y * log_p, 0.0) + np.where(n - y > 0, (n - y) * log_q, 0.0)


def _dh_over_var(link: str, eta: np.ndarray) -> np.ndarray:
    """(dh/dη) / (h (1 - h)), computed in log space for the probit's tails."""
    if link == "logit":
        return np.ones_like(eta)
    log_p, log_q = _log_p_q(link, eta)
    return np.exp(-0.5 * eta**2 - 0.5 * np.log(2.0 * np.pi) - log_p - log_q)


def _binomial_score(link, y, eta, trials):
    y = np.asarray(y, dtype=float)
    eta = np.asarray(eta, dtype=float)
    n = np.ones_like(y) if trials is None else trials
    return (y - n * _inverse_link(link, eta)) * _dh_over_var(link, eta)


def _binomial_weight(link, eta, trials):
    eta = np.asarray(eta, dtype=float)
    n = 1.0 if trials is None else trials
    return n * _d_inverse_link(link, eta) * _dh_over_var(link, eta)


def _binary_link_variance(link: str) -> float:
    """π²/3 for the logit (variance of the logistic distribution), 1 for the probit."""
    return float(np.pi**2 / 3.0) if link == "logit" else 1.0


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
