"""Credentials never leave the process: URL passwords (any scheme, mistyped ones too) and the secrets
resolved from `${ENV}` are redacted in log lines, stored source errors and the CLI's error lines and
`--debug` tracebacks, by the one redactor in `pipeline.redaction`."""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Iterator

import pytest

from pipeline.errors import SourceError, VigilError
from pipeline.graph import build_graph
from pipeline.logs import KeyValueFormatter
from pipeline.metrics import Metrics
from pipeline.redaction import redact, remember
from pipeline.runner import Runner
from pipeline.sources.base import Source, SourceMonitor


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rtsp://admin:pa55@10.1.1.1:554/live", "rtsp://admin:***@10.1.1.1:554/live"),
        ("url=rtsps://u:p%40ss@cam/x other", "url=rtsps://u:***@cam/x other"),
        ("RTSPS://u:p@ss:w@cam/x?a=1", "RTSPS://u:***@cam/x?a=1"),
        ("rtsp://admin@10.0.0.5/live", "rtsp://admin@10.0.0.5/live"),
        ("rtsp://10.1.1.1/live", "rtsp://10.1.1.1/live"),
        ("http://host:9108/metrics", "http://host:9108/metrics"),
        (
            "failed 'rtsp://a:b@h/1' then 'rtsp://c:d@h/2'",
            "failed 'rtsp://a:***@h/1' then 'rtsp://c:***@h/2'",
        ),
        # a mistyped scheme is still a URL with a password in it
        ("rstp://admin:hunter2@host/cam", "rstp://admin:***@host/cam"),
        # ... and a URL that went through pathlib (which folds '//' into '/') still has one
        ("open file rstp:/admin:hunter2@host/cam: failed", "open file rstp:/admin:***@host/cam: failed"),
        ("https://:token@example.com/x", "https://:***@example.com/x"),
    ],
)
def test_redact_url_passwords_of_any_scheme(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_remembered_secrets_are_redacted_everywhere() -> None:
    remember(["s3cret-from-env-0042"])
    assert redact("value s3cret-from-env-0042 in a path") == "value *** in a path"


def _formatted(logger_name: str, emit) -> str:  # type: ignore[no-untyped-def]
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(KeyValueFormatter())
    logger = logging.getLogger(logger_name)
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    root = logging.getLogger("vigil")
    level, root.level = root.level, logging.DEBUG  # the formatter adds tracebacks at DEBUG
    try:
        emit(logger)
    finally:
        logger.handlers.clear()
        root.setLevel(level)
    return stream.getvalue()


def test_log_lines_are_redacted_in_message_args_fields_and_traceback() -> None:
    remember(["pw-in-env-77"])

    def emit(log: logging.Logger) -> None:
        log.error("open rstp://admin:pw-msg-11@h/cam failed")
        log.error("open %s failed", "rtsp://admin:pw-arg-22@h/cam")
        log.info("connected", extra={"url": "rtsp://admin:pw-field-33@h/cam"})
        log.warning("retrying with pw-in-env-77")
        try:
            raise OSError("rtsp://admin:pw-exc-44@h/cam refused")
        except OSError:
            log.exception("source failed")

    text = _formatted("vigil.test-redaction", emit)
    for secret in ("pw-msg-11", "pw-arg-22", "pw-field-33", "pw-in-env-77", "pw-exc-44"):
        assert secret not in text, text
    assert text.count("***") >= 5, text


class _Failing(Source):
    live = False

    def __init__(self, camera: str, exc: Exception) -> None:
        self.camera = camera
        self.exc = exc

    def frames(self, stop: threading.Event, monitor: SourceMonitor) -> Iterator:  # type: ignore[type-arg]
        raise self.exc
        yield  # pragma: no cover


def test_runner_stores_source_errors_redacted() -> None:
    sources = [
        _Failing("a", SourceError("cannot open video file rstp:/admin:pw-src-55@h/cam: Protocol not found")),
        _Failing("b", RuntimeError("bug while reading rtsp://u:pw-bug-66@h/x")),
    ]
    report = Runner(build_graph([]), sources, Metrics(), threading.Event()).run()
    assert set(report.source_errors) == {"a", "b"}
    text = " ".join(report.source_errors.values())
    assert "pw-src-55" not in text and "pw-bug-66" not in text and text.count("***") == 2, text


@pytest.fixture
def restore_logging() -> Iterator[None]:
    logger = logging.getLogger("vigil")
    saved = (logger.handlers[:], logger.propagate, logger.level)
    yield
    logger.handlers[:], logger.propagate, logger.level = saved


def _raise(exc: Exception):  # type: ignore[no-untyped-def]
    def run(args: object) -> int:
        raise exc

    return run


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize(
    "exc",
    [
        RuntimeError("cannot reach rtsp://admin:pw-cli-88@cam/x"),
        VigilError("camera gate: rtsp://admin:pw-cli-88@cam/x refused"),
        VigilError("camera gate: the password pw-env-cli-99 was refused"),
    ],
    ids=["unexpected", "vigil-error", "remembered-secret"],
)
def test_cli_error_lines_and_debug_tracebacks_are_redacted(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], debug: bool, exc: Exception
) -> None:
    from pipeline import cli

    remember(["pw-env-cli-99"])
    monkeypatch.setitem(cli.COMMANDS, "boom", cli.Command("raise", lambda p: None, _raise(exc)))
    code = cli.main(["--debug", "boom"] if debug else ["boom"])
    captured = capsys.readouterr()
    assert code in (1, 2)
    text = captured.err + captured.out
    assert ("Traceback" in text) == debug
    assert "pw-cli-88" not in text and "pw-env-cli-99" not in text, text
    assert "***" in text
