"""Response families as small declarative classes (bambi style).

A family owns everything that depends on the response distribution and its link; the
engines, the priors, the heritability scales and the simulator ask the family and never
compare family or link names. A family states its link, validates the response's support
with a clear error, and gives vectorised functions of the linear predictor η:

- :meth:`Family.inverse_link` (h, the mean per trial), :meth:`Family.d_inverse_link` (dh/dη),
  :meth:`Family.link_function` (g = h⁻¹);
- :meth:`Family.variance_function` (the distribution variance per trial as a function of η);
- :meth:`Family.loglik` (pointwise log-likelihood, with all normalising constants, as R's
  ``family()$aic`` uses), :meth:`Family.score` and :meth:`Family.fisher_weight` (for penalised
  iteratively reweighted least squares: the Laplace-ML engine);
- :meth:`Family.loglik_kernel` (the summed η-dependent part and its gradient, the hot path of
  the closed-form densities) with :meth:`Family.log_constant`, :meth:`Family.information`
  (Fisher information per trial and its log-slope) and :meth:`Family.expected_information`;
- :meth:`Family.link_variance`: the distribution-specific variance on the link scale
  (Nakagawa & Schielzeth 2010, Biol. Rev. 85:935; 2017, J. R. Soc. Interface 14:20170213),
  and :meth:`Family.latent_residual_variance` in any array module (numpy or
  ``pytensor.tensor``);
- :meth:`Family.pymc_likelihood`: the observed node of the PyMC model (PyMC imported there);
- what a route needs to know, as attributes it checks: :attr:`Family.canonical_link` (the
  laplace-marginal strategy), :attr:`Family.glmm_density_parametrisation` (the closed-form density),
  :attr:`Family.binary_trials` (observed and liability scales),
  :attr:`Family.simulation_intercept` (the simulator).

A new family is one subclass registered with :func:`register_family` (see
``docs/architecture.md``); a route whose methods it does not define tells the user so. The
names of QGglmm's models (de Villemereuil et al. 2016, Genetics 204:1281) are given by
:attr:`Family.qg_model`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from scipy import special

from bayeslmm.errors import DataError, SpecificationError

LOG_2PI = math.log(2.0 * math.pi)
# k in P(y = 1) ≈ F(η / √(1 + kV)) when η ~ N(Xβ, V), logit: Zeger, Liang & Albert (1988)
_LOGIT_ATTENUATION = (16.0 * math.sqrt(3.0) / (15.0 * math.pi)) ** 2
# Gauss–Hermite (probabilists') nodes for expectations over η ~ N(μ, V)
_GH_NODES, _GH_WEIGHTS = np.polynomial.hermite_e.hermegauss(20)
_GH_WEIGHTS = _GH_WEIGHTS / _GH_WEIGHTS.sum()


@dataclass(frozen=True)
class Family:
    """Base class: a response distribution and its link function.

    Subclasses set the class attributes and override the methods their routes need; a
    method left undefined raises ``NotImplementedError`` naming the family, and an
    attribute left at its default tells a route the family is not covered.

    Examples
    --------
    >>> fam = Bernoulli(link="probit")
    >>> fam.canonical_link, fam.marginal_attenuation, fam.glmm_density_parametrisation
    (False, 1.0, 'conditional')
    >>> value, score = fam.loglik_kernel(np.array([0.0, 1.0]), np.zeros(2))
    >>> round(value, 4), score.round(4).tolist()  # 2 log Φ(0); ∓φ(0)/Φ(0)
    (-1.3863, [-0.7979, 0.7979])
    """

    name: ClassVar[str] = "family"
    links: ClassVar[tuple[str, ...]] = ()
    needs_trials: ClassVar[bool] = False
    #: The response counts successes of Bernoulli trials (variance h(1 − h) per trial): the
    #: observed-scale variance of one-trial data is p̄(1 − p̄) and the liability scale applies.
    binary_trials: ClassVar[bool] = False
    #: The latent residual is the distribution's own link-scale variance and no residual
    #: effect is identifiable (binary traits): a latent-scale h² is then below 1.
    fixed_latent_residual: ClassVar[bool] = False
    #: Default parametrisation of the closed-form latent GLMM density
    #: (:mod:`bayeslmm.engines.bayes.glmm_density`): ``"conditional"`` or ``"partial"``,
    #: whichever mixed best for the family; None: the density does not cover the family
    #: (its PyMC model is sampled instead).
    glmm_density_parametrisation: ClassVar[str | None] = None
    #: Default intercept (link scale) of :func:`bayeslmm.datasets.simulate`; None: the
    #: simulator does not cover the family.
    simulation_intercept: ClassVar[float | None] = None
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

    def without_observation_level_effect(self) -> Family:
        """The same family without its observation-level effect (itself if it has none)."""
        return self

    def binary_response(self, trials: np.ndarray | None = None) -> bool:
        """Whether every record is a single 0/1 trial (Bernoulli, or binomial with at most
        one trial per row): no observation-level variance is identifiable and the liability
        scale applies.

        Examples
        --------
        >>> Bernoulli().binary_response(), Binomial().binary_response(np.array([1, 3]))
        (True, False)
        """
        if not self.binary_trials:
            return False
        if not self.needs_trials:
            return True
        return trials is not None and bool(np.all(np.asarray(trials) <= 1))

    @property
    def canonical_link(self) -> bool:
        """Whether the link is the canonical one, so that the observed information equals
        :meth:`fisher_weight` and is positive (what the laplace-marginal strategy needs)."""
        return False

    @property
    def marginal_attenuation(self) -> float | None:
        """k in E[h(η + l)] ≈ h(η / √(1 + kV)), l ~ N(0, V), for binary traits (Zeger,
        Liang & Albert 1988); None where no such approximation is used."""
        return None

    @property
    def threshold_liability(self) -> bool:
        """Whether each trial is a threshold of a normal liability with unit residual
        variance (binary traits with the probit link): a residual correlation with Gaussian
        traits can then be integrated out exactly (multi-trait GLMMs)."""
        return False

    @property
    def qg_model(self) -> str:
        """QGglmm's name for this family and link, e.g. ``"binom1.logit"``."""
        return self.name

    # -- the PyMC model's observed node ---------------------------------------------------
    def pymc_likelihood(
        self,
        name: str,
        eta: Any,
        y: np.ndarray,
        trials: np.ndarray | None = None,
        sigma: Any = None,
        dims: str = "obs",
    ) -> Any:
        """The observed variable ``name`` of a PyMC model, given the linear predictor ``eta``.

        Call it inside a ``pm.Model`` context; ``sigma`` is the Gaussian residual SD.
        """
        raise NotImplementedError(
            f"The {self.name} family has no PyMC likelihood; define "
            f"{type(self).__name__}.pymc_likelihood, or fit it with method='laplace'."
        )

    # -- priors and simulation --------------------------------------------------------------
    def link_location(
        self, y: np.ndarray, trials: np.ndarray | None = None, offset: np.ndarray | None = None
    ) -> float:
        """The mean response on the link scale (the centre of the intercept prior)."""
        off = 0.0 if offset is None else float(np.mean(offset))
        return float(self.link_function(float(np.mean(y)))) - off

    def simulation_variances(self, h2: float, total_variance: float) -> tuple[float, float]:
        """(V_A, V_e) of a simulated trait with latent-scale heritability ``h2``.

        V_e is the variance of the residual (observation-level) effect added to η; with a
        :attr:`fixed_latent_residual` it is 0 and V_A = h2 / (1 − h2) × the link variance.
        """
        if self.fixed_latent_residual:
            return h2 / (1.0 - h2) * float(self.link_variance()), 0.0
        return h2 * total_variance, (1.0 - h2) * total_variance

    def sample_response(
        self, eta: np.ndarray, var_residual: float, rng: np.random.Generator
    ) -> np.ndarray:
        """Responses drawn given η, with a residual effect N(0, ``var_residual``) added."""
        raise NotImplementedError(f"The {self.name} family cannot be simulated.")

    def draw_response(
        self, eta: np.ndarray, rng: np.random.Generator, trials: np.ndarray | None = None
    ) -> np.ndarray:
        """Responses drawn from p(y | η): the family's distribution at the linear predictor
        ``eta`` (any shape; ``trials`` broadcast against it), no residual effect added.

        Examples
        --------
        >>> rng = np.random.default_rng(0)
        >>> Binomial().draw_response(np.zeros(3), rng, trials=np.array([0, 2, 5])).tolist()
        [0, 1, 2]
        """
        raise NotImplementedError(
            f"The {self.name} family has no draws given η here; define "
            f"{type(self).__name__}.draw_response."
        )

    # -- link and moments (per trial), vectorised over η ---------------------------------
    def inverse_link(self, eta: np.ndarray) -> np.ndarray:
        """The mean per trial h(η) (the expected count for Poisson)."""
        return _inverse_link(self.link, np.asarray(eta, dtype=float))

    def d_inverse_link(self, eta: np.ndarray) -> np.ndarray:
        """dh/dη, the slope of the mean per trial on the linear predictor."""
        return _d_inverse_link(self.link, np.asarray(eta, dtype=float))

    def link_function(self, mu: np.ndarray | float) -> np.ndarray:
        """g(μ) = h⁻¹(μ): the linear predictor of a mean per trial."""
        return _link_function(self.link, np.asarray(mu, dtype=float))

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

    def response_cgf(
        self, t: np.ndarray, eta: np.ndarray, trials: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cumulant-generating function of one response given η, and its t-derivatives.

        K(t) = log E[exp(t y) | η], K'(t) and K''(t), elementwise (``t``, ``eta`` and
        ``trials`` broadcast together). K'(0) is the mean and K''(0) the variance of y; the
        association scan's saddle-point p-values are built from them.

        Examples
        --------
        >>> K, K1, K2 = Bernoulli().response_cgf(np.array([0.0]), np.array([0.0]))
        >>> K.item(), K1.item(), K2.item()  # log 1, mean ½, variance ¼
        (0.0, 0.5, 0.25)
        """
        raise NotImplementedError(
            f"The {self.name} family has no cumulant-generating function here; define "
            f"{type(self).__name__}.response_cgf."
        )

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

    def closed_form_moments(self, eta: np.ndarray, V: np.ndarray) -> dict[str, np.ndarray]:
        """E over l ~ N(0, V) of h(η + l) (``"h"``), h² (``"h2"``), the variance function
        (``"v"``) and h' (``"dh"``), those with a closed form; the observed scale
        (:mod:`bayeslmm.results.scales`) takes the others by Gauss–Hermite quadrature."""
        return {}

    # -- the closed-form densities' pieces (numpy; bound once, called per gradient) -------
    def loglik_kernel(
        self, y: np.ndarray, eta: np.ndarray, trials: np.ndarray | None = None
    ) -> tuple[float, np.ndarray]:
        """(Σ_i log p(y_i | η_i) − Σ_i :meth:`log_constant`, its gradient in η).

        The η-dependent part of the log-likelihood and the score, in one pass: the hot path
        of the closed-form densities. The default sums :meth:`loglik` and calls
        :meth:`score` (its constant is then 0).
        """
        return float(np.sum(self.loglik(y, eta, trials))), self.score(y, eta, trials)

    def log_constant(self, y: np.ndarray, trials: np.ndarray | None = None) -> np.ndarray:
        """The η-free part of log p(y_i | η_i), per record (0 unless the family splits it off
        in :meth:`loglik_kernel`)."""
        return np.zeros(np.shape(y))

    def information(self, eta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fisher information of one trial at η, w = −E ∂²log p/∂η², and d log w/dη.

        With the canonical link, n w is also the observed information and −d log w/dη the
        third derivative of log p over the second (the laplace-marginal strategy's gradient).
        """
        raise NotImplementedError(f"The {self.name} family has no information function.")

    def expected_information(self, mu: np.ndarray, V: float) -> tuple[np.ndarray, np.ndarray]:
        """E[w(η)] over η ~ N(μ, V) per entry of μ, and its derivative in V.

        20-point Gauss–Hermite quadrature of :meth:`information`, differentiated as the
        quadrature it is (so that a density built on it has an exact gradient).
        """
        root = math.sqrt(V)
        w, slope = self.information(mu[:, None] + root * _GH_NODES[None, :])
        return w @ _GH_WEIGHTS, ((w * slope) @ (_GH_WEIGHTS * _GH_NODES)) / (2.0 * root)

    def moment_latent_variance(self, y: np.ndarray, mean: float) -> float | None:
        """Latent variance (random effects together) from the moments of y, given the mean
        prediction ``mean`` of the model without random effects; None if the moments say
        nothing (one binary record per individual)."""
        return None

    def saturated_information(
        self, y: np.ndarray, trials: np.ndarray | None = None
    ) -> np.ndarray | None:
        """Information of each record at its own saturated fit, when that is finite and
        informative (counts); None otherwise."""
        return None


@dataclass(frozen=True)
class Gaussian(Family):
    """Normal response, identity link."""

    name: ClassVar[str] = "gaussian"
    links: ClassVar[tuple[str, ...]] = ("identity",)
    simulation_intercept: ClassVar[float | None] = 0.0

    @property
    def is_gaussian(self) -> bool:
        return True

    @property
    def canonical_link(self) -> bool:
        return True

    @property
    def qg_model(self) -> str:
        return "Gaussian"

    def variance_function(self, eta):
        # the residual is a random effect of the latent scale (in V_P), not a distribution
        # variance on top of it
        return np.zeros_like(np.asarray(eta, dtype=float))

    def closed_form_moments(self, eta, V):
        return {"h": eta, "h2": eta**2 + V, "v": np.zeros_like(eta), "dh": np.ones_like(eta)}

    def pymc_likelihood(self, name, eta, y, trials=None, sigma=None, dims="obs"):
        import pymc as pm

        return pm.Normal(name, mu=eta, sigma=sigma, observed=np.asarray(y), dims=dims)

    def sample_response(self, eta, var_residual, rng):
        return eta + rng.normal(0.0, np.sqrt(var_residual), size=np.shape(eta))


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
    # partial non-centring mixed better than conditional centring on 2 of 4 data sets and
    # costs less per gradient (benchmarks/glmm_parametrisations.py)
    glmm_density_parametrisation: ClassVar[str | None] = "partial"
    simulation_intercept: ClassVar[float | None] = 1.0
    overdispersion: bool = True

    def validate(self, y, trials=None):
        _check_integers(y, "poisson")

    @property
    def canonical_link(self) -> bool:
        return True

    @property
    def qg_model(self) -> str:
        return "Poisson.log"

    def closed_form_moments(self, eta, V):
        """Lognormal moments (QGglmm's ``qg.Poisson.log``)."""
        mean = np.exp(eta + V / 2.0)
        return {"h": mean, "h2": np.exp(2.0 * eta + 2.0 * V), "v": mean, "dh": mean}

    def loglik_kernel(self, y, eta, trials=None):
        mu = np.exp(eta)
        return float(y @ eta - mu.sum()), y - mu

    def log_constant(self, y, trials=None):
        return -special.gammaln(np.asarray(y, dtype=float) + 1.0)

    def information(self, eta):
        mu = np.exp(eta)
        return mu, np.ones_like(mu)

    def expected_information(self, mu, V):
        """exp(μ + V/2) exactly (the lognormal mean)."""
        f = np.exp(mu + 0.5 * V)
        return f, 0.5 * f

    def moment_latent_variance(self, y, mean):
        """ln(1 + (Var y − E y) / λ̄²): the lognormal-Poisson moments (overdispersion
        beyond the Poisson variance), floored at a tiny positive excess."""
        y = np.asarray(y, dtype=float)
        excess = max(float(np.var(y)) - float(y.mean()), 1e-3 * float(y.mean()))
        return math.log1p(excess / mean**2)

    def saturated_information(self, y, trials=None):
        """y + ½, the Poisson information at the saturated fit η = log(y + ½)."""
        return np.asarray(y, dtype=float) + 0.5

    def pymc_likelihood(self, name, eta, y, trials=None, sigma=None, dims="obs"):
        import pymc as pm

        observed = np.asarray(y).astype("int64")
        return pm.Poisson(name, mu=pm.math.exp(eta), observed=observed, dims=dims)

    def link_location(self, y, trials=None, offset=None):
        off = 0.0 if offset is None else float(np.mean(offset))
        # floored: log(0) for an all-zero sample would centre the intercept at −∞
        return float(np.log(max(float(np.mean(y)), 0.1))) - off

    def sample_response(self, eta, var_residual, rng):
        return rng.poisson(np.exp(eta + rng.normal(0.0, np.sqrt(var_residual), size=np.shape(eta))))

    def draw_response(self, eta, rng, trials=None):
        return rng.poisson(np.exp(np.asarray(eta, dtype=float)))

    def variance_function(self, eta):
        return np.exp(np.asarray(eta, dtype=float))

    def response_cgf(self, t, eta, trials=None):
        """μ(eᵗ − 1) with μ = exp(η); both derivatives are μ eᵗ."""
        tilted = np.exp(np.asarray(eta, dtype=float) + np.asarray(t, dtype=float))
        mu = np.exp(np.asarray(eta, dtype=float))
        return tilted - mu, tilted, tilted

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

    def without_observation_level_effect(self) -> Poisson:
        return dataclasses.replace(self, overdispersion=False)

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
class _BinaryTrials(Family):
    """What Bernoulli and binomial responses share: successes of trials with a logit or
    probit link, the link's latent residual (π²/3 or 1) and no identifiable residual effect."""

    links: ClassVar[tuple[str, ...]] = ("logit", "probit")
    binary_trials: ClassVar[bool] = True
    fixed_latent_residual: ClassVar[bool] = True
    # conditional centring: ESS of σ_a² 1229 of 2000 draws against 177 non-centred at
    # n = 1000 (benchmarks/glmm_parametrisations.py)
    glmm_density_parametrisation: ClassVar[str | None] = "conditional"

    @property
    def canonical_link(self) -> bool:
        return self.link == "logit"

    @property
    def marginal_attenuation(self) -> float | None:
        """1 for the probit (exact), (16√3 / 15π)² for the logit (Zeger et al. 1988)."""
        return 1.0 if self.link == "probit" else _LOGIT_ATTENUATION

    @property
    def threshold_liability(self) -> bool:
        return self.link == "probit"

    def variance_function(self, eta):
        return _binary_variance(self.link, np.asarray(eta, dtype=float))

    def response_cgf(self, t, eta, trials=None):
        """n log(1 − p + p eᵗ), in log space: with the tilted success probability
        π = p eᵗ / (1 − p + p eᵗ), K' = n π and K'' = n π (1 − π)."""
        t = np.asarray(t, dtype=float)
        log_p, log_q = _log_p_q(self.link, np.asarray(eta, dtype=float))
        n = 1.0 if trials is None else np.asarray(trials, dtype=float)
        log_odds = t + log_p - log_q
        return (
            n * np.logaddexp(log_q, log_p + t),
            n * special.expit(log_odds),
            n * special.expit(log_odds) * special.expit(-log_odds),
        )

    def link_variance(self, mean=None, method="lognormal"):
        return _binary_link_variance(self.link)

    def latent_residual_variance(self, eta_fixed, var_random, var_olre, xp=np):
        """π²/3 (logit) or 1 (probit)."""
        return _binary_link_variance(self.link)

    def draw_response(self, eta, rng, trials=None):
        eta = np.asarray(eta, dtype=float)
        n = np.ones(eta.shape, dtype=np.int64) if trials is None else np.asarray(trials, "int64")
        return rng.binomial(np.broadcast_to(n, eta.shape), self.inverse_link(eta))

    def closed_form_moments(self, eta, V):
        if self.link != "probit":
            return {}
        # E Φ(η + l) = Φ(η/√(1+V)), E φ(η + l) = φ(η/√(1+V))/√(1+V) (QGglmm's
        # qg.binom1.probit); E Φ² has no closed form
        s = np.sqrt(1.0 + V)
        z = eta / s
        return {"h": special.ndtr(z), "dh": np.exp(-0.5 * z * z - 0.5 * LOG_2PI) / s}

    def loglik_kernel(self, y, eta, trials=None):
        n = np.ones_like(y) if trials is None else trials
        if self.link == "logit":
            # log(1 + e^η) = max(η, 0) + log1p(e^−|η|): one exp, no overflow
            softplus = np.maximum(eta, 0.0) + np.log1p(np.exp(-np.abs(eta)))
            return float(y @ eta - n @ softplus), y - n * special.expit(eta)
        log_p, log_q = special.log_ndtr(eta), special.log_ndtr(-eta)
        log_phi = -0.5 * eta * eta - 0.5 * LOG_2PI
        value = float(y @ log_p + (n - y) @ log_q)
        return value, y * np.exp(log_phi - log_p) - (n - y) * np.exp(log_phi - log_q)

    def log_constant(self, y, trials=None):
        y = np.asarray(y, dtype=float)
        n = np.ones_like(y) if trials is None else np.asarray(trials, dtype=float)
        return special.gammaln(n + 1.0) - special.gammaln(y + 1.0) - special.gammaln(n - y + 1.0)

    def information(self, eta):
        if self.link == "logit":
            p = special.expit(eta)
            return p * (1.0 - p), 1.0 - 2.0 * p
        log_phi = -0.5 * eta * eta - 0.5 * LOG_2PI
        log_p, log_q = special.log_ndtr(eta), special.log_ndtr(-eta)
        w = np.exp(2.0 * log_phi - log_p - log_q)
        # d log w / dη = −2η − φ/Φ + φ/(1 − Φ)
        return w, -2.0 * eta - np.exp(log_phi - log_p) + np.exp(log_phi - log_q)

    def link_location(self, y, trials=None, offset=None):
        n = np.ones_like(y) if trials is None else trials
        # clipped: an all-case or all-control sample would centre the intercept at ±∞
        p = float(np.clip(np.sum(y) / np.sum(n), 0.02, 0.98))
        return float(self.link_function(p))

    def _pymc_probability(self, eta: Any) -> dict[str, Any]:
        import pymc as pm

        return {"logit_p": eta} if self.link == "logit" else {"p": pm.math.invprobit(eta)}


@dataclass(frozen=True)
class Bernoulli(_BinaryTrials):
    """Binary 0/1 response, logit or probit link."""

    name: ClassVar[str] = "bernoulli"
    simulation_intercept: ClassVar[float | None] = 0.0

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

    def loglik(self, y, eta, trials=None):
        return _binomial_loglik(self.link, y, eta, None)

    def score(self, y, eta, trials=None):
        return _binomial_score(self.link, y, eta, None)

    def fisher_weight(self, eta, trials=None):
        return _binomial_weight(self.link, eta, None)

    def pymc_likelihood(self, name, eta, y, trials=None, sigma=None, dims="obs"):
        import pymc as pm

        observed = np.asarray(y).astype("int64")
        return pm.Bernoulli(name, observed=observed, dims=dims, **self._pymc_probability(eta))

    def sample_response(self, eta, var_residual, rng):
        if var_residual > 0:
            eta = eta + rng.normal(0.0, np.sqrt(var_residual), size=np.shape(eta))
        return (rng.random(np.shape(eta)) < self.inverse_link(eta)).astype(int)


@dataclass(frozen=True)
class Binomial(_BinaryTrials):
    """Successes out of a number of trials, logit or probit link."""

    name: ClassVar[str] = "binomial"
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

    def loglik(self, y, eta, trials=None):
        return _binomial_loglik(self.link, y, eta, _require_trials(trials))

    def score(self, y, eta, trials=None):
        return _binomial_score(self.link, y, eta, _require_trials(trials))

    def fisher_weight(self, eta, trials=None):
        return _binomial_weight(self.link, eta, _require_trials(trials))

    def pymc_likelihood(self, name, eta, y, trials=None, sigma=None, dims="obs"):
        import pymc as pm

        n = np.asarray(_require_trials(trials)).astype("int64")
        observed = np.asarray(y).astype("int64")
        return pm.Binomial(name, n=n, observed=observed, dims=dims, **self._pymc_probability(eta))


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


def _link_function(link: str, mu: np.ndarray) -> np.ndarray:
    if link == "identity":
        return mu
    if link == "log":
        return np.log(mu)
    if link == "logit":
        return special.logit(mu)
    if link == "probit":
        return special.ndtri(mu)
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


#: The family table: :func:`get_family` (and so ``family="NAME"`` everywhere) looks names up
#: here; :func:`register_family` adds to it.
FAMILIES: dict[str, type[Family]] = {
    cls.name: cls for cls in (Gaussian, Poisson, Bernoulli, Binomial)
}


def register_family(cls: type[Family]) -> type[Family]:
    """Add a :class:`Family` subclass to the family table under ``cls.name``.

    Usable as a class decorator. Afterwards ``family="NAME"`` (and ``link=``) resolve to it
    in :func:`bayeslmm.specify`, :class:`bayeslmm.LMM` and the command line.

    Examples
    --------
    >>> @register_family
    ... @dataclass(frozen=True)
    ... class Counts(Poisson):
    ...     name: ClassVar[str] = "counts"
    >>> get_family("counts")
    Counts(link='log', overdispersion=True)
    >>> del FAMILIES["counts"]
    """
    if not (isinstance(cls, type) and issubclass(cls, Family)):
        raise TypeError(f"register_family takes a Family subclass; got {cls!r}.")
    if not cls.links:
        raise SpecificationError(
            f"The family class {cls.__name__} declares no links; set links = ('log',) or "
            "the links it supports."
        )
    known = FAMILIES.get(cls.name)
    if known is not None and known is not cls:
        raise SpecificationError(
            f"A family named '{cls.name}' is already registered ({known.__name__}); give "
            f"{cls.__name__} another name, or delete FAMILIES['{cls.name}'] first."
        )
    FAMILIES[cls.name] = cls
    return cls


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
