"""`vigil replay`: video files (or image folders) through the pipeline, lossless, one camera each."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from pydantic import ValidationError

from pipeline.commands import add_config_arg, load_for_run, run_cameras
from pipeline.config import CameraConfig, camera_name_problem
from pipeline.configfile import validation_message
from pipeline.errors import ConfigError, SourceError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="video files (or image folders) to replay")
    add_config_arg(parser)
    parser.add_argument("--realtime", action="store_true", help="pace frames by their timestamps")
    parser.add_argument("--camera", help="camera name to use (one FILE only); default: the file's stem")


def run(args: argparse.Namespace) -> int:
    config = load_for_run(args)
    if args.camera is not None and len(args.files) != 1:
        raise ConfigError("--camera names one camera: give exactly one FILE with it")
    if args.camera is not None and (problem := camera_name_problem(args.camera)):
        raise ConfigError(f"--camera: {problem}")
    by_name = {c.name: c for c in config.cameras}
    cameras: list[CameraConfig] = []
    for file in args.files:
        path = Path(file)
        if not path.exists():
            raise SourceError(f"{file}: no such file or folder")
        name = args.camera or _camera_name(path)
        if name in (c.name for c in cameras):
            raise ConfigError(
                f"two files would both be camera {name!r}: rename one or replay them separately"
            )
        known = by_name.get(name)
        try:
            if known is not None:  # keep the camera's own settings (model, analysis_fps), replace the url
                cameras.append(known.model_copy(update={"url": str(path.resolve()), "kind": "auto"}))
            else:
                cameras.append(CameraConfig(name=name, url=str(path.resolve())))
        except ValidationError as exc:
            raise ConfigError(f"{file}: cannot make a camera of it: {validation_message(exc)}") from None
    return run_cameras(config, cameras, live=False, realtime=args.realtime)


def _camera_name(path: Path) -> str:
    """A file's stem (a folder's name) made a valid camera name."""
    stem = path.stem if path.is_file() else path.resolve().name
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", stem)[:64]
    return name if camera_name_problem(name) is None else "camera"
