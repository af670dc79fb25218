"""JSON Lines sink: one line per event lifecycle message, flushed at once so `tail -f` and pipes see it."""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from pipeline.packets import Event
from pipeline.sinks.base import EventSink


def names_stdout(path: str | Path) -> bool:
    """Whether `path` is this process's stdout: "-", or a name for the same file (/dev/stdout,
    /proc/self/fd/1, the file stdout is redirected to). Ask before fd 1 is redirected."""
    if str(path) == "-":
        return True
    try:
        return os.path.samestat(os.stat(path), os.fstat(1))
    except (OSError, ValueError):  # no such file, or no stdout at all
        return False


class JsonlSink(EventSink):
    name = "jsonl"

    def __init__(self, path: str | Path = "-", stream: TextIO | None = None) -> None:
        """`path` "-" writes to `stream` (stdout by default); otherwise the file is appended to."""
        self.path = str(path)
        self._lock = threading.Lock()
        self._owned = self.path != "-"
        if self._owned:
            target = Path(self.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            self._out: TextIO = target.open("a", encoding="utf-8")
        else:
            self._out = stream or sys.stdout
        self._closed = False

    def write(self, events: Sequence[Event]) -> None:
        lines = "".join(json.dumps(e.to_json(), ensure_ascii=False) + "\n" for e in events)
        with self._lock:
            if self._closed:
                raise ValueError(f"jsonl sink {self.path}: write after close")
            self._out.write(lines)
            self._out.flush()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._owned:
                self._out.close()
            elif not self._out.closed:  # a borrowed stream (stdout) is flushed, not closed
                self._out.flush()
