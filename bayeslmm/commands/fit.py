"""``bayeslmm fit``: fit a mixed model to a CSV file and write summary.json, the posterior
and a plot of h².

Example::

    bayeslmm fit pheno.csv --formula "bp ~ sex + (1|id)" --kinship id=grm_prefix \\
        --draws 1000 --chains 4 --seed 1 --out results/
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import pandas as pd

from bayeslmm.errors import DataError, SpecificationError


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``bayeslmm fit``."""
    parser = subparsers.add_parser(
        "fit",
        help="fit a (G)LMM with NUTS or REML and write summary.json",
        description=(
            "Fit a linear mixed model (lme4/brms formula) to a CSV file, with relationship "
            "matrices for grouping factors. Writes OUT/summary.json (see docs/summary_json.md), "
            "OUT/posterior.nc (ArviZ InferenceData) and OUT/h2_posterior.png (NUTS)."
        ),
    )
    parser.add_argument("data", metavar="DATA.csv", help="one row per observation")
    parser.add_argument("--formula", required=True, help='e.g. "bp ~ sex + (1|id)"')
    parser.add_argument(
        "--kinship",
        action="append",
        default=[],
        metavar="GROUP=PATH",
        help="relationship matrix of a grouping factor: GCTA prefix or CSV with ids in the "
        "header and first column (repeatable)",
    )
    add_fit_options(parser)
    parser.add_argument("--family", default="gaussian", help="gaussian, poisson, bernoulli, ...")
    parser.add_argument("--link", default=None, help="logit or probit (binary families)")
    parser.add_argument("--trials", default=None, help="column with binomial trials")
    parser.add_argument("--sigma", default=None, help='model for log residual SD, e.g. "~ env"')
    parser.add_argument(
        "--prevalence",
        type=float,
        default=None,
        help="binary traits: population prevalence K, adds h² on the liability scale",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory")
    parser.set_defaults(run=run)
    return parser


def add_fit_options(parser: argparse.ArgumentParser) -> None:
    """Sampler options shared by ``fit`` and ``demo``."""
    parser.add_argument(
        "--method",
        choices=("nuts", "reml", "laplace"),
        default="nuts",
        help="nuts: posterior; reml: REML point estimates (Gaussian); laplace: Laplace ML "
        "(GLMMs, as lme4's glmer)",
    )
    parser.add_argument("--draws", type=int, default=1000, help="kept draws per chain")
    parser.add_argument("--tune", type=int, default=1000, help="warm-up draws per chain")
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--cores", type=int, default=None, help="parallel chains")
    parser.add_argument("--seed", type=int, default=None, help="random seed (reproducible)")
    parser.add_argument(
        "--sampler",
        default="auto",
        choices=("auto", "pymc", "nutpie", "numpyro", "blackjax"),
        help="NUTS implementation (auto: nutpie if installed)",
    )
    parser.add_argument("--strategy", default="auto", choices=("auto", "spectral", "latent"))
    parser.add_argument("--target-accept", type=float, default=0.9)
    parser.add_argument("--hdi-prob", type=float, default=0.95)
    parser.add_argument(
        "--prior",
        action="append",
        default=[],
        metavar="KEY=FAMILY(ARGS)",
        help='prior override, e.g. --prior "h2=beta(2, 2)" --prior "sd_id=halfnormal(10)" '
        "(keys: docs/bayesian.md)",
    )


def parse_kinship_args(items: list[str]) -> dict[str, Any]:
    """``["id=path", ...]`` → ``{"id": Kinship}`` read with :func:`bayeslmm.io.read_kinship`.

    Examples
    --------
    >>> parse_kinship_args([])
    {}
    """
    from bayeslmm.io import read_kinship

    out: dict[str, Any] = {}
    for item in items:
        group, sep, path = item.partition("=")
        if not sep or not group or not path:
            raise SpecificationError(
                f"--kinship takes GROUP=PATH (e.g. --kinship id=grm); got {item!r}."
            )
        out[group.strip()] = read_kinship(path.strip(), name=group.strip())
    return out


def parse_prior_args(items: list[str]) -> dict[str, tuple]:
    """``["h2=beta(2, 2)", ...]`` → ``{"h2": ("beta", 2.0, 2.0)}``.

    A bracketed list is a vector parameter: ``shares=dirichlet([1, 1, 2])``.

    Examples
    --------
    >>> parse_prior_args(["h2=beta(2, 3)", "shares=dirichlet([1, 1, 2])"])
    {'h2': ('beta', 2.0, 3.0), 'shares': ('dirichlet', [1.0, 1.0, 2.0])}
    """
    out: dict[str, tuple] = {}
    for item in items:
        match = re.fullmatch(r"\s*([^=\s]+)\s*=\s*([A-Za-z_0-9]+)\s*\((.*)\)\s*", item)
        if not match:
            raise SpecificationError(
                f"--prior takes KEY=FAMILY(ARGS), e.g. 'h2=beta(2, 2)'; got {item!r}."
            )
        key, family, body = match.groups()
        params: list[Any] = []
        try:
            for vec, scalar in re.findall(r"\[([^\]]*)\]|([^,\s\[\]]+)", body):
                if scalar:
                    params.append(float(scalar))
                else:
                    params.append([float(v) for v in vec.split(",") if v.strip()])
        except ValueError as exc:
            raise SpecificationError(f"Cannot read the numbers of --prior {item!r}.") from exc
        out[key] = (family, *params)
    return out


def read_data(path: str) -> pd.DataFrame:
    """Read the observations table (CSV, or TSV by extension)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"No data file at {path!r}.")
    sep = "\t" if p.suffix.lower() in (".tsv", ".txt") else ","
    return pd.read_csv(p, sep=sep)


def fit_and_write(model, args: argparse.Namespace, out: Path) -> Any:
    """Fit ``model`` with the command-line options, write the outputs, print a summary."""
    from bayeslmm.results.summary import write_summary

    out.mkdir(parents=True, exist_ok=True)
    prevalence = getattr(args, "prevalence", None)
    if args.method == "laplace":
        fit = model.fit(method="laplace")
        summary = fit.to_summary(prevalence=prevalence)
        write_summary(summary, out / "summary.json")
        for name, entry in summary["heritability"].items():
            if entry.get("estimate") is not None and name.startswith("h2_"):
                print(f"{name}: {entry['estimate']:.3f} (Laplace ML, SE {entry['se'] or 0:.3f})")
        print(f"wrote {out / 'summary.json'}")
        return fit
    if args.method == "reml":
        fit = model.fit(method="reml")
        summary = fit.to_summary()
        write_summary(summary, out / "summary.json")
        h2 = fit.heritability()
        for name, row in h2.iterrows():
            print(f"{name}: {row['estimate']:.3f} (REML, SE {row['se']:.3f})")
        _print_by_environment(summary)
        print(f"wrote {out / 'summary.json'}")
        return fit
    fit = model.fit(
        method="nuts",
        draws=args.draws,
        tune=args.tune,
        chains=args.chains,
        cores=args.cores,
        seed=args.seed,
        sampler=args.sampler,
        strategy=args.strategy,
        target_accept=args.target_accept,
        hdi_prob=args.hdi_prob,
    )
    paths = fit.save(out, prevalence=prevalence)
    # Print from what was written: summary.json already holds every table below.
    summary = json.loads(paths["summary"].read_text())
    pct = int(round(100 * args.hdi_prob))
    for name, entry in summary["heritability"].items():
        if name == fit.built.h2_term and "h2" in summary["heritability"]:
            continue  # the sole kinship term's row repeats as "h2"
        if entry.get("mean") is None:
            continue
        line = (
            f"{name}: posterior mean {entry['mean']:.3f}, {pct}% HDI "
            f"[{entry['hdi_low']:.3f}, {entry['hdi_high']:.3f}]"
        )
        if entry.get("r_hat") is not None and entry.get("ess_bulk") is not None:
            line += f" (R-hat {entry['r_hat']:.3f}, ESS {entry['ess_bulk']:.0f})"
        print(line)
    _print_by_environment(summary)
    print(
        f"{fit.diagnostics['chains']} chains × {fit.diagnostics['draws']} draws "
        f"({fit.sampler}, {fit.strategy}) in {fit.timing['total_s']:.1f} s; "
        f"{fit.diagnostics['divergences']} divergences"
    )
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return fit


def _print_by_environment(summary: dict[str, Any]) -> None:
    """One line per environment level with its h² (heteroscedastic models)."""
    for level, entry in summary.get("heritability_by_environment", {}).items():
        h2 = entry["h2"]
        if "mean" in h2:
            print(
                f"h2 in {level}: posterior mean {h2['mean']:.3f}, "
                f"HDI [{h2['hdi_low']:.3f}, {h2['hdi_high']:.3f}]"
            )
        else:
            print(f"h2 in {level}: {h2['estimate']:.3f} (REML, SE {h2['se']:.3f})")


def run(args: argparse.Namespace) -> int:
    """Read data and kinships, fit, write OUT/summary.json etc."""
    from bayeslmm.model import LMM

    data = read_data(args.data)
    kinship = parse_kinship_args(args.kinship)
    model = LMM(
        args.formula,
        data=data,
        kinship=kinship or None,
        family=args.family,
        link=args.link,
        trials=args.trials,
        sigma=args.sigma,
        priors=parse_prior_args(args.prior) or None,
    )
    fit_and_write(model, args, Path(args.out))
    return 0
