"""`vigil validate-config`: check config.yaml and report each problem with its line."""

from __future__ import annotations

import argparse
import sys

from pipeline.commands import DEFAULT_CONFIG, add_config_arg
from pipeline.configfile import load_config
from pipeline.errors import ConfigError
from pipeline.terminal import EXIT_OK, EXIT_USAGE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", nargs="?", metavar="FILE", help="config file (as with -c)")
    add_config_arg(parser)
    parser.set_defaults(config=None)  # to tell `-c` given from `-c` left out


def run(args: argparse.Namespace) -> int:
    if args.file is not None and args.config is not None:
        raise ConfigError(f"two config files given ({args.file} and -c {args.config}): give one")
    path = args.file or args.config or DEFAULT_CONFIG
    try:
        config = load_config(path)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            print(line, file=sys.stderr)
        return EXIT_USAGE
    print(f"{path}: OK ({len(config.cameras)} camera{'' if len(config.cameras) == 1 else 's'})")
    return EXIT_OK
