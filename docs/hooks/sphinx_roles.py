"""mkdocs hook: Sphinx cross-reference roles in docstrings become links on the site.

The package's numpydoc docstrings use Sphinx roles (:func:`bayeslmm.specify`,
:class:`~bayeslmm.Kinship`), which read well in ``help()`` and IDEs; mkdocstrings renders
them literally (``:func:`` then the name in code). This hook turns each into an optional
mkdocs-autorefs reference: a link when the object is on the API page, plain code otherwise.
A leading ``~`` shows the last component only, as in Sphinx. Registered under ``hooks:`` in
mkdocs.yml.
"""

from __future__ import annotations

import re
from typing import Any

ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|obj|exc):<code>(~?)([^<]+?)</code>")


def _reference(match: re.Match[str]) -> str:
    short, target = match.group(1), match.group(2).strip()
    if "<" in target:  # "title <target>" form
        target = target.split("<", 1)[1].rstrip(">").strip()
    identifier = target.rstrip("()")
    shown = identifier.rsplit(".", 1)[-1] if short else identifier
    return f'<autoref optional identifier="{identifier}"><code>{shown}</code></autoref>'


def on_page_content(html: str, **kwargs: Any) -> str:
    """Rewrite the roles of a rendered page (before autorefs resolves references)."""
    return ROLE.sub(_reference, html)
