"""What a `vigil` process shows and hears at the terminal: exit codes, stdout kept for events only,
the end-of-run summary, and SIGINT/SIGTERM turned into a drain."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import TextIO

from pipeline.logs import fields
from pipeline.runner import RunReport

log = logging.getLogger("vigil.cli")

EXIT_OK, EXIT_SOURCE_FAILED, EXIT_USAGE = 0, 1, 2


@contextmanager
def stdout_for_events_only(enabled: bool) -> Iterator[TextIO | None]:
    """While running, file descriptor 1 carries only the JSONL events.

    Libraries print banners to stdout (ultralytics: "Loading ... for OpenVINO inference..."), which
    would corrupt the event stream; everything but the events goes to stderr meanwhile. What the
    command means to print goes to the yielded stream (the real stdout).
    """
    if not enabled:
        yield None
        return
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # started without a stdout: nothing to protect
        yield None
        return
    events = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    try:
        yield events
    finally:
        sys.stdout.flush()
        events.flush()
        os.dup2(saved, 1)
        os.close(saved)
        events.close()


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM set the stop event (a second one kills as usual); restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("signal received: draining", extra=fields(signal=signal.Signals(signum).name))
        stop.set()
        signal.signal(signum, signal.SIG_DFL)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def summary_line(report: RunReport, cameras: Sequence[str]) -> str:
    frames = " ".join(
        f"{c}={report.frames_decoded.get(c, 0)}/{report.frames_completed.get(c, 0)}" for c in cameras
    )
    return (
        f"vigil: summary: frames decoded/completed {frames}; events {report.events}; "
        f"drops {sum(report.frames_dropped.values())}; stage errors {sum(report.stage_errors.values())}; "
        f"source errors {len(report.source_errors)}; {report.wall_s:.1f} s"
        + ("" if report.clean_shutdown else "; drain timed out")
    )
