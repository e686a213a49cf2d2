"""Mixed-model association scans: every marker as a fixed effect, chromosome by chromosome.

:func:`scan` (``bl.scan``) builds each chromosome's leave-one-chromosome-out kinship, fits the
null model by REML on it and tests every marker of the chromosome in the kinship's eigenbasis;
it returns a :class:`~bayeslmm.results.scan_result.ScanResult`. See ``docs/scan.md``.
"""

from bayeslmm.association.engine import scan

__all__ = ["scan"]
