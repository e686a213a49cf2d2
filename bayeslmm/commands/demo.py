"""``bayeslmm demo``: heritability of blood pressure in the bundled hyper mouse backcross.

Builds a GRM from the 173 typed markers (mean-imputed, normalised to mean diagonal 1), fits
``bp ~ 1 + (1 | id)`` with NUTS (spectral strategy) and REML, prints the h² posterior and
the REML estimate, and writes summary.json, posterior.nc and h2_posterior.png.
"""

from __future__ import annotations

import argparse
import time
import warnings

from bayeslmm.commands.fit import add_fit_options, fit_model, report, write_results

FORMULA = "bp ~ 1 + (1 | id)"


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``bayeslmm demo``."""
    parser = subparsers.add_parser(
        "demo",
        help="heritability of blood pressure in the bundled mouse data (the main job)",
        description=(
            "Fit bp ~ 1 + (1 | id) with a marker-based GRM to the R/qtl hyper backcross "
            "(250 mice) and report h² (NUTS posterior and REML)."
        ),
    )
    add_fit_options(parser)
    parser.add_argument(
        "--out",
        default="bayeslmm-demo",
        metavar="DIR",
        help="output directory (default bayeslmm-demo; created if missing)",
    )
    parser.set_defaults(run=run, seed=1, chains=2)
    return parser


def hyper_model(priors: dict | None = None):
    """The demo's :class:`~bayeslmm.model.LMM` and a note on the GRM."""
    from bayeslmm.datasets import load_hyper
    from bayeslmm.kinship.grm import grm
    from bayeslmm.model import LMM

    hyper = load_hyper()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        K = grm(hyper.genotypes, name="GRM")
    raw_diag = K.mean_diagonal
    K = K.normalized()
    notes = [str(w.message) for w in caught]
    notes.append(
        f"GRM from {hyper.genotypes.shape[1]} markers (missing genotypes mean-imputed), "
        f"rescaled from mean diagonal {raw_diag:.3f} to 1 (GCTA's scale for σ²_g; h² is the "
        "genetic share at the sample's own scale whatever the matrix's scale)."
    )
    return LMM(FORMULA, data=hyper.pheno, kinship={"id": K}, priors=priors), notes


def run(args: argparse.Namespace) -> int:
    """Fit the demo model and write its outputs (all at once: see results.output)."""
    start = time.perf_counter()
    from bayeslmm.commands.fit import parse_prior_args
    from bayeslmm.results.output import check_output_dir

    priors = parse_prior_args(args.prior) or None
    out = check_output_dir(args.out)
    model, notes = hyper_model(priors)
    print(f"hyper mouse backcross: {model.spec.n_obs} mice, model {FORMULA}")
    for note in notes:
        print(f"note: {note}")
    fit = fit_model(model, args)
    reml_line, reference = None, None
    if args.method == "nuts":
        try:
            reml = model.fit(method="reml")
        except ImportError:  # REML engine not installed in this build
            reml = None
        if reml is not None:
            row = reml.heritability().loc["h2"]
            reference = float(row["estimate"])
            reml_line = f"h2 (REML): {row['estimate']:.3f} (SE {row['se']:.3f})"
    title = "hyper: h² of blood pressure" if args.method == "nuts" else None
    paths = write_results(fit, args, out, reference=reference, title=title)
    report(fit, args, paths)
    if reml_line:
        print(reml_line)
    print(f"demo finished in {time.perf_counter() - start:.1f} s")
    return 0
