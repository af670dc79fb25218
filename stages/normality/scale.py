"""How fast an object's size changes, measured only from what of it is reliably visible.

The tracker's `scale_rate` is the slope of the log box height over the last few frames, and a box
grows for other reasons than an approach: a walker coming out from behind another one regains the
legs the occluder hid (+130 %/s on a plaza walker that only walked), a dancer's raised arms lift the
top edge, a box entering the picture grows while the frame edge cuts it. So each track keeps two
rulers of its size, each sampled only in frames where it can be trusted, with their timestamps:

- the box height, in frames where both its top and its bottom edge are clear: not cut by the frame
  edge and not inside the box of another detection standing nearer the camera (its bottom edge lower
  in the picture: on a ground plane seen from above, what is nearer stands lower and hides what is
  behind). A box lying inside this one (a bag, a phone) covers no edge; a bicycle under its rider,
  or a walker beside another at the same depth, hides none of it;
- the torso length (shoulder centre to hip centre, in pixels) of people whose shoulders and hips the
  pose stage saw, when it spans at least MIN_TORSO_PX: it does not change when legs are hidden or
  arms are raised.

Each ruler's rate is the Theil-Sen slope (the median of the pairwise slopes) of its log over the last
`window_s` seconds, so one bad sample moves it little, with its standard error from the scatter of the
samples around that line (MAD, floored at one pixel of the current size): a 30-pixel walker's size
changes 3 % with every pixel of detector jitter, a 150-pixel one's less than 1 %, and the judge
weighs a rate by its own uncertainty. A ruler counts in a frame only when it measured that frame (no
rate from samples taken before an occlusion began). Where both rulers have a rate, the one nearer 0
counts and 0 when they disagree in sign ("minmod", as the box velocity in stages.track_history): an
approach grows the box and the torso alike, an occlusion or a gesture changes only one of them.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from pipeline.packets import ObjectAttributes

#: an edge within this share of the box height inside another box counts as covered by it
EDGE_MARGIN = 0.05
#: the other box hides an edge when it spans at least this share of the edge's central half (where a
#: person's head and feet are)
EDGE_COVER = 0.5
#: a box within this many pixels of the frame edge is cut by it (features.EDGE_PX)
FRAME_EDGE_PX = 1.0
SHOULDERS, HIPS = (5, 6), (11, 12)
#: a torso shorter than this (pixels) is too coarse to measure a change of size from keypoints
MIN_TORSO_PX = 20.0
#: a ruler's rate needs this many samples spanning at least MIN_SPAN_S seconds of its window
MIN_SAMPLES = 3
MIN_SPAN_S = 0.5


def clear_heights(attrs: ObjectAttributes, frame_size: tuple[int, int] | None) -> np.ndarray:
    """(N,) True for detections whose box height shows the object's: top and bottom edge clear of the
    frame edge (when `frame_size` = (height, width) is known) and of the boxes of the detections that
    stand nearer the camera (module docstring)."""
    det = ~attrs.is_blob
    xyxy = attrs.xyxy.astype(np.float64)
    y1, y2 = xyxy[:, 1], xyxy[:, 3]
    clear = det.copy()
    if frame_size is not None and frame_size[0] > 0 and frame_size[1] > 0:
        height, _ = frame_size
        clear &= (y1 > FRAME_EDGE_PX) & (y2 < height - FRAME_EDGE_PX)
    rows = np.flatnonzero(det)
    if len(rows) < 2:
        return clear
    b = xyxy[rows]
    h = np.maximum(b[:, 3] - b[:, 1], 1.0)
    w = np.maximum(b[:, 2] - b[:, 0], 1.0)
    # (i, j): how much of the central half of box i's width box j spans
    c1, c2 = b[:, 0] + w / 4, b[:, 2] - w / 4
    span = np.clip(np.minimum(c2[:, None], b[None, :, 2]) - np.maximum(c1[:, None], b[None, :, 0]), 0, None)
    wide = span >= EDGE_COVER * (w / 2)[:, None]
    margin = (EDGE_MARGIN * h)[:, None]
    covered = np.zeros((len(rows), len(rows)), bool)
    for edge in (b[:, 1], b[:, 3]):  # top, then bottom: inside box j's rows, a margin deep
        covered |= (edge[:, None] >= b[None, :, 1] - margin) & (edge[:, None] <= b[None, :, 3] + margin)
    covered &= wide
    covered &= b[None, :, 3] > b[:, 3, None] + margin  # box j stands nearer the camera
    np.fill_diagonal(covered, False)
    clear[rows] &= ~covered.any(axis=1)
    return clear


def torso_lengths(xyxy: np.ndarray, xy: np.ndarray, conf: np.ndarray, min_conf: float) -> np.ndarray:
    """(N,) pixels from the shoulder centre to the hip centre of boxes `xyxy` (N, 4) with box-normalised
    keypoints `xy` (N, 17, 2) of confidences `conf` (N, 17) (features.split_pose); NaN where a shoulder
    or a hip is seen with less than `min_conf` or the torso is shorter than MIN_TORSO_PX."""
    xyxy = np.asarray(xyxy, np.float64)
    wh = np.stack([xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]], axis=1)
    px = xy * wh[:, None, :]  # box-normalised keypoints -> pixels
    seen = (conf[:, [*SHOULDERS, *HIPS]] >= min_conf).all(axis=1)
    top = px[:, SHOULDERS].mean(axis=1)
    bottom = px[:, HIPS].mean(axis=1)
    length = np.hypot(*(bottom - top).T)
    ok = seen & np.isfinite(length) & (length >= MIN_TORSO_PX)
    return np.where(ok, length, np.nan)


#: the MAD of a normal distribution is this share of its standard deviation
MAD_SIGMA = 1.4826

Rate = tuple[float, float]  # (slope per second, its standard error); NaN, NaN: none
NO_RATE: Rate = (math.nan, math.nan)


def theil_sen(t: np.ndarray, v: np.ndarray, noise_floor: float = 0.0) -> Rate:
    """Median of the pairwise slopes of v over t (pairs at distinct times), and its standard error: the
    robust scatter (MAD) of v around the line, at least `noise_floor`, over sqrt(sum (t - mean t)^2).
    NaN, NaN without two distinct times."""
    i, j = np.triu_indices(len(t), k=1)
    dt = t[j] - t[i]
    ok = dt > 0
    if not ok.any():
        return NO_RATE
    slope = float(np.median((v[j][ok] - v[i][ok]) / dt[ok]))
    resid = v - slope * t
    resid -= np.median(resid)
    sigma = max(MAD_SIGMA * float(np.median(np.abs(resid))), noise_floor)
    spread = float(np.sqrt(np.sum((t - t.mean()) ** 2)))
    return slope, sigma / spread


def minmod(a: Rate, b: Rate) -> Rate:
    """The rate nearer 0 when `a` and `b` share a sign (with its error), else 0 with the larger error;
    either alone when the other is NaN."""
    if math.isnan(a[0]):
        return b
    if math.isnan(b[0]):
        return a
    if a[0] * b[0] <= 0:
        return 0.0, max(a[1], b[1])
    return a if abs(a[0]) < abs(b[0]) else b


@dataclass
class _Ruler:
    """Timestamped log sizes of one track by one ruler, the last `window_s` seconds of them."""

    t: deque[float] = field(default_factory=deque)
    v: deque[float] = field(default_factory=deque)

    def add(self, t: float, v: float) -> None:
        self.t.append(t)
        self.v.append(v)

    def rate(self, now: float, window_s: float) -> Rate:
        """The slope over the window ending now, NaN unless the ruler measured `now` and has MIN_SAMPLES
        spanning MIN_SPAN_S; the noise floor is one pixel of the last size."""
        while self.t and now - self.t[0] > window_s:
            self.t.popleft()
            self.v.popleft()
        if not self.t or self.t[-1] != now:
            return NO_RATE
        if len(self.t) < MIN_SAMPLES or self.t[-1] - self.t[0] < MIN_SPAN_S:
            return NO_RATE
        t, v = np.fromiter(self.t, np.float64), np.fromiter(self.v, np.float64)
        return theil_sen(t - now, v, math.exp(-v[-1]))


@dataclass
class _Sizes:
    last_pts: float
    box: _Ruler = field(default_factory=_Ruler)
    torso: _Ruler = field(default_factory=_Ruler)


@dataclass
class ScaleMemory:
    """Per-track rulers of one camera (module docstring); forgets a track `expiry_s` after its last
    sighting, and restarts it when the clock goes back."""

    min_conf: float  # keypoints seen with less are unseen (features.KP_CONF)
    window_s: float = 1.0
    expiry_s: float = 5.0
    tracks: dict[int, _Sizes] = field(default_factory=dict)

    def update(
        self,
        attrs: ObjectAttributes,
        pts: float,
        keypoints: tuple[np.ndarray, np.ndarray],
        frame_size: tuple[int, int] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(N,) d(log size)/dt per second of each tracked detection from its reliable samples (positive:
        approaching), and (N,) its standard error; NaN for moving regions, untracked detections and
        tracks without enough samples. `keypoints`: the frame's poses split (features.split_pose)."""
        n = len(attrs)
        out = np.full((n, 2), np.nan)
        clear = clear_heights(attrs, frame_size).tolist()
        log_h = np.log(np.maximum(attrs.xyxy[:, 3] - attrs.xyxy[:, 1], 1.0).astype(np.float64)).tolist()
        log_torso = np.log(torso_lengths(attrs.xyxy, *keypoints, self.min_conf)).tolist()
        for i, (tid, blob) in enumerate(zip(attrs.track_id.tolist(), attrs.is_blob.tolist(), strict=True)):
            if blob or tid < 0:
                continue
            tr = self.tracks.get(tid)
            if tr is None or pts < tr.last_pts:
                tr = self.tracks[tid] = _Sizes(pts)
            tr.last_pts = pts
            if clear[i] and (not tr.box.t or tr.box.t[-1] < pts):
                tr.box.add(pts, log_h[i])
            if math.isfinite(log_torso[i]) and (not tr.torso.t or tr.torso.t[-1] < pts):
                tr.torso.add(pts, log_torso[i])
            out[i] = minmod(tr.box.rate(pts, self.window_s), tr.torso.rate(pts, self.window_s))
        stale = [t for t, tr in self.tracks.items() if pts - tr.last_pts > self.expiry_s]
        for t in stale:
            del self.tracks[t]
        return out[:, 0], out[:, 1]
