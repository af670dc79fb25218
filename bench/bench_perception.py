"""Perception graph speed: the full graph through the real Runner (replay) vs the naive ultralytics loop.

detect -> pose -> appearance -> flow -> attributes -> scene_graph, built by `stages.factory`, replayed
losslessly from a file; per-stage ms/frame come from the runner's `vigil_stage_latency_seconds`
histogram (sum / count), end-to-end analysed fps from the run's wall time (models loaded and warmed
up before the clock starts, as for the naive loop). The naive loop (`bench/naive.py`: `track` +
full-frame pose on every frame, same weights) runs on the same frames in the same process run.

    python -m bench.bench_perception [--clips Test004 640x360] [--detect-k 2] [--formats openvino pytorch]
        [--pose-k 2] [--pose-crop 128] [--flow-scale 1.0] [--model var/eval/s3/ped2-model.npz]
        [--out PATH.json]

With `--model` (a normality model file, used for every camera) the graph is the FULL explained one that
`vigil run` builds (`stages.factory.build_stages`: perception, then score -> explain -> events, with
snapshots, clips and the JSONL + SQLite sinks writing under var/bench/full/), and `--also-perception`
adds a perception-only run of each setting in the same process, so both figures come from one run.
The normality model's grid is normalised, so a model fit on 360x240 Ped2 times 640x360 footage fine.

With several --formats the graph runs once per pose/appearance format on each clip (same process, same
load), so the formats compare against each other under the same machine load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import threading
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")

import av
import yaml

from bench.clips import make_640x360
from bench.naive import naive_loop
from pipeline.config import VigilConfig
from pipeline.graph import build_graph
from pipeline.harness import FramesSource
from pipeline.metrics import Metrics
from pipeline.packets import Frame
from pipeline.runner import Runner, RunnerOptions
from pipeline.sinks.factory import make_sinks
from pipeline.sources.file import FileSource
from stages.factory import build_stages, perception_stages
from stages.normality import NormalityModel
from stages.score import ANY_CAMERA

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VIGIL_SHARED", REPO.parent / "shared"))
PED2 = SHARED / "data" / "ucsd_ped2" / "test"
MODELS = SHARED / "models"


def config(args: argparse.Namespace) -> VigilConfig:
    raw = {
        "detector": {"model": str(MODELS / "yolo11n_int8_openvino_model"), "device": args.device},
        "pose": {"model": str(MODELS / "yolo11n-pose.pt"), "device": args.device},
        "appearance": {"model": str(MODELS / "yolo11n-pose.pt"), "device": args.device},
    }
    if args.detect_k is not None:
        raw["detector"]["every_k_frames"] = args.detect_k
    if args.appearance_k is not None:
        raw["appearance"]["every_k_frames"] = args.appearance_k
    if args.pose_k is not None:
        raw["pose"]["every_k_frames"] = args.pose_k
    if args.pose_still_k is not None:
        raw["pose"]["still_k_frames"] = args.pose_still_k
    if args.pose_crop is not None:
        raw["pose"]["crop_size"] = args.pose_crop
    if args.flow_scale is not None:
        raw["flow"] = {"scale": args.flow_scale}
    train = PED2.parent / "train"
    raw["models"] = {
        "cache_dir": str(args.cache),
        "calibration": [str(train / f"{c}.mp4") for c in args.calibration],
    }
    if args.torch_threads is not None:
        raw["pose"]["torch_threads"] = raw["appearance"]["torch_threads"] = args.torch_threads
    if args.ov_threads is not None:
        raw["detector"]["inference_threads"] = args.ov_threads
    full = REPO / "var" / "bench" / "full"  # what `vigil run` writes: media and the local sinks
    raw["events"] = {"media_dir": str(full / "media")}
    raw["sinks"] = {
        "jsonl": {"path": str(full / "events.jsonl")},
        "sqlite": {"path": str(full / "events.db")},
    }
    return VigilConfig.model_validate(raw)


def with_format(cfg: VigilConfig, fmt: str) -> VigilConfig:
    """`cfg` with pose and appearance in model format `fmt` (the backbone has no INT8: openvino)."""
    return cfg.model_copy(
        update={
            "pose": cfg.pose.model_copy(update={"format": fmt}),
            "appearance": cfg.appearance.model_copy(
                update={"format": "openvino" if fmt == "openvino_int8" else fmt}
            ),
        }
    )


def with_overrides(cfg: VigilConfig, overrides: str) -> VigilConfig:
    """`cfg` with "section.field=value[,section.field=value]" applied (values in YAML)."""
    raw = cfg.model_dump()
    for item in filter(None, overrides.split(",")):
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or not isinstance(raw.get(section), dict):
            raise SystemExit(f"override {item!r}: expected section.field=value")
        raw[section][name] = yaml.safe_load(value)
    return VigilConfig.model_validate(raw)


def warm_up(stages: list, clip: Path) -> None:  # type: ignore[type-arg]
    """Load models and run a few frames through fresh per-camera state (then dropped by EOS)."""
    with av.open(str(clip)) as c:
        images = [f.to_ndarray(format="bgr24") for _, f in zip(range(3), c.decode(video=0), strict=False)]
    frames = [Frame("warmup", i, i / 10, im, time.time(), fps=10.0) for i, im in enumerate(images)]
    runner = Runner(build_graph(stages), [FramesSource("warmup", frames)], Metrics(), threading.Event())
    runner.run()


def cpu_clocked(stages: list, totals: dict[str, float]) -> None:  # type: ignore[type-arg]
    """Count each stage's own CPU time (its worker thread's clock) around `process_batch`.

    Unlike the latency histogram this does not grow when other processes share the cores, and with one
    inference thread per model (the defaults) a model's work runs in the calling thread.
    """
    for stage in stages:
        inner = stage.process_batch

        def process_batch(packets: list, inner=inner, name: str = stage.name) -> None:  # type: ignore[no-untyped-def]
            t = time.thread_time()
            try:
                inner(packets)
            finally:
                totals[name] = totals.get(name, 0.0) + time.thread_time() - t

        stage.process_batch = process_batch


def graph_run(
    cfg: VigilConfig, clip: Path, model: NormalityModel | None = None, share_workers: bool = True
) -> dict[str, object]:
    """One replay of `clip`; `model`: the full explained graph (every camera scored by it), else perception;
    `share_workers`: RunnerOptions.share_interpreter_bound (off: one thread per stage)"""
    stages = perception_stages(cfg) if model is None else build_stages(cfg, {ANY_CAMERA: model})
    warm_up(stages, clip)
    stage_cpu: dict[str, float] = {}
    cpu_clocked(stages, stage_cpu)
    metrics = Metrics()
    runner = Runner(
        build_graph(stages),
        [FileSource("bench", clip)],
        metrics,
        threading.Event(),
        sinks=make_sinks(cfg) if model is not None else (),
        # lossless replay; the drain after the file ends holds every queued frame, so allow it time
        options=RunnerOptions(drain_timeout_s=600.0, share_interpreter_bound=share_workers),
    )
    cpu0 = time.process_time()
    report = runner.run()
    cpu_s = time.process_time() - cpu0
    frames = report.frames_completed.get("bench", 0)
    if report.source_errors or report.stage_errors or frames != report.frames_decoded.get("bench"):
        raise SystemExit(f"graph run failed: {report}")
    per_stage = {}
    for stage in build_graph(stages).order:
        s = metrics.registry.get_sample_value("vigil_stage_latency_seconds_sum", {"stage": stage.name}) or 0.0
        n = metrics.registry.get_sample_value("vigil_stage_latency_seconds_count", {"stage": stage.name}) or 0
        per_stage[stage.name] = round(1000 * s / max(n, 1), 2)
    return {
        "graph": "perception" if model is None else "full",
        "frames": frames,
        "events": report.events,
        "wall_s": round(report.wall_s, 2),
        "fps": round(frames / report.wall_s, 2),
        "cpu_s": round(cpu_s, 2),
        "cpu_ms_per_frame": round(1000 * cpu_s / frames, 1),
        "stage_ms_per_frame": per_stage,
        "stage_ms_total": round(sum(per_stage.values()), 2),
        "stage_cpu_ms_per_frame": {k: round(1000 * v / frames, 2) for k, v in stage_cpu.items()},
        "loadavg_1min": os.getloadavg()[0],
        "order": [s.name for s in build_graph(stages).order],
    }


def naive_run(clip: Path) -> dict[str, float]:
    """The naive loop, plus its CPU time per frame (all threads of this process).

    `naive_loop` times only its frame loop but the process CPU clock also counts its model loading,
    decoding and warm-up, so that overhead is measured by a 1-frame call and subtracted.
    """
    args = (clip, str(MODELS / "yolo11n_int8_openvino_model"), str(MODELS / "yolo11n-pose.pt"))
    cpu0 = time.process_time()
    naive_loop(*args, max_frames=1)
    cpu1 = time.process_time()
    result = naive_loop(*args)
    cpu_s = (time.process_time() - cpu1) - (cpu1 - cpu0)
    return {**result, "cpu_s": cpu_s, "cpu_ms_per_frame": 1000 * cpu_s / result["frames"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", nargs="+", default=["Test004", "640x360"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--detect-k", type=int, default=None, help="detector.every_k_frames (default: config's)")
    ap.add_argument("--appearance-k", type=int, default=None)
    ap.add_argument("--pose-k", type=int, default=None, help="pose.every_k_frames (default: config's)")
    ap.add_argument("--pose-crop", type=int, default=None, help="pose.crop_size (default: config's)")
    ap.add_argument("--flow-scale", type=float, default=None, help="flow.scale (default: config's)")
    ap.add_argument(
        "--formats",
        nargs="+",
        default=["openvino_int8", "openvino", "pytorch"],
        help="pose formats, one graph run each (appearance: the same, openvino for openvino_int8)",
    )
    ap.add_argument(
        "--calibration",
        nargs="*",
        default=["Train001", "Train002", "Train003"],
        help="Ped2 training clips (normal footage) that calibrate openvino_int8",
    )
    ap.add_argument("--cache", type=Path, default=REPO / "var" / "models" / "exports", help="export cache")
    ap.add_argument("--torch-threads", type=int, default=None, help="pose.torch_threads (process-wide)")
    ap.add_argument("--ov-threads", type=int, default=None, help="detector.inference_threads")
    ap.add_argument("--no-naive", action="store_true")
    ap.add_argument(
        "--square-baseline",
        action="store_true",
        help="also run every format with detector.rect off (the export's 640x640 input), for a ratio",
    )
    ap.add_argument("--pose-still-k", type=int, default=None, help="pose.still_k_frames (default: config's)")
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per graph setting and naive loop, interleaved; the fastest is reported (a shared box is "
        "quiet only at times), every run's fps is kept",
    )
    ap.add_argument(
        "--also-every-frame",
        action="store_true",
        help="also run the graph with detector and appearance on every frame (the pre-every-k graph)",
    )
    ap.add_argument(
        "--model",
        type=Path,
        default=None,
        help="normality model (.npz) for every camera: run the FULL explained graph (score, explain, events)",
    )
    ap.add_argument(
        "--also-perception",
        action="store_true",
        help="with --model: also run each setting perception-only (label FORMAT+perception), same process",
    )
    ap.add_argument(
        "--also-per-stage-workers",
        action="store_true",
        help="also run each setting with one worker thread per stage (RunnerOptions.share_interpreter_bound "
        "off), labelled FORMAT+per-stage-workers",
    )
    ap.add_argument(
        "--variants",
        nargs="*",
        default=[],
        help="more settings run beside each format, LABEL:section.field=value[,section.field=value] "
        "(e.g. lean:detector.every_k_frames=3,pose.every_k_frames=3), reported as FORMAT+LABEL",
    )
    ap.add_argument("--out", type=Path, default=REPO / "var" / "bench" / "perception.json")
    args = ap.parse_args()
    cfg = config(args)
    model = None
    if args.model is not None:
        if not args.model.is_file():
            raise SystemExit(f"--model {args.model}: no such file")
        model = NormalityModel.load(args.model)  # ModelError if it is not one
    results: dict[str, object] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_start": os.getloadavg(),
        },
        "config": {
            "detector": cfg.detector.model_dump(),
            "pose": cfg.pose.model_dump(),
            "appearance": cfg.appearance.model_dump(),
            "flow": cfg.flow.model_dump(),
            "formats": args.formats,
            "models": cfg.models.model_dump(),
            "graph": "perception" if model is None else "full (score, explain, events)",
            "normality_model": None if args.model is None else str(args.model),
        },
        "clips": {},
    }
    for name in args.clips:
        clip = (
            make_640x360(PED2 / "Test004.mp4", REPO / "var" / "bench" / "Test004_640x360.mp4")
            if (name == "640x360")
            else PED2 / f"{name}.mp4"
        )
        row: dict[str, object] = {"clip": str(clip)}
        graphs: dict[str, dict[str, object]] = {}
        settings = {fmt: (with_format(cfg, fmt), model) for fmt in args.formats}
        if args.square_baseline:  # the detector as before detector.rect: the export's 640x640 input
            square = cfg.detector.model_copy(update={"rect": False})
            for fmt in args.formats:
                settings[f"{fmt}+square"] = (
                    with_format(cfg.model_copy(update={"detector": square}), fmt),
                    model,
                )
        for variant in args.variants:  # label:section.field=value,section.field=value
            label, _, overrides = variant.partition(":")
            for fmt in args.formats:
                settings[f"{fmt}+{label}"] = (with_overrides(with_format(cfg, fmt), overrides), model)
        if model is not None and args.also_perception:
            for fmt in args.formats:
                settings[f"{fmt}+perception"] = (with_format(cfg, fmt), None)
        per_stage_workers: set[str] = set()
        if args.also_per_stage_workers:
            for label, setting in list(settings.items()):
                settings[f"{label}+per-stage-workers"] = setting
                per_stage_workers.add(f"{label}+per-stage-workers")
        runs: dict[str, list[dict[str, object]]] = {label: [] for label in settings}
        naive_runs: list[dict[str, float]] = []
        for _ in range(args.repeat):  # interleaved, so each setting sees the same spells of load
            for label, (setting, setting_model) in settings.items():
                runs[label].append(
                    graph_run(setting, clip, setting_model, share_workers=label not in per_stage_workers)
                )
            if not args.no_naive:
                naive_runs.append(naive_run(clip))
        for fmt in settings:
            graphs[fmt] = max(runs[fmt], key=lambda r: r["fps"])  # type: ignore[arg-type,return-value]
            graphs[fmt]["fps_runs"] = [r["fps"] for r in runs[fmt]]
            graphs[fmt]["cpu_ms_per_frame_runs"] = [r["cpu_ms_per_frame"] for r in runs[fmt]]
            g = graphs[fmt]
            print(
                f"{name}: graph [{fmt}] {g['fps']} fps (runs {g['fps_runs']}), "
                f"{g['cpu_ms_per_frame']} CPU-ms/frame; "
                f"stage CPU-ms/frame {g['stage_cpu_ms_per_frame']} (load {g['loadavg_1min']:.1f})"
            )
        graph = graphs[args.formats[0]]
        row["graph"] = graph
        if len(graphs) > 1:
            row["graph_by_format"] = graphs
        if args.also_every_frame:
            dense = cfg.model_copy(
                update={
                    "detector": cfg.detector.model_copy(update={"every_k_frames": 1}),
                    "appearance": cfg.appearance.model_copy(update={"every_k_frames": 1}),
                }
            )
            row["graph_every_frame"] = graph_run(dense, clip, model)
            dense_row = row["graph_every_frame"]
            print(
                f"{name}: graph, detector+appearance every frame {dense_row['fps']} fps, "  # type: ignore[index]
                f"{dense_row['cpu_ms_per_frame']} CPU-ms/frame"  # type: ignore[index]
            )
        if not args.no_naive:
            naive = max(naive_runs, key=lambda r: r["fps"])
            naive["fps_runs"] = [round(r["fps"], 2) for r in naive_runs]  # type: ignore[assignment]
            row["naive"] = {k: v if isinstance(v, list) else round(v, 2) for k, v in naive.items()}
            row["speedup_vs_naive"] = round(graph["fps"] / naive["fps"], 2)  # type: ignore[operator]
            row["cpu_ratio_naive_over_graph"] = round(
                naive["cpu_ms_per_frame"] / graph["cpu_ms_per_frame"], 2
            )  # type: ignore[operator]
            for label, g in graphs.items():  # every setting against the same naive runs
                g["speedup_vs_naive"] = round(g["fps"] / naive["fps"], 2)  # type: ignore[operator]
                g["cpu_ratio_naive_over_graph"] = round(naive["cpu_ms_per_frame"] / g["cpu_ms_per_frame"], 2)  # type: ignore[operator]
                print(
                    f"{name}: [{label}] {g['speedup_vs_naive']}x naive fps, "
                    f"{g['cpu_ratio_naive_over_graph']}x CPU"
                )
        results["clips"][name] = row  # type: ignore[index]
        naive_txt = (
            f" | naive {row['naive']['fps']:.1f} fps, {row['naive']['cpu_ms_per_frame']:.0f} CPU-ms/frame"  # type: ignore[index]
            f" -> {row['speedup_vs_naive']}x fps, {row['cpu_ratio_naive_over_graph']}x CPU"  # type: ignore[index]
            if "naive" in row
            else ""
        )
        print(
            f"{name}: graph {graph['fps']} fps, {graph['cpu_ms_per_frame']} CPU-ms/frame "
            f"({graph['frames']} frames){naive_txt}"
        )
        print("   ms/frame per stage:", graph["stage_ms_per_frame"])
    results["machine"]["loadavg_end"] = os.getloadavg()  # type: ignore[index]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
