"""The threaded runner: one thread per source, one worker per stage (consecutive interpreter-bound stages
share one), bounded channels, one stop event.

Live mode never builds latency (the ingress drops a camera's oldest frame when it is behind);
replay mode is lossless (sources block) and runs as fast as the machine allows or, with
`realtime`, paced by the frames' timestamps. A stage that raises is logged with the stage and
frame, counted, and the frame goes on without that stage's output; repeated failures mark the
stage unhealthy. On stop, sources end first, then each stage drains and ends in order, within a
timeout, and sinks are flushed last.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from pipeline.channels import Closed, Ingress, Pipe
from pipeline.errors import SourceError
from pipeline.graph import StageGraph
from pipeline.logs import fields
from pipeline.metrics import Metrics
from pipeline.packets import Event, FramePacket, SourceEvent
from pipeline.redaction import redact
from pipeline.sinks.base import EventSink
from pipeline.sources.base import Source, SourceMonitor
from pipeline.stage import Stage

log = logging.getLogger("vigil.runner")

PacketCallback = Callable[[FramePacket], None]


@dataclass(frozen=True)
class RunnerOptions:
    live: bool = False
    realtime: bool = False
    ingress_capacity: int = 0  # 0: 2 frames per camera when live, 16 in replay
    pipe_capacity: int = 0  # 0: 1 packet between stages when live, 8 in replay
    max_in_flight: int = 0  # live: a camera's frames inside the pipeline at once (0: 2); replay: unlimited
    drain_timeout_s: float = 10.0
    unhealthy_after: int = 5  # consecutive failures that mark a stage unhealthy
    poll_s: float = 0.05
    #: consecutive stages that are `interpreter_bound` run in one worker thread instead of one each: Python
    #: runs one thread at a time (the GIL), so separate threads could not run them in parallel anyway
    share_interpreter_bound: bool = True
    #: per camera: analyse at most this many frames per second (others pass through unanalysed)
    analysis_fps: Mapping[str, float] = field(default_factory=dict)


@dataclass
class RunReport:
    frames_decoded: dict[str, int] = field(default_factory=dict)
    frames_completed: dict[str, int] = field(default_factory=dict)
    frames_dropped: dict[str, int] = field(default_factory=dict)
    stage_errors: dict[str, int] = field(default_factory=dict)
    source_errors: dict[str, str] = field(default_factory=dict)
    events: int = 0
    wall_s: float = 0.0
    clean_shutdown: bool = True


class AnalysisStride:
    """Chooses which frames to analyse so a camera is analysed at about `fps` frames per second.

    Works on timestamps, not frame counts, so it holds for variable frame rates and sources
    whose rate is not a multiple of the analysis rate.
    """

    def __init__(self, fps: float | None) -> None:
        self.interval = 1.0 / fps if fps else 0.0
        self.next_due: float | None = None

    def take(self, pts: float, source_fps: float) -> bool:
        if self.interval <= 0:
            return True
        half_frame = 0.5 / source_fps
        if self.next_due is None or pts + half_frame >= self.next_due:
            due = pts if self.next_due is None else self.next_due
            self.next_due = max(due + self.interval, pts + half_frame)
            return True
        return False


class Runner:
    def __init__(
        self,
        graph: StageGraph,
        sources: Sequence[Source],
        metrics: Metrics,
        stop: threading.Event,
        sinks: Sequence[EventSink] = (),
        options: RunnerOptions | None = None,
        on_packet: PacketCallback | None = None,
    ) -> None:
        cameras = [s.camera for s in sources]
        duplicates = sorted({c for c in cameras if cameras.count(c) > 1})
        if duplicates:
            raise ValueError(f"duplicate camera names: {', '.join(duplicates)}")
        self.graph = graph
        self.sources = list(sources)
        self.metrics = metrics
        self.stop = stop
        self.sinks = list(sinks)
        self.options = options or RunnerOptions()
        self.on_packet = on_packet
        self.report = RunReport()
        self._abort = threading.Event()  # set when draining overran its timeout
        self._lock = threading.Lock()
        live = self.options.live
        self.ingress = Ingress(
            capacity=self.options.ingress_capacity or (2 if live else 16),
            drop_oldest=live,
            on_drop=self._count_drop,
            max_in_flight=(self.options.max_in_flight or 2) if live else 0,
        )
        pipe_capacity = self.options.pipe_capacity or (1 if live else 8)
        self.pipes = [Pipe(pipe_capacity) for _ in graph.order]  # pipes[i] feeds stage i+1 / the sink

    # ---- public ----------------------------------------------------------------------------------

    def run(self) -> RunReport:
        """Run until every finite source ends or `stop` is set; returns what happened."""
        started = time.monotonic()
        self._start_stages()
        workers = [
            threading.Thread(
                target=self._stage_worker,
                args=(first, group),
                name="stage-" + "+".join(stage.name for stage in group),
                daemon=True,
            )
            for first, group in self._worker_groups()
        ]
        finisher = threading.Thread(target=self._finish_worker, name="finish", daemon=True)
        feeders = []
        for source in self.sources:
            self.ingress.open_lane(source.camera)
            feeders.append(
                threading.Thread(
                    target=self._source_worker, args=(source,), name=f"source-{source.camera}", daemon=True
                )
            )
        for t in [*workers, finisher, *feeders]:
            t.start()

        while any(t.is_alive() for t in feeders) and not self.stop.is_set():
            time.sleep(self.options.poll_s)
            self._update_depths()
        if self.stop.is_set():
            log.info("stopping: sources first, then stages in order", extra=fields(stage="runner"))
        deadline = time.monotonic() + self.options.drain_timeout_s
        for t in feeders:
            t.join(max(0.0, deadline - time.monotonic()))
        self.ingress.close()
        while not self.stop.is_set() and any(t.is_alive() for t in [*workers, finisher]):
            # the sources ended by themselves (replay): finish every queued frame; the drain
            # timeout only bounds shutdown after a stop, counted from when it arrives
            self.stop.wait(self.options.poll_s)
            self._update_depths()
            deadline = time.monotonic() + self.options.drain_timeout_s
        for t in [*workers, finisher]:
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                self._abort.set()
        if self._abort.is_set():
            self.report.clean_shutdown = False
            log.error(
                "drain timed out; abandoning packets still in flight",
                extra=fields(stage="runner", timeout_s=self.options.drain_timeout_s),
            )
            for t in [*workers, finisher]:
                t.join(1.0)
        self._close_sinks()
        self.report.wall_s = time.monotonic() - started
        return self.report

    # ---- sources ---------------------------------------------------------------------------------

    def _source_worker(self, source: Source) -> None:
        camera = source.camera
        monitor = SourceMonitor(camera, source.live, self.metrics)
        added = False
        pace_origin: tuple[float, float] | None = None
        stride = AnalysisStride(self.options.analysis_fps.get(camera))
        decoded = 0
        try:
            for frame in source.frames(self.stop, monitor):
                if not added:
                    event = SourceEvent(camera, "added", frame.width, frame.height, frame.fps)
                    self.ingress.put(camera, event, self.stop)
                    added = True
                monitor.frame(frame)
                decoded += 1
                if self.options.realtime and not source.live:
                    pace_origin = self._pace(frame.pts, pace_origin)
                packet = FramePacket(frame=frame, analysed=stride.take(frame.pts, frame.fps))
                if source.live and not packet.analysed:
                    continue  # live: frames outside the analysis rate are not queued at all
                if not self.ingress.put(camera, packet, self.stop):
                    break
                if self.stop.is_set():
                    break
        except SourceError as exc:
            self.report.source_errors[camera] = redact(str(exc))
            log.error(str(exc), extra=fields(camera=camera, stage="source"))
        except Exception as exc:  # a bug in a source must not take the other cameras down
            self.report.source_errors[camera] = redact(f"{type(exc).__name__}: {exc}")
            log.exception("source failed", extra=fields(camera=camera, stage="source"))
        finally:
            with self._lock:
                self.report.frames_decoded[camera] = decoded
            if added:
                self.ingress.put(camera, SourceEvent(camera, "eos"), threading.Event())
            self.metrics.source_connected(camera, False)

    def _pace(self, pts: float, origin: tuple[float, float] | None) -> tuple[float, float]:
        now = time.monotonic()
        if origin is None:
            return (now, pts)
        wall0, pts0 = origin
        delay = (wall0 + (pts - pts0)) - now
        if delay > 0:
            self.stop.wait(delay)
        return origin

    def _count_drop(self, camera: str) -> None:
        self.metrics.dropped.labels(camera, "behind").inc()
        with self._lock:
            self.report.frames_dropped[camera] = self.report.frames_dropped.get(camera, 0) + 1

    # ---- stages ----------------------------------------------------------------------------------

    def _start_stages(self) -> None:
        """on_start in order, before any frame flows, so a bad model file fails the run at once."""
        started: list[Stage] = []
        try:
            for stage in self.graph.order:
                stage.on_start()
                started.append(stage)
                self.metrics.stage_healthy.labels(stage.name).set(1)
        except BaseException:
            for stage in reversed(started):
                self._call_stop(stage)
            raise

    def _worker_groups(self) -> list[tuple[int, list[Stage]]]:
        """(index of the first stage, stages) per worker thread: one stage each, except that consecutive
        `interpreter_bound` stages share one worker when `options.share_interpreter_bound` is on."""
        groups: list[tuple[int, list[Stage]]] = []
        for i, stage in enumerate(self.graph.order):
            previous = groups[-1][1][-1] if groups else None
            if (
                self.options.share_interpreter_bound
                and previous is not None
                and previous.interpreter_bound
                and stage.interpreter_bound
            ):
                groups[-1][1].append(stage)
            else:
                groups.append((i, [stage]))
        return groups

    def _input_of(self, index: int) -> Ingress | Pipe:
        return self.ingress if index == 0 else self.pipes[index - 1]

    def _stage_worker(self, first: int, group: Sequence[Stage]) -> None:
        """Run `group` (the stages order[first : first + len(group)]) in this thread, in order.

        Each stage keeps its own metrics, failure count and hooks; only the thread is shared.
        """
        inbox = self._input_of(first)
        outbox = self.pipes[first + len(group) - 1]
        failures = [0] * len(group)
        head = group[0]
        try:
            while not self._abort.is_set():
                try:
                    items = inbox.get_batch(head.max_batch, self.options.poll_s * 4, head.batch_wait_s)
                except Closed:
                    break
                ready: list[FramePacket] = []
                for item in items:
                    if isinstance(item, SourceEvent):
                        self._run_group(group, ready, failures)
                        self._forward(outbox, ready)
                        ready = []
                        for stage in group:
                            self._control(stage, item)
                            pending = stage.drain_events()
                            if pending:
                                item = replace(item, events=(*item.events, *pending))
                        outbox.put(item, self._abort)
                    else:
                        ready.append(item)
                self._run_group(group, ready, failures)
                self._forward(outbox, ready)
        finally:
            outbox.close()
            for stage in group:
                self._call_stop(stage)

    def _run_group(self, group: Sequence[Stage], packets: list[FramePacket], failures: list[int]) -> None:
        if not packets:
            return
        for k, stage in enumerate(group):
            for packet in packets:
                self.metrics.frames_in.labels(packet.frame.camera, stage.name).inc()
            step = stage.max_batch if k and stage.max_batch > 0 else len(packets)
            for start in range(0, len(packets), step):
                failures[k] = self._run_batch(stage, packets[start : start + step], failures[k])

    def _forward(self, outbox: Pipe, packets: list[FramePacket]) -> None:
        for packet in packets:
            outbox.put(packet, self._abort)

    def _run_batch(self, stage: Stage, packets: list[FramePacket], failures: int) -> int:
        runnable = [p for p in packets if p.analysed and not p.missing(stage.needs)]
        if not runnable:
            return failures
        t0 = time.perf_counter()
        try:
            stage.process_batch(runnable)
            ok = True
        except Exception as exc:
            ok = False
            failed = self._isolate_failures(stage, runnable, exc)
        elapsed = time.perf_counter() - t0
        per_frame = elapsed / len(runnable)
        for packet in runnable:
            self.metrics.stage_latency.labels(stage.name).observe(per_frame)
            self.metrics.frames_out.labels(packet.frame.camera, stage.name).inc()
        if ok:
            if failures >= self.options.unhealthy_after:
                log.info("stage recovered", extra=fields(stage=stage.name))
            self.metrics.stage_healthy.labels(stage.name).set(1)
            return 0
        failures += failed
        if failures >= self.options.unhealthy_after:
            self.metrics.stage_healthy.labels(stage.name).set(0)
        return failures

    def _isolate_failures(self, stage: Stage, packets: list[FramePacket], first: Exception) -> int:
        """Retry a failed batch frame by frame so one bad frame does not cost the others."""
        if len(packets) == 1:
            self._record_error(stage, packets[0], first)
            return 1
        failed = 0
        for packet in packets:
            try:
                stage.process(packet)
            except Exception as exc:
                self._record_error(stage, packet, exc)
                failed += 1
        return failed

    def _record_error(self, stage: Stage, packet: FramePacket, exc: Exception) -> None:
        camera, frame = packet.frame.camera, packet.frame.index
        for slot in stage.provides:  # a half-filled packet must not look complete downstream
            if slot != "events":
                setattr(packet, slot, None)
        self.metrics.stage_errors.labels(camera, stage.name).inc()
        with self._lock:
            self.report.stage_errors[stage.name] = self.report.stage_errors.get(stage.name, 0) + 1
        log.error(
            f"stage failed: {type(exc).__name__}: {exc}",
            exc_info=exc,
            extra=fields(stage=stage.name, camera=camera, frame=frame),
        )

    def _control(self, stage: Stage, event: SourceEvent) -> None:
        hook = stage.on_source_added if event.kind == "added" else stage.on_source_eos
        try:
            hook(event)
        except Exception as exc:
            self.metrics.stage_errors.labels(event.camera, stage.name).inc()
            log.error(
                f"stage {event.kind} hook failed: {type(exc).__name__}: {exc}",
                exc_info=exc,
                extra=fields(stage=stage.name, camera=event.camera),
            )

    def _call_stop(self, stage: Stage) -> None:
        try:
            stage.on_stop()
        except Exception as exc:
            log.error(f"on_stop failed: {type(exc).__name__}: {exc}", extra=fields(stage=stage.name))

    # ---- end of the pipeline ---------------------------------------------------------------------

    def _finish_worker(self) -> None:
        inbox: Ingress | Pipe = self.pipes[-1] if self.pipes else self.ingress
        while not self._abort.is_set():
            try:
                items = inbox.get_batch(32, self.options.poll_s * 4)
            except Closed:
                break
            for item in items:
                if isinstance(item, FramePacket):
                    self._finish(item)
                elif item.events:
                    self._emit(list(item.events))

    def _finish(self, packet: FramePacket) -> None:
        frame = packet.frame
        self.ingress.release(frame.camera)
        self.metrics.e2e_latency.labels(frame.camera).observe(max(0.0, time.time() - frame.captured_at))
        with self._lock:
            self.report.frames_completed[frame.camera] = self.report.frames_completed.get(frame.camera, 0) + 1
        if packet.scores is not None:
            self.metrics.frame_score.labels(frame.camera).set(packet.scores.smoothed_score)
        if packet.events:
            self._emit(packet.events)
            for event in packet.events:  # stored now: frame-to-event latency of the events this frame opened
                if event.kind == "new" and event.camera == frame.camera and event.end_frame == frame.index:
                    self.metrics.event_latency.labels(frame.camera).observe(
                        max(0.0, time.time() - frame.captured_at)
                    )
        if self.on_packet is not None:
            try:
                self.on_packet(packet)
            except Exception as exc:
                log.error(f"packet callback failed: {type(exc).__name__}: {exc}", exc_info=exc)

    def _emit(self, events: list[Event]) -> None:
        for event in events:
            self.metrics.events.labels(event.camera, event.kind).inc()
            if event.kind == "new" and event.reasons:
                self.metrics.events_by_reason.labels(event.camera, event.reasons[0].attribute).inc()
        with self._lock:
            self.report.events += len(events)
        for sink in self.sinks:
            try:
                sink.write(events)
            except Exception as exc:
                self.metrics.sink_errors.labels(sink.name).inc()
                log.error(
                    f"sink failed: {type(exc).__name__}: {exc}", extra=fields(stage=f"sink-{sink.name}")
                )

    def _close_sinks(self) -> None:
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:
                self.metrics.sink_errors.labels(sink.name).inc()
                log.error(
                    f"sink close failed: {type(exc).__name__}: {exc}", extra=fields(stage=f"sink-{sink.name}")
                )

    def _update_depths(self) -> None:
        for i, stage in enumerate(self.graph.order):
            self.metrics.queue_depth.labels(stage.name).set(self._input_of(i).depth())
