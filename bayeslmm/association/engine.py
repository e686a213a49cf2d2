"""The mixed-model association scan, chromosome by chromosome.

For every chromosome c:

1. its kinship: with ``loco=True`` the GRM of the markers on all *other* chromosomes (the
   tested marker and its LD neighbours are not in the kernel, which would absorb their
   effect: proximal contamination), built as (T − C_c) / (D − D_c) from the total
   crossproduct T = Σ Z Zᵀ, the chromosome's own C_c and the divisors; equal to
   :func:`bayeslmm.loco_grms`;
2. its Householder reduction K = Q T Qᵀ (T tridiagonal, K's eigenvalues from T), about half
   the cost of an eigendecomposition;
3. the null model by REML on that kinship, exactly, in the basis Q (the spectral engine's
   optimiser; O(n p) per evaluation: :mod:`bayeslmm.association.tridiagonal`), covariates
   as fixed effects;
4. every marker of the chromosome as a fixed effect with the null's variance components:
   V = σ_g² K + σ_e² I = RᵀR by Cholesky, the markers whitened a block at a time (R⁻ᵀG, one
   BLAS-3 triangular solve), then each costs O(n p) (see
   :mod:`bayeslmm.association.stats`);
5. the markers listed in ``exact`` refitted with their own variance components.

Memory: T, the cached crossproducts, one chromosome's kinship, its Householder reflectors
and Cholesky factor (O(n²) each), and one block of markers (O(n × block_size)); the
genotypes are read block by block, never whole.

When the LOCO kinships have fewer markers than the individuals (more precisely, when
:func:`~bayeslmm.association.low_rank.low_rank_cheaper` says so, or ``low_rank=True``), steps
1–4 run in SNP space instead (:mod:`bayeslmm.association.low_rank`): the centred markers
(n × p) and their Gram matrix (p × p) are formed once, each LOCO kinship is a
:class:`~bayeslmm.kinship.LowRankKinship` of its markers, its thin SVD comes from a
sub-block of that Gram matrix, the null REML fit is the REML engine's low-rank route and the
markers are tested through V⁻¹ = σ_e⁻²(I − U₁ΛU₁ᵀ). Memory O(n p + p²), no n × n matrix.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.linalg import blas

from bayeslmm.association import glmm
from bayeslmm.association import low_rank as snp_space
from bayeslmm.association.driver import scan_chromosomes
from bayeslmm.association.genotypes import GenotypeSource, open_genotypes
from bayeslmm.association.posterior import posterior_refitter
from bayeslmm.association.stats import (
    ExactFit,
    MarkerStats,
    RotatedNull,
    exact_marker,
    ml_profile_minimum,
)
from bayeslmm.association.tridiagonal import (
    ROUTE,
    Tridiagonal,
    TridiagonalReml,
    whiten,
    whiten_factor,
)
from bayeslmm.engines.reml._common import safe_inverse
from bayeslmm.engines.reml.spectral import maximise_rotated
from bayeslmm.errors import DataError, KinshipError, SpecificationError, preview
from bayeslmm.kinship._kinship import Kinship, KinshipScaleWarning
from bayeslmm.kinship.grm import _centred_blocks, _Dosages, _scale, _select_snps, _SnpSelection
from bayeslmm.kinship.loco import _chromosome_label
from bayeslmm.kinship.low_rank import LowRankKinship
from bayeslmm.results.scan_result import SCAN_COLUMNS, ScanResult
from bayeslmm.spec import ModelSpec, RandomTerm, specify, split_formula

TESTS = ("wald", "lrt")
#: Columns of ``ScanResult.exact_fits`` after SNP and chr (the fields of ``ExactFit``).
EXACT_COLUMNS = ("beta", "se", "chi2", "p", "h2", "sigma_g2", "sigma_e2")

#: The first pass keeps the crossproducts of as many leading chromosomes as fit in this many
#: bytes, two to an n × n buffer (8 n² bytes: one in each triangle); the others are
#: recomputed when their chromosome comes, so that memory stays O(n²) whatever the number of
#: chromosomes. 1 GiB holds all ten of the benchmark's n = 5,000 chromosomes.
CROSSPRODUCT_CACHE_BYTES = 1 << 30


def scan(
    formula: str,
    data: pd.DataFrame,
    genotypes: Any,
    snp_map: pd.DataFrame | None = None,
    *,
    ids: Sequence[Any] | None = None,
    loco: bool = True,
    kinship: Kinship | Mapping[Any, Kinship] | None = None,
    exact: Sequence[str] | None = None,
    test: str = "wald",
    maf: float = 0.0,
    standardize: bool = False,
    block_size: int = 1000,
    progressbar: bool | None = None,
    family: str | Any = "gaussian",
    link: str | None = None,
    trials: str | None = None,
    wald_threshold: float = glmm.WALD_THRESHOLD,
    rare_mac: float | None = None,
    low_rank: bool | None = None,
) -> ScanResult:
    """Mixed-model association scan, with leave-one-chromosome-out kinships.

    Gaussian traits: every marker as a fixed effect with the null's variance components
    (Wald or likelihood-ratio test). Binary and count traits (``family=``): the null GLMM by
    Laplace per chromosome, then a score test per marker with saddle-point p-values
    (:mod:`bayeslmm.association.glmm`).

    Parameters
    ----------
    formula : str
        The null model, ``"y ~ covariates + (1 | id)"``: one random term ``(1 | id)`` whose
        column holds the genotype ids (a PLINK IID, a dosage row id). Its kinship is built
        from the genotypes (or taken from ``kinship``); covariates (sex, PCs) are fixed
        effects of every test.
    data : pandas.DataFrame
        One row per individual. Rows with a missing response, and individuals without
        genotypes, are left out (with a warning that counts them).
    genotypes : str, path, pandas.DataFrame, numpy or Dask array, xarray.Dataset
        A PLINK ``.bed/.bim/.fam`` prefix (read in blocks with bed-reader), or dosages
        counting the A1 allele (individuals × markers, NaN missing): a DataFrame indexed by
        id, or an array with ``ids``. A Dask array is computed one block at a time. An sgkit
        dataset (variants × samples: ``call_dosage`` or ``call_genotype``, counting allele
        1) brings its own map and ids (``variant_contig``, ``variant_position``,
        ``sample_id``).
    snp_map : pandas.DataFrame, optional
        For dosages: ``chr`` (or ``chrom``) and ``bp`` per marker; optionally ``snp``
        (matched to the DataFrame's columns, or naming an array's columns), ``a1``, ``a2``.
    ids : sequence, optional
        Row ids of a dosage array.
    loco : bool
        Kinship of each chromosome from the markers on the other chromosomes (default); False
        uses one kinship from all markers (proximal contamination: the tested marker is also
        in the kernel, which deflates its test).
    kinship : Kinship or dict, optional
        Kinships to use instead of GRMs from ``genotypes``: a dict from chromosome to its LOCO
        kinship (``loco=True``, e.g. :func:`bayeslmm.loco_grms`), or one Kinship
        (``loco=False``). Each must cover the analysed individuals.
    exact : sequence of str, optional
        Markers (SNP names) refitted with their own variance components (GEMMA's exact test):
        h² re-estimated by REML with the marker in the model (Wald), or by ML under both
        models (LRT). Every other marker is tested with the null's variance components.
    test : {"wald", "lrt"}
        ``"wald"``: b̂²/SE², variance components at the null (GCTA ``--mlma``). ``"lrt"``:
        likelihood ratio with h² at the null value and the residual scale re-estimated by
        ML (for ``exact`` markers: h² re-estimated under both models, GEMMA ``-lmm 2``).
        ``beta`` and ``se`` are the Wald fit's in both cases. Gaussian traits only (the
        other families are score-tested).
    maf : float
        Markers with a minor allele frequency below ``maf`` are neither tested nor in the
        kinship; monomorphic markers never are.
    standardize : bool
        GRMs of standardised markers (GCTA) instead of VanRaden's; markers are always tested
        as allele counts (``beta`` per A1 allele).
    block_size : int
        Markers read and rotated at once: memory O(n × block_size).
    progressbar : bool, optional
        One step per chromosome; by default only when a person is watching (a terminal or a
        notebook).
    family : str or Family
        ``"gaussian"`` (default), ``"bernoulli"``, ``"binomial"`` or ``"poisson"``, as
        :class:`bayeslmm.LMM` takes it (a name or a :class:`~bayeslmm.families.Family`).
    link : str, optional
        The link, where the family offers several (``"logit"``, ``"probit"``).
    trials : str, optional
        Column holding the number of trials (binomial).
    wald_threshold : float
        Non-Gaussian scans: markers with p below it are refitted once with the marker as a
        fixed effect for ``beta`` and ``se`` (NaN for the others). Default 5e-8.
    rare_mac : float, optional
        Non-Gaussian scans: markers whose minor allele count over the carriers (the ``mac``
        column) is at most this get the exact conditional tail of their carriers' outcomes
        instead of the saddle-point p-value (default 10: the saddle point fails for one or
        two copies, see docs/scan.md). 0 turns the exact tail off; a larger value costs one
        enumeration per such marker (its distinct sums capped at 10⁶, past which the
        saddle point is used).
    low_rank : bool, optional
        Gaussian traits: hold each kinship as its markers (SNP space: a
        :class:`~bayeslmm.kinship.LowRankKinship`, no n × n matrix; null REML by the low-rank
        route, markers tested through V⁻¹ = σ_e⁻²(I − U₁ΛU₁ᵀ)) instead of forming and
        reducing the n × n matrix. ``None`` (default) takes whichever costs fewer flops (SNP
        space roughly when each kinship has fewer than 0.8 n markers with LOCO, 0.7 n with
        one whole-genome kinship); the two routes
        give the same table to rounding. With ``kinship=``, ``None`` follows the kinships'
        type, ``True`` needs low-rank kinships and ``False`` makes them dense. Binary and
        count traits always use the dense kinship.

    Returns
    -------
    ScanResult
        ``.table`` (SNP, chr, bp, A1, A2, freq, n, beta, se, chi2, p, exact; non-Gaussian:
        SNP, chr, bp, A1, A2, freq, n, mac, score, score_se, beta, se, chi2, p, p_normal,
        spa),
        ``.null_models`` (one null fit per chromosome, with its stage seconds; for a
        Gaussian trait ``route`` names how it was computed: REML in the kinship's
        tridiagonal basis with markers whitened by the Cholesky factor of V, or the
        SNP-space route with ``rank``, the kinship's; both exact),
        ``.manhattan()``, ``.qq()``,
        ``.lambda_gc()``, ``.to_tsv(path)``; for a Gaussian trait
        ``.posterior_shares(top=5)`` refits the top markers by NUTS (each hit's share of
        the phenotypic variance, with its HDI).

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> import bayeslmm as bl
    >>> rng = np.random.default_rng(4)
    >>> G = pd.DataFrame(rng.binomial(2, 0.4, size=(50, 60)).astype(float),
    ...                  index=[f"i{k}" for k in range(50)])
    >>> snps = pd.DataFrame({"chr": np.repeat([1, 2, 3], 20), "bp": np.tile(np.arange(20), 3)})
    >>> pheno = pd.DataFrame({"id": G.index, "y": G[5] + rng.normal(size=50)})
    >>> res = bl.scan("y ~ 1 + (1 | id)", pheno, G, snps, progressbar=False)
    >>> res.table.shape[0], res.top(1)["SNP"].item()
    (60, '5')
    """
    t_start = time.perf_counter()
    test = _check_options(test, maf, block_size)
    if low_rank is not None and not isinstance(low_rank, bool | np.bool_):
        raise SpecificationError(
            f"low_rank must be True, False or None (choose by cost); got {low_rank!r}."
        )
    response, fixed, group = _scan_formula(formula)
    source = open_genotypes(genotypes, snp_map, ids)
    try:
        notes: list[str] = []
        frame, rows = _align(data, response, group, source, notes)
        # the covariates, validated before any heavy work (the kinship comes per chromosome)
        spec = specify(f"{response} ~ {fixed}", frame, family=family, link=link, trials=trials)
        gaussian = spec.family.is_gaussian
        if gaussian:
            if rare_mac is not None:
                raise SpecificationError(
                    "rare_mac sets the exact rare-marker test of binary and count traits' score "
                    "tests; a Gaussian trait's markers are tested by GLS (exact at any "
                    "frequency). Drop rare_mac, or give family=."
                )
        else:
            rare_mac = _check_glmm_options(test, exact, wald_threshold, rare_mac)
            if low_rank:
                raise SpecificationError(
                    "low_rank=True is for Gaussian traits; a binary or count trait's null "
                    "GLMM and score tests use the dense kinship (n × n Cholesky factors). "
                    "Leave low_rank at None."
                )
            low_rank = False
        dos = source.dosages(rows)
        t0 = time.perf_counter()
        sel = _select_snps(dos, maf, block_size)
        timing = {"select_s": time.perf_counter() - t0}
        _note_dropped(sel, maf, notes)
        chrom = source.snp_map["chr"].to_numpy(dtype=object)
        order = list(dict.fromkeys(chrom[sel.keep]))
        exact_pos = _exact_positions(exact, source.snp_map, sel)
        provider = functools.partial(_KinshipProvider, low_rank=low_rank)
        kinships = provider(
            dos, sel, chrom, order, loco, kinship, standardize, block_size, frame[group]
        )
        if gaussian:
            tests = _GaussianTests(
                formula, spec, frame, group, dos, sel, chrom.size, exact_pos, test
            )
            stats = _run(tests, dos, sel, order, kinships, block_size, progressbar, notes)
        else:
            stats = glmm.run(
                spec, dos, sel, chrom, order, kinships, wald_threshold, block_size,
                _show_progress(progressbar), notes, rare_mac=rare_mac,
            )  # fmt: skip
            _say_once(stats.pop("_caught"), len(order), built=kinships.given is None)
            test = "score"
        timing.update(kinships.timing)
        timing.update(stats.pop("_timing"))
    finally:
        source.close()
    if gaussian:
        table = _table(source.snp_map, sel, stats["arrays"], exact_pos)
    else:
        table = glmm.table(source.snp_map, sel, stats["arrays"])
        stats["exact_rows"] = []
    exact_fits = pd.DataFrame(stats["exact_rows"], columns=["j", "chr", *EXACT_COLUMNS])
    exact_fits.insert(0, "SNP", source.snp_map["SNP"].to_numpy()[exact_fits.pop("j").to_numpy(int)])
    timing["total_s"] = time.perf_counter() - t_start
    if notes:
        warnings.warn("; ".join(notes), UserWarning, stacklevel=2)
    return ScanResult(
        table=table,
        null_models=pd.DataFrame(stats["null_rows"]),
        formula=formula,
        test=test,
        loco=bool(loco),
        n_obs=int(frame.shape[0]),
        exact_fits=exact_fits,
        timing=timing,
        notes=notes,
        posterior_refit=posterior_refitter(
            response, fixed, group, frame, genotypes, snp_map, ids, loco, kinship,
            standardize, maf, block_size, provider,
        ) if gaussian else None,
    )  # fmt: skip


# -- checks ----------------------------------------------------------------------------------
def _check_options(test: str, maf: float, block_size: int) -> str:
    if not isinstance(test, str) or test.lower() not in TESTS:
        raise SpecificationError(f"test must be one of {TESTS}; got {test!r}.")
    if not isinstance(maf, int | float) or not 0.0 <= maf < 0.5:
        raise DataError(f"maf must lie in [0, 0.5); got {maf!r}.")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise DataError(f"block_size must be a whole number >= 1; got {block_size!r}.")
    return test.lower()


def _check_glmm_options(
    test: str, exact: Sequence[str] | None, wald_threshold: float, rare_mac: float | None
) -> float:
    """What a non-Gaussian scan does not take (the Gaussian tests and exact refits), and its
    own options; returns the rare-marker threshold."""
    if test != "wald":
        raise SpecificationError(
            f"test={test!r} is for Gaussian traits; a binary or count trait is scanned with "
            "score tests (saddle-point p-values). Leave test at its default."
        )
    if exact:
        raise SpecificationError(
            "exact= refits markers of a Gaussian scan with their own variance components; a "
            "binary or count trait's markers below wald_threshold are refitted instead (the "
            "beta and se columns)."
        )
    if (
        isinstance(wald_threshold, bool)
        or not isinstance(wald_threshold, int | float)
        or not 0.0 <= wald_threshold <= 1.0
    ):
        raise SpecificationError(
            f"wald_threshold must be a p-value in [0, 1] (0: no refit); got {wald_threshold!r}."
        )
    if rare_mac is None:
        return float(glmm.RARE_MAC)
    if (
        isinstance(rare_mac, bool)
        or not isinstance(rare_mac, int | float | np.integer | np.floating)
        or not 0.0 <= float(rare_mac) < math.inf
    ):
        raise SpecificationError(
            f"rare_mac must be a minor allele count >= 0 (0: no exact rare-marker test; "
            f"default {glmm.RARE_MAC}); got {rare_mac!r}."
        )
    return float(rare_mac)


def _scan_formula(formula: str) -> tuple[str, str, str]:
    """The response, the fixed part and the id column of ``y ~ covariates + (1 | id)``."""
    if not isinstance(formula, str):
        raise SpecificationError(f"formula must be a string; got {type(formula).__name__}.")
    response, fixed, blocks = split_formula(formula)
    if len(blocks) != 1 or blocks[0].lhs.strip() != "1" or ":" in blocks[0].group:
        found = [f"({b.lhs} | {b.group})" for b in blocks] or "none"
        raise SpecificationError(
            f"The scan's formula takes exactly one random term (1 | id), the column of "
            f"genotype ids, e.g. 'y ~ sex + (1 | id)'; {formula!r} has {found}. The kinship is "
            "built from the genotypes (or given with kinship=)."
        )
    return response.strip(), fixed, blocks[0].group.strip()


def _align(
    data: pd.DataFrame, response: str, group: str, source: GenotypeSource, notes: list[str]
) -> tuple[pd.DataFrame, np.ndarray]:
    """Phenotyped and genotyped individuals, one row each: the data rows and genotype rows."""
    if not isinstance(data, pd.DataFrame):
        raise DataError(f"data must be a pandas DataFrame; got {type(data).__name__}.")
    for column in (response, group):
        if column not in data.columns:
            raise SpecificationError(
                f"'{column}' is not a column of the data; available columns: "
                f"{preview(data.columns, 12)}."
            )
    frame = data.reset_index(drop=True)
    ids = frame[group].astype(str)
    # only empty cells are missing: a stray word stays, for specify to name it
    missing_y = frame[response].isna().to_numpy()
    if missing_y.any():
        notes.append(
            f"{int(missing_y.sum())} individuals without a value of '{response}' are left out "
            f"(e.g. {preview(ids[missing_y].tolist(), 3)})"
        )
    position = {i: k for k, i in enumerate(source.ids)}
    genotyped = ids.map(position).notna().to_numpy()
    lost = ~genotyped & ~missing_y
    if lost.any():
        notes.append(
            f"{int(lost.sum())} phenotyped individuals have no genotypes and are left out "
            f"(e.g. {preview(ids[lost].tolist(), 3)}; ids are matched as text)"
        )
    keep = genotyped & ~missing_y
    if keep.sum() < 3:
        raise DataError(
            f"Only {int(keep.sum())} individuals have both a value of '{response}' and "
            f"genotypes; check that the '{group}' column holds the genotype ids (e.g. "
            f"{preview(source.ids[:3])})."
        )
    frame = frame.loc[keep].reset_index(drop=True)
    frame[group] = frame[group].astype(str)
    dupes = frame[group][frame[group].duplicated()].unique().tolist()
    if dupes:
        raise DataError(
            f"Individuals {preview(dupes)} have more than one row; the scan takes one record "
            "per individual (average repeated measurements first)."
        )
    return frame, np.array([position[i] for i in frame[group]], dtype=int)


def _note_dropped(sel: _SnpSelection, maf: float, notes: list[str]) -> None:
    parts = []
    if sel.n_monomorphic:
        parts.append(f"{sel.n_monomorphic} monomorphic")
    if sel.n_constant:
        parts.append(f"{sel.n_constant} with one genotype in everyone called")
    if sel.n_all_missing:
        parts.append(f"{sel.n_all_missing} with no called genotype")
    if sel.n_low_maf:
        parts.append(f"{sel.n_low_maf} with minor allele frequency below {maf:g}")
    if sel.keep.size == 0:
        raise DataError(
            "No marker can be tested among the analysed individuals: "
            + ", ".join(parts)
            + ". Lower maf or check the genotype coding."
        )
    if parts:
        notes.append(
            "markers neither tested nor in the kinship: " + ", ".join(parts) + " (not in the table)"
        )


def _exact_positions(
    exact: Sequence[str] | None, snp_map: pd.DataFrame, sel: _SnpSelection
) -> np.ndarray:
    if exact is None:
        return np.zeros(0, dtype=int)
    if isinstance(exact, str):
        exact = [exact]
    names = [str(e) for e in exact]
    where = {s: k for k, s in enumerate(snp_map["SNP"])}
    unknown = [e for e in names if e not in where]
    if unknown:
        raise DataError(
            f"The markers to refit exactly (exact=, --exact) include names that are not in the "
            f"genotypes: {preview(unknown)}; use the SNP names of the map (the .bim's second "
            "column, or the dosage columns)."
        )
    kept = np.zeros(snp_map.shape[0], dtype=bool)
    kept[sel.keep] = True
    untested = [e for e in names if not kept[where[e]]]
    if untested:
        raise DataError(
            f"The markers to refit exactly (exact=, --exact) include markers that are not "
            f"tested (monomorphic, no calls or below maf): {preview(untested)}."
        )
    return np.unique([where[e] for e in names])


# -- kinships --------------------------------------------------------------------------------
class _KinshipProvider:
    """The kinship of each chromosome: LOCO or whole-genome, built or given; dense (n × n)
    or, with ``low_rank``, held as its markers (:class:`LowRankKinship`).

    ``low_rank=None`` builds whichever costs less
    (:func:`~bayeslmm.association.low_rank.low_rank_cheaper`); for given kinships it keeps
    their type, True requires low-rank ones and False makes them dense.
    """

    def __init__(
        self,
        dos: _Dosages,
        sel: _SnpSelection,
        chrom: np.ndarray,
        order: list[str],
        loco: bool,
        given: Kinship | Mapping[Any, Kinship] | None,
        standardize: bool,
        block_size: int,
        ids: pd.Series,
        low_rank: bool | None = False,
    ) -> None:
        self.dos, self.sel, self.order = dos, sel, order
        self.loco, self.given = bool(loco), given
        self.standardize, self.block_size = standardize, block_size
        self.ids = [str(i) for i in ids]
        self.codes = np.array([order.index(c) for c in chrom[sel.keep]]) if order else None
        self.timing = {"grm_s": 0.0}
        self._whole: Kinship | None = None
        self._cache: dict[int, tuple[np.ndarray, bool, np.ndarray]] = {}
        self._markers: np.ndarray | None = None  # SNP space: centred markers, n × p
        self._gram: np.ndarray | None = None  # and their Gram matrix, p × p
        self.low_rank = low_rank
        self._check_given()
        if given is None:
            if low_rank is None:
                counts = np.bincount(self.codes, minlength=len(order)) if order else []
                low_rank = snp_space.low_rank_cheaper(dos.n, counts, self.loco)
            self.low_rank = bool(low_rank)
            if self.low_rank:
                self._first_pass_low_rank()
            else:
                self._first_pass()

    def subset(self, c: int) -> _SnpSelection:
        """The tested markers of chromosome ``c`` (index into ``order``)."""
        return dataclasses.replace(self.sel, keep=self.sel.keep[self.codes == c])

    def _check_given(self) -> None:
        given = self.given
        if given is None:
            if self.loco and len(self.order) < 2:
                raise DataError(
                    f"LOCO needs markers on at least two chromosomes; all tested markers are on "
                    f"{self.order!r}. Use loco=False."
                )
            return
        if self.loco:
            if not isinstance(given, Mapping):
                raise SpecificationError(
                    "With loco=True, kinship= takes one kinship per chromosome (a dict, e.g. "
                    "bayeslmm.loco_grms(...)); one Kinship for all chromosomes is loco=False."
                )
            keys = {_chromosome_label(k): v for k, v in given.items()}
            missing = [c for c in self.order if c not in keys]
            if missing:
                raise SpecificationError(
                    f"kinship= has no kinship for chromosomes {preview(missing)}; it needs one "
                    f"per tested chromosome ({preview(self.order)})."
                )
            self.given = keys
            kinds = [keys[c] for c in self.order]
        elif not isinstance(given, Kinship):
            raise SpecificationError(
                "With loco=False, kinship= takes one bayeslmm.Kinship; a dict of kinships per "
                "chromosome is loco=True."
            )
        else:
            kinds = [given]
        if self.low_rank:
            dense = [
                getattr(k, "name", type(k).__name__)
                for k in kinds
                if not isinstance(k, LowRankKinship)
            ]
            if dense:
                raise SpecificationError(
                    f"low_rank=True needs kinships held as their markers; kinship= gives dense "
                    f"ones ({preview(dense)}). Build them with bayeslmm.grm(..., "
                    "low_rank=True), or leave low_rank at None to use them as they are."
                )

    def _crossproduct(self, c: int, C: np.ndarray | None = None, lower: bool = False) -> np.ndarray:
        """Z_c Z_cᵀ over chromosome ``c``'s markers, accumulated block by block in place into
        one triangle (with the diagonal) of ``C``; without ``C``, a new symmetric matrix."""
        whole = C is None
        if C is None:
            C = np.zeros((self.dos.n, self.dos.n), order="F")
        for _, Z, _ in _centred_blocks(self.dos, self.subset(c), self.standardize, self.block_size):
            # BLAS syrk adds Z Zᵀ into one triangle of C: no n × n temporary per block and
            # half the flops of a general product; the other triangle is not touched
            C = blas.dsyrk(
                1.0, np.asfortranarray(Z), beta=1.0, c=C, lower=int(lower), overwrite_c=1
            )
        return _symmetrise_upper(C) if whole else C

    def _divisor(self, c: int | None) -> float:
        sub = self.sel if c is None else self.subset(c)
        return _scale(sub, self.standardize)[1] if sub.keep.size else 0.0

    def _first_pass(self) -> None:
        """T = Σ_c C_c, chromosome by chromosome (the order of :func:`loco_grms`).

        The leading chromosomes' C_c are kept for their LOCO kinships, two to an n × n
        buffer (one in each triangle, the diagonals aside), as many as fit in
        :data:`CROSSPRODUCT_CACHE_BYTES`; the others are recomputed when their turn comes.
        """
        t0 = time.perf_counter()
        n = self.dos.n
        buffers = CROSSPRODUCT_CACHE_BYTES // max(n * n * 8, 1) if self.loco else 0
        n_cached = min(2 * buffers, len(self.order))
        total = np.zeros((n, n), order="F")
        buf = None
        for c in range(len(self.order)):
            if c < n_cached:  # used first, freed first
                lower = c % 2 == 1
                if not lower:
                    buf = np.zeros((n, n), order="F")
                else:  # the upper triangle holds chromosome c − 1, its diagonal kept aside
                    buf[np.diag_indices(n)] = 0.0
                buf = self._crossproduct(c, buf, lower)
                diagonal = np.diag(buf).copy()
                self._cache[c] = (buf, lower, diagonal)
                _add_triangle(total, buf, lower, diagonal)
            else:
                total += self._crossproduct(c)
        buf = None
        self.total = total
        self.total_divisor = float(sum(self._divisor(c) for c in range(len(self.order))))
        self.timing["grm_s"] += time.perf_counter() - t0

    def _first_pass_low_rank(self) -> None:
        """The centred (and, with ``standardize``, scaled) markers Z, n × p, and their Gram
        matrix ZᵀZ: every kinship is W = Z_S / √D_S over a set of chromosomes S, and its
        Gram matrix the matching sub-block of ZᵀZ / D_S."""
        t0 = time.perf_counter()
        Z = np.empty((self.dos.n, self.sel.keep.size))
        for pos, block, _ in _centred_blocks(self.dos, self.sel, self.standardize, self.block_size):
            Z[:, pos] = block
        self._markers = Z
        self._gram = Z.T @ Z  # BLAS syrk: n p² flops, once for every chromosome
        self.total_divisor = float(sum(self._divisor(c) for c in range(len(self.order))))
        self.timing["grm_s"] += time.perf_counter() - t0

    def _low_rank_kinship(self, c: int | None) -> LowRankKinship:
        """The kinship of every chromosome but ``c`` (None: of all), held as its markers."""
        t0 = time.perf_counter()
        if c is None:  # the only kinship: Z and ZᵀZ are scaled in place and handed over
            W, gram, divisor, name = self._markers, self._gram, self.total_divisor, "GRM"
        else:  # copies (n × p_c and p_c²), scaled in place
            label = self.order[c]
            divisor = self.total_divisor - self._divisor(c)
            if divisor <= 0:
                raise KinshipError(
                    f"Leaving out chromosome {label!r} leaves no marker for its LOCO kinship; "
                    "every tested marker is on it. Check the chromosome labels or use loco=False."
                )
            columns, name = np.flatnonzero(self.codes != c), f"GRM-loco{label}"
            W, gram = self._markers[:, columns], self._gram[np.ix_(columns, columns)]
        W /= math.sqrt(divisor)
        gram /= divisor
        kin = LowRankKinship(W, ids=self.ids, name=name, copy=False, gram=gram)
        self.timing["grm_s"] += time.perf_counter() - t0
        return kin

    def kinship(self, c: int) -> Kinship:
        """The kinship of chromosome ``c``, rows in the data's order."""
        label = self.order[c]
        if self.given is not None:
            if self.loco:
                return self._as_route(_subset(self.given[label], self.ids, label))
            if self._whole is None:
                self._whole = self._as_route(_subset(self.given, self.ids, "all"))
            return self._whole
        if self.low_rank:
            if not self.loco:
                if self._whole is None:
                    self._whole = self._low_rank_kinship(None)
                    self._markers = self._gram = None  # the kinship holds what it needs
                return self._whole
            return self._low_rank_kinship(c)
        if not self.loco:
            if self._whole is None:
                t0 = time.perf_counter()
                K = self.total / self.total_divisor
                self._whole = Kinship(K, ids=self.ids, name="GRM", check_psd=False)
                self.total = None  # the Kinship holds its own copy
                self.timing["grm_s"] += time.perf_counter() - t0
            return self._whole
        t0 = time.perf_counter()
        rest = self.total_divisor - self._divisor(c)
        if rest <= 0:
            raise KinshipError(
                f"Leaving out chromosome {label!r} leaves no marker for its LOCO kinship; every "
                "tested marker is on it. Check the chromosome labels or use loco=False."
            )
        if c in self._cache:
            buf, lower, diagonal = self._cache.pop(c)
            K = self.total.copy(order="F")
            _add_triangle(K, buf, lower, diagonal, sign=-1.0)
            del buf  # freed with its pair's second chromosome
        else:
            K = self._crossproduct(c)
            K *= -1.0  # in place: (T − C_c) / (D − D_c) without another n × n buffer
            K += self.total
        K /= rest
        kin = Kinship(K, ids=self.ids, name=f"GRM-loco{label}", check_psd=False)
        del K
        self.timing["grm_s"] += time.perf_counter() - t0
        return kin

    def _as_route(self, K: Kinship) -> Kinship:
        """A given kinship as the route needs it: dense when ``low_rank`` is False."""
        if self.low_rank is False and isinstance(K, LowRankKinship):
            return K.to_dense()
        return K


def _symmetrise_upper(C: np.ndarray, block: int = 512) -> np.ndarray:
    """Copy the upper triangle of ``C`` onto its lower one, in place, a column block at a time.

    Examples
    --------
    >>> _symmetrise_upper(np.triu(np.arange(9.0).reshape(3, 3))).tolist()
    [[0.0, 1.0, 2.0], [1.0, 4.0, 5.0], [2.0, 5.0, 8.0]]
    """
    n = C.shape[0]
    for start in range(0, n, block):
        stop = min(start + block, n)
        C[stop:, start:stop] = C[start:stop, stop:].T
        square = C[start:stop, start:stop]
        square[:] = np.triu(square) + np.triu(square, 1).T
    return C


def _add_triangle(
    out: np.ndarray,
    C: np.ndarray,
    lower: bool,
    diagonal: np.ndarray,
    sign: float = 1.0,
    block: int = 512,
) -> np.ndarray:
    """out += sign · S, S the symmetric matrix held in one triangle of ``C`` (upper, or lower
    with ``lower``) with its diagonal given apart; a column block at a time.

    Examples
    --------
    >>> S = np.array([[1.0, 2.0], [2.0, 5.0]])
    >>> C = np.array([[9.0, 2.0], [7.0, 9.0]])  # S above the diagonal, something else below
    >>> _add_triangle(np.zeros((2, 2)), C, False, np.diag(S), block=1).tolist()
    [[1.0, 2.0], [2.0, 5.0]]
    >>> _add_triangle(np.zeros((2, 2)), C.T, True, np.diag(S), block=1).tolist()
    [[1.0, 2.0], [2.0, 5.0]]
    """
    n = C.shape[0]
    for start in range(0, n, block):
        stop = min(start + block, n)
        if lower:
            above, square, below = (
                C[start:stop, :start].T,
                C[start:stop, start:stop],
                C[stop:, start:stop],
            )
            square = np.tril(square, -1) + np.tril(square, -1).T
        else:
            above, square, below = (
                C[:start, start:stop],
                C[start:stop, start:stop],
                C[start:stop, stop:].T,
            )
            square = np.triu(square, 1) + np.triu(square, 1).T
        square[np.diag_indices(stop - start)] = diagonal[start:stop]
        out[:start, start:stop] += sign * above
        out[start:stop, start:stop] += sign * square
        out[stop:, start:stop] += sign * below
    return out


def _subset(K: Kinship, ids: list[str], label: str) -> Kinship:
    if not isinstance(K, Kinship):
        raise SpecificationError(
            f"kinship for chromosome {label!r} must be a bayeslmm.Kinship; got {type(K).__name__}."
        )
    return K.subset(ids)


# -- the scan --------------------------------------------------------------------------------
def _ones_in_span(X: np.ndarray) -> bool:
    """Whether the covariates contain a constant (an intercept, or a full set of dummies)."""
    ones = np.ones(X.shape[0])
    coef = np.linalg.lstsq(X, ones, rcond=None)[0]
    return bool(np.linalg.norm(ones - X @ coef) <= 1e-8 * np.sqrt(X.shape[0]))


def _show_progress(progressbar: bool | None) -> bool:
    """A progress bar only when a person is watching (a terminal or a notebook)."""
    if progressbar is not None:
        return bool(progressbar)
    if "ipykernel" in sys.modules or hasattr(sys, "ps1"):
        return True
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):
        return False


@dataclasses.dataclass
class _Null:
    """One kinship's null REML fit (in its tridiagonal basis) and the whitened null model."""

    R: np.ndarray  # V = σ_g² K + σ_e² I = RᵀR at the null's estimate
    model: RotatedNull  # whitened: R⁻ᵀy, R⁻ᵀX, unit weights
    one: np.ndarray | None  # R⁻ᵀ1 when the covariates hold no constant
    summary: dict[str, Any]
    scale: float  # c = mean diag K − mean K: h² at the sample's kinship scale (as fits report)
    # for exact refits: K's tridiagonal basis and the data in it (None when none are asked)
    tri: Tridiagonal | None = None
    Qy: np.ndarray | None = None
    QX: np.ndarray | None = None
    ml: float | None = None  # −2ℓ_ML of the null, for exact likelihood-ratio tests

    def exact_factory(self):
        tri = self.tri
        return lambda Uy, UX, criterion: TridiagonalReml(tri, Uy, UX, criterion=criterion)

    def marker_stats(self, Z: np.ndarray, two_freq: np.ndarray, test: str) -> MarkerStats:
        """Tests of a block of centred markers (``two_freq``: their means, 2 × frequency)."""
        G = whiten(self.R, Z)  # R⁻ᵀZ: one triangular solve (BLAS-3) per block
        if self.one is not None:  # no constant: test the dosage, not its deviation
            G += np.outer(self.one, two_freq)
        return self.model.marker_stats(G, test)

    def refit_marker(self, x: np.ndarray, test: str) -> ExactFit:
        """The marker ``x`` (centred when the covariates hold a constant) refitted exactly."""
        g = self.tri.rotate(x)
        factory = self.exact_factory()
        if test == "lrt" and self.ml is None:
            self.ml = ml_profile_minimum(factory, self.Qy, self.QX)
        return exact_marker(factory, self.Qy, self.QX, g, test=test, null_ml=self.ml)


@dataclasses.dataclass
class _LowRankNull:
    """One low-rank kinship's null REML fit and its marker tests (SNP space)."""

    model: snp_space.LowRankNull
    y: np.ndarray
    centred: bool  # the covariates hold a constant: centred markers test the same
    summary: dict[str, Any]
    scale: float

    def marker_stats(self, Z: np.ndarray, two_freq: np.ndarray, test: str) -> MarkerStats:
        G = Z if self.centred else Z + two_freq  # no constant: test the dosage itself
        return self.model.marker_stats(G, test)

    def refit_marker(self, x: np.ndarray, test: str) -> ExactFit:
        return self.model.refit_marker(self.y, x, test)


def _low_rank_null_model(
    K: LowRankKinship,
    formula: str,
    spec: ModelSpec,
    frame: pd.DataFrame,
    group: str,
    centred: bool,
    times: dict,
) -> _LowRankNull:
    """The null model of a kinship held as its markers: its thin SVD (from the Gram matrix),
    REML by the low-rank rotation, then V⁻¹ through U₁ for the markers; no n × n matrix."""
    term = _kinship_term(formula, frame, group, K)
    y, X = np.asarray(spec.y, dtype=float), np.asarray(spec.X, dtype=float)
    t0 = time.perf_counter()
    rank = K.rank  # the thin SVD
    times["reduce_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    theta, state, rotation = snp_space.fit_null(K, y, X)
    scale = term.kinship_scale()  # through diagonal() and dot(): no n × n matrix
    times["null_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    # the null fit's rotation of [X, y] holds U₁ᵀ[X, y]: the markers' tests reuse it
    model = snp_space.LowRankNull(K, y, X, float(theta[0]), float(theta[1]), rotation=rotation)
    times["whiten_s"] = time.perf_counter() - t0
    return _LowRankNull(
        model=model,
        y=y,
        centred=centred,
        scale=scale,
        summary=_null_summary(theta, state, scale, snp_space.LOW_RANK_ROUTE, rank=int(rank)),
    )


def _null_model(
    K: Kinship,
    formula: str,
    spec: ModelSpec,
    frame: pd.DataFrame,
    group: str,
    centred: bool,
    times: dict,
    keep_basis: bool,
) -> _Null:
    """The null model of one kinship, exactly, without its eigendecomposition.

    REML in K's tridiagonal basis (:mod:`bayeslmm.association.tridiagonal`: one Householder
    reduction, then O(n p) per likelihood evaluation, the spectral engine's optimiser), then
    the Cholesky factor of V at the estimate, which whitens the markers.
    """
    term = _kinship_term(formula, frame, group, K)
    y, X = np.asarray(spec.y, dtype=float), np.asarray(spec.X, dtype=float)
    t0 = time.perf_counter()
    tri = Tridiagonal(K.matrix)
    rotated = tri.rotate(np.column_stack([y, X]))
    Qy, QX = rotated[:, 0], rotated[:, 1:]
    times["reduce_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, theta, state, _ = maximise_rotated(TridiagonalReml(tri, Qy, QX))
    scale = term.kinship_scale()
    times["null_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    R = whiten_factor(K.matrix, float(theta[0]), float(theta[1]))
    white = whiten(R, np.column_stack([y, X] if centred else [y, X, np.ones(y.size)]))
    times["whiten_s"] = time.perf_counter() - t0
    p = X.shape[1]
    return _Null(
        R=R,
        model=RotatedNull(np.zeros(y.size), white[:, 0], white[:, 1 : 1 + p], 0.0, 1.0),
        one=None if centred else white[:, -1],
        scale=scale,
        summary=_null_summary(theta, state, scale, ROUTE),
        tri=tri if keep_basis else None,
        Qy=Qy if keep_basis else None,
        QX=QX if keep_basis else None,
    )


def _kinship_term(formula: str, frame: pd.DataFrame, group: str, K: Kinship) -> RandomTerm:
    """The kinship's term of ``formula`` with ``K``: specifying it runs the kinship's checks
    and scale note as a fit of this formula gives them, and its
    :meth:`~bayeslmm.spec.RandomTerm.kinship_scale` is the sample's scale c of the h² the
    null summaries report (as fits report it)."""
    return specify(formula, frame, kinship={group: K}).kinship_terms[0]


def _null_summary(
    theta: np.ndarray, state: dict[str, Any], scale: float, route: str, **extra: Any
) -> dict[str, Any]:
    """One null model's row of ``ScanResult.null_models``: h² at the kinship scale ``scale``
    with its delta-method SE, the variance components, the REML log-likelihood, whether a
    variance is on the boundary, the route, then ``extra``."""
    h2, h2_se = _heritability(theta, safe_inverse(state["ai"]), scale)
    return {
        "h2": h2,
        "h2_se": h2_se,
        "sigma_g2": float(theta[0]),
        "sigma_e2": float(theta[1]),
        "loglik_reml": float(state["loglik_reml"]),
        # as the REML engine's: a variance at ≤ 1e-8 of their sum
        "boundary": bool(np.any(theta <= 1e-8 * max(float(theta.sum()), 1e-300))),
        "route": route,
        **extra,
    }


def _heritability(theta: np.ndarray, cov: np.ndarray, scale: float) -> tuple[float, float]:
    """h² = c σ_g² / (c σ_g² + σ_e²) at the sample's kinship scale c, and its delta-method SE.

    Examples
    --------
    >>> h2, se = _heritability(np.array([1.0, 1.0]), np.eye(2) * 0.01, 1.0)
    >>> h2, round(se, 6)
    (0.5, 0.035355)
    """
    genetic, residual = scale * float(theta[0]), float(theta[1])
    total = genetic + residual
    if not total > 0:
        return math.nan, math.nan
    jac = np.array([scale * residual, -genetic]) / total**2
    var = float(jac @ cov @ jac)
    return genetic / total, math.sqrt(var) if var >= 0 else math.nan


class _GaussianTests:
    """The Gaussian scan's null model, marker tests and exact refits per chromosome (for
    :func:`~bayeslmm.association.driver.scan_chromosomes`)."""

    stages = ("reduce_s", "null_s", "whiten_s", "markers_s", "exact_s")
    refit_stage = "exact_s"

    def __init__(
        self,
        formula: str,
        spec: ModelSpec,
        frame: pd.DataFrame,
        group: str,
        dos: _Dosages,
        sel: _SnpSelection,
        n_markers: int,
        exact_pos: np.ndarray,
        test: str,
    ) -> None:
        self.formula, self.spec, self.frame, self.group = formula, spec, frame, group
        self.dos, self.sel, self.exact_pos, self.test = dos, sel, exact_pos, test
        self.centred = _ones_in_span(np.asarray(spec.X, dtype=float))
        self.arrays = {k: np.full(n_markers, np.nan) for k in ("beta", "se", "chi2", "p")}
        self.exact_rows: list[dict[str, Any]] = []
        self.boundary: list[str] = []
        self.null: _Null | _LowRankNull | None = None

    def release(self) -> None:
        self.null = None

    def fit_null(self, K: Kinship, label: str, times: dict[str, float]) -> dict[str, Any]:
        if isinstance(K, LowRankKinship):
            self.null = _low_rank_null_model(
                K, self.formula, self.spec, self.frame, self.group, self.centred, times
            )
        else:
            self.null = _null_model(
                K, self.formula, self.spec, self.frame, self.group, self.centred, times,
                keep_basis=self.exact_pos.size > 0,
            )  # fmt: skip
        if self.null.summary["boundary"]:
            self.boundary.append(f"{label} (h² = {self.null.summary['h2']:.3g})")
        return self.null.summary

    def test_block(self, cols: np.ndarray, Z: np.ndarray) -> None:
        out = self.null.marker_stats(Z, 2.0 * self.sel.freq[cols], self.test)
        for name, values in self.arrays.items():
            values[cols] = getattr(out, name)

    def refit(self, label: str, sub: _SnpSelection) -> dict[str, Any]:
        null, sel = self.null, self.sel
        for j in self.exact_pos[np.isin(self.exact_pos, sub.keep)]:
            single = dataclasses.replace(sel, keep=np.array([j]))
            _, Z, _ = next(_centred_blocks(self.dos, single, False, 1))
            # centring is the intercept's business
            x = Z[:, 0] if self.centred else Z[:, 0] + 2.0 * sel.freq[j]
            fit = null.refit_marker(x, self.test)
            for name, values in self.arrays.items():
                values[j] = getattr(fit, name)
            genetic = null.scale * fit.sigma_g2
            fit = dataclasses.replace(fit, h2=genetic / (genetic + fit.sigma_e2))
            self.exact_rows.append({"j": int(j), "chr": label, **dataclasses.asdict(fit)})
        return {}


def _run(
    tests: _GaussianTests,
    dos: _Dosages,
    sel: _SnpSelection,
    order: list[str],
    kinships: _KinshipProvider,
    block_size: int,
    progressbar: bool | None,
    notes: list[str],
) -> dict[str, Any]:
    """Every chromosome's null model and tests, and the notes they leave."""
    null_rows, timing, caught = scan_chromosomes(
        order, kinships, dos, block_size, _show_progress(progressbar), tests
    )
    arrays, exact_rows, boundary = tests.arrays, tests.exact_rows, tests.boundary
    _say_once(caught, len(order), built=kinships.given is None)
    if boundary:
        notes.append(
            "the null model's h² is estimated on the boundary for chromosomes "
            + ", ".join(boundary)
            + " (at h² = 0 the tests there are those of a linear regression)"
        )
    untestable = int(np.isnan(arrays["p"][sel.keep]).sum())
    if untestable:
        notes.append(
            f"{untestable} markers are collinear with the covariates and have no test (NaN)"
        )
    return {"arrays": arrays, "null_rows": null_rows, "exact_rows": exact_rows, "_timing": timing}


def _say_once(caught: list[warnings.WarningMessage], n_kinships: int, built: bool) -> None:
    """Warn once per message, and once in all for the kinship-scale note that every
    chromosome's kinship would repeat (it differs only in the kinship's name and number).
    That note is dropped for the GRMs the scan builds: their scale changes no test, h² is
    reported at the sample's own scale, and its remedy (normalising K) is not the user's."""
    seen: set = set()
    for w in caught:
        scale = issubclass(w.category, KinshipScaleWarning)
        if scale and built:
            continue
        key = w.category if scale else (w.category, str(w.message))
        if key in seen:
            continue
        seen.add(key)
        text = str(w.message)
        if scale and n_kinships > 1:
            text += " (the other chromosomes' kinships are at a similar scale)"
        warnings.warn(text, w.category, stacklevel=4)  # the caller of scan()


def _table(
    snp_map: pd.DataFrame, sel: _SnpSelection, arrays: dict[str, np.ndarray], exact: np.ndarray
) -> pd.DataFrame:
    keep = sel.keep
    part = snp_map.iloc[keep].reset_index(drop=True)
    flags = np.zeros(snp_map.shape[0], dtype=bool)
    flags[exact] = True
    table = pd.DataFrame(
        {
            "SNP": part["SNP"],
            "chr": part["chr"],
            "bp": part["bp"],
            **{a: part[a] for a in ("A1", "A2") if a in part.columns},
            "freq": sel.freq[keep],
            "n": sel.called[keep].astype(np.int64),
            **{name: arrays[name][keep] for name in ("beta", "se", "chi2", "p")},
            "exact": flags[keep],
        }
    )
    return table[[c for c in SCAN_COLUMNS if c in table.columns]]
