"""xarray without importing Dask until Dask is in use.

With Dask installed, xarray imports ``dask.array`` the first time it builds any variable (it
asks ``isinstance(data, dask.array.Array)`` of every array it wraps; ``xarray.core.variable.
as_compatible_data``), ``dask.base`` the first time it asks whether an array is a Dask
collection (``xarray.namedarray.utils.is_dask_collection``) and ``dask.distributed`` the first
time it writes a netCDF file (to choose a lock for Dask's scheduler; ``xarray.backends.
writers``): about 0.6 CPU seconds in a process that holds no Dask array, a sixth of a
command-line fit at n = 1,000.

All three questions have their answer without the import while Dask is not imported: no
object can be an instance of ``dask.array.Array`` while that class was never created; an
object without a callable ``__dask_graph__`` (a NumPy array) is no Dask collection, Dask's
own first test; and no Dask scheduler (client, configuration set in code) can be active, so
xarray's own answer is its default, the threaded scheduler. :func:`defer_dask_checks` and
:func:`netcdf_lock_without_dask` give xarray those answers until Dask is imported (by the
user, or by a bayeslmm path that uses it) and step aside from then on. Each checks that the
xarray internals it relies on exist and does nothing otherwise, so a different xarray only
costs the import time again.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

__all__ = ["defer_dask_checks", "netcdf_lock_without_dask"]


def defer_dask_checks() -> bool:
    """Let xarray ask "is this a Dask array?" without importing ``dask.array`` first.

    Installs, in xarray's cache of duck-array modules, an entry for Dask whose array types are
    ``()`` while ``dask.array`` is not imported (so ``isinstance(x, types)`` is False, as it
    must be) and that becomes xarray's own entry once ``dask.array`` is imported or anything
    else about Dask (module, version) is asked for.

    Returns
    -------
    bool
        Whether the deferred entry is in place (False: Dask already imported or checked,
        or an xarray whose internals differ).

    Examples
    --------
    >>> import sys
    >>> defer_dask_checks() or "dask.array" in sys.modules or "xarray" not in sys.modules
    True
    """
    try:
        from xarray.namedarray import pycompat
    except ImportError:  # pragma: no cover - xarray is a dependency
        return False
    cache = getattr(pycompat, "_cached_duck_array_modules", None)
    base = getattr(pycompat, "DuckArrayModule", None)
    if not isinstance(cache, dict) or base is None:
        return False
    if isinstance(cache.get("dask"), _deferred_class(base)):
        return True
    if "dask" in cache or "dask.array" in sys.modules:
        return False  # already asked (or imported): nothing left to save
    cache["dask"] = _deferred_class(base)(cache)
    _defer_collection_check()
    return True


def _defer_collection_check() -> None:
    """xarray's ``is_dask_collection`` imports ``dask.base`` to ask; Dask's answer is False
    for anything without a callable ``__dask_graph__`` (a NumPy array), so give that answer
    first while Dask is not imported."""
    from xarray.namedarray import utils

    check = getattr(utils, "is_dask_collection", None)
    if not callable(check) or getattr(check, "_defers_dask", False):
        return

    def is_dask_collection(x: object) -> bool:
        if "dask" not in sys.modules and (
            isinstance(x, type) or not callable(getattr(x, "__dask_graph__", None))
        ):
            return False  # dask.base.is_dask_collection's own first test
        return check(x)

    is_dask_collection._defers_dask = True  # type: ignore[attr-defined]
    is_dask_collection.__doc__ = check.__doc__
    utils.is_dask_collection = is_dask_collection


_DEFERRED: dict[type, type] = {}


def _deferred_class(base: type) -> type:
    """A subclass of xarray's ``DuckArrayModule`` (made once) that imports Dask on demand."""
    if base in _DEFERRED:
        return _DEFERRED[base]

    class DeferredDaskModule(base):  # type: ignore[misc, valid-type]
        """xarray's Dask entry, built only when Dask is imported or asked about."""

        def __init__(self, cache: dict) -> None:  # no import here: that is the point
            self._cache = cache

        def _real(self) -> Any:
            real = base("dask")
            if self._cache.get("dask") is self:
                self._cache["dask"] = real  # from now on xarray's own entry answers
            return real

        @property
        def type(self) -> tuple[type, ...]:
            if "dask.array" not in sys.modules:
                return ()  # no Dask array can exist yet
            return self._real().type

        @property
        def module(self) -> Any:
            return self._real().module

        @property
        def version(self) -> Any:
            return self._real().version

        @property
        def available(self) -> bool:
            return self._real().available

    _DEFERRED[base] = DeferredDaskModule
    return DeferredDaskModule


@contextlib.contextmanager
def netcdf_lock_without_dask() -> Iterator[None]:
    """While writing in-memory data to netCDF, answer xarray's "which Dask scheduler?" with
    the one it would find (the threaded default) without importing Dask, when Dask is not
    imported. Once Dask is imported, xarray asks Dask itself, as always.

    Examples
    --------
    >>> import numpy as np, xarray as xr, tempfile, os
    >>> with tempfile.TemporaryDirectory() as tmp, netcdf_lock_without_dask():
    ...     xr.Dataset({"a": ("x", np.arange(3.0))}).to_netcdf(os.path.join(tmp, "a.nc"))
    """
    if "dask" in sys.modules:
        yield  # xarray asks Dask itself: nothing to answer, nothing patched
        return
    try:
        from xarray.backends import locks, writers
    except ImportError:  # pragma: no cover
        yield
        return
    modules = [m for m in (locks, writers) if callable(getattr(m, "get_dask_scheduler", None))]
    originals = {m: m.get_dask_scheduler for m in modules}

    def answering(original: Any) -> Any:
        def get_dask_scheduler(get: Any = None, collection: Any = None) -> str | None:
            if "dask" not in sys.modules and get is None and collection is None:
                return "threaded"  # dask.base.get_scheduler's default, as xarray names it
            return original(get, collection)

        return get_dask_scheduler

    for module, original in originals.items():
        module.get_dask_scheduler = answering(original)
    try:
        yield
    finally:
        for module, original in originals.items():
            module.get_dask_scheduler = original
