"""summary.json against its self-golden: an accidental change of the public contract fails.

tests/golden/summary/ holds one summary.json per engine (NUTS spectral Gaussian, REML,
Laplace Bernoulli, NUTS Poisson GLMM), written by tests/golden/summary/regenerate.py from
tiny simulated data with fixed seeds; this test recomputes each with the same code (it
imports the script's cases) and compares:

- the key structure, exactly: every key path, recursively (list items by position), and the
  kind of each value (number, string, boolean, list, object; ``null`` stands in for a
  number that is NaN). A renamed, removed or added key fails.
- the values: strings, booleans and nulls exactly, numbers to a relative 1e-6 (enough for
  BLAS and thread-count noise in REML's and Laplace's optimisers). ``timing`` and
  ``bayeslmm_version`` change from run to run, an optimiser's iteration and evaluation counts
  (``diagnostics.n_iter``, ``n_evals``) with its internals: their keys are checked, their
  values not.
  NUTS: the same seed and sampler give the same draws on one machine (two runs, and runs with
  1 and 2 BLAS threads, gave identical summaries), but not across CPUs or library versions,
  so NUTS values are compared only in the environment that wrote the goldens
  (environment.json) and skipped, with the reason, elsewhere.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "summary"
CONTRACT = (
    "summary.json is a public contract: extend it, do not rename; if the change is intended, "
    "run tests/golden/summary/regenerate.py and say so in the commit."
)
#: Key paths (prefixes) whose values change from run to run or with an optimiser's internals,
#: not with the estimates: their keys are still checked, their values not.
VOLATILE = (
    ("timing",),
    ("bayeslmm_version",),
    ("diagnostics", "n_iter"),
    ("diagnostics", "n_evals"),
    ("diagnostics", "gradient_max"),  # multi-trait REML: the optimiser's last gradient
)
REL = 1e-6
ABS = 1e-12  # numbers that are 0 up to rounding


def _load_cases():
    spec = importlib.util.spec_from_file_location("summary_golden_cases", GOLDEN / "regenerate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


CASES = _load_cases()

Path_ = tuple[Any, ...]


def kind(value: Any) -> str:
    """The JSON kind of a leaf: number, string, boolean, null, list (of scalars) or object."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "list" if isinstance(value, list) else "object"


def leaves(obj: Any, path: Path_ = ()) -> dict[Path_, Any]:
    """Key path → value, recursively. A list of scalars (``messages``), an empty list and an
    empty object are leaves; a list of objects (``variance_components``) is entered by
    position, so its length is part of the structure."""
    if isinstance(obj, dict) and obj:
        out: dict[Path_, Any] = {}
        for key, value in obj.items():
            out.update(leaves(value, (*path, key)))
        return out
    if isinstance(obj, list) and any(isinstance(v, dict | list) for v in obj):
        out = {}
        for i, value in enumerate(obj):
            out.update(leaves(value, (*path, i)))
        return out
    return {path: obj}


def show(path: Path_) -> str:
    """``summary["heritability"]["h2"]["mean"]``: the path as a reader would index it."""
    return "summary" + "".join(f"[{k!r}]" if isinstance(k, str) else f"[{k}]" for k in path)


def _same_kind(a: Any, b: Any) -> bool:
    ka, kb = kind(a), kind(b)
    return ka == kb or {ka, kb} == {"number", "null"}  # a NaN is written as null


def structure_differences(golden: dict, current: dict) -> list[str]:
    """Key paths missing from or new in ``current``, and leaves whose kind changed."""
    g, c = leaves(golden), leaves(current)
    out = [f"removed or renamed: {show(p)}" for p in g if p not in c]
    out += [f"new: {show(p)} = {c[p]!r}" for p in c if p not in g]
    out += [
        f"kind changed: {show(p)} was {kind(g[p])} {g[p]!r}, is {kind(c[p])} {c[p]!r}"
        for p in g
        if p in c and not _same_kind(g[p], c[p])
    ]
    return out


def _equal(a: Any, b: Any) -> bool:
    if kind(a) == "number" and kind(b) == "number":
        return math.isclose(a, b, rel_tol=REL, abs_tol=ABS)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return kind(a) == kind(b) and a == b


def _volatile(path: Path_) -> bool:
    return any(path[: len(v)] == v for v in VOLATILE)


def value_differences(golden: dict, current: dict) -> list[str]:
    """Leaves present in both whose values differ (numbers beyond :data:`REL`), volatile
    sections left out."""
    g, c = leaves(golden), leaves(current)
    return [
        f"{show(p)}: golden {g[p]!r}, now {c[p]!r}"
        for p in g
        if p in c and not _volatile(p) and not _equal(g[p], c[p])
    ]


def _fail(name: str, what: str, differences: list[str]) -> None:
    listed = "\n  ".join(differences[:25])
    more = f"\n  … and {len(differences) - 25} more" if len(differences) > 25 else ""
    pytest.fail(
        f"{name}: {what} of summary.json differ from tests/golden/summary/{name}.json:\n  "
        f"{listed}{more}\n{CONTRACT}"
    )


@pytest.fixture(scope="module")
def summary():
    """Case name → its summary as computed now (each fit runs once per test module)."""
    cache: dict[str, dict] = {}

    def get(name: str) -> dict:
        if name not in cache:
            cache[name] = CASES.compute(name)
        return cache[name]

    return get


def golden(name: str) -> dict:
    return json.loads((GOLDEN / f"{name}.json").read_text())


def test_every_case_has_a_golden_and_every_golden_a_case() -> None:
    files = {p.stem for p in GOLDEN.glob("*.json")} - {"environment"}
    assert files == set(CASES.CASES), (
        f"goldens {sorted(files)} and cases {sorted(CASES.CASES)} differ; run "
        "tests/golden/summary/regenerate.py"
    )
    assert {golden(n)["method"] for n in CASES.CASES} == {"nuts", "reml", "laplace"}


@pytest.mark.parametrize("name", list(CASES.CASES))
def test_key_structure_is_the_golden(name: str, summary) -> None:
    differences = structure_differences(golden(name), summary(name))
    if differences:
        _fail(name, "the keys", differences)


@pytest.mark.parametrize("name", list(CASES.CASES))
def test_values_are_the_golden(name: str, summary) -> None:
    if name in CASES.NUTS_CASES:
        written = json.loads((GOLDEN / "environment.json").read_text())
        here = CASES.environment()
        changed = {k: (written.get(k), here.get(k)) for k in here if written.get(k) != here[k]}
        if changed:
            pytest.skip(
                f"NUTS draws are reproducible only where the golden was written; here "
                f"(golden, this machine) differ in {changed}. Its keys were checked."
            )
    differences = value_differences(golden(name), summary(name))
    if differences:
        _fail(name, "the values", differences)


# ---------------------------------------------------------------------------------------
# the comparison itself: it must catch what it is there to catch
# ---------------------------------------------------------------------------------------
SAMPLE = {
    "bayeslmm_version": "0.1.0",
    "heritability": {"h2": {"estimate": 0.5, "se": 0.1}},
    "variance_components": [{"grp": "id", "vcov": 1.0}, {"grp": "Residual", "vcov": 2.0}],
    "diagnostics": {"messages": ["R-hat reaches 1.02"], "converged": True, "n_iter": 10},
    "timing": {"total_s": 1.5},
    "priors": {},
}


def _changed(**edits: Any) -> dict:
    out = json.loads(json.dumps(SAMPLE))
    for dotted, value in edits.items():
        *keys, last = [int(k) if k.isdigit() else k for k in dotted.split("__")]
        node = out
        for k in keys:
            node = node[k]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value
    return out


_DELETE = object()


def test_structure_catches_renamed_removed_added_and_retyped_keys() -> None:
    assert structure_differences(SAMPLE, json.loads(json.dumps(SAMPLE))) == []
    renamed = _changed(heritability__h2__se=_DELETE, heritability__h2__std_error=0.1)
    assert structure_differences(SAMPLE, renamed) == [
        "removed or renamed: summary['heritability']['h2']['se']",
        "new: summary['heritability']['h2']['std_error'] = 0.1",
    ]
    shorter = _changed(variance_components=[{"grp": "id", "vcov": 1.0}])
    assert structure_differences(SAMPLE, shorter) == [
        "removed or renamed: summary['variance_components'][1]['grp']",
        "removed or renamed: summary['variance_components'][1]['vcov']",
    ]
    assert structure_differences(SAMPLE, _changed(priors={"sd": "HalfNormal"})) == [
        "removed or renamed: summary['priors']",
        "new: summary['priors']['sd'] = 'HalfNormal'",
    ]
    assert structure_differences(SAMPLE, _changed(diagnostics__converged="yes")) == [
        "kind changed: summary['diagnostics']['converged'] was boolean True, is string 'yes'"
    ]
    # a NaN written as null is the same kind as a number; volatile keys are still keys
    assert structure_differences(SAMPLE, _changed(heritability__h2__se=None)) == []
    assert structure_differences(SAMPLE, _changed(timing={})) == [
        "removed or renamed: summary['timing']['total_s']",
        "new: summary['timing'] = {}",
    ]


def test_values_compare_numbers_to_a_tolerance_and_skip_volatile_sections() -> None:
    noise = _changed(heritability__h2__estimate=0.5 * (1 + 1e-9), timing__total_s=9.0)
    noise["diagnostics"]["n_iter"] = 12
    assert value_differences(SAMPLE, noise | {"bayeslmm_version": "9.9"}) == []
    moved = _changed(heritability__h2__estimate=0.5 * (1 + 1e-5))
    assert value_differences(SAMPLE, moved) == [
        f"summary['heritability']['h2']['estimate']: golden 0.5, now {0.5 * (1 + 1e-5)!r}"
    ]
    assert len(value_differences(SAMPLE, _changed(diagnostics__messages=[]))) == 1
    assert len(value_differences(SAMPLE, _changed(heritability__h2__se=None))) == 1
    assert len(value_differences(SAMPLE, _changed(variance_components__1__grp="resid"))) == 1
