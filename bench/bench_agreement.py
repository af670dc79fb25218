"""Agreement of cheaper settings with the default path, through the full explained graph (no labels).

Each setting ("section.field=value" overrides of the default config, e.g. flow.scale=0.5 or
detector.every_k_frames=3) runs the whole graph (perception, score, explain, events; the normality
model given by --model) over the same clips as the reference setting, and is compared with it frame
by frame:

- boxes: share of the reference's boxes found again (same class, IoU >= 0.5; greedy per frame), the
  share of the setting's boxes that the reference has, median IoU of the matches;
- flow: end-point error of the setting's flow against the reference's on the reference grid (pixels
  of the full frame per flow step; the coarser field is resized bilinearly), median and p90 over the
  cells where the reference moves (|flow| >= 0.5 px), and over all cells;
- attributes of matched objects: |speed difference| (box-heights/s), |flow speed difference| and the
  L1 distance of the motion histograms (0: same, 2: disjoint);
- scores: Pearson and Spearman correlation of the frame scores, median / p90 |difference| of frame
  and object scores (matched objects), frames over the event threshold in either and in both, events.

    python -m bench.bench_agreement --model var/eval/s3/ped2-model.npz [--clips 640x360 Train005@640x360]
        [--settings flow.scale=0.5 detector.every_k_frames=3 "flow.scale=0.5,detector.every_k_frames=3"]

A clip is a Ped2 clip name (Test004, Train005), "640x360" (Test004 letterboxed to 640x360) or
NAME@640x360 (that clip letterboxed). Agreement uses no labels: it says how far a cheaper setting moves
what the graph computes, not whether either is right.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")

import av
import cv2
import numpy as np
import yaml

from bench.clips import make_640x360
from pipeline.boxes import box_iou
from pipeline.config import VigilConfig
from pipeline.harness import FramesSource, run_stages
from pipeline.packets import Frame, FramePacket
from stages.factory import build_stages
from stages.normality import NormalityModel
from stages.score import ANY_CAMERA

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VIGIL_SHARED", REPO.parent / "shared"))
PED2 = SHARED / "data" / "ucsd_ped2"
MODELS = SHARED / "models"


def clip_path(name: str) -> Path:
    base, _, size = name.partition("@")
    if base == "640x360":
        base, size = "Test004", "640x360"
    src = PED2 / ("train" if base.startswith("Train") else "test") / f"{base}.mp4"
    if not src.is_file():
        raise SystemExit(f"no Ped2 clip {base} at {src}")
    if not size:
        return src
    if size != "640x360":
        raise SystemExit(f"clip {name}: only @640x360 is made here")
    return make_640x360(src, REPO / "var" / "bench" / f"{base}_640x360.mp4")


def base_config(cache: Path) -> dict[str, dict[str, object]]:
    train = PED2 / "train"
    return {
        "detector": {"model": str(MODELS / "yolo11n_int8_openvino_model")},
        "pose": {"model": str(MODELS / "yolo11n-pose.pt")},
        "appearance": {"model": str(MODELS / "yolo11n-pose.pt")},
        "models": {
            "cache_dir": str(cache),
            "calibration": [str(train / f"Train00{i}.mp4") for i in (1, 2, 3)],
        },
        "events": {"snapshots": False, "clips": False},
    }


def with_overrides(raw: dict[str, dict[str, object]], setting: str) -> VigilConfig:
    """`raw` with "section.field=value[,section.field=value]" applied (value in YAML)."""
    raw = {k: dict(v) for k, v in raw.items()}
    for item in filter(None, setting.split(",")):
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot:
            raise SystemExit(f"setting {item!r}: expected section.field=value")
        raw.setdefault(section, {})[name] = yaml.safe_load(value)
    return VigilConfig.model_validate(raw)


def run(cfg: VigilConfig, model: NormalityModel, frames: list[Frame]) -> tuple[list[FramePacket], int, float]:
    """Completed packets in frame order, the number of events and process CPU-ms per frame."""
    stages = build_stages(cfg, {ANY_CAMERA: model})
    cpu = time.process_time()
    packets, report = run_stages(stages, [FramesSource("agree", frames)])
    cpu_ms = 1000 * (time.process_time() - cpu) / max(len(frames), 1)
    if report.stage_errors or len(packets) != len(frames):
        raise SystemExit(f"graph run failed: {report}")
    return sorted(packets, key=lambda p: p.frame.index), report.events, cpu_ms


def _match(a: np.ndarray, ac: np.ndarray, b: np.ndarray, bc: np.ndarray) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matches (i in a, j in b, IoU) of the same class at IoU >= 0.5."""
    if not len(a) or not len(b):
        return []
    m = box_iou(a, b) * (ac[:, None] == bc[None])
    out = []
    while m.size and m.max() >= 0.5:
        i, j = np.unravel_index(np.argmax(m), m.shape)
        out.append((int(i), int(j), float(m[i, j])))
        m[i, :], m[:, j] = 0, 0
    return out


def _q(values: list[float] | np.ndarray, q: float) -> float | None:
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    return round(float(np.percentile(v, q)), 4) if len(v) else None


def _still_merged(hist: np.ndarray, n_ori: int) -> np.ndarray:
    """A motion histogram with its slowest magnitude ring (< 0.25 box-heights/s) summed into one bin."""
    return np.concatenate([[hist[:n_ori].sum()], hist[n_ori:]])


def compare(
    ref: list[FramePacket], got: list[FramePacket], threshold: float, n_ori: int
) -> dict[str, object]:
    n_ref = n_got = 0
    ious: list[float] = []
    epe_moving: list[np.ndarray] = []
    epe_all: list[np.ndarray] = []
    d_speed: list[float] = []
    d_flow_speed: list[float] = []
    d_hist: list[float] = []
    d_hist_still: list[float] = []  # the slowest magnitude ring as one bin: its orientation is flow noise
    d_obj: list[float] = []
    f_ref, f_got = [], []
    for r, g in zip(ref, got, strict=True):
        assert r.frame.index == g.frame.index
        rd, gd = r.detections, g.detections
        assert rd is not None and gd is not None
        n_ref, n_got = n_ref + len(rd), n_got + len(gd)
        matches = _match(rd.xyxy, rd.class_id, gd.xyxy, gd.class_id)
        ious += [m[2] for m in matches]
        if r.flow is not None and g.flow is not None and r.flow.valid and g.flow.valid:
            rf, gf = r.flow.flow, g.flow.flow
            if gf.shape != rf.shape:
                gf = cv2.resize(gf, (rf.shape[1], rf.shape[0]), interpolation=cv2.INTER_LINEAR)
            epe = np.linalg.norm(gf - rf, axis=2)
            epe_all.append(epe.ravel())
            epe_moving.append(epe[np.linalg.norm(rf, axis=2) >= 0.5])
        ra, ga = r.attributes, g.attributes
        rs, gs = r.scores, g.scores
        assert ra is not None and ga is not None and rs is not None and gs is not None
        for i, j, _ in matches:  # detections come first in the attribute rows
            d_speed.append(abs(float(ra.speed[i]) - float(ga.speed[j])))
            d_flow_speed.append(abs(float(ra.flow_speed[i]) - float(ga.flow_speed[j])))
            d_hist.append(float(np.abs(ra.motion_hist[i] - ga.motion_hist[j]).sum()))
            merged = _still_merged(ra.motion_hist[i], n_ori) - _still_merged(ga.motion_hist[j], n_ori)
            d_hist_still.append(float(np.abs(merged).sum()))
            d_obj.append(abs(float(rs.object_score[i]) - float(gs.object_score[j])))
        f_ref.append(rs.frame_score)
        f_got.append(gs.frame_score)
    fr, fg = np.array(f_ref), np.array(f_got)
    rank = lambda x: np.argsort(np.argsort(x)).astype(np.float64)  # noqa: E731
    return {
        "boxes_found_again": round(len(ious) / max(n_ref, 1), 3),
        "boxes_in_reference": round(len(ious) / max(n_got, 1), 3),
        "median_iou": _q(ious, 50),
        "boxes_per_frame": round(n_got / len(ref), 2),
        "flow_epe_px_moving": {
            "median": _q(np.concatenate(epe_moving or [[]]), 50),
            "p90": _q(np.concatenate(epe_moving or [[]]), 90),
        },
        "flow_epe_px_all": {
            "median": _q(np.concatenate(epe_all or [[]]), 50),
            "p90": _q(np.concatenate(epe_all or [[]]), 90),
        },
        "speed_abs_diff": {"median": _q(d_speed, 50), "p90": _q(d_speed, 90)},
        "flow_speed_abs_diff": {"median": _q(d_flow_speed, 50), "p90": _q(d_flow_speed, 90)},
        "motion_hist_l1": {"median": _q(d_hist, 50), "p90": _q(d_hist, 90)},
        "motion_hist_l1_still_ring_merged": {"median": _q(d_hist_still, 50), "p90": _q(d_hist_still, 90)},
        "object_score_abs_diff": {"median": _q(d_obj, 50), "p90": _q(d_obj, 90)},
        "frame_score_abs_diff": {
            "median": _q(np.abs(fr - fg), 50),
            "p90": _q(np.abs(fr - fg), 90),
            "max": _q(np.abs(fr - fg), 100),
        },
        "frame_score_pearson": round(float(np.corrcoef(fr, fg)[0, 1]), 4),
        "frame_score_spearman": round(float(np.corrcoef(rank(fr), rank(fg))[0, 1]), 4),
        "frames_over_threshold": {
            "reference": int((fr >= threshold).sum()),
            "setting": int((fg >= threshold).sum()),
            "both": int(((fr >= threshold) & (fg >= threshold)).sum()),
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True, help="normality model (.npz) for every camera")
    ap.add_argument("--clips", nargs="+", default=["640x360", "Train005@640x360"])
    ap.add_argument("--reference", default="", help="overrides of the reference setting (default: none)")
    ap.add_argument(
        "--settings",
        nargs="+",
        default=["flow.scale=0.5", "detector.every_k_frames=3", "flow.scale=0.5,detector.every_k_frames=3"],
    )
    ap.add_argument("--max-frames", type=int, default=0, help="first N frames of each clip (0: all)")
    ap.add_argument("--cache", type=Path, default=REPO / "var" / "models" / "exports", help="export cache")
    ap.add_argument("--out", type=Path, default=REPO / "var" / "bench" / "agreement_settings.json")
    args = ap.parse_args()
    model = NormalityModel.load(args.model)
    raw = base_config(args.cache)
    ref_cfg = with_overrides(raw, args.reference)
    threshold = ref_cfg.events.start_score
    out: dict[str, object] = {
        "command": "python -m bench.bench_agreement " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg()},
        "reference": args.reference or "defaults",
        "model": str(args.model),
        "clips": {},
    }
    for name in args.clips:
        with av.open(str(clip_path(name))) as c:
            images = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
        if args.max_frames:
            images = images[: args.max_frames]
        frames = [Frame("agree", i, i / 10, im, time.time(), fps=10.0) for i, im in enumerate(images)]
        ref, ref_events, ref_cpu = run(ref_cfg, model, frames)
        row: dict[str, object] = {
            "frames": len(frames),
            "reference_events": ref_events,
            "reference_cpu_ms_per_frame": round(ref_cpu, 1),
        }
        for setting in args.settings:
            got, events, cpu = run(with_overrides(raw, f"{args.reference},{setting}"), model, frames)
            row[setting] = {
                **compare(ref, got, threshold, ref_cfg.attributes.motion_bins[1]),
                "events": events,
                "cpu_ms_per_frame": round(cpu, 1),
            }
            print(f"{name} [{setting}]: {json.dumps(row[setting])}", flush=True)
        out["clips"][name] = row  # type: ignore[index]
    out["machine"]["loadavg_end"] = os.getloadavg()  # type: ignore[index]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
