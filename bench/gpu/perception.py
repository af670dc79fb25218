"""Perception graph on a GPU vs the naive loop on the same GPU, same run (bench_perception's measurement).

    python -m bench.gpu.perception [--device cuda] [--clips Test004 640x360] [--ov-threads 4] [--out PATH]

The graph is `bench.bench_perception.graph_run` (the real Runner, lossless replay, per-stage ms from the
runner's histograms) with pose, appearance and scoring devices set to `--device` and the detector the
INT8 OpenVINO export on the CPU (the only detector weights offline). The naive loop is the one of
`bench/naive.py` (`track` + full-frame pose on every frame) with the same split: detector on the CPU,
pose on `--device`. Models are loaded and warmed up before either clock starts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")

import av

from bench.bench_perception import MODELS, PED2, REPO, graph_run
from bench.clips import make_640x360
from pipeline.config import VigilConfig


def naive_split(clip: Path, device: str) -> dict[str, float]:
    """bench/naive.py's loop with the detector on the CPU and pose on `device`."""
    from ultralytics import YOLO

    det = YOLO(str(MODELS / "yolo11n_int8_openvino_model"), task="detect")
    pose = YOLO(str(MODELS / "yolo11n-pose.pt"), task="pose")
    with av.open(str(clip)) as container:
        images = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    det.track(images[0], persist=True, verbose=False, device="cpu")
    pose(images[0], verbose=False, device=device)
    det.predictor.trackers[0].reset()
    t0, cpu0 = time.perf_counter(), time.process_time()
    for image in images:
        det.track(image, persist=True, verbose=False, device="cpu")
        pose(image, verbose=False, device=device)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    n = len(images)
    return {
        "frames": n,
        "wall_s": round(wall, 2),
        "fps": round(n / wall, 2),
        "cpu_ms_per_frame": round(1000 * cpu / n, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--clips", nargs="+", default=["Test004", "640x360"])
    ap.add_argument("--ov-threads", type=int, default=4, help="detector.inference_threads (OpenVINO, CPU)")
    ap.add_argument("--out", type=Path, default=REPO / "var" / "bench" / "gpu_perception.json")
    args = ap.parse_args()
    cfg = VigilConfig.model_validate(
        {
            "detector": {
                "model": str(MODELS / "yolo11n_int8_openvino_model"),
                "device": "cpu",
                "inference_threads": args.ov_threads,
            },
            "pose": {"model": str(MODELS / "yolo11n-pose.pt"), "device": args.device},
            "appearance": {"model": str(MODELS / "yolo11n-pose.pt"), "device": args.device},
        }
    )
    results: dict[str, object] = {
        "device": args.device,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "config": {"detector": cfg.detector.model_dump(), "pose": cfg.pose.model_dump()},
        "clips": {},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for name in args.clips:
        clip = (
            make_640x360(PED2 / "Test004.mp4", REPO / "var" / "bench" / "Test004_640x360.mp4")
            if name == "640x360"
            else PED2 / f"{name}.mp4"
        )
        graph = graph_run(cfg, clip)
        naive = naive_split(clip, args.device)
        speedup = round(graph["fps"] / naive["fps"], 2)  # type: ignore[operator]
        results["clips"][name] = {"graph": graph, "naive": naive, "speedup_vs_naive": speedup}  # type: ignore[index]
        print(
            f"{name} on {args.device}: graph {graph['fps']} fps, {graph['cpu_ms_per_frame']} CPU-ms/frame | "
            f"naive {naive['fps']} fps, {naive['cpu_ms_per_frame']} CPU-ms/frame -> {speedup}x",
            flush=True,
        )
        print("   ms/frame per stage:", graph["stage_ms_per_frame"], flush=True)
        args.out.write_text(json.dumps(results, indent=2))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
