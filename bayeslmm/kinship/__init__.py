"""Kinship and relationship matrices: the data layer's kernels (knows nothing of PyMC)."""

from bayeslmm.kinship._kinship import Kinship
from bayeslmm.kinship.grm import grm, snp_factor

__all__ = ["Kinship", "grm", "snp_factor"]
