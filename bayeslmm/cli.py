"""Command line: ``bayeslmm SUBCOMMAND ...``.

Each subcommand lives in :mod:`bayeslmm.commands` as a module with ``add_parser(subparsers)``
and ``run(args) -> int``; this file only wires them together.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from bayeslmm.errors import BayesLMMError

#: Subcommand name -> module in bayeslmm.commands.
COMMANDS = {"grm": "grm", "fit": "fit", "demo": "demo"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bayeslmm",
        description="Bayesian and REML linear mixed models for quantitative genetics.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS.values():
        try:
            mod = importlib.import_module(f"bayeslmm.commands.{module}")
        except ModuleNotFoundError as exc:
            if exc.name == f"bayeslmm.commands.{module}":
                continue  # subcommand not built yet
            raise
        mod.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except BayesLMMError as exc:
        # Input errors are the user's to fix: print the message, not a traceback.
        print(f"bayeslmm {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
