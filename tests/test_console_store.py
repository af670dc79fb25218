"""The event store's console tables on real SQLite files: one `alerts` row per event kept in step with its
messages, reviews as audited messages that reach the network sinks, the migration of version-1 files,
and the inbox paged by key (ties included) under every filter."""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.console.alerts import AlertFilter, AlertReader
from pipeline.errors import VigilError
from pipeline.packets import Event, Reason
from pipeline.sinks.sqlite import SCHEMA, SqliteEventStore

T0 = 1_700_000_000.0
SINKS = ("mqtt", "webhook")


def reason(attribute: str, score: float = 4.0) -> Reason:
    return Reason(attribute, "3.1", "1.0 ± 0.2", score, f"{attribute} is unusual here")


def event(
    event_id: str,
    kind: str = "new",
    *,
    camera: str = "gate",
    at: float = T0,
    peak: float = 5.0,
    reasons: tuple[str, ...] = ("speed",),
    snapshot: str | None = None,
    clip: str | None = None,
    track_id: int = 7,
) -> Event:
    return Event(
        id=event_id,
        kind=kind,  # type: ignore[arg-type]
        camera=camera,
        start_time=at - T0,
        end_time=at - T0 + 1.0,
        start_frame=10,
        end_frame=20,
        track_id=track_id,
        class_name="person",
        box=(10.0, 20.0, 30.0, 80.0),
        trajectory=((at - T0, 10.0, 20.0, 30.0, 80.0),),
        score=peak - 1.0,
        peak_score=peak,
        reasons=tuple(reason(a, 5.0 - i) for i, a in enumerate(reasons)),
        snapshot_path=snapshot,
        clip_path=clip,
        created_at=at,
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteEventStore]:
    s = SqliteEventStore(tmp_path / "events.db", outbox_sinks=SINKS)
    yield s
    s.close()


@pytest.fixture
def reader(store: SqliteEventStore) -> Iterator[AlertReader]:
    r = AlertReader(store.path)
    yield r
    r.close()


def raw(path: Path, sql: str, args: tuple = ()) -> list[tuple]:
    db = sqlite3.connect(path)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


# ---- one alerts row per event --------------------------------------------------------------------


def test_new_update_end_keep_one_alert_row(store: SqliteEventStore, reader: AlertReader) -> None:
    store.write([event("e1", "new", at=T0, peak=5.0, reasons=("speed", "size"), snapshot="s.jpg")])
    first = reader.get("e1")
    assert first is not None
    assert (first.is_open, first.peak_score, first.top_reason) == (True, 5.0, "speed")
    assert first.reasons == ("size", "speed")
    assert (first.first_seen, first.last_seen, first.snapshot_path, first.clip_path) == (
        T0,
        T0,
        "s.jpg",
        None,
    )

    store.write([event("e1", "update", at=T0 + 2, peak=7.5, reasons=("pose", "speed"))])
    mid = reader.get("e1")
    assert mid is not None and mid.is_open and mid.peak_score == 7.5 and mid.top_reason == "pose"
    assert mid.snapshot_path == "s.jpg"  # a message without a snapshot keeps the recorded one

    # the end's peak is lower than the update's: the alert keeps the maximum
    store.write([event("e1", "end", at=T0 + 5, peak=6.0, reasons=("pose",), clip="c.mp4")])
    last = reader.get("e1")
    assert last is not None
    assert (last.is_open, last.peak_score, last.top_reason) == (False, 7.5, "pose")
    assert last.reasons == ("pose", "size", "speed")  # every reason any message gave
    assert (last.first_seen, last.last_seen) == (T0, T0 + 5)
    assert (last.snapshot_path, last.clip_path) == ("s.jpg", "c.mp4")
    assert last.last_seq == max(s.seq for s in store.events(event_id="e1"))

    assert raw(store.path, "SELECT COUNT(*) FROM alerts") == [(1,)]
    assert raw(store.path, "SELECT attribute FROM alert_reasons WHERE event_id = 'e1' ORDER BY 1") == [
        ("pose",),
        ("size",),
        ("speed",),
    ]
    assert raw(store.path, "SELECT is_open, end_time FROM alerts") == [(0, 6.0)]
    assert reader.message("e1")["kind"] == "end"  # type: ignore[index]


def test_a_message_without_reasons_keeps_the_top_reason(store: SqliteEventStore, reader: AlertReader) -> None:
    store.write([event("e1", "new", reasons=("dwell",)), event("e1", "end", at=T0 + 1, reasons=())])
    row = reader.get("e1")
    assert row is not None and row.top_reason == "dwell" and not row.is_open


def test_events_of_one_write_index_separately(store: SqliteEventStore, reader: AlertReader) -> None:
    store.write([event("a", camera="gate", at=T0), event("b", camera="hall", at=T0 + 1), event("a", "end")])
    a, b = reader.get("a"), reader.get("b")
    assert a is not None and b is not None
    assert (a.camera, a.is_open, b.camera, b.is_open) == ("gate", False, "hall", True)
    assert reader.cameras() == ["gate", "hall"]
    assert reader.counts_since(T0 + 0.5) == {"hall": 1}
    assert reader.timeline("hall", T0) == [(T0 + 1, T0 + 1, 5.0)]


# ---- reviews -------------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["acknowledged", "false_alarm", "normal_here"])
def test_review_is_audited_stated_and_sent_to_the_network_sinks(
    store: SqliteEventStore, reader: AlertReader, action: str
) -> None:
    store.write([event("e1", "new", peak=5.0), event("e1", "update", at=T0 + 1, peak=6.0)])
    before = reader.last_seq()
    version = 3 if action == "normal_here" else None
    audit = store.review("e1", action, "alice", model_version=version, at=T0 + 10)

    (row,) = reader.reviews("e1")
    assert (row.id, row.event_id, row.camera, row.action, row.user, row.at) == (
        audit, "e1", "gate", action, "alice", T0 + 10
    )  # fmt: skip
    assert (row.model_version, row.undone_at, row.undone_by) == (version, None, None)

    alert = reader.get("e1")
    assert alert is not None and (alert.review, alert.reviewed_by) == (action, "alice")
    assert raw(store.path, "SELECT reviewed_at FROM alerts") == [(T0 + 10,)]
    assert alert.is_open and alert.peak_score == 6.0  # a review is not a lifecycle message
    assert [a.event_id for a in reader.changed_since(before)] == ["e1"]  # the console's stream sees it

    stored = store.events(event_id="e1")
    assert [s.kind for s in stored] == ["new", "update", "review"]
    message = stored[-1].json
    assert message["kind"] == "review"
    assert message["review"] == {"action": action, "by": "alice", "at": T0 + 10, "model_version": version}
    latest = stored[1].json
    assert {k: v for k, v in message.items() if k not in ("kind", "review", "created_at")} == {
        k: v for k, v in latest.items() if k not in ("kind", "created_at")
    }
    assert reader.message("e1") == latest  # the alert's message stays its latest lifecycle message

    for sink in SINKS:  # MQTT and webhook subscribers get the review like any message
        pending = store.pending(sink)
        assert [p.event["kind"] for p in pending] == ["new", "update", "review"]
        assert pending[-1].event["review"]["action"] == action  # type: ignore[index]


def test_a_later_message_keeps_the_review(store: SqliteEventStore, reader: AlertReader) -> None:
    store.write([event("e1")])
    store.review("e1", "false_alarm", "bob")
    store.write([event("e1", "end", at=T0 + 3)])
    alert = reader.get("e1")
    assert alert is not None and (alert.review, alert.reviewed_by, alert.is_open) == (
        "false_alarm",
        "bob",
        False,
    )
    store.review("e1", "acknowledged", "alice")  # reviewing again takes the latest lifecycle message
    assert store.events(event_id="e1")[-1].json["end_time"] == 4.0


@pytest.mark.parametrize(
    ("event_id", "action", "error"),
    [
        ("nobody", "acknowledged", "no event 'nobody'"),
        ("e1", "approve", "unknown action 'approve'"),
        ("e1", "", "unknown action ''"),
    ],
)
def test_a_review_of_an_unknown_event_or_action_is_refused_and_writes_nothing(
    store: SqliteEventStore, reader: AlertReader, event_id: str, action: str, error: str
) -> None:
    store.write([event("e1")])
    with pytest.raises(VigilError, match=error):
        store.review(event_id, action, "alice")
    assert (store.count("events"), store.count("outbox")) == (1, len(SINKS))
    assert reader.reviews() == []
    alert = reader.get("e1")
    assert alert is not None and alert.review is None


def test_undo_normal_here_clears_the_state_and_marks_the_audit_row(
    store: SqliteEventStore, reader: AlertReader
) -> None:
    store.write([event("e1")])
    store.review("e1", "acknowledged", "bob", at=T0 + 1)
    taught = store.review("e1", "normal_here", "alice", model_version=2, at=T0 + 2)
    undo = store.review("e1", "undo_normal_here", "carol", model_version=1, at=T0 + 3)

    alert = reader.get("e1")
    assert alert is not None and (alert.review, alert.reviewed_by) == (None, None)
    assert raw(store.path, "SELECT reviewed_at FROM alerts") == [(None,)]
    rows = {r.id: r for r in reader.reviews("e1")}
    assert [r.action for r in reader.reviews("e1")] == ["undo_normal_here", "normal_here", "acknowledged"]
    assert (rows[taught].undone_at, rows[taught].undone_by) == (T0 + 3, "carol")
    assert (rows[undo].undone_at, rows[undo].model_version) == (None, 1)
    assert all(r.undone_at is None for r in rows.values() if r.action == "acknowledged")
    assert [a.event_id for a in reader.page(AlertFilter(state="unreviewed"))[0]] == ["e1"]
    last = store.pending("mqtt")[-1].event
    assert (last["kind"], last["review"]["action"]) == ("review", "undo_normal_here")  # type: ignore[index]


# ---- migration from version 1 --------------------------------------------------------------------


def version1_schema() -> str:
    """The schema as version 1 wrote it: `events` allowing new/update/end only, no console tables."""
    old = SCHEMA[: SCHEMA.index("CREATE TABLE IF NOT EXISTS alerts")]
    old = old.replace(
        "CHECK (kind IN ('new', 'update', 'end', 'review'))", "CHECK (kind IN ('new', 'update', 'end'))"
    )
    assert "'review'" not in old and "alerts" not in old
    return old


def write_version1(path: Path, events: list[Event], user_version: int) -> None:
    """What version 1's `write` left behind: the messages, and one outbox row per sink, some delivered."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(version1_schema())
    db.execute(f"PRAGMA user_version = {user_version}")
    for i, e in enumerate(events):
        data = e.to_json()
        seq = db.execute(
            "INSERT INTO events (event_id, kind, camera, start_time, end_time, start_frame, end_frame,"
            " track_id, class_name, x1, y1, x2, y2, score, peak_score, reasons, snapshot_path, clip_path,"
            " created_at, json) VALUES (" + ",".join("?" * 20) + ")",
            (
                e.id, e.kind, e.camera, e.start_time, e.end_time, e.start_frame, e.end_frame, e.track_id,
                e.class_name, *e.box, e.score, e.peak_score, json.dumps(data["reasons"]), e.snapshot_path,
                e.clip_path, e.created_at, json.dumps(data),
            ),
        ).lastrowid  # fmt: skip
        for sink in SINKS:
            delivered = sink == "mqtt" and i < 2
            db.execute(
                "INSERT INTO outbox (event_seq, sink, status, attempts, last_error, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (seq, sink, "delivered" if delivered else "pending", 1, None if delivered else "refused", T0),
            )
    db.close()


@pytest.mark.parametrize("user_version", [0, 1])
def test_a_version1_file_is_migrated_keeping_every_row(tmp_path: Path, user_version: int) -> None:
    path = tmp_path / "events.db"
    old = [
        event("a", "new", at=T0, peak=4.0, reasons=("speed",), snapshot="a.jpg"),
        event("b", "new", camera="hall", at=T0 + 1, reasons=("size",)),
        event("a", "update", at=T0 + 2, peak=9.0, reasons=("pose", "speed")),
        event("a", "end", at=T0 + 3, peak=8.0, reasons=("pose",), clip="a.mp4"),
    ]
    write_version1(path, old, user_version)
    events_before = raw(path, "SELECT * FROM events ORDER BY seq")
    outbox_before = raw(path, "SELECT * FROM outbox ORDER BY id")
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):  # the old CHECK: what the migration is for
        raw(path, "UPDATE events SET kind = 'review' WHERE seq = 1")

    store = SqliteEventStore(path, outbox_sinks=SINKS)
    try:
        assert raw(path, "SELECT * FROM events ORDER BY seq") == events_before
        assert raw(path, "SELECT * FROM outbox ORDER BY id") == outbox_before
        assert raw(path, "PRAGMA foreign_key_check") == []
        assert raw(path, "PRAGMA integrity_check") == [("ok",)]
        assert raw(path, "PRAGMA user_version") == [(2,)]
        indexes = {r[0] for r in raw(path, "SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"events_camera", "events_event_id", "outbox_pending", "alerts_recent"} <= indexes
        # the outbox still joins its messages: the pending ones, in order, per sink
        assert [(p.event["id"], p.event["kind"]) for p in store.pending("mqtt")] == [
            ("a", "update"),
            ("a", "end"),
        ]
        assert [p.event for p in store.pending("webhook")] == [e.to_json() for e in old]

        reader = AlertReader(path)
        try:
            a, b = reader.get("a"), reader.get("b")
            assert a is not None and b is not None
            assert (a.is_open, a.peak_score, a.top_reason, a.first_seen, a.last_seen) == (
                False, 9.0, "pose", T0, T0 + 3
            )  # fmt: skip
            assert a.reasons == ("pose", "speed") and (a.snapshot_path, a.clip_path) == ("a.jpg", "a.mp4")
            assert (b.camera, b.is_open, b.reasons) == ("hall", True, ("size",))
            assert [r.event_id for r in reader.page(AlertFilter())[0]] == ["b", "a"]

            # the migrated table takes reviews, and new messages go on after the old ones
            store.review("a", "false_alarm", "alice")
            store.write([event("c", at=T0 + 4)])
            seqs = [s.seq for s in store.events()]
            assert seqs == sorted(seqs) and seqs[:4] == [r[0] for r in events_before]
            assert [p.event["kind"] for p in store.pending("mqtt")][-2:] == ["review", "new"]
            a = reader.get("a")
            assert a is not None and a.review == "false_alarm"
        finally:
            reader.close()
    finally:
        store.close()

    again = SqliteEventStore(path)  # reopening a migrated file changes nothing
    try:
        assert again.count("events") == len(old) + 2
        assert raw(path, "SELECT COUNT(*) FROM alerts") == [(3,)]
    finally:
        again.close()


# ---- paging the inbox ----------------------------------------------------------------------------

CAMERAS = ("gate", "hall", "yard")
REASONS = ("speed", "size", "pose", "dwell")


@dataclass(frozen=True)
class Made:
    event_id: str
    camera: str
    first_seen: float
    reasons: frozenset[str]
    is_open: bool
    review: str | None


@pytest.fixture(scope="module")
def inbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AlertReader, list[Made]]]:
    """250 events over 3 cameras; first_seen values repeat in runs of up to 4 (ties across cameras)."""
    path = tmp_path_factory.mktemp("inbox") / "events.db"
    store = SqliteEventStore(path)
    made: list[Made] = []
    batch: list[Event] = []
    for i in range(250):
        camera = CAMERAS[(i * 7) % 3]
        event_id = f"{camera}-{(i * 37) % 250:03d}"  # ids not in time order
        at = T0 + (i // 4) * 10 + (0.5 if i % 9 == 0 else 0.0)  # runs of up to 4 equal times
        reasons = tuple(REASONS[(i + k) % 4] for k in range(1 + i % 3))
        batch.append(event(event_id, "new", camera=camera, at=at, reasons=reasons, track_id=i))
        ended = i % 3 == 0
        if ended:
            batch.append(event(event_id, "end", camera=camera, at=at + 2, reasons=reasons, track_id=i))
        made.append(Made(event_id, camera, at, frozenset(reasons), not ended, None))
        if len(batch) > 40:
            store.write(batch)
            batch = []
    store.write(batch)
    for k, m in enumerate(made):
        if k % 4 == 1:
            action = "false_alarm" if k % 8 == 1 else "acknowledged"
            store.review(m.event_id, action, "alice")
            made[k] = Made(m.event_id, m.camera, m.first_seen, m.reasons, m.is_open, action)
    reader = AlertReader(path)
    assert len({m.event_id for m in made}) == 250
    assert len({m.first_seen for m in made}) < 100  # many ties
    yield reader, made
    reader.close()
    store.close()


def expected(made: list[Made], f: AlertFilter) -> list[str]:
    keep = [
        m
        for m in made
        if (f.camera is None or m.camera == f.camera)
        and (f.reason is None or f.reason in m.reasons)
        and (f.since is None or m.first_seen >= f.since)
        and (f.until is None or m.first_seen < f.until)
        and (
            f.state is None
            or (f.state == "open" and m.is_open)
            or (f.state == "ended" and not m.is_open)
            or (f.state == "unreviewed" and m.review is None)
            or m.review == f.state
        )
    ]
    return [m.event_id for m in sorted(keep, key=lambda m: (m.first_seen, m.event_id), reverse=True)]


@pytest.mark.parametrize(
    "filters",
    [
        AlertFilter(),
        AlertFilter(camera="hall"),
        AlertFilter(reason="pose"),
        AlertFilter(state="open"),
        AlertFilter(state="ended"),
        AlertFilter(state="unreviewed"),
        AlertFilter(state="false_alarm"),
        AlertFilter(state="acknowledged", camera="gate"),
        AlertFilter(since=T0 + 200, until=T0 + 400),
        AlertFilter(since=T0 + 300),  # exactly a first_seen value: included
        AlertFilter(camera="yard", reason="dwell", state="ended", until=T0 + 500),
        AlertFilter(camera="nowhere"),
    ],
    ids=lambda f: ",".join(f"{k}={v}" for k, v in vars(f).items() if v is not None) or "all",
)
def test_paging_returns_every_alert_once_newest_first(
    inbox: tuple[AlertReader, list[Made]], filters: AlertFilter
) -> None:
    reader, made = inbox
    want = expected(made, filters)
    got: list[str] = []
    pages = 0
    cursor: str | None = None
    while True:
        rows, cursor = reader.page(filters, 40, cursor)
        pages += 1
        assert len(rows) <= 40
        got += [r.event_id for r in rows]
        if cursor is None:
            break
        assert len(rows) == 40 and pages < 20
    assert got == want
    assert pages == max(1, math.ceil(len(want) / 40))
    if filters.since == T0 + 300:  # the boundary is really tested
        assert any(m.first_seen == T0 + 300 for m in made)


def test_ties_on_first_seen_are_split_by_event_id_across_a_page_boundary(tmp_path: Path) -> None:
    store = SqliteEventStore(tmp_path / "events.db")
    store.write([event(f"e{i}", at=T0) for i in range(5)])
    reader = AlertReader(store.path)
    try:
        first, cursor = reader.page(AlertFilter(), 2)
        second, cursor2 = reader.page(AlertFilter(), 2, cursor)
        third, cursor3 = reader.page(AlertFilter(), 2, cursor2)
        assert [[r.event_id for r in p] for p in (first, second, third)] == [
            ["e4", "e3"],
            ["e2", "e1"],
            ["e0"],
        ]
        assert cursor3 is None
    finally:
        reader.close()
        store.close()


@pytest.mark.parametrize("cursor", ["nonsense", ":e1", "abc:e1"])
def test_a_bad_cursor_is_a_vigil_error(reader: AlertReader, cursor: str) -> None:
    with pytest.raises(VigilError, match="bad page cursor"):
        reader.page(AlertFilter(), 10, cursor)


def test_an_unknown_state_is_refused() -> None:
    with pytest.raises(VigilError, match="unknown state 'closed'"):
        AlertFilter(state="closed")


@pytest.mark.parametrize("deleted", [(4,), (3, 4), (1, 2, 3, 4)])
def test_migration_never_reuses_a_seq(tmp_path: Path, deleted: tuple[int, ...]) -> None:
    """Rows deleted before the migration (the newest, or all) keep their seq numbers used: a stream
    that had seen seq N must see the next message as > N."""
    path = tmp_path / "events.db"
    write_version1(path, [event(f"e{i}", "new", at=T0 + i) for i in range(4)], 1)
    db = sqlite3.connect(path, isolation_level=None)
    marks = ",".join("?" * len(deleted))
    db.execute(f"DELETE FROM outbox WHERE event_seq IN ({marks})", deleted)
    db.execute(f"DELETE FROM events WHERE seq IN ({marks})", deleted)
    db.close()
    store = SqliteEventStore(path, outbox_sinks=SINKS)
    try:
        store.write([event("new", "new", at=T0 + 10)])
        assert raw(path, "SELECT seq FROM events WHERE event_id = 'new'") == [(5,)]
    finally:
        store.close()


def test_frame_scores_kept_and_read_per_camera_since(tmp_path: Path) -> None:
    """The console's score history: what the live view sampled, per camera, from a given time."""
    from pipeline.console.live import LiveView

    live = LiveView()
    store = SqliteEventStore(tmp_path / "events.db")
    reader = AlertReader(tmp_path / "events.db")
    try:
        assert live.take_scores() == []
        store.record_scores([("a", T0, 1.5), ("b", T0 + 1, 2.0), ("a", T0 + 2, 4.0)])
        assert reader.scores("a", T0 + 1) == [(T0 + 2, 4.0)]
        assert reader.scores("a", 0) == [(T0, 1.5), (T0 + 2, 4.0)]
        assert reader.scores("c", 0) == []
    finally:
        reader.close()
        store.close()
