"""The operator's HTTP endpoint: Prometheus `/metrics` and `/healthz`, optionally behind a bearer token.

Binds to 127.0.0.1 unless configured otherwise (another address needs a token, or the config's explicit
`http.allow_unauthenticated`, which is logged as a warning). With a token, `/metrics` and the details of
`/healthz` (which cameras stall, which stages fail) need it; the bare `/healthz` status and code stay
open, so container HEALTHCHECKs and Kubernetes probes work without the secret. Runs in its own thread
and stops with the stop event.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pipeline.config import is_loopback
from pipeline.errors import VigilError
from pipeline.logs import fields
from pipeline.metrics import Metrics

log = logging.getLogger("vigil.http")

StartResponse = Callable[..., object]


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        log.debug(format % args)


class HealthProbe:
    """Healthy while no live camera is stalled past `stall_limit_s` and no stage is failing."""

    def __init__(self, metrics: Metrics, stall_limit_s: float) -> None:
        self.metrics = metrics
        self.stall_limit_s = stall_limit_s

    def check(self) -> tuple[bool, dict[str, object]]:
        stalled = self.metrics.stalled_cameras(self.stall_limit_s)
        failing = self.metrics.unhealthy_stages()
        ok = not stalled and not failing
        return ok, {
            "status": "ok" if ok else "unhealthy",
            "stalled_cameras": stalled,
            "failing_stages": failing,
        }

    def response(self, authorised: bool) -> tuple[int, bytes]:
        """/healthz's status code and JSON body: the status is open (probes carry no secret), which
        cameras stall and which stages fail only for the token's holder."""
        ok, detail = self.check()
        if not authorised:
            detail = {"status": detail["status"]}
        return (200 if ok else 503), json.dumps(detail).encode() + b"\n"


class MetricsServer:
    def __init__(
        self,
        metrics: Metrics,
        health: HealthProbe,
        host: str = "127.0.0.1",
        port: int = 9108,
        token: str | None = None,
    ) -> None:
        self.metrics = metrics
        self.health = health
        self._token = token
        try:
            self._server = make_server(
                host, port, self._app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler
            )
        except OSError as exc:
            raise VigilError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from exc
        self.host = host
        self.port = int(self._server.server_port)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, stop: threading.Event) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="http", daemon=True
        )
        self._thread.start()
        threading.Thread(target=self._stop_on, args=(stop,), name="http-stop", daemon=True).start()
        log.info("serving metrics", extra=fields(url=f"{self.url}/metrics"))
        if not self._token and not is_loopback(self.host):
            log.warning(
                f"serving /metrics and /healthz on {self.host or 'all interfaces'} WITHOUT authentication "
                "(http.allow_unauthenticated): anyone who reaches this port reads them; set http.token_env "
                "unless this network is trusted",
                extra=fields(url=self.url),
            )

    def _stop_on(self, stop: threading.Event) -> None:
        stop.wait()
        self.close()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _authorised(self, environ: dict[str, object]) -> bool:
        if not self._token:
            return True
        header = str(environ.get("HTTP_AUTHORIZATION", ""))
        return hmac.compare_digest(header.encode(), f"Bearer {self._token}".encode())

    def _app(self, environ: dict[str, object], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        authorised = self._authorised(environ)
        if path == "/healthz":
            code, body = self.health.response(authorised)
            start_response(
                "200 OK" if code == 200 else "503 Service Unavailable", [("Content-Type", "application/json")]
            )
            return [body]
        if not authorised:
            start_response(
                "401 Unauthorized", [("Content-Type", "text/plain"), ("WWW-Authenticate", "Bearer")]
            )
            return [b"missing or wrong bearer token\n"]
        if path == "/metrics":
            body = generate_latest(self.metrics.registry)
            start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
            return [body]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: try /metrics or /healthz\n"]
