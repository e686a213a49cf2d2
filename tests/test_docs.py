"""The Python blocks of README.md and docs/*.md run as written.

A fenced block that opens with ```` ```python ```` is code a reader may paste: the blocks of
one file run in order, in one fresh Python process (later blocks may use what earlier ones
defined, as in a notebook), with a scratch folder as the working directory. A block that only
shows an interface and cannot run on its own is fenced ```` ```python no-run ````; it is
displayed the same and not executed. Running every file takes a few minutes (the examples fit
real models), so that test carries the ``docs`` marker with the notebooks, and CI runs it:

    python -m pytest -m docs tests/test_docs.py

The fast checks (every block is one of the two kinds; the user docs speak of the package,
not of how it was developed) run by default.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```\s*$", flags=re.DOTALL | re.MULTILINE)

#: Words that describe the project's development rather than the package.
HISTORY = re.compile(r"\bsession \d|\bsince session\b|\bissue #?\d+|\bin this session\b", re.I)


def python_blocks(path: Path) -> list[tuple[int, str, bool]]:
    """(line, code, runs) of each Python block of a Markdown file.

    Examples
    --------
    >>> import tempfile
    >>> md = Path(tempfile.mkdtemp()) / "x.md"
    >>> _ = md.write_text("a\\n```python\\nx = 1\\n```\\n```python no-run\\nf(y)\\n```\\n")
    >>> python_blocks(md)
    [(2, 'x = 1\\n', True), (5, 'f(y)\\n', False)]
    """
    text = path.read_text(encoding="utf-8")
    out = []
    for match in FENCE.finditer(text):
        info = match.group(1).split()
        if not info or info[0] not in ("python", "py"):
            continue
        line = text.count("\n", 0, match.start()) + 1
        out.append((line, match.group(2), "no-run" not in info[1:]))
    return out


def test_blocks_are_marked():
    """Every Python fence is ``python`` (runs) or ``python no-run`` (shown only)."""
    for path in FILES:
        text = path.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            info = match.group(1).split()
            if info and info[0] in ("python", "py"):
                assert info[1:] in ([], ["no-run"]), (
                    f"{path.name}: fence ```{match.group(1)}: write ```python or ```python no-run"
                )


def test_docs_speak_of_the_package():
    for path in FILES:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            assert not HISTORY.search(line), (
                f"{path.name}:{number} tells development history: {line}"
            )


RUNNABLE = [p for p in FILES if any(runs for _, _, runs in python_blocks(p))]


@pytest.mark.docs
@pytest.mark.parametrize("path", RUNNABLE, ids=lambda p: p.name)
def test_python_blocks_run(path, tmp_path):
    parts = []
    for line, code, runs in python_blocks(path):
        if runs:
            parts.append(f"# --- {path.name}, line {line}\n{code}")
    env = dict(os.environ, MPLBACKEND="Agg")
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, "1")
    done = subprocess.run(
        [sys.executable, "-c", "\n".join(parts)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, f"{path.name}: a Python block failed:\n{done.stderr[-3000:]}"


def _roles_hook():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "sphinx_roles", ROOT / "docs/hooks/sphinx_roles.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_roles_become_optional_references():
    hook = _roles_hook()
    html = (
        "see :func:<code>bayeslmm.specify</code>, :class:<code>~bayeslmm.kinship.Kinship</code>"
        " and :meth:<code>fit()</code>."
    )
    out = hook.on_page_content(html)
    assert ":func:" not in out and ":class:" not in out and ":meth:" not in out
    assert '<autoref optional identifier="bayeslmm.specify"><code>bayeslmm.specify</code>' in out
    assert '<autoref optional identifier="bayeslmm.kinship.Kinship"><code>Kinship</code>' in out
    assert 'identifier="fit"' in out


@pytest.mark.docs
def test_site_builds_without_raw_roles(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir"]
    done = subprocess.run([*cmd, str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    api = (tmp_path / "api" / "index.html").read_text(encoding="utf-8")
    raw = re.findall(r":(?:func|class|meth|mod|attr|data):<code>[^<]*", api)
    assert not raw, f"Sphinx roles shown raw on the API page: {raw[:5]}"
    assert api.count("autorefs-internal") > 10  # the roles link to the objects' entries
