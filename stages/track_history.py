"""Per-camera history of tracked objects: where each track's box was, and when.

Kinematics are computed in scale-free units: pixel displacements divided by the box height in
pixels, over real seconds from the frames' pts, so neither the image size nor the analysis stride
changes the numbers. The velocity and scale rate are fitted on the boxes of the last
`velocity_window_s` seconds, and at least the last `velocity_window` boxes: five boxes alone span
0.4 s at 10 fps but 0.16 s at 25 fps, where a runner's speed then swung between 0.7 and 2.2
body-heights/s from box jitter.

Velocity. A box moves when the object moves, but also when it changes shape: in a crowd the
detector's box of a walker loses and regains the legs that other people hide, and its bottom edge
(the ground point) jumps up and down by a third of a body-height while the walker is slow. So by
default (`velocity_from="edges"`) each axis takes the slopes of the box's two opposite edges (left
and right, top and bottom) and keeps the slower one when both move the same way, else 0: the
"minmod" of the two, as slope limiters in numerical schemes do. A box that translates keeps its
speed; one that only stretches or shrinks has none. `velocity_from="ground"` is the plain slope of
the bottom-centre point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, slots=True)
class Kinematics:
    """What the history says about one track now (NaN where there is not enough history)."""

    velocity: tuple[float, float]  # box-heights per second, image axes (x right, y down)
    scale_rate: float  # d(log box height)/dt per second
    dwell: float  # seconds within `dwell_radius` box-heights of the current ground point
    age: int  # observations of this track, this one included


@dataclass(slots=True)
class _Track:
    t: list[float] = field(default_factory=list)
    x1: list[float] = field(default_factory=list)  # box edges, pixels
    y1: list[float] = field(default_factory=list)
    x2: list[float] = field(default_factory=list)
    y2: list[float] = field(default_factory=list)
    #: the samples' ground points for the dwell, x = (x1 + x2) / 2 in row 0 and y2 in row 1, as an array
    #: that grows by doubling (no list-to-array conversion per frame); its first len(t) columns are used
    ground: np.ndarray = field(default_factory=lambda: np.empty((2, 64)))
    age: int = 0

    def columns(self) -> tuple[list[float], ...]:
        return (self.t, self.x1, self.y1, self.x2, self.y2)

    def append(self, t: float, box: tuple[float, float, float, float], keep: int) -> None:
        n = len(self.t)
        for values, v in zip(self.columns(), (t, *box), strict=True):
            values.append(v)
        if n == self.ground.shape[1]:
            self.ground = np.concatenate([self.ground, np.empty_like(self.ground)], axis=1)
        x1, _, x2, y2 = box
        self.ground[0, n], self.ground[1, n] = (x1 + x2) / 2, y2
        self.age += 1
        if len(self.t) > 2 * keep:  # trim in chunks so appends stay amortised O(1)
            for values in self.columns():
                del values[:-keep]
            self.ground[:, :keep] = self.ground[:, n + 1 - keep : n + 1].copy()


def slope(t: list[float], v: list[float]) -> float:
    """Least-squares slope of v over t; NaN without 2 distinct times (plain Python: windows are tiny)."""
    return slopes(t, v)[0]


def slopes(t: list[float], *series: list[float]) -> list[float]:
    """`slope(t, v)` of each series, the time terms computed once."""
    n = len(t)
    if n < 2:
        return [float("nan")] * len(series)
    tm = sum(t) / n
    den = sum((ti - tm) ** 2 for ti in t)
    if den <= 0:
        return [float("nan")] * len(series)
    dt = [ti - tm for ti in t]
    out = []
    for v in series:
        vm = sum(v) / n
        out.append(sum(d * (vi - vm) for d, vi in zip(dt, v, strict=True)) / den)
    return out


def minmod(a: float, b: float) -> float:
    """The smaller in magnitude of `a` and `b` when they have the same sign, else 0 (NaN in, NaN out)."""
    if a * b > 0:
        return a if abs(a) < abs(b) else b
    return float("nan") if math.isnan(a) or math.isnan(b) else 0.0


#: samples of a track's history looked at first for the dwell (TrackHistory._last_far)
DWELL_RECENT = 16


class TrackHistory:
    """Track states of ONE camera; expires tracks not seen for `expiry_s` seconds."""

    def __init__(
        self,
        velocity_window: int = 5,
        dwell_radius: float = 1.0,
        max_samples: int = 3000,
        expiry_s: float = 2.0,
        velocity_from: str = "edges",
        velocity_window_s: float = 0.4,
    ) -> None:
        if velocity_window < 2:
            raise ValueError(f"velocity_window: expected >= 2, got {velocity_window}")
        if not velocity_window_s > 0:
            raise ValueError(f"velocity_window_s: expected > 0, got {velocity_window_s}")
        if velocity_from not in ("edges", "ground"):
            raise ValueError(f"velocity_from: expected 'edges' or 'ground', got {velocity_from!r}")
        self.velocity_from = velocity_from
        self.velocity_window = velocity_window
        self.velocity_window_s = velocity_window_s
        self.dwell_radius = dwell_radius
        self.max_samples = max(max_samples, velocity_window)
        self.expiry_s = expiry_s
        self._tracks: dict[int, _Track] = {}

    def __len__(self) -> int:
        return len(self._tracks)

    def __contains__(self, track_id: int) -> bool:
        return track_id in self._tracks

    def update(self, track_id: int, t: float, box_px: tuple[float, float, float, float]) -> Kinematics:
        """Record track `track_id`'s box (x1, y1, x2, y2 pixels) at time `t` (seconds) and return its
        kinematics."""
        track = self._tracks.get(track_id)
        if track is None or (track.t and t < track.t[-1]):  # new, or the clock went back: restart it
            track = self._tracks[track_id] = _Track()
        elif track.t and t == track.t[-1]:  # seen twice in one frame: the later sighting replaces it
            for values in track.columns():
                values.pop()
            track.age -= 1
        x1, y1, x2, y2 = (float(v) for v in box_px)
        track.append(t, (x1, y1, x2, max(y2, y1 + 1.0)), self.max_samples)
        return self._kinematics(track)

    def expire(self, now: float) -> None:
        """Forget tracks whose last observation is older than `expiry_s` (or in the future of `now`)."""
        stale = [k for k, tr in self._tracks.items() if not 0 <= now - tr.t[-1] <= self.expiry_s]
        for k in stale:
            del self._tracks[k]

    def _last_far(self, track: _Track, radius: float) -> int:
        """Index of the track's last sample whose ground point lies more than `radius` pixels from the
        current one (-1: none). In a long history the recent samples are looked at first and the whole
        history only when none of them is far: a moving track's is near the end, and histories grow to
        `max_samples`."""
        n = len(track.t)
        size = n if n <= 4 * DWELL_RECENT else DWELL_RECENT  # a short history: in one pass
        while True:
            xs, ys = track.ground[0, n - size : n], track.ground[1, n - size : n]
            far_at = np.flatnonzero(np.hypot(xs - xs[-1], ys - ys[-1]) > radius)
            if len(far_at):
                return n - size + int(far_at[-1])
            if size == n:
                return -1
            size = n

    def _window(self, t: list[float]) -> int:
        """How many of the last samples the velocity is fitted on: those within `velocity_window_s` of
        the newest (a millisecond of slack for timestamps that are multiples of 1/fps in floating
        point), and at least the last `velocity_window` (a track missed in some frames keeps as many
        boxes to average their jitter)."""
        start = t[-1] - self.velocity_window_s - 1e-3
        w = min(len(t), self.velocity_window)
        while w < len(t) and t[-w - 1] >= start:
            w += 1
        return w

    def _kinematics(self, track: _Track) -> Kinematics:
        w = self._window(track.t)
        t = track.t[-w:]
        h_now = track.y2[-1] - track.y1[-1]
        if w >= 2:
            x1, y1, x2, y2 = track.x1[-w:], track.y1[-w:], track.x2[-w:], track.y2[-w:]
            h = [b - a for a, b in zip(y1, y2, strict=True)]
            h_mean = sum(h) / w
            log_h = [math.log(v) for v in h]
            if self.velocity_from == "edges":
                s_x1, s_x2, s_y1, s_y2, scale_rate = slopes(t, x1, x2, y1, y2, log_h)
                vx, vy = minmod(s_x1, s_x2), minmod(s_y1, s_y2)
            else:
                ground_x = [(a + b) / 2 for a, b in zip(x1, x2, strict=True)]
                vx, vy, scale_rate = slopes(t, ground_x, y2, log_h)
            velocity = (vx / h_mean, vy / h_mean)
        else:
            velocity, scale_rate = (float("nan"), float("nan")), float("nan")
        # dwell: time since the earliest sample from which on the ground point stayed near where it is now
        last_far = self._last_far(track, self.dwell_radius * h_now)
        start = last_far + 1 if last_far >= 0 else 0
        dwell = track.t[-1] - track.t[start]
        return Kinematics(velocity=velocity, scale_rate=scale_rate, dwell=float(dwell), age=track.age)
