"""Frame sources: a file, an RTSP camera (reconnecting), a folder of images."""

from pipeline.sources.base import Source, SourceMonitor

__all__ = ["Source", "SourceMonitor"]
