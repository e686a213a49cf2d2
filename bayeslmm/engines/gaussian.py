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


def _squared_vectors(term: RandomTerm) -> np.ndarray:
    cached = _SQUARED.get(term)
    if cached is None:
        U = spectral_basis(term).vectors
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

    def solve(self, b: np.ndarray) -> np.ndarray:
        """V⁻¹ b for a vector or an n × k matrix."""
        b = np.asarray(b, dtype=float)
        if self.kind == "spectral":
            U, d = self.vectors, self.d
            rotated = U.T @ b
            scaled = rotated / (d if b.ndim == 1 else d[:, None])
            return U @ scaled
        return sla.cho_solve(self.chol, b, check_finite=False)

    def inverse_diagonal(self) -> np.ndarray:
        """diag V⁻¹."""
        if self.kind == "spectral":
            return _squared_vectors(self.term) @ (1.0 / self.d)
        return np.diag(sla.cho_solve(self.chol, np.eye(self.n), check_finite=False)).copy()

    @property
    def logdet(self) -> float:
        if self.kind == "spectral":
            return float(np.sum(np.log(self.d)))
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
        basis = spectral_basis(term)
        d = float(np.asarray(sigmas[0]).reshape(-1)[0]) * basis.values + residual[0]
        return VSolver("spectral", spec.n_obs, vectors=basis.vectors, d=d, term=term)
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


def _spectral_draws(spec: ModelSpec, sigmas: np.ndarray, residual: np.ndarray) -> bool:
    return spectral_applies(spec) and bool(np.all(residual == residual[:, :1]))


def marginal_loo_terms(
    spec: ModelSpec, sigmas: list[np.ndarray], residual: np.ndarray, beta: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """g = V⁻¹(y − Xβ) and c̄ = diag V⁻¹ for every draw: arrays (N, n).

    Parameters
    ----------
    sigmas : list of ndarray (N, m, m)
        Each term's Σ per draw.
    residual : ndarray (N, n)
        Residual variance of each observation per draw.
    beta : ndarray (N, p)

    Notes
    -----
    Spectral models (:func:`spectral_applies`): with the rotated residual r̃ = Uᵀ(y − Xβ) and
    d = σ_g² s + σ_e², g = U (r̃/d) and c̄ = (U∘U)(1/d), two matrix products per block of
    draws and no factorisation. Otherwise one Cholesky factor of V per draw (O(n³) each).

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
    beta = np.asarray(beta, float)
    residual = np.asarray(residual, float)
    N = residual.shape[0]
    r = _draw_residuals(spec, beta)
    g = np.empty((N, spec.n_obs))
    cbar = np.empty((N, spec.n_obs))
    if _spectral_draws(spec, sigmas, residual):
        term = spec.terms[0]
        basis = spectral_basis(term)
        U, s = basis.vectors, basis.values
        UU = _squared_vectors(term)
        var_g = np.asarray(sigmas[0], float).reshape(N)
        for lo in range(0, N, _CHUNK):
            hi = min(lo + _CHUNK, N)
            d = var_g[lo:hi, None] * s[None, :] + residual[lo:hi, :1]
            rotated = r[lo:hi] @ U
            g[lo:hi] = (rotated / d) @ U.T
            cbar[lo:hi] = (1.0 / d) @ UU.T
        return g, cbar
    for i in range(N):
        solver = v_solver(spec, [np.asarray(S[i]) for S in sigmas], residual[i])
        g[i] = solver.solve(r[i])
        cbar[i] = solver.inverse_diagonal()
    return g, cbar


def marginal_loo_loglik(
    spec: ModelSpec, sigmas: list[np.ndarray], residual: np.ndarray, beta: np.ndarray
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
    g, cbar = marginal_loo_terms(spec, sigmas, residual, beta)
    return -0.5 * LOG_2PI + 0.5 * np.log(cbar) - 0.5 * g * g / cbar


def vinv_residuals(
    spec: ModelSpec, sigmas: list[np.ndarray], residual: np.ndarray, beta: np.ndarray
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
    beta = np.asarray(beta, float)
    residual = np.asarray(residual, float)
    N = residual.shape[0]
    r = _draw_residuals(spec, beta)
    out = np.empty((N, spec.n_obs))
    if _spectral_draws(spec, sigmas, residual):
        basis = spectral_basis(spec.terms[0])
        U, s = basis.vectors, basis.values
        var_g = np.asarray(sigmas[0], float).reshape(N)
        for lo in range(0, N, _CHUNK):
            hi = min(lo + _CHUNK, N)
            d = var_g[lo:hi, None] * s[None, :] + residual[lo:hi, :1]
            out[lo:hi] = ((r[lo:hi] @ U) / d) @ U.T
        return out
    for i in range(N):
        out[i] = v_solver(spec, [np.asarray(S[i]) for S in sigmas], residual[i]).solve(r[i])
    return out


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
