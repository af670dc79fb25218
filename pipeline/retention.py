"""Retention: delete old events, their snapshots, clips and observations, by age and by disk budget.

The planning is a pure function (`plan_deletions`) so the rules are tested without a store: ended
events older than the age limit go, then the oldest ended events while the media exceed the budget.
An event still open, or with a message still pending for a network sink, is never deleted: its
clip may still be recording and a subscriber has yet to hear of it.

`Retention` applies a plan to the SQLite store through its own connection (WAL: the pipeline keeps
writing), deleting rows in short `BEGIN IMMEDIATE` batches so the pipeline's writers never wait long,
then the files. Events on one camera may share a clip file; it goes only with its last event.
The `reviews` audit is kept: it outlives the events it names.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import RetentionConfig
from pipeline.errors import VigilError
from pipeline.logs import fields
from pipeline.metrics import Metrics
from pipeline.sqlite_shared import SharedConnection

log = logging.getLogger("vigil.retention")

SECONDS_PER_DAY = 86400.0
BYTES_PER_GB = 10**9
#: events deleted per transaction: the pipeline's writers wait at most one batch
BATCH = 500
_TABLES = ("events", "outbox", "alerts", "alert_reasons", "reviews")


@dataclass(frozen=True)
class RetentionPolicy:
    """What to keep: ended events at most `max_age_s` old, media within `max_bytes` (None: no limit)."""

    max_age_s: float | None
    max_bytes: int | None

    def __post_init__(self) -> None:
        if self.max_age_s is not None and self.max_age_s <= 0:
            raise ValueError(f"RetentionPolicy.max_age_s: expected > 0 or None, got {self.max_age_s}")
        if self.max_bytes is not None and self.max_bytes < 0:
            raise ValueError(f"RetentionPolicy.max_bytes: expected >= 0 or None, got {self.max_bytes}")

    @classmethod
    def from_config(cls, config: RetentionConfig) -> RetentionPolicy:
        return cls(
            max_age_s=None if config.days is None else config.days * SECONDS_PER_DAY,
            max_bytes=None if config.max_disk_gb is None else int(config.max_disk_gb * BYTES_PER_GB),
        )


@dataclass(frozen=True)
class MediaFile:
    """One file on disk that belongs to an event (several events may list the same shared clip)."""

    path: Path
    size: int


@dataclass(frozen=True)
class Candidate:
    """What retention knows of one event: its age, whether it may go, and its files."""

    event_id: str
    last_seen: float  # wall clock of its latest message
    is_open: bool
    pending: bool  # a message of it is not yet delivered to a network sink
    files: tuple[MediaFile, ...] = ()

    def __post_init__(self) -> None:
        paths = [f.path for f in self.files]
        if len(set(paths)) != len(paths):
            raise ValueError(f"Candidate {self.event_id}: a file is listed twice: {paths}")

    @property
    def deletable(self) -> bool:
        return not self.is_open and not self.pending


@dataclass(frozen=True)
class RetentionReport:
    """One run's outcome (or, from `status`, the current state with nothing deleted)."""

    events_deleted: int
    bytes_freed: int
    events_kept: int
    media_bytes: int  # distinct files of the events kept, a shared clip counted once
    oldest_kept: float | None  # last_seen (wall clock) of the oldest event kept


def plan_deletions(candidates: Sequence[Candidate], policy: RetentionPolicy, now: float) -> tuple[str, ...]:
    """The event ids to delete, in order: every deletable event older than the age limit, then the
    oldest deletable events while the media bytes (a shared file counted once, freed only with its
    last event) exceed the budget. Open events and events with a pending delivery are never chosen."""
    refs: Counter[Path] = Counter()
    sizes: dict[Path, int] = {}
    for candidate in candidates:
        for f in candidate.files:
            refs[f.path] += 1
            sizes[f.path] = f.size
    total = sum(sizes.values())
    chosen: list[str] = []

    def drop(candidate: Candidate) -> int:
        chosen.append(candidate.event_id)
        freed = 0
        for f in candidate.files:
            refs[f.path] -= 1
            freed += sizes[f.path] if refs[f.path] == 0 else 0
        return freed

    oldest_first = sorted((c for c in candidates if c.deletable), key=lambda c: (c.last_seen, c.event_id))
    within_age = []
    for candidate in oldest_first:
        if policy.max_age_s is not None and now - candidate.last_seen > policy.max_age_s:
            total -= drop(candidate)
        else:
            within_age.append(candidate)
    if policy.max_bytes is not None:
        for candidate in within_age:
            if total <= policy.max_bytes:
                break
            total -= drop(candidate)
    return tuple(chosen)


def summarize(kept: Sequence[Candidate]) -> tuple[int, int, float | None]:
    """(events, distinct media bytes, oldest last_seen or None) of the events kept."""
    sizes = {f.path: f.size for c in kept for f in c.files}
    oldest = min((c.last_seen for c in kept), default=None)
    return len(kept), sum(sizes.values()), oldest


class Retention:
    """Applies a `RetentionPolicy` to the event store at `store_path` and the media under `media_dir`.

    Safe to call from several threads (the console's `status` while the thread runs); `close` after
    the thread has stopped.
    """

    def __init__(
        self,
        store_path: Path,
        media_dir: Path,
        policy: RetentionPolicy,
        metrics: Metrics | None = None,
        interval_s: float = 600.0,
        timeout_s: float = 10.0,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"Retention.interval_s: expected > 0, got {interval_s}")
        self.store_path = Path(store_path)
        self.media_dir = Path(media_dir)
        self.policy = policy
        self.interval_s = interval_s
        self._metrics = metrics
        # mode=rw: a missing store is an error, not a new empty database without the pipeline's tables
        uri = f"{self.store_path.resolve().as_uri()}?mode=rw"
        try:
            db = sqlite3.connect(
                uri, uri=True, timeout=timeout_s, check_same_thread=False, isolation_level=None
            )
            self._conn = SharedConnection(db, f"retention for {self.store_path}")
            db.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
            db.execute("PRAGMA foreign_keys=ON")
            names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.Error as exc:
            raise VigilError(f"retention: event store {self.store_path}: cannot open: {exc}") from exc
        missing = [t for t in _TABLES if t not in names]
        if missing:
            self.close()
            raise VigilError(
                f"retention: event store {self.store_path}: no table {', '.join(missing)}"
                " (is it a Vigil event store, opened once by the pipeline?)"
            )

    # ---- runs ------------------------------------------------------------------------------------

    def run_once(self, now: float | None = None) -> RetentionReport:
        """Delete what the policy says (rows first, in batches, then files) and report."""
        now = time.time() if now is None else now
        candidates = self._candidates()
        planned = plan_deletions(candidates, self.policy, now)
        deleted: set[str] = set()
        bytes_freed = 0
        for start in range(0, len(planned), BATCH):
            ids, files = self._delete_rows(planned[start : start + BATCH])
            deleted.update(ids)
            bytes_freed += sum(self._remove(path) for path in files)
        if self.policy.max_age_s is not None:  # the console's score history ages out the same way
            with self._conn.transaction("BEGIN IMMEDIATE") as db:
                db.execute("DELETE FROM frame_scores WHERE at < ?", (now - self.policy.max_age_s,))
        kept, media_bytes, oldest = summarize([c for c in candidates if c.event_id not in deleted])
        report = RetentionReport(len(deleted), bytes_freed, kept, media_bytes, oldest)
        if self._metrics is not None:
            self._metrics.retention_deleted.inc(report.events_deleted)
            self._metrics.retention_media_bytes.set(media_bytes)
            self._metrics.retention_oldest_age.set(0.0 if oldest is None else max(0.0, now - oldest))
        if report.events_deleted:
            log.info(
                "retention deleted events",
                extra=fields(
                    stage="retention",
                    events=report.events_deleted,
                    bytes_freed=report.bytes_freed,
                    events_kept=report.events_kept,
                    media_bytes=report.media_bytes,
                ),
            )
        return report

    def status(self) -> RetentionReport:
        """The current state (events and media bytes kept, oldest event), deleting nothing."""
        kept, media_bytes, oldest = summarize(self._candidates())
        return RetentionReport(0, 0, kept, media_bytes, oldest)

    def start(self, stop: threading.Event) -> threading.Thread:
        """Run at once, then every `interval_s`, in a daemon thread, until `stop` is set."""
        thread = threading.Thread(target=self._loop, args=(stop,), name="retention", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self._conn.close()

    def _loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.run_once()
            except Exception as exc:
                # housekeeping must outlive one failed run (store locked, disk error): log it, try again
                log.error(f"retention run failed: {exc}", exc_info=True, extra=fields(stage="retention"))
            stop.wait(self.interval_s)

    # ---- store -----------------------------------------------------------------------------------

    def _candidates(self) -> list[Candidate]:
        """Every event of the store with its files' sizes (stat outside the transaction)."""
        with self._conn.transaction("BEGIN") as db:
            rows = db.execute(
                "SELECT event_id, camera, last_seen, is_open, snapshot_path, clip_path FROM alerts"
            ).fetchall()
            pending = {
                r[0]
                for r in db.execute(
                    "SELECT DISTINCT e.event_id FROM outbox o JOIN events e ON e.seq = o.event_seq"
                    " WHERE o.status = 'pending'"
                )
            }
        return [
            Candidate(
                event_id=event_id,
                last_seen=float(last_seen),
                is_open=bool(is_open),
                pending=event_id in pending,
                files=tuple(self._sized(self._paths(event_id, camera, snapshot, clip))),
            )
            for event_id, camera, last_seen, is_open, snapshot, clip in rows
        ]

    def _delete_rows(self, planned: Sequence[str]) -> tuple[list[str], list[Path]]:
        """Delete the planned events' rows in one transaction, re-checking each is still ended with
        nothing pending (a review may have queued a message since the plan). Returns the ids deleted
        and their files that no remaining event references."""
        with self._conn.transaction("BEGIN IMMEDIATE") as db:
            marks = ",".join("?" * len(planned))
            rows = db.execute(
                "SELECT event_id, camera, snapshot_path, clip_path FROM alerts"
                f" WHERE is_open = 0 AND event_id IN ({marks})",
                tuple(planned),
            ).fetchall()
            pending = {
                r[0]
                for r in db.execute(
                    "SELECT DISTINCT e.event_id FROM outbox o JOIN events e ON e.seq = o.event_seq"
                    f" WHERE o.status = 'pending' AND e.event_id IN ({marks})",
                    tuple(planned),
                )
            }
            rows = [r for r in rows if r[0] not in pending]
            ids = [r[0] for r in rows]
            if not ids:
                return [], []
            marks = ",".join("?" * len(ids))
            # outbox rows reference events.seq: they go first
            db.execute(
                f"DELETE FROM outbox WHERE event_seq IN (SELECT seq FROM events WHERE event_id IN ({marks}))",
                ids,
            )
            for table in ("events", "alert_reasons", "alerts"):
                db.execute(f"DELETE FROM {table} WHERE event_id IN ({marks})", ids)
            stored = sorted({p for r in rows for p in r[2:] if p is not None})
            still: set[str] = set()
            if stored:
                marks = ",".join("?" * len(stored))
                still = {
                    r[0]
                    for r in db.execute(
                        f"SELECT snapshot_path FROM alerts WHERE snapshot_path IN ({marks})"
                        f" UNION SELECT clip_path FROM alerts WHERE clip_path IN ({marks})",
                        (*stored, *stored),
                    )
                }
        files: dict[Path, None] = {}  # ordered, each once: events deleted together may share a clip
        for event_id, camera, snapshot, clip in rows:
            unshared = [None if p in still else p for p in (snapshot, clip)]
            files.update(dict.fromkeys(self._paths(event_id, camera, *unshared)))
        return ids, list(files)

    # ---- files -----------------------------------------------------------------------------------

    def _paths(self, event_id: str, camera: str, snapshot: str | None, clip: str | None) -> list[Path]:
        """The event's files: its snapshot and clip as stored, and its kept observations (the path of
        `stages.normality.observations.observations_path`, not imported: pipeline/ stays free of stages/)."""
        paths = [Path(p) for p in (snapshot, clip) if p is not None]
        paths.append(self.media_dir / camera / f"{event_id}.obs.npz")
        return list(dict.fromkeys(paths))

    @staticmethod
    def _sized(paths: Sequence[Path]) -> Iterator[MediaFile]:
        for path in paths:
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.error(f"retention: cannot stat {path}: {exc}", extra=fields(stage="retention"))
                continue
            yield MediaFile(path, size)

    @staticmethod
    def _remove(path: Path) -> int:
        """Delete one file; its size, or 0 when it was already gone or cannot be deleted (logged)."""
        try:
            size = path.lstat().st_size
            os.unlink(path)
        except FileNotFoundError:
            return 0
        except OSError as exc:
            log.error(f"retention: cannot delete {path}: {exc}", extra=fields(stage="retention"))
            return 0
        return size
