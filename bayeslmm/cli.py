"""Command line: ``bayeslmm SUBCOMMAND ...``.

Each subcommand lives in :mod:`bayeslmm.commands` as a module with ``add_parser(subparsers)``
and ``run(args) -> int``; this file only wires them together and turns errors into one line
of text and an exit status (documented in docs/errors.md):

====  =====================================================================================
0     success: every output file was written
1     unexpected error (a bug): one line; ``--debug`` shows the Python traceback
2     bad input or usage: the message says what to fix; no output file was changed
130   interrupted (Ctrl-C)
====  =====================================================================================
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import traceback
import warnings

from bayeslmm._imports import command_process, long_lived_imports
from bayeslmm._version import __version__
from bayeslmm.errors import BayesLMMError

EXIT_OK, EXIT_BUG, EXIT_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130

EPILOG = """\
exit status: 0 success; 2 bad input or usage (the message says what to fix; no output
file was changed); 1 unexpected error, a bug (run again with --debug for the traceback);
130 interrupted. Every message is listed in docs/errors.md.
"""

#: Subcommand name -> module in bayeslmm.commands.
COMMANDS = {"grm": "grm", "fit": "fit", "scan": "scan", "report": "report", "demo": "demo"}


def build_parser() -> argparse.ArgumentParser:
    """The ``bayeslmm`` parser with every subcommand.

    Examples
    --------
    >>> build_parser().parse_args(["--debug", "demo"]).debug
    True
    """
    parser = argparse.ArgumentParser(
        prog="bayeslmm",
        description="Bayesian and REML linear mixed models for quantitative genetics.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    parser.add_argument("--version", action="version", version=f"bayeslmm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS.values():
        try:
            mod = importlib.import_module(f"bayeslmm.commands.{module}")
        except ModuleNotFoundError as exc:
            if exc.name == f"bayeslmm.commands.{module}":
                continue  # subcommand not built yet
            raise
        subparser = mod.add_parser(sub)
        # Also after the subcommand; SUPPRESS keeps a --debug given before it.
        subparser.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP
        )
        subparser.epilog = EPILOG
        subparser.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser


_DEBUG_HELP = "on an error, also print the Python traceback (for bug reports)"


def main(argv: list[str] | None = None) -> int:
    """Run ``bayeslmm`` with ``argv``; return the exit status (usage errors exit through
    argparse with status 2).

    Examples
    --------
    >>> main(["fit", "data.csv", "--formula", "y ~ 1", "--kinship", "id", "--out", "o"])
    2
    """
    # argv None: this process is the command (the console script, python -m bayeslmm.cli)
    with command_process() if argv is None else contextlib.nullcontext():
        with long_lived_imports():  # every subcommand's module
            parser = build_parser()
        return _run(parser.parse_args(argv))


def _run(args: argparse.Namespace) -> int:
    prog = f"bayeslmm {args.command}"
    debug = bool(getattr(args, "debug", False))
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning(prog)
        try:
            return int(args.run(args) or 0)
        except BayesLMMError as exc:
            # Input errors are the user's to fix: print the message, not a traceback.
            return _fail(prog, f"error: {exc}", EXIT_INPUT, debug)
        except OSError as exc:  # a file that cannot be read or written
            return _fail(prog, f"error: {_os_message(exc)}", EXIT_INPUT, debug)
        except KeyboardInterrupt:
            return _fail(prog, "interrupted.", EXIT_INTERRUPTED, debug)
        except Exception as exc:
            return _fail(
                prog,
                f"unexpected error: {type(exc).__name__}: {exc}. This looks like a bug in "
                "bayeslmm: run the same command with --debug to see the traceback, and report "
                "it with the command line you used.",
                EXIT_BUG,
                debug,
            )


def _fail(prog: str, message: str, code: int, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    print(f"{prog}: {message}", file=sys.stderr)
    return code


def _os_message(exc: OSError) -> str:
    """``[Errno 13] Permission denied: 'x'`` in words: what, where, and the other path."""
    where = f" {exc.filename!r}" if exc.filename else ""
    if exc.filename2:
        where += f" -> {exc.filename2!r}"
    return f"{exc.strerror or exc}:{where}" if where else str(exc.strerror or exc)


def _one_line_warning(prog: str):
    """``warnings.showwarning`` replacement: one line, no source location."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        label = "note" if issubclass(category, UserWarning) else "warning"
        text = str(message)
        if category.__name__ == "KinshipScaleWarning":
            text += " From the command line: bayeslmm grm --normalize writes it at mean diagonal 1."
        print(f"{prog}: {label}: {text}", file=file or sys.stderr)

    return show


if __name__ == "__main__":
    sys.exit(main())
