"""Marker effects of a kinship model: the SNP form of the LMM (ridge regression on markers).

A kinship built from markers, K = W Wᵀ / c (W: the n × m centred or standardised genotypes,
c: the scale, e.g. VanRaden's 2 Σ p(1 − p)), makes the genetic effect u = W b with
b ~ N(0, σ_β² I), σ_β² = σ_g² / c: the LMM and ridge regression on the markers are one model
(rrBLUP; Meuwissen, Hayes & Goddard 2001). Each marker's effect is

    b̂ = σ_β² Wᵀ Zᵀ V⁻¹ (y − Xβ̂),

the ridge solution with λ = σ_e² / σ_β², and W b̂ = û are the genomic breeding values. Unlike
ordinary least squares on each marker (or all at once, impossible when m > n), every marker
is shrunk towards 0 by the same prior variance: effects are small, many, and add up to the
breeding values.

Uncertainty: REML gives each effect's prediction error SD, sqrt(σ_β² − σ_β⁴ [WᵀZᵀPZW]_jj)
with P = V⁻¹ − V⁻¹X(XᵀV⁻¹X)⁻¹XᵀV⁻¹, at θ̂. NUTS gives, per posterior draw of (θ, β), the
effects E[b | y, θ, β]: their mean is the posterior mean of b; their spread is the part of
its uncertainty that comes from θ and β (the markers' own conditional variance, mostly the
prior's when m ≫ n, is not drawn).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bayeslmm.errors import DataError, SpecificationError, preview
from bayeslmm.kinship.low_rank import LowRankKinship
from bayeslmm.results.algebra import gaussian_algebra
from bayeslmm.results.estimate import COMMON_COLUMNS, Draws, PosteriorEstimate
from bayeslmm.results.predict import parameter_values

#: Largest relative difference between K and W Wᵀ / c accepted as "the same kinship".
MATCH_RTOL = 1e-6
#: Markers handled at once for the REML prediction error variances.
_BLOCK = 2048


def _term(spec: Any) -> Any:
    kin = spec.kinship_terms
    if not spec.family.is_gaussian or len(spec.terms) != 1 or len(kin) != 1:
        raise SpecificationError(
            "SNP effects are the ridge-regression form of a Gaussian model with one kinship "
            "term and no other random term (y ~ ... + (1|id), K = W Wᵀ / c); this model has "
            f"terms {[t.label for t in spec.terms]} and family {spec.family.name}."
        )
    term = kin[0]
    if not term.is_intercept_only:
        raise SpecificationError(
            f"SNP effects need an intercept-only kinship term; ({term.label}) has slopes."
        )
    return term


def _genotype_rows(
    term: Any, genotypes: pd.DataFrame | np.ndarray
) -> tuple[np.ndarray, list[int], list[str]]:
    """The genotype table as floats, the row of each of the term's levels, and the marker
    names (the table's columns, or ``m0, m1, …`` for an array in level order)."""
    levels = list(term.levels)
    if isinstance(genotypes, pd.DataFrame):
        index = [str(i) for i in genotypes.index]
        missing = [i for i in levels if i not in set(index)]
        if missing:
            raise DataError(
                f"{len(missing)} individuals of the model have no row in genotypes: "
                f"{preview(missing)}. Index the genotype table by the ids of "
                f"'{term.group}'."
            )
        pos = {i: k for k, i in enumerate(index)}
        rows = [pos[i] for i in levels]
        table = genotypes.to_numpy(dtype=float)
        names = [str(c) for c in genotypes.columns]
    else:
        table = np.asarray(genotypes, dtype=float)
        if table.ndim != 2 or table.shape[0] != len(levels):
            raise DataError(
                f"genotypes must be an n × m array with one row per level of '{term.group}' "
                f"({len(levels)}, in the fit's level order), or a table indexed by id; got "
                f"shape {table.shape}."
            )
        rows = list(range(len(levels)))
        names = [f"m{j}" for j in range(table.shape[1])]
    if not np.all(np.isfinite(table)):
        raise DataError(
            "genotypes hold missing or infinite values; impute them as the kinship was built "
            "(e.g. the marker mean) before asking for marker effects."
        )
    return table, rows, names


def marker_matrix(
    term: Any, genotypes: pd.DataFrame | np.ndarray, scale: float | None
) -> tuple[np.ndarray, float, list[str], bool]:
    """W over the term's levels (rows in level order), its scale c (K = W Wᵀ/c), the marker
    names, and whether the columns were centred here to match K."""
    table, rows, names = _genotype_rows(term, genotypes)
    K = np.asarray(term.kinship.matrix, dtype=float)
    # as given, then centred per marker over every individual given (what bl.grm does with
    # the genotypes it is given: a kinship of more individuals than have records is centred
    # over all of them, so pass the same table)
    centred = table - table.mean(axis=0)
    for centre, attempt in ((False, table[rows]), (True, centred[rows])):
        WWt = attempt @ attempt.T
        c = float(np.trace(WWt) / np.trace(K)) if scale is None else float(scale)
        if c > 0 and np.abs(WWt / c - K).max() <= MATCH_RTOL * np.abs(K).max():
            return attempt, c, names, centre
    hint = "" if scale is None else f" with scale={scale}"
    raise DataError(
        f"The kinship of '{term.group}' is not W Wᵀ / c for these genotypes{hint}, as given "
        "or centred: SNP effects need the marker matrix the kinship was built from, for the "
        "individuals it was built on (e.g. the dosage table given to bl.grm, which centres "
        "it; for bl.grm(..., standardize=True) the standardised markers)."
    )


def snp_effects(
    fit: Any,
    genotypes: pd.DataFrame | np.ndarray | None,
    scale: float | None = None,
    hdi_prob: float | None = None,
    draws: bool = False,
) -> pd.DataFrame | Any:
    """Marker effects b̂ = σ_β² Wᵀ Zᵀ V⁻¹ (y − Xβ̂); see :meth:`FitTables.snp_effects
    <bayeslmm.results.fit.FitTables.snp_effects>`."""
    term = _term(fit.spec)
    posterior = isinstance(fit.estimate(), PosteriorEstimate)
    if draws and not posterior:
        raise SpecificationError(
            f"draws=True returns posterior draws; this {fit.engine} fit is a point "
            "estimate. Leave draws=False for estimates with standard errors."
        )
    if isinstance(term.kinship, LowRankKinship):
        W, c, names = _low_rank_markers(term, genotypes, scale)
        result = _low_rank_effects(fit, term, W, c, posterior, genotypes is None)
    elif genotypes is None:
        raise SpecificationError(
            "snp_effects() needs the genotypes the kinship was built from (individuals × "
            "markers); only a low-rank kinship (bl.grm(..., low_rank=True)) holds its markers."
        )
    else:
        W, c, names, _ = marker_matrix(term, genotypes, scale)
        result = _dense_effects(fit, term, W, c, posterior)
    return _effects_table(fit, result, names, c, hdi_prob, draws)


def _dense_effects(
    fit: Any, term: Any, W: np.ndarray, c: float, posterior: bool
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Per draw E[b | y, θ, β] (draws × m), or REML's (b̂, prediction error SD), through the
    engines' V⁻¹ algebra."""
    spec = fit.spec
    ZW = np.asarray(term.incidence() @ W)  # n × m: each record's markers
    values = parameter_values(fit)
    algebra = gaussian_algebra()
    if posterior:
        g = algebra.vinv_residuals(spec, values.sigmas, values.residual, values.beta)
        var_beta = values.sigmas[0].reshape(-1) / c
        return var_beta[:, None] * (g @ ZW)  # draws × m
    h = algebra.henderson(spec, values.sigmas, values.residual)
    var_beta = float(values.sigmas[0].reshape(-1)[0]) / c
    y = np.asarray(spec.y, float) - (0.0 if spec.offset is None else np.asarray(spec.offset))
    g = h.solver.solve(y - np.asarray(spec.X, float) @ h.beta)
    estimate = var_beta * (ZW.T @ g)
    pev = np.empty(W.shape[1])
    for lo in range(0, W.shape[1], _BLOCK):
        block = ZW[:, lo : lo + _BLOCK]
        vinv = h.solver.solve(block)
        quad = np.einsum("ij,ij->j", block, vinv)
        if h.vinv_x.shape[1]:
            xb = h.vinv_x.T @ block  # p × k: XᵀV⁻¹ZW
            quad -= np.einsum("ij,ik,kj->j", xb, h.cov_beta, xb)
        pev[lo : lo + _BLOCK] = var_beta - var_beta**2 * quad
    return estimate, np.sqrt(np.clip(pev, 0.0, None))


def _effects_table(
    fit: Any,
    result: np.ndarray | tuple[np.ndarray, np.ndarray],
    names: list[str],
    c: float,
    hdi_prob: float | None,
    draws: bool,
) -> pd.DataFrame | Any:
    """The marker table (or the draws as xarray) of draws × m effects or (estimate, se)."""
    prob = fit._prob(hdi_prob)
    if isinstance(result, tuple):
        from scipy import stats

        estimate, se = result
        z = float(stats.norm.ppf(0.5 + prob / 2))
        frame = pd.DataFrame(
            {"estimate": estimate, "se": se, "ci_low": estimate - z * se,
             "ci_high": estimate + z * se},
            index=pd.Index(names, name="marker"),
            columns=list(COMMON_COLUMNS),
        )  # fmt: skip
    else:
        post = fit.posterior
        shaped = result.reshape(post.sizes["chain"], post.sizes["draw"], len(names))
        if draws:
            import xarray as xr

            return xr.DataArray(
                shaped,
                dims=("chain", "draw", "marker"),
                coords={
                    "chain": post["chain"].values,
                    "draw": post["draw"].values,
                    "marker": names,
                },
                name="snp_effect",
            )
        from bayeslmm.results.tables import table

        frame = table(Draws(shaped), names, prob, "marker")
    frame.attrs.update({"scale": c, "ci_prob": prob})
    return frame


# ---------------------------------------------------------------------------------------
# the SNP-space route: a low-rank kinship's markers, never an n × n matrix
# ---------------------------------------------------------------------------------------
#: Random probes that check K = W Wᵀ / c without forming K (each O(n m)).
_PROBES = 3


def _low_rank_markers(
    term: Any, genotypes: pd.DataFrame | np.ndarray | None, scale: float | None
) -> tuple[np.ndarray, float, list[str]]:
    """W over the term's levels, c and the marker names for a :class:`LowRankKinship`:
    its own markers (c = 1) when ``genotypes`` is None, else the given table checked
    against K by random probes K v = W (Wᵀ v) / c (K is never formed)."""
    K = term.kinship.subset(term.levels)
    if genotypes is None:
        if scale is not None:
            raise SpecificationError(
                "scale applies to genotypes given to snp_effects(); the low-rank kinship's "
                "own markers have K = W Wᵀ exactly (c = 1)."
            )
        return np.asarray(K.markers), 1.0, [f"m{j}" for j in range(K.n_markers)]
    table, rows, names = _genotype_rows(term, genotypes)
    probes = np.random.default_rng(0).normal(size=(K.n, _PROBES))
    target = K.dot(probes)
    trace_k = float(np.sum(np.asarray(K.markers) ** 2))
    for attempt in (table[rows], (table - table.mean(axis=0))[rows]):
        c = float(np.sum(attempt**2) / trace_k) if scale is None else float(scale)
        if c > 0:
            got = attempt @ (attempt.T @ probes) / c
            if np.abs(got - target).max() <= 1e-6 * np.abs(target).max():
                return attempt, c, names
    hint = "" if scale is None else f" with scale={scale}"
    raise DataError(
        f"The low-rank kinship of '{term.group}' is not W Wᵀ / c for these genotypes{hint}, "
        "as given or centred: pass the dosage table given to bl.grm(..., low_rank=True), "
        "or no genotypes to get the effects of the kinship's own (scaled) markers."
    )


def _low_rank_effects(
    fit: Any, term: Any, W: np.ndarray, c: float, posterior: bool, own_markers: bool
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """b̂ from the eigendecomposition of MᵀM (m × m, M = Z W the records' markers).

    With σ_β² = σ_g²/c and MᵀM = Ṽ D² Ṽᵀ (positive part), the push-through identity
    Mᵀ V⁻¹ = (σ_β² MᵀM + σ_e² I)⁻¹ Mᵀ gives

        b̂ = σ_β² Ṽ diag(1 / (σ_β² d² + σ_e²)) Ṽᵀ Mᵀ (y − Xβ),

    O(m r) per draw after ṼᵀMᵀ[y, X] once; REML's prediction error variances
    σ_β² − σ_β⁴ [MᵀPM]_jj come from the same pieces (P = V⁻¹ − V⁻¹X C XᵀV⁻¹, with
    XᵀV⁻¹X by Woodbury). With the kinship's own markers and one record per individual in
    level order, Ṽ and d² are the kinship's thin SVD: nothing is factored again.
    """
    spec = fit.spec
    if own_markers and term.is_identity_incidence:
        K = term.kinship.subset(term.levels)
        vecs, d2 = K.right_vectors, K.positive_eigenvalues
    else:
        M = np.asarray(term.incidence() @ W)
        d2, vecs = np.linalg.eigh(M.T @ M)
        keep = d2 > d2.max() * 1e-10
        d2, vecs = d2[keep], vecs[:, keep]
    values = parameter_values(fit)
    residual = np.asarray(values.residual, float)
    flat = residual.reshape(-1, residual.shape[-1])
    if not np.allclose(flat, flat[:, :1], rtol=1e-12, atol=0.0):
        raise SpecificationError(
            "SNP effects on a low-rank kinship need one residual variance for every record."
        )
    y = np.asarray(spec.y, float) - (0.0 if spec.offset is None else np.asarray(spec.offset))
    X = np.asarray(spec.X, float)
    proj = vecs.T @ (W.T @ (term.incidence().T @ np.c_[y, X]))  # r × (1 + q): ṼᵀMᵀ[y, X]
    if posterior:
        var_beta = values.sigmas[0].reshape(-1) / c
        var_e = flat[:, 0]
        beta = np.asarray(values.beta, float).reshape(var_beta.size, -1)
        coef = proj[:, 0][None, :] - beta @ proj[:, 1:].T  # draws × r
        coef *= var_beta[:, None] / (var_beta[:, None] * d2[None, :] + var_e[:, None])
        return coef @ vecs.T  # draws × m
    var_beta = float(values.sigmas[0].reshape(-1)[0]) / c
    var_e = float(flat[0, 0])
    beta = np.asarray(values.beta, float).reshape(-1)
    inv = 1.0 / (var_beta * d2 + var_e)  # r
    estimate = vecs @ (var_beta * inv * (proj[:, 0] - proj[:, 1:] @ beta))
    quad = (vecs**2) @ (d2 * inv)  # [MᵀV⁻¹M]_jj
    if X.shape[1]:
        tx = proj[:, 1:]
        xvx = (X.T @ X - var_beta * tx.T @ (inv[:, None] * tx)) / var_e  # XᵀV⁻¹X
        B = vecs @ (inv[:, None] * tx)  # MᵀV⁻¹X, m × q
        quad -= np.einsum("jq,qk,jk->j", B, np.linalg.inv(xvx), B)
    return estimate, np.sqrt(np.clip(var_beta - var_beta**2 * quad, 0.0, None))
