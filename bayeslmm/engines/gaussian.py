"""The Gaussian mixed model at given variance parameters: V⁻¹ pieces, BLUPs and their errors.

For a Gaussian model y = Xβ + Σ_t Σ_j Z_tj u_tj + e with vec(u_t) ~ N(0, Σ_t ⊗ K_t) and
e ~ N(0, R), R = diag(r), the marginal covariance is

    V = Σ_t Σ_jk Σ_t,jk Z_tj K_t Z_tkᵀ + R = Z G Zᵀ + R,    G = ⊕_t Σ_t ⊗ K_t,

with the random effects ordered term by term, coefficient by coefficient, level by level.
Predictions, the marginal (leave-one-out) likelihood, SNP effects and the conditional AIC of
the results layer ask questions of V at a fit's parameters; the answers are written here,
once, and reach the results layer (which imports no engine) through
:func:`bayeslmm.results.algebra.gaussian_algebra`.

Two ways to apply V⁻¹ (:func:`v_solver`):

- *spectral*: one intercept-only kinship term and one residual variance. With
  Z K Zᵀ = U diag(s) Uᵀ (computed once per term, :func:`~bayeslmm.engines.bayes.basis.
  spectral_basis`), V⁻¹ = U diag(1/(σ_g² s + σ_e²)) Uᵀ: no factorisation per parameter value,
  and many parameter values (posterior draws) at once are two matrix products;
- *dense*: a Cholesky factor of V (any number of terms, slopes, residual variances by row).

Henderson's mixed-model solution at given variances (:func:`henderson`) is written through V:
β̂ = (XᵀV⁻¹X)⁻¹XᵀV⁻¹y, û = G Zᵀ V⁻¹(y − Xβ̂), and the prediction error of a linear function
λ = Lβ β + Lu u (rows of Lβ, Lu) has variance

    Var(λ̂ − λ) = (Lβ − M V⁻¹X) C (Lβ − M V⁻¹X)ᵀ + Lu G Luᵀ − M V⁻¹ Mᵀ,    M = Lu G Zᵀ,

C = (XᵀV⁻¹X)⁻¹ (Henderson 1975: the blocks C^ββ, C^βu, C^uu of the inverse coefficient
matrix, combined).
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp

from bayeslmm.errors import SpecificationError

if TYPE_CHECKING:
    from bayeslmm.kinship import Kinship
    from bayeslmm.spec import ModelSpec, RandomTerm

LOG_2PI = math.log(2.0 * math.pi)

#: Draws handled at once by the batched spectral products (bounds draws × n work arrays).
_CHUNK = 256

# (U∘U) of a term's spectral basis, for diag V⁻¹ = (U∘U) (1/d); one per RandomTerm
_SQUARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# the V⁻¹ basis of a term (VinvBasis); one per RandomTerm
_VINV_BASIS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# Uᵀ(y − offset) and UᵀX of a spectral model; one per ModelSpec
_ROTATED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

#: Above this many draws the spectral V⁻¹ pieces are interpolated in δ = σ_e²/σ_g²
#: (:class:`_SpectralDraws`); below, two matrix products per block of draws cost less.
_INTERPOLATE_FROM = 300

#: A residual variance at or below this share of the summed variances counts as estimated at
#: 0 by the conditional AIC (REML's floor is 1e-10 × var(y)).
RESIDUAL_AT_ZERO = 1e-6


# ---------------------------------------------------------------------------------------
# the random-effect design and covariance
# ---------------------------------------------------------------------------------------


def random_design(spec: ModelSpec) -> sp.csr_matrix:
    """Z = [Z_11, Z_12, …, Z_21, …] (n × Q): term by term, coefficient by coefficient.

    Examples
    --------
    >>> import pandas as pd, bayeslmm as bl
    >>> df = pd.DataFrame({"y": [1.0, 2.0, 0.5, 1.5], "g": ["a", "a", "b", "b"]})
    >>> random_design(bl.specify("y ~ 1 + (1 | g)", df)).toarray().tolist()
    [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]
    """
    blocks = [term.z(j) for term in spec.terms for j in range(term.n_coef)]
    if not blocks:
        return sp.csr_matrix((spec.n_obs, 0))
    return sp.hstack(blocks, format="csr")


def _kernel(term: RandomTerm) -> np.ndarray:
    return np.eye(term.n_levels) if term.kinship is None else np.asarray(term.kinship.matrix)


def prior_covariance(spec: ModelSpec, sigmas: list[np.ndarray]) -> np.ndarray:
    """G = ⊕_t Σ_t ⊗ K_t (Q × Q), in the order of :func:`random_design`.

    Examples
    --------
    >>> import numpy as np, pandas as pd, bayeslmm as bl
    >>> df = pd.DataFrame({"y": [1.0, 2.0, 0.5, 1.5], "g": ["a", "a", "b", "b"]})
    >>> prior_covariance(bl.specify("y ~ 1 + (1 | g)", df), [np.array([[2.0]])]).tolist()
    [[2.0, 0.0], [0.0, 2.0]]
    """
    blocks = [
        np.kron(np.asarray(S, float), _kernel(t)) for S, t in zip(sigmas, spec.terms, strict=True)
    ]
    return sla.block_diag(*blocks) if blocks else np.zeros((0, 0))


def covariance(spec: ModelSpec, sigmas: list[np.ndarray], residual: np.ndarray) -> np.ndarray:
    """The dense marginal covariance V = Z G Zᵀ + diag(residual) (n × n).

    Examples
    --------
    >>> import numpy as np, pandas as pd, bayeslmm as bl
    >>> df = pd.DataFrame({"y": [1.0, 2.0, 0.5, 1.5], "g": ["a", "a", "b", "b"]})
    >>> V = covariance(bl.specify("y ~ 1 + (1 | g)", df), [np.array([[2.0]])], np.ones(4))
    >>> V[0].tolist()
    [3.0, 2.0, 0.0, 0.0]
    """
    n = spec.n_obs
    V = np.diag(np.broadcast_to(np.asarray(residual, float), (n,))).astype(float)
    for S, term in zip(sigmas, spec.terms, strict=True):
        K = _kernel(term)
        S = np.asarray(S, float)
        for j in range(term.n_coef):
            zjK = np.asarray(term.z(j) @ K)  # n × q
            for k in range(term.n_coef):
                if S[j, k] == 0.0:
                    continue
                V += S[j, k] * np.asarray(term.z(k) @ zjK.T).T
    return 0.5 * (V + V.T)


# ---------------------------------------------------------------------------------------
# applying V⁻¹
# ---------------------------------------------------------------------------------------
def spectral_applies(spec: ModelSpec) -> bool:
    """One intercept-only kinship term and one residual variance: V⁻¹ through the
    eigendecomposition of Z K Zᵀ.

    Examples
    --------
    >>> import pandas as pd, bayeslmm as bl
    >>> df = pd.DataFrame({"y": [1.0, 2.0, 0.5, 1.5], "g": ["a", "a", "b", "b"]})
    >>> spectral_applies(bl.specify("y ~ 1 + (1 | g)", df))
    False
    """
    return (
        len(spec.terms) == 1
        and spec.terms[0].kinship is not None
        and spec.terms[0].is_intercept_only
        and bool(np.all(spec.terms[0].design[:, 0] == 1.0))
        and spec.sigma_X is None
    )


def spectral_basis(term: RandomTerm) -> Any:
    """Z K Zᵀ = U diag(s) Uᵀ, computed once per term (the spectral strategy's basis)."""
    # imported here: the Bayesian engine's package is not needed to import this module
    from bayeslmm.engines.bayes.basis import spectral_basis as basis

    return basis(term)


@dataclass(frozen=True)
class VinvBasis:
    """Z K Zᵀ = U diag(s) Uᵀ as the V⁻¹ algebra uses it.

    ``partial`` is False for the full n × n eigenbasis. For a low-rank kinship
    (:class:`~bayeslmm.kinship.LowRankKinship`) U holds only the r eigenvectors with positive
    eigenvalues (n × r, from the observations' markers Z W) and ``partial`` is True: on the
    complement Z K Zᵀ is 0, so with d = σ_g² s + σ_e²

        V⁻¹ = U diag(1/d − 1/σ_e²) Uᵀ + I/σ_e²,   log|V| = Σ log d + (n − r) log σ_e²,

    and nothing n × n is formed.
    """

    vectors: np.ndarray
    values: np.ndarray
    partial: bool


def vinv_basis(term: RandomTerm) -> VinvBasis:
    """The term's :class:`VinvBasis`, computed once per term (the spectral basis, or the
    low-rank kinship's thin SVD of Z W)."""
    cached = _VINV_BASIS.get(term)
    if cached is None:
        from bayeslmm.kinship.low_rank import LowRankKinship

        if isinstance(term.kinship, LowRankKinship):
            observed = term.kinship.expand(term.index)
            cached = VinvBasis(observed.left_vectors, observed.positive_eigenvalues, True)
        else:
            basis = spectral_basis(term)
            cached = VinvBasis(basis.vectors, basis.values, False)
        _VINV_BASIS[term] = cached
    return cached


def _squared_vectors(term: RandomTerm) -> np.ndarray:
    cached = _SQUARED.get(term)
    if cached is None:
        U = vinv_basis(term).vectors
        cached = U * U
        _SQUARED[term] = cached
    return cached


@dataclass(frozen=True)
class VSolver:
    """V⁻¹ at one parameter value: ``solve(b)``, ``inverse_diagonal()``, ``logdet``.

    Built by :func:`v_solver`; ``kind`` is ``"spectral"`` or ``"dense"``.
    """

    kind: str
    n: int
    vectors: np.ndarray | None = None
    d: np.ndarray | None = None
    chol: Any = None
    term: Any = None
    #: σ_e² on the complement of a partial (low-rank) basis; None for a full basis
    complement: float | None = None

    def _weights(self) -> np.ndarray:
        """Per basis vector: 1/d, less 1/σ_e² for a partial basis (its I/σ_e² added apart)."""
        w = 1.0 / self.d
        return w if self.complement is None else w - 1.0 / self.complement

    def solve(self, b: np.ndarray) -> np.ndarray:
        """V⁻¹ b for a vector or an n × k matrix."""
        b = np.asarray(b, dtype=float)
        if self.kind == "spectral":
            w = self._weights()
            out = self.vectors @ ((self.vectors.T @ b) * (w if b.ndim == 1 else w[:, None]))
            return out if self.complement is None else out + b / self.complement
        return sla.cho_solve(self.chol, b, check_finite=False)

    def inverse_diagonal(self) -> np.ndarray:
        """diag V⁻¹."""
        if self.kind == "spectral":
            out = _squared_vectors(self.term) @ self._weights()
            return out if self.complement is None else out + 1.0 / self.complement
        return np.diag(sla.cho_solve(self.chol, np.eye(self.n), check_finite=False)).copy()

    @property
    def logdet(self) -> float:
        if self.kind == "spectral":
            null = 0 if self.complement is None else self.n - self.d.size
            return float(np.sum(np.log(self.d))) + null * math.log(self.complement or 1.0)
        return 2.0 * float(np.sum(np.log(np.diag(self.chol[0]))))


def v_solver(spec: ModelSpec, sigmas: list[np.ndarray], residual: np.ndarray) -> VSolver:
    """V⁻¹ at (Σ_t, residual variances): spectral when :func:`spectral_applies`, else dense.

    Parameters
    ----------
    spec : ModelSpec
        A Gaussian model.
    sigmas : list of ndarray
        Each term's m × m covariance Σ_t.
    residual : ndarray, shape (n,) or scalar
        Residual variance of each observation.

    Examples
    --------
    >>> import numpy as np, pandas as pd, bayeslmm as bl
    >>> K = bl.Kinship(np.array([[1.0, 0.5, 0.5], [0.5, 1.0, 0.25], [0.5, 0.25, 1.0]]),
    ...                ["a", "b", "c"])
    >>> df = pd.DataFrame({"y": [1.0, 2.0, 0.5], "id": ["a", "b", "c"]})
    >>> spec = bl.specify("y ~ 1 + (1 | id)", df, kinship={"id": K})
    >>> solver = v_solver(spec, [np.array([[1.0]])], np.ones(3))
    >>> solver.kind, np.round(solver.solve(np.array([2.0, 1.5, 1.0])), 6).tolist()
    ('spectral', [0.8125, 0.517857, 0.232143])
    """
    residual = np.broadcast_to(np.asarray(residual, float), (spec.n_obs,))
    if spectral_applies(spec) and np.all(residual == residual[0]):
        term = spec.terms[0]
        basis = vinv_basis(term)
        d = float(np.asarray(sigmas[0]).reshape(-1)[0]) * basis.values + residual[0]
        complement = float(residual[0]) if basis.partial else None
        return VSolver(
            "spectral", spec.n_obs, vectors=basis.vectors, d=d, term=term, complement=complement
        )
    V = covariance(spec, sigmas, residual)
    try:
        chol = sla.cho_factor(V, lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        raise SpecificationError(
            "The marginal covariance V of this model is singular at these variance "
            "parameters (a residual variance of 0?); V⁻¹ does not exist."
        ) from None
    return VSolver("dense", spec.n_obs, chol=chol)


def response(spec: ModelSpec) -> np.ndarray:
    """y minus the offset."""
    y = np.asarray(spec.y, dtype=float)
    return y - np.asarray(spec.offset, float) if spec.offset is not None else y


# ---------------------------------------------------------------------------------------
# Henderson's solution at given variances
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Henderson:
    """BLUE β̂, BLUPs û and what their prediction errors need, at given variances.

    Attributes
    ----------
    beta : ndarray (p,)
    cov_beta : ndarray (p, p)
        C = (XᵀV⁻¹X)⁻¹.
    u : ndarray (Q,)
        û = G Zᵀ V⁻¹ (y − Xβ̂), ordered as :func:`random_design`.
    solver : VSolver
    G : ndarray (Q, Q)
    Z : scipy.sparse matrix (n × Q)
    vinv_x : ndarray (n, p)
    """

    beta: np.ndarray
    cov_beta: np.ndarray
    u: np.ndarray
    solver: VSolver
    G: np.ndarray
    Z: Any
    vinv_x: np.ndarray

    def prediction_variance(self, Lb: np.ndarray, Lu: np.ndarray) -> np.ndarray:
        """diag Var(λ̂ − λ) of λ = Lβ β + Lu u (one row per prediction); see the module."""
        Lb = np.asarray(Lb, float)
        Lu = np.asarray(Lu, float)
        GL = self.G @ Lu.T  # Q × N
        M = np.asarray(self.Z @ GL).T  # N × n: Lu G Zᵀ
        vinv_mt = self.solver.solve(M.T)  # n × N
        Q = Lb - M @ self.vinv_x
        var = (
            np.einsum("ij,jk,ik->i", Q, self.cov_beta, Q)
            + np.einsum("ij,ji->i", Lu, GL)
            - np.einsum("ij,ji->i", M, vinv_mt)
        )
        return np.clip(var, 0.0, None)


def henderson(spec: ModelSpec, sigmas: list[np.ndarray], residual: np.ndarray) -> Henderson:
    """Henderson's mixed-model solution (GLS β̂, BLUPs û) at given variances.

    Examples
    --------
    >>> import numpy as np, pandas as pd, bayeslmm as bl
    >>> df = pd.DataFrame({"y": [1.0, 2.0, 0.5, 1.5], "g": ["a", "a", "b", "b"]})
    >>> h = henderson(bl.specify("y ~ 1 + (1 | g)", df), [np.array([[1.0]])], np.ones(4))
    >>> np.round(h.beta, 6).tolist(), np.round(h.u, 6).tolist()
    ([1.25], [0.166667, -0.166667])
    """
    X = np.asarray(spec.X, dtype=float)
    y = response(spec)
    solver = v_solver(spec, sigmas, residual)
    vinv_x = solver.solve(X) if X.shape[1] else np.zeros((spec.n_obs, 0))
    if X.shape[1]:
        cov_beta = np.linalg.inv(X.T @ vinv_x)
        cov_beta = 0.5 * (cov_beta + cov_beta.T)
        beta = cov_beta @ (vinv_x.T @ y)
    else:
        cov_beta, beta = np.zeros((0, 0)), np.zeros(0)
    py = solver.solve(y - X @ beta)
    Z = random_design(spec)
    G = prior_covariance(spec, sigmas)
    u = G @ np.asarray(Z.T @ py).reshape(-1)
    return Henderson(beta, cov_beta, u, solver, G, Z, vinv_x)


# ---------------------------------------------------------------------------------------
# individuals in a kinship without records
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NewLevels:
    """u_new | u_train ~ N(A u_train, σ² S) (per coefficient, Σ ⊗ S for slopes).

    ``A = K_new,train K_train⁺`` (q_new × q_train) and ``root`` a square root of the Schur
    complement S = K_new,new − A K_train,new (``root @ root.T`` = S).
    """

    A: np.ndarray
    root: np.ndarray

    @property
    def schur_diagonal(self) -> np.ndarray:
        return np.einsum("ij,ij->i", self.root, self.root)


def new_levels(
    term: RandomTerm, kinship: Kinship | None, new_ids: list[str] | tuple[str, ...]
) -> NewLevels:
    """The conditional law of the random effects of levels without records.

    For a kinship term, u_new = A u_train + ε with A = K_nt K_tt⁺ and ε ~ N(0, Σ ⊗ S)
    independent of the data, S = K_nn − A K_tn: so E[u_new | y] = A E[u_train | y] (BLUP of
    genotyped animals without phenotypes) and draws of u_new follow from draws of u_train.
    K_tt⁺ uses the training kinship's own eigendecomposition (its root); A is exact because the
    columns of K_tn lie in the range of K_tt for a positive semi-definite K. For an iid term
    (``kinship`` None) A = 0 and S = I.

    Examples
    --------
    >>> import numpy as np, pandas as pd, bayeslmm as bl
    >>> K = bl.Kinship(np.array([[1.0, 0.5, 0.5], [0.5, 1.0, 0.25], [0.5, 0.25, 1.0]]),
    ...                ["a", "b", "c"])
    >>> df = pd.DataFrame({"y": [1.0, 2.0, 0.5], "id": ["a", "a", "b"]})
    >>> term = bl.specify("y ~ 1 + (1 | id)", df, kinship={"id": K}).terms[0]
    >>> nl = new_levels(term, K, ["c"])
    >>> np.round(nl.A, 6).tolist(), np.round(nl.schur_diagonal, 6).tolist()
    ([[0.5, 0.0]], [0.75])
    """
    new_ids = [str(i) for i in new_ids]
    q_new = len(new_ids)
    if term.kinship is None:
        return NewLevels(np.zeros((q_new, term.n_levels)), np.eye(q_new))
    if kinship is None:
        raise SpecificationError(
            f"Levels {list(new_ids)[:5]} of '{term.group}' have no records; their random "
            "effects need the kinship that relates them to the fitted levels."
        )
    full = kinship.subset([*term.levels, *new_ids])
    K = np.asarray(full.matrix)
    q = term.n_levels
    K_nt, K_nn = K[q:, :q], K[q:, q:]
    root = term.kinship.root()
    # K_tt⁺ = V diag(1/s) Vᵀ over the kept eigenpairs
    A = ((K_nt @ root.vectors) / root.values) @ root.vectors.T
    S = K_nn - A @ K_nt.T
    S = 0.5 * (S + S.T)
    w, U = np.linalg.eigh(S)
    w = np.clip(w, 0.0, None)
    return NewLevels(A, U * np.sqrt(w))


# ---------------------------------------------------------------------------------------
# marginal leave-one-out and V⁻¹ (y − Xβ) per draw
# ---------------------------------------------------------------------------------------
def _draw_residuals(spec: ModelSpec, beta: np.ndarray) -> np.ndarray:
    """(N, n): y − offset − Xβ per draw."""
    X = np.asarray(spec.X, dtype=float)
    y = response(spec)
    if X.shape[1] == 0:
        return np.broadcast_to(y, (beta.shape[0], y.size)).copy()
    return y[None, :] - beta @ X.T


def _spectral_draws(spec: ModelSpec, sigmas: list[np.ndarray], residual: np.ndarray) -> bool:
    return (
        spectral_applies(spec)
        and bool(np.all(residual == residual[:, :1]))
        and bool(np.all(np.asarray(sigmas[0]) > 0.0))
        and bool(np.all(residual[:, 0] > 0.0))
    )


def _rotated(spec: ModelSpec) -> tuple[np.ndarray, np.ndarray]:
    """Uᵀ(y − offset) and UᵀX in the term's spectral basis, computed once per spec."""
    cached = _ROTATED.get(spec)
    if cached is None:
        U = vinv_basis(spec.terms[0]).vectors
        cached = (U.T @ response(spec), U.T @ np.asarray(spec.X, dtype=float))
        _ROTATED[spec] = cached
    return cached


@dataclass(frozen=True)
class _SpectralDraws:
    """V⁻¹ pieces of a spectral model at many draws of (σ_g², σ_e², β).

    With δ = σ_e²/σ_g², V⁻¹ = σ_g⁻² U diag(1/(s + δ)) Uᵀ, so

        g = V⁻¹(y − Xβ) = σ_g⁻² (a(δ) − B(δ) β),   a = U D_δ Uᵀ y,  B = U D_δ Uᵀ X,
        c̄ = diag V⁻¹ = σ_g⁻² c(δ),                 c = (U∘U) diag(D_δ),

    functions of the one number δ. A partial (low-rank) basis (:class:`VinvBasis`) adds the
    complement's I/δ: D_δ = diag(1/(s + δ) − 1/δ) and a, B, c gain y/δ, X/δ and 1/δ.
    ``exact``: two (draws × n) · (n × n) products per block
    of draws. ``interpolate``: a, B and c at m + 1 Chebyshev nodes in log δ over the draws'
    range, then the barycentric interpolant at each draw's δ: O(m n²) once and O(m n p) per
    draw instead of O(n²). The functions are analytic in log δ in the strip |Im log δ| < π
    (their poles sit at δ = −s_k ≤ 0), so the interpolant converges geometrically; m doubles
    (16 → 256) until it agrees with the exact values at the m points between the nodes to
    1e-11 relative, else the draws are done exactly.
    """

    spec: Any
    var_g: np.ndarray
    var_e: np.ndarray
    beta: np.ndarray

    def terms(self, method: str = "auto", want_diag: bool = True) -> tuple:
        N = self.var_g.size
        if method == "interpolate" or (method == "auto" and N > _INTERPOLATE_FROM):
            out = self._interpolated(want_diag)
            if out is not None:
                return out
        return self._exact(want_diag)

    def _exact(self, want_diag: bool) -> tuple:
        term = self.spec.terms[0]
        basis = vinv_basis(term)
        U, s = basis.vectors, basis.values
        Uy, UX = _rotated(self.spec)
        N, n = self.var_g.size, self.spec.n_obs
        g = np.empty((N, n))
        cbar = np.empty((N, n)) if want_diag else None
        UU = _squared_vectors(term) if want_diag else None
        residuals = _draw_residuals(self.spec, self.beta) if basis.partial else None
        for lo in range(0, N, _CHUNK):
            hi = min(lo + _CHUNK, N)
            var_e = self.var_e[lo:hi, None]
            w = 1.0 / (self.var_g[lo:hi, None] * s[None, :] + var_e)
            if basis.partial:
                w = w - 1.0 / var_e  # the complement's I/σ_e² is added below
            rotated = Uy[None, :] - self.beta[lo:hi] @ UX.T
            g[lo:hi] = (rotated * w) @ U.T
            if want_diag:
                cbar[lo:hi] = w @ UU.T
            if basis.partial:
                g[lo:hi] += residuals[lo:hi] / var_e
                if want_diag:
                    cbar[lo:hi] += 1.0 / var_e
        return g, cbar

    def _at(self, delta: np.ndarray, want_diag: bool) -> tuple[np.ndarray, np.ndarray]:
        """a, B (stacked: n × (1 + p) × k) and c (n × k) at the values ``delta`` (k,)."""
        term = self.spec.terms[0]
        basis = vinv_basis(term)
        U, s = basis.vectors, basis.values
        Uy, UX = _rotated(self.spec)
        H = 1.0 / (s[:, None] + delta[None, :])  # r × k
        if basis.partial:
            H = H - 1.0 / delta[None, :]
        R = np.column_stack([Uy, UX])  # r × (1 + p)
        AB = (U @ (R[:, :, None] * H[:, None, :]).reshape(U.shape[1], -1)).reshape(
            U.shape[0], R.shape[1], delta.size
        )
        c = _squared_vectors(term) @ H if want_diag else None
        if basis.partial:  # the complement's I/δ
            data = np.column_stack([response(self.spec), np.asarray(self.spec.X, float)])
            AB += data[:, :, None] / delta[None, None, :]
            if want_diag:
                c += 1.0 / delta[None, :]
        return AB, c

    def _interpolated(self, want_diag: bool) -> tuple | None:
        t = np.log(self.var_e / self.var_g)
        lo, hi = float(t.min()), float(t.max())
        if hi - lo < 1e-12:
            lo, hi = lo - 1e-3, hi + 1e-3
        for m in (16, 32, 64, 128, 256):
            nodes = np.cos(np.pi * np.arange(m + 1) / m)  # Chebyshev points, 2nd kind
            tests = np.cos(np.pi * (np.arange(m) + 0.5) / m)
            weights = np.where(np.arange(m + 1) % 2 == 0, 1.0, -1.0)
            weights[[0, -1]] *= 0.5
            x = np.r_[nodes, tests]
            AB, c = self._at(np.exp(lo + (x + 1.0) * 0.5 * (hi - lo)), want_diag)
            basis = _barycentric(nodes, weights, tests)  # m × (m + 1)
            ok = _agrees(np.einsum("jk,nak->naj", basis, AB[..., : m + 1]), AB[..., m + 1 :])
            if want_diag:
                ok = ok and _agrees(c[:, : m + 1] @ basis.T, c[:, m + 1 :])
            if ok:
                break
        else:
            return None
        xs = 2.0 * (t - lo) / (hi - lo) - 1.0
        N, n = self.var_g.size, self.spec.n_obs
        g = np.empty((N, n))
        cbar = np.empty((N, n)) if want_diag else None
        k = AB.shape[1]
        # (m + 1) × ((1 + p) n) and (m + 1) × n: one matrix product per block of draws
        AB_nodes = np.ascontiguousarray(np.moveaxis(AB[..., : m + 1], -1, 0)).reshape(m + 1, -1)
        c_nodes = None if c is None else np.ascontiguousarray(c[:, : m + 1].T)
        for start in range(0, N, _CHUNK):
            stop = min(start + _CHUNK, N)
            W = _barycentric(nodes, weights, xs[start:stop])  # chunk × (m + 1)
            scale = 1.0 / self.var_g[start:stop, None]
            ab = (W @ AB_nodes).reshape(stop - start, n, k)  # a, B at each draw's δ
            coef = np.column_stack([np.ones(stop - start), -self.beta[start:stop]])
            g[start:stop] = scale * np.einsum("dnk,dk->dn", ab, coef)
            if want_diag:
                cbar[start:stop] = scale * (W @ c_nodes)
        return g, cbar


def _barycentric(nodes: np.ndarray, weights: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Rows of the barycentric interpolation matrix at ``x`` (exact at the nodes)."""
    diff = x[:, None] - nodes[None, :]
    exact = diff == 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        W = weights[None, :] / diff
        W = W / W.sum(axis=1, keepdims=True)
    hit = exact.any(axis=1)
    W[hit] = exact[hit].astype(float)
    return W


def _agrees(approx: np.ndarray, exact: np.ndarray, rtol: float = 1e-11) -> bool:
    scale = np.max(np.abs(exact), axis=-1, keepdims=True)
    return bool(np.all(np.abs(approx - exact) <= rtol * np.maximum(scale, 1e-300)))


def blockwise_applies(spec: ModelSpec) -> bool:
    """No random term, or one iid term: V is block-diagonal by level, inverted in closed form.

    Examples
    --------
    >>> import pandas as pd, bayeslmm as bl
    >>> df = pd.DataFrame({"y": [1.0, 2.0, 0.5, 1.5], "g": ["a", "a", "b", "b"]})
    >>> [blockwise_applies(bl.specify(f, df)) for f in ("y ~ 1", "y ~ 1 + (1 | g)")]
    [True, True]
    """
    return not spec.terms or (len(spec.terms) == 1 and spec.terms[0].kinship is None)


def _blockwise_draws(spec: ModelSpec, residual: np.ndarray) -> bool:
    return blockwise_applies(spec) and bool(np.all(residual > 0.0))


def _blockwise_terms(
    spec: ModelSpec,
    sigmas: list[np.ndarray],
    residual: np.ndarray,
    beta: np.ndarray,
    want_diag: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """g = V⁻¹(y − Xβ) and c̄ = diag V⁻¹ per draw when V is block-diagonal by level.

    With R = diag(r) and no random term, V = R: g = e/r, c̄ = 1/r. With one iid term of m
    coefficients (rows a_i of its design), the block of level l is V_l = R_l + A_l Σ A_lᵀ, and
    Woodbury's identity in its push-through form (no Σ⁻¹, so a singular Σ is fine) gives

        V_l⁻¹ = R_l⁻¹ − R_l⁻¹ A_l H_l A_lᵀ R_l⁻¹,   H_l = (I + Σ M_l)⁻¹ Σ,   M_l = A_lᵀ R_l⁻¹ A_l,

    so g_i = e_i/r_i − (a_i/r_i)ᵀ H_l b_l with b_l = A_lᵀ R_l⁻¹ e_l, and
    c̄_i = 1/r_i − (a_i/r_i)ᵀ H_l (a_i/r_i): O(n m² + q m³) per draw, no n × n matrix
    (I + Σ M_l has eigenvalues ≥ 1: Σ and M_l are positive semi-definite).
    """
    e = _draw_residuals(spec, beta)  # (N, n)
    inv_r = 1.0 / residual
    g = e * inv_r
    cbar = inv_r.copy() if want_diag else None
    if not spec.terms:
        return g, cbar
    term = spec.terms[0]
    A = np.asarray(term.design, dtype=float)  # (n, m)
    index = np.asarray(term.index)
    m, q = A.shape[1], term.n_levels
    level_sum = term.incidence().T.tocsr()  # q × n: sums over each level's rows

    def by_level(x: np.ndarray) -> np.ndarray:
        """(k, n, ...) per row → (q, k, ...) summed over each level's rows."""
        rows = np.moveaxis(x, 1, 0)
        return (level_sum @ rows.reshape(rows.shape[0], -1)).reshape(q, *rows.shape[1:])

    for lo in range(0, e.shape[0], _CHUNK):
        hi = min(lo + _CHUNK, e.shape[0])
        k = hi - lo
        W = inv_r[lo:hi, :, None] * A[None, :, :]  # (k, n, m): a_i / r_i
        M = by_level(W[:, :, :, None] * A[None, :, None, :])  # (q, k, m, m)
        b = by_level(W * e[lo:hi, :, None])  # (q, k, m)
        S = np.asarray(sigmas[0][lo:hi], dtype=float).reshape(k, m, m)
        H = np.linalg.solve(np.eye(m) + S[None] @ M, np.broadcast_to(S[None], M.shape))
        Hb = np.einsum("lkjs,lks->lkj", H, b)  # (q, k, m)
        g[lo:hi] -= np.einsum("knj,nkj->kn", W, Hb[index])
        if want_diag:
            cbar[lo:hi] -= np.einsum("knj,nkjs,kns->kn", W, H[index], W)
    return g, cbar


def _draw_arrays(sigmas: list[np.ndarray], residual: np.ndarray) -> tuple:
    N = residual.shape[0]
    return np.asarray(sigmas[0], float).reshape(N), np.asarray(residual[:, 0], float)


def marginal_loo_terms(
    spec: ModelSpec,
    sigmas: list[np.ndarray],
    residual: np.ndarray,
    beta: np.ndarray,
    method: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """g = V⁻¹(y − Xβ) and c̄ = diag V⁻¹ for every draw: arrays (N, n).

    Parameters
    ----------
    sigmas : list of ndarray (N, m, m)
        Each term's Σ per draw.
    residual : ndarray (N, n)
        Residual variance of each observation per draw.
    beta : ndarray (N, p)
    method : {"auto", "exact", "interpolate"}
        Spectral models only (see :class:`_SpectralDraws`): ``"auto"`` interpolates in
        δ = σ_e²/σ_g² above a few hundred draws.

    Notes
    -----
    Spectral models (:func:`spectral_applies`): V⁻¹ = σ_g⁻² U diag(1/(s + δ)) Uᵀ, no
    factorisation (:class:`_SpectralDraws`). No random term or one iid term
    (:func:`blockwise_applies`): V is diagonal or block-diagonal by level, inverted in closed
    form (:func:`_blockwise_terms`, O(n) per draw for an intercept). Otherwise one Cholesky
    factor of V per draw (O(n³) each).

    Examples
    --------
    >>> import numpy as np, pandas as pd, bayeslmm as bl
    >>> K = bl.Kinship(np.array([[1.0, 0.5, 0.5], [0.5, 1.0, 0.25], [0.5, 0.25, 1.0]]),
    ...                ["a", "b", "c"])
    >>> df = pd.DataFrame({"y": [1.0, 2.0, 0.5], "id": ["a", "b", "c"]})
    >>> spec = bl.specify("y ~ 0 + (1 | id)", df, kinship={"id": K})
    >>> g, c = marginal_loo_terms(spec, [np.ones((1, 1, 1))], np.ones((1, 3)), np.zeros((1, 0)))
    >>> np.round(g, 6).tolist(), np.round(c, 6).tolist()
    ([[0.25, 0.928571, 0.071429]], [[0.5625, 0.535714, 0.535714]])
    """
    return _vinv_draws(spec, sigmas, residual, beta, method, want_diag=True)


def _vinv_draws(
    spec: ModelSpec,
    sigmas: list[np.ndarray],
    residual: np.ndarray,
    beta: np.ndarray,
    method: str,
    want_diag: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    """(V⁻¹(y − offset − Xβ), diag V⁻¹ or None) per draw, by the cheapest route: spectral,
    blockwise, else one factorisation per draw (:func:`marginal_loo_terms`' notes)."""
    beta = np.asarray(beta, float)
    residual = np.asarray(residual, float)
    if _spectral_draws(spec, sigmas, residual):
        var_g, var_e = _draw_arrays(sigmas, residual)
        return _SpectralDraws(spec, var_g, var_e, beta).terms(method, want_diag=want_diag)
    if _blockwise_draws(spec, residual):
        return _blockwise_terms(spec, sigmas, residual, beta, want_diag=want_diag)
    N = residual.shape[0]
    r = _draw_residuals(spec, beta)
    g = np.empty((N, spec.n_obs))
    cbar = np.empty((N, spec.n_obs)) if want_diag else None
    for i in range(N):
        solver = v_solver(spec, [np.asarray(S[i]) for S in sigmas], residual[i])
        g[i] = solver.solve(r[i])
        if cbar is not None:
            cbar[i] = solver.inverse_diagonal()
    return g, cbar


def marginal_loo_loglik(
    spec: ModelSpec,
    sigmas: list[np.ndarray],
    residual: np.ndarray,
    beta: np.ndarray,
    method: str = "auto",
) -> np.ndarray:
    """log p(y_i | y_−i, β, θ) for every draw and observation: array (N, n).

    −½ log 2π + ½ log c̄_ii − ½ g_i²/c̄_ii with g = V⁻¹(y − Xβ), c̄ = diag V⁻¹ (Sundararajan &
    Keerthi 2001; Bürkner, Gabry & Vehtari 2021, non-factorised models), from
    :func:`marginal_loo_terms`.

    Examples
    --------
    >>> import numpy as np, pandas as pd, bayeslmm as bl
    >>> K = bl.Kinship(np.array([[1.0, 0.5, 0.5], [0.5, 1.0, 0.25], [0.5, 0.25, 1.0]]),
    ...                ["a", "b", "c"])
    >>> df = pd.DataFrame({"y": [1.0, 2.0, 0.5], "id": ["a", "b", "c"]})
    >>> spec = bl.specify("y ~ 0 + (1 | id)", df, kinship={"id": K})
    >>> ll = marginal_loo_loglik(spec, [np.ones((1, 1, 1))], np.ones((1, 3)), np.zeros((1, 0)))
    >>> round(float(ll[0, 0]), 6)   # y_a | y_b, y_c ~ N(5/9, 16/9)
    -1.262176
    """
    g, cbar = marginal_loo_terms(spec, sigmas, residual, beta, method)
    return -0.5 * LOG_2PI + 0.5 * np.log(cbar) - 0.5 * g * g / cbar


def vinv_residuals(
    spec: ModelSpec,
    sigmas: list[np.ndarray],
    residual: np.ndarray,
    beta: np.ndarray,
    method: str = "auto",
) -> np.ndarray:
    """V⁻¹(y − offset − Xβ) for every draw: array (N, n) (inputs as
    :func:`marginal_loo_terms`).

    Examples
    --------
    >>> import numpy as np, pandas as pd, bayeslmm as bl
    >>> K = bl.Kinship(np.array([[1.0, 0.5, 0.5], [0.5, 1.0, 0.25], [0.5, 0.25, 1.0]]),
    ...                ["a", "b", "c"])
    >>> df = pd.DataFrame({"y": [1.0, 2.0, 0.5], "id": ["a", "b", "c"]})
    >>> spec = bl.specify("y ~ 0 + (1 | id)", df, kinship={"id": K})
    >>> np.round(vinv_residuals(spec, [np.ones((1, 1, 1))], np.ones((1, 3)),
    ...                         np.zeros((1, 0))), 6).tolist()
    [[0.25, 0.928571, 0.071429]]
    """
    return _vinv_draws(spec, sigmas, residual, beta, method, want_diag=False)[0]


# ---------------------------------------------------------------------------------------
# GLMMs: the conditional covariance of u at its mode
# ---------------------------------------------------------------------------------------
def conditional_covariance(
    spec: ModelSpec, sigmas: list[np.ndarray], eta: np.ndarray, olre_variance: float = 0.0
) -> np.ndarray:
    """Cov(u | y) at the mode of a GLMM, Λ (ΛᵀZᵀWZΛ + I)⁻¹ Λᵀ (Q × Q; lme4's ``condVar``).

    Λ = ⊕_t L_Σt ⊗ R_t (R_t Rᵀ_t = K_t, the kinship's root; I for iid levels), so a singular
    Σ or kinship needs no inverse. W is the family's Fisher weight at η; a Poisson
    observation-level variance σ²_olre enters as working variance, W ← 1/(1/W + σ²_olre)
    (the linearisation that treats it as overdispersion).

    Examples
    --------
    >>> import numpy as np, pandas as pd, bayeslmm as bl
    >>> df = pd.DataFrame({"y": [0, 1, 1, 0, 1, 1], "g": list("aabbcc")})
    >>> spec = bl.specify("y ~ 1 + (1 | g)", df, family="bernoulli")
    >>> C = conditional_covariance(spec, [np.array([[1.0]])], np.zeros(6))
    >>> round(float(C[0, 0]), 6)   # 1 / (2 · 0.25 + 1)
    0.666667
    """
    eta = np.asarray(eta, dtype=float)
    trials = None if spec.trials is None else np.asarray(spec.trials, float)
    W = np.asarray(spec.family.fisher_weight(eta, trials), dtype=float)
    if olre_variance > 0.0:
        W = 1.0 / (1.0 / np.maximum(W, 1e-300) + olre_variance)
    blocks = []
    for S, term in zip(sigmas, spec.terms, strict=True):
        w, U = np.linalg.eigh(np.asarray(S, float))
        L = U * np.sqrt(np.clip(w, 0.0, None))
        R = np.eye(term.n_levels) if term.kinship is None else term.kinship.root().factor
        blocks.append(np.kron(L, R))
    Lam = sla.block_diag(*blocks)
    ZL = np.asarray(random_design(spec) @ Lam)
    M = ZL.T @ (W[:, None] * ZL) + np.eye(Lam.shape[1])
    C = Lam @ np.linalg.solve(M, Lam.T)
    return 0.5 * (C + C.T)


# ---------------------------------------------------------------------------------------
# the conditional AIC of a REML fit
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConditionalAIC:
    """Greven & Kneib's (2010) conditional AIC of a Gaussian LMM and its pieces.

    ``caic = −2 cll + 2 df``; ``df`` = tr(∂ŷ/∂y) (the hat matrix's trace at θ̂ plus the
    correction for estimating θ) + 1 for σ²; ``cll`` = Σ log N(y_i; ŷ_i, σ̂²);
    ``hat_trace`` = tr(I − A) alone; ``dropped``: parameters at the boundary, left out.
    """

    caic: float
    df: float
    cll: float
    hat_trace: float
    dropped: tuple[int, ...]


def conditional_aic(spec: ModelSpec, theta: np.ndarray, cAIC4: bool = False) -> ConditionalAIC:
    """The conditional AIC of a homoscedastic Gaussian LMM at REML estimates ``theta``.

    ``theta`` holds the covariance parameters in the order of the REML engine's structure
    (:func:`bayeslmm.engines.reml._structure.build_structure`: each term's variances and
    covariances, then the residual variance σ²). With τ_j = θ_j/σ², V₀ = I + Σ τ_j W_j (W_j =
    ∂V/∂θ_j), A = V₀⁻¹ − V₀⁻¹X(XᵀV₀⁻¹X)⁻¹XᵀV₀⁻¹ and e = A y = y − ŷ (the conditional
    residual, ŷ = Xβ̂ + Zû), Greven & Kneib's (2010, Theorem 3) effective degrees of freedom
    are

        df = n − tr(A) + Σ_j (B⁻¹ C)_j · (A W_j e) + 1,

    tr(∂ŷ/∂y) with ∂θ̂/∂y = B⁻¹C from the implicit function theorem on the profiled REML
    score (B: −(yᵀe)/(n − p) × its Hessian, C_j = A W_j e − (eᵀW_j e / yᵀe) e: the score's
    derivative in y, same scale), and 1 for σ². A variance estimated at 0 (and the
    covariances of its coefficient) is left out, as cAIC4 drops zero components: it does not
    move with y.

    ``cAIC4=True`` reproduces R's cAIC4 (version 1.0), whose C has eᵀW_j e / (2 yᵀe): its df
    is then off tr(∂ŷ/∂y) + 1 by a little (0.007 on lme4's sleepstudy) to a lot (where B is
    ill-conditioned); the default is the exact derivative.

    Examples
    --------
    >>> # conditional_aic(reml_fit.spec, reml_fit.parameters["estimate"].to_numpy()).df
    """
    from bayeslmm.engines.reml._structure import build_structure

    if spec.sigma_X is not None:
        raise SpecificationError(
            "The conditional AIC is defined for one residual variance (Greven & Kneib 2010; "
            "R's cAIC4); this model has residual variances by group."
        )
    structure = build_structure(spec)
    theta = np.asarray(theta, dtype=float)
    sigma2 = float(theta[-1])
    # REML's floor for a residual variance is 1e-10 × var(y): anything within a factor
    # 10⁴ of it is a residual estimated at 0 (one rule, whatever the variances add up to)
    if not sigma2 > RESIDUAL_AT_ZERO * float(np.sum(np.abs(theta))):
        raise SpecificationError(
            f"The residual variance is estimated at 0 ({sigma2:.3g}): the fitted values "
            "interpolate the data, so the conditional likelihood is unbounded and the "
            "conditional AIC is not defined. Compare this model by its marginal aic, or fit "
            "a model with fewer random effects."
        )
    n = spec.n_obs
    X = np.asarray(spec.X, dtype=float)
    p = X.shape[1]
    y = response(spec)
    total = float(sum(theta[i] for i, q in enumerate(structure.params) if q.j == q.k))
    zero_coef = {
        (q.term, q.j)
        for i, q in enumerate(structure.params)
        if not q.is_residual and q.j == q.k and theta[i] <= 1e-8 * total
    }
    keep, dropped = [], []
    for i, q in enumerate(structure.params[:-1]):
        if (q.term, q.j) in zero_coef or (q.term, q.k) in zero_coef:
            dropped.append(i)
        else:
            keep.append(i)
    Ws = [np.asarray(structure.matrix(i), dtype=float) for i in keep]
    V0 = np.eye(n)
    for i, W in zip(keep, Ws, strict=True):
        V0 += (theta[i] / sigma2) * W
    chol = sla.cho_factor(V0, lower=True, check_finite=False)
    V0i = sla.cho_solve(chol, np.eye(n), check_finite=False)
    if p:
        V0iX = V0i @ X
        A = V0i - V0iX @ np.linalg.solve(X.T @ V0iX, V0iX.T)
    else:
        A = V0i
    A = 0.5 * (A + A.T)
    e = A @ y
    tye = float(y @ e)
    AWe = [A @ (W @ e) for W in Ws]
    eWe = [float(e @ W @ e) for W in Ws]
    k = len(Ws)
    df = n - float(np.trace(A))
    if k:
        WA = [W @ A for W in Ws]
        B = np.empty((k, k))
        for a in range(k):
            for b in range(a, k):
                B[a, b] = B[b, a] = (
                    -tye * float(np.sum(WA[b].T * WA[a])) / (2.0 * (n - p))
                    - eWe[a] * eWe[b] / (2.0 * tye)
                    + float(e @ Ws[b] @ AWe[a])
                )
        # the score's derivative in y has (eᵀW_je / yᵀe) e; cAIC4 (1.0) halves that term,
        # which moves its df off tr(∂ŷ/∂y) + 1 (checked against refits in the tests)
        half = 2.0 if cAIC4 else 1.0
        C = np.stack([AWe[a] - eWe[a] * e / (half * tye) for a in range(k)])
        lam = np.linalg.solve(B, C)  # ∂τ̂/∂y, k × n
        df += float(sum(lam[a] @ AWe[a] for a in range(k)))
    df += 1.0
    hat_trace = n - float(np.trace(A))
    cll = float(np.sum(-0.5 * (LOG_2PI + math.log(sigma2) + e * e / sigma2)))
    return ConditionalAIC(-2.0 * cll + 2.0 * df, df, cll, hat_trace, tuple(dropped))
