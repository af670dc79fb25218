"""`vigil fit`: learn a camera's normality model from normal footage.

The real perception graph (decode -> detect -> pose -> appearance -> flow -> attributes -> scene
graph) runs over the files through the real runner in lossless replay mode; every analysed frame
becomes a FrameSample, and `fit_normality` builds and calibrates the model from them.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from pipeline.config import VigilConfig, camera_name_problem, perception_differences, perception_settings
from pipeline.errors import ConfigError, SourceError
from pipeline.packets import Frame
from pipeline.sources.base import Source, SourceMonitor
from pipeline.stage import Stage

if TYPE_CHECKING:
    from stages.normality import FrameSample, NormalityModel
    from stages.normality.alert_budget import AlertCurve

log = logging.getLogger("vigil.fit")

FIT_DRAIN_TIMEOUT_S = 3600.0
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm")


class _Footage(Source):
    """A finite source, optionally cut to its first `limit` frames, ticking a shared progress bar."""

    live = False

    def __init__(self, inner: Source, limit: int | None, progress: tqdm) -> None:
        self.inner = inner
        self.camera = inner.camera
        self.limit = limit
        self.progress = progress

    def frames(self, stop: threading.Event, monitor: SourceMonitor) -> Iterator[Frame]:
        for i, frame in enumerate(self.inner.frames(stop, monitor)):
            if self.limit is not None and i >= self.limit:
                return
            self.progress.update(1)
            yield frame


def perception_stages(config: VigilConfig) -> list[Stage]:
    """decode -> detect -> pose -> appearance -> flow -> attributes -> scene_graph (no scoring)."""
    from stages.factory import perception_stages as from_factory

    return from_factory(config)


def video_files(paths: Sequence[str | Path]) -> list[Path]:
    """Files as given, folders expanded to their videos (sorted); missing paths are a SourceError."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in VIDEO_SUFFIXES)
            if not found:
                raise SourceError(f"{p}: folder has no video files ({', '.join(VIDEO_SUFFIXES)})")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise SourceError(f"{p}: no such file or folder")
    return out


def collect_samples(
    config: VigilConfig,
    camera: str,
    files: Sequence[str | Path],
    max_frames: int | None = None,
    stages: Sequence[Stage] | None = None,
) -> list[FrameSample]:
    """Run the perception graph over `files` (each its own source) and return one sample per frame."""
    from pipeline.harness import run_stages
    from pipeline.runner import RunnerOptions
    from pipeline.sources.file import FileSource
    from stages.normality import FrameSample

    paths = video_files(files)
    clip_names = [f"{i:03d}_{p.stem}"[:64] for i, p in enumerate(paths)]
    progress = tqdm(desc="fit: perception", unit="frame")
    sources: list[Source] = [
        _Footage(FileSource(n, p), max_frames, progress) for n, p in zip(clip_names, paths, strict=True)
    ]
    options = RunnerOptions(
        live=False,
        ingress_capacity=config.runtime.ingress_capacity,
        pipe_capacity=config.runtime.pipe_capacity,
        drain_timeout_s=FIT_DRAIN_TIMEOUT_S,  # finite replay: wait for every frame, however slow the stages
    )
    graph = list(stages) if stages is not None else perception_stages(config)
    with progress:
        packets, report = run_stages(graph, sources, options=options)
    if report.source_errors:
        clip, message = next(iter(report.source_errors.items()))
        raise SourceError(f"fit: clip {clip}: {message}")
    if not report.clean_shutdown:
        raise SourceError("fit: the perception graph did not drain; frames were lost, model not built")
    if report.stage_errors:
        log.warning("perception stage errors while fitting", extra={"errors": dict(report.stage_errors)})
    samples = []
    for p in packets:
        if p.attributes is None:
            continue
        samples.append(
            FrameSample(
                camera=camera,
                clip=p.frame.camera,
                pts=p.frame.pts,
                width=p.frame.width,
                height=p.frame.height,
                attributes=p.attributes,
                scene_graph=p.scene_graph,
            )
        )
    return samples


def fit_camera(
    config: VigilConfig,
    camera: str,
    files: Sequence[str | Path],
    seed: int = 0,
    max_frames: int | None = None,
) -> NormalityModel:
    from stages.normality import fit_normality

    samples = collect_samples(config, camera, files, max_frames)
    model = fit_normality(samples, config.scoring, seed, grid=config.attributes.grid)
    model.perception = perception_settings(config)
    model.false_alerts = estimate_false_alerts(config, samples, seed)
    return model


def estimate_false_alerts(
    config: VigilConfig, samples: Sequence[FrameSample], seed: int
) -> AlertCurve | None:
    """Cross-validation over the normal clips, on the perception already computed (None: one clip, or
    `scoring.crossval_folds` 0)."""
    from stages.normality.crossval import MIN_CLIPS, cross_validate

    clips = len({s.clip for s in samples})
    if config.scoring.crossval_folds == 0 or clips < MIN_CLIPS:
        log.warning(
            "no false-alert estimate: it needs two or more normal clips and scoring.crossval_folds > 0",
            extra={"clips": clips, "folds": config.scoring.crossval_folds},
        )
        return None
    estimate = cross_validate(
        samples, config.scoring, seed, grid=config.attributes.grid, folds=config.scoring.crossval_folds
    )
    return estimate.curve(config.events)


def stale_settings(model: NormalityModel, config: VigilConfig) -> list[str]:
    """The perception settings that differ between the model's footage and `config` (empty: none, or
    not recorded)."""
    return perception_differences(model.perception, perception_settings(config))


def model_path(config: VigilConfig, camera: str, out: str | None) -> Path:
    if out:
        return Path(out)
    for c in config.cameras:
        if c.name == camera and c.model is not None:
            return c.model
    return config.scoring.models_dir / f"{camera}.npz"


# ---- CLI -------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE|DIR", help="normal footage: video files or folders")
    parser.add_argument("--camera", required=True, help="camera the model is for")
    parser.add_argument("-c", "--config", default="config.yaml", help="config file (default: ./config.yaml)")
    parser.add_argument("--out", help="model file (default: camera.model, else <models_dir>/NAME.npz)")
    parser.add_argument("--seed", type=int, default=0, help="seed of subsampling and training (default 0)")
    parser.add_argument("--max-frames", type=int, help="use only the first N frames of each file")


def run(args: argparse.Namespace) -> int:
    from pipeline.configfile import load_config

    config = load_config(args.config)
    if args.max_frames is not None and args.max_frames < 1:
        raise ConfigError(f"--max-frames: expected >= 1, got {args.max_frames}")
    if problem := camera_name_problem(args.camera):  # the model file is <models_dir>/<camera>.npz
        raise ConfigError(f"--camera: {problem}")
    from pipeline.cli import stdout_for_events_only

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
        print(
            f"vigil: fit: camera {args.camera}: {model.false_alerts.summary(config.events.start_score)}",
            file=sys.stderr,
        )
    return 0
