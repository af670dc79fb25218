"""Dense optical flow between consecutive analysed frames of one camera.

The algorithm is OpenCV DIS on the CPU. It also runs there when `flow.device` names a GPU: this
OpenCV build has no CUDA module, and torchvision's RAFT needs downloaded weights, which a deployment
without internet does not have; DIS on a 360x240 frame costs a few milliseconds, far less than the
detector, so the GPU is better spent there. `method: raft` is rejected with a clear error.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.config import FlowConfig
from pipeline.errors import ConfigError, PacketError
from pipeline.packets import FlowField, Frame, FramePacket, SourceEvent
from pipeline.stage import Stage

_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


def grid_window(shape: tuple[int, int], frame_size: tuple[int, int], box: np.ndarray) -> tuple[slice, slice]:
    """Rows and columns of a flow grid of `shape` covered by `box` (xyxy in full-res pixels)."""
    gh, gw = shape
    sx, sy = gw / frame_size[1], gh / frame_size[0]
    c1, r1 = max(0, int(np.floor(box[0] * sx))), max(0, int(np.floor(box[1] * sy)))
    c2, r2 = min(gw, int(np.ceil(box[2] * sx))), min(gh, int(np.ceil(box[3] * sy)))
    return slice(r1, max(r1, r2)), slice(c1, max(c1, c2))


def box_flow(flow: FlowField, frame_size: tuple[int, int], box: np.ndarray) -> np.ndarray:
    """Flow vectors (K, 2), full-res pixels per dt, of the flow grid cells inside `box` (xyxy pixels)."""
    rows, cols = grid_window(flow.flow.shape[:2], frame_size, box)
    return flow.flow[rows, cols].reshape(-1, 2)


def median(values: np.ndarray) -> np.ndarray:
    """np.median(values, axis=0) of finite values, the same to the bit (the middle one, or the float mean
    of the middle two) without np.median's general machinery (a third of its time for one box's flow
    vectors). NaN is not looked for (flow has none)."""
    n = len(values)
    half = n // 2
    if n % 2:
        return np.partition(values, half, axis=0)[half]
    part = np.partition(values, [half - 1, half], axis=0)
    return (part[half - 1] + part[half]) / values.dtype.type(2)


def to_grey(image: np.ndarray, scale: float) -> np.ndarray:
    """BGR uint8 (h, w, 3) -> grey uint8 resized by `scale` (area interpolation when shrinking)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise PacketError(f"flow: expected a (h, w, 3) uint8 image, got {image.shape} {image.dtype}")
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if scale != 1.0:
        size = (max(8, round(image.shape[1] * scale)), max(8, round(image.shape[0] * scale)))
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
    return grey


class DisFlow:
    """DIS optical flow on (optionally downscaled) grey images, returned in full-resolution pixels."""

    def __init__(self, preset: str = "fast", scale: float = 1.0) -> None:
        if preset not in _PRESETS:
            raise ConfigError(f"flow.preset: unknown DIS preset {preset!r}; use one of {', '.join(_PRESETS)}")
        if not 0 < scale <= 1:
            raise ConfigError(f"flow.scale: expected in (0, 1], got {scale}")
        self.scale = scale
        self._dis = cv2.DISOpticalFlow_create(_PRESETS[preset])

    def __call__(self, prev_grey: np.ndarray, grey: np.ndarray) -> np.ndarray:
        """Flow (h, w, 2) float32 from `prev_grey` to `grey`, in pixels of the full-res frame."""
        if prev_grey.shape != grey.shape:
            raise PacketError(f"flow: previous frame {prev_grey.shape} and frame {grey.shape} differ in size")
        flow = self._dis.calc(prev_grey, grey, None)
        if self.scale != 1.0:
            flow *= np.float32(1.0 / self.scale)
        return flow.astype(np.float32, copy=False)


@dataclass(slots=True)
class _CameraFlow:
    """What one camera needs to compute the next flow: the estimator and the last grey frame."""

    estimator: DisFlow
    prev_grey: np.ndarray | None = None
    prev_pts: float = 0.0


class FlowEstimator:
    """Per-camera flow over a stream of frames: first frame and time jumps give an invalid field."""

    def __init__(self, preset: str = "fast", scale: float = 1.0) -> None:
        self.preset = preset
        self.scale = scale
        DisFlow(preset, scale)  # validate the settings now rather than at the first frame
        self._cameras: dict[str, _CameraFlow] = {}

    def add_camera(self, camera: str) -> None:
        self._cameras[camera] = _CameraFlow(DisFlow(self.preset, self.scale))

    def drop_camera(self, camera: str) -> None:
        self._cameras.pop(camera, None)

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(self._cameras)

    def __call__(self, frame: Frame) -> FlowField:
        state = self._cameras.get(frame.camera)
        if state is None:  # a frame before its camera's "added" event: start the camera here
            self.add_camera(frame.camera)
            state = self._cameras[frame.camera]
        grey = to_grey(frame.image, self.scale)
        prev, prev_pts = state.prev_grey, state.prev_pts
        state.prev_grey, state.prev_pts = grey, frame.pts
        dt = frame.pts - prev_pts
        # nothing to compare with, a new picture size or a clock that went back (reconnect): no flow
        if prev is None or prev.shape != grey.shape or not dt > 0:
            zeros = np.zeros((*grey.shape, 2), np.float32)
            return FlowField(zeros, dt=1.0 / frame.fps, scale=self._grid_scale(frame, grey), valid=False)
        return FlowField(state.estimator(prev, grey), dt=dt, scale=self._grid_scale(frame, grey))

    @staticmethod
    def _grid_scale(frame: Frame, grey: np.ndarray) -> float:
        return min(1.0, grey.shape[0] / frame.height)


def set_opencv_threads(threads: int) -> None:
    """OpenCV's thread pool size (process-wide: it is one pool); 0 leaves it alone.

    The runner already runs the stages in parallel, so OpenCV's own workers only compete with them for
    the same cores: one thread costs less CPU per frame (bench/results/README.md) and gives the same
    results to the bit (tests/test_flow.py).
    """
    if threads > 0 and cv2.getNumThreads() != threads:
        cv2.setNumThreads(threads)


class FlowStage(Stage):
    """Dense optical flow from the previous analysed frame of the same camera."""

    name = "flow"
    needs = ("frame",)
    provides = ("flow",)

    def __init__(self, config: FlowConfig | None = None) -> None:
        config = config or FlowConfig()
        if config.method != "dis":
            raise ConfigError(
                f"flow.method: {config.method!r} needs torchvision RAFT weights, which are not available "
                "offline; use 'dis'"
            )
        self.config = config
        self.estimator = FlowEstimator(config.preset, config.scale)

    def on_start(self) -> None:
        set_opencv_threads(self.config.opencv_threads)

    def on_source_added(self, event: SourceEvent) -> None:
        self.estimator.add_camera(event.camera)

    def on_source_eos(self, event: SourceEvent) -> None:
        self.estimator.drop_camera(event.camera)

    def process(self, packet: FramePacket) -> None:
        packet.flow = self.estimator(packet.frame)
