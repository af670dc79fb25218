"""One SQLite connection shared by threads: a lock around each transaction, and a close after which
any use is an error. The event store, the console's user store and retention each hold one."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class SharedConnection:
    """`db` (opened with isolation_level=None and check_same_thread=False) behind a lock; `what` names
    it in the error raised once it is closed."""

    def __init__(self, db: sqlite3.Connection, what: str) -> None:
        self._db: sqlite3.Connection | None = db
        self._lock = threading.Lock()
        self.what = what

    @contextmanager
    def transaction(self, begin: str = "BEGIN IMMEDIATE") -> Iterator[sqlite3.Connection]:
        """The connection inside `begin` ... COMMIT, rolled back on any exception, one thread at a time."""
        with self._lock:
            if self._db is None:
                raise ValueError(f"{self.what} is closed")
            db = self._db
            db.execute(begin)
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
