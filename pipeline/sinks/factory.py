"""Pick the sinks of a run from the config: local sinks (JSONL, SQLite) and the network delivery
(MQTT, webhook) that drains the SQLite outbox.

The one module that knows every sink class, so `delivery` need not import its transports (which
import the `Transport` contract from `base`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TextIO

from pipeline.config import DeliveryConfig, SinksConfig, VigilConfig
from pipeline.errors import ConfigError
from pipeline.metrics import Metrics
from pipeline.sinks.base import EventSink, Transport
from pipeline.sinks.delivery import Delivery, DeliveryWorker
from pipeline.sinks.jsonl import JsonlSink
from pipeline.sinks.mqtt import MqttTransport
from pipeline.sinks.sqlite import SqliteEventStore
from pipeline.sinks.webhook import WebhookTransport


def outbox_sink_names(sinks: SinksConfig) -> list[str]:
    """The enabled network sinks, i.e. the `outbox_sinks` the SQLite store must queue rows for."""
    names = []
    if sinks.mqtt.enabled:
        names.append("mqtt")
    if sinks.webhook.enabled:
        names.append("webhook")
    return names


def make_sinks(config: VigilConfig, stdout: TextIO | None = None) -> list[EventSink]:
    """The configured local sinks; `stdout`, when given, is where the JSONL sink writes (its path names
    stdout: "-" or /dev/stdout, which after the redirect would be stderr); "-" alone means sys.stdout."""
    sinks: list[EventSink] = []
    if config.sinks.jsonl.enabled:
        sinks.append(JsonlSink("-" if stdout is not None else config.sinks.jsonl.path, stream=stdout))
    if config.sinks.sqlite.enabled:
        sinks.append(SqliteEventStore(config.sinks.sqlite.path, outbox_sinks=outbox_sink_names(config.sinks)))
    return sinks


def build_transports(
    sinks: SinksConfig, cameras: Sequence[str], env: Mapping[str, str] | None = None
) -> list[tuple[Transport, DeliveryConfig]]:
    """The enabled network sinks' transports with their delivery settings (secrets read from `env`)."""
    out: list[tuple[Transport, DeliveryConfig]] = []
    if sinks.mqtt.enabled:
        out.append((MqttTransport(sinks.mqtt, cameras, env=env), sinks.mqtt))
    if sinks.webhook.enabled:
        out.append((WebhookTransport(sinks.webhook, env=env), sinks.webhook))
    return out


def make_delivery(
    config: VigilConfig,
    cameras: Sequence[str],
    metrics: Metrics,
    env: Mapping[str, str] | None = None,
) -> Delivery | None:
    """The network sinks' workers on a store connection of their own (None when no network sink is on)."""
    names = outbox_sink_names(config.sinks)
    if not names:
        return None
    if not config.sinks.sqlite.enabled:
        raise ConfigError(
            f"sinks.{names[0]}: network sinks deliver from the SQLite outbox: enable sinks.sqlite"
        )
    transports = build_transports(config.sinks, cameras, env=env)  # ConfigError before opening anything
    store = SqliteEventStore(config.sinks.sqlite.path, outbox_sinks=names)
    return Delivery(store, [DeliveryWorker(store, t, metrics, s) for t, s in transports])
