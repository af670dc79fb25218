"""A recorded video file, decoded losslessly with PyAV: every frame, in order, then the end."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import av
import av.container
import av.error

from pipeline.errors import SourceError
from pipeline.packets import Frame
from pipeline.sources.base import Source, SourceMonitor
from pipeline.sources.decode import HardwareDecode, PtsClock, first_video_stream, stream_fps, to_bgr


def _open_problem(exc: av.error.FFmpegError) -> str:
    """What went wrong opening a file, in a few words."""
    if isinstance(exc, av.error.FileNotFoundError):
        return "file not found"
    if isinstance(exc, av.error.IsADirectoryError):
        return "is a directory, not a video file"
    if isinstance(exc, av.error.PermissionError):
        return "permission denied"
    if isinstance(exc, av.error.InvalidDataError):
        return "not a readable video (corrupt file or unknown container)"
    return exc.strerror or type(exc).__name__


class FileSource(Source):
    """One camera replayed from a file (mp4, avi, mkv, ...): finite and lossless."""

    live = False

    def __init__(self, camera: str, path: str | Path, hwaccel: str = "none", decode_threads: int = 1) -> None:
        self.camera = camera
        self.path = Path(path)
        self.decode = HardwareDecode(hwaccel, camera)
        self.decode_threads = decode_threads

    def _open(self) -> av.container.InputContainer:
        try:
            return av.open(str(self.path), mode="r", hwaccel=self.decode.hwaccel())
        except av.error.FFmpegError as exc:
            raise SourceError(f"cannot open video file {self.path}: {_open_problem(exc)}") from exc

    def frames(self, stop: threading.Event, monitor: SourceMonitor) -> Iterator[Frame]:
        container = self._open()
        with container:
            stream = first_video_stream(container, self.decode_threads)
            if stream is None:
                raise SourceError(f"cannot read video file {self.path}: it has no video stream")
            fps = stream_fps(stream)
            declared = int(stream.frames or 0)  # 0 when the container does not say
            clock = PtsClock(fps)
            clock.new_session(fps)
            monitor.connected(str(self.path))
            index = 0
            try:
                for packet in container.demux(stream):
                    for picture in packet.decode():
                        yield Frame(
                            camera=self.camera,
                            index=index,
                            pts=clock.pts(picture.time),
                            image=to_bgr(picture),
                            captured_at=time.time(),
                            fps=fps,
                        )
                        index += 1
                    if stop.is_set():
                        return
            except av.error.FFmpegError as exc:
                problem = exc.strerror or type(exc).__name__
                raise SourceError(f"video file {self.path} failed after {index} frames: {problem}") from exc
            if declared and index < declared:
                raise SourceError(
                    f"video file {self.path} ended after {index} of its {declared} frames (truncated?)"
                )
