"""REML for multi-trait Gaussian animal models (Σ_G ⊗ K + Σ_E ⊗ I).

Two likelihood routes, one optimiser:

* **complete data** (every trait recorded for every individual): rotate by K = Q S Qᵀ; the
  rows of Qᵀ Y are independent with covariance s_i Σ_G + Σ_E, so one REML evaluation with its
  exact gradient costs O(n t³ + n t² p²) (:func:`~bayeslmm.engines.multitrait_gaussian.
  rotated_loglik_grad`);
* **complete data, low-rank kinship** K = W Wᵀ (:class:`~bayeslmm.kinship.LowRankKinship`,
  route ``"low-rank"``): the rotation by [U₁, Q] of :meth:`~bayeslmm.kinship.LowRankKinship.
  rotation` gives r + k rows (the same kernel, O(n p) to rotate, O((r + k) t³) per
  evaluation) and m rows with zero data whose term is closed form; the GLS correction uses
  the rotated X unchanged (its left-out rows are 0);
* **missing trait values, low-rank kinship** (route ``"low-rank"`` as well): the mixed-model
  equations in marker space, t (p + q) unknowns for p markers and q covariates, built from
  per-missing-pattern sums once, so each evaluation costs O(t³ (p + q)³) whatever n and the
  number of missing values, and never an n × n or N × N matrix (:class:`_LowRankMissing`);
* **sparse pedigree** (:class:`~bayeslmm.kinship.SparsePedigreeKinship`, route
  ``"sparse-pedigree"``): Henderson's mixed-model equations on A⁻¹, any missing-value
  pattern, the same parametrisation and result (:mod:`bayeslmm.engines.reml.
  multitrait_pedigree`);
* **missing trait values, dense kinship**: the rotation no longer diagonalises V, so the
  stacked covariance of the N observed records, V = (Σ_G ⊗ K + Σ_E ⊗ I)[obs, obs], is built
  and factorised densely (O(N³) per evaluation, N ≤ :data:`MAX_DENSE_RECORDS`). Exact, and
  simple to check; EM on the rotated basis would scale further but converges slowly near the
  boundary.

The REML log-likelihood is maximised over the Cholesky factors of Σ_G and Σ_E (log
diagonal, so both stay positive semi-definite) by L-BFGS-B with the analytic gradient, then
polished by Newton steps on a finite-difference Hessian of that gradient; β is profiled by
GLS. Traits are scaled to unit SD inside the optimiser and the estimates scaled back.
Standard errors: the observed information of the natural parameters (vech Σ_G, vech Σ_E),
the Hessian of the REML log-likelihood by central differences of its analytic gradient;
correlations and heritabilities get delta-method SEs in :mod:`bayeslmm.results.multitrait`.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
from scipy import linalg

from bayeslmm.engines.multitrait_gaussian import (
    LOG_2PI,
    cholesky_from_params,
    cholesky_param_grad,
    natural_grad,
    null_rows_loglik,
    observed_information_covariance,
    params_from_cholesky,
    rotated_loglik_grad,
    unvech,
    vech,
)
from bayeslmm.errors import DataError
from bayeslmm.kinship.low_rank import LowRankKinship
from bayeslmm.kinship.pedigree_inverse import SparsePedigreeKinship
from bayeslmm.multitrait_spec import MultiTraitSpec
from bayeslmm.results.multitrait import MultiTraitRemlFit

#: The most observed records (individuals × traits) the dense missing-value route accepts:
#: its V is N × N (N = 4000: 128 MB, ~1 s per evaluation on one core).
MAX_DENSE_RECORDS = 4000


class _Rotated:
    """REML log-likelihood of complete data on the rotated basis (standardised traits).

    ``Q`` None: ``Y`` and ``X`` are already rotated, and ``n_null`` rotated rows whose data
    are 0 were left out (a low-rank kinship's complement, :func:`null_rows_loglik`).
    """

    def __init__(
        self,
        Y: np.ndarray,
        X: np.ndarray,
        eigenvalues: np.ndarray,
        Q: np.ndarray | None,
        n_null: int = 0,
    ):
        n, t = Y.shape
        self.t, self.p = t, X.shape[1]
        self.s = np.ascontiguousarray(eigenvalues, dtype=float)
        self.R = np.ascontiguousarray(Y if Q is None else Q.T @ Y)
        Xr = X if Q is None else Q.T @ X
        self.design = np.ascontiguousarray(np.repeat(Xr[:, None, :], t, axis=1))
        self.n_null = int(n_null)

    def __call__(self, G: np.ndarray, E: np.ndarray) -> tuple[float, Any, Any, Any, Any]:
        value, MG, ME, gamma, Cinv, _, ok = rotated_loglik_grad(
            G, E, self.s, self.R, self.design, False
        )
        if ok and self.n_null:
            value += null_rows_loglik(E, self.n_null, ME)
        return value + 0.5 * self.t * self.p * LOG_2PI, MG, ME, gamma, Cinv


class _Dense:
    """REML log-likelihood of the observed records through the stacked dense V."""

    def __init__(self, Y: np.ndarray, X: np.ndarray, K: np.ndarray):
        n, t = Y.shape
        self.t, self.p = t, X.shape[1]
        self.obs = [np.flatnonzero(~np.isnan(Y[:, a])) for a in range(t)]
        sizes = [o.size for o in self.obs]
        self.start = np.concatenate([[0], np.cumsum(sizes)])
        self.N = int(self.start[-1])
        self.y = np.concatenate([Y[o, a] for a, o in enumerate(self.obs)])
        self.X = linalg.block_diag(*[X[o] for o in self.obs])
        self.Kb = {
            (a, b): K[np.ix_(self.obs[a], self.obs[b])] for a in range(t) for b in range(a + 1)
        }
        # where the same individual holds both traits: the residual covariance's positions
        self.Ib = {}
        for a in range(t):
            for b in range(a + 1):
                _, ia, ib = np.intersect1d(self.obs[a], self.obs[b], return_indices=True)
                self.Ib[(a, b)] = (ia, ib)

    def block(self, a: int, b: int) -> tuple[slice, slice]:
        return slice(self.start[a], self.start[a + 1]), slice(self.start[b], self.start[b + 1])

    def __call__(self, G: np.ndarray, E: np.ndarray) -> tuple[float, Any, Any, Any, Any]:
        t = self.t
        V = np.empty((self.N, self.N))
        for a in range(t):
            for b in range(a + 1):
                ra, rb = self.block(a, b)
                blk = G[a, b] * self.Kb[(a, b)]
                ia, ib = self.Ib[(a, b)]
                blk[ia, ib] += E[a, b]
                V[ra, rb] = blk
                V[rb, ra] = blk.T
        try:
            factor = linalg.cho_factor(V, lower=True, check_finite=False)
        except linalg.LinAlgError:
            return -math.inf, None, None, None, None
        logdet = 2.0 * np.sum(np.log(np.diag(factor[0])))
        Vinv = linalg.cho_solve(factor, np.eye(self.N), check_finite=False)
        VX = Vinv @ self.X
        C = self.X.T @ VX
        try:
            cf = linalg.cho_factor(C, lower=True, check_finite=False)
        except linalg.LinAlgError:
            return -math.inf, None, None, None, None
        Cinv = linalg.cho_solve(cf, np.eye(C.shape[0]), check_finite=False)
        gamma = Cinv @ (VX.T @ self.y)
        alpha = Vinv @ (self.y - self.X @ gamma)
        P = Vinv - VX @ Cinv @ VX.T
        T = P - np.outer(alpha, alpha)
        MG, ME = np.zeros((t, t)), np.zeros((t, t))
        for a in range(t):
            for b in range(a + 1):
                ra, rb = self.block(a, b)
                Tab = T[ra, rb]
                ia, ib = self.Ib[(a, b)]
                MG[a, b] = MG[b, a] = -0.5 * np.sum(Tab * self.Kb[(a, b)])
                ME[a, b] = ME[b, a] = -0.5 * np.sum(Tab[ia, ib])
        value = -0.5 * (
            (self.N - C.shape[0]) * LOG_2PI
            + logdet
            + 2.0 * np.sum(np.log(np.diag(cf[0])))
            + self.y @ alpha
        )
        return value, MG, ME, gamma, Cinv


class _LowRankMissing:
    """REML log-likelihood of the observed records with a low-rank kinship K = W Wᵀ and
    missing trait values, by the mixed-model equations in marker space (Woodbury).

    With v_a ~ N(0, Σ_G ⊗ I_p) marker effects (u_a = W v_a, so Cov(u) = Σ_G ⊗ W Wᵀ) and
    h_i = (w_i, x_i) the individual's marker row and covariates, record (i, a) has mean
    h_iᵀ (v_a, β_a), and the residual covariance is block diagonal over individuals,
    R_i = Σ_E[o_i, o_i] (o_i: the traits recorded on i). Writing v = (L_G ⊗ I) ω with
    ω ~ N(0, I), the equations C = Jᵀ K J + I_ω for s = (ω_a, β_a)_a, trait-major, with
    K = Σ_i H_iᵀ R_i⁻¹ H_i and J the map (ω, β) → (v, β), give (Henderson)

        −2ℓ = (N − q) log 2π + Σ_i log|R_i| + log|C| + yᵀR⁻¹y − ŝᵀ Jᵀ r,

    exactly the REML of the stacked V of the observed records (|V| = |R| |I + …|, and
    |C| carries |XᵀV⁻¹X| as its Schur complement). Individuals sharing a pattern o share
    R_i, so K, r = Σ_i H_iᵀR_i⁻¹y_i and yᵀR⁻¹y come from per-pattern sums of h_i h_iᵀ,
    h_i y_iᵀ and y_i y_iᵀ, formed once (O(n (p + q)²)); each evaluation is one Cholesky
    factorisation and inverse of the t (p + q) square C, O(t³ (p + q)³), whatever n and the
    number of missing values. Gradient (d ℓ = tr(M dΣ)), with D = J C⁻¹ Jᵀ the
    covariance of (v̂, β̂) and P the REML projection:

        M_G = −½ Σ_j [(K − K D K)_(a j),(b j) − ρ_aj ρ_bj],   ρ = r − K ŝ_v  (= Zᵀ P y),
        M_E = −½ Σ_o R_o⁻¹ [n_o R_o − (tr(D_ab S_o) + Σ_i∈o e_i e_iᵀ)] R_o⁻¹,

    j over marker coordinates, S_o = Σ_i∈o h_i h_iᵀ, e_i = y_i − (ŝ_v)ᵀ h_i, R_o⁻¹ the
    zero-padded inverse of Σ_E[o, o]. No Σ_G⁻¹ appears, so a singular Σ_G is fine; an
    indefinite one (the standard errors' difference steps) is factored as L S Lᵀ, S = diag(±1),
    with S ⊗ I in place of I_ω, and evaluated wherever V stays positive definite.
    """

    def __init__(self, Y: np.ndarray, X: np.ndarray, W: np.ndarray):
        n, t = Y.shape
        self.t, self.p = t, X.shape[1]
        self.n_markers = W.shape[1]
        self.m = self.n_markers + self.p  # coordinates per trait: (v_a, β_a)
        observed = ~np.isnan(Y)
        Y0 = np.where(observed, Y, 0.0)
        H = np.concatenate([W, X], axis=1)
        patterns, which = np.unique(observed, axis=0, return_inverse=True)
        self.patterns = []  # (observed traits, count, S_hh, S_hy, S_yy)
        for k, pattern in enumerate(patterns):
            if not pattern.any():
                continue  # an individual without records adds nothing
            rows = np.flatnonzero(which.ravel() == k)
            Hk, Yk = H[rows], Y0[rows]
            self.patterns.append(
                (np.flatnonzero(pattern), rows.size, Hk.T @ Hk, Hk.T @ Yk, Yk.T @ Yk)
            )
        self.N = int(observed.sum())

    def __call__(self, G: np.ndarray, E: np.ndarray) -> tuple[float, Any, Any, Any, Any]:
        t, m, pz = self.t, self.m, self.n_markers
        fail = (-math.inf, None, None, None, None)
        signs = np.ones(t)
        try:
            LG = np.linalg.cholesky(G)
        except np.linalg.LinAlgError:
            # the standard errors' difference steps may leave the cone: Σ_G = L S Lᵀ with
            # S = diag(±1), and the equations' prior block S ⊗ I (V may still be positive
            # definite, as the dense route allows)
            w, U = np.linalg.eigh(G)
            signs = np.where(w < 0.0, -1.0, 1.0)
            LG = U * np.sqrt(np.abs(w))
        K4 = np.zeros((t, m, t, m))
        rhs = np.zeros((t, m))
        logdet_r, quad = 0.0, 0.0
        inverses = []
        for obs, count, Shh, Shy, Syy in self.patterns:
            try:
                factor = linalg.cho_factor(E[np.ix_(obs, obs)], lower=True)
            except linalg.LinAlgError:
                return fail
            Rinv = np.zeros((t, t))
            Rinv[np.ix_(obs, obs)] = linalg.cho_solve(factor, np.eye(obs.size))
            inverses.append(Rinv)
            logdet_r += count * 2.0 * np.sum(np.log(np.diag(factor[0])))
            K4 += Rinv[:, None, :, None] * Shh[None, :, None, :]
            rhs += Rinv @ Shy.T
            quad += np.sum(Rinv * Syy)
        # J: (ω, β) → (v, β); v_a = Σ_b L_G[a, b] ω_b on the marker coordinates
        KJ = K4.copy()
        KJ[:, :, :, :pz] = np.einsum("ajcl,cb->ajbl", K4[:, :, :, :pz], LG)
        JKJ = KJ.copy()
        JKJ[:, :pz] = np.einsum("cjbl,ca->ajbl", KJ[:, :pz], LG)
        C = JKJ.reshape(t * m, t * m)
        prior = np.zeros((t, m))
        prior[:, :pz] = signs[:, None]
        C[np.diag_indices(t * m)] += prior.ravel()
        Jr = rhs.copy()
        Jr[:, :pz] = LG.T @ rhs[:, :pz]
        if signs.min() > 0.0:
            try:
                cf = linalg.cho_factor(C, lower=True, check_finite=False)
            except linalg.LinAlgError:
                return fail
            logdet_c = 2.0 * np.sum(np.log(np.diag(cf[0])))
            Cinv, info = linalg.lapack.dpotri(cf[0], lower=1)  # a third of cho_solve's flops
            if info != 0:
                return fail
            Cinv = np.tril(Cinv) + np.tril(Cinv, -1).T
        else:
            # V is positive definite iff S ⊗ I + ΩᵀR⁻¹Ω (the ω block) has as many negative
            # eigenvalues as S ⊗ I (Haynsworth inertia), and then XᵀV⁻¹X > 0 adds none
            n_negative = pz * int(np.sum(signs < 0.0))
            omega = (np.arange(t)[:, None] * m + np.arange(pz)[None, :]).ravel()
            if np.sum(np.linalg.eigvalsh(C[np.ix_(omega, omega)]) < 0.0) != n_negative:
                return fail
            w, U = np.linalg.eigh(C)
            if np.sum(w < 0.0) != n_negative:
                return fail
            logdet_c = float(np.sum(np.log(np.abs(w))))  # |V| = |R| |S ⊗ I| |C_ωω|
            Cinv = (U / w) @ U.T
        s_w = (Cinv @ Jr.ravel()).reshape(t, m)
        s_v = s_w.copy()
        s_v[:, :pz] = LG @ s_w[:, :pz]
        # D = J C⁻¹ Jᵀ
        D4 = Cinv.reshape(t, m, t, m).copy()
        D4[:, :pz] = np.einsum("ac,cjbl->ajbl", LG, D4[:, :pz])
        D4[:, :, :, :pz] = np.einsum("ajcl,bc->ajbl", D4[:, :, :, :pz], LG)
        value = -0.5 * (
            (self.N - t * self.p) * LOG_2PI + logdet_r + logdet_c + quad - s_w.ravel() @ Jr.ravel()
        )
        K = K4.reshape(t * m, t * m)
        # Σ_j (K D K)_(aj),(bj) over marker coordinates; K D K = (K J) C⁻¹ (K J)ᵀ
        if signs.min() > 0.0:
            rows = KJ.reshape(t, m, t * m)[:, :pz].reshape(t * pz, t * m)
            B = linalg.solve_triangular(cf[0], rows.T, lower=True, check_finite=False)
            B = B.reshape(t * m, t, pz)
            KDK = np.einsum("kaj,kbj->ab", B, B)
        else:
            KD = (K @ D4.reshape(t * m, t * m)).reshape(t, m, t * m)
            KDK = np.einsum("ajk,bjk->ab", KD[:, :pz], K4.reshape(t, m, t * m)[:, :pz])
        rho = (rhs - (K @ s_v.ravel()).reshape(t, m))[:, :pz]
        K_diag = np.einsum("ajbj->ab", K4[:, :pz, :, :pz])
        MG = -0.5 * (K_diag - KDK - rho @ rho.T)
        ME = np.zeros((t, t))
        for (_, count, Shh, Shy, Syy), Rinv in zip(self.patterns, inverses, strict=True):
            trace = np.einsum("ajbk,jk->ab", D4, Shh)
            fitted = s_v @ Shy  # Σ_i (ŝ_vᵀ h_i) y_iᵀ
            resid = Syy - fitted - fitted.T + s_v @ Shh @ s_v.T
            ME -= 0.5 * (count * Rinv - Rinv @ (trace + resid) @ Rinv)
        beta = s_v[:, pz:].ravel()
        sel = (np.arange(t)[:, None] * m + pz + np.arange(self.p)[None, :]).ravel()
        beta_cov = Cinv[np.ix_(sel, sel)]
        return value, 0.5 * (MG + MG.T), 0.5 * (ME + ME.T), beta, beta_cov


def fit_multitrait_reml(
    spec: MultiTraitSpec, max_dense_records: int = MAX_DENSE_RECORDS, _single_thread: bool = False
) -> MultiTraitRemlFit:
    """REML estimates of Σ_G, Σ_E and β for a multi-trait model.

    Parameters
    ----------
    spec : MultiTraitSpec
    max_dense_records : int
        Size limit of the dense kinship's missing-value route (observed records).

    Returns
    -------
    MultiTraitRemlFit

    Raises
    ------
    DataError
        Missing trait values on a dense kinship with more observed records than
        ``max_dense_records`` (a low-rank kinship has no such limit).

    Examples
    --------
    >>> # fit = bl.LMM("mvbind(y1, y2) ~ 1 + (1 | id)", df, kinship={"id": K}).fit("reml")
    """
    from scipy import optimize

    if isinstance(spec.kinship, SparsePedigreeKinship):
        # the pedigree's A⁻¹: Henderson's equations, any number of animals, missing values
        from bayeslmm.engines.reml.multitrait_pedigree import fit_multitrait_pedigree

        return fit_multitrait_pedigree(spec)
    started = time.perf_counter()
    Y, X = np.asarray(spec.Y, dtype=float), np.asarray(spec.X, dtype=float)
    n, t = Y.shape
    p = X.shape[1]
    scale = np.nanstd(Y, axis=0)
    Ys = Y / scale
    if spec.complete and isinstance(spec.kinship, LowRankKinship):
        # SNP-space rotation: r + k rows, and the m rows whose data are 0 in closed form
        rot = spec.kinship.rotation(np.column_stack([X, Ys]))
        route = "low-rank"
        loglik = _Rotated(rot.rotated[:, p:], rot.rotated[:, :p], rot.values, None, rot.n_null)
    elif spec.complete:
        K = spec.kinship
        route = "rotated"
        loglik = _Rotated(Ys, X, K.eigenvalues, K.eigenvectors)
    elif isinstance(spec.kinship, LowRankKinship):
        # missing values on K = W Wᵀ: the equations in marker space, t (p + q) unknowns
        route = "low-rank"
        loglik = _LowRankMissing(Ys, X, np.asarray(spec.kinship.markers, dtype=float))
    else:
        N = int((~np.isnan(Y)).sum())
        if N > max_dense_records:
            raise DataError(
                f"REML with missing trait values builds the covariance of the {N} observed "
                f"records densely, which is limited to {max_dense_records} records "
                f"({N}² doubles). Fit the individuals with every trait recorded (complete "
                "data use the O(n) rotated route at any n), or use method='nuts' "
                "(missing values are sampled, the rotated route stays exact)."
            )
        route = "dense"
        loglik = _Dense(Ys, X, spec.kinship.matrix)
        if N <= 2000 and not _single_thread:
            # below ~2000 records BLAS threads save little, while spinning threads on a busy
            # machine cost several times the work (as Kinship's eigh)
            from threadpoolctl import threadpool_limits

            with threadpool_limits(limits=1, user_api="blas"):
                return fit_multitrait_reml(spec, max_dense_records, _single_thread=True)
    k = t + t * (t - 1) // 2

    def unpack(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        LG = cholesky_from_params(theta[:k], t)
        LE = cholesky_from_params(theta[k:], t)
        return LG, LE, LG @ LG.T, LE @ LE.T

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        if np.any(np.abs(theta[:t]) > 30) or np.any(np.abs(theta[k : k + t]) > 30):
            return 1e300, np.zeros_like(theta)
        LG, LE, G, E = unpack(theta)
        value, MG, ME, _, _ = loglik(G, E)
        if not np.isfinite(value):
            return 1e300, np.zeros_like(theta)
        grad = np.concatenate([cholesky_param_grad(MG, LG), cholesky_param_grad(ME, LE)])
        return -value, -grad

    L0 = np.diag(np.full(t, math.sqrt(0.5)))
    theta = np.concatenate([params_from_cholesky(L0), params_from_cholesky(L0)])
    result = optimize.minimize(
        objective,
        theta,
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-10},
    )
    theta = result.x
    # Newton polish: L-BFGS stops ~1e-6 from the optimum in the variances' units
    for _ in range(8):
        f0, g0 = objective(theta)
        H = np.empty((theta.size, theta.size))
        for j in range(theta.size):
            h = 1e-5 * max(1.0, abs(theta[j]))
            e = np.zeros_like(theta)
            e[j] = h
            H[:, j] = (objective(theta + e)[1] - objective(theta - e)[1]) / (2 * h)
        H = 0.5 * (H + H.T)
        try:
            w = np.linalg.eigvalsh(H)
            if w.min() <= 0:
                break
            step = np.linalg.solve(H, g0)
        except np.linalg.LinAlgError:
            break
        candidate = theta - step
        f1, _ = objective(candidate)
        if not f1 <= f0 + 1e-12:
            break
        theta = candidate
        if np.max(np.abs(step)) < 1e-10:
            break
    LG, LE, G, E = unpack(theta)
    value, MG, ME, gamma, Cinv = loglik(G, E)
    grad_norm = float(np.max(np.abs(objective(theta)[1])))

    # observed information of the natural parameters (standardised units)
    phi = np.concatenate([vech(G), vech(E)])
    m = phi.size // 2

    def natural(phi_: np.ndarray) -> np.ndarray:
        G_, E_ = unvech(phi_[:m], t), unvech(phi_[m:], t)
        _, MG_, ME_, _, _ = loglik(G_, E_)
        if MG_ is None:
            return np.full(phi_.size, np.nan)
        return natural_grad(MG_, ME_)

    cov_phi = observed_information_covariance(natural, phi, scale)
    # back to the traits' units: Σ_ab → Σ_ab sc_a sc_b, β_a → β_a sc_a
    outer = np.outer(scale, scale)
    G, E = G * outer, E * outer
    beta_scale = np.repeat(scale, p)
    beta = gamma * beta_scale
    beta_cov = Cinv * np.outer(beta_scale, beta_scale)
    n_records = (~np.isnan(Y)).sum(axis=0)
    # REML density of the original units: each trait's error contrasts scaled by sc_a
    reml_loglik = float(value - np.sum((n_records - p) * np.log(scale)))
    return MultiTraitRemlFit(
        traits=spec.traits,
        fixed_names=spec.fixed_names,
        genetic=G,
        residual=E,
        covariance=cov_phi,
        beta=beta.reshape(t, p),
        beta_covariance=beta_cov,
        loglik=reml_loglik,
        kinship_scale=spec.kinship_scale,
        n=n,
        n_records=tuple(int(v) for v in n_records),
        route=route,
        converged=bool(grad_norm < 1e-3),
        gradient_max=grad_norm,
        seconds=time.perf_counter() - started,
        formula=spec.formula,
        at_boundary=bool(
            np.min(np.linalg.eigvalsh(G / outer)) < 1e-6
            or np.min(np.linalg.eigvalsh(E / outer)) < 1e-6
        ),
        spec=spec,
    )
