"""Config models for config.yaml (pydantic, unknown keys rejected, ranges checked).

Every section has defaults, so a user only has to write `cameras:`. Secrets such as RTSP
passwords are written as `${ENV_NAME}` in URLs and resolved from the environment at load time;
`pipeline.redaction.redact` keeps them, and any URL password, out of everything Vigil prints.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_CAMERA_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
CAMERA_SCHEMES = ("rtsp", "rtsps")


def camera_name_problem(name: str) -> str | None:
    """Why `name` cannot name a camera, or None. It becomes a folder (<media_dir>/<name>/), a file
    (<models_dir>/<name>.npz) and an MQTT topic level (vigil/<name>/events): '.' or '..' would leave
    the folder and the topic tree."""
    if _CAMERA_NAME.fullmatch(name) and name.strip("."):
        return None
    return f"{name!r} is not a camera name: use 1-64 letters, digits, '_', '.' or '-', not only dots"


def camera_url_problem(url: str) -> str | None:
    """Why `url` cannot be a camera, or None: a URL scheme other than rtsp(s) would be read as a file."""
    match = _URL_SCHEME.match(url)
    if match is None or match.group(1).lower() in CAMERA_SCHEMES:
        return None
    scheme = match.group(1)
    close = difflib.get_close_matches(scheme.lower(), CAMERA_SCHEMES, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return (
        f"unsupported URL scheme {scheme!r}{hint}: a camera is an rtsp:// or rtsps:// URL, "
        "a video file or a folder of images"
    )


class CameraConfig(Section):
    name: str = Field(description="id used in metrics, logs, events, media folders and MQTT topics")
    url: str = Field(min_length=1, description="rtsp://..., a video file, or a folder of images")
    kind: Literal["auto", "file", "rtsp", "folder"] = "auto"
    fps: float = Field(10.0, gt=0, le=240, description="frame rate of a folder of images")
    model: Path | None = Field(None, description="normality model file; default <models_dir>/<name>.npz")
    analysis_fps: float | None = Field(None, gt=0, le=240, description="analyse at most this many fps")

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        problem = camera_name_problem(name)
        if problem:
            raise ValueError(problem)
        return name

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        problem = camera_url_problem(url)
        if problem:
            raise ValueError(problem)
        return url


class RuntimeConfig(Section):
    mode: Literal["auto", "live", "replay"] = "auto"  # auto: live when any camera is rtsp
    ingress_capacity: int = Field(0, ge=0, le=1024)
    pipe_capacity: int = Field(0, ge=0, le=1024)
    drain_timeout_s: float = Field(10.0, gt=0, le=600)
    unhealthy_after: int = Field(5, ge=1, le=10_000)
    max_in_flight: int = Field(
        0, ge=0, le=1024, description="live: frames of one camera inside the pipeline at once (0: 2)"
    )


class SourceConfig(Section):
    rtsp_transport: Literal["tcp", "udp"] = "tcp"
    open_timeout_s: float = Field(5.0, gt=0, le=120)
    stall_timeout_s: float = Field(5.0, gt=0, le=600, description="no frame this long: reconnect")
    backoff_initial_s: float = Field(0.5, gt=0, le=60)
    backoff_max_s: float = Field(4.0, gt=0, le=600, description="reconnect tries at most this far apart")
    hwaccel: Literal["auto", "none", "cuda"] = Field(
        "auto",
        description="decode on the GPU (NVDEC through FFmpeg): auto = when a CUDA GPU is there; "
        "falls back to the CPU when the device cannot be opened",
    )
    decode_threads: int = Field(
        1,
        ge=0,
        le=64,
        description="FFmpeg decoder threads per camera (CPU decoding); 1: the stages already use the "
        "cores, a second decoder thread only competes with them; 0: FFmpeg's choice",
    )


def is_loopback(host: str) -> bool:
    """Whether `host` is only reachable from this machine (a name other than localhost may be anything)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HttpConfig(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(9108, ge=0, le=65535)
    token_env: str | None = Field(
        None, description="env var holding a bearer token that protects /metrics and /healthz's details"
    )
    allow_unauthenticated: bool = Field(
        False, description="serve a non-loopback host without a token (trusted networks only; logged)"
    )
    stall_limit_s: float = Field(
        30.0, gt=0, description="/healthz fails when a live camera is silent this long"
    )

    @model_validator(mode="after")
    def _authenticated_off_loopback(self) -> HttpConfig:
        open_to_all = self.enabled and not self.token_env and not self.allow_unauthenticated
        if open_to_all and not is_loopback(self.host):
            raise ValueError(
                f"serving /metrics on {self.host or 'all interfaces'} without authentication is refused: "
                "set http.token_env (the environment variable holding a bearer token), or "
                "http.allow_unauthenticated: true on a trusted network"
            )
        return self


class JsonlSinkConfig(Section):
    enabled: bool = True
    path: str = "-"  # "-" is stdout


class SqliteSinkConfig(Section):
    enabled: bool = True
    path: Path = Path("var/events.db")


class DeliveryConfig(Section):
    """How a network sink drains the SQLite outbox: in order, retrying with capped exponential backoff."""

    backoff_initial_s: float = Field(0.5, gt=0, le=60)
    backoff_max_s: float = Field(30.0, gt=0, le=3600)
    poll_s: float = Field(0.25, gt=0, le=60, description="how often an idle worker looks for new events")
    batch: int = Field(100, ge=1, le=10_000, description="outbox rows read per query")


class MqttSinkConfig(DeliveryConfig):
    enabled: bool = False
    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(1883, ge=1, le=65535)
    client_id: str = Field("vigil", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    topic_prefix: str = Field("vigil", pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
    username: str | None = None
    password_env: str | None = Field(None, description="env var holding the broker password")
    tls: bool = False
    keepalive_s: int = Field(30, ge=5, le=3600)
    ack_timeout_s: float = Field(10.0, gt=0, le=300, description="wait this long for PUBACK")


class WebhookSinkConfig(DeliveryConfig):
    enabled: bool = False
    url: str | None = Field(None, pattern=r"^https?://", description="endpoint that receives each event")
    secret_env: str | None = Field(None, description="env var holding the HMAC-SHA256 signing secret")
    timeout_s: float = Field(5.0, gt=0, le=300)

    @model_validator(mode="after")
    def _url_when_enabled(self) -> WebhookSinkConfig:
        if self.enabled and self.url is None:
            raise ValueError("an enabled webhook needs a url")
        return self


class SinksConfig(Section):
    jsonl: JsonlSinkConfig = JsonlSinkConfig()
    sqlite: SqliteSinkConfig = SqliteSinkConfig()
    mqtt: MqttSinkConfig = MqttSinkConfig()
    webhook: WebhookSinkConfig = WebhookSinkConfig()


class DetectorConfig(Section):
    model: str = "yolo11n.pt"
    device: str = Field("cpu", pattern=r"^(cpu|cuda|cuda:\d+|auto)$")
    imgsz: int = Field(640, ge=32, le=4096)
    confidence: float = Field(0.15, ge=0, le=1)
    iou: float = Field(0.5, ge=0, le=1)
    classes: list[int] | None = None
    tracker: Literal["bytetrack", "botsort"] = "bytetrack"
    batch: int = Field(1, ge=1, le=64)
    tiles: int = Field(1, ge=1, le=4, description="split the frame into this many column tiles (upscales)")
    track_high_thresh: float = Field(0.25, ge=0, le=1, description="ByteTrack first-stage confidence")
    new_track_thresh: float = Field(0.25, ge=0, le=1, description="confidence needed to start a track")
    track_buffer: int = Field(30, ge=1, le=10_000, description="frames (at 30 fps) a lost track is kept")
    every_k_frames: int = Field(
        2, ge=1, le=10, description="detector runs every k-th analysed frame; boxes follow the flow between"
    )
    inference_threads: int = Field(
        1, ge=0, le=256, description="INFERENCE_NUM_THREADS of an OpenVINO export (others ignore it); 0: auto"
    )
    rect: bool = Field(
        True,
        description="static square OpenVINO exports run at the frame's letterbox rectangle (imgsz on the "
        "long side; 640x360 -> 640x384) instead of imgsz x imgsz, as PyTorch weights do",
    )


class PoseConfig(Section):
    enabled: bool = True
    model: str = "yolo11n-pose.pt"
    device: str = Field("cpu", pattern=r"^(cpu|cuda|cuda:\d+|auto)$")
    crop_size: int = Field(128, ge=32, le=1024, description="top-down crops are resized to this")
    full_frame_min_height: float = Field(
        0.35, gt=0, le=1, description="people taller than this share of the frame use full-frame pose"
    )
    batch: int = Field(16, ge=1, le=256)
    every_k_frames: int = Field(3, ge=1, le=100, description="re-estimate a track's pose every k-th frame")
    still_k_frames: int = Field(
        0,
        ge=0,
        le=100,
        description="a person whose box moved less than still_box_change keeps its pose up to this many "
        "frames (0 or <= every_k_frames: off)",
    )
    still_box_change: float = Field(
        0.1, ge=0, le=10, description="box edge move, share of its height, that counts as not still"
    )
    min_box_area: float = Field(
        1024.0,
        ge=0,
        description="people with a smaller box (pixels^2 of the analysed frame) get no pose: COCO evaluates "
        "keypoints only from 32x32 px up",
    )
    torch_threads: int = Field(1, ge=0, le=256, description="torch intra-op threads (process-wide); 0: as is")
    format: Literal["auto", "pytorch", "onnx", "openvino", "openvino_int8", "engine"] = Field(
        "auto", description="network format; auto: openvino on the CPU, pytorch on CUDA (exports cached)"
    )
    inference_threads: int = Field(
        1, ge=0, le=256, description="OpenVINO / ONNX Runtime threads of this model (pytorch: torch_threads)"
    )


class AppearanceConfig(Section):
    enabled: bool = True
    model: str = "yolo11n-pose.pt"
    device: str = Field("cpu", pattern=r"^(cpu|cuda|cuda:\d+|auto)$")
    crop_size: int = Field(64, ge=32, le=512, description="box crops are resized to this (multiple of 32)")
    layer: int = Field(8, ge=0, le=10, description="backbone layer whose output is pooled")
    batch: int = Field(32, ge=1, le=256)
    every_k_frames: int = Field(2, ge=1, le=100, description="re-embed a track every k-th frame (cached)")
    torch_threads: int = Field(1, ge=0, le=256, description="torch intra-op threads (process-wide); 0: as is")
    format: Literal["auto", "pytorch", "onnx", "openvino", "openvino_int8", "engine"] = Field(
        "auto", description="network format; auto: openvino on the CPU, pytorch on CUDA (exports cached)"
    )
    inference_threads: int = Field(
        1, ge=0, le=256, description="OpenVINO / ONNX Runtime threads of this model (pytorch: torch_threads)"
    )


class ModelsConfig(Section):
    cache_dir: str = Field(
        "var/models/exports", description="ONNX / OpenVINO / TensorRT exports of .pt weights (reused)"
    )
    calibration: list[str] = Field(
        default_factory=list,
        description="normal clips that calibrate the pose INT8 export (openvino_int8; auto on CPU when set)",
    )


class FlowConfig(Section):
    """Dense optical flow; always on: attributes (speed, direction, motion, moving regions) read it."""

    method: Literal["dis", "raft"] = "dis"
    device: str = Field("cpu", pattern=r"^(cpu|cuda|cuda:\d+|auto)$")
    scale: float = Field(1.0, gt=0, le=1, description="compute flow on the frame scaled by this")
    preset: Literal["ultrafast", "fast", "medium"] = "fast"
    opencv_threads: int = Field(
        1,
        ge=0,
        le=256,
        description="OpenCV's thread pool, set when the flow stage starts (process-wide: flow, attributes, "
        "moving regions); 0: OpenCV's default (one per core)",
    )


class AttributesConfig(Section):
    grid: tuple[int, int] = (6, 8)  # rows, cols of the place grid
    velocity_window: int = Field(5, ge=2, le=100, description="fewest last boxes a velocity is fitted on")
    velocity_window_s: float = Field(
        0.4,
        gt=0,
        le=10,
        description="seconds of a track's last boxes its velocity and scale rate are fitted on, when they "
        "are more than velocity_window: the same time at any frame rate (five boxes at 10 fps, 11 at 25)",
    )
    velocity_from: Literal["edges", "ground"] = Field(
        "edges",
        description="edges: per axis, the slower of the box's two opposite edges when both move the same "
        "way, else 0 (a box that stretches or shrinks, as when other people hide a walker's legs, is not "
        "moving); ground: the bottom-centre point's own slope",
    )
    motion_bins: tuple[int, int] = (4, 8)  # magnitude x orientation
    blob_min_area: float = Field(0.002, gt=0, le=1, description="share of frame area for unexplained motion")
    blob_min_flow: float = Field(1.0, gt=0, description="pixels per frame")
    blob_ignore_border: bool = Field(
        True, description="leave out moving regions cut by the frame edge (objects walking into view)"
    )
    blob_box_margin: float = Field(
        0.15, ge=0, le=2, description="detection boxes grown by this share of their height before blob search"
    )
    blob_spill_reach: float = Field(
        0.5,
        ge=0,
        le=5,
        description="moving regions within this many box-heights of a detection and moving with it are its "
        "flow spill, not another object (0: off)",
    )
    appearance_dim: int = Field(
        256,
        ge=1,
        le=8192,
        description="D of the appearance row (NaN when absent); = the appearance encoder's D",
    )
    dwell_radius: float = Field(1.0, gt=0, le=20, description="box-heights; dwell = time spent this close")
    track_expiry_s: float = Field(2.0, gt=0, le=600, description="forget a track not seen this long")
    max_history: int = Field(3000, ge=2, le=1_000_000, description="samples kept per track (bounds dwell)")


class SceneGraphConfig(Section):
    """Relation thresholds, in box-heights (distances) and box-heights per second (speeds)."""

    near: float = Field(1.5, gt=0, le=50, description="ground distance under which two objects are near")
    overlap_iou: float = Field(0.1, gt=0, le=1, description="IoU above which two boxes overlap")
    ride_speed_tol: float = Field(
        0.5, gt=0, le=2, description="velocity difference still 'moving with', as a share of the faster speed"
    )
    ride_min_speed: float = Field(
        0.6, ge=0, le=50, description="rider speed at confidence 0.5 (Ped2 train walkers: 95th pct 0.51)"
    )
    ride_memory_s: float = Field(
        1.0, ge=0, le=60, description="riding evidence decays with this time constant"
    )
    rideable: tuple[str, ...] = ("bicycle", "motorcycle", "skateboard", "horse")
    approach_rate: float = Field(0.3, gt=0, le=50, description="|d distance/dt| for approaching/moving_away")
    approach_within: float = Field(3.0, gt=0, le=100, description="pairs farther apart are not related")
    history_frames: int = Field(5, ge=2, le=100, description="frames of pair distances kept per camera")
    direction_deg: float = Field(30.0, gt=0, le=90, description="max heading difference for same_direction")
    moving_speed: float = Field(0.3, ge=0, le=50, description="slower objects have no direction")
    group_within: float = Field(3.0, gt=0, le=100, description="same_direction only within this distance")
    min_confidence: float = Field(0.5, ge=0, le=1, description="relations below this are not emitted")


class ScoringConfig(Section):
    models_dir: Path = Path("var/models")
    combine: Literal["max", "top2_mean", "sum"] = "max"
    smoothing_frames: int = Field(10, ge=1, le=1000)
    track_window: int = Field(
        5,
        ge=1,
        le=1000,
        description="object score = mean of the track's last N frame scores (younger: its own; 1: off)",
    )
    warmup_s: float = Field(300.0, ge=0, description="online learning period for a camera with no model")
    crossval_folds: int = Field(
        3,
        ge=0,
        le=50,
        description="folds of whole normal clips for the false-alert estimate `vigil fit` and warm-up "
        "measure (0: off; fewer clips than folds: one clip per fold; one clip: cut into this many stretches)",
    )
    device: str = Field("cpu", pattern=r"^(cpu|cuda|cuda:\d+|auto)$")
    attributes: list[str] | None = Field(None, description="judged attributes (ablation); None: all")
    knn_k: int = Field(3, ge=1, le=100, description="neighbours averaged by the k-NN attributes")
    memory_size: int = Field(4000, ge=16, le=1_000_000, description="memory bank rows kept per attribute")
    coreset: Literal["greedy", "random"] = "greedy"
    min_cell_samples: int = Field(10, ge=1, description="fewer samples in a cell: use class-global stats")
    spread_shrink_tracks: float = Field(
        0.0,
        ge=0,
        le=1000,
        description="weight in tracks of the class's spread in a cell's quantile table (empirical Bayes; "
        "0: off, the cell's own spread; 2 raised Ped2's cross-validated false alerts, see "
        "stages/normality/grids.py)",
    )
    dynamics_history: int = Field(4, ge=1, le=32, description="velocity steps the dynamics model sees")
    dynamics_epochs: int = Field(40, ge=1, le=10_000)
    pose_window: int = Field(8, ge=3, le=100, description="frames of pose history for speed-vs-pose")
    gait_window: int = Field(8, ge=3, le=1000, description="fewest samples of box-aspect and speed for gait")
    gait_window_s: float = Field(
        0.8, gt=0, le=60, description="seconds of box-aspect and speed history for gait (about one stride)"
    )
    holdout: float = Field(0.2, gt=0, lt=1, description="share of normal footage held out for calibration")
    sustained_frames: int = Field(
        20,
        ge=0,
        le=1000,
        description="sustained evidence: median of a track's last N calibrated scores per attribute (0: off)",
    )
    sustained_min_frames: int = Field(
        10, ge=1, le=1000, description="applicable frames a track needs before its sustained evidence counts"
    )

    @field_validator("sustained_min_frames")
    @classmethod
    def _min_within_window(cls, v: int, info) -> int:  # type: ignore[no-untyped-def]
        window = info.data.get("sustained_frames")
        if window and v > window:
            raise ValueError(f"sustained_min_frames ({v}) must not exceed sustained_frames ({window})")
        return v


class EventsConfig(Section):
    start_score: float = Field(3.0, ge=0, description="calibrated score that opens an event")
    end_score: float = Field(2.0, ge=0, description="score under which an event may end (hysteresis)")
    alerts_per_hour: float | None = Field(
        None,
        ge=0,
        description="budget of false alerts per hour: raises each camera's start score to what this budget "
        "gives on the model's cross-validated normal footage (never lowers it); unset: start_score alone",
    )
    min_duration_s: float = Field(0.5, ge=0)
    end_after_s: float = Field(1.5, ge=0, description="quiet time before an event ends")
    cooldown_s: float = Field(10.0, ge=0, description="per camera and track, after an event ended")
    update_every_s: float = Field(2.0, gt=0)
    media_dir: Path = Path("var/media")
    snapshots: bool = True
    clips: bool = True
    clip_pre_s: float = Field(2.0, ge=0, le=60)
    clip_post_s: float = Field(2.0, ge=0, le=60)
    clip_max_s: float = Field(60.0, gt=0, le=3600, description="longest clip; events overlapping share one")
    clip_max_height: int = Field(720, ge=64, le=4320, description="taller frames are scaled down for clips")

    @field_validator("end_score")
    @classmethod
    def _end_below_start(cls, v: float, info) -> float:  # type: ignore[no-untyped-def]
        start = info.data.get("start_score")
        if start is not None and v > start:
            raise ValueError(f"end_score ({v}) must not exceed start_score ({start})")
        return v


class ConsoleConfig(Section):
    """The operator console (pipeline/console): served on the `http` endpoint beside /metrics."""

    enabled: bool = Field(
        True,
        description="serve the console and its JSON API at / on the http endpoint, beside /metrics "
        "(needs sinks.sqlite: it reads the event store)",
    )
    path: Path = Field(
        Path("var/console.db"), description="SQLite file of users, sessions, login throttling and reviews"
    )
    session_idle_s: float = Field(1800.0, gt=0, description="a session unused this long expires")
    session_max_s: float = Field(43200.0, gt=0, description="every session expires this long after login")
    secure_cookies: Literal["auto", "always", "never"] = Field(
        "auto",
        description="Secure flag on cookies: auto sets it when the request came over HTTPS (behind a TLS "
        "proxy that sends X-Forwarded-Proto: https)",
    )
    login_attempts: int = Field(5, ge=1, description="failed logins per user and address before a lockout")
    lockout_s: float = Field(60.0, gt=0, description="first lockout; it doubles with each further failure")
    feedback_weight: int = Field(
        5,
        ge=1,
        le=10000,
        description='"normal here": each observation of the event counts as this many normal ones (as if '
        "the object had passed this many times)",
    )
    preview_interval_s: float = Field(1.0, gt=0, description="a camera preview JPEG at most this often")


class RetentionConfig(Section):
    """How long events, snapshots and clips are kept (pipeline/retention.py)."""

    days: float | None = Field(30.0, gt=0, description="delete ended events older than this; None: keep")
    max_disk_gb: float | None = Field(
        None, gt=0, description="snapshots and clips within this budget, oldest events deleted first"
    )
    interval_s: float = Field(600.0, gt=0, description="how often retention runs")


class VigilConfig(Section):
    cameras: list[CameraConfig] = Field(default_factory=list)
    runtime: RuntimeConfig = RuntimeConfig()
    source: SourceConfig = SourceConfig()
    http: HttpConfig = HttpConfig()
    sinks: SinksConfig = SinksConfig()
    detector: DetectorConfig = DetectorConfig()
    pose: PoseConfig = PoseConfig()
    appearance: AppearanceConfig = AppearanceConfig()
    models: ModelsConfig = ModelsConfig()
    flow: FlowConfig = FlowConfig()
    attributes: AttributesConfig = AttributesConfig()
    scene_graph: SceneGraphConfig = SceneGraphConfig()
    scoring: ScoringConfig = ScoringConfig()
    events: EventsConfig = EventsConfig()
    console: ConsoleConfig = ConsoleConfig()
    retention: RetentionConfig = RetentionConfig()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    #: values resolved from `${ENV}` at load time, so logs can redact them (pipeline.redaction)
    _secrets: frozenset[str] = PrivateAttr(default_factory=frozenset)

    @field_validator("cameras")
    @classmethod
    def _unique_names(cls, cameras: list[CameraConfig]) -> list[CameraConfig]:
        names = [c.name for c in cameras]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"camera names must be unique, repeated: {', '.join(dup)}")
        return cameras


#: config sections whose settings shape what perception measures: what a normality model was learnt on
PERCEPTION_SECTIONS = ("detector", "pose", "appearance", "flow", "attributes", "scene_graph")
#: fields that change how perception runs, not what it measures
_RUNTIME_FIELDS = frozenset(
    {"device", "format", "inference_threads", "torch_threads", "opencv_threads", "batch"}
)
#: settings that older models recorded and that no longer exist (flow.enabled: flow always ran)
_RETIRED_SETTINGS = frozenset({"flow.enabled"})


def perception_settings(config: VigilConfig) -> dict[str, Any]:
    """{"section.field": value} of the settings that shape perception's measurements (model paths
    resolved, so the same weights reached from another folder compare equal)."""
    out: dict[str, Any] = {}
    for name in PERCEPTION_SECTIONS:
        for key, value in getattr(config, name).model_dump(mode="json").items():
            if key in _RUNTIME_FIELDS:
                continue
            out[f"{name}.{key}"] = resolved_model(value) if key == "model" else value
    return out


def resolved_model(value: Any) -> Any:
    """A section's `model` value with an existing path made absolute and free of '..', so the same
    weights reached from another folder (another checkout beside ../shared) compare equal."""
    if isinstance(value, str) and Path(value).exists():
        return str(Path(value).resolve())
    return value


def perception_differences(learnt: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """ "pose.min_box_area: 0.0 -> 1024.0" for every setting that differs (a model without recorded
    settings, from before they were recorded: none)."""
    if not learnt:
        return []
    return [
        f"{key}: {learnt.get(key, 'unset')} -> {now.get(key, 'unset')}"
        for key in sorted(set(learnt) | set(now))
        if learnt.get(key) != now.get(key) and _measures(key)
    ]


def _measures(key: str) -> bool:
    """Whether a recorded "section.field" shapes measurements (older models also recorded runtime
    fields such as flow.opencv_threads, and the retired flow.enabled)."""
    return key not in _RETIRED_SETTINGS and key.partition(".")[2] not in _RUNTIME_FIELDS
