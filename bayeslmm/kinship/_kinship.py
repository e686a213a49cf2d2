"""The :class:`Kinship` object: a validated, labelled relationship matrix.

The eigendecomposition K = U S Uᵀ is computed once (at validation) and cached; every engine
reuses it (spectral rotation, eigenbasis parametrisation, REML). Square roots R = U √S with
R Rᵀ = K (the latent effects u = σ R z, the Laplace engine's and the mixed-model equations'
relative covariance factors) all come from :meth:`Kinship.root`, with one truncation rule.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import InitVar, dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from bayeslmm.errors import KinshipError, preview

#: Relative tolerance for symmetry: max|K - Kᵀ| <= SYMMETRY_RTOL * max|K|.
SYMMETRY_RTOL = 1e-8
#: Relative tolerance for positive semi-definiteness: min eigenvalue >= -PSD_RTOL * max eigenvalue.
#: GRMs computed in float32 (GCTA files) carry rounding of about 1e-7 relative.
PSD_RTOL = 1e-6

#: Up to this size the eigendecomposition runs on one BLAS thread (n = 2000: ~1 s). More
#: threads save well under a second there, while on cores that other jobs keep busy
#: OpenBLAS's spinning threads made an n = 1000 eigh 5-25 times slower (0.14 s on one
#: thread; benchmarks/bench_startup.py). Larger matrices keep BLAS's own thread count.
SINGLE_THREAD_EIGH_MAX_N = 2000


def root_tolerance(n: int) -> float:
    """Eigenvalues at or below this fraction of the largest are dropped from a kinship's root.

    n · ε, the rank tolerance of :func:`numpy.linalg.matrix_rank`: an eigenvalue that small
    is the eigensolver's rounding of a zero one (a centred GRM's, a repeated individual's).

    Examples
    --------
    >>> f"{root_tolerance(1000):.3g}"   # 1000 ε
    '2.22e-13'
    """
    return max(int(n), 1) * float(np.finfo(float).eps)


@dataclass(frozen=True, eq=False)
class KinshipRoot:
    """The truncated eigendecomposition of a kinship and its square root R = U √S.

    Made by :meth:`Kinship.root` (and cached there); the arrays are read-only.

    Attributes
    ----------
    values : ndarray, shape (r,)
        The eigenvalues kept, largest first.
    vectors : ndarray, shape (n, r)
        Their orthonormal eigenvectors (columns).
    factor : ndarray, shape (n, r)
        ``vectors * sqrt(values)``: ``factor @ factor.T`` is K, less the dropped part.
    discarded : float
        The share of the trace of K that the dropped eigenvalues held (rounding of 0 when
        only eigenvalues below the tolerance were dropped).
    """

    values: np.ndarray
    vectors: np.ndarray
    factor: np.ndarray
    discarded: float

    @property
    def rank(self) -> int:
        """Number of eigenpairs kept (columns of :attr:`factor`)."""
        return int(self.values.size)


class KinshipScaleWarning(UserWarning):
    """A kinship's mean diagonal is far from 1, so its variance component is at an odd scale."""


@dataclass(frozen=True, eq=False)
class Kinship:
    """A symmetric positive semi-definite relationship matrix with its ids.

    Parameters
    ----------
    matrix : array_like, shape (n, n)
        The relationship matrix. Must be finite, symmetric (to ``SYMMETRY_RTOL``) and
        positive semi-definite (to ``PSD_RTOL``); it is symmetrised exactly on construction.
    ids : sequence of str
        Unique identifiers of the rows / columns, in matrix order. Stored as strings so that
        ``1`` in a data frame matches ``"1"`` in a file.
    name : str
        A label used in messages and results.
    check_psd : bool
        Verify positive semi-definiteness now (one eigendecomposition, cached for the
        engines). Constructors whose output is PSD by construction (GRMs W Wᵀ, pedigree A,
        principal submatrices and Hadamard products of checked matrices) pass False, so the
        eigendecomposition is computed only when an engine asks for it.

    Notes
    -----
    Scale convention: bayeslmm uses K as given. The heritability h² = σ_g²/(σ_g² + σ_e²) is the
    share of variance *at mean diagonal of K*; for a VanRaden GRM the mean diagonal is close to
    1 (1 + F), so σ_g² is the additive variance in the base population. Use
    :meth:`normalized` to rescale a matrix to mean diagonal 1 (as GCTA and LDAK do for
    comparability across kernels), e.g. for K∘K.

    Examples
    --------
    >>> import numpy as np
    >>> K = Kinship(np.array([[1.0, 0.5], [0.5, 1.0]]), ids=["a", "b"])
    >>> K.n, K.eigenvalues.round(3).tolist()
    (2, [0.5, 1.5])
    """

    matrix: np.ndarray
    ids: tuple[str, ...]
    name: str = "K"
    check_psd: InitVar[bool] = True
    _index: dict = field(init=False, repr=False)

    def __post_init__(self, check_psd: bool = True) -> None:
        K = np.array(self.matrix, dtype=float, copy=True)
        ids = tuple(str(i) for i in self.ids)
        if K.ndim != 2 or K.shape[0] != K.shape[1]:
            raise KinshipError(
                f"Kinship '{self.name}' must be a square matrix; got shape {K.shape}."
            )
        if len(ids) != K.shape[0]:
            raise KinshipError(
                f"Kinship '{self.name}' has {K.shape[0]} rows but {len(ids)} ids; "
                "give one id per row."
            )
        dupes = pd.Index(ids)[pd.Index(ids).duplicated()].unique().tolist()
        if dupes:
            raise KinshipError(
                f"Kinship '{self.name}' has duplicate ids {preview(dupes)}; ids must be unique "
                "(merge or drop the repeated individuals)."
            )
        if not np.all(np.isfinite(K)):
            bad = int((~np.isfinite(K)).sum())
            raise KinshipError(
                f"Kinship '{self.name}' holds {bad} NaN/inf entries; recompute it (e.g. impute "
                "missing genotypes) before fitting."
            )
        scale = max(float(np.abs(K).max()), 1e-300)
        asym = float(np.abs(K - K.T).max())
        if asym > SYMMETRY_RTOL * scale:
            i, j = np.unravel_index(np.abs(K - K.T).argmax(), K.shape)
            raise KinshipError(
                f"Kinship '{self.name}' is not symmetric: K[{ids[i]!r},{ids[j]!r}] = {K[i, j]:.6g} "
                f"but K[{ids[j]!r},{ids[i]!r}] = {K[j, i]:.6g} (max |K - Kᵀ| = {asym:.3g}). "
                "Check the file's row/column order."
            )
        K = 0.5 * (K + K.T)
        if K.shape[0] > 1 and float(np.ptp(K)) <= 1e-12 * scale:
            # a constant matrix c·11ᵀ gives every individual the same effect: the intercept's
            # job; zero gives no effect at all. Either way the variance has no meaning.
            if not K.any():
                what = "all zero: it gives no individual any effect, so its variance is arbitrary"
            else:
                what = (
                    f"constant ({K[0, 0]:.6g}): it relates every individual equally, so its "
                    "effect cannot be told apart from the intercept"
                )
            raise KinshipError(
                f"Kinship '{self.name}' is {what} ({K.shape[0]} ids). Check that the right "
                "matrix and ids were given, e.g. a GRM from bayeslmm.grm(dosages)."
            )
        K.setflags(write=False)
        object.__setattr__(self, "matrix", K)
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "_index", {i: k for k, i in enumerate(ids)})
        if check_psd:
            self._check_psd()

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_dataframe(cls, frame: pd.DataFrame, name: str = "K") -> Kinship:
        """Build from a square DataFrame whose index and columns are the ids."""
        idx = [str(i) for i in frame.index]
        cols = [str(c) for c in frame.columns]
        if idx != cols:
            if sorted(idx) != sorted(cols):
                raise KinshipError(
                    f"Kinship '{name}': row ids and column ids differ "
                    f"(e.g. {preview(sorted(set(idx) ^ set(cols)))}); a kinship table needs the "
                    "same ids in its header row and first column."
                )
            frame = frame.copy()
            frame.columns = cols
            frame = frame.reindex(columns=idx)
        values = frame.apply(pd.to_numeric, errors="coerce")
        bad = values.isna() & frame.notna()
        if bad.to_numpy().any():
            r, c = np.argwhere(bad.to_numpy())[0]
            raise KinshipError(
                f"Kinship '{name}' holds {int(bad.to_numpy().sum())} non-numeric entries, e.g. "
                f"{frame.iat[r, c]!r} at row {idx[r]!r}, column {idx[c]!r}; a kinship table "
                "holds numbers only (ids in the header row and first column)."
            )
        return cls(values.to_numpy(dtype=float), ids=idx, name=name)

    def to_dataframe(self) -> pd.DataFrame:
        """The matrix as a DataFrame labelled by id on both axes."""
        return pd.DataFrame(self.matrix, index=list(self.ids), columns=list(self.ids))

    # -- spectral -------------------------------------------------------------------------
    @cached_property
    def _eigh(self) -> tuple[np.ndarray, np.ndarray]:
        start = time.perf_counter()
        if self.n <= SINGLE_THREAD_EIGH_MAX_N:
            from threadpoolctl import threadpool_limits

            with threadpool_limits(limits=1, user_api="blas"):
                s, U = np.linalg.eigh(self.matrix)
        else:
            s, U = np.linalg.eigh(self.matrix)
        # its cost is reported by fits that reuse the decomposition (the PSD check in
        # __post_init__ usually computes it); written to __dict__ as the class is frozen
        self.__dict__["eigh_seconds"] = time.perf_counter() - start
        return s, U

    @property
    def eigenvalues(self) -> np.ndarray:
        """Eigenvalues in ascending order, tiny negative rounding clipped to 0."""
        return np.clip(self._eigh[0], 0.0, None)

    @property
    def eigenvectors(self) -> np.ndarray:
        """Orthonormal eigenvectors (columns), matching :attr:`eigenvalues`."""
        return self._eigh[1]

    @property
    def min_eigenvalue(self) -> float:
        """The smallest eigenvalue before clipping (reported by the PSD check)."""
        return float(self._eigh[0][0])

    def _check_psd(self) -> None:
        s = self._eigh[0]
        top = max(float(s[-1]), 1e-300)
        if s[0] < -PSD_RTOL * top:
            n_neg = int((s < -PSD_RTOL * top).sum())
            raise KinshipError(
                f"Kinship '{self.name}' is not positive semi-definite: smallest eigenvalue "
                f"{s[0]:.4g} ({n_neg} below -{PSD_RTOL:g}·max eigenvalue {top:.4g}). "
                "A relationship matrix must be PSD: recompute it from complete genotypes, or "
                "bend it (Kinship.bent(matrix, ids)) if it was estimated."
            )

    def root(self, share: float | None = None) -> KinshipRoot:
        """The square root R = U √S of K (R Rᵀ = K), truncated by one rule, cached.

        The rule: eigenvalues at or below :func:`root_tolerance` (n · ε) times the largest
        are dropped (they are rounding of zero and carry no variance); with ``share``, only
        the leading eigenpairs holding that share of the trace are kept as well. Eigenpairs
        come largest first. Each ``share`` is computed once per Kinship and reused.

        Parameters
        ----------
        share : float in (0, 1], optional
            Keep the fewest leading eigenpairs whose eigenvalues hold at least this share of
            the trace. None or 1 keeps every eigenvalue above the tolerance.

        Returns
        -------
        KinshipRoot

        Examples
        --------
        >>> K = Kinship(np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]),
        ...             ids=["a", "b", "c"])
        >>> R = K.root()
        >>> R.values.round(6).tolist(), round(R.discarded, 12)  # the zero eigenvalue dropped
        ([2.0, 1.0], 0.0)
        >>> bool(np.allclose(R.factor @ R.factor.T, K.matrix))
        True
        >>> K.root(0.6).rank, round(K.root(0.6).discarded, 6)
        (1, 0.333333)
        """
        if share is not None and not 0.0 < share <= 1.0:
            raise ValueError(
                f"share must lie in (0, 1]; got {share}. Give e.g. 0.99 to keep the leading "
                "eigenvectors holding 99% of the trace, or None to keep them all."
            )
        key = None if share is None or share == 1.0 else float(share)
        cache = self.__dict__.setdefault("_roots", {})  # frozen class: write to __dict__
        if key in cache:
            return cache[key]
        s = self.eigenvalues[::-1]
        U = self.eigenvectors[:, ::-1]
        total = float(s.sum())
        k = int(np.count_nonzero(s > root_tolerance(self.n) * s[0]))
        if key is not None:
            # 1e-12 of slack: a share met exactly (0.5 of two equal eigenvalues) keeps no more
            cum = np.cumsum(s) / total
            k = min(k, int(np.searchsorted(cum, key - 1e-12) + 1))
        values = np.ascontiguousarray(s[:k])
        vectors = np.ascontiguousarray(U[:, :k])
        factor = vectors * np.sqrt(values)
        for arr in (values, vectors, factor):
            arr.setflags(write=False)
        discarded = float(s[k:].sum()) / total if total > 0.0 else 0.0
        out = KinshipRoot(values=values, vectors=vectors, factor=factor, discarded=discarded)
        cache[key] = out
        return out

    def low_rank(self, share: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """Leading eigenpairs holding at least ``share`` of the trace: ``(values, vectors)``
        of :meth:`root` (largest first; eigenvalues that are rounding of zero dropped)."""
        r = self.root(share)
        return r.values, r.vectors

    def diagonal(self) -> np.ndarray:
        """The diagonal of K (what the model specification and result tables read, so a
        kinship held in another form, e.g. a sparse pedigree inverse, need not be dense).

        Examples
        --------
        >>> Kinship(np.array([[2.0, 1.0], [1.0, 2.0]]), ids=["a", "b"]).diagonal().tolist()
        [2.0, 2.0]
        """
        return np.diag(self.matrix).copy()

    def dot(self, v: np.ndarray) -> np.ndarray:
        """K v for a vector or matrix v with one row per id.

        Examples
        --------
        >>> Kinship(np.array([[2.0, 1.0], [1.0, 2.0]]), ids=["a", "b"]).dot(np.ones(2)).tolist()
        [3.0, 3.0]
        """
        return self.matrix @ np.asarray(v, dtype=float)

    # -- derived kernels ------------------------------------------------------------------
    @property
    def n(self) -> int:
        """Number of individuals."""
        return len(self.ids)

    @property
    def mean_diagonal(self) -> float:
        """Mean of the diagonal: σ²_g of u ~ N(0, σ²_g K) is the variance at K_ii = 1
        (GCTA's convention); reported h² uses the sample's own scale instead (see
        :meth:`bayeslmm.spec.RandomTerm.variance_weights`)."""
        return float(np.mean(np.diag(self.matrix)))

    def subset(self, ids: Sequence[str], name: str | None = None) -> Kinship:
        """The principal submatrix for ``ids`` (in that order).

        Raises a :class:`KinshipError` listing the ids that the kinship lacks.
        """
        ids = [str(i) for i in ids]
        if tuple(ids) == self.ids:
            return self
        missing = [i for i in ids if i not in self._index]
        if missing:
            raise KinshipError(
                f"{len(missing)} ids are missing from kinship '{self.name}': {preview(missing)}. "
                "Every level of the grouping factor needs a row in the kinship: drop those "
                "records or supply a kinship that covers them."
            )
        pos = np.fromiter((self._index[i] for i in ids), dtype=int, count=len(ids))
        # A principal submatrix of a PSD matrix is PSD: no second check.
        return Kinship(
            self.matrix[np.ix_(pos, pos)], ids=ids, name=name or self.name, check_psd=False
        )

    def normalized(self) -> Kinship:
        """Rescaled to mean diagonal 1 (GCTA's convention for comparing kernels)."""
        return Kinship(
            self.matrix / self.mean_diagonal, ids=self.ids, name=self.name, check_psd=False
        )

    def hadamard(self, other: Kinship | None = None, name: str | None = None) -> Kinship:
        """Element-wise product K∘K' (pairwise epistasis kernel when ``other`` is None).

        The product of PSD matrices is PSD (Schur product theorem).
        """
        other = self if other is None else other.subset(self.ids)
        return Kinship(
            self.matrix * other.matrix,
            ids=self.ids,
            name=name or f"{self.name}∘{other.name}",
            check_psd=False,
        )

    def bend(self, floor: float = 1e-6) -> Kinship:
        """Nearest PSD matrix by raising eigenvalues below ``floor``·max to that floor."""
        return Kinship.bent(self.matrix, ids=self.ids, name=self.name, floor=floor)

    @classmethod
    def bent(
        cls, matrix: np.ndarray, ids: Sequence[str], name: str = "K", floor: float = 1e-6
    ) -> Kinship:
        """Build from a symmetric matrix that may not be PSD (an estimate), bending it first.

        Eigenvalues below ``floor``·max eigenvalue are raised to that floor; the validity
        checks (symmetry, finite values, ids) still apply.
        """
        K = np.asarray(matrix, dtype=float)
        if (
            K.ndim != 2
            or K.shape[0] != K.shape[1]
            or not np.all(np.isfinite(K))
            or np.abs(K - K.T).max() > SYMMETRY_RTOL * np.abs(K).max()
        ):
            return cls(K, ids=ids, name=name)  # let the constructor report the problem
        s, U = np.linalg.eigh(0.5 * (K + K.T))
        s = np.maximum(s, floor * s[-1])
        return cls((U * s) @ U.T, ids=ids, name=name)

    def __repr__(self) -> str:
        return f"Kinship(name={self.name!r}, n={self.n}, mean_diagonal={self.mean_diagonal:.4g})"

    def _repr_html_(self) -> str:
        """What a notebook shows: size, scale, off-diagonal range and the top-left corner."""
        import html

        K, n = self.matrix, self.n
        lo, hi = np.inf, -np.inf
        for start in range(0, n, 1024):  # row blocks: no n × n temporary for a large matrix
            block = K[start : start + 1024].copy()
            block[np.arange(len(block)), np.arange(start, start + len(block))] = np.nan
            if block.size > len(block):  # off-diagonal entries exist
                lo, hi = min(lo, np.nanmin(block)), max(hi, np.nanmax(block))
        off_mean = (K.sum() - np.trace(K)) / max(n * (n - 1), 1)
        rows = [
            ("individuals", f"{n}"),
            ("mean diagonal", f"{self.mean_diagonal:.4g}"),
            ("sample scale (mean diag − mean)", f"{self.mean_diagonal - float(K.mean()):.4g}"),
        ]
        if n > 1:
            rows.append(("off-diagonal min / mean / max", f"{lo:.3g} / {off_mean:.3g} / {hi:.3g}"))
        if "_eigh" in self.__dict__:  # only when already computed: a display never costs an eigh
            rows.append(("smallest eigenvalue", f"{self.min_eigenvalue:.3g}"))
        left = "style='text-align:left'"
        head = "".join(f"<tr><td {left}><b>{a}</b></td><td {left}>{b}</td></tr>" for a, b in rows)
        m = min(n, 5)
        corner = pd.DataFrame(K[:m, :m], index=self.ids[:m], columns=self.ids[:m]).round(3)
        return (
            f"<div><b>Kinship {html.escape(self.name)}</b> ({n} × {n})<table>{head}</table>"
            f"<small>top-left {m} × {m}:</small>{corner.to_html()}</div>"
        )
