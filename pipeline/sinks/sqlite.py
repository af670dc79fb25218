"""The embedded event store: every event lifecycle message in SQLite, plus an outbox for network sinks.

A network sink that is down must not lose events, so `write` records each message once in `events`
and, in the same transaction, one `outbox` row per network sink. Those sinks drain their rows with
`pending` / `mark_delivered` / `mark_failed`, in insertion order, whenever they can reach their
target. WAL mode lets the CLI (or a dashboard) read while the pipeline writes; one connection
shared behind a lock makes the store safe to use from any thread.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import VigilError
from pipeline.packets import Event
from pipeline.sinks.base import EventSink

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id      TEXT    NOT NULL,
    kind          TEXT    NOT NULL CHECK (kind IN ('new', 'update', 'end')),
    camera        TEXT    NOT NULL,
    start_time    REAL    NOT NULL,
    end_time      REAL    NOT NULL,
    start_frame   INTEGER NOT NULL,
    end_frame     INTEGER NOT NULL,
    track_id      INTEGER NOT NULL,
    class_name    TEXT    NOT NULL,
    x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
    score         REAL    NOT NULL,
    peak_score    REAL    NOT NULL,
    reasons       TEXT    NOT NULL,
    snapshot_path TEXT,
    clip_path     TEXT,
    created_at    REAL    NOT NULL,
    json          TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS events_camera ON events (camera, seq);
CREATE INDEX IF NOT EXISTS events_event_id ON events (event_id, seq);
CREATE TABLE IF NOT EXISTS outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    event_seq  INTEGER NOT NULL REFERENCES events (seq),
    sink       TEXT    NOT NULL,
    status     TEXT    NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered')),
    attempts   INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    updated_at REAL    NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (sink, status, id);
"""


@dataclass(frozen=True)
class StoredEvent:
    """One row of `events`: the columns queries filter on, and the message as emitted."""

    seq: int
    event_id: str
    kind: str
    camera: str
    track_id: int
    class_name: str
    peak_score: float
    json: dict[str, object]


@dataclass(frozen=True)
class OutboxItem:
    """One message waiting for one network sink."""

    id: int
    sink: str
    attempts: int
    last_error: str | None
    event: dict[str, object]


class SqliteEventStore(EventSink):
    name = "sqlite"

    def __init__(self, path: str | Path, outbox_sinks: Sequence[str] = (), timeout_s: float = 10.0) -> None:
        """Open (creating if needed) the store; `outbox_sinks` names the network sinks to queue for."""
        self.path = Path(path)
        self.outbox_sinks = tuple(outbox_sinks)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db: sqlite3.Connection | None = sqlite3.connect(
                self.path, timeout=timeout_s, check_same_thread=False, isolation_level=None
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise VigilError(f"event store {self.path}: cannot open: {exc}") from exc

    # ---- writing ---------------------------------------------------------------------------------

    def write(self, events: Sequence[Event]) -> None:
        """Record `events` (and their outbox rows) in one transaction: all or none."""
        if not events:
            return
        now = time.time()
        with self._transaction() as db:
            for event in events:
                data = event.to_json()
                cursor = db.execute(
                    "INSERT INTO events (event_id, kind, camera, start_time, end_time, start_frame,"
                    " end_frame, track_id, class_name, x1, y1, x2, y2, score, peak_score, reasons,"
                    " snapshot_path, clip_path, created_at, json) VALUES (" + ",".join("?" * 20) + ")",
                    (
                        event.id,
                        event.kind,
                        event.camera,
                        event.start_time,
                        event.end_time,
                        event.start_frame,
                        event.end_frame,
                        event.track_id,
                        event.class_name,
                        *(float(v) for v in event.box),
                        event.score,
                        event.peak_score,
                        json.dumps(data["reasons"], ensure_ascii=False),
                        event.snapshot_path,
                        event.clip_path,
                        event.created_at,
                        json.dumps(data, ensure_ascii=False),
                    ),
                )
                db.executemany(
                    "INSERT INTO outbox (event_seq, sink, updated_at) VALUES (?, ?, ?)",
                    [(cursor.lastrowid, sink, now) for sink in self.outbox_sinks],
                )

    # ---- outbox ----------------------------------------------------------------------------------

    def pending(self, sink: str, limit: int = 100) -> list[OutboxItem]:
        """The oldest `limit` undelivered messages for `sink`, in insertion order."""
        with self._transaction() as db:
            rows = db.execute(
                "SELECT o.id, o.sink, o.attempts, o.last_error, e.json FROM outbox o"
                " JOIN events e ON e.seq = o.event_seq"
                " WHERE o.sink = ? AND o.status = 'pending' ORDER BY o.id LIMIT ?",
                (sink, limit),
            ).fetchall()
        return [
            OutboxItem(id=r[0], sink=r[1], attempts=r[2], last_error=r[3], event=json.loads(r[4]))
            for r in rows
        ]

    def mark_delivered(self, ids: Sequence[int]) -> None:
        with self._transaction() as db:
            db.executemany(
                "UPDATE outbox SET status = 'delivered', attempts = attempts + 1, last_error = NULL,"
                " updated_at = ? WHERE id = ?",
                [(time.time(), i) for i in ids],
            )

    def mark_failed(self, id: int, error: str) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, updated_at = ? WHERE id = ?",
                (error[:2000], time.time(), id),
            )

    # ---- queries ---------------------------------------------------------------------------------

    def events(
        self, camera: str | None = None, limit: int = 1000, event_id: str | None = None
    ) -> list[StoredEvent]:
        """Stored messages in insertion order, optionally of one camera or one event id."""
        where, args = [], []
        if camera is not None:
            where.append("camera = ?")
            args.append(camera)
        if event_id is not None:
            where.append("event_id = ?")
            args.append(event_id)
        sql = "SELECT seq, event_id, kind, camera, track_id, class_name, peak_score, json FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq LIMIT ?"
        with self._transaction() as db:
            rows = db.execute(sql, (*args, limit)).fetchall()
        return [StoredEvent(*r[:7], json=json.loads(r[7])) for r in rows]

    def count(self, table: str = "events") -> int:
        if table not in ("events", "outbox"):
            raise ValueError(f"unknown table {table!r}: expected events or outbox")
        with self._transaction() as db:
            return int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    def pragma(self, name: str) -> str:
        """A PRAGMA's current value (journal_mode, synchronous, ...), for checks and diagnostics."""
        if not name.isidentifier():
            raise ValueError(f"not a pragma name: {name!r}")
        with self._transaction() as db:
            return str(db.execute(f"PRAGMA {name}").fetchone()[0])

    # ---- lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._db is None:
                raise ValueError(f"event store {self.path} is closed")
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
