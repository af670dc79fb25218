"""A label-free estimate of the false-alert rate: fit on some normal clips, score and alert on the others.

Normal training footage holds no anomaly, so every alert the real scorer and event logic raise on a
clip the model did not learn from is a false one. The clips are split into folds (whole clips, so a
walker seen in training is not scored against itself); each fold's clips are scored by a model fitted
on the rest, from the perception already computed for the fit. One continuous recording (a camera's
warm-up, `vigil fit` on one file) is first cut into consecutive stretches of time (`time_blocks`),
which then stand in for clips. The result gives false alerts per hour
at each alert threshold (an AlertCurve, kept in the model), the frame-score quantiles, and so, for
`events.alerts_per_hour`, the threshold that a budget of false alerts gives on this footage.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from pipeline.config import EventsConfig, ScoringConfig
from pipeline.errors import ModelError
from stages.events import EventTracker, Observation, with_start_score
from stages.normality.alert_budget import AlertCurve
from stages.normality.fit import FrameSample, fit_normality
from stages.normality.model import NormalityModel
from stages.score import Scorer

log = logging.getLogger("vigil.crossval")

QUANTILES = (0.5, 0.9, 0.99, 0.999)
MIN_CLIPS = 2  # with one clip there is nothing to hold out but the clip itself


@dataclass(frozen=True)
class ScoredFrame:
    """One held-out frame: its time and the objects the event logic sees (boxes, object scores)."""

    pts: float
    score: float
    observations: tuple[Observation, ...]


@dataclass(frozen=True)
class HeldOutClip:
    clip: str
    frames: tuple[ScoredFrame, ...]

    @property
    def seconds(self) -> float:
        if len(self.frames) < 2:
            return 0.0
        pts = [f.pts for f in self.frames]
        return pts[-1] - pts[0] + float(np.median(np.diff(pts)))  # the last frame lasts one period too

    @property
    def fps(self) -> float:
        if len(self.frames) < 2:
            return 10.0
        step = float(np.median(np.diff([f.pts for f in self.frames])))
        return 1.0 / step if step > 0 else 10.0

    def alerts(self, events: EventsConfig) -> int:
        """New events the real event logic opens on this clip under `events`' thresholds."""
        tracker = EventTracker(self.clip, events)
        return sum(
            m.kind == "new"
            for i, f in enumerate(self.frames)
            for m in tracker.step(f.pts, i, self.fps, list(f.observations))
        )


@dataclass(frozen=True)
class FalseAlertEstimate:
    """Held-out normal clips scored by models that did not see them."""

    clips: tuple[HeldOutClip, ...]
    folds: int

    @property
    def seconds(self) -> float:
        return sum(c.seconds for c in self.clips)

    @property
    def frames(self) -> int:
        return sum(len(c.frames) for c in self.clips)

    def frame_scores(self) -> np.ndarray:
        return np.array([f.score for c in self.clips for f in c.frames], np.float64)

    def quantiles(self) -> dict[str, float]:
        scores = self.frame_scores()
        if not len(scores):
            return {}
        out = {f"p{q * 100:g}": float(np.quantile(scores, q)) for q in QUANTILES}
        out["max"] = float(scores.max())
        return out

    def share_above(self, score: float) -> float:
        scores = self.frame_scores()
        return float((scores >= score).mean()) if len(scores) else 0.0

    def alerts(self, events: EventsConfig) -> int:
        return sum(c.alerts(events) for c in self.clips)

    def alerts_per_hour(self, events: EventsConfig) -> float:
        hours = self.seconds / 3600.0
        return self.alerts(events) / hours if hours > 0 else math.nan

    def clips_with_alerts(self, events: EventsConfig) -> list[str]:
        return [c.clip for c in self.clips if c.alerts(events)]

    def curve(self, events: EventsConfig, step: float = 0.1, lowest: float = 1.0) -> AlertCurve:
        """False alerts at every start score from `lowest` to just above the highest object score, in
        `step`s; each with `events`' gap between start and end score (the hysteresis) kept."""
        top = max((o.score for c in self.clips for f in c.frames for o in f.observations), default=lowest)
        grid = np.round(np.arange(lowest, top + 2 * step, step), 6)
        alerts, shares = [], []
        for start in grid.tolist():
            alerts.append(self.alerts(with_start_score(events, start)))
            shares.append(self.share_above(start))
        for i in range(len(alerts) - 2, -1, -1):  # a higher bar never alerts more (the hysteresis can
            alerts[i] = max(alerts[i], alerts[i + 1])  # split one event in two): keep the curve monotone
        return AlertCurve(
            seconds=self.seconds,
            frames=self.frames,
            clips=len(self.clips),
            folds=self.folds,
            quantiles=self.quantiles(),
            start_scores=tuple(grid.tolist()),
            alerts=tuple(alerts),
            share_above=tuple(shares),
        )


def folds_of(clips: Sequence[str], folds: int) -> list[list[str]]:
    """Whole clips, dealt round-robin in name order into min(folds, clips) folds."""
    names = sorted(clips)
    k = max(1, min(folds, len(names)))
    return [names[i::k] for i in range(k)]


def time_blocks(samples: Sequence[FrameSample], blocks: int) -> list[FrameSample]:
    """One continuous clip's samples cut into `blocks` consecutive stretches of equal duration, each
    relabelled as a clip of its own, "<clip>@<start>-<end>s" (seconds from the clip's first frame).

    Consecutive stretches, not interleaved frames: a walker seen in one stretch is mostly not in the
    next, so holding a stretch out is as close to an unseen clip as one recording gets. Stretches
    with no frame (a gap in the stream) are absent; footage with no duration stays one clip.
    """
    if blocks < 1:
        raise ValueError(f"time_blocks: blocks must be >= 1, got {blocks}")
    clips = {s.clip for s in samples}
    if len(clips) > 1:
        raise ValueError(f"time_blocks: one continuous clip expected, got {len(clips)}")
    if not samples:
        return []
    first = min(s.pts for s in samples)
    width = (max(s.pts for s in samples) - first) / blocks
    if width <= 0:
        return list(samples)
    out = []
    for s in samples:
        i = min(int((s.pts - first) / width), blocks - 1)
        name = f"{s.clip}@{round(i * width, 1):g}-{round((i + 1) * width, 1):g}s"
        out.append(replace(s, clip=name))
    return out


def score_clip(model: NormalityModel, config: ScoringConfig, samples: Sequence[FrameSample]) -> HeldOutClip:
    """The real per-camera scorer over one held-out clip's frames, in time order."""
    scorer = Scorer(model, config)
    frames = []
    for s in sorted(samples, key=lambda s: s.pts):
        scores = scorer.score(s.attributes, s.scene_graph, s.pts, (s.height, s.width))
        rows = {int(t): i for i, t in enumerate(s.attributes.track_id.tolist())}
        boxes = s.attributes.xyxy.tolist()
        observations = []
        for tid, score in zip(scores.track_id.tolist(), scores.object_score.tolist(), strict=True):
            row = rows[int(tid)]
            x1, y1, x2, y2 = boxes[row]
            observations.append(
                Observation(int(tid), s.attributes.name_of(row), (x1, y1, x2, y2), float(score))
            )
        frames.append(ScoredFrame(s.pts, scores.frame_score, tuple(observations)))
    return HeldOutClip(samples[0].clip if samples else "", tuple(frames))


def cross_validate(
    samples: Sequence[FrameSample],
    config: ScoringConfig,
    seed: int,
    grid: tuple[int, int] | None = None,
    folds: int = 4,
) -> FalseAlertEstimate:
    """Fit on all folds but one, score the held-out fold's clips; every fold in turn."""
    by_clip: dict[str, list[FrameSample]] = defaultdict(list)
    for s in samples:
        by_clip[s.clip].append(s)
    if len(by_clip) < MIN_CLIPS:
        raise ModelError(
            f"cross-validation needs at least {MIN_CLIPS} clips of normal footage, got {len(by_clip)}"
        )
    held: list[HeldOutClip] = []
    groups = folds_of(list(by_clip), folds)
    for i, group in enumerate(groups):
        train = [s for clip in sorted(by_clip) if clip not in group for s in by_clip[clip]]
        log.info(
            "cross-validation fold", extra={"fold": f"{i + 1}/{len(groups)}", "held_out": ",".join(group)}
        )
        model = fit_normality(train, config, seed, grid=grid)
        held += [score_clip(model, config, by_clip[clip]) for clip in group]
    return FalseAlertEstimate(tuple(held), len(groups))
