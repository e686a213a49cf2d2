"""Heritability of non-Gaussian traits on the latent, link, observed and liability scales.

A GLMM states the genetic variance V_A on the *latent* scale of the linear predictor η. What a
"heritability" is then depends on the question (see ``docs/glmm_scales.md``):

``latent``
    V_A / V_P,latent with V_P,latent = V_A + the other random-effect variances (the
    observation-level effect of an overdispersed Poisson model included); the heritability of
    the latent trait (de Villemereuil et al. 2016, Genetics 204:1281, eq. 3).
``link``
    V_A / (V_P,latent + V_d), V_d the distribution-specific variance on the link scale
    (Nakagawa & Schielzeth 2010, Biol. Rev. 85:935; Nakagawa, Johnson & Schielzeth 2017,
    J. R. Soc. Interface 14:20170213): π²/3 for the logit link, 1 for the probit link (the
    liability-threshold heritability), ln(1 + 1/λ) for the Poisson log link (lognormal
    approximation; ``"delta"``: 1/λ, ``"trigamma"``: ψ₁(λ)), λ the observed-scale mean.
``observed``
    V_A,obs / V_P,obs on the scale of the data (de Villemereuil et al. 2016, eqs. 5-11, as in
    R's QGglmm ``QGparams``): with h the inverse link and predictions η_i = (Xβ)_i,
    ψ = mean_i E[h'(η_i + l)], V_A,obs = ψ² V_A and
    V_P,obs = mean_i E[h(η_i + l)²] − (mean_i E[h(η_i + l)])² + mean_i E[v(η_i + l)],
    l ~ N(0, V_P,latent), v the distribution variance: the expectations integrate over the
    latent random effects and the average over i marginalises over the fixed effects
    (QGglmm's ``predict`` argument), so V_P,obs includes the variance the fixed effects
    cause. Closed forms for the Poisson log and binary probit models (QGglmm's
    ``qg.Poisson.log``, ``qg.binom1.probit``), Gauss–Hermite quadrature otherwise.
``liability``
    Binary traits with a population prevalence K: the observed-scale h² of the sample, with
    its case fraction P, mapped to the liability of a threshold model (Dempster & Lerner
    1950; Lee, Wray, Goddard & Visscher 2011, AJHG 88:294, eq. 23, GCTA's ``--prevalence``):
    h²_l = h²_o · K²(1 − K)² / (z² P(1 − P)), z = φ(Φ⁻¹(1 − K)).

Every function works on arrays: one value per posterior draw (shape ``(n_draws,)``) or a point
estimate (scalar), with fixed-effect predictions of shape ``(n_obs,)`` or
``(n_draws, n_obs)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from bayeslmm.families import Family, get_family

__all__ = [
    "SCALES",
    "heritability_scales",
    "liability_from_observed",
    "link_scale_variance",
    "observed_scale_parameters",
]

#: Names of the scales returned by :func:`heritability_scales`, in order.
SCALES = ("latent", "link", "observed", "liability")

#: Elements (draws × observations × nodes) per block of quadrature work, to bound memory.
_BLOCK_ELEMENTS = 4_000_000


# ---------------------------------------------------------------------------------------
# input handling
# ---------------------------------------------------------------------------------------
def _draws(x: ArrayLike) -> np.ndarray:
    """A per-draw vector: scalar → shape (1,); (n_draws,) stays."""
    arr = np.asarray(x, dtype=float)
    if arr.ndim > 1:
        raise ValueError(f"Expected a scalar or a vector of draws; got shape {arr.shape}.")
    return np.atleast_1d(arr)


def _other_total(other: ArrayLike | Sequence[ArrayLike], n_draws: int) -> np.ndarray:
    """Sum of the other latent variances per draw.

    ``other`` is a scalar, a (n_draws,) vector, a list of such, or a (n_draws, k) array.
    """
    if isinstance(other, list | tuple):
        parts = [np.broadcast_to(_draws(o), (n_draws,)) for o in other]
        return np.sum(parts, axis=0) if parts else np.zeros(n_draws)
    arr = np.asarray(other, dtype=float)
    if arr.ndim == 2:
        return arr.sum(axis=1)
    return np.broadcast_to(np.atleast_1d(arr), (n_draws,)).astype(float)


def _predictions(eta_fixed: ArrayLike | None, n_draws: int) -> np.ndarray:
    """Fixed-effect predictions as (n_draws, n_obs)."""
    if eta_fixed is None:
        return np.zeros((n_draws, 1))
    eta = np.asarray(eta_fixed, dtype=float)
    if eta.ndim == 0:
        eta = eta.reshape(1, 1)
    if eta.ndim == 1:
        eta = eta[None, :]
    if eta.shape[0] not in (1, n_draws):
        raise ValueError(
            f"eta_fixed has {eta.shape[0]} rows of predictions but there are {n_draws} draws."
        )
    return np.broadcast_to(eta, (n_draws, eta.shape[1]))


def _out(x: np.ndarray, scalar: bool) -> np.ndarray | float:
    return float(x[0]) if scalar else x


# ---------------------------------------------------------------------------------------
# observed scale (QGglmm)
# ---------------------------------------------------------------------------------------
# The closed forms (Poisson log: lognormal moments; probit: E Φ(η + l) = Φ(η/√(1+V)) and
# E φ(η + l) = φ(η/√(1+V))/√(1+V)) are the family's (Family.closed_form_moments). E Φ² is a
# bivariate normal orthant probability, only needed for binomial with more than one trial,
# and is then taken by quadrature (as QGglmm's ``qg.binomN.probit`` does).
def _moments_quadrature(
    family: Family, eta: np.ndarray, vp: np.ndarray, n_nodes: int, need: Sequence[str]
) -> dict[str, np.ndarray]:
    """Gauss–Hermite: E f(η + l), l ~ N(0, V) = Σ_j w_j/√π f(η + √(2V) x_j)."""
    x, w = np.polynomial.hermite.hermgauss(n_nodes)
    w = w / np.sqrt(np.pi)
    n_draws, n_obs = eta.shape
    out = {k: np.empty((n_draws, n_obs)) for k in need}
    rows = max(1, _BLOCK_ELEMENTS // max(1, n_obs * n_nodes))
    for start in range(0, n_draws, rows):
        sl = slice(start, start + rows)
        grid = eta[sl, :, None] + np.sqrt(2.0 * vp[sl])[:, None, None] * x
        h = family.inverse_link(grid)
        if "h" in need:
            out["h"][sl] = h @ w
        if "h2" in need:
            out["h2"][sl] = (h * h) @ w
        if "v" in need:
            out["v"][sl] = family.variance_function(grid) @ w
        if "dh" in need:
            out["dh"][sl] = family.d_inverse_link(grid) @ w
    return out


def observed_scale_parameters(
    va: ArrayLike,
    vp: ArrayLike,
    eta_fixed: ArrayLike | None,
    family: Family | str,
    link: str | None = None,
    trials: ArrayLike | None = None,
    n_nodes: int = 64,
) -> dict[str, np.ndarray | float]:
    """Observed-scale mean, variances and heritability (QGglmm's ``QGparams``).

    Parameters
    ----------
    va : float or ndarray, shape (n_draws,)
        Latent additive genetic variance V_A.
    vp : float or ndarray, shape (n_draws,)
        Total latent variance V_P,latent (all random effects, observation-level effect
        included, fixed effects excluded).
    eta_fixed : float or ndarray, shape (n_obs,) or (n_draws, n_obs), optional
        Fixed-effect predictions (Xβ + offset) to marginalise over; None means η = 0.
    family : Family or str
        ``"poisson"`` (log), ``"bernoulli"`` or ``"binomial"`` (logit / probit).
    link : str, optional
        Link, when ``family`` is given by name.
    trials : float or ndarray, shape (n_obs,), optional
        Binomial trials per observation (QGglmm's ``n.obs``); the data scale is then the count
        of successes.
    n_nodes : int
        Gauss–Hermite nodes for the integrals without closed form.

    Returns
    -------
    dict
        ``mean_obs``, ``var_obs``, ``var_a_obs``, ``psi``, ``h2_obs``: floats for scalar
        inputs, else arrays of shape (n_draws,).

    Notes
    -----
    With n_i the trials (1 for Bernoulli and Poisson) and expectations over l ~ N(0, V_P):
    mean_obs = mean_i n_i E h, ψ = mean_i n_i E h', V_A,obs = ψ² V_A,
    V_P,obs = mean_i n_i² E h² − mean_obs² + mean_i n_i E v (QGglmm: ``QGmean``, ``QGpsi``,
    ``QGvar.exp`` by Koenig's formula, ``QGvar.dist``). For binary responses E v = E h − E h²,
    so V_P,obs = p̄(1 − p̄) exactly (``qg.binom1.probit``).

    Examples
    --------
    >>> r = observed_scale_parameters(0.3, 0.5, 1.0, "poisson")
    >>> round(r["mean_obs"], 4), round(r["h2_obs"], 4)  # exp(1.25); QGglmm: qg.Poisson.log
    (3.4903, 0.3208)
    """
    fam = get_family(family, link)
    scalar = np.ndim(va) == 0 and np.ndim(vp) == 0 and np.ndim(eta_fixed) <= 1
    va_d = _draws(va)
    vp_d = _draws(vp)
    n_draws = max(va_d.size, vp_d.size, 1 if np.ndim(eta_fixed) < 2 else np.shape(eta_fixed)[0])
    va_d = np.broadcast_to(va_d, (n_draws,))
    vp_d = np.broadcast_to(vp_d, (n_draws,))
    eta = _predictions(eta_fixed, n_draws)
    vp2 = vp_d[:, None]
    n_i = (
        np.ones(eta.shape[1])
        if trials is None
        else np.broadcast_to(np.asarray(trials, dtype=float), (eta.shape[1],))
    )
    # one trial each: Var(y) = p̄(1 − p̄), E h² is not needed
    binary = fam.binary_trials and (not fam.needs_trials or bool(np.all(n_i == 1)))
    if binary:
        need = ("h", "dh")
    elif fam.binary_trials:  # E v = E h − E h² per trial
        need = ("h", "h2", "dh")
    else:
        need = ("h", "h2", "v", "dh")
    m = {k: v for k, v in fam.closed_form_moments(eta, vp2).items() if k in need}
    missing = tuple(k for k in need if k not in m)
    if missing:
        m.update(_moments_quadrature(fam, eta, vp_d, n_nodes, missing))

    mean_obs = (m["h"] * n_i).mean(axis=1)
    psi = (m["dh"] * n_i).mean(axis=1)
    if fam.binary_trials:
        if binary:
            var_obs = mean_obs * (1.0 - mean_obs)
        else:  # E v = E h − E h² per trial
            var_obs = (
                ((n_i**2 - n_i) * m["h2"]).mean(axis=1) + (n_i * m["h"]).mean(axis=1) - mean_obs**2
            )
    else:
        var_obs = (m["h2"]).mean(axis=1) - mean_obs**2 + m["v"].mean(axis=1)
    var_a_obs = psi**2 * va_d
    res = {
        "mean_obs": mean_obs,
        "var_obs": var_obs,
        "var_a_obs": var_a_obs,
        "psi": psi,
        "h2_obs": var_a_obs / var_obs,
    }
    return {k: _out(v, scalar) for k, v in res.items()}


# ---------------------------------------------------------------------------------------
# link scale and liability
# ---------------------------------------------------------------------------------------
def link_scale_variance(
    family: Family | str,
    link: str | None = None,
    mean_obs: ArrayLike | None = None,
    method: str = "lognormal",
) -> np.ndarray | float:
    """Distribution-specific variance on the link scale (Nakagawa & Schielzeth 2017, Table 1).

    Parameters
    ----------
    family : Family or str
    link : str, optional
    mean_obs : float or ndarray, optional
        The observed-scale mean λ (Poisson only), e.g. ``mean_obs`` of
        :func:`observed_scale_parameters` (λ = mean_i exp(η_i + V_P/2)).
    method : str
        Poisson: ``"lognormal"`` ln(1 + 1/λ), ``"delta"`` 1/λ or ``"trigamma"`` ψ₁(λ).

    Examples
    --------
    >>> round(link_scale_variance("bernoulli"), 4), link_scale_variance("bernoulli", "probit")
    (3.2899, 1.0)
    >>> round(float(link_scale_variance("poisson", mean_obs=2.0)), 4)  # ln(1.5)
    0.4055
    """
    fam = get_family(family, link)
    return fam.link_variance(mean_obs, method=method)


def liability_from_observed(
    h2_observed: ArrayLike, prevalence: float, case_fraction: ArrayLike | float
) -> np.ndarray | float:
    """Observed 0/1-scale heritability → liability scale (Lee et al. 2011, eq. 23; GCTA).

    h²_l = h²_o · K(1 − K)/z² · K(1 − K)/(P(1 − P)), with K the population prevalence, P the
    proportion of cases in the sample and z the standard normal density at the liability
    threshold t = Φ⁻¹(1 − K). With P = K (no ascertainment) it is the Dempster–Lerner (1950)
    transform.

    Parameters
    ----------
    h2_observed : float or ndarray
    prevalence : float
        K, in (0, 1).
    case_fraction : float or ndarray
        P, in (0, 1).

    Examples
    --------
    >>> round(liability_from_observed(0.2, prevalence=0.01, case_fraction=0.5), 5)
    0.11038
    """
    K = float(prevalence)
    if not 0.0 < K < 1.0:
        raise ValueError(f"The prevalence must lie strictly between 0 and 1; got {K}.")
    P = np.asarray(case_fraction, dtype=float)
    if np.any((P <= 0.0) | (P >= 1.0)):
        raise ValueError("The case fraction must lie strictly between 0 and 1.")
    from scipy import stats  # imported here: scipy.stats takes ~0.4 s to load

    z = stats.norm.pdf(stats.norm.isf(K))
    out = np.asarray(h2_observed, dtype=float) * (K * (1.0 - K)) ** 2 / (z**2 * P * (1.0 - P))
    return float(out) if out.ndim == 0 else out


# ---------------------------------------------------------------------------------------
# all scales at once
# ---------------------------------------------------------------------------------------
def heritability_scales(
    va: ArrayLike,
    other_variances: ArrayLike | Sequence[ArrayLike] = 0.0,
    eta_fixed: ArrayLike | None = None,
    family: Family | str = "bernoulli",
    link: str | None = None,
    trials: ArrayLike | None = None,
    prevalence: float | None = None,
    case_fraction: ArrayLike | float | None = None,
    link_variance_method: str = "lognormal",
    include_fixed_variance: bool = False,
    n_nodes: int = 64,
) -> dict[str, np.ndarray | float]:
    """Heritability on the latent, link, observed and (binary traits) liability scales.

    Parameters
    ----------
    va : float or ndarray, shape (n_draws,)
        Latent additive genetic variance of the focal (kinship) term.
    other_variances : float, ndarray or list of them
        The other latent random-effect variances, per draw: scalars, (n_draws,) vectors, a
        list of those, or an (n_draws, k) array. Include the observation-level variance of an
        overdispersed Poisson model here.
    eta_fixed : ndarray, shape (n_obs,) or (n_draws, n_obs), optional
        Fixed-effect linear predictor Xβ (+ offset) per observation (and draw); the observed
        scale averages over it. None: η = 0.
    family : Family or str
        ``"poisson"``, ``"bernoulli"`` or ``"binomial"``.
    link : str, optional
        Link when ``family`` is a name (``"logit"`` default, ``"probit"``).
    trials : ndarray, optional
        Binomial trials per observation.
    prevalence : float, optional
        Population prevalence K of a binary trait; adds the ``"liability"`` scale.
    case_fraction : float or ndarray, optional
        Proportion of cases in the sample (P); default: the model's observed mean p̄.
    link_variance_method : str
        Poisson link-scale variance: ``"lognormal"``, ``"delta"`` or ``"trigamma"``.
    include_fixed_variance : bool
        Add Var_i(η_i) (the variance explained by the fixed effects) to V_P on the latent and
        link scales (Nakagawa & Schielzeth's marginal R² convention). Default False, as in
        QGglmm, whose latent heritability is conditional on the fixed effects.
    n_nodes : int
        Gauss–Hermite nodes for the observed-scale integrals.

    Returns
    -------
    dict of str to float or ndarray
        Keys ``"latent"``, ``"link"``, ``"observed"`` and, with ``prevalence``,
        ``"liability"``: floats for a point estimate, else arrays of shape (n_draws,).

    Examples
    --------
    >>> h = heritability_scales(0.5, [0.2, 0.3], 0.0, "bernoulli", "probit")
    >>> round(h["latent"], 4), round(h["link"], 4)  # 0.5/1.0, 0.5/(1.0 + 1)
    (0.5, 0.25)
    """
    fam = get_family(family, link)
    scalar = np.ndim(va) == 0 and np.ndim(eta_fixed) <= 1
    va_d = _draws(va)
    n_draws = va_d.size
    if np.ndim(eta_fixed) == 2:
        n_draws = max(n_draws, np.shape(eta_fixed)[0])
    if isinstance(other_variances, list | tuple):
        n_draws = max([n_draws] + [np.size(o) for o in other_variances])
    elif np.ndim(other_variances) >= 1:
        n_draws = max(n_draws, np.shape(other_variances)[0])
    scalar = scalar and n_draws == 1
    va_d = np.broadcast_to(va_d, (n_draws,))
    vp = va_d + _other_total(other_variances, n_draws)
    eta = _predictions(eta_fixed, n_draws)
    obs = observed_scale_parameters(va_d, vp, eta, fam, trials=trials, n_nodes=n_nodes)
    vp_model = vp + (eta.var(axis=1) if include_fixed_variance else 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        # NaN, not a warning, where every latent variance is 0 (a boundary fit): no share
        out: dict[str, np.ndarray] = {"latent": va_d / vp_model}
    if fam.is_gaussian:
        out["link"] = out["latent"]
    else:
        # Poisson: λ = mean_i exp(η_i + V_P/2), the observed mean; binary: per-trial constant
        vd = link_scale_variance(fam, mean_obs=obs["mean_obs"], method=link_variance_method)
        out["link"] = va_d / (vp_model + vd)
    out["observed"] = obs["h2_obs"]
    if prevalence is not None:
        one_trial = trials is None or bool(np.all(np.asarray(trials) == 1))
        if not fam.binary_trials or not one_trial:
            raise ValueError(
                "The liability scale (prevalence=...) is for binary 0/1 traits only "
                "(family='bernoulli'); drop prevalence for counts and proportions."
            )
        P = obs["mean_obs"] if case_fraction is None else case_fraction
        out["liability"] = liability_from_observed(obs["h2_obs"], prevalence, P)
    return {
        k: _out(np.broadcast_to(np.asarray(v, dtype=float), (n_draws,)), scalar)
        for k, v in out.items()
    }


# ---------------------------------------------------------------------------------------
# posterior draws of a bayeslmm model
# ---------------------------------------------------------------------------------------
