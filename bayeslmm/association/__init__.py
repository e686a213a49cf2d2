"""Mixed-model association scans: every marker as a fixed effect, chromosome by chromosome.

:func:`scan` (``bl.scan``) builds each chromosome's leave-one-chromosome-out kinship, fits the
null model by REML on it and tests every marker of the chromosome with the null's variance
components: dense (the kinship's tridiagonal basis, markers whitened by the Cholesky factor of
V) or, with fewer markers than individuals, in SNP space (the kinship held as its markers,
:mod:`bayeslmm.association.low_rank`). It returns a
:class:`~bayeslmm.results.scan_result.ScanResult`. See ``docs/scan.md``.
"""

from bayeslmm.association.engine import scan

__all__ = ["scan"]
