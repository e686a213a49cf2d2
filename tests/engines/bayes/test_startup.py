"""What a sampling process pays for at start-up: ArviZ's eager numba ufunc is left to its
first call, and the result of that call is unchanged. Each check runs in a fresh
interpreter (this process has imported ArviZ through other tests)."""

from __future__ import annotations

import json
import subprocess
import sys

BAND = """
import json, numpy as np
from arviz.stats import ecdf_utils as e
value = e._ecdf_band_interior_probability_numba(
    np.array([0.1, 0.2, 0.3]), 50, np.array([1, 3, 5]), np.array([10, 15, 25]))
print(json.dumps({"value": float(value), "compiled": len(e._binom_pmf.types)}))
"""


def _run(code: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_nutpie_defers_arviz_ufunc_and_keeps_its_values():
    probe = """
import numba, numba.np.ufunc
from bayeslmm.engines.bayes.sampling import import_nutpie
import_nutpie()
from arviz.stats import ecdf_utils
restored = numba.vectorize is numba.np.ufunc.vectorize
at_import = len(ecdf_utils._binom_pmf.types)
"""
    report = BAND.replace(
        "print(json.dumps({", 'print(json.dumps({"restored": restored, "at_import": at_import, '
    )
    deferred = _run(probe + report)
    assert deferred["restored"] and deferred["at_import"] == 0  # nothing compiled at import
    assert deferred["compiled"] >= 1  # compiled by the call
    eager = _run("import arviz" + BAND)  # ArviZ as it imports itself: compiled at import
    assert eager["compiled"] == 1
    assert deferred["value"] == eager["value"]


def test_a_spectral_fit_leaves_arviz_ufunc_uncompiled():
    # the guard: the sampler's import path does not bring the eager compile back
    fit = """
import json, numpy as np, pandas as pd, bayeslmm as bl
rng = np.random.default_rng(3)
n = 30
W = rng.normal(size=(n, 60))
K = bl.Kinship(W @ W.T / 60 + 0.05 * np.eye(n), [f"i{k}" for k in range(n)])
df = pd.DataFrame({"y": rng.normal(size=n), "id": list(K.ids)})
fit = bl.LMM("y ~ 1 + (1|id)", df, kinship={"id": K}).fit(
    draws=50, tune=50, chains=2, seed=1, progressbar=False, verbose=False)
from arviz.stats import ecdf_utils as e
print(json.dumps({"compiled": len(e._binom_pmf.types), "sampler": fit.sampler}))
"""
    assert _run(fit) == {"compiled": 0, "sampler": "nutpie"}
