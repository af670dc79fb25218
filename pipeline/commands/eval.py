"""`vigil eval`: fit on a benchmark's normal clips, replay its test clips through the streaming graph,
report frame AUC (micro/macro, causal and centred smoothing), RBDC/TBDC, localisation and speed.

Everything is learnt from the training clips (thresholds, calibration); test labels are only read
by the metric functions. The test clips are replayed together, one camera per clip, by the real
runner in lossless replay mode; an `on_packet` callback records each frame's scores and boxes.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.config import VigilConfig
from pipeline.errors import ConfigError, SourceError
from pipeline.evaluation.metrics import (
    GroundTruthRegions,
    frame_auc_macro,
    frame_auc_micro,
    localisation,
    rbdc_tbdc,
    regions_from_masks,
    smooth_causal,
    smooth_centred,
)
from pipeline.evaluation.ped2 import Ped2, Ped2Clip
from pipeline.logs import fields
from pipeline.metrics import Metrics
from pipeline.packets import Event, Frame, FramePacket
from pipeline.runner import Runner, RunnerOptions, RunReport
from pipeline.sinks.base import EventSink
from pipeline.sources.base import Source, SourceMonitor
from pipeline.stage import Stage

if TYPE_CHECKING:
    from stages.normality import NormalityModel

log = logging.getLogger("vigil.eval")

CAMERA = "ped2"  # every Ped2 clip is the same camera: one normality model
DEFAULT_OUT = Path("var/eval")
DRAIN_TIMEOUT_S = 3600.0  # replay: stages must finish every queued frame, however slow the machine


# ---- arguments -----------------------------------------------------------------------------------


def _names(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", choices=["ped2"], default="ped2")
    parser.add_argument(
        "--data", required=True, type=Path, help="dataset folder, e.g. ../shared/data/ucsd_ped2"
    )
    parser.add_argument(
        "-c", "--config", default=None, help="config file (default: ./config.yaml if present)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="result JSON file, or a folder for <dataset>[-ablation].json"
    )
    parser.add_argument("--clips", help="test clips, comma separated (default: all)")
    parser.add_argument("--train-clips", help="training clips, comma separated (default: all)")
    parser.add_argument("--max-frames", type=int, default=None, help="analyse at most N frames of each clip")
    parser.add_argument(
        "--model", type=Path, default=None, help="use this saved normality model; skip fitting"
    )
    parser.add_argument("--seed", type=int, default=0)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--attributes", help="judge only these attributes (comma separated)")
    group.add_argument("--ablate", help="judge every attribute except these (comma separated)")
    parser.add_argument("--no-plot", action="store_true", help="skip the score-vs-ground-truth PNG")


def result_name(
    dataset: str, attributes: Sequence[str] | None = None, ablate: Sequence[str] | None = None
) -> str:
    """File name of a result: `ped2.json`, `ped2-only-speed+pose.json`, `ped2-minus-appearance.json`."""
    if attributes:
        return f"{dataset}-only-{'+'.join(attributes)}.json"
    if ablate:
        return f"{dataset}-minus-{'+'.join(ablate)}.json"
    return f"{dataset}.json"


def judged_attributes(attributes: Sequence[str] | None, ablate: Sequence[str] | None) -> list[str] | None:
    """The `scoring.attributes` list for `--attributes` / `--ablate` (None: all of them)."""
    from stages.normality import ATTRIBUTES

    chosen = attributes or ablate
    if not chosen:
        return None
    unknown = [a for a in chosen if a not in ATTRIBUTES]
    if unknown:
        raise ConfigError(f"unknown attributes {', '.join(unknown)}; known: {', '.join(ATTRIBUTES)}")
    if attributes:
        return list(attributes)
    kept = [a for a in ATTRIBUTES if a not in chosen]
    if not kept:
        raise ConfigError("--ablate removes every attribute; nothing would be judged")
    return kept


# ---- sources and collection ----------------------------------------------------------------------


class LimitedSource(Source):
    """The first `max_frames` frames of another finite source (all of them when None)."""

    live = False

    def __init__(self, inner: Source, max_frames: int | None) -> None:
        self.inner = inner
        self.camera = inner.camera
        self.max_frames = max_frames

    def frames(self, stop: threading.Event, monitor: SourceMonitor) -> Iterator[Frame]:
        frames = self.inner.frames(stop, monitor)
        try:
            for i, frame in enumerate(frames):
                if self.max_frames is not None and i >= self.max_frames:
                    return
                yield frame
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()


def clip_sources(clips: Sequence[Ped2Clip], max_frames: int | None) -> list[Source]:
    from pipeline.sources.file import FileSource

    return [LimitedSource(FileSource(c.name, c.path), max_frames) for c in clips]


@dataclass
class ClipTrace:
    """What the replay recorded for one test clip, indexed by frame."""

    frame_score: dict[int, float] = field(default_factory=dict)
    smoothed: dict[int, float] = field(default_factory=dict)
    boxes: dict[int, np.ndarray] = field(default_factory=dict)
    box_scores: dict[int, np.ndarray] = field(default_factory=dict)

    def series(self, n: int) -> tuple[np.ndarray, int]:
        """(n,) frame scores; frames with no score (skipped or failed) repeat the last one (causal)."""
        out = np.zeros(n, np.float64)
        last, missing = 0.0, 0
        for t in range(n):
            value = self.frame_score.get(t)
            if value is None or not np.isfinite(value):
                missing += 1
                value = last
            out[t] = last = value
        return out, missing

    def per_frame_boxes(self, n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        empty_b, empty_s = np.zeros((0, 4)), np.zeros(0)
        return (
            [self.boxes.get(t, empty_b) for t in range(n)],
            [self.box_scores.get(t, empty_s) for t in range(n)],
        )


class TraceCollector:
    """`on_packet` callback: keeps per-frame scores, object boxes and event counts per camera."""

    def __init__(self) -> None:
        self.traces: dict[str, ClipTrace] = {}

    def __call__(self, packet: FramePacket) -> None:
        frame = packet.frame
        trace = self.traces.setdefault(frame.camera, ClipTrace())
        scores, attrs = packet.scores, packet.attributes
        if scores is None or attrs is None:
            return
        trace.frame_score[frame.index] = float(scores.frame_score)
        trace.smoothed[frame.index] = float(scores.smoothed_score)
        rows = {int(t): i for i, t in enumerate(attrs.track_id.tolist())}
        idx = [rows.get(int(t), -1) for t in scores.track_id.tolist()]
        keep = np.array([i >= 0 for i in idx], bool)
        trace.boxes[frame.index] = attrs.xyxy[np.array(idx)[keep]].astype(np.float64).reshape(-1, 4)
        trace.box_scores[frame.index] = scores.object_score[keep].astype(np.float64)


# ---- graph ---------------------------------------------------------------------------------------


def full_stages(config: VigilConfig, models: dict[str, NormalityModel]) -> list[Stage]:
    """The whole streaming graph: `stages.factory` when it exists, else fit's perception + scoring."""
    try:
        from stages.factory import build_stages
    except ModuleNotFoundError as exc:
        if exc.name != "stages.factory":
            raise
    else:
        return list(build_stages(config, models))
    from pipeline.commands.fit import perception_stages
    from stages.events import EventStage
    from stages.explain import ExplainStage
    from stages.score import ScoreStage

    log.warning("stages.factory not found: eval builds the graph itself", extra=fields(stage="eval"))
    return [
        *perception_stages(config),
        ScoreStage(models, config.scoring),
        ExplainStage(models, config.scoring),
        EventStage(config.events),
    ]


class EventLog(EventSink):
    """Keeps every event message of the replay (including those sent at end of stream)."""

    name = "eval"

    def __init__(self) -> None:
        self.events: list[Event] = []

    def write(self, events: Sequence[Event]) -> None:
        self.events.extend(events)

    def counts(self, camera: str) -> dict[str, int]:
        out = {"new": 0, "update": 0, "end": 0}
        for ev in self.events:
            if ev.camera == camera:
                out[ev.kind] += 1
        return out


def replay(
    stages: list[Stage],
    sources: list[Source],
    on_packet: Callable[[FramePacket], None],
    sinks: Sequence[EventSink] = (),
) -> RunReport:
    from pipeline.graph import build_graph

    runner = Runner(
        build_graph(stages),
        sources,
        Metrics(),
        threading.Event(),
        sinks=sinks,
        options=RunnerOptions(live=False, realtime=False, drain_timeout_s=DRAIN_TIMEOUT_S),
        on_packet=on_packet,
    )
    return runner.run()


# ---- the command ---------------------------------------------------------------------------------


def _load_config(path: str | None) -> VigilConfig:
    from pipeline.configfile import load_config

    if path is not None:
        return load_config(path)
    if Path("config.yaml").is_file():
        return load_config("config.yaml")
    return VigilConfig()


def _out_path(args: argparse.Namespace, attributes: list[str] | None, ablate: list[str] | None) -> Path:
    name = result_name(args.dataset, attributes, ablate)
    if args.out is None:
        return DEFAULT_OUT / name
    return args.out if args.out.suffix == ".json" else args.out / name


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _r(x: float, nd: int = 4) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), nd)


def run(args: argparse.Namespace) -> int:
    only, ablate = _names(args.attributes), _names(args.ablate)
    if args.max_frames is not None and args.max_frames < 1:
        raise ConfigError("--max-frames must be >= 1")
    config = _load_config(args.config)
    judged = judged_attributes(only, ablate)
    out = _out_path(args, only, ablate)
    config = config.model_copy(
        update={
            "scoring": config.scoring.model_copy(update={"attributes": judged}),
            "events": config.events.model_copy(
                update={"media_dir": out.parent / f"{out.stem}-media", "clips": False}
            ),
        }
    )
    data = Ped2.open(args.data)
    train = data.train_clips(_names(args.train_clips))
    test = data.test_clips(_names(args.clips))
    result: dict[str, object] = {
        "dataset": args.dataset,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "git": _git_commit(),
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
        "attributes": judged or "all",
        "train_clips": [c.name for c in train],
        "test_clips": [c.name for c in test],
        "max_frames": args.max_frames,
        "seed": args.seed,
        "config": config.model_dump(
            mode="json", include={"detector", "pose", "flow", "attributes", "scoring"}
        ),
    }

    from stages.normality import NormalityModel, fit_normality

    t0 = time.monotonic()
    if args.model is not None:
        model = NormalityModel.load(args.model, config.scoring.device)
        result["fit"] = {"model": str(args.model), "loaded": True}
    else:
        from pipeline.commands.fit import collect_samples

        samples = collect_samples(config, CAMERA, [c.path for c in train], args.max_frames)
        collect_s = time.monotonic() - t0
        model = fit_normality(samples, config.scoring, args.seed, grid=config.attributes.grid)
        model_path = model.save(out.parent / f"{out.stem}-model.npz")
        result["fit"] = {
            "model": str(model_path),
            "frames": len(samples),
            "objects": int(sum(len(s.attributes) for s in samples)),
            "collect_s": round(collect_s, 1),
            "fit_s": round(time.monotonic() - t0 - collect_s, 1),
        }
    log.info("model ready", extra=fields(stage="eval", **result["fit"]))  # type: ignore[arg-type]

    collector = TraceCollector()
    events = EventLog()
    report = replay(
        full_stages(config, {"*": model}), clip_sources(test, args.max_frames), collector, [events]
    )
    if report.source_errors:
        raise SourceError(f"test clips failed: {report.source_errors}")
    if not report.clean_shutdown:
        raise SourceError("eval: the replay did not drain; frames were lost, no figures written")
    frames = sum(report.frames_completed.values())
    result["replay"] = {
        "frames": frames,
        "wall_s": round(report.wall_s, 2),
        "fps": _r(frames / report.wall_s if report.wall_s > 0 else float("nan"), 2),
        "cameras_at_once": len(test),
        "stage_errors": report.stage_errors,
        "events": report.events,
        "clean_shutdown": report.clean_shutdown,
    }
    result.update(evaluate(data, test, collector, config.scoring.smoothing_frames, report))
    for clip in test:
        result["per_clip"][clip.name]["events"] = events.counts(clip.name)  # type: ignore[index]
    events_path = out.parent / f"{out.stem}-events.jsonl"
    events_path.parent.mkdir(parents=True, exist_ok=True)
    events_path.write_text("".join(json.dumps(ev.to_json()) + "\n" for ev in events.events))
    result["events_file"] = str(events_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    if not args.no_plot:
        result["plot"] = str(
            plot(
                out.with_suffix(".png"),
                test,
                collector,
                config.scoring.smoothing_frames,
                config.events.start_score,
            )
        )
        out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result), file=sys.stdout)
    print(f"vigil: eval written to {out}", file=sys.stderr)
    return 0


def evaluate(
    data: Ped2, test: Sequence[Ped2Clip], collector: TraceCollector, k: int, report: RunReport
) -> dict[str, object]:
    """All metrics from the recorded traces; labels are cut to the frames that were analysed."""
    raw, labels, names = [], [], []
    gts: list[GroundTruthRegions] = []
    boxes, box_scores = [], []
    per_clip: dict[str, dict[str, object]] = {}
    missing_total = 0
    for clip in test:
        assert clip.labels is not None
        n = min(len(clip.labels), report.frames_decoded.get(clip.name, 0))
        trace = collector.traces.get(clip.name, ClipTrace())
        series, missing = trace.series(n)
        missing_total += missing
        y = clip.labels[:n]
        raw.append(series)
        labels.append(y)
        names.append(clip.name)
        gts.append(regions_from_masks(data.masks(clip.name)[:n]))
        b, s = trace.per_frame_boxes(n)
        boxes.append(b)
        box_scores.append(s)
        per_clip[clip.name] = {"frames": n, "anomalous": int(y.sum()), "frames_without_score": missing}

    variants = {
        "raw": raw,
        f"causal_{k}": [smooth_causal(x, k) for x in raw],
        f"centred_{k}": [smooth_centred(x, k) for x in raw],
    }
    auc: dict[str, object] = {}
    for label, series_list in variants.items():
        macro = frame_auc_macro(series_list, labels)
        auc[label] = {
            "micro": _r(frame_auc_micro(series_list, labels)),
            "macro": _r(macro.mean),
            "macro_clips": len(names) - len(macro.skipped),
            "macro_skipped": [names[i] for i in macro.skipped],
        }
        for name, value in zip(names, macro.per_clip, strict=True):
            per_clip[name][f"auc_{label}"] = _r(value)
    rt = rbdc_tbdc(boxes, box_scores, gts)
    loc = localisation(boxes, box_scores, gts, labels)
    return {
        "frame_auc": auc,
        "frame_auc_note": (
            f"raw = frame score (max over objects); causal_{k} = trailing mean of {k} frames "
            f"(what alerts use); centred_{k} = centred mean (offline only); "
            "macro skips clips with a single class"
        ),
        "rbdc": _r(rt.rbdc.area),
        "tbdc": _r(rt.tbdc.area),
        "rbdc_tbdc_note": "object boxes with raw object scores; beta=0.1 IoU, alpha=0.1, FPR in [0, 1]",
        "gt_regions": rt.n_regions,
        "gt_tracks": rt.n_tracks,
        "localisation": {
            "share": _r(loc.share),
            "hits": loc.hits,
            "evaluated": loc.evaluated,
            "no_box": loc.no_box,
        },
        "frames_without_score": missing_total,
        "per_clip": per_clip,
    }


def table(result: dict[str, object]) -> str:
    auc = result["frame_auc"]
    assert isinstance(auc, dict)
    lines = [f"{'variant':<14}{'micro AUC':>10}{'macro AUC':>10}  macro skipped"]
    for label, v in auc.items():
        lines.append(
            f"{label:<14}{v['micro']!s:>10}{v['macro']!s:>10}  {','.join(v['macro_skipped']) or '-'}"
        )
    replay_ = result["replay"]
    assert isinstance(replay_, dict)
    loc = result["localisation"]
    assert isinstance(loc, dict)
    lines.append(
        f"RBDC {result['rbdc']}  TBDC {result['tbdc']}  "
        f"localisation {loc['share']} ({loc['hits']}/{loc['evaluated']})"
    )
    lines.append(f"analysed fps {replay_['fps']} ({replay_['frames']} frames in {replay_['wall_s']} s)")
    per_clip = result["per_clip"]
    assert isinstance(per_clip, dict)
    keys = [k for k in next(iter(per_clip.values()), {}) if k.startswith("auc_")]
    lines.append(f"{'clip':<10}{'frames':>7}{'anom':>6}" + "".join(f"{k[4:]:>12}" for k in keys) + "  events")
    for name, c in per_clip.items():
        ev = c["events"]
        lines.append(
            f"{name:<10}{c['frames']:>7}{c['anomalous']:>6}"
            + "".join(f"{c[k]!s:>12}" for k in keys)
            + f"  {ev.get('new', 0) if isinstance(ev, dict) else 0}"
        )
    return "\n".join(lines)


def plot(
    path: Path, test: Sequence[Ped2Clip], collector: TraceCollector, k: int, alert_at: float | None = None
) -> Path:
    """One grid PNG: per clip, the raw and causal-smoothed frame score with anomalous frames shaded.

    Scores are calibrated, so every panel shares one y axis; `alert_at` draws the events' start_score.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 3
    rows = max(1, -(-len(test) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.4 * rows), squeeze=False, sharey=True)
    for ax, clip in zip(axes.flat, test, strict=False):
        assert clip.labels is not None
        trace = collector.traces.get(clip.name, ClipTrace())
        n = min(len(clip.labels), max(trace.frame_score, default=-1) + 1)
        series, _ = trace.series(n)
        t = np.arange(n)
        y = clip.labels[:n]
        ax.fill_between(
            t, 0, 1, where=y, transform=ax.get_xaxis_transform(), color="tab:red", alpha=0.15, lw=0
        )
        ax.plot(t, series, color="0.6", lw=0.8, label="frame score")
        ax.plot(t, smooth_causal(series, k) if n else series, color="tab:blue", lw=1.2, label=f"causal {k}")
        if alert_at is not None:
            ax.axhline(alert_at, color="tab:red", lw=0.8, ls="--")
        ax.set_title(clip.name, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(test) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
