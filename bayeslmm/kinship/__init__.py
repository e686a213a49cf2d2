"""Kinship and relationship matrices: the data layer's kernels (knows nothing of PyMC)."""

from bayeslmm.kinship._kinship import Kinship, KinshipScaleWarning
from bayeslmm.kinship.grm import grm, snp_factor
from bayeslmm.kinship.loco import loco_grms
from bayeslmm.kinship.pedigree import inbreeding, pedigree_relationship

__all__ = [
    "Kinship",
    "KinshipScaleWarning",
    "grm",
    "inbreeding",
    "loco_grms",
    "pedigree_relationship",
    "snp_factor",
]
