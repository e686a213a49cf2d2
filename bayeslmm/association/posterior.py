"""Bayesian refits of a scan's top markers: the marker as a fixed effect, sampled by NUTS.

The scan hands its :class:`~bayeslmm.results.scan_result.ScanResult` a callable built here
(:func:`posterior_refitter`), so that :meth:`ScanResult.posterior_shares` can refit markers
without the results layer knowing the engines. The callable reopens the genotypes, rebuilds
each marker's chromosome kinship exactly as the scan built it (LOCO or whole-genome, or the
given ``kinship=``) and fits ``y ~ covariates + marker + (1 | id)`` by NUTS through the
Bayesian engine (:func:`fit_nuts`, as ``LMM(...).fit()`` does).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from bayeslmm.association.genotypes import open_genotypes
from bayeslmm.errors import SpecificationError
from bayeslmm.kinship._kinship import Kinship, KinshipScaleWarning
from bayeslmm.kinship.grm import _centred_blocks, _select_snps
from bayeslmm.spec import ModelSpec, specify

#: Name of the marker's column in the refitted model's data (a formula term).
MARKER_COLUMN = "scan_marker"


def posterior_refitter(
    response: str,
    fixed: str,
    group: str,
    frame: pd.DataFrame,
    genotypes: Any,
    snp_map: pd.DataFrame | None,
    ids: Sequence[Any] | None,
    loco: bool,
    kinship: Kinship | Mapping[Any, Kinship] | None,
    standardize: bool,
    maf: float,
    block_size: int,
    provider: Callable[..., Any],
) -> Callable[..., list[tuple[Any, np.ndarray]]]:
    """A callable ``refit(snps, **fit_options)`` → one ``(BayesFit, g)`` per SNP name.

    ``provider`` builds the scan's kinships (the scan's ``_KinshipProvider``, passed in so
    that this module needs nothing of the scan's). ``g`` is the marker's allele counts
    (missing calls at the mean) in the rows of the fit;
    ``fit_options`` go to :func:`fit_nuts` (``draws``, ``tune``, ``chains``, ``seed``,
    ``hdi_prob``, ``sampler``, ``strategy``, ``target_accept``, ``cores``).

    Examples
    --------
    >>> # refit = posterior_refitter("y", "1", "id", frame, G, snps, None, True, None, ...)
    >>> # [(fit, g)] = refit(["snp12"], draws=500, seed=1)
    """

    def refit(snps: Sequence[str], **fit_options: Any) -> list[tuple[Any, np.ndarray]]:
        source = open_genotypes(genotypes, snp_map, ids)
        try:
            position = {i: k for k, i in enumerate(source.ids)}
            rows = np.array([position[i] for i in frame[group].astype(str)])
            dos = source.dosages(rows)
            sel = _select_snps(dos, maf, block_size)
            chrom = source.snp_map["chr"].to_numpy(dtype=object)
            order = list(dict.fromkeys(chrom[sel.keep]))
            kinships = provider(
                dos, sel, chrom, order, loco, kinship, standardize, block_size, frame[group]
            )
            names = source.snp_map["SNP"].astype(str).tolist()
            where = {name: j for j, name in enumerate(names)}
            out = []
            for snp in snps:
                if str(snp) not in where:
                    raise SpecificationError(f"SNP {snp!r} is not among the scanned markers.")
                j = where[str(snp)]
                single = dataclasses.replace(sel, keep=np.array([j]))
                _, Z, _ = next(_centred_blocks(dos, single, False, 1))
                g = Z[:, 0] + 2.0 * sel.freq[j]
                kin = kinships.kinship(order.index(chrom[j]))
                data = frame.copy()
                data[MARKER_COLUMN] = g
                formula = f"{response} ~ {fixed} + {MARKER_COLUMN} + (1 | {group})"
                with warnings.catch_warnings():
                    if kinship is None:  # the scan's own GRMs: their scale changes no share
                        warnings.simplefilter("ignore", KinshipScaleWarning)
                    spec = specify(formula, data, kinship={group: kin})
                out.append((fit_nuts(spec, **fit_options), g))
            return out
        finally:
            source.close()

    return refit


def fit_nuts(
    spec: ModelSpec,
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 4,
    seed: int | None = None,
    hdi_prob: float = 0.95,
    sampler: str = "auto",
    strategy: str = "auto",
    target_accept: float = 0.9,
    cores: int | None = None,
    progressbar: bool | None = False,
) -> Any:
    """NUTS fit of ``spec`` through the Bayesian engine (what ``LMM(...).fit()`` runs for a
    model with one random term), as a :class:`~bayeslmm.results.bayes_result.BayesFit`.

    Examples
    --------
    >>> # fit = fit_nuts(specify("y ~ x + (1 | id)", data, kinship={"id": K}), seed=1)
    """
    from bayeslmm.engines.bayes.builder import build
    from bayeslmm.engines.bayes.fit import fit_posterior
    from bayeslmm.engines.bayes.strategies import choose

    if seed is None:  # drawn, used and recorded in the fit: the run can be repeated
        seed = int(np.random.default_rng().integers(2**31 - 1))
    return fit_posterior(
        build(spec, strategy=choose(spec, strategy).name),
        draws=draws, tune=tune, chains=chains, cores=cores, seed=seed, sampler=sampler,
        progressbar=progressbar, target_accept=target_accept, hdi_prob=hdi_prob,
    )  # fmt: skip
