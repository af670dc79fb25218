"""Where pose time goes on a GPU: PoseEstimator.estimate per frame, eager vs CUDA graphs, alone and
while another thread keeps the interpreter busy (as the runner's other stages do).

    python -m bench.gpu.profile_pose [--device cuda] [--clip Test004] [--out PATH]

Boxes are the detector's on every frame (OpenVINO INT8 on the CPU), computed first and not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")

import av
import numpy as np
import torch

from bench.bench_perception import MODELS, PED2, REPO
from pipeline.config import DetectorConfig, PoseConfig
from stages.detect import Detector
from stages.pose import PoseEstimator


def busy_python(stop: threading.Event) -> None:
    """Pure-Python work that holds the GIL most of the time, like attributes/scene-graph stages."""
    x = 0
    while not stop.is_set():
        for i in range(10_000):
            x += i * i


def timed(estimator: PoseEstimator, frames: list[np.ndarray], boxes: list[np.ndarray], device: str) -> dict:
    ms = []
    for image, b in zip(frames, boxes, strict=True):
        t = time.perf_counter()
        estimator.estimate(image, b)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        ms.append(1000 * (time.perf_counter() - t))
    return {
        "median_ms": round(statistics.median(ms), 2),
        "mean_ms": round(statistics.fmean(ms), 2),
        "p90_ms": round(float(np.percentile(ms, 90)), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--clip", default="Test004")
    ap.add_argument("--out", type=Path, default=REPO / "var" / "bench" / "gpu_pose_profile.json")
    args = ap.parse_args()
    with av.open(str(PED2 / f"{args.clip}.mp4")) as c:
        frames = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    detector = Detector.from_config(DetectorConfig(model=str(MODELS / "yolo11n_int8_openvino_model")))
    person = detector.class_names.index("person")
    boxes = []
    for image in frames:
        d = detector.detect([image])[0]
        boxes.append(d.xyxy[d.class_id == person])
    crops = [len(b) for b in boxes]
    results: dict[str, object] = {
        "device": args.device,
        "clip": args.clip,
        "frames": len(frames),
        "persons_per_frame": round(statistics.fmean(crops), 2),
    }
    estimator = PoseEstimator.from_config(
        PoseConfig(model=str(MODELS / "yolo11n-pose.pt"), device=args.device)
    )
    net = estimator.loaded.net
    graphed = getattr(net, "_graphed", None)
    modes = {"graphs": graphed, "eager": None} if graphed is not None else {"eager": None}
    for mode, g in modes.items():
        net._graphed = g  # type: ignore[union-attr]
        timed(estimator, frames[:20], boxes[:20], args.device)  # warm-up (captures graphs)
        results[f"{mode}_alone"] = timed(estimator, frames, boxes, args.device)
        stop = threading.Event()
        workers = [threading.Thread(target=busy_python, args=(stop,)) for _ in range(3)]
        for w in workers:
            w.start()
        try:
            results[f"{mode}_3_busy_threads"] = timed(estimator, frames, boxes, args.device)
        finally:
            stop.set()
            for w in workers:
                w.join()
        print(
            mode, results[f"{mode}_alone"], "| with 3 busy Python threads:", results[f"{mode}_3_busy_threads"]
        )
    if graphed is not None:
        results["graphs_captured"] = graphed.graphs
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
