"""Alert events: per (camera, track) lifecycle new -> update -> end with hysteresis and cooldown.

`EventTracker` is the pure state machine of one camera (testable with hand-built observations);
`EventStage` feeds it from the packets, writes the snapshot when an event opens and records the
clip from the camera's pre-roll buffer until `clip_post_s` after the event ends (events that overlap on
one camera share that clip: one encoder per camera, not per event).

Rules, all in the frames' own time (pts), so replay and live behave the same:
- an event opens when the track's object score has stayed >= `start_score` for `min_duration_s`
  (the duration of n consecutive frames is n frame periods, so one frame lasts 1/fps);
- it stays open while the score is >= `end_score`, and ends once the track has been quiet (below
  `end_score` or not seen) for `end_after_s`;
- while open, an `update` is sent at most every `update_every_s`, and only when the peak score
  rose or the ranked reasons at the peak changed;
- after an end, the same track cannot open a new event for `cooldown_s`.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.config import EventsConfig
from pipeline.logs import fields
from pipeline.packets import Event, Explanations, FramePacket, ObjectAttributes, Reason, Scores, SourceEvent
from pipeline.stage import Stage
from stages.media import MEDIA_ERRORS, Box, CameraClips, draw_snapshot, write_jpeg
from stages.normality.observations import ObservationRecorder, observations_path
from stages.score import model_for

if TYPE_CHECKING:
    from stages.normality.alert_budget import AlertCurve
    from stages.normality.model import NormalityModel

log = logging.getLogger("vigil.events")

EPS = 1e-6  # tolerance for comparing sums of frame periods with configured durations


@dataclass(frozen=True, slots=True)
class Observation:
    """One tracked object in one frame, as the event logic needs it."""

    track_id: int
    class_name: str
    box: tuple[float, float, float, float]
    score: float
    reasons: tuple[Reason, ...] = ()


@dataclass
class _Open:
    id: str
    track_id: int
    class_name: str
    start_time: float
    start_frame: int
    box: tuple[float, float, float, float]
    trajectory: deque[tuple[float, float, float, float, float]]
    score: float
    peak_score: float
    reasons: tuple[Reason, ...]
    last_active_time: float
    last_active_frame: int
    last_sent_time: float
    last_sent_peak: float
    last_sent_reasons: tuple[str, ...]
    snapshot_path: str | None = None
    clip_path: str | None = None


@dataclass
class _Track:
    above_since: tuple[float, int] | None = None  # (pts, frame) the score first reached start_score
    recent: deque[tuple[float, float, float, float, float]] = field(default_factory=deque)
    cooldown_until: float = -math.inf
    open: _Open | None = None


class EventTracker:
    """Event lifecycle of one camera. `step` takes one frame's observations, returns the messages."""

    def __init__(self, camera: str, config: EventsConfig, max_trajectory: int = 256) -> None:
        self.camera = camera
        self.config = config
        self.max_trajectory = max_trajectory
        self._tracks: dict[int, _Track] = {}
        self._last: tuple[float, int] = (0.0, 0)
        self._stepped = False

    @property
    def open_events(self) -> list[str]:
        return [t.open.id for t in self._tracks.values() if t.open is not None]

    def step(self, pts: float, frame: int, fps: float, observations: list[Observation]) -> list[Event]:
        cfg = self.config
        # one analysed frame lasts until the next: the spacing of analysed frames (a stride makes it
        # longer than 1/fps), 1/fps for the first one
        last_pts = self._last[0] if self._stepped else None
        period = pts - last_pts if last_pts is not None and pts > last_pts else 1.0 / fps
        self._last = (pts, frame)
        self._stepped = True
        out: list[Event] = []
        seen = set()
        for obs in observations:
            seen.add(obs.track_id)
            score = obs.score if math.isfinite(obs.score) else 0.0
            st = self._tracks.setdefault(obs.track_id, _Track(recent=deque(maxlen=self.max_trajectory)))
            point = (pts, *obs.box)
            ev = st.open
            if ev is not None:
                ev.box, ev.score = obs.box, score
                ev.trajectory.append(point)
                if score >= cfg.end_score:
                    ev.last_active_time, ev.last_active_frame = pts, frame
                if score > ev.peak_score:
                    ev.peak_score = score
                    ev.reasons = obs.reasons or ev.reasons
                continue
            if pts < st.cooldown_until - EPS or score < cfg.start_score:
                st.above_since = None
                st.recent.clear()
                continue
            if st.above_since is None:
                st.above_since = (pts, frame)
            st.recent.append(point)
            if pts - st.above_since[0] + period + EPS >= cfg.min_duration_s:
                st.open = self._open(st, obs, score, pts, frame)
                out.append(self._message(st.open, "new", pts, frame))
        for tid, st in self._tracks.items():
            if tid not in seen and st.open is None:
                st.above_since = None  # a gap in the track breaks "sustained"
                st.recent.clear()
        for st in self._tracks.values():
            ev = st.open
            if ev is None:
                continue
            quiet = pts - ev.last_active_time
            if quiet > EPS and quiet + EPS >= cfg.end_after_s:
                out.append(self._end(st, pts))
            elif pts - ev.last_sent_time + EPS >= cfg.update_every_s and (
                ev.peak_score > ev.last_sent_peak or _ranking(ev.reasons) != ev.last_sent_reasons
            ):
                out.append(self._message(ev, "update", pts, frame))
        self._forget_idle(pts)
        return out

    def end_all(self) -> list[Event]:
        """End every open event now (end of stream, shutdown)."""
        pts, _ = self._last
        return [self._end(st, pts) for st in self._tracks.values() if st.open is not None]

    def set_media(self, event_id: str, snapshot_path: str | None, clip_path: str | None) -> None:
        """Record where the event's media went (None: not written), for its later messages."""
        for st in self._tracks.values():
            if st.open is not None and st.open.id == event_id:
                st.open.snapshot_path, st.open.clip_path = snapshot_path, clip_path

    # ---- internals -------------------------------------------------------------------------------

    def _open(self, st: _Track, obs: Observation, score: float, pts: float, frame: int) -> _Open:
        assert st.above_since is not None
        start_time, start_frame = st.above_since
        trajectory = deque(st.recent, maxlen=self.max_trajectory)
        st.above_since = None
        st.recent.clear()
        return _Open(
            id=uuid.uuid4().hex,
            track_id=obs.track_id,
            class_name=obs.class_name,
            start_time=start_time,
            start_frame=start_frame,
            box=obs.box,
            trajectory=trajectory,
            score=score,
            peak_score=score,
            reasons=obs.reasons,
            last_active_time=pts,
            last_active_frame=frame,
            last_sent_time=pts,
            last_sent_peak=score,
            last_sent_reasons=_ranking(obs.reasons),
        )

    def _end(self, st: _Track, pts: float) -> Event:
        ev = st.open
        assert ev is not None
        st.open = None
        st.cooldown_until = pts + self.config.cooldown_s
        return self._message(ev, "end", ev.last_active_time, ev.last_active_frame)

    def _message(self, ev: _Open, kind: str, end_time: float, end_frame: int) -> Event:
        ev.last_sent_time = self._last[0]
        ev.last_sent_peak = ev.peak_score
        ev.last_sent_reasons = _ranking(ev.reasons)
        return Event(
            id=ev.id,
            kind=kind,  # type: ignore[arg-type]
            camera=self.camera,
            start_time=ev.start_time,
            end_time=end_time,
            start_frame=ev.start_frame,
            end_frame=end_frame,
            track_id=ev.track_id,
            class_name=ev.class_name,
            box=ev.box,
            trajectory=tuple(ev.trajectory),
            score=ev.score,
            peak_score=ev.peak_score,
            reasons=ev.reasons,
            snapshot_path=ev.snapshot_path,
            clip_path=ev.clip_path,
            created_at=time.time(),
        )

    def _forget_idle(self, pts: float) -> None:
        """Drop state of tracks that are neither open, pending nor cooling down (bounded memory)."""
        idle = [
            tid
            for tid, st in self._tracks.items()
            if st.open is None and st.above_since is None and pts >= st.cooldown_until
        ]
        for tid in idle:
            del self._tracks[tid]


def _ranking(reasons: tuple[Reason, ...], top: int = 3) -> tuple[str, ...]:
    return tuple(r.attribute for r in reasons[:top])


def observations(
    attributes: ObjectAttributes, scores: Scores, explanations: Explanations
) -> list[Observation]:
    """Join the per-object packets of one frame by track id."""
    rows = {int(t): i for i, t in enumerate(attributes.track_id.tolist())}
    boxes = attributes.xyxy.tolist()
    explained = explanations.by_track()
    out = []
    for tid, score in zip(scores.track_id.tolist(), scores.object_score.tolist(), strict=True):
        row = rows.get(int(tid))
        if row is None:
            continue
        x1, y1, x2, y2 = boxes[row]
        expl = explained.get(int(tid))
        out.append(
            Observation(
                track_id=int(tid),
                class_name=attributes.name_of(row),
                box=(x1, y1, x2, y2),
                score=float(score),
                reasons=expl.reasons if expl is not None else (),
            )
        )
    return out


def with_start_score(config: EventsConfig, start: float) -> EventsConfig:
    """`config` with another start score; the end score keeps its gap below it (the hysteresis)."""
    gap = config.start_score - config.end_score
    return config.model_copy(update={"start_score": start, "end_score": max(0.0, start - gap)})


def budget_start_score(config: EventsConfig, camera: str, curve: AlertCurve | None) -> float:
    """The camera's start score under `events.alerts_per_hour`: what the budget gives on the false alerts
    its model measured on held-out normal footage (`config.start_score` without a budget or a curve)."""
    budget = config.alerts_per_hour
    if budget is None:
        return config.start_score
    if curve is None:
        log.warning(
            "events.alerts_per_hour: this model has no false-alert estimate (re-run `vigil fit` with "
            "scoring.crossval_folds > 0); the start score stays events.start_score",
            extra=fields(camera=camera, start_score=config.start_score),
        )
        return config.start_score
    start = curve.threshold_for(budget, floor=config.start_score)
    log.info(
        "alert budget",
        extra=fields(camera=camera, alerts_per_hour=budget, start_score=start, estimate=curve.summary(start)),
    )
    return start


class EventStage(Stage):
    """Events from the scored, explained objects of each camera (see the module docstring).

    With `events.alerts_per_hour`, a camera's start score is what the budget gives on its model's
    false-alert estimate (`budget_start_score`); `models` is the mapping the score stage fills, read
    when a camera is added and again whenever its model changes (one learnt during warm-up arrives
    while the camera runs). The end score keeps its gap below the start score.
    """

    name = "events"
    interpreter_bound = True
    needs = ("frame", "attributes", "scores", "explanations")
    provides = ("events",)

    def __init__(
        self,
        config: EventsConfig,
        max_trajectory: int = 256,
        models: Mapping[str, NormalityModel] | None = None,
    ) -> None:
        self.config = config
        self.max_trajectory = max_trajectory
        self.models: Mapping[str, NormalityModel] = {} if models is None else models
        self._budgeted: dict[str, NormalityModel | None] = {}  # the model each tracker's config is for
        self._trackers: dict[str, EventTracker] = {}
        self._clips: dict[str, CameraClips] = {}
        self._recorders: dict[str, ObservationRecorder] = {}
        self._pending: list[Event] = []

    def on_source_added(self, event: SourceEvent) -> None:
        self._trackers[event.camera] = EventTracker(event.camera, self.config, self.max_trajectory)
        self._recorders[event.camera] = ObservationRecorder(event.camera)
        self._follow_model(event.camera)
        if self.config.clips:
            self._clips[event.camera] = CameraClips(
                event.camera,
                self.config.clip_pre_s,
                self.config.clip_post_s,
                max_s=self.config.clip_max_s,
                max_height=self.config.clip_max_height,
            )

    def _follow_model(self, camera: str) -> None:
        """Set the camera's start score from its model's false-alert estimate if the model changed."""
        model = model_for(self.models, camera)
        if camera in self._budgeted and self._budgeted[camera] is model:
            return
        self._budgeted[camera] = model
        # no model yet (warm-up; its scores stay 0 meanwhile): nothing to budget on
        start = (
            self.config.start_score
            if model is None
            else budget_start_score(self.config, camera, model.false_alerts)
        )
        config = self.config if start == self.config.start_score else with_start_score(self.config, start)
        self._trackers[camera].config = config

    def on_source_eos(self, event: SourceEvent) -> None:
        self._pending.extend(self._close_camera(event.camera))

    def drain_events(self) -> list[Event]:
        out, self._pending = self._pending, []
        return out

    def on_stop(self) -> None:
        for camera in list(self._trackers):
            ended = self._close_camera(camera)
            if ended:
                log.warning(
                    "events still open at shutdown were ended without a message",
                    extra=fields(stage=self.name, camera=camera, events=len(ended)),
                )

    def process(self, packet: FramePacket) -> None:
        frame = packet.frame
        assert packet.attributes is not None and packet.scores is not None and packet.explanations is not None
        tracker = self._trackers.get(frame.camera)
        if tracker is None:  # frames without an 'added' message (direct use): create state lazily
            self.on_source_added(SourceEvent(frame.camera, "added", frame.width, frame.height, frame.fps))
            tracker = self._trackers[frame.camera]
        self._follow_model(frame.camera)
        clips = self._clips.get(frame.camera)
        if clips is not None:
            for path in clips.push(frame):
                log.info("clip written", extra=fields(stage=self.name, camera=frame.camera, path=str(path)))
        obs = observations(packet.attributes, packet.scores, packet.explanations)
        events = tracker.step(frame.pts, frame.index, frame.fps, obs)
        recorder = self._recorders[frame.camera]
        for ev in events:
            if ev.kind == "new":
                recorder.start(ev.id, ev.track_id)
        recorder.add(packet.attributes, packet.scene_graph, (frame.height, frame.width))
        out = []
        for ev in events:
            if ev.kind == "new":
                ev = self._start_media(ev, packet, tracker)
            elif ev.kind == "end" and clips is not None:
                clips.finish(ev.id, frame.pts)
            self._keep_observations(recorder, ev)
            out.append(ev)
        packet.events.extend(out)

    def _keep_observations(self, recorder: ObservationRecorder, ev: Event) -> None:
        """Write what the event's object was observed to be (for "normal here"), each time a message
        about it goes out; a failure is logged and never loses the event."""
        seen = recorder.finish(ev.id) if ev.kind == "end" else recorder.observations(ev.id)
        if seen is None:
            return
        try:
            seen.save(observations_path(Path(self.config.media_dir), ev.camera, ev.id))
        except OSError as exc:
            log.error(f"observations not written: {exc}", extra=fields(stage=self.name, camera=ev.camera))

    # ---- media -----------------------------------------------------------------------------------

    def _start_media(self, ev: Event, packet: FramePacket, tracker: EventTracker) -> Event:
        """Write the snapshot and open the clip; a media failure is logged and never loses the event."""
        folder = Path(self.config.media_dir) / ev.camera
        snapshot: str | None = None
        clip: str | None = None
        if self.config.snapshots:
            try:
                image = draw_snapshot(packet.frame.image, self._boxes(ev, packet), ev.reasons)
                snapshot = str(write_jpeg(folder / f"{ev.id}.jpg", image))
            except MEDIA_ERRORS as exc:
                log.error(f"snapshot failed: {exc}", extra=fields(stage=self.name, camera=ev.camera))
        clips = self._clips.get(ev.camera)
        if clips is not None:
            try:
                clip = str(clips.start(ev.id, folder / f"{ev.id}.mp4"))
            except MEDIA_ERRORS as exc:
                log.error(f"clip failed: {exc}", extra=fields(stage=self.name, camera=ev.camera))
        tracker.set_media(ev.id, snapshot, clip)
        return replace(ev, snapshot_path=snapshot, clip_path=clip)

    @staticmethod
    def _boxes(ev: Event, packet: FramePacket) -> list[Box]:
        attrs = packet.attributes
        assert attrs is not None
        boxes = []
        for i, tid in enumerate(attrs.track_id.tolist()):
            x1, y1, x2, y2 = (float(v) for v in attrs.xyxy[i])
            mine = int(tid) == ev.track_id
            label = f"{attrs.name_of(i)} #{tid}" + (f" {ev.score:.1f}" if mine else "")
            boxes.append(Box((x1, y1, x2, y2), label, highlight=mine))
        return boxes

    def _close_camera(self, camera: str) -> list[Event]:
        tracker = self._trackers.pop(camera, None)
        self._budgeted.pop(camera, None)
        ended = tracker.end_all() if tracker is not None else []
        recorder = self._recorders.pop(camera, None)
        if recorder is not None:
            for ev in ended:
                self._keep_observations(recorder, ev)
        clips = self._clips.pop(camera, None)
        if clips is not None:
            for path in clips.close_all():
                log.info("clip written", extra=fields(stage=self.name, camera=camera, path=str(path)))
        return ended
