"""The composition root: everything a run needs, built from a `VigilConfig` in one place.

Metrics and its HTTP server, sinks and network delivery (`sinks.factory`), sources
(`sources.factory`), normality models (loaded and checked against the perception settings), the
stage list (`stages.factory`), runner options and the runner. `run` wires all cameras of a watch
or replay; `camera_runner` builds one camera's pipeline alone; `perception_stages` is the graph
`vigil fit` runs and `replay` the finite, lossless run that fit and eval use. Commands call this
module and never build these things themselves.

`stages` is imported where a graph is built, not at the top: `vigil validate-config` and the
runtime core stay free of torch and ultralytics.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, TextIO

from pipeline.config import CameraConfig, VigilConfig, perception_differences, perception_settings
from pipeline.errors import ConfigError
from pipeline.graph import build_graph
from pipeline.http import HealthProbe, MetricsServer
from pipeline.logs import fields
from pipeline.metrics import Metrics
from pipeline.model_store import ModelFollower, ModelStore
from pipeline.packets import FramePacket
from pipeline.retention import Retention, RetentionPolicy
from pipeline.runner import Runner, RunnerOptions, RunReport
from pipeline.sinks.base import EventSink
from pipeline.sinks.delivery import Delivery
from pipeline.sinks.factory import make_delivery, make_sinks, outbox_sink_names
from pipeline.sinks.jsonl import names_stdout
from pipeline.sinks.sqlite import SqliteEventStore
from pipeline.sources.base import Source
from pipeline.sources.factory import make_source
from pipeline.stage import Stage
from pipeline.terminal import stdout_for_events_only, stop_on_signals

if TYPE_CHECKING:
    from pipeline.console.live import LiveView
    from pipeline.console.server import ConsoleServer
    from stages.normality import NormalityModel

log = logging.getLogger("vigil.cli")  # the logger name these lines always had


# ---- models and stages ---------------------------------------------------------------------------


def stale_settings(model: NormalityModel, config: VigilConfig) -> list[str]:
    """The perception settings that differ between the model's footage and `config` (empty: none, or
    not recorded)."""
    return perception_differences(model.perception, perception_settings(config))


def load_models(config: VigilConfig, cameras: Sequence[CameraConfig]) -> dict[str, NormalityModel]:
    """Each camera's normality model: `camera.model` (must exist) or <models_dir>/<name>.npz (if fitted,
    or learnt during an earlier run's warm-up)."""
    from stages.normality import NormalityModel

    store = ModelStore(config, cameras)
    models: dict[str, NormalityModel] = {}
    for camera in cameras:
        path = store.path(camera.name)
        if camera.model is None and not path.exists():
            log.warning(
                "no normality model yet: it is learnt online during warm-up and saved there"
                if config.scoring.warmup_s > 0
                else "no normality model: detection only, no anomaly scores (fit one with `vigil fit`)",
                extra=fields(camera=camera.name, expected=str(path)),
            )
            continue
        models[camera.name] = NormalityModel.load(path, device=config.scoring.device)  # ModelError if bad
        stale = stale_settings(models[camera.name], config)
        if stale:
            log.warning(
                "normality model learnt with other perception settings: its scores may be off; "
                "re-run `vigil fit`",
                extra=fields(camera=camera.name, model=str(path), settings="; ".join(stale[:5])),
            )
    return models


def perception_stages(config: VigilConfig) -> list[Stage]:
    """decode -> detect -> pose -> appearance -> flow -> attributes -> scene_graph (what fit measures)."""
    from stages.factory import perception_stages as from_factory

    return from_factory(config)


def analysis_stages(
    config: VigilConfig,
    models: dict[str, NormalityModel] | None,
    save: Callable[[NormalityModel], object] | None = None,
    follow: Callable[[str], NormalityModel | None] | None = None,
) -> list[Stage]:
    """The whole graph for these models (camera name, or "*" for every camera -> model); `save` keeps
    a model a camera learnt during warm-up (None: it lives in memory only); `follow` returns a
    camera's newer model version when one replaced it (None: models never change while running)."""
    from stages.factory import build_stages

    return list(build_stages(config, models, save, follow))


def scoring_stages(config: VigilConfig, models: dict[str, NormalityModel] | None) -> list[Stage]:
    """score -> explain -> events: what runs after the scene graph (alone: `vigil eval --from-cache`)."""
    from stages.factory import scoring_stages as from_factory

    return from_factory(config, models)


def camera_stages(config: VigilConfig, cameras: Sequence[CameraConfig]) -> list[Stage]:
    """The cameras' graph; with no normality model for any camera, perception only (see stages.factory)."""
    models = load_models(config, cameras)  # before anything starts: a bad model file fails at once
    store = ModelStore(config, cameras)
    follower = ModelFollower(store, device=config.scoring.device)
    for camera in cameras:
        follower.prime(camera.name)
    return analysis_stages(config, models or None, save=store.save, follow=follower)


# ---- sources and runner --------------------------------------------------------------------------


def make_sources(config: VigilConfig, cameras: Sequence[CameraConfig]) -> list[Source]:
    return [make_source(camera, config.source) for camera in cameras]


def runner_options(
    config: VigilConfig, cameras: Sequence[CameraConfig], live: bool, realtime: bool
) -> RunnerOptions:
    return RunnerOptions(
        live=live,
        realtime=realtime,
        ingress_capacity=config.runtime.ingress_capacity,
        pipe_capacity=config.runtime.pipe_capacity,
        drain_timeout_s=config.runtime.drain_timeout_s,
        unhealthy_after=config.runtime.unhealthy_after,
        max_in_flight=config.runtime.max_in_flight,
        analysis_fps={c.name: c.analysis_fps for c in cameras if c.analysis_fps},
    )


class Services:
    """What runs beside the graph: metrics and the HTTP endpoint (the console with /metrics, or /metrics
    alone), local sinks, network delivery, retention.

    `close` stops the server (through the stop event) and closes the sinks and delivery whether or
    not `start` got through: the runner closes its sinks itself, closing again is a no-op.
    """

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.metrics = Metrics()
        self.sinks: list[EventSink] = []
        self.delivery: Delivery | None = None
        #: frames seen by the console (previews, fps, scores); None without a console or cameras
        self.live: LiveView | None = None
        self._closers: list[Callable[[], None]] = []

    def start(
        self,
        config: VigilConfig,
        cameras: Sequence[str],
        events_stream: TextIO | None = None,
        running: bool = True,
    ) -> None:
        """`events_stream` is where JSONL path "-" writes (None: sys.stdout); `running`: cameras run in
        this process (False: `vigil serve`, the console over the event store alone)."""
        self.sinks = make_sinks(config, events_stream)
        retention = self._retention(config)  # after the sinks: it opens the store they create
        if config.http.enabled:
            health = HealthProbe(self.metrics, config.http.stall_limit_s)
            if console_enabled(config):
                from pipeline.console.live import LiveView  # the web stack only where it is served
                from pipeline.console.server import ConsoleServer

                self.live = (
                    LiveView(config.console.preview_interval_s, config.events.start_score)
                    if running
                    else None
                )
                app = self._console(config, cameras, health, retention)
                server: ConsoleServer | MetricsServer = ConsoleServer(
                    app, config.http.host, config.http.port, token=_token(config) is not None
                )
            else:
                server = MetricsServer(
                    self.metrics, health, host=config.http.host, port=config.http.port, token=_token(config)
                )
            server.start(self.stop)
        self.delivery = make_delivery(config, cameras, self.metrics)
        if self.delivery is not None:  # MQTT / webhook workers draining the SQLite outbox
            self.delivery.start()
        if retention is not None:
            retention.start(self.stop)

    def _keep_scores(self, store: SqliteEventStore) -> None:
        """Every few seconds, the frame scores the live view sampled go into the store (a last time at
        the stop event)."""
        assert self.live is not None
        while True:
            stopping = self.stop.wait(5.0)
            try:
                store.record_scores(self.live.take_scores())
            except (sqlite3.Error, ValueError) as exc:  # a busy or closed store: these samples are lost
                log.error(f"frame scores not kept: {exc}")
            if stopping:
                return

    def _retention(self, config: VigilConfig) -> Retention | None:
        policy = RetentionPolicy.from_config(config.retention)
        if not config.sinks.sqlite.enabled:
            return None
        retention = Retention(
            config.sinks.sqlite.path,
            config.events.media_dir,
            policy,
            self.metrics,
            config.retention.interval_s,
        )
        self._closers.append(retention.close)
        return retention

    def _console(
        self, config: VigilConfig, cameras: Sequence[str], health: HealthProbe, retention: Retention | None
    ) -> object:
        """The console app over this run's event store, model store, live view and retention."""
        from pipeline.console.alerts import AlertReader
        from pipeline.console.app import Console, create_app
        from pipeline.console.cameras import CameraBoard
        from pipeline.console.ranges import NormalRanges
        from pipeline.console.reviewing import Reviewing
        from pipeline.console.users import UserStore

        store = SqliteEventStore(config.sinks.sqlite.path, outbox_sinks=outbox_sink_names(config.sinks))
        reader = AlertReader(config.sinks.sqlite.path)
        users = UserStore.from_config(config.console)
        keeper = None
        if self.live is not None:  # the running cameras' frame scores, for the camera page's history
            keeper = threading.Thread(
                target=self._keep_scores, args=(store,), name="score-history", daemon=True
            )
            keeper.start()
        self._closers += [partial(_join, keeper), store.close, reader.close, users.close]
        if users.count() == 0:
            log.warning("the console has no users yet: add one with `vigil user add NAME --role admin`")
        models = ModelStore(config)
        reviewing = Reviewing(
            store,
            reader,
            models,
            config.events.media_dir,
            config.console.feedback_weight,
            config.scoring.device,
        )
        board = CameraBoard(
            cameras, reader, models, self.metrics, self.live, config.events.media_dir,
            config.http.stall_limit_s, warmup=config.scoring.warmup_s > 0,
        )  # fmt: skip
        console = Console(
            users, reader, reviewing, board, self.metrics, health, _token(config),
            config.console.feedback_weight, config.console.secure_cookies,
            retention=None if retention is None else partial(retention_panel, retention, config),
            ranges=NormalRanges(models, config.scoring.device),
        )  # fmt: skip
        return create_app(console)

    def close(self) -> None:
        self.stop.set()  # stops the HTTP server and retention too
        for sink in self.sinks:
            sink.close()
        if self.delivery is not None:
            self.delivery.close(flush_s=5.0)
        for close in self._closers:
            close()


def build_runner(
    config: VigilConfig, cameras: Sequence[CameraConfig], services: Services, live: bool, realtime: bool
) -> Runner:
    """Sources, models and stages of `cameras`, feeding the services' metrics and sinks."""
    sources = make_sources(config, cameras)
    graph = build_graph(camera_stages(config, cameras))
    options = runner_options(config, cameras, live, realtime)
    on_packet = services.live.observe if services.live is not None else None
    log.info(
        "starting",
        extra=fields(
            mode="live" if live else ("replay-realtime" if realtime else "replay"),
            cameras=",".join(c.name for c in cameras),
            stages=",".join(graph.names) or "none",
        ),
    )
    return Runner(
        graph,
        sources,
        services.metrics,
        services.stop,
        sinks=services.sinks,
        options=options,
        on_packet=on_packet,
    )


def camera_runner(
    config: VigilConfig, camera: CameraConfig, services: Services, live: bool, realtime: bool
) -> Runner:
    """One camera's pipeline alone: its source, its model and its own stages (one camera per worker)."""
    return build_runner(config, [camera], services, live, realtime)


def run(config: VigilConfig, cameras: Sequence[CameraConfig], live: bool, realtime: bool) -> RunReport:
    """Sources + stages + sinks + metrics server, run until the sources end or a signal arrives."""
    stop = threading.Event()
    services = Services(stop)
    events_on_stdout = config.sinks.jsonl.enabled and names_stdout(config.sinks.jsonl.path)
    try:  # fd 1 always redirected: library banners never reach stdout, whatever the sinks
        with stop_on_signals(stop), stdout_for_events_only(True) as events_stream:
            services.start(config, [c.name for c in cameras], events_stream if events_on_stdout else None)
            return build_runner(config, cameras, services, live, realtime).run()
    finally:
        services.close()


def replay(
    stages: Sequence[Stage],
    sources: Sequence[Source],
    options: RunnerOptions,
    sinks: Sequence[EventSink] = (),
    on_packet: Callable[[FramePacket], None] | None = None,
) -> RunReport:
    """A finite run of `stages` over `sources` to the end, on metrics of its own (fit, eval)."""
    runner = Runner(
        build_graph(stages),
        sources,
        Metrics(),
        threading.Event(),
        sinks=sinks,
        options=options,
        on_packet=on_packet,
    )
    return runner.run()


def _join(thread: threading.Thread | None) -> None:
    if thread is not None:
        thread.join(timeout=10.0)


def console_enabled(config: VigilConfig) -> bool:
    """The console needs the HTTP endpoint and the event store it reads."""
    return config.console.enabled and config.http.enabled and config.sinks.sqlite.enabled


def retention_panel(retention: Retention, config: VigilConfig) -> dict[str, object]:
    """What the console shows of retention: the policy and what the store holds now."""
    report = retention.status()
    return {
        "days": config.retention.days,
        "budget_gb": config.retention.max_disk_gb,
        "events_kept": report.events_kept,
        "media_bytes": report.media_bytes,
        "oldest_kept": report.oldest_kept,
    }


def serve(config: VigilConfig) -> None:
    """The console over the event store without running cameras (`vigil serve`), until a signal; network
    delivery runs too, so reviews reach MQTT and webhooks."""
    if not console_enabled(config):
        raise ConfigError("vigil serve needs http.enabled, console.enabled and sinks.sqlite.enabled")
    stop = threading.Event()
    services = Services(stop)
    try:
        with stop_on_signals(stop):
            services.start(config, [c.name for c in config.cameras], running=False)
            stop.wait()
    finally:
        services.close()


def _token(config: VigilConfig) -> str | None:
    name = config.http.token_env
    if not name:
        return None
    token = os.environ.get(name)
    if not token:
        raise ConfigError(f"http.token_env: environment variable {name} is not set")
    return token
