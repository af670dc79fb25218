"""Event sinks: JSONL (stdout or file), the embedded SQLite event store; network sinks drain its outbox."""

from pipeline.sinks.base import EventSink

__all__ = ["EventSink"]
