"""Mixed-model association scans: every marker as a fixed effect, chromosome by chromosome.

:func:`scan` builds each chromosome's leave-one-chromosome-out kinship, fits the null model by
REML on it and tests every marker of the chromosome in the kinship's eigenbasis; it returns a
:class:`~bayeslmm.results.scan_result.ScanResult`. See ``docs/scan.md``.
"""

import sys
import types

from bayeslmm.scan.engine import scan

__all__ = ["scan"]


class _CallablePackage(types.ModuleType):
    """This package, callable as :func:`scan`.

    ``bayeslmm.scan`` names both this package and the function (``bl.scan(...)``, bound in
    ``bayeslmm/__init__.py``). Tools that import modules by file path (pytest's
    ``--import-mode=importlib``, which this project's tests use) set the package as the
    parent's attribute, replacing the function; calling the package then still runs the scan.
    """

    def __call__(self, *args, **kwargs):
        return scan(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
