"""All-or-nothing output: a run writes every result file or none.

A fit's results (``summary.json``, ``posterior.nc``, ``h2_posterior.png``) belong together: a
summary beside the posterior of another run, or a half-written JSON file, is a silently wrong
answer for whoever reads the folder next. Every writer in bayeslmm (``BayesFit.save``, the
``fit``, ``demo`` and ``grm`` commands) therefore goes through this module:

1. the new files are written into a fresh staging directory on the same file system and
   flushed to disk; nothing the user can see has changed yet;
2. the staging directory is swapped in.

:func:`result_directory` (a results folder) swaps with Linux ``renameat2(RENAME_EXCHANGE)``:
the staging directory, which holds the new results plus hard links to the user's own files of
the folder (their sub-folders are moved across), and the old folder trade places in one
atomic step. A ``kill -9`` at any moment leaves the folder with the previous complete set or
the new complete set. Result files of an older run that the new run does not write (e.g. the
``posterior.nc`` of a NUTS run when a REML run follows) are not carried over: they are gone
with the old set.

Where that swap is not available (not Linux, a file system without it, the folder is a mount
point or the current directory, its parent is read-only) and for file sets that share a
directory with other files (``bayeslmm grm --out PREFIX``), the commit is journalled instead:
a journal naming the staged files is written by an atomic rename, the old files are removed,
then the new ones renamed into place. A kill before the journal exists leaves the old set; a
kill after it leaves the set incomplete (readers fail with "does not exist", never a mix of two
runs) until the next write into that directory completes it from the journal.

Examples
--------
>>> import json, tempfile, os
>>> from pathlib import Path
>>> out = Path(tempfile.mkdtemp()) / "results"
>>> with result_directory(out) as stage:
...     _ = (stage / "summary.json").write_text(json.dumps({"method": "reml"}))
>>> sorted(p.name for p in out.iterdir())
['summary.json']
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import signal
import sys
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from bayeslmm.errors import BayesLMMError
from bayeslmm.results.inputs import INPUTS_DIR

__all__ = [
    "FIT_FILES",
    "RESULT_NAMES",
    "OutputError",
    "check_output_dir",
    "check_output_prefix",
    "recover",
    "result_directory",
    "result_files",
    "write_bayes_files",
    "write_point_files",
]

#: Files a fit writes into a results folder (a NUTS fit all three, a point fit the summary).
FIT_FILES = frozenset({"summary.json", "posterior.nc", "h2_posterior.png"})

#: Sub-folders a result set may hold (files only inside): ``inputs/``, the model's data and
#: kinships (:mod:`bayeslmm.results.inputs`).
RESULT_DIRS = frozenset({INPUTS_DIR})

#: Files that belong to a run's result set: an older run's copies are replaced or removed,
#: everything else in the folder is the user's and is kept. ``report.html`` (written by
#: ``bayeslmm report`` from the set) is one of them: a page made from an older fit must not
#: stay beside a new fit's summary. So is ``inputs/``: stored inputs of an older fit must
#: not stay beside a summary that does not list them.
#: ``rg_posterior.png`` is the r_g plot of a multi-trait posterior
#: (:mod:`bayeslmm.results.multitrait_summary`).
RESULT_NAMES = FIT_FILES | {"report.html"} | RESULT_DIRS | {"rg_posterior.png"}

#: Environment variable naming a commit step at which the process kills itself with SIGKILL.
#: It exists so that tests can check what a crash at exactly that step leaves behind.
KILL_AT_ENV = "BAYESLMM_TEST_KILL_AT"

_STAGE = ".bayeslmm-stage-"  # staging directory inside the target directory (journal mode)
_JOURNAL = ".bayeslmm-commit-"  # journal of a commit in progress (journal mode)
_SWAP = ".bayeslmm-swap-"  # staging directory beside the target (exchange mode)


class OutputError(BayesLMMError):
    """An output location cannot be written (a file, under a file, missing, read-only)."""


# -- checks before any work ------------------------------------------------------------------
def _probe_writable(directory: Path, what: str) -> None:
    """Create and remove a scratch directory: the only test that also holds for root."""
    try:
        os.rmdir(_mkdtemp(directory, ".bayeslmm-probe-"))
    except OSError as exc:
        raise OutputError(
            f"Cannot write into {what} {str(directory)!r} ({exc.strerror or exc}); choose a "
            "directory you can write to, or fix its permissions."
        ) from exc


def _file_on_path(path: Path) -> Path | None:
    """The first existing non-directory among ``path``'s ancestors (``a/file.txt/out``)."""
    for parent in reversed(path.parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return None


def check_output_dir(out: str | os.PathLike) -> Path:
    """Check, before any work, that ``out`` can become a results folder; return it.

    ``out`` may exist (a directory, which is written into) or not (it is created; its parent
    must exist: a mistyped path is reported rather than silently created).

    Raises
    ------
    OutputError
        ``out`` is a file, lies under a file, its parent directory does not exist, or it
        cannot be written.

    Examples
    --------
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> check_output_dir(os.path.join(d, "results")).name
    'results'
    >>> check_output_dir(os.path.join(d, "missing", "results"))
    Traceback (most recent call last):
    ...
    bayeslmm.results.output.OutputError: The output directory ...
    """
    path = Path(os.path.abspath(os.fspath(out)))
    blocker = _file_on_path(path)
    if blocker is not None:
        raise OutputError(
            f"The output directory {os.fspath(out)!r} lies under {str(blocker)!r}, which is a "
            "file; choose a path under a directory."
        )
    if path.exists():
        if not path.is_dir():
            raise OutputError(
                f"The output directory {os.fspath(out)!r} is an existing file; --out names a "
                "directory (e.g. results/): choose another name or move the file."
            )
        _probe_writable(path, "the output directory")
        return path
    if not path.parent.is_dir():
        raise OutputError(
            f"The output directory {os.fspath(out)!r} cannot be created: its parent "
            f"{str(path.parent)!r} does not exist. Create it first (mkdir -p "
            f"{str(path.parent)!r}) or fix the path."
        )
    _probe_writable(path.parent, "the directory")
    return path


def check_output_prefix(prefix: str | os.PathLike) -> Path:
    """Check, before any work, that files ``PREFIX.*`` can be written; return the prefix.

    Examples
    --------
    >>> import tempfile, os
    >>> check_output_prefix(os.path.join(tempfile.mkdtemp(), "geno")).name
    'geno'
    """
    text = os.fspath(prefix)
    path = Path(os.path.abspath(text))
    if text.endswith(("/", os.sep)) or path.is_dir():
        raise OutputError(
            f"--out {text!r} is a directory; it takes a file prefix such as "
            f"{os.path.join(text, 'geno')!r} (files PREFIX.grm.bin, ... are written)."
        )
    blocker = _file_on_path(path)
    if blocker is not None:
        raise OutputError(
            f"The output prefix {text!r} lies under {str(blocker)!r}, which is a file; choose "
            "a prefix in a directory."
        )
    if not path.parent.is_dir():
        raise OutputError(
            f"The output prefix {text!r} is in a directory that does not exist "
            f"({str(path.parent)!r}); create it first (mkdir -p) or fix the path."
        )
    _probe_writable(path.parent, "the directory")
    return path


# -- writing ---------------------------------------------------------------------------------
@contextlib.contextmanager
def result_directory(out: str | os.PathLike, owned: Iterable[str] = RESULT_NAMES) -> Iterator[Path]:
    """Stage a run's files, then make ``out`` hold exactly them (plus the user's own files).

    Parameters
    ----------
    out : path
        The results folder (created if missing; see :func:`check_output_dir`).
    owned : iterable of str
        File names that belong to bayeslmm in ``out``: copies from an older run are removed
        when the new run does not write them. Other entries are the user's and are kept.

    Yields
    ------
    Path
        An empty staging directory: write the new files there (plain names; the only
        sub-directories allowed are :data:`RESULT_DIRS`, holding files). On an exception
        nothing in ``out`` changes.

    Examples
    --------
    See the module docstring.
    """
    target = Path(os.path.realpath(check_output_dir(out)))
    owned = frozenset(owned)
    _recover_with_notes(target.parent)
    if target.is_dir():
        _recover_with_notes(target)
    exchange = _exchange_possible(target)
    parent = target.parent if exchange else target
    prefix = f".{target.name}{_SWAP}" if exchange else _STAGE
    if not exchange and not target.exists():
        target.mkdir()
    stage = Path(_mkdtemp(parent, f"{prefix}{os.getpid()}-"))
    try:
        yield stage
        names = _staged_names(stage)
        _fsync_files(stage, names)
        _checkpoint("staged")
        if exchange and _commit_exchange(stage, target, owned):
            return
        _commit_journal(target, stage, names, owned, stage_is_inside=not exchange)
    except BaseException:
        _discard(stage, target)
        raise


@contextlib.contextmanager
def result_files(targets: Sequence[str | os.PathLike]) -> Iterator[list[Path]]:
    """Stage a set of files that share a directory with others, then commit them together.

    Parameters
    ----------
    targets : sequence of path
        The final paths, all in one directory (e.g. ``geno.grm.bin``, ``geno.grm.id``).

    Yields
    ------
    list of Path
        Where to write each target meanwhile (same order).

    Examples
    --------
    >>> import tempfile, os
    >>> from pathlib import Path
    >>> d = Path(tempfile.mkdtemp())
    >>> with result_files([d / "a.txt", d / "b.txt"]) as (a, b):
    ...     _ = a.write_text("1"), b.write_text("2")
    >>> sorted(p.name for p in d.iterdir())
    ['a.txt', 'b.txt']
    """
    paths = [Path(os.path.abspath(os.fspath(t))) for t in targets]
    directories = {p.parent for p in paths}
    if len(directories) != 1:
        raise ValueError(f"result_files writes into one directory; got {sorted(directories)}.")
    directory = Path(os.path.realpath(directories.pop()))
    _recover_with_notes(directory)
    stage = Path(_mkdtemp(directory, f"{_STAGE}{os.getpid()}-"))
    try:
        yield [stage / p.name for p in paths]
        names = [p.name for p in paths]
        missing = [n for n in names if not (stage / n).is_file()]
        if missing:
            raise RuntimeError(f"result_files: {missing} were not written.")
        _fsync_files(stage, names)
        _checkpoint("staged")
        _commit_journal(directory, stage, names, frozenset(names), stage_is_inside=True)
    except BaseException:
        _discard(stage, directory)
        raise


def _discard(stage: Path, directory: Path) -> None:
    """Drop a failed run's staging folder, unless its journal exists: from then on the
    commit must be completed (by :func:`recover`), not abandoned half-way."""
    if not _journal_path(directory, stage).exists():
        shutil.rmtree(stage, ignore_errors=True)


def _journal_path(directory: Path, stage: Path) -> Path:
    return directory / f"{_JOURNAL}{stage.name.removeprefix(_STAGE)}.json"


def recover(directory: str | os.PathLike) -> list[str]:
    """Finish or discard what an interrupted bayeslmm write left in ``directory``.

    A commit whose journal exists is completed (its staged files are complete); staging
    directories of processes that are no longer running are removed, after moving back any
    of the user's entries that were on their way into a results folder.

    Returns
    -------
    list of str
        One line per action, for a note to the user.

    Examples
    --------
    >>> import tempfile
    >>> recover(tempfile.mkdtemp())
    []
    """
    directory = Path(directory)
    done: list[str] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return done
    busy: set[str] = set()  # staging directories of commits that are not finished here
    for entry in entries:
        if not (entry.name.startswith(_JOURNAL) and entry.name.endswith(".json")):
            continue
        try:
            plan = json.loads(Path(entry.path).read_text(encoding="utf-8"))
            stage = directory / plan["stage"]
            busy.add(plan["stage"])
            if _owner_alive(entry.name):
                continue  # a commit in flight in another process
            _apply_journal(directory, stage, plan["files"], plan["remove"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # an unreadable journal: leave it and its files alone
        shutil.rmtree(stage, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.unlink(entry.path)
        busy.discard(plan["stage"])
        done.append(f"completed the interrupted writing of {', '.join(plan['files'])}")
    for entry in entries:
        if not entry.is_dir(follow_symlinks=False) or entry.name in busy:
            continue
        swap = _SWAP in entry.name and entry.name.startswith(".")
        if not (entry.name.startswith(_STAGE) or swap) or _owner_alive(entry.name):
            continue
        if swap:  # the user's sub-folders may sit in it (moved there just before a swap)
            target = directory / entry.name[1 : entry.name.index(_SWAP)]
            _return_user_entries(Path(entry.path), target)
        shutil.rmtree(entry.path, ignore_errors=True)
        done.append(f"removed the leftovers of an interrupted run ({entry.name})")
    return done


def _recover_with_notes(directory: Path) -> None:
    for action in recover(directory):
        warnings.warn(f"{directory}: {action}.", UserWarning, stacklevel=4)


# -- exchange mode ---------------------------------------------------------------------------
def _load_renameat2():
    """``renameat2`` from the C library (glibc >= 2.28), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_renameat2 = _load_renameat2()
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> None:
    """Swap two directory entries atomically."""
    if _renameat2 is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available")
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(a), None, str(b))


def _exchange_possible(target: Path) -> bool:
    if _renameat2 is None or not os.access(target.parent, os.W_OK):
        return False
    if target.exists() and (os.path.ismount(target) or not target.is_dir()):
        return False
    cwd = Path(os.path.realpath(os.getcwd()))
    # Swapping the folder a shell stands in would leave that shell in the deleted old copy.
    return target != cwd and target not in cwd.parents


def _commit_exchange(stage: Path, target: Path, owned: frozenset[str]) -> bool:
    """Swap ``stage`` in as ``target``; False when the file system cannot (then nothing moved)."""
    if not target.exists():
        with contextlib.suppress(OSError):
            os.chmod(stage, 0o777 & ~_umask())
        os.rename(stage, target)  # atomic: the folder appears complete or not at all
        _fsync_dir(target.parent)
        return True
    new = set(_staged_names(stage))
    moved: list[str] = []
    try:
        for entry in os.scandir(target):
            if entry.name in owned or entry.name in new or _is_ours(entry.name):
                continue  # an older run's result file: not carried over
            if entry.is_dir(follow_symlinks=False):
                # A directory cannot be hard-linked; move it (one rename). Until the swap, a
                # crash leaves it in the staging folder, and recover() moves it back.
                os.rename(entry.path, stage / entry.name)
                moved.append(entry.name)
            else:
                _link_or_copy(Path(entry.path), stage / entry.name)
        os.chmod(stage, os.stat(target).st_mode & 0o7777)
        _checkpoint("linked")
        _exchange(stage, target)
    except BaseException as exc:
        # Put the user's folders back and drop the links before anything else happens.
        for name in moved:
            os.rename(stage / name, target / name)
        for name in os.listdir(stage):
            if name not in new:
                _remove(stage / name)
        unsupported = (errno.ENOSYS, errno.EINVAL, errno.EXDEV, errno.EBUSY, errno.EPERM)
        if isinstance(exc, OSError) and exc.errno in unsupported:
            return False
        raise
    _fsync_dir(target.parent)
    _checkpoint("exchanged")
    shutil.rmtree(stage, ignore_errors=True)  # the old set, and links to the user's files
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:  # file system without hard links: a copy keeps the user's file
        if src.is_symlink():
            os.symlink(os.readlink(src), dst)
        else:
            shutil.copy2(src, dst)


def _return_user_entries(swap: Path, target: Path) -> None:
    """Move a crashed swap's user entries back into ``target`` where they are absent."""
    if not target.is_dir():
        return
    with contextlib.suppress(OSError):
        for entry in os.scandir(swap):
            if entry.is_dir(follow_symlinks=False) and not (target / entry.name).exists():
                os.rename(entry.path, target / entry.name)


# -- journal mode ----------------------------------------------------------------------------
def _commit_journal(
    directory: Path,
    stage: Path,
    names: Sequence[str],
    owned: frozenset[str],
    stage_is_inside: bool,
) -> None:
    """Journal, then remove the old set, then rename the new one in."""
    if not stage_is_inside:  # the swap failed: bring the staged files into the directory
        inner = Path(_mkdtemp(directory, f"{_STAGE}{os.getpid()}-"))
        for name in names:
            _move(stage / name, inner / name)
        shutil.rmtree(stage, ignore_errors=True)
        stage = inner
    remove = sorted(n for n in owned if n not in names and (directory / n).exists())
    journal = _journal_path(directory, stage)
    plan = {"stage": stage.name, "files": list(names), "remove": remove}
    scratch = journal.with_suffix(".tmp")
    scratch.write_text(json.dumps(plan), encoding="utf-8")
    _fsync_files(directory, [scratch.name])
    os.replace(scratch, journal)
    _fsync_dir(directory)
    _checkpoint("journal")
    _apply_journal(directory, stage, list(names), remove)
    _fsync_dir(directory)
    shutil.rmtree(stage, ignore_errors=True)
    journal.unlink()


def _apply_journal(directory: Path, stage: Path, names: list[str], remove: list[str]) -> None:
    # Old files go first: an interrupted commit leaves files missing (readers fail loudly),
    # never a mix of two runs.
    for name in [*names, *remove]:
        if (stage / name).exists() or name in remove:
            with contextlib.suppress(FileNotFoundError):
                _remove(directory / name)  # a file, or a result sub-folder (inputs/)
    _checkpoint("removed")
    for k, name in enumerate(names):
        if (stage / name).exists():
            os.replace(stage / name, directory / name)
        if k == 0:
            _checkpoint("renamed-first")


# -- helpers ---------------------------------------------------------------------------------
def _checkpoint(step: str) -> None:
    if os.environ.get(KILL_AT_ENV) == step and hasattr(signal, "SIGKILL"):
        os.kill(os.getpid(), signal.SIGKILL)


def _mkdtemp(parent: Path, prefix: str) -> str:
    return tempfile.mkdtemp(prefix=prefix, dir=parent)


def _staged_names(stage: Path) -> list[str]:
    names = sorted(os.listdir(stage))
    nested = [
        n
        for n in names
        if (stage / n).is_dir()
        and (n not in RESULT_DIRS or any(p.is_dir() for p in (stage / n).iterdir()))
    ]
    if nested:
        raise RuntimeError(
            f"Result sets hold files (and files in {sorted(RESULT_DIRS)}); {nested} are "
            "directories."
        )
    return names


def _fsync_files(directory: Path, names: Iterable[str]) -> None:
    """Flush file contents before the rename that publishes them (power loss, not only kill);
    a result sub-folder's files, then the sub-folder itself."""
    for name in names:
        path = directory / name
        if path.is_dir():
            _fsync_files(path, sorted(os.listdir(path)))
            _fsync_dir(path)
            continue
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _move(src: Path, dst: Path) -> None:
    try:
        os.replace(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copy2(src, dst)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _is_ours(name: str) -> bool:
    return name.startswith((_STAGE, _JOURNAL, ".bayeslmm-probe-")) or _SWAP in name


def _owner_alive(name: str) -> bool:
    """Whether the process that made a staging directory or journal (pid in its name) runs."""
    marker = next((m for m in (_STAGE, _JOURNAL, _SWAP) if m in name), None)
    try:
        pid = int(name.split(marker, 1)[1].split("-", 1)[0]) if marker else None
    except ValueError:
        pid = None
    if pid is None:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists but belongs to someone else
    return True


# -- a posterior's files ---------------------------------------------------------------------
def write_bayes_files(
    fit: Any,
    directory: str | os.PathLike,
    *,
    plot: bool = True,
    prevalence: float | None = None,
    reference: float | None = None,
    reference_label: str = "REML",
    title: str | None = None,
    inputs: bool = True,
) -> dict[str, Path]:
    """Write a NUTS fit's ``summary.json``, ``posterior.nc``, ``h2_posterior.png`` and
    ``inputs/``.

    Used inside :func:`result_directory` (``directory`` is then its staging folder). The plot
    is drawn on its own :class:`matplotlib.figure.Figure`, never through pyplot, so the
    user's matplotlib backend and open figures are left alone.

    Parameters
    ----------
    fit : BayesFit
    directory : path
        Where to write (must exist).
    plot : bool
        Also draw the h² posterior (models with random terms only).
    prevalence : float, optional
        Binary traits: adds the liability-scale h² to the summary.
    reference : float, optional
        A point estimate to mark on the plot (e.g. the REML h²).
    reference_label : str
    title : str, optional
    inputs : bool
        Also store the model's data columns and kinships in ``inputs/`` (listed in
        summary.json under ``"inputs"``; :mod:`bayeslmm.results.inputs`), so that
        ``bl.load_fit(directory)`` needs nothing else.

    Returns
    -------
    dict
        ``{"summary": path, "posterior": path[, "plot": path][, "inputs": path]}``.

    Examples
    --------
    >>> # with result_directory("results") as stage: write_bayes_files(fit, stage)
    """
    from bayeslmm.results.lazy_dask import netcdf_lock_without_dask
    from bayeslmm.results.plots import figure_axes

    directory = Path(directory)
    paths = _write_summary_and_inputs(
        fit.summary(prevalence=prevalence), fit.spec, directory, inputs
    )
    paths["posterior"] = directory / "posterior.nc"
    with netcdf_lock_without_dask():  # draws in memory: no Dask import to pick a lock
        fit.idata.to_netcdf(str(paths["posterior"]))
    if plot and fit.spec.terms:
        ax = figure_axes()
        fit.plot_heritability(ax=ax, reference=reference, reference_label=reference_label)
        if title:
            ax.set_title(title)
        ax.figure.tight_layout()
        paths["plot"] = directory / "h2_posterior.png"
        ax.figure.savefig(paths["plot"], dpi=120)
    return paths


def _write_summary_and_inputs(
    summary: dict[str, Any], spec: Any, directory: Path, inputs: bool
) -> dict[str, Path]:
    from bayeslmm.results.inputs import write_inputs
    from bayeslmm.results.summary import write_summary

    paths: dict[str, Path] = {}
    if inputs:
        summary = {**summary, "inputs": write_inputs(spec, directory)}
        paths["inputs"] = directory / INPUTS_DIR
    return {"summary": write_summary(summary, directory / "summary.json"), **paths}


def write_point_files(
    fit: Any,
    directory: str | os.PathLike,
    *,
    prevalence: float | None = None,
    inputs: bool = True,
) -> dict[str, Path]:
    """Write a point fit's (REML, ML, Laplace) ``summary.json`` and ``inputs/``.

    Used inside :func:`result_directory`, like :func:`write_bayes_files`.

    Parameters
    ----------
    fit : RemlFit or LaplaceFit
    directory : path
        Where to write (must exist).
    prevalence : float, optional
        Laplace fits of binary traits: adds the liability-scale h² to the summary.
    inputs : bool
        Also store the model's data columns and kinships (see :func:`write_bayes_files`).

    Returns
    -------
    dict
        ``{"summary": path[, "inputs": path]}``.

    Examples
    --------
    >>> # with result_directory("results") as stage: write_point_files(reml_fit, stage)
    """
    summary = fit.to_summary(prevalence=prevalence) if fit.engine == "laplace" else fit.to_summary()
    return _write_summary_and_inputs(summary, fit.spec, Path(directory), inputs)
