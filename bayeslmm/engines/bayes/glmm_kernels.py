"""The one-term closed-form GLMM density as C callbacks for nutpie (numba ``cfunc``s).

:class:`~bayeslmm.engines.bayes.glmm_density.GLMMDensity` writes the latent kinship GLMM's
log posterior in numpy, and nutpie calls it from Python with the GIL held: at n = 500 most of
a gradient is numpy's per-call overhead (some 40 small array operations), and chains sampled
in parallel threads take turns. This module is the same density in numba, compiled once
into numba's on-disk cache (``cache=True``) and handed to nutpie's Rust sampler as C
function pointers (the way :mod:`~bayeslmm.engines.bayes.spectral_density` does for the
Gaussian closed form): nothing is compiled per data set, nothing holds the GIL, and a
gradient costs the two passes over the eigenvectors (U c, then Uᵀ Zᵀ ∂ℓ/∂η: BLAS gemv
called from numba) plus O(n) scalar work. Measured per gradient (CPU, float32 basis,
benchmarks/bench_glmm_scale.py, recorded with a libm exp per record and per basis vector):
1.02 × the two bare mat-vecs at n = 5,000, 1.04 × at n = 1,000, 2.1 × at n = 500
(per-record work); the numpy density costs 1.15–2.3 × as much. Taking those exps over
whole arrays (:func:`_exp_inplace`, vectorised) costs 15 % less per gradient than the libm
call at n = 500 and 11 % less at n = 1,000 for the Poisson model (the two kernels
interleaved in one process, thread CPU, load 3–5; commit 6739060).

Everything about the data set lives in one float64 buffer (nutpie's "user data" pointer):
a header of sizes, codes and section offsets (``_H_*``), then the sections. The
eigenvectors are stored in their own precision (float32 by default, packed two to a
float64 slot) and read through a view.

Covered (:func:`c_buffer` returns None otherwise, and the Python callback samples):
Poisson (log) with or without the merged observation-level effect; Bernoulli and
binomial with a logit or probit link; partial non-centring and conditional centring;
records in level order or gathered by an index; the built-in SD prior families.

The observation-level effect's split a | a + e is a Gaussian draw made in :func:`expand
<_expand_core>`; the C expand function has no seed argument, so its generator is seeded from
the bits of the draw x itself (x is a continuous random vector, distinct per chain and
draw): the same nutpie seed gives the same draws.
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.core.extending import intrinsic

from bayeslmm.engines.bayes.spectral_density import _log_prior_c, _prior_row, nutpie_cfuncs
from bayeslmm.engines.numba_cache import cached_jit

#: error_model="numpy": an overflow or a division by zero gives inf/nan, which the C logp
#: reports to nutpie as a rejected point, instead of an exception a cfunc cannot raise
_jit = cached_jit(error_model="numpy")

LOG_2PI = math.log(2.0 * math.pi)


# -- the buffer's header -------------------------------------------------------------------
_H_N, _H_L, _H_R, _H_P, _H_OLRE, _H_FAMILY, _H_TRANSFORM, _H_ONE_RECORD = range(8)
_H_ATTENUATION, _H_MEAN_DIAGONAL, _H_LOG_NORMALISER = 8, 9, 10
_H_PRIOR_A, _H_PRIOR_O = 11, 15  # 4 entries each: (code, c0, c1, c2)
_H_BINS, _H_FLOAT32, _H_KINSHIP_RANK, _H_SHARE_WEIGHT, _H_H2 = 19, 20, 21, 22, 23
_H_CENTERED, _H_INTERCEPT, _H_N_EXPANDED = 24, 25, 26
# section offsets (in float64 slots from the buffer's start), in this order
_SECTIONS = (
    "y",
    "trials",
    "offset",
    "design",
    "beta_mu",
    "beta_sd",
    "index",
    "eigenvalues",
    "log_eigenvalues",
    "weights",
    "score",
    "score_slope",
    "beta_pilot",
    "information",
    "bins",
    "bin_weights",
    "gh_nodes",
    "gh_weights",
    "means",
    "vectors",
)
_H_OFFSETS = 32
_HEADER = _H_OFFSETS + len(_SECTIONS) + 1  # each section's start, and the buffer's end
(
    _S_Y,
    _S_TRIALS,
    _S_OFFSET,
    _S_DESIGN,
    _S_MU,
    _S_SD,
    _S_INDEX,
    _S_EIG,
    _S_LOG_EIG,
    _S_WEIGHTS,
    _S_SCORE,
    _S_SLOPE,
    _S_BPILOT,
    _S_INFO,
    _S_BINS,
    _S_BINW,
    _S_GHN,
    _S_GHW,
    _S_MEANS,
    _S_VECTORS,
) = range(_H_OFFSETS, _H_OFFSETS + len(_SECTIONS))

_POISSON, _LOGIT, _PROBIT = 0, 1, 2
_DENSITY_MODULE = "bayeslmm.engines.bayes.glmm_density"
_PARTIAL, _CONDITIONAL = 0, 1


# -- exp over an array, vectorised -----------------------------------------------------------
#: arguments of :func:`_exp_inplace` above _EXP_MAX give inf (exp overflows there); below
#: _EXP_MIN, 0 (exp(−708) = 3.3e-308: within a few smallest normal numbers of it)
_EXP_MAX, _EXP_MIN = 709.782712893384, -708.0
_INV_LN2 = 1.4426950408889634
_LN2_HI, _LN2_LO = 6.93147180369123816490e-01, 1.90821492927058770002e-10
_ROUND = 6755399441055744.0  # 1.5 × 2⁵²: (x + _ROUND) − _ROUND is x rounded to an integer


@intrinsic
def _float_from_bits(typingctx, bits):  # noqa: ANN001, ANN202 (numba intrinsic)
    """The float64 whose IEEE bits are the int64 ``bits`` (a register move)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@_jit
def _exp_inplace(values: np.ndarray) -> None:
    """values ← exp(values), within 2 ulp of libm's exp, without a call per element.

    math.exp is a libm call LLVM cannot vectorise (numba has no vector maths library
    here): at n = 500 the two exps per record and per basis vector were a quarter of the
    gradient outside the two mat-vecs. This is exp's textbook form, branch-free so that
    the loop is vectorised: x = k log 2 + t, |t| ≤ log(2)/2, exp(t) by its Taylor series
    to t¹² (truncation below 2e-16 relative), times 2ᵏ built from its bits. Overflow gives
    inf, x < −708 gives 0 and NaN stays NaN.
    """
    for i in range(values.size):
        x = values[i]
        xc = min(max(x, _EXP_MIN), _EXP_MAX)
        k = (xc * _INV_LN2 + _ROUND) - _ROUND
        t = (xc - k * _LN2_HI) - k * _LN2_LO
        q = 1.0 / 479001600.0
        q = q * t + 1.0 / 39916800.0
        q = q * t + 1.0 / 3628800.0
        q = q * t + 1.0 / 362880.0
        q = q * t + 1.0 / 40320.0
        q = q * t + 1.0 / 5040.0
        q = q * t + 1.0 / 720.0
        q = q * t + 1.0 / 120.0
        q = q * t + 1.0 / 24.0
        q = q * t + 1.0 / 6.0
        q = q * t + 0.5
        q = q * t + 1.0
        q = q * t + 1.0
        # 2^(k−1) · 2: k reaches 1024 at the top of the range, where 2^k is not a double
        y = q * _float_from_bits((np.int64(k) + np.int64(1022)) << np.int64(52)) * 2.0
        y = math.inf if x > _EXP_MAX else y
        y = 0.0 if x < _EXP_MIN else y
        values[i] = y if x == x else x


# -- family pieces ---------------------------------------------------------------------------
@_jit
def _log_ndtr(x: float) -> float:
    """log Φ(x), accurate in both tails (scipy.special.log_ndtr to 1e-12 relative)."""
    if x > 0.0:  # log(1 − Φ(−x)): the log of a number near 1, taken as log1p
        return math.log1p(-0.5 * math.erfc(x / math.sqrt(2.0)))
    if x > -20.0:
        return math.log(0.5 * math.erfc(-x / math.sqrt(2.0)))
    # Φ(x) = φ(x)/|x| · (1 − 1/x² + 3/x⁴ − …): at |x| ≥ 20 twelve terms reach 1e-16
    z = 1.0 / (x * x)
    term, series = 1.0, 1.0
    for k in range(1, 13):
        term *= -(2.0 * k - 1.0) * z
        series += term
    return -0.5 * x * x - 0.5 * LOG_2PI - math.log(-x) + math.log(series)


@_jit
def _loglik_term(family: int, y: float, eta: float, n: float) -> tuple[float, float]:
    """log p(y | η) less its η-free constant, and d/dη (the families' loglik_kernel)."""
    if family == _POISSON:
        mu = math.exp(eta)
        return y * eta - mu, y - mu
    if family == _LOGIT:
        e = math.exp(-abs(eta))  # one exp for log(1 + e^η) and the success probability
        softplus = max(eta, 0.0) + math.log1p(e)
        p = 1.0 / (1.0 + e) if eta >= 0.0 else e / (1.0 + e)
        return y * eta - n * softplus, y - n * p
    log_p, log_q = _log_ndtr(eta), _log_ndtr(-eta)
    log_phi = -0.5 * eta * eta - 0.5 * LOG_2PI
    value = y * log_p + (n - y) * log_q
    return value, y * math.exp(log_phi - log_p) - (n - y) * math.exp(log_phi - log_q)


@_jit
def _information(family: int, eta: float) -> tuple[float, float]:
    """Fisher information of one trial at η and d log w/dη (binomial links)."""
    if family == _LOGIT:
        p = 1.0 / (1.0 + math.exp(-eta))
        return p * (1.0 - p), 1.0 - 2.0 * p
    log_phi = -0.5 * eta * eta - 0.5 * LOG_2PI
    log_p, log_q = _log_ndtr(eta), _log_ndtr(-eta)
    w = math.exp(2.0 * log_phi - log_p - log_q)
    return w, -2.0 * eta - math.exp(log_phi - log_p) + math.exp(log_phi - log_q)


# -- the two passes over the eigenvectors ----------------------------------------------------
@_jit
def _levels(U: np.ndarray, c: np.ndarray, out: np.ndarray) -> None:
    """out = U c, c and out in U's precision: BLAS's gemv (numba calls the one SciPy links,
    without the GIL), one streaming pass over U, written straight into ``out`` (no
    temporary, no copy). Hand-written loops reached half its speed while U sits in cache
    (n ≤ 1,000) and equal speed from memory (n = 5,000)."""
    np.dot(U, c, out)


@_jit
def _to_basis(U: np.ndarray, w: np.ndarray, out: np.ndarray) -> None:
    """out = Uᵀ w, w and out in U's precision: BLAS's gemv on the transpose, one pass."""
    np.dot(w, U, out)


# -- the buffer's sections ---------------------------------------------------------------------
@_jit
def _section(buffer: np.ndarray, k: int) -> np.ndarray:
    """Section ``k`` (a ``_S_*`` index) of the buffer, as a flat float64 view."""
    return buffer[int(buffer[k]) : int(buffer[k + 1])]


@_jit
def _vectors32(buffer: np.ndarray) -> np.ndarray:
    L, r = int(buffer[_H_L]), int(buffer[_H_R])
    return _section(buffer, _S_VECTORS).view(np.float32)[: L * r].reshape((L, r))


@_jit
def _vectors64(buffer: np.ndarray) -> np.ndarray:
    L, r = int(buffer[_H_L]), int(buffer[_H_R])
    return _section(buffer, _S_VECTORS)[: L * r].reshape((L, r))


@_jit
def _expected_information(
    buffer: np.ndarray, family: int, V: float, info: np.ndarray, d_info: np.ndarray
) -> None:
    """E[w(η)] over η ~ N(μ_g, V) per bin g and d/dV: exp(μ + V/2) for Poisson, else the
    families' 20-point Gauss–Hermite quadrature, differentiated as the quadrature it is."""
    bins = _section(buffer, _S_BINS)
    nodes, weights = _section(buffer, _S_GHN), _section(buffer, _S_GHW)
    root = math.sqrt(V)
    for g in range(bins.size):
        if family == _POISSON:
            f = math.exp(bins[g] + 0.5 * V)
            info[g], d_info[g] = f, 0.5 * f
            continue
        total, slope_total = 0.0, 0.0
        for q in range(nodes.size):
            w, slope = _information(family, bins[g] + root * nodes[q])
            total += w * weights[q]
            slope_total += w * slope * weights[q] * nodes[q]
        info[g], d_info[g] = total, slope_total / (2.0 * root)


@_jit
def _logp_core(x: np.ndarray, grad: np.ndarray, buffer: np.ndarray, U: np.ndarray) -> float:
    """GLMMDensity.logp at x from the buffer, the gradient written into ``grad``.

    Besides the two passes over U, a gradient costs one exp per record (Poisson) and, per
    basis vector, one exp (partial non-centring's scale) and one division; log A_j is
    2 log σ_a + log s_j without the observation-level effect (log s_j stored), so that no
    logarithm is taken per basis vector there. At n = 500 these transcendentals were
    half of the work outside the mat-vecs."""
    n, L, r, p = int(buffer[_H_N]), int(buffer[_H_L]), int(buffer[_H_R]), int(buffer[_H_P])
    olre = buffer[_H_OLRE] != 0.0
    family = int(buffer[_H_FAMILY])
    k = p + 1 + int(olre)
    y, trials = _section(buffer, _S_Y), _section(buffer, _S_TRIALS)
    offset = _section(buffer, _S_OFFSET)
    design = _section(buffer, _S_DESIGN).reshape((n, p))
    beta_mu, beta_sd = _section(buffer, _S_MU), _section(buffer, _S_SD)
    s, log_s = _section(buffer, _S_EIG), _section(buffer, _S_LOG_EIG)
    att, mean_diag = buffer[_H_ATTENUATION], buffer[_H_MEAN_DIAGONAL]
    one_record = buffer[_H_ONE_RECORD] != 0.0
    index = _section(buffer, _S_INDEX)
    two_log_sd_a = 2.0 * x[p]
    var_a = math.exp(two_log_sd_a)
    var_o = math.exp(2.0 * x[p + 1]) if olre else 0.0
    V = var_a * mean_diag + var_o
    gfac = math.sqrt(1.0 + att * V)
    # scratch in two allocations (one per precision) instead of one per array: at n = 500
    # a dozen small allocations were a tenth of the work outside the mat-vecs
    work = np.empty(6 * r + 2 * p + L + 2 * n)
    A, inv_A, c = work[:r], work[r : 2 * r], work[2 * r : 3 * r]
    scale, gc, g_A = work[3 * r : 4 * r], work[4 * r : 5 * r], work[5 * r : 6 * r]
    beta, g_beta = work[6 * r : 6 * r + p], work[6 * r + p : 6 * r + 2 * p]
    at = 6 * r + 2 * p
    g_levels = work[at : at + L]  # summed in float64, then rounded once for BLAS
    etas, means = work[at + L : at + L + n], work[at + L + n :]
    # the mat-vecs' operands and results in U's precision, as BLAS reads and writes them
    vec = np.empty(2 * (L + r), dtype=U.dtype)
    c_u, levels = vec[:r], vec[r : r + L]
    g_levels_u, gc_u = vec[r + L : r + 2 * L], vec[r + 2 * L :]
    for a in range(p):
        beta[a] = x[a] * gfac
    sum_log_A = 0.0
    v = x[k:]
    conditional = buffer[_H_TRANSFORM] == _CONDITIONAL
    log_jac = 0.0
    G = int(buffer[_H_BINS])
    if conditional:
        cond = np.empty(3 * r + 2 * G)
        P, mean = cond[:r], cond[r : 2 * r]
        d_info_j = cond[2 * r : 3 * r]  # Σ_q M_jq ∂E[I_q]/∂V: the bins read once per gradient
        info, d_info = cond[3 * r : 3 * r + G], cond[3 * r + G :]
        if G:
            _expected_information(buffer, family, V, info, d_info)
        score, info0 = _section(buffer, _S_SCORE), _section(buffer, _S_INFO)
        slope = _section(buffer, _S_SLOPE).reshape((r, p))
        beta_pilot = _section(buffer, _S_BPILOT)
        bin_w = _section(buffer, _S_BINW).reshape((r, G))
        for j in range(r):
            A[j] = var_a * s[j] + var_o
            inv_A[j] = 1.0 / A[j]
            sum_log_A += math.log(A[j])
            b = score[j]
            for a in range(p):
                b -= slope[j, a] * (beta[a] - beta_pilot[a])
            pj = inv_A[j] + info0[j]
            dj = 0.0
            for q in range(G):
                pj += bin_w[j, q] * info[q]
                dj += bin_w[j, q] * d_info[q]
            d_info_j[j] = dj
            P[j] = pj
            scale[j] = 1.0 / math.sqrt(pj)
            mean[j] = b / pj
            c[j] = mean[j] + scale[j] * v[j]
            c_u[j] = c[j]
            log_jac -= 0.5 * math.log(pj)
    else:
        weights = _section(buffer, _S_WEIGHTS)
        for j in range(r):
            if olre:
                A[j] = var_a * s[j] + var_o
                log_A = math.log(A[j])
            else:  # A_j = σ_a² s_j
                A[j] = var_a * s[j]
                log_A = two_log_sd_a + log_s[j]
            inv_A[j] = 1.0 / A[j]
            sum_log_A += log_A
            scale[j] = 0.5 * (1.0 - weights[j]) * log_A  # log of the scale, for now
            log_jac += scale[j]
        _exp_inplace(scale)
        for j in range(r):
            c[j] = scale[j] * v[j]
            c_u[j] = c[j]
    # η = offset + X β + Z U c; the likelihood's gradient in β accumulated on the way
    _levels(U, c_u, levels)
    g_levels[:] = 0.0
    g_beta[:] = 0.0
    loglik = 0.0
    for i in range(n):
        eta = offset[i]
        for a in range(p):
            eta += design[i, a] * beta[a]
        etas[i] = eta + levels[i if one_record else int(index[i])]
    if family == _POISSON:
        # _loglik_term's Poisson pieces with μ = exp η taken over all records at once
        means[:] = etas
        _exp_inplace(means)
    for i in range(n):
        level = i if one_record else int(index[i])
        if family == _POISSON:
            value, g = y[i] * etas[i] - means[i], y[i] - means[i]
        else:
            value, g = _loglik_term(family, y[i], etas[i], trials[i])
        loglik += value
        for a in range(p):
            g_beta[a] += design[i, a] * g
        g_levels[level] += g
    for i in range(L):
        g_levels_u[i] = g_levels[i]
    _to_basis(U, g_levels_u, gc_u)
    quad = 0.0
    for j in range(r):
        gc[j] = gc_u[j]
        rj = c[j] * inv_A[j]
        quad += c[j] * rj
        gc[j] -= rj
        g_A[j] = 0.5 * (rj * rj - inv_A[j])
    # the transform's pullback: how (A, V, β) reach the density at fixed v
    g_V = 0.0
    if conditional:
        slope = _section(buffer, _S_SLOPE).reshape((r, p))
        for j in range(r):
            g_P = -(gc[j] * (mean[j] + 0.5 * v[j] * scale[j]) + 0.5) / P[j]
            g_V += g_P * d_info_j[j]
            g_A[j] -= g_P * inv_A[j] * inv_A[j]
            for a in range(p):
                g_beta[a] -= gc[j] / P[j] * slope[j, a]
    else:
        weights = _section(buffer, _S_WEIGHTS)
        for j in range(r):
            g_A[j] += 0.5 * (1.0 - weights[j]) * inv_A[j] * (gc[j] * c[j] + 1.0)
    value = loglik - 0.5 * quad - 0.5 * sum_log_A + log_jac + p * math.log(gfac)
    d_beta_h = 0.0
    for a in range(p):
        resid = (beta[a] - beta_mu[a]) / beta_sd[a]
        value -= 0.5 * resid * resid
        d = g_beta[a] - resid / beta_sd[a]
        grad[a] = gfac * d
        d_beta_h += d * x[a]
    value += buffer[_H_LOG_NORMALISER]
    g_V += att / (2.0 * gfac) * (d_beta_h + p / gfac)
    h = _H_PRIOR_A
    pa, dpa = _log_prior_c(buffer[h], buffer[h + 1], buffer[h + 2], buffer[h + 3], x[p])
    value += pa + x[p]
    d_var = g_V * mean_diag
    sum_g_A = 0.0
    for j in range(r):
        d_var += g_A[j] * s[j]
        sum_g_A += g_A[j]
    grad[p] = 2.0 * var_a * d_var + dpa + 1.0
    if olre:
        h = _H_PRIOR_O
        po, dpo = _log_prior_c(buffer[h], buffer[h + 1], buffer[h + 2], buffer[h + 3], x[p + 1])
        value += po + x[p + 1]
        grad[p + 1] = 2.0 * var_o * (sum_g_A + g_V) + dpo + 1.0
    for j in range(r):
        grad[k + j] = scale[j] * gc[j]
    return value


@_jit
def logp_from_buffer(x: np.ndarray, grad: np.ndarray, buffer: np.ndarray) -> float:
    """:meth:`GLMMDensity.logp <bayeslmm.engines.bayes.glmm_density.GLMMDensity.logp>` at
    x from the C callback's buffer (:func:`c_buffer`); the gradient is written to ``grad``."""
    if buffer[_H_FLOAT32] != 0.0:
        return _logp_core(x, grad, buffer, _vectors32(buffer))
    return _logp_core(x, grad, buffer, _vectors64(buffer))


@_jit
def _splitmix(state: np.uint64) -> tuple[np.uint64, np.uint64]:
    """One step of splitmix64: (next state, 64 random bits)."""
    state = state + np.uint64(0x9E3779B97F4A7C15)
    z = state
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return state, z ^ (z >> np.uint64(31))


@_jit
def _normals(x: np.ndarray, out: np.ndarray) -> None:
    """Standard normal draws (Box–Muller on splitmix64), seeded from the bits of x."""
    state = np.uint64(0x2545F4914F6CDD1D)
    for bits in x.view(np.uint64):
        state, z = _splitmix(state ^ bits)
    scale = 1.0 / 9007199254740992.0  # 2⁻⁵³
    for i in range(0, out.size, 2):
        state, z1 = _splitmix(state)
        state, z2 = _splitmix(state)
        u1 = (float(z1 >> np.uint64(11)) + 0.5) * scale
        u2 = float(z2 >> np.uint64(11)) * scale
        radius = math.sqrt(-2.0 * math.log(u1))
        out[i] = radius * math.cos(2.0 * math.pi * u2)
        if i + 1 < out.size:
            out[i + 1] = radius * math.sin(2.0 * math.pi * u2)


@_jit
def _expand_core(x: np.ndarray, buffer: np.ndarray, out: np.ndarray, U: np.ndarray) -> None:
    """GLMMDensity.expand's values, flat in its order (the split a | a + e of the merged
    Poisson effect drawn with :func:`_normals`)."""
    n, L, r, p = int(buffer[_H_N]), int(buffer[_H_L]), int(buffer[_H_R]), int(buffer[_H_P])
    olre = buffer[_H_OLRE] != 0.0
    family = int(buffer[_H_FAMILY])
    k = p + 1 + int(olre)
    s = _section(buffer, _S_EIG)
    var_a = math.exp(2.0 * x[p])
    var_o = math.exp(2.0 * x[p + 1]) if olre else 0.0
    V = var_a * buffer[_H_MEAN_DIAGONAL] + var_o
    gfac = math.sqrt(1.0 + buffer[_H_ATTENUATION] * V)
    beta = np.empty(p)
    for a in range(p):
        beta[a] = x[a] * gfac
    # c from v: the logp's transform
    c = np.empty(r)
    A = np.empty(r)
    for j in range(r):
        A[j] = var_a * s[j] + var_o
    if buffer[_H_TRANSFORM] == _CONDITIONAL:
        G = int(buffer[_H_BINS])
        info, d_info = np.empty(G), np.empty(G)
        if G:
            _expected_information(buffer, family, V, info, d_info)
        score, info0 = _section(buffer, _S_SCORE), _section(buffer, _S_INFO)
        slope = _section(buffer, _S_SLOPE).reshape((r, p))
        beta_pilot = _section(buffer, _S_BPILOT)
        bin_w = _section(buffer, _S_BINW).reshape((r, G))
        for j in range(r):
            b = score[j]
            for a in range(p):
                b -= slope[j, a] * (beta[a] - beta_pilot[a])
            pj = 1.0 / A[j] + info0[j]
            for q in range(G):
                pj += bin_w[j, q] * info[q]
            c[j] = b / pj + x[k + j] / math.sqrt(pj)
    else:
        weights = _section(buffer, _S_WEIGHTS)
        for j in range(r):
            c[j] = math.exp(0.5 * (1.0 - weights[j]) * math.log(A[j])) * x[k + j]
    pos = 0
    if p:
        for a in range(p):
            out[pos + a] = beta[a]
        pos += p
        if buffer[_H_CENTERED] != 0.0:
            means = _section(buffer, _S_MEANS)
            shift = 0.0
            for a in range(p):
                out[pos + a] = beta[a]
                shift += beta[a] * means[a]
            out[pos + int(buffer[_H_INTERCEPT])] -= shift
            pos += p
    a_eff = c.copy()
    one_record = buffer[_H_ONE_RECORD] != 0.0
    index = _section(buffer, _S_INDEX)
    if olre:
        noise = np.empty(r)
        _normals(x, noise)
        rest = np.empty(r)
        for j in range(r):
            share = var_a * s[j] / A[j]
            a_eff[j] = share * c[j] + math.sqrt(share * var_o) * noise[j]
            rest[j] = c[j] - a_eff[j]
        e_levels = np.empty(L, dtype=U.dtype)
        _levels(U, rest.astype(U.dtype), e_levels)
        sd_o = math.sqrt(var_o)
        out[pos] = sd_o
        pos += 1
        for i in range(n):
            out[pos + i] = e_levels[i if one_record else int(index[i])] / sd_o
        pos += n
        out[pos] = var_o
        pos += 1
    out[pos] = math.sqrt(var_a)
    out[pos + 1] = var_a
    pos += 2
    rk = int(buffer[_H_KINSHIP_RANK])
    for j in range(rk):
        out[pos + j] = a_eff[j] / math.sqrt(var_a * s[j])
    pos += rk
    u = np.empty(L, dtype=U.dtype)
    _levels(U, a_eff.astype(U.dtype), u)
    for i in range(L):
        out[pos + i] = u[i]
    pos += L
    if family == _POISSON:
        offset = _section(buffer, _S_OFFSET)
        design = _section(buffer, _S_DESIGN).reshape((n, p))
        total = 0.0
        for i in range(n):
            eta = offset[i]
            for a in range(p):
                eta += design[i, a] * beta[a]
            total += math.exp(eta)
        lam = total / n * math.exp(0.5 * (var_a + var_o))
        var_residual = math.log1p(1.0 / lam) + var_o
    elif family == _LOGIT:
        var_residual = math.pi**2 / 3.0
    else:
        var_residual = 1.0
    out[pos] = var_residual
    share_a = buffer[_H_SHARE_WEIGHT] * var_a
    out[pos + 1] = share_a / (share_a + var_residual)
    out[pos + 2] = var_residual / (share_a + var_residual)
    pos += 3
    if buffer[_H_H2] != 0.0:
        out[pos] = out[pos - 2]


@_jit
def expand_from_buffer(x: np.ndarray, buffer: np.ndarray, out: np.ndarray) -> None:
    """:meth:`GLMMDensity.expand <bayeslmm.engines.bayes.glmm_density.GLMMDensity.expand>`'s
    values, flat in its order, into ``out``."""
    if buffer[_H_FLOAT32] != 0.0:
        _expand_core(x, buffer, out, _vectors32(buffer))
    else:
        _expand_core(x, buffer, out, _vectors64(buffer))


@_jit
def _logp_arrays(dim, x_, grad_, logp_, data_):  # noqa: ANN001, ANN202 (pointers)
    """nutpie's C logp arguments as arrays (x, gradient, value, buffer), and whether the
    dimension is the buffer's."""
    header = numba.carray(data_, (_HEADER,), np.float64)
    size = int(header[_H_OFFSETS + len(_SECTIONS)])
    k = int(header[_H_P]) + 1 + int(header[_H_OLRE] != 0.0)
    buffer = numba.carray(data_, (size,), np.float64)
    x = numba.carray(x_, (dim,))
    grad = numba.carray(grad_, (dim,))
    out = numba.carray(logp_, (1,))
    return dim == k + int(header[_H_R]), x, grad, out, buffer


@_jit
def _logp_status(value: float, grad: np.ndarray, out: np.ndarray) -> int:
    """Write the value; 0 on success, 4 (recoverable: NUTS rejects the step) for a
    non-finite value or gradient."""
    out[0] = value
    if not math.isfinite(value):
        return 4
    for i in range(grad.size):
        if not math.isfinite(grad[i]):
            return 4
    return 0


@_jit
def _expand_arrays(dim, n_expanded, x_, out_, data_):  # noqa: ANN001, ANN202 (pointers)
    """nutpie's C expand arguments as arrays (x, out, buffer), and whether the number of
    expanded values is the buffer's."""
    header = numba.carray(data_, (_HEADER,), np.float64)
    size = int(header[_H_OFFSETS + len(_SECTIONS)])
    buffer = numba.carray(data_, (size,), np.float64)
    x = numba.carray(x_, (dim,))
    out = numba.carray(out_, (n_expanded,))
    return n_expanded == int(header[_H_N_EXPANDED]), x, out, buffer


# One (logp, expand) pair per precision of the eigenvectors, each typed for its precision
# only: a fit loads the pair its buffer needs from numba's cache, half the code of a pair
# that held both (at n = 500 loading the callbacks was a twentieth of a fit). Each returns
# −1 for a dimension other than the buffer's or a buffer of the other precision.
def _logp_c32(dim, x_, grad_, logp_, data_):  # noqa: ANN001, ANN202 (numba cfunc)
    ok, x, grad, out, buffer = _logp_arrays(dim, x_, grad_, logp_, data_)
    if not ok or buffer[_H_FLOAT32] == 0.0:
        return -1
    return _logp_status(_logp_core(x, grad, buffer, _vectors32(buffer)), grad, out)


def _logp_c64(dim, x_, grad_, logp_, data_):  # noqa: ANN001, ANN202 (numba cfunc)
    ok, x, grad, out, buffer = _logp_arrays(dim, x_, grad_, logp_, data_)
    if not ok or buffer[_H_FLOAT32] != 0.0:
        return -1
    return _logp_status(_logp_core(x, grad, buffer, _vectors64(buffer)), grad, out)


def _expand_c32(dim, n_expanded, x_, out_, data_):  # noqa: ANN001, ANN202 (numba cfunc)
    ok, x, out, buffer = _expand_arrays(dim, n_expanded, x_, out_, data_)
    if not ok or buffer[_H_FLOAT32] == 0.0:
        return -1
    _expand_core(x, buffer, out, _vectors32(buffer))
    return 0


def _expand_c64(dim, n_expanded, x_, out_, data_):  # noqa: ANN001, ANN202 (numba cfunc)
    ok, x, out, buffer = _expand_arrays(dim, n_expanded, x_, out_, data_)
    if not ok or buffer[_H_FLOAT32] != 0.0:
        return -1
    _expand_core(x, buffer, out, _vectors64(buffer))
    return 0


_C_CALLBACKS: dict[bool, tuple[Any, Any]] = {}


def c_callbacks(single: bool = True) -> tuple[Any, Any]:
    """The compiled (logp, expand) cfuncs for float32 eigenvectors (``single``, the fit's
    default) or float64 ones, once per process (numba's on-disk cache: compiled by the
    first process after an install, loaded by later ones).

    Examples
    --------
    >>> logp, expand = c_callbacks()
    >>> logp.address > 0
    True
    """
    single = bool(single)
    if single not in _C_CALLBACKS:
        # error_model="numpy": an overflow becomes a rejected step, not an exception the
        # C function cannot raise
        pair = (_logp_c32, _expand_c32) if single else (_logp_c64, _expand_c64)
        _C_CALLBACKS[single] = nutpie_cfuncs(*pair, error_model="numpy")
    return _C_CALLBACKS[single]


def family_code(family: Any) -> int | None:
    """The C callback's number for a built-in family and link, None for any other (a
    user's family, or a subclass that changes the likelihood, keeps the Python callback)."""
    from bayeslmm import families as F

    kernel = type(family).loglik_kernel
    if isinstance(family, F.Poisson) and kernel is F.Poisson.loglik_kernel:
        return _POISSON
    binary = isinstance(family, (F.Bernoulli, F.Binomial))
    if binary and kernel is F._BinaryTrials.loglik_kernel:
        expected = type(family).expected_information is F.Family.expected_information
        information = type(family).information is F._BinaryTrials.information
        if expected and information:
            # the binary links: the canonical logit, or the probit's normal liability
            if family.canonical_link:
                return _LOGIT
            return _PROBIT if family.threshold_liability else None
    return None


def c_buffer(density: Any) -> np.ndarray | None:
    """``density`` (a :class:`~bayeslmm.engines.bayes.glmm_density.GLMMDensity`) as the C
    callbacks' float64 buffer, or None where the C form does not cover it (a family, prior
    or transform it does not know: the Python callback samples it then).

    Examples
    --------
    >>> import numpy as np, pandas as pd, bayeslmm as bl
    >>> from bayeslmm.engines.bayes import build
    >>> from bayeslmm.engines.bayes.glmm_density import glmm_density
    >>> K = bl.Kinship(np.eye(6) * 0.5 + 0.5, [f"i{k}" for k in range(6)])
    >>> df = pd.DataFrame({"y": [0, 1, 1, 0, 1, 1], "id": list(K.ids)})
    >>> spec = bl.specify("y ~ 1 + (1 | id)", df, kinship={"id": K}, family="bernoulli")
    >>> density = glmm_density(build(spec, strategy="latent"), dtype="float64")
    >>> x = density.initial_point(1)
    >>> grad = np.empty_like(x)
    >>> value = logp_from_buffer(x, grad, c_buffer(density))
    >>> bool(np.isclose(value, density.logp(x)[0]))
    True
    """
    return _buffer_and_layout(density)[0]


def _buffer_and_layout(density: Any) -> tuple[np.ndarray | None, dict[str, Any] | None]:
    """(:func:`c_buffer`, :func:`expanded_layout`), expand run once; (None, None) where the C
    form does not cover ``density``."""
    from bayeslmm.families import _GH_NODES, _GH_WEIGHTS

    code = family_code(density.family)
    specs = getattr(density, "prior_specs", None)
    if code is None or specs is None:
        return None, None
    prior_a = _prior_row(specs[0])
    prior_o = _prior_row(specs[1]) if density.olre else (0.0, 0.0, 0.0, 0.0)
    if prior_a is None or prior_o is None or prior_a[0] == 0.0:
        return None, None
    if density.olre and prior_o[0] == 0.0:
        return None, None
    vectors = np.asarray(density.vectors)
    if vectors.dtype not in (np.float32, np.float64):
        return None, None
    transform = density.transform
    n, p = density.design.shape
    L, r = vectors.shape
    empty = np.zeros(0)
    pieces: dict[str, np.ndarray] = dict.fromkeys(_SECTIONS, empty)
    # the two transforms of glmm_density exactly (a subclass may change the maths), named
    # rather than imported: glmm_density imports this module
    kind = (type(transform).__module__, type(transform).__qualname__)
    if kind == (_DENSITY_MODULE, "PartialNonCentring"):
        transform_code = _PARTIAL
        pieces["weights"] = np.asarray(transform.weights, dtype=float)
    elif kind == (_DENSITY_MODULE, "ConditionalCentring") and transform.family is density.family:
        transform_code = _CONDITIONAL
        pieces.update(
            score=transform.score,
            score_slope=np.asarray(transform.score_slope).reshape(r, p),
            beta_pilot=transform.beta_pilot,
            information=transform.information,
            bins=transform.bins,
            bin_weights=np.asarray(transform.bin_weights).reshape(r, -1),
        )
        if transform.bins.size and code == _POISSON:
            expected = type(density.family).expected_information
            from bayeslmm.families import Poisson

            if expected is not Poisson.expected_information:  # pragma: no cover
                return None, None
    else:
        return None, None
    meta = density.meta
    centred = bool(p) and meta.get("beta_name", "beta") != "beta"
    pieces.update(
        y=density.y,
        trials=density.trials,
        offset=density.offset,
        design=density.design,
        beta_mu=density.beta_mu,
        beta_sd=density.beta_sd,
        index=density.index.astype(float),
        eigenvalues=density.eigenvalues,
        # log s_j: log A_j = 2 log σ_a + log s_j without the observation-level effect (a
        # zero eigenvalue gives -inf, as log A_j would)
        log_eigenvalues=_log_or_minus_inf(density.eigenvalues),
        gh_nodes=_GH_NODES,
        gh_weights=_GH_WEIGHTS,
        means=np.asarray(meta["means"], dtype=float) if centred else empty,
    )
    flat = [np.ascontiguousarray(pieces[name], dtype=float).ravel() for name in _SECTIONS[:-1]]
    # the eigenvectors in their own precision, packed into float64 slots
    packed = np.zeros(-(-vectors.size * vectors.itemsize // 8))
    packed.view(vectors.dtype)[: vectors.size] = vectors.ravel()
    flat.append(packed)
    starts = np.cumsum([_HEADER] + [a.size for a in flat])
    header = np.zeros(_HEADER)
    header[_H_N], header[_H_L], header[_H_R], header[_H_P] = n, L, r, p
    header[_H_OLRE] = float(density.olre)
    header[_H_FAMILY] = code
    header[_H_TRANSFORM] = transform_code
    header[_H_ONE_RECORD] = float(density.one_record_per_level)
    header[_H_ATTENUATION] = density.attenuation
    header[_H_MEAN_DIAGONAL] = density.mean_diagonal
    header[_H_LOG_NORMALISER] = density.log_normaliser
    header[_H_PRIOR_A : _H_PRIOR_A + 4] = prior_a
    header[_H_PRIOR_O : _H_PRIOR_O + 4] = prior_o
    header[_H_BINS] = transform.bins.size if transform_code == _CONDITIONAL else 0
    header[_H_FLOAT32] = float(vectors.dtype == np.float32)
    header[_H_KINSHIP_RANK] = r if density.kinship_rank < 0 else density.kinship_rank
    header[_H_SHARE_WEIGHT] = float(meta.get("share_weight", 1.0))
    header[_H_H2] = float(bool(meta.get("h2")))
    header[_H_CENTERED] = float(centred)
    header[_H_INTERCEPT] = float(meta.get("intercept") or 0) if centred else 0.0
    layout = expanded_layout(density)
    header[_H_N_EXPANDED] = sum(int(np.prod(shape)) for shape in layout.values())
    header[_H_OFFSETS : _H_OFFSETS + len(starts)] = starts
    return np.concatenate([header, *flat]), layout


def _log_or_minus_inf(values: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(np.asarray(values, dtype=float))


def expanded_layout(density: Any) -> dict[str, tuple[int, ...]]:
    """Name → shape of each variable :meth:`GLMMDensity.expand` returns, in its order (the
    order the C expand writes them in).

    Examples
    --------
    >>> # expanded_layout(density)["u_id"] == (n_levels, 1)
    """
    sample = density.expand(density.initial_point(0), np.random.default_rng(0))
    return {name: tuple(np.shape(value)) for name, value in sample.items()}


def nutpie_model(density: Any, dims_of: dict[str, tuple[str, ...]], coords: Any) -> Any:
    """nutpie's numba-backend model class around the C callbacks for ``density``, or None
    where :func:`c_buffer` does not cover it or this nutpie has no such class.

    ``dims_of`` and ``coords`` are those :func:`~bayeslmm.engines.bayes.nutpie_callback.
    pyfunc_model` takes (variable → dims, dim → labels).
    """
    from bayeslmm.engines.bayes.nutpie_callback import c_model

    buffer, layout = _buffer_and_layout(density)
    if buffer is None or layout is None:
        return None
    return c_model(
        ndim=density.ndim,
        callbacks=c_callbacks(single=bool(buffer[_H_FLOAT32])),
        buffer=buffer,
        layout=layout,
        initial_point=density.initial_point,
        dims_of=dims_of,
        coords=coords,
    )
