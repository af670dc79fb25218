"""Benchmark footage: a 640x360 version of a Ped2 clip (we have no native 640x360 footage offline).

The clip is upscaled and letterboxed with PyAV + OpenCV, encoded as H.264, cached under var/bench/.
"""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np


def make_640x360(src: Path, dst: Path, repeat: int = 1) -> Path:
    """Write `src` scaled to 640x360 (aspect kept, padded) to `dst` once; return `dst`."""
    if dst.exists() and dst.stat().st_size > 0:
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(".tmp.mp4")
    with av.open(str(src)) as inp:
        frames = [f.to_ndarray(format="bgr24") for f in inp.decode(video=0)]
        rate = inp.streams.video[0].average_rate or 10
    with av.open(str(tmp), "w") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        for _ in range(repeat):
            for image in frames:
                frame = av.VideoFrame.from_ndarray(_letterbox(image, 640, 360), format="bgr24")
                for packet in stream.encode(frame):
                    out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    tmp.rename(dst)
    return dst


def _letterbox(image: np.ndarray, width: int, height: int) -> np.ndarray:
    h, w = image.shape[:2]
    scale = min(width / w, height / h)
    nw, nh = round(w * scale), round(h * scale)
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    canvas = np.zeros((height, width, 3), np.uint8)
    y, x = (height - nh) // 2, (width - nw) // 2
    canvas[y : y + nh, x : x + nw] = resized
    return canvas
