"""Load config.yaml into a validated `VigilConfig`, reporting every problem with its YAML location.

The YAML is composed into a node tree first, so each pydantic error `loc` can be traced back to
the line and column where the offending key or value was written. `${ENV}` references in string
values are resolved from the environment; the resolved values are remembered on the config and by
`pipeline.redaction`, which keeps them (and any URL password) out of everything Vigil prints.

Relative paths in the file resolve against the folder holding the config file, not the working
directory: camera urls that are not URLs, camera models and the `model` of any section (detector,
pose, appearance; a bare file name such as `yolo11n.pt` that does not exist there is left for
ultralytics to find or download), the
JSONL and SQLite sink paths, `scoring.models_dir` and `events.media_dir`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from pipeline.config import VigilConfig
from pipeline.errors import ConfigError
from pipeline.redaction import redact, remember

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class _Mark:
    line: int  # 1-based
    col: int  # 1-based

    def __str__(self) -> str:
        return f"{self.line}:{self.col}"


@dataclass
class _Document:
    """The parsed data plus where each key (and each value) was written."""

    data: object
    key_marks: dict[Loc, _Mark]
    value_marks: dict[Loc, _Mark]
    duplicates: list[tuple[Loc, _Mark]]


def load_config(path: str | os.PathLike[str]) -> VigilConfig:
    """Read, resolve and validate a config file; raise ConfigError listing every problem."""
    path = Path(path)
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{name}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{name}: is a directory, expected a YAML file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{name}: cannot read config file: {exc}") from None

    doc = _parse(name, text)
    if doc.data is None:
        doc.data = {}
    if not isinstance(doc.data, dict):
        raise ConfigError(
            f"{name}:1:1: expected a mapping of sections at the top level, got a {_kind(doc.data)}"
        )

    secrets: set[str] = set()
    problems: list[str] = []
    doc.data = _resolve_env(doc.data, (), doc, name, secrets, problems)
    remember(secrets)  # from here on, no output of this process shows them
    if problems:
        raise ConfigError("\n".join(problems))
    _resolve_paths(doc.data, path.resolve().parent)

    try:
        config = VigilConfig.model_validate(doc.data)
    except ValidationError as exc:
        lines = sorted((_format_error(name, doc, err) for err in exc.errors()), key=_line_order)
        raise ConfigError(redact("\n".join(lines), secrets)) from None
    config._secrets = frozenset(secrets)
    return config


def secrets_of(config: VigilConfig) -> frozenset[str]:
    """The values `load_config` resolved from environment variables (to be kept out of logs)."""
    return config._secrets


def validation_message(exc: ValidationError) -> str:
    """A pydantic error as one line, `field: problem; ...`, for values that come from the command line."""
    return "; ".join(
        f"{_dotted(tuple(err['loc'])) or 'value'}: {_lower_first(err['msg'].removeprefix('Value error, '))}"
        for err in exc.errors()
    )


def is_url(value: str) -> bool:
    return bool(_URL_SCHEME.match(value))


# ---- YAML with locations -------------------------------------------------------------------------


def _parse(name: str, text: str) -> _Document:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark is not None else name
        problem = ": ".join(p for p in (exc.context, exc.problem) if p)
        raise ConfigError(f"{where}: YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{name}: YAML error: {exc}") from None
    finally:
        loader.dispose()
    doc = _Document(data=data, key_marks={}, value_marks={}, duplicates=[])
    if node is not None:
        _index(node, data, (), doc)
    if doc.duplicates:  # YAML would silently keep the last one
        raise ConfigError(
            "\n".join(
                f"{name}:{mark}: {_dotted(loc)}: duplicate key (first set on line {doc.key_marks[loc].line})"
                for loc, mark in doc.duplicates
            )
        )
    return doc


def _mark(node: Node) -> _Mark:
    return _Mark(node.start_mark.line + 1, node.start_mark.column + 1)


def _index(node: Node, data: object, loc: Loc, doc: _Document) -> None:
    """Record the marks of every key and value under `node` (parallel to the constructed `data`)."""
    doc.value_marks[loc] = _mark(node)
    if isinstance(node, MappingNode) and isinstance(data, dict):
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                continue
            key = _scalar_key(key_node, data)
            if key is None:
                continue
            if (*loc, key) in doc.key_marks:
                doc.duplicates.append(((*loc, key), _mark(key_node)))
                continue
            doc.key_marks[(*loc, key)] = _mark(key_node)
            _index(value_node, data[key], (*loc, key), doc)
    elif isinstance(node, SequenceNode) and isinstance(data, list):
        for i, (item_node, item) in enumerate(zip(node.value, data, strict=False)):
            doc.key_marks[(*loc, i)] = _mark(item_node)
            _index(item_node, item, (*loc, i), doc)


def _scalar_key(node: ScalarNode, data: dict[object, object]) -> str | int | None:
    """The constructed key for a key node (YAML may have turned `1` or `yes` into non-strings)."""
    for candidate in (node.value, _construct_scalar(node)):
        if candidate in data and isinstance(candidate, str | int):
            return candidate
    return None


def _construct_scalar(node: ScalarNode) -> object:
    return yaml.SafeLoader("").construct_object(node)  # type: ignore[no-untyped-call]


def _kind(value: object) -> str:
    return {dict: "mapping", list: "list", str: "string"}.get(type(value), type(value).__name__)


# ---- environment and paths -----------------------------------------------------------------------


def _resolve_env(
    value: object, loc: Loc, doc: _Document, name: str, secrets: set[str], problems: list[str]
) -> object:
    if isinstance(value, dict):
        return {k: _resolve_env(v, (*loc, k), doc, name, secrets, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_env(v, (*loc, i), doc, name, secrets, problems) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        var = match.group(1)
        resolved = os.environ.get(var)
        if resolved is None:
            where = _where(name, doc, loc, key=False)
            problems.append(f"{where}: {_dotted(loc)}: environment variable {var} is not set")
            return ""
        if resolved:
            secrets.add(resolved)
        return resolved

    return _ENV_REF.sub(substitute, value)


_PATH_FIELDS: tuple[Loc, ...] = (  # plus `model` in any top-level section (detector, pose, appearance...)
    ("sinks", "sqlite", "path"),
    ("sinks", "jsonl", "path"),
    ("scoring", "models_dir"),
    ("events", "media_dir"),
    ("models", "cache_dir"),
    ("console", "path"),
)


def _resolve_paths(data: dict[str, object], base: Path) -> None:
    """Make relative path-like values absolute against the config file's folder (in place)."""
    for loc in _PATH_FIELDS:
        parent = _get(data, loc[:-1])
        if isinstance(parent, dict):
            _resolve_one(parent, str(loc[-1]), base, model=False)
    for section in data.values():
        if isinstance(section, dict) and "model" in section:
            _resolve_one(section, "model", base, model=True)
    models = data.get("models")
    if isinstance(models, dict) and isinstance(models.get("calibration"), list):
        clips = {str(i): c for i, c in enumerate(models["calibration"])}  # INT8 calibration footage
        for key in clips:
            _resolve_one(clips, key, base, model=False)
        models["calibration"] = list(clips.values())
    cameras = data.get("cameras")
    if isinstance(cameras, list):
        for camera in cameras:
            if isinstance(camera, dict):
                _resolve_one(camera, "url", base, model=False)
                _resolve_one(camera, "model", base, model=False)


def _resolve_one(parent: dict[str, object], key: str, base: Path, model: bool) -> None:
    value = parent.get(key)
    if not isinstance(value, str) or not value or value == "-" or is_url(value):
        return
    path = Path(value).expanduser()
    if path.is_absolute():
        parent[key] = str(path)
        return
    candidate = base / path
    if model and len(path.parts) == 1 and not candidate.exists():
        return  # a bare weights name such as yolo11n.pt: ultralytics finds or downloads it
    parent[key] = str(candidate)


def _get(data: object, loc: Loc) -> object:
    for part in loc:
        in_dict = isinstance(data, dict) and part in data
        in_list = isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data)
        if not (in_dict or in_list):
            return None
        data = data[part]  # type: ignore[index]
    return data


# ---- error messages ------------------------------------------------------------------------------


def _format_error(name: str, doc: _Document, err: dict[str, object]) -> str:
    kind = str(err.get("type", ""))
    loc = _data_loc(doc.data, tuple(err.get("loc", ())), kind)  # type: ignore[arg-type]
    extra = kind == "extra_forbidden"
    where = _where(name, doc, loc, key=extra)
    if extra:
        message = "unknown key (extra inputs are not permitted)"
    elif kind == "missing":
        message = "required key is missing"
    else:
        message = _lower_first(str(err.get("msg", "invalid value")).removeprefix("Value error, "))
        value = _get(doc.data, loc)
        if not isinstance(value, dict | list) and value is not None and kind != "value_error":
            message += f" (got {value!r})"
    return f"{where}: {_dotted(loc) or '(top level)'}: {message}"


def _data_loc(data: object, loc: Loc, kind: str) -> Loc:
    """Drop pydantic's internal tags (union members, validator names) that are not in the data."""
    out: list[str | int] = []
    node = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        ):
            out.append(part)
            node = node[part]
        elif isinstance(node, dict) and last and kind in ("missing", "extra_forbidden"):
            out.append(part)
        # else: a tag such as 'function-after[...]' or 'lax-or-strict': not part of the user's path
    return tuple(out)


def _where(name: str, doc: _Document, loc: Loc, key: bool) -> str:
    marks = (doc.key_marks, doc.value_marks) if key else (doc.value_marks, doc.key_marks)
    probe = loc
    while True:
        for table in marks:
            if probe in table:
                return f"{name}:{table[probe]}"
        if not probe:
            return f"{name}:1:1"
        probe = probe[:-1]


def _line_order(message: str) -> tuple[int, int]:
    match = re.match(r"^.*?:(\d+):(\d+): ", message)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def _dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]
