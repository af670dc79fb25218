"""The console's reads of the event store: the inbox paged by key, one alert in full, the audit.

Reads go through a connection of their own (WAL: the pipeline keeps writing meanwhile). The inbox is
ordered newest first by (first_seen, event_id) and paged by that key, not by offset, so page 500 of
100,000 alerts costs what page 1 does; filters use the `alerts` indexes (pipeline/sinks/sqlite.py).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import VigilError

#: how long the lists of cameras and reasons (full scans of 100,000s of rows) are reused
DISTINCT_TTL_S = 30.0
#: inbox states an operator filters on: open/ended, and the review states
STATES = ("open", "ended", "unreviewed", "acknowledged", "false_alarm", "normal_here")


@dataclass(frozen=True)
class AlertRow:
    """One alert as the inbox shows it."""

    event_id: str
    camera: str
    track_id: int
    class_name: str
    first_seen: float
    last_seen: float
    peak_score: float
    top_reason: str | None
    is_open: bool
    review: str | None
    reviewed_by: str | None
    snapshot_path: str | None
    clip_path: str | None
    reasons: tuple[str, ...]
    last_seq: int

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.event_id,
            "camera": self.camera,
            "track_id": self.track_id,
            "class_name": self.class_name,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "peak_score": round(self.peak_score, 3),
            "top_reason": self.top_reason,
            "open": self.is_open,
            "review": self.review,
            "reviewed_by": self.reviewed_by,
            "reasons": list(self.reasons),
            "snapshot": f"/media/{self.event_id}.jpg" if self.snapshot_path else None,
            "clip": f"/media/{self.event_id}.mp4" if self.clip_path else None,
        }


@dataclass(frozen=True)
class AlertFilter:
    camera: str | None = None
    state: str | None = None
    reason: str | None = None
    since: float | None = None  # wall-clock seconds
    until: float | None = None

    def __post_init__(self) -> None:
        if self.state is not None and self.state not in STATES:
            raise VigilError(f"alerts: unknown state {self.state!r}; expected one of {', '.join(STATES)}")


@dataclass(frozen=True)
class Review:
    id: int
    event_id: str
    camera: str
    action: str
    user: str
    at: float
    model_version: int | None
    undone_at: float | None
    undone_by: str | None


_COLUMNS = (
    "a.event_id, a.camera, a.track_id, a.class_name, a.first_seen, a.last_seen, a.peak_score, a.top_reason,"
    " a.is_open, a.review, a.reviewed_by, a.snapshot_path, a.clip_path,"
    " (SELECT group_concat(attribute) FROM alert_reasons r WHERE r.event_id = a.event_id), a.last_seq"
)


def encode_cursor(row: AlertRow) -> str:
    return f"{row.first_seen!r}:{row.event_id}"


def decode_cursor(cursor: str) -> tuple[float, str]:
    at, _, event_id = cursor.partition(":")
    try:
        return float(at), event_id
    except ValueError:
        raise VigilError(f"alerts: bad page cursor {cursor!r}") from None


class AlertReader:
    """Read-only queries over the event store at `path`."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._cached: dict[str, tuple[float, list[str]]] = {}
        try:
            self._db = sqlite3.connect(
                f"file:{self.path}?mode=ro", uri=True, timeout=10.0, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise VigilError(f"event store {self.path}: cannot open for reading: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _rows(self, sql: str, args: tuple | list = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    @staticmethod
    def _alert(r: tuple) -> AlertRow:
        return AlertRow(
            r[0], r[1], int(r[2]), r[3], float(r[4]), float(r[5]), float(r[6]), r[7], bool(r[8]), r[9], r[10],
            r[11], r[12], tuple(sorted((r[13] or "").split(","))) if r[13] else (), int(r[14]),
        )  # fmt: skip

    def page(
        self, filters: AlertFilter, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[AlertRow], str | None]:
        """Newest first; the cursor of the next page (None: this is the last)."""
        where, args = self._where(filters)
        if cursor:
            at, event_id = decode_cursor(cursor)
            where.append("(a.first_seen, a.event_id) < (?, ?)")  # a row value: an index seek, not a scan
            args += [at, event_id]
        sql = f"SELECT {_COLUMNS} FROM alerts a"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY a.first_seen DESC, a.event_id DESC LIMIT ?"
        rows = [self._alert(r) for r in self._rows(sql, [*args, limit + 1])]
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, (encode_cursor(rows[-1]) if more and rows else None)

    @staticmethod
    def _where(f: AlertFilter) -> tuple[list[str], list[object]]:
        where: list[str] = []
        args: list[object] = []
        if f.camera:
            where.append("a.camera = ?")
            args.append(f.camera)
        if f.reason:
            where.append(
                "EXISTS (SELECT 1 FROM alert_reasons r WHERE r.event_id = a.event_id AND r.attribute = ?)"
            )
            args.append(f.reason)
        if f.since is not None:
            where.append("a.first_seen >= ?")
            args.append(f.since)
        if f.until is not None:
            where.append("a.first_seen < ?")
            args.append(f.until)
        if f.state == "open":
            where.append("a.is_open = 1")
        elif f.state == "ended":
            where.append("a.is_open = 0")
        elif f.state == "unreviewed":
            where.append("a.review IS NULL")
        elif f.state:
            where.append("a.review = ?")
            args.append(f.state)
        return where, args

    def changed_since(self, seq: int, limit: int = 100) -> list[AlertRow]:
        """Alerts whose last message (or review) came after store row `seq`, oldest change first."""
        sql = f"SELECT {_COLUMNS} FROM alerts a WHERE a.last_seq > ? ORDER BY a.last_seq LIMIT ?"
        return [self._alert(r) for r in self._rows(sql, (seq, limit))]

    def last_seq(self) -> int:
        return int(self._rows("SELECT COALESCE(MAX(last_seq), 0) FROM alerts")[0][0])

    def get(self, event_id: str) -> AlertRow | None:
        rows = self._rows(f"SELECT {_COLUMNS} FROM alerts a WHERE a.event_id = ?", (event_id,))
        return self._alert(rows[0]) if rows else None

    def message(self, event_id: str) -> dict[str, object] | None:
        """The event's latest lifecycle message as emitted (reasons, trajectory, box)."""
        rows = self._rows(
            "SELECT json FROM events WHERE event_id = ? AND kind != 'review' ORDER BY seq DESC LIMIT 1",
            (event_id,),
        )
        return json.loads(rows[0][0]) if rows else None

    def counts_since(self, since: float) -> dict[str, int]:
        """Alerts per camera first seen at or after `since`."""
        return {c: int(n) for c, n in self._rows(
            "SELECT camera, COUNT(*) FROM alerts WHERE first_seen >= ? GROUP BY camera", (since,)
        )}  # fmt: skip

    def cameras(self) -> list[str]:
        """Cameras with alerts (a scan of the store: kept for `DISTINCT_TTL_S`)."""
        return self._distinct("SELECT DISTINCT camera FROM alerts ORDER BY camera")

    def reasons(self) -> list[str]:
        """Attributes that led or joined a reason (for the inbox's filter; kept for `DISTINCT_TTL_S`)."""
        return self._distinct("SELECT DISTINCT attribute FROM alert_reasons ORDER BY attribute")

    def _distinct(self, sql: str) -> list[str]:
        now = time.monotonic()
        cached = self._cached.get(sql)
        if cached is None or now - cached[0] > DISTINCT_TTL_S:
            cached = (now, [r[0] for r in self._rows(sql)])
            self._cached[sql] = cached
        return list(cached[1])

    def timeline(self, camera: str, since: float) -> list[tuple[float, float, float]]:
        """(first_seen, last_seen, peak score) of the camera's alerts since `since`."""
        return [(float(a), float(b), float(c)) for a, b, c in self._rows(
            "SELECT first_seen, last_seen, peak_score FROM alerts WHERE camera = ? AND first_seen >= ?"
            " ORDER BY first_seen", (camera, since),
        )]  # fmt: skip

    def scores(self, camera: str, since: float) -> list[tuple[float, float]]:
        """(wall time, frame score) samples of the camera since `since`, oldest first."""
        rows = self._rows(
            "SELECT at, score FROM frame_scores WHERE camera = ? AND at >= ? ORDER BY at", (camera, since)
        )
        return [(float(a), float(b)) for a, b in rows]

    def reviews(
        self, event_id: str | None = None, limit: int = 200, before: int | None = None
    ) -> list[Review]:
        """The audit, newest first (of one event, or all; `before`: rows older than that id)."""
        where, args = [], []
        if event_id is not None:
            where.append("event_id = ?")
            args.append(event_id)
        if before is not None:
            where.append("id < ?")
            args.append(before)
        sql = (
            "SELECT id, event_id, camera, action, user, at, model_version, undone_at, undone_by FROM reviews"
        )
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        return [Review(*r) for r in self._rows(sql, [*args, limit])]
