#!/usr/bin/python3
"""Vigil camera simulator: serve video clips as looping RTSP cameras, without re-encoding.

    /usr/bin/python3 vigil_camsim.py [--host 127.0.0.1] [--port 8554] CLIP[:MOUNT] [CLIP[:MOUNT] ...]

Each clip (H.264 in mp4/mov) is demuxed once into memory and served at rtsp://HOST:PORT/MOUNT
(default mount `cam`), looped forever with continuous timestamps, paced in real time. Every client
gets its own pipeline, so it starts at the clip's keyframe. Prints one line
`READY rtsp://HOST:PORT/MOUNT` per mount once the server is bound (with --port 0, the port the
system picked), then serves until SIGTERM or SIGINT and exits with status 0.

Needs only the system python with GObject introspection and GStreamer's RTSP server
(Debian: python3-gi gir1.2-gst-rtsp-server-1.0, which pulls in the base/good plugins).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from dataclasses import dataclass

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

DEMUX_TIMEOUT_NS = 10 * Gst.SECOND


@dataclass(frozen=True)
class AccessUnit:
    pts: int
    dts: int
    duration: int
    delta: bool
    data: bytes


@dataclass(frozen=True)
class Clip:
    """A clip's H.264 access units in memory, with the caps and the loop period (DTS span + 1 frame)."""

    path: str
    caps: Gst.Caps
    units: list[AccessUnit]
    period: int


def demux(path: str) -> Clip:
    """Read the clip's first video track into memory (no decode, no re-encode)."""
    location = path.replace("\\", "\\\\").replace('"', '\\"')
    pipe = Gst.parse_launch(
        f'filesrc location="{location}" ! qtdemux name=d d.video_0 ! appsink name=s sync=false'
    )
    sink = pipe.get_by_name("s")
    pipe.set_state(Gst.State.PLAYING)
    caps = None
    units: list[AccessUnit] = []
    try:
        while (sample := sink.emit("try-pull-sample", DEMUX_TIMEOUT_NS)) is not None:
            buf = sample.get_buffer()
            caps = sample.get_caps()
            units.append(
                AccessUnit(
                    pts=buf.pts,
                    dts=buf.dts if buf.dts != Gst.CLOCK_TIME_NONE else buf.pts,
                    duration=buf.duration,
                    delta=buf.has_flags(Gst.BufferFlags.DELTA_UNIT),
                    data=buf.extract_dup(0, buf.get_size()),
                )
            )
    finally:
        pipe.set_state(Gst.State.NULL)
    if caps is None or not units:
        raise SystemExit(f"vigil_camsim: {path}: no H.264 video track could be read")
    structure = caps.get_structure(0).get_name()
    if structure != "video/x-h264":
        raise SystemExit(
            f"vigil_camsim: {path}: video is {structure}, only H.264 is served without re-encoding"
        )
    last = units[-1]
    period = last.dts - units[0].dts + last.duration
    return Clip(path=path, caps=caps, units=units, period=period)


def make_factory(clip: Clip) -> GstRtspServer.RTSPMediaFactory:
    def on_configure(_factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia) -> None:
        src = media.get_element().get_by_name("src")
        src.set_property("caps", clip.caps)
        position = {"i": 0, "offset": 0}  # per client: its own loop position

        def need_data(appsrc: Gst.Element, _length: int) -> None:
            unit = clip.units[position["i"]]
            buf = Gst.Buffer.new_wrapped(unit.data)
            buf.pts = unit.pts + position["offset"]
            buf.dts = unit.dts + position["offset"]
            buf.duration = unit.duration
            if unit.delta:
                buf.set_flags(Gst.BufferFlags.DELTA_UNIT)
            appsrc.emit("push-buffer", buf)
            position["i"] += 1
            if position["i"] == len(clip.units):
                position["i"] = 0
                position["offset"] += clip.period

        src.connect("need-data", need_data)

    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch("( appsrc name=src format=time ! rtph264pay name=pay0 pt=96 config-interval=-1 )")
    factory.set_shared(False)  # each client its own pipeline, starting at the keyframe
    factory.connect("media-configure", on_configure)
    return factory


def parse_clip(arg: str) -> tuple[str, str]:
    """CLIP[:MOUNT] -> (clip path, mount); a path that exists as given is never split."""
    if os.path.exists(arg) or ":" not in arg:
        return arg, "cam"
    path, mount = arg.rsplit(":", 1)
    return path, mount


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve video clips as looping RTSP cameras (no re-encode).")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8554, help="TCP port; 0 picks a free one (default 8554)")
    parser.add_argument(
        "clips", nargs="+", metavar="CLIP[:MOUNT]", help="H.264 mp4 clip, mount name default cam"
    )
    args = parser.parse_args(argv)

    mounts: dict[str, str] = {}
    for arg in args.clips:
        path, mount = parse_clip(arg)
        mount = mount.strip("/")
        if not mount or not all(c.isalnum() or c in "-_." for c in mount):
            parser.error(f"bad mount name {mount!r} for {path} (letters, digits, - _ . only)")
        if mount in mounts:
            parser.error(f"mount {mount!r} is used twice ({mounts[mount]} and {path}); write CLIP:MOUNT")
        if not os.path.isfile(path):
            parser.error(f"clip not found: {path}")
        mounts[mount] = path

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))
    points = server.get_mount_points()
    for mount, path in mounts.items():
        points.add_factory(f"/{mount}", make_factory(demux(path)))
    if server.attach(None) == 0:
        print(f"vigil_camsim: cannot bind {args.host}:{args.port}", file=sys.stderr)
        return 1
    port = server.get_bound_port()
    for mount in mounts:
        print(f"READY rtsp://{args.host}:{port}/{mount}", flush=True)

    loop = GLib.MainLoop()

    def quit_loop() -> bool:
        loop.quit()
        return GLib.SOURCE_REMOVE

    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, signum, quit_loop)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
