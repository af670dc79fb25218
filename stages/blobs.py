"""Moving regions that no detection explains: thrown or dropped things, classes the detector lacks.

Flow magnitude above a threshold, outside every detection box (boxes grown by a margin so the
flow halo around a walking person is not mistaken for something else), grouped into connected
regions of a minimum area. A region within `spill_reach` box-heights of a moving detection and
moving with it (median flow within `SPILL_TOLERANCE` of the box's) is that object's spill (the flow
field smeared past its edges below a fast vehicle, its unboxed parts) and is dropped: it is no
other object, and as a separate "moving region" it outranked the vehicle it belongs to. Each region
gets a negative id (from -2 down; -1 is an untracked detection), kept across frames by IoU matching.
"""

from __future__ import annotations

import cv2
import numpy as np

from pipeline.boxes import box_iou
from pipeline.errors import PacketError
from pipeline.packets import FlowField
from stages.flow import box_flow, median


def find_blobs(
    flow: FlowField,
    frame_size: tuple[int, int],
    boxes: np.ndarray,
    fps: float,
    min_flow: float = 1.0,
    min_area: float = 0.002,
    margin: float = 0.15,
    magnitude: np.ndarray | None = None,
    ignore_border: bool = True,
    spill_reach: float = 0.0,
) -> np.ndarray:
    """Boxes (M, 4) float32, full-res pixels xyxy, of moving regions outside `boxes`.

    `min_flow` is in full-res pixels per source frame (flow per `dt` times 1 / (dt * fps)), so a
    frame stride does not change what counts as moving; `min_area` is a share of the frame area;
    `margin` grows each box by that fraction of its height on every side before masking it out;
    `magnitude` is |flow| on the flow grid when the caller has it already. With `ignore_border`,
    regions cut by the frame edge are left out: they are objects partly out of view (someone
    walking in), which no detector can classify yet; they are judged once inside the picture.
    `spill_reach` > 0 drops regions that are a nearby detection's flow spill (module docstring).
    """
    height, width = frame_size
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise PacketError(f"find_blobs: expected boxes of shape (N, 4), got {boxes.shape}")
    if not flow.valid:
        return np.zeros((0, 4), np.float32)
    gh, gw = flow.flow.shape[:2]
    sx, sy = gw / width, gh / height  # full-res pixels -> flow grid
    if magnitude is None:
        magnitude = cv2.magnitude(flow.flow[..., 0], flow.flow[..., 1])
    per_frame = magnitude / (flow.dt * fps)
    mask = (per_frame > min_flow).view(np.uint8)  # 0/1 bytes, no copy
    for x1, y1, x2, y2 in boxes.tolist():
        m = margin * (y2 - y1)
        c1, r1 = max(0, int(np.floor((x1 - m) * sx))), max(0, int(np.floor((y1 - m) * sy)))
        c2, r2 = min(gw, int(np.ceil((x2 + m) * sx))), min(gh, int(np.ceil((y2 + m) * sy)))
        mask[r1:r2, c1:c2] = 0
    if not mask.any():
        return np.zeros((0, 4), np.float32)
    labels, stats, origin = _regions(mask)
    keep = stats[1:, cv2.CC_STAT_AREA] / (gh * gw) >= min_area
    if ignore_border:
        left, top = stats[1:, cv2.CC_STAT_LEFT], stats[1:, cv2.CC_STAT_TOP]
        right = left + stats[1:, cv2.CC_STAT_WIDTH]
        bottom = top + stats[1:, cv2.CC_STAT_HEIGHT]
        keep &= (left > 0) & (top > 0) & (right < gw) & (bottom < gh)
    if spill_reach > 0 and len(boxes) and keep.any():
        moving = min_flow * flow.dt * fps
        keep &= ~_spills(flow, frame_size, labels, origin, stats, boxes, spill_reach, moving, keep)
    s = stats[1:][keep].astype(np.float32)
    if len(s) == 0:
        return np.zeros((0, 4), np.float32)
    x, y, w, h = (s[:, k] for k in (cv2.CC_STAT_LEFT, cv2.CC_STAT_TOP, cv2.CC_STAT_WIDTH, cv2.CC_STAT_HEIGHT))
    return np.stack([x / sx, y / sy, (x + w) / sx, (y + h) / sy], axis=1).astype(np.float32)


def _regions(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Connected regions (8-connected) of `mask` after a 3x3 opening: (labels, stats, origin).

    Both run on the bounding rectangle of the mask's pixels only (a sixth of the grid on the 640x360
    benchmark), grown by 2 cells for the opening and started on even cells so
    the labeller's 2x2 blocks, and so its label order, are those of the whole grid: the same regions,
    stats and labels as on the whole grid (tested). `labels` covers the rectangle at `origin` (x, y);
    `stats` are in grid cells of the whole grid.
    """
    gh, gw = mask.shape
    x, y, w, h = cv2.boundingRect(mask)
    x0, y0 = max(0, x - 2) & ~1, max(0, y - 2) & ~1
    x1, y1 = min(gw, x + w + 2), min(gh, y + h + 2)
    # the opening drops speckle and slivers
    opened = cv2.morphologyEx(mask[y0:y1, x0:x1], cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    _, labels, stats, _ = cv2.connectedComponentsWithStats(opened, connectivity=8)
    stats[1:, cv2.CC_STAT_LEFT] += x0
    stats[1:, cv2.CC_STAT_TOP] += y0
    return labels, stats, (x0, y0)


#: a region moves with a box when their median flow vectors differ by at most this share of the box's
SPILL_TOLERANCE = 0.5


def _spills(
    flow: FlowField,
    frame_size: tuple[int, int],
    labels: np.ndarray,
    origin: tuple[int, int],
    stats: np.ndarray,
    boxes: np.ndarray,
    reach: float,
    min_flow: float,
    candidates: np.ndarray,
) -> np.ndarray:
    """(regions,) True where a region (on the flow grid) lies within `reach` box-heights of a box whose
    median flow (at least `min_flow`, pixels per dt) it shares. `labels` covers the grid from `origin`.
    Only the `candidates` (regions,) are looked at (the others are dropped anyway): False for the rest."""
    gh, gw = flow.flow.shape[:2]
    sx, sy = gw / frame_size[1], gh / frame_size[0]
    ox, oy = origin
    moving: dict[int, np.ndarray | None] = {}  # box index -> its median flow, None when (nearly) still
    out = np.zeros(len(stats) - 1, bool)
    for r in (np.flatnonzero(candidates) + 1).tolist():
        left, top, width, height = (int(v) for v in stats[r, :4])
        region: np.ndarray | None = None
        for b, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
            m = reach * (y2 - y1)
            if left > (x2 + m) * sx or left + width < (x1 - m) * sx:
                continue
            if top > (y2 + m) * sy or top + height < (y1 - m) * sy:
                continue
            if b not in moving:
                inside = box_flow(flow, frame_size, boxes[b])
                v = median(inside) if len(inside) else None
                moving[b] = v if v is not None and float(np.hypot(*v)) >= min_flow else None
            vb = moving[b]
            if vb is None:
                continue
            if region is None:
                window = labels[top - oy : top - oy + height, left - ox : left - ox + width] == r
                region = median(flow.flow[top : top + height, left : left + width][window])
            if float(np.hypot(*(region - vb))) <= SPILL_TOLERANCE * float(np.hypot(*vb)):
                out[r - 1] = True
                break
    return out


class BlobIds:
    """Stable negative ids for the blobs of ONE camera: greedy IoU matching with the last frame."""

    def __init__(self, min_iou: float = 0.3) -> None:
        self.min_iou = min_iou
        self._prev_boxes = np.zeros((0, 4), np.float32)
        self._prev_ids = np.zeros(0, np.int64)
        self._next = -2  # -1 means "untracked" in Detections

    def assign(self, boxes: np.ndarray) -> np.ndarray:
        ids = np.zeros(len(boxes), np.int64)
        iou = box_iou(boxes, self._prev_boxes)
        taken: set[int] = set()
        for i in range(len(boxes)):
            j = int(np.argmax(iou[i])) if iou.shape[1] else -1
            if j >= 0 and iou[i, j] >= self.min_iou and j not in taken:
                ids[i] = self._prev_ids[j]
                taken.add(j)
            else:
                ids[i] = self._next
                self._next -= 1
        self._prev_boxes, self._prev_ids = boxes.copy(), ids.copy()
        return ids
