"""Keypoints of tracked people, top-down on upscaled crops (Ped2 people are 20-40 px tall).

Each person box is padded, cut out as a square, resized to `crop_size` and all crops of a frame go
through the pose model in one batched call. People taller than `full_frame_min_height` of the frame
are large enough for one full-frame pass instead. Keypoints are mapped back to the frame and
normalised to the person's box, (x - x1) / w, (y - y1) / h, so poses compare across sizes and places.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torchvision

from pipeline.boxes import box_iou
from pipeline.config import ModelsConfig, PoseConfig
from pipeline.errors import ModelError, PacketError
from pipeline.packets import COCO_KEYPOINTS, Detections, FramePacket, Poses, SourceEvent
from pipeline.stage import Stage
from stages.crops import square_crop, square_window
from stages.detect import check_image
from stages.yolo_loading import LoadedNet, OpenVINONet, load_net


class PoseEstimator:
    """Pose for given person boxes of one image; rows without a found pose are NaN with zero conf.

    The network runs in the configured format (PyTorch, ONNX Runtime, OpenVINO, TensorRT) through the
    same pre- and post-processing (RGB in [0, 1], ultralytics' NMS), so formats differ only by the
    network's arithmetic (tests/test_model_formats.py bounds the difference).
    """

    def __init__(
        self,
        loaded: LoadedNet,
        crop_size: int = 160,
        full_frame_min_height: float = 0.35,
        pad: float = 0.25,
        batch: int = 16,
        conf: float = 0.05,
        iou: float = 0.7,
    ) -> None:
        if loaded.task != "pose":
            raise ModelError(f"{loaded.path}: is a {loaded.task!r} model, expected a 'pose' model")
        if not loaded.any_size and loaded.imgsz != crop_size:
            raise ModelError(
                f"{loaded.path}: export takes {loaded.imgsz}x{loaded.imgsz} crops, not crop_size {crop_size}"
            )
        self.loaded = loaded
        self.crop_size = crop_size
        self.full_frame_min_height = full_frame_min_height
        self.pad = pad
        self.batch = batch if loaded.max_batch is None else min(batch, loaded.max_batch)
        self.conf = conf
        self.iou = iou

    @classmethod
    def from_config(cls, cfg: PoseConfig, models: ModelsConfig | None = None) -> PoseEstimator:
        """`models`: the export cache and INT8 calibration footage (defaults: ModelsConfig())."""
        models = ModelsConfig() if models is None else models
        loaded = load_net(
            cfg.model,
            "pose",
            cfg.format,
            cfg.device,
            cfg.crop_size,
            cfg.batch,
            models.cache_dir,
            cfg.inference_threads,
            tuple(Path(c) for c in models.calibration),
        )
        return cls(loaded, cfg.crop_size, cfg.full_frame_min_height, batch=cfg.batch)

    def _run(self, images: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(boxes (M,4), keypoints (M,17,2), conf (M,17)) per image of a (B, H, W, 3) BGR uint8 batch."""
        out = []
        for start in range(0, len(images), self.batch):
            chunk = images[start : start + self.batch]
            x = torch.from_numpy(chunk).to(self.loaded.device).flip(-1).permute(0, 3, 1, 2)
            x = x.float().div_(255.0).contiguous()  # RGB, (B, 3, H, W) in [0, 1]
            out += pose_nms(self.loaded.net(x), self.conf, self.iou)
        return out

    def _full_frame(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One pass over the whole frame, scaled so its long side is a multiple of 32, padded below/right."""
        height, width = image.shape[:2]
        size = int(np.ceil(max(height, width) / 32) * 32)
        r = size / max(height, width)
        w, h = round(width * r), round(height * r)
        scaled = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR) if r != 1 else image
        pw, ph = -w % 32, -h % 32
        scaled = cv2.copyMakeBorder(scaled, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=(114,) * 3)
        fb, fk, fc = self._run(scaled[None])[0]
        return fb / r, fk / r, fc

    def estimate(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keypoints (N, 17, 2) normalised to each box, and their confidences (N, 17)."""
        check_image("PoseEstimator.estimate", image)
        if not isinstance(boxes, np.ndarray) or boxes.ndim != 2 or boxes.shape[1] != 4:
            got = boxes.shape if isinstance(boxes, np.ndarray) else type(boxes).__name__
            raise PacketError(f"PoseEstimator.estimate: expected boxes of shape (N, 4), got {got}")
        n = len(boxes)
        kps = np.full((n, COCO_KEYPOINTS, 2), np.nan, np.float32)
        confs = np.zeros((n, COCO_KEYPOINTS), np.float32)
        if n == 0:
            return kps, confs
        height = image.shape[0]
        boxes = boxes.astype(np.float32)
        large = (boxes[:, 3] - boxes[:, 1]) > self.full_frame_min_height * height
        pixel_kp: dict[int, tuple[np.ndarray, np.ndarray]] = {}

        if not self.loaded.any_size:  # a fixed-size export cannot take the frame: crops for everyone
            large[:] = False
        if large.any():
            fb, fk, fc = self._full_frame(image)
            for i in np.flatnonzero(large):
                if len(fb):
                    j = int(np.argmax(box_iou(boxes[i], fb)[0]))
                    if box_iou(boxes[i], fb[j : j + 1])[0, 0] > 0.3:
                        pixel_kp[i] = (fk[j], fc[j])

        small = np.flatnonzero(~large)
        if len(small):
            crops = np.empty((len(small), self.crop_size, self.crop_size, 3), np.uint8)
            windows = []
            for k, i in enumerate(small):
                x0, y0, side = square_window(boxes[i], self.pad)
                crops[k] = square_crop(image, x0, y0, side, self.crop_size)
                windows.append((x0, y0, side / self.crop_size))
            for i, (x0, y0, s), (cb, ck, cc) in zip(small, windows, self._run(crops), strict=True):
                if not len(cb):
                    continue
                target = (boxes[i] - np.array([x0, y0, x0, y0], np.float32)) / s
                overlap = box_iou(target, cb)[0]
                j = int(np.argmax(overlap))
                if overlap[j] > 0.3:
                    pixel_kp[i] = (ck[j] * s + np.array([x0, y0], np.float32), cc[j])

        for i, (xy, c) in pixel_kp.items():
            x1, y1, x2, y2 = boxes[i]
            wh = np.array([max(x2 - x1, 1e-3), max(y2 - y1, 1e-3)], np.float32)
            kps[i] = (xy - np.array([x1, y1], np.float32)) / wh
            confs[i] = c
        return kps, confs


def pose_nms(
    pred: torch.Tensor, conf: float, iou: float, max_det: int = 300
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """NMS of a one-class pose head's raw output (B, 4 + 1 + 17*3, anchors), all images in one call.

    The same result as ultralytics' `non_max_suppression` for one class (score > conf, IoU > iou
    suppressed, best first, at most max_det per image), in one batched call instead of a loop per image
    (several times cheaper on a frame's crops).
    """
    p = pred.float().transpose(1, 2)  # (B, A, 56)
    image, anchor = (p[..., 4] > conf).nonzero(as_tuple=True)
    cand = p[image, anchor]
    xy, wh = cand[:, :2], cand[:, 2:4] / 2
    boxes = torch.cat([xy - wh, xy + wh], dim=1)
    keep = torchvision.ops.batched_nms(boxes, cand[:, 4], image, iou)  # sorted by score, best first
    keep_image = image[keep].cpu().numpy()
    rows_boxes = boxes[keep].cpu().numpy()
    rows_kp = cand[keep, 5:].reshape(-1, COCO_KEYPOINTS, 3).cpu().numpy()
    out = []
    for b in range(len(pred)):
        sel = np.flatnonzero(keep_image == b)[:max_det]
        out.append((rows_boxes[sel], rows_kp[sel, :, :2], rows_kp[sel, :, 2]))
    return out


def set_torch_threads(threads: int) -> None:
    """torch's intra-op pool size (process-wide: it is one pool); 0 leaves it alone.

    On a small CPU the runner already runs stages in parallel, so one thread per torch call avoids
    pools that fight each other and OpenVINO's for the same cores.
    """
    if threads > 0 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@dataclass(slots=True)
class _CachedPose:
    frame_index: int
    keypoints: np.ndarray
    conf: np.ndarray
    box: np.ndarray  # the person's box when the pose was estimated


def box_change(before: np.ndarray, now: np.ndarray) -> np.ndarray:
    """Largest move of any box edge, as a share of the earlier box's height: (N, 4) x (N, 4) -> (N,)."""
    height = np.maximum(before[:, 3] - before[:, 1], 1.0)
    return np.abs(now - before).max(axis=1) / height


class PoseStage(Stage):
    """Poses of tracked persons; a track's pose is re-estimated every `every_k_frames` frames.

    Tracks refresh in k phases by track id, so the crops of one frame are ~1/k of the people instead of
    all of them on the detector's frames and none between (one camera live: a frame's latency is the
    sum of its stages, and detector + all poses on one frame set the p99).

    With `still_k_frames` > `every_k_frames`, a person whose box has not moved or changed shape by
    `still_box_change` of its height since its last pose keeps that pose (box-normalised, so it follows
    the box) for up to `still_k_frames` frames: a standing person's pose changes little, a walking
    person's box moves and is re-estimated as before. Ped2's people mostly walk, so it is off by
    default; it pays where people stand (queues, platforms).

    People whose box is smaller than `min_box_area` pixels get no pose: their keypoints would be
    guesses. COCO, which the pose model is trained and judged on, evaluates keypoints only for
    people of at least 32x32 px (its "medium" and "large"; pycocotools' keypoint evaluation leaves
    "small" out), so the model's keypoints on smaller people were never measured; the model stays
    confident on them all the same, so its confidence cannot be the gate.

    The measurements behind both: bench/results/README.md ("Measurements behind code paths").
    """

    name = "pose"
    needs = ("frame", "detections")
    provides = ("poses",)

    def __init__(
        self,
        estimator: PoseEstimator,
        every_k_frames: int = 1,
        person_class: str = "person",
        torch_threads: int = 0,
        still_k_frames: int = 0,
        still_box_change: float = 0.1,
        min_box_area: float = 0.0,
    ) -> None:
        self.estimator = estimator
        self.min_box_area = min_box_area
        self.every_k_frames = every_k_frames
        self.still_k_frames = max(still_k_frames, every_k_frames)
        self.still_box_change = still_box_change
        self.person_class = person_class
        self.torch_threads = torch_threads
        self._cache: dict[str, dict[int, _CachedPose]] = {}

    @classmethod
    def from_config(cls, cfg: PoseConfig, models: ModelsConfig | None = None) -> PoseStage:
        return cls(
            PoseEstimator.from_config(cfg, models),
            cfg.every_k_frames,
            torch_threads=cfg.torch_threads,
            still_k_frames=cfg.still_k_frames,
            still_box_change=cfg.still_box_change,
            min_box_area=cfg.min_box_area,
        )

    def on_start(self) -> None:
        set_torch_threads(self.torch_threads)
        if isinstance(self.estimator.loaded.net, OpenVINONet):  # static networks now, not on the first frames
            self.estimator.loaded.net.prepare()

    def on_source_added(self, event: SourceEvent) -> None:
        self._cache[event.camera] = {}

    def on_source_eos(self, event: SourceEvent) -> None:
        self._cache.pop(event.camera, None)

    def _persons(self, dets: Detections) -> np.ndarray:
        if self.person_class not in dets.class_names:
            return np.zeros(0, np.int64)
        pid = dets.class_names.index(self.person_class)
        box = dets.xyxy.astype(np.float64)
        area = (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])
        return np.flatnonzero((dets.class_id == pid) & (dets.track_id >= 0) & (area >= self.min_box_area))

    def _due(self, cached: _CachedPose | None, index: int, track: int, box: np.ndarray) -> bool:
        if cached is None or index < cached.frame_index:
            return True
        age = index - cached.frame_index
        if age >= self.still_k_frames:
            return True
        # a track is refreshed on the frames of its phase (track id mod k), or at the latest when k
        # frames old: tracks born on the same (detector) frame then spread over k frames instead of
        # all refreshing together with the next detector run
        k = self.every_k_frames
        if age < k and not (age >= 1 and (index + track) % k == 0):
            return False
        if self.still_k_frames <= k:
            return True
        return bool(box_change(cached.box[None], box[None])[0] >= self.still_box_change)

    def process(self, packet: FramePacket) -> None:
        frame, dets = packet.frame, packet.detections
        if dets is None:
            raise PacketError("PoseStage: packet has no detections (is the detect stage in the graph?)")
        cache = self._cache.setdefault(frame.camera, {})
        rows = self._persons(dets)
        due = [
            i
            for i in rows
            if self._due(cache.get(int(dets.track_id[i])), frame.index, int(dets.track_id[i]), dets.xyxy[i])
        ]
        if due:
            kps, confs = self.estimator.estimate(frame.image, dets.xyxy[due])
            for i, kp, cf in zip(due, kps, confs, strict=True):
                if np.isfinite(kp).all():
                    cache[int(dets.track_id[i])] = _CachedPose(frame.index, kp, cf, dets.xyxy[i].copy())
                else:  # no pose found now: do not keep showing an old one
                    cache.pop(int(dets.track_id[i]), None)
        live = {int(t) for t in dets.track_id[rows]}
        for tid in [
            t
            for t in cache
            if t not in live and frame.index - cache[t].frame_index > 10 * self.still_k_frames
        ]:
            del cache[tid]
        have = [i for i in rows if int(dets.track_id[i]) in cache]
        if not have:
            packet.poses = Poses.empty()
            return
        packet.poses = Poses(
            detection_index=np.asarray(have, np.int64),
            track_id=dets.track_id[have].astype(np.int64),
            keypoints=np.stack([cache[int(dets.track_id[i])].keypoints for i in have]).astype(np.float32),
            keypoint_conf=np.stack([cache[int(dets.track_id[i])].conf for i in have]).astype(np.float32),
        )
