"""The cross-validated held-out training clips as extra all-normal clips of an evaluation.

`vigil eval` already scores each normal training clip with a model not fitted on it (the false-alert
estimate, stages/normality/crossval.py). Counting those frames as normal frames beside the test
clips is the protocol of issue 16 for test sets that are mostly anomalous (Avenue dev: ~90 %): the
same cross-validation run is reused, nothing is fitted again.

Frame grid: a held-out frame is an analysed training frame and knows its pts, not its decode index.
Test frames are indexed by decode index, and a test frame without a score (not analysed, or failed)
holds the last score (`ClipTrace.series`). So that both count the same way, each held-out frame is
placed at round((pts - first pts) / median frame spacing) and the gaps are filled by the same
`ClipTrace.series`. With every decoded frame analysed (the replay default: the detector's
`every_k_frames` strides detection only, every frame still gets attributes and a score) the grid has
no gap and the series is just the held-out frames in time order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pipeline.evaluation.trace import ClipTrace

if TYPE_CHECKING:
    from stages.normality.crossval import FalseAlertEstimate, HeldOutClip


@dataclass(frozen=True)
class NormalClip:
    """One held-out normal training clip on its frame grid: every frame is normal."""

    name: str  # the training clip's name (its file stem)
    scores: np.ndarray  # (T,) frame scores; gaps hold the last score
    missing: int  # grid frames with no held-out score (filled)


def on_frame_grid(pts: Sequence[float], scores: Sequence[float]) -> tuple[np.ndarray, int]:
    """(T,) scores at round((pts - pts[0]) / median spacing), gaps filled as `ClipTrace.series` does.

    Returns the series and the number of filled frames. Non-finite scores count as missing.
    """
    if len(pts) == 0:
        return np.zeros(0), 0
    t = np.asarray(pts, np.float64)
    steps = np.diff(np.sort(t))
    steps = steps[steps > 0]
    period = float(np.median(steps)) if len(steps) else 1.0
    index = np.rint((t - t.min()) / period).astype(int)
    trace = ClipTrace(frame_score={int(i): float(s) for i, s in zip(index, scores, strict=True)})
    return trace.series(int(index.max()) + 1)


def normal_clip(held: HeldOutClip, name: str) -> NormalClip:
    series, missing = on_frame_grid([f.pts for f in held.frames], [f.score for f in held.frames])
    return NormalClip(name, series, missing)


def training_normals(estimate: FalseAlertEstimate | None, names: Mapping[str, str]) -> tuple[NormalClip, ...]:
    """The held-out clips of `estimate` as normal clips, named by `names` (source name -> clip name),
    in clip-name order; () without an estimate."""
    if estimate is None:
        return ()
    clips = [normal_clip(h, names.get(h.clip, h.clip)) for h in estimate.clips if h.frames]
    return tuple(sorted(clips, key=lambda c: c.name))
