"""Sustained evidence: per track and attribute, the median calibrated score over its recent frames.

A calibrated attribute score says how rare one frame's value is. A person gliding on a skateboard
at walking speed, or a distant rider seen only as "person", is rarely extreme in any single frame
(-log10 p of 1.5-2.5, which normal people reach now and then), but stays moderately unusual frame
after frame, which normal people do not. The median of a track's last `window` calibrated scores of an
attribute (at least `min_frames` of them applicable) is that evidence: the level the track stays
at for at least half of those frames. A median, not a mean, because what it must not count is a
few extreme frames of an otherwise normal track (a box that jumps when other people hide and reveal
a walker's legs), which a mean carries for a whole window. Fitted on held-out normal tracks, its
own calibrator puts it on the same -log10 p scale as the per-frame scores, so the scorer can take
whichever is stronger. Untracked objects (moving regions, id -1) have no sustained evidence.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from stages.normality.attributes import REGISTRY
from stages.normality.features import UNTRACKED

#: attributes of how an object moves, measured with per-frame noise, so that averaging over its track
#: adds evidence (Attribute.sustained). Not the attributes of what or where it is, which persist by
#: nature (its mean over a track is about its current value, and a rare object would only be counted
#: twice): class_in_place, size, appearance, relations (two objects walking together keep their
#: relation), dwell (itself accumulated over time); nor unexplained_motion (moving regions have no track).
SUSTAINED_ATTRIBUTES = tuple(a.name for a in REGISTRY.values() if a.sustained)


@dataclass
class _Ring:
    values: np.ndarray  # (A, window): the last scores, NaN where not applicable or not yet filled
    last_frame: int
    next: int = 0


@dataclass
class SustainedEvidence:
    """Per-track running median of calibrated attribute scores over the last `window` frames of the track."""

    window: int
    min_frames: int
    expiry_frames: int = 50
    tracks: dict[int, _Ring] = field(default_factory=dict)
    _frame: int = 0

    def __post_init__(self) -> None:
        if self.window < 1 or not 1 <= self.min_frames <= self.window:
            raise ValueError(f"sustained evidence: window {self.window}, min_frames {self.min_frames}")

    def __call__(self, track_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """(N, A) medians of each object's last `window` scores per attribute; NaN where fewer than
        `min_frames` of them were applicable, or the object has no track."""
        self._frame += 1
        n, a = scores.shape
        out = np.full((n, a), np.nan)
        rows, rings = [], []
        for i, tid in enumerate(track_ids.tolist()):
            if tid <= UNTRACKED:
                continue
            ring = self.tracks.get(tid)
            if ring is None or ring.values.shape[0] != a:
                ring = _Ring(np.full((a, self.window), np.nan), self._frame)
                self.tracks[tid] = ring
            ring.values[:, ring.next] = scores[i]
            ring.next = (ring.next + 1) % self.window
            ring.last_frame = self._frame
            rows.append(i)
            rings.append(ring.values)
        if rows:
            out[rows] = nan_median(np.stack(rings), self.min_frames)
        if self._frame % self.expiry_frames == 0:
            cutoff = self._frame - self.expiry_frames
            self.tracks = {t: r for t, r in self.tracks.items() if r.last_frame >= cutoff}
        return out


def nan_median(values: np.ndarray, min_count: int) -> np.ndarray:
    """(M, A, W) -> (M, A): the median over the last axis of the finite values; NaN where fewer than
    `min_count` are finite (np.nanmedian's result without its all-NaN warnings, in one sort along
    contiguous rows)."""
    window = values.shape[-1]
    count = np.isfinite(values).sum(axis=-1)  # (M, A)
    ordered = np.sort(values, axis=-1).reshape(-1, window)  # NaN sort last
    lo = np.maximum(count - 1, 0) // 2
    hi = np.minimum(count // 2, window - 1)
    row = np.arange(len(ordered))
    low, high = ordered[row, lo.ravel()].reshape(count.shape), ordered[row, hi.ravel()].reshape(count.shape)
    return np.where(count >= max(min_count, 1), (low + high) / 2.0, np.nan)
