"""Per-trait families of a multi-trait model: which combinations the latent-scale GLMM covers.

``bl.LMM("mvbind(disease, weight) ~ sex + (1 | id)", df, family={"disease": "bernoulli",
"weight": "gaussian"}, kinship={"id": K})`` names a family per trait (a trait left out of the
dict is Gaussian; a single family name applies to every trait). A value is a family name, a
:class:`~bayeslmm.families.Family` (``bl.Bernoulli(link="probit")``) or a ``(name, link)``
pair such as ``("bernoulli", "probit")``.

Supported (:func:`trait_families`, :func:`residual_traits`):

* Gaussian traits (identity link), Bernoulli 0/1 traits (logit or probit link), Poisson
  counts (log link, with an observation-level effect unless
  ``bl.Poisson(overdispersion=False)``), any mix of them, at least one non-Gaussian;
* the genetic covariance Σ_G ⊗ K between all traits on the latent (link) scale;
* residual covariances between the Gaussian traits, and between them and *one* probit
  Bernoulli trait (its liability residual variance fixed at 1);
* no residual covariance of a logit Bernoulli or a Poisson trait with any other trait.

Refused with a message: binomial counts with trials, other families, two or more probit
traits (their residual correlation needs a multivariate normal probability, not built).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bayeslmm.errors import SpecificationError
from bayeslmm.families import Bernoulli, Family, Gaussian, Poisson, get_family

#: The families a trait of a multi-trait GLMM may have (exactly these classes: a
#: user-registered subclass may change the likelihood the closed form assumes).
SUPPORTED_FAMILIES = (Gaussian, Bernoulli, Poisson)


def _one_family(value: Any, trait: str) -> Family:
    if isinstance(value, tuple | list) and len(value) == 2 and isinstance(value[0], str):
        name, link = value
    else:
        name, link = value, None
    if not isinstance(name, str | Family):
        raise SpecificationError(
            f"The family of trait '{trait}' must be a name such as 'bernoulli', a "
            f"(name, link) pair such as ('bernoulli', 'probit') or a bl family object; got "
            f"{value!r}."
        )
    family = get_family(name, link)
    if type(family) not in SUPPORTED_FAMILIES:
        hint = (
            " For 0/1 records use 'bernoulli'; binomial counts with trials are not supported "
            "in multi-trait models."
            if family.needs_trials
            else ""
        )
        raise SpecificationError(
            f"The family of trait '{trait}' is '{family.name}'; multi-trait models take "
            f"{[c.name for c in SUPPORTED_FAMILIES]} per trait.{hint}"
        )
    return family


def trait_families(family: Any, traits: Sequence[str]) -> tuple[Family, ...]:
    """One :class:`~bayeslmm.families.Family` per trait, in formula order.

    Parameters
    ----------
    family : str, Family, tuple or dict
        One family for every trait, or ``{trait: family}`` (traits left out are Gaussian).
    traits : sequence of str

    Returns
    -------
    tuple of Family

    Examples
    --------
    >>> fams = trait_families({"d": ("bernoulli", "probit")}, ["d", "w"])
    >>> [(f.name, f.link) for f in fams]
    [('bernoulli', 'probit'), ('gaussian', 'identity')]
    """
    if isinstance(family, Mapping):
        unknown = sorted(set(map(str, family)) - set(traits))
        if unknown:
            raise SpecificationError(
                f"family={{...}} names {unknown}, which are not traits of the model; the "
                f"traits are {list(traits)}."
            )
        return tuple(_one_family(family.get(t, "gaussian"), t) for t in traits)
    return tuple(_one_family(family, t) for t in traits)


def residual_traits(families: Sequence[Family], traits: Sequence[str]) -> tuple[int, ...]:
    """Indices of the traits that share the residual covariance Σ_E: the Gaussian traits,
    then a probit Bernoulli trait when there is one and at least one Gaussian trait.

    Raises
    ------
    SpecificationError
        Two or more probit traits.

    Examples
    --------
    >>> from bayeslmm.families import Bernoulli, Gaussian
    >>> residual_traits([Bernoulli(link="probit"), Gaussian(), Gaussian()], ["d", "a", "b"])
    (1, 2, 0)
    """
    probit = [a for a, f in enumerate(families) if f.threshold_liability]
    if len(probit) > 1:
        names = [traits[a] for a in probit]
        raise SpecificationError(
            f"The traits {names} are probit Bernoulli traits: the residual correlation "
            "between two liabilities needs a multivariate normal probability, which is not "
            "built. Give all but one of them link 'logit' (their residuals are then "
            "independent of the other traits'), or fit them in separate bivariate models."
        )
    gaussian = [a for a, f in enumerate(families) if f.is_gaussian]
    return tuple(gaussian + (probit if gaussian else []))
