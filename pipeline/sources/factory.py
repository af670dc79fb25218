"""Pick the source for a camera from its config: RTSP URL, folder of images, or video file."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import CameraConfig, SourceConfig
from pipeline.sources.base import Source
from pipeline.sources.file import FileSource
from pipeline.sources.folder import FolderSource
from pipeline.sources.rtsp import RtspSource

RTSP_SCHEMES = ("rtsp://", "rtsps://")


def source_kind(camera: CameraConfig) -> str:
    """The camera's kind, with `auto` resolved: rtsp(s):// URL -> rtsp, directory -> folder, else file."""
    if camera.kind != "auto":
        return camera.kind
    if camera.url.lower().startswith(RTSP_SCHEMES):
        return "rtsp"
    if Path(camera.url).is_dir():
        return "folder"
    return "file"


def make_source(camera: CameraConfig, source: SourceConfig) -> Source:
    """The Source for one configured camera (URLs arrive with secrets already resolved)."""
    kind = source_kind(camera)
    if kind == "rtsp":
        return RtspSource(camera.name, camera.url, source)
    if kind == "folder":
        return FolderSource(camera.name, camera.url, camera.fps)
    return FileSource(camera.name, camera.url, source.hwaccel, source.decode_threads)
