"""Detect objects with one shared YOLO model and track them with one ByteTrack per camera.

Tracking uses ultralytics' `BYTETracker` fed with our own detections rather than `YOLO.track`,
because `YOLO.track(persist=True)` keeps a single tracker inside the model object and so cannot serve
several cameras with one model. Only tracked boxes leave the stage: a low-confidence box that no
track claims is dropped, and boxes keep the detector's coordinates (not the Kalman estimate).

With `every_k_frames` = k > 1 the detector runs on every k-th analysed frame of a camera only. On the
frames between, the last tracked boxes are moved by the median optical flow of their central part
(the flow stage then runs before this one: the stage needs "flow"); ids, classes and confidences
(the last real ones) stay. Flow rather than the tracker's Kalman prediction: the flow is measured on
this very frame, so it follows people who stop, turn or start, which a constant-velocity guess made
from 10 fps boxes does not; the tracker sees only real detections, one update per detector run.
"""

from __future__ import annotations

from argparse import Namespace
from dataclasses import dataclass

import numpy as np
import torch
import torchvision
from ultralytics.engine.results import Boxes
from ultralytics.trackers.byte_tracker import BYTETracker

from pipeline.config import DetectorConfig
from pipeline.errors import ConfigError, PacketError
from pipeline.packets import Detections, FlowField, FramePacket, SourceEvent
from pipeline.stage import Stage
from stages.flow import box_flow, median
from stages.yolo_loading import LoadedModel, load_yolo


def check_image(owner: str, image: object) -> np.ndarray:
    """An (H, W, 3) uint8 BGR image, or PacketError naming what arrived."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        got = f"shape {image.shape} {image.dtype}" if isinstance(image, np.ndarray) else type(image).__name__
        raise PacketError(f"{owner}: expected an (H, W, 3) uint8 image, got {got}")
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise PacketError(f"{owner}: image of shape {image.shape} is too small")
    return image


class Detector:
    """A YOLO detector over whole frames, optionally on overlapping column tiles.

    Tiles upscale small objects: with a static 640 input a 360x240 frame is enlarged 1.8x as a whole,
    but 2.7x when split into two tiles (each tile is letterboxed to the model's input on its own).
    A static OpenVINO export loaded with `rect` runs each image (or tile) at its own letterbox
    rectangle, as ultralytics does for PyTorch weights, instead of the export's imgsz x imgsz square.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        imgsz: int,
        confidence: float,
        iou: float,
        classes: list[int] | None = None,
        tiles: int = 1,
        tile_overlap: float = 0.15,
    ) -> None:
        self.loaded = loaded
        self.imgsz = loaded.rect.imgsz if loaded.rect is not None else loaded.static_imgsz or imgsz
        self.confidence = confidence
        self.iou = iou
        self.classes = classes
        self.tiles = tiles
        self.tile_overlap = tile_overlap

    @classmethod
    def from_config(cls, cfg: DetectorConfig) -> Detector:
        loaded = load_yolo(cfg.model, "detect", cfg.device, cfg.imgsz, cfg.inference_threads, cfg.rect)
        return cls(loaded, cfg.imgsz, cfg.confidence, cfg.iou, cfg.classes, cfg.tiles)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.loaded.names

    @property
    def max_batch(self) -> int | None:
        return self.loaded.max_batch

    def _windows(self, width: int) -> list[tuple[int, int]]:
        if self.tiles == 1:
            return [(0, width)]
        step = width / self.tiles
        pad = round(step * self.tile_overlap)
        return [
            (max(0, int(i * step) - pad), min(width, int((i + 1) * step) + pad)) for i in range(self.tiles)
        ]

    def _predict(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Raw (N, 6) [x1, y1, x2, y2, conf, cls] float32 per image, batched when the model allows.

        With per-shape networks (`loaded.rect`) each image runs through the network of its letterbox
        rectangle, one at a time (a static export takes batch 1).
        """
        rect = self.loaded.rect
        if rect is not None:
            return [rect.predict(image, self.confidence, self.iou, self.classes) for image in images]
        out: list[np.ndarray] = []
        step = self.loaded.max_batch or len(images)
        for start in range(0, len(images), step):
            results = self.loaded.model.predict(
                images[start : start + step],
                imgsz=self.imgsz,
                conf=self.confidence,
                iou=self.iou,
                classes=self.classes,
                device=self.loaded.device,
                verbose=False,
            )
            out += [r.boxes.data.cpu().numpy().astype(np.float32)[:, :6] for r in results]
        return out

    def detect(self, images: list[np.ndarray]) -> list[Detections]:
        """Untracked detections (track_id -1) for each BGR image."""
        for image in images:
            check_image("Detector.detect", image)
        crops: list[np.ndarray] = []
        owners: list[tuple[int, int]] = []  # (image index, x offset)
        for i, image in enumerate(images):
            for x0, x1 in self._windows(image.shape[1]):
                crops.append(np.ascontiguousarray(image[:, x0:x1]) if self.tiles > 1 else image)
                owners.append((i, x0))
        raw = self._predict(crops) if crops else []
        per_image: list[list[np.ndarray]] = [[] for _ in images]
        for (i, x0), boxes in zip(owners, raw, strict=True):
            boxes = boxes.copy()
            boxes[:, [0, 2]] += x0
            per_image[i].append(boxes)
        return [self._merge(parts) for parts in per_image]

    def _merge(self, parts: list[np.ndarray]) -> Detections:
        boxes = np.concatenate(parts) if parts else np.zeros((0, 6), np.float32)
        if self.tiles > 1 and len(boxes):
            t = torch.from_numpy(boxes)
            keep = torchvision.ops.batched_nms(t[:, :4], t[:, 4], t[:, 5].long(), self.iou).numpy()
            boxes = boxes[np.sort(keep)]
        return Detections(
            xyxy=np.ascontiguousarray(boxes[:, :4], np.float32),
            class_id=boxes[:, 5].astype(np.int32),
            confidence=boxes[:, 4].astype(np.float32),
            track_id=np.full(len(boxes), -1, np.int64),
            class_names=self.class_names,
        )


@dataclass(frozen=True, slots=True)
class TrackerSettings:
    """ByteTrack thresholds (ultralytics' bytetrack.yaml names)."""

    track_high_thresh: float = 0.25
    track_low_thresh: float = 0.1
    new_track_thresh: float = 0.25
    track_buffer: int = 30
    match_thresh: float = 0.8
    fuse_score: bool = True


class Tracker:
    """ByteTrack for one camera: assigns stable ids to a frame's detections, drops unclaimed boxes."""

    def __init__(self, settings: TrackerSettings, fps: float = 10.0) -> None:
        args = Namespace(tracker_type="bytetrack", **{k: getattr(settings, k) for k in settings.__slots__})
        # the buffer is given in frames at 30 fps by ultralytics; scale it to this camera's rate
        args.track_buffer = max(1, round(settings.track_buffer * fps / 30.0))
        self._tracker = BYTETracker(args)

    def update(self, dets: Detections, shape: tuple[int, int]) -> Detections:
        data = np.concatenate(
            [dets.xyxy, dets.confidence[:, None], dets.class_id[:, None].astype(np.float32)], axis=1
        )
        out = self._tracker.update(Boxes(data, shape))
        if len(out) == 0:
            return Detections.empty(dets.class_names)
        idx = out[:, 7].astype(np.int64)
        tracked = dets[idx]
        return Detections(
            xyxy=tracked.xyxy,
            class_id=tracked.class_id,
            confidence=tracked.confidence,
            track_id=out[:, 4].astype(np.int64),
            class_names=dets.class_names,
        )


def follow_flow(
    dets: Detections, flow: FlowField, frame_size: tuple[int, int], core: float = 0.5
) -> Detections:
    """`dets` moved by the median flow inside the central `core` share of each box (same ids)."""
    moved = dets.xyxy.copy()
    if flow.valid:
        half = (1.0 - core) / 2
        for i, (x1, y1, x2, y2) in enumerate(dets.xyxy.tolist()):
            w, h = x2 - x1, y2 - y1
            inner = np.array([x1 + half * w, y1 + half * h, x2 - half * w, y2 - half * h], np.float32)
            vectors = box_flow(flow, frame_size, inner)
            if len(vectors) == 0:
                vectors = box_flow(flow, frame_size, dets.xyxy[i])
            if len(vectors):
                dx, dy = median(vectors)
                moved[i] += np.array([dx, dy, dx, dy], np.float32)
    height, width = frame_size
    moved[:, [0, 2]] = np.clip(moved[:, [0, 2]], 0, width)
    moved[:, [1, 3]] = np.clip(moved[:, [1, 3]], 0, height)
    keep = (moved[:, 2] - moved[:, 0] >= 1) & (moved[:, 3] - moved[:, 1] >= 1)  # left the picture
    return Detections(
        xyxy=moved[keep],
        class_id=dets.class_id[keep],
        confidence=dets.confidence[keep],
        track_id=dets.track_id[keep],
        class_names=dets.class_names,
    )


@dataclass(slots=True)
class _Camera:
    tracker: Tracker
    last: Detections | None = None  # the last frame's output, moved along by the flow
    since_detect: int = 0  # analysed frames since the detector last ran


class DetectStage(Stage):
    """Detections with per-camera track ids; frames of several cameras share one batched model call."""

    name = "detect"
    needs = ("frame",)
    provides = ("detections",)

    def __init__(
        self,
        detector: Detector,
        tracker: TrackerSettings | None = None,
        max_batch: int = 1,
        every_k_frames: int = 1,
    ) -> None:
        if every_k_frames < 1:
            raise ConfigError(f"detector.every_k_frames: expected >= 1, got {every_k_frames}")
        self.detector = detector
        self.tracker_settings = tracker or TrackerSettings()
        limit = detector.max_batch
        self.max_batch = max_batch if limit is None else min(max_batch, max(1, limit // detector.tiles))
        self.every_k_frames = every_k_frames
        if every_k_frames > 1:  # instance attribute: the graph builder reads it from the object
            self.needs = ("frame", "flow")  # type: ignore[misc]
        self._cameras: dict[str, _Camera] = {}

    @classmethod
    def from_config(cls, cfg: DetectorConfig) -> DetectStage:
        settings = TrackerSettings(
            track_high_thresh=cfg.track_high_thresh,
            track_low_thresh=min(cfg.confidence, cfg.track_high_thresh),
            new_track_thresh=cfg.new_track_thresh,
            track_buffer=cfg.track_buffer,
        )
        return cls(Detector.from_config(cfg), settings, cfg.batch, cfg.every_k_frames)

    def _new_camera(self, fps: float) -> _Camera:
        # the tracker is updated once per detector run: its buffer counts those updates
        return _Camera(Tracker(self.tracker_settings, fps / self.every_k_frames))

    def on_source_added(self, event: SourceEvent) -> None:
        self._cameras[event.camera] = self._new_camera(event.fps or 10.0)

    def on_source_eos(self, event: SourceEvent) -> None:
        self._cameras.pop(event.camera, None)

    def _camera(self, camera: str, fps: float) -> _Camera:
        # a camera whose "added" event was not seen (e.g. a stage used outside the runner) gets one now
        if camera not in self._cameras:
            self._cameras[camera] = self._new_camera(fps)
        return self._cameras[camera]

    def process(self, packet: FramePacket) -> None:
        self.process_batch([packet])

    def process_batch(self, packets: list[FramePacket]) -> None:
        # decide first (in frame order: several frames of one camera may share a batch), then run the
        # detector once on the frames that need it, then track/carry in frame order
        plan: list[bool] = []
        pending: dict[str, bool] = {}  # camera -> "has a last result" within this batch
        since: dict[str, int] = {}
        for p in packets:
            cam = self._camera(p.frame.camera, p.frame.fps)
            camera = p.frame.camera
            has_last = pending.get(camera, cam.last is not None)
            count = since.get(camera, cam.since_detect)
            flow_ok = p.flow is not None and p.flow.valid
            due = self.every_k_frames == 1 or not has_last or count + 1 >= self.every_k_frames or not flow_ok
            plan.append(due)
            pending[camera], since[camera] = True, 0 if due else count + 1
        raw = iter(self.detector.detect([p.frame.image for p, due in zip(packets, plan, strict=True) if due]))
        for packet, due in zip(packets, plan, strict=True):
            f = packet.frame
            cam = self._camera(f.camera, f.fps)
            if due:
                cam.last = cam.tracker.update(next(raw), (f.height, f.width))
                cam.since_detect = 0
            else:
                assert cam.last is not None and packet.flow is not None  # guaranteed by the plan
                cam.last = follow_flow(cam.last, packet.flow, (f.height, f.width))
                cam.since_detect += 1
            packet.detections = cam.last

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(self._cameras)
