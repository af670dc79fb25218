"""`vigil eval`: fit on a benchmark's normal clips, replay its test clips through the streaming graph,
report frame AUC (micro/macro, causal and centred smoothing), RBDC/TBDC, localisation and speed.

Everything is learnt from the training clips (thresholds, calibration); test labels are only read
by the metric functions. The test clips are replayed together, one camera per clip, by the real
runner in lossless replay mode; an `on_packet` callback records each frame's scores and boxes.

`--cache DIR` also saves each clip's perception output (pipeline.evaluation.cache); `--from-cache DIR`
skips perception: the fit uses the cached training samples and the runner replays the cached test
clips through cached_perception -> score -> explain -> events (no media). `--ablate-each` scores every
attribute left out and alone over one cache and one model. The JSON's `mode` says which path made it;
headline figures come from the streaming path only. Per-clip `diagnostics` name the attributes behind
the highest-scoring normal frames and behind the anomalous frames (report only, nothing tuned on them).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline import assembly
from pipeline.config import VigilConfig
from pipeline.errors import ConfigError, SourceError
from pipeline.evaluation.cache import (
    CachedSource,
    ClipRecord,
    ClipRecorder,
    PerceptionCache,
    perception_key,
)
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
from pipeline.fitting import collect_samples, footage_names
from pipeline.logs import fields
from pipeline.packets import Event, FramePacket, Scores
from pipeline.runner import RunnerOptions, RunReport
from pipeline.sinks.base import EventSink
from pipeline.sources.base import Source
from pipeline.sources.file import FileSource
from pipeline.sources.limited import LimitedSource
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
    cache = parser.add_mutually_exclusive_group()
    cache.add_argument(
        "--cache", type=Path, default=None, help="also save every clip's perception output in this folder"
    )
    cache.add_argument(
        "--from-cache",
        type=Path,
        default=None,
        help="skip perception: fit and score from the clips saved by --cache (ablations, diagnostics)",
    )
    parser.add_argument(
        "--ablate-each",
        action="store_true",
        help="with --from-cache: every attribute left out and alone; table and <out>/ablation.json",
    )


def result_name(
    dataset: str,
    attributes: Sequence[str] | None = None,
    ablate: Sequence[str] | None = None,
    cached: bool = False,
) -> str:
    """File name of a result: `ped2.json`, `ped2-only-speed+pose.json`, `ped2-minus-appearance.json`;
    `ped2-cached*.json` when scored from the perception cache (never the headline file)."""
    if cached:
        dataset = f"{dataset}-cached"
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


def clip_sources(clips: Sequence[Ped2Clip], max_frames: int | None) -> list[Source]:
    return [LimitedSource(FileSource(c.name, c.path), max_frames) for c in clips]


@dataclass
class ClipTrace:
    """What the replay recorded for one test clip, indexed by frame."""

    frame_score: dict[int, float] = field(default_factory=dict)
    smoothed: dict[int, float] = field(default_factory=dict)
    boxes: dict[int, np.ndarray] = field(default_factory=dict)
    box_scores: dict[int, np.ndarray] = field(default_factory=dict)
    #: the highest-scoring attribute of the frame's highest-scoring object ("" when nothing scored)
    top_attribute: dict[int, str] = field(default_factory=dict)

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
        trace.top_attribute[frame.index] = top_attribute(scores)


def top_attribute(scores: Scores) -> str:
    """Name of the largest attribute score of the frame's top object ("" when no object has one)."""
    if len(scores.object_score) == 0:
        return ""
    row = scores.attribute_scores[int(np.argmax(scores.object_score))]
    if not np.isfinite(row).any():
        return ""
    return scores.attribute_names[int(np.nanargmax(row))]


# ---- graph ---------------------------------------------------------------------------------------


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
    options = RunnerOptions(live=False, realtime=False, drain_timeout_s=DRAIN_TIMEOUT_S)
    return assembly.replay(stages, sources, options, sinks=sinks, on_packet=on_packet)


# ---- the command ---------------------------------------------------------------------------------


def _load_config(path: str | None) -> VigilConfig:
    from pipeline.configfile import load_config

    if path is not None:
        return load_config(path)
    if Path("config.yaml").is_file():
        return load_config("config.yaml")
    return VigilConfig()


def _out_path(args: argparse.Namespace, attributes: list[str] | None, ablate: list[str] | None) -> Path:
    name = result_name(args.dataset, attributes, ablate, cached=args.from_cache is not None)
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


def _eval_config(config: VigilConfig, judged: list[str] | None, out: Path, cached: bool) -> VigilConfig:
    """Scoring judges `judged`; media go next to the result; from the cache, no media at all."""
    events = {"media_dir": out.parent / f"{out.stem}-media", "clips": False}
    if cached:
        events["snapshots"] = False
    return config.model_copy(
        update={
            "scoring": config.scoring.model_copy(update={"attributes": judged}),
            "events": config.events.model_copy(update=events),
        }
    )


def train_sources(train: Sequence[Ped2Clip]) -> dict[str, str]:
    """Source (camera) name `collect_samples` gives each training file -> clip name.

    The names `collect_samples` gives, so cached samples fit the same model (the held-out split
    depends on these names).
    """
    return dict(zip(footage_names([c.path for c in train]), (c.name for c in train), strict=True))


def _fit(
    args: argparse.Namespace,
    config: VigilConfig,
    train: Sequence[Ped2Clip],
    cache: PerceptionCache | None,
    out: Path,
) -> tuple[NormalityModel, dict[str, object]]:
    from stages.normality import NormalityModel, fit_normality

    if args.model is not None:
        return NormalityModel.load(args.model, config.scoring.device), {
            "model": str(args.model),
            "loaded": True,
        }
    t0 = time.monotonic()
    names = train_sources(train)
    if args.from_cache is not None:
        assert cache is not None
        samples = cache.load_samples(names, CAMERA)
    else:
        samples = collect_samples(config, CAMERA, [c.path for c in train], args.max_frames)
        if cache is not None:
            cache.save_samples(names, samples)
    collect_s = time.monotonic() - t0
    model = fit_normality(samples, config.scoring, args.seed, grid=config.attributes.grid)
    model_path = model.save(out.parent / f"{out.stem}-model.npz")
    info = {
        "model": str(model_path),
        "frames": len(samples),
        "objects": int(sum(len(s.attributes) for s in samples)),
        "collect_s": round(collect_s, 1),
        "fit_s": round(time.monotonic() - t0 - collect_s, 1),
    }
    log.info("model ready", extra=fields(stage="eval", **info))
    return model, info


@dataclass
class ReplayResult:
    collector: TraceCollector
    events: EventLog
    report: RunReport


def _check(report: RunReport) -> None:
    if report.source_errors:
        raise SourceError(f"test clips failed: {report.source_errors}")
    if not report.clean_shutdown:
        raise SourceError("eval: the replay did not drain; frames were lost, no figures written")


def replay_streaming(
    config: VigilConfig,
    model: NormalityModel,
    test: Sequence[Ped2Clip],
    max_frames: int | None,
    cache: PerceptionCache | None,
) -> ReplayResult:
    """The headline path: the whole streaming graph over the test clips (and the cache written)."""
    collector, events = TraceCollector(), EventLog()
    recorder = ClipRecorder() if cache is not None else None

    def on_packet(packet: FramePacket) -> None:
        collector(packet)
        if recorder is not None:
            recorder(packet)

    report = replay(
        assembly.analysis_stages(config, {"*": model}), clip_sources(test, max_frames), on_packet, [events]
    )
    _check(report)
    if cache is not None and recorder is not None:
        for clip in test:
            cache.save("test", recorder.record(clip.name, report.frames_decoded.get(clip.name, 0)))
    return ReplayResult(collector, events, report)


def replay_cached(config: VigilConfig, model: NormalityModel, records: Sequence[ClipRecord]) -> ReplayResult:
    """Scoring only, through the real runner: cached perception -> score -> explain -> events."""
    from stages.cached_perception import CachedPerceptionStage

    collector, events = TraceCollector(), EventLog()
    stages = [
        CachedPerceptionStage({r.camera: r for r in records}),
        *assembly.scoring_stages(config, {"*": model}),
    ]
    report = replay(stages, [CachedSource(r) for r in records], collector, [events])
    _check(report)
    # what the streaming run decoded (frames_decoded cuts the labels to the analysed frames)
    report.frames_decoded = {r.camera: r.frames_decoded for r in records}
    return ReplayResult(collector, events, report)


def _replay_info(rr: ReplayResult, cameras: int, cached: bool) -> dict[str, object]:
    report = rr.report
    frames = sum(report.frames_completed.values())
    return {
        "frames": frames,
        "wall_s": round(report.wall_s, 2),
        "fps": _r(frames / report.wall_s if report.wall_s > 0 else float("nan"), 2),
        "fps_note": "scoring stages only (perception from the cache)" if cached else "whole streaming graph",
        "cameras_at_once": cameras,
        "stage_errors": report.stage_errors,
        "events": report.events,
        "clean_shutdown": report.clean_shutdown,
    }


def run(args: argparse.Namespace) -> int:
    only, ablate = _names(args.attributes), _names(args.ablate)
    if args.max_frames is not None and args.max_frames < 1:
        raise ConfigError("--max-frames must be >= 1")
    cached = args.from_cache is not None
    if args.ablate_each and not cached:
        raise ConfigError("--ablate-each needs --from-cache DIR (perception is not re-run per attribute)")
    if args.ablate_each and (only or ablate):
        raise ConfigError("--ablate-each runs every attribute itself; drop --attributes / --ablate")
    base = _load_config(args.config)
    judged = judged_attributes(only, ablate)
    out = _out_path(args, only, ablate)
    config = _eval_config(base, judged, out, cached)
    data = Ped2.open(args.data)
    train = data.train_clips(_names(args.train_clips))
    test = data.test_clips(_names(args.clips))
    key = perception_key(config, args.max_frames)
    cache_dir = args.from_cache if cached else args.cache
    cache = PerceptionCache(cache_dir, args.dataset, key) if cache_dir is not None else None
    records = [cache.load("test", c.name) for c in test] if cached and cache is not None else []
    result: dict[str, object] = {
        "dataset": args.dataset,
        "mode": "from-cache" if cached else "streaming",
        "mode_note": (
            "from-cache: scoring stages replayed over cached perception (ablations, diagnostics); "
            "headline figures come only from mode=streaming"
        ),
        "perception_cache": {"dir": str(cache_dir), "key": key, "written": not cached} if cache else None,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "git": _git_commit(),
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
        "attributes": judged or "all",
        "train_clips": [c.name for c in train],
        "test_clips": [c.name for c in test],
        "max_frames": args.max_frames,
        "seed": args.seed,
        "config": config.model_dump(
            mode="json",
            include={"detector", "pose", "appearance", "flow", "attributes", "scene_graph", "scoring"},
        ),
    }
    model, result["fit"] = _fit(args, config, train, cache, out)

    if args.ablate_each:
        return ablate_each(args, base, out, data, test, model, records, result)

    if cached:
        rr = replay_cached(config, model, records)
    else:
        rr = replay_streaming(config, model, test, args.max_frames, cache)
    result["replay"] = _replay_info(rr, len(test), cached)
    result.update(evaluate(data, test, rr.collector, config.scoring.smoothing_frames, rr.report))
    for clip in test:
        result["per_clip"][clip.name]["events"] = rr.events.counts(clip.name)  # type: ignore[index]
    events_path = out.parent / f"{out.stem}-events.jsonl"
    events_path.parent.mkdir(parents=True, exist_ok=True)
    events_path.write_text("".join(json.dumps(ev.to_json()) + "\n" for ev in rr.events.events))
    result["events_file"] = str(events_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    if not args.no_plot:
        result["plot"] = str(
            plot(
                out.with_suffix(".png"),
                test,
                rr.collector,
                config.scoring.smoothing_frames,
                config.events.start_score,
            )
        )
        out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result), file=sys.stdout)
    print(diagnostics_table(result), file=sys.stdout)
    print(f"vigil: eval written to {out}", file=sys.stderr)
    return 0


# ---- ablation ------------------------------------------------------------------------------------


def ablation_variants() -> list[tuple[str, list[str] | None]]:
    """(label, judged attributes): all, then per attribute the run without it and with only it."""
    from stages.normality import ATTRIBUTES

    out: list[tuple[str, list[str] | None]] = [("all", None)]
    for a in ATTRIBUTES:
        out.append((f"-{a}", [b for b in ATTRIBUTES if b != a]))
        out.append((f"only {a}", [a]))
    return out


def summary_row(label: str, figures: dict[str, object], k: int) -> dict[str, object]:
    auc = figures["frame_auc"]
    loc = figures["localisation"]
    assert isinstance(auc, dict) and isinstance(loc, dict)
    return {
        "variant": label,
        "micro_causal": auc[f"causal_{k}"]["micro"],
        "macro_causal": auc[f"causal_{k}"]["macro"],
        "micro_centred": auc[f"centred_{k}"]["micro"],
        "macro_centred": auc[f"centred_{k}"]["macro"],
        "localisation": loc["share"],
        "rbdc": figures["rbdc"],
        "tbdc": figures["tbdc"],
    }


ABLATION_COLUMNS = (
    "micro_causal",
    "macro_causal",
    "micro_centred",
    "macro_centred",
    "localisation",
    "rbdc",
    "tbdc",
)


def ablation_table(rows: Sequence[dict[str, object]]) -> str:
    heads = ("micro c", "macro c", "micro ctr", "macro ctr", "loc", "RBDC", "TBDC")
    lines = [f"{'variant':<24}" + "".join(f"{h:>10}" for h in heads)]
    for row in rows:
        lines.append(f"{row['variant']!s:<24}" + "".join(f"{row[c]!s:>10}" for c in ABLATION_COLUMNS))
    return "\n".join(lines)


def ablate_each(
    args: argparse.Namespace,
    base: VigilConfig,
    out: Path,
    data: Ped2,
    test: Sequence[Ped2Clip],
    model: NormalityModel,
    records: Sequence[ClipRecord],
    result: dict[str, object],
) -> int:
    """Every ablation variant scored over the same cached perception and the same fitted model."""
    gts = {c.name: data.masks(c.name) for c in test}
    rows = []
    t0 = time.monotonic()
    for label, judged in ablation_variants():
        config = _eval_config(base, judged, out, cached=True)
        k = config.scoring.smoothing_frames
        rr = replay_cached(config, model, records)
        figures = evaluate(data, test, rr.collector, k, rr.report, masks=gts)
        rows.append(summary_row(label, figures, k))
        log.info("ablation variant done", extra=fields(stage="eval", variant=label))
    path = args.out if args.out is not None and args.out.suffix == ".json" else out.parent / "ablation.json"
    result.pop("attributes", None)
    result["ablation"] = rows
    result["ablation_note"] = (
        "one model fitted once on cached training perception; each variant judges only its attributes "
        "(scoring.attributes); causal/centred = smoothed frame scores as in the main result"
    )
    result["ablation_s"] = round(time.monotonic() - t0, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(ablation_table(rows), file=sys.stdout)
    print(f"vigil: ablation written to {path}", file=sys.stderr)
    return 0


def evaluate(
    data: Ped2,
    test: Sequence[Ped2Clip],
    collector: TraceCollector,
    k: int,
    report: RunReport,
    masks: dict[str, np.ndarray] | None = None,
) -> dict[str, object]:
    """All metrics from the recorded traces; labels are cut to the frames that were analysed.

    `masks` (clip -> pixel masks) saves re-reading them when one test set is scored many times.
    """
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
        mask = masks[clip.name] if masks is not None else data.masks(clip.name)
        gts.append(regions_from_masks(mask[:n]))
        b, s = trace.per_frame_boxes(n)
        boxes.append(b)
        box_scores.append(s)
        per_clip[clip.name] = {
            "frames": n,
            "anomalous": int(y.sum()),
            "frames_without_score": missing,
            "diagnostics": clip_diagnostics(trace, series, y),
        }

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
        "diagnostics": overall_diagnostics(per_clip),
        "per_clip": per_clip,
    }


TOP_NORMAL_FRAMES = 10  # per clip: the highest-scoring normal frames whose reasons are reported


def _count(names: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in names:
        out[n or "none"] = out.get(n or "none", 0) + 1
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


def clip_diagnostics(trace: ClipTrace, series: np.ndarray, y: np.ndarray) -> dict[str, object]:
    """What drives the scores of one clip (for the report only: nothing is tuned on it).

    The top attribute of a frame is the largest attribute score of its highest-scoring object.
    `false_alarm_attributes`: over the TOP_NORMAL_FRAMES highest-scoring normal frames;
    `anomaly_attributes`: over every anomalous frame.
    """
    normal = np.flatnonzero(~y)
    top = normal[np.argsort(-series[normal], kind="stable")[:TOP_NORMAL_FRAMES]]
    anomalous = np.flatnonzero(y)
    return {
        "top_normal_frames": [int(t) for t in top],
        "top_normal_scores": [_r(series[t], 3) for t in top],
        "false_alarm_attributes": _count([trace.top_attribute.get(int(t), "") for t in top]),
        "anomaly_attributes": _count([trace.top_attribute.get(int(t), "") for t in anomalous]),
    }


def overall_diagnostics(per_clip: dict[str, dict[str, object]]) -> dict[str, object]:
    totals: dict[str, dict[str, int]] = {"false_alarm_attributes": {}, "anomaly_attributes": {}}
    for c in per_clip.values():
        d = c["diagnostics"]
        assert isinstance(d, dict)
        for key, total in totals.items():
            for name, n in d[key].items():
                total[name] = total.get(name, 0) + n
    return {
        "note": (
            "top attribute = largest attribute score of the frame's highest-scoring object; "
            f"false alarms: the {TOP_NORMAL_FRAMES} highest-scoring normal frames of each clip; "
            "anomalies: every anomalous frame. Diagnostics only: nothing is tuned on test labels"
        ),
        **{k: dict(sorted(v.items(), key=lambda kv: (-kv[1], kv[0]))) for k, v in totals.items()},
    }


def diagnostics_table(result: dict[str, object]) -> str:
    d = result["diagnostics"]
    assert isinstance(d, dict)
    lines = []
    for key, title in (
        ("false_alarm_attributes", f"top attribute, {TOP_NORMAL_FRAMES} highest normal frames/clip"),
        ("anomaly_attributes", "top attribute, anomalous frames"),
    ):
        lines.append(f"{title}: " + ", ".join(f"{a} {n}" for a, n in d[key].items()))
    return "\n".join(lines)


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
