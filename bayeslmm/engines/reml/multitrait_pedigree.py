"""Multi-trait REML of the animal model on a pedigree's sparse A⁻¹ (Henderson's equations).

For t traits, records on n individuals (trait values may be missing) and a pedigree of N
animals (ancestors without records included), the model Y = X Bᵀ + Z U + E with
vec(U) ~ N(0, Σ_G ⊗ A) and e_i ~ N(0, Σ_E[o_i, o_i]) (o_i: the traits recorded on
individual i) has the mixed-model equations C s = r with unknowns s = (β, u), the animal
effects ordered animal-major (animal j, trait a at j t + a) and

    C = [ XᵀR⁻¹X   XᵀR⁻¹Z                ]        G⁻¹ = A⁻¹ ⊗ Σ_G⁻¹ (animal-major),
        [ ZᵀR⁻¹X   ZᵀR⁻¹Z + A⁻¹ ⊗ Σ_G⁻¹  ],       R⁻¹ = ⊕_i Σ_E[o_i, o_i]⁻¹ (zero-padded).

Missing trait values only change an individual's block of R⁻¹: this is how large pedigrees
carry them, without the stacked covariance V of the observed records. With C_uu the animal
block (as sparse as A⁻¹ ⊗ 1_t 1_tᵀ), M = C_uu⁻¹ C_ux and S = C_xx − C_xuM (= XᵀV⁻¹X), the
REML log-likelihood is (Henderson's determinant identity)

    −2ℓ = (N_obs − q) log 2π + Σ_i log|Σ_E[o_i, o_i]| + N log|Σ_G| + t log|A|
          + log|C_uu| + log|S| + yᵀR⁻¹y − ŝᵀr,

q = t p, log|A| = Σ_j log d_j from the Mendelian-sampling variances (closed form; kept, so
the value equals the dense multi-trait REML's exactly). One numeric sparse Cholesky
factorisation of C_uu per evaluation, on a fill-reducing ordering analysed once (CHOLMOD's
AMD when scikit-sparse is installed, else SciPy's SuperLU with the ordering of its first
factorisation fixed).

**β as a random block.** With ``beta_prior = (μ, D)`` (β ~ N(μ, D²), trait-major) the
equations gain D⁻² in C_xx and D⁻²μ in r_x, and the value is the *marginal* likelihood
log p(y | Σ_G, Σ_E) with β integrated out: N_obs log 2π replaces (N_obs − q) log 2π, and
log|D²| + μᵀD⁻²μ join the sum. The gradient below is unchanged (C⁻¹ is that of the
augmented equations); :mod:`bayeslmm.engines.bayes.multitrait_pedigree` samples from it.

**Gradient, analytic.** With C⁻¹'s animal block C^uu = C_uu⁻¹ + M S⁻¹ Mᵀ,

    ∂ℓ/∂Σ_G = −½ [N Σ_G⁻¹ − Σ_G⁻¹ (Ûᵀ A⁻¹ Û + T) Σ_G⁻¹],   T_ab = Σ_jk A⁻¹_jk C^uu_(ja),(kb),
    ∂ℓ/∂Σ_E = −½ Σ_i (P_ii − α_i α_iᵀ),   P_ii = R_i⁻¹ − R_i⁻¹ W_i C⁻¹ W_iᵀ R_i⁻¹,  α = P y,

so it needs C_uu⁻¹ only on the pattern of A⁻¹ ⊗ 1 1ᵀ: the *selected inverse* of the factor
(Takahashi's recurrences on the pattern of L, :func:`_selected_inverse`, compiled), plus
the rank-q correction M S⁻¹ Mᵀ in closed form.

**Optimiser.** The same parametrisation as the dense multi-trait REML
(:mod:`bayeslmm.engines.reml.multitrait`): the Cholesky factors of Σ_G and Σ_E (log
diagonal), traits scaled to unit SD inside. Steps are Fisher scoring with the *average
information* (AI-REML: AI_kl = ½ q_kᵀ P q_l, q_k = ∂V/∂θ_k P y, all q_k by one multi-column
solve with the factor) carried to the Cholesky coordinates, with step halving; L-BFGS-B on
the analytic gradient takes over if scoring stalls (a boundary). Standard errors are the
inverse observed information of (vech Σ_G, vech Σ_E) by central differences of the
analytic gradient, as on the dense route, so :class:`~bayeslmm.results.multitrait.
MultiTraitRemlFit`'s delta-method r_g, r_e and h² are unchanged.

**Breeding values.** The solution û of every pedigree animal per trait, with prediction
error variances PEV = diag(C^uu) (from the same selected inverse, no extra solves), in
``fit.breeding_values``.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pandas as pd
import scipy.linalg as sla
import scipy.sparse as sp

from bayeslmm.engines.multitrait_gaussian import (
    LOG_2PI,
    cholesky_from_params,
    cholesky_param_grad,
    natural_grad,
    observed_information_covariance,
    params_from_cholesky,
    unvech,
    vech,
)
from bayeslmm.engines.numba_cache import cached_jit
from bayeslmm.engines.reml.sparse_pedigree import _SparseCholesky
from bayeslmm.kinship.pedigree_inverse import SparsePedigreeKinship
from bayeslmm.multitrait_spec import MultiTraitSpec
from bayeslmm.results.multitrait import MultiTraitRemlFit

__all__ = ["ROUTE", "fit_multitrait_pedigree"]

#: The route's name in ``MultiTraitRemlFit.route``.
ROUTE = "sparse-pedigree"

#: Lower bound of the log Cholesky diagonals (standardised traits): a conditional variance
#: of at least e^−14 ≈ 8·10⁻⁷ of the trait's. The equations hold Σ_G⁻¹, so a nearly
#: singular Σ_G (r_g → ±1, h² → 0) makes them ill-conditioned and the gradient inexact; the
#: dense route, which holds Σ_G itself, reports such fits as boundary fits the same way.
LOG_DIAGONAL_FLOOR = -7.0


@cached_jit
def _supernodes(Lp: np.ndarray, Li: np.ndarray) -> np.ndarray:
    """Starts of the fundamental supernodes of L (and n): column j + 1 joins j's when
    struct(j) = {j + 1} ∪ struct(j + 1), i.e. j + 1 is j's first row below the diagonal
    and its column is one entry shorter."""
    n = Lp.size - 1
    starts = [0]
    for j in range(n - 1):
        if not (Lp[j + 1] - Lp[j] == Lp[j + 2] - Lp[j + 1] + 1 and Li[Lp[j] + 1] == j + 1):
            starts.append(j + 1)
    starts.append(n)
    return np.array(starts, dtype=np.int64)


@cached_jit
def _selected_inverse(Lp: np.ndarray, Li: np.ndarray, Lx: np.ndarray) -> np.ndarray:
    """C⁻¹ on the pattern of its lower Cholesky factor L (CSC, sorted, diagonal first).

    Takahashi's recurrences by supernodes, the last first. For a supernode of columns J
    whose rows below it are R, with Y = L_RJ L_JJ⁻¹,

        Z_RJ = −Z_RR Y,    Z_JJ = L_JJ⁻ᵀ L_JJ⁻¹ − Yᵀ Z_RJ,

    where Z_RR (rows and columns after J) is already computed and lies on the pattern
    (the factor's pattern is closed under elimination): it is gathered into a dense block,
    and the products are dense (BLAS). Work: about that of the factorisation.
    """
    n = Lp.size - 1
    Zx = np.zeros_like(Lx)
    slot = np.full(n, -1, dtype=np.int64)
    starts = _supernodes(Lp, Li)
    for sn in range(starts.size - 2, -1, -1):
        f, e = starts[sn], starts[sn + 1]
        s = e - f
        R = Li[Lp[f] + s : Lp[f + 1]]
        r = R.size
        LJJ = np.zeros((s, s))
        LRJ = np.zeros((r, s))
        for c in range(s):
            base = Lp[f + c]
            for idx in range(s - c):
                LJJ[c + idx, c] = Lx[base + idx]
            for idx in range(r):
                LRJ[idx, c] = Lx[base + s - c + idx]
        LJJinv = np.linalg.inv(LJJ)
        Y = np.ascontiguousarray(LRJ @ LJJinv)
        for a in range(r):
            slot[R[a]] = a
        ZRR = np.zeros((r, r))
        found = 0
        for a in range(r):
            col = R[a]
            for entry in range(Lp[col], Lp[col + 1]):
                b = slot[Li[entry]]
                if b >= 0:
                    ZRR[b, a] = Zx[entry]
                    ZRR[a, b] = Zx[entry]
                    found += 1
        if found != r * (r + 1) // 2:
            raise RuntimeError("the factor's pattern is not closed under elimination")
        ZRJ = -(ZRR @ Y)
        ZJJ = LJJinv.T @ LJJinv - Y.T @ ZRJ
        for c in range(s):
            base = Lp[f + c]
            for idx in range(s - c):
                Zx[base + idx] = ZJJ[c + idx, c]
            for idx in range(r):
                Zx[base + s - c + idx] = ZRJ[idx, c]
        for a in range(r):
            slot[R[a]] = -1
    return Zx


class _Factor(_SparseCholesky):
    """The sparse Cholesky backends of the single-trait route, plus the factor itself
    (L with C[perm][:, perm] = L Lᵀ) for the selected inverse."""

    def factor(self, C: sp.csc_matrix) -> None:
        try:
            super().factor(C)
        except np.linalg.LinAlgError:
            raise
        except Exception as err:  # CHOLMOD's own error classes (not positive definite)
            raise np.linalg.LinAlgError(str(err)) from err

    def lower(self) -> tuple[sp.csc_matrix, np.ndarray]:
        if self.backend == "cholmod":
            L = self._current.L()
            return sp.csc_matrix(L), np.asarray(self._current.P())
        lu = self._current  # C[p][:, p] = L_u U with U = D L_uᵀ (no pivoting)
        u = lu.U.diagonal()
        if np.any(u <= 0.0):
            raise np.linalg.LinAlgError("the mixed-model equations are not positive definite")
        L = (sp.csc_matrix(lu.L) @ sp.diags(np.sqrt(u))).tocsc()
        L.sort_indices()
        if self._structure is None:
            p = self._perm
            self._structure = sp.tril(self._first_pattern[p][:, p]).tocsc()
            self._structure.sort_indices()
        cached = self._closure
        if not (
            cached is not None
            and np.array_equal(cached[0], L.indptr)
            and np.array_equal(cached[1], L.indices)
        ):
            cached = (L.indptr.copy(), L.indices.copy(), *_closed_pattern(L, self._structure))
            self._closure = cached
        indptr, indices, where = cached[2:]
        data = np.zeros(indices.size)
        data[where] = L.data
        return sp.csc_matrix((data, indices, indptr), shape=L.shape), self._perm

    def __init__(self, first: sp.csc_matrix) -> None:
        super().__init__(first)
        # the equations' structural pattern (entries whose value is 0 at the start included)
        self._first_pattern = sp.csc_matrix(
            (np.ones(first.indices.size), first.indices, first.indptr), shape=first.shape
        )
        self._structure: sp.csc_matrix | None = None
        self._closure: tuple[np.ndarray, ...] | None = None


def _closed_pattern(L: sp.csc_matrix, structure: sp.csc_matrix) -> tuple[np.ndarray, ...]:
    """The pattern of the symbolic factorisation of ``structure`` (lower, permuted) as
    (indptr, indices), and where L's entries lie in it. SuperLU leaves out entries whose
    value is an exact zero, which the selected inverse needs (struct(j) minus its first row
    lies in that row's column)."""
    n = L.shape[0]
    cols = [
        np.union1d(
            L.indices[L.indptr[j] : L.indptr[j + 1]],
            structure.indices[structure.indptr[j] : structure.indptr[j + 1]],
        )
        for j in range(n)
    ]
    for j in range(n):
        below = cols[j][1:]
        if below.size:
            parent = below[0]
            cols[parent] = np.union1d(cols[parent], below)
    indptr = np.concatenate([[0], np.cumsum([c.size for c in cols])]).astype(np.int64)
    indices = np.concatenate(cols).astype(np.int64)
    keys = np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr)) * n + indices
    old = np.repeat(np.arange(n, dtype=np.int64), np.diff(L.indptr)) * n + L.indices
    return indptr, indices, np.searchsorted(keys, old)


class _PedigreeEquations:
    """The multi-trait mixed-model equations on A⁻¹ for standardised traits.

    Calling it with (Σ_G, Σ_E) gives (value, M_G, M_E, γ̂, C⁻¹_γ) as the dense route's
    likelihoods do (M with d ℓ = tr(M dΣ)); :meth:`evaluate` gives more.
    """

    def __init__(
        self,
        Y: np.ndarray,
        X: np.ndarray,
        kin: SparsePedigreeKinship,
        beta_prior: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        n, t = Y.shape
        N = kin.n_pedigree
        self.n, self.t, self.p, self.N = n, t, X.shape[1], N
        self.q = t * self.p
        # β as a random block (the posterior's marginal likelihood): prior means and SDs in
        # the equations' order (trait-major, β_(a, k) at a p + k); None: β fixed (REML)
        self.beta_prior = beta_prior
        if beta_prior is not None:
            mean, sd = (np.asarray(v, dtype=float).ravel() for v in beta_prior)
            if mean.size != self.q or sd.size != self.q or not np.all(sd > 0):
                raise ValueError("beta_prior needs t p means and t p positive SDs")
            self.beta_prior = (mean, sd)
        self.X = np.ascontiguousarray(X, dtype=float)
        self.observed = ~np.isnan(Y)
        self.Y0 = np.where(self.observed, Y, 0.0)
        self.n_obs = int(self.observed.sum())
        self.pos = np.asarray(kin.positions, dtype=np.int64)
        # missing-value patterns: Σ_E[o, o]⁻¹ once per pattern
        self.patterns, self.pattern_of = np.unique(self.observed, axis=0, return_inverse=True)
        self.pattern_of = self.pattern_of.ravel()
        self.pattern_count = np.bincount(self.pattern_of, minlength=len(self.patterns))
        Ainv = kin.inverse.tocsr()
        self.Ainv = Ainv
        self.logdet_A = float(np.sum(np.log(kin.mendelian_variances)))
        # the animal block's pattern, A⁻¹ ⊗ 1 1ᵀ animal-major, and each entry's A⁻¹ value
        # and trait pair; recorded animals' diagonal blocks take R_i⁻¹ on top
        pattern = sp.kron(Ainv, np.ones((t, t)), format="csc")
        pattern.sort_indices()
        self.pattern = pattern
        self.ainv_value = pattern.data.copy()
        rows = pattern.indices.astype(np.int64)
        cols = np.repeat(np.arange(N * t, dtype=np.int64), np.diff(pattern.indptr))
        self.trait_pair = (rows % t) * t + cols % t
        self.entry_rows, self.entry_cols = rows, cols
        keys = cols * (N * t) + rows
        a, b = np.meshgrid(np.arange(t), np.arange(t), indexing="ij")
        block_r = np.arange(N)[:, None, None] * t + a[None]  # (N, t, t): row (j, a)
        block_c = np.arange(N)[:, None, None] * t + b[None]  # column (j, b)
        self.block_entry = np.searchsorted(keys, block_c * (N * t) + block_r)  # (N, t, t)
        self.chol = _Factor(self._animal_block(np.eye(t), np.eye(t)))
        self._lookup_key: tuple | None = None
        self.n_factorizations = 0
        self.n_selected_inverses = 0

    # -- building blocks ---------------------------------------------------------------
    def _residual_inverse(
        self, E: np.ndarray, LE: np.ndarray | None = None
    ) -> tuple[np.ndarray, float]:
        """R_i⁻¹ (n × t × t, zero rows and columns at missing traits) and Σ_i log|R_i|;
        ``LE``, Σ_E's Cholesky factor, serves the complete records (exact near a boundary)."""
        t = self.t
        per_pattern = np.zeros((len(self.patterns), t, t))
        logdet = 0.0
        for k, obs in enumerate(self.patterns):
            idx = np.flatnonzero(obs)
            sub = E[np.ix_(idx, idx)]
            # LinAlgError when Σ_E is not positive definite
            L = LE if LE is not None and idx.size == t else np.linalg.cholesky(sub)
            logdet += self.pattern_count[k] * 2.0 * float(np.sum(np.log(np.diag(L))))
            per_pattern[k][np.ix_(idx, idx)] = sla.cho_solve((L, True), np.eye(idx.size))
        return per_pattern[self.pattern_of], logdet

    def _animal_block(self, Ginv: np.ndarray, Rinv: np.ndarray) -> sp.csc_matrix:
        """C_uu = ZᵀR⁻¹Z + A⁻¹ ⊗ Σ_G⁻¹ on the fixed pattern."""
        data = self.ainv_value * Ginv.ravel()[self.trait_pair]
        if Rinv.ndim == 3:
            np.add.at(data, self.block_entry[self.pos].ravel(), Rinv.ravel())
        C = sp.csc_matrix(
            (data, self.pattern.indices, self.pattern.indptr), shape=self.pattern.shape
        )
        return C

    def _entry_index(self, L: sp.csc_matrix, perm: np.ndarray) -> np.ndarray:
        """Position in L's data of every entry of the animal block's pattern (C⁻¹ is
        symmetric: the entry (r, c) is read at row max, column min of the permuted
        coordinates). Cached while L's pattern stays the same."""
        key = (L.indptr.size, L.indices.size)
        if (
            self._lookup_key is not None
            and self._lookup_key[0] == key
            and np.array_equal(self._lookup_key[1], L.indptr)
            and np.array_equal(self._lookup_key[2], L.indices)
        ):
            return self._lookup_key[3]
        n = L.shape[0]
        inverse_perm = np.empty(n, dtype=np.int64)
        inverse_perm[perm] = np.arange(n)
        r, c = inverse_perm[self.entry_rows], inverse_perm[self.entry_cols]
        lo, hi = np.minimum(r, c), np.maximum(r, c)
        lkeys = np.repeat(np.arange(n, dtype=np.int64), np.diff(L.indptr)) * n + L.indices
        index = np.searchsorted(lkeys, lo * n + hi)
        if np.any(lkeys[np.minimum(index, lkeys.size - 1)] != lo * n + hi):
            raise RuntimeError("the factor's pattern misses entries of the equations")
        self._lookup_key = (key, L.indptr.copy(), L.indices.copy(), index)
        return index

    # -- one evaluation ------------------------------------------------------------------
    def evaluate(
        self,
        G: np.ndarray,
        E: np.ndarray,
        gradient: bool = True,
        factors: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> dict[str, Any]:
        """The REML log-likelihood (value) at (Σ_G, Σ_E), and with ``gradient`` its
        gradient (MG, ME), the selected inverse and what the AI matrix needs. ``factors``:
        the Cholesky factors of Σ_G and Σ_E when known (the optimiser's coordinates), which
        keep Σ⁻¹ and log|Σ| exact where Σ is nearly singular."""
        t, p, q, N, n = self.t, self.p, self.q, self.N, self.n
        LG, LE = factors if factors is not None else (np.linalg.cholesky(G), None)
        if not np.all(np.diag(LG) > 0):
            raise np.linalg.LinAlgError("Σ_G is not positive definite")
        Ginv = sla.cho_solve((LG, True), np.eye(t))
        logdet_G = 2.0 * float(np.sum(np.log(np.diag(LG))))
        Rinv, logdet_R = self._residual_inverse(E, LE)
        X, Y0, pos = self.X, self.Y0, self.pos
        Ry = np.einsum("iab,ib->ia", Rinv, Y0)  # R⁻¹y per record
        Cxx = np.einsum("ik,iab,il->akbl", X, Rinv, X).reshape(q, q)
        rx = np.einsum("ik,ia->ak", X, Ry).reshape(q)
        if self.beta_prior is not None:  # β ~ N(μ, D²): D⁻² joins C_xx, D⁻²μ the right side
            prior_mean, prior_sd = self.beta_prior
            Cxx[np.diag_indices(q)] += prior_sd**-2
            rx = rx + prior_mean / prior_sd**2
        # C_ux: animal pos_i, trait b; column (a, k): R_i⁻¹[b, a] X_ik
        Cux = np.zeros((N, t, q))
        Cux[pos] = np.einsum("iba,ik->ibak", Rinv, X).reshape(n, t, q)
        Cux = Cux.reshape(N * t, q)
        ru = np.zeros((N, t))
        ru[pos] = Ry
        ru = ru.ravel()
        self.chol.factor(self._animal_block(Ginv, Rinv))
        self.n_factorizations += 1
        logdet_Cuu = self.chol.logdet()
        sol = self.chol.solve(np.column_stack([Cux, ru]))
        M, m = sol[:, :q], sol[:, q]
        S = Cxx - Cux.T @ M
        S = 0.5 * (S + S.T)
        S_chol = sla.cho_factor(S, lower=True)
        beta = sla.cho_solve(S_chol, rx - Cux.T @ m)
        u = m - M @ beta
        ypy = float(np.sum(Ry * Y0)) - float(beta @ rx) - float(u @ ru)
        logdet_S = 2.0 * float(np.sum(np.log(np.diag(S_chol[0]))))
        if self.beta_prior is None:
            n_normal, prior_terms = self.n_obs - q, 0.0
        else:  # the marginal likelihood: + log|D²| + μᵀD⁻²μ, all N_obs records normal
            prior_mean, prior_sd = self.beta_prior
            n_normal = self.n_obs
            prior_terms = 2.0 * float(np.sum(np.log(prior_sd))) + float(
                np.sum((prior_mean / prior_sd) ** 2)
            )
        value = -0.5 * (
            n_normal * LOG_2PI
            + prior_terms
            + logdet_R
            + N * logdet_G
            + t * self.logdet_A
            + logdet_Cuu
            + logdet_S
            + ypy
        )
        out: dict[str, Any] = {
            "value": value,
            "beta": beta,
            "S_chol": S_chol,
            "u": u.reshape(N, t),
            "M": M,
            "Rinv": Rinv,
            "Ginv": Ginv,
        }
        fitted = (X @ beta.reshape(t, p).T) + out["u"][pos]
        out["alpha"] = np.einsum("iab,ib->ia", Rinv, np.where(self.observed, Y0 - fitted, 0.0))
        out["factorization"] = self.n_factorizations
        if gradient:
            self.add_gradient(out)
        return out

    def add_gradient(self, out: dict[str, Any]) -> None:
        """Add the gradient (MG, ME), S⁻¹ and C^uu's diagonal blocks to an evaluation; the
        factor must still be that evaluation's."""
        if out["factorization"] != self.n_factorizations:
            raise RuntimeError("the factor was replaced since this evaluation")
        t, p, q, N = self.t, self.p, self.q, self.N
        X, pos, M, Rinv = self.X, self.pos, out["M"], out["Rinv"]
        Ginv, S_chol = out["Ginv"], out["S_chol"]
        Sinv = sla.cho_solve(S_chol, np.eye(q))
        L, perm = self.chol.lower()
        Z = _selected_inverse(
            L.indptr.astype(np.int64), L.indices.astype(np.int64), L.data.astype(float)
        )
        self.n_selected_inverses += 1
        selected = Z[self._entry_index(L, perm)]  # C_uu⁻¹ on the pattern of A⁻¹ ⊗ 1 1ᵀ
        Mr = M.reshape(N, t, q)
        AM = np.asarray(self.Ainv @ M.reshape(N, t * q)).reshape(N, t, q)
        T = np.bincount(
            self.trait_pair, weights=self.ainv_value * selected, minlength=t * t
        ).reshape(t, t)
        T += np.einsum("iak,kl,ibl->ab", Mr, Sinv, AM)
        U = out["u"]
        UAU = U.T @ np.asarray(self.Ainv @ U)
        inner = Ginv @ (T + UAU) @ Ginv
        MG = -0.5 * (N * Ginv - inner)
        # C^uu diagonal blocks of every animal (PEVs), then W_i C⁻¹ W_iᵀ of the records
        MS = (M @ Sinv).reshape(N, t, t, p)  # animal, trait b; column (a, k)
        blocks = selected[self.block_entry] + np.einsum("iak,kl,ibl->iab", Mr, Sinv, Mr)
        Sinv4 = Sinv.reshape(t, p, t, p)
        XC = -np.einsum("ik,ibak->iab", X, MS[pos])
        H = np.einsum("ik,akbl,il->iab", X, Sinv4, X) + XC + XC.transpose(0, 2, 1) + blocks[pos]
        Pii = Rinv - Rinv @ H @ Rinv
        alpha = out["alpha"]
        ME = -0.5 * (Pii.sum(axis=0) - alpha.T @ alpha)
        out.update(MG=0.5 * (MG + MG.T), ME=0.5 * (ME + ME.T), Sinv=Sinv, blocks=blocks)

    def __call__(self, G: np.ndarray, E: np.ndarray) -> tuple[float, Any, Any, Any, Any]:
        try:
            at = self.evaluate(G, E)
        except np.linalg.LinAlgError:
            return -math.inf, None, None, None, None
        return at["value"], at["MG"], at["ME"], at["beta"], at["Sinv"]

    # -- average information -------------------------------------------------------------
    def average_information(self, at: dict[str, Any], G: np.ndarray) -> np.ndarray:
        """AI over θ = (vech Σ_G, vech Σ_E): AI_kl = ½ q_kᵀ P q_l, q_k = ∂V/∂θ_k P y."""
        t, p, q, N = self.t, self.p, self.q, self.N
        pos, X, Rinv, obs = self.pos, self.X, at["Rinv"], self.observed
        Uh = at["u"] @ at["Ginv"]  # A Zᵀ P y as N × t: Û Σ_G⁻¹
        alpha = at["alpha"]
        rows, cols = np.tril_indices(t)
        work = []
        for which in (0, 1):
            for a, b in zip(rows.tolist(), cols.tolist(), strict=True):
                D = np.zeros((t, t))
                D[a, b] = D[b, a] = 1.0
                v = (Uh[pos] if which == 0 else alpha) @ D
                work.append(np.where(obs, v, 0.0))
        Qk = np.stack(work, axis=-1)  # n × t × k
        k = Qk.shape[-1]
        RQ = np.einsum("iab,ibk->iak", Rinv, Qk)
        rx = np.einsum("il,iak->alk", X, RQ).reshape(q, k)
        ru = np.zeros((N, t, k))
        ru[pos] = RQ
        ru = ru.reshape(N * t, k)
        bu0 = self.chol.solve(ru)
        M = at["M"]
        # C s = r with s = (b_x, b_u): b_x = S⁻¹ (r_x − C_xu C_uu⁻¹ r_u), b_u = C_uu⁻¹ r_u − M b_x
        bx = sla.cho_solve(at["S_chol"], rx - self._cxu_times(at, bu0))
        bu = (bu0 - M @ bx).reshape(N, t, k)
        Wb = np.einsum("il,alk->iak", X, bx.reshape(t, p, k)) + bu[pos]
        PQ = np.einsum("iab,ibk->iak", Rinv, Qk - Wb)
        AI = 0.5 * np.einsum("iak,ial->kl", Qk, PQ)
        return 0.5 * (AI + AI.T)

    def _cxu_times(self, at: dict[str, Any], V: np.ndarray) -> np.ndarray:
        """C_xu V for V with N t rows: Σ_i X_i-blocks of R_i⁻¹ V[pos_i]."""
        t, p, N = self.t, self.p, self.N
        Vr = V.reshape(N, t, -1)[self.pos]
        RV = np.einsum("iab,ibk->iak", at["Rinv"], Vr)
        return np.einsum("il,iak->alk", self.X, RV).reshape(t * p, -1)


def _natural_jacobian(L: np.ndarray) -> np.ndarray:
    """d vech(L Lᵀ) / dψ, ψ = (log L_aa, L_ab) as :func:`cholesky_from_params`."""
    t = L.shape[0]
    rows, cols = np.tril_indices(t)
    strict_r, strict_c = np.tril_indices(t, -1)
    columns = []
    for j in range(t + strict_r.size):
        dL = np.zeros((t, t))
        if j < t:
            dL[j, j] = L[j, j]
        else:
            dL[strict_r[j - t], strict_c[j - t]] = 1.0
        dS = dL @ L.T + L @ dL.T
        columns.append(dS[rows, cols])
    return np.column_stack(columns)


def fit_multitrait_pedigree(spec: MultiTraitSpec, max_scoring: int = 50) -> MultiTraitRemlFit:
    """REML estimates of Σ_G, Σ_E and β of a multi-trait animal model on a sparse pedigree.

    Parameters
    ----------
    spec : MultiTraitSpec
        Its kinship a :class:`~bayeslmm.kinship.SparsePedigreeKinship` (a view on the
        recorded animals of the whole pedigree).
    max_scoring : int
        Most AI (Fisher-scoring) steps before L-BFGS-B takes over.

    Returns
    -------
    MultiTraitRemlFit
        ``route == "sparse-pedigree"``; ``breeding_values`` holds the EBV and PEV of every
        pedigree animal per trait, ``timing`` the evaluation counts.

    Examples
    --------
    >>> import numpy as np, pandas as pd, bayeslmm as bl
    >>> rng = np.random.default_rng(0)
    >>> ped = pd.DataFrame({"id": range(1, 301), "sire": [0] * 20 + list(rng.integers(1, 11, 280)),
    ...                     "dam": [0] * 20 + list(rng.integers(11, 21, 280))})
    >>> df = pd.DataFrame({"id": range(21, 301), "y1": rng.normal(size=280),
    ...                    "y2": rng.normal(size=280)})
    >>> A = bl.pedigree_relationship(ped, sparse=True)
    >>> fit = bl.LMM("mvbind(y1, y2) ~ 1 + (1 | id)", df, kinship={"id": A}).fit(method="reml")
    >>> fit.route, fit.breeding_values.shape
    ('sparse-pedigree', (300, 4))
    """
    from scipy import optimize

    started = time.perf_counter()
    Y, X = np.asarray(spec.Y, dtype=float), np.asarray(spec.X, dtype=float)
    n, t = Y.shape
    p = X.shape[1]
    scale = np.nanstd(Y, axis=0)
    eq = _PedigreeEquations(Y / scale, X, spec.kinship)
    t_setup = time.perf_counter() - started
    k = t + t * (t - 1) // 2

    def unpack(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        LG = cholesky_from_params(theta[:k], t)
        LE = cholesky_from_params(theta[k:], t)
        return LG, LE, LG @ LG.T, LE @ LE.T

    def evaluate(theta: np.ndarray, gradient: bool) -> dict[str, Any] | None:
        if np.any(np.abs(theta[:t]) > 30) or np.any(np.abs(theta[k : k + t]) > 30):
            return None
        LG, LE, G, E = unpack(theta)
        try:
            at = eq.evaluate(G, E, gradient=gradient, factors=(LG, LE))
        except np.linalg.LinAlgError:
            return None
        return at if np.isfinite(at["value"]) else None

    def psi_grad(theta: np.ndarray, at: dict[str, Any]) -> np.ndarray:
        LG, LE, _, _ = unpack(theta)
        return np.concatenate(
            [cholesky_param_grad(at["MG"], LG), cholesky_param_grad(at["ME"], LE)]
        )

    # AI-REML: Fisher scoring in the Cholesky coordinates ψ, info = Jᵀ AI J
    L0 = np.diag(np.full(t, math.sqrt(0.5)))
    theta = np.concatenate([params_from_cholesky(L0), params_from_cholesky(L0)])
    at = evaluate(theta, gradient=True)
    if at is None:  # pragma: no cover - Σ = I/2 gives positive definite equations
        raise np.linalg.LinAlgError("the mixed-model equations are not positive definite")
    diagonal = np.r_[np.arange(t), k + np.arange(t)]
    n_steps, scoring_converged = 0, False
    for _ in range(max_scoring):
        LG, LE, G, _ = unpack(theta)
        grad = psi_grad(theta, at)
        J = sla.block_diag(_natural_jacobian(LG), _natural_jacobian(LE))
        info = J.T @ eq.average_information(at, G) @ J
        try:
            step = np.linalg.solve(info + 1e-12 * np.eye(info.shape[0]), grad)
        except np.linalg.LinAlgError:
            break
        gain = float(grad @ step)  # twice the predicted increase of ℓ
        if not gain > 1e-12:  # the analytic gradient is ~0: at the optimum
            scoring_converged = True
            break
        # a step may not lower ℓ by more than its rounding (differences of large sums)
        tolerance = 1e-10 * max(1.0, abs(at["value"]))
        accepted = None
        for halving in range(30):
            candidate = theta + step * 0.5**halving
            if np.min(candidate[diagonal]) < LOG_DIAGONAL_FLOOR:
                break  # heading for a boundary: the bounded quasi-Newton below
            trial = evaluate(candidate, gradient=False)
            if trial is not None and trial["value"] >= at["value"] - tolerance:
                accepted = (candidate, trial)
                break
        if accepted is None:
            break
        theta, at = accepted
        eq.add_gradient(at)
        n_steps += 1
        if np.max(np.abs(step * 0.5**halving)) < 1e-9:
            scoring_converged = True
            break
    n_lbfgs = 0
    if not scoring_converged:
        # a boundary (a variance or correlation heading to its limit): quasi-Newton on the
        # analytic gradient, as the dense route does, with the log diagonals bounded
        def objective(theta_: np.ndarray) -> tuple[float, np.ndarray]:
            nonlocal n_lbfgs
            n_lbfgs += 1
            found = evaluate(theta_, gradient=True)
            if found is None:
                return 1e300, np.zeros_like(theta_)
            return -found["value"], -psi_grad(theta_, found)

        bounds = [
            (LOG_DIAGONAL_FLOOR, None) if j in diagonal else (None, None) for j in range(2 * k)
        ]
        theta[diagonal] = np.maximum(theta[diagonal], LOG_DIAGONAL_FLOOR)
        result = optimize.minimize(
            objective,
            theta,
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-10},
        )
        theta = result.x
        at = evaluate(theta, gradient=True)
    t_optimise = time.perf_counter() - started - t_setup
    LG, LE, G, E = unpack(theta)
    # the projected gradient: a log diagonal held at its bound may still pull outwards
    grad = psi_grad(theta, at)
    at_floor = np.zeros(theta.size, dtype=bool)
    at_floor[diagonal] = theta[diagonal] <= LOG_DIAGONAL_FLOOR + 1e-9
    grad[at_floor & (grad < 0)] = 0.0
    grad_norm = float(np.max(np.abs(grad)))
    converged = grad_norm < 1e-3
    if not converged and at_floor.any():
        # on a floor Σ is near-singular and the analytic gradient carries rounding of order
        # 1e-3 (Σ⁻¹ enters Henderson's equations): judge the free coordinates by the gain
        # in ℓ a scoring step would predict (the Newton decrement), 1e-6 to 1e-5 nats at
        # such optima, where the dense route's ℓ is a few 1e-6 higher
        free = ~at_floor
        J = sla.block_diag(_natural_jacobian(LG), _natural_jacobian(LE))
        info = (J.T @ eq.average_information(at, G) @ J)[np.ix_(free, free)]
        try:
            converged = float(grad[free] @ np.linalg.solve(info, grad[free])) < 1e-4
        except np.linalg.LinAlgError:
            pass

    # observed information of the natural parameters: central differences of the gradient
    phi = np.concatenate([vech(G), vech(E)])
    m = phi.size // 2

    def natural(phi_: np.ndarray) -> np.ndarray:
        try:
            found = eq.evaluate(unvech(phi_[:m], t), unvech(phi_[m:], t))
        except np.linalg.LinAlgError:
            return np.full(phi_.size, np.nan)
        return natural_grad(found["MG"], found["ME"])

    cov_phi = observed_information_covariance(natural, phi, scale)
    # back to the traits' units (as the dense route): Σ_ab sc_a sc_b, β_a sc_a, u_a sc_a
    outer = np.outer(scale, scale)
    beta_scale = np.repeat(scale, p)
    n_records = (~np.isnan(Y)).sum(axis=0)
    ebv = at["u"] * scale
    pev = np.diagonal(at["blocks"], axis1=1, axis2=2) * scale**2
    kin: SparsePedigreeKinship = spec.kinship
    table = pd.DataFrame(
        np.column_stack([ebv, pev]),
        columns=[*spec.traits, *(f"pev:{name}" for name in spec.traits)],
        index=pd.Index(kin.pedigree_ids, name=spec.group),
    )
    seconds = time.perf_counter() - started
    return MultiTraitRemlFit(
        traits=spec.traits,
        fixed_names=spec.fixed_names,
        genetic=G * outer,
        residual=E * outer,
        covariance=cov_phi,
        beta=(at["beta"] * beta_scale).reshape(t, p),
        beta_covariance=at["Sinv"] * np.outer(beta_scale, beta_scale),
        loglik=float(at["value"] - np.sum((n_records - p) * np.log(scale))),
        kinship_scale=spec.kinship_scale,
        n=n,
        n_records=tuple(int(v) for v in n_records),
        route=ROUTE,
        converged=bool(converged),
        gradient_max=grad_norm,
        seconds=seconds,
        formula=spec.formula,
        at_boundary=bool(
            np.min(np.linalg.eigvalsh(G)) < 1e-6 or np.min(np.linalg.eigvalsh(E)) < 1e-6
        ),
        breeding_values=table,
        spec=spec,
        timing={
            "setup_s": t_setup,
            "optimize_s": t_optimise,
            "total_s": seconds,
            "scoring_steps": float(n_steps),
            "lbfgs_evaluations": float(n_lbfgs),
            "factorizations": float(eq.n_factorizations),
            "selected_inverses": float(eq.n_selected_inverses),
            "backend": eq.chol.backend,
        },
    )
