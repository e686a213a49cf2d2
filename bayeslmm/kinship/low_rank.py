"""A kinship held as its markers: K = W Wᵀ with W n × p, p < n, never the n × n matrix.

The SNP-space path (FaST-LMM's low-rank rotation; Lippert et al. 2011). With the thin
singular value decomposition W = U₁ S^½ Vᵀ (U₁ n × r orthonormal, r ≤ p), K = U₁ S U₁ᵀ has
eigenvalues s on the r columns of U₁ and 0 on the n − r dimensional complement. A Gaussian
model with this kinship as its only random term, rotated by an orthonormal basis of Rⁿ whose
first r vectors are U₁, has independent components with variances σ_g² s_i + σ_e² (the
first r) and σ_e² (the rest). The complement needs no basis of its own:

* its part of the data is P₂[X, y] with P₂ = I − U₁U₁ᵀ, an n × c matrix (c = columns of
  X, y and an offset); an orthonormal basis Q of its column space (k ≤ c vectors) gives
  k rotated rows Qᵀ[X, y] with eigenvalue 0;
* the other m = n − r − k complement directions are orthogonal to every data column, so
  their rotated data are exactly 0: each adds log N(0; 0, σ_e²) to the likelihood,
  −½ m (log 2π + log σ_e²) in all, and nothing to any weighted cross-product.

So the spectral engines (REML's 1-D search, the closed-form NUTS density) run unchanged on
r + k rows plus the scalar multiplicity m (:meth:`LowRankKinship.rotation`). Costs: the
SVD O(n p²) time and O(n p) memory, once; each likelihood evaluation O(p).

The SVD is taken through the Gram matrix WᵀW (p × p; one BLAS ``syrk`` and an ``eigh``),
U₁ = W V S^-½: half the flops of a direct SVD of W and no n × n workspace. Singular values
at or below :data:`LOW_RANK_RTOL` of the largest (a centred W's zero, markers in perfect
LD) are zero. Where the kept spectrum spans more than :data:`REFINE_CONDITION`, U₁'s
columns of the small values lose orthogonality to rounding (ε·s_max/s_i), and one
Rayleigh-Ritz step (QR of U₁, eigenvalues of the projected K) makes them orthonormal
again. Markers given as a Dask array are factored blockwise by the tall-and-skinny QR
(:func:`low_rank_from_dask`), which runs on a ``dask.distributed`` cluster.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from bayeslmm.errors import KinshipError, preview
from bayeslmm.kinship._kinship import Kinship, KinshipRoot

__all__ = [
    "LOW_RANK_DENSE_LIMIT",
    "LowRankDensifyWarning",
    "LowRankKinship",
    "LowRankRotation",
    "low_rank_from_dask",
]

#: Up to this many individuals a :class:`LowRankKinship` forms its dense n × n matrix when
#: an engine needs it (with a :class:`LowRankDensifyWarning`); above, :attr:`matrix` raises.
LOW_RANK_DENSE_LIMIT = 5000
#: Eigenvalues of W Wᵀ at or below this fraction of the largest are zero (rounding of the
#: Gram matrix's eigh is about p ε of the largest).
LOW_RANK_RTOL = 1e-10
#: Kept eigenvalues spanning more than this (largest / smallest) get a Rayleigh-Ritz step.
REFINE_CONDITION = 1e4

SUPPORTED = (
    "a Gaussian model whose only random term is (1 | id) with this kinship (records in any "
    "order, repeated records too) and one residual variance, fitted by REML (route "
    "'spectral-low-rank') or NUTS (strategy 'spectral-low-rank')"
)


class LowRankDensifyWarning(UserWarning):
    """An engine asked a low-rank kinship for its dense n × n matrix."""


@dataclass(frozen=True, eq=False)
class LowRankRotation:
    """The rotated data of a model with a :class:`LowRankKinship` (see the module notes).

    Attributes
    ----------
    values : ndarray, shape (r + k,)
        s (largest first) then k zeros.
    rotated : ndarray, shape (r + k, c)
        ``vectors.T @ data``: the data's rotated rows.
    n_null : int
        m = n − r − k: the complement directions left out, whose rotated data are 0.
    null_basis : ndarray, shape (n, k)
        Q, an orthonormal basis of the complement's part of the data's columns.
    kinship : LowRankKinship
        The kinship rotated by.
    """

    values: np.ndarray
    rotated: np.ndarray
    n_null: int
    null_basis: np.ndarray
    kinship: LowRankKinship

    @property
    def n(self) -> int:
        """Number of individuals (rows of the data)."""
        return int(self.null_basis.shape[0])

    @cached_property
    def vectors(self) -> np.ndarray:
        """Orthonormal columns [U₁, Q] (n × (r + k)): U₁ the eigenvectors of K with s > 0
        (formed on first use, O(n p²): the rotation itself does not need them)."""
        return np.concatenate([self.kinship.left_vectors, self.null_basis], axis=1)

    def rotate(self, v: np.ndarray) -> np.ndarray:
        """``vectors.T @ v`` in O(n p) per column, without forming U₁ (exact for every v in
        the span of the rotated data; other v lose their part in the left-out directions)."""
        v = np.asarray(v, dtype=float)
        return np.concatenate([self.kinship.project(v), self.null_basis.T @ v], axis=0)


@dataclass(frozen=True, eq=False)
class _Spectrum:
    values: np.ndarray  # s > 0, largest first
    vectors: np.ndarray | None  # U₁ (n × r) when the Rayleigh-Ritz step formed it
    right: np.ndarray  # V, p × r: W = U₁ diag(√s) Vᵀ
    discarded: float  # share of the trace in the eigenvalues set to 0
    seconds: float


def _thin_svd(W: np.ndarray, gram: np.ndarray | None = None) -> _Spectrum:
    """Eigenpairs of W Wᵀ with positive eigenvalues, from the Gram matrix WᵀW (``gram``
    when the caller has it already)."""
    start = time.perf_counter()
    if gram is None:
        gram = W.T @ W  # numpy runs BLAS syrk for A.T @ A
    s, V = np.linalg.eigh(0.5 * (gram + gram.T))
    del gram
    s, V = s[::-1], V[:, ::-1]
    total = float(np.clip(s, 0.0, None).sum())
    top = max(float(s[0]), 0.0)
    keep = s > LOW_RANK_RTOL * top
    s_kept, V = np.ascontiguousarray(s[keep]), np.ascontiguousarray(V[:, keep])
    U = None  # U₁ = W V S^-½ is formed when first needed (2 n p r flops)
    if s_kept.size and s_kept[0] > REFINE_CONDITION * s_kept[-1]:
        # Rayleigh-Ritz: an orthonormal basis of the same span, and K's eigenpairs in it
        Q, _ = np.linalg.qr(W @ (V / np.sqrt(s_kept)))
        H = Q.T @ W  # r × p, K = Q H Hᵀ Qᵀ exactly (range W ⊂ span Q)
        s_kept, Y = np.linalg.eigh(H @ H.T)
        s_kept, Y = s_kept[::-1], Y[:, ::-1]
        ok = s_kept > LOW_RANK_RTOL * top
        s_kept, Y = np.ascontiguousarray(s_kept[ok]), Y[:, ok]
        U = Q @ Y
        V = H.T @ (Y / np.sqrt(s_kept))
    discarded = 1.0 - float(s_kept.sum()) / total if total > 0.0 else 0.0
    for arr in (s_kept, U, V):
        if arr is not None:
            arr.setflags(write=False)
    return _Spectrum(
        values=s_kept,
        vectors=U,
        right=V,
        discarded=max(discarded, 0.0),
        seconds=time.perf_counter() - start,
    )


class LowRankKinship(Kinship):
    """A relationship matrix K = W Wᵀ held as its n × p markers W (p < n), never as K.

    Made by ``bayeslmm.grm(dosages, low_rank=True)`` (W the centred, scaled markers of
    :func:`~bayeslmm.kinship.snp_factor`) and given wherever a
    :class:`~bayeslmm.kinship.Kinship` goes, e.g. ``LMM("y ~ 1 + (1 | id)", data,
    kinship={"id": K})``.

    Design: it *is* a Kinship (the model specification accepts it unchanged: it reads
    only :meth:`diagonal`, :meth:`dot` and :meth:`subset`, each O(n p)) whose engines use
    the thin SVD of W (:meth:`rotation`, :meth:`root`) instead of the n × n eigenbasis.
    What the SNP-space path covers: a Gaussian model whose only random term is
    ``(1 | id)`` with this kinship (any incidence: Z K Zᵀ = (Z W)(Z W)ᵀ, :meth:`expand`)
    and one residual variance,
    by REML (``RemlFit.method`` ``"spectral-low-rank"``) and NUTS (the spectral
    strategy's closed form; ``BayesFit.strategy`` ``"spectral-low-rank"``), breeding
    values included. Any other computation needs the dense :attr:`matrix`, formed (with a
    :class:`LowRankDensifyWarning`) for at most :data:`LOW_RANK_DENSE_LIMIT` individuals
    and refused with a :class:`~bayeslmm.errors.KinshipError` above.

    Parameters
    ----------
    markers : array_like, shape (n, p)
        W with K = W Wᵀ (already scaled: ``grm(X).matrix == W @ W.T``).
    ids : sequence of str
        Unique ids of the rows.
    name : str
        Label used in messages and results.
    copy : bool
        Copy ``markers`` (default); False takes the array over (no second n × p copy).
    gram : ndarray, shape (p, p), optional
        WᵀW when the caller has it already (the association scan's LOCO kinships are
        sub-blocks of one Gram matrix of all markers): the thin SVD then skips its O(n p²)
        product. Not checked against ``markers`` beyond its shape.

    Attributes
    ----------
    markers : ndarray, shape (n, p)
        W, read-only.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> W = rng.normal(size=(40, 10)) / np.sqrt(10)
    >>> K = LowRankKinship(W, ids=[f"i{k}" for k in range(40)])
    >>> K.n, K.n_markers, K.rank
    (40, 10, 10)
    >>> bool(np.allclose(K.dot(np.eye(40)), W @ W.T))
    True
    >>> bool(np.allclose(K.diagonal(), (W**2).sum(axis=1)))
    True
    """

    def __init__(
        self,
        markers: np.ndarray,
        ids: Sequence[str],
        name: str = "GRM",
        copy: bool = True,
        *,
        gram: np.ndarray | None = None,
    ) -> None:
        # copy=False: take over a float array the caller no longer uses (grm's W: no second
        # n × p copy)
        W = np.array(markers, dtype=float, copy=copy or None)
        ids = tuple(str(i) for i in ids)
        if W.ndim != 2:
            raise KinshipError(
                f"Low-rank kinship '{name}' needs a 2-D marker matrix (individuals × markers); "
                f"got shape {W.shape}."
            )
        if len(ids) != W.shape[0]:
            raise KinshipError(
                f"Low-rank kinship '{name}' has {W.shape[0]} marker rows but {len(ids)} ids; "
                "give one id per row."
            )
        index = pd.Index(ids)
        dupes = index[index.duplicated()].unique().tolist()
        if dupes:
            raise KinshipError(
                f"Low-rank kinship '{name}' has duplicate ids {preview(dupes)}; ids must be "
                "unique (merge or drop the repeated individuals)."
            )
        if W.shape[1] == 0 or not W.any():
            raise KinshipError(
                f"Low-rank kinship '{name}' has no non-zero marker column, so it gives no "
                "individual any effect; check the dosages (bayeslmm.grm drops monomorphic "
                "markers)."
            )
        if not np.all(np.isfinite(W)):
            raise KinshipError(
                f"Low-rank kinship '{name}' holds {int((~np.isfinite(W)).sum())} NaN/inf "
                "marker values; impute missing genotypes (bayeslmm.grm does) first."
            )
        if gram is not None:
            gram = np.asarray(gram, dtype=float)
            if gram.shape != (W.shape[1], W.shape[1]):
                raise KinshipError(
                    f"Low-rank kinship '{name}': gram must be WᵀW, {W.shape[1]} × "
                    f"{W.shape[1]} for {W.shape[1]} marker columns; got shape {gram.shape}."
                )
        W.setflags(write=False)
        set_ = object.__setattr__  # the frozen dataclass parent refuses attribute assignment
        set_(self, "_gram", gram)  # consumed (and dropped) by the thin SVD
        set_(self, "markers", W)
        set_(self, "ids", ids)
        set_(self, "name", name)
        set_(self, "_index", {i: k for k, i in enumerate(ids)})

    # -- the low-rank representation ------------------------------------------------------
    @property
    def n_markers(self) -> int:
        """p, the number of marker columns."""
        return int(self.markers.shape[1])

    @cached_property
    def _spectrum(self) -> _Spectrum:
        out = _thin_svd(self.markers, self.__dict__.pop("_gram", None))
        self.__dict__["eigh_seconds"] = out.seconds  # what fits report as the decomposition
        return out

    @property
    def rank(self) -> int:
        """r, the number of positive eigenvalues of K (p, or p − 1 for centred markers)."""
        return int(self._spectrum.values.size)

    @property
    def svd_seconds(self) -> float:
        """Seconds the thin SVD took (computed on first use)."""
        return self._spectrum.seconds

    @property
    def positive_eigenvalues(self) -> np.ndarray:
        """s: the r positive eigenvalues of K, largest first (the squared singular values
        of W)."""
        return self._spectrum.values

    @property
    def right_vectors(self) -> np.ndarray:
        """V (p × r): W = U₁ diag(√s) Vᵀ, so W V diag(√s) = U₁ diag(s) = K U₁."""
        return self._spectrum.right

    @cached_property
    def left_vectors(self) -> np.ndarray:
        """U₁ (n × r): K's eigenvectors with positive eigenvalues, largest first (formed on
        first use, O(n p r); likelihoods need only :meth:`project`)."""
        spec = self._spectrum
        if spec.vectors is not None:
            return spec.vectors
        U = self.markers @ (spec.right / np.sqrt(spec.values))
        U.setflags(write=False)
        return U

    def project(self, v: np.ndarray) -> np.ndarray:
        """U₁ᵀ v = S^-½ Vᵀ (Wᵀ v), O(n p) per column (U₁ is not formed)."""
        v = np.asarray(v, dtype=float)
        if "left_vectors" in self.__dict__:
            return self.left_vectors.T @ v
        spec = self._spectrum
        if spec.vectors is not None:
            return spec.vectors.T @ v
        coef = spec.right.T @ (self.markers.T @ v)
        return coef / (np.sqrt(spec.values) if coef.ndim == 1 else np.sqrt(spec.values)[:, None])

    def _lift(self, coef: np.ndarray) -> np.ndarray:
        """U₁ coef = W V S^-½ coef, O(n p) per column."""
        if "left_vectors" in self.__dict__ or self._spectrum.vectors is not None:
            return self.left_vectors @ coef
        spec = self._spectrum
        scaled = coef / (np.sqrt(spec.values) if coef.ndim == 1 else np.sqrt(spec.values)[:, None])
        return self.markers @ (spec.right @ scaled)

    def root(self, share: float | None = None) -> KinshipRoot:
        """R = U₁ √S with R Rᵀ = K, from the thin SVD (n × r, never n × n); ``share`` as in
        :meth:`Kinship.root`.

        Examples
        --------
        >>> W = np.random.default_rng(1).normal(size=(30, 5))
        >>> R = LowRankKinship(W, [str(k) for k in range(30)]).root()
        >>> R.factor.shape, bool(np.allclose(R.factor @ R.factor.T, W @ W.T))
        ((30, 5), True)
        """
        if share is not None and not 0.0 < share <= 1.0:
            raise ValueError(
                f"share must lie in (0, 1]; got {share}. Give e.g. 0.99 to keep the leading "
                "eigenvectors holding 99% of the trace, or None to keep them all."
            )
        key = None if share is None or share == 1.0 else float(share)
        cache = self.__dict__.setdefault("_roots", {})
        if key in cache:
            return cache[key]
        spec = self._spectrum
        s, U = spec.values, self.left_vectors
        total = float(s.sum()) / max(1.0 - spec.discarded, 1e-300)
        k = s.size
        if key is not None:
            cum = np.cumsum(s) / total
            k = min(k, int(np.searchsorted(cum, key - 1e-12) + 1))
        values, vectors = np.ascontiguousarray(s[:k]), np.ascontiguousarray(U[:, :k])
        factor = vectors * np.sqrt(values)
        for arr in (values, vectors, factor):
            arr.setflags(write=False)
        discarded = 1.0 - float(values.sum()) / total if total > 0.0 else 0.0
        out = KinshipRoot(values=values, vectors=vectors, factor=factor, discarded=discarded)
        cache[key] = out
        return out

    def rotation(self, data: np.ndarray) -> LowRankRotation:
        """The data's rows in an orthonormal eigenbasis of K, complement compressed.

        Parameters
        ----------
        data : ndarray, shape (n, c)
            Every data column the model rotates (X, y, an offset), rows in id order.

        Returns
        -------
        LowRankRotation
            r + k rotated rows (k ≤ c: the rank of the data's part in the complement) and
            the multiplicity m = n − r − k of the complement rows whose data are 0.

        Examples
        --------
        >>> rng = np.random.default_rng(2)
        >>> W = rng.normal(size=(50, 8))
        >>> K = LowRankKinship(W, [str(k) for k in range(50)])
        >>> data = np.column_stack([np.ones(50), rng.normal(size=50)])
        >>> rot = K.rotation(data)
        >>> rot.values.size, rot.n_null    # 8 eigenvalues + 2 complement rows, 40 zeros
        (10, 40)
        >>> # the Gram matrix of the data is kept: the rotation is orthogonal
        >>> bool(np.allclose(rot.rotated.T @ rot.rotated, data.T @ data))
        True
        """
        data = np.asarray(data, dtype=float)
        if data.ndim == 1:
            data = data[:, None]
        if data.shape[0] != self.n:
            raise KinshipError(
                f"Low-rank kinship '{self.name}' relates {self.n} individuals; the data to "
                f"rotate have {data.shape[0]} rows."
            )
        spec = self._spectrum
        inside = self.project(data)
        outside = data - self._lift(inside)  # P₂ data
        Q = np.zeros((self.n, 0))
        if outside.size:
            P, sv, _ = np.linalg.svd(outside, full_matrices=False)
            scale = max(float(np.abs(data).max()), 1e-300) * np.sqrt(self.n)
            k = int(np.count_nonzero(sv > 1e-12 * scale))
            if k:
                # project again and re-orthonormalise: rounding must not leak into span U₁
                P = P[:, :k]
                P = P - self._lift(self.project(P))
                Q, _ = np.linalg.qr(P)
        values = np.concatenate([spec.values, np.zeros(Q.shape[1])])
        rotated = np.concatenate([inside, Q.T @ data], axis=0)
        n_null = self.n - values.size
        if n_null < 0:  # pragma: no cover - r + k <= n by orthonormality
            raise KinshipError("internal: more rotated rows than individuals")
        return LowRankRotation(
            values=values, rotated=rotated, n_null=n_null, null_basis=Q, kinship=self
        )

    # -- the Kinship interface ------------------------------------------------------------
    def diagonal(self) -> np.ndarray:
        """diag(K) = row sums of W², O(n p)."""
        return np.einsum("ij,ij->i", self.markers, self.markers)

    def dot(self, v: np.ndarray) -> np.ndarray:
        """K v = W (Wᵀ v) for v with one row per id, O(n p) per column."""
        v = np.asarray(v, dtype=float)
        return self.markers @ (self.markers.T @ v)

    @property
    def mean_diagonal(self) -> float:
        """Mean of diag(K)."""
        return float(np.mean(self.diagonal()))

    def subset(self, ids: Sequence[str], name: str | None = None) -> LowRankKinship:
        """The low-rank kinship of ``ids`` (in that order): the same markers' rows.

        Raises a :class:`~bayeslmm.errors.KinshipError` listing the ids it lacks.
        """
        ids = [str(i) for i in ids]
        if tuple(ids) == self.ids and (name is None or name == self.name):
            return self
        missing = [i for i in ids if i not in self._index]
        if missing:
            raise KinshipError(
                f"{len(missing)} ids are missing from kinship '{self.name}': {preview(missing)}. "
                "Every level of the grouping factor needs a row in the kinship: drop those "
                "records or supply a kinship that covers them."
            )
        pos = np.fromiter((self._index[i] for i in ids), dtype=int, count=len(ids))
        return LowRankKinship(self.markers[pos], ids=ids, name=name or self.name)

    def expand(self, index: np.ndarray) -> LowRankKinship:
        """The kinship of observations whose individuals are ``index`` (positions in
        :attr:`ids`, repeats allowed): Z K Zᵀ = (W[index]) (W[index])ᵀ, still low-rank.

        Its ids are the observations' positions ("0", "1", ...); it is ``self`` when
        ``index`` is 0, 1, ..., n − 1.

        Examples
        --------
        >>> W = np.random.default_rng(3).normal(size=(5, 2))
        >>> K = LowRankKinship(W, list("abcde"))
        >>> obs = K.expand(np.array([4, 0, 0]))
        >>> bool(np.allclose(obs.dot(np.eye(3)), (W @ W.T)[np.ix_([4, 0, 0], [4, 0, 0])]))
        True
        """
        index = np.asarray(index, dtype=int)
        if np.array_equal(index, np.arange(self.n)):
            return self
        return LowRankKinship(
            self.markers[index], ids=[str(k) for k in range(index.size)], name=self.name
        )

    def normalized(self) -> LowRankKinship:
        """Rescaled to mean diagonal 1 (markers divided by √mean diag)."""
        return LowRankKinship(
            self.markers / np.sqrt(self.mean_diagonal), ids=self.ids, name=self.name
        )

    def to_dense(self) -> Kinship:
        """The dense :class:`~bayeslmm.kinship.Kinship` W Wᵀ (n ≤ :data:`LOW_RANK_DENSE_LIMIT`)."""
        return Kinship(self.matrix, ids=self.ids, name=self.name, check_psd=False)

    @property
    def matrix(self) -> np.ndarray:  # type: ignore[override]
        """Dense K = W Wᵀ, formed on demand for at most :data:`LOW_RANK_DENSE_LIMIT`
        individuals (with a :class:`LowRankDensifyWarning`); above, a
        :class:`~bayeslmm.errors.KinshipError` names what the SNP-space path supports."""
        cache = self.__dict__
        if "_matrix" not in cache:
            if self.n > LOW_RANK_DENSE_LIMIT:
                raise KinshipError(
                    f"Kinship '{self.name}' is held as its {self.n}×{self.n_markers} markers "
                    f"(bayeslmm.grm(..., low_rank=True)); this computation needs the dense "
                    f"{self.n}×{self.n} matrix, formed only for at most {LOW_RANK_DENSE_LIMIT} "
                    f"individuals. The SNP-space low-rank path supports {SUPPORTED}. Reduce "
                    "the model to that, or build a dense GRM with bayeslmm.grm(dosages) if "
                    "memory allows."
                )
            warnings.warn(
                f"Forming the dense {self.n}×{self.n} matrix of low-rank kinship "
                f"'{self.name}' for a computation outside the SNP-space path (which supports "
                f"{SUPPORTED}).",
                LowRankDensifyWarning,
                stacklevel=2,
            )
            K = self.markers @ self.markers.T
            K = 0.5 * (K + K.T)
            K.setflags(write=False)
            cache["_matrix"] = K
        return cache["_matrix"]

    def __repr__(self) -> str:
        return (
            f"LowRankKinship(name={self.name!r}, n={self.n}, markers={self.n_markers}, "
            f"mean_diagonal={self.mean_diagonal:.4g})"
        )

    def _repr_html_(self) -> str:
        """What a notebook shows: sizes and scale (no n × n matrix)."""
        import html

        rows = [
            ("individuals", f"{self.n}"),
            ("markers (columns of W)", f"{self.n_markers}"),
            ("mean diagonal", f"{self.mean_diagonal:.4g}"),
        ]
        if "_spectrum" in self.__dict__:
            rows.append(("rank", f"{self.rank}"))
        body = "".join(f"<tr><td><b>{a}</b></td><td>{b}</td></tr>" for a, b in rows)
        title = f"<b>Low-rank kinship {html.escape(self.name)}</b> (K = W Wᵀ)"
        return f"<div>{title}<table>{body}</table></div>"


def low_rank_from_dask(markers, ids: Sequence[str], name: str = "GRM") -> LowRankKinship:
    """A :class:`LowRankKinship` from a Dask marker matrix, its SVD computed blockwise.

    The O(n p²) factorisation runs where the blocks are — Dask's tall-and-skinny QR
    (:func:`~bayeslmm.kinship.svd.thin_svd`), on the threads of this process or on the
    workers of a ``dask.distributed`` client. The blocks are read and centred once
    (persisted: a lazy PLINK source is not read twice), then the markers, U₁ and V come
    back to memory (O(n p), what the engines work with).

    Parameters
    ----------
    markers : dask.array.Array, shape (n, p)
        Scaled, centred markers W with K = W Wᵀ (:func:`~bayeslmm.kinship.snp_factor` of a
        Dask array), p < n.
    ids : sequence of str
    name : str

    Returns
    -------
    LowRankKinship

    Examples
    --------
    >>> import numpy as np, dask.array as da
    >>> W = np.random.default_rng(1).normal(size=(60, 8))
    >>> K = low_rank_from_dask(da.from_array(W, chunks=(20, 8)), [f"i{k}" for k in range(60)])
    >>> bool(np.allclose(K.dot(np.eye(60)), W @ W.T))
    True
    """
    import dask

    from bayeslmm.kinship.svd import thin_svd

    start = time.perf_counter()
    markers = markers.persist()  # the copy below and the blockwise QR share these blocks
    (W,) = dask.compute(markers)
    U, s, V = thin_svd(markers, tol=LOW_RANK_RTOL)
    kinship = LowRankKinship(np.asarray(W, dtype=float), ids=ids, name=name, copy=False)
    values = s**2
    total = float(np.sum(kinship.markers**2))  # trace of K
    discarded = 1.0 - float(values.sum()) / total if total > 0.0 else 0.0
    arrays = [np.ascontiguousarray(a) for a in (values, U, V)]
    for arr in arrays:
        arr.setflags(write=False)
    seconds = time.perf_counter() - start
    kinship.__dict__["_spectrum"] = _Spectrum(
        values=arrays[0],
        vectors=arrays[1],
        right=arrays[2],
        discarded=max(discarded, 0.0),
        seconds=seconds,
    )
    kinship.__dict__["eigh_seconds"] = seconds
    return kinship
