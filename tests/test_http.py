"""The operator's HTTP endpoint: a bearer token guards /metrics and /healthz's details; /healthz's bare
status stays open so container and Kubernetes probes need no secret; serving a non-loopback address
without a token is said loudly."""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from pipeline.http import HealthProbe, MetricsServer
from pipeline.metrics import Metrics

TOKEN = "t0ken-for-tests"


@pytest.fixture
def server() -> Iterator[MetricsServer]:
    metrics = Metrics()
    metrics.source_registered("cam1", live=True)
    srv = MetricsServer(
        metrics, HealthProbe(metrics, stall_limit_s=1e9), host="127.0.0.1", port=0, token=TOKEN
    )
    stop = threading.Event()
    srv.start(stop)
    yield srv
    stop.set()


def get(url: str, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_token_guards_metrics(server: MetricsServer) -> None:
    assert get(f"{server.url}/metrics")[0] == 401
    assert get(f"{server.url}/metrics", "wrong")[0] == 401
    status, body = get(f"{server.url}/metrics", TOKEN)
    assert status == 200 and "vigil_source_up" in body


def test_healthz_status_is_open_its_details_need_the_token(server: MetricsServer) -> None:
    status, body = get(f"{server.url}/healthz")
    assert status == 200 and json.loads(body) == {"status": "ok"}  # what a probe needs, nothing more
    status, body = get(f"{server.url}/healthz", TOKEN)
    assert status == 200 and json.loads(body) == {"status": "ok", "stalled_cameras": [], "failing_stages": []}


def test_opt_out_is_logged_as_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    srv = MetricsServer(metrics, HealthProbe(metrics, 30.0), host="0.0.0.0", port=0, token=None)
    stop = threading.Event()
    with caplog.at_level(logging.INFO, logger="vigil.http"):
        srv.start(stop)
    stop.set()
    (record,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "WITHOUT authentication" in record.getMessage() and "0.0.0.0" in record.getMessage()


def test_loopback_without_token_is_quiet(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    srv = MetricsServer(metrics, HealthProbe(metrics, 30.0), host="127.0.0.1", port=0, token=None)
    stop = threading.Event()
    with caplog.at_level(logging.INFO, logger="vigil.http"):
        srv.start(stop)
    stop.set()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
