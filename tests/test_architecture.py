"""The package's import structure: layers that only look down, and no import circles.

Every module of ``bayeslmm/`` is parsed with :mod:`ast` (nothing is imported), and every
``import`` / ``from … import`` statement becomes an edge of a module graph, wherever it
stands: at module level, inside a function, inside ``try`` or ``if``. An import inside a
function is how a circle is usually hidden from the interpreter, so it counts here.

How an import statement becomes an edge (the decisions these tests rest on):

- ``import a.b.c`` and ``from a.b.c import name`` are edges to module ``a.b.c``; the parent
  packages that Python initialises on the way (``a``, ``a.b``) are not edges, or every module
  would depend on ``bayeslmm/__init__.py`` and everything would be one circle.
- ``from pkg import name`` where ``pkg/name.py`` (or ``pkg/name/``) exists is an edge to that
  module, ``pkg.name``.
- ``from pkg import Name`` where ``pkg/__init__.py`` only re-exports ``Name`` (``from
  pkg._impl import Name``) is an edge to the module that defines it, followed through chains
  of re-exports. A package ``__init__`` that only re-exports is a name list, not a dependency;
  following it names the module that is really needed. A name that ``__init__`` defines
  itself is an edge to the package module.
- Imports under ``if TYPE_CHECKING:`` never run, so they are left out of the circle check; they
  still count for the layer checks, because an annotation that names an upper layer's type is
  the dependency the layers forbid.
- ``bayeslmm/__init__.py`` imports every layer (it is the front door), so it belongs to the
  interface layer: ``import bayeslmm`` from a lower layer is a violation.

Layers (DESIGN.md): data (``kinship``, ``io``, ``datasets``), specification (``spec``,
``families``, ``priors``), ``engines``, ``results``, interfaces (``model``, ``cli``,
``commands``, ``fit_arguments`` and the package ``__init__``). What each may not import is the table
:data:`FORBIDDEN`. Engines may import results: they build the results' fit classes
(``RemlFit``, ``LaplaceFit``) and hand them their parameters through the estimate protocol
(``bayeslmm/results/estimate.py``), while results know no engine. ``datasets`` may use
``families`` (the simulator draws from a family), which imports nothing but ``errors``.
``errors``, ``_version`` and ``_imports`` are used by every layer and import nothing of the
package. The association scan (``association``) is an engine: results do not import it either.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import bayeslmm

PACKAGE = Path(bayeslmm.__file__).resolve().parent
ROOT = PACKAGE.name  # "bayeslmm"


@dataclass(frozen=True)
class Edge:
    """One import: ``source`` imports ``target`` at ``path:line``."""

    source: str
    target: str
    path: str
    line: int
    type_checking: bool

    def __str__(self) -> str:
        guard = "  (under TYPE_CHECKING)" if self.type_checking else ""
        return f"{self.source} -> {self.target}   [{self.path}:{self.line}]{guard}"


def module_files() -> dict[str, Path]:
    """Dotted module name → file, for every module of the package (``pkg`` for ``pkg/__init__``)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = module_files()


def is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def _resolve_relative(module: str, level: int, name: str | None) -> str:
    """Absolute name of ``from {'.' * level}{name} import …`` written in ``module``."""
    base = module.split(".") if is_package(module) else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([name] if name else []))


def _type_checking_lines(tree: ast.Module) -> set[int]:
    """Line numbers of the statements under ``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
            if name == "TYPE_CHECKING":
                for stmt in node.body:
                    for sub in ast.walk(stmt):
                        if hasattr(sub, "lineno"):
                            lines.add(sub.lineno)
    return lines


def _raw_imports(module: str) -> Iterator[tuple[str, str | None, int, bool]]:
    """``(imported module, imported name or None, line, under TYPE_CHECKING)`` of one module,
    for imports of the package only (third-party imports are not edges)."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"), filename=str(MODULES[module]))
    guarded = _type_checking_lines(tree)
    for node in ast.walk(tree):  # every level: module, functions, classes, try/if blocks
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node.lineno, node.lineno in guarded
        elif isinstance(node, ast.ImportFrom):
            target = (
                _resolve_relative(module, node.level, node.module) if node.level else node.module
            )
            for alias in node.names:
                yield target, alias.name, node.lineno, node.lineno in guarded


def _in_package(name: str | None) -> bool:
    return name is not None and (name == ROOT or name.startswith(ROOT + "."))


def _reexports(package: str) -> dict[str, str]:
    """Names that ``package/__init__.py`` imports from elsewhere → the module they come from."""
    out = {}
    for target, name, _, _ in _raw_imports(package):
        if name is not None and name != "*" and _in_package(target):
            out[name] = target
    return out


def resolve(target: str, name: str | None, _seen: frozenset[str] = frozenset()) -> str:
    """The module an ``import target`` / ``from target import name`` really depends on."""
    if name is None or name == "*":
        return target
    if f"{target}.{name}" in MODULES:  # from pkg import submodule
        return f"{target}.{name}"
    if target in MODULES and is_package(target) and target not in _seen:
        source = _reexports(target).get(name)
        if source is not None:  # a re-exported name: follow it to where it is defined
            return resolve(source, name, _seen | {target})
    return target


def import_graph() -> list[Edge]:
    """Every import edge between modules of the package."""
    edges = []
    for module, path in MODULES.items():
        rel = str(path.relative_to(PACKAGE.parent))
        for target, name, line, guarded in _raw_imports(module):
            if not _in_package(target):
                continue
            resolved = resolve(target, name)
            if resolved not in MODULES:
                raise AssertionError(
                    f"{rel}:{line} imports {resolved!r}, which is not a module of the package; "
                    "fix the import or this test's resolution of it."
                )
            edge = Edge(module, resolved, rel, line, guarded)
            if resolved != module and edge not in edges:  # one edge per line and target
                edges.append(edge)
    return edges


EDGES = import_graph()

_INTERFACES = {"model", "multitrait_model", "fit_arguments", "saved", "cli", "commands", "__init__"}
_ENGINES = {"engines", "association"}  # the association scan is an engine of its own (DESIGN.md)
#: The parts of the package each part must not import (the front door
#: ``bayeslmm/__init__.py`` is spelt ``"__init__"``: it imports every layer).
FORBIDDEN = {
    **dict.fromkeys(("kinship", "io", "datasets"), {"spec", "results"} | _ENGINES | _INTERFACES),
    **dict.fromkeys(
        ("spec", "multitrait_spec", "multitrait_glmm_spec", "families", "priors"),
        {"results"} | _ENGINES | _INTERFACES,
    ),
    "results": _ENGINES | _INTERFACES,
    **dict.fromkeys(_ENGINES, _INTERFACES),
}
#: Leaves every layer uses: they import nothing of the package.
LEAVES = ("errors", "_version", "_imports")
#: The top layer, free to import any other.
INTERFACES = tuple(sorted(_INTERFACES))


def part(module: str) -> str:
    """The part of the package a module belongs to: ``bayeslmm.engines.reml.mme`` → ``engines``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _report(title: str, edges: list[Edge]) -> str:
    return title + "\n" + "\n".join(f"  {e}" for e in sorted(edges, key=str))


def test_the_graph_sees_the_imports_it_must() -> None:
    """The parser finds module-level, function-level and re-exported imports (or every other
    check here would pass vacuously)."""
    assert len(MODULES) > 30 and len(EDGES) > 50
    pairs = {(e.source, e.target) for e in EDGES}
    # module level, and a name re-exported by bayeslmm/kinship/__init__.py
    assert ("bayeslmm.spec", "bayeslmm.kinship._kinship") in pairs
    # inside a function (assemble_summary reads the version when it runs)
    assert ("bayeslmm.results.summary", "bayeslmm._version") in pairs
    # the front door imports the model
    assert ("bayeslmm", "bayeslmm.model") in pairs


def engine_imports_of_results(edges: list[Edge]) -> list[Edge]:
    """Edges from a module of ``bayeslmm/results/`` into ``bayeslmm/engines/``."""
    return [e for e in edges if part(e.source) == "results" and part(e.target) == "engines"]


def layer_violations(edges: list[Edge]) -> list[Edge]:
    """Edges that break :data:`FORBIDDEN`, or leave a leaf (:data:`LEAVES`) for the package."""
    return [
        e
        for e in edges
        if part(e.target) in FORBIDDEN.get(part(e.source), ()) or part(e.source) in LEAVES
    ]


def test_the_checks_flag_what_they_must() -> None:
    """Made-up edges: each forbidden kind is flagged, the allowed directions are not."""

    def e(a: str, b: str) -> Edge:
        return Edge(f"{ROOT}.{a}", f"{ROOT}.{b}" if b else ROOT, "x.py", 1, False)

    forbidden = [
        e("results.tables", "engines.reml.mme"),
        e("kinship.grm", "spec"),
        e("datasets.simulate", "results.summary"),
        e("priors", "engines.bayes.builder"),
        e("results.summary", ""),  # ``from bayeslmm import __version__`` when __init__ held it
        e("engines.laplace.engine", "model"),
        e("errors", "kinship._kinship"),
        e("results.scan_result", "association.stats"),
    ]
    allowed = [
        e("engines.reml", "results.reml_result"),
        e("datasets.simulate", "families"),
        e("spec", "kinship._kinship"),
        e("results.tables", "spec"),
        e("commands.fit", "engines.reml"),
        e("results.summary", "_version"),
        e("association.stats", "engines.reml.spectral"),
    ]
    assert layer_violations(forbidden + allowed) == forbidden
    assert engine_imports_of_results(forbidden + allowed) == forbidden[:1]
    assert resolve(ROOT, "__version__") == f"{ROOT}._version"  # followed through the re-export
    assert _resolve_relative(f"{ROOT}.engines.reml.mme", 1, "_common") == (
        f"{ROOT}.engines.reml._common"
    )
    assert _resolve_relative(f"{ROOT}.engines.reml", 2, "bayes") == f"{ROOT}.engines.bayes"


def test_every_part_of_the_package_has_a_place_in_the_layers() -> None:
    """A new subpackage or top-level module needs a decision: which layer is it in?"""
    parts = {part(m) for m in MODULES}
    placed = set(FORBIDDEN) | set(LEAVES) | set(INTERFACES)
    assert parts <= placed, (
        f"{sorted(parts - placed)} of bayeslmm/ have no layer: add them to FORBIDDEN (what they "
        "must not import), LEAVES or INTERFACES in tests/test_architecture.py."
    )


def test_results_import_nothing_of_the_engines() -> None:
    """Results are written against the estimate protocol, never against an engine."""
    bad = engine_imports_of_results(EDGES)
    assert not bad, _report(
        "bayeslmm/results/ imports the engines (results must know no engine; hand them what "
        "they need through bayeslmm/results/estimate.py):",
        bad,
    )


def test_lower_layers_never_import_upper_ones() -> None:
    """Data → nothing of spec, engines, results or the interfaces; spec, families, priors →
    nothing of engines, results or the interfaces; results → no engine and no interface;
    engines → no interface; errors and _version → nothing of the package."""
    bad = layer_violations(EDGES)
    assert not bad, _report(
        "A lower layer imports an upper one, or errors/_version import the package (move the "
        "shared code down, or pass it in):",
        bad,
    )


def strongly_connected(nodes: list[str], edges: list[Edge]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (the circles)."""
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    for e in edges:
        succ[e.source].append(e.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:  # recursion depth ≤ number of modules (~60)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in succ[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for n in nodes:
        if n not in index:
            visit(n)
    return out


def test_strongly_connected_finds_a_circle_and_only_circles() -> None:
    """The circle finder itself, on a graph with one circle a -> b -> c -> a and a tail d."""

    def e(a: str, b: str) -> Edge:
        return Edge(a, b, "x.py", 1, False)

    edges = [e("a", "b"), e("b", "c"), e("c", "a"), e("c", "d")]
    assert strongly_connected(["a", "b", "c", "d"], edges) == [["a", "b", "c"]]
    assert strongly_connected(["a", "b", "c", "d"], edges[1:]) == []


def test_no_import_circles() -> None:
    """No module reaches itself through imports (function-level imports included; imports
    under ``TYPE_CHECKING`` never run and are left out)."""
    runtime = [e for e in EDGES if not e.type_checking]
    circles = strongly_connected(sorted(MODULES), runtime)
    if circles:
        lines = []
        for component in circles:
            members = set(component)
            inside = [e for e in runtime if e.source in members and e.target in members]
            lines.append(_report(f"circle among {', '.join(component)}:", inside))
        pytest.fail(
            "Import circles (break each by moving the shared code into a module both can "
            "import, or by passing it in):\n" + "\n".join(lines)
        )
