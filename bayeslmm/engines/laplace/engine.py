"""Laplace-approximation maximum likelihood for GLMMs, as lme4's ``glmer`` (nAGQ = 1).

Model (Poisson log, Bernoulli / binomial logit or probit)::

    η = Xβ + offset + Σ_k Z_k u_k,   u_k = θ_k R_k b_k,   b_k ~ N(0, I),

with R_k a square root of the term's covariance structure (R_k R_kᵀ = K_k for a kinship term,
from the cached eigendecomposition K = U S Uᵀ: R = U √S; R = I for iid levels). Stacking the
terms, ZΛ = [θ_1 Z_1 R_1, …] is the "spherical" design of lme4 (Bates et al. 2015, J. Stat.
Softw. 67(1), section 3; lme4's ``vignette("PIRLSmod")``), and θ_k is the standard deviation.
A correlated block ``(1 + x | g)`` has Cov(u) = Σ ⊗ K with Σ = T Tᵀ, T lower triangular: its
coefficients' designs are mixed, coefficient c of the spherical design being
Σ_j T_jc Z_j R, and its θ are T's lower triangle by columns (lme4's ``getME(fit, "theta")``).

For given (θ, β), penalised iteratively reweighted least squares (Newton steps with Fisher
weights W, step halving) finds the conditional mode b* of the joint density
p(y | β, b) N(b; 0, I). The Laplace deviance, exactly lme4's ``glmerLaplace`` criterion
(``aic() + ldL2 + sqrL``), is::

    d(θ, β) = −2 log p(y | β, b*) + ‖b*‖² + log det(Λᵀ Zᵀ W Z Λ + I),

with the full log-likelihood (normalising constants included, as R's ``family()$aic``).
As ``glmer``, the fit has two stages: (1) θ alone, with β and b jointly at their penalised
mode (nAGQ = 0, criterion without the β log-determinant), for starting values; (2) (θ, β)
jointly with b* inside. The outer optimiser is L-BFGS-B on central-difference gradients,
unbounded in θ (the deviance is even in each θ_k, and |θ| is reported), polished by Newton
steps on a finite-difference Hessian; a stop with some θ_k = 0 is retried from positive
values (lme4's ``restart_edge``). Standard errors of β come from that Hessian as lme4's
default ``vcov`` (``use.hessian = TRUE``): the β block of 2 H⁻¹, H the Hessian of d over
(θ, β).

Linear algebra: iid terms alone give a sparse design; their Newton matrix is assembled from
pairs of design entries analysed once per problem and factored with the largest term
eliminated first and a dense Cholesky factor of the rest (:mod:`bayeslmm.engines.sparse_cholesky`;
correlated terms use SciPy's sparse products and SuperLU); a
kinship term makes it dense, and an observation-level effect (``Poisson(overdispersion=
True)``, the default) is then kept as an implicit identity block eliminated through the
Schur complement, so each Newton step costs O(n r²) for a kinship of rank r instead of
O(n (r + n)²).

Kinship terms are handled by the Cholesky-substitution idea of lme4qtl / pedigreemm
(Z* = Z R); the Laplace approximation is the same for every square root R of K.
"""

from __future__ import annotations

import copy
import time
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.linalg as la
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy import optimize

from bayeslmm.engines.sparse_cholesky import EliminationPattern, GramPattern
from bayeslmm.errors import DataError, SpecificationError, preview
from bayeslmm.families import Family
from bayeslmm.results.estimate import ParameterLayout
from bayeslmm.results.laplace_result import LaplaceFit
from bayeslmm.spec import ModelSpec

__all__ = ["LaplaceFit", "LaplaceProblem", "fit_laplace"]

#: Group label of the observation-level random effect added for ``Poisson(overdispersion=True)``.
OLRE = "olre"


@dataclass(frozen=True)
class _Block:
    """One variance parameter θ_k: columns ``cols`` of the spherical design."""

    grp: str
    var1: str
    kinship: str | None
    levels: tuple[str, ...]
    root: np.ndarray | None  # R_k (q × r) for kinship terms; None: iid
    cols: slice


class _Factor:
    """Cholesky (dense) or sparse LU factor of a symmetric positive-definite matrix."""

    def __init__(self, H: np.ndarray | sp.spmatrix) -> None:
        if sp.issparse(H):
            self._lu = spla.splu(
                sp.csc_matrix(H),
                permc_spec="MMD_AT_PLUS_A",
                diag_pivot_thresh=0.0,
                options={"SymmetricMode": True},
            )
            self.logdet = float(np.sum(np.log(np.abs(self._lu.U.diagonal()))))
            self._dense = None
        else:
            self._dense = la.cho_factor(H, lower=True, check_finite=False)
            self.logdet = 2.0 * float(np.sum(np.log(np.diag(self._dense[0]))))
            self._lu = None

    def solve(self, g: np.ndarray) -> np.ndarray:
        if self._dense is not None:
            return la.cho_solve(self._dense, g, check_finite=False)
        return self._lu.solve(g)


#: most observation-level pairs of design entries (Σ_rows nnz²) for which the Newton matrix of
#: iid terms is assembled from precomputed pair lists; beyond, SciPy products and SuperLU
_MAX_GRAM_PAIRS = 20_000_000
#: largest order of the dense Schur complement left after eliminating the largest iid term
_MAX_DENSE_REST = 4000


@dataclass(frozen=True)
class _Plan:
    """Symbolic analysis of one sparse design's Newton matrix, done once per problem."""

    A: sp.csr_matrix  # the unscaled design, fixed pattern
    AT: sp.csr_matrix
    gram: GramPattern


class _ScaledDesign:
    """D = A diag(s) for a sparse A of fixed pattern (iid terms, uncorrelated θ).

    Products never build D, and the Newton matrix Dᵀ W D + diag(penalty) is factored through
    the plan's :class:`~bayeslmm.engines.sparse_cholesky.GramPattern` (the largest term
    eliminated first, a dense Cholesky factor of the rest), whose ordering and pair lists
    are computed once for all PIRLS steps and outer evaluations.
    """

    def __init__(self, plan: _Plan, scale: np.ndarray) -> None:
        self.plan, self.scale = plan, np.asarray(scale, dtype=float)
        self.shape = plan.A.shape

    def __matmul__(self, v: np.ndarray) -> np.ndarray:
        return self.plan.A @ (self.scale * v)

    @property
    def T(self) -> _ScaledDesignT:
        return _ScaledDesignT(self)

    def data(self) -> np.ndarray:
        """D's values in the plan's CSR order."""
        return self.plan.A.data * self.scale[self.plan.A.indices]

    def tocsc(self) -> sp.csc_matrix:
        return (self.plan.A @ sp.diags(self.scale)).tocsc()


class _ScaledDesignT:
    def __init__(self, D: _ScaledDesign) -> None:
        self.D = D

    def __matmul__(self, s: np.ndarray) -> np.ndarray:
        return self.D.scale * (self.D.plan.AT @ s)


class _SplitDesign:
    """A dense design [R | c·I] whose columns ``diag_idx`` are c times the n × n identity.

    An observation-level effect (or any iid term with one level per observation, in data
    order) makes the spherical design n × (r + n); keeping its block implicit lets the
    Newton system be solved through the r × r Schur complement (see :class:`_SchurFactor`)
    instead of an (r + n) × (r + n) Cholesky factor.
    """

    def __init__(self, R: np.ndarray, c: float, rest_idx, diag_idx, ncol: int) -> None:
        self.R, self.c = R, float(c)
        self.rest_idx, self.diag_idx = np.asarray(rest_idx), np.asarray(diag_idx)
        self.shape = (R.shape[0], ncol)

    def __matmul__(self, v: np.ndarray) -> np.ndarray:
        return self.R @ v[self.rest_idx] + self.c * v[self.diag_idx]

    @property
    def T(self) -> _SplitDesignT:
        return _SplitDesignT(self)

    def prepend(self, X: np.ndarray) -> _SplitDesign:
        """[X | self] (stage 1: fixed effects first)."""
        p = X.shape[1]
        return _SplitDesign(
            np.hstack([X, self.R]),
            self.c,
            np.r_[np.arange(p), p + self.rest_idx],
            p + self.diag_idx,
            p + self.shape[1],
        )


class _SplitDesignT:
    def __init__(self, D: _SplitDesign) -> None:
        self.D = D

    def __matmul__(self, s: np.ndarray) -> np.ndarray:
        D = self.D
        out = np.empty(D.shape[1])
        out[D.rest_idx] = D.R.T @ s
        out[D.diag_idx] = D.c * s
        return out


class _SchurFactor:
    """Solve and log-determinant of H = Dᵀ W D + diag(penalty) for D = [R | c I].

    With d = 1 + c² w (the identity block is penalised), eliminating that block leaves
    S = Rᵀ diag(w / d) R + diag(penalty_R), log det H = Σ log d + log det S, and
    δ_R = S⁻¹ (g_R − c Rᵀ (w g_I / d)), δ_I = (g_I − c w (R δ_R)) / d.
    """

    def __init__(self, D: _SplitDesign, w: np.ndarray, penalty: np.ndarray) -> None:
        self.D, self.w = D, w
        self.d = penalty[D.diag_idx] + D.c**2 * w
        S = D.R.T @ ((w / self.d)[:, None] * D.R) + np.diag(penalty[D.rest_idx])
        self._S = _Factor(S)
        self.logdet = float(np.sum(np.log(self.d))) + self._S.logdet

    def solve(self, g: np.ndarray) -> np.ndarray:
        D, w, d = self.D, self.w, self.d
        g_r, g_i = g[D.rest_idx], g[D.diag_idx]
        delta_r = self._S.solve(g_r - D.c * (D.R.T @ (w * g_i / d)))
        out = np.empty_like(g)
        out[D.rest_idx] = delta_r
        out[D.diag_idx] = (g_i - D.c * w * (D.R @ delta_r)) / d
        return out


class LaplaceProblem:
    """The Laplace deviance of a GLMM as a function of (θ, β), for a :class:`ModelSpec`.

    Parameters
    ----------
    spec : ModelSpec
        A non-Gaussian specification (Poisson, Bernoulli, binomial); random terms with one
        coefficient, uncorrelated ones (``(1 + x || g)``) or correlated ones (``(1 + x | g)``,
        θ the lower triangle of T with Σ = T Tᵀ).

    Examples
    --------
    >>> problem = LaplaceProblem(spec)  # doctest: +SKIP
    >>> problem.deviance(theta=[0.6], beta=[-1.4, -1.0, -1.1, -1.6])  # doctest: +SKIP
    184.05
    """

    def __init__(self, spec: ModelSpec) -> None:
        fam = spec.family
        if fam.is_gaussian:
            raise SpecificationError(
                "The Laplace engine is for Poisson, Bernoulli and binomial models; fit a "
                "Gaussian model with the REML engine (bayeslmm.engines.reml)."
            )
        self.spec = spec
        self.family: Family = fam
        self.y = np.asarray(spec.y, dtype=float)
        self.X = np.asarray(spec.X, dtype=float)
        self.n, self.p = self.X.shape
        self.offset = np.zeros(self.n) if spec.offset is None else np.asarray(spec.offset)
        self.trials = None if spec.trials is None else np.asarray(spec.trials, dtype=float)
        blocks, columns = [], []
        # θ groups: one SD per block, or the lower triangle of T for a correlated term
        groups: list[tuple[int, ...]] = []
        start = 0
        for term in spec.terms:
            if term.n_coef > 1 and term.correlated:
                groups.append(tuple(range(len(blocks), len(blocks) + term.n_coef)))
            else:
                groups.extend((k,) for k in range(len(blocks), len(blocks) + term.n_coef))
            for j, cov in enumerate(term.covariates):
                Z = term.z(j)
                root = None
                if term.kinship is not None:
                    # R Rᵀ = K without the eigenvalues that are rounding of zero (Kinship.root)
                    root = term.kinship.root().factor
                    A = np.asarray(Z @ root)
                else:
                    A = Z.tocsc()
                width = A.shape[1]
                blocks.append(
                    _Block(
                        grp=term.group,
                        var1="(Intercept)" if cov == "Intercept" else cov,
                        kinship=None if term.kinship is None else term.kinship.name,
                        levels=term.levels,
                        root=root,
                        cols=slice(start, start + width),
                    )
                )
                columns.append(A)
                start += width
        if fam.has_observation_level_effect:
            groups.append((len(blocks),))
            blocks.append(
                _Block(
                    OLRE,
                    "(Intercept)",
                    None,
                    tuple(map(str, range(self.n))),
                    None,
                    slice(start, start + self.n),
                )
            )
            columns.append(sp.identity(self.n, format="csc"))
            start += self.n
        if not blocks:
            raise SpecificationError(
                "The model has no random effects; the Laplace engine needs at least one "
                "random term, e.g. (1 | id). Fit a GLM instead."
            )
        self.blocks = tuple(blocks)
        self.q = start
        self.dense = any(not sp.issparse(A) for A in columns)
        self._diag_block: int | None = None
        if self.dense:
            identity = [
                k
                for k, A in enumerate(columns)
                if sp.issparse(A)
                and A.shape == (self.n, self.n)
                and A.nnz == self.n
                and np.array_equal(A.indices, np.arange(self.n))
                and np.all(A.data == 1.0)
                and (k,) in groups  # an SD of its own, not a coefficient of a T
            ]
            if identity:
                self._diag_block = identity[-1]
            rest = [A for k, A in enumerate(columns) if k != self._diag_block]
            self.A = np.hstack([A if not sp.issparse(A) else A.toarray() for A in rest])
            if self._diag_block is not None:
                cols = blocks[self._diag_block].cols
                self._diag_idx = np.arange(cols.start, cols.stop)
                self._rest_idx = np.setdiff1d(np.arange(start), self._diag_idx)
        else:
            self.A = sp.hstack(columns, format="csc")
        self.groups = tuple(groups)
        #: for each θ entry: (group, j, c), the entry T_jc of its group (j = c = 0: an SD)
        self.theta_entries = tuple(
            (g, j, c)
            for g, members in enumerate(self.groups)
            for c in range(len(members))
            for j in range(c, len(members))
        )
        self.n_theta = len(self.theta_entries)
        self.correlated = any(len(members) > 1 for members in self.groups)
        self._b = np.zeros(self.q)
        self._beta_b = np.zeros(self.p + self.q)
        self.n_evals = 0
        self._plans: dict[str, _Plan | None] = {}
        self._log_constant: float | None = None

    def centred(self) -> tuple[LaplaceProblem, np.ndarray | None]:
        """A copy whose covariates are centred on the intercept, and A with X_centred = X A.

        The copy's deviance at (θ, β̃) is this problem's at (θ, A β̃), A unit triangular; a
        covariate with a huge mean relative to its spread (a year, a position in base pairs)
        otherwise makes the Newton matrices numerically singular. Without a constant column
        (or with nothing to centre) the problem itself and None.
        """
        X = self.X
        if self.n < 2 or self.p < 2:
            return self, None
        constant = np.flatnonzero(np.all(X == X[0], axis=0) & (X[0] != 0))
        if constant.size == 0:
            return self, None
        c = int(constant[0])
        A = np.eye(self.p)
        A[c] = -X.mean(axis=0) / X[0, c]
        A[c, c] = 1.0
        if np.array_equal(A, np.eye(self.p)):
            return self, None
        other = copy.copy(self)
        other.X = X @ A
        other._plans = {}  # the stage-1 design holds X
        return other, A

    def check_separation(self) -> None:
        """Refuse fixed effects that separate the outcomes: their ML estimates are infinite.

        Separation (complete or quasi-complete; Albert & Anderson 1984) is a direction β ≠ 0
        with Xβ ≤ 0 wherever y is 0, Xβ ≥ 0 wherever y is at its maximum (every trial a
        success) and Xβ = 0 elsewhere, not 0 everywhere: moving along it never lowers the
        likelihood, so the optimiser runs off to ±∞ and reports huge estimates and SEs. The
        linear programme of Konis (2007) finds such a direction; penalised random effects
        cannot absorb it.
        """
        if self.p == 0:
            return
        lower = self.y == 0
        upper = np.zeros(self.n, dtype=bool)
        if self.family.binary_trials:
            upper = self.y == (1.0 if self.trials is None else self.trials)
        if not (lower.any() or upper.any()):
            return
        scale = np.abs(self.X).max(axis=0)
        Xs = self.X / np.where(scale > 0, scale, 1.0)
        interior = ~(lower | upper)
        res = optimize.linprog(
            c=Xs[lower].sum(axis=0) - Xs[upper].sum(axis=0),
            A_ub=np.vstack([Xs[lower], -Xs[upper]]),
            b_ub=np.zeros(int(lower.sum() + upper.sum())),
            A_eq=Xs[interior] if interior.any() else None,
            b_eq=np.zeros(int(interior.sum())) if interior.any() else None,
            bounds=[(-1.0, 1.0)] * self.p,
            method="highs",
        )
        if res.status != 0 or -res.fun <= 1e-7 * self.n:
            return
        direction = np.asarray(res.x)
        names = [
            nm for nm, b in zip(self.spec.fixed_names, direction, strict=True) if abs(b) > 1e-6
        ]
        which = "only failures or only successes" if upper.any() else "zero counts"
        rows = np.flatnonzero((lower | upper) & (np.abs(Xs @ direction) > 1e-9))
        raise DataError(
            f"The fixed effects {names} separate the outcomes: the records with {which} "
            f"(rows {preview(rows.tolist())}) can be fitted exactly by moving "
            "these coefficients towards ±infinity, so their maximum-likelihood estimates do not "
            "exist (perfect or quasi-complete separation). Remove or merge those columns (e.g. "
            "a factor level with no events), or use method='nuts', whose priors keep the "
            "estimates finite."
        )

    # -- θ: SDs and Cholesky factors ------------------------------------------------------
    @property
    def diagonal(self) -> np.ndarray:
        """Which θ entries are SDs or diagonals of T (bounded below by 0 in lme4)."""
        return np.array([j == c for _, j, c in self.theta_entries], dtype=bool)

    def theta_start(self) -> np.ndarray:
        """lme4's start: every SD 1, every T the identity."""
        return self.diagonal.astype(float)

    def canonical(self, theta: np.ndarray) -> np.ndarray:
        """The same covariances with non-negative SDs and diagonals of T.

        The deviance is even in an SD, and unchanged when a column of T changes sign
        (b_c → −b_c): the unbounded search may end on either sign.
        """
        theta = np.array(theta, dtype=float)
        for k, (g, j, c) in enumerate(self.theta_entries):
            if j == c and theta[k] < 0:
                column = [i for i, (h, _, cc) in enumerate(self.theta_entries) if (h, cc) == (g, c)]
                theta[column] = -theta[column]
        return theta

    def cholesky(self, theta: np.ndarray) -> list[np.ndarray]:
        """T of each θ group (1 × 1 for an SD)."""
        out = [np.zeros((len(m), len(m))) for m in self.groups]
        for value, (g, j, c) in zip(theta, self.theta_entries, strict=True):
            out[g][j, c] = value
        return out

    def entry_name(self, k: int) -> str:
        """The variance component θ entry k (a diagonal) belongs to, e.g. ``"g"``."""
        g, j, _ = self.theta_entries[k]
        return _name(self.blocks, self.groups[g][j])

    def _lambda(self, theta: np.ndarray) -> sp.csc_matrix:
        """Λ(θ), q × q: θ I on an SD's columns, T ⊗ I on a correlated block's."""
        rows, cols, vals = [], [], []
        for T, members in zip(self.cholesky(theta), self.groups, strict=True):
            for j, bj in enumerate(members):
                for c, bc in enumerate(members[: j + 1]):
                    if T[j, c] == 0.0:
                        continue
                    rj, rc = self.blocks[bj].cols, self.blocks[bc].cols
                    rows.append(np.arange(rj.start, rj.stop))
                    cols.append(np.arange(rc.start, rc.stop))
                    vals.append(np.full(rj.stop - rj.start, T[j, c]))
        if not rows:
            return sp.csc_matrix((self.q, self.q))
        return sp.csc_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=(self.q, self.q),
        )

    # -- linear algebra helpers ---------------------------------------------------------
    def _col_theta(self, theta: np.ndarray) -> np.ndarray:
        out = np.empty(self.q)
        for blk, th in zip(self.blocks, theta, strict=True):
            out[blk.cols] = th
        return out

    def spherical_design(self, theta: np.ndarray):
        """ZΛ(θ), n × q: sparse for iid terms, dense with a kinship term (an identity block,
        e.g. the observation-level effect, then stays implicit: :class:`_SplitDesign`)."""
        if self.correlated:
            return self._mixed_design(np.asarray(theta, dtype=float))
        scale = self._col_theta(np.asarray(theta, dtype=float))
        if self.dense:
            if self._diag_block is None:
                return self.A * scale
            return _SplitDesign(
                self.A * scale[self._rest_idx],
                theta[self._diag_block],
                self._rest_idx,
                self._diag_idx,
                self.q,
            )
        plan = self._plan("mode")
        if plan is not None:
            return _ScaledDesign(plan, scale)
        return (self.A @ sp.diags(scale)).tocsc()

    def _plan(self, kind: str) -> _Plan | None:
        """The symbolic analysis of the sparse design ZΛ (``"mode"``) or [X, ZΛ]
        (``"nagq0"``), computed on first use; None where it does not pay (see the limits)."""
        if kind in self._plans:
            return self._plans[kind]
        plan = None
        if not self.dense and not self.correlated:
            base = self.A if kind == "mode" else sp.hstack([sp.csc_matrix(self.X), self.A])
            A = sp.csr_matrix(base)
            A.sort_indices()
            offset = 0 if kind == "mode" else self.p
            sizes = [blk.cols.stop - blk.cols.start for blk in self.blocks]
            cols = self.blocks[int(np.argmax(sizes))].cols
            lead = offset + np.arange(cols.start, cols.stop)
            pairs = int(np.sum(np.diff(A.indptr).astype(np.int64) ** 2))
            if pairs <= _MAX_GRAM_PAIRS and A.shape[1] - lead.size <= _MAX_DENSE_REST:
                # |A|ᵀ|A|: centred covariates can sum to an exact 0 over a level
                structural = abs(A)
                elim = EliminationPattern(structural.T @ structural + sp.identity(A.shape[1]), lead)
                plan = _Plan(A, A.T.tocsr(), GramPattern(A, elim))
        self._plans[kind] = plan
        return plan

    def _mixed_design(self, theta: np.ndarray):
        """ZΛ(θ) with correlated blocks: Z times the sparse Λ (lme4's ``Lambdat``)."""
        Lam = self._lambda(theta)
        if not self.dense:
            return (self.A @ Lam).tocsc()
        if self._diag_block is None:
            return np.asarray((Lam.T @ self.A.T).T)
        rest = Lam[self._rest_idx][:, self._rest_idx]
        return _SplitDesign(
            np.asarray((rest.T @ self.A.T).T),
            theta[self.theta_entries.index((self._group_of(self._diag_block), 0, 0))],
            self._rest_idx,
            self._diag_idx,
            self.q,
        )

    def _group_of(self, block: int) -> int:
        return next(g for g, members in enumerate(self.groups) if block in members)

    def _factor(self, D, w: np.ndarray, penalty: np.ndarray):
        """Factor of the Newton matrix Dᵀ diag(w) D + diag(penalty)."""
        if isinstance(D, _SplitDesign):
            return _SchurFactor(D, w, penalty)
        if isinstance(D, _ScaledDesign):
            gram = D.plan.gram
            try:
                return gram.elimination.factor(parts=gram.parts(D.data(), w, penalty))
            except np.linalg.LinAlgError:
                D = D.tocsc()  # not positive definite in rounding: SuperLU's pivoting
        H = self._cross(D, w)
        return _Factor(H + (sp.diags(penalty) if sp.issparse(H) else np.diag(penalty)))

    def _cross(self, D, w: np.ndarray):
        """Dᵀ diag(w) D."""
        if sp.issparse(D):
            return (D.T @ sp.diags(w) @ D).tocsc()
        return D.T @ (w[:, None] * D)

    def _pen_deviance(self, eta: np.ndarray, b: np.ndarray) -> float:
        # the family's η-dependent kernel plus its constant, summed once (gammaln of y and
        # the trials does not change across PIRLS steps)
        if self._log_constant is None:
            self._log_constant = float(np.sum(self.family.log_constant(self.y, self.trials)))
        kernel, _ = self.family.loglik_kernel(self.y, eta, self.trials)
        return float(-2.0 * (kernel + self._log_constant) + b @ b)

    def _newton(self, D, eta0: np.ndarray, n_pen: int, v0: np.ndarray, tol: float = 1e-8):
        """Maximise log p(y | η) − ½‖v_pen‖² over v, η = η0 + D v (the last ``n_pen``
        coordinates of v are penalised). Returns v, η and the number of steps."""
        fam, y, trials = self.family, self.y, self.trials
        n_free = v0.size - n_pen
        penalty = np.r_[np.zeros(n_free), np.ones(n_pen)]
        v = v0.copy()
        eta = eta0 + D @ v
        obj = self._pen_deviance(eta, v[n_free:])
        for it in range(200):
            w = fam.fisher_weight(eta, trials)
            g = D.T @ fam.score(y, eta, trials) - penalty * v
            delta = self._factor(D, w, penalty).solve(g)
            if np.max(np.abs(delta)) < tol * (1.0 + np.max(np.abs(v))):
                # one last full step: Newton's quadratic convergence leaves an error of
                # order |delta|², so the deviance no longer depends on the warm start (the
                # finite-difference Hessian divides its noise by h²)
                v = v + delta
                return v, eta0 + D @ v, it + 1
            step = 1.0
            while True:
                v_new = v + step * delta
                eta_new = eta0 + D @ v_new
                obj_new = self._pen_deviance(eta_new, v_new[n_free:])
                if obj_new <= obj + 1e-13 * abs(obj):
                    break
                step *= 0.5
                if step < 1e-8:  # no further decrease possible at machine precision
                    return v, eta, it
            v, eta, obj = v_new, eta_new, obj_new
        return v, eta, 200

    def _laplace_terms(self, M, eta: np.ndarray, b: np.ndarray) -> tuple[float, float]:
        """Penalised deviance and log det(MᵀWM + I) at the mode."""
        w = self.family.fisher_weight(eta, self.trials)
        return self._pen_deviance(eta, b), self._factor(M, w, np.ones(self.q)).logdet

    # -- criteria --------------------------------------------------------------------------
    def mode(self, theta: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Conditional mode b* (spherical scale) and η at (θ, β)."""
        theta, beta = np.asarray(theta, dtype=float), np.asarray(beta, dtype=float)
        M = self.spherical_design(theta)
        eta0 = self.X @ beta + self.offset
        b, eta, _ = self._newton(M, eta0, self.q, self._b)
        self._b = b
        return b, eta

    def deviance(self, theta: np.ndarray, beta: np.ndarray) -> float:
        """The Laplace deviance d(θ, β) = −2 × (Laplace log-likelihood)."""
        self.n_evals += 1
        b, eta = self.mode(theta, beta)
        M = self.spherical_design(theta)
        pen, logdet = self._laplace_terms(M, eta, b)
        return pen + logdet

    def deviance_nagq0(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """Stage-1 criterion: β and b at their joint penalised mode (lme4's nAGQ = 0).

        Returns the deviance and β at the mode.
        """
        self.n_evals += 1
        theta = np.asarray(theta, dtype=float)
        M = self.spherical_design(theta)
        if isinstance(M, _ScaledDesign) and self._plan("nagq0") is not None:
            D = _ScaledDesign(self._plan("nagq0"), np.r_[np.ones(self.p), M.scale])
        elif isinstance(M, _ScaledDesign):
            D = sp.hstack([sp.csc_matrix(self.X), M.tocsc()], format="csc")
        elif sp.issparse(M):
            D = sp.hstack([sp.csc_matrix(self.X), M], format="csc")
        elif isinstance(M, _SplitDesign):
            D = M.prepend(self.X)
        else:
            D = np.hstack([self.X, M])
        v, eta, _ = self._newton(D, self.offset, self.q, self._beta_b)
        self._beta_b = v
        b = v[self.p :]
        pen, logdet = self._laplace_terms(M, eta, b)
        return pen + logdet, v[: self.p]

    def objective(self, x: np.ndarray) -> float:
        """d over the stacked parameters x = (θ, β)."""
        return self.deviance(x[: self.n_theta], x[self.n_theta :])


# ---------------------------------------------------------------------------------------
# finite differences and optimisation
# ---------------------------------------------------------------------------------------
def _steps(x: np.ndarray, rel: float) -> np.ndarray:
    return rel * np.maximum(1.0, np.abs(x))


def _gradient(f, x: np.ndarray, rel: float = 1e-5) -> np.ndarray:
    h = _steps(x, rel)
    g = np.empty_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e[i] = h[i]
        g[i] = (f(x + e) - f(x - e)) / (2.0 * h[i])
    return g


def _hessian(f, x: np.ndarray, rel: float = 1e-4) -> np.ndarray:
    """Central-difference Hessian (the deviance is even in each θ_k, so steps may cross 0)."""
    h = _steps(x, rel)
    d = x.size
    f0 = f(x)
    H = np.empty((d, d))
    for i in range(d):
        ei = np.zeros(d)
        ei[i] = h[i]
        H[i, i] = (f(x + ei) - 2.0 * f0 + f(x - ei)) / h[i] ** 2
        for j in range(i):
            ej = np.zeros(d)
            ej[j] = h[j]
            H[i, j] = H[j, i] = (
                f(x + ei + ej) - f(x + ei - ej) - f(x - ei + ej) + f(x - ei - ej)
            ) / (4.0 * h[i] * h[j])
    return H


def _lbfgsb(f, x0: np.ndarray, maxiter: int):
    """Unbounded L-BFGS-B: the deviance is even in each θ_k (b_k → −b_k), so θ may cross 0
    and |θ| is the estimate. A bound at 0 would trap the search there: 0 is a stationary
    point of an even function, and central differences see a zero gradient."""
    return optimize.minimize(
        f,
        x0,
        jac=lambda x: _gradient(f, x),
        method="L-BFGS-B",
        options={"maxiter": maxiter, "ftol": 1e-15, "gtol": 1e-8, "maxls": 50},
    )


def _minimize_restart_edge(f, x0: np.ndarray, edge: np.ndarray, maxiter: int):
    """L-BFGS-B, restarted when it stops with some θ_k at 0 while a positive θ_k does better.

    θ = 0 is a stationary point of the even deviance; L-BFGS-B's first step (unit length
    along −g/‖g‖) can land there exactly from θ = 1. This is lme4's ``restart_edge`` idea.
    ``edge`` holds the positions of the SDs and diagonals of T (an off-diagonal entry of T
    at 0 is an ordinary value).
    """
    res = _lbfgsb(f, x0, maxiter)
    n_iter = int(res.nit)
    for _ in range(3):
        x = np.asarray(res.x, dtype=float)
        at_zero = edge[np.abs(x[edge]) < 1e-6]
        if at_zero.size == 0:
            break
        best, best_f = None, float(res.fun)
        for value in (0.05, 0.2, 0.6):
            trial = x.copy()
            trial[at_zero] = value
            ft = f(trial)
            if ft < best_f:
                best, best_f = trial, ft
        if best is None:
            break
        res = _lbfgsb(f, best, maxiter)
        n_iter += int(res.nit)
    return res, n_iter


def _glm_start(problem: LaplaceProblem) -> np.ndarray:
    """β of the GLM without random effects (IRLS), a starting point for stage 1."""
    if problem.p == 0:
        return np.zeros(0)
    beta, _, _ = problem._newton(problem.X, problem.offset, 0, np.zeros(problem.p))
    return beta


def _name(blocks: tuple[_Block, ...], k: int) -> str:
    grp = blocks[k].grp
    same = sum(b.grp == grp for b in blocks)
    return grp if same == 1 else f"{grp}:{blocks[k].var1}"


def fit_laplace(
    spec: ModelSpec,
    start: dict[str, np.ndarray] | None = None,
    maxiter: int = 1000,
) -> LaplaceFit:
    """Fit a GLMM by maximising the Laplace approximation of the likelihood (glmer, nAGQ=1).

    Parameters
    ----------
    spec : ModelSpec
        From :func:`bayeslmm.specify` with ``family="poisson"``, ``"bernoulli"`` or
        ``"binomial"`` (``trials=``). Random terms: iid or kinship; intercepts, uncorrelated
        ``||`` blocks or correlated slopes ``(1 + x | g)``. ``Poisson(overdispersion=True)``
        (the default) adds an observation-level random effect, reported as group ``"olre"``.
    start : dict, optional
        ``{"theta": ..., "beta": ...}`` to skip stage 1 and start stage 2 there.
    maxiter : int
        Iteration limit of each L-BFGS-B stage.

    Returns
    -------
    LaplaceFit

    Examples
    --------
    >>> import pandas as pd, bayeslmm
    >>> df = pd.read_csv("tests/golden/glmer/cbpp.csv",
    ...                  dtype={"herd": str, "period": str})  # doctest: +SKIP
    >>> spec = bayeslmm.specify("incidence ~ period + (1|herd)", df,
    ...                         family="binomial", trials="size")  # doctest: +SKIP
    >>> fit = fit_laplace(spec)  # doctest: +SKIP
    >>> round(fit.loglik, 3)  # doctest: +SKIP
    -92.026
    """
    t0 = time.perf_counter()
    problem = LaplaceProblem(spec)
    problem.check_separation()
    # optimise over the coefficients of centred covariates; β = A β̃ at the end
    problem, A = problem.centred()
    nt, p = problem.n_theta, problem.p
    diagonal = problem.diagonal
    edge = np.flatnonzero(diagonal)
    messages: list[str] = []
    n_iter = 0
    if start is None:
        # stage 1: θ alone, β and b at their joint penalised mode (glmer's nAGQ = 0 stage)
        beta0 = _glm_start(problem)
        problem._beta_b = np.r_[beta0, np.zeros(problem.q)]
        res1, it1 = _minimize_restart_edge(
            lambda th: problem.deviance_nagq0(th)[0], problem.theta_start(), edge, maxiter
        )
        n_iter += it1
        theta0 = problem.canonical(res1.x)
        _, beta0 = problem.deviance_nagq0(theta0)
        problem._b = problem._beta_b[p:].copy()
    else:
        theta0 = np.asarray(start["theta"], dtype=float)
        beta0 = np.asarray(start["beta"], dtype=float)
        if A is not None:
            beta0 = np.linalg.solve(A, beta0)
    # stage 2: (θ, β) jointly with b* inside
    x0 = np.r_[theta0, beta0]
    res2, it2 = _minimize_restart_edge(problem.objective, x0, edge, maxiter)
    n_iter += it2
    x = np.asarray(res2.x, dtype=float)
    x[:nt] = problem.canonical(x[:nt])
    f = problem.objective(x)
    if not res2.success:
        messages.append(f"L-BFGS-B: {res2.message}")
    # Newton polish on the interior coordinates (θ at 0 stays there). The finite-difference
    # Hessian costs O(d²) deviances, a gradient O(d): steps reuse the first Hessian (near the
    # optimum it changes little), and it is recomputed at the final point for the SEs unless
    # the polish moved less than its own finite-difference step resolves (1e-5 relative).
    H = _hessian(problem.objective, x)
    x_hessian = x.copy()
    for _ in range(10):
        free = np.r_[~diagonal | (x[:nt] > 1e-6), np.ones(p, dtype=bool)]
        g = _gradient(problem.objective, x)
        try:
            step = np.zeros_like(x)
            step[free] = -np.linalg.solve(H[np.ix_(free, free)], g[free])
        except np.linalg.LinAlgError:
            break
        if np.max(np.abs(step)) < 1e-10:
            break
        x_new = x + step
        x_new[:nt] = problem.canonical(x_new[:nt])
        f_new = problem.objective(x_new)
        if f_new > f:
            break
        x, f = x_new, f_new
    if np.max(np.abs(x - x_hessian) / (1.0 + np.abs(x)), initial=0.0) > 1e-5:
        H = _hessian(problem.objective, x)
    g = _gradient(problem.objective, x)
    free = np.r_[~diagonal | (x[:nt] > 1e-6), np.ones(p, dtype=bool)]
    grad_norm = float(np.max(np.abs(g[free]))) if free.any() else 0.0
    converged = grad_norm < 1e-3
    if not converged:
        messages.append(f"max |gradient| of the deviance = {grad_norm:.2e} at the optimum")
    try:
        cov = 2.0 * np.linalg.inv(H)
        cov = 0.5 * (cov + cov.T)
        if np.any(np.diag(cov) < 0):
            raise np.linalg.LinAlgError
    except np.linalg.LinAlgError:
        cov = np.full_like(H, np.nan)
        messages.append("the Hessian of the deviance is not positive definite: no SEs")
    theta, beta = x[:nt], x[nt:]
    at_zero = np.flatnonzero(diagonal & (theta < 1e-6))
    if at_zero.size:
        # A variance at its boundary 0 is not a regular estimate: say so, as REML and lme4
        # do, rather than let a standard error of 0 (2θ·SE) stand for it. The deviance is even
        # in θ_k, so H has no θ_k–β cross terms there and the other parameters' SEs are those
        # of the model without the term.
        from bayeslmm.engines.reml import BoundaryFitWarning

        notes = [f"variance of {problem.entry_name(k)} is estimated at 0" for k in at_zero]
        messages.extend(notes)
        warnings.warn(
            "boundary (singular) fit: " + "; ".join(notes) + " (a variance on the boundary "
            "has no standard error; the other estimates' are those of the model without it). "
            "Consider dropping the term (see lme4's ?isSingular).",
            BoundaryFitWarning,
            stacklevel=2,
        )
    # conditional modes at the optimum
    b, _ = problem.mode(theta, beta)
    f = problem.deviance(theta, beta)
    if A is not None:
        J = la.block_diag(np.eye(nt), A)
        beta, cov = A @ beta, J @ cov @ J.T

    names = ["(Intercept)" if nm == "Intercept" else nm for nm in spec.fixed_names]
    beta_se = np.sqrt(np.diag(cov)[nt:])
    fe = pd.DataFrame({"estimate": beta, "se": beta_se, "z": beta / beta_se}, index=pd.Index(names))
    ranef: dict[str, pd.DataFrame] = {}
    # u of coefficient j of a group: Σ_c T_jc R b_c (R = I for iid levels)
    T = problem.cholesky(theta)
    for k, blk in enumerate(problem.blocks):
        g = problem._group_of(k)
        j = problem.groups[g].index(k)
        u = np.zeros(len(blk.levels))
        for c, kc in enumerate(problem.groups[g][: j + 1]):
            bc = b[problem.blocks[kc].cols]
            u = u + T[g][j, c] * (bc if blk.root is None else blk.root @ bc)
        key = _name(problem.blocks, k)
        ranef[key] = pd.DataFrame({blk.var1: u}, index=pd.Index(blk.levels, name=blk.grp))
    return LaplaceFit(
        formula=spec.formula,
        family=spec.family.name,
        link=spec.family.link,
        n_obs=spec.n_obs,
        theta=theta,
        beta=beta,
        parameter_cov=cov,
        deviance=float(f),
        fixed_table=fe,
        random_effects=ranef,
        converged=converged,
        n_iter=n_iter,
        n_evals=problem.n_evals,
        messages=tuple(messages),
        timing={"total_s": time.perf_counter() - t0},
        spec=spec,
        layout=_layout(spec, problem),
    )


def _layout(spec: ModelSpec, problem: LaplaceProblem) -> ParameterLayout:
    """(θ, β): per term, one SD per coefficient, or the lower triangle of T (by columns) for
    a correlated term, then the observation-level SD: ``sd_entries`` (entries of T, Σ = T Tᵀ).
    """
    entries: list[tuple[int, int, int]] = []
    for t, term in enumerate(spec.terms):
        if term.correlated and term.n_coef > 1:
            m = term.n_coef
            entries.extend((t, j, c) for c in range(m) for j in range(c, m))
        else:
            entries.extend((t, j, j) for j in range(term.n_coef))
    entries = tuple(entries)
    olre = len(entries) if problem.n_theta > len(entries) else None
    return ParameterLayout(
        sigma_entries=entries,
        sd_entries=True,
        residual_rows=None,
        olre=olre,
        beta=slice(problem.n_theta, None),
    )
