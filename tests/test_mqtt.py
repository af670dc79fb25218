"""MQTT delivery against a real Mosquitto broker (Debian `mosquitto`) on a free loopback port.

The broker is SIGKILLed while events are being produced and restarted on the same port; a real paho
subscriber with a persistent session must still see every event exactly once and in order.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from conftest import wait_for
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import generate_latest

from pipeline.config import MqttSinkConfig
from pipeline.errors import ConfigError
from pipeline.metrics import Metrics
from pipeline.packets import Event
from pipeline.sinks.delivery import DeliveryWorker
from pipeline.sinks.factory import build_transports, outbox_sink_names
from pipeline.sinks.mqtt import MqttTransport
from pipeline.sinks.sqlite import SqliteEventStore

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
pytestmark = pytest.mark.skipif(not Path(MOSQUITTO).exists(), reason="needs Debian's mosquitto broker")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """A real mosquitto process with persistence in a temp folder (saved after every change)."""

    def __init__(self, folder: Path, password_file: Path | None = None) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.conf = folder / "mosquitto.conf"
        auth = (
            f"allow_anonymous false\npassword_file {password_file}\n"
            if password_file
            else "allow_anonymous true\n"
        )
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n{auth}"
            f"persistence true\npersistence_location {folder}/\n"
            "autosave_on_changes true\nautosave_interval 1\n"
            f"log_dest file {folder}/mosquitto.log\nuser {getpass.getuser()}\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL)

        def accepting() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"mosquitto exited: {(self.folder / 'mosquitto.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            except OSError:
                return False

        wait_for(accepting, 10, "mosquitto to accept connections")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "broker")
    b.start()
    yield b
    b.stop()


class Subscriber:
    """A real paho subscriber: persistent session, QoS 1, reconnects by itself."""

    def __init__(self, port: int, topic: str, client_id: str = "test-subscriber") -> None:
        self.messages: list[paho.MQTTMessage] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.client.reconnect_delay_set(min_delay=0.05, max_delay=0.2)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=5)
        self.client.loop_start()
        assert self.subscribed.wait(5), "subscription not acknowledged"

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        with self.lock:
            self.messages.append(message)

    def payloads(self) -> list[tuple[str, bytes, bool]]:
        with self.lock:
            return [(m.topic, m.payload, m.retain) for m in self.messages]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def split_redeliveries(
    messages: list[paho.MQTTMessage],
) -> tuple[list[paho.MQTTMessage], list[paho.MQTTMessage]]:
    """First receipts, and repeats that are the broker re-sending a message it had already sent us:
    same MQTT packet id and same payload as the first receipt. A second publish by Vigil would be a
    new message from the broker (a new packet id), and would fail the test."""
    first: dict[bytes, paho.MQTTMessage] = {}
    repeats = []
    for m in messages:
        seen = first.get(m.payload)
        if seen is None:
            first[m.payload] = m
        else:
            assert m.mid == seen.mid, f"duplicate with a new packet id: {m.payload[:40]!r}"
            repeats.append(m)
    return list(first.values()), repeats


def make_event(i: int, camera: str = "cam1") -> Event:
    return Event(
        id=f"{camera}-{i:04d}", kind="new", camera=camera, start_time=i * 0.1, end_time=i * 0.1,
        start_frame=i, end_frame=i, track_id=i % 7, class_name="bicycle", box=(10.0, 20.0, 30.0, 60.0),
        score=4.0, peak_score=4.0, created_at=1.7e9 + i,
    )  # fmt: skip


def settings(port: int, **overrides: object) -> MqttSinkConfig:
    base: dict[str, object] = dict(
        enabled=True, host="127.0.0.1", port=port, client_id="vigil-test", backoff_initial_s=0.05,
        backoff_max_s=0.4, poll_s=0.05, ack_timeout_s=2.0, keepalive_s=5,
    )  # fmt: skip
    base.update(overrides)
    return MqttSinkConfig.model_validate(base)


def retained(port: int, topic: str) -> bytes | None:
    """The retained message on `topic`, read by a fresh clean-session client."""
    got: list[bytes] = []
    done = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{time.monotonic_ns()}")

    def on_message(c: paho.Client, u: object, m: paho.MQTTMessage) -> None:
        if m.retain:
            got.append(m.payload)
        done.set()

    client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    done.wait(1.0)
    client.disconnect()
    client.loop_stop()
    return got[0] if got else None


def test_broker_killed_and_restarted_every_event_once_in_order(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="vigil")
    sub = Subscriber(broker.port, "vigil/+/events")
    store = SqliteEventStore(tmp_path / "events.db", outbox_sinks=["mqtt"])
    metrics = Metrics()
    cfg = settings(broker.port)
    worker = DeliveryWorker(store, MqttTransport(cfg, ["cam1", "cam2"]), metrics, cfg)
    stop = threading.Event()
    worker.start(stop)
    events = [make_event(i, camera=("cam1", "cam2")[i % 2]) for i in range(90)]
    try:
        for i, event in enumerate(events):
            store.write([event])
            time.sleep(0.01)
            if i == 30:
                broker.kill()  # SIGKILL while events are produced and delivered
            if i == 60:
                broker.start()  # same port, same persistence folder
        wait_for(lambda: len(store.pending("mqtt", 1000)) == 0, 30, "the outbox to drain")
        wait_for(lambda: len(sub.payloads()) >= len(events), 10, "the subscriber to receive every event")
        time.sleep(0.3)  # a late duplicate would show up here
    finally:
        stop.set()
        assert worker.join(10)
        sub.close()
    first, redelivered = split_redeliveries(sub.messages)
    received = [json.loads(m.payload) for m in first]
    assert [e["id"] for e in received] == [e.id for e in events], "every event once, in order"
    assert received[0] == events[0].to_json()
    assert [m.topic for m in first] == [f"vigil/{e.camera}/events" for e in events]
    # The only repeats allowed are the broker's own QoS 1 redeliveries of messages it had already handed
    # to the subscriber: its persistence snapshot lags the subscriber's PUBACKs, so after SIGKILL it
    # replays the last one or two. Vigil itself published every outbox row once per attempt.
    assert len(redelivered) <= 3, [json.loads(m.payload)["id"] for m in redelivered]
    sink = {"sink": "mqtt"}
    registry = metrics.registry
    assert registry.get_sample_value("vigil_deliveries_total", sink) == len(events)
    assert registry.get_sample_value("vigil_delivery_failures_total", sink) >= 1
    assert registry.get_sample_value("vigil_outbox_depth", sink) == 0
    assert registry.get_sample_value("vigil_delivery_latency_seconds_count", sink) == len(events)
    assert any("delivery failed, will retry" in r.getMessage() for r in caplog.records)
    # clean shutdown replaced the retained status with offline
    assert retained(broker.port, "vigil/cam1/status") == b"offline"
    store.close()


def test_status_online_while_running_and_last_will_when_killed(broker: Broker, tmp_path: Path) -> None:
    """A Vigil process that dies without a goodbye gets its cameras marked offline by the broker."""
    script = (
        "import sys, threading\n"
        "from pipeline.config import MqttSinkConfig\n"
        "from pipeline.sinks.mqtt import MqttTransport\n"
        f"cfg = MqttSinkConfig(enabled=True, port={broker.port}, client_id='vigil-will', keepalive_s=5)\n"
        "t = MqttTransport(cfg, ['door', 'yard'])\n"
        "stop = threading.Event()\n"
        "t.idle(stop, 0.5)\n"
        "print('UP', flush=True)\n"
        "t.idle(stop, 60)\n"
    )
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=repo,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(repo)},
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"UP"
        assert retained(broker.port, "vigil/door/status") == b"online"
        assert retained(broker.port, "vigil/yard/status") == b"online"
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        wait_for(lambda: retained(broker.port, "vigil/yard/status") == b"offline", 5, "the last will")
        assert retained(broker.port, "vigil/door/status") == b"offline"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_password_from_env_never_logged_or_exported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "pw-Very-Secret-42"
    folder = tmp_path / "broker"
    folder.mkdir()
    passwords = folder / "passwords"
    passwords.write_text(f"vigil:{secret}\n")
    subprocess.run(["mosquitto_passwd", "-U", str(passwords)], check=True)
    passwords.chmod(0o600)
    b = Broker(folder, password_file=passwords)
    b.start()
    caplog.set_level(logging.DEBUG, logger="vigil")
    store = SqliteEventStore(tmp_path / "events.db", outbox_sinks=["mqtt"])
    metrics = Metrics()
    stop = threading.Event()
    try:
        # wrong password: refused, counted, retried, the event stays pending
        monkeypatch.setenv("VIGIL_MQTT_PASSWORD", "wrong-" + secret)
        sinks_cfg = settings(b.port, username="vigil", password_env="VIGIL_MQTT_PASSWORD")
        ((transport, cfg),) = build_transports(_sinks(sinks_cfg), ["cam1"])
        worker = DeliveryWorker(store, transport, metrics, cfg)
        store.write([make_event(1)])
        worker.start(stop)
        wait_for(
            lambda: (store.pending("mqtt")[0].attempts if store.pending("mqtt") else 0) >= 2, 10, "retries"
        )
        stop.set()
        assert worker.join(10)
        (item,) = store.pending("mqtt")
        assert "refused" in (item.last_error or "") and secret not in (item.last_error or "")
        # right password: delivered
        monkeypatch.setenv("VIGIL_MQTT_PASSWORD", secret)
        stop = threading.Event()
        ((transport, cfg),) = build_transports(_sinks(sinks_cfg), ["cam1"])
        worker = DeliveryWorker(store, transport, metrics, cfg)
        worker.start(stop)
        wait_for(lambda: not store.pending("mqtt"), 10, "delivery with the right password")
    finally:
        stop.set()
        b.stop()
    assert worker.join(10)
    text = "\n".join(r.getMessage() + " " + " ".join(map(str, vars(r).values())) for r in caplog.records)
    assert secret not in text
    assert secret not in generate_latest(metrics.registry).decode()
    assert all(secret not in json.dumps(e.json) for e in store.events())
    store.close()


def _sinks(mqtt: MqttSinkConfig):  # type: ignore[no-untyped-def]
    from pipeline.config import SinksConfig

    sinks = SinksConfig(mqtt=mqtt)
    assert outbox_sink_names(sinks) == ["mqtt"]
    return sinks


def test_missing_password_env_is_a_config_error() -> None:
    cfg = MqttSinkConfig(enabled=True, username="vigil", password_env="VIGIL_TEST_UNSET_PW")
    with pytest.raises(ConfigError, match="VIGIL_TEST_UNSET_PW"):
        MqttTransport(cfg, ["cam1"], env={})


def test_retries_against_a_dead_broker_do_not_leak_sockets() -> None:
    """Each attempt makes a fresh paho client; a dropped one must release its sockets at once."""
    from pipeline.sinks.base import DeliveryError
    from pipeline.sinks.sqlite import OutboxItem

    transport = MqttTransport(settings(_free_port()), ["cam1"])
    item = OutboxItem(id=1, sink="mqtt", attempts=0, last_error=None, event=make_event(1).to_json())
    fds = len(os.listdir("/proc/self/fd"))
    for _ in range(25):
        with pytest.raises(DeliveryError, match="Connection refused"):
            transport.deliver(item)
    transport.close()
    assert len(os.listdir("/proc/self/fd")) <= fds + 2


def test_a_review_reaches_mqtt_subscribers_after_its_event(broker: Broker, tmp_path: Path) -> None:
    """An operator's review (here through the store, as the console records it) goes out on the event
    topic after the event's own messages, with who did what: subscribers see the alert's state."""
    sub = Subscriber(broker.port, "vigil/+/events", client_id="review-subscriber")
    store = SqliteEventStore(tmp_path / "events.db", outbox_sinks=["mqtt"])
    cfg = settings(broker.port)
    worker = DeliveryWorker(store, MqttTransport(cfg, ["cam1"]), Metrics(), cfg)
    stop = threading.Event()
    worker.start(stop)
    try:
        store.write([make_event(1)])
        store.review("cam1-0001", "false_alarm", "alice")
        wait_for(lambda: len(sub.payloads()) >= 2, 10, "the event and its review")
    finally:
        stop.set()
        assert worker.join(10)
        sub.close()
        store.close()
    received = [json.loads(payload) for _, payload, _ in sub.payloads()]
    assert [(m["id"], m["kind"]) for m in received] == [("cam1-0001", "new"), ("cam1-0001", "review")]
    assert received[1]["review"]["action"] == "false_alarm" and received[1]["review"]["by"] == "alice"
