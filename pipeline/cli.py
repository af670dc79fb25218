"""The `vigil` command line: the table of subcommands and the entry point.

Each command is a `Command` in the `COMMANDS` table: a function that adds its arguments and a
function that runs it and returns the exit code (both in pipeline/commands/<name>.py). Errors the
operator can fix (`VigilError`) are one line on stderr and exit code 2; a failed source is exit
code 1; anything unexpected is one line plus a hint to rerun with `--debug`, which shows the
traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pipeline.commands import eval as eval_command
from pipeline.commands import fit as fit_command
from pipeline.commands import replay as replay_command
from pipeline.commands import serve as serve_command
from pipeline.commands import user as user_command
from pipeline.commands import validate as validate_command
from pipeline.commands import watch as watch_command
from pipeline.errors import VigilError
from pipeline.logs import setup_logging
from pipeline.redaction import redact
from pipeline.terminal import EXIT_OK, EXIT_SOURCE_FAILED, EXIT_USAGE

__all__ = ["COMMANDS", "EXIT_OK", "EXIT_SOURCE_FAILED", "EXIT_USAGE", "Command", "build_parser", "main"]


@dataclass(frozen=True)
class Command:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


#: every `vigil` subcommand, one entry each
COMMANDS: dict[str, Command] = {
    "validate-config": Command(
        "check config.yaml and report each problem with its line",
        validate_command.add_arguments,
        validate_command.run,
    ),
    "watch": Command(
        "analyse the configured cameras until SIGINT/SIGTERM", watch_command.add_arguments, watch_command.run
    ),
    "replay": Command(
        "replay video files through the pipeline (lossless)", replay_command.add_arguments, replay_command.run
    ),
    "serve": Command(
        "serve the console over the event store without running cameras",
        serve_command.add_arguments,
        serve_command.run,
    ),
    "fit": Command(
        "learn a camera's normality model from normal footage", fit_command.add_arguments, fit_command.run
    ),
    "eval": Command(
        "fit on a benchmark's training clips, replay its test clips, report AUC/RBDC/TBDC/fps",
        eval_command.add_arguments,
        eval_command.run,
    ),
    "user": Command(
        "add, remove, re-password or list the operator console's users",
        user_command.add_arguments,
        user_command.run,
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
            print(redact(traceback.format_exc()), end="", file=sys.stderr)
        for line in redact(str(exc)).splitlines() or [type(exc).__name__]:
            print(f"vigil: error: {line}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("vigil: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        what = redact(f"unexpected {type(exc).__name__}: {exc}")
        if args.debug:
            print(redact(traceback.format_exc()), end="", file=sys.stderr)
            print(f"vigil: error: {what}", file=sys.stderr)
        else:
            print(f"vigil: error: {what} (run with --debug for the traceback)", file=sys.stderr)
        return EXIT_SOURCE_FAILED


def entry() -> None:
    """Console entry point: run `main`, flush everything, then leave without the interpreter's teardown.

    By the time `main` returns the runner has joined its threads, the sinks are closed and the
    delivery workers flushed; what remains is the interpreter finalising native libraries, which for
    OpenVINO takes seconds. A service manager waiting on SIGTERM should not wait for that.
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
