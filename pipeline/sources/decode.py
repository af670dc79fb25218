"""PyAV helpers shared by the file and RTSP sources: frame rate, a monotonic clock, BGR conversion,
hardware decoding."""

from __future__ import annotations

import logging
import math

import av
import av.codec
import av.container
import av.error
import av.video.frame
import av.video.stream
import numpy as np
from av.codec.hwaccel import HWAccel, hwdevices_available

DEFAULT_FPS = 10.0
log = logging.getLogger("vigil.source")


def cuda_decode_possible() -> bool:
    """FFmpeg was built with CUDA device support and torch sees a CUDA GPU."""
    if "cuda" not in hwdevices_available():
        return False
    import torch

    return bool(torch.cuda.is_available())


class HardwareDecode:
    """The decoder device of one source (`source.hwaccel`): `cuda` asks FFmpeg for NVDEC (pictures are
    downloaded to system memory as they are decoded; codecs NVDEC lacks decode on the CPU), `auto`
    does so when a CUDA GPU is there, `none` decodes on the CPU. The device is opened once up front:
    when it cannot be (no GPU, a driver without NVDEC), the source says so once and decodes on the
    CPU, so an input that fails later fails for its own reasons, not the device's."""

    def __init__(self, setting: str, camera: str) -> None:
        self.camera = camera
        self.device: str | None = None
        if setting == "cuda" or (setting == "auto" and cuda_decode_possible()):
            try:
                HWAccel("cuda").create(av.codec.Codec("h264", "r"))
                self.device = "cuda"
            except (av.error.FFmpegError, OSError, ValueError) as exc:
                log.warning(
                    "hardware decoding unavailable: decoding on the CPU",
                    extra={"camera": camera, "device": "cuda", "error": str(exc)},
                )

    def hwaccel(self) -> HWAccel | None:
        return None if self.device is None else HWAccel(self.device, allow_software_fallback=True)


def stream_fps(stream: av.video.stream.VideoStream, default: float = DEFAULT_FPS) -> float:
    """The stream's frame rate (average, else guessed), or `default` when it declares none."""
    for rate in (stream.average_rate, stream.guessed_rate):
        if rate is not None and rate > 0:
            value = float(rate)
            if math.isfinite(value) and 0 < value <= 1000:
                return value
    return default


def first_video_stream(
    container: av.container.InputContainer, threads: int = 0
) -> av.video.stream.VideoStream | None:
    """The first video stream, set to decode on `threads` FFmpeg threads (0: FFmpeg's choice)."""
    if not container.streams.video:
        return None
    stream = container.streams.video[0]
    if threads:
        stream.codec_context.thread_count = threads
    return stream


def to_bgr(frame: av.video.frame.VideoFrame) -> np.ndarray:
    """A decoded picture as a contiguous HxWx3 uint8 BGR array."""
    return np.ascontiguousarray(frame.to_ndarray(format="bgr24"))


class PtsClock:
    """Turns decoder timestamps into seconds that start at 0 and only ever increase.

    Each connection (a session) has its own timestamp origin: a camera that reconnects restarts
    its clock, and a frame may come without a timestamp (pts=None, typical of the first RTSP
    frame). Within a session pts follow the stream; a missing or backwards timestamp becomes
    "previous + one frame". A new session continues from the previous one, plus the wall-clock gap
    when `gap_s` is given (so an outage shows up as a jump in time, as it really was).
    """

    def __init__(self, fps: float) -> None:
        self.fps = fps
        self._last: float | None = None
        self._offset = 0.0  # pts of the session's first frame
        self._base: float | None = None  # stream time that maps to _offset
        self._session_frames = 0

    @property
    def step(self) -> float:
        return 1.0 / self.fps

    def new_session(self, fps: float, gap_s: float = 0.0) -> None:
        self.fps = fps
        self._offset = 0.0 if self._last is None else self._last + max(self.step, gap_s)
        self._base = None
        self._session_frames = 0

    def pts(self, stream_time: float | None) -> float:
        last = self._last
        expected = self._offset if last is None or self._session_frames == 0 else last + self.step
        if stream_time is not None and math.isfinite(stream_time) and self._base is None:
            self._base = stream_time - (expected - self._offset)
        if stream_time is None or self._base is None or not math.isfinite(stream_time):
            value = expected
        else:
            value = self._offset + (stream_time - self._base)
            if self._last is not None and value <= self._last:
                value = self._last + self.step
        self._last = value
        self._session_frames += 1
        return value
