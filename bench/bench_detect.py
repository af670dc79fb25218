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

from bench.clips import make_640x360
from pipeline.boxes import box_iou
from pipeline.config import AppearanceConfig, DetectorConfig, ModelsConfig, PoseConfig
from pipeline.packets import Detections, Frame, FramePacket, SourceEvent
from stages.appearance import AppearanceStage
from stages.detect import DetectStage
from stages.pose import PoseStage

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VIGIL_SHARED", REPO.parent / "shared"))


def _decode(name: str) -> list[np.ndarray]:
    """All frames of a Ped2 test clip, or of Test004 letterboxed to 640x360 ("640x360")."""
    test = SHARED / "data" / "ucsd_ped2" / "test"
    clip = (
        make_640x360(test / "Test004.mp4", REPO / "var" / "bench" / "Test004_640x360.mp4")
        if name == "640x360"
        else test / f"{name}.mp4"
    )
    with av.open(str(clip)) as c:
        return [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]


def _poses(
    packets: list[FramePacket], cfg: PoseConfig, models: ModelsConfig
) -> tuple[dict[tuple[int, int], tuple], int]:
    """(frame, track) -> (keypoints in frame pixels, conf) from a PoseStage over `packets` in order,
    and the number of boxes the estimator was run on (crops, the pose stage's cost)."""
    stage = PoseStage.from_config(cfg, models)
    stage.on_start()
    estimate = stage.estimator.estimate
    runs = [0]

    def counted(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        runs[0] += len(boxes)
        return estimate(image, boxes)

    stage.estimator.estimate = counted  # type: ignore[method-assign]
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
    return out, runs[0]


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
    ref, ref_runs = _poses(
        packets, PoseConfig(**base, format="openvino", crop_size=128, every_k_frames=1), models
    )
    result: dict[str, object] = {
        "frames": len(packets),
        "reference_poses": len(ref),
        "reference_crops_per_frame": round(ref_runs / len(packets), 2),
    }
    # (format, crop, every k, still k, still box change): still k > k keeps a still person's pose longer
    for fmt, crop, k, still_k, change in (
        ("openvino", 128, 2, 0, 0.1),
        ("openvino", 128, 3, 0, 0.1),
        ("openvino", 128, 2, 4, 0.05),
        ("openvino", 128, 2, 4, 0.1),
        ("openvino", 128, 2, 6, 0.05),
        ("openvino", 128, 2, 6, 0.1),
        ("openvino", 96, 1, 0, 0.1),
        ("openvino_int8", 128, 1, 0, 0.1),
        ("openvino_int8", 128, 2, 0, 0.1),
        ("openvino_int8", 128, 3, 0, 0.1),
    ):
        cfg = PoseConfig(
            **base,
            format=fmt,
            crop_size=crop,
            every_k_frames=k,
            still_k_frames=still_k,
            still_box_change=change,
        )
        got, runs = _poses(packets, cfg, models)
        px, rel = [], []
        for key, (kp, conf, height) in ref.items():
            if key in got:
                sure = conf > 0.3
                d = np.linalg.norm(got[key][0][sure] - kp[sure], axis=1)
                px.append(d)
                rel.append(d / height)
        d_px, d_rel = np.concatenate(px), np.concatenate(rel)
        still = f"_still{still_k}_{change:g}" if still_k > k else ""
        result[f"{fmt}_crop{crop}_k{k}{still}"] = {
            "crops_per_frame": round(runs / len(packets), 2),
            "poses_found_share": round(len(got) / max(len(ref), 1), 3),
            "median_px": round(float(np.median(d_px)), 2),
            "p90_px": round(float(np.percentile(d_px, 90)), 2),
            "median_box_height_share": round(float(np.median(d_rel)), 3),
            "p90_box_height_share": round(float(np.percentile(d_rel, 90)), 3),
        }
    return result


def _tracked(cfg: DetectorConfig, images: list[np.ndarray]) -> tuple[list[Detections], float]:
    """Tracked boxes of every frame (detector on every frame) and the detect+track CPU-ms per frame."""
    stage = DetectStage.from_config(cfg)
    stage.process(FramePacket(Frame("warmup", 0, 0.0, images[0], time.time())))
    stage.on_source_eos(SourceEvent("warmup", "eos"))
    out = []
    t = time.thread_time()
    for i, im in enumerate(images):
        p = FramePacket(Frame("agree", i, i / 10, im, time.time()))
        stage.process(p)
        assert p.detections is not None
        out.append(p.detections)
    return out, (time.thread_time() - t) / len(images) * 1000


def _recall(ref: list[Detections], got: list[Detections], min_iou: float = 0.5) -> tuple[float, float, float]:
    """(share of ref boxes matched by a got box of the same class at IoU >= min_iou, the same share of
    got boxes matched by ref, median IoU of the matches); greedy one-to-one per frame and class."""
    matched, total_ref, total_got, ious = 0, 0, 0, []
    for r, g in zip(ref, got, strict=True):
        total_ref, total_got = total_ref + len(r), total_got + len(g)
        if not len(r) or not len(g):
            continue
        m = box_iou(r.xyxy, g.xyxy) * (r.class_id[:, None] == g.class_id[None])
        while m.size and m.max() >= min_iou:
            i, j = np.unravel_index(np.argmax(m), m.shape)
            ious.append(float(m[i, j]))
            matched += 1
            m[i, :], m[:, j] = 0, 0
    return matched / max(total_ref, 1), matched / max(total_got, 1), float(np.median(ious)) if ious else 0.0


def detect_agreement(clips: dict[str, list[np.ndarray]], args: argparse.Namespace) -> dict[str, object]:
    """Tracked boxes of the rect detector (and smaller imgsz) vs the export's 640x640 square input.

    The reference is today's detector before `rect`: the INT8 export at 640x640 on every frame, tracked.
    Recall: share of its tracked boxes that the setting also tracks (same class, IoU >= 0.5).
    """
    base = DetectorConfig(
        model=str(SHARED / "models" / "yolo11n_int8_openvino_model"), device=args.device, every_k_frames=1
    )
    result: dict[str, object] = {}
    for name, images in clips.items():
        ref, ref_ms = _tracked(base.model_copy(update={"rect": False}), images)
        row: dict[str, object] = {
            "frames": len(images),
            "reference_boxes": sum(len(d) for d in ref),
            "square640_ms": round(ref_ms, 1),
        }
        for imgsz in args.rect_sizes:
            got, ms = _tracked(base.model_copy(update={"rect": True, "imgsz": imgsz}), images)
            recall, precision, med = _recall(ref, got)
            row[f"rect{imgsz}"] = {
                "tracked_box_recall": round(recall, 3),
                "precision": round(precision, 3),
                "median_iou": round(med, 3),
                "ms": round(ms, 1),
                "ms_ratio_vs_square640": round(ms / ref_ms, 2),
            }
        result[name] = row
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
    ap.add_argument(
        "--rect-sizes",
        nargs="+",
        type=int,
        default=[640, 512, 448],
        help="with --agreement: detector imgsz values run at the letterbox rectangle (detector.rect)",
    )
    ap.add_argument(
        "--detect-clips",
        nargs="+",
        default=["Test004", "Test007", "640x360"],
        help="with --agreement: whole clips for the detector agreement (640x360: Test004 letterboxed)",
    )
    ap.add_argument("--parts", nargs="+", choices=["detect", "pose"], default=["detect", "pose"])
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
        out: dict[str, object] = {}
        if "detect" in args.parts:
            out["detect"] = detect_agreement({name: _decode(name) for name in args.detect_clips}, args)
        if "pose" in args.parts:
            out["pose"] = pose_agreement(packets, models / "yolo11n-pose.pt", cache, args)
        print(json.dumps(out, indent=1))
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
