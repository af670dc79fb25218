"""The embedded event store: every event lifecycle message in SQLite, plus an outbox for network sinks.

A network sink that is down must not lose events, so `write` records each message once in `events`
and, in the same transaction, one `outbox` row per network sink. Those sinks drain their rows with
`pending` / `mark_delivered` / `mark_failed`, in insertion order, whenever they can reach their
target. WAL mode lets the CLI (or the console) read while the pipeline writes; one connection
shared behind a lock makes the store safe to use from any thread.

`alerts` keeps one row per event (its latest state, review and top reason) and `alert_reasons` the
attributes of its reasons, updated in the same transaction as each message, so the console pages
100,000 events by key without reading their messages. A review (`review`) is a message too: kind
'review' in `events`, queued for the network sinks like any other, so MQTT and webhook subscribers
see it; `reviews` keeps every action with who and when (the audit). `frame_scores` keeps each running
camera's frame score about once a second, for the console's camera page.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import VigilError
from pipeline.packets import Event
from pipeline.sinks.base import EventSink
from pipeline.sqlite_shared import SharedConnection

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id      TEXT    NOT NULL,
    kind          TEXT    NOT NULL CHECK (kind IN ('new', 'update', 'end', 'review')),
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
CREATE TABLE IF NOT EXISTS alerts (
    event_id      TEXT    PRIMARY KEY,
    camera        TEXT    NOT NULL,
    track_id      INTEGER NOT NULL,
    class_name    TEXT    NOT NULL,
    start_time    REAL    NOT NULL,
    end_time      REAL    NOT NULL,
    first_seen    REAL    NOT NULL,
    last_seen     REAL    NOT NULL,
    peak_score    REAL    NOT NULL,
    top_reason    TEXT,
    is_open       INTEGER NOT NULL,
    snapshot_path TEXT,
    clip_path     TEXT,
    review        TEXT,
    reviewed_by   TEXT,
    reviewed_at   REAL,
    last_seq      INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_recent ON alerts (first_seen, event_id);
CREATE INDEX IF NOT EXISTS alerts_camera ON alerts (camera, first_seen, event_id);
CREATE INDEX IF NOT EXISTS alerts_changed ON alerts (last_seq);
CREATE TABLE IF NOT EXISTS alert_reasons (
    event_id  TEXT NOT NULL,
    attribute TEXT NOT NULL,
    PRIMARY KEY (event_id, attribute)
);
CREATE INDEX IF NOT EXISTS alert_reasons_attribute ON alert_reasons (attribute, event_id);
CREATE TABLE IF NOT EXISTS reviews (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id      TEXT    NOT NULL,
    camera        TEXT    NOT NULL,
    action        TEXT    NOT NULL,
    user          TEXT    NOT NULL,
    at            REAL    NOT NULL,
    model_version INTEGER,
    undone_at     REAL,
    undone_by     TEXT
);
CREATE INDEX IF NOT EXISTS reviews_event ON reviews (event_id, id);
CREATE TABLE IF NOT EXISTS frame_scores (
    camera TEXT NOT NULL,
    at     REAL NOT NULL,
    score  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS frame_scores_camera ON frame_scores (camera, at);
"""

#: what an operator can say about an alert; "undo_normal_here" takes a "normal here" back
REVIEW_ACTIONS = ("acknowledged", "false_alarm", "normal_here", "undo_normal_here")
#: the schema this code writes (PRAGMA user_version); older files are migrated on open
SCHEMA_VERSION = 2


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
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=timeout_s, check_same_thread=False, isolation_level=None)
            self._conn = SharedConnection(db, f"event store {self.path}")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            _migrate(db)
            db.executescript(SCHEMA)
            if int(db.execute("PRAGMA user_version").fetchone()[0]) < SCHEMA_VERSION:
                with self._conn.transaction() as db:
                    _index_existing(db)
                    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except (sqlite3.Error, OSError) as exc:
            raise VigilError(f"event store {self.path}: cannot open: {exc}") from exc

    # ---- writing ---------------------------------------------------------------------------------

    def write(self, events: Sequence[Event]) -> None:
        """Record `events` (and their outbox rows) in one transaction: all or none."""
        if not events:
            return
        now = time.time()
        with self._conn.transaction() as db:
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
                _index_message(db, int(cursor.lastrowid or 0), data)

    def review(
        self, event_id: str, action: str, user: str, model_version: int | None = None, at: float | None = None
    ) -> int:
        """Record an operator's `action` on an event: the audit row, the alert's review state, and a
        'review' message (the event's latest message with a `review` part) for the network sinks.
        Returns the audit row's id. VigilError when the event is unknown or the action is not one of
        REVIEW_ACTIONS."""
        if action not in REVIEW_ACTIONS:
            raise VigilError(
                f"review: unknown action {action!r}; expected one of {', '.join(REVIEW_ACTIONS)}"
            )
        at = time.time() if at is None else at
        with self._conn.transaction() as db:
            row = db.execute(
                "SELECT json FROM events WHERE event_id = ? AND kind != 'review' ORDER BY seq DESC LIMIT 1",
                (event_id,),
            ).fetchone()
            if row is None:
                raise VigilError(f"review: no event {event_id!r} in {self.path}")
            data = json.loads(row[0])
            audit = db.execute(
                "INSERT INTO reviews (event_id, camera, action, user, at, model_version)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (event_id, data["camera"], action, user, at, model_version),
            ).lastrowid
            if action == "undo_normal_here":
                db.execute(
                    "UPDATE reviews SET undone_at = ?, undone_by = ? WHERE event_id = ? AND"
                    " action = 'normal_here' AND undone_at IS NULL",
                    (at, user, event_id),
                )
            state = None if action == "undo_normal_here" else action
            data["kind"] = "review"
            data["review"] = {"action": action, "by": user, "at": at, "model_version": model_version}
            data["created_at"] = at
            cursor = db.execute(
                "INSERT INTO events (event_id, kind, camera, start_time, end_time, start_frame, end_frame,"
                " track_id, class_name, x1, y1, x2, y2, score, peak_score, reasons, snapshot_path,"
                " clip_path, created_at, json) SELECT event_id, 'review', camera, start_time, end_time,"
                " start_frame, end_frame, track_id, class_name, x1, y1, x2, y2, score, peak_score, reasons,"
                " snapshot_path, clip_path, ?, ? FROM events WHERE event_id = ? AND kind != 'review'"
                " ORDER BY seq DESC LIMIT 1",
                (at, json.dumps(data, ensure_ascii=False), event_id),
            )
            seq = int(cursor.lastrowid or 0)
            db.executemany(
                "INSERT INTO outbox (event_seq, sink, updated_at) VALUES (?, ?, ?)",
                [(seq, sink, at) for sink in self.outbox_sinks],
            )
            db.execute(
                "UPDATE alerts SET review = ?, reviewed_by = ?, reviewed_at = ?, last_seq = ?"
                " WHERE event_id = ?",
                (state, None if state is None else user, None if state is None else at, seq, event_id),
            )
        return int(audit or 0)

    def record_scores(self, samples: Sequence[tuple[str, float, float]]) -> None:
        """Keep (camera, wall time, smoothed frame score) samples for the console's score history."""
        if samples:
            with self._conn.transaction() as db:
                db.executemany("INSERT INTO frame_scores (camera, at, score) VALUES (?, ?, ?)", samples)

    # ---- outbox ----------------------------------------------------------------------------------

    def pending(self, sink: str, limit: int = 100) -> list[OutboxItem]:
        """The oldest `limit` undelivered messages for `sink`, in insertion order."""
        with self._conn.transaction() as db:
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
        with self._conn.transaction() as db:
            db.executemany(
                "UPDATE outbox SET status = 'delivered', attempts = attempts + 1, last_error = NULL,"
                " updated_at = ? WHERE id = ?",
                [(time.time(), i) for i in ids],
            )

    def mark_failed(self, id: int, error: str) -> None:
        with self._conn.transaction() as db:
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
        with self._conn.transaction() as db:
            rows = db.execute(sql, (*args, limit)).fetchall()
        return [StoredEvent(*r[:7], json=json.loads(r[7])) for r in rows]

    def count(self, table: str = "events") -> int:
        if table not in ("events", "outbox"):
            raise ValueError(f"unknown table {table!r}: expected events or outbox")
        with self._conn.transaction() as db:
            return int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    def pragma(self, name: str) -> str:
        """A PRAGMA's current value (journal_mode, synchronous, ...), for checks and diagnostics."""
        if not name.isidentifier():
            raise ValueError(f"not a pragma name: {name!r}")
        with self._conn.transaction() as db:
            return str(db.execute(f"PRAGMA {name}").fetchone()[0])

    # ---- lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        self._conn.close()


def _index_message(db: sqlite3.Connection, seq: int, data: dict[str, object]) -> None:
    """Bring the event's `alerts` row and its `alert_reasons` up to date with one new/update/end message."""
    reasons = data.get("reasons") or []
    assert isinstance(reasons, list)
    top = str(reasons[0]["attribute"]) if reasons else None
    box_time = float(data.get("created_at") or 0.0) or time.time()
    db.execute(
        "INSERT INTO alerts (event_id, camera, track_id, class_name, start_time, end_time, first_seen,"
        " last_seen, peak_score, top_reason, is_open, snapshot_path, clip_path, last_seq)"
        " VALUES (:id, :camera, :track_id, :class_name, :start_time, :end_time, :at, :at, :peak, :top,"
        " :open, :snapshot, :clip, :seq)"
        " ON CONFLICT (event_id) DO UPDATE SET end_time = excluded.end_time, last_seen = excluded.last_seen,"
        " peak_score = MAX(alerts.peak_score, excluded.peak_score),"
        " top_reason = COALESCE(excluded.top_reason, alerts.top_reason), is_open = excluded.is_open,"
        " snapshot_path = COALESCE(excluded.snapshot_path, alerts.snapshot_path),"
        " clip_path = COALESCE(excluded.clip_path, alerts.clip_path), last_seq = excluded.last_seq",
        {
            "id": data["id"],
            "camera": data["camera"],
            "track_id": data["track_id"],
            "class_name": data["class_name"],
            "start_time": data["start_time"],
            "end_time": data["end_time"],
            "at": box_time,
            "peak": data["peak_score"],
            "top": top,
            "open": 0 if data["kind"] == "end" else 1,
            "snapshot": data.get("snapshot_path"),
            "clip": data.get("clip_path"),
            "seq": seq,
        },
    )
    db.executemany(
        "INSERT OR IGNORE INTO alert_reasons (event_id, attribute) VALUES (?, ?)",
        [(data["id"], str(r["attribute"])) for r in reasons],
    )


def _index_existing(db: sqlite3.Connection) -> None:
    """Fill `alerts` from the messages of a store written before it existed (schema version 1)."""
    for seq, text in db.execute(
        "SELECT seq, json FROM events WHERE kind != 'review' ORDER BY seq"
    ).fetchall():
        _index_message(db, int(seq), json.loads(text))


def _migrate(db: sqlite3.Connection) -> None:
    """Version 1 files allow only new/update/end in `events.kind`: rebuild the table with 'review'
    allowed (SQLite cannot change a CHECK in place), keeping every row, its seq and the outbox's links."""
    row = db.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'events'").fetchone()
    if row is None or "'review'" in row[0]:
        return
    db.execute("PRAGMA foreign_keys=OFF")
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            # SQLite's recipe: a new table, copied, the old dropped, the new renamed (the outbox's
            # REFERENCES events then names the new table)
            create = SCHEMA.split(";")[0]  # CREATE TABLE IF NOT EXISTS events (the current definition)
            # the AUTOINCREMENT high-water mark: a seq once used (rows since deleted) is never reused
            high = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
            db.execute(create.replace("IF NOT EXISTS events", "events_v2", 1))
            db.execute("INSERT INTO events_v2 SELECT * FROM events")
            db.execute("DROP TABLE events")
            db.execute("ALTER TABLE events_v2 RENAME TO events")
            if high is not None:
                kept = db.execute(
                    "UPDATE sqlite_sequence SET seq = MAX(seq, ?) WHERE name = 'events'", (int(high[0]),)
                ).rowcount
                if not kept:  # no rows copied: no entry for the new table yet
                    db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('events', ?)", high)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    finally:
        db.execute("PRAGMA foreign_keys=ON")
