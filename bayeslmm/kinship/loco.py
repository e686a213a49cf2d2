"""Leave-one-chromosome-out (LOCO) GRMs.

When testing SNPs on chromosome c, the polygenic background is modelled with a GRM built from
all *other* chromosomes, so that the tested SNP (and SNPs in LD with it) is not also in the
kernel, which would absorb its effect ("proximal contamination"; Lippert et al. 2011, Yang et
al. 2014). The crossproduct of each chromosome is computed once; each LOCO GRM is the total
minus one chromosome's share, with its own divisor — identical to :func:`grm` on the remaining
SNPs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from bayeslmm.errors import DataError, KinshipError
from bayeslmm.kinship._kinship import Kinship
from bayeslmm.kinship.grm import (
    _as_dosages,
    _centred_blocks,
    _dask_factor,
    _report_dropped,
    _scale,
    _select_snps,
)


def _chromosome_label(value: object) -> str:
    if isinstance(value, float | np.floating) and not math.isnan(value) and value.is_integer():
        value = int(value)
    return str(value)


def loco_grms(
    dosages: Any,
    chromosomes: Sequence[Any],
    ids: Sequence[Any] | None = None,
    maf: float = 0.0,
    standardize: bool = False,
    block_size: int = 2000,
    name: str = "GRM",
) -> dict[str, Kinship]:
    """One GRM per chromosome, each built from the SNPs on all other chromosomes.

    Parameters
    ----------
    dosages, ids, maf, standardize, block_size
        As in :func:`bayeslmm.kinship.grm`; SNP filters and allele frequencies are per SNP, so
        ``loco_grms(...)[c]`` equals ``grm`` of the SNPs not on chromosome ``c``.
    chromosomes : sequence, length m
        Chromosome of every SNP column (e.g. the ``chrom`` column of
        :func:`bayeslmm.io.read_plink`'s SNP map).
    name : str
        Prefix of the kernels' names (``"GRM-loco1"``, ...).

    Returns
    -------
    dict[str, Kinship]
        Keyed by chromosome label (as a string, in order of first appearance). A chromosome
        with no usable SNP gets the whole-genome GRM.

    Examples
    --------
    >>> import numpy as np
    >>> from bayeslmm.kinship import grm, loco_grms
    >>> X = np.random.default_rng(2).binomial(2, 0.3, size=(40, 300)).astype(float)
    >>> chrom = np.repeat([1, 2, 3], 100)
    >>> loco = loco_grms(X, chrom)
    >>> list(loco)
    ['1', '2', '3']
    >>> bool(np.allclose(loco["1"].matrix, grm(X[:, 100:]).matrix))
    True
    """
    dos = _as_dosages(dosages, ids)
    labels = [_chromosome_label(c) for c in chromosomes]
    if len(labels) != dos.m:
        raise DataError(
            f"Got {len(labels)} chromosome labels for {dos.m} SNP columns; give one per SNP."
        )
    chrom_of = pd.Categorical(labels, categories=list(dict.fromkeys(labels)))
    names = list(chrom_of.categories)
    if len(names) < 2:
        raise DataError(f"LOCO needs SNPs on at least two chromosomes; all SNPs are on {names!r}.")
    sel = _select_snps(dos, maf, block_size)
    _report_dropped(sel, maf)
    codes = np.asarray(chrom_of.codes)[sel.keep]
    subsets = [dataclasses.replace(sel, keep=sel.keep[codes == c]) for c in range(len(names))]
    # Numerator (Z_c Z_cᵀ) and divisor of each chromosome.
    divisors = [_scale(sub, standardize)[1] if sub.keep.size else 0.0 for sub in subsets]
    if dos.lazy:
        import dask

        factors = [(_dask_factor(dos, sub, standardize), sub) for sub in subsets]
        # W_c W_cᵀ = Z_c Z_cᵀ / divisor_c, so multiply back to get the crossproduct.
        parts = dask.compute(
            *[W @ W.T * _scale(sub, standardize)[1] for W, sub in factors if sub.keep.size]
        )
        it = iter(parts)
        crossproducts = [
            np.asarray(next(it)) if sub.keep.size else np.zeros((dos.n, dos.n)) for sub in subsets
        ]
    else:
        crossproducts = []
        for sub in subsets:
            C = np.zeros((dos.n, dos.n))
            for _, Z, _ in _centred_blocks(dos, sub, standardize, block_size):
                C += Z @ Z.T
            crossproducts.append(C)
    total = sum(crossproducts)
    total_divisor = float(sum(divisors))
    out: dict[str, Kinship] = {}
    for label, C, divisor in zip(names, crossproducts, divisors, strict=True):
        rest = total_divisor - divisor
        if rest <= 0:
            raise KinshipError(
                f"Leaving out chromosome {label!r} leaves no usable SNP for its LOCO GRM; "
                "every kept SNP is on it. Check the chromosome labels."
            )
        C *= -1.0
        C += total
        C /= rest
        # W Wᵀ of the remaining SNPs: PSD by construction, no O(n³) check per chromosome.
        out[label] = Kinship(C, ids=dos.ids, name=f"{name}-loco{label}", check_psd=False)
    return out
