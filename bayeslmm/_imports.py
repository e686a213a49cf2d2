"""What importing costs: package names imported on first use, and imports that the cyclic
garbage collector leaves alone.

- :func:`lazy_names` gives a package ``__init__`` a PEP 562 ``__getattr__``, so that
  ``import bayeslmm`` and the command line load only the modules a task reaches (a
  command-line fit never imports the association scan, the REML engine or the simulators).
- :func:`long_lived_imports` runs a block (a large import) with the collector switched off.
  Importing a library stack such as nutpie's (ArviZ, SciPy's stats, matplotlib, xarray)
  creates some 150,000 objects that live until the process ends; the collector, triggered by
  the allocations themselves, would walk all of them again and again while they are being
  made, and find nothing to free.
- :func:`command_process` keeps those objects out of the collector's reach for good, in the
  ``bayeslmm`` command's own process only, where SciPy is also imported without the
  docstring notes that only ``help()`` shows (:func:`scipy_docstrings_left_alone`).

Examples
--------
>>> import types
>>> pkg = types.ModuleType("pkg")
>>> pkg.__getattr__, pkg.__dir__ = lazy_names(pkg.__dict__, {"sqrt": "math", "json": "json"})
>>> pkg.sqrt(4.0), pkg.json.__name__, "sqrt" in dir(pkg)
(2.0, 'json', True)
"""

from __future__ import annotations

import contextlib
import gc
import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any


def lazy_names(
    namespace: dict[str, Any], names: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A module's ``__getattr__`` and ``__dir__`` that import each of ``names`` when it is
    first asked for.

    Parameters
    ----------
    namespace : dict
        The package's ``globals()``; an imported name is stored there, so the next access
        is an ordinary attribute.
    names : mapping
        Public name -> the module that defines it; a name that is the last part of its
        module's dotted path (``"io": "bayeslmm.io"``) is that module itself.

    Returns
    -------
    (__getattr__, __dir__)

    Examples
    --------
    >>> ns = {"__name__": "pkg"}
    >>> getattr_, dir_ = lazy_names(ns, {"pi": "math"})
    >>> getattr_("pi") > 3 and "pi" in ns and "pi" in dir_()
    True
    """

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {namespace.get('__name__')!r} has no attribute {name!r}")
        imported = importlib.import_module(module)
        value = imported if module.rpartition(".")[2] == name else getattr(imported, name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(names))

    return __getattr__, __dir__


#: Whether this process is a ``bayeslmm`` command (:func:`command_process`), not a library call.
_COMMAND = {"active": False}


@contextlib.contextmanager
def long_lived_imports() -> Iterator[None]:
    """Import in the block with the cyclic garbage collector off; in a command's own process
    (:func:`command_process`), also freeze what the block created.

    What a module creates lives as long as the module, so collecting while it is being
    imported frees nothing and costs time in proportion to everything already alive. The
    collector is switched back on after the block only if it was on before.

    Examples
    --------
    >>> import gc
    >>> frozen = gc.get_freeze_count()
    >>> with long_lived_imports():
    ...     import json
    ...     gc.isenabled()
    False
    >>> gc.isenabled(), gc.get_freeze_count() == frozen  # a library call freezes nothing
    (True, True)
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if _COMMAND["active"]:
            gc.freeze()
        if enabled:
            gc.enable()


@contextlib.contextmanager
def command_process() -> Iterator[None]:
    """Run a ``bayeslmm`` command in its own process with what it imports kept out of the
    collector's reach.

    A command's process imports a large library stack (nutpie, ArviZ, SciPy, matplotlib,
    xarray: some 250,000 objects) that lives until the process ends. Python's cyclic
    collector walks every tracked object at each full collection, and at exit it collects
    twice more and frees the modules' objects one by one (0.8 s of a 4.5 s command-line fit
    at n = 1,000). :func:`gc.freeze` moves the objects alive at that moment into a
    permanent generation that no collection visits: on entry (the command's modules), after
    each :func:`long_lived_imports` block (nutpie's stack) and on exit, before the
    interpreter's own teardown. What the command makes after a freeze is collected as usual;
    what was alive at one (for the fit command, its data and model when nutpie is imported,
    just before sampling) stays frozen, which matters only for reference cycles that become
    garbage later: objects without cycles, such as the arrays, are freed when their last
    reference goes, frozen or not. At exit the
    frozen objects are left to the operating system: nothing the command writes depends on
    their finalisers (the output files are closed before the command returns), and
    ``atexit`` handlers and the flushing of stdout and stderr run as usual.

    While it runs, SciPy's modules are imported without the docstring notes that only
    ``help()`` shows (:func:`scipy_docstrings_left_alone`): nobody reads a docstring in a
    command's process.

    Only the ``bayeslmm`` program enters this (``bayeslmm.cli.main`` run without
    arguments); a library call leaves the collector and SciPy alone.
    """
    gc.freeze()
    _COMMAND["active"] = True
    try:
        with scipy_docstrings_left_alone():
            yield
    finally:
        _COMMAND["active"] = False
        gc.freeze()


@contextlib.contextmanager
def scipy_docstrings_left_alone() -> Iterator[None]:
    """Import SciPy's modules in the block without the note on array-API support that
    SciPy appends to the docstring of each of its ~560 array-API functions.

    ``scipy._lib._array_api.xp_capabilities`` (SciPy 1.15 and later) decorates those
    functions: it records the backends each supports, for SciPy's own test suite, and
    rewrites the function's docstring with a "Array API Standard Support" table, parsing
    the whole docstring with numpydoc's parser to do so. That parsing is half of what
    importing ``scipy.stats`` and ``scipy.signal`` costs (~0.6 of 1.2 CPU s on a busy
    2-core machine), and ArviZ, which nutpie imports, imports both. In the block, the
    decorator returns each function as it is. Only where the decorator does nothing else: a
    probe function must come back as the same object, so a SciPy whose decorator wraps or
    replaces functions is left alone, as is one without it. The decorator is restored after
    the block.

    Examples
    --------
    >>> with scipy_docstrings_left_alone():
    ...     pass
    """
    try:
        from scipy._lib import _array_api
    except ImportError:  # no SciPy, or it moved
        yield
        return
    original = getattr(_array_api, "xp_capabilities", None)

    def probe() -> None:
        """A function to decorate."""

    if original is None or original()(probe) is not probe:
        yield
        return
    _array_api.xp_capabilities = _function_as_it_is
    try:
        yield
    finally:
        _array_api.xp_capabilities = original


def _function_as_it_is(*args: Any, **kwargs: Any) -> Callable[[Any], Any]:
    """``xp_capabilities(...)`` that leaves the decorated function as it is."""
    return lambda function: function
