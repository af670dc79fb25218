"""dwell: how unusual it is to have stayed this long in this place, given who stayed where in training.

Standing still is not unusual by itself: people wait, talk and look at their phones, in the places
where they do so. The model counts *visits* (one track in one grid cell) in the normal footage on a
ladder of durations d_j, and estimates P(a visit here stays >= d) as a product-limit (Kaplan-Meier)
estimate: the product over the rungs up to d of P(stayed >= d_j | stayed >= d_j-1), each counted
among the visits followed long enough to show it (at risk). So the probability never rises with the
duration, however few visits were followed that long. Each rung's conditional is smoothed from the
cell to its 3x3 neighbourhood (where people stand is an area, not a cell), to the class over the
image, to no opinion (1); the judged value is -ln P.

Censoring: footage of 8 s cannot show a 60 s stay, so a stay longer than the longest the footage
could show (`horizon`, the longest a track of the class was followed) is judged as a stay of the
horizon, times the chance that a stay seen to last H goes on to last d: H / d (Gott's Copernican
argument: nothing known about a stay's length beyond its having lasted H, and no scale of its own).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from pipeline.packets import Reason
from stages.normality.attributes.base import (
    Attribute,
    FitData,
    FitFrame,
    FrameView,
    Input,
    Learner,
    ModelParts,
    NormalRange,
    ObjectView,
    check_weight,
)
from stages.normality.calibration import TailPrior
from stages.normality.grids import QUANTILES

#: the durations (s) at which stays are counted: 0.25 s to about 3 h, four steps per doubling
DURATIONS = 0.25 * 2.0 ** (np.arange(56) / 4.0)
#: weight (in visits) of each smoothing level's parent: cell <- neighbourhood <- class <- no opinion
PRIOR_VISITS = 2.0
STAYED, AT_RISK = 0, 1


def rung(d: np.ndarray) -> np.ndarray:
    """Index of the longest counted duration <= d (0 below the first): counts there bound those at d."""
    return np.clip(np.searchsorted(DURATIONS, np.asarray(d, np.float64), side="right") - 1, 0, None)


@dataclass(frozen=True, slots=True)
class StayTable:
    """Counted visits per (cell, class, duration): `counts` (C, K, len(DURATIONS), 2) stayed and at
    risk (had stayed to the rung before, followed to this one), and `horizon` (K,) the longest a track
    of each class was followed (s; 0: never seen)."""

    counts: np.ndarray
    horizon: np.ndarray
    grid: tuple[int, int]

    def probability(self, cell: np.ndarray, cls: np.ndarray, dwell: np.ndarray) -> np.ndarray:
        """(N,) P(a visit of the class to the cell has stayed >= dwell), censored at the horizon."""
        d = np.nan_to_num(np.asarray(dwell, np.float64), nan=0.0)
        horizon = self.horizon[cls]
        seen = np.minimum(d, horizon)
        c = self.counts[:, cls]  # (C, N, J, 2): every cell's counts at each object's class
        h = np.ones(c.shape[1:3])  # (N, J) conditional P(stayed >= d_j | stayed >= d_j-1): no opinion
        for level in (c.sum(axis=0), *self._around(c, cell)):
            h = (level[..., STAYED] + PRIOR_VISITS * h) / (level[..., AT_RISK] + PRIOR_VISITS)
        survival = np.cumprod(np.minimum(h, 1.0), axis=1)
        p = np.where(seen >= DURATIONS[0], survival[np.arange(len(d)), rung(seen)], 1.0)
        beyond = np.where(d > horizon, np.maximum(horizon, DURATIONS[0]) / np.maximum(d, DURATIONS[0]), 1.0)
        return np.clip(p * beyond, 1e-12, 1.0)

    def _around(self, c: np.ndarray, cell: np.ndarray) -> Iterator[np.ndarray]:
        """The neighbourhood's counts, then the cell's, (N, J, 2) each."""
        rows, cols = self.grid
        r, q = np.divmod(cell, cols)
        near = np.zeros((len(cell), rows * cols), bool)
        for dr in (-1, 0, 1):
            for dq in (-1, 0, 1):
                rr, qq = r + dr, q + dq
                ok = (rr >= 0) & (rr < rows) & (qq >= 0) & (qq < cols)
                near[np.flatnonzero(ok), (rr * cols + qq)[ok]] = True
        yield np.einsum("nc,cnjk->njk", near.astype(np.float64), c)
        yield c[cell, np.arange(len(cell))]

    def add(self, cell: np.ndarray, cls: np.ndarray, stayed: np.ndarray, seen: np.ndarray, w: float) -> None:
        """Count `w` visits that had stayed `stayed` s in place, followed for `seen` s (>= stayed).

        A visit counts as having stayed at every rung up to its stay, and as at risk at every rung it
        had reached the rung before of and was followed to (it could have shown a stay that long)."""
        for c, k, d, e in zip(cell.tolist(), cls.tolist(), stayed.tolist(), seen.tolist(), strict=True):
            top_stayed = int(rung(d)) if d >= DURATIONS[0] else -1
            top_seen = int(rung(e)) if e >= DURATIONS[0] else -1
            self.counts[c, k, : top_stayed + 1, STAYED] += w
            self.counts[c, k, : min(top_stayed + 1, top_seen) + 1, AT_RISK] += w
            self.horizon[k] = max(self.horizon[k], e)

    @classmethod
    def of(cls, model_tables: dict[str, np.ndarray], grid: tuple[int, int]) -> StayTable:
        return cls(model_tables["dwell.counts"], model_tables["dwell.horizon"], grid)


class Dwell(Attribute):
    name = "dwell"
    tail_prior = TailPrior.SURPRISE  # -ln p of a stay this long
    inputs = frozenset({Input.BOX, Input.TRACK})
    geometric = True
    sustained = False  # itself accumulated over time
    tables = ("dwell.counts", "dwell.horizon")

    def learner(self) -> Learner:
        return _Visits()

    def judge(self, frame: FrameView) -> np.ndarray:
        table = StayTable.of(frame.model.tables, frame.model.grid)
        p = table.probability(frame.cell, frame.cls, frame.attrs.dwell)
        return np.where(frame.det, -np.log(p), np.nan)

    def explain(self, obj: ObjectView, score: float) -> Reason:
        table = StayTable.of(obj.model.tables, obj.model.grid)
        d = float(obj.attrs.dwell[obj.i])
        p = float(table.probability(obj.cell, obj.kk, np.array([d]))[0])
        horizon = float(table.horizon[obj.k])
        beyond = f", longer than the {horizon:.0f} s training could show" if d > horizon else ""
        return Reason(
            self.name,
            f"{d:.0f} s in place",
            f"p={p:.1%} of a stay this long here",
            score,
            f"staying {d:.0f} s in one place{beyond}: {p:.1%} of the {obj.name}s seen here in training "
            f"stayed as long",
        )

    def normal_range(self, obj: ObjectView) -> NormalRange:
        """How long visits of the class to this place stayed: the stay at each quantile level, read off
        the survival table on a grid of durations (beyond the horizon the table is censored)."""
        table = StayTable.of(obj.model.tables, obj.model.grid)
        observed = float(np.nan_to_num(obj.attrs.dwell[obj.i], nan=0.0))
        top = max(float(table.horizon[obj.k]), observed, 1.0) * 1.5
        grid = np.linspace(0.0, top, 200)
        survival = table.probability(np.full(len(grid), int(obj.cell[0])), np.full(len(grid), obj.k), grid)
        # the stay at level q: the shortest duration that fewer than (1 - q) of the visits reached
        values = tuple(float(grid[np.argmax(survival < 1.0 - q)]) if np.any(survival < 1.0 - q) else top
                       for q in QUANTILES.tolist())  # fmt: skip
        return NormalRange("seconds in place", tuple(QUANTILES.tolist()), values, observed)

    def absorb_normal(self, frame: FrameView, rows: np.ndarray, weight: int = 1) -> None:
        """Each object counts `weight` more visits of its cell that stayed as long as it has."""
        check_weight(weight)
        rows = rows[frame.det[rows]]
        table = StayTable.of(frame.model.tables, frame.model.grid)
        d = np.nan_to_num(frame.attrs.dwell[rows].astype(np.float64), nan=0.0)
        table.add(frame.cell[rows], frame.cls[rows], d, d, float(weight))


class _Visits(Learner):
    """Per visit (one sighting of a track, in one cell, as one class): the longest dwell and the longest
    the track had been followed while there. A sighting starts where TrackMemory's elapsed time is 0."""

    def __init__(self) -> None:
        self._sighting: dict[int, int] = {}  # track id -> its current sighting's number
        #: (track id, sighting, cell, class id) -> [stayed, seen, cell, first object row]
        self._visits: dict[tuple[int, int, int, int], list[float]] = {}
        self._rows = 0  # objects seen so far: FitData's row of this frame's first object

    def add(self, frame: FitFrame) -> None:
        a, start = frame.attrs, self._rows
        self._rows += len(a)
        elapsed = frame.hist.elapsed
        ok = ~a.is_blob & ~frame.cut & np.isfinite(elapsed) & np.isfinite(a.dwell)
        for i in np.flatnonzero(ok).tolist():
            tid = int(a.track_id[i])
            if elapsed[i] == 0.0 or tid not in self._sighting:
                self._sighting[tid] = self._sighting.get(tid, -1) + 1
            key = (tid, self._sighting[tid], int(a.cell[i]), int(a.class_id[i]))
            visit = self._visits.setdefault(key, [0.0, 0.0, float(a.cell[i]), float(start + i)])
            visit[0] = max(visit[0], float(a.dwell[i]))
            visit[1] = max(visit[1], float(elapsed[i]), visit[0])

    def build(self, data: FitData, parts: ModelParts) -> None:
        table = StayTable(
            np.zeros((data.cells, len(data.class_names), len(DURATIONS), 2)),
            np.zeros(len(data.class_names)),
            data.grid,
        )
        if self._visits:
            v = np.array(list(self._visits.values()))
            row = v[:, 3].astype(np.int64)  # the visit's first object: its class on the model's axis
            table.add(v[:, 2].astype(np.int64), data.cls[row], v[:, 0], v[:, 1], 1.0)
        parts.tables["dwell.counts"] = table.counts
        parts.tables["dwell.horizon"] = table.horizon
        parts.counts["dwell_visits"] = len(self._visits)
