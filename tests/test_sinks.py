"""JSONL and SQLite event sinks on real files: round trip, WAL, outbox order, concurrent writers."""

from __future__ import annotations

import io
import json
import sqlite3
import threading
from pathlib import Path

import pytest

from pipeline.packets import Event, Reason
from pipeline.sinks.jsonl import JsonlSink
from pipeline.sinks.sqlite import SqliteEventStore


def make_event(i: int, kind: str = "new", camera: str = "cam", box: float = 10.0) -> Event:
    return Event(
        id=f"{camera}-{i // 3}",
        kind=kind,  # type: ignore[arg-type]
        camera=camera,
        start_time=1.0 * i,
        end_time=1.0 * i + 0.5,
        start_frame=10 * i,
        end_frame=10 * i + 5,
        track_id=i,
        class_name="bicycle",
        box=(box, 20.0, 30.5, 80.25),
        trajectory=((1.0 * i, box, 20.0, 30.5, 80.25),),
        score=4.25,
        peak_score=5.5 + i,
        reasons=(Reason("speed", "3.4 h/s", "0.9 ± 0.3", 5.5, "moves 3.8x faster than people here"),),
        snapshot_path=f"var/media/{camera}-{i}.jpg",
        clip_path=None,
        created_at=1700000000.0 + i,
    )


# ---- JSONL ---------------------------------------------------------------------------------------


def test_jsonl_file_round_trip_flushed_per_write(tmp_path: Path) -> None:
    path = tmp_path / "out" / "events.jsonl"
    sink = JsonlSink(path)
    events = [make_event(i) for i in range(3)]
    sink.write(events[:2])
    # flushed at once: another reader sees the lines before close
    assert [json.loads(line) for line in path.read_text().splitlines()] == [e.to_json() for e in events[:2]]
    sink.write(events[2:])
    sink.close()
    sink.close()  # idempotent
    lines = path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [e.to_json() for e in events]
    with pytest.raises(ValueError, match="after close"):
        sink.write(events)


def test_jsonl_stdout_mode_writes_one_line_per_event() -> None:
    stream = io.StringIO()
    sink = JsonlSink("-", stream=stream)
    sink.write([make_event(0, "new"), make_event(1, "end")])
    sink.close()
    rows = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [r["kind"] for r in rows] == ["new", "end"]
    assert rows[0]["reasons"][0]["attribute"] == "speed"


def test_jsonl_appends_to_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    for i in range(2):
        sink = JsonlSink(path)
        sink.write([make_event(i)])
        sink.close()
    assert len(path.read_text().splitlines()) == 2


# ---- SQLite --------------------------------------------------------------------------------------


def test_sqlite_round_trip_and_columns(tmp_path: Path) -> None:
    path = tmp_path / "db" / "events.db"
    store = SqliteEventStore(path)
    events = [make_event(i, camera=c) for i, c in enumerate(["a", "b", "a"])]
    store.write(events)
    store.close()

    store = SqliteEventStore(path)  # reopened: persisted
    stored = store.events()
    assert [s.json for s in stored] == [e.to_json() for e in events]
    assert [s.camera for s in store.events(camera="a")] == ["a", "a"]
    assert [s.seq for s in stored] == sorted(s.seq for s in stored)
    raw = sqlite3.connect(path)
    row = raw.execute(
        "SELECT event_id, kind, camera, track_id, class_name, x1, y1, x2, y2, peak_score, reasons,"
        " snapshot_path, clip_path, start_frame, end_frame FROM events ORDER BY seq LIMIT 1"
    ).fetchone()
    raw.close()
    assert row[:10] == ("a-0", "new", "a", 0, "bicycle", 10.0, 20.0, 30.5, 80.25, 5.5)
    assert json.loads(row[10])[0]["attribute"] == "speed"
    assert row[11:] == ("var/media/a-0.jpg", None, 0, 5)
    store.close()


def test_sqlite_uses_wal_and_synchronous_normal(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    store = SqliteEventStore(path)
    store.write([make_event(0)])
    assert store.pragma("journal_mode") == "wal"
    assert store.pragma("synchronous") == "1"  # NORMAL
    assert (tmp_path / "events.db-wal").exists()
    # a second connection (e.g. `sqlite3 var/events.db` or a dashboard) reads while the store is open
    reader = sqlite3.connect(path)
    assert reader.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert reader.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 1
    reader.close()
    store.close()


def test_sqlite_write_is_one_transaction(tmp_path: Path) -> None:
    store = SqliteEventStore(tmp_path / "events.db", outbox_sinks=("webhook",))
    bad = make_event(1, box=float("nan"))  # SQLite stores NaN as NULL: violates NOT NULL
    with pytest.raises(sqlite3.IntegrityError):
        store.write([make_event(0), bad])
    assert store.count("events") == 0 and store.count("outbox") == 0
    store.write([make_event(2)])
    assert store.count("events") == 1 and store.count("outbox") == 1
    store.close()


def test_outbox_rows_per_sink_in_insertion_order(tmp_path: Path) -> None:
    store = SqliteEventStore(tmp_path / "events.db", outbox_sinks=("webhook", "mqtt"))
    kinds = ["new", "update", "end", "new", "end"]
    store.write([make_event(i, k) for i, k in enumerate(kinds[:2])])
    store.write([make_event(i, k) for i, k in enumerate(kinds[2:], start=2)])
    assert store.count("outbox") == 2 * len(kinds)

    pending = store.pending("webhook", limit=10)
    assert [p.event["track_id"] for p in pending] == [0, 1, 2, 3, 4]
    assert [p.id for p in pending] == sorted(p.id for p in pending)
    assert all(p.attempts == 0 and p.last_error is None for p in pending)

    store.mark_delivered([pending[0].id, pending[1].id])
    store.mark_failed(pending[2].id, "connection refused")
    store.mark_failed(pending[2].id, "HTTP 503")
    after = store.pending("webhook", limit=2)
    assert [p.event["track_id"] for p in after] == [2, 3]  # the failed one stays first in line
    assert (after[0].attempts, after[0].last_error) == (2, "HTTP 503")
    assert [p.event["track_id"] for p in store.pending("mqtt")] == [0, 1, 2, 3, 4]  # independent per sink
    assert store.pending("nobody") == []
    store.close()


def test_concurrent_writers_threads_and_connections(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    shared = SqliteEventStore(path, outbox_sinks=("webhook",))
    other = SqliteEventStore(path, outbox_sinks=("webhook",))  # a second connection on the same file
    writers, per_writer = 4, 40
    errors: list[BaseException] = []

    def work(w: int) -> None:
        store = shared if w % 2 == 0 else other
        try:
            for i in range(per_writer):
                store.write([make_event(i, camera=f"w{w}")])
                if i % 10 == 0:
                    store.pending("webhook", limit=5)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert shared.count("events") == writers * per_writer
    assert shared.count("outbox") == writers * per_writer
    for w in range(writers):  # each writer's messages are stored in its own order
        assert [s.track_id for s in shared.events(camera=f"w{w}")] == list(range(per_writer))
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    raw.close()
    shared.close()
    other.close()


def test_closed_store_refuses_writes(tmp_path: Path) -> None:
    store = SqliteEventStore(tmp_path / "events.db")
    store.close()
    store.close()
    with pytest.raises(ValueError, match="closed"):
        store.write([make_event(0)])


# ---- factory -------------------------------------------------------------------------------------


def test_factory_builds_the_configured_sinks_and_no_delivery_without_network_sinks(tmp_path: Path) -> None:
    from pipeline.config import VigilConfig
    from pipeline.metrics import Metrics
    from pipeline.sinks.factory import make_delivery, make_sinks

    config = VigilConfig.model_validate({"sinks": {"sqlite": {"path": str(tmp_path / "events.db")}}})
    sinks = make_sinks(config, io.StringIO())
    try:
        assert [type(s) for s in sinks] == [JsonlSink, SqliteEventStore]
        assert sinks[1].outbox_sinks == ()  # type: ignore[attr-defined]
    finally:
        for sink in sinks:
            sink.close()
    assert make_delivery(config, ["cam"], Metrics()) is None


def test_network_sinks_need_the_sqlite_outbox() -> None:
    from pipeline.config import VigilConfig
    from pipeline.errors import ConfigError
    from pipeline.metrics import Metrics
    from pipeline.sinks.factory import make_delivery

    config = VigilConfig.model_validate(
        {"sinks": {"sqlite": {"enabled": False}, "webhook": {"enabled": True, "url": "http://127.0.0.1:9/"}}}
    )
    with pytest.raises(ConfigError, match=r"sinks.webhook: .* enable sinks.sqlite"):
        make_delivery(config, ["cam"], Metrics())
