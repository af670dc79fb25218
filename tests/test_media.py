"""Snapshots and clips on real Ped2 frames: valid JPEG/mp4 files that decode back to what was written."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from pipeline.errors import PacketError
from pipeline.packets import Frame, Reason
from stages.media import Box, CameraClips, ClipWriter, _fit, draw_snapshot, write_jpeg

FPS = 10.0


@pytest.fixture(scope="module")
def frames(ped2: Path) -> list[Frame]:
    out = []
    with av.open(str(ped2 / "test" / "Test001.mp4")) as c:
        for i, vf in enumerate(c.decode(video=0)):
            if i == 30:
                break
            out.append(Frame("cam0", i, i / FPS, vf.to_ndarray(format="bgr24"), time.time(), FPS))
    return out


def test_snapshot_draws_boxes_and_reasons(frames: list[Frame], tmp_path: Path) -> None:
    image = frames[0].image
    reasons = [Reason("speed", "3.4 bh/s", "0.9 ± 0.3", 4.2, "bicycle moves 3.8x faster than usual here")]
    boxes = [
        Box((100, 80, 140, 160), "bicycle #7 4.2", highlight=True),
        Box((200, 50, 230, 120), "person #2"),
    ]
    drawn = draw_snapshot(image, boxes, reasons)
    assert drawn.shape == image.shape and drawn is not image
    assert np.array_equal(image, frames[0].image)  # the frame itself is untouched
    assert tuple(drawn[120, 100]) == (0, 0, 255)  # left edge of the highlighted box is red
    assert drawn[:20].mean() < image[:20].mean()  # the reasons band is darkened
    path = write_jpeg(tmp_path / "cam0" / "e.jpg", drawn)
    assert path.read_bytes()[:3] == b"\xff\xd8\xff"
    back = cv2.imread(str(path))
    assert back is not None and back.shape == (240, 360, 3)


def test_snapshot_rejects_bad_image() -> None:
    with pytest.raises(PacketError, match=r"\(H, W, 3\) uint8"):
        draw_snapshot(np.zeros((10, 10), np.uint8), [], [])


@pytest.mark.parametrize("codec", ["libx264", "mpeg4"])
def test_clip_writer_round_trip(frames: list[Frame], tmp_path: Path, codec: str) -> None:
    if codec not in av.codecs_available:
        pytest.skip(f"{codec} not in this PyAV build")
    writer = ClipWriter(tmp_path / f"{codec}.mp4", 360, 240, FPS, codec)
    for f in frames[:12]:
        writer.write(f)
    writer.close()
    with av.open(str(tmp_path / f"{codec}.mp4")) as c:
        stream = c.streams.video[0]
        decoded = [vf for vf in c.decode(stream)]
        assert (stream.codec_context.width, stream.codec_context.height) == (360, 240)
    assert len(decoded) == 12
    times = [float(vf.time) for vf in decoded]
    assert times == pytest.approx([i / FPS for i in range(12)], abs=2e-3)
    # the content survives the round trip (lossy, so only roughly)
    diff = np.abs(decoded[5].to_ndarray(format="bgr24").astype(int) - frames[5].image.astype(int)).mean()
    assert diff < 12


def test_clip_writer_rejects_other_frame_size(frames: list[Frame], tmp_path: Path) -> None:
    writer = ClipWriter(tmp_path / "x.mp4", 320, 240, FPS)
    with pytest.raises(PacketError, match="differs"):
        writer.write(frames[0])
    writer.close()


def test_camera_clips_pre_and_post_roll(frames: list[Frame], tmp_path: Path) -> None:
    clips = CameraClips("cam0", pre_s=0.5, post_s=0.3)
    finished: list[Path] = []
    for f in frames:
        finished += clips.push(f)
        if f.index == 10:
            clips.start("ev", tmp_path / "ev.mp4")  # frames 5..10 from the pre-roll
        if f.index == 15:
            clips.finish("ev", f.pts)  # post-roll until pts 1.8: frames 16..18
    assert finished == [tmp_path / "ev.mp4"] and clips.open_clips() == 0
    with av.open(str(tmp_path / "ev.mp4")) as c:
        count = sum(1 for _ in c.decode(video=0))
    assert count == 18 - 5 + 1


def test_camera_clips_close_all_at_eos(frames: list[Frame], tmp_path: Path) -> None:
    clips = CameraClips("cam0", pre_s=0.0, post_s=2.0)
    for f in frames[:8]:
        clips.push(f)
    assert clips.start("a", tmp_path / "a.mp4") == tmp_path / "a.mp4"
    assert clips.start("b", tmp_path / "b.mp4") == tmp_path / "a.mp4"  # overlapping events share one clip
    for f in frames[8:12]:
        clips.push(f)
    assert clips.close_all() == [tmp_path / "a.mp4"] and not (tmp_path / "b.mp4").exists()
    with av.open(str(tmp_path / "a.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 5  # frame 7 and frames 8..11


def test_shared_clip_ends_after_the_last_event_needs_it(frames: list[Frame], tmp_path: Path) -> None:
    clips = CameraClips("cam0", pre_s=0.0, post_s=0.2)
    finished: list[Path] = []
    for f in frames:
        finished += clips.push(f)
        if f.index == 2:
            clips.start("a", tmp_path / "a.mp4")
        if f.index == 4:
            clips.start("b", tmp_path / "b.mp4")
        if f.index == 5:
            clips.finish("a", f.pts)  # a needs frames until pts 0.7, b is still open
        if f.index == 9:
            clips.finish("b", f.pts)  # b needs frames until pts 1.1: frames 10, 11
        if f.index == 14:
            assert clips.start("c", tmp_path / "c.mp4") == tmp_path / "c.mp4"  # a new clip
    assert finished[0] == tmp_path / "a.mp4" and clips.open_clips() == 1
    with av.open(str(tmp_path / "a.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 11 - 2 + 1


@pytest.mark.parametrize("max_s, expected_frames", [(0.5, 6), (60.0, 30)])
def test_clip_length_is_capped(
    frames: list[Frame], tmp_path: Path, max_s: float, expected_frames: int
) -> None:
    clips = CameraClips("cam0", pre_s=0.0, post_s=1.0, max_s=max_s)
    clips.push(frames[0])
    clips.start("a", tmp_path / "a.mp4")  # never finished: only the cap or the end of stream closes it
    for f in frames[1:]:
        clips.push(f)
    clips.close_all()
    with av.open(str(tmp_path / "a.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == expected_frames


def test_tall_frames_are_scaled_down_for_clips(frames: list[Frame], tmp_path: Path) -> None:
    clips = CameraClips("cam0", pre_s=0.0, post_s=0.0, max_height=120)
    clips.push(frames[0])
    clips.start("a", tmp_path / "a.mp4")
    for f in frames[1:4]:
        clips.push(f)
    clips.close_all()
    with av.open(str(tmp_path / "a.mp4")) as c:
        stream = c.streams.video[0]
        h, w = frames[0].image.shape[:2]
        assert stream.height == 120 and abs(stream.width - round(w * 120 / h)) <= 1


def test_snapshot_cuts_long_reasons(frames: list[Frame]) -> None:
    long = Reason(
        "size", "h 0.16", "0.13 ± 0.02", 1.5, "size unusual for person here: " + "very " * 40 + "tall"
    )
    drawn = draw_snapshot(frames[0].image, [Box((5, 100, 60, 200), "person #3 1.5", highlight=True)], [long])
    assert drawn.shape == frames[0].image.shape
    text = _fit(f"1. [1.5] {long.sentence}", 360 - 8, 0.35)
    assert text.endswith("...") and cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.35, 1)[0][0] <= 352
    assert _fit("short ± text", 352, 0.35) == "short ? text"


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual default umask, under which files are 0644 and folders 0755 unless asked otherwise."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.mark.usefixtures("umask_022")
def test_snapshots_and_clips_are_not_world_readable(frames: list[Frame], tmp_path: Path) -> None:
    """Surveillance images: files 0640 in folders 0750 (each folder Vigil creates, not only the last)."""
    media = tmp_path / "media"
    snapshot = write_jpeg(media / "cam0" / "e1.jpg", frames[0].image)
    clips = CameraClips("cam1", pre_s=0.5, post_s=0.2)
    clips.push(frames[0])
    clip = clips.start("e2", media / "cam1" / "e2.mp4")
    for f in frames[1:5]:
        clips.push(f)
    clips.finish("e2", frames[4].pts)
    clips.close_all()
    for path in (snapshot, clip):
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path
    for folder in (media, media / "cam0", media / "cam1"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o750, folder


@pytest.mark.usefixtures("umask_022")
def test_rewritten_snapshot_loses_world_read(frames: list[Frame], tmp_path: Path) -> None:
    old = tmp_path / "e.jpg"
    old.write_bytes(b"old")
    old.chmod(0o644)
    write_jpeg(old, frames[0].image)
    assert stat.S_IMODE(old.stat().st_mode) == 0o640
