"""The `vigil` command line: validate-config, watch, replay (and, registered by their owners, fit / eval).

Each command is a `Command` in the `COMMANDS` table: a function that adds its arguments and a
function that runs it and returns the exit code. Errors the operator can fix (`VigilError`) are
one line on stderr and exit code 2; a failed source is exit code 1; anything unexpected is one
line plus a hint to rerun with `--debug`, which shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, TextIO

from pipeline.commands import eval as eval_command
from pipeline.commands import fit as fit_command
from pipeline.config import CameraConfig, VigilConfig
from pipeline.configfile import load_config, redact, secrets_of
from pipeline.errors import ConfigError, SourceError, VigilError
from pipeline.graph import build_graph
from pipeline.logs import fields, setup_logging
from pipeline.metrics import Metrics
from pipeline.runner import Runner, RunnerOptions, RunReport
from pipeline.sinks.base import EventSink
from pipeline.stage import Stage

if TYPE_CHECKING:
    from stages.normality import NormalityModel

log = logging.getLogger("vigil.cli")

EXIT_OK, EXIT_SOURCE_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_CONFIG = "config.yaml"


@dataclass(frozen=True)
class Command:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# ---- validate-config -----------------------------------------------------------------------------


def _args_validate(parser: argparse.ArgumentParser) -> None:
    _add_config_arg(parser)


def cmd_validate_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            print(line, file=sys.stderr)
        return EXIT_USAGE
    print(f"{args.config}: OK ({len(config.cameras)} camera{'' if len(config.cameras) == 1 else 's'})")
    return EXIT_OK


# ---- watch / replay ------------------------------------------------------------------------------


def _args_watch(parser: argparse.ArgumentParser) -> None:
    _add_config_arg(parser)


def cmd_watch(args: argparse.Namespace) -> int:
    config = _load(args)
    if not config.cameras:
        raise ConfigError(f"{args.config}: no cameras configured (add a `cameras:` list)")
    mode = config.runtime.mode
    live = mode == "live" or (mode == "auto" and any(_is_rtsp(c) for c in config.cameras))
    return run_pipeline(config, list(config.cameras), live=live, realtime=False)


def _args_replay(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="video files (or image folders) to replay")
    _add_config_arg(parser)
    parser.add_argument("--realtime", action="store_true", help="pace frames by their timestamps")
    parser.add_argument("--camera", help="camera name to use (one FILE only); default: the file's stem")


def cmd_replay(args: argparse.Namespace) -> int:
    config = _load(args)
    if args.camera is not None and len(args.files) != 1:
        raise ConfigError("--camera names one camera: give exactly one FILE with it")
    by_name = {c.name: c for c in config.cameras}
    cameras: list[CameraConfig] = []
    for file in args.files:
        path = Path(file)
        if not path.exists():
            raise SourceError(f"{file}: no such file or folder")
        name = args.camera or _camera_name(path)
        if name in (c.name for c in cameras):
            raise ConfigError(
                f"two files would both be camera {name!r}: rename one or replay them separately"
            )
        known = by_name.get(name)
        try:
            if known is not None:  # keep the camera's own settings (model, analysis_fps), replace the url
                cameras.append(known.model_copy(update={"url": str(path.resolve()), "kind": "auto"}))
            else:
                cameras.append(CameraConfig(name=name, url=str(path.resolve())))
        except ValueError as exc:
            raise ConfigError(f"{file}: cannot make a camera of it: {exc}") from None
    return run_pipeline(config, cameras, live=False, realtime=args.realtime)


def run_pipeline(config: VigilConfig, cameras: list[CameraConfig], live: bool, realtime: bool) -> int:
    """Sources + stages + sinks + metrics server, run until the sources end or a signal arrives."""
    from pipeline.http import HealthProbe, MetricsServer
    from pipeline.sinks.delivery import Delivery
    from pipeline.sinks.factory import make_delivery, make_sinks
    from pipeline.sources.factory import make_source

    stop = threading.Event()
    metrics = Metrics()
    sinks: list[EventSink] = []
    delivery: Delivery | None = None
    events_on_stdout = config.sinks.jsonl.enabled and config.sinks.jsonl.path == "-"
    try:
        with _stop_on_signals(stop), stdout_for_events_only(events_on_stdout) as events_stream:
            if config.http.enabled:
                server = MetricsServer(
                    metrics,
                    HealthProbe(metrics, config.http.stall_limit_s),
                    host=config.http.host,
                    port=config.http.port,
                    token=_token(config),
                )
                server.start(stop)
            sinks = make_sinks(config, events_stream)
            delivery = make_delivery(config, [c.name for c in cameras], metrics)
            if delivery is not None:  # MQTT / webhook workers draining the SQLite outbox
                delivery.start()
            sources = [make_source(camera, config.source) for camera in cameras]
            graph = build_graph(build_stages(config, cameras))
            options = RunnerOptions(
                live=live,
                realtime=realtime,
                ingress_capacity=config.runtime.ingress_capacity,
                pipe_capacity=config.runtime.pipe_capacity,
                drain_timeout_s=config.runtime.drain_timeout_s,
                unhealthy_after=config.runtime.unhealthy_after,
                max_in_flight=config.runtime.max_in_flight,
                analysis_fps={c.name: c.analysis_fps for c in cameras if c.analysis_fps},
            )
            log.info(
                "starting",
                extra=fields(
                    mode="live" if live else ("replay-realtime" if realtime else "replay"),
                    cameras=",".join(c.name for c in cameras),
                    stages=",".join(graph.names) or "none",
                ),
            )
            runner = Runner(graph, sources, metrics, stop, sinks=sinks, options=options)
            report = runner.run()
    finally:
        stop.set()  # stops the metrics server too
        for sink in sinks:  # the runner closed them; closing again is a no-op (and covers early errors)
            sink.close()
        if delivery is not None:
            delivery.close(flush_s=5.0)
    print(summary_line(report, [c.name for c in cameras]), file=sys.stderr)
    for camera, message in report.source_errors.items():
        print(f"vigil: error: camera {camera}: {redact(message, secrets_of(config))}", file=sys.stderr)
    return EXIT_SOURCE_FAILED if report.source_errors else EXIT_OK


def load_models(config: VigilConfig, cameras: Sequence[CameraConfig]) -> dict[str, NormalityModel]:
    """Each camera's normality model: `camera.model` (must exist) or <models_dir>/<name>.npz (if fitted)."""
    from stages.normality import NormalityModel

    models: dict[str, NormalityModel] = {}
    for camera in cameras:
        path = camera.model or config.scoring.models_dir / f"{camera.name}.npz"
        if camera.model is None and not path.exists():
            log.warning(
                "no normality model: detection only, no anomaly scores (fit one with `vigil fit`)",
                extra=fields(camera=camera.name, expected=str(path)),
            )
            continue
        models[camera.name] = NormalityModel.load(path, device=config.scoring.device)  # ModelError if bad
        stale = fit_command.stale_settings(models[camera.name], config)
        if stale:
            log.warning(
                "normality model learnt with other perception settings: its scores may be off; "
                "re-run `vigil fit`",
                extra=fields(camera=camera.name, model=str(path), settings="; ".join(stale[:5])),
            )
    return models


def build_stages(config: VigilConfig, cameras: Sequence[CameraConfig]) -> list[Stage]:
    """The stage list from `stages.factory`; a decode-only graph while that module does not exist.

    With no normality model for any camera the factory builds the perception part only.
    """
    models = load_models(config, cameras)  # before anything starts: a bad model file fails at once
    try:
        from stages.factory import build_stages as factory
    except ModuleNotFoundError as exc:
        if exc.name != "stages.factory":
            raise
        log.warning("stages.factory not found: running a decode-only graph", extra=fields(stage="cli"))
        return []
    return list(factory(config, models or None))


def summary_line(report: RunReport, cameras: Sequence[str]) -> str:
    frames = " ".join(
        f"{c}={report.frames_decoded.get(c, 0)}/{report.frames_completed.get(c, 0)}" for c in cameras
    )
    return (
        f"vigil: summary: frames decoded/completed {frames}; events {report.events}; "
        f"drops {sum(report.frames_dropped.values())}; stage errors {sum(report.stage_errors.values())}; "
        f"source errors {len(report.source_errors)}; {report.wall_s:.1f} s"
        + ("" if report.clean_shutdown else "; drain timed out")
    )


# ---- helpers -------------------------------------------------------------------------------------


def _add_config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c", "--config", default=DEFAULT_CONFIG, help=f"config file (default: ./{DEFAULT_CONFIG})"
    )


def _load(args: argparse.Namespace) -> VigilConfig:
    config = load_config(args.config)
    if args.log_level is None and not args.debug:
        setup_logging(config.log_level)
    log.debug("config loaded", extra=fields(path=args.config, secrets=len(secrets_of(config))))
    return config


def _token(config: VigilConfig) -> str | None:
    name = config.http.token_env
    if not name:
        return None
    token = os.environ.get(name)
    if not token:
        raise ConfigError(f"http.token_env: environment variable {name} is not set")
    return token


def _is_rtsp(camera: CameraConfig) -> bool:
    return camera.kind == "rtsp" or (
        camera.kind == "auto" and camera.url.lower().startswith(("rtsp://", "rtsps://"))
    )


def _camera_name(path: Path) -> str:
    stem = path.stem if path.is_file() else path.name
    return re.sub(r"[^A-Za-z0-9_.-]", "_", stem)[:64] or "camera"


@contextmanager
def stdout_for_events_only(enabled: bool) -> Iterator[TextIO | None]:
    """While running, file descriptor 1 carries only the JSONL events.

    Libraries print banners to stdout (ultralytics: "Loading ... for OpenVINO inference..."), which
    would corrupt the event stream; everything but the events goes to stderr meanwhile.
    """
    if not enabled:
        yield None
        return
    sys.stdout.flush()
    saved = os.dup(1)
    events = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    try:
        yield events
    finally:
        sys.stdout.flush()
        events.flush()
        os.dup2(saved, 1)
        os.close(saved)
        events.close()


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM set the stop event (a second one kills as usual); restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("signal received: draining", extra=fields(signal=signal.Signals(signum).name))
        stop.set()
        signal.signal(signum, signal.SIG_DFL)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


# ---- registry and entry point --------------------------------------------------------------------

#: every `vigil` subcommand; other modules add theirs here (e.g. "fit", "eval") with one entry each
COMMANDS: dict[str, Command] = {
    "validate-config": Command(
        "check config.yaml and report each problem with its line", _args_validate, cmd_validate_config
    ),
    "watch": Command("analyse the configured cameras until SIGINT/SIGTERM", _args_watch, cmd_watch),
    "replay": Command("replay video files through the pipeline (lossless)", _args_replay, cmd_replay),
    "fit": Command(
        "learn a camera's normality model from normal footage", fit_command.add_arguments, fit_command.run
    ),
    "eval": Command(
        "fit on a benchmark's training clips, replay its test clips, report AUC/RBDC/TBDC/fps",
        eval_command.add_arguments,
        eval_command.run,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vigil", description="Explainable video anomaly detection.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")
    parser.add_argument(
        "--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="override the config's log_level"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        command.add_arguments(sub.add_parser(name, help=command.help, description=command.help))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level or ("DEBUG" if args.debug else "INFO"))
    try:
        return COMMANDS[args.command].run(args)
    except VigilError as exc:
        if args.debug:
            traceback.print_exc()
        for line in redact(str(exc)).splitlines() or [type(exc).__name__]:
            print(f"vigil: error: {line}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("vigil: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
            print(f"vigil: error: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        else:
            print(
                f"vigil: error: unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)",
                file=sys.stderr,
            )
        return EXIT_SOURCE_FAILED


def entry() -> None:
    """Console entry point: run `main`, flush everything, then leave without the interpreter's teardown.

    By the time `main` returns the runner has joined its threads, the sinks are closed and the
    delivery workers flushed; what remains is the interpreter finalising native libraries, which for
    OpenVINO takes 3-5 s (measured: a script that loads the INT8 detector exits 3.7 s sooner this way).
    A service manager waiting on SIGTERM should not wait for that.
    """
    code = main()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or broken pipe: nothing left to save
            code = code or EXIT_SOURCE_FAILED
    os._exit(code)


if __name__ == "__main__":
    entry()
