"""The multi-term GLMM density's value and gradient as one numba call (intercept-only terms).

:meth:`~bayeslmm.engines.bayes.glmm_terms.MultiTermDensity.logp` in numpy spends most of a
gradient at n = 500 on numpy's per-call overhead: some 60 small array operations (per block
its variances, scaling, centre, Jacobian, gather and scatter) around the two passes over
each kinship block's eigenvectors. This module is the same computation for models whose
terms are all intercept-only (kinship or iid, the observation-level effect alone or merged
into a kinship term, every weighting of :func:`~bayeslmm.engines.bayes.glmm_terms.
multiterm_density`) as one numba function, compiled once into numba's on-disk cache
(:func:`~bayeslmm.engines.numba_cache.cached_jit`): a fresh process loads it, nothing is
compiled per data set. The mat-vecs are BLAS's gemv called from numba in the eigenvectors'
precision, and the likelihood, the SD priors and the mat-vecs are the one-term C kernel's
own (:mod:`~bayeslmm.engines.bayes.glmm_kernels`).

The blocks' data travel as flat arrays with per-block offsets (the eigenvectors of every
kinship block end to end, each block's per-component arrays end to end), so one compiled
function serves every number of blocks; numba's typed lists would compile their own
methods in every process.
:func:`fused_logp` returns None where the kernel does not cover a density (slopes, a family
or prior without a number); the numpy ``logp`` then runs. Tested equal to the numpy
density's value and gradient (1e-10) in every configuration it covers
(``tests/engines/bayes/test_glmm_terms_kernels.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from bayeslmm.engines.bayes.glmm_kernels import (
    _levels,
    _loglik_term,
    _to_basis,
    family_code,
)
from bayeslmm.engines.bayes.spectral_density import _log_prior_c, _prior_row
from bayeslmm.engines.numba_cache import cached_jit

_jit = cached_jit(error_model="numpy")

# per-block integers (one row each): sizes, positions in x, flags, offsets in the flat arrays
_R, _LEVELS, _HYPER, _LATENT, _KINSHIP, _INDEXED, _CONDITIONAL, _IMPLICIT = range(8)
_MERGED, _SHIFT_BETA, _SHIFT_C, _V_OFF, _I_OFF, _SB_OFF, _SC_OFF, _COLS = range(8, 16)


@_jit
def _matrix(flat: np.ndarray, start: int, rows: int, cols: int) -> np.ndarray:
    """The rows × cols matrix stored row by row at ``flat[start:]`` (a view)."""
    return flat[start : start + rows * cols].reshape((rows, cols))


@_jit
def _to_levels(U: np.ndarray, kinship: bool, c: np.ndarray) -> np.ndarray:
    """U c (float64), U in its own precision; c itself for an iid block."""
    if not kinship:
        return c.copy()
    out = np.empty(U.shape[0], U.dtype)
    _levels(U, c.astype(U.dtype), out)
    return out.astype(np.float64)


@_jit
def _basis(U: np.ndarray, kinship: bool, g: np.ndarray) -> np.ndarray:
    """Uᵀ g (float64); g itself for an iid block."""
    if not kinship:
        return g.copy()
    out = np.empty(U.shape[1], U.dtype)
    _to_basis(U, g.astype(U.dtype), out)
    return out.astype(np.float64)


@_jit
def _gather(levels: np.ndarray, indexed: bool, index: np.ndarray) -> np.ndarray:
    """Z u: each record's level value."""
    if not indexed:
        return levels
    return levels[index]


@_jit
def _scatter(values: np.ndarray, indexed: bool, index: np.ndarray, n_levels: int) -> np.ndarray:
    """Zᵀ values: per-record values summed by level."""
    if not indexed:
        return values.copy()
    out = np.zeros(n_levels)
    for i in range(values.size):
        out[index[i]] += values[i]
    return out


@_jit
def _block_arrays(
    k: int, ints: np.ndarray, vectors: np.ndarray, indices: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Block k's eigenvectors (levels × r; empty for an iid block) and record → level
    index (empty where records are the levels, in order): views of the flat arrays."""
    rows = ints[k, _LEVELS] if ints[k, _KINSHIP] else 0
    U = _matrix(vectors, ints[k, _V_OFF], rows, ints[k, _R] if rows else 0)
    start = ints[k, _I_OFF]
    return U, indices[start : start + (n if ints[k, _INDEXED] else 0)]


@_jit
def _fused_logp(
    x: np.ndarray,
    grad: np.ndarray,
    family: int,
    y: np.ndarray,
    trials: np.ndarray,
    offset: np.ndarray,
    design: np.ndarray,
    beta_mu: np.ndarray,
    beta_sd: np.ndarray,
    beta_pilot: np.ndarray,
    pilot_information: np.ndarray,
    eta_pilot: np.ndarray,
    log_normaliser: float,
    ints: np.ndarray,
    priors: np.ndarray,
    vectors: np.ndarray,
    indices: np.ndarray,
    eigenvalues: np.ndarray,
    log_eigenvalues: np.ndarray,
    weights: np.ndarray,
    information: np.ndarray,
    shift_beta: np.ndarray,
    shift_c: np.ndarray,
) -> float:
    """log density at x, its gradient written into ``grad`` (the numpy density's
    ``_logp``, block by block; see :mod:`~bayeslmm.engines.bayes.glmm_terms`)."""
    n, p = y.size, design.shape[1]
    n_blocks = ints.shape[0]
    total = 0
    for k in range(n_blocks):
        total += ints[k, _R]
    beta = x[:p]
    eta = offset + design @ beta
    # per component, all blocks end to end: A, c, z, ∂c/∂(½ log A), 1 − q or w, q, to_c
    A_all, c_all, z_all = np.empty(total), np.empty(total), np.empty(total)
    dc_all, w_all, q_all, to_c_all = (
        np.empty(total),
        np.empty(total),
        np.empty(total),
        np.empty(total),
    )
    log_jac = np.zeros(n_blocks)
    start = 0
    for k in range(n_blocks):
        r, hy, la = ints[k, _R], ints[k, _HYPER], ints[k, _LATENT]
        U, idx = _block_arrays(k, ints, vectors, indices, n)
        kinship, indexed = ints[k, _KINSHIP] == 1, ints[k, _INDEXED] == 1
        s = eigenvalues[start : start + r]
        v = x[la : la + r]
        if ints[k, _MERGED]:
            A = math.exp(2.0 * x[hy]) * s + math.exp(2.0 * x[hy + 1])
        else:
            A = np.exp(2.0 * x[hy] + log_eigenvalues[start : start + r])
        if not ints[k, _CONDITIONAL]:
            w = weights[start : start + r]
            log_a = np.log(A)
            to_c = np.exp(0.5 * (1.0 - w) * log_a)
            c = to_c * v
            dc = (1.0 - w) * c
            log_jac[k] = -0.5 * np.sum(w * log_a)
            q = np.ones(r)
        else:
            q = 1.0 / (1.0 + A * information[start : start + r])
            to_c = np.sqrt(A * q)
            g = np.zeros(r)
            if ints[k, _IMPLICIT]:
                per = pilot_information * (eta - eta_pilot)
                g = _basis(U, kinship, _scatter(per, indexed, idx, ints[k, _LEVELS]))
            if ints[k, _SHIFT_BETA]:
                g = g + _matrix(shift_beta, ints[k, _SB_OFF], r, p) @ (beta - beta_pilot)
            if ints[k, _SHIFT_C] and start > 0:
                g = g + _matrix(shift_c, ints[k, _SC_OFF], r, start) @ c_all[:start]
            m = -A * q * g
            c = m + to_c * v
            dc = q * (c + m)
            w = 1.0 - q
            log_jac[k] = 0.5 * np.sum(np.log(q))
        A_all[start : start + r] = A
        c_all[start : start + r] = c
        z_all[start : start + r] = c / np.sqrt(A)
        dc_all[start : start + r] = dc
        w_all[start : start + r] = w
        q_all[start : start + r] = q
        to_c_all[start : start + r] = to_c
        eta += _gather(_to_levels(U, kinship, c), indexed, idx)
        start += r
    value = log_normaliser
    g_eta = np.empty(n)
    for i in range(n):
        f, df = _loglik_term(family, y[i], eta[i], trials[i])
        value += f
        g_eta[i] = df
    resid = (beta - beta_mu) / beta_sd
    value -= 0.5 * np.sum(resid * resid)
    g_beta = design.T @ g_eta - resid / beta_sd
    carried = np.zeros(total)
    ends = np.cumsum(ints[:, _R])
    for k in range(n_blocks - 1, -1, -1):
        r, hy, la = ints[k, _R], ints[k, _HYPER], ints[k, _LATENT]
        lo, hi = ends[k] - r, ends[k]
        U, idx = _block_arrays(k, ints, vectors, indices, n)
        kinship, indexed = ints[k, _KINSHIP] == 1, ints[k, _INDEXED] == 1
        A, c, z = A_all[lo:hi], c_all[lo:hi], z_all[lo:hi]
        d = _basis(U, kinship, _scatter(g_eta, indexed, idx, ints[k, _LEVELS])) - c / A
        d += carried[lo:hi]
        t = x[hy]
        pt, dpt = _log_prior_c(
            priors[k, 0, 0], priors[k, 0, 1], priors[k, 0, 2], priors[k, 0, 3], t
        )
        value += -0.5 * np.sum(z * z) + log_jac[k] + pt + t
        g_half = d * dc_all[lo:hi] + z * z - w_all[lo:hi]
        if ints[k, _MERGED]:
            t_o = x[hy + 1]
            po, dpo = _log_prior_c(
                priors[k, 1, 0], priors[k, 1, 1], priors[k, 1, 2], priors[k, 1, 3], t_o
            )
            value += po + t_o
            var_a, var_o = math.exp(2.0 * t), math.exp(2.0 * t_o)
            per_a = g_half / A
            grad[hy] = var_a * np.sum(per_a * eigenvalues[lo:hi]) + dpt + 1.0
            grad[hy + 1] = var_o * np.sum(per_a) + dpo + 1.0
        else:
            grad[hy] = np.sum(g_half) + dpt + 1.0
        grad[la : la + r] = d * to_c_all[lo:hi]
        if not ints[k, _CONDITIONAL]:
            continue
        back = -A * q_all[lo:hi] * d  # ∂/∂g of the centre m = −A q g
        if ints[k, _IMPLICIT]:
            per_record = pilot_information * _gather(_to_levels(U, kinship, back), indexed, idx)
            g_beta += design.T @ per_record
            for j in range(k):
                rj = ints[j, _R]
                Uj, idx_j = _block_arrays(j, ints, vectors, indices, n)
                carried[ends[j] - rj : ends[j]] += _basis(
                    Uj,
                    ints[j, _KINSHIP] == 1,
                    _scatter(per_record, ints[j, _INDEXED] == 1, idx_j, ints[j, _LEVELS]),
                )
        if ints[k, _SHIFT_BETA]:
            g_beta += _matrix(shift_beta, ints[k, _SB_OFF], r, p).T @ back
        if ints[k, _SHIFT_C] and lo > 0:
            carried[:lo] += _matrix(shift_c, ints[k, _SC_OFF], r, lo).T @ back
    grad[:p] = g_beta
    return value


def fused_logp(density: Any) -> Callable[[np.ndarray], tuple[float, np.ndarray]] | None:
    """``x -> (log density, gradient)`` of ``density`` as one numba call, or None where the
    kernel does not cover it (a term with slopes, a family or SD prior without a number).

    The blocks are read once, here: change a block's weights after this and build it again.

    Examples
    --------
    >>> import pandas as pd, bayeslmm as bl
    >>> from bayeslmm.engines.bayes import build
    >>> from bayeslmm.engines.bayes.glmm_terms import multiterm_density
    >>> df = pd.DataFrame({"y": [0, 3, 1, 5, 2, 4], "a": list("aabbcc"), "b": list("xyxyxy")})
    >>> spec = bl.specify("y ~ 1 + (1 | a) + (1 | b)", df, family="poisson")
    >>> density = multiterm_density(build(spec, strategy="latent"), dtype="float64")
    >>> logp = fused_logp(density)
    >>> x = density.initial_point(1)
    >>> bool(abs(logp(x)[0] - density.numpy_logp(x)[0]) < 1e-10)
    True
    """
    family = family_code(density.family)
    if family is None or density.slope_blocks:
        return None
    blocks = density.blocks  # LatentBlocks (glmm_terms imports this module: no import back)
    rows = []
    for block in blocks:
        row = [_prior_row(block.prior_spec), _prior_row(block.olre_prior_spec)]
        if block.prior_spec is None or any(r is None for r in row):
            return None
        rows.append(row)
    dtype = next((b.vectors.dtype for b in blocks if b.vectors is not None), np.float64)
    ints = np.zeros((len(blocks), _COLS), dtype=np.int64)
    vectors, indices, shift_beta, shift_c = [], [], [], []
    offsets = np.zeros(4, dtype=np.int64)  # running sizes of those four flat arrays
    for k, (block, hs, sl) in enumerate(
        zip(blocks, density._hyper_slices, density._slices, strict=True)
    ):
        conditional = block.information is not None
        ints[k, :_V_OFF] = (
            block.n_basis,
            block.n_levels,
            hs.start,
            sl.start,
            block.vectors is not None,
            block.index is not None,
            conditional,
            conditional and block.implicit_shift,
            block.merged,
            conditional and block.shift_beta is not None,
            conditional and block.shift_c is not None,
        )
        ints[k, _V_OFF:] = offsets
        pieces = (
            block.vectors,
            block.index,
            block.shift_beta if conditional else None,
            block.shift_c if conditional else None,
        )
        for j, (target, piece) in enumerate(
            zip((vectors, indices, shift_beta, shift_c), pieces, strict=True)
        ):
            if piece is not None:
                target.append(np.ravel(piece))
                offsets[j] += piece.size
    per_component = [
        np.concatenate([b.eigenvalues for b in blocks]),
        # a merged block's A is σ_a² s + σ_o² (s = 0 beyond the kinship basis): no log s
        np.concatenate([np.zeros(b.n_basis) if b.merged else b.log_s for b in blocks]),
        np.concatenate([b.weights for b in blocks]),
        np.concatenate(
            [b.information if b.information is not None else np.zeros(b.n_basis) for b in blocks]
        ),
    ]

    def flat(parts: list[np.ndarray], kind: Any) -> np.ndarray:
        return np.ascontiguousarray(np.concatenate(parts) if parts else np.zeros(0), kind)

    priors = np.array(rows, dtype=float)
    p = density.n_fixed
    pilot_information = density.pilot_information
    eta_pilot = density.eta_pilot
    if pilot_information.size == 0:  # no conditional block: never read
        pilot_information = eta_pilot = np.zeros(density.y.size)
    args = (
        family,
        np.ascontiguousarray(density.y, dtype=float),
        np.ascontiguousarray(density.trials, dtype=float),
        np.ascontiguousarray(density.offset, dtype=float),
        np.ascontiguousarray(density.design, dtype=float),
        np.ascontiguousarray(density.beta_mu, dtype=float),
        np.ascontiguousarray(density.beta_sd, dtype=float),
        np.ascontiguousarray(density.pilot[:p], dtype=float),
        np.ascontiguousarray(pilot_information, dtype=float),
        np.ascontiguousarray(eta_pilot, dtype=float),
        float(density.log_normaliser),
        ints,
        priors,
        flat(vectors, dtype),
        flat(indices, np.intp),
        *(np.ascontiguousarray(a, dtype=float) for a in per_component),
        flat(shift_beta, float),
        flat(shift_c, float),
    )

    def logp(x: np.ndarray) -> tuple[float, np.ndarray]:
        x = np.ascontiguousarray(x, dtype=float)
        grad = np.empty_like(x)
        value = _fused_logp(x, grad, *args)
        return value, grad

    return logp
