"""Webhook delivery to a real local HTTP receiver (http.server in a thread) that checks the signature
and misbehaves first: every event must arrive once, in order, correctly signed."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import wait_for
from prometheus_client import generate_latest

from pipeline.config import SinksConfig, WebhookSinkConfig
from pipeline.errors import ConfigError
from pipeline.metrics import Metrics
from pipeline.packets import Event
from pipeline.sinks.delivery import DeliveryWorker
from pipeline.sinks.factory import build_transports, outbox_sink_names
from pipeline.sinks.sqlite import SqliteEventStore
from pipeline.sinks.webhook import SIGNATURE_HEADER, WebhookTransport, verify

SECRET = "whsec-Do-Not-Leak-7f3a"
ENV = {"VIGIL_WEBHOOK_SECRET": SECRET}


class Receiver:
    """Accepts correctly signed POSTs with 204; the first `fail_first` requests misbehave as `mode` says."""

    def __init__(self, secret: str, fail_first: int = 0, mode: str = "503") -> None:
        self.secret = secret.encode()
        self.fail_first = fail_first
        self.mode = mode
        self.requests = 0
        self.accepted: list[dict[str, object]] = []
        self.deliveries: list[str] = []
        self.bad_signatures = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.requests += 1
                    failing = receiver.requests <= receiver.fail_first
                if failing:
                    receiver.misbehave(self)
                    return
                if not verify(receiver.secret, body, self.headers.get(SIGNATURE_HEADER)):
                    with receiver.lock:
                        receiver.bad_signatures += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                with receiver.lock:
                    receiver.accepted.append(json.loads(body))
                    receiver.deliveries.append(self.headers["X-Vigil-Delivery"])
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.start()

    def misbehave(self, handler: BaseHTTPRequestHandler) -> None:
        if self.mode == "503":
            handler.send_response(503)
            handler.end_headers()
        elif self.mode == "redirect":  # must not be followed: a POST is not delivered by a redirect
            handler.send_response(302)
            handler.send_header("Location", "/elsewhere")
            handler.end_headers()
        elif self.mode == "timeout":  # answers after the client gave up
            time.sleep(0.6)
            handler.send_response(503)
            handler.end_headers()
        elif self.mode == "reset":
            handler.close_connection = True
            handler.connection.shutdown(2)
        else:
            raise ValueError(self.mode)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteEventStore]:
    s = SqliteEventStore(tmp_path / "events.db", outbox_sinks=["webhook"])
    yield s
    s.close()


def make_event(i: int) -> Event:
    return Event(
        id=f"ev-{i:04d}", kind="new", camera="cam1", start_time=i * 0.1, end_time=i * 0.1, start_frame=i,
        end_frame=i, track_id=3, class_name="person", box=(1.0, 2.0, 30.0, 80.0), score=3.5, peak_score=3.5,
        created_at=1.7e9 + i,
    )  # fmt: skip


def config(url: str, **overrides: object) -> WebhookSinkConfig:
    base: dict[str, object] = dict(
        enabled=True, url=url, secret_env="VIGIL_WEBHOOK_SECRET", timeout_s=0.3, backoff_initial_s=0.02,
        backoff_max_s=0.2, poll_s=0.02,
    )  # fmt: skip
    base.update(overrides)
    return WebhookSinkConfig.model_validate(base)


def start_worker(
    store: SqliteEventStore, cfg: WebhookSinkConfig, metrics: Metrics, env: dict[str, str] = ENV
) -> tuple[DeliveryWorker, threading.Event]:
    sinks = SinksConfig(webhook=cfg)
    assert outbox_sink_names(sinks) == ["webhook"]
    ((transport, settings),) = build_transports(sinks, ["cam1"], env=env)
    worker = DeliveryWorker(store, transport, metrics, settings)
    stop = threading.Event()
    worker.start(stop)
    return worker, stop


@pytest.mark.parametrize("mode", ["503", "redirect", "timeout", "reset"])
def test_failing_receiver_gets_every_event_once_in_order(mode: str, store: SqliteEventStore) -> None:
    receiver = Receiver(SECRET, fail_first=3, mode=mode)
    metrics = Metrics()
    events = [make_event(i) for i in range(12)]
    store.write(events[:6])
    worker, stop = start_worker(store, config(receiver.url), metrics)
    try:
        store.write(events[6:])
        wait_for(lambda: len(receiver.accepted) == len(events), 20, "all events at the receiver")
        time.sleep(0.1)  # a late duplicate would show up here
    finally:
        stop.set()
        assert worker.join(10)
        receiver.close()
    assert receiver.accepted == [e.to_json() for e in events], "once each, in order, body = event JSON"
    assert len(set(receiver.deliveries)) == len(events)
    assert receiver.bad_signatures == 0
    assert not store.pending("webhook")
    sink = {"sink": "webhook"}
    assert metrics.registry.get_sample_value("vigil_deliveries_total", sink) == len(events)
    assert metrics.registry.get_sample_value("vigil_delivery_failures_total", sink) == 3
    assert metrics.registry.get_sample_value("vigil_outbox_depth", sink) == 0


def test_receiver_down_at_first(store: SqliteEventStore) -> None:
    """Connection refused until the receiver starts: the events wait in the outbox, then all go out."""
    receiver = Receiver(SECRET)
    port_url = receiver.url
    receiver.close()  # nothing listens on that port now
    metrics = Metrics()
    events = [make_event(i) for i in range(5)]
    store.write(events)
    worker, stop = start_worker(store, config(port_url), metrics)
    try:
        failures = {"sink": "webhook"}
        wait_for(
            lambda: (metrics.registry.get_sample_value("vigil_delivery_failures_total", failures) or 0) >= 3,
            10,
            "failed attempts",
        )
        (item, *_) = store.pending("webhook")
        assert item.attempts >= 3 and "unreachable" in (item.last_error or "")
    finally:
        stop.set()
        assert worker.join(10)
    assert len(store.pending("webhook")) == 5


def test_wrong_secret_is_rejected_and_no_secret_leaks(
    store: SqliteEventStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="vigil")
    receiver = Receiver(SECRET)
    metrics = Metrics()
    store.write([make_event(1)])
    wrong = "whsec-Wrong-Secret-0000"
    worker, stop = start_worker(store, config(receiver.url), metrics, env={"VIGIL_WEBHOOK_SECRET": wrong})
    try:
        wait_for(lambda: receiver.bad_signatures >= 2, 10, "rejected deliveries")
    finally:
        stop.set()
        assert worker.join(10)
        receiver.close()
    assert receiver.accepted == []
    (item,) = store.pending("webhook")
    assert item.last_error == "webhook answered HTTP 401 Unauthorized"
    logged = "\n".join(r.getMessage() + " " + " ".join(map(str, vars(r).values())) for r in caplog.records)
    exported = generate_latest(metrics.registry).decode()
    stored = json.dumps([e.json for e in store.events()])
    for secret in (SECRET, wrong):
        assert secret not in logged and secret not in exported and secret not in stored


def test_pending_events_survive_a_restart(tmp_path: Path) -> None:
    """Rows not delivered when Vigil stops are delivered by the next process on the same file, once."""
    path = tmp_path / "events.db"
    receiver = Receiver(SECRET)
    events = [make_event(i) for i in range(10)]
    try:
        first = SqliteEventStore(path, outbox_sinks=["webhook"])
        worker, stop = start_worker(first, config(receiver.url), Metrics())
        first.write(events[:4])
        wait_for(lambda: len(receiver.accepted) == 4, 10, "the first run's deliveries")
        stop.set()
        assert worker.join(10)
        first.write(events[4:])  # produced after delivery stopped: pending in the file
        first.close()
        assert receiver.accepted == [e.to_json() for e in events[:4]]

        second = SqliteEventStore(path, outbox_sinks=["webhook"])
        assert [i.event["id"] for i in second.pending("webhook")] == [e.id for e in events[4:]]
        metrics = Metrics()
        worker, stop = start_worker(second, config(receiver.url), metrics)
        wait_for(lambda: len(receiver.accepted) == len(events), 10, "the second run's deliveries")
        time.sleep(0.1)
        stop.set()
        assert worker.join(10)
        second.close()
    finally:
        receiver.close()
    assert receiver.accepted == [e.to_json() for e in events]
    assert metrics.registry.get_sample_value("vigil_deliveries_total", {"sink": "webhook"}) == 6


@pytest.mark.parametrize(
    "overrides, env, message",
    [
        ({}, {}, "environment variable VIGIL_WEBHOOK_SECRET is not set"),
        ({"secret_env": None}, ENV, "name the environment variable"),
    ],
)
def test_webhook_config_errors(overrides: dict[str, object], env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        WebhookTransport(config("http://127.0.0.1:9/hook", **overrides), env=env)


def test_enabled_webhook_needs_url() -> None:
    with pytest.raises(ValueError, match="needs a url"):
        WebhookSinkConfig(enabled=True, secret_env="X")


def test_cli_reports_a_missing_webhook_secret(tmp_path: Path, ped2: Path) -> None:
    """`vigil replay` wires the delivery workers: a missing secret is one clear line, exit 2, no traceback."""
    config_path = tmp_path / "config.yaml"
    config_path.write_text(
        "http: {enabled: false}\n"
        "sinks:\n"
        f"  sqlite: {{path: {tmp_path / 'events.db'}}}\n"
        "  webhook: {enabled: true, url: 'http://127.0.0.1:9/hook', secret_env: VIGIL_TEST_UNSET_SECRET}\n"
    )
    repo = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "VIGIL_TEST_UNSET_SECRET"}
    clip = str(ped2 / "test" / "Test001.mp4")
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "replay", clip, "-c", str(config_path)],
        cwd=repo, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert (
        "vigil: error: sinks.webhook.secret_env: environment variable VIGIL_TEST_UNSET_SECRET is not set"
        in (result.stderr)
    )
    assert "Traceback" not in result.stderr
