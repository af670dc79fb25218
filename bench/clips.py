"""Benchmark footage: Ped2 clips at other sizes, e.g. 640x360 or 1080p (no such footage offline).

The clip is upscaled and letterboxed with PyAV + OpenCV, encoded as H.264, cached under var/bench/.
"""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np


def make_clip(
    src: Path, dst: Path, width: int, height: int, repeat: int = 1, options: dict[str, str] | None = None
) -> Path:
    """Write `src` scaled to width x height (aspect kept, padded), H.264, to `dst` once; return `dst`.

    `options` are libx264's (e.g. {"preset": "ultrafast"}); the file is written beside `dst` and renamed.
    """
    if dst.exists() and dst.stat().st_size > 0:
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(".tmp.mp4")
    with av.open(str(src)) as inp:
        frames = [f.to_ndarray(format="bgr24") for f in inp.decode(video=0)]
        rate = inp.streams.video[0].average_rate or 10
    with av.open(str(tmp), "w") as out:
        stream = out.add_stream("libx264", rate=rate, options=options or {})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for _ in range(repeat):
            for image in frames:
                frame = av.VideoFrame.from_ndarray(_letterbox(image, width, height), format="bgr24")
                for packet in stream.encode(frame):
                    out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    tmp.rename(dst)
    return dst


def make_640x360(src: Path, dst: Path, repeat: int = 1) -> Path:
    """Write `src` scaled to 640x360 (aspect kept, padded) to `dst` once; return `dst`."""
    return make_clip(src, dst, 640, 360, repeat)


def _letterbox(image: np.ndarray, width: int, height: int) -> np.ndarray:
    h, w = image.shape[:2]
    scale = min(width / w, height / h)
    nw, nh = round(w * scale), round(h * scale)
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    canvas = np.zeros((height, width, 3), np.uint8)
    y, x = (height - nh) // 2, (width - nw) // 2
    canvas[y : y + nh, x : x + nw] = resized
    return canvas
