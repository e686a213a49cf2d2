"""The package's names imported on first use, and imports kept from the cyclic collector
(bayeslmm/_imports.py).

``import bayeslmm`` loads the engines package (it hands the results layer its Gaussian algebra)
and nothing of the layers a task has not asked for; every public name still resolves to the
object its defining module holds. Fresh interpreters, so that what this test process has
already imported does not hide an import.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys

import pytest

from bayeslmm._imports import lazy_names, long_lived_imports

NOT_ON_IMPORT = (
    "bayeslmm.association",
    "bayeslmm.datasets",
    "bayeslmm.engines.reml",
    "bayeslmm.model",
    "bayeslmm.saved",
    "bayeslmm.results.compare",
    # (not bayeslmm.results.reaction_norm: imported with the package, see its __init__)
    "tqdm",
    "formulae",
    "arviz",
    "matplotlib",
)


def _fresh(code: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_bayeslmm_loads_no_layer_it_is_not_asked_for():
    report = _fresh(
        "import json, sys, bayeslmm\n"
        "from bayeslmm.results.algebra import gaussian_algebra\n"
        f"print(json.dumps({{'loaded': [m for m in {NOT_ON_IMPORT!r} if m in sys.modules],"
        " 'algebra': gaussian_algebra().__name__}))"
    )
    assert report == {"loaded": [], "algebra": "bayeslmm.engines.gaussian"}


@pytest.mark.parametrize("package", ["bayeslmm", "bayeslmm.results"])
def test_every_public_name_is_the_object_of_its_module(package):
    """Each name of ``__all__``, asked for first, is what ``from <module> import name`` gives
    (its ``__module__``, or the submodule itself), and star-imports and ``dir`` list it."""
    report = _fresh(
        "import importlib, json, types\n"
        f"pkg = importlib.import_module({package!r})\n"
        "out = {}\n"
        "for name in pkg.__all__:\n"
        "    obj = getattr(pkg, name)\n"
        "    if isinstance(obj, types.ModuleType):\n"
        "        out[name] = obj is importlib.import_module(obj.__name__)"
        " and obj.__name__.startswith(pkg.__name__)\n"
        "    else:\n"
        "        out[name] = getattr(importlib.import_module(obj.__module__), name) is obj\n"
        "star = {}\n"
        f"exec('from {package} import *', star)\n"
        "print(json.dumps({'same': out, 'star': sorted(set(pkg.__all__) - set(star)),"
        " 'dir': sorted(set(pkg.__all__) - set(dir(pkg)))}))"
    )
    assert report["same"] and all(report["same"].values()), report["same"]
    assert report["star"] == [] and report["dir"] == []


def test_an_unknown_name_is_an_attribute_error():
    import bayeslmm as bl

    with pytest.raises(AttributeError, match="has no attribute 'LLM'"):
        bl.LLM  # noqa: B018


def test_lazy_names_keep_what_they_imported():
    namespace = {"__name__": "pkg"}
    getattr_, dir_ = lazy_names(namespace, {"dumps": "json", "decoder": "json.decoder"})
    assert "dumps" not in namespace and {"dumps", "decoder"} <= set(dir_())
    assert getattr_("dumps") is json.dumps and namespace["dumps"] is json.dumps
    assert getattr_("decoder") is sys.modules["json.decoder"]


@pytest.mark.parametrize("enabled", [True, False])
def test_long_lived_imports_restore_the_collector_and_freeze_nothing_in_a_library(enabled):
    frozen = gc.get_freeze_count()
    (gc.enable if enabled else gc.disable)()
    try:
        with long_lived_imports():
            assert not gc.isenabled()
        assert gc.isenabled() is enabled
    finally:
        gc.enable()
    assert gc.get_freeze_count() == frozen


def test_a_command_process_freezes_its_imports_and_what_is_alive_at_its_end():
    """Run in a fresh interpreter: freezing this test process would keep its objects for good.
    A frozen object is one that no collection visits: it is missing from gc.get_objects()."""
    report = _fresh(
        "import gc, json\n"
        "from bayeslmm._imports import command_process, long_lived_imports\n"
        "def collectable(obj):\n"
        "    return any(o is obj for o in gc.get_objects())\n"
        "seen = {}\n"
        "with command_process():\n"
        "    seen['entry'] = gc.get_freeze_count()\n"
        "    with long_lived_imports():\n"
        "        imported = [[i] for i in range(1000)]\n"
        "    later = [[i] for i in range(1000)]\n"
        "    seen['imported'] = collectable(imported)\n"
        "    seen['later'] = collectable(later)\n"
        "seen['later at the end'] = collectable(later)\n"
        "seen['enabled'] = gc.isenabled()\n"
        "print(json.dumps(seen))"
    )
    assert report.pop("entry") > 1000  # the modules imported before the command
    assert report == {
        "imported": False,
        "later": True,  # what the command makes stays collectable while it runs
        "later at the end": False,
        "enabled": True,
    }


SCIPY_PROBE = """
import contextlib, json
from bayeslmm._imports import command_process
from scipy._lib import _array_api
original = _array_api.xp_capabilities
with {context}:
    import scipy.stats
print(json.dumps({{
    "note": "Array API Standard Support" in scipy.stats.ttest_ind.__doc__,
    "restored": _array_api.xp_capabilities is original,
    "pvalue": float(scipy.stats.ttest_ind([1.0, 2.0, 3.5, 4.0], [2.0, 3.0, 4.5, 6.0]).pvalue),
}}))
"""


def test_a_command_process_imports_scipy_without_docstring_notes():
    """The same import outside a command (a library call) keeps SciPy's note, which also
    shows that the check would see one; the functions compute the same."""
    library = _fresh(SCIPY_PROBE.format(context="contextlib.nullcontext()"))
    command = _fresh(SCIPY_PROBE.format(context="command_process()"))
    assert library["note"] is True and command["note"] is False
    assert command["restored"] is True
    assert command["pvalue"] == library["pvalue"]
