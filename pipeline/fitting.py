"""Normal footage -> normality model: the perception graph over the files, one sample per frame.

The real perception graph (decode -> detect -> pose -> appearance -> flow -> attributes -> scene
graph, from the composition root) runs over the files through the real runner in lossless replay
mode; every analysed frame becomes a FrameSample, and `fit_normality` builds and calibrates the
model from them. `vigil fit` and `vigil eval` both fit this way.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from pipeline import assembly
from pipeline.config import VigilConfig, perception_settings
from pipeline.errors import SourceError
from pipeline.packets import FramePacket
from pipeline.runner import RunnerOptions
from pipeline.sources.base import Source
from pipeline.sources.file import FileSource
from pipeline.sources.limited import LimitedSource
from pipeline.stage import Stage

if TYPE_CHECKING:
    from stages.normality import FrameSample, NormalityModel
    from stages.normality.crossval import FalseAlertEstimate

log = logging.getLogger("vigil.fit")

FIT_DRAIN_TIMEOUT_S = 3600.0
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm")


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


def footage_names(paths: Sequence[Path]) -> list[str]:
    """The source (camera) name of each file: its position and stem. The held-out calibration split
    depends on these names, so eval's cached samples must use the same ones."""
    return [f"{i:03d}_{p.stem}"[:64] for i, p in enumerate(paths)]


def collect_samples(
    config: VigilConfig,
    camera: str,
    files: Sequence[str | Path],
    max_frames: int | None = None,
    stages: Sequence[Stage] | None = None,
) -> list[FrameSample]:
    """Run the perception graph over `files` (each its own source) and return one sample per frame."""
    from stages.normality import FrameSample

    paths = video_files(files)
    clip_names = footage_names(paths)
    progress = tqdm(desc="fit: perception", unit="frame")
    sources: list[Source] = [
        LimitedSource(FileSource(n, p), max_frames, on_frame=lambda: progress.update(1))
        for n, p in zip(clip_names, paths, strict=True)
    ]
    options = RunnerOptions(
        live=False,
        ingress_capacity=config.runtime.ingress_capacity,
        pipe_capacity=config.runtime.pipe_capacity,
        drain_timeout_s=FIT_DRAIN_TIMEOUT_S,  # finite replay: wait for every frame, however slow the stages
    )
    graph = list(stages) if stages is not None else assembly.perception_stages(config)
    packets: list[FramePacket] = []
    with progress:
        report = assembly.replay(graph, sources, options, on_packet=packets.append)
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
    # The clips are replayed at once, so packets complete in an order that thread timing decides; the
    # fit (coreset subsampling, the dynamics predictor's training) depends on sample order. Clip by
    # clip in time order, the model is the same on every run, and the same as from a perception cache.
    order = {name: i for i, name in enumerate(clip_names)}
    samples.sort(key=lambda s: (order.get(s.clip, len(order)), s.pts))
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
    estimate = estimate_false_alerts(config, samples, seed)
    model.false_alerts = None if estimate is None else estimate.curve(config.events)
    return model


def estimate_false_alerts(
    config: VigilConfig, samples: Sequence[FrameSample], seed: int
) -> FalseAlertEstimate | None:
    """Cross-validation over the normal clips, on the perception already computed (None: one clip, or
    `scoring.crossval_folds` 0). The held-out clips' scores are kept: the model keeps the alert curve
    (`.curve(config.events)`), `vigil eval` also counts the held-out frames as normal frames."""
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
    return estimate


def model_path(config: VigilConfig, camera: str, out: str | None) -> Path:
    """Where a camera's model goes: `out`, else the camera's `model`, else <models_dir>/<camera>.npz."""
    if out:
        return Path(out)
    for c in config.cameras:
        if c.name == camera and c.model is not None:
            return c.model
    return config.scoring.models_dir / f"{camera}.npz"
