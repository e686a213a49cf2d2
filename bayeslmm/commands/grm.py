"""``bayeslmm grm``: build a genomic relationship matrix from genotypes and write it."""

from __future__ import annotations

import argparse
import sys
import warnings

from bayeslmm.io import read_dosage_csv, read_plink, write_gcta_grm, write_matrix_csv
from bayeslmm.kinship.grm import grm_with_counts


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``bayeslmm grm``."""
    parser = subparsers.add_parser(
        "grm",
        help="build a genomic relationship matrix (GRM) from genotypes",
        description=(
            "Build a GRM (VanRaden 2008; or per-SNP standardised with --standardize) from "
            "PLINK genotypes or a dosage table, and write it as a GCTA binary GRM "
            "(PREFIX.grm.bin/.grm.id/.grm.N.bin) or a square CSV (PREFIX.csv). Missing "
            "genotypes are mean-imputed; monomorphic SNPs are dropped."
        ),
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--bfile", metavar="PREFIX", help="PLINK .bed/.bim/.fam prefix")
    source.add_argument(
        "--dosage", metavar="CSV", help="dosage table: id column, then one 0/1/2 column per SNP"
    )
    parser.add_argument(
        "--maf", type=float, default=0.0, help="drop SNPs with minor allele frequency below X"
    )
    parser.add_argument(
        "--standardize",
        action="store_true",
        help="scale every SNP to unit variance (GCTA-style) instead of VanRaden",
    )
    parser.add_argument("--out", metavar="PREFIX", required=True, help="output prefix")
    parser.add_argument(
        "--format", choices=("gcta", "csv"), default="gcta", help="output format (default gcta)"
    )
    parser.add_argument(
        "--block-size", type=int, default=2000, help="SNPs per block (memory vs speed)"
    )
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Read genotypes, compute the GRM, write it; print a one-line summary."""
    if args.bfile:
        dosages, _ = read_plink(args.bfile)
    else:
        dosages = read_dosage_csv(args.dosage)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kinship, counts, n_used = grm_with_counts(
            dosages, maf=args.maf, standardize=args.standardize, block_size=args.block_size
        )
    for warning in caught:
        print(f"bayeslmm grm: note: {warning.message}", file=sys.stderr)
    if args.format == "gcta":
        paths = write_gcta_grm(kinship, args.out, n_snps=counts)
    else:
        paths = [write_matrix_csv(kinship, f"{args.out}.csv")]
    kind = "standardised" if args.standardize else "VanRaden"
    print(
        f"{kind} GRM of {kinship.n} individuals from {n_used} of {dosages.shape[1]} SNPs "
        f"(mean diagonal {kinship.mean_diagonal:.4f}) written to "
        + ", ".join(str(p) for p in paths)
    )
    return 0
