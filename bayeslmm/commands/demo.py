"""``bayeslmm demo``: heritability of blood pressure in the bundled hyper mouse backcross.

Builds a GRM from the 173 typed markers (mean-imputed, normalised to mean diagonal 1), fits
``bp ~ 1 + (1 | id)`` with NUTS (spectral strategy) and REML, prints the h² posterior and
the REML estimate, and writes summary.json, posterior.nc and h2_posterior.png.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

from bayeslmm.commands.fit import add_fit_options, fit_and_write

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
    parser.add_argument("--out", default="bayeslmm-demo", metavar="DIR", help="output dir")
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
        f"rescaled from mean diagonal {raw_diag:.3f} to 1, so h² is the share of variance at "
        "the average self-relationship."
    )
    return LMM(FORMULA, data=hyper.pheno, kinship={"id": K}, priors=priors), notes


def run(args: argparse.Namespace) -> int:
    """Fit the demo model and write its outputs."""
    start = time.perf_counter()
    from bayeslmm.commands.fit import parse_prior_args

    model, notes = hyper_model(parse_prior_args(args.prior) or None)
    print(f"hyper mouse backcross: {model.spec.n_obs} mice, model {FORMULA}")
    for note in notes:
        print(f"note: {note}")
    out = Path(args.out)
    fit = fit_and_write(model, args, out)
    if args.method == "nuts":
        try:
            reml = model.fit(method="reml")
        except ImportError:  # REML engine not installed in this build
            reml = None
        if reml is not None:
            row = reml.heritability().loc["h2"]
            print(f"h2 (REML): {row['estimate']:.3f} (SE {row['se']:.3f})")
            _mark_reml_on_plot(fit, float(row["estimate"]), out)
    print(f"demo finished in {time.perf_counter() - start:.1f} s")
    return 0


def _mark_reml_on_plot(fit, h2_reml: float, out: Path) -> None:
    """Redraw h2_posterior.png with the REML estimate marked."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ax = fit.plot_heritability(reference=h2_reml, reference_label="REML")
    ax.set_title("hyper: h² of blood pressure")
    ax.figure.tight_layout()
    ax.figure.savefig(out / "h2_posterior.png", dpi=120)
    plt.close(ax.figure)
