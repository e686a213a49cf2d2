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
with P = V⁻¹ − V⁻¹X(XᵀV⁻¹X)⁻¹XᵀV⁻¹, at θ̂. NUTS gives the posterior of b: for every posterior
draw of (θ, β) one draw of

    b | y, θ, β ~ N(σ_β² Wᵀ Zᵀ V⁻¹ y*,  σ_β² I − σ_β⁴ Wᵀ Zᵀ V⁻¹ Z W),   y* = y − Xβ,

so the table's SDs and intervals carry the markers' own conditional variance (when m ≫ n
mostly the prior's, σ_β², which the data cannot shrink) as well as θ's and β's. In the right
singular basis of M = Z W (MᵀM = Ṽ D² Ṽᵀ, r positive components) the covariance is diagonal:
σ_β² σ_e² / (σ_β² d_j² + σ_e²) along ṽ_j, and σ_β² on the m − r dimensional null space of M.
A draw is therefore

    b = Ṽ a + (I − Ṽ Ṽᵀ) z,   z ~ N(0, σ_β² I_m),
    a_j ~ N(σ_β² (ṼᵀMᵀy*)_j / (σ_β² d_j² + σ_e²),  σ_β² σ_e² / (σ_β² d_j² + σ_e²)),

O(m r) per draw from the basis the conditional mean already uses (no basis of the null space:
z with its row-space part removed; no z at all when r = m), worked in chunks of draws so the
work arrays stay bounded (the draws themselves, draws × m, are the result). With several
residual variances (``sigma=`` formulas) the covariance has no fixed basis; there each draw
is b₀ + σ_β² MᵀV⁻¹(y* − M b₀ − e₀) with b₀ ~ N(0, σ_β² I), e₀ ~ N(0, R) (Matheron's rule:
exact, one V solve per draw, as the conditional mean needs). ``kind="conditional_mean"``
returns E[b | y, θ, β] per draw instead: their spread is only θ's and β's part.

The normal draws are seeded by ``seed`` (the fit's seed by default, the one recorded as
``fit.seed``), so a table is reproducible; the component and null-space normals come from two
streams spawned from it, so the draws do not depend on the chunking.
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
        known = set(index)
        missing = [i for i in levels if i not in known]
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


#: What a posterior's table summarises (see the module docstring).
KINDS = ("posterior", "conditional_mean")
#: Posterior draws handled at once by the effect draws: the work arrays are this many × m.
_DRAW_CHUNK = 256


def snp_effects(
    fit: Any,
    genotypes: pd.DataFrame | np.ndarray | None,
    scale: float | None = None,
    hdi_prob: float | None = None,
    draws: bool = False,
    kind: str = "posterior",
    seed: int | None = None,
) -> pd.DataFrame | Any:
    """Marker effects b̂ = σ_β² Wᵀ Zᵀ V⁻¹ (y − Xβ̂), or their posterior; see
    :meth:`FitTables.snp_effects <bayeslmm.results.fit.FitTables.snp_effects>`."""
    term = _term(fit.spec)
    posterior = isinstance(fit.estimate(), PosteriorEstimate)
    if kind not in KINDS:
        raise SpecificationError(
            f"kind must be one of {', '.join(repr(k) for k in KINDS)}; got {kind!r}."
        )
    if not posterior:
        if draws:
            raise SpecificationError(
                f"draws=True returns posterior draws; this {fit.engine} fit is a point "
                "estimate. Leave draws=False for estimates with standard errors."
            )
        if kind != "posterior":
            raise SpecificationError(
                f"kind='{kind}' summarises posterior draws of E[b | y, θ, β]; this "
                f"{fit.engine} fit is a point estimate, whose table is b̂ with its prediction "
                "error SD (the conditional SD at θ̂). Leave kind='posterior'."
            )
    # None: a point estimate; else which draws (seeded by the fit's seed unless given)
    mode = kind if posterior else None
    seed = getattr(fit, "seed", None) if seed is None else seed
    if isinstance(term.kinship, LowRankKinship):
        W, c, names = _low_rank_markers(term, genotypes, scale)
        result = _low_rank_effects(fit, term, W, c, mode, genotypes is None, seed)
    elif genotypes is None:
        raise SpecificationError(
            "snp_effects() needs the genotypes the kinship was built from (individuals × "
            "markers); only a low-rank kinship (bl.grm(..., low_rank=True)) holds its markers."
        )
    else:
        W, c, names, _ = marker_matrix(term, genotypes, scale)
        result = _dense_effects(fit, term, W, c, mode, seed)
    return _effects_table(fit, result, names, c, hdi_prob, draws, mode)


def right_basis(M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ṽ (m × r) and d² (r) with MᵀM = Ṽ diag(d²) Ṽᵀ over the positive part, from the
    smaller Gram matrix: MᵀM (m × m) when m ≤ n, else M Mᵀ = P diag(d²) Pᵀ (n × n, the
    size of the kinship the dense route already holds) and Ṽ = Mᵀ P diag(1/d).

    Examples
    --------
    >>> M = np.random.default_rng(1).normal(size=(4, 6))
    >>> vecs, d2 = right_basis(M)
    >>> vecs.shape, bool(np.allclose(vecs.T @ vecs, np.eye(4)))
    ((6, 4), True)
    >>> bool(np.allclose((vecs * d2) @ vecs.T, M.T @ M))
    True
    """
    n, m = M.shape
    d2, vecs = np.linalg.eigh(M.T @ M if m <= n else M @ M.T)
    keep = d2 > d2.max() * 1e-10
    d2 = d2[keep]
    if m <= n:
        return vecs[:, keep], d2
    return (M.T @ vecs[:, keep]) / np.sqrt(d2), d2


def _streams(seed: int | None, k: int) -> list[np.random.Generator]:
    """k independent generators spawned from ``seed``: each kind of normal has its own
    stream, so the draws do not depend on how the draws are chunked."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(k)]


def effect_draws(
    vecs: np.ndarray,
    d2: np.ndarray,
    proj: np.ndarray,
    beta: np.ndarray,
    var_beta: np.ndarray,
    var_e: np.ndarray,
    seed: int | None = None,
    conditional_mean: bool = False,
) -> np.ndarray:
    """One draw of b | y, θ, β per draw of (θ, β), from the right singular basis of M = Z W.

    b = Ṽ a + (I − ṼṼᵀ) z with a_j ~ N(σ_β² t_j / (σ_β² d_j² + σ_e²),
    σ_β² σ_e² / (σ_β² d_j² + σ_e²)), t = ṼᵀMᵀ(y − Xβ), and z ~ N(0, σ_β² I_m): the
    conditional normal, diagonal in this basis and σ_β² I on the null space of M (see the
    module docstring). O(m r) per draw, in chunks of :data:`_DRAW_CHUNK` draws.

    Parameters
    ----------
    vecs, d2 : ndarray, shapes (m, r) and (r,)
        :func:`right_basis` of M.
    proj : ndarray, shape (r, 1 + q)
        ṼᵀMᵀ[y − offset, X].
    beta : ndarray, shape (N, q)
        Draws of the fixed effects.
    var_beta, var_e : ndarray, shape (N,)
        Draws of σ_β² = σ_g²/c and of the residual variance.
    seed : int, optional
        Seed of the normal draws.
    conditional_mean : bool
        Return E[b | y, θ, β] per draw instead (no normals drawn).

    Returns
    -------
    ndarray, shape (N, m)

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> M = rng.normal(size=(5, 8))  # 5 records, 8 markers: a 3-dimensional null space
    >>> vecs, d2 = right_basis(M)
    >>> proj = vecs.T @ (M.T @ np.c_[rng.normal(size=5), np.ones(5)])
    >>> b = effect_draws(vecs, d2, proj, np.zeros((2000, 1)), np.ones(2000), np.ones(2000), 1)
    >>> b.shape, bool(np.allclose(np.var(b @ np.linalg.svd(M)[2][-1]), 1.0, atol=0.1))
    ((2000, 8), True)
    """
    var_beta = np.asarray(var_beta, float).reshape(-1)
    var_e = np.asarray(var_e, float).reshape(-1)
    beta = np.asarray(beta, float).reshape(var_beta.size, -1)
    m, r = vecs.shape
    out = np.empty((var_beta.size, m))
    rng_a, rng_z = _streams(seed, 2)
    for lo in range(0, var_beta.size, _DRAW_CHUNK):
        hi = min(lo + _DRAW_CHUNK, var_beta.size)
        vb, ve = var_beta[lo:hi, None], var_e[lo:hi, None]
        denom = vb * d2[None, :] + ve
        a = (proj[:, 0][None, :] - beta[lo:hi] @ proj[:, 1:].T) * (vb / denom)  # chunk × r
        if not conditional_mean:
            a += np.sqrt(vb * ve / denom) * rng_a.standard_normal(a.shape)
        if conditional_mean or r == m:  # no null space: b = Ṽ a
            np.matmul(a, vecs.T, out=out[lo:hi])
            continue
        z = np.sqrt(vb) * rng_z.standard_normal((hi - lo, m))
        a -= z @ vecs  # Ṽ(a − Ṽᵀz) + z = Ṽ a + (I − ṼṼᵀ) z
        np.matmul(a, vecs.T, out=out[lo:hi])
        out[lo:hi] += z
    return out


def _matheron_draws(
    spec: Any,
    M: np.ndarray,
    values: Any,
    var_beta: np.ndarray,
    seed: int | None,
) -> np.ndarray:
    """b | y, θ, β per draw when the records have several residual variances (no fixed
    basis diagonalises the covariance): b₀ + σ_β² MᵀV⁻¹(y* − M b₀ − e₀), b₀ ~ N(0, σ_β² I),
    e₀ ~ N(0, R), one V solve per draw (Matheron's rule; exact)."""
    algebra = gaussian_algebra()
    residual = np.asarray(values.residual, float)
    beta = np.asarray(values.beta, float).reshape(var_beta.size, -1)
    y = algebra.response(spec)
    X = np.asarray(spec.X, float)
    rng_b, rng_e = _streams(seed, 2)
    out = np.empty((var_beta.size, M.shape[1]))
    for i in range(var_beta.size):
        b0 = np.sqrt(var_beta[i]) * rng_b.standard_normal(M.shape[1])
        e0 = np.sqrt(residual[i]) * rng_e.standard_normal(M.shape[0])
        solver = algebra.v_solver(spec, [np.asarray(S[i]) for S in values.sigmas], residual[i])
        out[i] = b0 + var_beta[i] * (M.T @ solver.solve(y - X @ beta[i] - M @ b0 - e0))
    return out


def _dense_effects(
    fit: Any, term: Any, W: np.ndarray, c: float, mode: str | None, seed: int | None
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Per draw of (θ, β) a draw of b | y, θ, β or E[b | y, θ, β] (draws × m), or REML's
    (b̂, prediction error SD), through the engines' V⁻¹ algebra or M's right singular
    basis."""
    spec = fit.spec
    ZW = np.asarray(term.incidence() @ W)  # n × m: each record's markers
    values = parameter_values(fit)
    algebra = gaussian_algebra()
    if mode == "conditional_mean":
        g = algebra.vinv_residuals(spec, values.sigmas, values.residual, values.beta)
        var_beta = values.sigmas[0].reshape(-1) / c
        return var_beta[:, None] * (g @ ZW)  # draws × m
    if mode == "posterior":
        var_beta = values.sigmas[0].reshape(-1) / c
        residual = np.asarray(values.residual, float)
        if not np.all(residual == residual[:, :1]):
            return _matheron_draws(spec, ZW, values, var_beta, seed)
        vecs, d2 = right_basis(ZW)
        y = algebra.response(spec)
        proj = vecs.T @ (ZW.T @ np.c_[y, np.asarray(spec.X, float)])
        return effect_draws(vecs, d2, proj, values.beta, var_beta, residual[:, 0], seed)
    h = algebra.henderson(spec, values.sigmas, values.residual)
    var_beta = float(values.sigmas[0].reshape(-1)[0]) / c
    y = algebra.response(spec)
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
    mode: str | None,
) -> pd.DataFrame | Any:
    """The marker table (or the draws as xarray) of draws × m effects or (estimate, se);
    ``attrs["kind"]`` says which (``"estimate"`` for a point fit, else ``mode``)."""
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
                attrs={"kind": mode, "scale": c},
            )
        from bayeslmm.results.tables import table

        frame = table(Draws(shaped), names, prob, "marker")
    frame.attrs.update({"scale": c, "ci_prob": prob, "kind": mode or "estimate"})
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


def _scaled_markers(W: np.ndarray, K: LowRankKinship, c: float) -> bool:
    """Whether W is √c × K's markers (the dosage table the kinship was built from, centred),
    so that K's thin SVD is W's: one O(n m) comparison instead of an O(n m²) factorisation."""
    markers = np.asarray(K.markers)
    if markers.shape != W.shape:
        return False
    return bool(np.abs(W - np.sqrt(c) * markers).max() <= 1e-10 * np.abs(W).max())


def _low_rank_effects(
    fit: Any,
    term: Any,
    W: np.ndarray,
    c: float,
    mode: str | None,
    own_markers: bool,
    seed: int | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """b̂ from the eigendecomposition of MᵀM (m × m, M = Z W the records' markers).

    With σ_β² = σ_g²/c and MᵀM = Ṽ D² Ṽᵀ (positive part), the push-through identity
    Mᵀ V⁻¹ = (σ_β² MᵀM + σ_e² I)⁻¹ Mᵀ gives

        b̂ = σ_β² Ṽ diag(1 / (σ_β² d² + σ_e²)) Ṽᵀ Mᵀ (y − Xβ),

    O(m r) per draw after ṼᵀMᵀ[y, X] once (the posterior's draws of b | y, θ, β add the
    conditional noise in the same basis: :func:`effect_draws`); REML's prediction error
    variances σ_β² − σ_β⁴ [MᵀPM]_jj come from the same pieces (P = V⁻¹ − V⁻¹X C XᵀV⁻¹, with
    XᵀV⁻¹X by Woodbury). With the kinship's own markers (or the dosage table it was built
    from) and one record per individual in level order, Ṽ and d² are the kinship's thin SVD:
    nothing is factored again.
    """
    spec = fit.spec
    K = term.kinship.subset(term.levels)
    if term.is_identity_incidence and (own_markers or _scaled_markers(W, K, c)):
        # W = √c × the kinship's markers: WᵀW = c Ṽ S Ṽᵀ, the SVD the fit already has
        vecs, d2 = K.right_vectors, c * K.positive_eigenvalues
    else:
        vecs, d2 = right_basis(np.asarray(term.incidence() @ W))
    values = parameter_values(fit)
    residual = np.asarray(values.residual, float)
    flat = residual.reshape(-1, residual.shape[-1])
    if not np.allclose(flat, flat[:, :1], rtol=1e-12, atol=0.0):
        raise SpecificationError(
            "SNP effects on a low-rank kinship need one residual variance for every record."
        )
    y = gaussian_algebra().response(spec)
    X = np.asarray(spec.X, float)
    proj = vecs.T @ (W.T @ (term.incidence().T @ np.c_[y, X]))  # r × (1 + q): ṼᵀMᵀ[y, X]
    if mode is not None:
        var_beta = values.sigmas[0].reshape(-1) / c
        return effect_draws(
            vecs, d2, proj, values.beta, var_beta, flat[:, 0], seed, mode == "conditional_mean"
        )
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
