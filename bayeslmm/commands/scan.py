"""``bayeslmm scan``: a mixed-model association scan, one marker at a time, LOCO by default.

Example::

    bayeslmm scan --bfile geno --pheno pheno.csv --formula "bp ~ sex + (1|id)" --out gwas/

writes ``gwas/scan.tsv`` (one row per marker: SNP, chr, bp, A1, A2, freq, n, beta, se, chi2,
p, exact), ``gwas/scan_null.tsv`` (the null model of each chromosome), ``gwas/manhattan.png``
and ``gwas/qq.png``, all or nothing. ``--family bernoulli`` (or binomial, poisson) scans a
binary or count trait with score tests and saddle-point p-values (columns mac, score,
score_se, beta, se, chi2, p, p_normal, spa instead of beta ... exact). ``--posterior-top K``
(Gaussian traits) refits the K best markers by NUTS and writes ``gwas/posterior_shares.tsv``
(each marker's share of the phenotypic variance, posterior mean and HDI).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from bayeslmm.commands.fit import positive_int
from bayeslmm.commands.grm import maf_threshold
from bayeslmm.errors import DataError, SpecificationError

if TYPE_CHECKING:  # the parser is built without importing the results layer
    from bayeslmm.results.scan_result import ScanResult

#: Files ``bayeslmm scan`` writes into its output folder (older copies are replaced).
SCAN_FILES = ("scan.tsv", "scan_null.tsv", "manhattan.png", "qq.png")

#: Written by ``--posterior-top`` (removed by a later run without it).
POSTERIOR_FILE = "posterior_shares.tsv"


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``bayeslmm scan``."""
    parser = subparsers.add_parser(
        "scan",
        help="mixed-model association scan (GWAS) with leave-one-chromosome-out kinships",
        description=(
            "Test every marker as a fixed effect in a linear mixed model whose kinship, for "
            "each chromosome, is the GRM of the markers on the other chromosomes (LOCO). The "
            "formula is the null model, 'y ~ covariates + (1 | id)', with id the column of "
            "genotype ids (PLINK IIDs). Writes OUT/scan.tsv, OUT/scan_null.tsv, "
            "OUT/manhattan.png and OUT/qq.png. See docs/scan.md."
        ),
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--bfile", metavar="PREFIX", help="PLINK .bed/.bim/.fam prefix")
    source.add_argument(
        "--dosage",
        metavar="CSV",
        help="dosage table: id column, then one column per marker counting the A1 allele "
        "(needs --map)",
    )
    parser.add_argument(
        "--map",
        metavar="CSV",
        help="with --dosage: one row per marker with columns snp, chr, bp (and a1, a2)",
    )
    parser.add_argument("--pheno", required=True, metavar="FILE", help="one row per individual")
    parser.add_argument("--formula", required=True, help='the null model, e.g. "y ~ sex + (1|id)"')
    parser.add_argument(
        "--loco",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="kinship of each chromosome from the other chromosomes (default); --no-loco uses "
        "one GRM of all markers (proximal contamination deflates the tests)",
    )
    parser.add_argument(
        "--family",
        default="gaussian",
        metavar="NAME",
        help="response family: gaussian (default), bernoulli, binomial or poisson; the last "
        "three are score-tested with saddle-point p-values",
    )
    parser.add_argument("--link", default=None, help="link function (logit or probit)")
    parser.add_argument(
        "--trials", default=None, metavar="COLUMN", help="number of trials (binomial family)"
    )
    parser.add_argument(
        "--wald-threshold",
        type=float,
        default=5e-8,
        metavar="P",
        help="binary and count traits: markers with p below P are refitted for beta and se "
        "(default 5e-8)",
    )
    parser.add_argument(
        "--rare-mac",
        type=float,
        default=None,
        metavar="N",
        help="binary and count traits: markers with a minor allele count of at most N get the "
        "exact test of their carriers' outcomes instead of the saddle point (default 10; 0: "
        "off)",
    )
    parser.add_argument(
        "--test",
        choices=("wald", "lrt"),
        default="wald",
        help="wald (default, GCTA --mlma) or lrt (likelihood ratio at the null's h²)",
    )
    parser.add_argument(
        "--exact",
        nargs="+",
        default=[],
        metavar="SNP",
        help="markers refitted with their own variance components (GEMMA's exact test)",
    )
    parser.add_argument(
        "--maf",
        type=maf_threshold,
        default=0.0,
        metavar="X",
        help="neither test nor use in the kinship markers with minor allele frequency below X",
    )
    parser.add_argument(
        "--standardize",
        action="store_true",
        help="GRMs of standardised markers (GCTA) instead of VanRaden's",
    )
    parser.add_argument(
        "--block-size", type=positive_int, default=1000, help="markers read at once (memory)"
    )
    parser.add_argument(
        "--low-rank",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Gaussian traits: hold each kinship as its markers (SNP space, no n x n matrix); "
        "--no-low-rank forms and reduces the n x n kinships; by default whichever costs less "
        "(SNP space roughly when each kinship has fewer markers than 0.8 n with LOCO, 0.7 n "
        "without). Same "
        "results either way",
    )
    parser.add_argument(
        "--posterior-top",
        type=positive_int,
        default=None,
        metavar="K",
        help="Gaussian traits: refit the K markers with the smallest p by NUTS and write "
        f"OUT/{POSTERIOR_FILE} (each one's share of the phenotypic variance with its 95%% "
        "HDI; one NUTS fit per marker)",
    )
    parser.add_argument("--seed", type=int, default=None, help="NUTS seed (--posterior-top)")
    parser.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="output directory (created if missing; its parent must exist)",
    )
    parser.set_defaults(run=run)
    return parser


def read_map(path: str) -> pd.DataFrame:
    """The SNP map of ``--map``: a table with snp, chr, bp (a1, a2), all read as text.

    Examples
    --------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "map.csv")
    >>> _ = open(path, "w").write("snp,chr,bp\\nrs1,01,100\\n")
    >>> read_map(path)["chr"].tolist()
    ['01']
    """
    from bayeslmm.io import read_data_table

    names = ("snp", "chr", "chrom", "a1", "a2", "SNP", "CHR", "A1", "A2")
    return read_data_table(path, text_columns=names, numeric_columns=("bp",), checked_columns=())


def run(args: argparse.Namespace) -> int:
    """Read genotypes and phenotypes, scan, write OUT/scan.tsv and the plots."""
    from bayeslmm.association.engine import _scan_formula, scan
    from bayeslmm.commands.fit import read_data
    from bayeslmm.io import read_dosage_csv
    from bayeslmm.results.output import check_output_dir, result_directory

    # Everything checkable without reading a file comes first, then the output folder.
    _scan_formula(args.formula)
    if args.dosage and not args.map:
        raise SpecificationError(
            "--dosage needs --map (a table with columns snp, chr, bp: each marker's "
            "chromosome and position)."
        )
    if args.bfile and args.map:
        raise SpecificationError("--map goes with --dosage; a PLINK fileset has its .bim map.")
    out = check_output_dir(args.out)
    pheno = read_data(args.pheno, args.formula, trials=args.trials)
    if args.bfile:
        genotypes, snp_map = args.bfile, None
    else:
        genotypes, snp_map = read_dosage_csv(args.dosage), read_map(args.map)
    result = scan(
        args.formula,
        pheno,
        genotypes,
        snp_map,
        loco=args.loco,
        exact=args.exact or None,
        test=args.test,
        maf=args.maf,
        standardize=args.standardize,
        block_size=args.block_size,
        family=args.family,
        link=args.link,
        trials=args.trials,
        wald_threshold=args.wald_threshold,
        rare_mac=args.rare_mac,
        low_rank=args.low_rank,
    )
    shares = None
    if args.posterior_top:
        shares = result.posterior_shares(top=args.posterior_top, seed=args.seed)
    with result_directory(out, owned=(*SCAN_FILES, POSTERIOR_FILE)) as stage:
        if shares is not None:
            shares.to_csv(stage / POSTERIOR_FILE, sep="\t", index=False, na_rep="NA")
        result.to_tsv(stage / "scan.tsv")
        result.null_models.to_csv(stage / "scan_null.tsv", sep="\t", index=False, na_rep="NA")
        result.manhattan().savefig(stage / "manhattan.png", dpi=120)
        result.qq().savefig(stage / "qq.png", dpi=120)
    report(result, out)
    if shares is not None:
        for _, row in shares.iterrows():
            print(
                f"{row['SNP']} (chr {row['chr']}:{row['bp']}): share of the phenotypic variance "
                f"{row['share']:.3g} (95% HDI {row['share_low']:.3g} to {row['share_high']:.3g}), "
                f"r_hat {row['r_hat']:.3f}"
            )
        print(f"wrote {out / POSTERIOR_FILE}")
    return 0


def report(result: ScanResult, out: Path) -> None:
    """One paragraph: what was scanned, λ_GC, the best marker, the files."""
    table = result.table
    kind = "LOCO" if result.loco else "all-marker kinship"
    print(
        f"{table.shape[0]} markers on {table['chr'].nunique()} chromosomes tested in "
        f"{result.n_obs} individuals ({kind}, {result.test}) in "
        f"{result.timing.get('total_s', math.nan):.1f} s; genomic-control lambda "
        f"{result.lambda_gc():.3f}"
    )
    if table["p"].notna().any():
        best = table.loc[table["p"].idxmin()]
        if "score" in table.columns:  # score tests: beta only where refitted
            effect = (
                f"beta {best['beta']:.4g} (SE {best['se']:.3g})"
                if math.isfinite(best["beta"])
                else f"score {best['score']:.4g} (SE {best['score_se']:.3g})"
            )
            print(f"smallest p: {best['SNP']} (chr {best['chr']}:{best['bp']}) {effect}, "
                  f"p = {best['p']:.3g}")  # fmt: skip
            print("wrote " + ", ".join(str(out / name) for name in SCAN_FILES))
            return
        print(
            f"smallest p: {best['SNP']} (chr {best['chr']}:{best['bp']}) beta {best['beta']:.4g} "
            f"(SE {best['se']:.3g}), p = {best['p']:.3g}"
        )
    else:  # pragma: no cover - the engine refuses a scan with nothing to test
        raise DataError("No marker could be tested.")
    print("wrote " + ", ".join(str(out / name) for name in SCAN_FILES))
