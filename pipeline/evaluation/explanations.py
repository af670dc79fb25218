"""Explanation quality of one replay: which alerts were true, what their top reasons were.

Definitions (frames are 0-based decode indices, spans inclusive):
- an alert is one event id; its span runs from its first message's `start_frame` (the frame its
  score first reached the start score) to the largest `end_frame` of its messages; its top reason is
  the first reason of its last message (the reasons at its peak score; "none" when it has none);
- an alert is true when any frame of its span is labelled anomalous in its clip, else false;
- with pixel masks, a true alert is on the anomaly when its own box, in some frame of its span, has
  IoU >= 0.1 (RBDC's beta) with a ground-truth region of that frame; a true alert that never is was
  raised on something else while an anomaly was in view (Ped2's test frames are mostly anomalous,
  so the frame-level split alone says little there);
- an anomalous interval is a contiguous run of anomalous frames of one clip; it is hit when the span
  of some alert of that clip overlaps it; its first alert is the frame that alert opened at (the
  frame of its `new` message);
- with an anomaly_reasons file (pipeline/evaluation/anomaly_reasons.py), a true alert is described
  when its span overlaps a described anomaly of its clip, and its top reason is right when it is
  among the expected reasons of the anomalies it overlaps.
The rule behind "share of true alerts whose top reason is the right one, and false alerts by top
reason". Labels and reasons are read here only; nothing is tuned on them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.boxes import box_iou
from pipeline.evaluation.anomaly_reasons import AnomalyReasons
from pipeline.evaluation.metrics import GroundTruthRegions
from pipeline.packets import Event

BETA = 0.1  # IoU of an alert's box with a ground-truth region that puts it on the anomaly (as RBDC)

NOTE = (
    "alert = one event id, span start_frame..last end_frame, top reason = first reason at its peak; "
    "true when any frame of the span is anomalous; an interval (run of anomalous frames) is hit when an "
    "alert's span overlaps it; right top reason: among the anomaly_reasons file's expected reasons"
)


@dataclass(frozen=True)
class Alert:
    id: str
    clip: str
    track_id: int
    start_frame: int
    end_frame: int
    opened_frame: int  # the frame of the `new` message
    top_reason: str
    peak_score: float

    def overlaps(self, start: int, end: int) -> bool:
        """Whether the alert's span shares a frame with start..end (inclusive)."""
        return self.start_frame <= end and start <= self.end_frame


@dataclass(frozen=True)
class Interval:
    clip: str
    start_frame: int
    end_frame: int  # inclusive

    @property
    def frames(self) -> int:
        return self.end_frame - self.start_frame + 1


@dataclass(frozen=True)
class IntervalFigures:
    clip: str
    start_frame: int
    end_frame: int
    frames: int
    hit: bool
    alerts: int  # alerts whose span overlaps it
    first_alert_frame: int | None  # the earliest frame one of them opened at


@dataclass(frozen=True)
class ReasonFigures:
    """Right top reasons of the true alerts, against an anomaly_reasons file."""

    file: str
    source: str
    described: int  # true alerts overlapping a described anomaly
    right: int
    share_right: float | None  # right / described
    wrong_by_top_reason: dict[str, int]
    #: the same over the described true alerts on the anomaly's region (None: no pixel masks)
    described_on_region: int | None = None
    right_on_region: int | None = None
    share_right_on_region: float | None = None


@dataclass(frozen=True)
class ExplanationFigures:
    alerts: int
    true_alerts: int
    false_alerts: int
    false_by_top_reason: dict[str, int]
    true_by_top_reason: dict[str, dict[str, int]]  # clip -> top reason -> alerts
    #: true alerts whose box lies on the anomalous region / the others by top reason (None: no masks)
    true_on_region: int | None
    true_off_region_by_top_reason: dict[str, int] | None
    intervals: list[IntervalFigures]
    intervals_hit: int
    reasons: ReasonFigures | None

    def to_json(self) -> dict[str, object]:
        return {
            "note": NOTE,
            "alerts": self.alerts,
            "true_alerts": self.true_alerts,
            "false_alerts": self.false_alerts,
            "false_by_top_reason": self.false_by_top_reason,
            "true_by_top_reason": self.true_by_top_reason,
            "true_on_region": self.true_on_region,
            "true_off_region_by_top_reason": self.true_off_region_by_top_reason,
            "intervals_hit": self.intervals_hit,
            "intervals": [vars(i) for i in self.intervals],
            "reasons": None if self.reasons is None else vars(self.reasons),
        }


def alerts_of(events: Sequence[Event]) -> list[Alert]:
    """One Alert per event id, in order of first message."""
    by_id: dict[str, list[Event]] = {}
    for ev in events:
        by_id.setdefault(ev.id, []).append(ev)
    out = []
    for eid, messages in by_id.items():
        first, last = messages[0], messages[-1]
        opened = next((m.end_frame for m in messages if m.kind == "new"), first.end_frame)
        out.append(
            Alert(
                id=eid,
                clip=first.camera,
                track_id=first.track_id,
                start_frame=first.start_frame,
                end_frame=max(m.end_frame for m in messages),
                opened_frame=opened,
                top_reason=last.reasons[0].attribute if last.reasons else "none",
                peak_score=last.peak_score,
            )
        )
    return out


def anomalous_intervals(clip: str, labels: np.ndarray) -> list[Interval]:
    """Contiguous runs of anomalous frames of one clip, in frame order."""
    y = np.asarray(labels).astype(np.int8)
    edges = np.diff(np.concatenate([[0], y, [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    return [Interval(clip, int(s), int(e)) for s, e in zip(starts, ends, strict=True)]


def is_true(alert: Alert, labels: np.ndarray) -> bool:
    """Any frame of the alert's span labelled anomalous (frames past the labels count as normal)."""
    return bool(np.asarray(labels)[max(alert.start_frame, 0) : alert.end_frame + 1].any())


def on_region(
    boxes: Sequence[tuple[int, np.ndarray]], regions: GroundTruthRegions, beta: float = BETA
) -> bool:
    """Whether any (frame, xyxy box) has IoU >= `beta` with a ground-truth region of its frame."""
    for t, box in boxes:
        gt = regions.boxes[t] if 0 <= t < len(regions.boxes) else np.zeros((0, 4))
        if len(gt) and (box_iou(np.asarray(box, np.float64).reshape(1, 4), gt) >= beta).any():
            return True
    return False


def _sorted_counts(values: Sequence[str]) -> dict[str, int]:
    return dict(sorted(Counter(values).items(), key=lambda kv: (-kv[1], kv[0])))


def explanation_figures(
    labels: Mapping[str, np.ndarray],
    events: Sequence[Event],
    reasons: AnomalyReasons | None = None,
    located: Callable[[Alert], bool] | None = None,
) -> ExplanationFigures:
    """The figures above for the test clips `labels` (clip -> (T,) bool, cut to the analysed frames);
    events of other cameras are ignored. `located` says whether a true alert is on the anomaly's
    region (e.g. `on_region` over the alert's boxes); None: no pixel masks, no such split."""
    alerts = [a for a in alerts_of(events) if a.clip in labels]
    truth = [is_true(a, labels[a.clip]) for a in alerts]
    true_alerts = [a for a, t in zip(alerts, truth, strict=True) if t]
    false_alerts = [a for a, t in zip(alerts, truth, strict=True) if not t]
    on = [a for a in true_alerts if located(a)] if located is not None else None
    off = [a for a in true_alerts if a not in on] if on is not None else None
    intervals = []
    for clip, y in labels.items():
        for iv in anomalous_intervals(clip, y):
            over = [a for a in alerts if a.clip == clip and a.overlaps(iv.start_frame, iv.end_frame)]
            intervals.append(
                IntervalFigures(
                    clip=clip,
                    start_frame=iv.start_frame,
                    end_frame=iv.end_frame,
                    frames=iv.frames,
                    hit=bool(over),
                    alerts=len(over),
                    first_alert_frame=min((a.opened_frame for a in over), default=None),
                )
            )
    return ExplanationFigures(
        alerts=len(alerts),
        true_alerts=len(true_alerts),
        false_alerts=len(false_alerts),
        false_by_top_reason=_sorted_counts([a.top_reason for a in false_alerts]),
        true_by_top_reason={
            clip: _sorted_counts([a.top_reason for a in true_alerts if a.clip == clip])
            for clip in labels
            if any(a.clip == clip for a in true_alerts)
        },
        true_on_region=None if on is None else len(on),
        true_off_region_by_top_reason=None if off is None else _sorted_counts([a.top_reason for a in off]),
        intervals=intervals,
        intervals_hit=sum(i.hit for i in intervals),
        reasons=None if reasons is None else reason_figures(true_alerts, reasons, on),
    )


def _judge(alerts: Sequence[Alert], reasons: AnomalyReasons) -> tuple[int, int, list[str]]:
    """(described, right, the wrong top reasons) of `alerts`."""
    described = right = 0
    wrong: list[str] = []
    for a in alerts:
        expected = reasons.expected(a.clip, a.start_frame, a.end_frame)
        if expected is None:
            continue
        described += 1
        if a.top_reason in expected:
            right += 1
        else:
            wrong.append(a.top_reason)
    return described, right, wrong


def _share(right: int, described: int) -> float | None:
    return round(right / described, 4) if described else None


def reason_figures(
    true_alerts: Sequence[Alert], reasons: AnomalyReasons, on_region: Sequence[Alert] | None = None
) -> ReasonFigures:
    described, right, wrong = _judge(true_alerts, reasons)
    on = _judge(on_region, reasons) if on_region is not None else None
    return ReasonFigures(
        file=str(reasons.path),
        source=reasons.source,
        described=described,
        right=right,
        share_right=_share(right, described),
        wrong_by_top_reason=_sorted_counts(wrong),
        described_on_region=None if on is None else on[0],
        right_on_region=None if on is None else on[1],
        share_right_on_region=None if on is None else _share(on[1], on[0]),
    )
