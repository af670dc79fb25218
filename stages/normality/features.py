"""Features judged by the normality model, computed the same way at fit time and at score time.

`TrackMemory` is the per-camera state the history-based attributes need (the last velocities for the
dynamics predictor, the last poses for the speed-vs-pose consistency, the last box aspects for the
walking stride); one per camera, created and freed by the score stage's lifecycle hooks and by the
fitter per clip.

Gait: a walker's box widens and narrows with every step (legs apart, legs together), a rider's or
a skater's does not. `stride` = standard deviation of the track's log box aspect (width / height)
around its linear trend over the gait window, the trend removing slow changes of viewpoint, and
`track_speed` = the track's mean speed over the same window (ScoringConfig.gait_window, as long as
the pose window by default: 0.8 s at 10 fps, about one stride cycle). It needs no keypoints, so it
holds for people 20 px tall whose poses are noise. A 2 s window (two cycles) separated Ped2's riders
no better and gave a heavier tail on synthetic footage with few held-out tracks.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from pipeline.boxes import box_overlap_of_smaller
from pipeline.packets import COCO_KEYPOINTS, ObjectAttributes
from stages.normality.scale import ScaleMemory

KP_CONF = 0.3  # keypoints below this confidence are treated as unseen
HIPS = (11, 12)
LEGS = (13, 14, 15, 16)  # knees, ankles
MIN_POSE_FRAMES = 6  # of the pose window: a shorter stretch misses part of a stride
TRACK_EXPIRY_S = 5.0
UNTRACKED = -1  # Detections.track_id of a detection the tracker did not follow


def split_pose(pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pose rows (N, 51) -> keypoints (N, 17, 2) box-normalised and confidences (N, 17).

    Layout written by stages/attributes.py: the 34 flattened (x, y) values, then the 17 confidences.
    """
    n = len(pose)
    k = COCO_KEYPOINTS
    if pose.shape[1] < 3 * k:
        return np.full((n, k, 2), np.nan), np.zeros((n, k))
    xy = pose[:, : 2 * k].reshape(n, k, 2).astype(np.float64)
    conf = pose[:, 2 * k : 3 * k].astype(np.float64)
    np.copyto(conf, 0.0, where=np.isnan(conf))  # np.nan_to_num(nan=0.0) without its general machinery
    if np.isinf(conf).any():  # as nan_to_num: +-inf -> the largest finite values
        conf = np.nan_to_num(conf)
    return xy, conf


def pose_features(pose: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """(N, 34) keypoint coordinates with unseen keypoints replaced by the normal mean `fill` (17, 2).

    Rows with fewer than half the keypoints seen are NaN (not judged).
    """
    xy, conf = split_pose(pose)
    seen = (conf >= KP_CONF) & np.all(np.isfinite(xy), axis=2)
    out = np.where(seen[..., None], xy, fill[None])
    out = out.reshape(len(pose), -1)
    out[seen.sum(axis=1) < COCO_KEYPOINTS // 2] = np.nan
    return out


#: two detections sharing this much of the smaller one's area: a box merging two people, or a part of
#: a person detected again inside its box; neither box's size says what the object is
ENTANGLED_OVERLAP = 0.5


def entangled(attrs: ObjectAttributes) -> np.ndarray:
    """(N,) True for detections whose box is entangled with another detection's (ENTANGLED_OVERLAP)."""
    det = ~attrs.is_blob
    out = np.zeros(len(attrs), bool)
    if det.sum() < 2:
        return out
    overlap = box_overlap_of_smaller(attrs.xyxy[det], attrs.xyxy[det])
    np.fill_diagonal(overlap, 0.0)
    out[det] = overlap.max(axis=1) >= ENTANGLED_OVERLAP
    return out


#: a box within this many pixels of the frame edge is cut by it
EDGE_PX = 1.0


def truncated(xyxy: np.ndarray, frame_size: tuple[int, int] | None) -> np.ndarray:
    """(N,) True for boxes cut by the frame edge (`frame_size` = (height, width); None: none are).

    Such a box shows part of its object: its size, its ground point and everything measured from them
    (speed, direction, scale change, dwell, box-normalised motion, pose, gait) describe the cut, not
    the object, so those attributes are neither learnt nor judged for it until it is inside the view.
    """
    if frame_size is None or frame_size[0] <= 0 or frame_size[1] <= 0 or len(xyxy) == 0:
        return np.zeros(len(xyxy), bool)
    height, width = frame_size
    x1, y1, x2, y2 = (xyxy[:, k] for k in range(4))
    return (x1 <= EDGE_PX) | (y1 <= EDGE_PX) | (x2 >= width - EDGE_PX) | (y2 >= height - EDGE_PX)


def motion_features(hist: np.ndarray) -> np.ndarray:
    """Hellinger embedding of motion histograms (sqrt), so Euclidean k-NN compares distributions."""
    out = np.sqrt(np.clip(hist.astype(np.float64), 0.0, None))
    out[~(np.nansum(hist, axis=1) > 0)] = np.nan
    return out


@dataclass
class _Track:
    last_pts: float
    velocity: deque[np.ndarray]
    legs: deque[np.ndarray]  # (4, 2) leg keypoints relative to the hip centre, in box-heights
    log_aspect: deque[float]
    speed: deque[float]


@dataclass
class HistoryFeatures:
    """Per object of a frame: velocity windows for the dynamics model and leg motion."""

    windows: np.ndarray  # (N, history + 1, 2), NaN where the track is too young
    leg_motion: np.ndarray  # (N,) box-heights, std of knee/ankle positions over the pose window
    stride: np.ndarray  # (N,) detrended std of log box aspect over the gait window; NaN: too young
    track_speed: np.ndarray  # (N,) mean speed (box-heights/s) over the gait window; NaN: none yet
    #: (N,) d(log size)/dt per second from the reliably visible size (stages.normality.scale), and its
    #: standard error; None: not measured (features built by hand), judged as NaN
    scale_rate: np.ndarray | None = None
    scale_se: np.ndarray | None = None


@dataclass
class TrackMemory:
    """Short per-track histories of one camera (expired after TRACK_EXPIRY_S without a sighting)."""

    history: int
    pose_window: int
    gait_window: int = 8
    tracks: dict[int, _Track] = field(default_factory=dict)
    scale: ScaleMemory = field(default_factory=lambda: ScaleMemory(KP_CONF))

    def update(
        self, attrs: ObjectAttributes, pts: float, frame_size: tuple[int, int] | None = None
    ) -> HistoryFeatures:
        """The frame's history features; `frame_size` (height, width): boxes cut by the frame edge give
        no size sample (None: unknown, no box is taken as cut)."""
        n = len(attrs)
        windows = np.full((n, self.history + 1, 2), np.nan)
        legs = np.full(n, np.nan)
        stride = np.full(n, np.nan)
        track_speed = np.full(n, np.nan)
        log_a = np.log(np.maximum(attrs.aspect.astype(np.float64), 1e-6))
        # per-row values computed once for the frame (the loop below is per object and in Python)
        keypoints = split_pose(attrs.pose)
        offsets, posed = leg_offsets(*keypoints, attrs.aspect)
        velocity = attrs.velocity.astype(np.float64)
        moving = np.isfinite(velocity).all(axis=1).tolist()
        speed, log_aspect, posed = attrs.speed.tolist(), log_a.tolist(), posed.tolist()
        speed_ok, aspect_ok = np.isfinite(attrs.speed).tolist(), np.isfinite(log_a).tolist()
        leg_tracks: dict[int, list[tuple[int, deque[np.ndarray]]]] = {}  # by window length: (row, legs)
        for i, (tid, blob) in enumerate(zip(attrs.track_id.tolist(), attrs.is_blob.tolist(), strict=True)):
            if blob or tid == UNTRACKED:  # no identity: no history
                continue
            tr = self.tracks.get(tid)
            if tr is None:
                tr = _Track(
                    pts,
                    deque(maxlen=self.history + 1),
                    deque(maxlen=self.pose_window),
                    deque(maxlen=self.gait_window),
                    deque(maxlen=self.gait_window),
                )
                self.tracks[tid] = tr
            tr.last_pts = pts
            if moving[i]:
                tr.velocity.append(velocity[i])
            if len(tr.velocity) == self.history + 1:
                windows[i] = tr.velocity
            if posed[i]:
                tr.legs.append(offsets[i])
            if len(tr.legs) >= min(MIN_POSE_FRAMES, self.pose_window):
                leg_tracks.setdefault(len(tr.legs), []).append((i, tr.legs))
            if aspect_ok[i]:
                tr.log_aspect.append(log_aspect[i])
            if len(tr.log_aspect) >= min(MIN_POSE_FRAMES, self.gait_window):
                stride[i] = detrended_std(np.fromiter(tr.log_aspect, np.float64))
            if speed_ok[i]:
                tr.speed.append(speed[i])
            if tr.speed:
                track_speed[i] = sum(tr.speed) / len(tr.speed)
        for group in leg_tracks.values():  # the tracks of one window length at once
            rows = [i for i, _ in group]
            stacks = np.stack([leg for _, window in group for leg in window])  # all finite (leg_offsets)
            legs[rows] = leg_motion(stacks.reshape(len(group), -1, *stacks.shape[1:]))
        stale = [t for t, tr in self.tracks.items() if pts - tr.last_pts > TRACK_EXPIRY_S]
        for t in stale:
            del self.tracks[t]
        scale_rate, scale_se = self.scale.update(attrs, pts, keypoints, frame_size)
        return HistoryFeatures(windows, legs, stride, track_speed, scale_rate, scale_se)


_HIP_AND_LEGS = np.array([*HIPS, *LEGS])


def leg_offsets(xy: np.ndarray, conf: np.ndarray, aspect: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row (N): knees and ankles relative to the hip centre (N, 4, 2), x converted from box-widths to
    box-heights (where the aspect is finite), and (N,) True where those and the hips are seen and finite."""
    p = xy[:, _HIP_AND_LEGS]  # a copy: hips in rows 0-1, legs in rows 2-5
    seen = (conf[:, _HIP_AND_LEGS] >= KP_CONF).all(axis=1) & np.isfinite(p).all(axis=(1, 2))
    aspect = np.asarray(aspect, np.float64)
    p[:, :, 0] *= np.where(np.isfinite(aspect), aspect, 1.0)[:, None]
    return p[:, 2:] - ((p[:, 0] + p[:, 1]) / 2.0)[:, None], seen


def leg_motion(stacks: np.ndarray) -> np.ndarray:
    """(M, T, 4, 2) leg offsets of M tracks over T frames -> (M,) the mean over the 4 keypoints of the
    norm of their standard deviation over the frames. The float operations of np.std and np.linalg.norm
    in their order: per track the value of `np.linalg.norm(stack.std(axis=0), axis=1).mean()`."""
    t = stacks.shape[1]
    dev = stacks - stacks.sum(axis=1, keepdims=True) / t
    np.multiply(dev, dev, out=dev)
    std = np.sqrt(dev.sum(axis=1) / t)  # (M, 4, 2)
    return np.sqrt(np.add.reduce(std * std, axis=2)).mean(axis=1)


def detrended_std(x: np.ndarray) -> float:
    """Standard deviation of a series around its least-squares line (scalars as Python floats: the same
    IEEE operations as numpy's scalars, without their overhead)."""
    n = len(x)
    centred = x - float(x.sum()) / n
    if n < 2:
        return math.sqrt(float(centred @ centred) / n)
    t = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
    resid = centred - float(t @ centred) / float(t @ t) * t
    return math.sqrt(float(resid @ resid) / n)


#: floors of the gait ratio: speed (box-heights/s) below which nobody is moving, and the box-aspect
#: jitter of a still box (5th percentile of the stride of Ped2's training people, 0.019)
GAIT_SPEED_FLOOR = 0.1
STRIDE_FLOOR = 0.02


def gait(speed: np.ndarray, stride: np.ndarray) -> np.ndarray:
    """log of (track) speed over stride: high when a person moves without the box swing of walking."""
    return np.log((np.asarray(speed, np.float64) + GAIT_SPEED_FLOOR) / (stride + STRIDE_FLOOR))


def speed_vs_pose(speed: np.ndarray, leg_motion: np.ndarray) -> np.ndarray:
    """log of speed over leg motion: high when an upright body glides without moving its legs."""
    return np.log((np.asarray(speed, np.float64) + 0.1) / (leg_motion + 0.02))
