"""RTSP cameras end to end: the real simulator on loopback, the real runner (live), real /metrics.

The camera is killed and restarted, frozen (SIGSTOP), or absent from the start; the source must
reconnect by itself, report up/reconnects through Prometheus and /healthz, keep frame numbers and
timestamps rising, and stop promptly when the stop event is set.
"""

from __future__ import annotations

import itertools
import json
import logging
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import av
import pytest
from prometheus_client.parser import text_string_to_metric_families
from rtsp_server import CAMSIM, SYSTEM_PYTHON, LoopbackCamera, free_port

from pipeline.backoff import Backoff
from pipeline.config import SourceConfig
from pipeline.graph import build_graph
from pipeline.http import HealthProbe, MetricsServer
from pipeline.logs import KeyValueFormatter
from pipeline.metrics import Metrics
from pipeline.packets import FramePacket
from pipeline.runner import Runner, RunnerOptions, RunReport
from pipeline.sources.base import Source
from pipeline.sources.rtsp import RtspSource

CLIP = "test/Test001.mp4"
# Short timeouts and a low backoff cap so a 10 s outage is noticed and recovered from in seconds.
FAST = SourceConfig(open_timeout_s=2.0, stall_timeout_s=1.5, backoff_initial_s=0.25, backoff_max_s=2.0)


# ---- helpers -------------------------------------------------------------------------------------


def scrape(base: str) -> dict[tuple[str, str], float]:
    """(sample name, camera) -> value, from /metrics over HTTP."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, s.labels.get("camera", "")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def healthz(base: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:  # 503 carries the same JSON body
        return err.code, json.loads(err.read())


def wait_for(what: str, check: Callable[[], bool], timeout_s: float) -> float:
    """Poll `check` until true; returns the seconds it took, fails the test after `timeout_s`."""
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout_s:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.1)
    return time.monotonic() - t0


@dataclass
class LiveRun:
    runner: Runner
    thread: threading.Thread
    base: str
    packets: list[FramePacket] = field(default_factory=list)
    report: RunReport | None = None

    def metric(self, name: str, camera: str) -> float:
        return scrape(self.base).get((name, camera), float("nan"))


@contextmanager
def live_run(
    sources: Sequence[Source], stall_limit_s: float = 30.0, stop_within_s: float = 3.0
) -> Iterator[LiveRun]:
    """The real runner in live mode in a thread, with a real MetricsServer on a free port."""
    metrics, stop = Metrics(), threading.Event()
    server = MetricsServer(metrics, HealthProbe(metrics, stall_limit_s), port=0)
    packets: list[FramePacket] = []
    runner = Runner(
        build_graph([]), sources, metrics, stop, options=RunnerOptions(live=True), on_packet=packets.append
    )
    run = LiveRun(runner, threading.Thread(target=lambda: None), server.url, packets)

    def target() -> None:
        run.report = runner.run()

    run.thread = threading.Thread(target=target, name="test-runner", daemon=True)
    server.start(stop)
    run.thread.start()
    try:
        yield run
        assert run.thread.is_alive(), "a live runner must not end by itself"
        t0 = time.monotonic()
        stop.set()
        run.thread.join(10)
        took = time.monotonic() - t0
        assert not run.thread.is_alive(), "runner did not return after stop"
        print(f"runner returned {took:.2f} s after stop")
        assert took < stop_within_s, f"runner took {took:.1f} s to return after stop"
        assert run.report is not None and run.report.clean_shutdown
        assert not run.report.source_errors
    finally:
        stop.set()
        run.thread.join(10)


def assert_rising(packets: list[FramePacket], camera: str) -> list[float]:
    frames = [p.frame for p in packets if p.frame.camera == camera]
    indices, pts = [f.index for f in frames], [f.pts for f in frames]
    assert all(b > a for a, b in itertools.pairwise(indices)), "frame indices must rise"
    assert all(b > a for a, b in itertools.pairwise(pts)), "pts must rise across reconnects"
    return pts


# ---- tests ---------------------------------------------------------------------------------------


def test_backoff_is_capped_exponential_and_resets() -> None:
    backoff = Backoff(0.5, 4.0)
    assert [backoff.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.next_delay() == 0.5


@pytest.mark.rtsp
def test_camera_killed_for_10s_then_back_reconnects(camera: LoopbackCamera) -> None:
    with live_run([RtspSource("door", camera.url, FAST)]) as run:
        wait_for(
            "frames from the camera",
            lambda: (
                run.metric("vigil_source_frames_total", "door") > 10
                and run.metric("vigil_source_up", "door") == 1
            ),
            10,
        )
        reconnects_before = run.metric("vigil_source_reconnects_total", "door")
        camera.kill()
        killed = time.monotonic()
        wait_for("up=0 after the kill", lambda: run.metric("vigil_source_up", "door") == 0, 3)
        time.sleep(max(0.0, killed + 10.0 - time.monotonic()))
        frames_down = run.metric("vigil_source_frames_total", "door")
        assert run.thread.is_alive()

        camera.restart()
        back = wait_for(
            "frames again after the restart",
            lambda: (
                run.metric("vigil_source_frames_total", "door") > frames_down
                and run.metric("vigil_source_up", "door") == 1
            ),
            10,
        )
        print(f"frames again {back:.2f} s after the camera came back")
        assert back < 5.0, f"reconnected {back:.1f} s after the camera came back"
        assert run.metric("vigil_source_reconnects_total", "door") > reconnects_before
        wait_for(
            "frames to keep flowing",
            lambda: run.metric("vigil_source_frames_total", "door") > frames_down + 5,
            5,
        )
    pts = assert_rising(run.packets, "door")
    assert max(b - a for a, b in itertools.pairwise(pts)) > 9.0, "the outage shows as a gap in pts"


@pytest.mark.rtsp
def test_dead_camera_beside_a_live_one(camera: LoopbackCamera, caplog: pytest.LogCaptureFixture) -> None:
    dead_url = f"rtsp://admin:s3cret@127.0.0.1:{free_port()}/cam"
    caplog.set_level(logging.INFO, logger="vigil")
    live_url = camera.url.replace("rtsp://", "rtsp://viewer:s3cret@")  # the simulator ignores credentials
    sources = [RtspSource("live", live_url, FAST), RtspSource("dead", dead_url, FAST)]
    with live_run(sources, stall_limit_s=1.5) as run:
        wait_for("the live camera to flow", lambda: run.metric("vigil_source_frames_total", "live") > 20, 10)
        first = scrape(run.base)

        def rose(name: str, camera: str) -> bool:
            return run.metric(name, camera) > first[(name, camera)]

        wait_for(
            "the dead camera to keep retrying while the live one keeps flowing",
            lambda: (
                rose("vigil_source_reconnects_total", "dead") and rose("vigil_source_frames_total", "live")
            ),
            5,
        )
        later = scrape(run.base)
        assert later[("vigil_source_up", "live")] == 1 and later[("vigil_source_up", "dead")] == 0
        assert later[("vigil_source_frames_total", "dead")] == 0
        status, body = healthz(run.base)
        assert status == 503 and body["stalled_cameras"] == ["dead"]
    assert_rising(run.packets, "live")
    logged = "\n".join(KeyValueFormatter().format(record) for record in caplog.records)
    assert "s3cret" not in logged
    assert f"rtsp://viewer:***@127.0.0.1:{camera.port}/cam" in logged


@pytest.mark.rtsp
def test_frozen_camera_trips_the_watchdog_and_stop_is_prompt(camera: LoopbackCamera) -> None:
    blocked_read_limit = 2 * FAST.stall_timeout_s + 1.5  # PyAV's read timeout fires after about 2x
    with live_run([RtspSource("hung", camera.url, FAST)], stop_within_s=blocked_read_limit) as run:

        def frames() -> float:
            return run.metric("vigil_source_frames_total", "hung")

        wait_for("frames", lambda: frames() > 5, 10)
        camera.pause()  # SIGSTOP: the TCP connection stays open, nothing arrives (fixture resumes it)
        took = wait_for(
            "the watchdog to drop the camera", lambda: run.metric("vigil_source_up", "hung") == 0, 8
        )
        print(f"frozen camera dropped after {took:.2f} s")
        assert took < blocked_read_limit
        reconnects = run.metric("vigil_source_reconnects_total", "hung")
        assert reconnects >= 1
        camera.resume()
        before = frames()
        wait_for("frames after the camera thawed", lambda: frames() > before + 5, 10)
        camera.pause()
        time.sleep(0.5)  # the source is now blocked in a read on the frozen server
        # leaving the block sets stop: the blocked read must end through PyAV's timeout


def first_frames(url: str, count: int) -> list[tuple[int, int]]:
    """Sizes of the first `count` frames a bare PyAV client decodes from `url`."""
    options = {"rtsp_transport": "tcp", "timeout": "5000000", "analyzeduration": "100000"}
    sizes = []
    with av.open(url, options=options, timeout=(5.0, 5.0)) as container:
        for frame in container.decode(video=0):
            sizes.append((frame.width, frame.height))
            if len(sizes) == count:
                break
    return sizes


@pytest.mark.rtsp
def test_camsim_serves_several_mounts_and_exits_cleanly(camsim: None, ped2: Path) -> None:
    clips = [f"{ped2 / 'test/Test002.mp4'}:a", f"{ped2 / 'train/Train001.mp4'}:b"]
    proc = subprocess.Popen(
        [SYSTEM_PYTHON, str(CAMSIM), "--port", "0", *clips], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        urls = [proc.stdout.readline().split()[1] for _ in clips]
        assert [u.rsplit("/", 1)[1] for u in urls] == ["a", "b"]
        for url in urls:
            assert first_frames(url, 5) == [(360, 240)] * 5
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


@pytest.mark.rtsp
@pytest.mark.parametrize(
    ("clips", "message"), [(["{clip}:x", "{clip}:x"], "used twice"), (["{missing}"], "clip not found")]
)
def test_camsim_rejects_bad_arguments(
    camsim: None, ped2: Path, tmp_path: Path, clips: list[str], message: str
) -> None:
    args = [c.format(clip=ped2 / CLIP, missing=tmp_path / "missing.mp4") for c in clips]
    done = subprocess.run([SYSTEM_PYTHON, str(CAMSIM), "--port", "0", *args], capture_output=True, text=True)
    assert done.returncode == 2 and message in done.stderr
