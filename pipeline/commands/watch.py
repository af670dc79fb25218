"""`vigil watch`: analyse the configured cameras until SIGINT/SIGTERM (or until files end)."""

from __future__ import annotations

import argparse

from pipeline.commands import add_config_arg, load_for_run, run_cameras
from pipeline.errors import ConfigError
from pipeline.sources.factory import source_kind


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arg(parser)


def run(args: argparse.Namespace) -> int:
    config = load_for_run(args)
    if not config.cameras:
        raise ConfigError(f"{args.config}: no cameras configured (add a `cameras:` list)")
    mode = config.runtime.mode
    live = mode == "live" or (mode == "auto" and any(source_kind(c) == "rtsp" for c in config.cameras))
    return run_cameras(config, list(config.cameras), live=live, realtime=False)
