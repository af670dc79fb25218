"""A folder of images (one frame each, in natural filename order) replayed at a given frame rate."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2

from pipeline.errors import SourceError
from pipeline.packets import Frame
from pipeline.sources.base import Source, SourceMonitor

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"})


def natural_key(path: Path) -> tuple[object, ...]:
    """Sort key that puts frame2.png before frame10.png."""
    return tuple(int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name))


def list_images(folder: Path) -> list[Path]:
    return sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES), key=natural_key
    )


class FolderSource(Source):
    """Frames from image files; pts = i / fps. Finite and lossless."""

    live = False

    def __init__(self, camera: str, path: str | Path, fps: float) -> None:
        if not fps > 0:
            raise SourceError(f"folder source {path}: fps must be > 0, got {fps}")
        self.camera = camera
        self.path = Path(path)
        self.fps = float(fps)

    def frames(self, stop: threading.Event, monitor: SourceMonitor) -> Iterator[Frame]:
        if not self.path.is_dir():
            raise SourceError(f"image folder {self.path} does not exist or is not a directory")
        images = list_images(self.path)
        if not images:
            suffixes = "/".join(sorted(s.lstrip(".") for s in IMAGE_SUFFIXES))
            raise SourceError(f"image folder {self.path} has no images ({suffixes})")
        monitor.connected(str(self.path))
        size: tuple[int, int] | None = None
        for index, image_path in enumerate(images):
            if stop.is_set():
                return
            image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
            if image is None:
                raise SourceError(f"cannot read image {image_path}: corrupt or unsupported file")
            if size is None:
                size = (image.shape[1], image.shape[0])
            elif (image.shape[1], image.shape[0]) != size:
                raise SourceError(
                    f"image {image_path} is {image.shape[1]}x{image.shape[0]}, "
                    f"but the folder's first image is {size[0]}x{size[1]}"
                )
            yield Frame(
                camera=self.camera,
                index=index,
                pts=index / self.fps,
                image=image,
                captured_at=time.time(),
                fps=self.fps,
            )
