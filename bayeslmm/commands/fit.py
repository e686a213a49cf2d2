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

from bayeslmm.errors import SpecificationError
from bayeslmm.families import FAMILIES
from bayeslmm.spec import KINSHIP_SCALE_RANGE

#: A kinship whose mean diagonal lies outside this band gets a note: h² is the variance share
#: at the kinship's scale, so a mean self-relationship far from 1 changes what h² means. The
#: model warns with the same band.
MEAN_DIAGONAL_BAND = KINSHIP_SCALE_RANGE


# -- argument types: checked by argparse before anything is read or fitted --------------------
def _number(text: str, kind: type, what: str) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}; got {text!r}") from None


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1.

    Examples
    --------
    >>> positive_int("4")
    4
    """
    value = _number(text, int, "a whole number >= 1")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1; got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: a whole number >= 0.

    Examples
    --------
    >>> non_negative_int("0")
    0
    """
    value = _number(text, int, "a whole number >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0; got {text!r}")
    return value


def seed_int(text: str) -> int:
    """argparse type: a random seed, a whole number in [0, 2**32 - 1].

    Examples
    --------
    >>> seed_int("2024")
    2024
    """
    value = _number(text, int, "a whole number between 0 and 4294967295")
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(
            f"must be a whole number between 0 and 4294967295; got {text!r}"
        )
    return value


def open_probability(text: str) -> float:
    """argparse type: a number strictly between 0 and 1.

    Examples
    --------
    >>> open_probability("0.95")
    0.95
    """
    value = _number(text, float, "a number strictly between 0 and 1")
    if not 0.0 < value < 1.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must lie strictly between 0 and 1; got {text!r}")
    return value


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
    parser.add_argument(
        "--bfile",
        default=None,
        metavar="[GROUP=]PREFIX",
        help="PLINK .bed/.bim/.fam genotypes of the individuals: their GRM becomes the "
        "kinship of GROUP (default: the formula's only random term), held as its markers "
        "when there are fewer markers than individuals (the SNP-space low-rank path; "
        "docs/performance.md)",
    )
    add_fit_options(parser)
    parser.add_argument(
        "--family",
        default="gaussian",
        type=str.lower,
        choices=sorted(FAMILIES),
        help="response distribution (default gaussian)",
    )
    parser.add_argument("--link", default=None, help="logit or probit (binary families)")
    parser.add_argument("--trials", default=None, help="column with binomial trials")
    parser.add_argument(
        "--no-overdispersion",
        action="store_true",
        help="poisson: leave out the observation-level random effect (on by default)",
    )
    parser.add_argument("--sigma", default=None, help='model for log residual SD, e.g. "~ env"')
    parser.add_argument(
        "--prevalence",
        type=open_probability,
        default=None,
        help="binary traits: population prevalence K in (0, 1), adds h² on the liability scale",
    )
    parser.add_argument(
        "--loo",
        action="store_true",
        help="NUTS: add leave-one-out cross-validation to summary.json (marginal for Gaussian "
        "models, conditional for GLMMs; docs/questions.md)",
    )
    parser.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="output directory (created if missing; its parent must exist)",
    )
    parser.set_defaults(run=run)
    return parser


def add_fit_options(parser: argparse.ArgumentParser) -> None:
    """Sampler options shared by ``fit`` and ``demo``."""
    parser.add_argument(
        "--method",
        choices=("nuts", "reml", "ml", "laplace"),
        default="nuts",
        help="nuts: posterior; reml: REML point estimates (Gaussian); ml: maximum likelihood "
        "(Gaussian, lme4's REML = FALSE); laplace: Laplace ML (GLMMs, as lme4's glmer)",
    )
    parser.add_argument("--draws", type=positive_int, default=1000, help="kept draws per chain")
    parser.add_argument(
        "--tune",
        type=non_negative_int,
        default=None,
        help="warm-up draws per chain (default: the route's, as in LMM.fit: 300 for a "
        "one-term closed-form GLMM without an observation-level effect, else 1000)",
    )
    parser.add_argument("--chains", type=positive_int, default=4)
    parser.add_argument("--cores", type=positive_int, default=None, help="parallel chains")
    parser.add_argument(
        "--seed",
        type=seed_int,
        default=None,
        help="random seed (reproducible); when omitted one is drawn and printed",
    )
    parser.add_argument(
        "--sampler",
        default="auto",
        choices=("auto", "pymc", "nutpie", "numpyro", "blackjax"),
        help="NUTS implementation (auto: nutpie if installed)",
    )
    parser.add_argument(
        "--strategy",
        default="auto",
        choices=("auto", "spectral", "latent", "sparse-pedigree", "sparse-pedigree-nuts"),
    )
    parser.add_argument(
        "--target-accept",
        type=open_probability,
        default=None,
        help="NUTS target acceptance (default: the route's, as in LMM.fit: 0.8 for a one-term "
        "closed-form GLMM without an observation-level effect, else 0.9)",
    )
    parser.add_argument("--hdi-prob", type=open_probability, default=0.95)
    parser.add_argument(
        "--prior",
        action="append",
        default=[],
        metavar="KEY=FAMILY(ARGS)",
        help='prior override, e.g. --prior "h2=beta(2, 2)" --prior "sd_id=halfnormal(10)" '
        "(keys: docs/bayesian.md)",
    )


def kinship_sources(items: list[str]) -> dict[str, str]:
    """``["id=path", ...]`` → ``{"id": "path"}``, checking the syntax only.

    Examples
    --------
    >>> kinship_sources(["id = grm/geno"])
    {'id': 'grm/geno'}
    """
    out: dict[str, str] = {}
    for item in items:
        group, sep, path = (part.strip() for part in item.partition("="))
        if not sep or not group or not path:
            raise SpecificationError(
                f"--kinship takes GROUP=PATH (e.g. --kinship id=grm); got {item!r}."
            )
        if group in out:
            raise SpecificationError(
                f"--kinship names the grouping factor '{group}' twice ({out[group]!r} and "
                f"{path!r}); give one matrix per grouping factor."
            )
        out[group] = path
    return out


def parse_kinship_args(items: list[str]) -> dict[str, Any]:
    """``["id=path", ...]`` → ``{"id": Kinship}`` read with :func:`bayeslmm.io.read_kinship`.

    Examples
    --------
    >>> parse_kinship_args([])
    {}
    """
    from bayeslmm.io import read_kinship

    out: dict[str, Any] = {}
    for group, path in kinship_sources(items).items():
        # A mean diagonal far from 1 is warned about by the model (on the data's ids); the
        # command line adds its own remedy to that warning (bayeslmm.cli).
        out[group] = read_kinship(path, name=group)
    return out


def bfile_source(
    item: str | None, formula: str, kinship_items: list[str]
) -> tuple[str, str] | None:
    """``--bfile [GROUP=]PREFIX`` → ``(group, prefix)``; GROUP defaults to the grouping factor
    of the formula's only random term.

    Examples
    --------
    >>> bfile_source("geno/chr_all", "y ~ x + (1 | id)", [])
    ('id', 'geno/chr_all')
    >>> bfile_source("line=geno", "y ~ (1 | line) + (1 | env)", [])
    ('line', 'geno')
    """
    if item is None:
        return None
    from bayeslmm.spec import split_formula

    group, sep, prefix = item.partition("=")
    if not sep:
        group, prefix = "", item
    group, prefix = group.strip(), prefix.strip()
    groups = [b.group for b in split_formula(formula)[2]]
    if not group:
        if len(set(groups)) != 1:
            raise SpecificationError(
                f"--bfile {item!r}: the formula has {len(set(groups))} grouping factors "
                f"{sorted(set(groups))}; name the one the genotypes relate, e.g. "
                f"--bfile {groups[0] if groups else 'id'}={prefix}."
            )
        group = groups[0]
    if group in kinship_sources(kinship_items):
        raise SpecificationError(
            f"--bfile and --kinship both give a kinship for '{group}'; give one of them."
        )
    return group, prefix


def plink_kinship(prefix: str, name: str = "GRM") -> Any:
    """The GRM (VanRaden) of a PLINK fileset's individuals, read in blocks of markers: a
    :class:`~bayeslmm.kinship.LowRankKinship` (the markers, never n × n) when there are
    fewer markers than individuals, else the dense GRM.

    Examples
    --------
    >>> # K = plink_kinship("geno/all")  # .bed/.bim/.fam; K.n_markers columns of W
    """
    import numpy as np

    from bayeslmm.association.genotypes import open_genotypes
    from bayeslmm.kinship.grm import _grm_of

    source = open_genotypes(prefix)
    try:
        dosages = source.dosages(np.arange(len(source.ids)))
        low_rank = dosages.m < dosages.n
        return _grm_of(dosages, 0.0, False, 2000, name, low_rank=low_rank)
    finally:
        source.close()


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


def column_roles(
    formula: str,
    sigma: str | None = None,
    trials: str | None = None,
    binary: bool = False,
) -> dict[str, set[str]]:
    """How each column a model uses must be read (arguments of
    :func:`bayeslmm.io.read_data_table`).

    Grouping factors are ids (text); the response columns (``y``, or those of lme4's
    ``cbind(s, f)`` and brms's ``s | trials(n)``) and the trials column must be numbers,
    except a binary trait's response (``binary``), which may also be two text levels;
    ``C(x)``, ``factor(x)`` and ``as.factor(x)`` mark a factor; every other name in the
    formulas is checked (numbers, or a categorical column).

    Examples
    --------
    >>> roles = column_roles("y ~ x + C(dose) + (1 + env | line:site)", trials="n")
    >>> sorted(roles["text_columns"]), sorted(roles["numeric_columns"])
    (['line', 'site'], ['n', 'y'])
    >>> sorted(roles["factor_columns"]), sorted(roles["checked_columns"])
    (['dose'], ['env', 'x'])
    >>> sorted(column_roles("cbind(sick, n - sick) ~ factor(farm) + (1|id)")["numeric_columns"])
    ['n', 'sick']
    """
    from bayeslmm.spec import _parse_response, split_formula

    response, _, blocks = split_formula(formula)
    text = {part.strip() for b in blocks for part in re.split(r"[:/]", b.group) if part.strip()}
    everything = formula + " " + (sigma or "")
    factor_call = r"\b(?:C|factor|as\.factor)\(\s*([A-Za-z_.][A-Za-z0-9_.]*)"
    factors = set(re.findall(factor_call, everything)) - text
    lhs = _parse_response(response, formula)
    numeric = set(lhs.columns) | ({trials} if trials else set())
    if binary and not lhs.gives_trials:
        numeric -= {lhs.column}  # 0/1, or two text levels (coded with a warning)
    names = {
        m.group()
        for m in re.finditer(r"[A-Za-z_.][A-Za-z0-9_.]*", everything)
        if not everything[m.end() :].lstrip().startswith("(")  # C(, log(, offset(: functions
    }
    return {
        "text_columns": text,
        "numeric_columns": numeric - text,
        "factor_columns": factors,
        "checked_columns": names - text - factors - numeric,
    }


def read_data(
    path: str,
    formula: str | None = None,
    sigma: str | None = None,
    trials: str | None = None,
    binary: bool = False,
) -> pd.DataFrame:
    """Read the observations table with the column types the model needs.

    Ids (grouping factors) are text; the response and trials must be numbers; a covariate
    column of numbers with a stray cell is an error naming the line, column and value (see
    :func:`bayeslmm.io.read_data_table`). Without a formula, no column is checked.

    Examples
    --------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "d.csv")
    >>> _ = open(path, "w").write("id,y\\n007,1.5\\n010,2\\n")
    >>> read_data(path, "y ~ (1|id)")["id"].tolist()
    ['007', '010']
    """
    from bayeslmm.io import read_data_table

    if formula is None:
        return read_data_table(path, checked_columns=())
    return read_data_table(path, **column_roles(formula, sigma, trials, binary))


def fit_model(model, args: argparse.Namespace) -> Any:
    """Fit ``model`` with the method and sampler options of the command line."""
    if args.method in ("laplace", "reml", "ml"):
        return model.fit(method=args.method)
    return model.fit(
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


def write_results(
    fit: Any,
    args: argparse.Namespace,
    out: Path,
    reference: float | None = None,
    title: str | None = None,
) -> dict[str, Path]:
    """Write the fit's files into ``out``, all or nothing (:mod:`bayeslmm.results.output`).

    A REML or Laplace run writes summary.json (and the model's inputs, inputs/); the
    posterior and plot of an older NUTS run in the same folder are removed with the old set,
    so no file outlives its run.
    """
    from bayeslmm.results.output import result_directory, write_bayes_files, write_point_files

    prevalence = getattr(args, "prevalence", None)
    with result_directory(out) as stage:
        if args.method == "nuts":
            staged = write_bayes_files(
                fit, stage, prevalence=prevalence, reference=reference, title=title
            )
            if getattr(args, "loo", False):
                add_loo(fit, staged["summary"])
        else:
            staged = write_point_files(fit, stage, prevalence=prevalence)
    return {key: out / path.name for key, path in staged.items()}


def add_loo(fit: Any, path: Path) -> None:
    """Add ``loo`` (elpd, se, p_loo, kind, worst Pareto k; docs/summary_json.md) to the
    summary.json at ``path``, written before it is swapped into the output folder."""
    from bayeslmm.results.loo import loo_summary
    from bayeslmm.results.summary import write_summary

    summary = json.loads(path.read_text(encoding="utf-8"))
    summary["loo"] = loo_summary(fit.loo())
    write_summary(summary, path)


def report(fit: Any, args: argparse.Namespace, paths: dict[str, Path]) -> None:
    """Print the heritability lines (from the summary.json just written) and the files."""
    summary = json.loads(paths["summary"].read_text(encoding="utf-8"))
    if args.method == "laplace":
        for name, entry in summary["heritability"].items():
            if entry.get("estimate") is not None and name.startswith("h2_"):
                print(f"{name}: {entry['estimate']:.3f} (Laplace ML, SE {entry['se'] or 0:.3f})")
    elif args.method in ("reml", "ml"):
        engine = args.method.upper()
        for name, row in fit.heritability().iterrows():
            print(f"{name}: {row['estimate']:.3f} ({engine}, SE {row['se']:.3f})")
        _print_by_environment(summary)
    else:
        pct = int(round(100 * args.hdi_prob))
        for name, entry in summary["heritability"].items():
            if name == "residual" or (
                name == fit.built.h2_term and "h2" in summary["heritability"]
            ):
                continue  # the residual's share; the sole kinship term's row repeats as "h2"
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
        seed = summary.get("seed", getattr(fit, "seed", None))
        print(
            f"{fit.diagnostics['chains']} chains × {fit.diagnostics['draws']} draws "
            f"({fit.sampler}, {fit.strategy}) in {fit.timing['total_s']:.1f} s; "
            f"{fit.diagnostics['divergences']} divergences"
            + (f"; seed {seed} (--seed {seed} repeats this run)" if seed is not None else "")
        )
        if "loo" in summary:
            loo = summary["loo"]
            print(
                f"LOO ({loo['kind']}): elpd {loo['elpd']:.1f} (SE {loo['se']:.1f}), p_loo "
                f"{loo['p_loo']:.1f}, worst Pareto k {loo['pareto_k_max']:.2f}"
            )
    print("wrote " + ", ".join(str(p) for p in paths.values()))


def fit_and_write(model, args: argparse.Namespace, out: Path) -> Any:
    """Fit ``model`` with the command-line options, write the outputs, print a summary."""
    fit = fit_model(model, args)
    report(fit, args, write_results(fit, args, out))
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


def check_family_args(args: argparse.Namespace) -> Any:
    """The family of the command line (``--family``, ``--link``, ``--no-overdispersion``),
    with the options that do not fit it refused before any file is read.

    Examples
    --------
    >>> ns = argparse.Namespace(family="poisson", link=None, no_overdispersion=True,
    ...                         prevalence=None, trials=None)
    >>> check_family_args(ns)
    Poisson(link='log', overdispersion=False)
    """
    from bayeslmm.families import get_family

    family = get_family(args.family, args.link)
    if args.no_overdispersion:
        if not family.has_observation_level_effect:
            raise SpecificationError(
                "--no-overdispersion leaves out the observation-level effect of a count "
                f"family (--family poisson); the family '{family.name}' has none to leave out."
            )
        family = family.without_observation_level_effect()
    if args.prevalence is not None and not family.binary_response():
        raise SpecificationError(
            f"--prevalence gives h² on the liability scale of a binary 0/1 trait (--family "
            f"bernoulli); this run's family is '{family.name}'. Drop --prevalence."
        )
    return family


def run(args: argparse.Namespace) -> int:
    """Read data and kinships, fit, write OUT/summary.json etc."""
    from bayeslmm.model import LMM
    from bayeslmm.results.lazy_dask import defer_dask_checks
    from bayeslmm.results.output import check_output_dir

    # xarray would import dask.array (~0.4 s) to ask whether each array of the draws is one.
    # Only the command's own process is patched: a library call leaves xarray as it is.
    defer_dask_checks()

    # Everything that can be checked without reading a file is checked first, then the output
    # folder, so that a mistake never costs a fit.
    family = check_family_args(args)
    if getattr(args, "loo", False) and args.method != "nuts":
        raise SpecificationError(
            f"--loo is leave-one-out cross-validation of the posterior (--method nuts); a "
            f"--method {args.method} summary.json already has aic and bic. Drop --loo or "
            "use --method nuts."
        )
    kinship_sources(args.kinship)
    bfile = bfile_source(getattr(args, "bfile", None), args.formula, args.kinship)
    priors = parse_prior_args(args.prior) or None
    if is_multitrait(args.formula, family):  # mvbind(...) / Gaussian cbind(...)
        return run_multitrait(args, family, bfile, priors)
    binary = family.binary_response()
    column_roles(args.formula, args.sigma, args.trials, binary)
    out = check_output_dir(args.out)
    data = read_data(args.data, args.formula, args.sigma, args.trials, binary)
    kinship = parse_kinship_args(args.kinship)
    if bfile is not None:
        kinship[bfile[0]] = plink_kinship(bfile[1], name=bfile[0])
    model = LMM(
        args.formula,
        data=data,
        kinship=kinship or None,
        family=family,
        trials=args.trials,
        sigma=args.sigma,
        priors=priors,
    )
    fit_and_write(model, args, out)
    return 0


# -- several traits: mvbind(y1, y2) ~ x + (1 | id) ---------------------------------------------
def is_multitrait(formula: str, family: Any) -> bool:
    """Whether the formula binds several traits (``mvbind(...)``, Gaussian ``cbind(...)``).

    Examples
    --------
    >>> is_multitrait("mvbind(y1, y2) ~ x + (1 | id)", "gaussian")
    True
    >>> is_multitrait("cbind(s, f) ~ (1 | id)", "binomial")
    False
    """
    from bayeslmm.multitrait_spec import is_multitrait as _is_multitrait

    return _is_multitrait(formula, family)


def check_multitrait_args(args: argparse.Namespace) -> None:
    """Refuse, before any file is read, the options that have no meaning for several traits.

    Examples
    --------
    >>> ns = argparse.Namespace(formula="mvbind(a, b) ~ (1|id)", method="ml", sigma=None,
    ...     trials=None, prevalence=None, loo=False, no_overdispersion=False,
    ...     sampler="auto", strategy="auto")
    >>> check_multitrait_args(ns)
    Traceback (most recent call last):
    ...
    bayeslmm.errors.SpecificationError: --method ml: a multi-trait model ...
    """
    formula = args.formula
    if args.method not in ("nuts", "reml"):
        raise SpecificationError(
            f"--method {args.method}: a multi-trait model ({formula!r}) is fitted with "
            "--method reml (Gaussian traits: REML estimates of the genetic and residual "
            "covariances) or --method nuts (the posterior); use one of them."
        )
    refused = {
        "--sigma": args.sigma is not None,
        "--trials": args.trials is not None,
        "--prevalence": getattr(args, "prevalence", None) is not None,
        "--loo": bool(getattr(args, "loo", False)),
        "--no-overdispersion": bool(getattr(args, "no_overdispersion", False)),
    }
    given = [name for name, used in refused.items() if used]
    if given:
        raise SpecificationError(
            f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to a "
            f"multi-trait model ({formula!r}): residual variance formulas, binomial trials, "
            "liability-scale h², leave-one-out and the Poisson overdispersion switch are "
            "single-trait options. Drop them, or fit each trait on its own."
        )
    if args.sampler not in ("auto", "nutpie"):
        raise SpecificationError(
            f"--sampler {args.sampler}: multi-trait models are sampled by nutpie on their "
            "closed-form density; drop --sampler (or give --sampler nutpie)."
        )
    if args.strategy != "auto":
        raise SpecificationError(
            f"--strategy {args.strategy}: a multi-trait model chooses its route from the "
            "kinship (dense, low-rank or sparse pedigree); drop --strategy."
        )


def multitrait_column_roles(formula: str) -> dict[str, set[str]]:
    """:func:`column_roles` of a multi-trait formula: every trait is a numeric column (empty
    cells are missing trait values).

    Examples
    --------
    >>> roles = multitrait_column_roles("mvbind(y1, y2) ~ x + (1 | id)")
    >>> sorted(roles["numeric_columns"]), sorted(roles["text_columns"])
    (['y1', 'y2'], ['id'])
    """
    from bayeslmm.multitrait_spec import response_traits

    found = response_traits(formula)
    traits = found[1] if found else []
    rhs = formula.split("~", 1)[1]
    roles = column_roles(f"{traits[0] if traits else 'y'} ~{rhs}")
    roles["numeric_columns"] = (roles["numeric_columns"] | set(traits)) - roles["text_columns"]
    roles["checked_columns"] -= set(traits)
    return roles


def run_multitrait(
    args: argparse.Namespace, family: Any, bfile: tuple[str, str] | None, priors: Any
) -> int:
    """``bayeslmm fit`` of a multi-trait model: fit by REML or NUTS and write the folder
    (summary.json; NUTS also posterior.nc and rg_posterior.png)."""
    from bayeslmm.io import read_data_table
    from bayeslmm.model import LMM
    from bayeslmm.results.output import check_output_dir

    check_multitrait_args(args)
    roles = multitrait_column_roles(args.formula)
    out = check_output_dir(args.out)
    data = read_data_table(args.data, **roles)
    kinship = parse_kinship_args(args.kinship)
    if bfile is not None:
        kinship[bfile[0]] = plink_kinship(bfile[1], name=bfile[0])
    model = LMM(args.formula, data=data, kinship=kinship or None, family=family, priors=priors)
    if args.method == "reml":
        fit = model.fit(method="reml")
    else:
        given = {  # unset: MultiTraitLMM.fit's own defaults
            name: value
            for name, value in (("tune", args.tune), ("target_accept", args.target_accept))
            if value is not None
        }
        fit = model.fit(
            method="nuts",
            draws=args.draws,
            chains=args.chains,
            cores=args.cores,
            seed=args.seed,
            sampler=args.sampler,
            hdi_prob=args.hdi_prob,
            verbose=False,  # the messages are printed with the report, once
            **given,
        )
    paths = fit.save(out)
    report_multitrait(fit, paths)
    return 0


def report_multitrait(fit: Any, paths: dict[str, Path]) -> None:
    """Print h² per trait and r_g per pair (from the summary.json just written) and the
    files."""
    summary = json.loads(paths["summary"].read_text(encoding="utf-8"))

    def line(entry: dict[str, Any]) -> str:
        if summary["method"] == "reml":
            se = "NA" if entry["se"] is None else f"{entry['se']:.3f}"
            return f"{entry['estimate']:.3f} (REML, SE {se})"
        pct = int(round(100 * entry["hdi_prob"]))
        return (
            f"posterior mean {entry['mean']:.3f}, {pct}% HDI "
            f"[{entry['hdi_low']:.3f}, {entry['hdi_high']:.3f}]"
        )

    for trait, entry in summary["heritability"].items():
        if entry.get("estimate") is not None:
            print(f"h2 {trait}: {line(entry)}")
    for pair, entry in summary["genetic_correlation"].items():
        if entry.get("estimate") is not None:
            print(f"r_g {pair}: {line(entry)}")
    for message in summary["diagnostics"].get("messages", []):
        print(f"note: {message}")
    if summary["method"] == "nuts":
        d, seed = summary["diagnostics"], summary.get("seed")
        print(
            f"{d['chains']} chains × {d['draws']} draws (nutpie, {summary['strategy']}) in "
            f"{summary['timing']['total_s']:.1f} s; {d['divergences']} divergences"
            + (f"; seed {seed} (--seed {seed} repeats this run)" if seed is not None else "")
        )
    print("wrote " + ", ".join(str(p) for p in paths.values()))
