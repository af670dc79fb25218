"""File and folder sources on real Ped2 footage, bad inputs, and replay through the real runner."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from pipeline.config import CameraConfig, SourceConfig
from pipeline.errors import SourceError
from pipeline.harness import run_stages
from pipeline.metrics import Metrics
from pipeline.packets import Frame
from pipeline.sources.base import SourceMonitor
from pipeline.sources.decode import HardwareDecode, PtsClock, cuda_decode_possible
from pipeline.sources.factory import make_source, source_kind
from pipeline.sources.file import FileSource
from pipeline.sources.folder import FolderSource
from pipeline.sources.rtsp import RtspSource

CLIPS = ["test/Test001.mp4", "train/Train005.mp4"]


def drain(source: FileSource | FolderSource) -> list[Frame]:
    return list(source.frames(threading.Event(), SourceMonitor(source.camera, False, Metrics())))


def count_frames(path: Path) -> int:
    """Independent count: a bare PyAV decode loop."""
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


@pytest.mark.parametrize("clip", CLIPS)
def test_file_source_delivers_every_frame_in_order(ped2: Path, clip: str) -> None:
    path = ped2 / clip
    frames = drain(FileSource("ped2", path))
    assert len(frames) == count_frames(path) > 100
    assert [f.index for f in frames] == list(range(len(frames)))
    pts = np.array([f.pts for f in frames])
    assert pts[0] == pytest.approx(0.0)
    assert np.all(np.diff(pts) > 0)
    assert pts[-1] == pytest.approx((len(frames) - 1) / 10.0, abs=0.01)  # Ped2 is 10 fps
    first = frames[0]
    assert (first.width, first.height, first.fps) == (360, 240, 10.0)
    assert first.image.dtype == np.uint8 and first.image.flags.c_contiguous
    assert all(f.camera == "ped2" for f in frames)


def test_file_source_frames_match_bgr_decode(ped2: Path) -> None:
    path = ped2 / CLIPS[0]
    frame = next(
        iter(FileSource("ped2", path).frames(threading.Event(), SourceMonitor("x", False, Metrics())))
    )
    with av.open(str(path)) as container:
        reference = next(container.decode(video=0)).to_ndarray(format="bgr24")
    np.testing.assert_array_equal(frame.image, reference)


def _truncate(ped2: Path, tmp: Path) -> Path:
    data = (ped2 / CLIPS[0]).read_bytes()
    out = tmp / "truncated.mp4"
    out.write_bytes(data[: len(data) // 2])
    return out


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda ped2, tmp: tmp / "missing.mp4", "file not found"),
        (lambda ped2, tmp: tmp, "is a directory"),
        (lambda ped2, tmp: _write(tmp / "garbage.mp4", bytes(range(256)) * 40), "corrupt"),
        (lambda ped2, tmp: _write(tmp / "empty.mp4", b""), "corrupt"),
        (lambda ped2, tmp: _write(tmp / "head.mp4", (ped2 / CLIPS[0]).read_bytes()[:1500]), "corrupt"),
        (_truncate, "failed after"),
    ],
    ids=["missing", "directory", "garbage", "empty", "header-only", "truncated"],
)
def test_file_source_bad_input_is_a_clear_source_error(
    ped2: Path, tmp_path: Path, make: Callable[[Path, Path], Path], message: str
) -> None:
    path = make(ped2, tmp_path)
    with pytest.raises(SourceError) as info:
        drain(FileSource("bad", path))
    text = str(info.value)
    assert str(path) in text and message in text
    assert "\n" not in text


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _write_pngs(folder: Path, names: list[str], size: tuple[int, int] = (64, 48)) -> list[np.ndarray]:
    images = []
    for i, name in enumerate(names):
        image = np.full((size[1], size[0], 3), (i * 20, 255 - i * 20, 7), np.uint8)
        image[i, :, :] = 200  # a row that tells the frames apart
        assert cv2.imwrite(str(folder / name), image)
        images.append(image)
    return images


def test_folder_source_natural_order_and_pts(tmp_path: Path) -> None:
    names = [f"f{i}.png" for i in (0, 1, 2, 10, 11)]  # natural order, not f0 f1 f10 f11 f2
    images = _write_pngs(tmp_path, names)
    (tmp_path / "notes.txt").write_text("not an image")
    frames = drain(FolderSource("folder", tmp_path, fps=5.0))
    assert len(frames) == len(images)
    for i, (frame, image) in enumerate(zip(frames, images, strict=True)):
        np.testing.assert_array_equal(frame.image, image)
        assert frame.index == i and frame.pts == pytest.approx(i / 5.0) and frame.fps == 5.0


@pytest.mark.parametrize("case", ["missing", "empty", "unreadable", "mixed-size"])
def test_folder_source_errors(tmp_path: Path, case: str) -> None:
    folder = tmp_path / "frames"
    if case != "missing":
        folder.mkdir()
    if case == "unreadable":
        _write_pngs(folder, ["a.png"])
        (folder / "b.png").write_bytes(b"not a png")
    if case == "mixed-size":
        _write_pngs(folder, ["a.png"], size=(64, 48))
        _write_pngs(folder, ["b.png"], size=(32, 48))
    with pytest.raises(SourceError, match=str(folder)):
        drain(FolderSource("folder", folder, fps=10.0))


def test_replay_through_the_real_runner_completes_every_frame(ped2: Path) -> None:
    path = ped2 / CLIPS[0]
    packets, report = run_stages([], [FileSource("replay", path)])
    expected = count_frames(path)
    assert report.frames_decoded == {"replay": expected}
    assert report.frames_completed == {"replay": expected}
    assert not report.source_errors and not report.frames_dropped and report.clean_shutdown
    assert [p.frame.index for p in packets] == list(range(expected))


def test_runner_reports_a_broken_file_without_crashing(tmp_path: Path) -> None:
    bad = _write(tmp_path / "bad.mp4", b"\x00" * 4096)
    _, report = run_stages([], [FileSource("bad", bad)])
    assert "bad.mp4" in report.source_errors["bad"]
    assert report.frames_decoded == {"bad": 0}


@pytest.mark.parametrize(
    ("url", "kind", "cls"),
    [
        ("rtsp://user:pw@10.0.0.5:554/stream", "rtsp", RtspSource),
        ("RTSPS://cam.example/live", "rtsp", RtspSource),
        ("{folder}", "folder", FolderSource),
        ("{clip}", "file", FileSource),
        ("does/not/exist.mp4", "file", FileSource),
    ],
)
def test_factory_picks_the_source_kind(ped2: Path, tmp_path: Path, url: str, kind: str, cls: type) -> None:
    url = url.format(folder=tmp_path, clip=ped2 / CLIPS[0])
    camera = CameraConfig(name="cam1", url=url, fps=7.0)
    assert source_kind(camera) == kind
    source = make_source(camera, SourceConfig())
    assert isinstance(source, cls) and source.camera == "cam1"
    assert source.live == (kind == "rtsp")
    if isinstance(source, FolderSource):
        assert source.fps == 7.0


def test_factory_honours_an_explicit_kind(tmp_path: Path) -> None:
    camera = CameraConfig(name="cam1", url=str(tmp_path / "x.mp4"), kind="folder")
    assert isinstance(make_source(camera, SourceConfig()), FolderSource)


def test_pts_clock_missing_backwards_and_across_sessions() -> None:
    clock = PtsClock(10.0)
    clock.new_session(10.0)
    # RTSP: the first frame has no timestamp, the stream's clock starts at an arbitrary value
    assert [clock.pts(t) for t in (None, 100.3, 100.4, None, 100.4, 100.7)] == pytest.approx(
        [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    )
    clock.new_session(5.0, gap_s=12.0)  # reconnect after a 12 s outage; the new stream restarts at 0
    assert [clock.pts(t) for t in (None, 0.2, 0.4)] == pytest.approx([12.5, 12.7, 12.9])
    clock.new_session(5.0)  # no gap known: continue one frame later
    assert clock.pts(7.0) == pytest.approx(13.1)


# ---- hardware decoding ------------------------------------------------------------------------------

HAS_CUDA_DECODE = cuda_decode_possible()


def test_auto_hardware_decoding_needs_a_gpu() -> None:
    assert (HardwareDecode("auto", "cam").device == "cuda") == HAS_CUDA_DECODE
    assert HardwareDecode("none", "cam").device is None and HardwareDecode("none", "cam").hwaccel() is None


@pytest.mark.skipif(HAS_CUDA_DECODE, reason="checks the fallback of a machine without a CUDA GPU")
def test_asked_for_cuda_without_a_gpu_the_file_decodes_on_the_cpu(ped2: Path, caplog) -> None:
    path = ped2 / CLIPS[0]
    source = FileSource("ped2", path, hwaccel="cuda")
    assert source.decode.device is None
    assert "hardware decoding unavailable" in caplog.text
    frames = drain(source)
    assert len(frames) == count_frames(path)
    np.testing.assert_array_equal(frames[5].image, drain(FileSource("ped2", path))[5].image)


def test_factory_passes_the_decoder_setting(ped2: Path) -> None:
    source = make_source(CameraConfig(name="c", url=str(ped2 / CLIPS[0])), SourceConfig(hwaccel="none"))
    assert isinstance(source, FileSource) and source.decode.device is None


@pytest.mark.parametrize("threads", [0, 1, 2])
def test_decoder_threads_give_the_same_pictures(ped2: Path, threads: int) -> None:
    """`source.decode_threads` changes how FFmpeg decodes (1 thread by default), not what."""
    path = ped2 / CLIPS[0]
    source = make_source(CameraConfig(name="c", url=str(path)), SourceConfig(decode_threads=threads))
    assert isinstance(source, FileSource) and source.decode_threads == threads
    frames = drain(source)
    reference = drain(FileSource("ped2", path, decode_threads=0))
    assert len(frames) == len(reference) == count_frames(path)
    for i in (0, len(frames) // 2, len(frames) - 1):
        np.testing.assert_array_equal(frames[i].image, reference[i].image)


def test_decoder_threads_default_to_one() -> None:
    assert SourceConfig().decode_threads == 1


@pytest.mark.skipif(not HAS_CUDA_DECODE, reason="needs a CUDA GPU and FFmpeg with NVDEC")
def test_cuda_decoding_gives_the_same_pictures(ped2: Path) -> None:
    path = ped2 / CLIPS[0]
    gpu = drain(FileSource("ped2", path, hwaccel="cuda"))
    cpu = drain(FileSource("ped2", path, hwaccel="none"))
    assert len(gpu) == len(cpu)
    for a, b in zip(gpu[::30], cpu[::30], strict=True):  # NVDEC and libavcodec may round differently
        assert np.abs(a.image.astype(np.int16) - b.image.astype(np.int16)).mean() < 2.0
