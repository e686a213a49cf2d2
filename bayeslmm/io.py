"""Readers and writers: relationship matrices (GCTA binary, square CSV/TSV) and genotypes
(PLINK .bed/.bim/.fam, dosage CSV).

Ids are always read as strings, so ``"007"`` stays ``"007"`` and matches a data frame column
of strings. Every text table is checked before pandas sees it: a missing, empty or binary file,
a duplicated header and a separator other than the extension's (semicolon, tab) are reported
in one line that names the file.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import lzma
import os
import re
import warnings
from collections.abc import Collection
from pathlib import Path

import numpy as np
import pandas as pd

from bayeslmm.errors import DataError, KinshipError, preview
from bayeslmm.kinship import Kinship

__all__ = [
    "read_data_table",
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


# -- text tables: checks before parsing -----------------------------------------------------
_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
_SEPARATOR_NAMES = {",": "comma", "\t": "tab", ";": "semicolon", r"\s+": "whitespace"}


def _opener(path: PathLike):
    suffix = Path(os.fspath(path)).suffix.lower()
    return _OPENERS.get(suffix, open)


def _table_text(path: PathLike, what: str, error: type[Exception] = DataError) -> str:
    """The first 64 KiB of a text table, decoded; a clear error for anything else."""
    text = os.fspath(path)
    if not os.path.exists(text):
        raise error(f"No {what} at {text!r}: the file does not exist (check the path).")
    if os.path.isdir(text):
        raise error(f"The {what} {text!r} is a directory; give the path of a file.")
    try:
        with _opener(text)(text, "rb") as handle:
            head = handle.read(65536)
    except (OSError, EOFError, lzma.LZMAError) as exc:
        raise error(f"Cannot read the {what} {text!r}: {exc}.") from exc
    if not head.strip():
        raise error(f"The {what} {text!r} is empty; it needs a header row and one row per record.")
    kind = None
    if head.startswith(b"PK\x03\x04"):
        kind = "a zip archive or an Excel workbook (.xlsx)"
    elif head.startswith(b"\x1f\x8b"):
        kind = "gzip-compressed (name it .gz to read it compressed)"
    elif head.startswith(b"\xd0\xcf\x11\xe0"):
        kind = "an old Excel workbook (.xls)"
    elif b"\0" in head:
        kind = "binary, not text"
    if kind:
        raise error(f"The {what} {text!r} is {kind}; bayeslmm reads text tables: export it as CSV.")
    try:
        return head.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if len(head) == 65536 and exc.start >= len(head) - 4:  # cut by the window
            return head[: exc.start].decode("utf-8-sig")
        line = head[: exc.start].count(b"\n") + 1
        raise error(
            f"The {what} {text!r} is not UTF-8 text (byte 0x{head[exc.start]:02x} on line "
            f"{line}); save it as UTF-8 (e.g. 'CSV UTF-8' in a spreadsheet)."
        ) from exc


def _sniff_separator(head: str, default: str) -> str:
    """The header line's separator: the extension's if it splits the line, else the one
    of comma, tab, semicolon that gives most fields, else whitespace."""
    first = head.lstrip("\ufeff").splitlines()[0] if head.strip() else ""

    def fields(sep: str) -> int:
        return len(next(csv.reader([first], delimiter=sep), []))

    if fields(default) > 1:
        return default
    counts = {sep: fields(sep) for sep in (",", "\t", ";") if sep != default}
    best = max(counts, key=counts.get)
    if counts[best] > 1:
        return best
    if len(first.split()) > 1:
        return r"\s+"
    return default


def _table_separator(path: PathLike, head: str, sep: str | None, what: str) -> str:
    """Explicit ``sep``, or the detected one (with a one-line note when it is not the
    extension's)."""
    if sep is not None:
        return sep
    default = _table_sep(path)
    found = _sniff_separator(head, default)
    if found != default:
        warnings.warn(
            f"{os.fspath(path)} is {_SEPARATOR_NAMES[found]}-separated (not "
            f"{_SEPARATOR_NAMES[default]}, as its name suggests); read as such.",
            UserWarning,
            stacklevel=3,
        )
    return found


def _header_fields(head: str, sep: str) -> list[str]:
    first = head.splitlines()[0]
    if sep == r"\s+":
        return first.split()
    return [h.strip() for h in next(csv.reader([first], delimiter=sep))]


def _check_header(names: list[str], path: PathLike, what: str, error: type[Exception]) -> None:
    """Refuse duplicated column names (pandas would rename them silently to 'x.1')."""
    seen: dict[str, int] = {}
    for k, name in enumerate(names, start=1):
        if name and name in seen:
            raise error(
                f"The {what} {os.fspath(path)!r} has the column name {name!r} twice (columns "
                f"{seen[name]} and {k} of the header); rename or remove one of them."
            )
        seen.setdefault(name, k)


def _read_text_frame(path: PathLike, sep: str, error: type[Exception], **kwargs) -> pd.DataFrame:
    try:
        return pd.read_csv(
            path,
            sep=sep,
            engine="python" if sep == r"\s+" else "c",
            encoding="utf-8-sig",
            **kwargs,
        )
    except UnicodeDecodeError as exc:  # past the first 64 KiB that _table_text checked
        raise error(
            f"{os.fspath(path)} is not UTF-8 text ({exc.reason} at byte {exc.start} of a "
            "block); save it as UTF-8 (e.g. 'CSV UTF-8' in a spreadsheet)."
        ) from exc
    except pd.errors.EmptyDataError as exc:
        raise error(f"{os.fspath(path)} holds no table ({exc}).") from exc
    except pd.errors.ParserError as exc:
        detail = str(exc).removeprefix("Error tokenizing data. C error: ").strip()
        raise error(
            f"{os.fspath(path)} is not a regular table: {detail}. Every row needs as many "
            "fields as the header (a separator or quote inside a value?)."
        ) from exc


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
    what = "kinship table"
    head = _table_text(path, what, KinshipError)
    sep = _table_separator(path, head, sep, what)
    header = _header_fields(head, sep)
    _check_header(header[1:], path, what, KinshipError)
    body = _read_text_frame(
        path, sep, KinshipError, header=None, skiprows=1, index_col=0, dtype={0: str}
    )
    if body.shape[0] == 0:
        raise KinshipError(f"The {what} {os.fspath(path)!r} has a header but no rows.")
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
    base = _gcta_prefix(text)
    if os.path.isfile(base + ".grm.bin") and os.path.isfile(base + ".grm.id"):
        return read_gcta_grm(base, name=name)
    if plain.endswith(_TABLE_SUFFIXES):  # a table, or a clear "does not exist" for one
        return read_matrix_csv(text, name=name)
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
    what = "dosage table"
    head = _table_text(path, what)
    sep = _table_separator(path, head, sep, what)
    header = _header_fields(head, sep)
    _check_header(header, path, what, DataError)
    # pandas names an empty header cell "Unnamed: 0"; keep ids as text either way ("007").
    id_column = header[0] or "Unnamed: 0"
    frame = _read_text_frame(path, sep, DataError, index_col=0, dtype={id_column: str})
    if frame.shape[0] == 0:
        raise DataError(f"The {what} {os.fspath(path)!r} has a header but no rows.")
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


# -- observations ----------------------------------------------------------------------------
#: Cells that stand for "no number here" when they sit in a numeric column: the cause of a
#: covariate silently turning into a factor, so they are refused with the cell named.
_STRAY_WORDS = frozenset({"na", "n/a", "n.a.", "na.", "nan", "null", "none", "missing", "nd"})
_TRUE_FALSE = {"true": True, "false": False}
_DECIMAL_COMMA = re.compile(r"[+-]?\d*,\d+|[+-]?\d+")


_MALFORMED_NUMBER = re.compile(r"[+-]?[\d.,' eE+-]*\d[\d.,' eE+-]*")


def _is_stray(token: str) -> bool:
    """A missing-value word, punctuation only (``.``, ``-``), or a malformed number
    (``1,5``, ``1..5``, ``1 000``)."""
    return (
        token.lower() in _STRAY_WORDS
        or not re.search(r"\w", token)
        or _MALFORMED_NUMBER.fullmatch(token) is not None
    )


def read_data_table(
    path: PathLike,
    *,
    text_columns: Collection[str] = (),
    numeric_columns: Collection[str] = (),
    factor_columns: Collection[str] = (),
    checked_columns: Collection[str] | None = None,
    sep: str | None = None,
) -> pd.DataFrame:
    """Read a table of observations with column types decided, not guessed.

    Every cell is read as text first. Empty cells and pandas' usual missing-value strings
    (``NA``, ``NaN``, ``null``, ...) are missing. Then, column by column:

    - ``text_columns`` (ids, grouping factors) and ``factor_columns`` stay text: ``"007"``
      stays ``"007"`` and matches a kinship's ids;
    - ``numeric_columns`` (a response, a trials column) must hold numbers: the first cell
      that is not one is an error naming its line, column and value;
    - ``checked_columns`` (the other columns a model uses; default: all others) become
      numbers when every cell is one, and stay text (a factor) when the column is
      categorical. A column of numbers with a few stray cells (``.``, ``-``, ``NA.``,
      ``missing``, or fewer than one cell in ten) is an error naming the first such cell:
      it would otherwise turn silently into a factor;
    - remaining columns become numbers when every cell is one, text otherwise.

    ``TRUE``/``FALSE`` columns become booleans. A semicolon- or tab-separated file is
    recognised (with a one-line warning); in a semicolon-separated file, decimal commas
    (``1,5``) are read as decimal points.

    Parameters
    ----------
    path : path
        The table, with a header row (``.csv``; ``.tsv``/``.txt`` tab; ``.gz``/``.bz2``/``.xz``
        compressed).
    text_columns, numeric_columns, factor_columns, checked_columns : collection of str
        Column roles, as above. Names absent from the file are ignored here (the model
        reports them).
    sep : str, optional
        Field separator (default: detected).

    Returns
    -------
    DataFrame
        One row per non-blank line.

    Raises
    ------
    DataError
        Missing, empty, binary or non-UTF-8 file; duplicated header; irregular rows; a
        non-number in a numeric column (naming the line, column and value).

    Examples
    --------
    >>> import tempfile, os
    >>> from bayeslmm.io import read_data_table
    >>> path = os.path.join(tempfile.mkdtemp(), "pheno.csv")
    >>> _ = open(path, "w").write("id,y,x,sex\\n007,1.5,2,F\\n010,2.5,,M\\n")
    >>> df = read_data_table(path, text_columns=["id"], numeric_columns=["y"])
    >>> df["id"].tolist(), df["x"].tolist(), df["sex"].tolist()
    (['007', '010'], [2.0, nan], ['F', 'M'])
    >>> _ = open(path, "w").write("id,y,x\\n1,1.5,2\\n2,2.5,.\\n")
    >>> read_data_table(path, text_columns=["id"], numeric_columns=["y"])
    Traceback (most recent call last):
    ...
    bayeslmm.errors.DataError: ...line 3, column 'x': '.' is not a number...
    """
    what = "data file"
    head = _table_text(path, what)
    sep = _table_separator(path, head, sep, what)
    names = _header_fields(head, sep)
    _check_header(names, path, what, DataError)
    raw = _read_text_frame(
        path,
        sep,
        DataError,
        dtype=str,
        keep_default_na=True,
        skip_blank_lines=False,  # keeps row k on line k + 2, for messages
        index_col=False,
    )
    raw.columns = [str(c).strip() for c in raw.columns]
    raw = raw.apply(lambda col: col.str.strip()).replace("", np.nan)
    lines = pd.Series(np.arange(raw.shape[0]) + 2, index=raw.index)
    blank = raw.isna().all(axis=1)
    raw, lines = raw[~blank], lines[~blank]
    if raw.shape[0] == 0:
        raise DataError(
            f"The {what} {os.fspath(path)!r} has a header ({preview(names, 8)}) but no data rows."
        )
    text = set(text_columns) | set(factor_columns)
    numeric = set(numeric_columns) - text
    checked = set(raw.columns if checked_columns is None else checked_columns)
    out = {}
    for col in raw.columns:
        values = raw[col]
        if col in text:
            out[col] = values
            continue
        out[col] = _typed_column(
            values, col, lines, path, sep, strict=col in checked, required=col in numeric
        )
    frame = pd.DataFrame(out, columns=raw.columns)
    return frame.reset_index(drop=True)


def _typed_column(
    values: pd.Series,
    col: str,
    lines: pd.Series,
    path: PathLike,
    sep: str,
    strict: bool,
    required: bool,
) -> pd.Series:
    """Numbers, booleans or text, by the rules of :func:`read_data_table`."""
    present = values.notna()
    if not present.any():
        return values.astype(float)
    tokens = values[present]
    lowered = tokens.str.lower()
    if lowered.isin(list(_TRUE_FALSE)).all():
        return values.str.lower().map(_TRUE_FALSE)
    if sep == ";" and tokens.str.fullmatch(_DECIMAL_COMMA).all() and tokens.str.contains(",").any():
        tokens = tokens.str.replace(",", ".", regex=False)
        values = values.where(~present, tokens)
    numbers = pd.to_numeric(values, errors="coerce")
    bad = present & numbers.isna()
    if not bad.any():
        return numbers
    n_numbers = int((present & ~bad).sum())
    odd = values[bad]
    stray = odd.map(_is_stray).all() and n_numbers > 0
    mostly_numbers = n_numbers >= 0.9 * int(present.sum())
    if not (required or (strict and (stray or mostly_numbers))):
        return values  # categorical: a factor
    first = odd.index[0]
    where = f"{os.fspath(path)}, line {lines[first]}, column '{col}'"
    if required:
        raise DataError(
            f"{where}: {odd[first]!r} is not a number, and '{col}' must be numeric (it is the "
            "response or the trials column). Fix the cell, or leave it empty / write NA for a "
            f"missing value ({int(bad.sum())} such cell(s) in the column)."
        )
    hint = " (a decimal comma? write 1.5, not 1,5)" if "," in str(odd[first]) else ""
    raise DataError(
        f"{where}: {odd[first]!r} is not a number{hint}, but the column holds numbers "
        f"({n_numbers} of {int(present.sum())} cells). Leave missing values empty or write NA; "
        f"if '{col}' is a factor, write C({col}) in the formula ({int(bad.sum())} such cell(s))."
    )
