"""Retention on a real SQLite event store and real media files: age, disk budget, what is never deleted."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.config import RetentionConfig
from pipeline.errors import VigilError
from pipeline.metrics import Metrics
from pipeline.packets import Event, Reason
from pipeline.retention import (
    Candidate,
    MediaFile,
    Retention,
    RetentionPolicy,
    RetentionReport,
    plan_deletions,
)
from pipeline.sinks.sqlite import SqliteEventStore

DAY = 86400.0
NOW = 1_800_000_000.0
SNAPSHOT_BYTES = 1000


# ---- the pure plan -------------------------------------------------------------------------------


def cand(
    event_id: str, days_ago: float, *files: tuple[str, int], is_open: bool = False, pending: bool = False
) -> Candidate:
    media = files or ((f"{event_id}.jpg", 100),)
    return Candidate(
        event_id, NOW - days_ago * DAY, is_open, pending, tuple(MediaFile(Path(p), s) for p, s in media)
    )


@pytest.mark.parametrize(
    ("policy", "candidates", "expected"),
    [
        pytest.param(RetentionPolicy(10 * DAY, None), [cand("a", 20), cand("b", 5)], ("a",), id="age"),
        pytest.param(
            RetentionPolicy(None, 250), [cand("c", 1), cand("a", 3), cand("b", 2)], ("a",), id="budget-one"
        ),
        pytest.param(
            RetentionPolicy(None, 100),
            [cand("c", 1), cand("a", 3), cand("b", 2)],
            ("a", "b"),
            id="budget-oldest-first",
        ),
        pytest.param(
            RetentionPolicy(10 * DAY, 150),
            [cand("d", 1), cand("c", 3), cand("b", 5), cand("a", 20)],
            ("a", "b", "c"),
            id="age-then-budget",
        ),
        pytest.param(
            RetentionPolicy(DAY, 0),
            [cand("open", 40, is_open=True), cand("b", 20), cand("pending", 30, pending=True)],
            ("b",),
            id="open-and-pending-kept-over-age-and-budget",
        ),
        pytest.param(
            RetentionPolicy(None, 150),
            [cand("a", 3, ("a.jpg", 50), ("clip.mp4", 100)), cand("b", 2, ("b.jpg", 50), ("clip.mp4", 100))],
            ("a",),  # 200 bytes; deleting a frees only its snapshot: the shared clip stays for b
            id="shared-clip-counted-once",
        ),
        pytest.param(
            RetentionPolicy(None, 40),
            [cand("a", 3, ("a.jpg", 50), ("clip.mp4", 100)), cand("b", 2, ("b.jpg", 50), ("clip.mp4", 100))],
            ("a", "b"),
            id="shared-clip-freed-with-last-event",
        ),
        pytest.param(
            RetentionPolicy(None, None), [cand("a", 400), cand("b", 300)], (), id="no-limits-keep-everything"
        ),
    ],
)
def test_plan(policy: RetentionPolicy, candidates: list[Candidate], expected: tuple[str, ...]) -> None:
    assert plan_deletions(candidates, policy, NOW) == expected


@pytest.mark.parametrize(
    ("config", "policy"),
    [
        (RetentionConfig(), RetentionPolicy(30 * DAY, None)),
        (RetentionConfig(days=1.5, max_disk_gb=2.5), RetentionPolicy(1.5 * DAY, 2_500_000_000)),
        (RetentionConfig(days=None), RetentionPolicy(None, None)),
    ],
)
def test_policy_from_config(config: RetentionConfig, policy: RetentionPolicy) -> None:
    assert RetentionPolicy.from_config(config) == policy


# ---- a real store and real files -----------------------------------------------------------------


class World:
    """A store with an MQTT outbox, a media folder, and events written the way the pipeline does."""

    def __init__(self, root: Path) -> None:
        self.db_path = root / "events.db"
        self.media = root / "media"
        self.store = SqliteEventStore(self.db_path, outbox_sinks=["mqtt"])
        self.held: set[str] = set()  # events whose MQTT delivery stays pending

    def add(
        self,
        event_id: str,
        last_seen: float,
        *,
        ended: bool = True,
        clip: str | None = None,
        clip_bytes: int = 0,
        obs: bool = False,
        delivered: bool = True,
    ) -> None:
        """One event (new, then end unless still open) with a snapshot of SNAPSHOT_BYTES, optionally a
        clip (named after another event when shared) and kept observations."""
        folder = self.media / "cam0"
        folder.mkdir(parents=True, exist_ok=True)
        snapshot = folder / f"{event_id}.jpg"
        snapshot.write_bytes(b"\xff" * SNAPSHOT_BYTES)
        clip_path = None
        if clip is not None:
            clip_path = folder / f"{clip}.mp4"
            if not clip_path.exists():
                clip_path.write_bytes(b"\0" * clip_bytes)
        if obs:
            (folder / f"{event_id}.obs.npz").write_bytes(b"\1" * 10)
        kinds = ["new", "end"] if ended else ["new"]
        self.store.write(
            [
                self.event(event_id, kind, last_seen - (len(kinds) - 1 - i), snapshot, clip_path)
                for i, kind in enumerate(kinds)
            ]
        )
        if not delivered:
            self.held.add(event_id)
        self.deliver()

    @staticmethod
    def event(event_id: str, kind: str, at: float, snapshot: Path, clip: Path | None) -> Event:
        return Event(
            id=event_id,
            kind=kind,  # type: ignore[arg-type]
            camera="cam0",
            start_time=1.0,
            end_time=2.0,
            start_frame=10,
            end_frame=20,
            track_id=7,
            class_name="bicycle",
            box=(10.0, 20.0, 30.0, 40.0),
            score=4.0,
            peak_score=5.0,
            reasons=(Reason("speed", "3.4 h/s", "0.9 ± 0.3", 5.0, "moves 3.8x faster than people here"),),
            snapshot_path=str(snapshot),
            clip_path=None if clip is None else str(clip),
            created_at=at,
        )

    def deliver(self) -> None:
        """Acknowledge every pending MQTT message but those of the held events."""
        items = self.store.pending("mqtt", limit=10_000)
        self.store.mark_delivered([item.id for item in items if item.event["id"] not in self.held])

    def retention(self, policy: RetentionPolicy, **kwargs: object) -> Retention:
        return Retention(self.db_path, self.media, policy, **kwargs)  # type: ignore[arg-type]

    def query(self, sql: str, *args: object) -> list[tuple]:
        with sqlite3.connect(self.db_path) as db:
            return db.execute(sql, args).fetchall()

    def alert_ids(self) -> set[str]:
        return {r[0] for r in self.query("SELECT event_id FROM alerts")}

    def files(self) -> set[str]:
        return {p.name for p in (self.media / "cam0").iterdir()}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.store.close()


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    """Records of vigil.retention, from any thread (a handler of its own: independent of propagation)."""
    out: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = out.append  # type: ignore[method-assign]
    logger = logging.getLogger("vigil.retention")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield out
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_age_deletes_rows_and_files_and_keeps_open_pending_and_reviews(world: World) -> None:
    world.add("old", NOW - 40 * DAY, obs=True)
    world.store.review("old", "false_alarm", "ana", at=NOW - 39 * DAY)
    world.deliver()
    world.add("recent", NOW - 5 * DAY)
    world.add("old-open", NOW - 50 * DAY, ended=False)
    world.add("old-pending", NOW - 45 * DAY, delivered=False)
    retention = world.retention(RetentionPolicy(30 * DAY, None))
    report = retention.run_once(now=NOW)
    retention.close()

    assert report == RetentionReport(
        events_deleted=1,
        bytes_freed=SNAPSHOT_BYTES + 10,
        events_kept=3,
        media_bytes=3 * SNAPSHOT_BYTES,
        oldest_kept=NOW - 50 * DAY,
    )
    assert world.alert_ids() == {"recent", "old-open", "old-pending"}
    assert world.files() == {"recent.jpg", "old-open.jpg", "old-pending.jpg"}
    for table in ("events", "alert_reasons"):
        assert world.query(f"SELECT COUNT(*) FROM {table} WHERE event_id = 'old'") == [(0,)]
    # the audit outlives the event
    assert world.query("SELECT event_id, action, user FROM reviews") == [("old", "false_alarm", "ana")]
    # no outbox row is left without its message; the pending delivery is untouched
    assert world.query("SELECT COUNT(*) FROM outbox WHERE event_seq NOT IN (SELECT seq FROM events)") == [
        (0,)
    ]
    assert world.query(
        "SELECT DISTINCT e.event_id FROM outbox o JOIN events e ON e.seq = o.event_seq"
        " WHERE o.status = 'pending'"
    ) == [("old-pending",)]
    assert world.query("PRAGMA foreign_key_check") == []
    # the pipeline's own connection keeps working on the same file
    world.add("after", NOW)
    assert "after" in world.alert_ids()


def test_pending_event_goes_once_delivered(world: World) -> None:
    world.add("old", NOW - 40 * DAY, delivered=False)
    retention = world.retention(RetentionPolicy(30 * DAY, 0))
    assert retention.run_once(now=NOW).events_deleted == 0
    world.held.clear()
    world.deliver()
    assert retention.run_once(now=NOW).events_deleted == 1
    retention.close()
    assert world.alert_ids() == set()
    assert world.query("SELECT COUNT(*) FROM outbox") == [(0,)]


def test_review_queued_after_the_plan_keeps_the_event(world: World) -> None:
    """An operator reviews an old event between the plan and the deletion: its review message is now
    pending for MQTT, so the deletion's own re-check keeps it."""
    world.add("old", NOW - 40 * DAY)
    world.add("older", NOW - 41 * DAY)

    class ReviewedMeanwhile(Retention):
        def _candidates(self) -> list[Candidate]:
            found = super()._candidates()
            world.store.review("old", "acknowledged", "ana", at=NOW)
            return found

    retention = ReviewedMeanwhile(world.db_path, world.media, RetentionPolicy(30 * DAY, None))
    report = retention.run_once(now=NOW)
    retention.close()
    assert report.events_deleted == 1 and world.alert_ids() == {"old"}
    assert world.files() == {"old.jpg"}
    assert [i.event["kind"] for i in world.store.pending("mqtt")] == ["review"]


@pytest.mark.parametrize(
    ("max_bytes", "deleted"),
    [
        (6 * SNAPSHOT_BYTES, []),
        (5 * SNAPSHOT_BYTES, ["e1"]),
        (3.5 * SNAPSHOT_BYTES, ["e1", "e2", "e3"]),
        (0, ["e1", "e2", "e3", "e4"]),  # the open and the pending event stay over budget
    ],
)
def test_budget_deletes_oldest_ended_first(world: World, max_bytes: float, deleted: list[str]) -> None:
    world.add("open", NOW - 10 * DAY, ended=False)
    world.add("pending", NOW - 9 * DAY, delivered=False)
    for i in range(1, 5):
        world.add(f"e{i}", NOW - (5 - i) * DAY)
    retention = world.retention(RetentionPolicy(None, int(max_bytes)))
    report = retention.run_once(now=NOW)
    retention.close()

    kept = {"open", "pending", "e1", "e2", "e3", "e4"} - set(deleted)
    assert world.alert_ids() == kept
    assert world.files() == {f"{e}.jpg" for e in kept}
    assert report.events_deleted == len(deleted)
    assert report.bytes_freed == len(deleted) * SNAPSHOT_BYTES
    assert report.media_bytes == len(kept) * SNAPSHOT_BYTES
    assert report.oldest_kept == NOW - 10 * DAY


@pytest.mark.parametrize("same_run", [False, True], ids=["later-run", "same-run"])
def test_shared_clip_kept_while_referenced(world: World, same_run: bool) -> None:
    world.add("a", NOW - 40 * DAY, clip="a", clip_bytes=5000)
    world.add("b", NOW - (35 if same_run else 1) * DAY, clip="a")  # overlapped a: recorded in a's clip
    retention = world.retention(RetentionPolicy(30 * DAY, None))

    report = retention.run_once(now=NOW)
    if not same_run:
        assert (report.events_deleted, report.bytes_freed) == (1, SNAPSHOT_BYTES)
        assert world.files() == {"a.mp4", "b.jpg"}
        assert report.media_bytes == 5000 + SNAPSHOT_BYTES
        report = retention.run_once(now=NOW + 40 * DAY)
        assert (report.events_deleted, report.bytes_freed) == (1, SNAPSHOT_BYTES + 5000)
    else:
        assert (report.events_deleted, report.bytes_freed) == (2, 2 * SNAPSHOT_BYTES + 5000)
    retention.close()
    assert world.files() == set() and world.alert_ids() == set()
    assert report.media_bytes == 0 and report.oldest_kept is None


def test_status_reports_without_deleting(world: World) -> None:
    world.add("a", NOW - 40 * DAY, clip="a", clip_bytes=5000, obs=True)
    world.add("b", NOW - 1 * DAY, clip="a")
    world.add("c", NOW - 2 * DAY, ended=False)
    retention = world.retention(RetentionPolicy(DAY, 0))
    report = retention.status()
    retention.close()
    assert report == RetentionReport(
        events_deleted=0,
        bytes_freed=0,
        events_kept=3,
        media_bytes=3 * SNAPSHOT_BYTES + 5000 + 10,  # the shared clip counted once
        oldest_kept=NOW - 40 * DAY,
    )
    assert world.alert_ids() == {"a", "b", "c"}
    assert len(world.files()) == 5


def test_no_limits_delete_nothing(world: World) -> None:
    world.add("ancient", NOW - 4000 * DAY, obs=True)
    retention = world.retention(RetentionPolicy(None, None))
    report = retention.run_once(now=NOW)
    retention.close()
    assert (report.events_deleted, report.bytes_freed, report.events_kept) == (0, 0, 1)
    assert world.alert_ids() == {"ancient"}
    assert world.files() == {"ancient.jpg", "ancient.obs.npz"}


def test_undeletable_file_is_logged_not_raised(world: World, records: list[logging.LogRecord]) -> None:
    world.add("old", NOW - 40 * DAY)
    stuck = world.media / "cam0" / "old.obs.npz"
    stuck.mkdir()  # unlink() of a directory fails with an error other than not-found
    (stuck / "inside").write_bytes(b"x")
    retention = world.retention(RetentionPolicy(30 * DAY, None))
    report = retention.run_once(now=NOW)
    retention.close()
    assert (report.events_deleted, report.bytes_freed) == (1, SNAPSHOT_BYTES)
    assert world.alert_ids() == set() and world.files() == {"old.obs.npz"}
    errors = [r for r in records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and str(stuck) in errors[0].getMessage()


def test_missing_store_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(VigilError, match="cannot open"):
        Retention(tmp_path / "absent.db", tmp_path, RetentionPolicy(DAY, None))
    assert not (tmp_path / "absent.db").exists()


def wait_for(condition: object, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_thread_runs_reports_metrics_and_stops(world: World, records: list[logging.LogRecord]) -> None:
    now = time.time()
    world.add("old", now - 40 * DAY)
    world.add("new", now - 60)
    metrics = Metrics()
    retention = world.retention(RetentionPolicy(30 * DAY, None), metrics=metrics, interval_s=0.05)
    stop = threading.Event()
    thread = retention.start(stop)
    wait_for(lambda: world.alert_ids() == {"new"})
    world.add("old2", time.time() - 31 * DAY)  # a later run deletes it too: the thread keeps running
    wait_for(lambda: world.alert_ids() == {"new"})
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive() and thread.daemon
    retention.close()

    sample = metrics.registry.get_sample_value
    assert sample("vigil_retention_events_deleted_total") == 2
    assert sample("vigil_media_bytes") == SNAPSHOT_BYTES
    assert 60 <= (sample("vigil_retention_oldest_event_age_seconds") or 0) < 120
    infos = [r for r in records if r.levelno == logging.INFO]
    assert [r.getMessage() for r in infos] == ["retention deleted events"] * 2
    assert infos[0].__dict__["events"] == 1 and infos[0].__dict__["bytes_freed"] == SNAPSHOT_BYTES


def test_thread_logs_a_failed_run_and_goes_on(world: World, records: list[logging.LogRecord]) -> None:
    world.add("old", time.time() - 40 * DAY)
    blocker = sqlite3.connect(world.db_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock longer than retention waits
    retention = world.retention(RetentionPolicy(30 * DAY, None), interval_s=0.05, timeout_s=0.05)
    stop = threading.Event()
    thread = retention.start(stop)
    try:
        wait_for(lambda: any(r.levelno == logging.ERROR for r in records))
        assert world.alert_ids() == {"old"}
        blocker.execute("COMMIT")
        wait_for(lambda: world.alert_ids() == set())
    finally:
        stop.set()
        thread.join(timeout=5)
        blocker.close()
        retention.close()
    error = next(r for r in records if r.levelno == logging.ERROR)
    assert "retention run failed" in error.getMessage() and "locked" in error.getMessage()
    assert error.exc_info is not None


@pytest.mark.parametrize(("days", "kept"), [(1.0, [("cam0", 3.0)]), (None, [("cam0", 1.0), ("cam0", 3.0)])])
def test_frame_score_history_ages_out_with_the_events(
    world: World, days: float | None, kept: list[tuple[str, float]]
) -> None:
    now = time.time()
    world.store.record_scores([("cam0", now - 3 * 86400, 1.0), ("cam0", now - 3600, 3.0)])
    world.retention(RetentionPolicy(None if days is None else days * 86400, None)).run_once(now)
    assert world.query("SELECT camera, score FROM frame_scores ORDER BY at") == kept
