"""Webhook delivery: POST each event's JSON, signed, and count it delivered only on a 2xx answer.

The body is signed with HMAC-SHA256 under a secret read from the environment variable named by
`sinks.webhook.secret_env`; the receiver recomputes it over the raw body and compares it with the
`X-Vigil-Signature: sha256=<hex>` header. `X-Vigil-Delivery` carries the outbox row id, unique per
message, so a receiver can drop the rare repeat (a 2xx lost on the way back is retried). Redirects
are not followed (a 3xx is a failure): a POST must not silently turn into a GET elsewhere. Error
messages never contain the URL, which may hold credentials.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import urllib.error
import urllib.request
from collections.abc import Mapping

from pipeline.config import WebhookSinkConfig
from pipeline.errors import ConfigError
from pipeline.sinks.base import DeliveryError, Transport
from pipeline.sinks.sqlite import OutboxItem

SIGNATURE_HEADER = "X-Vigil-Signature"


def sign(secret: bytes, body: bytes) -> str:
    """The `X-Vigil-Signature` value for `body`."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, header: str | None) -> bool:
    """What a receiver does: constant-time comparison of the header with the body's signature."""
    return header is not None and hmac.compare_digest(sign(secret, body), header)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # urllib then raises HTTPError with the 3xx code


class WebhookTransport(Transport):
    name = "webhook"

    def __init__(self, config: WebhookSinkConfig, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        if config.url is None:
            raise ConfigError("sinks.webhook.url: an enabled webhook needs a url")
        if config.secret_env is None:
            raise ConfigError(
                "sinks.webhook.secret_env: name the environment variable holding the signing secret"
            )
        secret = env.get(config.secret_env)
        if not secret:
            raise ConfigError(
                f"sinks.webhook.secret_env: environment variable {config.secret_env} is not set"
            )
        self.config = config
        self._url = config.url
        self._secret = secret.encode()
        self._opener = urllib.request.build_opener(_NoRedirect)

    def deliver(self, item: OutboxItem) -> None:
        body = json.dumps(item.event, ensure_ascii=False, separators=(",", ":")).encode()
        request = urllib.request.Request(
            self._url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": "vigil-webhook",
                SIGNATURE_HEADER: sign(self._secret, body),
                "X-Vigil-Event-Id": str(item.event["id"]),
                "X-Vigil-Delivery": str(item.id),
            },
        )
        try:
            with self._opener.open(request, timeout=self.config.timeout_s) as response:
                response.read()
                status = int(response.status)
        except urllib.error.HTTPError as exc:  # a non-2xx answer (3xx included, redirects are refused)
            exc.close()
            raise DeliveryError(f"webhook answered HTTP {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:  # refused, DNS, TLS
            raise DeliveryError(f"webhook unreachable: {exc.reason}") from None
        except (TimeoutError, OSError) as exc:  # read timeout, connection reset
            raise DeliveryError(f"webhook request failed: {type(exc).__name__}: {exc}") from None
        if not 200 <= status < 300:
            raise DeliveryError(f"webhook answered HTTP {status}")
