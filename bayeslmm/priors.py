"""Default priors, scaled to the data, and the user's overrides.

Every prior is *proper* and *weakly informative*: it fixes the scale of each parameter from
the data (as brms and rstanarm do) so that results do not depend on the units of ``y`` or of
the covariates, while leaving the posterior dominated by the likelihood for any reasonable
sample size.

Defaults (Gaussian family; ``s_y`` = sd(y), ``s_j`` = sd of covariate j)
----------------------------------------------------------------------
===========================  ================================================================
parameter (key)              default prior
===========================  ================================================================
``Intercept``                Normal(mean(y), 2.5·s_y). The intercept is that of the model with
                             *centred* covariates (rstanarm's convention), so its prior does
                             not depend on where the covariates' zero lies; the reported
                             ``beta["Intercept"]`` is transformed back to the uncentred one.
``b`` / ``b_<name>``         Normal(0, 2.5·s_y/s_j) for each slope (rstanarm's autoscale).
``sd_<group>``               HalfStudentT(ν=3, 2.5·s_y) for an intercept; 2.5·s_y/rms(x_j) for a
                             random slope on covariate j (brms' default ``student_t(3, 0,
                             2.5·sd)``, with sd instead of brms' MAD).
``cor_<group>``              LKJ(η=2) for the correlation of correlated random slopes
                             (``(1 + x | g)``): mild shrinkage towards zero correlation.
``sigma``                    HalfStudentT(ν=3, 2.5·s_y) for the residual SD.
``sigma_Intercept``          Normal(log s_y, 1.5) for the intercept of log σ (``sigma="~ env"``).
``sigma_b``                  Normal(0, 1/s_j) for the slopes of log σ.
===========================  ================================================================

Non-Gaussian families are scaled on the link scale instead of by sd(y): ``Intercept`` ~
Normal(link(mean y), 2.5), slopes ~ Normal(0, 2.5/s_j), ``sd_<group>`` ~ HalfStudentT(3, 1)
(a random effect with SD 1 on the logit/log scale is already large), and for the Poisson
observation-level effect ``sd_olre`` ~ HalfStudentT(3, 1).

Priors on heritability (how geneticists think)
----------------------------------------------
``priors={"h2": ("beta", a, b)}`` re-parametrises a Gaussian model with one random term
(intercept-only): the phenotypic variance σ²_P = σ_g² + σ_e² and h² get the priors, and
σ_g² = h² σ²_P, σ_e² = (1 - h²) σ²_P. With several intercept-only random terms the shares of
σ²_P of the terms and the residual get a Dirichlet prior, ``priors={"shares": ("dirichlet",
[a_1, ..., a_k, a_residual])}`` (default all ones, i.e. uniform on the simplex). The total
gets ``"total_sd"`` (default HalfStudentT(3, 2.5·s_y) on σ_P) or ``"total_variance"``, e.g.
``("scaled_inv_chi2", nu, s2)`` on σ²_P. Giving any of ``h2``, ``shares``, ``total_sd`` or
``total_variance`` switches to this parametrisation.

Syntax of an override
---------------------
A tuple ``(name, *parameters)``:

``("normal", mu, sigma)``, ``("halfnormal", sigma)``, ``("halfstudentt", nu, sigma)``,
``("halfcauchy", beta)``, ``("exponential", lam)``, ``("beta", a, b)``,
``("invgamma", alpha, beta)``, ``("scaled_inv_chi2", nu, s2)`` (= InverseGamma(ν/2, ν s²/2)),
``("dirichlet", [a, ...])``, ``("lkj", eta)``.

Example: ``priors={"sd_id": ("halfnormal", 10.0), "sigma": ("exponential", 0.1),
"b_sex[male]": ("normal", 0, 5)}``.

Prior families
--------------
Each family is one :class:`PriorFamily` subclass in the table :data:`PRIORS`: its name,
parameter names, support, readable name, the PyMC variable it creates and, for positive
families, the closed-form log density the spectral sampler evaluates. A new family is one
more class passed to :func:`register_prior`; :class:`Prior`, the PyMC builder and the
closed-form densities read everything from the table.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np

from bayeslmm.errors import SpecificationError
from bayeslmm.spec import ModelSpec, RandomTerm

#: log(2π), for the normalising constants of the closed-form densities.
_LOG_2PI = math.log(2.0 * math.pi)

#: The supports a prior family can declare (what kind of parameter it may be put on).
SUPPORTS = ("real", "positive", "unit", "simplex", "correlation")

#: A function of t = log θ returning (log f(e^t), d/dt of it): see
#: :meth:`PriorFamily.log_density_of_log`.
LogDensityOfLog = Callable[[float], tuple[float, float]]


class PriorFamily:
    """One prior family: what ``("name", *parameters)`` means, declared in one place.

    Subclass it, set the class attributes, implement the methods that apply and pass the
    class to :func:`register_prior`; :class:`Prior`, the PyMC builder and the closed-form
    spectral densities then accept the family by its name.

    Attributes
    ----------
    name : str
        Lower-case key in ``priors={...: (name, *parameters)}``.
    parameter_names : tuple of str
        Readable names of the parameters, in order (messages use them).
    vector : bool
        True when the family takes one vector parameter of any length (Dirichlet).
    support : str
        One of :data:`SUPPORTS`: ``"positive"`` families can be put on SDs and variances.
    readable : str
        The name in reports, e.g. ``HalfStudentT`` (default: ``name`` capitalised).
    real_parameters : tuple of int
        Indices of the parameters that may be zero or negative (a normal's mean); every other
        parameter must be strictly positive.

    Examples
    --------
    >>> PRIORS["halfnormal"].support, PRIORS["halfnormal"].parameter_names
    ('positive', ('scale (sigma)',))
    >>> value, slope = PRIORS["exponential"].log_density_of_log([2.0])(0.0)
    >>> round(value, 6), slope   # log 2 − 2 at θ = 1, and d/dt = −λθ
    (-1.306853, -2.0)
    """

    name: ClassVar[str] = ""
    parameter_names: ClassVar[tuple[str, ...]] = ()
    vector: ClassVar[bool] = False
    support: ClassVar[str] = "real"
    readable: ClassVar[str] = ""
    real_parameters: ClassVar[tuple[int, ...]] = ()

    @property
    def n_params(self) -> int | None:
        """Number of parameters; None for one vector parameter of any length."""
        return None if self.vector else len(self.parameter_names)

    @property
    def display_name(self) -> str:
        """The name in reports (``readable``, or ``name`` capitalised)."""
        return self.readable or self.name.capitalize()

    def pymc(self, name: str, params: Sequence[np.ndarray], dims: Any = None, **kwargs: Any) -> Any:
        """The PyMC random variable ``name`` in the current model context.

        ``params`` are the prior's parameters as float arrays; ``dims`` and ``kwargs`` go to
        the PyMC distribution.
        """
        raise SpecificationError(f"A '{self.name}' prior cannot be used for parameter '{name}'.")

    def pymc_dist(self, params: Sequence[np.ndarray], shape: int) -> Any:
        """An unnamed PyMC distribution of ``shape`` values (the SDs of ``LKJCholeskyCov``).

        ``params`` are already broadcast to ``(shape,)`` (fresh, writeable arrays).
        """
        usable = [f.name for f in PRIORS.values() if f.has("pymc_dist")]
        raise SpecificationError(
            f"A '{self.name}' prior cannot be used for the SDs of correlated random effects; "
            f"use {', '.join(usable[:-1])} or {usable[-1]}."
        )

    def log_density_of_log(self, params: Sequence[float]) -> LogDensityOfLog:
        """log f(θ) of a positive-support prior as a function of t = log θ, with d/dt.

        Returns a function mapping t to (log f(e^t), θ f'(θ)/f(θ)); ``params`` are floats and
        constants are computed once, outside the returned function. The density is PyMC's
        (normalised), without the log transform's Jacobian, so the closed-form spectral
        posterior equals the PyMC model's ``logp``.
        """
        raise ValueError(f"No closed-form density for a '{self.name}' prior on a positive scale.")

    def has(self, method: str) -> bool:
        """Whether this family implements ``method`` (``pymc``, ``pymc_dist`` or
        ``log_density_of_log``) rather than inheriting the refusal."""
        return getattr(type(self), method) is not getattr(PriorFamily, method)


_F = TypeVar("_F", bound=type[PriorFamily])

#: The prior families by name, in registration order: the one table every consumer reads.
PRIORS: dict[str, PriorFamily] = {}


def register_prior(cls: _F) -> _F:
    """Add a :class:`PriorFamily` subclass to :data:`PRIORS` under ``cls.name``.

    Usable as a class decorator. Afterwards ``("name", *parameters)`` is accepted wherever a
    prior is (``priors={...}`` of :func:`bayeslmm.specify`, :class:`bayeslmm.LMM`).

    Examples
    --------
    >>> import pymc as pm
    >>> @register_prior
    ... class Flat(PriorFamily):
    ...     name = "flat"
    ...     def pymc(self, name, params, dims=None, **kwargs):
    ...         return pm.Flat(name, dims=dims, **kwargs)
    >>> Prior("flat", ()).describe()
    'Flat()'
    >>> del PRIORS["flat"]
    """
    if not (isinstance(cls, type) and issubclass(cls, PriorFamily)):
        raise TypeError(f"register_prior takes a PriorFamily subclass; got {cls!r}.")
    name = cls.name
    if not name or name != name.lower():
        raise SpecificationError(
            f"The prior family class {cls.__name__} needs a lower-case name (got {name!r}); "
            "set name = 'gamma', for example."
        )
    if cls.support not in SUPPORTS:
        raise SpecificationError(
            f"The prior family '{name}' declares support {cls.support!r}; use one of {SUPPORTS}."
        )
    known = PRIORS.get(name)
    if known is not None and type(known) is not cls:
        raise SpecificationError(
            f"A prior family named '{name}' is already registered ({type(known).__name__}); "
            f"give {cls.__name__} another name, or delete PRIORS['{name}'] first."
        )
    PRIORS[name] = cls()
    return cls


class _FamilyView(Mapping[str, Any]):
    """A read-only view of one attribute of every family in :data:`PRIORS` (kept for the
    names this module exported before the table existed)."""

    def __init__(self, attribute: str) -> None:
        self._attribute = attribute

    def __getitem__(self, key: str) -> Any:
        return getattr(PRIORS[key], self._attribute)

    def __iter__(self) -> Iterator[str]:
        return iter(PRIORS)

    def __len__(self) -> int:
        return len(PRIORS)

    def __repr__(self) -> str:
        return repr(dict(self))


class _SupportView(Sequence[str]):
    """The names of the families with one support, in table order (read-only, live)."""

    def __init__(self, support: str) -> None:
        self._support = support

    def _names(self) -> list[str]:
        return [k for k, f in PRIORS.items() if f.support == self._support]

    def __getitem__(self, index: Any) -> Any:
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())

    def __contains__(self, name: object) -> bool:
        family = PRIORS.get(name) if isinstance(name, str) else None
        return family is not None and family.support == self._support

    def __repr__(self) -> str:
        return repr(tuple(self._names()))


#: Parameter count of each prior family (None: a vector), a view of :data:`PRIORS`.
PRIOR_FAMILIES: Mapping[str, int | None] = _FamilyView("n_params")

#: Names of each family's parameters, for messages (a view of :data:`PRIORS`).
PRIOR_PARAMETER_NAMES: Mapping[str, tuple[str, ...]] = _FamilyView("parameter_names")

#: Families with positive support (usable for SDs and variances), a view of :data:`PRIORS`.
POSITIVE: Sequence[str] = _SupportView("positive")


# -- the built-in families ----------------------------------------------------------------


@register_prior
class Normal(PriorFamily):
    """Normal(mean, sigma): fixed effects and the log-σ regression."""

    name = "normal"
    parameter_names = ("mean", "scale (sigma)")
    real_parameters = (0,)

    def pymc(self, name: str, params: Sequence[np.ndarray], dims: Any = None, **kwargs: Any) -> Any:
        import pymc as pm

        return pm.Normal(name, mu=params[0], sigma=params[1], dims=dims, **kwargs)


@register_prior
class HalfNormal(PriorFamily):
    """HalfNormal(sigma) on a positive parameter."""

    name = "halfnormal"
    parameter_names = ("scale (sigma)",)
    support = "positive"
    readable = "HalfNormal"

    def pymc(self, name: str, params: Sequence[np.ndarray], dims: Any = None, **kwargs: Any) -> Any:
        import pymc as pm

        return pm.HalfNormal(name, sigma=params[0], dims=dims, **kwargs)

    def pymc_dist(self, params: Sequence[np.ndarray], shape: int) -> Any:
        import pymc as pm

        return pm.HalfNormal.dist(sigma=params[0], shape=shape)

    def log_density_of_log(self, params: Sequence[float]) -> LogDensityOfLog:
        (sd,) = params
        const = math.log(2.0) - 0.5 * _LOG_2PI - math.log(sd)

        def halfnormal(t: float) -> tuple[float, float]:
            z2 = math.exp(2.0 * t) / sd**2
            return const - 0.5 * z2, -z2

        return halfnormal


@register_prior
class HalfStudentT(PriorFamily):
    """HalfStudentT(nu, sigma): the default prior of every SD (brms' ``student_t(3, 0, s)``)."""

    name = "halfstudentt"
    parameter_names = ("degrees of freedom (nu)", "scale (sigma)")
    support = "positive"
    readable = "HalfStudentT"

    def pymc(self, name: str, params: Sequence[np.ndarray], dims: Any = None, **kwargs: Any) -> Any:
        import pymc as pm

        return pm.HalfStudentT(name, nu=params[0], sigma=params[1], dims=dims, **kwargs)

    def pymc_dist(self, params: Sequence[np.ndarray], shape: int) -> Any:
        import pymc as pm

        return pm.HalfStudentT.dist(nu=params[0], sigma=params[1], shape=shape)

    def log_density_of_log(self, params: Sequence[float]) -> LogDensityOfLog:
        nu, sd = params
        const = (
            math.log(2.0)
            + math.lgamma((nu + 1.0) / 2.0)
            - math.lgamma(nu / 2.0)
            - 0.5 * math.log(nu * math.pi * sd**2)
        )

        def halfstudentt(t: float) -> tuple[float, float]:
            u = math.exp(2.0 * t) / (nu * sd**2)
            return const - 0.5 * (nu + 1.0) * math.log1p(u), -(nu + 1.0) * u / (1.0 + u)

        return halfstudentt


@register_prior
class HalfCauchy(PriorFamily):
    """HalfCauchy(beta) on a positive parameter."""

    name = "halfcauchy"
    parameter_names = ("scale (beta)",)
    support = "positive"
    readable = "HalfCauchy"

    def pymc(self, name: str, params: Sequence[np.ndarray], dims: Any = None, **kwargs: Any) -> Any:
        import pymc as pm

        return pm.HalfCauchy(name, beta=params[0], dims=dims, **kwargs)

    def pymc_dist(self, params: Sequence[np.ndarray], shape: int) -> Any:
        import pymc as pm

        return pm.HalfCauchy.dist(beta=params[0], shape=shape)

    def log_density_of_log(self, params: Sequence[float]) -> LogDensityOfLog:
        (beta,) = params
        const = math.log(2.0) - math.log(math.pi) - math.log(beta)

        def halfcauchy(t: float) -> tuple[float, float]:
            u = math.exp(2.0 * t) / beta**2
            return const - math.log1p(u), -2.0 * u / (1.0 + u)

        return halfcauchy


@register_prior
class Exponential(PriorFamily):
    """Exponential(lam), rate parametrisation."""

    name = "exponential"
    parameter_names = ("rate (lam)",)
    support = "positive"

    def pymc(self, name: str, params: Sequence[np.ndarray], dims: Any = None, **kwargs: Any) -> Any:
        import pymc as pm

        return pm.Exponential(name, lam=params[0], dims=dims, **kwargs)

    def pymc_dist(self, params: Sequence[np.ndarray], shape: int) -> Any:
        import pymc as pm

        return pm.Exponential.dist(lam=params[0], shape=shape)

    def log_density_of_log(self, params: Sequence[float]) -> LogDensityOfLog:
        (lam,) = params
        const = math.log(lam)

        def exponential(t: float) -> tuple[float, float]:
            value = lam * math.exp(t)
            return const - value, -value

        return exponential


@register_prior
class Beta(PriorFamily):
    """Beta(a, b) on a share: h² in the variance-share parametrisation."""

    name = "beta"
    parameter_names = ("shape a", "shape b")
    support = "unit"

    def pymc(self, name: str, params: Sequence[np.ndarray], dims: Any = None, **kwargs: Any) -> Any:
        import pymc as pm

        return pm.Beta(name, alpha=params[0], beta=params[1], dims=dims, **kwargs)


@register_prior
class InverseGamma(PriorFamily):
    """InverseGamma(alpha, beta) on a positive parameter (a variance, typically)."""

    name = "invgamma"
    parameter_names = ("shape (alpha)", "scale (beta)")
    support = "positive"
    readable = "InverseGamma"

    def shape_scale(self, params: Sequence[Any]) -> tuple[Any, Any]:
        """(alpha, beta) of the inverse gamma from this family's parameters."""
        return params[0], params[1]

    def pymc(self, name: str, params: Sequence[np.ndarray], dims: Any = None, **kwargs: Any) -> Any:
        import pymc as pm

        alpha, beta = self.shape_scale(params)
        return pm.InverseGamma(name, alpha=alpha, beta=beta, dims=dims, **kwargs)

    def log_density_of_log(self, params: Sequence[float]) -> LogDensityOfLog:
        a, b = self.shape_scale(params)
        const = a * math.log(b) - math.lgamma(a)

        def invgamma(t: float) -> tuple[float, float]:
            value = b * math.exp(-t)
            return const - (a + 1.0) * t - value, -(a + 1.0) + value

        return invgamma


@register_prior
class ScaledInvChi2(InverseGamma):
    """Scaled-inverse-χ²(nu, s2) = InverseGamma(ν/2, ν s²/2)."""

    name = "scaled_inv_chi2"
    parameter_names = ("degrees of freedom (nu)", "scale (s2)")
    readable = "ScaledInvChi2"

    def shape_scale(self, params: Sequence[Any]) -> tuple[Any, Any]:
        nu, s2 = params
        return nu / 2.0, nu * s2 / 2.0


@register_prior
class Dirichlet(PriorFamily):
    """Dirichlet([a_1, ..., a_k]) on the variance shares of several terms and the residual."""

    name = "dirichlet"
    parameter_names = ("concentrations",)
    vector = True
    support = "simplex"

    def pymc(self, name: str, params: Sequence[np.ndarray], dims: Any = None, **kwargs: Any) -> Any:
        import pymc as pm

        return pm.Dirichlet(name, a=np.atleast_1d(params[0]), dims=dims, **kwargs)


@register_prior
class LKJ(PriorFamily):
    """LKJ(eta) on the correlation of correlated random slopes; the builder passes eta to
    ``pm.LKJCholeskyCov`` with the SDs' own prior, so it makes no variable of its own."""

    name = "lkj"
    parameter_names = ("concentration (eta)",)
    support = "correlation"
    readable = "LKJ"


#: Override keys that switch Gaussian models to the variance-share parametrisation.
SHARE_KEYS = ("h2", "shares", "total_sd", "total_variance")


@dataclass(frozen=True)
class Prior:
    """One prior: a family name and its parameters (scalars or arrays broadcast over dims).

    Examples
    --------
    >>> Prior("halfstudentt", (3.0, 2.5)).describe()
    'HalfStudentT(3, 2.5)'
    """

    family: str
    params: tuple[Any, ...]

    def __post_init__(self) -> None:
        family = str(self.family).lower()
        if family not in PRIORS:
            raise SpecificationError(
                f"Unknown prior family '{self.family}'; choose one of {sorted(PRIORS)}."
            )
        want = PRIORS[family].n_params
        if want is not None and len(self.params) != want:
            raise SpecificationError(
                f"A '{family}' prior takes {want} parameter(s); got {len(self.params)}: "
                f"{self.params}."
            )
        object.__setattr__(self, "family", family)
        self._check_values()

    def _check_values(self) -> None:
        """Numeric, finite parameters; scales, shapes and rates strictly positive."""
        values = []
        for k, p in enumerate(self.params):
            try:
                arr = np.asarray(p, dtype=float)
            except (TypeError, ValueError):
                raise SpecificationError(
                    f"Parameter {k + 1} of the '{self.family}' prior must be a number; got {p!r}."
                ) from None
            if arr.size == 0 or not np.all(np.isfinite(arr)):
                raise SpecificationError(
                    f"Parameter {k + 1} of the '{self.family}' prior must be finite; got {p!r}."
                )
            values.append(arr)
        # every parameter must be > 0 except those the family declares real (a normal's mean)
        family = self.distribution
        names = family.parameter_names
        for pos, arr in enumerate(values):
            if pos in family.real_parameters:
                continue
            if np.any(arr <= 0):
                name = names[pos] if pos < len(names) else f"parameter {pos + 1}"
                raise SpecificationError(
                    f"The {name} of a '{self.family}' prior must be positive; got "
                    f"{self.params[pos]!r}. E.g. ('halfnormal', 10.0) or ('normal', 0, 2.5)."
                )

    @classmethod
    def parse(cls, value: Any, key: str) -> Prior:
        """Accept a :class:`Prior` or a tuple ``(family, *params)``."""
        if isinstance(value, Prior):
            return value
        if isinstance(value, Sequence) and not isinstance(value, str) and value:
            return cls(str(value[0]), tuple(value[1:]))
        raise SpecificationError(
            f"The prior for '{key}' must be a tuple like ('halfnormal', 10.0); got {value!r}."
        )

    @property
    def distribution(self) -> PriorFamily:
        """This prior's family in the table :data:`PRIORS`."""
        return PRIORS[self.family]

    @property
    def is_positive(self) -> bool:
        """Positive support: usable for SDs and variances."""
        return self.distribution.support == "positive"

    @property
    def has_closed_form(self) -> bool:
        """Whether :meth:`log_density_of_log` exists (the closed-form spectral samplers)."""
        return self.distribution.has("log_density_of_log")

    def require_closed_form_sd(self, key: str) -> Prior:
        """This prior, if it can be the SD prior of a closed-form density: positive support
        and :meth:`log_density_of_log`; a :class:`~bayeslmm.errors.SpecificationError`
        naming ``key`` otherwise.

        Examples
        --------
        >>> Prior("halfnormal", (2.0,)).require_closed_form_sd("sigma").describe()
        'HalfNormal(2)'
        """
        if not self.is_positive or not self.has_closed_form:
            raise SpecificationError(
                f"The prior of '{key}' must be a positive family with a closed-form density "
                f"(halfnormal, halfstudentt, halfcauchy, exponential, invgamma); got "
                f"{self.describe()}."
            )
        return self

    def describe(self) -> str:
        """Readable form, e.g. ``Normal(0, 2.5)``."""

        def fmt(p: Any) -> str:
            arr = np.asarray(p, dtype=float)
            if arr.size == 1:
                return f"{float(arr.ravel()[0]):.4g}"
            if arr.ndim == 0:
                return f"{float(arr):.4g}"
            return "[" + ", ".join(f"{v:.4g}" for v in arr.ravel()) + "]"

        name = self.distribution.display_name
        return f"{name}({', '.join(fmt(p) for p in self.params)})"

    def to_pymc(self, name: str, dims: Any = None, **kwargs: Any) -> Any:
        """Create the PyMC random variable ``name`` inside the current model context."""
        p = [np.asarray(v, dtype=float) for v in self.params]
        return self.distribution.pymc(name, p, dims=dims, **kwargs)

    def to_dist(self, shape: int) -> Any:
        """An unnamed PyMC distribution (``.dist``) of the given shape (for LKJCholeskyCov)."""
        # Parameters broadcast to the full shape (fresh, writeable arrays): with a scalar ν
        # and a vector σ, nutpie's initial-point draw of HalfStudentT fails inside
        # LKJCholeskyCov ("cannot set WRITEABLE flag"), so no parameter is left to broadcast.
        p = [np.broadcast_to(np.asarray(v, dtype=float), (shape,)).copy() for v in self.params]
        return self.distribution.pymc_dist(p, shape)

    def log_density_of_log(self) -> LogDensityOfLog:
        """log f(θ) as a function of t = log θ, with d/dt (see
        :meth:`PriorFamily.log_density_of_log`); vector parameters use their first entry.

        Examples
        --------
        >>> f = Prior("halfnormal", (2.0,)).log_density_of_log()
        >>> [round(v, 6) for v in f(0.0)]   # θ = 1: log(2 / (2√(2π))) − 1/8, and −1/4
        [-1.043939, -0.25]
        """
        p = [float(np.asarray(v, dtype=float).ravel()[0]) for v in self.params]
        return self.distribution.log_density_of_log(p)


def _sd(x: np.ndarray) -> float:
    s = float(np.std(x, ddof=1)) if x.size > 1 else 0.0
    return s if s > 0 else 1.0


def link_location(spec: ModelSpec) -> float:
    """Centre of the intercept prior: the mean response on the link scale.

    Examples
    --------
    >>> import pandas as pd, bayeslmm as bl
    >>> df = pd.DataFrame({"y": [0, 1, 1, 1], "g": list("aabb")})
    >>> round(link_location(bl.specify("y ~ (1|g)", df, family="bernoulli")), 3)
    1.099
    """
    return spec.family.link_location(spec.y, spec.trials, spec.offset)


@dataclass(frozen=True)
class PriorSet:
    """The resolved priors of a model: defaults scaled to the data, then overrides.

    Attributes
    ----------
    intercept : Prior or None
        Prior of the intercept (at centred covariates); None if the model has none.
    slopes : dict
        Fixed-effect name → prior (every non-intercept column of X).
    sd : dict
        Group → prior of the SD(s) of that term's coefficients (parameters are vectors over
        the coefficients).
    cor : dict
        Group → LKJ prior (correlated multi-coefficient terms).
    sigma : Prior or None
        Residual SD (Gaussian, homoscedastic).
    sigma_intercept, sigma_slopes
        Priors of the log-σ regression (heteroscedastic Gaussian).
    sd_olre : Prior or None
        SD of the Poisson observation-level random effect.
    shares : Prior or None
        h² (Beta, one term) or variance shares (Dirichlet, several terms) when the variance
        share parametrisation is active; None otherwise.
    total : Prior or None
        Prior of σ_P (``total_sd``) or of σ²_P (``total_variance``; see ``total_is_variance``).
    """

    intercept: Prior | None
    slopes: Mapping[str, Prior]
    sd: Mapping[str, Prior]
    cor: Mapping[str, Prior]
    sigma: Prior | None
    sigma_intercept: Prior | None
    sigma_slopes: Mapping[str, Prior]
    sd_olre: Prior | None
    shares: Prior | None = None
    total: Prior | None = None
    total_is_variance: bool = False

    @property
    def uses_shares(self) -> bool:
        return self.shares is not None

    def table(self) -> dict[str, str]:
        """Parameter → readable prior, for reports."""
        out: dict[str, str] = {}
        if self.intercept is not None:
            out["Intercept"] = self.intercept.describe()
        out.update({f"b_{k}": v.describe() for k, v in self.slopes.items()})
        if self.uses_shares:
            key = "h2" if self.shares.family == "beta" else "shares"
            out[key] = self.shares.describe()
            out["total_variance" if self.total_is_variance else "total_sd"] = self.total.describe()
        else:
            out.update({f"sd_{k}": v.describe() for k, v in self.sd.items()})
            if self.sigma is not None:
                out["sigma"] = self.sigma.describe()
        out.update({f"cor_{k}": v.describe() for k, v in self.cor.items()})
        if self.sigma_intercept is not None:
            out["sigma_Intercept"] = self.sigma_intercept.describe()
        out.update({f"sigma_b_{k}": v.describe() for k, v in self.sigma_slopes.items()})
        if self.sd_olre is not None:
            out["sd_olre"] = self.sd_olre.describe()
        return out


def _coef_scale(term: RandomTerm, j: int) -> float:
    """Root mean square of a random-slope covariate (1 for the intercept column)."""
    x = term.design[:, j]
    rms = float(np.sqrt(np.mean(x**2)))
    return rms if rms > 0 else 1.0


def _known_keys(spec: ModelSpec) -> set[str]:
    keys = {"Intercept", "b", "sigma", "sigma_Intercept", "sigma_b", "sd_olre", *SHARE_KEYS}
    keys |= {f"b_{n}" for n in spec.fixed_names}
    keys |= {f"sigma_b_{n}" for n in spec.sigma_names}
    for t in spec.terms:
        keys |= {f"sd_{t.group}", f"cor_{t.group}"}
    return keys


def resolve_priors(spec: ModelSpec, overrides: Mapping[str, Any] | None = None) -> PriorSet:
    """Default priors for ``spec`` (see the module docs), with ``overrides`` applied.

    ``overrides`` defaults to ``spec.priors``. Unknown keys raise a
    :class:`~bayeslmm.errors.SpecificationError` listing the valid ones.

    Examples
    --------
    >>> import numpy as np, pandas as pd, bayeslmm as bl
    >>> df = pd.DataFrame({"y": np.arange(8.0), "g": list("aabbccdd")})
    >>> ps = resolve_priors(bl.specify("y ~ 1 + (1|g)", df), {"sigma": ("halfnormal", 3)})
    >>> ps.table()["sigma"], ps.table()["sd_g"]
    ('HalfNormal(3)', 'HalfStudentT(3, 6.124)')
    """
    raw = dict(spec.priors if overrides is None else overrides)
    known = _known_keys(spec)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise SpecificationError(
            f"Unknown prior key(s) {unknown}; this model's keys are {sorted(known)}."
        )
    given = {k: Prior.parse(v, k) for k, v in raw.items()}
    gaussian = spec.family.is_gaussian
    sy = _sd(spec.y) if gaussian else 1.0
    scale = 2.5 * sy

    names = list(spec.fixed_names)
    intercept = None
    if "Intercept" in names:
        intercept = given.get("Intercept", Prior("normal", (link_location(spec), scale)))
    slopes: dict[str, Prior] = {}
    for j, nm in enumerate(names):
        if nm == "Intercept":
            continue
        default = Prior("normal", (0.0, 2.5 * (sy if gaussian else 1.0) / _sd(spec.X[:, j])))
        slopes[nm] = given.get(f"b_{nm}", given.get("b", default))

    sd: dict[str, Prior] = {}
    cor: dict[str, Prior] = {}
    sd_default_scale = scale if gaussian else 1.0
    for t in spec.terms:
        scales = np.array([sd_default_scale / _coef_scale(t, j) for j in range(t.n_coef)])
        prior = given.get(f"sd_{t.group}", Prior("halfstudentt", (3.0, scales)))
        if not prior.is_positive:
            raise SpecificationError(
                f"The prior of sd_{t.group} must have positive support (e.g. halfstudentt); "
                f"got {prior.family}."
            )
        sd[t.group] = prior
        if t.correlated and t.n_coef > 1:
            cor[t.group] = given.get(f"cor_{t.group}", Prior("lkj", (2.0,)))
            if cor[t.group].family != "lkj":
                raise SpecificationError(f"cor_{t.group} takes an ('lkj', eta) prior.")

    sigma = sigma_intercept = None
    sigma_slopes: dict[str, Prior] = {}
    if gaussian and spec.sigma_X is None:
        sigma = given.get("sigma", Prior("halfstudentt", (3.0, scale)))
    elif gaussian:
        for j, nm in enumerate(spec.sigma_names):
            if nm == "Intercept":
                sigma_intercept = given.get("sigma_Intercept", Prior("normal", (np.log(sy), 1.5)))
            else:
                default = Prior("normal", (0.0, 1.0 / _sd(spec.sigma_X[:, j])))
                sigma_slopes[nm] = given.get(f"sigma_b_{nm}", given.get("sigma_b", default))
    sd_olre = None
    if spec.family.has_observation_level_effect:
        sd_olre = given.get("sd_olre", Prior("halfstudentt", (3.0, 1.0)))

    shares = total = None
    total_is_variance = False
    if any(k in given for k in SHARE_KEYS):
        shares, total, total_is_variance = _share_priors(spec, given, scale)
    return PriorSet(
        intercept=intercept,
        slopes=slopes,
        sd=sd,
        cor=cor,
        sigma=sigma,
        sigma_intercept=sigma_intercept,
        sigma_slopes=sigma_slopes,
        sd_olre=sd_olre,
        shares=shares,
        total=total,
        total_is_variance=total_is_variance,
    )


def _share_priors(
    spec: ModelSpec, given: Mapping[str, Prior], scale: float
) -> tuple[Prior, Prior, bool]:
    if not spec.family.is_gaussian or spec.sigma_X is not None:
        raise SpecificationError(
            "Priors on h2 / variance shares need a Gaussian model with one residual variance "
            "(no sigma formula)."
        )
    if not spec.terms:
        raise SpecificationError("Priors on h2 / variance shares need at least one random term.")
    slopes = [t.label for t in spec.terms if not t.is_intercept_only]
    if slopes:
        raise SpecificationError(
            f"Priors on h2 / variance shares need intercept-only random terms; {slopes} have "
            "slopes. Put priors on sd_<group> instead."
        )
    k = len(spec.terms)
    if "h2" in given and k > 1:
        raise SpecificationError(
            f"'h2' is a prior for one random term; this model has {k}. Give "
            f"'shares': ('dirichlet', [a_1, ..., a_{k}, a_residual]) instead."
        )
    if k == 1:
        shares = given.get("h2", Prior("beta", (1.0, 1.0)))
        if shares.family != "beta":
            raise SpecificationError("The 'h2' prior must be ('beta', a, b).")
    else:
        shares = given.get("shares", Prior("dirichlet", (np.ones(k + 1),)))
        if shares.family != "dirichlet" or np.size(shares.params[0]) != k + 1:
            raise SpecificationError(
                f"The 'shares' prior must be ('dirichlet', [a_1, ..., a_{k + 1}]): one weight "
                f"per random term ({[t.group for t in spec.terms]}) and one for the residual."
            )
    if "total_variance" in given and "total_sd" in given:
        raise SpecificationError("Give either 'total_sd' or 'total_variance', not both.")
    if "total_variance" in given:
        total, is_var = given["total_variance"], True
    else:
        total, is_var = given.get("total_sd", Prior("halfstudentt", (3.0, scale))), False
    if not total.is_positive:
        raise SpecificationError("The prior on the total variance / SD needs positive support.")
    return shares, total, is_var
