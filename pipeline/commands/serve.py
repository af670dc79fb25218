"""`vigil serve`: the console over an existing event store, without running cameras, until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse

from pipeline import assembly
from pipeline.commands import EXIT_OK, add_config_arg, load_for_run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arg(parser)


def run(args: argparse.Namespace) -> int:
    assembly.serve(load_for_run(args))
    return EXIT_OK
