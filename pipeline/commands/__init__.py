"""The bodies of `vigil` subcommands, one module each, registered in pipeline/cli.py's COMMANDS table.

A command parses its arguments, calls the composition root (pipeline/assembly.py) or the modules
that do its job, and prints; no command imports another. What several commands share (the
`-c/--config` option, loading the config for a run, reporting a run's end) is here.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from pipeline import assembly
from pipeline.config import CameraConfig, VigilConfig
from pipeline.configfile import load_config, secrets_of
from pipeline.logs import fields, setup_logging
from pipeline.redaction import redact
from pipeline.terminal import EXIT_OK, EXIT_SOURCE_FAILED, summary_line

log = logging.getLogger("vigil.cli")

DEFAULT_CONFIG = "config.yaml"


def add_config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c", "--config", default=DEFAULT_CONFIG, help=f"config file (default: ./{DEFAULT_CONFIG})"
    )


def load_for_run(args: argparse.Namespace) -> VigilConfig:
    """The config file, with the logging level it asks for unless the command line set one."""
    config = load_config(args.config)
    if args.log_level is None and not args.debug:
        setup_logging(config.log_level)
    log.debug("config loaded", extra=fields(path=args.config, secrets=len(secrets_of(config))))
    return config


def run_cameras(config: VigilConfig, cameras: Sequence[CameraConfig], live: bool, realtime: bool) -> int:
    """Run the cameras to the end (or a signal), then the summary line and each failed source on stderr."""
    report = assembly.run(config, cameras, live=live, realtime=realtime)
    print(summary_line(report, [c.name for c in cameras]), file=sys.stderr)
    for camera, message in report.source_errors.items():
        print(f"vigil: error: camera {camera}: {redact(message, secrets_of(config))}", file=sys.stderr)
    return EXIT_SOURCE_FAILED if report.source_errors else EXIT_OK
