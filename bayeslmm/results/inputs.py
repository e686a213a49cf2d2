"""A fit's inputs stored beside its results, so that ``bl.load_fit(dir)`` needs nothing else.

``fit.save(dir)`` and ``bayeslmm fit --out dir`` write, unless told not to (``inputs=False``),
an ``inputs/`` folder and list it in summary.json under ``"inputs"``:

- ``inputs/data.csv``: the data columns the model uses (response, covariates, grouping
  factors, the sigma formula's and the trials column), every row as fitted, floats written
  with 17 significant digits (they read back bit for bit); the dtype of each column is
  recorded in summary.json (``"columns"``), with the categories of a categorical, so that
  strings, integers, booleans and categoricals (level order included: it sets the reference
  level of a factor) come back as they were;
- ``inputs/kinship_<group>.npz``: each kinship the model used (NumPy: ``matrix``, ``ids``,
  ``name``), restricted to the levels of the data, as the model holds it. A dense n × n
  matrix takes 8 n² bytes (n = 10,000: 0.8 GB; it compresses little, so it is stored
  uncompressed, which writes fast); save with ``inputs=False`` when that is too much, and
  give ``load_fit`` the kinship again. A sparse pedigree kinship
  (``pedigree_relationship(ped, sparse=True)``) is stored as its sparse factors (the whole
  pedigree's L⁻¹, Mendelian variances and inbreeding, and which animals the model uses):
  about 40 bytes per animal, never the dense A.

The model's ``trials=`` column and ``priors=`` overrides are recorded too (``"trials"``,
``"priors"``), so that :func:`bayeslmm.load_fit` rebuilds the same model. A multi-trait
model (:class:`~bayeslmm.multitrait_spec.MultiTraitSpec`) stores the same files (its traits,
covariates and id column; its one kinship) and adds ``"families"``: trait → the trait's
family, its link and the family's options (``{"family": "poisson", "link": "log",
"overdispersion": true}``).

Examples
--------
>>> import tempfile, numpy as np, pandas as pd
>>> from pathlib import Path
>>> from bayeslmm import specify
>>> df = pd.DataFrame({"y": [1.0, 2.5, 0.1, 1.9], "g": pd.Categorical(list("abab")),
...                    "unused": 0})
>>> folder = Path(tempfile.mkdtemp())
>>> entry = write_inputs(specify("y ~ 1 + (1 | g)", df), folder)
>>> entry["data"], sorted(entry["columns"])
('inputs/data.csv', ['g', 'y'])
>>> data, kinship, options = read_inputs(folder, entry)
>>> data["g"].dtype.name, bool((data["y"] == df["y"]).all()), kinship
('category', True, {})
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bayeslmm.errors import DataError
from bayeslmm.kinship import Kinship

#: The folder, inside a results folder, that holds the inputs.
INPUTS_DIR = "inputs"

_TOKEN = re.compile(r"[A-Za-z_.][A-Za-z0-9_.]*")


def model_columns(spec: Any) -> list[str]:
    """The data columns a specification uses, in the data's order, and its trials column.

    Returns
    -------
    list of str
        Columns named in the formula or the sigma formula (response, covariates, grouping
        factors), plus the column that holds the trials of a binomial model.

    Examples
    --------
    >>> import pandas as pd
    >>> from bayeslmm import specify
    >>> df = pd.DataFrame({"y": [1.0, 2.0, 0.5, 1.5], "x": [0, 1, 0, 1], "z": 0,
    ...                    "g": list("aabb")})
    >>> model_columns(specify("y ~ x + (1 | g)", df))
    ['y', 'x', 'g']
    """
    used = _used_columns(spec.data, spec.formula + " " + (spec.sigma_formula or ""))
    trials = trials_column(spec)
    if trials is not None and trials not in used:
        used.append(trials)
    return [str(c) for c in used]


def _used_columns(data: pd.DataFrame, formulas: str) -> list[Any]:
    """The columns of ``data`` named in ``formulas``, in the data's order."""
    tokens = set(_TOKEN.findall(formulas))
    return [c for c in data.columns if str(c) in tokens]


def trials_column(spec: Any) -> str | None:
    """The column of ``spec.data`` holding the binomial trials (None without trials).

    The specification keeps the trials' values, not the column's name; any column with
    exactly these values gives the same model, so the first one is taken.
    """
    if spec.trials is None:
        return None
    trials = np.asarray(spec.trials, dtype=float)
    for column in spec.data.columns:
        values = spec.data[column]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            if np.array_equal(values.to_numpy(dtype=float), trials):
                return str(column)
    return None


def _column_record(values: pd.Series) -> dict[str, Any]:
    dtype = values.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return {
            "dtype": "category",
            "categories": [_plain(c) for c in dtype.categories],
            "ordered": bool(dtype.ordered),
        }
    return {"dtype": str(dtype)}


def _plain(value: Any) -> Any:
    """A JSON value for a category label (numpy scalars as Python ones)."""
    return value.item() if isinstance(value, np.generic) else value


def _json_priors(priors: Mapping[str, Any]) -> dict[str, Any] | None:
    """The priors overrides as JSON (tuples as lists), or None when they are not plain data."""
    if not priors:
        return {}
    try:
        text = json.dumps({str(k): v for k, v in priors.items()}, allow_nan=False)
    except (TypeError, ValueError):
        return None
    return json.loads(text)


def _kinship_file(group: str, taken: set[str]) -> str:
    stem = "kinship_" + re.sub(r"[^A-Za-z0-9_.-]", "_", group)
    name, k = f"{stem}.npz", 1
    while name in taken:
        name, k = f"{stem}_{k}.npz", k + 1
    taken.add(name)
    return name


def _write_kinship(K: Kinship, path: Path) -> None:
    """One kinship as an .npz: the dense matrix, a sparse pedigree kinship's factors, or a
    low-rank kinship's markers (n × p, never the n × n matrix)."""
    from bayeslmm.kinship.low_rank import LowRankKinship
    from bayeslmm.kinship.pedigree_inverse import SparsePedigreeKinship

    if isinstance(K, LowRankKinship):
        np.savez(
            path,
            kind=np.asarray("low-rank"),
            markers=np.asarray(K.markers, dtype=float),
            ids=np.asarray(K.ids, dtype=str),
            name=np.asarray(K.name, dtype=str),
        )
        return
    if isinstance(K, SparsePedigreeKinship):
        root = K._root  # the whole pedigree's factors; positions pick the model's animals
        T = root.inverse_factor.tocsr()
        np.savez(
            path,
            kind=np.asarray("sparse-pedigree"),
            pedigree_ids=np.asarray(root.pedigree_ids, dtype=str),
            positions=np.asarray(K.positions, dtype=np.int64),
            factor_data=T.data,
            factor_indices=T.indices,
            factor_indptr=T.indptr,
            mendelian_variances=root.mendelian_variances,
            inbreeding=root.inbreeding,
            name=np.asarray(K.name, dtype=str),
        )
        return
    np.savez(
        path,
        matrix=np.asarray(K.matrix, dtype=float),
        ids=np.asarray(K.ids, dtype=str),
        name=np.asarray(K.name, dtype=str),
    )


def _read_kinship(path: Path) -> Kinship:
    """The kinship :func:`_write_kinship` stored, bit for bit."""
    import scipy.sparse as sp

    with np.load(path, allow_pickle=False) as stored:
        if "kind" in stored and str(stored["kind"]) == "sparse-pedigree":
            from bayeslmm.kinship.pedigree_inverse import SparsePedigreeKinship

            ids = [str(i) for i in stored["pedigree_ids"]]
            factor = sp.csr_matrix(
                (stored["factor_data"], stored["factor_indices"], stored["factor_indptr"]),
                shape=(len(ids), len(ids)),
            )
            root = SparsePedigreeKinship(
                ids,
                factor,
                stored["mendelian_variances"],
                stored["inbreeding"],
                name=str(stored["name"]),
            )
            positions = np.asarray(stored["positions"], dtype=np.int64)
            if np.array_equal(positions, np.arange(len(ids))):
                return root
            return root.subset([ids[k] for k in positions])
        if "kind" in stored and str(stored["kind"]) == "low-rank":
            from bayeslmm.kinship.low_rank import LowRankKinship

            return LowRankKinship(
                stored["markers"], ids=[str(i) for i in stored["ids"]], name=str(stored["name"])
            )
        return Kinship(
            stored["matrix"],
            ids=[str(i) for i in stored["ids"]],
            name=str(stored["name"]),
            check_psd=False,  # checked when the fit was made; the matrix is bit-identical
        )


def _family_record(family: Any) -> dict[str, Any]:
    """A family as JSON: its name and its dataclass fields (link, options)."""
    fields = {f.name: _plain(getattr(family, f.name)) for f in dataclasses.fields(family)}
    return {"family": family.name, **fields}


def _family_from_record(record: Mapping[str, Any], trait: str) -> Any:
    """The family :func:`_family_record` wrote."""
    from bayeslmm.errors import SpecificationError
    from bayeslmm.families import get_family

    options = dict(record)
    name, link = options.pop("family", None), options.pop("link", None)
    try:
        return dataclasses.replace(get_family(str(name), link or None), **options)
    except (SpecificationError, TypeError) as exc:
        raise DataError(
            f"The stored family of trait '{trait}' ({dict(record)}) is not one this bayeslmm "
            f"builds ({exc}); pass family={{...}} to bl.load_fit."
        ) from exc


def _write_data(frame: pd.DataFrame, folder: Path) -> dict[str, Any]:
    """``folder/data.csv`` with repr-exact floats; the columns' dtype records."""
    # 17 significant digits read back to the same double
    frame.to_csv(folder / "data.csv", index=False, float_format="%.17g")
    return {str(c): _column_record(frame[c]) for c in frame.columns}


def _write_kinships(kinships: Iterable[tuple[str, Kinship]], folder: Path) -> dict[str, str]:
    """Each (group, kinship) as ``folder/kinship_<group>.npz`` (a group's first only);
    group → path relative to the results folder."""
    out: dict[str, str] = {}
    taken: set[str] = set()
    for group, K in kinships:
        if group in out:
            continue
        name = _kinship_file(group, taken)
        _write_kinship(K, folder / name)
        out[group] = f"{INPUTS_DIR}/{name}"
    return out


def write_inputs(spec: Any, directory: str | Path) -> dict[str, Any]:
    """Write a specification's data columns and kinships into ``directory/inputs/``.

    Parameters
    ----------
    spec : ModelSpec or MultiTraitSpec
        The fitted specification (``fit.spec``). A multi-trait one adds ``families``.
    directory : path
        The (staging) results folder; ``inputs/`` is created in it.

    Returns
    -------
    dict
        summary.json's ``"inputs"`` entry: ``data`` (path relative to the folder),
        ``columns`` (column → dtype record), ``kinship`` (group → path), ``trials`` (column
        or None) and ``priors`` (the overrides, or None when they are not plain data);
        multi-trait: ``families`` (trait → family record).

    Examples
    --------
    See the module docstring.
    """
    from bayeslmm.multitrait_spec import MultiTraitSpec

    folder = Path(directory) / INPUTS_DIR
    folder.mkdir(exist_ok=True)
    if isinstance(spec, MultiTraitSpec):
        from bayeslmm.families import Gaussian

        # spec.data: the rows fitted (individuals with a record), in kinship order
        families = spec.families or (Gaussian(),) * spec.n_traits
        return {
            "data": f"{INPUTS_DIR}/data.csv",
            "columns": _write_data(spec.data[_used_columns(spec.data, spec.formula)], folder),
            "kinship": _write_kinships([(spec.group, spec.kinship)], folder),
            "trials": None,
            "priors": _json_priors(spec.priors),
            "families": {
                trait: _family_record(f) for trait, f in zip(spec.traits, families, strict=True)
            },
        }
    return {
        "data": f"{INPUTS_DIR}/data.csv",
        "columns": _write_data(spec.data[model_columns(spec)], folder),
        "kinship": _write_kinships(
            ((t.group, t.kinship) for t in spec.terms if t.kinship is not None), folder
        ),
        "trials": trials_column(spec),
        "priors": _json_priors(spec.priors),
    }


def _restore(values: pd.Series, record: Mapping[str, Any], name: str) -> pd.Series:
    dtype = str(record.get("dtype", "object"))
    if dtype == "category":
        categories = list(record.get("categories", []))
        by_text = {str(c): c for c in categories}
        unknown = sorted(set(values) - set(by_text))
        if unknown:
            raise DataError(
                f"Column '{name}' of the stored data holds values {unknown[:5]} that are not "
                "among its recorded categories: the stored inputs are damaged."
            )
        return pd.Series(
            pd.Categorical(
                [by_text[v] for v in values],
                categories=categories,
                ordered=bool(record.get("ordered", False)),
            ),
            name=name,
        )
    if dtype == "bool":
        return values.map({"True": True, "False": False}).astype(bool)
    if dtype in ("object", "string", "str"):
        return values.astype(object if dtype == "object" else dtype)
    if dtype.startswith("float"):  # a missing value (a multi-trait model's) is written ""
        return values.where(values != "", "nan").astype(dtype)
    return values.astype(dtype)


def read_inputs(
    directory: str | Path, entry: Mapping[str, Any]
) -> tuple[pd.DataFrame, dict[str, Kinship], dict[str, Any]]:
    """Read what :func:`write_inputs` wrote: ``(data, kinship, options)``.

    ``options`` holds the :class:`~bayeslmm.LMM` arguments that were recorded (``trials``,
    ``priors``; a multi-trait model's ``family``, trait → Family).

    Raises
    ------
    DataError
        A listed file is missing or unreadable.

    Examples
    --------
    See the module docstring.
    """
    directory = Path(directory)
    data_path = directory / str(entry.get("data", ""))
    if not data_path.is_file():
        raise DataError(
            f"'{directory}' lists stored inputs but '{data_path}' is missing; pass the data "
            "again: bl.load_fit(folder, data=..., kinship=...)."
        )
    records = dict(entry.get("columns", {}))
    raw = pd.read_csv(data_path, dtype=str, keep_default_na=False)
    data = pd.DataFrame(
        {
            name: _restore(raw[name], records.get(name, {"dtype": "object"}), name)
            for name in raw.columns
        }
    )
    kinship: dict[str, Kinship] = {}
    for group, relative in dict(entry.get("kinship", {})).items():
        path = directory / str(relative)
        if not path.is_file():
            raise DataError(
                f"'{directory}' lists the kinship of '{group}' at '{path}', which is missing; "
                "pass it again: bl.load_fit(folder, data=..., kinship={...})."
            )
        kinship[group] = _read_kinship(path)
    options: dict[str, Any] = {}
    if entry.get("trials"):
        options["trials"] = str(entry["trials"])
    priors = entry.get("priors")
    if priors:
        options["priors"] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in dict(priors).items()
        }
    families = entry.get("families")
    if families:
        options["family"] = {
            str(trait): _family_from_record(record, str(trait))
            for trait, record in dict(families).items()
        }
    return data, kinship, options
