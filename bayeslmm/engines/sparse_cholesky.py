"""Cholesky factors of mixed-model matrices of crossed and nested iid factors.

The coefficient matrix of the mixed-model equations (REML) and the Newton matrix of PIRLS
(Laplace) have one block row per level of each random factor and one per fixed effect::

    C = [ D   B ]      D: the levels of one iid factor (the one eliminated first),
        [ Bᵀ  E ]      block diagonal: an observation belongs to one level of it.

Eliminating D costs O(nnz) and leaves the Schur complement S = E − Bᵀ D⁻¹ B, of the order of
the other factors' levels plus the fixed effects, which crossed factors make dense (two
students share a lecturer): it gets a dense Cholesky factor. This is the supernodal
factorisation CHOLMOD reaches on such designs with its fill-reducing ordering (the largest
factor first), without its symbolic overhead: the *symbolic analysis* (which entries of C
meet in S, as pairs of entries of B) is done once in :class:`EliminationPattern` and every
numeric factorisation (:meth:`EliminationPattern.factor`) reuses it, across REML iterations
and PIRLS steps.

With the factor, :class:`EliminationFactor` gives log|C|, solves, and the *selected inverse*:
the entries of C⁻¹ on the pattern of C (the diagonal blocks of D's levels, the entries of B's
pattern and all of S's block), through C⁻¹ = [[D⁻¹ + F S⁻¹ Fᵀ, −F S⁻¹], [−S⁻¹ Fᵀ, S⁻¹]]
with F = D⁻¹ B, each a pass over the same pairs.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp

__all__ = ["EliminationFactor", "EliminationPattern", "GramPattern"]

#: above this many pairs of B entries (the work of one Schur complement) the product goes
#: through SciPy's sparse matrix product instead of the precomputed pair lists (memory)
_MAX_PAIRS = 40_000_000


class EliminationPattern:
    """Symbolic analysis of a symmetric matrix whose ``lead`` block is block diagonal.

    Parameters
    ----------
    pattern : sparse matrix, N × N
        The structural nonzeros of every matrix that will be factored (a superset is fine;
        values are ignored). Symmetrised here. Build it from absolute values (|A|ᵀ|A|, not
        AᵀA): a product whose terms cancel to an exact 0 loses that entry from the pattern.
    lead : ndarray of int
        The rows eliminated first, level-major: ``lead[i * m + a]`` is coefficient ``a`` of
        level ``i``; the ``lead`` × ``lead`` block of the pattern must be block diagonal
        with m × m blocks (one level of one iid factor each).
    block : int
        m, the coefficients per level of the leading factor.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> C = sp.csr_matrix(np.array([[2.0, 0, 1], [0, 3.0, 1], [1, 1, 4.0]]))
    >>> f = EliminationPattern(C, lead=np.array([0, 1]), block=1).factor(C)
    >>> bool(np.isclose(f.logdet, np.linalg.slogdet(C.toarray())[1]))
    True
    """

    def __init__(self, pattern: sp.spmatrix, lead: np.ndarray, block: int = 1) -> None:
        pat = abs(sp.csr_matrix(pattern, dtype=float))
        pat = (pat + pat.T).tocsr()
        N = pat.shape[0]
        lead = np.asarray(lead, dtype=np.int64)
        m = int(block)
        if lead.size % m:
            raise ValueError("lead must hold m rows per level")
        self.N, self.m = N, m
        self.n_lead = lead.size
        self.n_levels = lead.size // m
        is_lead = np.zeros(N, bool)
        is_lead[lead] = True
        self.lead = lead
        self.rest = np.flatnonzero(~is_lead)  # kept in the original order (β last stays last)
        self.n_rest = self.rest.size
        pos = np.empty(N, np.int64)  # position of an original index within lead or rest
        pos[lead] = np.arange(lead.size)
        pos[self.rest] = np.arange(self.n_rest)
        self._pos, self._is_lead = pos, is_lead
        coo = pat.tocoo()
        r, c = coo.row.astype(np.int64), coo.col.astype(np.int64)
        rl, cl = is_lead[r], is_lead[c]
        ll = rl & cl
        if np.any(pos[r[ll]] // m != pos[c[ll]] // m):
            raise ValueError("the lead block is not block diagonal by level")
        # B (lead × rest): per level, the union of the rest columns of its m rows, so that
        # the m rows of a level share one column list (F = D⁻¹B mixes them)
        lr = rl & ~cl
        level = pos[r[lr]] // m
        col = pos[c[lr]]
        keys = np.unique(level * self.n_rest + col)
        self._u_level = keys // self.n_rest  # entry u of the union pattern: its level, column
        self._u_col = keys % self.n_rest
        self.n_union = keys.size
        starts = np.searchsorted(self._u_level, np.arange(self.n_levels + 1))
        self._level_start = starts
        # B as an n_lead × n_rest CSR matrix on the union pattern, rows level-major; its
        # data array is B2.T.ravel()-ordered: row (i, a) holds entries u of level i
        counts = np.diff(starts)
        row_len = np.repeat(counts, m)
        indptr = np.r_[0, np.cumsum(row_len)]
        # data index of (a, u): rows of level i, coefficient a, start at indptr[i*m + a]
        self._data_index = np.empty((m, self.n_union), np.int64)
        for a in range(m):
            base = indptr[np.arange(self.n_levels) * m + a]
            self._data_index[a] = base[self._u_level] + (
                np.arange(self.n_union) - starts[self._u_level]
            )
        indices = np.empty(indptr[-1], np.int64)
        for a in range(m):
            indices[self._data_index[a]] = self._u_col
        self._b_indptr, self._b_indices = indptr, indices
        # pairs (u, v) of union entries of the same level: S[col u, col v] -= Σ_a B[a,u] F[a,v]
        n_pairs = int(np.sum(counts.astype(np.int64) ** 2))
        self.n_pairs = n_pairs
        if n_pairs <= _MAX_PAIRS:
            pu, pv = _level_pairs(starts)
            self._pair_u, self._pair_v = pu, pv
            self._pair_target = self._u_col[pu] * self.n_rest + self._u_col[pv]
        else:
            self._pair_u = self._pair_v = self._pair_target = None
        # B as a dense n_lead × n_rest array where that is cheaper: Bᵀ D⁻¹ B by BLAS costs
        # n_lead · n_rest² flops, the pair lists n_pairs gathers (~50× slower per entry)
        self.dense_b = (
            self.n_lead * self.n_rest**2 <= 50 * max(n_pairs, 1)
            and self.n_lead * self.n_rest <= 5_000_000
        )
        self._u_rows = self._u_level[None, :] * m + np.arange(m)[:, None]  # m × U lead rows

    def split(self, C: sp.spmatrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Values of C as (D blocks q×m×m, B on the union pattern m×U, E dense n_rest²)."""
        coo = sp.coo_matrix(C)
        r, c, v = coo.row.astype(np.int64), coo.col.astype(np.int64), coo.data
        pos, is_lead, m = self._pos, self._is_lead, self.m
        rl, cl = is_lead[r], is_lead[c]
        D = np.zeros((self.n_levels, m, m))
        ll = rl & cl
        pr, pc = pos[r[ll]], pos[c[ll]]
        if np.any(pr // m != pc // m):
            raise ValueError("C has entries outside the analysed pattern")
        np.add.at(D, (pr // m, pr % m, pc % m), v[ll])
        B = np.zeros((m, self.n_union))
        lr = rl & ~cl
        pr, pc = pos[r[lr]], pos[c[lr]]
        slot = self.union_slots(pr // m, pc)
        np.add.at(B, (pr % m, slot), v[lr])
        E = np.zeros(self.n_rest * self.n_rest)
        rr = ~rl & ~cl
        np.add.at(E, pos[r[rr]] * self.n_rest + pos[c[rr]], v[rr])
        return D, B, E.reshape(self.n_rest, self.n_rest)

    def union_slots(self, level: np.ndarray, col: np.ndarray) -> np.ndarray:
        """Positions in the union pattern of B of (level, rest column) entries."""
        union = self._u_level * self.n_rest + self._u_col
        keys = level * self.n_rest + col
        slot = np.minimum(np.searchsorted(union, keys), max(union.size - 1, 0))
        if keys.size and (union.size == 0 or np.any(union[slot] != keys)):
            raise ValueError("entries outside the analysed pattern")
        return slot

    def factor(self, C: sp.spmatrix | None = None, *, parts=None) -> EliminationFactor:
        """Numeric factorisation of C (its pattern within the analysed one).

        ``parts`` = (D, B, E) as returned by :meth:`split` skips the extraction (callers that
        compute the values on the analysed pattern directly). Raises
        ``numpy.linalg.LinAlgError`` when C is not positive definite.
        """
        D, B, E = self.split(C) if parts is None else parts
        return EliminationFactor(self, D, B, E)

    def b_matrix(self, values: np.ndarray) -> sp.csr_matrix:
        """B (n_lead × n_rest, lead rows level-major) from its m × U values."""
        data = np.empty(self._b_indptr[-1])
        for a in range(self.m):
            data[self._data_index[a]] = values[a]
        return sp.csr_matrix(
            (data, self._b_indices, self._b_indptr), shape=(self.n_lead, self.n_rest)
        )


def _level_pairs(starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All (u, v) with u, v in the same level's range [starts[i], starts[i+1]), level by level.

    Levels are grouped by their number of entries, so that each group is one broadcast.
    """
    counts = np.diff(starts)
    sq = counts.astype(np.int64) ** 2
    offsets = np.r_[0, np.cumsum(sq)]
    pu = np.empty(int(offsets[-1]), np.int64)
    pv = np.empty_like(pu)
    for width in np.unique(counts):
        if width == 0:
            continue
        levels = np.flatnonzero(counts == width)
        ar = np.arange(width)
        base = starts[levels][:, None, None]
        u = np.broadcast_to(base + ar[None, :, None], (levels.size, width, width))
        v = np.broadcast_to(base + ar[None, None, :], (levels.size, width, width))
        dest = offsets[levels][:, None] + np.arange(width * width)[None, :]
        pu[dest.ravel()] = u.reshape(-1)
        pv[dest.ravel()] = v.reshape(-1)
    return pu, pv


class EliminationFactor:
    """log|C|, solves and the selected inverse of C from :meth:`EliminationPattern.factor`."""

    def __init__(self, pattern: EliminationPattern, D: np.ndarray, B: np.ndarray, E: np.ndarray):
        self.pattern = pat = pattern
        m = pat.m
        try:
            LD = np.sqrt(D) if m == 1 else np.linalg.cholesky(D)  # batched m × m
        except np.linalg.LinAlgError as err:
            raise np.linalg.LinAlgError("C is not positive definite (a level block)") from err
        diag_d = np.diagonal(LD, axis1=1, axis2=2)
        if not np.all(diag_d > 0):
            raise np.linalg.LinAlgError("C is not positive definite (a level block)")
        self.Dinv = np.linalg.inv(D) if m > 1 else 1.0 / D
        self.logdet_lead = 2.0 * float(np.sum(np.log(diag_d)))
        self.B = B
        lev = pat._u_level
        # F = D⁻¹ B on the union pattern (m × U)
        if m == 1:
            self.F = self.Dinv[lev, 0, 0][None, :] * B
        else:
            self.F = np.einsum("uab,bu->au", self.Dinv[lev], B)
        S = E.copy()
        self._Bd: np.ndarray | None = None
        if pat.dense_b:
            Bd = np.zeros((pat.n_lead, pat.n_rest))
            Fd = np.zeros((pat.n_lead, pat.n_rest))
            Bd[pat._u_rows, pat._u_col[None, :]] = B
            Fd[pat._u_rows, pat._u_col[None, :]] = self.F
            S -= Bd.T @ Fd
            self._Bd = Bd
        elif pat._pair_u is not None:
            w = np.einsum("ap,ap->p", B[:, pat._pair_u], self.F[:, pat._pair_v])
            S -= np.bincount(pat._pair_target, weights=w, minlength=S.size).reshape(S.shape)
        else:
            Bm, Fm = pat.b_matrix(B), pat.b_matrix(self.F)
            S -= (Bm.T @ Fm).toarray()
        S = 0.5 * (S + S.T)
        self._Bm: sp.csr_matrix | None = None
        self._Fm: sp.csr_matrix | None = None
        if pat.n_rest:
            try:
                self.chol = sla.cho_factor(S, lower=True, check_finite=False)
            except np.linalg.LinAlgError as err:
                raise np.linalg.LinAlgError("C is not positive definite") from err
            diag_s = np.diag(self.chol[0])
            if not np.all(diag_s > 0):
                raise np.linalg.LinAlgError("C is not positive definite")
            self.log_diag_rest = np.log(diag_s)
        else:
            self.chol = None
            self.log_diag_rest = np.zeros(0)
        self.logdet = self.logdet_lead + 2.0 * float(np.sum(self.log_diag_rest))
        self._Sinv: np.ndarray | None = None

    def logdet_trailing(self, k: int) -> float:
        """log det of the Schur complement of the last k rows (of ``rest``) in C."""
        return 2.0 * float(np.sum(self.log_diag_rest[self.log_diag_rest.size - k :]))

    @property
    def Bm(self) -> sp.csr_matrix:
        if self._Bm is None:
            self._Bm = self.pattern.b_matrix(self.B)
        return self._Bm

    @property
    def Fm(self) -> sp.csr_matrix:
        if self._Fm is None:
            self._Fm = self.pattern.b_matrix(self.F)
        return self._Fm

    def _dinv_apply(self, x: np.ndarray) -> np.ndarray:
        """D⁻¹ x for x with n_lead rows (level-major)."""
        m, q = self.pattern.m, self.pattern.n_levels
        if m == 1:
            d = self.Dinv[:, 0, 0]
            return d * x if x.ndim == 1 else d[:, None] * x
        xs = x.reshape(q, m, -1)
        return np.einsum("iab,ibk->iak", self.Dinv, xs).reshape(x.shape)

    def solve(self, b: np.ndarray) -> np.ndarray:
        """C⁻¹ b for b of length N (or N × k), in the original order."""
        pat = self.pattern
        vec = b.ndim == 1
        b2 = b.reshape(pat.N, -1)
        bl, br = b2[pat.lead], b2[pat.rest]
        Bm = self.Bm if self._Bd is None else self._Bd
        xl = self._dinv_apply(bl)
        rhs = br - Bm.T @ xl
        yr = sla.cho_solve(self.chol, rhs, check_finite=False) if pat.n_rest else rhs
        yl = xl - self._dinv_apply(np.asarray(Bm @ yr))
        out = np.empty_like(b2, dtype=float)
        out[pat.lead], out[pat.rest] = yl, yr
        return out.ravel() if vec else out

    @property
    def rest_inverse(self) -> np.ndarray:
        """S⁻¹: the ``rest`` × ``rest`` block of C⁻¹ (dense)."""
        if self._Sinv is None:
            n = self.pattern.n_rest
            if n == 0:
                self._Sinv = np.zeros((0, 0))
            else:
                inv, info = sla.lapack.dpotri(self.chol[0], lower=True)
                if info != 0:
                    raise np.linalg.LinAlgError("C is singular")
                self._Sinv = np.tril(inv) + np.tril(inv, -1).T
        return self._Sinv

    def lead_inverse_blocks(self) -> np.ndarray:
        """The m × m diagonal blocks of C⁻¹ for the leading levels (q × m × m)."""
        pat = self.pattern
        out = self.Dinv.copy() if pat.m > 1 else self.Dinv.reshape(-1, 1, 1).copy()
        if pat.n_rest == 0 or pat.n_union == 0:
            return out
        Sinv = self.rest_inverse.ravel()
        F = self.F
        if pat._pair_u is not None:
            lev = pat._u_level[pat._pair_u]
            s = Sinv[pat._pair_target]
            for a in range(pat.m):
                for b in range(pat.m):
                    w = F[a, pat._pair_u] * s * F[b, pat._pair_v]
                    out[:, a, b] += np.bincount(lev, weights=w, minlength=pat.n_levels)
        else:
            FS = np.asarray(self.Fm @ self.rest_inverse)  # n_lead × n_rest
            Fd = self.Fm.multiply(FS).sum(axis=1).A1 if pat.m == 1 else None
            if pat.m == 1:
                out[:, 0, 0] += Fd
            else:
                rows = np.asarray(FS).reshape(pat.n_levels, pat.m, -1)
                Fdense = self.Fm.toarray().reshape(pat.n_levels, pat.m, -1)
                out += np.einsum("iak,ibk->iab", Fdense, rows)
        return out

    def inverse_diagonal(self) -> np.ndarray:
        """diag(C⁻¹) in the original order."""
        pat = self.pattern
        out = np.empty(pat.N)
        blocks = self.lead_inverse_blocks()
        out[pat.lead] = np.diagonal(blocks, axis1=1, axis2=2).ravel()
        out[pat.rest] = np.diag(self.rest_inverse)
        return out


class GramPattern:
    """Dᵀ diag(w) D + diag(penalty) for a sparse D of fixed pattern, into the parts of an
    :class:`EliminationPattern` (the Newton matrix of PIRLS).

    The pairs of entries of D that share a row (an observation) are listed once with where
    their product lands (a level block of the leading factor, an entry of B, or of the dense
    rest); each numeric call is then three weighted ``bincount`` passes, without building
    sparse matrices.

    Parameters
    ----------
    design : sparse matrix, n × N
        D's structural pattern; :meth:`parts` takes its values in ``self.design``'s CSR order.
    elimination : EliminationPattern
        Analysed on a pattern that holds Dᵀ D (and the diagonal).

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> D = sp.csr_matrix(np.array([[1.0, 0, 2], [0, 1.0, 1], [1.0, 0, 1]]))
    >>> elim = EliminationPattern(D.T @ D + sp.identity(3), lead=np.array([0, 1]))
    >>> gram = GramPattern(D, elim)
    >>> w, pen = np.array([1.0, 2.0, 0.5]), np.ones(3)
    >>> f = elim.factor(parts=gram.parts(gram.design.data, w, pen))
    >>> H = D.T @ sp.diags(w) @ D + sp.identity(3)
    >>> bool(np.isclose(f.logdet, np.linalg.slogdet(H.toarray())[1]))
    True
    """

    def __init__(self, design: sp.spmatrix, elimination: EliminationPattern) -> None:
        D = sp.csr_matrix(design)
        D.sort_indices()
        self.design = D
        el = self.elimination = elimination
        e1, e2 = _level_pairs(D.indptr.astype(np.int64))
        self.n_pairs = e1.size
        obs = np.repeat(np.arange(D.shape[0]), np.diff(D.indptr) ** 2)
        r, c = D.indices[e1].astype(np.int64), D.indices[e2].astype(np.int64)
        pos, is_lead, m = el._pos, el._is_lead, el.m
        rl, cl = is_lead[r], is_lead[c]
        ll = rl & cl
        pr, pc = pos[r[ll]], pos[c[ll]]
        self._d = (obs[ll], e1[ll], e2[ll], (pr // m) * m * m + (pr % m) * m + pc % m)
        lr = rl & ~cl
        pr, pc = pos[r[lr]], pos[c[lr]]
        slot = el.union_slots(pr // m, pc)
        self._b = (obs[lr], e1[lr], e2[lr], (pr % m) * el.n_union + slot)
        rr = ~rl & ~cl
        self._e = (obs[rr], e1[rr], e2[rr], pos[r[rr]] * el.n_rest + pos[c[rr]])
        self._lead_diag = (np.arange(el.n_lead) // m, np.arange(el.n_lead) % m)

    def parts(
        self, data: np.ndarray, w: np.ndarray, penalty: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(D blocks, B values, dense E) of Dᵀ diag(w) D + diag(penalty).

        ``data``: D's values in ``self.design``'s CSR order; ``penalty``: length N.
        """
        el = self.elimination
        m, nr = el.m, el.n_rest
        out = []
        for (obs, a, b, slot), size in (
            (self._d, el.n_levels * m * m),
            (self._b, m * el.n_union),
            (self._e, nr * nr),
        ):
            summed = np.bincount(slot, weights=w[obs] * data[a] * data[b], minlength=size)
            out.append(summed.astype(float, copy=False))  # int64 when there are no pairs
        Dp = out[0].reshape(el.n_levels, m, m)
        Dp[self._lead_diag[0], self._lead_diag[1], self._lead_diag[1]] += penalty[el.lead]
        Ep = out[2].reshape(nr, nr)
        Ep[np.arange(nr), np.arange(nr)] += penalty[el.rest]
        return Dp, out[1].reshape(m, el.n_union), Ep
