"""Predictions of a fitted model: conditional (this individual) or marginal (the population).

A mixed model answers two questions (docs/questions.md):

- ``kind="conditional"``: the expected response *of these individuals*, given their random
  effects: h(Xβ + Zu) on the response scale. Individuals with records use their fitted
  random effects; individuals in the kinship without a record (genotyped, unphenotyped) use
  E[u_new | y] = K_new,train K_train⁻¹ E[u_train | y], the BLUP of animals without a
  phenotype (Henderson 1977), and their posterior draws carry the part of u_new that the
  relatives do not predict, u_new − A u_train ~ N(0, Σ ⊗ (K_nn − A K_tn)). A new level of an
  iid factor has E[u] = 0 (lme4's ``allow.new.levels``).
- ``kind="marginal"``: the expected response *of the population* with these covariates,
  the random effects integrated out. Gaussian: Xβ. GLMMs: E[h(Xβ + l)], l ~ N(0, v) with
  v = Σ_t d_tᵀ Σ_t d_t K_t,ll the row's random-effect variance (plus the observation-level
  variance of a Poisson model), by the family's closed form (Poisson log, probit) or
  Gauss–Hermite quadrature: population-averaged probabilities (GLMMadaptive's and
  brmsmargins' marginal means). An individual not in the kinship, or a row without the
  grouping column, is an average individual of the fitted sample: K_ll = mean diag K.

A Poisson model's observation-level effect is overdispersion, not an individual's effect:
both kinds average over it (E[y | u] = exp(η + σ²_olre/2)).

Uncertainty: posterior draws for NUTS (the common columns are the posterior mean, SD and
HDI); for REML, prediction error variances at θ̂ (Henderson's C⁻¹, including the error of
β̂; the uncertainty of θ̂ is ignored, as lme4's and rrBLUP's); for Laplace ML, a delta-method
SE from Cov(β̂) and the conditional variance of u at its mode (lme4's ``condVar``), their
cross-covariance ignored. Point fits' intervals are Wald intervals.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from scipy import special, stats

from bayeslmm.errors import DataError, SpecificationError, preview
from bayeslmm.results.algebra import gaussian_algebra
from bayeslmm.results.estimate import COMMON_COLUMNS, Draws, PosteriorEstimate, _PointParams
from bayeslmm.spec import split_formula

if TYPE_CHECKING:
    import xarray as xr

    from bayeslmm.families import Family
    from bayeslmm.kinship import Kinship
    from bayeslmm.spec import ModelSpec, RandomTerm

PredictionKind = Literal["conditional", "marginal"]
KINDS = ("conditional", "marginal")

#: Gauss–Hermite nodes of the marginal (population-averaged) GLMM means: 128 nodes integrate
#: logit⁻¹ over a latent random-effect SD up to 3 to 1e-10 and up to 5 to 1e-7 (the
#: integrand approaches a step as the SD grows, which slows quadrature down).
GH_NODES = 128

#: Draws × rows × nodes handled at once by the quadrature.
_BLOCK = 4_000_000


# ---------------------------------------------------------------------------------------
# the rows to predict
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TermRows:
    """One random term at the prediction rows.

    ``position``: each row's level, an index into ``term.levels`` followed by ``new_ids``
    (-1: the row has no level, marginal predictions only); ``design``: the rows' values of
    the term's coefficients (N × m); ``kdiag``: K_ll of each row's level (mean diag K for an
    unknown one); ``new``: the conditional law of the new levels (None without any).
    """

    term: RandomTerm
    design: np.ndarray
    position: np.ndarray
    new_ids: tuple[str, ...]
    new: Any
    kdiag: np.ndarray


@dataclass(frozen=True)
class PredictionRows:
    """The fixed design, offset and random-term layout of the rows to predict."""

    index: pd.Index
    X: np.ndarray
    offset: np.ndarray
    terms: tuple[TermRows, ...]

    @property
    def n(self) -> int:
        return int(self.X.shape[0])


def _names(common: Any) -> list[str]:
    names: list[str] = []
    for term_name, term in common.terms.items():
        width = common.slices[term_name].stop - common.slices[term_name].start
        labels = list(getattr(term, "labels", None) or [term_name])
        if len(labels) != width:
            labels = [f"{term_name}[{i}]" for i in range(width)]
        names.extend(labels)
    return names


def _new_design(rhs: str, train: pd.DataFrame, new: pd.DataFrame, what: str) -> tuple:
    """The design of ``rhs`` on ``new``, encoded as on the fitted data (factor levels,
    ``scale()`` centres): ``(matrix, names)``."""
    import formulae

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dm = formulae.design_matrices(rhs, train, na_action="error")
    common = dm.common
    if common is None:
        return np.zeros((new.shape[0], 0)), []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = common.evaluate_new_data(new)
    except Exception as exc:  # formulae raises KeyError, ValueError, ...
        missing = sorted(
            c for c in train.columns if c not in new.columns and c in rhs.replace(" ", "")
        )
        hint = f" newdata lacks the column(s) {missing}." if missing else ""
        raise DataError(
            f"Cannot build the {what} '{rhs}' on newdata: {type(exc).__name__}: {exc}.{hint} "
            "Give newdata the columns the formula uses, with values (factor levels) seen in "
            "the fitted data."
        ) from exc
    return np.asarray(values.design_matrix, dtype=float), _names(common)


def prediction_rows(
    spec: ModelSpec,
    newdata: pd.DataFrame | None,
    kinship: Mapping[str, Kinship] | None,
    kind: str,
) -> PredictionRows:
    """The rows to predict: the fitted observations (``newdata`` None) or ``newdata``.

    Examples
    --------
    >>> import numpy as np, pandas as pd, bayeslmm as bl
    >>> df = pd.DataFrame({"y": [1.0, 2.0, 0.5, 1.5], "g": ["a", "a", "b", "b"]})
    >>> spec = bl.specify("y ~ 1 + (1 | g)", df)
    >>> rows = prediction_rows(spec, pd.DataFrame({"g": ["b", "z"]}), None, "conditional")
    >>> rows.terms[0].position.tolist(), rows.terms[0].new_ids
    ([1, 2], ('z',))
    """
    if kind not in KINDS:
        raise SpecificationError(f"kind must be 'conditional' or 'marginal'; got {kind!r}.")
    kinship = dict(kinship or {})
    unknown = sorted(set(kinship).difference(t.group for t in spec.terms))
    if unknown:
        raise SpecificationError(
            f"kinship is given for {unknown}, which are not grouping factors of the model "
            f"(its random terms are {[t.group for t in spec.terms]})."
        )
    if newdata is None:
        terms = []
        for term in spec.terms:
            kd = np.ones(term.n_levels) if term.kinship is None else np.diag(term.kinship.matrix)
            terms.append(
                TermRows(
                    term, np.asarray(term.design), np.asarray(term.index), (), None, kd[term.index]
                )
            )
        offset = np.zeros(spec.n_obs) if spec.offset is None else np.asarray(spec.offset)
        return PredictionRows(
            pd.RangeIndex(spec.n_obs, name="row"),
            np.asarray(spec.X, float),
            offset,
            tuple(terms),
        )
    if not isinstance(newdata, pd.DataFrame):
        raise DataError(f"newdata must be a pandas DataFrame; got {type(newdata).__name__}.")
    if newdata.shape[0] == 0:
        raise DataError("newdata has no rows; give one row per prediction.")
    new = newdata.reset_index(drop=True)
    _, fixed, blocks = split_formula(spec.formula)
    X, names = _new_design(fixed, spec.data, new, "fixed effects")
    offset_cols = [k for k, nm in enumerate(names) if nm.startswith("offset(")]
    offset = X[:, offset_cols].sum(axis=1) if offset_cols else np.zeros(new.shape[0])
    keep = [k for k in range(len(names)) if k not in offset_cols]
    X = X[:, keep]
    if [names[k] for k in keep] != list(spec.fixed_names):
        raise DataError(
            f"newdata gives the fixed-effect columns {[names[k] for k in keep]}, the fitted "
            f"model has {list(spec.fixed_names)}; give newdata the fitted data's covariates."
        )
    terms = [
        _term_rows(term, block, spec, new, kinship.get(term.group), kind)
        for term, block in zip(spec.terms, blocks, strict=True)
    ]
    return PredictionRows(newdata.index, X, offset, tuple(terms))


def _term_rows(
    term: RandomTerm, block: Any, spec: ModelSpec, new: pd.DataFrame, kin: Any, kind: str
) -> TermRows:
    parts = [p.strip() for p in block.group.split(":")]
    N = new.shape[0]
    mean_diag = 1.0 if term.kinship is None else float(np.mean(np.diag(term.kinship.matrix)))
    missing_cols = [p for p in parts if p not in new.columns]
    if term.is_intercept_only:
        design = np.ones((N, 1))
    else:
        design, _ = _new_design(block.lhs, spec.data, new, f"random term ({term.label})")
    if missing_cols:
        if kind == "conditional":
            raise DataError(
                f"newdata lacks the grouping column {missing_cols} of ({term.label}); "
                "conditional predictions are for named individuals. Add the column, or ask "
                "for kind='marginal' (the population average)."
            )
        return TermRows(term, design, np.full(N, -1), (), None, np.full(N, mean_diag))
    ids = new[parts].astype(str).agg(":".join, axis=1).to_numpy()
    pos = {lvl: k for k, lvl in enumerate(term.levels)}
    new_ids: list[str] = []
    position = np.empty(N, dtype=int)
    unresolved: list[str] = []
    kin_ids = set() if kin is None else set(kin.ids)
    for r, i in enumerate(ids):
        if i in pos:
            position[r] = pos[i]
            continue
        if term.kinship is not None and i not in kin_ids:
            if kind == "conditional":
                unresolved.append(i)
            position[r] = -1
            continue
        if i not in new_ids:
            new_ids.append(i)
        position[r] = term.n_levels + new_ids.index(i)
    if unresolved:
        hint = (
            f"kinship={{'{term.group}': K}} with a kinship that covers them"
            if kin is None
            else f"a kinship that covers them (kinship '{kin.name}' does not)"
        )
        raise DataError(
            f"{len(set(unresolved))} '{term.group}' ids in newdata have no record and are not "
            f"in the kinship: {preview(sorted(set(unresolved)))}. Conditional predictions of "
            f"individuals without records need {hint}, or ask for kind='marginal'."
        )
    kd_train = np.ones(term.n_levels) if term.kinship is None else np.diag(term.kinship.matrix)
    if term.kinship is not None and new_ids:
        kd_new = np.diag(kin.subset(new_ids).matrix)
    else:
        kd_new = np.ones(len(new_ids))
    kd_all = np.r_[kd_train, kd_new]
    kdiag = np.where(position >= 0, kd_all[np.maximum(position, 0)], mean_diag)
    nl = None
    if new_ids and kind == "conditional":
        nl = gaussian_algebra().new_levels(term, kin, new_ids)
    return TermRows(term, design, position, tuple(new_ids), nl, kdiag)


# ---------------------------------------------------------------------------------------
# parameter values
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ParameterValues:
    """Each term's Σ (S…, m, m), β (S…, p), the Gaussian residual variance of each fitted
    observation (S…, n; None for a GLMM) and the observation-level variance (S…), with
    leading sample dims S… = (N,) for draws and () for a point."""

    sigmas: list[np.ndarray]
    beta: np.ndarray
    residual: np.ndarray | None
    olre: np.ndarray


def _residual_rows(p: Any, spec: ModelSpec) -> np.ndarray:
    """Residual variance of every observation, shape (…, n)."""
    n = spec.n_obs
    if spec.sigma_X is None:
        v = np.asarray(p.residual_variance())
        return np.broadcast_to(v[..., None], v.shape + (n,))
    groups = spec.residual_groups()
    if groups is not None:
        _, group = groups
        cols = [
            np.asarray(p.residual_variance(np.flatnonzero(group == g)))
            for g in range(int(group.max()) + 1)
        ]
        return np.stack(cols, axis=-1)[..., group]
    return np.stack([np.asarray(p.residual_variance(np.array([i]))) for i in range(n)], -1)


def parameter_values(fit: Any, flatten: bool = True) -> ParameterValues:
    """The fit's parameters as arrays (draws flattened to (N, …) when ``flatten``).

    Examples
    --------
    >>> # parameter_values(fit).sigmas[0].shape   # (4000, 1, 1) for 4 chains × 1000 draws
    """
    spec = fit.spec
    shapes: list[tuple[int, ...]] = []
    gaussian = spec.family.is_gaussian

    def pack(p: Any) -> np.ndarray:
        pieces = [np.asarray(p.sigma(t)) for t in range(len(spec.terms))]
        pieces.append(np.asarray(p.beta))
        pieces.append(np.asarray(p.olre_variance)[..., None])
        if gaussian:
            pieces.append(_residual_rows(p, spec))
        lead = np.asarray(p.beta).shape[:-1]
        shapes.clear()
        shapes.extend(x.shape[len(lead) :] for x in pieces)
        return np.concatenate([x.reshape(*lead, -1) for x in pieces], axis=-1)

    estimate = fit.estimate()
    if isinstance(estimate, PosteriorEstimate):
        values = estimate.evaluate(pack).values
        values = values.reshape(-1, values.shape[-1]) if flatten else values
    else:
        # the values at x̂ only: evaluate() would add a finite-difference Jacobian
        values = pack(_PointParams(np.asarray(estimate.x, float), estimate.layout, spec))
    lead = values.shape[:-1]
    out, at = [], 0
    for shp in shapes:
        size = int(np.prod(shp)) if shp else 1
        out.append(values[..., at : at + size].reshape(*lead, *shp))
        at += size
    k = len(spec.terms)
    sigmas = out[:k]
    beta = out[k]
    olre = out[k + 1][..., 0]
    residual = out[k + 2] if gaussian else None
    return ParameterValues(sigmas, beta, residual, olre)


# ---------------------------------------------------------------------------------------
# the response scale
# ---------------------------------------------------------------------------------------
def mean_response(
    family: Family, eta: np.ndarray, variance: np.ndarray | float, n_nodes: int = GH_NODES
) -> np.ndarray:
    """E[h(η + l)], l ~ N(0, variance): the family's closed form, else Gauss–Hermite.

    ``variance`` broadcasts against ``eta``; 0 gives h(η).

    Examples
    --------
    >>> import numpy as np, bayeslmm as bl
    >>> round(float(mean_response(bl.Poisson(), np.array(0.0), 2.0)), 6)   # e^(0 + 2/2)
    2.718282
    >>> round(float(mean_response(bl.Bernoulli(), np.array(0.0), 4.0)), 6)  # symmetric
    0.5
    """
    eta = np.asarray(eta, dtype=float)
    V = np.broadcast_to(np.asarray(variance, dtype=float), eta.shape)
    if family.is_gaussian:
        return eta.copy()
    closed = family.closed_form_moments(eta, V).get("h")
    if closed is not None:
        return np.asarray(closed, dtype=float)
    x, w = special.roots_hermite(n_nodes)  # stable for hundreds of nodes, unlike hermgauss
    w = w / np.sqrt(np.pi)
    flat_eta, flat_v = eta.reshape(-1), V.reshape(-1)
    out = np.empty(flat_eta.size)
    step = max(1, _BLOCK // n_nodes)
    for lo in range(0, flat_eta.size, step):
        sl = slice(lo, lo + step)
        grid = flat_eta[sl, None] + np.sqrt(2.0 * flat_v[sl])[:, None] * x[None, :]
        out[sl] = family.inverse_link(grid) @ w
    return out.reshape(eta.shape)


# ---------------------------------------------------------------------------------------
# pieces of the linear predictor
# ---------------------------------------------------------------------------------------
def random_variance(rows: PredictionRows, sigmas: list[np.ndarray]) -> np.ndarray:
    """Σ_t d_tᵀ Σ_t d_t K_t,ll per row, shape (S…, N): the marginal variance of Zu."""
    total = 0.0
    for tr, S in zip(rows.terms, sigmas, strict=True):
        quad = np.einsum("rj,...jk,rk->...r", tr.design, S, tr.design)
        total = total + quad * tr.kdiag
    return np.asarray(total) if not np.isscalar(total) else np.zeros(rows.n)


def _random_part(
    rows: PredictionRows,
    effects: list[np.ndarray],
    sigmas: list[np.ndarray],
    rng: np.random.Generator | None,
) -> np.ndarray:
    """Σ_t d_t · u_t[level] per row, (N_draws, N) or (N,), with u_new = A u_train (+ draws
    of the Schur part when ``rng`` is given)."""
    out = 0.0
    for tr, u, S in zip(rows.terms, effects, sigmas, strict=True):
        # u: (…, q, m)
        if tr.new_ids:
            A = tr.new.A
            u_new = np.einsum("vq,...qm->...vm", A, u)
            if rng is not None:
                m = tr.term.n_coef
                Lsig = _psd_root(S)  # (…, m, m)
                z = rng.standard_normal(u.shape[:-2] + (tr.new.root.shape[1], m))
                eps = np.einsum("vw,...wj,...kj->...vk", tr.new.root, z, Lsig)
                u_new = u_new + eps
            u = np.concatenate([u, u_new], axis=-2)
        picked = u[..., tr.position, :]  # (…, N, m)
        out = out + np.einsum("...rj,rj->...r", picked, tr.design)
    return np.asarray(out) if not np.isscalar(out) else np.zeros(rows.n)


def _psd_root(S: np.ndarray) -> np.ndarray:
    w, U = np.linalg.eigh(S)
    return U * np.sqrt(np.clip(w, 0.0, None))[..., None, :]


def _lu_matrix(rows: PredictionRows) -> np.ndarray:
    """Lu (N × Q): each row's coefficients on the fitted levels' effects (random_design order),
    new levels through A."""
    blocks = []
    for tr in rows.terms:
        q, m = tr.term.n_levels, tr.term.n_coef
        ext = np.zeros((rows.n, q))
        train = (tr.position >= 0) & (tr.position < q)
        ext[np.flatnonzero(train), tr.position[train]] = 1.0
        newrows = np.flatnonzero(tr.position >= q)
        if newrows.size:
            ext[newrows] = tr.new.A[tr.position[newrows] - q]
        for j in range(m):
            blocks.append(ext * tr.design[:, j : j + 1])
    return np.hstack(blocks) if blocks else np.zeros((rows.n, 0))


def _schur_variance(rows: PredictionRows, sigmas: list[np.ndarray]) -> np.ndarray:
    """Var of the part of the new levels' effects their relatives do not predict, per row."""
    var = np.zeros(rows.n)
    for tr, S in zip(rows.terms, sigmas, strict=True):
        q = tr.term.n_levels
        newrows = np.flatnonzero(tr.position >= q)
        if newrows.size:
            s = tr.new.schur_diagonal[tr.position[newrows] - q]
            quad = np.einsum("rj,jk,rk->r", tr.design[newrows], S, tr.design[newrows])
            var[newrows] += quad * s
    return var


def _effects_arrays(spec: ModelSpec, u: np.ndarray) -> list[np.ndarray]:
    """Split a (…, Q) random-effect vector (random_design order) into per-term (…, q, m)."""
    out, at = [], 0
    for term in spec.terms:
        q, m = term.n_levels, term.n_coef
        part = u[..., at : at + q * m].reshape(*u.shape[:-1], m, q)
        out.append(np.swapaxes(part, -1, -2))
        at += q * m
    return out


# ---------------------------------------------------------------------------------------
# predictions per engine
# ---------------------------------------------------------------------------------------
def posterior_effects(fit: Any) -> list[np.ndarray]:
    """u draws per term, (N, q, m), from the posterior (sampled or drawn from u | y, θ)."""
    out = []
    for term in fit.spec.terms:
        try:
            draws = fit.breeding_values_draws(term.group)
        except ValueError as exc:
            raise SpecificationError(
                f"Conditional predictions need draws of the random effects of ({term.label}), "
                f"which this fit ({fit.strategy} strategy) neither sampled nor can draw: "
                f"{exc} Refit with strategy='latent', or ask for kind='marginal'."
            ) from exc
        dims = ("chain", "draw", f"{term.group}_level", f"{term.group}_coef")
        values = np.asarray(draws.transpose(*dims).values, dtype=float)
        out.append(values.reshape(-1, term.n_levels, term.n_coef))
    return out


def predict_draws(fit: Any, rows: PredictionRows, kind: str, seed: int | None = None) -> np.ndarray:
    """Posterior draws (chain, draw, N) of the predictions of a NUTS fit."""
    spec = fit.spec
    lead = (fit.posterior.sizes["chain"], fit.posterior.sizes["draw"])
    flat = parameter_values(fit)
    eta = flat.beta @ rows.X.T + rows.offset
    if kind == "conditional":
        effects = posterior_effects(fit)
        rng = np.random.default_rng(fit.seed if seed is None else seed)
        eta = eta + _random_part(rows, effects, flat.sigmas, rng)
        out = mean_response(spec.family, eta, flat.olre[:, None])
    else:
        v = random_variance(rows, flat.sigmas) + flat.olre[:, None]
        out = mean_response(spec.family, eta, v)
    return out.reshape(*lead, rows.n)


def predict_point(fit: Any, rows: PredictionRows, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Estimates and standard errors of the predictions of a REML or Laplace fit."""
    spec = fit.spec
    estimate = fit.estimate()
    if kind == "marginal":

        def fn(p: Any) -> np.ndarray:
            sig = [np.asarray(p.sigma(t)) for t in range(len(spec.terms))]
            eta = rows.X @ np.asarray(p.beta) + rows.offset
            if spec.family.is_gaussian:
                return eta
            v = random_variance(rows, sig) + np.asarray(p.olre_variance)
            return mean_response(spec.family, eta, v)

        q = estimate.evaluate(fn)
        return q.value, q.se()
    values = parameter_values(fit)
    algebra = gaussian_algebra()
    Lu = _lu_matrix(rows)
    extra = _schur_variance(rows, values.sigmas)
    if spec.family.is_gaussian:
        h = algebra.henderson(spec, values.sigmas, values.residual)
        eta = rows.X @ h.beta + Lu @ h.u + rows.offset
        var = h.prediction_variance(rows.X, Lu) + extra
        return eta, np.sqrt(var)
    u = fit.conditional_modes()
    eta = rows.X @ values.beta + Lu @ u + rows.offset
    eta_fit = np.asarray(spec.X, float) @ values.beta + random_design_product(spec, u)
    if spec.offset is not None:
        eta_fit = eta_fit + np.asarray(spec.offset)
    C_uu = algebra.conditional_covariance(spec, values.sigmas, eta_fit, float(values.olre))
    cov_beta = fit.estimate().cov[estimate.layout.beta, estimate.layout.beta]
    var = (
        np.einsum("ij,jk,ik->i", rows.X, cov_beta, rows.X)
        + np.einsum("ij,jk,ik->i", Lu, C_uu, Lu)
        + extra
    )
    olre = float(values.olre)
    mean = mean_response(spec.family, eta, olre)
    step = 1e-5 * np.maximum(1.0, np.abs(eta))
    slope = (
        mean_response(spec.family, eta + step, olre) - mean_response(spec.family, eta - step, olre)
    ) / (2 * step)
    return mean, np.abs(slope) * np.sqrt(np.clip(var, 0.0, None))


def random_design_product(spec: ModelSpec, u: np.ndarray) -> np.ndarray:
    """Z u for the fitted observations (u in random_design order)."""
    out = np.zeros(spec.n_obs)
    for term, ut in zip(spec.terms, _effects_arrays(spec, u), strict=True):
        out += np.einsum("rj,rj->r", term.design, ut[term.index])
    return out


def predict(
    fit: Any,
    newdata: pd.DataFrame | None = None,
    kind: str = "conditional",
    hdi_prob: float | None = None,
    draws: bool = False,
    kinship: Mapping[str, Kinship] | None = None,
    seed: int | None = None,
) -> pd.DataFrame | xr.DataArray:
    """Predictions of a fit; see :meth:`bayeslmm.results.fit.FitTables.predict`."""
    from bayeslmm.results.tables import table

    spec = fit.spec
    rows = prediction_rows(spec, newdata, kinship, kind)
    prob = fit._prob(hdi_prob)
    posterior = isinstance(fit.estimate(), PosteriorEstimate)
    if draws and not posterior:
        raise SpecificationError(
            f"draws=True returns posterior draws; this {fit.engine} fit is a point estimate. "
            "Leave draws=False for estimates with standard errors."
        )
    if posterior:
        values = predict_draws(fit, rows, kind, seed)
        if draws:
            import xarray as xr

            post = fit.posterior
            return xr.DataArray(
                values,
                dims=("chain", "draw", "row"),
                coords={
                    "chain": post["chain"].values,
                    "draw": post["draw"].values,
                    "row": list(rows.index),
                },
                name="prediction",
                attrs={"kind": kind, "scale": "response"},
            )
        frame = table(Draws(values), list(rows.index), prob, "row")
    else:
        est, se = predict_point(fit, rows, kind)
        z = float(stats.norm.ppf(0.5 + prob / 2))
        frame = pd.DataFrame(
            {"estimate": est, "se": se, "ci_low": est - z * se, "ci_high": est + z * se},
            columns=list(COMMON_COLUMNS),
        )
    # the rows of newdata keep their labels; the fitted observations are numbered 0 … n − 1
    frame.index = rows.index
    frame.attrs.update({"kind": kind, "ci_prob": prob, "scale": "response"})
    return frame


__all__ = ["GH_NODES", "KINDS", "mean_response", "predict", "prediction_rows"]
