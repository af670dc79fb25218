"""How many live 1080p cameras one process holds on a GPU machine: N file sources replayed as cameras.

    python -m bench.bench_gpu_streams [--streams 1 2 4 8 16] [--duration 15] [--warmup 6]
        [--device cuda] [--model MODEL.npz] [--clip CLIP.mp4] [--flow-scale 0.33] [--ov-threads 4]
        [--out var/bench/gpu_streams.json]

Where no RTSP server can run (the GPU machine has no gst-rtsp-server), each camera is a
`RealtimeFileSource`: the clip decoded with PyAV in the source's own thread, looped, and delivered in
real time by its timestamps, as a camera would send it. It is a *live* source (`live = True`): the
runner analyses it at `analysis_fps` and, when the pipeline is behind, drops the camera's oldest frame
at the ingress (drop-oldest and admission, exactly as for an RTSP camera). A frame's `captured_at` is
the wall time at which the camera delivers it, so a source that decodes late shows up as latency.
Cameras start staggered over one frame interval (real cameras are not in phase).

The clip defaults to Ped2's Test004 upscaled (aspect kept, letterboxed) to 1920x1080 H.264, made once
under var/bench/. Every N runs in a fresh process (clean memory figures). The measurement itself is
`bench/bench_streams.py`'s: analysed fps per camera, end-to-end latency p50/p99, drops, queue depth and
growth, RSS; added here: GPU memory (torch peak allocated/reserved by this process, nvidia-smi used
by the whole GPU), GPU utilisation (nvidia-smi, sampled each second), and CPU use (this process, in
cores; the whole machine, in %). A count is *held* as in bench_streams (>= 95 % of 10 fps per camera,
p99 < 500 ms, no growing queue); with `--until-not-held` (default) larger N are skipped after the first
N that is not held. Results are written after every N, so a run cut short keeps what it measured.

The detector stays the INT8 OpenVINO export on the CPU (`--ov-threads` threads); pose, appearance and
scoring run on `--device`. Event snapshots and clips (JPEG + mp4 encoding on the CPU, in the events
stage) are off unless `--media`: the series measures analysis capacity; a `--media` run gives their cost.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import av
import av.error
import numpy as np

os.environ.setdefault("YOLO_OFFLINE", "1")

from bench.bench_streams import HEADER, TARGET_FPS, Recorder, Result, row, run_live
from bench.clips import make_clip
from pipeline.config import (
    AppearanceConfig,
    DetectorConfig,
    EventsConfig,
    FlowConfig,
    PoseConfig,
    ScoringConfig,
    VigilConfig,
)
from pipeline.errors import SourceError
from pipeline.graph import build_graph
from pipeline.packets import Frame
from pipeline.sources.base import Source, SourceMonitor
from pipeline.sources.decode import first_video_stream, stream_fps, to_bgr

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VIGIL_SHARED", REPO.parent / "shared"))


# ---- footage and the camera ----------------------------------------------------------------------


class RealtimeFileSource(Source):
    """A camera simulated from a file: looped, decoded in this thread, delivered at its timestamps."""

    live = True

    def __init__(self, camera: str, path: Path, start_delay_s: float = 0.0) -> None:
        self.camera = camera
        self.path = path
        self.start_delay_s = start_delay_s
        self.late_frames = 0  # delivered more than one frame interval after their time

    def frames(self, stop: threading.Event, monitor: SourceMonitor) -> Iterator[Frame]:
        if stop.wait(self.start_delay_s):
            return
        origin = time.time()
        offset = 0.0  # pts of the current loop's first frame
        index = 0
        while not stop.is_set():
            try:
                container = av.open(str(self.path))
            except av.error.FFmpegError as exc:
                raise SourceError(f"cannot open video file {self.path}: {exc.strerror}") from exc
            with container:
                stream = first_video_stream(container)
                if stream is None:
                    raise SourceError(f"video file {self.path} has no video stream")
                fps = stream_fps(stream)
                if index == 0:
                    monitor.connected(str(self.path))
                first: float | None = None
                pts = offset
                for picture in container.decode(stream):
                    t = picture.time if picture.time is not None else (pts - offset + 1 / fps)
                    first = t if first is None else first
                    pts = offset + (t - first)
                    due = origin + pts
                    wait = due - time.time()
                    if wait > 0 and stop.wait(wait):
                        return
                    if wait < -1 / fps:
                        self.late_frames += 1
                    yield Frame(self.camera, index, pts, to_bgr(picture), captured_at=due, fps=fps)
                    index += 1
                    if stop.is_set():
                        return
                if first is None:
                    raise SourceError(f"video file {self.path} has no frames")
                offset = pts + 1 / fps


# ---- GPU and CPU sampling ------------------------------------------------------------------------


@dataclass
class Usage:
    """What the machine did during the measurement window."""

    gpu_util_mean_pct: float | None = None
    gpu_util_max_pct: float | None = None
    gpu_mem_used_max_mb: float | None = None  # nvidia-smi: the whole GPU
    torch_peak_allocated_mb: float | None = None  # this process
    torch_peak_reserved_mb: float | None = None
    process_cpu_cores: float = 0.0  # CPU seconds of this process per wall second
    machine_cpu_pct: float = 0.0  # all cores, as psutil reports
    late_frames: int = 0  # frames a camera delivered late (its decoder behind real time)
    notes: list[str] = field(default_factory=list)


def nvidia_smi() -> tuple[float, float] | None:
    """(GPU utilisation %, memory used MiB) of GPU 0, or None without nvidia-smi."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    out = subprocess.run(
        [exe, "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits", "-i", "0"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout
    util, mem = (float(x) for x in out.strip().split(","))
    return util, mem


class UsageSampler:
    """nvidia-smi every second inside the window; process and machine CPU over the window."""

    def __init__(self, recorder: Recorder, stop: threading.Event) -> None:
        import psutil

        self.recorder, self.stop = recorder, stop
        self.smi: list[tuple[float, float]] = []
        self.psutil = psutil
        self.cpu0: tuple[float, float] | None = None
        self.cpu1: tuple[float, float] | None = None
        self.thread = threading.Thread(target=self._loop, name="bench-usage", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        use_smi = shutil.which("nvidia-smi") is not None
        while not self.stop.wait(1.0):
            t0, t1 = self.recorder.window
            now = time.time()
            if now < t0:
                continue
            if self.cpu0 is None:
                self.cpu0 = (time.monotonic(), time.process_time())
                self.psutil.cpu_percent(None)  # starts psutil's interval
            self.cpu1 = (time.monotonic(), time.process_time())
            if use_smi and now < t1:
                sample = nvidia_smi()
                if sample is not None:
                    self.smi.append(sample)

    def usage(self) -> Usage:
        self.thread.join(5)
        u = Usage(machine_cpu_pct=round(self.psutil.cpu_percent(None), 1))
        if self.cpu0 and self.cpu1 and self.cpu1[0] > self.cpu0[0]:
            u.process_cpu_cores = round((self.cpu1[1] - self.cpu0[1]) / (self.cpu1[0] - self.cpu0[0]), 2)
        if self.smi:
            util = [s[0] for s in self.smi]
            u.gpu_util_mean_pct = round(float(np.mean(util)), 1)
            u.gpu_util_max_pct = max(util)
            u.gpu_mem_used_max_mb = max(s[1] for s in self.smi)
        return u


# ---- one N ---------------------------------------------------------------------------------------


def bench_config(args: argparse.Namespace) -> VigilConfig:
    models = SHARED / "models"
    pose = str(models / "yolo11n-pose.pt")
    return VigilConfig(
        detector=DetectorConfig(
            model=str(models / "yolo11n_int8_openvino_model"), device="cpu", inference_threads=args.ov_threads
        ),
        pose=PoseConfig(model=pose, device=args.device),
        appearance=AppearanceConfig(model=pose, device=args.device),
        flow=FlowConfig(scale=args.flow_scale),
        scoring=ScoringConfig(device=args.device, warmup_s=0),
        events=EventsConfig(snapshots=args.media, clips=args.media, media_dir=args.media_dir),
    )


def measure(args: argparse.Namespace, n: int) -> tuple[Result, Usage]:
    import torch

    from stages.factory import build_stages
    from stages.normality import NormalityModel

    cuda = args.device.startswith("cuda")
    config = bench_config(args)
    cameras = [f"cam{i}" for i in range(n)]
    models = None
    graph_name = "perception only"
    if args.model is not None:
        model = NormalityModel.load(args.model, device=args.device)
        models = {c: model for c in cameras}
        graph_name = "full (score+explain)"
    graph = build_graph(build_stages(config, models))
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    interval = 1 / TARGET_FPS
    sources = [
        RealtimeFileSource(c, args.clip, start_delay_s=i * interval / n) for i, c in enumerate(cameras)
    ]
    samplers: list[UsageSampler] = []
    result = run_live(
        graph,
        sources,
        graph_name,
        args.warmup,
        args.duration,
        on_window=lambda recorder, stop: samplers.append(UsageSampler(recorder, stop)),
    )
    usage = samplers[0].usage()
    usage.late_frames = sum(s.late_frames for s in sources)
    if cuda:
        usage.torch_peak_allocated_mb = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        usage.torch_peak_reserved_mb = round(torch.cuda.max_memory_reserved() / 2**20, 1)
    return result, usage


# ---- main ----------------------------------------------------------------------------------------


def usage_row(u: Usage) -> str:
    gpu = (
        f"GPU {u.gpu_util_mean_pct}% mean / {u.gpu_util_max_pct}% max, {u.gpu_mem_used_max_mb} MiB used"
        if u.gpu_util_mean_pct is not None
        else "GPU: no nvidia-smi"
    )
    torch_mem = (
        f"; torch peak {u.torch_peak_allocated_mb} MiB alloc / {u.torch_peak_reserved_mb} MiB reserved"
        if u.torch_peak_allocated_mb is not None
        else ""
    )
    return (
        f"        {gpu}{torch_mem}; process {u.process_cpu_cores} cores, machine {u.machine_cpu_pct}% CPU; "
        f"late frames {u.late_frames}"
    )


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--duration", type=float, default=15.0, help="measured seconds per N")
    ap.add_argument("--warmup", type=float, default=6.0, help="seconds before measuring")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--model", type=Path, help="normality model (.npz) for every camera: the full graph")
    ap.add_argument(
        "--source-clip", type=Path, default=SHARED / "data" / "ucsd_ped2" / "test" / "Test004.mp4"
    )
    ap.add_argument("--clip", type=Path, help="camera footage (default: --source-clip made 1920x1080)")
    ap.add_argument("--size", default="1920x1080", help="WxH of the made clip")
    ap.add_argument("--flow-scale", type=float, default=0.33, help="flow.scale (1080p -> ~640x360)")
    ap.add_argument("--ov-threads", type=int, default=4, help="detector.inference_threads (OpenVINO)")
    ap.add_argument("--until-not-held", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument(
        "--media",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="events write JPEG snapshots and mp4 clips (the config default); off: analysis capacity alone",
    )
    ap.add_argument("--media-dir", type=Path, default=Path(tempfile.gettempdir()) / "vigil-bench-media")
    ap.add_argument("--out", type=Path, default=REPO / "var" / "bench" / "gpu_streams.json")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.model is not None and not args.model.is_file():
        raise SystemExit(f"no normality model at {args.model}")
    if args.clip is None:
        w, h = (int(v) for v in args.size.split("x"))
        args.clip = make_clip(
            args.source_clip,
            REPO / "var" / "bench" / f"{args.source_clip.stem}_{h}p.mp4",
            w,
            h,
            options={"preset": "ultrafast", "crf": "23"},
        )
    if args.child:
        (n,) = args.streams
        result, usage = measure(args, n)
        args.out.write_text(json.dumps({"result": asdict(result), "usage": asdict(usage)}))
        return

    with av.open(str(args.clip)) as c:
        size = f"{c.streams.video[0].width}x{c.streams.video[0].height}"
    print(
        f"clip {args.clip.name} ({size}); device {args.device}; detector OpenVINO on CPU with "
        f"{args.ov_threads} threads; flow scale {args.flow_scale}; "
        f"event media {'on' if args.media else 'off'}; "
        f"target {TARGET_FPS:g} analysed fps/camera; "
        f"{os.cpu_count()} CPUs; each N in a fresh process",
        flush=True,
    )
    print(HEADER, flush=True)
    out: dict[str, object] = {
        "clip": str(args.clip),
        "clip_size": size,
        "device": args.device,
        "model": None if args.model is None else str(args.model),
        "flow_scale": args.flow_scale,
        "media": args.media,
        "ov_threads": args.ov_threads,
        "target_fps": TARGET_FPS,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "runs": [],
        "held": 0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # a step timeout (SIGTERM) must not leave the child running: subprocess.run kills it on SystemExit
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    for n in args.streams:
        part = args.out.with_suffix(f".n{n}.json")
        child = [sys.executable, "-m", "bench.bench_gpu_streams", "--child", "--streams", str(n)]
        child += ["--out", str(part), "--clip", str(args.clip), "--device", args.device]
        child += ["--duration", str(args.duration), "--warmup", str(args.warmup)]
        child += ["--flow-scale", str(args.flow_scale), "--ov-threads", str(args.ov_threads)]
        child += ["--media" if args.media else "--no-media", "--media-dir", str(args.media_dir)]
        if args.model is not None:
            child += ["--model", str(args.model)]
        subprocess.run(child, check=True, cwd=REPO)
        got = json.loads(part.read_text())
        part.unlink()
        result = Result(**got["result"])
        usage = Usage(**got["usage"])
        print(row(result), flush=True)
        print("        ms/frame: " + ", ".join(f"{k} {v:g}" for k, v in result.stage_ms.items()), flush=True)
        print(usage_row(usage), flush=True)
        out["runs"].append(got)  # type: ignore[union-attr]
        if result.held:
            out["held"] = max(int(out["held"]), n)  # type: ignore[call-overload]
        args.out.write_text(json.dumps(out, indent=2))
        if args.until_not_held and not result.held:
            print(f"N={n} not held: larger N skipped", flush=True)
            break
    print(f"1080p cameras held (p99 < 500 ms, >= 95% of {TARGET_FPS:g} fps, no growing queue): {out['held']}")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
