"""Per-stage cost of the perception stages on Ped2 (ms/frame), run without the runner.

python bench/bench_detect.py [--clip Test004] [--start 100] [--frames 60]
Prints one JSON object: ms/frame for detect+track, pose (per crop size and every-k), appearance.
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
    t = time.perf_counter()
    for p in packets:
        detect.process(p)
    result: dict[str, float] = {"detect_track": (time.perf_counter() - t) / len(packets) * 1000}
    result["objects_per_frame"] = float(np.mean([len(p.detections or ()) for p in packets]))

    def timed(stage: PoseStage | AppearanceStage) -> float:
        stage.process(packets[0])
        t = time.perf_counter()
        for p in packets:
            stage.process(p)
        return (time.perf_counter() - t) / len(packets) * 1000

    for crop in (128, 160):
        for k in (1, 2, 3):
            cfg = PoseConfig(
                model=str(models / "yolo11n-pose.pt"), device=args.device, crop_size=crop, every_k_frames=k
            )
            result[f"pose_crop{crop}_k{k}"] = timed(PoseStage.from_config(cfg))
    for layer in (8, 10):
        cfg = AppearanceConfig(model=str(models / "yolo11n-pose.pt"), device=args.device, layer=layer)
        result[f"appearance_layer{layer}"] = timed(AppearanceStage.from_config(cfg))
    print(json.dumps({k: round(v, 1) for k, v in result.items()}, indent=1))


if __name__ == "__main__":
    main()
