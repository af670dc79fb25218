"""Event media: annotated JPEG snapshots and mp4 clips with a pre-roll ring buffer per camera.

Both are plain objects the event stage owns; they know nothing about the runner. Clips are
encoded with PyAV (H.264 when the build has libx264, else MPEG-4 Part 2) as frames arrive; events
that overlap on one camera share one clip, so a camera costs at most one encoder at a time and no
frame copies beyond the pre-roll buffer.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from pipeline.errors import PacketError
from pipeline.packets import Frame, Reason

log = logging.getLogger("vigil.media")

#: BGR colours: the event's object in red, other objects in grey
EVENT_COLOUR = (0, 0, 255)
OTHER_COLOUR = (160, 160, 160)


@dataclass(frozen=True, slots=True)
class Box:
    """A box to draw on a snapshot."""

    xyxy: tuple[float, float, float, float]
    label: str
    highlight: bool = False


def draw_snapshot(
    image: np.ndarray, boxes: Sequence[Box], reasons: Sequence[Reason], top: int = 3
) -> np.ndarray:
    """A copy of `image` (BGR) with the boxes and the `top` reasons' sentences drawn on it.

    Only highlighted boxes carry their label (on a dark patch); the others are thin grey outlines,
    so a crowded scene stays readable. Reason lines longer than the image are cut with "...".
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise PacketError(f"snapshot image: expected (H, W, 3) uint8, got {image.shape} {image.dtype}")
    out = np.ascontiguousarray(image.copy())
    h, w = out.shape[:2]
    scale = max(0.35, min(w, h) / 700.0)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for box in sorted(boxes, key=lambda b: b.highlight):  # the event's box drawn last, on top
        x1, y1, x2, y2 = (round(v) for v in box.xyxy)
        if not box.highlight:
            cv2.rectangle(out, (x1, y1), (x2, y2), OTHER_COLOUR, 1)
            continue
        cv2.rectangle(out, (x1, y1), (x2, y2), EVENT_COLOUR, 2)
        if box.label:
            (tw, th), base = cv2.getTextSize(box.label, font, scale, 1)
            tx, ty = min(max(0, x1), max(0, w - tw - 2)), max(th + 2, y1 - 3)
            cv2.rectangle(out, (tx, ty - th - 2), (tx + tw + 2, ty + base), (0, 0, 0), cv2.FILLED)
            cv2.putText(out, box.label, (tx + 1, ty), font, scale, EVENT_COLOUR, 1, cv2.LINE_AA)
    line_h = round(22 * scale) + 4
    lines = [
        _fit(f"{i + 1}. [{r.score:.1f}] {r.sentence or r.attribute}", w - 8, scale)
        for i, r in enumerate(reasons[:top])
    ]
    if lines:
        band = out[: line_h * len(lines) + 4]
        band[:] = (band.astype(np.float32) * 0.4).astype(np.uint8)  # darken so text is readable
        for i, text in enumerate(lines):
            y = line_h * (i + 1) - 2
            cv2.putText(out, text, (4, y), font, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def _fit(text: str, width: int, scale: float) -> str:
    """`text` cut (with '...') to at most `width` pixels in the snapshot font; ASCII only (Hershey fonts)."""
    text = text.encode("ascii", "replace").decode()
    if cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] <= width:
        return text
    lo, hi = 0, len(text)
    while lo < hi:  # longest prefix that fits with the ellipsis
        mid = (lo + hi + 1) // 2
        if cv2.getTextSize(text[:mid] + "...", cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] <= width:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo] + "..."


#: event media are surveillance images: readable by the owner and its group (a viewer, a backup job),
#: never by everyone; the umask can only make them stricter
MEDIA_DIR_MODE = 0o750
MEDIA_FILE_MODE = 0o640


def make_media_dirs(folder: Path) -> None:
    """Create `folder` and each missing parent with MEDIA_DIR_MODE (`mkdir -p` would make the parents
    0755); folders that already exist are left as they are."""
    missing: list[Path] = []
    while not folder.is_dir():
        missing.append(folder)
        folder = folder.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=MEDIA_DIR_MODE)
        except FileExistsError:
            if not d.is_dir():  # a file in the way; another camera's thread may have made the folder
                raise


def create_media_file(path: Path) -> int:
    """Create (or truncate) `path` with MEDIA_FILE_MODE in MEDIA_DIR_MODE folders; returns its descriptor.

    An existing file loses any permission beyond MEDIA_FILE_MODE, so it is never readable by all while
    it is being written."""
    make_media_dirs(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, MEDIA_FILE_MODE)
    try:
        os.fchmod(fd, os.fstat(fd).st_mode & MEDIA_FILE_MODE)
    except OSError:
        os.close(fd)
        raise
    return fd


def write_jpeg(path: Path, image: np.ndarray, quality: int = 90) -> Path:
    """Write `image` (BGR) as a JPEG (0640, folders 0750); raises OSError when it cannot."""
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise OSError(f"cannot encode JPEG for {path}")
    with os.fdopen(create_media_file(path), "wb") as f:
        f.write(data.tobytes())
    return path


#: what writing media may raise: file-system errors and FFmpeg errors
MEDIA_ERRORS: tuple[type[Exception], ...] = (OSError, av.error.FFmpegError)


def pick_codec() -> str:
    """libx264 when this PyAV build has it, else mpeg4 (always built into FFmpeg)."""
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


class ClipWriter:
    """One mp4 file being written frame by frame; timestamps follow the frames' pts."""

    def __init__(self, path: Path, width: int, height: int, fps: float, codec: str | None = None) -> None:
        os.close(create_media_file(path))  # FFmpeg then writes into it, keeping its mode (0640)
        self.path = path
        self.frames = 0
        self.last_frame_pts: float | None = None  # source pts of the last frame written
        self._size = (width, height)
        self._time_base = Fraction(1, 1000)  # pts in milliseconds: robust to variable frame rates
        self._last_pts = -1
        self._container = av.open(str(path), mode="w")
        codec = codec or pick_codec()
        self._stream = self._container.add_stream(codec, rate=Fraction(round(fps * 1000), 1000))
        # yuv420p needs even sizes; odd frames are padded by one pixel
        self._stream.width = width + width % 2
        self._stream.height = height + height % 2
        self._stream.pix_fmt = "yuv420p"
        self._stream.time_base = self._time_base
        self._stream.codec_context.time_base = self._time_base
        if codec == "libx264":
            self._stream.options = {"preset": "ultrafast", "tune": "zerolatency"}
        else:
            self._stream.bit_rate = 2_000_000
        self._t0: float | None = None

    def write(self, frame: Frame) -> None:
        if (frame.width, frame.height) != self._size:
            raise PacketError(
                f"clip {self.path.name}: frame size {frame.width}x{frame.height} differs from {self._size}"
            )
        if self._t0 is None:
            self._t0 = frame.pts
        pts = round((frame.pts - self._t0) * 1000)
        if pts <= self._last_pts:  # a repeated or out-of-order timestamp: keep the stream monotonic
            pts = self._last_pts + 1
        self._last_pts = pts
        image = frame.image
        pad_h, pad_w = self._stream.height - image.shape[0], self._stream.width - image.shape[1]
        if pad_h or pad_w:
            image = cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_REPLICATE)
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
        vf.pts = pts
        vf.time_base = self._time_base
        for packet in self._stream.encode(vf):
            self._container.mux(packet)
        self.frames += 1
        self.last_frame_pts = frame.pts

    def close(self) -> None:
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
        finally:
            self._container.close()


@dataclass
class _Recording:
    writer: ClipWriter
    started_pts: float
    #: event key -> pts after which that event needs no more frames (None while the event is open)
    keys: dict[str, float | None]

    def done_at(self) -> float | None:
        """The pts after which no attached event needs frames, or None while one is open."""
        ends = list(self.keys.values())
        return None if any(e is None for e in ends) else max(ends, default=0.0)  # type: ignore[type-var]


class CameraClips:
    """Per-camera pre-roll ring buffer and the one clip being recorded from it.

    `push` every analysed frame; `start` attaches an event to the camera's open clip, or opens one
    that begins with the buffered pre-roll; `finish` lets the event's part end `post_s` after the given
    time; the clip closes once no attached event needs more frames, or when it is `max_s` long (events
    still open then keep the clip that shows their start; later events open the next one);
    `close_all` finalises at end of stream or shutdown with whatever post-roll has arrived.

    Events that overlap in time on one camera share one file, so a busy scene costs one encoder,
    not one per event (an encoder at 1080p costs tens of ms per frame). Frames
    taller than `max_height` are scaled down for the clip (snapshots keep the full frame).
    """

    def __init__(
        self,
        camera: str,
        pre_s: float,
        post_s: float,
        codec: str | None = None,
        max_s: float = 60.0,
        max_height: int = 720,
    ) -> None:
        self.camera = camera
        self.pre_s = pre_s
        self.post_s = post_s
        self.max_s = max_s
        self.max_height = max_height
        self.codec = codec or pick_codec()
        self._buffer: deque[Frame] = deque()
        self._recording: _Recording | None = None

    def _clip_sized(self, frame: Frame) -> Frame:
        if frame.height <= self.max_height:
            return frame
        width = round(frame.width * self.max_height / frame.height)
        image = cv2.resize(frame.image, (width, self.max_height), interpolation=cv2.INTER_AREA)
        return replace(frame, image=image)

    def push(self, frame: Frame) -> list[Path]:
        """Buffer `frame`, feed it to the open clip; returns the path of a clip finished by it."""
        self._buffer.append(frame)
        while self._buffer and frame.pts - self._buffer[0].pts > self.pre_s + 1e-6:
            self._buffer.popleft()
        rec = self._recording
        if rec is None:
            return []
        done_at = rec.done_at()
        too_long = frame.pts - rec.started_pts > self.max_s + 1e-6
        if (done_at is not None and frame.pts > done_at + 1e-6) or too_long:
            return [self._close()]
        if rec.writer.last_frame_pts is None or frame.pts > rec.writer.last_frame_pts:
            rec.writer.write(self._clip_sized(frame))
        return []

    def start(self, key: str, path: Path) -> Path:
        """The clip showing event `key`: the open one, or a new one at `path` starting with the pre-roll."""
        rec = self._recording
        if rec is not None:
            rec.keys.setdefault(key, None)
            if rec.keys[key] is not None:  # an event ended and came back: it needs frames again
                rec.keys[key] = None
            return rec.writer.path
        if not self._buffer:
            raise PacketError(f"clip {key}: no frame buffered yet for camera {self.camera!r}")
        first = self._clip_sized(self._buffer[-1])
        writer = ClipWriter(path, first.width, first.height, first.fps, self.codec)
        for frame in self._buffer:
            writer.write(self._clip_sized(frame))
        self._recording = _Recording(writer, self._buffer[0].pts, {key: None})
        return path

    def finish(self, key: str, at_pts: float) -> None:
        """Event `key` ended at `at_pts`: it needs `post_s` more seconds of frames."""
        rec = self._recording
        if rec is not None and key in rec.keys:
            rec.keys[key] = at_pts + self.post_s

    def close_all(self) -> list[Path]:
        return [self._close()] if self._recording is not None else []

    def open_clips(self) -> int:
        return int(self._recording is not None)

    def _close(self) -> Path:
        rec, self._recording = self._recording, None
        assert rec is not None
        rec.writer.close()
        return rec.writer.path
