"""Kinship and relationship matrices: the data layer's kernels (knows nothing of PyMC)."""

from bayeslmm.kinship._kinship import Kinship

__all__ = ["Kinship"]
