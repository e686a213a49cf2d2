"""The spectral basis: the eigendecomposition of a kinship term's Z K Zᵀ, computed once.

The spectral strategy rotates the data by these eigenvectors (Uᵀy has independent
components given the variances); the post-hoc draws of β and u reuse them.

A :class:`~bayeslmm.kinship.LowRankKinship` (any incidence: Z K Zᵀ = (Z W)(Z W)ᵀ) is
rotated by the thin SVD of the observations' markers Z W and a basis of the data's part in
its null space instead
(:meth:`~bayeslmm.kinship.LowRankKinship.rotation`): ``vectors`` is then n × (r + k), and
``n_null`` more rotated rows, with eigenvalue 0 and data 0, are counted, not stored.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass

import numpy as np

from bayeslmm.errors import SpecificationError
from bayeslmm.kinship.low_rank import LowRankKinship, LowRankRotation
from bayeslmm.spec import RandomTerm

# Eigendecompositions of Z K Zᵀ, one per RandomTerm object (RandomTerm is frozen, eq=False,
# so it hashes by identity); recomputed never while the term lives.
_ROTATION_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass(frozen=True, eq=False)
class SpectralBasis:
    """The eigendecomposition V_g = Z K Zᵀ = U diag(values) Uᵀ of the observations' kinship.

    Attributes
    ----------
    values : ndarray, shape (n,)
        Eigenvalues (ascending, clipped at 0).
    vectors : ndarray, shape (n, n)
        Orthonormal eigenvectors.
    eigh_s : float
        Seconds the eigendecomposition took (when the Kinship's cached decomposition is
        reused, the seconds it took when the Kinship computed it).
    n_null : int
        Rotated rows left out (low-rank kinship: null-space directions orthogonal to every
        data column; their eigenvalue and data are 0).
    low_rank : bool
        Whether this is a low-rank kinship's rotation (the SNP-space path).
    """

    values: np.ndarray
    vectors: np.ndarray
    eigh_s: float
    n_null: int = 0
    low_rank: bool = False

    def rotate(self, v: np.ndarray) -> np.ndarray:
        """Uᵀ v for data v (n rows)."""
        return self.vectors.T @ np.asarray(v, dtype=float)


class LowRankBasis(SpectralBasis):
    """A low-rank kinship's :class:`SpectralBasis`: :meth:`rotate` costs O(n p) per column
    and never forms U₁; :attr:`vectors` ([U₁, Q], n × (r + k)) is formed on first use (the
    breeding values' and predictive draws need it; the likelihood does not)."""

    def __init__(self, rotation: LowRankRotation, eigh_s: float) -> None:
        set_ = object.__setattr__  # the frozen dataclass parent refuses attribute assignment
        set_(self, "values", rotation.values)
        set_(self, "eigh_s", eigh_s)
        set_(self, "n_null", rotation.n_null)
        set_(self, "low_rank", True)
        set_(self, "rotation", rotation)

    @property
    def vectors(self) -> np.ndarray:  # type: ignore[override]
        return self.rotation.vectors

    def rotate(self, v: np.ndarray) -> np.ndarray:
        return self.rotation.rotate(v)

    def __repr__(self) -> str:
        return (
            f"LowRankBasis(rows={self.values.size}, n_null={self.n_null}, eigh_s={self.eigh_s:.3g})"
        )


def spectral_basis(term: RandomTerm, data: np.ndarray | None = None) -> SpectralBasis:
    """Eigendecomposition of Z K Zᵀ for a kinship term, computed once per term.

    When each level has exactly one observation in level order (Z = I) the kinship's own
    cached eigendecomposition is reused. With ``data`` (n × c: every column the model
    rotates) and a :class:`~bayeslmm.kinship.LowRankKinship`, the low-rank rotation of
    those columns by the observations' markers Z W is returned instead (not cached here;
    the SVD is cached on the kinship).

    Examples
    --------
    >>> import numpy as np, pandas as pd, bayeslmm as bl
    >>> K = bl.Kinship(np.array([[1.0, 0.5], [0.5, 1.0]]), ["a", "b"])
    >>> df = pd.DataFrame({"y": [1.0, 2.0, 3.0], "id": ["a", "b", "b"]})
    >>> basis = spectral_basis(bl.specify("y ~ (1|id)", df, kinship={"id": K}).terms[0])
    >>> basis.values.round(3).tolist()
    [0.0, 0.634, 2.366]
    """
    if term.kinship is None:
        raise SpecificationError(f"Term ({term.label}) has no kinship to rotate by.")
    if data is not None and isinstance(term.kinship, LowRankKinship):
        start = time.perf_counter()
        # Z K Zᵀ = (Z W)(Z W)ᵀ: the observations' markers (W itself when Z = I)
        observed = term.kinship.expand(term.index)
        rank = observed.rank  # the thin SVD (cached on the kinship when Z = I)
        rotation = observed.rotation(data)
        elapsed = observed.__dict__.get("eigh_seconds", 0.0) if rank else 0.0
        return LowRankBasis(rotation, eigh_s=max(elapsed, time.perf_counter() - start))
    cached = _ROTATION_CACHE.get(term)
    if cached is not None:
        return cached
    start = time.perf_counter()
    if term.is_identity_incidence:
        values, vectors = term.kinship.eigenvalues, term.kinship.eigenvectors
        # the Kinship's cached decomposition, usually computed by its PSD check: report
        # the seconds it took then, not the ~0 s of reading the cache
        elapsed = term.kinship.__dict__.get("eigh_seconds", time.perf_counter() - start)
    else:
        Z = term.incidence()
        ZK = (Z @ term.kinship.matrix).astype(float)
        V = np.asarray(Z @ ZK.T).T
        V = 0.5 * (V + V.T)
        values, vectors = np.linalg.eigh(V)
        values = np.clip(values, 0.0, None)
        elapsed = time.perf_counter() - start
    basis = SpectralBasis(values=values, vectors=vectors, eigh_s=elapsed)
    _ROTATION_CACHE[term] = basis
    return basis
