"""Per-camera history of tracked objects: where each track's ground point was, and when.

Kinematics are computed in scale-free units: pixel displacements divided by the box height in
pixels, over real seconds from the frames' pts, so neither the image size nor the analysis stride
changes the numbers.
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
    x: list[float] = field(default_factory=list)  # ground point, pixels
    y: list[float] = field(default_factory=list)
    h: list[float] = field(default_factory=list)  # box height, pixels
    age: int = 0

    def append(self, t: float, x: float, y: float, h: float, keep: int) -> None:
        self.t.append(t)
        self.x.append(x)
        self.y.append(y)
        self.h.append(h)
        self.age += 1
        if len(self.t) > 2 * keep:  # trim in chunks so appends stay amortised O(1)
            for values in (self.t, self.x, self.y, self.h):
                del values[:-keep]


def slope(t: list[float], v: list[float]) -> float:
    """Least-squares slope of v over t; NaN without 2 distinct times (plain Python: windows are tiny)."""
    n = len(t)
    if n < 2:
        return float("nan")
    tm, vm = sum(t) / n, sum(v) / n
    den = sum((ti - tm) ** 2 for ti in t)
    if den <= 0:
        return float("nan")
    return sum((ti - tm) * (vi - vm) for ti, vi in zip(t, v, strict=True)) / den


class TrackHistory:
    """Track states of ONE camera; expires tracks not seen for `expiry_s` seconds."""

    def __init__(
        self,
        velocity_window: int = 5,
        dwell_radius: float = 1.0,
        max_samples: int = 3000,
        expiry_s: float = 2.0,
    ) -> None:
        if velocity_window < 2:
            raise ValueError(f"velocity_window: expected >= 2, got {velocity_window}")
        self.velocity_window = velocity_window
        self.dwell_radius = dwell_radius
        self.max_samples = max(max_samples, velocity_window)
        self.expiry_s = expiry_s
        self._tracks: dict[int, _Track] = {}

    def __len__(self) -> int:
        return len(self._tracks)

    def __contains__(self, track_id: int) -> bool:
        return track_id in self._tracks

    def update(self, track_id: int, t: float, ground_px: tuple[float, float], height_px: float) -> Kinematics:
        """Record track `track_id` at time `t` (seconds) and return its kinematics."""
        track = self._tracks.get(track_id)
        if track is None or (track.t and t < track.t[-1]):  # new, or the clock went back: restart it
            track = self._tracks[track_id] = _Track()
        elif track.t and t == track.t[-1]:  # seen twice in one frame: the later sighting replaces it
            for values in (track.t, track.x, track.y, track.h):
                values.pop()
            track.age -= 1
        track.append(
            t, float(ground_px[0]), float(ground_px[1]), max(float(height_px), 1e-6), self.max_samples
        )
        return self._kinematics(track)

    def expire(self, now: float) -> None:
        """Forget tracks whose last observation is older than `expiry_s` (or in the future of `now`)."""
        stale = [k for k, tr in self._tracks.items() if not 0 <= now - tr.t[-1] <= self.expiry_s]
        for k in stale:
            del self._tracks[k]

    def _kinematics(self, track: _Track) -> Kinematics:
        w = min(len(track.t), self.velocity_window)
        t = track.t[-w:]
        h_now = track.h[-1]
        if w >= 2:
            h = track.h[-w:]
            h_mean = sum(h) / w
            velocity = (slope(t, track.x[-w:]) / h_mean, slope(t, track.y[-w:]) / h_mean)
            scale_rate = slope(t, [math.log(v) for v in h])
        else:
            velocity, scale_rate = (float("nan"), float("nan")), float("nan")
        # dwell: time since the earliest sample from which on the object stayed near where it is now
        xs, ys = np.asarray(track.x), np.asarray(track.y)
        far = np.hypot(xs - xs[-1], ys - ys[-1]) > self.dwell_radius * h_now
        last_far = int(np.flatnonzero(far)[-1]) if far.any() else -1
        start = last_far + 1 if last_far >= 0 else 0
        dwell = track.t[-1] - track.t[start]
        return Kinematics(velocity=velocity, scale_rate=scale_rate, dwell=float(dwell), age=track.age)
