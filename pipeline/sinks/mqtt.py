"""MQTT delivery of events: `<prefix>/<camera>/events` (QoS 1, the event JSON) and a retained
`<prefix>/<camera>/status` (`online` / `offline`, the last will).

A broker can hold one last will per connection, so each camera has its own connection, carrying that
camera's will and its events. All connections are driven by the delivery worker's thread (`loop()`,
no paho background thread and no automatic reconnect), so a message is published once per attempt,
and only the worker decides when to retry: after a lost connection the whole connection is dropped
and the row is sent again on a fresh one. Order is kept because the worker waits for each PUBACK.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from pipeline.config import MqttSinkConfig
from pipeline.errors import ConfigError
from pipeline.logs import fields
from pipeline.sinks.base import DeliveryError, Transport
from pipeline.sinks.sqlite import OutboxItem

log = logging.getLogger("vigil.mqtt")

ONLINE = b"online"
OFFLINE = b"offline"


@dataclass
class _State:
    """What paho's callbacks report about one connection."""

    connack: paho.ReasonCode | None = None
    lost: bool = False


def _on_connect(
    client: paho.Client, state: _State, flags: object, reason: paho.ReasonCode, props: object
) -> None:
    state.connack = reason


def _on_disconnect(
    client: paho.Client, state: _State, flags: object, reason: paho.ReasonCode, props: object
) -> None:
    state.lost = True


class _CameraConnection:
    """One MQTT connection for one camera: its last will, its retained status, its events."""

    def __init__(self, config: MqttSinkConfig, camera: str, password: str | None) -> None:
        self.config = config
        self.camera = camera
        self.status_topic = f"{config.topic_prefix}/{camera}/status"
        self.events_topic = f"{config.topic_prefix}/{camera}/events"
        self._state = _State()
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{config.client_id}-{camera}",
            clean_session=True,
            protocol=paho.MQTTv311,
            reconnect_on_failure=False,
        )
        if config.username is not None:
            client.username_pw_set(config.username, password)
        if config.tls:
            client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
        client.will_set(self.status_topic, OFFLINE, qos=1, retain=True)
        # callbacks reach the state through userdata, not bound methods: no reference cycle, so a dropped
        # client is freed (and its sockets closed) at once rather than at the next garbage collection
        client.user_data_set(self._state)
        client.on_connect = _on_connect
        client.on_disconnect = _on_disconnect
        self.client = client

    @property
    def alive(self) -> bool:
        connack = self._state.connack
        return connack is not None and not connack.is_failure and not self._state.lost

    def open(self) -> None:
        """Connect, wait for CONNACK, and publish the retained `online` status."""
        cfg = self.config
        try:
            self.client.connect(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
        except (OSError, ssl.SSLError) as exc:  # refused, unreachable, DNS, TLS handshake
            raise DeliveryError(f"cannot connect to the MQTT broker: {type(exc).__name__}: {exc}") from None
        self._pump_until(lambda: self._state.connack is not None, cfg.ack_timeout_s, "CONNACK")
        connack = self._state.connack
        assert connack is not None
        if connack.is_failure:
            raise DeliveryError(f"MQTT broker refused the connection: {connack}")
        self.publish(self.status_topic, ONLINE, retain=True)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """Publish with QoS 1 and return once the broker's PUBACK arrived."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise DeliveryError(f"MQTT publish to {topic} failed: {paho.error_string(info.rc)}")
        self._pump_until(info.is_published, self.config.ack_timeout_s, f"PUBACK for {topic}")

    def _pump_until(self, done: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            if self._state.lost:
                raise DeliveryError(f"MQTT connection lost while waiting for {what}")
            if time.monotonic() > deadline:
                raise DeliveryError(f"no {what} from the MQTT broker within {timeout_s:g}s")
            rc = self.client.loop(timeout=0.05)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._state.lost = True

    def keepalive(self) -> None:
        """Run the network loop once (PINGREQ when due); notices a dead connection."""
        if self.client.loop(timeout=0.0) != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._state.lost = True

    def close(self, clean: bool) -> None:
        """Disconnect; a clean close first replaces the retained status with `offline`."""
        if clean and self.alive:
            try:
                self.publish(self.status_topic, OFFLINE, retain=True)
            except DeliveryError as exc:
                log.warning("could not publish offline status", extra=fields(camera=self.camera, error=exc))
        self.client.disconnect()
        self.client.loop(timeout=0.05)  # writes DISCONNECT, after which paho closes the socket


class MqttTransport(Transport):
    name = "mqtt"

    def __init__(
        self, config: MqttSinkConfig, cameras: Sequence[str], env: Mapping[str, str] | None = None
    ) -> None:
        env = os.environ if env is None else env
        self.config = config
        self.cameras = list(dict.fromkeys(cameras))
        self._password: str | None = None
        if config.password_env is not None:
            if not env.get(config.password_env):
                raise ConfigError(
                    f"sinks.mqtt.password_env: environment variable {config.password_env} is not set"
                )
            self._password = env[config.password_env]
        self._connections: dict[str, _CameraConnection] = {}
        self._next_presence_try = 0.0

    def _connection(self, camera: str) -> _CameraConnection:
        conn = self._connections.get(camera)
        if conn is not None and conn.alive:
            return conn
        if conn is not None:
            self._drop(camera)
        conn = _CameraConnection(self.config, camera, self._password)
        try:
            conn.open()
        except DeliveryError:
            conn.close(clean=False)
            raise
        self._connections[camera] = conn
        log.info("connected to MQTT broker", extra=fields(camera=camera, topic=conn.events_topic))
        return conn

    def _drop(self, camera: str) -> None:
        conn = self._connections.pop(camera, None)
        if conn is not None:
            conn.close(clean=False)

    def deliver(self, item: OutboxItem) -> None:
        camera = str(item.event["camera"])
        payload = json.dumps(item.event, ensure_ascii=False, separators=(",", ":")).encode()
        conn = self._connection(camera)
        try:
            conn.publish(conn.events_topic, payload)
        except DeliveryError:
            self._drop(camera)  # the next attempt gets a fresh connection and sends the row again
            raise

    def idle(self, stop: threading.Event, seconds: float) -> None:
        """Keep connections alive and (re)announce configured cameras as online while idle."""
        deadline = time.monotonic() + seconds
        self._connect_configured()
        while not stop.is_set():
            for camera, conn in list(self._connections.items()):
                conn.keepalive()
                if not conn.alive:
                    log.warning("MQTT connection lost", extra=fields(camera=camera))
                    self._drop(camera)
            left = deadline - time.monotonic()
            if left <= 0:
                return
            stop.wait(min(0.1, left))

    def _connect_configured(self) -> None:
        """Connect cameras with no connection yet, so their status is `online` before any event.
        Tried at most every few seconds while the broker is down (event delivery has its own backoff)."""
        missing = [c for c in self.cameras if c not in self._connections]
        if not missing or time.monotonic() < self._next_presence_try:
            return
        for camera in missing:
            try:
                self._connection(camera)
            except DeliveryError as exc:
                self._next_presence_try = time.monotonic() + min(5.0, self.config.backoff_max_s)
                log.debug("MQTT presence not connected", extra=fields(camera=camera, error=exc))
                return

    def close(self) -> None:
        for camera in list(self._connections):
            conn = self._connections.pop(camera)
            conn.close(clean=True)
