"""Genomic relationship matrices (GRMs) from SNP dosages.

Two scalings are offered, both from the centred dosage matrix Z = X - 2p (X the n × m matrix of
0/1/2 allele counts, p the per-SNP allele frequencies estimated from the data):

- **VanRaden (2008), method 1** (default): K = Z Zᵀ / (2 Σⱼ pⱼ(1 - pⱼ)). Under Hardy-Weinberg
  equilibrium the expected diagonal is 1 + F (F the genomic inbreeding coefficient relative to
  the sample), so the mean diagonal is close to 1 in an outbred sample.
- **Standardised** (``standardize=True``, the GCTA / Yang et al. (2010) off-diagonal estimator):
  every SNP is scaled to unit variance, Zⱼ / √(2pⱼ(1 - pⱼ)), and K = Z Zᵀ / m. Rare SNPs get
  more weight than under VanRaden. GCTA uses a different estimator on the diagonal; here the
  diagonal uses the same formula as the off-diagonal.

Missing genotypes (NaN) are replaced by the SNP's mean dosage 2p (mean imputation), i.e. they
contribute 0 to Z. SNPs that are monomorphic (p = 0 or 1), whose called genotypes are all the
same (zero genotype variance, e.g. every individual heterozygous: p = 0.5, yet Z = 0) or that
have no called genotype are dropped (with a warning that counts them): they carry no
information about relatedness, and the ones with p ≠ 0 would inflate VanRaden's divisor
2 Σ p(1 - p) and so shrink every relationship. The crossproduct is
accumulated over blocks of SNPs, so memory is O(n² + n·block_size) however many SNPs there are.
A Dask array is computed with Dask (on its cluster, if one is attached) instead.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bayeslmm.errors import DataError, KinshipError, preview
from bayeslmm.kinship._kinship import Kinship

#: Dosages may exceed [0, 2] by this much (rounding in imputed dosage files).
DOSAGE_TOLERANCE = 1e-6


def _is_dask(values: Any) -> bool:
    return type(values).__module__.split(".")[0] == "dask"


@dataclass(frozen=True)
class _Dosages:
    """Dosage matrix (NumPy or Dask) with string ids; read block by block."""

    values: Any
    ids: tuple[str, ...]
    lazy: bool

    @property
    def n(self) -> int:
        return int(self.values.shape[0])

    @property
    def m(self) -> int:
        return int(self.values.shape[1])

    def block(self, columns: np.ndarray) -> np.ndarray:
        if columns.size and columns[-1] - columns[0] == columns.size - 1:
            # A run of adjacent SNPs: slice (a view) instead of fancy-indexing (a copy).
            return np.asarray(self.values[:, columns[0] : columns[-1] + 1], dtype=float)
        return np.asarray(self.values[:, columns], dtype=float)


def _as_dosages(dosages: Any, ids: Sequence[Any] | None) -> _Dosages:
    if isinstance(dosages, pd.DataFrame):
        frame_ids = [str(i) for i in dosages.index]
        bad = [c for c in dosages.columns if not pd.api.types.is_numeric_dtype(dosages[c])]
        if bad:
            raise DataError(
                f"Dosage columns {preview(bad)} are not numeric; dosages must be 0/1/2 allele "
                "counts (NaN for missing). Put the ids in the index, not in a column."
            )
        values = dosages.to_numpy(dtype=float, na_value=np.nan)
        if ids is not None and [str(i) for i in ids] != frame_ids:
            raise DataError(
                "Both a DataFrame index and `ids` were given and they differ; pass only one."
            )
        ids = frame_ids
        lazy = False
    elif _is_dask(dosages):
        values = dosages
        lazy = True
    else:
        values = np.asarray(dosages)
        if not (np.issubdtype(values.dtype, np.number) or values.dtype == bool):
            raise DataError(f"Dosages must be numeric; got an array of dtype {values.dtype}.")
        lazy = False
    if values.ndim != 2:
        raise DataError(
            f"Dosages must be a 2-D matrix (individuals × SNPs); got shape {values.shape}."
        )
    n = int(values.shape[0])
    if ids is None:
        ids = [str(k) for k in range(n)]
    ids = tuple(str(i) for i in ids)
    if len(ids) != n:
        raise DataError(f"Got {len(ids)} ids for a dosage matrix with {n} rows.")
    index = pd.Index(ids)
    dupes = index[index.duplicated()].unique().tolist()
    if dupes:
        raise KinshipError(
            f"Duplicate individual ids in the dosages: {preview(dupes)}; each row must be a "
            "different individual."
        )
    if values.shape[1] == 0:
        raise DataError("The dosage matrix has no SNP columns.")
    return _Dosages(values=values, ids=ids, lazy=lazy)


@dataclass(frozen=True)
class _SnpSelection:
    """Allele frequencies and which SNPs enter the GRM."""

    freq: np.ndarray  # frequency of the counted allele, NaN where nothing was called
    called: np.ndarray  # number of non-missing genotypes per SNP
    keep: np.ndarray  # indices of the SNPs used
    n_all_missing: int
    n_monomorphic: int
    n_constant: int  # not monomorphic, yet every called genotype equal (e.g. all 1)
    n_low_maf: int
    any_missing: bool


def _check_range(lo: float, hi: float) -> None:
    if lo < -DOSAGE_TOLERANCE or hi > 2 + DOSAGE_TOLERANCE:
        raise DataError(
            f"Dosages must lie in [0, 2] (allele counts); found values from {lo:.6g} to "
            f"{hi:.6g}. Recode genotypes as 0/1/2 (e.g. backcross codes 1/2 -> 0/1)."
        )


def _block_starts(m: int, block_size: int) -> range:
    if block_size < 1:
        raise DataError(f"block_size must be a positive integer; got {block_size}.")
    return range(0, m, block_size)


def _select_snps(dos: _Dosages, maf: float, block_size: int) -> _SnpSelection:
    if not 0.0 <= maf < 0.5:
        raise DataError(f"maf must lie in [0, 0.5); got {maf}.")
    if dos.lazy:
        import dask
        import dask.array as da

        X = dos.values.astype(float)
        observed = ~da.isnan(X)
        sums, called, col_lo, col_hi = dask.compute(
            da.nansum(X, axis=0),
            observed.sum(axis=0),
            da.where(observed, X, np.inf).min(axis=0),
            da.where(observed, X, -np.inf).max(axis=0),
        )
        finite = np.isfinite(col_lo)
        if (col_lo == -np.inf).any() or (col_hi == np.inf).any():
            raise DataError("Dosages hold infinite values; use NaN for missing genotypes.")
        if finite.any():
            _check_range(float(col_lo[finite].min()), float(col_hi[finite].max()))
    else:
        sums = np.zeros(dos.m)
        called = np.zeros(dos.m)
        col_lo = np.full(dos.m, np.inf)
        col_hi = np.full(dos.m, -np.inf)
        for start in _block_starts(dos.m, block_size):
            cols = np.arange(start, min(start + block_size, dos.m))
            B = dos.block(cols)
            if np.isinf(B).any():
                raise DataError("Dosages hold infinite values; use NaN for missing genotypes.")
            observed = ~np.isnan(B)
            if observed.any():
                _check_range(float(np.nanmin(B)), float(np.nanmax(B)))
            sums[cols] = np.where(observed, B, 0.0).sum(axis=0)
            called[cols] = observed.sum(axis=0)
            col_lo[cols] = np.where(observed, B, np.inf).min(axis=0)
            col_hi[cols] = np.where(observed, B, -np.inf).max(axis=0)
    sums = np.asarray(sums, dtype=float)
    called = np.asarray(called, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        freq = np.where(called > 0, sums / (2.0 * np.maximum(called, 1)), np.nan)
    all_missing = called == 0
    monomorphic = ~all_missing & (freq * (1.0 - freq) <= 0.0)
    # zero genotype variance among the called genotypes (e.g. every one heterozygous): the
    # centred column is 0, but 2p(1 - p) > 0 would still enter VanRaden's divisor
    constant = ~all_missing & ~monomorphic & (np.asarray(col_hi) - np.asarray(col_lo) <= 1e-12)
    minor = np.minimum(freq, 1.0 - freq)
    low_maf = ~all_missing & ~monomorphic & ~constant & (minor < maf)
    keep = np.flatnonzero(~(all_missing | monomorphic | constant | low_maf))
    return _SnpSelection(
        freq=freq,
        called=called,
        keep=keep,
        n_all_missing=int(all_missing.sum()),
        n_monomorphic=int(monomorphic.sum()),
        n_constant=int(constant.sum()),
        n_low_maf=int(low_maf.sum()),
        any_missing=bool((called < dos.n).any()),
    )


def _report_dropped(sel: _SnpSelection, maf: float) -> None:
    parts = []
    if sel.n_monomorphic:
        parts.append(f"{sel.n_monomorphic} monomorphic SNP(s)")
    if sel.n_constant:
        parts.append(
            f"{sel.n_constant} SNP(s) with zero genotype variance (every called genotype the "
            "same, e.g. all heterozygous)"
        )
    if sel.n_all_missing:
        parts.append(f"{sel.n_all_missing} SNP(s) with no called genotype")
    if parts:
        warnings.warn(
            f"GRM: dropped {' and '.join(parts)}; they carry no information about relatedness.",
            UserWarning,
            stacklevel=3,
        )
    if sel.keep.size == 0:
        raise KinshipError(
            "No SNP is left to build a GRM: "
            f"{sel.n_all_missing} have no called genotype, {sel.n_monomorphic} are monomorphic, "
            f"{sel.n_constant} have zero genotype variance and {sel.n_low_maf} have minor "
            f"allele frequency below maf={maf}. Lower `maf` or check the genotype coding."
        )


def _scale(sel: _SnpSelection, standardize: bool) -> tuple[np.ndarray, float]:
    """Per-SNP multipliers of the centred dosages and the divisor of Z Zᵀ."""
    p = sel.freq[sel.keep]
    het = 2.0 * p * (1.0 - p)
    if standardize:
        return 1.0 / np.sqrt(het), float(sel.keep.size)
    return np.ones_like(p), float(het.sum())


def _centred_blocks(
    dos: _Dosages, sel: _SnpSelection, standardize: bool, block_size: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield (positions within kept SNPs, scaled centred block, observed mask).

    Missing dosages become 0 after centring (mean imputation).
    """
    mult, _ = _scale(sel, standardize)
    for start in _block_starts(sel.keep.size, block_size):
        pos = np.arange(start, min(start + block_size, sel.keep.size))
        cols = sel.keep[pos]
        B = dos.block(cols)
        observed = ~np.isnan(B)
        Z = B - 2.0 * sel.freq[cols]  # a new array: the caller's data are never modified
        Z[~observed] = 0.0
        if standardize:
            Z *= mult[pos]
        yield pos, Z, observed


def _dask_factor(dos: _Dosages, sel: _SnpSelection, standardize: bool):
    import dask.array as da

    mult, denom = _scale(sel, standardize)
    X = dos.values[:, sel.keep].astype(float)
    two_p = 2.0 * sel.freq[sel.keep]
    Z = da.where(da.isnan(X), 0.0, X - two_p) * (mult / np.sqrt(denom))
    return Z


def _compute_grm(
    dos: _Dosages, sel: _SnpSelection, standardize: bool, block_size: int, counts: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    _, denom = _scale(sel, standardize)
    if dos.lazy:
        import dask
        import dask.array as da

        W = _dask_factor(dos, sel, standardize)
        todo = [W @ W.T]
        if counts:
            M = (~da.isnan(dos.values[:, sel.keep])).astype(float)
            todo.append(M @ M.T)
        out = dask.compute(*todo)
        return np.asarray(out[0]), (np.asarray(out[1]) if counts else None)
    K = np.zeros((dos.n, dos.n))
    N = np.zeros((dos.n, dos.n)) if counts else None
    for _, Z, observed in _centred_blocks(dos, sel, standardize, block_size):
        K += Z @ Z.T
        if N is not None:
            O = observed.astype(float)
            N += O @ O.T
    K /= denom
    return K, N


def grm(
    dosages: Any,
    ids: Sequence[Any] | None = None,
    maf: float = 0.0,
    standardize: bool = False,
    block_size: int = 2000,
    name: str = "GRM",
    low_rank: bool = False,
) -> Kinship:
    """Genomic relationship matrix from SNP dosages.

    Parameters
    ----------
    dosages : DataFrame, ndarray or dask array, shape (n, m)
        Allele counts 0/1/2 (fractional imputed dosages allowed) for n individuals (rows) and m
        SNPs (columns); NaN marks a missing genotype. A DataFrame's index gives the ids.
        Which allele is counted does not matter: the GRM is unchanged by x -> 2 - x.
    ids : sequence, optional
        Individual ids for an array (default ``"0"``, ``"1"``, ...). Not needed with a
        DataFrame.
    maf : float
        Drop SNPs whose minor allele frequency is below this (PLINK's ``--maf``; kept when
        MAF >= maf). Monomorphic, zero-variance (e.g. all heterozygous) and all-missing SNPs
        are always dropped, with a warning that counts them.
    standardize : bool
        False (default): VanRaden (2008) method 1, K = Z Zᵀ / (2 Σ p(1 - p)) with Z = X - 2p.
        True: every SNP scaled to unit variance, K = Σⱼ zⱼzⱼᵀ / m with
        zⱼ = (xⱼ - 2pⱼ) / √(2pⱼ(1 - pⱼ)) (GCTA's off-diagonal estimator, used on the diagonal
        too).
    block_size : int
        SNPs per block; memory is O(n² + n·block_size).
    name : str
        Label of the returned kinship.
    low_rank : bool
        Return a :class:`~bayeslmm.kinship.LowRankKinship` backed by the n × m scaled
        markers W (K = W Wᵀ, the same matrix), never forming the n × n GRM: the SNP-space
        path, O(n m²) time and O(n m) memory instead of O(n³) and O(n²), for m < n kept
        SNPs. With m ≥ n it saves nothing (the n × n path is cheaper): a warning says so
        and the dense GRM is returned.

    Returns
    -------
    Kinship
        The n × n GRM (a :class:`~bayeslmm.kinship.LowRankKinship` with ``low_rank``).
        Allele frequencies p are estimated from the sample, so the GRM is relative to the
        sample: rows sum to 0 when nothing is missing, and the mean diagonal is
        about 1 + F, F the average inbreeding relative to the sample (about 1 in an outbred
        sample under Hardy-Weinberg equilibrium; less when there are fewer heterozygotes
        than 2p(1 - p), e.g. 2/3 for a backcross coded 0/1).

    Notes
    -----
    Missing genotypes are mean-imputed (they add 0 to Z), which shrinks relationships of
    individuals with many missing genotypes towards 0. VanRaden's divisor uses all kept SNPs.

    Examples
    --------
    >>> import numpy as np
    >>> from bayeslmm.kinship import grm
    >>> rng = np.random.default_rng(0)
    >>> X = rng.binomial(2, 0.3, size=(50, 400)).astype(float)
    >>> K = grm(X)
    >>> K.n, round(K.mean_diagonal, 1)
    (50, 1.0)
    """
    dos = _as_dosages(dosages, ids)
    return _grm_of(dos, maf, standardize, block_size, name, low_rank)


def _grm_of(
    dos: _Dosages, maf: float, standardize: bool, block_size: int, name: str, low_rank: bool
) -> Kinship:
    """:func:`grm` of dosages already wrapped (also a PLINK reader's, by the command line)."""
    sel = _select_snps(dos, maf, block_size)
    _report_dropped(sel, maf)
    if low_rank:
        if sel.keep.size < dos.n:
            from bayeslmm.kinship.low_rank import LowRankKinship, low_rank_from_dask

            if dos.lazy:  # the SVD blockwise, where the Dask blocks are
                return low_rank_from_dask(_dask_factor(dos, sel, standardize), dos.ids, name)
            W = _factor(dos, sel, standardize, block_size)
            return LowRankKinship(W, ids=dos.ids, name=name, copy=False)
        warnings.warn(
            f"grm(low_rank=True): {sel.keep.size} SNPs for {dos.n} individuals; the low-rank "
            "path pays off only with fewer SNPs than individuals (its SVD costs O(n m²), "
            "the dense eigendecomposition O(n³)), so the dense n × n GRM is returned.",
            UserWarning,
            stacklevel=3,
        )
    K, _ = _compute_grm(dos, sel, standardize, block_size, counts=False)
    # W Wᵀ is PSD by construction: the eigendecomposition waits until an engine needs it.
    return Kinship(K, ids=dos.ids, name=name, check_psd=False)


def grm_with_counts(
    dosages: Any,
    ids: Sequence[Any] | None = None,
    maf: float = 0.0,
    standardize: bool = False,
    block_size: int = 2000,
    name: str = "GRM",
) -> tuple[Kinship, np.ndarray, int]:
    """:func:`grm` plus, for each pair, the number of SNPs typed in both (GCTA's ``.grm.N``).

    Returns
    -------
    (Kinship, ndarray, int)
        The GRM, the n × n matrix of pairwise non-missing SNP counts, and the number of SNPs
        used.

    Examples
    --------
    >>> import numpy as np
    >>> from bayeslmm.kinship.grm import grm_with_counts
    >>> X = np.array([[0, 1, 2], [1, np.nan, 2], [2, 2, 0]])
    >>> K, N, m = grm_with_counts(X)
    >>> m, float(N[0, 1]), float(N[0, 2])
    (3, 2.0, 3.0)
    """
    dos = _as_dosages(dosages, ids)
    sel = _select_snps(dos, maf, block_size)
    _report_dropped(sel, maf)
    K, N = _compute_grm(dos, sel, standardize, block_size, counts=sel.any_missing)
    if N is None:
        N = np.full((dos.n, dos.n), float(sel.keep.size))
    return Kinship(K, ids=dos.ids, name=name, check_psd=False), N, int(sel.keep.size)


def snp_factor(
    dosages: Any,
    ids: Sequence[Any] | None = None,
    maf: float = 0.0,
    standardize: bool = False,
    block_size: int = 2000,
) -> tuple[Any, tuple[str, ...]]:
    """The scaled, centred SNP matrix W with ``grm(...) = W Wᵀ``.

    W is the low-rank factor used by SNP-space models (y = Wβ + e with β ~ N(0, σ² I) has
    Var(Wβ) = σ² K): with m SNPs kept, W is n × m, so when m < n working with W is cheaper than
    with the n × n kernel.

    Parameters
    ----------
    dosages, ids, maf, standardize, block_size
        As in :func:`grm` (same SNP filters, imputation and scaling).

    Returns
    -------
    (W, ids)
        W has one column per kept SNP: (x - 2p) / √(2 Σ p(1 - p)) for VanRaden, or
        (x - 2p) / √(2p(1 - p)) / √m when ``standardize``; missing entries are 0. W is a NumPy
        array, or a lazy Dask array for Dask input. ``ids`` are the row labels.

    Examples
    --------
    >>> import numpy as np
    >>> from bayeslmm.kinship import grm, snp_factor
    >>> X = np.random.default_rng(1).binomial(2, 0.4, size=(30, 200)).astype(float)
    >>> W, ids = snp_factor(X)
    >>> bool(np.allclose(W @ W.T, grm(X).matrix))
    True
    """
    dos = _as_dosages(dosages, ids)
    sel = _select_snps(dos, maf, block_size)
    _report_dropped(sel, maf)
    if dos.lazy:
        return _dask_factor(dos, sel, standardize), dos.ids
    return _factor(dos, sel, standardize, block_size), dos.ids


def _factor(dos: _Dosages, sel: _SnpSelection, standardize: bool, block_size: int) -> np.ndarray:
    """W (n × kept SNPs, in memory) with W Wᵀ the GRM; a Dask input is computed."""
    if dos.lazy:
        return np.asarray(_dask_factor(dos, sel, standardize).compute(), dtype=float)
    _, denom = _scale(sel, standardize)
    W = np.empty((dos.n, sel.keep.size))
    for pos, Z, _ in _centred_blocks(dos, sel, standardize, block_size):
        W[:, pos] = Z
    W /= np.sqrt(denom)
    return W
