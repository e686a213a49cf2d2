"""REML likelihood, score and AI matrix through Henderson's mixed-model equations (MME).

Same model and parameters as :class:`~bayeslmm.engines.reml.aireml.DenseReml`, but nothing of
size n × n is ever formed: the work is on the coefficient matrix of the mixed-model equations,
of size Q + p with Q = Σ_t m_t q_t random effects (m_t coefficients × q_t levels of term t).
This is the approach of AIREMLF90, ASReml and GCTA for many records per level.

Write G = Cov(u) = ⊕_t Σ_t ⊗ K_t = Λ Λᵀ with Λ = ⊕_t L_Σt ⊗ L_Kt (any square roots:
L_Σ from the eigendecomposition of Σ with eigenvalues clipped at 0, L_K = U S^½ from the
Kinship's cached eigendecomposition, the identity for iid levels), u = Λ v, v ~ N(0, I)
(lme4's relative covariance factor). With R = ⊕_e θ_e I_{n_e} (residual variance by
environment) and W = [Z Λ, X], the coefficient matrix in the order [v; β] is

    C = Wᵀ R⁻¹ W + diag(I_Q, 0_p).

Because G need not be inverted, a singular Σ (a variance or correlation at its bound) and a
singular kinship are handled exactly, which the textbook form with G⁻¹ cannot do. The
identities used (Woodbury; Schur complement of the v-block):

    log|V| = log|R| + log|C_vv|,   log|XᵀV⁻¹X| = log|C / C_vv|
    ⇒ log|V| + log|XᵀV⁻¹X| = log|R| + log|C|   (= log|R| + log|G| + log|C_u| for the
      G⁻¹ form C_u = [ZᵀR⁻¹Z + G⁻¹, ZᵀR⁻¹X; ·, XᵀR⁻¹X] when G is invertible)
    yᵀPy = yᵀR⁻¹y − rᵀC⁻¹r,   r = WᵀR⁻¹y
    P    = R⁻¹ − R⁻¹ W C⁻¹ Wᵀ R⁻¹

so the Cholesky factor of C with v first gives both log-determinants. For a term whose Σ_t
is well-conditioned, G_i = ∂G/∂θ_i = Λ (Ē_i ⊗ I) Λᵀ with Ē_i = L_Σ⁻¹ E_i L_Σ⁻ᵀ, and with
ΛᵀZᵀPZΛ = I − C⁻¹_vv and PZΛ = R⁻¹ W C⁻¹[:, v] (no cancellation at large σ_u²/σ_e²):

    tr(P V_i)   = tr(Ē_i (q I − T)),  T_ab = tr(block ab of C⁻¹_vv)
    yᵀPV_iPy    = v̂ᵀ(Ē_i ⊗ I)v̂,    AI_ij = ½ g_iᵀ(I − C⁻¹_vv)g_j,  g_i = (Ē_i ⊗ I)v̂.

Residual variances and terms with a singular Σ_t use the (u, β) space (W_u = [Z, X],
A = W_uᵀR⁻¹W_u, M = Λ̃ C⁻¹ Λ̃ᵀ with Λ̃ = diag(Λ, I_p); M is Henderson's inverse coefficient
matrix: Cov(β̂) and the prediction error variances of û):

    Zᵀ P Z      = (A − A M A)_uu
    tr(P V_i)   = tr(ZᵀPZ G_i)                     (G_i = E_jk ⊗ K_t, symmetrised)
    tr(P D_e)   = n_e/θ_e − tr(M H_e)/θ_e²          (H_e = W_uᵀ D_e W_u, D_e: environment e)
    yᵀPV_iPy    = aᵀ G_i a,   a = Zᵀ P y,   P y = R⁻¹(y − Xβ̂ − Zû)
    AI_ij       = ½ f_iᵀ P f_j,   f_i = V_i P y (working variates, n-vectors, sparse Z)

Cost per iteration O((Q + p)³ + n k) with k parameters, instead of O(n³).

Maximum likelihood (``criterion="ml"``) needs tr(V⁻¹V_i) and ½ f_iᵀV⁻¹f_j instead: with
V⁻¹ = P + V⁻¹X (XᵀV⁻¹X)⁻¹ XᵀV⁻¹ they are the REML quantities plus
tr(Cov(β̂) · (V⁻¹X)ᵀV_i(V⁻¹X)) and ½ (XᵀV⁻¹f_i)ᵀ Cov(β̂) (XᵀV⁻¹f_j), where
V⁻¹X = R⁻¹(X − ZΛ C_vv⁻¹ ΛᵀZᵀR⁻¹X) (Woodbury; C_vv's Cholesky factor is the leading block
of C's, and ΛᵀZᵀR⁻¹X is C's (v, β) block).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import scipy.linalg as sla
import scipy.sparse as sp

from bayeslmm.engines.reml._common import (
    CachedFactorReml,
    Criterion,
    likelihoods,
    ml_loglik,
    reml_loglik,
)
from bayeslmm.engines.reml._structure import Structure

# a Σ eigenvalue below −(this) × its largest is a point outside the parameter space
_PSD_SLACK = 1e-10
# smallest eigenvalue of Σ_t, relative to its largest, for the v-space score and AI formulas
_COND_V_SPACE = 1e-6


def mme_size(structure: Structure, p: int) -> int:
    """Order of the mixed-model coefficient matrix: p + Σ_t m_t q_t.

    Examples
    --------
    >>> import pandas as pd
    >>> from bayeslmm import specify
    >>> from bayeslmm.engines.reml._structure import build_structure
    >>> df = pd.DataFrame({"y": [1.0, 2.0, 0.5, 1.5, 3.0, 2.5], "g": list("aabbcc")})
    >>> spec = specify("y ~ 1 + (1 | g)", df)
    >>> mme_size(build_structure(spec), spec.X.shape[1])
    4
    """
    return p + sum(t.n_coef * t.n_levels for t in structure.terms)


def _inverse_root(L: np.ndarray) -> np.ndarray | None:
    """L⁻¹ for L = L_Σ when Σ = L Lᵀ is well-conditioned (cond < 10⁶), else None."""
    sv = np.linalg.svd(L, compute_uv=False)
    if sv[-1] <= 0 or sv[-1] ** 2 < _COND_V_SPACE * sv[0] ** 2:
        return None
    return np.linalg.inv(L)


class MmeReml(CachedFactorReml):
    """REML (or ML) likelihood, score and AI matrix for V = Z G Zᵀ + R via the MME (no n × n)."""

    def __init__(
        self, structure: Structure, y: np.ndarray, X: np.ndarray, criterion: Criterion = "reml"
    ) -> None:
        super().__init__(structure, y, X, criterion)
        # random effects ordered term by term, coefficient by coefficient, level by level
        self.offsets: list[int] = []
        blocks = []
        off = 0
        for term in structure.terms:
            self.offsets.append(off)
            blocks.extend(term.z(j) for j in range(term.n_coef))
            off += term.n_coef * term.n_levels
        self.Q = off
        self.Z = sp.hstack(blocks, format="csr") if blocks else sp.csr_matrix((self.n, 0))
        self.ZT = self.Z.T.tocsr()
        self.kin = [t.kinship.matrix if t.kinship is not None else None for t in structure.terms]
        self.kin_root = []
        for t in structure.terms:
            if t.kinship is None:
                self.kin_root.append(None)
            else:
                # Λ is square here (one spherical effect per level): the root of Kinship.root
                # with zero columns for the eigenvalues it drops (rounding of zero)
                factor = t.kinship.root().factor
                square = np.zeros((factor.shape[0],) * 2)
                square[:, : factor.shape[1]] = factor
                self.kin_root.append(square)
        self.res_index = [i for i, p in enumerate(structure.params) if p.is_residual]
        # θ-independent cross-products of each environment: H_e, W_uᵀD_e y, yᵀD_e y. H_e is
        # sparse whatever the kinships (they enter through Λ, not through W_u = [Z, X]).
        self.H: list[sp.csc_matrix] = []
        self.b: list[np.ndarray] = []
        self.yy: list[float] = []
        self.n_e: list[int] = []
        W = sp.hstack([self.Z, sp.csr_matrix(self.X)], format="csr")
        for i in self.res_index:
            mask = structure.params[i].mask.astype(float)
            Wm = sp.diags(mask) @ W
            self.H.append(sp.csc_matrix(W.T @ Wm))
            self.b.append(np.asarray(Wm.T @ self.y).ravel())
            self.yy.append(float(self.y @ (mask * self.y)))
            self.n_e.append(int(mask.sum()))

    # -- Λ = ⊕ L_Σ ⊗ L_K (identity on β) -----------------------------------------------------
    def _roots(self, theta: np.ndarray) -> list[np.ndarray] | None:
        """L_Σt for each term (None if some Σ_t is outside the PSD cone)."""
        roots = []
        for t, term in enumerate(self.structure.terms):
            m = term.n_coef
            S = np.zeros((m, m))
            for value, p in zip(theta, self.structure.params, strict=True):
                if p.term == t:
                    S[p.j, p.k] = S[p.k, p.j] = value
            if m == 1 or not term.correlated:
                d = np.diag(S)
                if np.any(d < 0):
                    return None
                roots.append(np.diag(np.sqrt(d)))
                continue
            w, U = np.linalg.eigh(S)
            if w[0] < -_PSD_SLACK * max(abs(w[-1]), 1e-300):
                return None
            roots.append(U * np.sqrt(np.clip(w, 0.0, None)))
        return roots

    def _times_lambda(self, B: np.ndarray, roots: list[np.ndarray], transpose: bool) -> np.ndarray:
        """B Λ̃ (or B Λ̃ᵀ) for B with Q + p columns, term by term without forming Λ̃."""
        out = B.copy()
        rows = B.shape[0]
        for t, term in enumerate(self.structure.terms):
            m, q, off = term.n_coef, term.n_levels, self.offsets[t]
            blk = B[:, off : off + m * q].reshape(rows, m, q)
            LK = self.kin_root[t]
            if LK is not None:
                blk = blk @ (LK.T if transpose else LK)
            LS = roots[t].T if transpose else roots[t]
            out[:, off : off + m * q] = np.einsum("rmq,mn->rnq", blk, LS).reshape(rows, m * q)
        return out

    # -- factorisation (shared by loglik and evaluate; cached by _factor) -----------------------
    def _factor_uncached(self, theta: np.ndarray) -> dict | None:
        res = theta[self.res_index]
        if np.any(res <= 0):
            return None
        roots = self._roots(theta)
        if roots is None:
            return None
        A = sp.csc_matrix(sum(H / r for H, r in zip(self.H, res, strict=True)))
        b = sum(bb / r for bb, r in zip(self.b, res, strict=True))
        y_r_y = float(sum(v / r for v, r in zip(self.yy, res, strict=True)))
        logdet_r = float(sum(ne * math.log(r) for ne, r in zip(self.n_e, res, strict=True)))
        A_lam = self._times_lambda(A.toarray(), roots, transpose=False)  # A Λ̃
        C = self._times_lambda(A_lam.T, roots, transpose=False)  # Λ̃ᵀ A Λ̃
        C = 0.5 * (C + C.T)
        C[np.arange(self.Q), np.arange(self.Q)] += 1.0
        try:
            chol = sla.cho_factor(C, lower=True, check_finite=False)
        except np.linalg.LinAlgError:
            return None
        diag = np.diag(chol[0])
        if not np.all(diag > 0):
            return None
        rhs = self._times_lambda(b[None, :], roots, transpose=False)[0]  # Λ̃ᵀ b
        sol = sla.cho_solve(chol, rhs, check_finite=False)
        ypy = y_r_y - float(rhs @ sol)
        return {
            "roots": roots,
            "res": res,
            "A": A,
            "chol": chol,
            "sol": sol,
            "C_vb": C[: self.Q, self.Q :].copy(),  # ΛᵀZᵀR⁻¹X (the ML trace needs it)
            "ypy": ypy,
            "logdet_v": logdet_r + 2.0 * float(np.sum(np.log(diag[: self.Q]))),
            "logdet_xvx": 2.0 * float(np.sum(np.log(diag[self.Q :]))),
        }

    # -- the evaluator interface ------------------------------------------------------------
    def loglik(self, theta: np.ndarray) -> float:
        """Restricted (ML: full) log-likelihood; −inf outside the parameter space."""
        f = self._factor(theta)
        if f is None or f["ypy"] <= 0:
            return -math.inf
        if self.criterion == "ml":
            return ml_loglik(f["logdet_v"], f["ypy"], self.n)
        return reml_loglik(f["logdet_v"], f["logdet_xvx"], f["ypy"], self.n, self.p)

    def evaluate(self, theta: np.ndarray) -> dict:
        """ℓ_R, score, AI matrix, β̂, Cov(β̂), BLUP pieces at θ, in O((Q + p)³ + n k)."""
        f = self._factor(theta)
        if f is None:
            raise np.linalg.LinAlgError("the mixed-model equations are singular at this estimate")
        Q, roots, res, A = self.Q, f["roots"], f["res"], f["A"]
        cinv, info = sla.lapack.dpotri(f["chol"][0], lower=True)
        if info != 0:
            raise np.linalg.LinAlgError("the mixed-model equations are singular at this estimate")
        cinv = np.tril(cinv) + np.tril(cinv, -1).T
        # M = Λ̃ C⁻¹ Λ̃ᵀ: Henderson's inverse coefficient matrix in the (u, β) space
        M = self._times_lambda(self._times_lambda(cinv, roots, transpose=True).T, roots, True)
        M = 0.5 * (M + M.T)
        gamma = self._times_lambda(f["sol"][None, :], roots, transpose=True)[0]
        u_hat, beta = gamma[:Q], gamma[Q:]
        r_inv = np.zeros(self.n)
        for i, r in zip(self.res_index, res, strict=True):
            r_inv[self.structure.params[i].mask] = 1.0 / r
        Py = r_inv * (self.y - self.X @ beta - self.Z @ u_hat)
        v_hat = f["sol"][:Q]
        inv_roots = [_inverse_root(L) for L in roots]
        k = len(self.structure.params)
        trace = np.empty(k)
        quad = np.empty(k)
        # Parameters of a term with a well-conditioned Σ_t work in the v-space (G_i =
        # Λ (Ē_i ⊗ I) Λᵀ, Ē_i = L_Σ⁻¹ E_i L_Σ⁻ᵀ): no cancellation however large σ_u²/σ_e².
        # The others (residuals, terms with a singular Σ_t) use n-space working variates.
        in_v = [not p.is_residual and inv_roots[p.term] is not None for p in self.structure.params]
        v_idx = [i for i in range(k) if in_v[i]]
        n_idx = [i for i in range(k) if not in_v[i]]
        g_cols = np.zeros((Q, len(v_idx)))
        F = np.zeros((self.n, len(n_idx)))
        term_traces: dict[int, np.ndarray] = {}
        a = AM = None
        e = 0
        for i, p in enumerate(self.structure.params):
            if p.is_residual:
                col = n_idx.index(i)
                tr_mh = float(self.H[e].multiply(M).sum())
                trace[i] = self.n_e[e] / res[e] - tr_mh / res[e] ** 2
                F[:, col] = np.where(p.mask, Py, 0.0)
                quad[i] = float(F[:, col] @ Py)
                e += 1
                continue
            term = self.structure.terms[p.term]
            m, q, off = term.n_coef, term.n_levels, self.offsets[p.term]
            E = np.zeros((m, m))
            E[p.j, p.k] += 1.0
            E[p.k, p.j] += 1.0 if p.j != p.k else 0.0
            if in_v[i]:
                # tr(P V_i) = tr(Ē_i (q I − T)), T_ab = tr(C⁻¹_vv block ab) (ΛᵀZᵀPZΛ = I − C⁻¹_vv)
                # yᵀPV_iPy = v̂ᵀ(Ē_i ⊗ I)v̂;  working variate f_i = ZΛ g_i, g_i = (Ē_i ⊗ I) v̂
                if p.term not in term_traces:
                    block = cinv[off : off + m * q, off : off + m * q].reshape(m, q, m, q)
                    term_traces[p.term] = q * np.eye(m) - np.einsum("aibi->ab", block)
                Li = inv_roots[p.term]
                E_bar = Li @ E @ Li.T
                v_t = v_hat[off : off + m * q].reshape(m, q)
                trace[i] = float(np.sum(E_bar * term_traces[p.term]))
                quad[i] = float(np.sum(E_bar * (v_t @ v_t.T)))
                g_cols[off : off + m * q, v_idx.index(i)] = (E_bar @ v_t).ravel()
                continue
            if a is None:
                a = self.ZT @ Py
                # Zᵀ P Z = (A − A M A)_uu, only the blocks the parameters need; A is sparse,
                # so A M costs nnz(A)·(Q + p) rather than (Q + p)³
                AM = np.asarray(A[:Q, :] @ M)
            sj = slice(off + p.j * q, off + (p.j + 1) * q)
            sk = slice(off + p.k * q, off + (p.k + 1) * q)
            K = self.kin[p.term]
            A_k = A[:, sk]  # sparse (Q + p) × q
            if K is None:  # tr((A − AMA)_jk) = tr(A_jk) − Σ_a (AM)_{j·,a} A_{a,k·}
                tr = float(A_k[sj].diagonal().sum()) - float(A_k.multiply(AM[sj].T).sum())
            else:
                block = A_k[sj].toarray() - np.asarray(A_k.T @ AM[sj].T).T
                tr = float(np.sum(block * K))
            Ka_k = a[sk] if K is None else K @ a[sk]
            col = n_idx.index(i)
            if p.j == p.k:
                trace[i] = tr
                quad[i] = float(a[sj] @ Ka_k)
                F[:, col] = term.z(p.j) @ Ka_k
            else:
                Ka_j = a[sj] if K is None else K @ a[sj]
                trace[i] = 2.0 * tr
                quad[i] = 2.0 * float(a[sj] @ Ka_k)
                F[:, col] = term.z(p.j) @ Ka_k + term.z(p.k) @ Ka_j
        # AI_ij = ½ f_iᵀ P f_j with P ZΛ = R⁻¹ W C⁻¹[:, v]:
        #   v, v: g_iᵀ (I − C⁻¹_vv) g_j;  v, n: g_iᵀ C⁻¹[v, :] y_j;  n, n: f_iᵀR⁻¹f_j − y_iᵀC⁻¹y_j
        # with y_j = Wᵀ R⁻¹ f_j = Λ̃ᵀ W_uᵀ R⁻¹ f_j.
        ai = np.empty((k, k))
        RF = r_inv[:, None] * F
        Yu = np.vstack([self.ZT @ RF, self.X.T @ RF])
        Yv = self._times_lambda(Yu.T, roots, transpose=False).T
        cg = cinv[:, :Q] @ g_cols
        ai[np.ix_(v_idx, v_idx)] = g_cols.T @ g_cols - g_cols.T @ cg[:Q]
        ai[np.ix_(v_idx, n_idx)] = cg.T @ Yv
        ai[np.ix_(n_idx, v_idx)] = ai[np.ix_(v_idx, n_idx)].T
        ai[np.ix_(n_idx, n_idx)] = F.T @ RF - Yv.T @ (cinv @ Yv)
        return self._finish_state(
            theta,
            f,
            trace=trace,
            quad=quad,
            ai=0.5 * ai,
            ml_terms=(roots, r_inv, F, n_idx, g_cols, v_idx),
            Py=Py,
            beta=beta,
            beta_cov=M[Q:, Q:].copy(),
            u_hat=u_hat,
            pev=np.diag(M)[:Q].copy(),
        )

    def _finish_state(
        self,
        theta: np.ndarray,
        f: dict,
        *,
        trace: np.ndarray,
        quad: np.ndarray,
        ai: np.ndarray,
        ml_terms: tuple,
        Py: np.ndarray,
        beta: np.ndarray,
        beta_cov: np.ndarray,
        u_hat: np.ndarray,
        pev: np.ndarray,
    ) -> dict:
        """An evaluation's state from its pieces (shared with :class:`~bayeslmm.engines.reml.
        sparse.SparseMmeReml`): under ML the trace and AI corrections of
        :meth:`_ml_corrections` (``ml_terms`` = its roots, r_inv, F, n_idx, g_cols, v_idx),
        then the AI matrix symmetrised, the score −½ (trace − quad) and the likelihoods."""
        if self.criterion == "ml":
            roots, r_inv, F, n_idx, g_cols, v_idx = ml_terms
            trace_extra, ai_extra = self._ml_corrections(
                f, roots, r_inv, beta_cov, F, n_idx, g_cols, v_idx
            )
            trace = trace + trace_extra
            ai = ai + ai_extra
        ypy, logdet_v, logdet_xvx = f["ypy"], f["logdet_v"], f["logdet_xvx"]
        return {
            "theta": theta.copy(),
            **likelihoods(self.criterion, logdet_v, logdet_xvx, ypy, self.n, self.p),
            "score": -0.5 * (trace - quad),
            "ai": 0.5 * (ai + ai.T),
            "trace": trace,
            "quad": quad,
            "Py": Py,
            "beta": beta,
            "beta_cov": beta_cov,
            "u_hat": u_hat,
            "pev": pev,
        }

    def _vv_solve(self, f: dict, rhs: np.ndarray) -> np.ndarray:
        """C_vv⁻¹ rhs: C_vv's lower Cholesky factor is the leading block of C's."""
        Q = self.Q
        return sla.cho_solve((f["chol"][0][:Q, :Q], True), rhs, check_finite=False)

    def _ml_corrections(
        self,
        f: dict,
        roots: list[np.ndarray],
        r_inv: np.ndarray,
        beta_cov: np.ndarray,
        F: np.ndarray,
        n_idx: list[int],
        g_cols: np.ndarray,
        v_idx: list[int],
    ) -> tuple[np.ndarray, np.ndarray]:
        """What turns the REML trace and AI into the ML ones (see the module docstring).

        Returns ``(Δtrace, ΔAI)``: Δtrace_i = tr(Cov(β̂) (V⁻¹X)ᵀV_i(V⁻¹X)) and
        ΔAI = ½ Hᵀ Cov(β̂) H with H_i = XᵀV⁻¹f_i.
        """
        Q, p = self.Q, self.p
        k = len(self.structure.params)
        # V⁻¹X = R⁻¹(X − ZΛ C_vv⁻¹ ΛᵀZᵀR⁻¹X); C_vv's lower Cholesky factor leads C's
        v_x = self._vv_solve(f, f["C_vb"])
        padded = np.zeros((p, Q + p))
        padded[:, :Q] = v_x.T
        u_x = self._times_lambda(padded, roots, transpose=True)[:, :Q]  # rows (Λ ṽ_c)ᵀ
        vinv_x = r_inv[:, None] * (self.X - np.asarray(self.Z @ u_x.T))
        a_x = np.asarray(self.ZT @ vinv_x)  # Zᵀ V⁻¹ X, Q × p
        padded[:, :Q] = a_x.T
        lam_a_x = self._times_lambda(padded, roots, transpose=False)[:, :Q]  # (Λᵀ Zᵀ V⁻¹X)ᵀ
        d_trace = np.empty(k)
        H = np.empty((p, k))
        for i, prm in enumerate(self.structure.params):
            if prm.is_residual:
                quad_x = vinv_x.T @ (prm.mask[:, None] * vinv_x)
            else:
                term = self.structure.terms[prm.term]
                q, off = term.n_levels, self.offsets[prm.term]
                a_j = a_x[off + prm.j * q : off + (prm.j + 1) * q]
                a_k = a_x[off + prm.k * q : off + (prm.k + 1) * q]
                K = self.kin[prm.term]
                quad_x = a_j.T @ (a_k if K is None else K @ a_k)
                if prm.j != prm.k:
                    quad_x = quad_x + quad_x.T
            d_trace[i] = float(np.sum(beta_cov * quad_x))
            if i in v_idx:
                H[:, i] = lam_a_x @ g_cols[:, v_idx.index(i)]
            else:
                H[:, i] = vinv_x.T @ F[:, n_idx.index(i)]
        return d_trace, 0.5 * (H.T @ beta_cov @ H)

    def blups(self, theta: np.ndarray, state: dict) -> dict[str, pd.DataFrame]:
        """BLUPs û = Λ v̂ and PEV = diag of Henderson's C⁻¹ (β̂'s uncertainty included)."""
        out = {}
        u_hat, pev = state["u_hat"], state["pev"]
        for t, (term, label) in enumerate(
            zip(self.structure.terms, self.structure.term_labels, strict=True)
        ):
            q, off = term.n_levels, self.offsets[t]
            cols: dict[str, np.ndarray] = {}
            pevs: dict[str, np.ndarray] = {}
            for j, name in enumerate(term.covariates):
                label_j = "(Intercept)" if name == "Intercept" else name
                cols[label_j] = u_hat[off + j * q : off + (j + 1) * q]
                pevs[f"pev:{label_j}"] = pev[off + j * q : off + (j + 1) * q]
            out[label] = pd.DataFrame(
                {**cols, **pevs}, index=pd.Index(term.levels, name=term.group)
            )
        return out
