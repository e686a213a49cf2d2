"""``bayeslmm grm``: build a genomic relationship matrix from genotypes and write it."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from bayeslmm.commands.fit import MEAN_DIAGONAL_BAND, positive_int
from bayeslmm.io import (
    _gcta_prefix,
    read_dosage_csv,
    read_plink,
    write_gcta_grm,
    write_matrix_csv,
)
from bayeslmm.kinship.grm import grm_with_counts


def maf_threshold(text: str) -> float:
    """argparse type: a minor allele frequency threshold in [0, 0.5).

    Examples
    --------
    >>> maf_threshold("0.01")
    0.01
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 0.5); got {text!r}") from None
    if not 0.0 <= value < 0.5:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 0.5); got {text!r}")
    return value


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
        "--maf",
        type=maf_threshold,
        default=0.0,
        help="drop SNPs with minor allele frequency below X, in [0, 0.5)",
    )
    parser.add_argument(
        "--standardize",
        action="store_true",
        help="scale every SNP to unit variance (GCTA-style) instead of VanRaden",
    )
    parser.add_argument(
        "--normalize",
        action="store_true",
        help="rescale the GRM to mean diagonal 1 (GCTA's convention), so that h² is the "
        "variance share at the average self-relationship",
    )
    parser.add_argument(
        "--out",
        metavar="PREFIX",
        required=True,
        help="output prefix in an existing directory (e.g. grm/geno)",
    )
    parser.add_argument(
        "--format", choices=("gcta", "csv"), default="gcta", help="output format (default gcta)"
    )
    parser.add_argument(
        "--block-size", type=positive_int, default=2000, help="SNPs per block (memory vs speed)"
    )
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Read genotypes, compute the GRM, write it; print a one-line summary."""
    from bayeslmm.results.output import check_output_prefix, result_files

    prefix = check_output_prefix(args.out)  # before reading genotypes: a typo costs nothing
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
    raw_diagonal = kinship.mean_diagonal
    if args.normalize:
        kinship = kinship.normalized()
    elif not MEAN_DIAGONAL_BAND[0] <= raw_diagonal <= MEAN_DIAGONAL_BAND[1]:
        print(
            f"bayeslmm grm: note: the GRM's mean diagonal is {raw_diagonal:.3g}, far from 1 "
            "(inbred or related individuals?); h² fitted with it is the variance share at "
            "that scale. --normalize rescales it to mean diagonal 1.",
            file=sys.stderr,
        )
    if args.format == "gcta":
        given, suffixes = _gcta_prefix(args.out), [".grm.bin", ".grm.id", ".grm.N.bin"]
    else:
        given, suffixes = args.out, [".csv"]
    base = prefix.parent / Path(given).name
    # All files of the GRM appear together, or none of them changes (see results.output).
    with result_files([f"{base}{suffix}" for suffix in suffixes]) as staged:
        if args.format == "gcta":
            write_gcta_grm(kinship, staged[0].parent / base.name, n_snps=counts)
        else:
            write_matrix_csv(kinship, staged[0])
    paths = [given + suffix for suffix in suffixes]
    kind = "standardised" if args.standardize else "VanRaden"
    scale = (
        f"rescaled from mean diagonal {raw_diagonal:.4f} to 1"
        if args.normalize
        else f"mean diagonal {raw_diagonal:.4f}"
    )
    print(
        f"{kind} GRM of {kinship.n} individuals from {n_used} of {dosages.shape[1]} SNPs "
        f"({scale}) written to " + ", ".join(str(p) for p in paths)
    )
    return 0
