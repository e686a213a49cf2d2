"""Subcommands of the command line; each module has ``add_parser`` and ``run``."""
