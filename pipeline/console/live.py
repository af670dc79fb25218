"""What the console shows of running cameras: a preview frame while someone watches, the analysed frame
rate, and the frame scores sampled once a second for the store's score history.

`LiveView.observe` is the runner's end-of-pipeline callback: it only counts and, for a camera whose
preview was asked for in the last few seconds, keeps a reference to the frame and its boxes at most
every `interval_s`. The JPEG is drawn and encoded on request (`preview`), once per kept frame, so a
camera nobody watches costs no encoding at all.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

import cv2
import numpy as np

from pipeline.packets import FramePacket

#: a preview request keeps a camera's frames coming for this long
WATCH_S = 5.0
#: a camera's frame score is sampled for the score history at most this often
SCORE_EVERY_S = 1.0


@dataclass
class _Kept:
    image: np.ndarray
    boxes: list[tuple[tuple[float, float, float, float], str, bool]]
    at: float
    number: int
    jpeg: bytes | None = None


@dataclass
class _Camera:
    watched_until: float = 0.0
    kept: _Kept | None = None
    frames: deque[float] = field(default_factory=lambda: deque(maxlen=64))
    last_score_at: float = 0.0
    last_frame: float = 0.0
    captured: int = 0


class LiveView:
    def __init__(self, interval_s: float = 1.0, alert_score: float = 3.0) -> None:
        self.interval_s = interval_s
        self.alert_score = alert_score
        self._lock = threading.Lock()
        self._cameras: dict[str, _Camera] = {}
        self._unsaved: list[tuple[str, float, float]] = []

    def observe(self, packet: FramePacket) -> None:
        """Runner callback for each finished frame (cheap: no copies, no encoding)."""
        frame = packet.frame
        now = time.time()
        with self._lock:
            cam = self._cameras.setdefault(frame.camera, _Camera())
            cam.last_frame = now
            if packet.analysed:
                cam.frames.append(now)
            if packet.scores is not None and now - cam.last_score_at >= SCORE_EVERY_S:
                cam.last_score_at = now
                if len(self._unsaved) < 100_000:  # a store that stopped taking them: keep memory bounded
                    self._unsaved.append((frame.camera, now, float(packet.scores.smoothed_score)))
            if now > cam.watched_until or (cam.kept is not None and now - cam.kept.at < self.interval_s):
                return
            cam.captured += 1
            cam.kept = _Kept(frame.image, self._boxes(packet), now, cam.captured)

    def _boxes(self, packet: FramePacket) -> list[tuple[tuple[float, float, float, float], str, bool]]:
        attrs, scores = packet.attributes, packet.scores
        if attrs is None:
            return []
        object_scores = (
            scores.object_score if scores is not None and len(scores.object_score) == len(attrs) else None
        )
        out = []
        for i in range(len(attrs)):
            x1, y1, x2, y2 = (float(v) for v in attrs.xyxy[i])
            score = float(object_scores[i]) if object_scores is not None else 0.0
            label = f"{attrs.name_of(i)} #{int(attrs.track_id[i])} {score:.1f}"
            out.append(((x1, y1, x2, y2), label, score >= self.alert_score))
        return out

    def take_scores(self) -> list[tuple[str, float, float]]:
        """The (camera, time, score) samples not yet handed out, for the store's score history."""
        with self._lock:
            out, self._unsaved = self._unsaved, []
        return out

    def cameras(self) -> list[str]:
        with self._lock:
            return sorted(self._cameras)

    def preview(self, camera: str) -> tuple[bytes, int] | None:
        """The latest kept frame as JPEG and its number (None: none yet); asks for frames to be kept."""
        with self._lock:
            cam = self._cameras.setdefault(camera, _Camera())
            cam.watched_until = time.time() + WATCH_S
            kept = cam.kept
        if kept is None:
            return None
        if kept.jpeg is None:
            kept.jpeg = encode_preview(kept.image, kept.boxes)
        return kept.jpeg, kept.number

    def fps(self, camera: str) -> float:
        """Analysed frames per second over the last few seconds."""
        with self._lock:
            cam = self._cameras.get(camera)
            if cam is None or len(cam.frames) < 2 or time.time() - cam.frames[-1] > 5.0:
                return 0.0
            span = cam.frames[-1] - cam.frames[0]
            return (len(cam.frames) - 1) / span if span > 0 else 0.0

    def last_frame_age(self, camera: str) -> float | None:
        with self._lock:
            cam = self._cameras.get(camera)
            return None if cam is None or not cam.last_frame else time.time() - cam.last_frame


def encode_preview(
    image: np.ndarray, boxes: list[tuple[tuple[float, float, float, float], str, bool]], max_width: int = 640
) -> bytes:
    """The frame with its boxes (alerting objects in red), scaled to at most `max_width`, as JPEG."""
    scale = min(1.0, max_width / max(1, image.shape[1]))
    out = (
        cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        if scale < 1
        else image.copy()
    )
    for (x1, y1, x2, y2), label, alert in boxes:
        colour = (0, 0, 255) if alert else (0, 200, 0)
        p1, p2 = (int(x1 * scale), int(y1 * scale)), (int(x2 * scale), int(y2 * scale))
        cv2.rectangle(out, p1, p2, colour, 2 if alert else 1)
        cv2.putText(
            out, label, (p1[0], max(10, p1[1] - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.35, colour, 1, cv2.LINE_AA
        )
    ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, 80])
    if not ok:
        raise ValueError("preview: JPEG encoding failed")
    return buf.tobytes()
