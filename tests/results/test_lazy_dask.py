"""xarray without a Dask import until Dask is used (bayeslmm.results.lazy_dask), in fresh
interpreters: the test process itself has long imported Dask."""

from __future__ import annotations

import json
import subprocess
import sys

DASK = ("dask", "dask.array", "distributed")


def _run(code: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


DEFERRED = f"""
DASK = {DASK!r}
import json, sys, tempfile, os
import numpy as np, xarray as xr
from bayeslmm.results.lazy_dask import defer_dask_checks, netcdf_lock_without_dask
installed = defer_dask_checks()
ds = xr.Dataset({{"a": (("chain", "draw"), np.arange(6.0).reshape(2, 3))}},
                coords={{"chain": [0, 1]}})
ds = ds.assign(b=ds["a"] * 2)
tmp = tempfile.mkdtemp()
with netcdf_lock_without_dask():
    ds.to_netcdf(os.path.join(tmp, "a.nc"))
loaded_before = sorted(m for m in DASK if m in sys.modules)
back = xr.open_dataset(os.path.join(tmp, "a.nc")).load()
same = bool(back.equals(ds))
import dask.array as da  # once Dask is imported, xarray sees its arrays again
lazy = xr.DataArray(da.ones((4,), chunks=2), dims="x")
print(json.dumps({{"installed": installed, "loaded": loaded_before, "same": same,
                  "chunks": [list(c) for c in lazy.chunks], "sum": float((lazy + 1).sum()),
                  "is_dask": type(lazy.data).__module__.startswith("dask")}}))
"""


def test_xarray_builds_and_writes_without_importing_dask():
    out = _run(DEFERRED)
    assert out["installed"] is True
    assert out["loaded"] == []
    assert out["same"] is True  # the file reads back equal


def test_dask_arrays_work_once_dask_is_imported():
    out = _run(DEFERRED)
    assert out["is_dask"] and out["chunks"] == [[2, 2]] and out["sum"] == 8.0


def test_without_the_deferral_xarray_imports_dask():
    # the probe can fail: plain xarray does import Dask to build a variable
    code = (
        "import json, sys, numpy as np, xarray as xr\n"
        "xr.DataArray(np.zeros(3))\n"
        f"print(json.dumps({{'loaded': sorted(m for m in {DASK!r} if m in sys.modules)}}))"
    )
    assert "dask.array" in _run(code)["loaded"]


def test_deferral_steps_aside_when_dask_is_already_imported():
    code = (
        "import json, dask.array, xarray\n"
        "from bayeslmm.results.lazy_dask import defer_dask_checks\n"
        "print(json.dumps({'installed': defer_dask_checks()}))"
    )
    assert _run(code)["installed"] is False
