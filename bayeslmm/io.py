"""Readers and writers: relationship matrices (GCTA binary, square CSV/TSV) and genotypes
(PLINK .bed/.bim/.fam, dosage CSV).

Ids are always read as strings, so ``"007"`` stays ``"007"`` and matches a data frame column
of strings.
"""

from __future__ import annotations

import csv
import gzip
import os
from pathlib import Path

import numpy as np
import pandas as pd

from bayeslmm.errors import DataError, KinshipError, preview
from bayeslmm.kinship import Kinship

__all__ = [
    "read_dosage_csv",
    "read_gcta_grm",
    "read_kinship",
    "read_matrix_csv",
    "read_plink",
    "write_gcta_grm",
    "write_matrix_csv",
]

PathLike = str | os.PathLike

_GCTA_SUFFIXES = (".grm.N.bin", ".grm.bin", ".grm.id", ".grm")
_TABLE_SUFFIXES = (".csv", ".tsv", ".tab", ".txt")


# -- GCTA binary GRM ------------------------------------------------------------------------
def _gcta_prefix(prefix: PathLike) -> str:
    text = os.fspath(prefix)
    for suffix in _GCTA_SUFFIXES:
        if text.endswith(suffix):
            return text[: -len(suffix)]
    return text


def write_gcta_grm(
    kinship: Kinship, prefix: PathLike, n_snps: int | float | np.ndarray | None = None
) -> list[Path]:
    """Write a kinship in GCTA's binary GRM format.

    Files written: ``PREFIX.grm.bin`` (the lower triangle with the diagonal, row by row:
    K[0,0], K[1,0], K[1,1], K[2,0], ..., as float32), ``PREFIX.grm.id`` (two tab-separated
    columns FID and IID, both set to the id) and, when ``n_snps`` is given, ``PREFIX.grm.N.bin``
    (the number of SNPs behind each entry, same layout, float32).

    Parameters
    ----------
    kinship : Kinship
        The matrix to write. float32 keeps about 7 significant digits.
    prefix : path
        Output prefix (a trailing ``.grm`` is ignored).
    n_snps : int or ndarray (n, n), optional
        SNP count for every pair (a scalar for all). Omitted: no ``.grm.N.bin`` is written.

    Returns
    -------
    list of Path
        The files written.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from bayeslmm import Kinship
    >>> from bayeslmm.io import read_gcta_grm, write_gcta_grm
    >>> K = Kinship(np.array([[1.0, 0.25], [0.25, 1.0]]), ids=["a", "b"])
    >>> prefix = os.path.join(tempfile.mkdtemp(), "demo")
    >>> _ = write_gcta_grm(K, prefix, n_snps=1000)
    >>> read_gcta_grm(prefix).matrix.tolist()
    [[1.0, 0.25], [0.25, 1.0]]
    """
    base = _gcta_prefix(prefix)
    rows, cols = np.tril_indices(kinship.n)
    paths = [Path(base + ".grm.bin"), Path(base + ".grm.id")]
    kinship.matrix[rows, cols].astype("<f4").tofile(paths[0])
    with open(paths[1], "w", encoding="utf-8", newline="") as handle:
        for i in kinship.ids:
            handle.write(f"{i}\t{i}\n")
    if n_snps is not None:
        counts = np.broadcast_to(np.asarray(n_snps, dtype=float), (kinship.n, kinship.n))
        paths.append(Path(base + ".grm.N.bin"))
        counts[rows, cols].astype("<f4").tofile(paths[2])
    return paths


def _read_gcta_ids(path: Path) -> list[str]:
    ids = []
    with open(path, encoding="utf-8") as handle:
        for k, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 2:
                raise KinshipError(
                    f"{path}: line {k} has {len(fields)} field(s); a .grm.id file has two "
                    "columns, FID and IID."
                )
            ids.append(fields[1])
    return ids


def read_gcta_grm(prefix: PathLike, name: str | None = None) -> Kinship:
    """Read a GCTA binary GRM (``PREFIX.grm.bin`` + ``PREFIX.grm.id``).

    Parameters
    ----------
    prefix : path
        The prefix GCTA was given with ``--out`` (``foo``, ``foo.grm`` or ``foo.grm.bin``).
    name : str, optional
        Label of the kinship (default: the file name).

    Returns
    -------
    Kinship
        Ids are the IID column. Values are float32 in the file (about 1e-7 relative
        rounding).

    Examples
    --------
    See :func:`write_gcta_grm`.
    """
    base = _gcta_prefix(prefix)
    bin_path, id_path = Path(base + ".grm.bin"), Path(base + ".grm.id")
    for path in (bin_path, id_path):
        if not path.exists():
            raise KinshipError(f"GCTA GRM file {path} does not exist.")
    ids = _read_gcta_ids(id_path)
    n = len(ids)
    values = np.fromfile(bin_path, dtype="<f4")
    if values.size != n * (n + 1) // 2:
        raise KinshipError(
            f"{bin_path} holds {values.size} values but {id_path} lists {n} individuals, "
            f"which need n(n+1)/2 = {n * (n + 1) // 2}; the two files do not belong together "
            "(or the .grm.bin is not float32 GCTA output)."
        )
    K = np.zeros((n, n))
    rows, cols = np.tril_indices(n)
    K[rows, cols] = values
    K[cols, rows] = values
    return Kinship(K, ids=ids, name=name or Path(base).name)


# -- square CSV / TSV -----------------------------------------------------------------------
def _table_sep(path: PathLike) -> str:
    name = os.fspath(path).lower()
    for suffix in (".gz", ".bz2", ".xz", ".zip"):
        name = name.removesuffix(suffix)
    return "\t" if name.endswith((".tsv", ".tab", ".txt")) else ","


def _header(path: PathLike, sep: str) -> list[str]:
    opener = gzip.open if os.fspath(path).lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as handle:
        return next(csv.reader(handle, delimiter=sep))


def write_matrix_csv(kinship: Kinship, path: PathLike, sep: str | None = None) -> Path:
    """Write a kinship as a square table: a header row of ids and the ids in the first column.

    Parameters
    ----------
    kinship : Kinship
        The matrix (written in full float64 precision, so a round trip is exact).
    path : path
        ``.csv`` (comma) or ``.tsv``/``.txt`` (tab) unless ``sep`` is given.
    sep : str, optional
        Field separator.

    Returns
    -------
    Path
        The file written.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from bayeslmm import Kinship
    >>> from bayeslmm.io import read_matrix_csv, write_matrix_csv
    >>> K = Kinship(np.array([[1.0, 0.1], [0.1, 1.0]]), ids=["007", "008"])
    >>> path = write_matrix_csv(K, os.path.join(tempfile.mkdtemp(), "K.csv"))
    >>> read_matrix_csv(path).ids
    ('007', '008')
    """
    frame = kinship.to_dataframe()
    frame.index.name = "id"
    frame.to_csv(path, sep=sep or _table_sep(path))
    return Path(path)


def read_matrix_csv(path: PathLike, sep: str | None = None, name: str | None = None) -> Kinship:
    """Read a square relationship matrix with ids in the header row and the first column.

    Parameters
    ----------
    path : path
        The table; the header's first cell (e.g. ``id``) is ignored. Columns may come in a
        different order from the rows: they are matched by id.
    sep : str, optional
        Field separator (default: tab for ``.tsv``/``.tab``/``.txt``, comma otherwise).
    name : str, optional
        Label of the kinship (default: the file name without suffix).

    Returns
    -------
    Kinship

    Examples
    --------
    See :func:`write_matrix_csv`.
    """
    sep = sep or _table_sep(path)
    header = _header(path, sep)
    body = pd.read_csv(path, sep=sep, header=None, skiprows=1, index_col=0, dtype={0: str})
    if body.shape[1] != len(header) - 1:
        raise KinshipError(
            f"{path}: the header names {len(header) - 1} ids but the rows have "
            f"{body.shape[1]} values; a kinship table needs an id header over every column."
        )
    bad = [
        header[k + 1]
        for k, c in enumerate(body.columns)
        if not pd.api.types.is_numeric_dtype(body[c])
    ]
    if bad:
        raise KinshipError(
            f"{path}: columns {preview(bad)} hold non-numeric entries; the table must contain "
            "only numbers besides the ids (is the separator right?)."
        )
    body.columns = [str(h).strip() for h in header[1:]]
    body.index = [str(i).strip() for i in body.index]
    stem = Path(os.fspath(path)).name.split(".")[0]
    return Kinship.from_dataframe(body, name=name or stem)


def read_kinship(path_or_prefix: PathLike, name: str | None = None) -> Kinship:
    """Read a kinship from a CSV/TSV table or a GCTA binary GRM, whichever exists.

    Parameters
    ----------
    path_or_prefix : path
        A ``.csv``/``.tsv``/``.txt`` file (optionally compressed), or a GCTA prefix
        (``foo`` for ``foo.grm.bin``/``foo.grm.id``; ``foo.grm`` and ``foo.grm.bin`` work too).
    name : str, optional
        Label of the kinship.

    Returns
    -------
    Kinship

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from bayeslmm import Kinship
    >>> from bayeslmm.io import read_kinship, write_gcta_grm
    >>> prefix = os.path.join(tempfile.mkdtemp(), "g")
    >>> _ = write_gcta_grm(Kinship(np.eye(2), ["a", "b"]), prefix)
    >>> read_kinship(prefix).ids
    ('a', 'b')
    """
    text = os.fspath(path_or_prefix)
    plain = text.lower()
    for suffix in (".gz", ".bz2", ".xz", ".zip"):
        plain = plain.removesuffix(suffix)
    if plain.endswith(_TABLE_SUFFIXES) and os.path.isfile(text):
        return read_matrix_csv(text, name=name)
    base = _gcta_prefix(text)
    if os.path.isfile(base + ".grm.bin") and os.path.isfile(base + ".grm.id"):
        return read_gcta_grm(base, name=name)
    raise KinshipError(
        f"No kinship found at {text!r}: expected a .csv/.tsv/.txt file or a GCTA GRM "
        f"({base}.grm.bin with {base}.grm.id)."
    )


# -- genotypes -------------------------------------------------------------------------------
def read_plink(prefix: PathLike, dtype: str = "float64") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read PLINK 1 binary genotypes (``.bed``/``.bim``/``.fam``) with bed-reader.

    Parameters
    ----------
    prefix : path
        The fileset prefix (``foo`` or ``foo.bed``).
    dtype : {"float64", "float32"}
        Dosage type; float32 halves memory.

    Returns
    -------
    dosages : DataFrame
        Individuals × SNPs, indexed by IID, columns the SNP ids; values count the A1 allele
        (the 5th .bim column, PLINK's convention), NaN for missing.
    snp_map : DataFrame
        One row per SNP: ``chrom``, ``snp``, ``cm``, ``bp``, ``a1``, ``a2``.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from bed_reader import to_bed
    >>> from bayeslmm.io import read_plink
    >>> bed = os.path.join(tempfile.mkdtemp(), "toy.bed")
    >>> to_bed(bed, np.array([[0.0, 2.0], [1.0, np.nan]]), properties={"iid": ["a", "b"]})
    >>> dosages, snp_map = read_plink(bed[:-4])
    >>> dosages.shape, list(snp_map.columns)
    ((2, 2), ['chrom', 'snp', 'cm', 'bp', 'a1', 'a2'])
    """
    try:
        from bed_reader import open_bed
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Reading PLINK files needs bed-reader: pip install 'bayeslmm[plink]'."
        ) from exc
    base = os.fspath(prefix).removesuffix(".bed")
    for suffix in (".bed", ".bim", ".fam"):
        if not os.path.isfile(base + suffix):
            raise DataError(f"PLINK file {base + suffix} does not exist.")
    with open_bed(base + ".bed") as bed:
        values = bed.read(dtype=dtype)
        iid = [str(i) for i in bed.iid]
        snp_map = pd.DataFrame(
            {
                "chrom": [str(c) for c in bed.chromosome],
                "snp": [str(s) for s in bed.sid],
                "cm": np.asarray(bed.cm_position, dtype=float),
                "bp": np.asarray(bed.bp_position, dtype=np.int64),
                "a1": [str(a) for a in bed.allele_1],
                "a2": [str(a) for a in bed.allele_2],
            }
        )
    index = pd.Index(iid, name="id")
    dupes = index[index.duplicated()].unique().tolist()
    if dupes:
        raise DataError(
            f"{base}.fam repeats IIDs {preview(dupes)} (in different families?); bayeslmm "
            "indexes individuals by IID, so make IIDs unique (e.g. FID_IID)."
        )
    return pd.DataFrame(values, index=index, columns=snp_map["snp"].tolist()), snp_map


def read_dosage_csv(path: PathLike, sep: str | None = None) -> pd.DataFrame:
    """Read a dosage table: first column the id, one column per SNP (0/1/2, blank/NA missing).

    Parameters
    ----------
    path : path
        The table (``.csv`` comma, ``.tsv``/``.txt`` tab unless ``sep`` is given).
    sep : str, optional
        Field separator.

    Returns
    -------
    DataFrame
        Dosages as float, indexed by id (strings), one column per SNP.

    Examples
    --------
    >>> import tempfile, os
    >>> from bayeslmm.io import read_dosage_csv
    >>> path = os.path.join(tempfile.mkdtemp(), "g.csv")
    >>> _ = open(path, "w").write("id,snp1,snp2\\n007,0,2\\n008,1,NA\\n")
    >>> read_dosage_csv(path).loc["008"].tolist()
    [1.0, nan]
    """
    sep = sep or _table_sep(path)
    header = _header(path, sep)
    # pandas names an empty header cell "Unnamed: 0"; keep ids as text either way ("007").
    id_column = header[0] or "Unnamed: 0"
    frame = pd.read_csv(path, sep=sep, index_col=0, dtype={id_column: str})
    bad = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if bad:
        raise DataError(
            f"{path}: SNP columns {preview(bad)} hold non-numeric entries; a dosage table "
            "has the id in the first column and numbers (0/1/2, NA for missing) elsewhere."
        )
    if frame.shape[1] == 0:
        raise DataError(f"{path}: no SNP columns after the id column (is the separator right?).")
    index = pd.Index([str(i) for i in frame.index], name="id")
    dupes = index[index.duplicated()].unique().tolist()
    if dupes:
        raise DataError(f"{path}: ids {preview(dupes)} appear on more than one row.")
    frame.index = index
    return frame.astype(float)
