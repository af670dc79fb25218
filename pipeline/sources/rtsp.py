"""A live RTSP camera with a reconnecting watchdog.

The camera never ends by itself: a refused connection, a wrong path, a timeout, a decoder error,
a stall (no frame for `stall_timeout_s`) or a plain end of stream (what a client sees when the
server dies) each close the connection and reconnect after a capped exponential backoff, forever,
until the stop event is set. A blocked read cannot be woken by the stop event directly; PyAV's
interrupt-based timeouts (`av.open(..., timeout=(open_timeout_s, stall_timeout_s))`) bound it, so
a stop takes at most about `stall_timeout_s` even against a frozen server, and one frame time
while frames flow.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass

import av
import av.error

from pipeline.backoff import Backoff
from pipeline.config import SourceConfig
from pipeline.packets import Frame
from pipeline.redaction import redact
from pipeline.sources.base import Source, SourceMonitor
from pipeline.sources.decode import (
    DEFAULT_FPS,
    HardwareDecode,
    PtsClock,
    first_video_stream,
    stream_fps,
    to_bgr,
)

# What a network camera can throw at us; all of them mean "disconnect, then try again".
# (av.error.ConnectionRefusedError, HTTPNotFoundError, TimeoutError, ExitError, InvalidDataError
# are FFmpegError subclasses; plain socket errors are OSError.)
NETWORK_ERRORS: tuple[type[BaseException], ...] = (av.error.FFmpegError, OSError)


def describe_error(exc: BaseException, read_timeout_s: float) -> str:
    """One line for logs: what failed, without errno noise, the URL or its password."""
    if isinstance(exc, av.error.ExitError):  # PyAV's interrupt callback: its timeout expired
        return f"timed out: no data for {read_timeout_s:g} s"
    strerror = getattr(exc, "strerror", None)  # FFmpegError and OSError: the message without errno/URL
    if isinstance(exc, av.error.FFmpegError | OSError) and strerror:
        return redact(f"{type(exc).__name__}: {strerror}")
    return redact(f"{type(exc).__name__}: {exc}")


@dataclass
class _Continuity:
    """What survives a reconnect: frame numbering and the clock, so indices and pts keep rising."""

    clock: PtsClock
    index: int = 0
    last_frame_wall: float | None = None


class RtspSource(Source):
    """One RTSP camera, decoded with PyAV over TCP (or UDP), reconnecting until stopped."""

    live = True

    def __init__(self, camera: str, url: str, config: SourceConfig) -> None:
        self.camera = camera
        self.url = url
        self.config = config
        self.decode = HardwareDecode(config.hwaccel, camera)

    @property
    def url_for_log(self) -> str:
        return redact(self.url)

    def av_options(self) -> dict[str, str]:
        # `timeout` is the socket I/O timeout in microseconds (`stimeout` is ignored by PyAV 18 and
        # hangs); a short analyzeduration makes the first frame come in ~0.3 s instead of ~2.4 s.
        return {
            "rtsp_transport": self.config.rtsp_transport,
            "timeout": str(int(self.config.stall_timeout_s * 1e6)),
            "analyzeduration": "100000",
        }

    def frames(self, stop: threading.Event, monitor: SourceMonitor) -> Iterator[Frame]:
        initial_s = self.config.backoff_initial_s  # a cap below the first delay means: always the first
        backoff = Backoff(initial_s, max(initial_s, self.config.backoff_max_s))
        state = _Continuity(clock=PtsClock(DEFAULT_FPS))
        attempt = 0
        last_reason: str | None = None
        while not stop.is_set():
            before = state.index
            connected, reason = yield from self._session(stop, monitor, state)
            if stop.is_set():
                return
            if state.index > before:  # frames flowed: the camera works, start backing off afresh
                backoff.reset()
                attempt = 0
            if connected or reason != last_reason:  # one line per outage, not one per failed attempt
                monitor.disconnected(reason)
            last_reason = reason
            attempt += 1
            delay = backoff.next_delay()
            monitor.reconnecting(attempt, delay)
            if stop.wait(delay):
                return

    def _session(
        self, stop: threading.Event, monitor: SourceMonitor, state: _Continuity
    ) -> Generator[Frame, None, tuple[bool, str]]:
        """One connection: yields its frames; returns (was connected, why it ended)."""
        cfg = self.config
        try:
            container = av.open(
                self.url,
                mode="r",
                options=self.av_options(),
                timeout=(cfg.open_timeout_s, cfg.stall_timeout_s),
                hwaccel=self.decode.hwaccel(),
            )
        except NETWORK_ERRORS as exc:
            return False, describe_error(exc, cfg.stall_timeout_s)
        with container:
            stream = first_video_stream(container, cfg.decode_threads)
            if stream is None:
                return False, "the stream has no video track"
            fps = stream_fps(stream)
            gap = 0.0 if state.last_frame_wall is None else time.time() - state.last_frame_wall
            state.clock.new_session(fps, gap_s=gap)
            monitor.connected(self.url_for_log)
            last_frame = time.monotonic()
            try:
                for packet in container.demux(stream):
                    for picture in packet.decode():
                        now = time.time()
                        frame = Frame(
                            camera=self.camera,
                            index=state.index,
                            pts=state.clock.pts(picture.time),
                            image=to_bgr(picture),
                            captured_at=now,
                            fps=fps,
                        )
                        state.index += 1
                        state.last_frame_wall = now
                        last_frame = time.monotonic()
                        yield frame
                    if stop.is_set():
                        return True, "stopped"
                    if time.monotonic() - last_frame > cfg.stall_timeout_s:
                        return True, f"stalled: no frame for {cfg.stall_timeout_s:g} s"
            except NETWORK_ERRORS as exc:
                return True, describe_error(exc, cfg.stall_timeout_s)
        return True, "end of stream (server closed the connection)"
