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

from pipeline.config import AppearanceConfig, DetectorConfig, ModelsConfig, PoseConfig
from pipeline.packets import Frame, FramePacket
from stages.appearance import AppearanceStage
from stages.detect import DetectStage
from stages.pose import PoseStage

SHARED = Path(os.environ.get("VIGIL_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def _poses(packets: list[FramePacket], cfg: PoseConfig, models: ModelsConfig) -> dict[tuple[int, int], tuple]:
    """(frame, track) -> (keypoints in frame pixels, conf) from a PoseStage over `packets` in order."""
    stage = PoseStage.from_config(cfg, models)
    stage.on_start()
    out = {}
    for p in packets:
        stage.process(p)
        poses, dets = p.poses, p.detections
        assert poses is not None and dets is not None
        for row, tid, kp, conf in zip(
            poses.detection_index, poses.track_id, poses.keypoints, poses.keypoint_conf, strict=True
        ):
            x1, y1, x2, y2 = dets.xyxy[row]
            out[(p.frame.index, int(tid))] = (kp * [x2 - x1, y2 - y1] + [x1, y1], conf, y2 - y1)
    return out


def pose_agreement(
    packets: list[FramePacket], weights: Path, models: ModelsConfig, args: argparse.Namespace
) -> dict[str, object]:
    """Keypoint distance (frame pixels and share of box height) of cheaper pose settings vs every frame.

    The reference is pose on every frame at 128 px crops; the detector runs on every frame so all
    settings see the same boxes. Only keypoints the reference is sure of (conf > 0.3) are compared.
    """
    detect = DetectStage.from_config(
        DetectorConfig(
            model=str(weights.parent / "yolo11n_int8_openvino_model"), device=args.device, every_k_frames=1
        )
    )
    for p in packets:
        detect.process(p)
    base = {"model": str(weights), "device": args.device}
    ref = _poses(packets, PoseConfig(**base, format="openvino", crop_size=128, every_k_frames=1), models)
    result: dict[str, object] = {"frames": len(packets), "reference_poses": len(ref)}
    for fmt, crop, k in (
        ("openvino", 128, 2),
        ("openvino", 128, 3),
        ("openvino", 96, 1),
        ("openvino_int8", 128, 1),
        ("openvino_int8", 128, 2),
        ("openvino_int8", 128, 3),
    ):
        got = _poses(packets, PoseConfig(**base, format=fmt, crop_size=crop, every_k_frames=k), models)
        px, rel = [], []
        for key, (kp, conf, height) in ref.items():
            if key in got:
                sure = conf > 0.3
                d = np.linalg.norm(got[key][0][sure] - kp[sure], axis=1)
                px.append(d)
                rel.append(d / height)
        d_px, d_rel = np.concatenate(px), np.concatenate(rel)
        result[f"{fmt}_crop{crop}_k{k}"] = {
            "poses_found_share": round(len(got) / max(len(ref), 1), 3),
            "median_px": round(float(np.median(d_px)), 2),
            "p90_px": round(float(np.percentile(d_px, 90)), 2),
            "median_box_height_share": round(float(np.median(d_rel)), 3),
            "p90_box_height_share": round(float(np.percentile(d_rel, 90)), 3),
        }
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clip", default="Test004")
    ap.add_argument("--start", type=int, default=100)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--formats", nargs="+", default=["pytorch", "openvino", "onnx", "openvino_int8"])
    ap.add_argument("--crops", nargs="+", type=int, default=[96, 128])
    ap.add_argument("--ks", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--cache", default="var/models/exports")
    ap.add_argument(
        "--calibration",
        nargs="*",
        default=[f"Train00{i}" for i in (1, 2, 3)],
        help="Ped2 training clips (normal footage) that calibrate openvino_int8",
    )
    ap.add_argument(
        "--agreement",
        action="store_true",
        help="instead: keypoint agreement of pose every k-th frame / smaller crops vs every frame at 128 px",
    )
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
    train = SHARED / "data" / "ucsd_ped2" / "train"
    cache = ModelsConfig(
        cache_dir=args.cache, calibration=[str(train / f"{c}.mp4") for c in args.calibration]
    )
    if args.agreement:
        print(json.dumps(pose_agreement(packets, models / "yolo11n-pose.pt", cache, args), indent=1))
        return
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
                result[f"pose_{fmt}_crop{crop}_k{k}"] = timed(PoseStage.from_config(cfg, cache))
        for layer in () if fmt == "openvino_int8" else (8,):
            cfg = AppearanceConfig(
                model=str(models / "yolo11n-pose.pt"), device=args.device, layer=layer, format=fmt
            )
            result[f"appearance_{fmt}_layer{layer}_k1"] = timed(AppearanceStage.from_config(cfg, cache))
    print(json.dumps({k: round(v, 1) for k, v in result.items()}, indent=1))


if __name__ == "__main__":
    main()
