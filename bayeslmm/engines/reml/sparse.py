"""AI-REML on sparse mixed-model equations, for crossed and nested iid factors.

The algebra is that of :class:`~bayeslmm.engines.reml.mme.MmeReml` (lme4's coefficient
matrix C = Λ̃ᵀ Wᵀ R⁻¹ W Λ̃ + diag(I_Q, 0) in the order [v; β]), restricted to the models in
which C is sparse: every random term iid (no kinship: Λ = ⊕_t L_Σt ⊗ I) and one residual
variance. Nothing of order (Q + p)² is formed. The term with the most levels is eliminated
first (its block of C is block diagonal: an observation has one level of it), the Schur
complement of the other terms and the fixed effects gets a dense Cholesky factor
(:mod:`bayeslmm.engines.sparse_cholesky`; the pairs of entries that meet in it are found
once, before the first iteration), and the quantities AI-REML needs come from solves and
from the *selected* inverse of C:

    log|V| + log|XᵀV⁻¹X| = log|R| + log|C|,   log|XᵀV⁻¹X| = log|C / C_vv|
    tr(P V_i)   = tr(Ē_i (q I − T)),  T_ab = Σ_levels (C⁻¹)_(a,l),(b,l)   (level blocks)
    tr(P R)/σ²  = n/σ² − (Q + p − tr C⁻¹_vv)/σ²                        (one residual)
    Cov(β̂)     = (C⁻¹)_ββ,  PEV(u_l) = L_Σ (C⁻¹)_ll L_Σᵀ                 (level blocks)

and the AI matrix from C⁻¹ applied to the k working-variate columns. A term whose Σ_t is
singular (a variance at 0) has no v-space score; its score and AI entries are taken at
Σ_t + 10⁻⁸ σ² I, their limit as the variance goes to 0 up to O(10⁻⁸) (the likelihood is
always exact), which is what the active-set step of the optimiser needs; while C is small
(order ≤ 2000) they are taken exactly from the dense evaluator instead.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

from bayeslmm.engines.reml._common import Criterion
from bayeslmm.engines.reml._structure import Structure
from bayeslmm.engines.reml.mme import MmeReml, _inverse_root
from bayeslmm.engines.sparse_cholesky import EliminationPattern
from bayeslmm.spec import ModelSpec

#: relative variance (to σ²) at which a singular Σ_t's score and AI entries are evaluated
_BOUNDARY_SHIFT = 1e-8
#: up to this order of C, a singular Σ_t's score and AI come from the dense MME evaluator
#: (exact); above it, from the limit at a shifted Σ_t
_DENSE_AT_SINGULAR = 2000
#: the dense Schur complement of the terms not eliminated first stays below this order
MAX_DENSE_REST = 10_000
#: fewest random effects for which ``"auto"`` prefers this route to the dense MME
MIN_LEVELS = 500


def sparse_applicable(spec: ModelSpec) -> bool:
    """True when the sparse MME route applies: iid terms only, one residual variance, and
    the part of C left after eliminating the largest term of order ≤ ``MAX_DENSE_REST``.

    Examples
    --------
    >>> import pandas as pd
    >>> from bayeslmm import specify
    >>> df = pd.DataFrame({"y": [1.0, 2, 0, 1, 3, 2], "a": list("xxyyzz"), "b": list("uvuvuv")})
    >>> sparse_applicable(specify("y ~ 1 + (1 | a) + (1 | b)", df))
    True
    """
    if not spec.terms or spec.sigma_X is not None:
        return False
    if any(t.kinship is not None for t in spec.terms):
        return False
    sizes = [t.n_coef * t.n_levels for t in spec.terms]
    return sum(sizes) - max(sizes) + spec.X.shape[1] <= MAX_DENSE_REST


def sparse_preferred(spec: ModelSpec) -> bool:
    """True when ``"auto"`` takes the sparse route: applicable, with ≥ ``MIN_LEVELS`` effects.

    Examples
    --------
    >>> import pandas as pd
    >>> from bayeslmm import specify
    >>> df = pd.DataFrame({"y": [1.0, 2, 0, 1, 3, 2], "a": list("xxyyzz"), "b": list("uvuvuv")})
    >>> sparse_preferred(specify("y ~ 1 + (1 | a) + (1 | b)", df))
    False
    """
    return sparse_applicable(spec) and sum(t.n_coef * t.n_levels for t in spec.terms) >= MIN_LEVELS


class SparseMmeReml(MmeReml):
    """REML (or ML) likelihood, score and AI matrix on sparse MME (iid terms, one residual)."""

    def __init__(
        self, structure: Structure, y: np.ndarray, X: np.ndarray, criterion: Criterion = "reml"
    ) -> None:
        super().__init__(structure, y, X, criterion=criterion)
        if len(self.res_index) != 1 or any(k is not None for k in self.kin):
            raise ValueError("the sparse MME route needs iid terms and one residual variance")
        sizes = [t.n_coef * t.n_levels for t in structure.terms]
        lead_t = int(np.argmax(sizes))
        term = structure.terms[lead_t]
        m, q, off = term.n_coef, term.n_levels, self.offsets[lead_t]
        lead = (off + np.arange(m)[None, :] * q + np.arange(q)[:, None]).ravel()  # level-major
        self.lead_term = lead_t
        # the structural pattern of C for any θ: Λ with full m × m blocks
        full_roots = [np.tril(np.ones((t.n_coef, t.n_coef))) for t in structure.terms]
        # |W|ᵀ|W|, not H = WᵀW: centred covariates can sum to an exact 0 over a level, and
        # C's entries (from H and Λ) must lie inside the analysed pattern for every θ
        W = abs(sp.hstack([self.Z, sp.csr_matrix(self.X)], format="csr"))
        Lam = self._lambda(full_roots)
        pattern = (Lam.T @ (W.T @ W) @ Lam) + sp.identity(self.Q + self.p)
        self.pattern = EliminationPattern(pattern, lead, block=m)
        self._index = self._level_indices()

    def _level_indices(self) -> list[np.ndarray]:
        """Per term, the MME positions of its coefficients by level (q × m)."""
        out = []
        for t, term in enumerate(self.structure.terms):
            m, q, off = term.n_coef, term.n_levels, self.offsets[t]
            out.append(off + np.arange(m)[None, :] * q + np.arange(q)[:, None])
        return out

    def _lambda(self, roots: list[np.ndarray]) -> sp.csr_matrix:
        """Λ̃ = diag(⊕_t L_Σt ⊗ I_qt, I_p) as a sparse matrix (coefficient-major blocks)."""
        blocks = [
            sp.kron(sp.csr_matrix(L), sp.identity(t.n_levels), format="csr")
            for L, t in zip(roots, self.structure.terms, strict=True)
        ]
        blocks.append(sp.identity(self.p, format="csr"))
        return sp.block_diag(blocks, format="csr")

    # -- factorisation ----------------------------------------------------------------------
    def _factor_uncached(self, theta: np.ndarray) -> dict | None:
        sigma2 = float(theta[self.res_index[0]])
        if not sigma2 > 0:
            return None
        roots = self._roots(theta)
        if roots is None:
            return None
        Lam = self._lambda(roots)
        A = self.H[0] / sigma2
        C = (Lam.T @ A @ Lam).tocsr() + sp.diags(np.r_[np.ones(self.Q), np.zeros(self.p)])
        try:
            fac = self.pattern.factor(C)
        except np.linalg.LinAlgError:
            return None
        rhs = Lam.T @ (self.b[0] / sigma2)
        sol = fac.solve(rhs)
        ypy = self.yy[0] / sigma2 - float(rhs @ sol)
        logdet_xvx = fac.logdet_trailing(self.p)
        C_vb = np.asarray(C[: self.Q, self.Q :].toarray())
        return {
            "roots": roots,
            "res": np.array([sigma2]),
            "A": A,
            "factor": fac,
            "sol": sol,
            "C_vb": C_vb,
            "ypy": ypy,
            "logdet_v": self.n_e[0] * math.log(sigma2) + fac.logdet - logdet_xvx,
            "logdet_xvx": logdet_xvx,
        }

    def _vv_solve(self, f: dict, rhs: np.ndarray) -> np.ndarray:
        """C_vv⁻¹ rhs from C's factor: C_vv⁻¹ C_vb = −(C⁻¹)_vβ ((C⁻¹)_ββ)⁻¹ (block inverse),
        used by the ML correction with rhs = C_vb."""
        if "factor" not in f:  # a dense factor (see _dense_evaluate)
            return super()._vv_solve(f, rhs)
        fac = f["factor"]
        Q, p = self.Q, self.p
        unit = np.zeros((Q + p, p))
        unit[Q:] = np.eye(p)
        cols = fac.solve(unit)  # C⁻¹[:, β]
        return -cols[:Q] @ np.linalg.inv(cols[Q:])

    def _inverse_level_blocks(self, fac) -> list[np.ndarray]:
        """Per term, the m × m blocks of C⁻¹ of each level (q × m × m)."""
        pat = self.pattern
        Sinv = fac.rest_inverse
        pos = np.empty(self.Q + self.p, np.int64)
        pos[pat.rest] = np.arange(pat.n_rest)
        out = []
        for t, idx in enumerate(self._index):
            if t == self.lead_term:
                out.append(fac.lead_inverse_blocks())
            else:
                r = pos[idx]  # q × m
                out.append(Sinv[r[:, :, None], r[:, None, :]])
        return out

    # -- the evaluator interface ------------------------------------------------------------
    def evaluate(self, theta: np.ndarray) -> dict:
        """ℓ_R, score, AI matrix, β̂, Cov(β̂), BLUP pieces at θ; no (Q + p)² matrix."""
        f = self._factor(theta)
        if f is None:
            raise np.linalg.LinAlgError("the mixed-model equations are singular at this estimate")
        if (
            any(_inverse_root(L) is None for L in f["roots"])
            and self.Q + self.p <= _DENSE_AT_SINGULAR
        ):
            return self._dense_evaluate(theta)
        state = self._state(theta, f)
        if any(_inverse_root(L) is None for L in f["roots"]):
            # a singular Σ_t: score and AI in its limit, at Σ_t + shift·σ² I (see the module)
            shifted = self._shifted(theta, f)
            g = self._factor_uncached(shifted)  # not cached: the step search needs θ's
            if g is None:
                raise np.linalg.LinAlgError("the mixed-model equations are singular here")
            limit = self._state(shifted, g)
            for key in ("score", "ai", "trace", "quad"):
                state[key] = limit[key]
        return state

    def _dense_evaluate(self, theta: np.ndarray) -> dict:
        """The dense MME evaluator's state at θ (its n-space formulas are exact at a singular
        Σ_t), for small C."""
        dense = MmeReml._factor_uncached(self, theta)
        if dense is None:
            raise np.linalg.LinAlgError("the mixed-model equations are singular at this estimate")
        saved = self._last
        self._last = (theta.tobytes(), dense)
        try:
            return MmeReml.evaluate(self, theta)
        finally:
            self._last = saved

    def _shifted(self, theta: np.ndarray, f: dict) -> np.ndarray:
        out = theta.copy()
        sigma2 = float(f["res"][0])
        for t, L in enumerate(f["roots"]):
            if _inverse_root(L) is None:
                for i, p in enumerate(self.structure.params):
                    if p.term == t and p.j == p.k:
                        out[i] += _BOUNDARY_SHIFT * sigma2
        return out

    def _state(self, theta: np.ndarray, f: dict) -> dict:
        Q, p = self.Q, self.p
        roots, sigma2, fac = f["roots"], float(f["res"][0]), f["factor"]
        blocks = self._inverse_level_blocks(fac)
        Sinv = fac.rest_inverse
        pat = self.pattern
        beta_pos = np.searchsorted(pat.rest, np.arange(Q, Q + p))
        beta_cov = Sinv[np.ix_(beta_pos, beta_pos)].copy()
        # û = Λ v̂, β̂; PEV of (a, level l) = (L (C⁻¹)_ll Lᵀ)_aa
        Lam = self._lambda(roots)
        gamma = Lam @ f["sol"]
        u_hat, beta = gamma[:Q], gamma[Q:]
        pev = np.empty(Q)
        tr_cinv_vv = 0.0
        for t, (idx, blk) in enumerate(zip(self._index, blocks, strict=True)):
            L = roots[t]
            pev[idx] = np.einsum("ab,lbc,ac->la", L, blk, L)
            tr_cinv_vv += float(np.trace(blk, axis1=1, axis2=2).sum())
        resid = self.y - self.X @ beta - self.Z @ u_hat
        Py = resid / sigma2
        v_hat = f["sol"][:Q]
        k = len(self.structure.params)
        trace, quad = np.empty(k), np.empty(k)
        inv_roots = [_inverse_root(L) for L in roots]
        v_idx = [i for i, prm in enumerate(self.structure.params) if not prm.is_residual]
        n_idx = [i for i, prm in enumerate(self.structure.params) if prm.is_residual]
        g_cols = np.zeros((Q, len(v_idx)))
        F = np.zeros((self.n, len(n_idx)))
        for i, prm in enumerate(self.structure.params):
            if prm.is_residual:
                trace[i] = self.n / sigma2 - (Q + p - tr_cinv_vv) / sigma2
                F[:, n_idx.index(i)] = Py
                quad[i] = float(Py @ Py)
                continue
            term = self.structure.terms[prm.term]
            m, q, off = term.n_coef, term.n_levels, self.offsets[prm.term]
            Li = inv_roots[prm.term]
            if Li is None:  # only the likelihood is used from this state (see evaluate)
                trace[i] = quad[i] = math.nan
                continue
            E = np.zeros((m, m))
            E[prm.j, prm.k] += 1.0
            E[prm.k, prm.j] += 1.0 if prm.j != prm.k else 0.0
            E_bar = Li @ E @ Li.T
            T = q * np.eye(m) - blocks[prm.term].sum(axis=0)
            v_t = v_hat[off : off + m * q].reshape(m, q)
            trace[i] = float(np.sum(E_bar * T))
            quad[i] = float(np.sum(E_bar * (v_t @ v_t.T)))
            g_cols[off : off + m * q, v_idx.index(i)] = (E_bar @ v_t).ravel()
        # AI as in MmeReml.evaluate, with C⁻¹ applied by solves
        ai = np.empty((k, k))
        RF = F / sigma2
        Yu = np.vstack([self.ZT @ RF, self.X.T @ RF])
        Yv = np.asarray(Lam.T @ Yu)
        padded = np.zeros((Q + p, len(v_idx)))
        padded[:Q] = g_cols
        cg = fac.solve(padded)
        ai[np.ix_(v_idx, v_idx)] = g_cols.T @ g_cols - g_cols.T @ cg[:Q]
        ai[np.ix_(v_idx, n_idx)] = cg.T @ Yv
        ai[np.ix_(n_idx, v_idx)] = ai[np.ix_(v_idx, n_idx)].T
        ai[np.ix_(n_idx, n_idx)] = F.T @ RF - Yv.T @ fac.solve(Yv)
        return self._finish_state(
            theta,
            f,
            trace=trace,
            quad=quad,
            ai=0.5 * ai,
            ml_terms=(roots, np.full(self.n, 1.0 / sigma2), F, n_idx, g_cols, v_idx),
            Py=Py,
            beta=beta,
            beta_cov=beta_cov,
            u_hat=u_hat,
            pev=pev,
        )
