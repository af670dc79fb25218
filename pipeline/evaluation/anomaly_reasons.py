"""Ground-truth descriptions of a test set's anomalies: which attributes should explain each one.

Frame labels say *when* a clip is anomalous, not *why*; "is the alert's top reason the right one"
needs the why. An `anomaly_reasons.json` beside frame_labels.npz gives it, per test clip stem:

    {
      "source": "where the descriptions come from (free text)",
      "clips": {
        "21": [{"start_frame": 13, "end_frame": 65, "reasons": ["speed"], "what": "a person running"}]
      }
    }

Frames are 0-based decode indices, both ends inclusive (as in the events' start_frame/end_frame);
`reasons` are attribute names (stages/normality/attributes), any of which is a right top reason;
`what` is optional. Clips without an entry are simply not described. These files are ground truth,
like the frame labels: they are read by the report only, never by fitting, thresholds or scoring.
Presets for the data sets in ../shared/data (read-only there) live in presets/ beside this module.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import SourceError

FILE_NAME = "anomaly_reasons.json"
PRESETS_DIR = Path(__file__).resolve().parent / "presets"
#: footage preset -> the bundled description of that data set's test clips
PRESET_FILES = {"avenue": "avenue_dev_reasons.json", "ped2": "ped2_reasons.json"}
_ENTRY_KEYS = {"start_frame", "end_frame", "reasons", "what"}


@dataclass(frozen=True)
class ExpectedReasons:
    """One described anomaly: frames start..end (inclusive) and the attributes that should explain it."""

    start_frame: int
    end_frame: int
    reasons: frozenset[str]
    what: str = ""

    def overlaps(self, start: int, end: int) -> bool:
        return self.start_frame <= end and start <= self.end_frame


@dataclass(frozen=True)
class AnomalyReasons:
    path: Path
    source: str
    clips: Mapping[str, tuple[ExpectedReasons, ...]]

    def expected(self, clip: str, start: int, end: int) -> frozenset[str] | None:
        """The right reasons for frames start..end of `clip`: the union over the described anomalies
        it overlaps; None when it overlaps none (not described)."""
        hits = [e.reasons for e in self.clips.get(clip, ()) if e.overlaps(start, end)]
        return frozenset().union(*hits) if hits else None

    def check_lengths(self, frames: Mapping[str, int]) -> None:
        """SourceError when an entry of a clip in `frames` (clip -> frame count) ends past the clip."""
        for clip, entries in self.clips.items():
            n = frames.get(clip)
            for i, e in enumerate(entries):
                if n is not None and e.end_frame >= n:
                    raise SourceError(
                        f"{self.path}: clips.{clip}[{i}]: end_frame {e.end_frame} past the clip's {n} frames"
                    )


def load_anomaly_reasons(path: Path, attributes: Collection[str]) -> AnomalyReasons:
    """Parse and check `path`; `attributes` are the known attribute names. Bad input: a one-line
    SourceError naming the file and the entry."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SourceError(f"{path}: cannot read anomaly reasons: {str(e).splitlines()[0]}") from e
    if not isinstance(data, dict) or not isinstance(data.get("clips"), dict):
        raise SourceError(f'{path}: expected an object with "clips": {{clip stem: [entries]}}')
    unknown = set(data) - {"source", "clips"}
    if unknown:
        raise SourceError(f"{path}: unknown keys {', '.join(sorted(unknown))} (source, clips)")
    source = data.get("source", "")
    if not isinstance(source, str):
        raise SourceError(f"{path}: source: expected text")
    clips: dict[str, tuple[ExpectedReasons, ...]] = {}
    for clip, entries in data["clips"].items():
        if not isinstance(entries, list):
            raise SourceError(f"{path}: clips.{clip}: expected a list of entries")
        clips[str(clip)] = tuple(
            _entry(path, f"clips.{clip}[{i}]", e, attributes) for i, e in enumerate(entries)
        )
    return AnomalyReasons(Path(path), source, clips)


def _entry(path: Path, where: str, e: object, attributes: Collection[str]) -> ExpectedReasons:
    def bad(message: str) -> SourceError:
        return SourceError(f"{path}: {where}: {message}")

    if not isinstance(e, dict):
        raise bad("expected an object with start_frame, end_frame, reasons")
    if set(e) - _ENTRY_KEYS or not {"start_frame", "end_frame", "reasons"} <= set(e):
        raise bad(f"expected keys start_frame, end_frame, reasons[, what], got {', '.join(sorted(e))}")
    start, end, reasons = e["start_frame"], e["end_frame"], e["reasons"]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (start, end)) or start < 0:
        raise bad(f"start_frame and end_frame must be whole frame numbers >= 0, got {start!r}, {end!r}")
    if end < start:
        raise bad(f"end_frame {end} < start_frame {start}")
    if not isinstance(reasons, list) or not reasons or not all(isinstance(r, str) for r in reasons):
        raise bad("reasons: expected a non-empty list of attribute names")
    unknown = [r for r in reasons if r not in attributes]
    if unknown:
        raise bad(f"unknown attributes {', '.join(unknown)}; known: {', '.join(attributes)}")
    what = e.get("what", "")
    if not isinstance(what, str):
        raise bad("what: expected text")
    return ExpectedReasons(start, end, frozenset(reasons), what)


def reasons_file(data_root: Path, dataset: str, given: Path | None) -> Path | None:
    """Which description to use: `given`; else the footage folder's anomaly_reasons.json; else the
    bundled preset of `dataset`; else None (no right-reason figure)."""
    if given is not None:
        return given
    if (Path(data_root) / FILE_NAME).is_file():
        return Path(data_root) / FILE_NAME
    preset = PRESET_FILES.get(dataset)
    return PRESETS_DIR / preset if preset is not None else None
