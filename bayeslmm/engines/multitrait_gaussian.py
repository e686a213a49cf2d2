"""The multi-trait Gaussian likelihood on the rotated (eigen) basis of one kinship.

Model: Y (n × t) = X B + U + E with vec(U) ~ N(0, Σ_G ⊗ K) and the rows of E independent
N(0, Σ_E). With K = Q S Qᵀ the rotated rows r_i of Qᵀ(Y − X B) are independent,
r_i ~ N(0, V_i), V_i = s_i Σ_G + Σ_E (t × t): each evaluation costs O(n t³), never an
(n t) × (n t) matrix (the bivariate form of FaST-LMM's / GEMMA's mvLMM rotation).

The fixed effects enter through a per-trait design ``Xs`` (n × t × p): trait a's mean on
rotated row i is Σ_k Xs[i, a, k] γ[a, k]. One kernel, :func:`rotated_loglik_grad`, serves

* REML (``prior_identity=False``): γ = B is profiled by GLS, C = Σ_i X̃_iᵀ V_i⁻¹ X̃_i, and the
  returned value is the residual log-likelihood up to the constant the caller adds;
* the Bayesian marginal likelihood (``prior_identity=True``): γ ~ N(0, I) with the prior
  scales folded into ``Xs`` is integrated out (Woodbury: C = I + Σ_i X̃_iᵀ V_i⁻¹ X̃_i).

Both return ∂/∂Σ_G and ∂/∂Σ_E as symmetric matrices M with d loglik = tr(M dΣ):
M_G = −½ Σ_i s_i (P_ii − α_i α_iᵀ), M_E = −½ Σ_i (P_ii − α_i α_iᵀ), P_ii the i-th diagonal
block of V⁻¹ − V⁻¹X̃ C⁻¹ X̃ᵀV⁻¹ and α = P r. tests/multitrait/ checks value and gradient
against a dense (n t) × (n t) normal density built with np.kron.

A low-rank kinship K = W Wᵀ (:class:`~bayeslmm.kinship.LowRankKinship`) is rotated by
[U₁, Q] (U₁ its r eigenvectors with s > 0, Q a basis of the data's part outside span U₁):
the r + k rotated rows go through the same kernel, and the m = n − r − k rows left out,
whose data are exactly 0, add one closed-form term (:func:`null_rows_loglik`).
tests/multitrait/test_low_rank.py checks that against the dense kinship W Wᵀ.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from bayeslmm.engines.numba_cache import cached_jit

LOG_2PI = math.log(2.0 * math.pi)


@cached_jit
def _cholesky_into(A: np.ndarray, L: np.ndarray) -> bool:
    """Lower Cholesky factor of A written into L; False when A is not positive definite."""
    m = A.shape[0]
    for j in range(m):
        acc = A[j, j]
        for k in range(j):
            acc -= L[j, k] * L[j, k]
        if not acc > 0.0:
            return False
        L[j, j] = math.sqrt(acc)
        for i in range(j + 1, m):
            acc = A[i, j]
            for k in range(j):
                acc -= L[i, k] * L[j, k]
            L[i, j] = acc / L[j, j]
        for i in range(j):
            L[i, j] = 0.0
    return True


@cached_jit
def _chol_inverse_into(L: np.ndarray, Li: np.ndarray, out: np.ndarray) -> None:
    """(L Lᵀ)⁻¹ from the lower Cholesky factor L into ``out`` (``Li`` is scratch)."""
    m = L.shape[0]
    for j in range(m):
        for i in range(j):
            Li[i, j] = 0.0
        Li[j, j] = 1.0 / L[j, j]
        for i in range(j + 1, m):
            acc = 0.0
            for k in range(j, i):
                acc -= L[i, k] * Li[k, j]
            Li[i, j] = acc / L[i, i]
    for a in range(m):
        for b in range(a + 1):
            acc = 0.0
            for k in range(a, m):
                acc += Li[k, a] * Li[k, b]
            out[a, b] = acc
            out[b, a] = acc


@cached_jit
def rotated_loglik_grad(
    G: np.ndarray,
    E: np.ndarray,
    eigenvalues: np.ndarray,
    resid: np.ndarray,
    design: np.ndarray,
    prior_identity: bool,
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
    """Log-likelihood of the rotated rows and its gradient in Σ_G, Σ_E (see module notes).

    Parameters
    ----------
    G, E : ndarray, shape (t, t)
        Σ_G and Σ_E.
    eigenvalues : ndarray, shape (n,)
        s, eigenvalues of K.
    resid : ndarray, shape (n, t)
        Rotated response less its prior mean: Qᵀ(Y − X μ).
    design : ndarray, shape (n, t, p)
        Rotated, per-trait design (scaled by the prior SDs for the marginal likelihood).
    prior_identity : bool
        True: γ ~ N(0, I) integrated out; False: γ profiled (REML).

    Returns
    -------
    tuple
        (value, M_G, M_E, γ̂, C⁻¹, α, ok). value = −½ [n t log 2π + Σ log|V_i| + log|C| +
        rᵀ P r] (without REML's ``+ t p log 2π`` constant); ok is False when a V_i or C is not
        positive definite (the value is then −inf).
    """
    n, t = resid.shape
    p = design.shape[2]
    q = t * p
    vinv = np.empty((n, t, t))
    W = np.empty((n, t, q))  # V_i⁻¹ X̃_i
    C = np.zeros((q, q))
    h = np.zeros(q)
    logdet = 0.0
    V = np.empty((t, t))
    L = np.zeros((t, t))
    scratch = np.zeros((t, t))
    Vi = np.empty((t, t))
    MG = np.zeros((t, t))
    ME = np.zeros((t, t))
    gamma = np.zeros(q)
    Cinv = np.zeros((q, q))
    alpha = np.zeros((n, t))
    for i in range(n):
        for a in range(t):
            for b in range(t):
                V[a, b] = eigenvalues[i] * G[a, b] + E[a, b]
        if not _cholesky_into(V, L):
            return -math.inf, MG, ME, gamma, Cinv, alpha, False
        for a in range(t):
            logdet += 2.0 * math.log(L[a, a])
        _chol_inverse_into(L, scratch, Vi)
        vinv[i] = Vi
        for a in range(t):
            for b in range(t):
                for k in range(p):
                    W[i, a, b * p + k] = Vi[a, b] * design[i, b, k]
        for a in range(t):
            va = 0.0
            for b in range(t):
                va += Vi[a, b] * resid[i, b]
            for j in range(p):
                x = design[i, a, j]
                if x != 0.0:
                    h[a * p + j] += x * va
                    for c in range(q):
                        C[a * p + j, c] += x * W[i, a, c]
    if prior_identity:
        for c in range(q):
            C[c, c] += 1.0
    if q > 0:
        LC = np.zeros((q, q))
        if not _cholesky_into(C, LC):
            return -math.inf, MG, ME, gamma, Cinv, alpha, False
        for c in range(q):
            logdet += 2.0 * math.log(LC[c, c])
        _chol_inverse_into(LC, np.zeros((q, q)), Cinv)
        for a in range(q):
            acc = 0.0
            for b in range(q):
                acc += Cinv[a, b] * h[b]
            gamma[a] = acc
    quad = 0.0
    e = np.empty(t)
    WC = np.empty((t, q))
    for i in range(n):
        for a in range(t):
            fitted = 0.0
            for k in range(p):
                fitted += design[i, a, k] * gamma[a * p + k]
            e[a] = resid[i, a] - fitted
        for a in range(t):
            acc = 0.0
            for b in range(t):
                acc += vinv[i, a, b] * e[b]
            alpha[i, a] = acc
            quad += resid[i, a] * acc
        # P_ii = V_i⁻¹ − W_i C⁻¹ W_iᵀ
        for a in range(t):
            for c in range(q):
                acc = 0.0
                for d in range(q):
                    acc += W[i, a, d] * Cinv[d, c]
                WC[a, c] = acc
        for a in range(t):
            for b in range(a + 1):
                acc = vinv[i, a, b]
                for c in range(q):
                    acc -= WC[a, c] * W[i, b, c]
                term = acc - alpha[i, a] * alpha[i, b]
                MG[a, b] += eigenvalues[i] * term
                ME[a, b] += term
    for a in range(t):
        for b in range(a + 1):
            MG[a, b] *= -0.5
            ME[a, b] *= -0.5
            MG[b, a] = MG[a, b]
            ME[b, a] = ME[a, b]
    value = -0.5 * (n * t * LOG_2PI + logdet + quad)
    return value, MG, ME, gamma, Cinv, alpha, True


@cached_jit
def null_rows_loglik(E: np.ndarray, n_null: int, ME: np.ndarray) -> float:
    """The m = ``n_null`` rotated rows whose data are exactly 0 and whose eigenvalue is 0
    (a low-rank kinship's complement outside the data's span): each is N(0; 0, Σ_E), so
    they add −½ m (t log 2π + log|Σ_E|) to the log-likelihood and −½ m Σ_E⁻¹ to its
    gradient in Σ_E (added into ``ME``); no fixed-effect or residual term, as their design
    rows are 0 too. Returns −inf where Σ_E is not positive definite."""
    if n_null == 0:
        return 0.0
    t = E.shape[0]
    L = np.zeros((t, t))
    if not _cholesky_into(E, L):
        return -math.inf
    logdet = 0.0
    for a in range(t):
        logdet += 2.0 * math.log(L[a, a])
    Einv = np.empty((t, t))
    _chol_inverse_into(L, np.zeros((t, t)), Einv)
    for a in range(t):
        for b in range(t):
            ME[a, b] -= 0.5 * n_null * Einv[a, b]
    return -0.5 * n_null * (t * LOG_2PI + logdet)


def vech(A: np.ndarray) -> np.ndarray:
    """The lower triangle of A row by row (the order of (vech Σ_G, vech Σ_E) everywhere)."""
    rows, cols = np.tril_indices(A.shape[0])
    return A[rows, cols]


def unvech(v: np.ndarray, t: int) -> np.ndarray:
    """The symmetric t × t matrix whose :func:`vech` is v."""
    A = np.zeros((t, t))
    rows, cols = np.tril_indices(t)
    A[rows, cols] = v
    A[cols, rows] = v
    return A


def natural_grad(MG: np.ndarray, ME: np.ndarray) -> np.ndarray:
    """d loglik / d(vech Σ_G, vech Σ_E) from M_G, M_E (d loglik = tr(M dΣ)): an
    off-diagonal parameter moves two entries."""
    t = MG.shape[0]
    weight = 2.0 - np.eye(t)
    return np.concatenate([vech(MG * weight), vech(ME * weight)])


def observed_information_covariance(
    natural: Callable[[np.ndarray], np.ndarray], phi: np.ndarray, scale: np.ndarray
) -> np.ndarray:
    """Covariance of φ = (vech Σ_G, vech Σ_E) from the observed information, in the traits'
    units: the inverse of minus the Hessian of the log-likelihood, by central differences of
    its gradient ``natural(φ)`` (NaN where it cannot be evaluated), then scaled from the
    standardised traits back (Σ_ab → Σ_ab sc_a sc_b). Both multi-trait REML routes use it,
    so their standard errors are the same quantity.

    Examples
    --------
    >>> cov = observed_information_covariance(lambda p: -2.0 * p, np.zeros(6), np.ones(2))
    >>> np.allclose(cov, 0.5 * np.eye(6))
    True
    """
    H = np.empty((phi.size, phi.size))
    for j in range(phi.size):
        h = 1e-5 * max(1.0, abs(phi[j]))
        e = np.zeros_like(phi)
        e[j] = h
        H[:, j] = (natural(phi + e) - natural(phi - e)) / (2 * h)
    H = 0.5 * (H + H.T)
    try:
        cov_phi = np.linalg.inv(-H)
    except np.linalg.LinAlgError:
        cov_phi = np.full_like(H, np.nan)
    rows, cols = np.tril_indices(scale.size)
    factor = np.concatenate([scale[rows] * scale[cols]] * 2)
    return cov_phi * np.outer(factor, factor)


def cholesky_from_params(theta: np.ndarray, t: int) -> np.ndarray:
    """Lower-triangular L from (log L_00, …, log L_tt, L_10, L_20, L_21, …) (row-major).

    Examples
    --------
    >>> cholesky_from_params(np.array([0.0, np.log(2.0), 0.5]), 2).tolist()
    [[1.0, 0.0], [0.5, 2.0]]
    """
    L = np.zeros((t, t))
    L[np.diag_indices(t)] = np.exp(theta[:t])
    rows, cols = np.tril_indices(t, -1)
    L[rows, cols] = theta[t:]
    return L


def params_from_cholesky(L: np.ndarray) -> np.ndarray:
    """The inverse of :func:`cholesky_from_params`."""
    t = L.shape[0]
    rows, cols = np.tril_indices(t, -1)
    return np.concatenate([np.log(np.diag(L)), L[rows, cols]])


def scaled_cholesky_grad(dL: np.ndarray, L: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """d f/dθ from d f/dL for L = diag(scale) L*(θ), L* = :func:`cholesky_from_params`.

    L_aa = s_a e^θ_aa, so d/dθ_aa = L_aa d/dL_aa; L_ab = s_a θ_ab, so d/dθ_ab = s_a d/dL_ab.

    Examples
    --------
    >>> L = np.array([[2.0, 0.0], [3.0, 4.0]])
    >>> scaled_cholesky_grad(np.ones((2, 2)), L, np.array([1.0, 2.0])).tolist()
    [2.0, 4.0, 2.0]
    """
    rows, cols = np.tril_indices(L.shape[0], -1)
    return np.concatenate([np.diag(dL) * np.diag(L), dL[rows, cols] * scale[rows]])


def cholesky_param_grad(M: np.ndarray, L: np.ndarray) -> np.ndarray:
    """d f/dθ for f(Σ = L Lᵀ) with d f = tr(M dΣ), θ as in :func:`cholesky_from_params`.

    d f / dL = 2 M L (M symmetric), then :func:`scaled_cholesky_grad` with unit scale.
    """
    return scaled_cholesky_grad(2.0 * M @ L, L, np.ones(L.shape[0]))


@cached_jit
def _factor_from_params(x: np.ndarray, offset: int, t: int, scale: np.ndarray) -> np.ndarray:
    """diag(scale) · L*(θ) with θ = x[offset : offset + t(t+1)/2] (log diagonal first, then
    the strictly lower entries row by row, as :func:`cholesky_from_params`)."""
    L = np.zeros((t, t))
    for a in range(t):
        L[a, a] = scale[a] * math.exp(x[offset + a])
    j = offset + t
    for a in range(1, t):
        for b in range(a):
            L[a, b] = scale[a] * x[j]
            j += 1
    return L


@cached_jit
def log_sds(x: np.ndarray, t: int, scale: np.ndarray) -> np.ndarray:
    """log σ_a of Σ_G (first t) and Σ_E (next t) at the sampler's coordinates x."""
    k = t + t * (t - 1) // 2
    out = np.empty(2 * t)
    for m in range(2):
        L = _factor_from_params(x, m * k, t, scale)
        for a in range(t):
            acc = 0.0
            for b in range(a + 1):
                acc += L[a, b] * L[a, b]
            out[m * t + a] = 0.5 * math.log(acc)
    return out


@cached_jit
def _matrix_prior_terms(L: np.ndarray, coef: np.ndarray, eta: float, dL: np.ndarray) -> float:
    """LKJ(η) and the Jacobian of (log L_aa, L_ab) → (σ, R), and d/dL of them plus of the SD
    priors (``coef`` = d log f(σ_a)/d log σ_a), added into ``dL``; returns the value without
    the SD priors' own values."""
    t = L.shape[0]
    value = 0.0
    for a in range(t):
        sq = 0.0
        for b in range(a + 1):
            sq += L[a, b] * L[a, b]
        log_sigma = 0.5 * math.log(sq)
        exponent = t - a + 1.0
        value += (2.0 * (eta - 1.0) + exponent) * math.log(L[a, a])
        value -= (2.0 * (eta - 1.0) + t) * log_sigma
        c = (coef[a] - 2.0 * (eta - 1.0) - t) / sq
        for b in range(a + 1):
            dL[a, b] += L[a, b] * c
        dL[a, a] += (2.0 * (eta - 1.0) + exponent) / L[a, a]
    return value


@cached_jit
def multitrait_logp(
    x: np.ndarray,
    t: int,
    scale: np.ndarray,
    eigenvalues: np.ndarray,
    base_resid: np.ndarray,
    design: np.ndarray,
    Q: np.ndarray,
    missing_rows: np.ndarray,
    missing_traits: np.ndarray,
    centre: np.ndarray,
    eta_g: float,
    eta_e: float,
    coef: np.ndarray,
    n_null: int = 0,
) -> tuple[float, np.ndarray]:
    """The multi-trait log posterior without the SD priors' values (added by the caller) and
    its full gradient; see :mod:`bayeslmm.engines.bayes.multitrait_density`. ``n_null``:
    rotated rows left out whose data are 0 (:func:`null_rows_loglik`). ``Q[missing_rows[m]]``
    is the rotated unit vector of missing value m's individual (a row of the n × n
    eigenvectors, or of a low-rank rotation's rotated unit columns)."""
    k = t + t * (t - 1) // 2
    grad = np.zeros(x.size)
    LG = _factor_from_params(x, 0, t, scale)
    LE = _factor_from_params(x, k, t, scale)
    G = LG @ LG.T
    E = LE @ LE.T
    n_missing = missing_rows.size
    if n_missing:
        R = base_resid.copy()
        n = R.shape[0]
        for m in range(n_missing):
            a = missing_traits[m]
            y = centre[a] + scale[a] * x[2 * k + m]
            row = missing_rows[m]
            for j in range(n):
                R[j, a] += Q[row, j] * y
    else:
        R = base_resid
    value, MG, ME, _, _, alpha, ok = rotated_loglik_grad(G, E, eigenvalues, R, design, True)
    if not ok:
        return -math.inf, grad
    value += null_rows_loglik(E, n_null, ME)
    if not math.isfinite(value):
        return -math.inf, grad
    dLG = 2.0 * (MG @ LG)
    dLE = 2.0 * (ME @ LE)
    value += _matrix_prior_terms(LG, coef[:t], eta_g, dLG)
    value += _matrix_prior_terms(LE, coef[t:], eta_e, dLE)
    for mat in range(2):
        L = LG if mat == 0 else LE
        dL = dLG if mat == 0 else dLE
        off = mat * k
        for a in range(t):
            grad[off + a] = dL[a, a] * L[a, a]
        j = off + t
        for a in range(1, t):
            for b in range(a):
                grad[j] = dL[a, b] * scale[a]
                j += 1
    for m in range(n_missing):
        a = missing_traits[m]
        row = missing_rows[m]
        acc = 0.0
        for j in range(alpha.shape[0]):
            acc += Q[row, j] * alpha[j, a]
        grad[2 * k + m] = -acc * scale[a]
    return value, grad
