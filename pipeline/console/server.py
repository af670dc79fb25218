"""Serves the console app (with /metrics and /healthz) with uvicorn on its own thread until the stop event."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading

import uvicorn

from pipeline.config import is_loopback
from pipeline.errors import VigilError
from pipeline.logs import fields

log = logging.getLogger("vigil.http")


class ConsoleServer:
    def __init__(self, app: object, host: str, port: int, token: bool) -> None:
        try:  # bind here, so a busy port fails the command at once with one line
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            # proto IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted connections only for sockets that
            # say so; with proto 0 a keep-alive response waits ~40 ms for the client's delayed ACK
            self._socket = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._socket.bind((host, port))
        except OSError as exc:
            raise VigilError(f"cannot serve the console on {host}:{port}: {exc.strerror or exc}") from exc
        self.host = host
        self.port = int(self._socket.getsockname()[1])
        self._token = token
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="off", proxy_headers=True,
            forwarded_allow_ips="127.0.0.1", timeout_graceful_shutdown=2,
        )  # fmt: skip
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, stop: threading.Event) -> None:
        self._thread = threading.Thread(target=self._serve, name="console", daemon=True)
        self._thread.start()
        threading.Thread(target=self._stop_on, args=(stop,), name="console-stop", daemon=True).start()
        log.info("serving metrics", extra=fields(url=f"{self.url}/metrics", console=f"{self.url}/"))
        if not self._token and not is_loopback(self.host):
            log.warning(
                f"serving /metrics and /healthz on {self.host or 'all interfaces'} WITHOUT authentication "
                "(http.allow_unauthenticated); the console itself needs a login",
                extra=fields(url=self.url),
            )

    def _serve(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._socket]))

    def _stop_on(self, stop: threading.Event) -> None:
        stop.wait()
        self.close()

    def close(self) -> None:
        self._server.should_exit = True
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
