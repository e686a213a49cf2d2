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
  the rotated X unchanged (its left-out rows are 0). Missing values are refused there;
* **sparse pedigree** (:class:`~bayeslmm.kinship.SparsePedigreeKinship`, route
  ``"sparse-pedigree"``): Henderson's mixed-model equations on A⁻¹, any missing-value
  pattern, the same parametrisation and result (:mod:`bayeslmm.engines.reml.
  multitrait_pedigree`);
* **missing trait values**: the rotation no longer diagonalises V, so the stacked covariance
  of the N observed records, V = (Σ_G ⊗ K + Σ_E ⊗ I)[obs, obs], is built and factorised
  densely (O(N³) per evaluation, N ≤ :data:`MAX_DENSE_RECORDS`). Exact, and simple to check;
  EM on the rotated basis would scale further but converges slowly near the boundary.

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


def fit_multitrait_reml(
    spec: MultiTraitSpec, max_dense_records: int = MAX_DENSE_RECORDS, _single_thread: bool = False
) -> MultiTraitRemlFit:
    """REML estimates of Σ_G, Σ_E and β for a multi-trait model.

    Parameters
    ----------
    spec : MultiTraitSpec
    max_dense_records : int
        Size limit of the missing-value route (observed records).

    Returns
    -------
    MultiTraitRemlFit

    Raises
    ------
    DataError
        Missing trait values with more observed records than ``max_dense_records``.

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
        raise DataError(
            f"{int(np.isnan(Y).sum())} trait values are missing, and the SNP-space low-rank "
            f"kinship '{spec.kinship.name}' (bayeslmm.grm(..., low_rank=True)) carries "
            "complete data only. Impute the missing values, drop the individuals lacking a "
            "trait, or pass the dense kinship (bayeslmm.grm(dosages), or "
            "K.to_dense()) to use the dense missing-value route."
        )
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
    )
