"""The spectral model's log posterior in closed form, for nutpie.

The spectral strategy's sampled model has two free parameters (σ_g², σ_e²; β is integrated
out), and its log-density is a sum over the n rotated observations. PyMC can sample the
:class:`pymc.Model` built by :mod:`~bayeslmm.engines.bayes.spectral` directly, but every way of
compiling that graph costs more than sampling it: PyMC's NUTS loop runs in Python (~4 s at
n = 1000), nutpie's numba backend recompiles the graph in every process (7–70 s), and a
PyTensor C function spends ~2 s on graph rewrites before its first call and ~60 µs per
gradient. This module writes the *same* posterior density out by hand:

* the marginal likelihood of Uᵀy given (σ_g², σ_e²) with β integrated out (Woodbury, as
  :func:`~bayeslmm.engines.bayes.marginal.marginal_gaussian_logp`) and its exact gradient,
  in one numba loop over the observations that is compiled once and kept in numba's on-disk
  cache (``cache=True``), so later processes load it in a fraction of a second;
* the priors of :mod:`bayeslmm.priors` (any positive family on σ_g, σ_e, σ_P or σ²_P, Beta on
  h²), as scalar formulas.

nutpie calls the density as a C function (:func:`c_callbacks`, numba ``cfunc``s from the
on-disk cache) that needs no GIL, so chains sampled in parallel threads run at the same
time; :meth:`SpectralDensity.logp` is the Python reference it is tested against, and what
nutpie calls for a prior family without a C form.

NUTS runs on the coordinates x = (logit h², log σ²_P), h² = σ_g² / σ²_P and
σ²_P = σ_g² + σ_e², whatever the prior's parametrisation: the density carries the Jacobian
of the map to the prior's parameters, so the posterior is unchanged, while h² and σ²_P are
nearly uncorrelated a posteriori (the share of the variance and its total are what the data
inform separately), which suits NUTS' diagonal mass matrix. tests/engines/bayes/
test_spectral_density.py checks the density against the PyMC model's ``logp`` at random
points for every prior family and parametrisation, and the gradient against finite
differences.

References
----------
Kang, H. M. et al. (2008). Efficient control of population structure in model organism
association mapping. Genetics 178, 1709–1723 (the rotation by the eigenvectors of K).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

import numba
import numpy as np
from scipy import special

from bayeslmm.engines.numba_cache import cached_jit
from bayeslmm.priors import Prior

LOG_2PI = math.log(2.0 * math.pi)


@cached_jit
def marginal_loglik_grad(
    var_g: float, var_e: float, eigenvalues: np.ndarray, resid: np.ndarray, design: np.ndarray
) -> tuple[float, float, float]:
    """log N(resid; 0, D + B Bᵀ), D = diag(var_g·s + var_e), and its gradient in the variances.

    With C = I_p + Bᵀ D⁻¹ B = L Lᵀ and γ̂ = C⁻¹ Bᵀ D⁻¹ r (Woodbury, determinant lemma):
    log|V| = Σ log d_i + 2 Σ log L_kk and rᵀV⁻¹r = (r − Bγ̂)ᵀD⁻¹(r − Bγ̂) + |γ̂|². The gradient
    uses ∂ log N / ∂θ = −½ [tr(V⁻¹ ∂V) − αᵀ ∂V α] with α = V⁻¹r = D⁻¹(r − Bγ̂) and the diagonal
    (V⁻¹)_ii = 1/d_i − |L⁻¹ B_i|²/d_i²; ∂V/∂σ_g² = diag(s), ∂V/∂σ_e² = I. O(n p²).

    Parameters
    ----------
    var_g, var_e : float
        σ_g², σ_e².
    eigenvalues : ndarray, shape (n,)
        s, the eigenvalues of Z K Zᵀ.
    resid : ndarray, shape (n,)
        r = Uᵀ(y − offset − Xμ_β): the rotated response less its prior mean.
    design : ndarray, shape (n, p)
        B = UᵀX diag(sd_β) (p may be 0).

    Returns
    -------
    tuple of float
        (log-density, ∂/∂σ_g², ∂/∂σ_e²).
    """
    n, p = design.shape
    capacitance = np.zeros((p, p))
    rhs = np.zeros(p)
    inverse = np.empty(n)  # 1 / d_i: one division per observation (divisions dominate)
    logdet = 0.0
    # Σ log d_i as the log of running products (one log per ~100 terms instead of n);
    # the products stay within 1e±200, far from over/underflow
    product = 1.0
    for i in range(n):
        d = var_g * eigenvalues[i] + var_e
        inverse[i] = 1.0 / d
        if 1e-100 < d < 1e100:
            product *= d
            if not 1e-100 < product < 1e100:
                logdet += math.log(product)
                product = 1.0
        else:
            logdet += math.log(d)
        for a in range(p):
            w = design[i, a] * inverse[i]
            rhs[a] += w * resid[i]
            for b in range(a + 1):
                capacitance[a, b] += w * design[i, b]
    logdet += math.log(product)
    chol = np.zeros((p, p))
    inv_diag = np.zeros(p)
    for j in range(p):
        acc = capacitance[j, j] + 1.0
        for k in range(j):
            acc -= chol[j, k] ** 2
        chol[j, j] = math.sqrt(acc)
        inv_diag[j] = 1.0 / chol[j, j]
        logdet += 2.0 * math.log(chol[j, j])
        for i in range(j + 1, p):
            acc = capacitance[i, j]
            for k in range(j):
                acc -= chol[i, k] * chol[j, k]
            chol[i, j] = acc * inv_diag[j]
    forward = np.zeros(p)
    for i in range(p):
        acc = rhs[i]
        for k in range(i):
            acc -= chol[i, k] * forward[k]
        forward[i] = acc * inv_diag[i]
    gamma = np.zeros(p)
    quad = 0.0
    for i in range(p - 1, -1, -1):
        acc = forward[i]
        for k in range(i + 1, p):
            acc -= chol[k, i] * gamma[k]
        gamma[i] = acc * inv_diag[i]
        quad += gamma[i] ** 2
    grad_g = 0.0
    grad_e = 0.0
    solved = np.zeros(p)
    for i in range(n):
        fitted = 0.0
        for a in range(p):
            fitted += design[i, a] * gamma[a]
        res = resid[i] - fitted
        alpha = res * inverse[i]
        quad += res * alpha
        leverage = 0.0  # |L⁻¹ B_i|² / d_i²
        for a in range(p):
            acc = design[i, a] * inverse[i]
            for k in range(a):
                acc -= chol[a, k] * solved[k]
            solved[a] = acc * inv_diag[a]
            leverage += solved[a] ** 2
        term = inverse[i] - leverage - alpha * alpha
        grad_g += eigenvalues[i] * term
        grad_e += term
    return -0.5 * (n * LOG_2PI + logdet + quad), -0.5 * grad_g, -0.5 * grad_e


def positive_log_prior(prior: Prior) -> Callable[[float], tuple[float, float]]:
    """log f(θ) of a positive-support prior as a function of t = log θ, with d/dt.

    The returned function maps t to (log f(e^t), θ f'(θ)/f(θ)); constants are computed once.
    The formulas are PyMC's (normalised densities), so the result equals the PyMC model's
    ``logp`` without the log-transform's Jacobian. Each prior family declares its own
    (:meth:`bayeslmm.priors.PriorFamily.log_density_of_log`).

    Examples
    --------
    >>> f = positive_log_prior(Prior("exponential", (2.0,)))
    >>> [round(v, 6) for v in f(0.0)]   # log 2 − 2, −2
    [-1.306853, -2.0]
    """
    return prior.log_density_of_log()


def _log_expit(x: float) -> float:
    """log(1 / (1 + e^-x)) without overflow."""
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def prior_parametrisation(priors: Any) -> str:
    """Which parameters carry the priors: ``"sd"`` (σ_g, σ_e), ``"share_sd"`` (h², σ_P) or
    ``"share_variance"`` (h², σ²_P)."""
    if not priors.uses_shares:
        return "sd"
    return "share_variance" if priors.total_is_variance else "share_sd"


def variable_names(group: str, parametrisation: str) -> tuple[str, ...]:
    """The spectral PyMC model's free and deterministic variables, as :meth:`SpectralDensity.
    expand` returns them."""
    names = (f"sd_{group}", "sigma", f"var_{group}", "var_residual", "h2", "variance_share")
    if parametrisation == "share_sd":
        return (*names, "total_variance", "total_sd")
    if parametrisation == "share_variance":
        return (*names, "total_variance")
    return names


@dataclass(frozen=True)
class SpectralDensity:
    """The spectral model's log posterior on x = (logit h², log σ²_P), with gradient.

    Build it with :func:`spectral_density`; call :meth:`logp` in the sampler and
    :meth:`expand` to turn a point into the model's named variables.

    Attributes
    ----------
    eigenvalues, resid, design : ndarray
        See :func:`marginal_loglik_grad`.
    parametrisation : {"sd", "share_sd", "share_variance"}
        Which parameters carry the priors: (σ_g, σ_e); (h², σ_P); (h², σ²_P).
    prior_a, prior_b : callable
        Log priors: of log σ_g and log σ_e ("sd"), or of log σ_P / log σ²_P (``prior_b``)
        with h² ~ Beta(``beta``) ("share_*"; ``prior_a`` unused).
    beta : tuple of float
        Beta(a, b) of h² in the share parametrisations.
    group : str
        The kinship term's group (names ``sd_<group>``, ``var_<group>``).
    components : tuple of str
        Labels of ``variance_share``.
    share_weight : float
        The kinship's weight at the sample's scale (mean diag K − mean K; see
        :meth:`~bayeslmm.spec.RandomTerm.variance_weights`): ``variance_share`` and (in the
        SD parametrisation) ``h2`` are c σ_g² / (c σ_g² + σ_e²), as the results tables.
    multiplicity : float
        Rotated rows left out because their data are 0 and their eigenvalue is 0 (the
        low-rank kinship's complement, :class:`~bayeslmm.kinship.LowRankKinship`): each adds
        log N(0; 0, σ_e²) to the likelihood.
    prior_specs : tuple of (Prior or None), optional
        The priors behind ``prior_a`` and ``prior_b`` (None for ``prior_a`` in the share
        parametrisations), which :meth:`c_buffer` numbers for the C callback; None: only the
        Python callback.
    """

    eigenvalues: np.ndarray
    resid: np.ndarray
    design: np.ndarray
    parametrisation: str
    prior_a: Callable[[float], tuple[float, float]] | None
    prior_b: Callable[[float], tuple[float, float]]
    beta: tuple[float, float]
    group: str
    components: tuple[str, ...]
    share_weight: float = 1.0
    multiplicity: float = 0.0
    prior_specs: tuple[Prior | None, Prior | None] | None = None

    def logp(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """Log posterior (up to the evidence) at x and its gradient.

        Parameters
        ----------
        x : ndarray, shape (2,)
            (logit h², log σ²_P).

        Returns
        -------
        tuple
            (float, ndarray of shape (2,)).
        """
        x1, log_total = float(x[0]), float(x[1])
        log_h, log_1mh = _log_expit(x1), _log_expit(-x1)
        h, total = math.exp(log_h), math.exp(log_total)
        var_g, var_e = h * total, (1.0 - h) * total
        if not (var_e > 0.0 and math.isfinite(total)):
            return -math.inf, np.zeros(2)
        loglik, d_g, d_e = marginal_loglik_grad(
            var_g, var_e, self.eigenvalues, self.resid, self.design
        )
        if self.multiplicity:
            # the low-rank path's complement rows: zero data, eigenvalue 0, variance σ_e²
            loglik -= 0.5 * self.multiplicity * (LOG_2PI + math.log(var_e))
            d_e -= 0.5 * self.multiplicity / var_e
        # ∂(σ_g², σ_e²)/∂x: x1 moves the share, x2 scales both
        dh = h * (1.0 - h)
        g1 = (d_g - d_e) * total * dh
        g2 = d_g * var_g + d_e * var_e
        if self.parametrisation == "sd":
            # priors on log σ_g = (log h + log σ²_P)/2, log σ_e = (log(1−h) + log σ²_P)/2;
            # Jacobian |∂(σ_g, σ_e)/∂x| = σ_g σ_e / 4
            lg, dlg = self.prior_a(0.5 * (log_h + log_total))
            le, dle = self.prior_b(0.5 * (log_1mh + log_total))
            jac = 0.5 * (log_h + log_total) + 0.5 * (log_1mh + log_total) - math.log(4.0)
            logp = loglik + lg + le + jac
            g1 += 0.5 * dlg * (1.0 - h) - 0.5 * dle * h + (0.5 - h)
            g2 += 0.5 * dlg + 0.5 * dle + 1.0
        else:
            a, b = self.beta
            log_beta = (a - 1.0) * log_h + (b - 1.0) * log_1mh - special.betaln(a, b)
            # Jacobian of x1 → h: h(1 − h); of x2 → σ_P = e^{x2/2}: σ_P / 2, → σ²_P: σ²_P
            jac = log_h + log_1mh
            g1 += (a - 1.0) * (1.0 - h) - (b - 1.0) * h + (1.0 - 2.0 * h)
            if self.parametrisation == "share_sd":
                lt, dlt = self.prior_b(0.5 * log_total)
                jac += 0.5 * log_total - math.log(2.0)
                g2 += 0.5 * dlt + 0.5
            else:
                lt, dlt = self.prior_b(log_total)
                jac += log_total
                g2 += dlt + 1.0
            logp = loglik + log_beta + lt + jac
        return logp, np.array([g1, g2])

    def expand(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """The model's named variables at x (the names the PyMC model gives them).

        Parameters
        ----------
        x : ndarray, shape (2,)

        Returns
        -------
        dict
            ``sd_<group>``, ``sigma``, ``var_<group>``, ``var_residual``, ``h2``,
            ``variance_share``; in the share parametrisations also ``total_variance``
            and (``share_sd``) ``total_sd``.
        """
        h = math.exp(_log_expit(float(x[0])))
        total = math.exp(float(x[1]))
        var_g, var_e = h * total, (1.0 - h) * total
        out = {
            f"sd_{self.group}": math.sqrt(var_g),
            "sigma": math.sqrt(var_e),
            f"var_{self.group}": var_g,
            "var_residual": var_e,
            "h2": h,
        }
        if self.parametrisation != "sd":
            out["total_variance"] = total
        if self.parametrisation == "share_sd":
            out["total_sd"] = math.sqrt(total)
        c = self.share_weight
        if self.parametrisation == "sd":
            share = c * var_g / (c * var_g + var_e)
            out["h2"] = share
        else:
            # share parametrisations sample h² at the sample's scale: the eigenvalues were
            # divided by c, so the kinship variance itself is h σ²_P / c
            share = h
            out[f"var_{self.group}"] = var_g / c
            out[f"sd_{self.group}"] = math.sqrt(var_g / c)
        values = {k: np.asarray(v, dtype=float) for k, v in out.items()}
        values["variance_share"] = np.array([share, 1.0 - share])
        return values

    def initial_point(self, seed: int) -> np.ndarray:
        """h² = 0.5 and σ²_P = mean of the squared residuals, jittered by U(−1, 1) (as PyMC
        jitters its initial points), so that chains start apart."""
        rng = np.random.default_rng(seed)
        total = max(float(np.mean(self.resid**2)), 1e-12)
        return np.array([0.0, math.log(total)]) + rng.uniform(-1.0, 1.0, size=2)

    def c_buffer(self) -> np.ndarray | None:
        """This density as the C callback's float64 buffer (see :func:`c_callbacks`), or
        None when a prior family has no C form (the Python callback samples it then)."""
        if self.prior_specs is None or any(f.name not in _C_FIELDS for f in fields(self)):
            # a term the C callback does not know would be left out of its density
            return None
        prior_a = _prior_row(self.prior_specs[0])
        prior_b = _prior_row(self.prior_specs[1])
        if (
            prior_b is None
            or prior_a is None
            or (self.parametrisation == "sd") != (prior_a[0] != 0.0)
        ):
            return None
        n, p = self.design.shape
        header = np.zeros(_HEADER)
        header[_H_N], header[_H_P] = n, p
        header[_H_PARAMETRISATION] = _PARAMETRISATION_CODES[self.parametrisation]
        header[_H_PRIOR_A : _H_PRIOR_A + 4] = prior_a
        header[_H_PRIOR_B : _H_PRIOR_B + 4] = prior_b
        a, b = self.beta
        header[_H_BETA : _H_BETA + 2] = a, b
        header[_H_BETALN] = special.betaln(a, b)
        header[_H_SHARE_WEIGHT] = self.share_weight
        header[_H_MULTIPLICITY] = self.multiplicity
        return np.ascontiguousarray(
            np.concatenate([header, self.eigenvalues, self.resid, self.design.ravel()]),
            dtype=np.float64,
        )


def spectral_density(built: Any) -> SpectralDensity:
    """The closed-form log posterior of a built spectral model (β integrated out).

    Parameters
    ----------
    built : BuiltModel
        A spectral model whose fixed effects are integrated out (``fixed_effects="marginal"``,
        the default) or that has none.

    Returns
    -------
    SpectralDensity

    Raises
    ------
    ValueError
        When the model is not spectral or samples β (``fixed_effects="joint"``).

    Examples
    --------
    >>> import numpy as np, pandas as pd, bayeslmm as bl
    >>> from bayeslmm.engines.bayes import build
    >>> K = bl.Kinship(np.eye(6) * 0.5 + 0.5, [f"i{k}" for k in range(6)])
    >>> df = pd.DataFrame({"y": np.arange(6.0), "id": list(K.ids)})
    >>> density = spectral_density(build(bl.specify("y ~ 1 + (1 | id)", df, kinship={"id": K})))
    >>> logp, grad = density.logp(np.array([0.0, 1.0]))
    >>> grad.shape
    (2,)
    """
    if not closed_form_applies(built):
        raise ValueError(
            "The closed-form density covers the spectral strategy with β integrated out "
            "(fixed_effects='marginal'), as built."
        )
    spec = built.spec
    marginal = built.marginal_fixed
    if marginal is not None:
        resid = marginal.rotated_response - marginal.prior_mean
        design = marginal.scaled_design
        eigenvalues = marginal.eigenvalues
    else:  # no fixed effects
        offset = np.zeros(spec.n_obs) if spec.offset is None else np.asarray(spec.offset)
        resid = built.rotation.rotate(np.asarray(spec.y, dtype=float) - offset)
        design = np.zeros((resid.size, 0))  # r + k rows for a low-rank kinship
        eigenvalues = np.asarray(built.rotation.values, dtype=float)
    prior = prior_density(built)
    if prior.parametrisation != "sd":
        # h² ~ Beta at the sample's kinship scale: V = (h σ²_P / c) K_obs + …, i.e. the
        # same density as h σ²_P (K_obs / c) + …
        eigenvalues = eigenvalues / prior.share_weight
    return replace(
        prior,
        eigenvalues=np.ascontiguousarray(eigenvalues, dtype=float),
        resid=np.ascontiguousarray(resid, dtype=float),
        design=np.ascontiguousarray(design, dtype=float),
        multiplicity=float(getattr(built.rotation, "n_null", 0)),
    )


def prior_density(built: Any) -> SpectralDensity:
    """The spectral density's priors and Jacobians alone, with no observations.

    The log density of x = (logit h², log σ²_P) that :class:`SpectralDensity` adds to its
    likelihood, for the built model's one kinship term and priors; other exact routes for the
    same two variances (the sparse-pedigree posterior) add it to their own likelihood.

    Parameters
    ----------
    built : BuiltModel
        A model with one random term and a residual variance.

    Returns
    -------
    SpectralDensity
        With empty data arrays: ``logp`` is the log prior on x.

    Examples
    --------
    >>> import numpy as np, pandas as pd, bayeslmm as bl
    >>> from bayeslmm.engines.bayes import build
    >>> K = bl.Kinship(np.eye(6) * 0.5 + 0.5, [f"i{k}" for k in range(6)])
    >>> df = pd.DataFrame({"y": np.arange(6.0), "id": list(K.ids)})
    >>> prior = prior_density(build(bl.specify("y ~ 1 + (1 | id)", df, kinship={"id": K})))
    >>> prior.resid.size, prior.parametrisation
    (0, 'sd')
    """
    priors = built.priors
    term = built.spec.terms[0]
    group = term.group
    parametrisation = prior_parametrisation(priors)
    if parametrisation == "sd":
        specs = (priors.sd[group], priors.sigma)
        prior_a = positive_log_prior(priors.sd[group])
        prior_b = positive_log_prior(priors.sigma)
        beta = (1.0, 1.0)
    else:
        specs = (None, priors.total)
        prior_a = None
        prior_b = positive_log_prior(priors.total)
        beta = tuple(float(np.asarray(v).ravel()[0]) for v in priors.shares.params)
    return SpectralDensity(
        eigenvalues=np.zeros(0),
        resid=np.zeros(0),
        design=np.zeros((0, 0)),
        parametrisation=parametrisation,
        prior_a=prior_a,
        prior_b=prior_b,
        beta=beta,  # type: ignore[arg-type]
        group=group,
        components=tuple(built.components),
        share_weight=float(term.variance_weights("sample")[0, 0]),
        prior_specs=specs,
    )


def closed_form_applies(built: Any) -> bool:
    """True for a spectral model with only the variances free (β integrated out or absent),
    left as the builder made it, whose variance priors have closed-form densities.

    A model changed after building (a variable, prior or potential added through
    ``model.build()``) is no longer the closed form's, so it is sampled as a PyMC model.
    """
    if built.strategy != "spectral":
        return False
    group = built.spec.terms[0].group
    parametrisation = prior_parametrisation(built.priors)
    # a prior family without a closed-form density (a user's registered one) is sampled
    # as a PyMC model
    priors = built.priors
    used = (priors.sd[group], priors.sigma) if parametrisation == "sd" else (priors.total,)
    closed_priors = all(p.has_closed_form for p in used)
    if not getattr(built, "model_is_built", True):
        # the builder defers the PyMC model only when β is integrated out (or absent), and
        # nobody has asked for it, so nobody has changed it: the closed form writes it out
        return closed_priors
    model = built.model
    names = {v.name for v in model.free_RVs + model.deterministics}
    expected = set(variable_names(group, parametrisation))
    return (
        names == expected
        and not model.potentials
        and len(model.observed_RVs) == 1
        and closed_priors
    )


# -- the same log posterior as a C callback -------------------------------------------------
#
# nutpie calls a Python ``logp`` (from_pyfunc) with the GIL held, so chains sampled in
# parallel threads take turns. Its own numba backend hands the Rust sampler C function
# pointers instead (``_lib.LogpFunc``/``_lib.ExpandFunc``, the ``CompiledPyMCModel`` of
# nutpie.compile_pymc), which every chain calls at the same time. The functions below are
# that pair for the spectral posterior: module-level numba ``cfunc``s with no globals but
# constants, kept in numba's on-disk cache, reading everything about the data set from
# one float64 buffer (nutpie's "user data" pointer) laid out as
#
#     header (_HEADER entries, the _H_* indices) | eigenvalues (n) | resid (n) | design (n·p)
#
# Prior families are numbered (_prior_row); a family without a number (a user's
# registered one) keeps the Python callback.

_H_N, _H_P, _H_PARAMETRISATION, _H_PRIOR_A, _H_PRIOR_B = 0, 1, 2, 3, 7
_H_BETA, _H_BETALN, _H_SHARE_WEIGHT, _H_MULTIPLICITY = 11, 13, 14, 15
_HEADER = 16
_PARAMETRISATION_CODES = {"sd": 0, "share_sd": 1, "share_variance": 2}
_HALFNORMAL, _HALFSTUDENTT, _HALFCAUCHY, _EXPONENTIAL, _INVGAMMA = 1, 2, 3, 4, 5
#: SpectralDensity's fields that c_buffer writes out (a field added later, not written out
#: there, sends the density back to the Python callback rather than leaving it out)
_C_FIELDS = frozenset(
    {
        "eigenvalues",
        "resid",
        "design",
        "parametrisation",
        "prior_a",
        "prior_b",
        "beta",
        "group",
        "components",
        "share_weight",
        "multiplicity",
        "prior_specs",
    }
)


def _prior_row(prior: Prior | None) -> tuple[float, float, float, float] | None:
    """(code, c0, c1, c2) of a built-in positive prior for the C callback, or None for a
    family it does not know (which keeps the Python callback). The constants are those of
    the family's :meth:`~bayeslmm.priors.PriorFamily.log_density_of_log`."""
    from bayeslmm import priors as P

    if prior is None:
        return (0.0, 0.0, 0.0, 0.0)
    family = type(prior.distribution)
    p = [float(np.asarray(v, dtype=float).ravel()[0]) for v in prior.params]
    method = family.log_density_of_log
    if method is P.HalfNormal.log_density_of_log:
        (sd,) = p
        return (_HALFNORMAL, math.log(2.0) - 0.5 * LOG_2PI - math.log(sd), 1.0 / sd**2, 0.0)
    if method is P.HalfStudentT.log_density_of_log:
        nu, sd = p
        const = (
            math.log(2.0)
            + math.lgamma((nu + 1.0) / 2.0)
            - math.lgamma(nu / 2.0)
            - 0.5 * math.log(nu * math.pi * sd**2)
        )
        return (_HALFSTUDENTT, const, nu, nu * sd**2)
    if method is P.HalfCauchy.log_density_of_log:
        (beta,) = p
        return (_HALFCAUCHY, math.log(2.0) - math.log(math.pi) - math.log(beta), beta**2, 0.0)
    if method is P.Exponential.log_density_of_log:
        (lam,) = p
        return (_EXPONENTIAL, math.log(lam), lam, 0.0)
    if method is P.InverseGamma.log_density_of_log:
        a, b = (float(v) for v in prior.distribution.shape_scale(p))
        return (_INVGAMMA, a * math.log(b) - math.lgamma(a), a, b)
    return None


@cached_jit
def _log_prior_c(code: float, c0: float, c1: float, c2: float, t: float) -> tuple[float, float]:
    """log f(e^t) and d/dt of a numbered prior (the formulas of bayeslmm.priors)."""
    if code == _HALFNORMAL:
        z2 = math.exp(2.0 * t) * c1
        return c0 - 0.5 * z2, -z2
    if code == _HALFSTUDENTT:
        u = math.exp(2.0 * t) / c2
        return c0 - 0.5 * (c1 + 1.0) * math.log1p(u), -(c1 + 1.0) * u / (1.0 + u)
    if code == _HALFCAUCHY:
        u = math.exp(2.0 * t) / c1
        return c0 - math.log1p(u), -2.0 * u / (1.0 + u)
    if code == _EXPONENTIAL:
        value = c1 * math.exp(t)
        return c0 - value, -value
    if code == _INVGAMMA:
        value = c2 * math.exp(-t)
        return c0 - (c1 + 1.0) * t - value, -(c1 + 1.0) + value
    return math.nan, math.nan


@cached_jit
def _log_expit_c(x: float) -> float:
    if x >= 0:
        return -math.log1p(math.exp(-x))
    return x - math.log1p(math.exp(x))


@cached_jit
def posterior_from_buffer(x0: float, x1: float, buffer: np.ndarray) -> tuple[float, float, float]:
    """:meth:`SpectralDensity.logp` at x = (x0, x1) from the C callback's buffer
    (:meth:`SpectralDensity.c_buffer`): (log posterior, ∂/∂x0, ∂/∂x1); −inf where the
    Python ``logp`` gives −inf."""
    n = int(buffer[_H_N])
    p = int(buffer[_H_P])
    eigenvalues = buffer[_HEADER : _HEADER + n]
    resid = buffer[_HEADER + n : _HEADER + 2 * n]
    design = buffer[_HEADER + 2 * n : _HEADER + 2 * n + n * p].reshape((n, p))
    log_h, log_1mh = _log_expit_c(x0), _log_expit_c(-x0)
    h, total = math.exp(log_h), math.exp(x1)
    var_g, var_e = h * total, (1.0 - h) * total
    if not (var_e > 0.0 and math.isfinite(total)):
        return -math.inf, 0.0, 0.0
    loglik, d_g, d_e = marginal_loglik_grad(var_g, var_e, eigenvalues, resid, design)
    multiplicity = buffer[_H_MULTIPLICITY]
    if multiplicity != 0.0:
        loglik -= 0.5 * multiplicity * (LOG_2PI + math.log(var_e))
        d_e -= 0.5 * multiplicity / var_e
    dh = h * (1.0 - h)
    g1 = (d_g - d_e) * total * dh
    g2 = d_g * var_g + d_e * var_e
    a = _H_PRIOR_A
    b = _H_PRIOR_B
    if buffer[_H_PARAMETRISATION] == 0.0:
        lg, dlg = _log_prior_c(
            buffer[a], buffer[a + 1], buffer[a + 2], buffer[a + 3], 0.5 * (log_h + x1)
        )
        le, dle = _log_prior_c(
            buffer[b], buffer[b + 1], buffer[b + 2], buffer[b + 3], 0.5 * (log_1mh + x1)
        )
        jac = 0.5 * (log_h + x1) + 0.5 * (log_1mh + x1) - math.log(4.0)
        logp = loglik + lg + le + jac
        g1 += 0.5 * dlg * (1.0 - h) - 0.5 * dle * h + (0.5 - h)
        g2 += 0.5 * dlg + 0.5 * dle + 1.0
    else:
        ba, bb = buffer[_H_BETA], buffer[_H_BETA + 1]
        log_beta = (ba - 1.0) * log_h + (bb - 1.0) * log_1mh - buffer[_H_BETALN]
        jac = log_h + log_1mh
        g1 += (ba - 1.0) * (1.0 - h) - (bb - 1.0) * h + (1.0 - 2.0 * h)
        if buffer[_H_PARAMETRISATION] == 1.0:
            lt, dlt = _log_prior_c(buffer[b], buffer[b + 1], buffer[b + 2], buffer[b + 3], 0.5 * x1)
            jac += 0.5 * x1 - math.log(2.0)
            g2 += 0.5 * dlt + 0.5
        else:
            lt, dlt = _log_prior_c(buffer[b], buffer[b + 1], buffer[b + 2], buffer[b + 3], x1)
            jac += x1
            g2 += dlt + 1.0
        logp = loglik + log_beta + lt + jac
    return logp, g1, g2


def _logp_c(dim, x_, grad_, logp_, data_):  # noqa: ANN001, ANN202 (numba cfunc)
    """nutpie's C logp: 0 on success, 4 (recoverable: NUTS rejects the step) for a point
    outside the support or a non-finite value, −1 for a wrong dimension."""
    if dim != 2:
        return -1
    x = numba.carray(x_, (2,))
    grad = numba.carray(grad_, (2,))
    out = numba.carray(logp_, (1,))
    header = numba.carray(data_, (_HEADER,), np.float64)
    n = int(header[_H_N])
    p = int(header[_H_P])
    buffer = numba.carray(data_, (_HEADER + 2 * n + n * p,), np.float64)
    logp, g1, g2 = posterior_from_buffer(x[0], x[1], buffer)
    out[0] = logp
    grad[0] = g1
    grad[1] = g2
    if not (math.isfinite(logp) and math.isfinite(g1) and math.isfinite(g2)):
        return 4
    return 0


@cached_jit
def expand_from_buffer(x0: float, x1: float, buffer: np.ndarray, out: np.ndarray) -> None:
    """:meth:`SpectralDensity.expand`'s values, flat in its order, into ``out``."""
    h = math.exp(_log_expit_c(x0))
    total = math.exp(x1)
    var_g, var_e = h * total, (1.0 - h) * total
    c = buffer[_H_SHARE_WEIGHT]
    parametrisation = buffer[_H_PARAMETRISATION]
    if parametrisation == 0.0:
        share = c * var_g / (c * var_g + var_e)
        kin = var_g
    else:
        share = h
        kin = var_g / c
    out[0] = math.sqrt(kin)
    out[1] = math.sqrt(var_e)
    out[2] = kin
    out[3] = var_e
    out[4] = share
    k = 5
    if parametrisation != 0.0:
        out[k] = total
        k += 1
    if parametrisation == 1.0:
        out[k] = math.sqrt(total)
        k += 1
    out[k] = share
    out[k + 1] = 1.0 - share


def _expand_c(dim, n_expanded, x_, out_, data_):  # noqa: ANN001, ANN202 (numba cfunc)
    if dim != 2:
        return -1
    x = numba.carray(x_, (2,))
    out = numba.carray(out_, (n_expanded,))
    header = numba.carray(data_, (_HEADER,), np.float64)
    expand_from_buffer(x[0], x[1], header, out)
    return 0


_C_CALLBACKS: tuple[Any, Any] | None = None


def nutpie_cfuncs(logp: Callable, expand: Callable, **options: Any) -> tuple[Any, Any]:
    """``logp`` and ``expand`` as numba cfuncs with the signatures of nutpie's C interface
    (logp: dim, x, grad, logp out, user data; expand: dim, expanded dim, x, out, user data),
    cached on disk when a cache directory is writable. ``options`` go to ``numba.cfunc``
    (e.g. ``error_model="numpy"``). Every closed form with C callbacks compiles through it.

    Examples
    --------
    >>> logp, expand = nutpie_cfuncs(_logp_c, _expand_c)
    >>> logp.address > 0 and expand.address > 0
    True
    """
    t = numba.types
    logp_sig = t.int64(
        t.uint64, t.CPointer(t.double), t.CPointer(t.double), t.CPointer(t.double), t.voidptr
    )
    expand_sig = t.int64(t.uint64, t.uint64, t.CPointer(t.double), t.CPointer(t.double), t.voidptr)
    compiled = []
    for func, sig in ((logp, logp_sig), (expand, expand_sig)):
        try:
            compiled.append(numba.cfunc(sig, cache=True, **options)(func))
        except RuntimeError:  # no writable cache directory: compile in this process
            compiled.append(numba.cfunc(sig, **options)(func))
    return compiled[0], compiled[1]


def c_callbacks() -> tuple[Any, Any]:
    """The compiled (logp, expand) cfuncs, once per process: compiled by the first process
    after an install or upgrade (~2 s of CPU) into numba's on-disk cache, loaded from it by
    later ones in a few hundredths of a second.

    Examples
    --------
    >>> logp, expand = c_callbacks()
    >>> logp.address > 0
    True
    """
    global _C_CALLBACKS
    if _C_CALLBACKS is None:
        _C_CALLBACKS = nutpie_cfuncs(_logp_c, _expand_c)
    return _C_CALLBACKS


def nutpie_model(density: SpectralDensity) -> Any:
    """A nutpie model (``nutpie.sample`` accepts it) that samples ``density``.

    When every prior has a numbered C form (the built-in positive families), nutpie's Rust
    NUTS calls the compiled C callbacks (:func:`c_callbacks`) without the GIL, so chains
    sampled in parallel threads run at the same time; otherwise it calls
    :meth:`SpectralDensity.logp` and :meth:`SpectralDensity.expand` in Python.
    """
    buffer = density.c_buffer()
    if buffer is not None:
        compiled = _nutpie_c_model(density, buffer)
        if compiled is not None:
            return compiled
    return _nutpie_python_model(density)


def _expanded_layout(density: SpectralDensity) -> tuple[list[str], list[tuple[int, ...]]]:
    names, shapes = [], []
    for name, value in density.expand(np.zeros(2)).items():
        names.append(name)
        shapes.append(value.shape)
    return names, shapes


def _nutpie_c_model(density: SpectralDensity, buffer: np.ndarray) -> Any:
    """nutpie's own numba-backend model class around the C callbacks, or None where this
    nutpie has no such class (the Python callback is used then)."""
    from bayeslmm.engines.bayes.nutpie_callback import c_model

    names, shapes = _expanded_layout(density)
    return c_model(
        ndim=2,
        callbacks=c_callbacks(),
        buffer=buffer,
        layout=dict(zip(names, shapes, strict=True)),
        initial_point=density.initial_point,
        dims_of={"variance_share": ("component",)},
        coords={"component": list(density.components)},
    )


def _nutpie_python_model(density: SpectralDensity) -> Any:
    """nutpie's Python-callback model: Rust calls :meth:`SpectralDensity.logp` (GIL held)."""
    from nutpie.compiled_pyfunc import from_pyfunc

    names, shapes = _expanded_layout(density)
    return from_pyfunc(
        ndim=2,
        make_logp_fn=lambda: density.logp,
        make_expand_fn=lambda seed1, seed2, chain: density.expand,
        expanded_dtypes=[np.dtype("float64")] * len(names),
        expanded_shapes=shapes,
        expanded_names=names,
        coords={"component": list(density.components)},
        dims={"variance_share": ("component",)},
        make_initial_point_fn=density.initial_point,
    )
