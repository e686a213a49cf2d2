"""Bundled data sets and a seeded simulator of family-structured data with known truth."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import numpy as np
import pandas as pd

from bayeslmm.datasets.simulate import SimulatedData, simulate

__all__ = ["HyperData", "SimulatedData", "load_hyper", "simulate"]


@dataclass(frozen=True)
class HyperData:
    """The R/qtl ``hyper`` backcross (see :func:`load_hyper`).

    Attributes
    ----------
    pheno : DataFrame
        Columns ``id`` (str), ``bp`` (blood pressure) and ``sex`` (all ``"male"``).
    genotypes : DataFrame
        Dosages indexed by id (same order as ``pheno``), one column per marker: backcross code
        minus 1, so 0 = homozygous, 1 = heterozygous, NaN = not typed.
    map : DataFrame
        Columns ``marker``, ``chr`` (str: ``"1"`` ... ``"19"``, ``"X"``) and ``pos_cM``, in the
        column order of ``genotypes``.
    """

    pheno: pd.DataFrame
    genotypes: pd.DataFrame
    map: pd.DataFrame


def _read(name: str, **kwargs) -> pd.DataFrame:
    path = resources.files("bayeslmm.datasets") / "data" / "hyper" / name
    with resources.as_file(path) as file:
        return pd.read_csv(file, **kwargs)


def load_hyper() -> HyperData:
    """Salt-induced hypertension in a mouse backcross: 250 males, 174 markers.

    Blood pressure (``bp``) of 250 male backcross mice typed at 174 microsatellite markers on
    the 19 autosomes and the X chromosome. Genotyping was selective (mostly mice with extreme
    phenotypes, and at many markers only recombinants), so about 52% of genotypes are missing,
    and marker ``D14Mit48`` has no genotype at all: :func:`bayeslmm.kinship.grm` drops it with
    a warning. All mice are male, so ``sex`` is constant: a model for these data is
    ``bp ~ 1 + (1 | id)`` with a GRM from the markers.

    In a backcross every locus has genotype frequencies 1/2, 1/2 (coded 0/1), so the
    Hardy-Weinberg scaling of a VanRaden GRM does not hold: its mean diagonal is near 2/3 (and
    lower still with mean-imputed missing genotypes). Use ``grm(...).normalized()`` to put
    the kernel on the mean-diagonal-1 scale.

    Returns
    -------
    HyperData
        ``pheno``, ``genotypes`` (0/1 dosages, NaN missing) and ``map``.

    References
    ----------
    Sugiyama F, Churchill GA, et al. (2001) Concordance of murine quantitative trait loci for
    salt-induced hypertension with rat and human loci. Genomics 71:70-77. Data from Bev Paigen
    and Gary Churchill (The Jackson Laboratory), distributed as the ``hyper`` data set of R/qtl:
    Broman KW, Wu H, Sen Ś, Churchill GA (2003) R/qtl: QTL mapping in experimental crosses.
    Bioinformatics 19:889-890.

    Examples
    --------
    >>> from bayeslmm.datasets import load_hyper
    >>> hyper = load_hyper()
    >>> hyper.pheno.shape, hyper.genotypes.shape
    ((250, 3), (250, 174))
    """
    pheno = _read("pheno.csv", dtype={"id": str, "sex": str})
    codes = _read("genotypes.csv", dtype={"id": str}).set_index("id")
    genotypes = codes.astype(float) - 1.0
    marker_map = _read("map.csv", dtype={"marker": str, "chr": str})
    observed = genotypes.to_numpy()[~np.isnan(genotypes.to_numpy())]
    if not np.isin(observed, (0.0, 1.0)).all() or list(genotypes.columns) != list(
        marker_map["marker"]
    ):
        raise RuntimeError("The bundled hyper files are corrupt; reinstall bayeslmm.")
    return HyperData(pheno=pheno, genotypes=genotypes, map=marker_map)
