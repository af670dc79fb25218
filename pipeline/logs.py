"""Structured logs: one line per record, `key=value` fields (camera, stage, frame, ...).

Use `logger.info("message", extra=fields(camera=..., stage=...))`; the formatter appends them.
The formatter redacts every line it writes (`pipeline.redaction`): a URL password or a secret from
the environment may reach a record through any message, argument, field or exception text.
"""

from __future__ import annotations

import logging
import sys

from pipeline.redaction import redact

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def fields(**values: object) -> dict[str, object]:
    """Extra fields for one log record (None values are left out)."""
    return {k: v for k, v in values.items() if v is not None}


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = self.formatTime(record, "%Y-%m-%dT%H:%M:%S")
        base = f"{stamp} {record.levelname:<7} {record.name}: {record.getMessage()}"
        extras = " ".join(
            f"{k}={_quote(v)}"
            for k, v in record.__dict__.items()
            if k not in _RESERVED and not k.startswith("_")
        )
        line = f"{base} {extras}" if extras else base
        if (
            record.exc_info
            and record.levelno >= logging.ERROR
            and logging.getLogger("vigil").isEnabledFor(logging.DEBUG)
        ):
            line += "\n" + self.formatException(record.exc_info)
        return redact(line)


def _quote(value: object) -> str:
    text = str(value)
    return f'"{text}"' if (" " in text or not text) else text


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger("vigil")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
