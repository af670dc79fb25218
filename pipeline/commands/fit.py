"""`vigil fit`: learn a camera's normality model from normal footage (see pipeline/fitting.py)."""

from __future__ import annotations

import argparse
import sys

from pipeline.config import camera_name_problem
from pipeline.configfile import load_config
from pipeline.errors import ConfigError
from pipeline.fitting import fit_camera, model_path
from pipeline.terminal import stdout_for_events_only


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE|DIR", help="normal footage: video files or folders")
    parser.add_argument("--camera", required=True, help="camera the model is for")
    parser.add_argument("-c", "--config", default="config.yaml", help="config file (default: ./config.yaml)")
    parser.add_argument("--out", help="model file (default: camera.model, else <models_dir>/NAME.npz)")
    parser.add_argument("--seed", type=int, default=0, help="seed of subsampling and training (default 0)")
    parser.add_argument("--max-frames", type=int, help="use only the first N frames of each file")


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.max_frames is not None and args.max_frames < 1:
        raise ConfigError(f"--max-frames: expected >= 1, got {args.max_frames}")
    if problem := camera_name_problem(args.camera):  # the model file is <models_dir>/<camera>.npz
        raise ConfigError(f"--camera: {problem}")
    with stdout_for_events_only(True):  # library banners to stderr: fit writes nothing to stdout
        model = fit_camera(config, args.camera, args.files, seed=args.seed, max_frames=args.max_frames)
    path = model.save(model_path(config, args.camera, args.out))
    c = model.counts
    print(
        f"vigil: fit: camera {args.camera}: {c['clips']} clips, {c['frames']} frames fitted, "
        f"{c['frames_held_out']} held out for calibration, {c['objects']} objects -> {path}",
        file=sys.stderr,
    )
    if model.false_alerts is not None:
        summary = model.false_alerts.summary(config.events.start_score)
        print(f"vigil: fit: camera {args.camera}: {summary}", file=sys.stderr)
    return 0
