"""`vigil validate-config`: check config.yaml and report each problem with its line."""

from __future__ import annotations

import argparse
import sys

from pipeline.commands import add_config_arg
from pipeline.configfile import load_config
from pipeline.errors import ConfigError
from pipeline.terminal import EXIT_OK, EXIT_USAGE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arg(parser)


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            print(line, file=sys.stderr)
        return EXIT_USAGE
    print(f"{args.config}: OK ({len(config.cameras)} camera{'' if len(config.cameras) == 1 else 's'})")
    return EXIT_OK
