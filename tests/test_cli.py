"""The `vigil` command end to end, as a subprocess: one-line errors, exit codes, replay, SIGTERM."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import DETECTOR, PED2, POSE, REPO

VIGIL = [sys.executable, "-m", "pipeline.cli"]


def env_for(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CAM_PASSWORD"}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["YOLO_OFFLINE"] = "1"
    env.update(extra or {})
    return env


def vigil(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*VIGIL, *args], cwd=cwd, env=env or env_for(), capture_output=True, text=True, timeout=timeout
    )


def write_config(folder: Path, body: str = "", drain_timeout_s: float = 10.0) -> Path:
    """A config for tests: metrics on a free port, the event store in `folder`, JSONL on stdout, the
    shared weights. `body` starts on line 10."""
    path = folder / "cfg.yaml"
    path.write_text(
        f"http:\n  port: 0\nruntime:\n  drain_timeout_s: {drain_timeout_s}\n"
        f"sinks:\n  sqlite:\n    path: events.db\n  jsonl:\n    path: '-'\n{body}"
        f"detector: {{model: {DETECTOR}}}\npose: {{model: {POSE}}}\nappearance: {{model: {POSE}}}\n"
    )
    return path


def analysed_cameras(*names: str, fps: float) -> str:
    """A `cameras:` block that only sets how often each (replayed) camera is analysed, to bound test time."""
    return "cameras:\n" + "".join(f"  - {{name: {n}, url: unused.mp4, analysis_fps: {fps}}}\n" for n in names)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("vigil: error:")]


def clip_length(clip: str) -> int:
    with np.load(PED2 / "frame_labels.npz") as labels:
        return len(labels[clip])


def summary_frames(stderr: str) -> dict[str, tuple[int, int]]:
    line = next(line for line in stderr.splitlines() if line.startswith("vigil: summary:"))
    return {m[0]: (int(m[1]), int(m[2])) for m in re.findall(r"([\w.-]+)=(\d+)/(\d+)", line)}


def summary_events(stderr: str) -> int:
    line = next(line for line in stderr.splitlines() if line.startswith("vigil: summary:"))
    return int(re.search(r"events (\d+)", line).group(1))  # type: ignore[union-attr]


def store_consistent(db: Path) -> list[dict[str, object]]:
    """The event store opens, passes SQLite's integrity check and yields its messages in order."""
    assert db.is_file(), f"no event store at {db}"
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        return [json.loads(row[0]) for row in conn.execute("SELECT json FROM events ORDER BY seq")]
    finally:
        conn.close()


# ---- validate-config -----------------------------------------------------------------------------


def test_validate_repo_config() -> None:
    result = vigil("validate-config", "-c", "config.yaml", cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "config.yaml: OK (1 camera)"


BAD_CONFIGS = {
    "unknown-key": (
        "cameras:\n  - name: a\n    url: x.mp4\n    nmae: b\n",
        "cfg.yaml:13:5: cameras[0].nmae: unknown key",
    ),
    "bad-range": (
        "events:\n  clip_pre_s: 100\n",
        "cfg.yaml:11:15: events.clip_pre_s: input should be less",
    ),
    "yaml-syntax": ("cameras:\n  - name: a\n   url: b\n", "cfg.yaml:12:4: YAML syntax error"),
    "missing-secret": (
        "cameras:\n  - name: gate\n    url: rtsp://u:${CAM_PASSWORD}@127.0.0.1:1/x\n",
        "cfg.yaml:12:10: cameras[0].url: environment variable CAM_PASSWORD is not set",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
@pytest.mark.parametrize("command", ["validate-config", "watch"])
def test_bad_config_is_one_line_with_location_and_exit_2(tmp_path: Path, case: str, command: str) -> None:
    body, expected = BAD_CONFIGS[case]
    cfg = write_config(tmp_path, body)  # the header is 9 lines: the body starts on line 10
    result = vigil(command, "-c", str(cfg), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = error_lines(result.stderr) if command == "watch" else result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].removeprefix("vigil: error: ").startswith(str(tmp_path / expected.split(":")[0])), lines
    assert expected in lines[0].replace(str(tmp_path) + "/", ""), lines


def test_secret_is_never_printed(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path, "cameras:\n  - name: gate\n    url: rtsp://u:${CAM_PASSWORD}@127.0.0.1:1/x\n    fps: 0\n"
    )
    result = vigil(
        "--debug", "watch", "-c", str(cfg), cwd=tmp_path, env=env_for({"CAM_PASSWORD": "hunter2-xyz"})
    )
    assert result.returncode == 2
    assert "cameras[0].fps" in result.stderr
    assert "hunter2-xyz" not in result.stderr + result.stdout


def test_missing_config_file(tmp_path: Path) -> None:
    result = vigil("replay", "x.mp4", "-c", "nope.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert error_lines(result.stderr) == ["vigil: error: nope.yaml: no such config file"]


# ---- replay --------------------------------------------------------------------------------------


def test_missing_video_file(tmp_path: Path) -> None:
    result = vigil("replay", "missing.mp4", "-c", str(write_config(tmp_path)), cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert error_lines(result.stderr) == ["vigil: error: missing.mp4: no such file or folder"]


def test_corrupt_video_file(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    result = vigil("replay", str(bad), "-c", str(write_config(tmp_path)), cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = error_lines(result.stderr)
    assert "camera garbage" in line and str(bad) in line
    assert summary_frames(result.stderr) == {"garbage": (0, 0)}


def test_replay_ped2_clip_counts_every_frame(tmp_path: Path, ped2: Path) -> None:
    clip = ped2 / "test" / "Test004.mp4"
    cfg = write_config(tmp_path, analysed_cameras("cam4", fps=2.0))
    env = {k: v for k, v in env_for().items() if k != "YOLO_VERBOSE"}  # as in a user's shell: banners on
    result = vigil(
        "replay", str(clip), "-c", str(cfg), "--camera", "cam4", cwd=tmp_path, env=env, timeout=600
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    n = clip_length("Test004")
    assert summary_frames(result.stderr) == {"cam4": (n, n)}
    # events: the same messages on stdout (JSONL only) and in the store, as many as the summary says
    stdout_events = [json.loads(line) for line in result.stdout.splitlines()]
    assert store_consistent(tmp_path / "events.db") == stdout_events
    assert len(stdout_events) == summary_events(result.stderr)


def test_replay_two_files_are_two_cameras(tmp_path: Path, ped2: Path) -> None:
    clips = [ped2 / "test" / "Test001.mp4", ped2 / "train" / "Train001.mp4"]
    cfg = write_config(tmp_path, analysed_cameras("Test001", "Train001", fps=0.5), drain_timeout_s=300)
    result = vigil(
        "--log-level", "WARNING", "replay", *map(str, clips), "-c", str(cfg), cwd=tmp_path, timeout=600
    )
    assert result.returncode == 0, result.stderr
    frames = summary_frames(result.stderr)
    assert frames == {c.stem: (frames[c.stem][0], frames[c.stem][0]) for c in clips}
    assert frames["Test001"][0] == clip_length("Test001")


# ---- signals -------------------------------------------------------------------------------------


@dataclass
class Running:
    process: subprocess.Popen[str]
    stderr: list[str]
    stdout: list[str]
    readers: tuple[threading.Thread, ...]

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.stderr):
                if m := re.search(pattern, line):
                    return m
            if self.process.poll() is not None and not any(r.is_alive() for r in self.readers):
                break
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} in stderr:\n" + "".join(self.stderr))


@pytest.fixture
def start_vigil(tmp_path: Path) -> Iterator:
    started: list[Running] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Running:
        process = subprocess.Popen(
            [*VIGIL, *args],
            cwd=tmp_path,
            env=env or env_for(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        err: list[str] = []
        out: list[str] = []
        readers = tuple(
            threading.Thread(target=lambda s=stream, d=dest: d.extend(iter(s.readline, "")), daemon=True)
            for stream, dest in ((process.stderr, err), (process.stdout, out))
        )
        for reader in readers:
            reader.start()
        running = Running(process, err, out, readers)
        started.append(running)
        return running

    yield start
    for running in started:
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait(10)


def test_sigterm_during_realtime_replay_drains_and_exits_cleanly(
    tmp_path: Path, ped2: Path, start_vigil
) -> None:
    """SIGINT takes the same path (one handler for both); one signal keeps the suite short."""
    drain_timeout_s = 10.0
    cfg = write_config(tmp_path, analysed_cameras("c2", fps=2.0), drain_timeout_s=drain_timeout_s)
    run = start_vigil(
        "replay", str(ped2 / "test" / "Test002.mp4"), "-c", str(cfg), "--realtime", "--camera", "c2"
    )
    url = run.wait_for(r"serving metrics url=(\S+)", timeout=60).group(1)
    run.wait_for(r"source connected", timeout=120)
    time.sleep(1.0)  # ~10 frames at the clip's 10 fps
    with urllib.request.urlopen(url, timeout=5) as response:  # metrics are served while it runs
        body = response.read().decode()
    assert re.search(r'vigil_source_frames_total\{camera="c2"\} [1-9]', body), body[:2000]

    sent = time.monotonic()
    run.process.send_signal(signal.SIGTERM)
    run.process.wait(timeout=drain_timeout_s + 20)
    elapsed = time.monotonic() - sent
    for reader in run.readers:
        reader.join(5)
    stderr, stdout = "".join(run.stderr), "".join(run.stdout)
    assert run.process.returncode == 0, stderr
    assert elapsed < drain_timeout_s + 5, elapsed
    assert "Traceback" not in stderr and not error_lines(stderr)
    decoded, completed = summary_frames(stderr)["c2"]
    assert 0 < decoded < clip_length("Test002")  # stopped part-way, not at the end of the clip
    assert completed <= decoded  # (all of them when the stages drain within the timeout)
    # the store is consistent and holds exactly the events emitted so far (extend once scoring emits events)
    stdout_events = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    assert store_consistent(tmp_path / "events.db") == stdout_events
    assert len(stdout_events) == summary_events(stderr)


@pytest.mark.parametrize("problem", ["missing", "corrupt"])
def test_bad_normality_model_fails_before_running(tmp_path: Path, ped2: Path, problem: str) -> None:
    model = tmp_path / "cam.npz"
    if problem == "corrupt":
        model.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    body = f"cameras:\n  - name: cam\n    url: {ped2 / 'test' / 'Test001.mp4'}\n    model: cam.npz\n"
    result = vigil("watch", "-c", str(write_config(tmp_path, body)), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = error_lines(result.stderr)
    assert f"normality model {model}" in line
    assert not any(line.startswith("vigil: summary:") for line in result.stderr.splitlines())


# ---- dispatch ------------------------------------------------------------------------------------


def _boom(args: object) -> int:
    raise RuntimeError("disk on fire")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """main() configures the 'vigil' logger; put it back so other tests' log capture still works."""
    logger = logging.getLogger("vigil")
    saved = (logger.handlers[:], logger.propagate, logger.level)
    yield
    logger.handlers[:], logger.propagate, logger.level = saved


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("debug", [False, True])
def test_unexpected_error_is_one_line_unless_debug(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], debug: bool
) -> None:
    from pipeline import cli

    monkeypatch.setitem(cli.COMMANDS, "boom", cli.Command("raise an unexpected error", lambda p: None, _boom))
    code = cli.main(["--debug", "boom"] if debug else ["boom"])
    err = capsys.readouterr().err
    assert code == 1
    errors = error_lines(err)
    assert len(errors) == 1 and "unexpected RuntimeError: disk on fire" in errors[0]
    assert ("Traceback" in err) == debug
    assert ("run with --debug for the traceback" in errors[0]) == (not debug)


@pytest.mark.rtsp
def test_watch_live_rtsp_camera_until_sigterm(tmp_path: Path, ped2: Path, start_vigil) -> None:
    """`vigil watch` on a looping RTSP camera (password from the environment): live, then a clean stop."""
    from rtsp_server import LoopbackCamera, gi_missing_reason

    if (reason := gi_missing_reason()) is not None:
        pytest.skip(reason)
    secret = "pw-7f3a9c"
    with LoopbackCamera(ped2 / "test" / "Test004.mp4").start() as camera:
        url = camera.url.replace("rtsp://", "rtsp://viewer:${CAM_PASSWORD}@")
        body = f"cameras:\n  - {{name: gate, url: '{url}', analysis_fps: 2}}\n"
        cfg = write_config(tmp_path, body + "source: {open_timeout_s: 3, stall_timeout_s: 3}\n")
        run = start_vigil("watch", "-c", str(cfg), env=env_for({"CAM_PASSWORD": secret}))
        assert "mode=live" in run.wait_for(r"starting .*", timeout=120).group(0)
        metrics_url = run.wait_for(r"serving metrics url=(\S+)", timeout=5).group(1)
        run.wait_for(r"source connected", timeout=60)
        deadline = time.monotonic() + 60
        frames = 0.0
        while frames < 20 and time.monotonic() < deadline:
            time.sleep(0.5)
            with urllib.request.urlopen(metrics_url, timeout=5) as response:
                found = re.search(
                    r'vigil_source_frames_total\{camera="gate"\} (\S+)', response.read().decode()
                )
            frames = float(found.group(1)) if found else 0.0
        assert frames >= 20, "the live camera delivered too few frames"
        run.process.send_signal(signal.SIGTERM)
        run.process.wait(timeout=30)
        for reader in run.readers:
            reader.join(5)
    stderr = "".join(run.stderr)
    assert run.process.returncode == 0, stderr
    assert secret not in stderr + "".join(run.stdout)
    decoded, completed = summary_frames(stderr)["gate"]
    assert decoded >= 20 and completed <= decoded
    store_consistent(tmp_path / "events.db")


def test_metrics_token_variable_must_be_set(tmp_path: Path, ped2: Path) -> None:
    cfg = write_config(tmp_path)
    cfg.write_text(
        cfg.read_text().replace("http:\n  port: 0\n", "http:\n  port: 0\n  token_env: VIGIL_TEST_TOKEN\n")
    )
    result = vigil("replay", str(ped2 / "test" / "Test001.mp4"), "-c", str(cfg), cwd=tmp_path)
    assert result.returncode == 2
    assert error_lines(result.stderr) == [
        "vigil: error: http.token_env: environment variable VIGIL_TEST_TOKEN is not set"
    ]


# ---- bad input: one line each, no secrets ----------------------------------------------------------


def test_mistyped_camera_scheme_is_refused_without_printing_the_password(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path, "cameras:\n  - name: gate\n    url: rstp://admin:${CAM_PW}@127.0.0.1:1/cam\n"
    )
    result = vigil("watch", "-c", str(cfg), cwd=tmp_path, env=env_for({"CAM_PW": "hunter2-rstp"}))
    assert result.returncode == 2, result.stderr
    assert "hunter2-rstp" not in result.stderr + result.stdout
    assert result.stderr.strip().splitlines() == error_lines(result.stderr)
    (line,) = error_lines(result.stderr)
    assert "cfg.yaml:12:10: cameras[0].url: unsupported URL scheme 'rstp'" in line, line


@pytest.mark.parametrize("name", ["../../etc", ".."])
@pytest.mark.parametrize("command", ["replay", "fit"])
def test_bad_camera_option_is_one_line(tmp_path: Path, ped2: Path, command: str, name: str) -> None:
    clip = str(ped2 / "train" / "Train001.mp4")
    cfg = str(write_config(tmp_path))
    extra = ["--max-frames", "2"] if command == "fit" else []
    result = vigil(command, clip, "-c", cfg, "--camera", name, *extra, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"vigil: error: --camera: {name!r} is not a camera name: use 1-64 letters, digits, '_', '.' or '-', "
        "not only dots"
    ]
    assert not list(tmp_path.rglob("*.npz")) and not (tmp_path.parent / "etc.npz").exists()


# ---- stdout carries the events and nothing else ----------------------------------------------------


def banners_on(folder: Path) -> dict[str, str]:
    """As in a user's shell: ultralytics verbose, and a settings file it has to create (another banner)."""
    env = {k: v for k, v in env_for().items() if k != "YOLO_VERBOSE"}
    env["YOLO_CONFIG_DIR"] = str(folder / "ultralytics-settings")
    return env


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory, ped2: Path) -> tuple[Path, subprocess.CompletedProcess]:
    """A model fitted on 20 frames (enough for Test004's replay to raise events) and its `vigil fit` run."""
    folder = tmp_path_factory.mktemp("fit")
    cfg = write_config(folder)
    model = folder / "cam4.npz"
    result = vigil(
        "fit", str(ped2 / "train" / "Train001.mp4"), "--camera", "cam4", "-c", str(cfg),
        "--max-frames", "20", "--out", str(model), cwd=folder, env=banners_on(folder),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return model, result


def test_fit_writes_nothing_to_stdout(fitted: tuple[Path, subprocess.CompletedProcess]) -> None:
    _, result = fitted
    assert result.stdout == "", result.stdout[:2000]
    assert "OpenVINO" in result.stderr  # the banners were printed: on stderr


@pytest.mark.parametrize(
    ("command", "path"), [("replay", "-"), ("replay", "/dev/stdout"), ("watch", "/dev/stdout")]
)
def test_stdout_is_json_lines_only(
    tmp_path: Path, ped2: Path, fitted: tuple[Path, subprocess.CompletedProcess], command: str, path: str
) -> None:
    """OpenVINO's "Loading ... for OpenVINO inference..." and ultralytics' banners must not reach a
    stdout that carries the events, whichever name the JSONL sink gives it."""
    model, _ = fitted
    clip = ped2 / "test" / "Test004.mp4"
    camera = f"  - {{name: cam4, url: {clip}, analysis_fps: 5, model: {model}}}\n"
    cfg = write_config(tmp_path, "cameras:\n" + camera)
    cfg.write_text(cfg.read_text().replace("path: '-'", f"path: '{path}'"))
    args = ("replay", str(clip), "--camera", "cam4") if command == "replay" else ("watch",)
    result = vigil(*args, "-c", str(cfg), cwd=tmp_path, env=banners_on(tmp_path))
    assert result.returncode == 0, result.stderr
    events = []
    for line in result.stdout.splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"stdout line is not JSON: {line!r}")
    assert "OpenVINO" in result.stderr  # the banners were printed: on stderr
    assert events and len(events) == summary_events(result.stderr)
    assert store_consistent(tmp_path / "events.db") == events


def test_eval_stdout_is_its_tables_only(tmp_path: Path, ped2: Path) -> None:
    cfg = write_config(tmp_path)
    result = vigil(
        "eval", "--data", str(ped2), "-c", str(cfg), "--clips", "Test004", "--train-clips", "Train001",
        "--max-frames", "10", "--no-plot", "--out", str(tmp_path / "eval"), cwd=tmp_path,
        env=banners_on(tmp_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert not [line for line in result.stdout.splitlines() if "OpenVINO" in line or "Ultralytics" in line]
    assert result.stdout.splitlines()[0].startswith("variant"), result.stdout[:2000]
    assert "OpenVINO" in result.stderr


# ---- validate-config ---------------------------------------------------------------------------------


def test_validate_config_takes_the_file_as_an_argument(tmp_path: Path) -> None:
    result = vigil("validate-config", "config.yaml", cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "config.yaml: OK (1 camera)"
    bad = write_config(tmp_path, "cameras:\n  - name: a\n    url: x.mp4\n    nmae: b\n")
    result = vigil("validate-config", str(bad), cwd=tmp_path)
    assert result.returncode == 2 and "cfg.yaml:13:5: cameras[0].nmae: unknown key" in result.stderr
    both = vigil("validate-config", "config.yaml", "-c", "other.yaml", cwd=REPO)
    assert both.returncode == 2
    assert error_lines(both.stderr) == [
        "vigil: error: two config files given (config.yaml and -c other.yaml): give one"
    ]
