"""False alerts per hour against the alert threshold, as cross-validation over normal clips measured them.

Kept in the normality model (JSON in its header) so `vigil watch` can turn `events.alerts_per_hour`
into the start score that budget gives on this camera's own normal footage, and so an operator can see
what the model's alert rate rests on (seconds of footage, clips, folds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class AlertCurve:
    """False alerts on held-out normal footage at each start score of a grid (ascending)."""

    seconds: float
    frames: int
    clips: int
    folds: int
    quantiles: dict[str, float]  # frame scores: p50, p90, p99, p99.9, max
    start_scores: tuple[float, ...]
    alerts: tuple[int, ...]  # non-increasing along start_scores
    share_above: tuple[float, ...]  # share of frames whose score reaches each start score

    def __post_init__(self) -> None:
        if len(self.start_scores) != len(self.alerts) or len(self.alerts) != len(self.share_above):
            raise ValueError("AlertCurve: start_scores, alerts and share_above differ in length")
        if list(self.start_scores) != sorted(self.start_scores):
            raise ValueError("AlertCurve: start_scores must ascend")

    @property
    def hours(self) -> float:
        return self.seconds / 3600.0

    def _at(self, start_score: float) -> int | None:
        """Index of the lowest grid score at or above `start_score` (None past the grid's end)."""
        return next((i for i, s in enumerate(self.start_scores) if s >= start_score - 1e-9), None)

    def alerts_per_hour(self, start_score: float) -> float:
        """At the lowest grid score at or above `start_score`; 0 past the grid's end, which lies above
        every held-out object's score (NaN without footage)."""
        if self.hours <= 0:
            return math.nan
        i = self._at(start_score)
        return self.alerts[i] / self.hours if i is not None else 0.0

    def share_at(self, start_score: float) -> float:
        """Share of held-out frames scoring at or above `start_score`; 0 past the grid's end, which lies
        above every held-out object's score."""
        i = self._at(start_score)
        return self.share_above[i] if i is not None else 0.0

    def threshold_for(self, alerts_per_hour: float, floor: float) -> float:
        """The lowest grid start score, not below `floor`, whose false alerts fit the budget; the top
        of the grid (above every held-out score) when none does."""
        for s, n in zip(self.start_scores, self.alerts, strict=True):
            if s >= floor - 1e-9 and self.hours > 0 and n / self.hours <= alerts_per_hour:
                return s
        return max(self.start_scores[-1] if self.start_scores else floor, floor)

    def summary(self, start_score: float) -> str:
        rate = self.alerts_per_hour(start_score)
        q = ", ".join(f"{k} {v:.2f}" for k, v in self.quantiles.items())
        share = self.share_at(start_score)
        at = f"{start_score:g}"
        return (
            f"{rate:.1f} false alerts/hour at score {at} on {self.seconds / 60:.1f} min of held-out normal "
            f"footage ({self.clips} clips, {self.folds} folds; {share:.1%} of frames >= {at}); "
            f"frame scores {q}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "seconds": self.seconds,
            "frames": self.frames,
            "clips": self.clips,
            "folds": self.folds,
            "quantiles": self.quantiles,
            "start_scores": list(self.start_scores),
            "alerts": list(self.alerts),
            "share_above": list(self.share_above),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AlertCurve:
        return cls(
            seconds=float(d["seconds"]),
            frames=int(d["frames"]),
            clips=int(d["clips"]),
            folds=int(d["folds"]),
            quantiles={str(k): float(v) for k, v in d["quantiles"].items()},
            start_scores=tuple(float(x) for x in d["start_scores"]),
            alerts=tuple(int(x) for x in d["alerts"]),
            share_above=tuple(float(x) for x in d["share_above"]),
        )
