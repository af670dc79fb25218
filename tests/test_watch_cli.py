"""`vigil watch` as an operator runs it: a subprocess, a config file, live RTSP cameras, /metrics over HTTP.

One camera is the real simulator (deploy/camsim) serving a Ped2 clip, behind a password taken from
${CAM_PASSWORD}; the other points at a port nobody listens on for the whole run. The stages are what
`stages.factory` builds with the shared weights, configured as an operator would for many cameras on a
small CPU box: pose and appearance off (their `enabled` switches), 2 analysed fps per camera, so the
real detector, flow, attributes and scene graph run. Source settings are the defaults, so "frames again
within 5 s of the camera's return" is checked for what users actually get.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import DETECTOR, REPO
from prometheus_client.parser import text_string_to_metric_families
from rtsp_server import LoopbackCamera, free_port

pytestmark = pytest.mark.rtsp

CLIP = "test/Test001.mp4"
DRAIN_TIMEOUT_S = 10.0
STALL_LIMIT_S = 3.0  # /healthz: a live camera silent this long is reported
STARTUP_S = 180.0  # python + torch + OpenVINO compile on a busy 2-core machine


@dataclass
class Watch:
    """A running `vigil watch` with its stdout/stderr collected by reader threads."""

    process: subprocess.Popen[str]
    base: str
    stderr: list[str] = field(default_factory=list)
    stdout: list[str] = field(default_factory=list)
    scraped: list[str] = field(default_factory=list)  # every /metrics body seen, for the secret check
    readers: list[threading.Thread] = field(default_factory=list)

    def alive(self) -> bool:
        return self.process.poll() is None

    def metrics(self) -> dict[tuple[str, str], float]:
        """(sample name, camera) -> value; {} while the server is not up yet."""
        try:
            with urllib.request.urlopen(f"{self.base}/metrics", timeout=5) as response:
                text = response.read().decode()
        except (urllib.error.URLError, ConnectionError):
            return {}
        self.scraped.append(text)
        return {
            (s.name, s.labels.get("camera", "")): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def metric(self, name: str, camera: str) -> float:
        return self.metrics().get((name, camera), float("nan"))

    def healthz(self) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"{self.base}/healthz", timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as err:  # 503 carries the same JSON body
            return err.code, err.read().decode()

    def wait_for(self, what: str, check: Callable[[], bool], timeout_s: float) -> float:
        """Poll `check`; fail (with the process's stderr) if it exits or `timeout_s` passes."""
        t0 = time.monotonic()
        while not check():
            if not self.alive():
                pytest.fail(f"vigil exited ({self.process.returncode}) waiting for {what}:\n{self.err()}")
            if time.monotonic() - t0 > timeout_s:
                pytest.fail(f"timed out after {timeout_s} s waiting for {what}:\n{self.err()[-3000:]}")
            time.sleep(0.1)
        return time.monotonic() - t0

    def err(self) -> str:
        return "".join(self.stderr)


def write_config(folder: Path, live_port: int, dead_port: int, http_port: int) -> Path:
    path = folder / "watch.yaml"
    path.write_text(
        f"""\
cameras:
  - name: gate
    url: rtsp://viewer:${{CAM_PASSWORD}}@127.0.0.1:{live_port}/cam
    analysis_fps: 2
  - name: yard
    url: rtsp://viewer:${{CAM_PASSWORD}}@127.0.0.1:{dead_port}/cam
    analysis_fps: 2
runtime:
  drain_timeout_s: {DRAIN_TIMEOUT_S}
http:
  port: {http_port}
  stall_limit_s: {STALL_LIMIT_S}
sinks:
  jsonl:
    path: events.jsonl
  sqlite:
    path: events.db
detector:
  model: {DETECTOR}
pose:
  enabled: false
appearance:
  enabled: false
scoring:
  models_dir: models
events:
  media_dir: media
"""
    )
    return path


@pytest.fixture
def watch(tmp_path: Path, camera: LoopbackCamera) -> Iterator[tuple[Watch, str]]:
    """`vigil watch` on the live camera and a dead one; yields it with the camera password."""
    password = f"pw-{secrets.token_hex(8)}"
    http_port = free_port()
    assert camera.port is not None
    config = write_config(tmp_path, camera.port, free_port(), http_port)
    env = dict(os.environ, CAM_PASSWORD=password, YOLO_OFFLINE="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "watch", "-c", str(config)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    run = Watch(process, f"http://127.0.0.1:{http_port}")
    for stream, dest in ((process.stderr, run.stderr), (process.stdout, run.stdout)):
        reader = threading.Thread(target=lambda s=stream, d=dest: d.extend(iter(s.readline, "")), daemon=True)
        reader.start()
        run.readers.append(reader)
    try:
        yield run, password
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_watch_survives_dead_and_returning_cameras_and_keeps_the_password_secret(
    watch: tuple[Watch, str], camera: LoopbackCamera, tmp_path: Path
) -> None:
    run, password = watch

    # ---- the live camera flows, the dead one keeps being retried -----------------------------------
    run.wait_for(
        "frames from the live camera",
        lambda: (
            run.metric("vigil_source_frames_total", "gate") > 10
            and run.metric("vigil_source_up", "gate") == 1
        ),
        STARTUP_S,
    )
    first = run.metrics()

    def rose(name: str, camera_name: str) -> bool:
        return run.metric(name, camera_name) > first[(name, camera_name)]

    run.wait_for(
        "live frames and dead-camera reconnects to rise",
        lambda: rose("vigil_source_frames_total", "gate") and rose("vigil_source_reconnects_total", "yard"),
        15,  # default backoff: attempts at most 4 s apart
    )
    now = run.metrics()
    assert now[("vigil_source_up", "gate")] == 1 and now[("vigil_source_up", "yard")] == 0
    assert now[("vigil_source_frames_total", "yard")] == 0
    run.wait_for(
        "the perception stages to analyse live frames",
        lambda: run.metric("vigil_stage_frames_out_total", "gate") > 0,
        60,
    )
    run.wait_for("/healthz to report the dead camera", lambda: run.healthz()[0] == 503, 2 * STALL_LIMIT_S)
    status, body = run.healthz()
    assert status == 503 and '"stalled_cameras": ["yard"]' in body and '"failing_stages": []' in body, body

    # ---- the live camera dies for 10 s and comes back ---------------------------------------------
    reconnects_before = run.metric("vigil_source_reconnects_total", "gate")
    camera.kill()
    killed = time.monotonic()
    run.wait_for("up=0 after the kill", lambda: run.metric("vigil_source_up", "gate") == 0, 5)
    time.sleep(max(0.0, killed + 10.0 - time.monotonic()))
    assert run.alive(), run.err()
    frames_down = run.metric("vigil_source_frames_total", "gate")

    camera.restart()  # returns once the simulator prints READY: the camera is back
    back = run.wait_for(
        "frames again after the camera's return",
        lambda: (
            run.metric("vigil_source_frames_total", "gate") > frames_down
            and run.metric("vigil_source_up", "gate") == 1
        ),
        15,
    )
    print(f"frames again {back:.2f} s after the camera came back (default source settings)")
    assert back < 5.0, f"frames again only {back:.1f} s after the camera came back"
    assert run.metric("vigil_source_reconnects_total", "gate") > reconnects_before
    assert run.alive()

    # ---- SIGTERM: drain and exit 0 -----------------------------------------------------------------
    sent = time.monotonic()
    run.process.send_signal(signal.SIGTERM)
    code = run.process.wait(DRAIN_TIMEOUT_S + 20)
    took = time.monotonic() - sent
    for reader in run.readers:
        reader.join(5)
    stderr, stdout = run.err(), "".join(run.stdout)
    print(f"exit {code} {took:.2f} s after SIGTERM")
    assert code == 0, stderr[-3000:]
    assert took < DRAIN_TIMEOUT_S, f"took {took:.1f} s to exit after SIGTERM"
    assert "Traceback" not in stderr
    assert not [line for line in stderr.splitlines() if line.startswith("vigil: error:")], stderr[-3000:]
    summary = [line for line in stderr.splitlines() if line.startswith("vigil: summary:")]
    assert len(summary) == 1, stderr[-3000:]
    counts = dict(re.findall(r"(gate|yard)=(\d+)/\d+", summary[0]))
    assert int(counts["gate"]) > 0 and counts["yard"] == "0", summary[0]
    assert "stage errors 0;" in summary[0] and "source errors 0;" in summary[0], summary[0]

    # ---- the password never leaves the process ----------------------------------------------------
    assert f"rtsp://viewer:***@127.0.0.1:{camera.port}/cam" in stderr  # the URL is logged, redacted
    assert run.scraped and not any(password in text for text in run.scraped)
    assert password not in stderr and password not in stdout
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "watch.yaml"]
    assert {p.name for p in written} >= {"events.jsonl", "events.db"}, written
    for path in written:  # event store (+ WAL), JSONL, media: no copy of the secret anywhere
        assert password.encode() not in path.read_bytes(), path
