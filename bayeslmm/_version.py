"""The package version, in a module of its own.

Kept apart from ``bayeslmm/__init__.py`` so that lower layers (``results/summary.py`` writes
it into summary.json) can read it without importing the package's top level, which imports
every layer and would close an import circle.

Examples
--------
>>> from bayeslmm._version import __version__
>>> __version__.count(".") >= 1
True
"""

__version__ = "0.1.0"
