"""How many live cameras one process holds: N loopback RTSP streams at 10 analysed fps each.

    python bench/bench_streams.py [--streams 1 2 4 8] [--duration 30] [--model var/models/x.npz]
                                  [--baseline naive|decode|none] [--out var/bench/streams.json]

For each N, the camera simulator (deploy/camsim, system python with gi) serves N mounts that loop the
same Ped2 clip in real time (10 fps, 360x240 H.264, no re-encode); the real Runner runs in live mode
over N `RtspSource`s with the stage graph from `stages.factory.build_stages(config, models)`: the full
graph when `--model` names a normality model file (used for every camera), perception only otherwise.
Each camera's `analysis_fps` is 10 (`RunnerOptions.analysis_fps`). After a warm-up, for `--duration`
seconds it records, per camera: analysed frames per second; end-to-end latency (`time.time() -
frame.captured_at` when the packet leaves the last stage); drops; the depth of every queue (sampled
every 0.25 s: its maximum and whether it grows, i.e. the second half's mean exceeds the first half's by
more than one packet); and resident memory (peak VmRSS while measuring minus VmRSS with the models
loaded and no camera, divided by N; it includes one-off inference buffers, so the summary also gives the
peak difference between consecutive N). Each N runs in a fresh process, so no memory or state carries over.

A camera count is *held* when every camera is analysed at >= 95 % of the target rate, p99 latency is
under 500 ms and no queue grows.

Baseline (same run, same N, same streams), for a ratio:
  naive  (default) the loop a user writes without Vigil (as bench/naive.py: ultralytics `track` with
         the same detector + full-frame pose on every frame), one thread and one model pair per
         stream, reading the RTSP stream with PyAV. It cannot drop, so when it is slower than the
         camera its latency grows; latency is measured against the frame's arrival time (first
         frame's wall time + pts offset), which includes the time a frame waited in the socket.
  decode the same Runner with an empty graph: the ceiling set by RTSP + decode alone.
The ratio printed is Vigil's aggregate analysed fps / the baseline's, and the p99 latencies side by side.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml

os.environ.setdefault("YOLO_OFFLINE", "1")

from pipeline.config import (
    AppearanceConfig,
    DetectorConfig,
    PoseConfig,
    SourceConfig,
    VigilConfig,
)
from pipeline.graph import StageGraph, build_graph
from pipeline.metrics import Metrics
from pipeline.packets import FramePacket
from pipeline.runner import Runner, RunnerOptions
from pipeline.sources.base import Source
from pipeline.sources.rtsp import RtspSource
from pipeline.stage import Stage

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VIGIL_SHARED", REPO.parent / "shared"))
CAMSIM = REPO / "deploy" / "camsim" / "vigil_camsim.py"
SYSTEM_PYTHON = "/usr/bin/python3"
TARGET_FPS = 10.0
P99_LIMIT_S = 0.5


# ---- the camera simulator ------------------------------------------------------------------------


class Simulator:
    """vigil_camsim serving `clip` on mounts cam0..cam{n-1} at 127.0.0.1 (a port the system picks)."""

    def __init__(self, clip: Path, n: int) -> None:
        args = [f"{clip}:cam{i}" for i in range(n)]
        self.proc = subprocess.Popen(
            [SYSTEM_PYTHON, str(CAMSIM), "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.urls: list[str] = []
        for _ in range(n):
            line = self.proc.stdout.readline()
            if not line.startswith("READY "):
                self.close()
                err = self.proc.stderr.read() if self.proc.stderr else ""
                raise SystemExit(f"camera simulator did not start: {line.strip()} {err.strip()[-500:]}")
            self.urls.append(line.split()[1])

    def cpu_s(self) -> float:
        """CPU seconds the simulator used so far (user + system), from /proc."""
        fields_ = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields_[11]) + int(fields_[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


# ---- measurements --------------------------------------------------------------------------------


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("VmRSS not found in /proc/self/status")


@dataclass
class Sample:
    wall: float
    camera: str
    age_s: float


@dataclass
class Result:
    system: str  # "vigil" or the baseline's name
    graph: str
    streams: int
    measured_s: float
    fps_per_camera: dict[str, float]
    latency_p50_ms: float
    latency_p99_ms: float
    drops: int
    max_queue_depth: int
    queue_growing: bool
    rss_before_mb: float
    rss_peak_mb: float
    rss_per_camera_mb: float
    stage_errors: int
    stage_ms: dict[str, float] = field(default_factory=dict)  # mean time per frame in each stage
    held: bool = False
    notes: list[str] = field(default_factory=list)

    def judge(self) -> Result:
        fps_ok = all(f >= 0.95 * TARGET_FPS for f in self.fps_per_camera.values())
        self.held = fps_ok and self.latency_p99_ms < P99_LIMIT_S * 1000 and not self.queue_growing
        return self


class Recorder:
    """Latency samples and queue depths over a run; only what falls in the measurement window counts."""

    def __init__(self) -> None:
        self.samples: list[Sample] = []
        self.depths: list[tuple[float, int]] = []
        self.lock = threading.Lock()
        self.window: tuple[float, float] = (float("inf"), float("inf"))

    def packet(self, camera: str, captured_at: float) -> None:
        now = time.time()
        with self.lock:
            self.samples.append(Sample(now, camera, now - captured_at))

    def depth(self, total: int) -> None:
        with self.lock:
            self.depths.append((time.time(), total))

    def summarise(
        self, system: str, graph: str, cameras: Sequence[str], drops: int, rss_before: float, rss_after: float
    ) -> Result:
        t0, t1 = self.window
        with self.lock:
            inside = [s for s in self.samples if t0 <= s.wall < t1]
            depths = [d for t, d in self.depths if t0 <= t < t1]
        span = t1 - t0
        ages = np.array([s.age_s for s in inside]) if inside else np.array([np.nan])
        half = len(depths) // 2
        growing = bool(half and statistics.mean(depths[half:]) > statistics.mean(depths[:half]) + 1.0)
        return Result(
            system=system,
            graph=graph,
            streams=len(cameras),
            measured_s=round(span, 1),
            fps_per_camera={c: round(sum(s.camera == c for s in inside) / span, 2) for c in cameras},
            latency_p50_ms=round(float(np.percentile(ages, 50)) * 1000, 1),
            latency_p99_ms=round(float(np.percentile(ages, 99)) * 1000, 1),
            drops=drops,
            max_queue_depth=max(depths, default=0),
            queue_growing=growing,
            rss_before_mb=round(rss_before, 1),
            rss_peak_mb=round(rss_after, 1),
            rss_per_camera_mb=round((rss_after - rss_before) / len(cameras), 1),
            stage_errors=0,
        )


def run_for(
    stop: threading.Event, recorder: Recorder, warmup_s: float, duration_s: float
) -> threading.Thread:
    """A timer thread: opens the measurement window after the warm-up, sets `stop` when it closes."""

    def timer() -> None:
        if stop.wait(warmup_s):
            return
        now = time.time()
        recorder.window = (now, now + duration_s)
        stop.wait(duration_s)
        stop.set()

    thread = threading.Thread(target=timer, name="bench-timer", daemon=True)
    thread.start()
    return thread


# ---- Vigil ---------------------------------------------------------------------------------------


def vigil_run(
    urls: Sequence[str],
    make_stages: Callable[[], list[Stage]],
    graph_name: str,
    warmup_s: float,
    duration_s: float,
    system: str = "vigil",
    max_in_flight: int = 0,
) -> Result:
    cameras = [f"cam{i}" for i in range(len(urls))]
    graph = build_graph(make_stages())  # the factory loads the models: the RSS baseline includes them
    sources = [RtspSource(c, u, SourceConfig()) for c, u in zip(cameras, urls, strict=True)]
    return run_live(graph, sources, graph_name, warmup_s, duration_s, system, max_in_flight)


def run_live(
    graph: StageGraph,
    sources: Sequence[Source],
    graph_name: str,
    warmup_s: float,
    duration_s: float,
    system: str = "vigil",
    max_in_flight: int = 0,
    on_window: Callable[[Recorder, threading.Event], object] | None = None,
) -> Result:
    """The Runner in live mode over `sources` at TARGET_FPS each, measured for `duration_s` after
    `warmup_s`; `on_window(recorder, stop)` is called once the window is set (extra samplers)."""
    cameras = [s.camera for s in sources]
    rss_before = rss_mb()
    recorder, stop, metrics = Recorder(), threading.Event(), Metrics()

    def on_packet(packet: FramePacket) -> None:
        if packet.analysed:
            recorder.packet(packet.frame.camera, packet.frame.captured_at)

    runner = Runner(
        graph,
        list(sources),
        metrics,
        stop,
        options=RunnerOptions(
            live=True, analysis_fps={c: TARGET_FPS for c in cameras}, max_in_flight=max_in_flight
        ),
        on_packet=on_packet,
    )
    run_for(stop, recorder, warmup_s, duration_s)
    if on_window is not None:
        on_window(recorder, stop)
    rss_peak = [rss_before]

    def sample_depths() -> None:
        while not stop.wait(0.25):
            total = runner.ingress.depth() + sum(p.depth() for p in runner.pipes)
            recorder.depth(total)
            if time.time() >= recorder.window[0]:
                rss_peak[0] = max(rss_peak[0], rss_mb())

    sampler = threading.Thread(target=sample_depths, name="bench-depths", daemon=True)
    sampler.start()
    try:
        report = runner.run()
    finally:
        stop.set()
        sampler.join(5)
    if report.source_errors:
        raise SystemExit(f"source errors: {report.source_errors}")
    result = recorder.summarise(
        system, graph_name, cameras, sum(report.frames_dropped.values()), rss_before, rss_peak[0]
    )
    result.stage_errors = sum(report.stage_errors.values())
    for family in metrics.stage_latency.collect():  # over the whole run, warm-up included
        sums = {x.labels["stage"]: x.value for x in family.samples if x.name.endswith("_sum")}
        counts = {x.labels["stage"]: x.value for x in family.samples if x.name.endswith("_count")}
        result.stage_ms = {k: round(1000 * v / counts[k], 1) for k, v in sums.items() if counts.get(k)}
    if result.stage_errors:
        result.notes.append(f"stage errors: {report.stage_errors}")
    return result.judge()


# ---- the naive baseline --------------------------------------------------------------------------


def naive_run(
    urls: Sequence[str], detector: str, pose: str, device: str, warmup_s: float, duration_s: float
) -> Result:
    """Per stream: PyAV RTSP read + ultralytics track + full-frame pose on every frame, one thread each."""
    import av
    from ultralytics import YOLO

    cameras = [f"cam{i}" for i in range(len(urls))]
    blank = np.zeros((240, 360, 3), np.uint8)
    models = []
    for _ in urls:
        det, pos = YOLO(detector, task="detect"), YOLO(pose, task="pose")
        det.track(blank, persist=True, verbose=False, device=device)  # warm-up outside the timing
        pos(blank, verbose=False, device=device)
        models.append((det, pos))
    rss_before = rss_mb()
    recorder, stop = Recorder(), threading.Event()
    errors: list[str] = []

    def loop(camera: str, url: str, det: YOLO, pos: YOLO) -> None:
        options = {"rtsp_transport": "tcp", "timeout": "5000000", "analyzeduration": "100000"}
        try:
            with av.open(url, options=options, timeout=(5.0, 5.0)) as container:
                origin: tuple[float, float] | None = None
                for frame in container.decode(video=0):
                    if frame.time is None:
                        continue
                    origin = origin or (time.time(), frame.time)
                    arrival = origin[0] + (frame.time - origin[1])  # when the camera sent it
                    image = frame.to_ndarray(format="bgr24")
                    det.track(image, persist=True, verbose=False, device=device)
                    pos(image, verbose=False, device=device)
                    recorder.packet(camera, arrival)
                    if stop.is_set():
                        return
        except (av.error.FFmpegError, OSError) as exc:
            errors.append(f"{camera}: {type(exc).__name__}: {exc}")

    threads = [
        threading.Thread(target=loop, args=(c, u, *m), name=f"naive-{c}", daemon=True)
        for c, u, m in zip(cameras, urls, models, strict=True)
    ]
    timer = run_for(stop, recorder, warmup_s, duration_s)
    for t in threads:
        t.start()
    rss_peak = rss_before
    while not stop.wait(0.25):
        if time.time() >= recorder.window[0]:
            rss_peak = max(rss_peak, rss_mb())
    timer.join(5)
    for t in threads:
        t.join(30)
    if errors:
        raise SystemExit(f"naive baseline failed: {errors}")
    result = recorder.summarise("naive", "track+pose", cameras, 0, rss_before, rss_peak)
    # no queues of its own: a slow loop backs up in the socket, seen as latency that keeps rising
    t0, t1 = recorder.window
    ages = [s.age_s for s in recorder.samples if t0 <= s.wall < t1]
    half = len(ages) // 2
    result.queue_growing = bool(half and statistics.mean(ages[half:]) > statistics.mean(ages[:half]) + 0.1)
    result.notes.append("queue = frames waiting in the socket: 'growing' when latency rises over the window")
    return result.judge()


# ---- main ----------------------------------------------------------------------------------------


def bench_config(
    detector: str, pose: str, device: str, square: bool = False, overrides: Sequence[str] = ()
) -> VigilConfig:
    """Default stage settings with these models; `square`: detector.rect off (the export's 640x640);
    `overrides`: "section.field=value" (value in YAML, e.g. pose.format=openvino_int8)."""
    config = VigilConfig(
        detector=DetectorConfig(model=detector, device=device, rect=not square),
        pose=PoseConfig(model=pose, device=device),
        appearance=AppearanceConfig(model=pose, device=device),
    )
    if not overrides:
        return config
    raw = config.model_dump()
    for item in overrides:
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or section not in raw or not isinstance(raw[section], dict):
            raise SystemExit(f"--set {item!r}: expected section.field=value")
        raw[section][name] = yaml.safe_load(value)
    return VigilConfig.model_validate(raw)


def row(r: Result) -> str:
    fps = list(r.fps_per_camera.values())
    return (
        f"{r.system:7s} {r.graph:22s} {r.streams:>2d} {min(fps):6.2f} {statistics.mean(fps):6.2f} "
        f"{r.latency_p50_ms:8.0f} {r.latency_p99_ms:8.0f} {r.drops:6d} {r.max_queue_depth:6d} "
        f"{'yes' if r.queue_growing else 'no':>5s} {r.rss_per_camera_mb:8.1f} {'HELD' if r.held else '-':>5s}"
    )


HEADER = (
    f"{'system':7s} {'graph':22s} {'N':>2s} {'minfps':>6s} {'fps':>6s} {'p50 ms':>8s} {'p99 ms':>8s} "
    f"{'drops':>6s} {'maxq':>6s} {'grow':>5s} {'MB/cam':>8s} {'held':>5s}"
)


def measure(args: argparse.Namespace, n: int) -> list[Result]:
    """Vigil and the baseline on N streams, in this process; prints one row each."""
    config = bench_config(args.detector, args.pose, args.device, args.detector_square, args.set)
    model = None
    graph_name = "perception only"
    if args.model is not None and args.model.is_file():
        from stages.normality import NormalityModel

        model = NormalityModel.load(args.model, device=args.device)  # ModelError if it is not one
        graph_name = "full (score+explain)"

    def make_stages() -> list[Stage]:
        from stages.factory import build_stages

        return build_stages(config, None if model is None else {f"cam{i}": model for i in range(n)})

    results: list[Result] = []
    sim = Simulator(args.clip, n)
    try:
        sim_cpu0, t0 = sim.cpu_s(), time.monotonic()
        ours = vigil_run(
            sim.urls, make_stages, graph_name, args.warmup, args.duration, max_in_flight=args.max_in_flight
        )
        ours.notes.append(f"simulator used {(sim.cpu_s() - sim_cpu0) / (time.monotonic() - t0):.0%} of a CPU")
        results.append(ours)
        print(row(ours), flush=True)
        if ours.stage_ms:
            print(
                "        ms/frame: " + ", ".join(f"{k} {v:g}" for k, v in ours.stage_ms.items()), flush=True
            )
        if args.baseline == "naive":
            base = naive_run(sim.urls, args.detector, args.pose, args.device, args.warmup, args.duration)
        elif args.baseline == "decode":
            base = vigil_run(sim.urls, list, "decode only", args.warmup, args.duration, system="decode")
        else:
            return results
        results.append(base)
        print(row(base), flush=True)
    finally:
        sim.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--duration", type=float, default=30.0, help="measured seconds per N")
    parser.add_argument("--warmup", type=float, default=8.0, help="seconds before measuring")
    parser.add_argument("--clip", type=Path, default=SHARED / "data" / "ucsd_ped2" / "test" / "Test004.mp4")
    parser.add_argument("--detector", default=str(SHARED / "models" / "yolo11n_int8_openvino_model"))
    parser.add_argument("--pose", default=str(SHARED / "models" / "yolo11n-pose.pt"))
    parser.add_argument("--model", type=Path, help="normality model (.npz) for every camera: the full graph")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--baseline", choices=["naive", "decode", "none"], default="naive")
    parser.add_argument("--out", type=Path, default=REPO / "var" / "bench" / "streams.json")
    parser.add_argument(
        "--max-in-flight", type=int, default=0, help="runtime.max_in_flight (0: the runner's default)"
    )
    parser.add_argument(
        "--detector-square", action="store_true", help="detector.rect off: the export's 640x640 input"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="config override for the Vigil run (YAML value), e.g. pose.inference_threads=2; repeatable",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # one N, results to --out
    args = parser.parse_args()
    if not CAMSIM.is_file() or not Path(SYSTEM_PYTHON).exists():
        raise SystemExit(f"needs {SYSTEM_PYTHON} with gi and {CAMSIM}")
    if args.model is not None and not args.model.is_file():
        print(f"no model file at {args.model}: perception-only graph", file=sys.stderr)
    if args.child:
        (n,) = args.streams
        args.out.write_text(json.dumps([asdict(r) for r in measure(args, n)]))
        return

    load_start = os.getloadavg()
    graph_name = (
        "full (score+explain)" if args.model is not None and args.model.is_file() else "perception only"
    )
    print(
        f"graph: {graph_name}; clip {args.clip.name}; target {TARGET_FPS:g} analysed fps/camera; "
        f"{os.cpu_count()} CPUs, load average {load_start[0]:.1f} at start; baseline: {args.baseline}; "
        "each N in a fresh process",
        flush=True,
    )
    print(HEADER, flush=True)
    results: list[Result] = []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for n in args.streams:  # a fresh process per N: clean memory figures, no state carried over
        part = args.out.with_suffix(f".n{n}.json")
        child = [sys.executable, __file__, "--child", "--streams", str(n), "--out", str(part)]
        for name in (
            "duration",
            "warmup",
            "clip",
            "detector",
            "pose",
            "model",
            "device",
            "baseline",
            "max_in_flight",
        ):
            if getattr(args, name) is not None:
                child += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
        if args.detector_square:
            child.append("--detector-square")
        for item in args.set:
            child += ["--set", item]
        subprocess.run(child, check=True)
        results += [Result(**r) for r in json.loads(part.read_text())]
        part.unlink()

    def held(system: str) -> int:
        return max((r.streams for r in results if r.system == system and r.held), default=0)

    ratios = {}
    for n in args.streams:
        ours = next(r for r in results if r.system == "vigil" and r.streams == n)
        base = next((r for r in results if r.system != "vigil" and r.streams == n), None)
        if base is not None:
            total = sum(ours.fps_per_camera.values()) / max(1e-9, sum(base.fps_per_camera.values()))
            ratios[n] = round(total, 2)
            print(
                f"N={n}: analysed fps vigil/{base.system} = {total:.2f}x; "
                f"p99 {ours.latency_p99_ms:.0f} ms vs {base.latency_p99_ms:.0f} ms"
            )
    mine = [r for r in results if r.system == "vigil"]
    marginal = {
        f"{a.streams}->{b.streams}": round((b.rss_peak_mb - a.rss_peak_mb) / (b.streams - a.streams), 1)
        for a, b in itertools.pairwise(mine)
        if b.streams > a.streams
    }
    if marginal:
        print("vigil RSS per added camera (MB, peak RSS difference between fresh runs):", marginal)
    load_end = os.getloadavg()
    print(
        f"streams held (p99 < 500 ms, >= 95% of {TARGET_FPS:g} fps, no growing queue): vigil {held('vigil')}"
        + ("" if args.baseline == "none" else f", {args.baseline} {held(args.baseline)}")
        + f"; load average {load_end[0]:.1f} at end"
    )
    out = {
        "graph": graph_name,
        "detector_input": "640x640 square" if args.detector_square else "letterbox rectangle",
        "max_in_flight": args.max_in_flight,
        "overrides": args.set,
        "clip": str(args.clip),
        "target_fps": TARGET_FPS,
        "p99_limit_ms": P99_LIMIT_S * 1000,
        "baseline": args.baseline,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "device": args.device},
        "load_average": {"start": load_start, "end": load_end},
        "held": {
            "vigil": held("vigil"),
            **({} if args.baseline == "none" else {args.baseline: held(args.baseline)}),
        },
        "fps_ratio_vigil_over_baseline": ratios,
        "rss_mb_per_added_camera": marginal,
        "results": [asdict(r) for r in results],
    }
    args.out.write_text(json.dumps(out, indent=2))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
