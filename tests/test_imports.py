"""What importing bayeslmm and fitting its fast path load, and the deferred PyMC model.

``import bayeslmm`` must not load PyMC, PyTensor, ArviZ, matplotlib, formulae or numba, nor
scipy.stats and scipy.optimize (about half a second together, needed only by intervals,
p-values and optimisers): each subcommand and each engine imports what it uses when it uses
it, so a command-line fit pays only for its own path. A Gaussian single-kinship model
sampled by nutpie runs on the closed form (:mod:`bayeslmm.engines.bayes.spectral_density`)
and never needs PyMC: its :class:`pymc.Model` is built only when asked for. The checks run
in a fresh interpreter (``sys.modules`` of the test process already holds everything other
tests imported).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import bayeslmm as bl
from bayeslmm.engines.bayes import build
from bayeslmm.engines.bayes.sampling import blas_threads_per_chain
from bayeslmm.engines.bayes.spectral_density import closed_form_applies

HEAVY = ("pymc", "pytensor", "arviz", "matplotlib", "formulae", "numba", "nutpie")
SLOW_SCIPY = ("scipy.stats", "scipy.optimize")


def _loaded_after(code: str, modules: tuple[str, ...] = HEAVY) -> list[str]:
    """The modules of ``modules`` that a fresh interpreter holds after running ``code``."""
    report = f"print(json.dumps(sorted(m for m in {modules!r} if m in sys.modules)))"
    probe = f"{code}\nimport json, sys\n{report}"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_bayeslmm_loads_no_heavy_module():
    assert _loaded_after("import bayeslmm") == []


def test_import_bayeslmm_loads_neither_scipy_stats_nor_optimize():
    assert _loaded_after("import bayeslmm", SLOW_SCIPY) == []


def test_probe_sees_scipy_stats_once_a_p_value_is_asked_for():
    # the modules are imported where they are used: a p-value loads scipy.stats
    code = "from bayeslmm.association.stats import chi2_pvalue; chi2_pvalue([3.84])"
    assert _loaded_after(code, SLOW_SCIPY) == ["scipy.optimize", "scipy.stats"]


def test_written_out_chi2_median_is_scipys():
    from scipy import stats

    from bayeslmm.results.scan_result import CHI2_MEDIAN

    assert CHI2_MEDIAN == float(stats.chi2.ppf(0.5, 1))


def test_command_line_parser_loads_no_heavy_module():
    # `bayeslmm fit --help` and argument errors answer without the modelling stack
    assert _loaded_after("from bayeslmm.cli import build_parser; build_parser()") == []


def test_probe_sees_a_heavy_import():
    # the probe itself can fail: importing the Bayesian results layer's plots does load them
    assert "matplotlib" in _loaded_after("import matplotlib.pyplot")


SPECTRAL_FIT = """
import numpy as np, pandas as pd, bayeslmm as bl
rng = np.random.default_rng(3)
n = 30
W = rng.normal(size=(n, 60))
K = bl.Kinship(W @ W.T / 60 + 0.05 * np.eye(n), [f"i{k}" for k in range(n)])
df = pd.DataFrame({"y": rng.normal(size=n), "x": rng.normal(size=n), "id": list(K.ids)})
fit = bl.LMM("y ~ x + (1|id)", data=df, kinship={"id": K}).fit(
    draws=30, tune=30, chains=2, seed=1, progressbar=False, verbose=False)
assert fit.sampler == "nutpie" and fit.strategy == "spectral", (fit.sampler, fit.strategy)
assert fit.idata.posterior["beta"].shape[:2] == (2, 30)
"""


def test_spectral_nutpie_fit_never_imports_pymc():
    loaded = _loaded_after(SPECTRAL_FIT)
    assert "nutpie" in loaded  # it did sample
    assert "pymc" not in loaded and "pytensor" not in loaded


@pytest.fixture(scope="module")
def spectral_data(random_kinship):
    rng = np.random.default_rng(8)
    n = 20
    K = random_kinship(rng, n, 40, ridge=0.05)
    df = pd.DataFrame({"y": rng.normal(size=n), "x": rng.normal(size=n), "id": list(K.ids)})
    return K, df


PRIORS = [
    None,
    {"sd_id": ("halfnormal", 1.5), "sigma": ("exponential", 0.7)},
    {"h2": ("beta", 2.0, 3.0)},
    {"h2": ("beta", 0.7, 1.4), "total_sd": ("halfnormal", 4.0)},
    {"h2": ("beta", 1.0, 1.0), "total_variance": ("scaled_inv_chi2", 3.0, 4.0)},
]


@pytest.mark.parametrize("formula", ["y ~ 1 + (1|id)", "y ~ 0 + (1|id)", "y ~ x + (1|id)"])
@pytest.mark.parametrize("priors", PRIORS)
def test_deferred_model_gets_the_same_closed_form_answer_as_the_built_one(
    spectral_data, formula, priors
):
    K, df = spectral_data
    built = build(bl.specify(formula, df, kinship={"id": K}, priors=priors))
    assert not built.model_is_built
    deferred_answer = closed_form_applies(built)
    assert not built.model_is_built  # asking did not build it
    names = {v.name for v in built.model.free_RVs}  # built now, from the builder
    assert built.model_is_built and built.model is built.model  # once
    assert closed_form_applies(built) == deferred_answer is True
    assert names in ({"sd_id", "sigma"}, {"h2", "total_sd"}, {"h2", "total_variance"})


def test_joint_fixed_effects_build_the_model_at_once(spectral_data):
    K, df = spectral_data
    built = build(bl.specify("y ~ x + (1|id)", df, kinship={"id": K}), fixed_effects="joint")
    assert built.model_is_built and "beta" in built.model.named_vars
    assert not closed_form_applies(built)


def test_model_changed_after_building_is_not_the_closed_form(spectral_data):
    import pymc as pm

    K, df = spectral_data
    built = build(bl.specify("y ~ 1 + (1|id)", df, kinship={"id": K}))
    with built.model:
        pm.Potential("extra", 0.0 * built.model["sd_id"])
    assert not closed_form_applies(built)


@pytest.mark.parametrize(
    ("chains", "cores", "available", "expected"),
    [
        (4, 1, 2, None),  # one after the other: BLAS keeps its own threads
        (1, 4, 2, None),
        (2, 2, 2, 1),  # the 2-core case: one BLAS thread per chain
        (4, 4, 2, 1),
        (4, 2, 16, 8),  # cores shared out
        (3, 3, 16, 5),
    ],
)
def test_blas_threads_share_the_cores_between_parallel_chains(chains, cores, available, expected):
    got = blas_threads_per_chain(chains, cores, available)
    assert got == expected
    if got is not None:  # never more busy threads than cores
        assert got * min(chains, cores) <= max(available, min(chains, cores))
