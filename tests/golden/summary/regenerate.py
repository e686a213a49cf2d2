"""Write the self-golden summary.json files of tests/results/test_summary_golden.py.

summary.json is a public contract (docs/summary_json.md): pipelines read its keys. Each file
here is the summary of one engine on tiny simulated data with fixed seeds:

- ``nuts_spectral_gaussian.json``: NUTS (nutpie on the spectral closed form), ``y ~ x + (1|id)``;
- ``reml.json``: REML, the same data and model;
- ``laplace_bernoulli.json``: Laplace ML of a Bernoulli GLMM, with a prevalence (liability
  scale);
- ``nuts_glmm_poisson.json``: NUTS (PyMC's sampler, latent strategy) for a Poisson GLMM with
  its observation-level effect.
- ``multitrait_reml.json``, ``multitrait_nuts.json``, ``multitrait_glmm_nuts.json``: a
  two-trait model (``mvbind(y1, y2) ~ x + (1 | id)``, a record missing for 4 of 40
  individuals) by REML, by NUTS, and as a multi-trait GLMM (y1 Bernoulli) by NUTS.

``environment.json`` records where the files were written (library versions, CPU): NUTS
numbers are compared only there (same seed and sampler give the same draws on one machine,
not across CPUs or library versions); the key structure and the REML and Laplace numbers are
compared everywhere.

Run it when a change of summary.json is intended (a new key, a corrected number) and say so
in the commit message::

    OMP_NUM_THREADS=1 python tests/golden/summary/regenerate.py

It takes a few seconds (the first NUTS fits compile their samplers). The test imports
:data:`CASES` from this file, so the goldens and the test always compute the same fits.
"""

from __future__ import annotations

import json
import platform
import sys
import warnings
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent

#: Libraries whose versions can change NUTS draws or the numbers derived from them.
LIBRARIES = ("numpy", "scipy", "pandas", "pymc", "pytensor", "nutpie", "numba", "arviz")


def _gaussian_model():
    import bayeslmm as bl

    sim = bl.datasets.simulate(n_families=6, family_size=5, n_snps=200, h2=0.5, seed=1)
    data = sim.data.assign(x=np.random.default_rng(2).normal(size=len(sim.data)))
    return bl.LMM("y ~ x + (1|id)", data=data, kinship={"id": sim.kinship})


def _glmm_model(family: str, n_families: int, seed: int):
    import bayeslmm as bl

    sim = bl.datasets.simulate(
        n_families=n_families, family_size=5, n_snps=200, h2=0.5, family=family, seed=seed
    )
    return bl.LMM("y ~ 1 + (1|id)", data=sim.data, kinship={"id": sim.kinship}, family=family)


#: NUTS settings: tiny, one process, fixed seed, no progress output.
NUTS = {"draws": 200, "tune": 200, "chains": 2, "cores": 1, "progressbar": False, "verbose": False}


def nuts_spectral_gaussian() -> dict[str, Any]:
    """NUTS, spectral strategy, nutpie on the closed-form density (30 records)."""
    return _gaussian_model().fit(sampler="nutpie", seed=3, **NUTS).summary()


def reml() -> dict[str, Any]:
    """REML (single kernel: the spectral profile over δ), the same 30 records."""
    return _gaussian_model().fit(method="reml").to_summary()


def laplace_bernoulli() -> dict[str, Any]:
    """Laplace ML of a Bernoulli GLMM (40 records), h² on every scale with prevalence 0.1."""
    return _glmm_model("bernoulli", 8, seed=6).fit(method="laplace").to_summary(prevalence=0.1)


def nuts_glmm_poisson() -> dict[str, Any]:
    """NUTS (PyMC's sampler), latent strategy, Poisson with its observation-level effect
    (20 records; 100 draws after 100 warm-up per chain keep it quick)."""
    settings = NUTS | {"draws": 100, "tune": 100}
    return _glmm_model("poisson", 4, seed=4).fit(sampler="pymc", seed=5, **settings).summary()


def _multitrait_model(family: Any = "gaussian"):
    """Two traits on 40 individuals (a random-marker GRM), y2 missing for 4 of them; with
    ``family`` a dict, y1 is recoded 0/1 (a multi-trait GLMM)."""
    import pandas as pd

    import bayeslmm as bl

    rng = np.random.default_rng(7)
    n = 40
    ids = [f"i{k:02d}" for k in range(n)]
    W = rng.normal(size=(n, 120))
    W = (W - W.mean(axis=0)) / W.std(axis=0)
    K = bl.Kinship(W @ W.T / 120 + 1e-3 * np.eye(n), ids)
    s, Q = np.linalg.eigh(K.matrix)
    U = Q @ (np.sqrt(np.clip(s, 0, None))[:, None] * rng.normal(size=(n, 2)))
    U = U @ np.linalg.cholesky(np.array([[1.0, 0.5], [0.5, 1.0]])).T
    x = rng.normal(size=n)
    Y = U + rng.normal(size=(n, 2)) + np.array([1.0, 2.0]) + np.outer(x, [0.5, 0.0])
    Y[rng.choice(n, 4, replace=False), 1] = np.nan
    data = pd.DataFrame({"y1": Y[:, 0], "y2": Y[:, 1], "x": x, "id": ids})
    if isinstance(family, dict):
        data["y1"] = (data["y1"] > data["y1"].median()).astype(float)
    formula = "mvbind(y1, y2) ~ x + (1 | id)"
    return bl.LMM(formula, data, kinship={"id": K}, family=family)


def multitrait_reml() -> dict[str, Any]:
    """Multi-trait REML (two Gaussian traits, 40 individuals, 4 records missing)."""
    return _multitrait_model().fit(method="reml").to_summary()


def multitrait_nuts() -> dict[str, Any]:
    """Multi-trait NUTS (nutpie, the closed-form density), the same data."""
    settings = {k: v for k, v in NUTS.items() if k != "draws"}
    return _multitrait_model().fit(seed=11, draws=100, **settings).summary()


def multitrait_glmm_nuts() -> dict[str, Any]:
    """Multi-trait GLMM (y1 Bernoulli logit, y2 Gaussian; NUTS), the same individuals."""
    settings = {k: v for k, v in NUTS.items() if k != "draws"}
    model = _multitrait_model(family={"y1": "bernoulli"})
    return model.fit(seed=12, draws=100, **settings).summary()


#: Golden name → function computing its summary dictionary.
CASES: dict[str, Callable[[], dict[str, Any]]] = {
    "nuts_spectral_gaussian": nuts_spectral_gaussian,
    "reml": reml,
    "laplace_bernoulli": laplace_bernoulli,
    "nuts_glmm_poisson": nuts_glmm_poisson,
    "multitrait_reml": multitrait_reml,
    "multitrait_nuts": multitrait_nuts,
    "multitrait_glmm_nuts": multitrait_glmm_nuts,
}

#: Which goldens come from NUTS (their numbers are compared only in :func:`environment`'s).
NUTS_CASES = (
    "nuts_spectral_gaussian",
    "nuts_glmm_poisson",
    "multitrait_nuts",
    "multitrait_glmm_nuts",
)


def compute(name: str) -> dict[str, Any]:
    """The summary of one case, with the sampler's and optimiser's warnings silenced (tiny
    data and short chains warn, as they should; the summary records them as messages)."""
    from bayeslmm.results.summary import json_safe

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return json_safe(CASES[name]())


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment() -> dict[str, str]:
    """Where NUTS draws are reproducible: Python, the libraries in :data:`LIBRARIES`, the
    machine and the CPU model.

    Examples
    --------
    >>> env = environment()
    >>> {"python", "cpu", "numpy", "pymc", "nutpie"} <= set(env)
    True
    """
    out = {"python": platform.python_version(), "machine": platform.machine(), "cpu": _cpu()}
    for lib in LIBRARIES:
        try:
            out[lib] = version(lib)
        except Exception:  # not installed: recorded as such
            out[lib] = "absent"
    return out


def main(argv: list[str] | None = None) -> int:
    """Write every case's golden (or those named on the command line) and environment.json."""
    from bayeslmm.results.summary import write_summary

    names = (argv if argv is not None else sys.argv[1:]) or list(CASES)
    unknown = sorted(set(names) - set(CASES))
    if unknown:
        print(f"Unknown case(s) {unknown}; the cases are {list(CASES)}.", file=sys.stderr)
        return 2
    for name in names:
        path = write_summary(compute(name), HERE / f"{name}.json")
        print(f"wrote {path}")
    (HERE / "environment.json").write_text(json.dumps(environment(), indent=2) + "\n")
    print(f"wrote {HERE / 'environment.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
