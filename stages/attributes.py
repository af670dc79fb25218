"""Per-object attributes of a frame: place, size, motion, pose and appearance, scale-free.

Units: ground point = bottom centre of the box in [0, 1] image coordinates; speeds in box-heights per
second (pixel motion over box height in pixels, over real seconds from pts), so image size and
analysis stride do not change them; `scale_rate` = d(log box height)/dt, positive when approaching.

Motion histogram: flow vectors inside the box, magnitude in box-heights/s binned on edges
0, 0.25, 1, 4, ... (x4 each; the last bin open), orientation = absolute image angle atan2(dy, dx)
in equal sectors starting at 0 (x right, y down): with a fixed camera the absolute direction is what
is normal or not in a place. Flattened magnitude-major, normalised to sum 1; NaN when the flow is
invalid (first frame), 0 for a box that covers no flow sample.

Pose row: 17 box-normalised keypoints (x, y) flattened, then their 17 confidences (P = 51).
Appearance row: D = `AttributesConfig.appearance_dim`; NaN when the object has no embedding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from pipeline.config import AttributesConfig
from pipeline.errors import PacketError
from pipeline.packets import (
    COCO_KEYPOINTS,
    Detections,
    Embeddings,
    FlowField,
    Frame,
    FramePacket,
    ObjectAttributes,
    Poses,
    SourceEvent,
)
from pipeline.stage import Stage
from stages.blobs import BlobIds, find_blobs
from stages.flow import grid_window, median
from stages.track_history import TrackHistory

POSE_DIM = COCO_KEYPOINTS * 3


def magnitude_edges(bins: int) -> np.ndarray:
    """Magnitude bin edges in box-heights/s: 0, 0.25, 1, 4, ... and +inf (len bins + 1)."""
    inner = [0.25 * 4.0**k for k in range(bins - 1)]
    return np.array([0.0, *inner, np.inf])


def polar_histogram(speed: np.ndarray, angle: np.ndarray, bins: tuple[int, int]) -> np.ndarray:
    """Histogram of flow samples given as speed (box-heights/s) and angle (radians in [0, 2pi))."""
    return polar_histograms([speed], [angle], bins)[0]


def polar_histograms(speeds: list[np.ndarray], angles: list[np.ndarray], bins: tuple[int, int]) -> np.ndarray:
    """(N, bins) `polar_histogram` of each (speed, angle) pair, all binned and counted at once (a row
    without samples is 0). The counts are integers, so each row's float32 sum is exact in any order."""
    n_mag, n_ori = bins
    n_bins = n_mag * n_ori
    sizes = [s.size for s in speeds]
    if sum(sizes) == 0:
        return np.zeros((len(speeds), n_bins), np.float32)
    speed = np.concatenate([s.ravel() for s in speeds])
    angle = np.concatenate([a.ravel() for a in angles])
    mi = np.searchsorted(magnitude_edges(n_mag), speed, side="right") - 1
    mi = np.minimum(np.maximum(mi, 0), n_mag - 1)  # integers: np.clip's values
    oi = np.minimum((angle * (n_ori / (2 * np.pi))).astype(np.int64), n_ori - 1)
    row = np.repeat(np.arange(len(speeds)) * n_bins, sizes)
    out = np.bincount(row + mi * n_ori + oi, minlength=len(speeds) * n_bins).astype(np.float32)
    out = out.reshape(len(speeds), n_bins)
    total = out.sum(axis=1, keepdims=True)
    return np.divide(out, total, out=np.zeros_like(out), where=total > 0)


def motion_histogram(vectors: np.ndarray, box_height: float, dt: float, bins: tuple[int, int]) -> np.ndarray:
    """Magnitude x orientation histogram of flow `vectors` (K, 2) in pixels per dt; sums to 1 or 0."""
    speed = np.hypot(vectors[:, 0], vectors[:, 1]) / (box_height * dt)
    angle = np.mod(np.arctan2(vectors[:, 1], vectors[:, 0]), 2 * np.pi)
    return polar_histogram(speed, angle, bins)


@dataclass(slots=True)
class _Camera:
    history: TrackHistory
    blob_ids: BlobIds = field(default_factory=BlobIds)


class AttributeExtractor:
    """Computes ObjectAttributes frame by frame; keeps per-camera track history and blob ids."""

    def __init__(self, config: AttributesConfig | None = None) -> None:
        self.config = config or AttributesConfig()
        self._cameras: dict[str, _Camera] = {}

    def add_camera(self, camera: str) -> None:
        c = self.config
        history = TrackHistory(
            c.velocity_window,
            c.dwell_radius,
            c.max_history,
            c.track_expiry_s,
            c.velocity_from,
            c.velocity_window_s,
        )
        self._cameras[camera] = _Camera(history)

    def drop_camera(self, camera: str) -> None:
        self._cameras.pop(camera, None)

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(self._cameras)

    def __call__(
        self,
        frame: Frame,
        detections: Detections,
        flow: FlowField,
        poses: Poses | None = None,
        appearance: Embeddings | None = None,
    ) -> ObjectAttributes:
        cfg = self.config
        if frame.camera not in self._cameras:  # a frame before its camera's "added" event
            self.add_camera(frame.camera)
        cam = self._cameras[frame.camera]
        height, width = frame.height, frame.width
        if flow.flow.shape[0] > height or flow.flow.shape[1] > width:
            raise PacketError(
                f"attributes: flow grid {flow.flow.shape[:2]} is larger than the frame {(height, width)}"
            )
        if appearance is not None and len(appearance) and appearance.vectors.shape[1] != cfg.appearance_dim:
            raise PacketError(
                f"attributes: appearance vectors have D={appearance.vectors.shape[1]}, "
                f"expected attributes.appearance_dim={cfg.appearance_dim} (the encoder's D)"
            )
        if flow.valid:  # |flow| (pixels per dt) and its angle in [0, 2pi), once for the whole grid
            magnitude, angle = cv2.cartToPolar(flow.flow[..., 0], flow.flow[..., 1])
        else:
            magnitude = angle = np.zeros(flow.flow.shape[:2], np.float32)
        blob_boxes = find_blobs(
            flow,
            (height, width),
            detections.xyxy,
            frame.fps,
            cfg.blob_min_flow,
            cfg.blob_min_area,
            cfg.blob_box_margin,
            magnitude,
            ignore_border=cfg.blob_ignore_border,
            spill_reach=cfg.blob_spill_reach,
        )
        blob_ids = cam.blob_ids.assign(blob_boxes)
        n_det, n = len(detections), len(detections) + len(blob_boxes)
        xyxy = np.concatenate([detections.xyxy.astype(np.float32), blob_boxes]).reshape(n, 4)
        track_id = np.concatenate([detections.track_id.astype(np.int64), blob_ids])
        class_id = np.concatenate(
            [detections.class_id.astype(np.int32), np.full(len(blob_boxes), -1, np.int32)]
        )
        confidence = np.concatenate(
            [detections.confidence.astype(np.float32), np.ones(len(blob_boxes), np.float32)]
        )

        box_h = np.maximum(xyxy[:, 3] - xyxy[:, 1], 1.0)
        box_w = np.maximum(xyxy[:, 2] - xyxy[:, 0], 1.0)
        gx, gy = (xyxy[:, 0] + xyxy[:, 2]) / 2, xyxy[:, 3]
        ground = np.clip(np.stack([gx / width, gy / height], axis=1), 0.0, 1.0).astype(np.float32)
        rows, cols = cfg.grid
        r = np.minimum((ground[:, 1] * rows).astype(np.int32), rows - 1)
        c = np.minimum((ground[:, 0] * cols).astype(np.int32), cols - 1)

        # kinematics per object in Python floats, converted to arrays once
        velocity_l, scale_l = [(math.nan, math.nan)] * n, [math.nan] * n
        dwell_l, age_l = [0.0] * n, [1] * n
        for i, (tid, box) in enumerate(zip(track_id.tolist(), xyxy.tolist(), strict=True)):
            if i < n_det and tid < 0:  # an untracked detection has no history
                continue
            k = cam.history.update(tid, frame.pts, (box[0], box[1], box[2], box[3]))
            velocity_l[i], scale_l[i], dwell_l[i], age_l[i] = k.velocity, k.scale_rate, k.dwell, k.age
        cam.history.expire(frame.pts)
        velocity = np.array(velocity_l, np.float32).reshape(n, 2)
        scale_rate = np.array(scale_l, np.float32)
        dwell = np.array(dwell_l, np.float32)
        age = np.array(age_l, np.int32)

        n_bins = cfg.motion_bins[0] * cfg.motion_bins[1]
        flow_speed = np.full(n, np.nan, np.float32)
        motion_hist = np.full((n, n_bins), np.nan, np.float32)
        if flow.valid and n:
            windows = [grid_window(magnitude.shape, (height, width), box) for box in xyxy]
            scale = box_h * flow.dt  # per box: flow (pixels per dt) -> box-heights/s
            speeds = [magnitude[w] / scale[i] for i, w in enumerate(windows)]
            motion_hist[:] = polar_histograms(speeds, [angle[w] for w in windows], cfg.motion_bins)
            for i, speed_bh in enumerate(speeds):
                if speed_bh.size:
                    flow_speed[i] = median(speed_bh.ravel())

        return ObjectAttributes(
            track_id=track_id,
            class_id=class_id,
            class_names=detections.class_names,
            xyxy=xyxy,
            confidence=confidence,
            ground=ground,
            cell=(r * cols + c).astype(np.int32),
            height=(box_h / height).astype(np.float32),
            aspect=(box_w / box_h).astype(np.float32),
            velocity=velocity,
            speed=np.linalg.norm(velocity, axis=1).astype(np.float32),
            direction=np.arctan2(velocity[:, 1], velocity[:, 0]).astype(np.float32),
            flow_speed=flow_speed,
            motion_hist=motion_hist,
            pose=_pose_rows(poses, n_det, n),
            appearance=_appearance_rows(appearance, n_det, n, cfg.appearance_dim),
            scale_rate=scale_rate,
            dwell=dwell,
            age=age,
            is_blob=np.arange(n) >= n_det,
        )


def _pose_rows(poses: Poses | None, n_det: int, n: int) -> np.ndarray:
    out = np.full((n, POSE_DIM), np.nan, np.float32)
    if poses is None:
        return out
    for j, d in enumerate(poses.detection_index.tolist()):
        if not 0 <= d < n_det:
            raise PacketError(f"attributes: pose {j} refers to detection {d}, frame has {n_det} detections")
        out[d] = np.concatenate([poses.keypoints[j].reshape(-1), poses.keypoint_conf[j]])
    return out


def _appearance_rows(appearance: Embeddings | None, n_det: int, n: int, dim: int) -> np.ndarray:
    out = np.full((n, dim), np.nan, np.float32)
    if appearance is None:
        return out
    for j, d in enumerate(appearance.detection_index.tolist()):
        if not 0 <= d < n_det:
            raise PacketError(
                f"attributes: embedding {j} refers to detection {d}, frame has {n_det} detections"
            )
        out[d] = appearance.vectors[j]
    return out


class AttributesStage(Stage):
    """Per-object attributes from detections and flow (pose and appearance when those stages run)."""

    name = "attributes"
    interpreter_bound = True
    needs = ("frame", "detections", "flow")
    provides = ("attributes",)

    def __init__(self, config: AttributesConfig | None = None) -> None:
        self.extractor = AttributeExtractor(config)

    def on_source_added(self, event: SourceEvent) -> None:
        self.extractor.add_camera(event.camera)

    def on_source_eos(self, event: SourceEvent) -> None:
        self.extractor.drop_camera(event.camera)

    def process(self, packet: FramePacket) -> None:
        assert packet.detections is not None and packet.flow is not None  # guaranteed by `needs`
        packet.attributes = self.extractor(
            packet.frame, packet.detections, packet.flow, packet.poses, packet.appearance
        )
