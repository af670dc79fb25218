"""Features judged by the normality model, computed the same way at fit time and at score time.

`TrackMemory` is the per-camera state the history-based attributes need (the last velocities for the
dynamics predictor, the last poses' limbs for limb motion, the last box aspects for the walking
stride, when the track was first seen for the dwell's censoring); one per camera, created and freed
by the score stage's lifecycle hooks and by the fitter per clip.

Gait: a walker's box widens and narrows with every step (legs apart, legs together), a rider's or
a skater's does not. `stride` = standard deviation of the track's log box aspect (width / height)
around its linear trend over the gait window, the trend removing slow changes of viewpoint, and
`track_speed` = the track's mean speed over the same window (ScoringConfig.gait_window_s, 0.8 s,
about one stride cycle, and at least gait_window samples). It needs no keypoints, so it
holds for people 20 px tall whose poses are noise. A 2 s window (two cycles) separated Ped2's riders
no better and gave a heavier tail on synthetic footage with few held-out tracks.

Limb motion: per pose measurement (a pose the pose stage measured anew, not one it carried to a
frame it skipped), every keypoint relative to the torso centre (shoulders and hips), in body-heights
(the shoulder-hip distance over TORSO_SHARE: rigid, unlike a box that grows when an arm is raised).
Over the last LIMB_WINDOW_S seconds (timestamps, so a lowered pose or analysis rate spans the same
time), the amplitude of a keypoint is the standard deviation of its position; `limbs` holds the
largest of the arms' (elbows, wrists) and of the legs' (knees, ankles), and the torso keypoints' own
mean amplitude, which is keypoint noise (the torso is rigid): what a person's limbs do, and how
precisely this person's keypoints are measured (a person 100 px tall is measured more coarsely than
one of 200 px, in body-heights).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from pipeline.boxes import box_overlap_of_smaller
from pipeline.packets import COCO_KEYPOINTS, ObjectAttributes
from stages.normality.scale import ScaleMemory

if TYPE_CHECKING:
    from pipeline.config import ScoringConfig

KP_CONF = 0.3  # keypoints below this confidence are treated as unseen
MIN_POSE_FRAMES = 6  # of the gait window: a shorter stretch misses part of a stride
#: the frame rate the gait floor (`min(MIN_POSE_FRAMES, gait_window)` samples) was set on (Ped2's 10
#: fps): faster footage needs its samples to span as long as they do there
GAIT_FLOOR_FPS = 10.0
TORSO = (5, 6, 11, 12)  # shoulders, hips
ARMS = (7, 8, 9, 10)  # elbows, wrists
LEGS = (13, 14, 15, 16)  # knees, ankles
#: shoulder-to-hip distance as a share of standing height (anthropometric tables: shoulder at 0.818,
#: hip joint at 0.530 of stature)
TORSO_SHARE = 0.29
#: seconds of pose measurements a limb's amplitude is taken over (about one stride or one wave), and
#: the least measurements of a keypoint in it (Ped2's 10 fps with pose every 3rd frame gives four)
LIMB_WINDOW_S = 1.2
MIN_LIMB_MEASUREMENTS = 4
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
    first_pts: float
    last_pts: float
    velocity: deque[np.ndarray]
    #: pose measurements in the limb window: (pts, (17, 2) keypoints relative to the torso centre in
    #: body-heights, NaN where unseen); `last_pose` tells a new measurement from a carried one
    limbs: deque[tuple[float, np.ndarray]]
    last_pose: np.ndarray | None
    #: (pts, value) over the gait window (TrackMemory.gait_window_s, at least gait_window of them)
    log_aspect: deque[tuple[float, float]]
    speed: deque[tuple[float, float]]


@dataclass
class HistoryFeatures:
    """Per object of a frame: velocity windows for the dynamics model, limb motion, stride, elapsed time."""

    windows: np.ndarray  # (N, history + 1, 2), NaN where the track is too young
    #: (N, 3) body-heights: amplitude of the arms, of the legs, and of the torso keypoints (noise) over
    #: the limb window; NaN where not measured often enough
    limbs: np.ndarray
    stride: np.ndarray  # (N,) detrended std of log box aspect over the gait window; NaN: too young
    track_speed: np.ndarray  # (N,) mean speed (box-heights/s) over the gait window; NaN: none yet
    #: (N,) seconds since the track was first seen by this memory (0 on its first sighting); NaN: no
    #: track. What the footage could show of a stay: a dwell can be no longer (Dwell's censoring)
    elapsed: np.ndarray
    #: (N,) d(log size)/dt per second from the reliably visible size (stages.normality.scale), and its
    #: standard error; None: not measured (features built by hand), judged as NaN
    scale_rate: np.ndarray | None = None
    scale_se: np.ndarray | None = None

    @classmethod
    def none(cls, n: int, history: int = 4) -> HistoryFeatures:
        """`n` objects with no history at all (untracked, or judged without a TrackMemory)."""
        nan = np.full(n, np.nan)
        return cls(np.full((n, history + 1, 2), np.nan), np.full((n, 3), np.nan), nan, nan.copy(), nan.copy())


@dataclass
class TrackMemory:
    """Short per-track histories of one camera (expired after TRACK_EXPIRY_S without a sighting)."""

    history: int
    pose_window: int
    gait_window: int = 8
    #: the gait window in seconds, when it holds more than `gait_window` samples (25 fps footage):
    #: 8 samples are 0.8 s at 10 fps but 0.32 s, a third of a stride, at 25 fps
    gait_window_s: float = 0.8
    tracks: dict[int, _Track] = field(default_factory=dict)
    scale: ScaleMemory = field(default_factory=lambda: ScaleMemory(KP_CONF))

    @classmethod
    def of(cls, config: ScoringConfig) -> TrackMemory:
        """A camera's memory with the windows of a scoring configuration."""
        return cls(config.dynamics_history, config.pose_window, config.gait_window, config.gait_window_s)

    def _trim(self, window: deque[tuple[float, float]], pts: float) -> None:
        """Drop samples older than the gait window while more than `gait_window` remain (a millisecond
        of slack: at 10 fps the window holds the last 8 samples exactly)."""
        while len(window) > self.gait_window and window[0][0] <= pts - self.gait_window_s + 1e-3:
            window.popleft()

    def update(
        self, attrs: ObjectAttributes, pts: float, frame_size: tuple[int, int] | None = None
    ) -> HistoryFeatures:
        """The frame's history features; `frame_size` (height, width): boxes cut by the frame edge give
        no size sample (None: unknown, no box is taken as cut)."""
        n = len(attrs)
        windows = np.full((n, self.history + 1, 2), np.nan)
        limbs = np.full((n, 3), np.nan)
        stride = np.full(n, np.nan)
        track_speed = np.full(n, np.nan)
        elapsed = np.full(n, np.nan)
        log_a = np.log(np.maximum(attrs.aspect.astype(np.float64), 1e-6))
        # per-row values computed once for the frame (the loop below is per object and in Python)
        rel = torso_relative(attrs.pose, attrs.xyxy)
        keypoints = split_pose(attrs.pose)
        velocity = attrs.velocity.astype(np.float64)
        moving = np.isfinite(velocity).all(axis=1).tolist()
        speed, log_aspect = attrs.speed.tolist(), log_a.tolist()
        speed_ok, aspect_ok = np.isfinite(attrs.speed).tolist(), np.isfinite(log_a).tolist()
        posed = np.isfinite(attrs.pose).any(axis=1).tolist() if attrs.pose.shape[1] else [False] * n
        for i, (tid, blob) in enumerate(zip(attrs.track_id.tolist(), attrs.is_blob.tolist(), strict=True)):
            if blob or tid == UNTRACKED:  # no identity: no history
                continue
            tr = self.tracks.get(tid)
            if tr is None:
                tr = _Track(
                    pts,
                    pts,
                    deque(maxlen=self.history + 1),
                    deque(),
                    None,
                    deque(),
                    deque(),
                )
                self.tracks[tid] = tr
            tr.last_pts = pts
            elapsed[i] = pts - tr.first_pts
            if moving[i]:
                tr.velocity.append(velocity[i])
            if len(tr.velocity) == self.history + 1:
                windows[i] = tr.velocity
            if posed[i] and (tr.last_pose is None or not np.array_equal(tr.last_pose, attrs.pose[i], True)):
                tr.last_pose = attrs.pose[i]
                tr.limbs.append((pts, rel[i]))
            while tr.limbs and pts - tr.limbs[0][0] >= LIMB_WINDOW_S:
                tr.limbs.popleft()
            if len(tr.limbs) >= MIN_LIMB_MEASUREMENTS:
                limbs[i] = limb_amplitudes(np.stack([r for _, r in tr.limbs]))
            if aspect_ok[i]:
                tr.log_aspect.append((pts, log_aspect[i]))
                self._trim(tr.log_aspect, pts)
            n_aspect, least = len(tr.log_aspect), min(MIN_POSE_FRAMES, self.gait_window)
            # as many samples, lasting as long as they do at the footage rate the floor was set on
            if n_aspect >= least and pts - tr.log_aspect[0][0] >= (least - 1) / GAIT_FLOOR_FPS - 1e-3:
                stride[i] = detrended_std(np.fromiter((v for _, v in tr.log_aspect), np.float64, n_aspect))
            if speed_ok[i]:
                tr.speed.append((pts, speed[i]))
                self._trim(tr.speed, pts)
            if tr.speed:
                track_speed[i] = sum(v for _, v in tr.speed) / len(tr.speed)
        stale = [t for t, tr in self.tracks.items() if pts - tr.last_pts > TRACK_EXPIRY_S]
        for t in stale:
            del self.tracks[t]
        scale_rate, scale_se = self.scale.update(attrs, pts, keypoints, frame_size)
        return HistoryFeatures(windows, limbs, stride, track_speed, elapsed, scale_rate, scale_se)


def torso_relative(pose: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
    """(N, 17, 2) keypoints relative to the torso centre, in body-heights (TORSO_SHARE); NaN where a
    keypoint is unseen, and everywhere in rows whose four torso keypoints are not all seen."""
    xy, conf = split_pose(pose)
    box = np.asarray(xyxy, np.float64)
    px = box[:, None, :2] + xy * (box[:, None, 2:] - box[:, None, :2])  # box-normalised -> pixels
    seen = (conf >= KP_CONF) & np.isfinite(px).all(axis=2)
    px = np.where(seen[..., None], px, np.nan)
    torso = px[:, TORSO]
    centre = torso.mean(axis=1)
    length = np.linalg.norm(torso[:, :2].mean(axis=1) - torso[:, 2:].mean(axis=1), axis=1)
    ok = seen[:, TORSO].all(axis=1) & (length > 0)
    body = np.where(ok, length / TORSO_SHARE, np.nan)
    return (px - centre[:, None]) / body[:, None, None]


def limb_amplitudes(window: np.ndarray) -> np.ndarray:
    """(T, 17, 2) torso-relative keypoints of one track's limb window -> (3,) body-heights: the largest
    amplitude (std of position) of the arms' keypoints, of the legs', and the torso keypoints' mean.
    A keypoint seen fewer than MIN_LIMB_MEASUREMENTS times in the window has no amplitude."""
    seen = np.isfinite(window[..., 0])
    n = seen.sum(axis=0)
    filled = np.where(seen[..., None], window, 0.0)
    mean = filled.sum(axis=0) / np.maximum(n, 1)[:, None]
    dev = np.where(seen[..., None], window - mean, 0.0)
    amp = np.sqrt((dev * dev).sum(axis=(0, 2)) / np.maximum(n, 1))
    amp[n < MIN_LIMB_MEASUREMENTS] = np.nan
    out = np.full(3, np.nan)
    for j, group in enumerate((ARMS, LEGS)):
        if np.isfinite(amp[list(group)]).any():
            out[j] = np.nanmax(amp[list(group)])
    if np.isfinite(amp[list(TORSO)]).all():
        out[2] = amp[list(TORSO)].mean()
    return out


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
