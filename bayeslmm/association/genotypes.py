"""Genotypes for the scan: one interface over dosage tables, arrays, Dask arrays and PLINK.

Whatever the source, the scan reads *blocks of marker columns* for the analysed individuals
(in the phenotype table's order), so that memory stays O(n × block) however many markers
there are: a PLINK ``.bed`` is read block by block with bed-reader, a Dask array computes one
block at a time (on its cluster, if one is attached), an in-memory matrix is sliced.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bayeslmm.errors import DataError, SpecificationError, preview
from bayeslmm.kinship.grm import _Dosages, _is_dask
from bayeslmm.kinship.loco import _chromosome_label

#: Names accepted for the columns of a SNP map (lower case) → the scan's names.
MAP_COLUMNS = {
    "chr": "chr",
    "chrom": "chr",
    "chromosome": "chr",
    "bp": "bp",
    "pos": "bp",
    "position": "bp",
    "snp": "SNP",
    "id": "SNP",
    "rsid": "SNP",
    "a1": "A1",
    "a2": "A2",
}


@dataclass
class GenotypeSource:
    """Marker columns for a set of individuals, with the marker map.

    Attributes
    ----------
    ids : tuple of str
        Every genotyped individual, in the source's row order.
    snp_map : pandas.DataFrame
        One row per marker column, in column order: ``SNP``, ``chr`` (text), ``bp`` and, when
        known, ``A1`` (the counted allele) and ``A2``.
    values : array-like
        Individuals × markers: a NumPy array, a Dask array or a lazy PLINK reader.
    """

    ids: tuple[str, ...]
    snp_map: pd.DataFrame
    values: Any
    closer: Any = None

    def dosages(self, rows: np.ndarray) -> _Dosages:
        """The analysed individuals' dosages (rows of the source, in that order)."""
        rows = np.asarray(rows, dtype=int)
        if isinstance(self.values, _BedColumns):
            values: Any = self.values.with_rows(rows)
        elif np.array_equal(rows, np.arange(len(self.ids))):
            values = self.values
        else:
            values = self.values[rows]
        return _Dosages(values=values, ids=tuple(self.ids[r] for r in rows), lazy=False)

    def close(self) -> None:
        if self.closer is not None:
            self.closer.__exit__(None, None, None)
            self.closer = None


class _BedColumns:
    """A PLINK .bed as an array that reads only the blocks asked for (bed-reader)."""

    def __init__(self, bed: Any, rows: np.ndarray | None = None) -> None:
        self.bed = bed
        self.rows = rows
        n = bed.iid_count if rows is None else rows.size
        self.shape = (int(n), int(bed.sid_count))

    def with_rows(self, rows: np.ndarray) -> _BedColumns:
        return _BedColumns(self.bed, rows)

    def __getitem__(self, key: Any) -> np.ndarray:
        rows, cols = key
        if not (isinstance(rows, slice) and rows == slice(None)):
            raise IndexError("the PLINK reader reads whole columns of the chosen individuals")
        index = (self.rows if self.rows is not None else slice(None), cols)
        return self.bed.read(index=index, dtype="float64", order="F")


def _align_map(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """The SNP map's rows in the order of the dosage columns (matched by SNP name if given)."""
    columns = [str(c) for c in columns]
    if "SNP" not in frame.columns:
        if frame.shape[0] != len(columns):
            raise DataError(
                f"The SNP map has {frame.shape[0]} rows for {len(columns)} dosage columns and "
                "no SNP column to match them by; give one row per marker, in column order, or "
                "a SNP column naming each marker."
            )
        frame = frame.copy()
        frame.insert(0, "SNP", columns)
        return frame
    frame = frame.copy()
    frame["SNP"] = frame["SNP"].astype(str)
    _check_unique_snps(frame["SNP"])
    known = set(frame["SNP"])
    absent = [c for c in columns if c not in known]
    if absent:
        raise DataError(
            f"{len(absent)} dosage columns have no row in the SNP map: {preview(absent)}. "
            "Give the map a row (SNP, chr, bp) for every marker."
        )
    return frame.set_index("SNP", drop=False).loc[columns].reset_index(drop=True)


def _check_unique_snps(names: pd.Series) -> None:
    index = pd.Index(names.astype(str))
    dupes = index[index.duplicated()].unique().tolist()
    if dupes:
        raise DataError(
            f"Markers {preview(dupes)} appear more than once in the SNP map; give every marker "
            "a unique name."
        )


def _clean_map(frame: pd.DataFrame) -> pd.DataFrame:
    _check_unique_snps(frame["SNP"])
    bp = pd.to_numeric(frame["bp"], errors="coerce")
    bad = frame.loc[bp.isna(), "SNP"].tolist()
    if bad:
        raise DataError(
            f"Positions (bp) of markers {preview(bad)} are not numbers; the SNP map's bp column "
            "holds base-pair positions."
        )
    chrom = [_chromosome_label(c) for c in frame["chr"]]
    empty = [s for s, c in zip(frame["SNP"], chrom, strict=True) if c in ("", "nan", "None")]
    if empty:
        raise DataError(f"Markers {preview(empty)} have no chromosome in the SNP map.")
    out = pd.DataFrame({"SNP": frame["SNP"].astype(str), "chr": chrom, "bp": bp.to_numpy()})
    for allele in ("A1", "A2"):
        if allele in frame.columns:
            out[allele] = frame[allele].astype(str).to_numpy()
    if np.all(np.mod(out["bp"].to_numpy(dtype=float), 1) == 0):
        out["bp"] = out["bp"].astype(np.int64)
    return out


def open_genotypes(
    genotypes: Any, snp_map: pd.DataFrame | None = None, ids: Sequence[Any] | None = None
) -> GenotypeSource:
    """Wrap the scan's ``genotypes`` argument.

    Parameters
    ----------
    genotypes : str, path, pandas.DataFrame, numpy or Dask array, xarray.Dataset
        A PLINK fileset prefix (``.bed``/``.bim``/``.fam``; the map comes from the ``.bim``),
        individuals × markers dosages counting the A1 allele (NaN missing): a DataFrame
        indexed by id with one column per marker, or an array with ``ids``; or an sgkit
        dataset (:func:`_open_sgkit`).
    snp_map : pandas.DataFrame, optional
        For dosages: one row per marker with ``chr`` (or ``chrom``) and ``bp``, optionally
        ``snp`` (matched to the DataFrame's columns), ``a1`` and ``a2``.
    ids : sequence, optional
        Row ids of an array.

    Returns
    -------
    GenotypeSource

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> dos = pd.DataFrame([[0.0, 1.0], [2.0, np.nan]], index=["a", "b"], columns=["s1", "s2"])
    >>> src = open_genotypes(dos, pd.DataFrame({"chr": [1, 2], "bp": [100, 50]}))
    >>> src.snp_map[["SNP", "chr", "bp"]].values.tolist()
    [['s1', '1', 100], ['s2', '2', 50]]
    """
    if _is_sgkit(genotypes):
        if snp_map is not None or ids is not None:
            raise SpecificationError(
                "An sgkit dataset carries its own map (variant_contig, variant_position) and ids "
                "(sample_id); drop snp_map= and ids=."
            )
        return _open_sgkit(genotypes)
    if isinstance(genotypes, str | os.PathLike):
        if snp_map is not None or ids is not None:
            raise SpecificationError(
                "A PLINK fileset carries its own map (.bim) and ids (.fam); drop snp_map= and ids=."
            )
        return _open_plink(genotypes)
    if snp_map is None:
        raise SpecificationError(
            "Dosages need a SNP map (snp_map=, a DataFrame with chr and bp per marker) so the "
            "scan knows each marker's chromosome; or pass a PLINK prefix."
        )
    frame = _standard_names(snp_map)
    if isinstance(genotypes, pd.DataFrame):
        if ids is not None:
            raise SpecificationError("The dosage DataFrame's index holds the ids; drop ids=.")
        bad = [c for c in genotypes.columns if not pd.api.types.is_numeric_dtype(genotypes[c])]
        if bad:
            raise DataError(
                f"Dosage columns {preview(bad)} are not numeric; dosages count the A1 allele "
                "(0/1/2, NaN for missing). Put the ids in the index, not in a column."
            )
        row_ids = tuple(str(i) for i in genotypes.index)
        values = genotypes.to_numpy(dtype=float, na_value=np.nan)
        frame = _align_map(frame, genotypes.columns)
    else:
        values = genotypes if _is_dask(genotypes) else np.asarray(genotypes, dtype=float)
        if len(values.shape) != 2:
            raise DataError(
                f"Dosages must be a 2-D matrix (individuals × markers); got shape {values.shape}."
            )
        if ids is None:
            raise SpecificationError(
                "An array of dosages needs ids= (one per row) to match the phenotype table."
            )
        row_ids = tuple(str(i) for i in ids)
        if len(row_ids) != values.shape[0]:
            raise DataError(f"Got {len(row_ids)} ids for {values.shape[0]} rows of dosages.")
        if frame.shape[0] != values.shape[1]:
            raise DataError(
                f"The SNP map has {frame.shape[0]} rows for {values.shape[1]} dosage columns; "
                "give one row per marker, in column order."
            )
        if "SNP" not in frame.columns:
            frame = _align_map(frame, [f"snp{k + 1}" for k in range(values.shape[1])])
    _check_ids(row_ids, "dosages")
    return GenotypeSource(ids=row_ids, snp_map=_clean_map(frame), values=values)


def _standard_names(snp_map: pd.DataFrame) -> pd.DataFrame:
    rename = {}
    for col in snp_map.columns:
        key = MAP_COLUMNS.get(str(col).strip().lower())
        if key is not None and key not in rename.values():
            rename[col] = key
    frame = snp_map.rename(columns=rename)
    missing = [c for c in ("chr", "bp") if c not in frame.columns]
    if missing:
        raise DataError(
            f"The SNP map has no {' or '.join(missing)} column (it has "
            f"{preview(snp_map.columns)}); give one row per marker with its chromosome (chr) "
            "and position (bp)."
        )
    return frame[list(rename.values())].copy()


def _check_ids(ids: tuple[str, ...], where: str) -> None:
    index = pd.Index(ids)
    dupes = index[index.duplicated()].unique().tolist()
    if dupes:
        raise DataError(
            f"The {where} repeat individual ids {preview(dupes)}; each row must be a different "
            "individual (for PLINK, make IIDs unique, e.g. FID_IID)."
        )


def _open_plink(prefix: str | os.PathLike) -> GenotypeSource:
    try:
        from bed_reader import open_bed
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Reading PLINK files needs bed-reader: pip install 'bayeslmm[plink]'."
        ) from exc
    base = os.fspath(prefix).removesuffix(".bed")
    for suffix in (".bed", ".bim", ".fam"):
        if not os.path.isfile(base + suffix):
            raise DataError(
                f"PLINK file {base + suffix} does not exist; --bfile / genotypes= takes the "
                "prefix of a .bed/.bim/.fam fileset."
            )
    bed = open_bed(base + ".bed")
    try:
        ids = tuple(str(i) for i in bed.iid)
        frame = pd.DataFrame(
            {
                "SNP": [str(s) for s in bed.sid],
                "chr": [str(c) for c in bed.chromosome],
                "bp": np.asarray(bed.bp_position, dtype=np.int64),
                "A1": [str(a) for a in bed.allele_1],
                "A2": [str(a) for a in bed.allele_2],
            }
        )
        _check_ids(ids, f"{base}.fam IIDs")
    except BaseException:
        bed.__exit__(None, None, None)
        raise
    return GenotypeSource(ids=ids, snp_map=_clean_map(frame), values=_BedColumns(bed), closer=bed)


def _is_sgkit(genotypes: Any) -> bool:
    """An xarray Dataset in sgkit's layout (variants × samples)."""
    return type(genotypes).__name__ == "Dataset" and hasattr(genotypes, "data_vars")


def _open_sgkit(ds: Any) -> GenotypeSource:
    """Dosages and map from an sgkit (xarray) dataset, lazily if its arrays are Dask arrays.

    The counted allele (A1) is the first alternate allele (sgkit's allele 1): ``call_dosage``
    (variants × samples, NaN missing) if present, else the copies of allele 1 in
    ``call_genotype`` (variants × samples × ploidy, negative missing; a call with any allele
    missing is missing). Map: ``variant_contig`` (index into the ``contigs`` attribute),
    ``variant_position``, ``variant_id`` (else ``chr:bp``), ``variant_allele`` (A1 = allele 1,
    A2 = allele 0); ids: ``sample_id``.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> gt = np.array([[[0, 1], [1, 1], [-1, 0]], [[0, 0], [0, 1], [1, 1]]], dtype=np.int8)
    >>> ds = xr.Dataset({
    ...     "call_genotype": (("variants", "samples", "ploidy"), gt),
    ...     "variant_contig": ("variants", np.array([0, 1])),
    ...     "variant_position": ("variants", np.array([100, 50])),
    ...     "sample_id": ("samples", np.array(["a", "b", "c"])),
    ... }, attrs={"contigs": ["1", "2"]})
    >>> src = _open_sgkit(ds)
    >>> src.values.tolist(), src.snp_map["SNP"].tolist()
    ([[1.0, 0.0], [2.0, 1.0], [nan, 2.0]], ['1:100', '2:50'])
    """
    missing = [v for v in ("variant_contig", "variant_position", "sample_id") if v not in ds]
    if "call_dosage" not in ds and "call_genotype" not in ds:
        missing.append("call_dosage or call_genotype")
    if missing:
        raise DataError(
            f"The genotype dataset lacks {', '.join(missing)}; an sgkit dataset (e.g. from "
            "sgkit.io.plink.read_plink or sgkit.load_dataset) holds them."
        )
    if "call_dosage" in ds:
        dosage = ds["call_dosage"].astype(float)
    else:
        gt = ds["call_genotype"]
        dosage = (gt == 1).sum("ploidy").astype(float).where(~(gt < 0).any("ploidy"))
    values = dosage.transpose("samples", "variants").data  # NumPy or Dask: read in blocks
    contigs = [str(c) for c in ds.attrs.get("contigs", [])]
    index = np.asarray(ds["variant_contig"].values)
    chrom = [contigs[int(i)] if contigs else str(i) for i in index]
    bp = np.asarray(ds["variant_position"].values, dtype=np.int64)
    if "variant_id" in ds:
        names = [str(v) for v in np.asarray(ds["variant_id"].values)]
    else:
        names = [f"{c}:{p}" for c, p in zip(chrom, bp, strict=True)]
    frame = pd.DataFrame({"SNP": names, "chr": chrom, "bp": bp})
    if "variant_allele" in ds and ds["variant_allele"].shape[1] >= 2:
        alleles = np.asarray(ds["variant_allele"].values).astype(str)
        frame["A1"], frame["A2"] = alleles[:, 1], alleles[:, 0]
    ids = tuple(str(i) for i in np.asarray(ds["sample_id"].values))
    _check_ids(ids, "sample_id values")
    if not _is_dask(values):
        values = np.asarray(values, dtype=float)
    return GenotypeSource(ids=ids, snp_map=_clean_map(frame), values=values)
