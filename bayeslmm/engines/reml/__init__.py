"""Restricted maximum likelihood (REML) for Gaussian linear mixed models.

:func:`fit_reml` consumes a :class:`~bayeslmm.spec.ModelSpec` and returns a
:class:`~bayeslmm.results.reml_result.RemlFit`. Two routes:

- ``"spectral"``: one random term with one coefficient (e.g. ``(1 | id)`` with a kinship)
  and a homoscedastic residual. The eigendecomposition of K (cached on the Kinship) rotates
  the model so that ℓ_R is a 1-D function of δ = σ_e²/σ_g², O(n p²) per evaluation.
- ``"ai-reml"``: average-information REML over V = Σ θ_i V_i, for several kernels, iid
  factors, correlated random slopes and residual variances by environment. Its likelihood,
  score and AI matrix are evaluated either through Henderson's mixed-model equations
  (``"ai-reml-mme"``, size p + Σ q_t m_t, chosen when that is below n/2: repeated records)
  or with the dense n × n V (``"ai-reml-dense"``); for iid factors alone (crossed or nested,
  one residual variance) through *sparse* mixed-model equations (``"ai-reml-sparse"``,
  chosen from 500 random effects on: lme4's home ground, InstEval-sized designs).
- ``"sparse-pedigree"``: the animal model with a kinship from
  ``pedigree_relationship(pedigree, sparse=True)``: one pedigree term, fixed effects and one
  residual variance, through the sparse mixed-model equations with A⁻¹ (chosen whenever
  such a kinship is given; see :mod:`bayeslmm.engines.reml.sparse_pedigree`).
- ``"spectral-low-rank"`` (reported, not requested): the spectral route with a kinship from
  ``grm(dosages, low_rank=True)``, rotated by the thin SVD of its markers (O(n m²) once, no
  n × n matrix; see :mod:`bayeslmm.engines.reml.spectral`).

``criterion="ml"`` maximises the full likelihood instead (maximum likelihood, lme4's
``REML = FALSE``) through the same routes; likelihoods of ML fits compare models with
different fixed effects.

See ``docs/reml.md`` for the formulas and how to read the output.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
import warnings
from collections.abc import Callable
from typing import Literal, get_args

import numpy as np
import pandas as pd

from bayeslmm.engines.reml._common import CRITERIA, Criterion, RawFit
from bayeslmm.engines.reml._structure import (
    COVARIANCE,
    RESIDUAL,
    Structure,
    as_frame,
    build_structure,
    fixed_names,
    response,
)
from bayeslmm.engines.reml.aireml import fit_ai_reml, term_sigma
from bayeslmm.engines.reml.sparse import MAX_DENSE_REST, sparse_applicable, sparse_preferred
from bayeslmm.engines.reml.sparse_pedigree import fit_sparse_pedigree, resolve_sparse_pedigree
from bayeslmm.engines.reml.spectral import fit_spectral
from bayeslmm.errors import SpecificationError
from bayeslmm.kinship.low_rank import LowRankKinship
from bayeslmm.results.reml_result import RemlFit, boundary_lrt
from bayeslmm.spec import ModelSpec

__all__ = [
    "BoundaryFitWarning",
    "RemlConvergenceWarning",
    "RemlFit",
    "boundary_lrt",
    "fit_reml",
    "mme_preferred",
    "sparse_applicable",
    "sparse_preferred",
    "spectral_applicable",
]

#: The REML routes (``RemlFit.method`` reports the one that ran).
RemlRoute = Literal[
    "auto",
    "spectral",
    "ai-reml",
    "ai-reml-mme",
    "ai-reml-sparse",
    "ai-reml-dense",
    "sparse-pedigree",
]
METHODS: tuple[str, ...] = get_args(RemlRoute)


class BoundaryFitWarning(UserWarning):
    """lme4's "boundary (singular) fit": a variance is 0 or a covariance matrix is singular."""


class RemlConvergenceWarning(UserWarning):
    """The REML optimiser stopped before meeting its convergence criteria."""


def spectral_applicable(spec: ModelSpec) -> bool:
    """True when the spectral route applies: one single-coefficient term, iid residual.

    Examples
    --------
    >>> import pandas as pd
    >>> from bayeslmm import specify
    >>> df = pd.DataFrame({"y": [1.0, 2.0, 0.5, 1.5], "g": ["a", "a", "b", "b"]})
    >>> spectral_applicable(specify("y ~ 1 + (1 | g)", df))
    True
    """
    return len(spec.terms) == 1 and spec.terms[0].n_coef == 1 and spec.sigma_X is None


def mme_preferred(spec: ModelSpec) -> bool:
    """True when AI-REML should work on the mixed-model equations rather than on n × n V.

    The MME coefficient matrix has order p + Σ_t q_t m_t (fixed effects plus levels ×
    coefficients of every random term); it is used when that is below n_obs / 2, i.e. with
    repeated records per level, where it is much cheaper than the O(n³) dense route.

    Examples
    --------
    >>> import pandas as pd
    >>> from bayeslmm import specify
    >>> df = pd.DataFrame({"y": [1.0, 2.0, 0.5, 1.5, 3.0, 2.5, 1.0, 0.0], "g": list("aaaabbbb")})
    >>> mme_preferred(specify("y ~ 1 + (1 | g)", df))
    True
    """
    size = spec.X.shape[1] + sum(t.n_coef * t.n_levels for t in spec.terms)
    return size < spec.n_obs / 2


def _spectral_direct(spec: ModelSpec) -> bool:
    """One record per level of a kinship, in its order: the cached eigh serves the rotation."""
    term = spec.terms[0]
    return (
        term.kinship is not None
        and term.is_identity_incidence
        and bool(np.all(term.design[:, 0] == 1.0))
    )


def _low_rank(spec: ModelSpec) -> bool:
    """An intercept-only term on a low-rank kinship: the spectral route rotates by the thin
    SVD of the observations' markers Z W (any incidence, repeated records too)."""
    term = spec.terms[0]
    return isinstance(term.kinship, LowRankKinship) and bool(np.all(term.design[:, 0] == 1.0))


def _resolve(spec: ModelSpec, method: str) -> str:
    """Turn ``"auto"``/``"ai-reml"`` into the route that runs."""
    pedigree_route = resolve_sparse_pedigree(spec, method)  # A⁻¹ of a pedigree: its own route
    if pedigree_route is not None:
        return pedigree_route
    if method == "auto":
        if spectral_applicable(spec) and (_spectral_direct(spec) or _low_rank(spec)):
            return "spectral"
        if sparse_preferred(spec):
            return "ai-reml-sparse"
        if mme_preferred(spec):
            return "ai-reml-mme"
        return "spectral" if spectral_applicable(spec) else "ai-reml-dense"
    if method == "ai-reml":
        if sparse_preferred(spec):
            return "ai-reml-sparse"
        return "ai-reml-mme" if mme_preferred(spec) else "ai-reml-dense"
    return method


def fit_reml(
    spec: ModelSpec,
    method: RemlRoute = "auto",
    *,
    max_iter: int = 200,
    em_steps: int = 3,
    tol_loglik: float = 1e-8,
    tol_param: float = 1e-6,
    n_grid: int = 100,
    warn: bool = True,
    criterion: Criterion = "reml",
) -> RemlFit:
    """Fit a Gaussian linear mixed model by REML (or by maximum likelihood).

    Parameters
    ----------
    spec : ModelSpec
        From :func:`bayeslmm.specify` with ``family="gaussian"``.
    method : {"auto", "spectral", "ai-reml", "ai-reml-mme", "ai-reml-sparse", "ai-reml-dense"}
        ``"auto"``: the spectral route for one kinship term with one record per individual
        (its eigendecomposition is cached); else sparse mixed-model equations when
        :func:`sparse_preferred` (iid factors only, one residual variance, ≥ 500 random
        effects); else AI-REML through the dense mixed-model equations when
        :func:`mme_preferred` (repeated records); else spectral if
        :func:`spectral_applicable`; else dense AI-REML. ``"ai-reml"`` picks among the
        three AI-REML routes the same way; those three force a route. A kinship from
        ``pedigree_relationship(pedigree, sparse=True)`` takes ``"sparse-pedigree"`` under
        ``"auto"`` and ``"ai-reml"`` (other structures with it are refused).
        ``RemlFit.method`` reports the route that ran.
    max_iter : int
        Maximum AI-REML iterations.
    em_steps : int
        EM-REML warm-start iterations before AI-REML.
    tol_loglik, tol_param : float
        AI-REML stops when |Δℓ_R| < ``tol_loglik`` and the largest relative change of a
        covariance parameter is below ``tol_param``.
    n_grid : int
        Grid size over log δ ∈ [−10, 10] for the spectral route.
    warn : bool
        Emit :class:`BoundaryFitWarning` / :class:`RemlConvergenceWarning`.
    criterion : {"reml", "ml"}
        The likelihood maximised: restricted (REML, the default) or full (maximum
        likelihood, lme4's ``REML = FALSE``; ``RemlFit.criterion`` records it).

    Returns
    -------
    RemlFit

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from bayeslmm import specify
    >>> rng = np.random.default_rng(1)
    >>> df = pd.DataFrame({"g": np.repeat(list("abcdefgh"), 5)})
    >>> df["y"] = np.repeat(rng.normal(size=8), 5) + rng.normal(size=40)
    >>> fit = fit_reml(specify("y ~ 1 + (1 | g)", df))
    >>> list(fit.variance_components()["grp"])
    ['g', 'Residual']
    >>> ml = fit_reml(specify("y ~ 1 + (1 | g)", df), criterion="ml")
    >>> ml.criterion, bool(ml.loglik_ml >= fit.loglik_ml)
    ('ml', True)
    """
    t0 = time.perf_counter()
    if method not in METHODS:
        raise SpecificationError(f"method must be one of {METHODS}; got {method!r}.")
    if criterion not in CRITERIA:
        raise SpecificationError(
            f"criterion must be 'reml' (restricted likelihood) or 'ml' (full likelihood); "
            f"got {criterion!r}."
        )
    route = method
    options = {
        "max_iter": max_iter,
        "em_steps": em_steps,
        "tol_loglik": tol_loglik,
        "tol_param": tol_param,
        "n_grid": n_grid,
        "warn": warn,
    }
    if not spec.family.is_gaussian:
        raise SpecificationError(
            f"REML is defined for Gaussian responses; this model's family is "
            f"{spec.family.name!r}. Use the Bayesian engine (or Laplace ML) for a GLMM."
        )
    method = _resolve(spec, method)
    if method == "spectral" and not spectral_applicable(spec):
        raise SpecificationError(
            "method='spectral' needs exactly one random term with one coefficient (e.g. "
            f"(1 | id)) and one residual variance; this model has {len(spec.terms)} term(s) "
            f"{[t.label for t in spec.terms]}"
            + (" and residual variances by group" if spec.sigma_X is not None else "")
            + ". Use method='ai-reml'."
        )
    if method == "ai-reml-sparse" and not sparse_applicable(spec):
        raise SpecificationError(
            "method='ai-reml-sparse' needs iid random terms only (no kinship) and one residual "
            f"variance, with at most {MAX_DENSE_REST} random effects outside the largest "
            "term; use method='ai-reml'."
        )
    structure = build_structure(spec)
    # Both engines see a well-conditioned problem: covariates and y centred on an intercept
    # (a huge mean makes X*ᵀX* numerically singular, and the estimates would depend on
    # where y's zero lies), y divided by a power of two near its spread (exact in floating
    # point; y × 1e±150 would overflow or underflow the variances otherwise). REML is
    # unchanged by all three; they are undone exactly below.
    X = np.asarray(spec.X, dtype=float)
    y = response(spec)
    A, const = _centring(X)
    shift = np.zeros(X.shape[1])
    if A is not None:
        shift[const] = float(np.mean(y)) / X[0, const]
        y = y - shift[const] * X[:, const]
        X = X @ A
    y, y_scale = _scaled_response(y)
    if method == "spectral":
        raw = fit_spectral(structure, y, X, n_grid=n_grid, criterion=criterion)
        if _low_rank(spec):
            method = "spectral-low-rank"  # the thin SVD of the markers, never n × n
    elif method == "sparse-pedigree":
        raw = fit_sparse_pedigree(structure, y, X, criterion=criterion)
    else:
        raw = fit_ai_reml(
            structure,
            y,
            X,
            max_iter=max_iter,
            em_steps=em_steps,
            tol_loglik=tol_loglik,
            tol_param=tol_param,
            route={"ai-reml-mme": "mme", "ai-reml-sparse": "sparse"}.get(method, "dense"),
            criterion=criterion,
        )
        method = f"ai-reml-{raw.route}"
    raw = _unscale(raw, y_scale, A, shift, spec.n_obs)
    boundary, notes = _boundary(structure, raw.theta)
    messages = list(raw.messages) + notes
    if warn and boundary:
        warnings.warn(
            "boundary (singular) fit: " + "; ".join(notes) + ". Consider simplifying the "
            "random-effects structure (see lme4's ?isSingular).",
            BoundaryFitWarning,
            stacklevel=2,
        )
    if warn and not raw.converged:
        warnings.warn(
            f"{criterion.upper()} ({method}) did not converge after {raw.n_iter} iterations: "
            + ("; ".join(raw.messages) or "criteria not met")
            + ". Estimates may be inaccurate; try larger max_iter.",
            RemlConvergenceWarning,
            stacklevel=2,
        )
    timing = dict(raw.timing)
    timing["total_s"] = time.perf_counter() - t0
    # the fit can refit its own model by the other criterion (compare() refits REML fits
    # with ML when their fixed effects differ); results know no engine, so the engine
    # hands the fit this function
    refitter = functools.partial(_refit, spec, route, options)
    return _assemble(spec, structure, raw, method, boundary, messages, timing, criterion, refitter)


def _refit(spec: ModelSpec, route: str, options: dict, criterion: Criterion) -> RemlFit:
    """The same model, route and settings fitted by ``criterion`` (see ``RemlFit.refit_ml``)."""
    return fit_reml(spec, route, criterion=criterion, **options)


def _scaled_response(y: np.ndarray) -> tuple[np.ndarray, float]:
    """y / s with s the power of two nearest to sd(y) (division by it is exact)."""
    top = float(np.max(np.abs(y)))
    if not np.isfinite(top) or top == 0.0:
        return y, 1.0
    sd = top * float(np.std(y / top))  # no overflow of y² for |y| near 1e300
    if not sd > 0.0:
        return y, 1.0
    s = math.ldexp(1.0, round(math.log2(sd)))
    return y / s, s


def _centring(X: np.ndarray) -> tuple[np.ndarray | None, int | None]:
    """A with X A = X centred on its constant column (unit triangular: |A| = 1), and the
    index of that column; (None, None) without one.

    β = A β̃ recovers the coefficients of the original columns from those of X A; the REML
    likelihood is unchanged because log|Xᵀ V⁻¹ X| changes by 2 log|A| = 0. Column ``c`` of
    X A is column ``c`` of X, so y may also be shifted along it.
    """
    if X.shape[0] < 2 or X.shape[1] < 1:
        return None, None
    constant = np.flatnonzero(np.all(X == X[0], axis=0) & (X[0] != 0))
    if constant.size == 0:
        return None, None
    c = int(constant[0])
    A = np.eye(X.shape[1])
    A[c] = -X.mean(axis=0) / X[0, c]
    A[c, c] = 1.0
    return A, c


def _unscale(raw: RawFit, s: float, A: np.ndarray | None, shift: np.ndarray, n: int) -> RawFit:
    """Undo :func:`_scaled_response`, the shift of y and :func:`_centring` on a result."""
    if s == 1.0 and A is None:
        return raw
    beta, beta_cov = raw.beta * s + shift, raw.beta_cov * s**2
    if A is not None:
        beta, beta_cov = A @ beta, A @ beta_cov @ A.T
    p = beta.size
    log_s = math.log(s)
    blups = {
        label: frame.apply(lambda col: col * (s * s if str(col.name).startswith("pev:") else s))
        for label, frame in raw.blups.items()
    }
    return dataclasses.replace(
        raw,
        theta=raw.theta * s**2,
        theta_cov=raw.theta_cov * s**4,
        beta=beta,
        beta_cov=0.5 * (beta_cov + beta_cov.T),
        loglik_reml=raw.loglik_reml - (n - p) * log_s,
        loglik_ml=raw.loglik_ml - n * log_s,
        blups=blups,
    )


def _boundary(structure: Structure, theta: np.ndarray) -> tuple[bool, list[str]]:
    """Variances at 0 (or negligible) and singular correlated Σ, as lme4's isSingular."""
    total = float(
        sum(v for v, p in zip(theta, structure.params, strict=True) if p.kind != COVARIANCE)
    )
    tol = 1e-8 * max(total, 1e-300)
    notes = []
    for value, p in zip(theta, structure.params, strict=True):
        if p.kind == COVARIANCE:
            continue
        if value <= tol:
            if p.kind == RESIDUAL:
                where = "" if p.var1 is None else f" of {p.var1}"
                notes.append(f"the residual variance{where} is estimated at 0")
            else:
                notes.append(f"variance of {p.grp} {p.var1} is estimated at 0")
    for t, term in enumerate(structure.terms):
        if term.correlated and term.n_coef > 1:
            S = term_sigma(structure, theta, t)
            w = np.linalg.eigvalsh(S)
            if w[-1] > 0 and w[0] <= 1e-6 * w[-1] and not np.any(np.diag(S) <= tol):
                notes.append(
                    f"the covariance matrix of {structure.term_labels[t]} is singular "
                    "(a correlation of ±1)"
                )
    return bool(notes), notes


def _assemble(
    spec: ModelSpec,
    structure: Structure,
    raw: RawFit,
    method: str,
    boundary: bool,
    messages: list[str],
    timing: dict[str, float],
    criterion: Criterion = "reml",
    refitter: Callable[[str], RemlFit] | None = None,
) -> RemlFit:
    names = fixed_names(spec)
    se = np.sqrt(np.clip(np.diag(raw.beta_cov), 0.0, None))
    fixed = pd.DataFrame(
        {"estimate": raw.beta, "se": se, "t": raw.beta / np.where(se > 0, se, math.nan)},
        index=pd.Index(names, name="term"),
    )
    return RemlFit(
        method=method,
        formula=spec.formula,
        n_obs=spec.n_obs,
        parameters=as_frame(structure, raw.theta, raw.theta_cov),
        parameter_cov=raw.theta_cov,
        fixed_table=fixed,
        fixed_cov=raw.beta_cov,
        blups=raw.blups,
        loglik_reml=float(raw.loglik_reml),
        loglik_ml=float(raw.loglik_ml),
        converged=bool(raw.converged),
        n_iter=int(raw.n_iter),
        boundary=boundary,
        timing=timing,
        messages=tuple(messages),
        spec=spec,
        sigma_formula=spec.sigma_formula,
        criterion=criterion,
        refitter=refitter,
    )
