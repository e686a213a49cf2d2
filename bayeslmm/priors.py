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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bayeslmm.errors import SpecificationError
from bayeslmm.spec import ModelSpec, RandomTerm

#: Parameter count of each supported prior family (None: a vector).
PRIOR_FAMILIES: dict[str, int | None] = {
    "normal": 2,
    "halfnormal": 1,
    "halfstudentt": 2,
    "halfcauchy": 1,
    "exponential": 1,
    "beta": 2,
    "invgamma": 2,
    "scaled_inv_chi2": 2,
    "dirichlet": None,
    "lkj": 1,
}

#: Names of each family's parameters, for messages.
PRIOR_PARAMETER_NAMES: dict[str, tuple[str, ...]] = {
    "normal": ("mean", "scale (sigma)"),
    "halfnormal": ("scale (sigma)",),
    "halfstudentt": ("degrees of freedom (nu)", "scale (sigma)"),
    "halfcauchy": ("scale (beta)",),
    "exponential": ("rate (lam)",),
    "beta": ("shape a", "shape b"),
    "invgamma": ("shape (alpha)", "scale (beta)"),
    "scaled_inv_chi2": ("degrees of freedom (nu)", "scale (s2)"),
    "dirichlet": ("concentrations",),
    "lkj": ("concentration (eta)",),
}

#: Families with positive support (usable for SDs and variances).
POSITIVE = (
    "halfnormal",
    "halfstudentt",
    "halfcauchy",
    "exponential",
    "invgamma",
    "scaled_inv_chi2",
)

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
        if family not in PRIOR_FAMILIES:
            raise SpecificationError(
                f"Unknown prior family '{self.family}'; choose one of {sorted(PRIOR_FAMILIES)}."
            )
        want = PRIOR_FAMILIES[family]
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
        # every parameter must be > 0 except a normal's mean
        positive = values[1:] if self.family == "normal" else values
        names = PRIOR_PARAMETER_NAMES.get(self.family, ())
        for k, arr in enumerate(positive):
            if np.any(arr <= 0):
                pos = k + 1 if self.family == "normal" else k
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
    def is_positive(self) -> bool:
        return self.family in POSITIVE

    def describe(self) -> str:
        """Readable form, e.g. ``Normal(0, 2.5)``."""
        names = {
            "halfstudentt": "HalfStudentT",
            "halfnormal": "HalfNormal",
            "halfcauchy": "HalfCauchy",
            "invgamma": "InverseGamma",
            "scaled_inv_chi2": "ScaledInvChi2",
            "lkj": "LKJ",
        }

        def fmt(p: Any) -> str:
            arr = np.asarray(p, dtype=float)
            if arr.size == 1:
                return f"{float(arr.ravel()[0]):.4g}"
            if arr.ndim == 0:
                return f"{float(arr):.4g}"
            return "[" + ", ".join(f"{v:.4g}" for v in arr.ravel()) + "]"

        name = names.get(self.family, self.family.capitalize())
        return f"{name}({', '.join(fmt(p) for p in self.params)})"

    def to_pymc(self, name: str, dims: Any = None, **kwargs: Any) -> Any:
        """Create the PyMC random variable ``name`` inside the current model context."""
        import pymc as pm

        p = [np.asarray(v, dtype=float) for v in self.params]
        fam = self.family
        if fam == "normal":
            return pm.Normal(name, mu=p[0], sigma=p[1], dims=dims, **kwargs)
        if fam == "halfnormal":
            return pm.HalfNormal(name, sigma=p[0], dims=dims, **kwargs)
        if fam == "halfstudentt":
            return pm.HalfStudentT(name, nu=p[0], sigma=p[1], dims=dims, **kwargs)
        if fam == "halfcauchy":
            return pm.HalfCauchy(name, beta=p[0], dims=dims, **kwargs)
        if fam == "exponential":
            return pm.Exponential(name, lam=p[0], dims=dims, **kwargs)
        if fam == "beta":
            return pm.Beta(name, alpha=p[0], beta=p[1], dims=dims, **kwargs)
        if fam == "invgamma":
            return pm.InverseGamma(name, alpha=p[0], beta=p[1], dims=dims, **kwargs)
        if fam == "scaled_inv_chi2":
            nu, s2 = p
            return pm.InverseGamma(name, alpha=nu / 2, beta=nu * s2 / 2, dims=dims, **kwargs)
        if fam == "dirichlet":
            return pm.Dirichlet(name, a=np.atleast_1d(p[0]), dims=dims, **kwargs)
        raise SpecificationError(f"A '{fam}' prior cannot be used for parameter '{name}'.")

    def to_dist(self, shape: int) -> Any:
        """An unnamed PyMC distribution (``.dist``) of the given shape (for LKJCholeskyCov)."""
        import pymc as pm

        # Parameters broadcast to the full shape (fresh, writeable arrays): with a scalar ν
        # and a vector σ, nutpie's initial-point draw of HalfStudentT fails inside
        # LKJCholeskyCov ("cannot set WRITEABLE flag"), so no parameter is left to broadcast.
        p = [np.broadcast_to(np.asarray(v, dtype=float), (shape,)).copy() for v in self.params]
        fam = self.family
        if fam == "halfstudentt":
            return pm.HalfStudentT.dist(nu=p[0], sigma=p[1], shape=shape)
        if fam == "halfnormal":
            return pm.HalfNormal.dist(sigma=p[0], shape=shape)
        if fam == "halfcauchy":
            return pm.HalfCauchy.dist(beta=p[0], shape=shape)
        if fam == "exponential":
            return pm.Exponential.dist(lam=p[0], shape=shape)
        raise SpecificationError(
            f"A '{fam}' prior cannot be used for the SDs of correlated random effects; use "
            "halfstudentt, halfnormal, halfcauchy or exponential."
        )


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
