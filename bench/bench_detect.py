"""Per-stage cost of the perception stages on Ped2 (ms/frame), run without the runner.

python -m bench.bench_detect [--clip Test004] [--start 100] [--frames 60] [--formats pytorch openvino onnx]
Prints one JSON object: process CPU-ms/frame for detect+track, pose (per format, crop size, every-k),
appearance (per format). Exports are built once into --cache (default var/models/exports).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import av
import numpy as np

os.environ.setdefault("YOLO_OFFLINE", "1")

from pipeline.config import AppearanceConfig, DetectorConfig, PoseConfig
from pipeline.packets import Frame, FramePacket
from stages.appearance import AppearanceStage
from stages.detect import DetectStage
from stages.pose import PoseStage

SHARED = Path(os.environ.get("VIGIL_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clip", default="Test004")
    ap.add_argument("--start", type=int, default=100)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--formats", nargs="+", default=["pytorch", "openvino", "onnx"])
    ap.add_argument("--crops", nargs="+", type=int, default=[96, 128])
    ap.add_argument("--ks", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--cache", default="var/models/exports")
    args = ap.parse_args()
    images = []
    with av.open(str(SHARED / "data" / "ucsd_ped2" / "test" / f"{args.clip}.mp4")) as c:
        for i, f in enumerate(c.decode(video=0)):
            if args.start <= i < args.start + args.frames:
                images.append(f.to_ndarray(format="bgr24"))
    models = SHARED / "models"
    detect = DetectStage.from_config(
        DetectorConfig(model=str(models / "yolo11n_int8_openvino_model"), device=args.device)
    )
    packets = [FramePacket(Frame("bench", i, i / 10, im, time.time())) for i, im in enumerate(images)]
    detect.process(packets[0])
    t = time.process_time()
    for p in packets:
        detect.process(p)
    result: dict[str, float] = {"detect_track": (time.process_time() - t) / len(packets) * 1000}
    result["objects_per_frame"] = float(np.mean([len(p.detections or ()) for p in packets]))

    def timed(stage: PoseStage | AppearanceStage) -> float:
        """Process CPU-ms per frame: robust to other processes on a shared box (wall time is not)."""
        stage.on_start()  # torch threads as configured
        stage.process(packets[0])
        t = time.process_time()
        for p in packets:
            stage.process(p)
        return (time.process_time() - t) / len(packets) * 1000

    for fmt in args.formats:
        for crop in args.crops:
            for k in args.ks:
                cfg = PoseConfig(
                    model=str(models / "yolo11n-pose.pt"),
                    device=args.device,
                    crop_size=crop,
                    every_k_frames=k,
                    format=fmt,
                )
                result[f"pose_{fmt}_crop{crop}_k{k}"] = timed(PoseStage.from_config(cfg, args.cache))
        for layer in (8,):
            cfg = AppearanceConfig(
                model=str(models / "yolo11n-pose.pt"), device=args.device, layer=layer, format=fmt
            )
            result[f"appearance_{fmt}_layer{layer}_k1"] = timed(AppearanceStage.from_config(cfg, args.cache))
    print(json.dumps({k: round(v, 1) for k, v in result.items()}, indent=1))


if __name__ == "__main__":
    main()
