"""The first N frames of a finite source: `vigil fit --max-frames` and `vigil eval --max-frames`."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

from pipeline.packets import Frame
from pipeline.sources.base import Source, SourceMonitor


class LimitedSource(Source):
    """The first `max_frames` frames of another finite source (all of them when None).

    `on_frame` is called before each frame is handed on (fit's progress bar counts them).
    """

    live = False

    def __init__(
        self, inner: Source, max_frames: int | None, on_frame: Callable[[], None] | None = None
    ) -> None:
        self.inner = inner
        self.camera = inner.camera
        self.max_frames = max_frames
        self.on_frame = on_frame

    def frames(self, stop: threading.Event, monitor: SourceMonitor) -> Iterator[Frame]:
        frames = self.inner.frames(stop, monitor)
        try:
            for i, frame in enumerate(frames):
                if self.max_frames is not None and i >= self.max_frames:
                    return
                if self.on_frame is not None:
                    self.on_frame()
                yield frame
        finally:
            close = getattr(frames, "close", None)  # the decoder now, not when the generator is collected
            if close is not None:
                close()
