"""config.yaml loading: YAML locations in every error, ${ENV} secrets, relative paths, redaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import VigilConfig
from pipeline.configfile import load_config, secrets_of
from pipeline.errors import ConfigError
from pipeline.redaction import redact


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def errors_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value).splitlines()


def test_minimal_config_gets_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "cameras:\n  - name: lobby\n    url: clip.mp4\n"))
    assert isinstance(config, VigilConfig)
    assert [c.name for c in config.cameras] == ["lobby"]
    assert config.runtime == VigilConfig().runtime
    assert config.http.port == 9108


def test_empty_file_is_all_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "# nothing yet\n")).cameras == []


def test_repo_example_config_is_valid() -> None:
    config = load_config(Path(__file__).resolve().parents[1] / "config.yaml")
    assert len(config.cameras) == 1
    assert Path(config.cameras[0].url).is_file(), config.cameras[0].url


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "cameras:\n  - name: a\n    url: x.mp4\n    nmae: b\n",
            "cfg.yaml:4:5: cameras[0].nmae: unknown key (extra inputs are not permitted)",
        ),
        ("runtme:\n  mode: live\n", "cfg.yaml:1:1: runtme: unknown key (extra inputs are not permitted)"),
        (
            "runtime:\n  drain_timeout_s: -1\n",
            "cfg.yaml:2:20: runtime.drain_timeout_s: input should be greater than 0",
        ),
        ("http:\n  port: 70000\n", "cfg.yaml:2:9: http.port: input should be less than or equal to 65535"),
        (
            "detector:\n  confidence: high\n",
            "cfg.yaml:2:15: detector.confidence: input should be a valid number",
        ),
        (
            "runtime:\n  mode: sometimes\n",
            "cfg.yaml:2:9: runtime.mode: input should be 'auto', 'live' or 'replay'",
        ),
        (
            "events:\n  start_score: 1\n  end_score: 2\n",
            "cfg.yaml:3:14: events.end_score: end_score (2.0) must not exceed start_score (1.0)",
        ),
        ("cameras:\n  - name: a\n", "cfg.yaml:2:5: cameras[0].url: required key is missing"),
        (
            "cameras:\n  - {name: a, url: x.mp4}\n  - {name: a, url: y.mp4}\n",
            "cfg.yaml:2:3: cameras: camera names must be unique, repeated: a",
        ),
        (
            "cameras:\n  - name: bad name!\n    url: x.mp4\n",
            "cfg.yaml:2:11: cameras[0].name: 'bad name!' is not a camera name",
        ),
    ],
    ids=[
        "unknown-key",
        "unknown-section",
        "range",
        "port",
        "type",
        "literal",
        "hysteresis",
        "missing",
        "dup",
        "pattern",
    ],
)
def test_validation_errors_name_line_column_and_path(tmp_path: Path, text: str, expected: str) -> None:
    lines = errors_of(write(tmp_path, text, "cfg.yaml"))
    assert len(lines) == 1, lines
    assert lines[0].startswith(str(tmp_path / "cfg.yaml") + ":")
    assert lines[0].replace(str(tmp_path) + "/", "").lower().startswith(expected.lower()), lines[0]


def test_every_error_is_listed_in_file_order(tmp_path: Path) -> None:
    text = "http:\n  port: -5\ncameras:\n  - name: a\n    url: x\n    fps: 0\nlog_level: LOUD\n"
    lines = [line.replace(str(tmp_path) + "/", "") for line in errors_of(write(tmp_path, text, "c.yaml"))]
    assert [line.split(": ")[0] for line in lines] == ["c.yaml:2:9", "c.yaml:6:10", "c.yaml:7:12"]
    assert [line.split(": ")[1] for line in lines] == ["http.port", "cameras[0].fps", "log_level"]


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("cameras:\n  - name: a\n   url: b\n", ":3:4: YAML syntax error"),
        ("http: {port: 1\n", ":2:1: YAML syntax error"),
        ("runtime:\n\tmode: live\n", ":2:1: YAML syntax error"),
    ],
    ids=["indent", "unclosed-flow", "tab"],
)
def test_yaml_syntax_errors_have_a_line(tmp_path: Path, text: str, where: str) -> None:
    lines = errors_of(write(tmp_path, text))
    assert len(lines) == 1 and where in lines[0], lines


def test_duplicate_keys_are_errors(tmp_path: Path) -> None:
    text = "detector:\n  confidence: 0.2\npose:\n  batch: 4\ndetector:\n  iou: 0.4\n"
    (line,) = errors_of(write(tmp_path, text, "c.yaml"))
    assert line.endswith("c.yaml:5:1: detector: duplicate key (first set on line 1)"), line


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    assert "expected a mapping of sections" in errors_of(write(tmp_path, "- a\n- b\n"))[0]


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_unreadable_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "nope.yaml"
    if kind == "directory":
        path.mkdir()
    (line,) = errors_of(path)
    assert line.startswith(str(path)) and ("no such config file" in line or "is a directory" in line)


RTSP = "cameras:\n  - name: gate\n    url: rtsp://viewer:${CAM_PASSWORD}@10.0.0.2/stream\n"


def test_env_secret_is_resolved_and_remembered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAM_PASSWORD", "hunter2")
    config = load_config(write(tmp_path, RTSP))
    assert config.cameras[0].url == "rtsp://viewer:hunter2@10.0.0.2/stream"
    assert secrets_of(config) == {"hunter2"}
    assert redact(f"connecting to {config.cameras[0].url}", secrets_of(config)) == (
        "connecting to rtsp://viewer:***@10.0.0.2/stream"
    )


def test_missing_env_variable_names_it_and_the_yaml_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CAM_PASSWORD", raising=False)
    (line,) = errors_of(write(tmp_path, RTSP, "cfg.yaml"))
    assert line.endswith("cfg.yaml:3:10: cameras[0].url: environment variable CAM_PASSWORD is not set"), line


def test_secret_never_appears_in_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAM_NAME_SECRET", "s3cr3t value!")
    path = write(tmp_path, "cameras:\n  - name: ${CAM_NAME_SECRET}\n    url: x.mp4\n")
    (line,) = errors_of(path)
    assert "cameras[0].name" in line and "s3cr3t" not in line and "***" in line


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "weights.pt").write_bytes(b"")
    text = (
        "cameras:\n"
        "  - {name: a, url: clips/a.mp4, model: models/a.npz}\n"
        "  - {name: b, url: 'rtsp://cam/x'}\n"
        "  - {name: c, url: /abs/c.mp4}\n"
        "detector: {model: yolo11n.pt}\n"
        "pose: {model: weights.pt}\n"
        "appearance: {model: sub/w.pt}\n"
        "sinks: {sqlite: {path: var/events.db}, jsonl: {path: '-'}}\n"
        "scoring: {models_dir: var/models}\n"
        "events: {media_dir: ../media}\n"
    )
    config = load_config(write(folder, text))
    assert config.cameras[0].url == str(folder / "clips/a.mp4")
    assert config.cameras[0].model == folder / "models/a.npz"
    assert config.cameras[1].url == "rtsp://cam/x"
    assert config.cameras[2].url == "/abs/c.mp4"
    assert config.detector.model == "yolo11n.pt"  # a bare name not present here: ultralytics' to find
    assert config.pose.model == str(folder / "weights.pt")
    assert config.appearance.model == str(folder / "sub/w.pt")
    assert config.sinks.sqlite.path == folder / "var/events.db"
    assert config.sinks.jsonl.path == "-"
    assert config.scoring.models_dir == folder / "var/models"
    assert config.events.media_dir == folder / "../media"


def test_camera_url_with_a_mistyped_scheme_is_one_located_line_without_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read as a file path before, the URL failed at run time with the password in the error line."""
    monkeypatch.setenv("CAM_PW", "hunter2-mistyped")
    text = "cameras:\n  - name: gate\n    url: rstp://admin:${CAM_PW}@10.0.0.2/cam\n"
    (line,) = errors_of(write(tmp_path, text, "cfg.yaml"))
    assert "cfg.yaml:3:10: cameras[0].url: unsupported URL scheme 'rstp' (did you mean 'rtsp'?)" in line, line
    assert "hunter2" not in line


@pytest.mark.parametrize("name", [".", "..", "..."])
def test_camera_names_that_are_path_components_are_refused(tmp_path: Path, name: str) -> None:
    """Media go to <media_dir>/<name>/ and MQTT to vigil/<name>/events: '..' would escape both."""
    (line,) = errors_of(write(tmp_path, f"cameras:\n  - name: '{name}'\n    url: x.mp4\n", "cfg.yaml"))
    assert f"cfg.yaml:2:11: cameras[0].name: {name!r} is not a camera name" in line, line
    assert "pydantic" not in line


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.7", "vigil.example.internal", ""])
def test_non_loopback_http_without_authentication_is_refused(tmp_path: Path, host: str) -> None:
    (line,) = errors_of(write(tmp_path, f"http:\n  host: '{host}'\n", "cfg.yaml"))
    assert "cfg.yaml:2:3: http: " in line and "without authentication is refused" in line, line
    assert "http.token_env" in line and "http.allow_unauthenticated" in line, line


@pytest.mark.parametrize(
    "http",
    [
        "host: 127.0.0.1",
        "host: localhost",
        "host: '::1'",
        "host: 0.0.0.0\n  token_env: VIGIL_HTTP_TOKEN",
        "host: 0.0.0.0\n  allow_unauthenticated: true",
        "host: 0.0.0.0\n  enabled: false",
    ],
)
def test_http_binds_that_are_allowed(tmp_path: Path, http: str) -> None:
    load_config(write(tmp_path, f"http:\n  {http}\n"))
