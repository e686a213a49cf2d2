"""Kinship and relationship matrices: the data layer's kernels (knows nothing of PyMC)."""

from bayeslmm.kinship._kinship import Kinship, KinshipScaleWarning
from bayeslmm.kinship.grm import grm, snp_factor
from bayeslmm.kinship.loco import loco_grms
from bayeslmm.kinship.low_rank import LowRankDensifyWarning, LowRankKinship
from bayeslmm.kinship.pedigree import inbreeding, pedigree_relationship
from bayeslmm.kinship.pedigree_inverse import (
    PedigreeDensifyWarning,
    SparsePedigreeKinship,
    mendelian_decomposition,
    pedigree_inverse,
)

__all__ = [
    "Kinship",
    "KinshipScaleWarning",
    "LowRankDensifyWarning",
    "LowRankKinship",
    "PedigreeDensifyWarning",
    "SparsePedigreeKinship",
    "grm",
    "inbreeding",
    "loco_grms",
    "mendelian_decomposition",
    "pedigree_inverse",
    "pedigree_relationship",
    "snp_factor",
]
