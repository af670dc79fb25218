"""Where each camera's normality model file lives, its versions, and saving one learnt while running.

One rule for the path, used by every reader and writer: the camera's `model`, else
<scoring.models_dir>/<camera>.npz. `vigil fit` writes there, the next start loads from there, and a
camera that learnt its model online during warm-up saves it there, so a restart does not learn again.

Operator feedback makes new versions: `<path>.versions/` keeps every version's file (v0001.npz is the
model as fitted or learnt) and `index.json` says which is current, where each came from, who made it
and whether it was undone. The live file is always a copy of the current version, replaced atomically,
and `stamp` changes when it is, so a running camera (in this process or another) picks it up.
"""

from __future__ import annotations

import fcntl
import json
import logging
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.atomic import atomic_file
from pipeline.config import CameraConfig, VigilConfig
from pipeline.errors import VigilError
from pipeline.logs import fields

if TYPE_CHECKING:
    from stages.normality import NormalityModel

log = logging.getLogger("vigil.models")


@dataclass(frozen=True)
class ModelVersion:
    """One version of a camera's model: where it came from ("fitted" for the first, "feedback" for
    one an operator's review made), when, by whom, for which event, and from which version."""

    number: int
    created_at: float
    source: str
    by: str | None = None
    event_id: str | None = None
    parent: int | None = None
    note: str = ""
    undone_at: float | None = None
    undone_by: str | None = None
    #: the normal footage the model was learnt from (its provenance), e.g. "vigil fit: 2 clips, ..."
    footage: str = ""


class ModelStore:
    """The model files of `cameras` (default: the config's)."""

    def __init__(self, config: VigilConfig, cameras: Sequence[CameraConfig] | None = None) -> None:
        self.models_dir = config.scoring.models_dir
        known = config.cameras if cameras is None else cameras
        self.configured = {c.name: c.model for c in known if c.model is not None}

    def path(self, camera: str) -> Path:
        """The camera's `model`, else <models_dir>/<camera>.npz."""
        return self.configured.get(camera) or self.models_dir / f"{camera}.npz"

    def save(self, model: NormalityModel) -> Path | None:
        """Save a model learnt while running (atomically) to its camera's path; None when it cannot be
        written: an error line with the path, and the camera goes on with the model in memory."""
        path = self.path(model.camera)
        try:
            model.save(path)
        except OSError as exc:
            log.error(
                f"cannot save the normality model: {exc.strerror or exc}; learnt again at the next start",
                extra=fields(camera=model.camera, path=str(path)),
            )
            return None
        log.info("normality model saved", extra=fields(camera=model.camera, path=str(path)))
        return path

    # ---- versions --------------------------------------------------------------------------------

    def versions_dir(self, camera: str) -> Path:
        path = self.path(camera)
        return path.with_name(path.name + ".versions")

    def stamp(self, camera: str) -> tuple[int, int] | None:
        """Changes whenever the live model file is replaced (None: no file)."""
        try:
            st = self.path(camera).stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_ino)

    def versions(self, camera: str) -> tuple[list[ModelVersion], int | None]:
        """Every version, oldest first, and the current one's number (none recorded yet: the live file
        alone, reported as version 1)."""
        index = self._read_index(camera)
        if index is None:
            if not self.path(camera).exists():
                return [], None
            st = self.path(camera).stat()
            return [ModelVersion(1, st.st_mtime, "fitted", footage=footage_of(self.path(camera)))], 1
        return [ModelVersion(**v) for v in index["versions"]], int(index["current"])

    def commit(
        self,
        model: NormalityModel,
        source: str,
        by: str | None = None,
        event_id: str | None = None,
        note: str = "",
    ) -> ModelVersion:
        """Keep `model` as the camera's next version and make it current (the live file replaced)."""
        camera = model.camera
        with self._locked(camera) as folder:
            index = self._read_index(camera) or self._first_index(camera, folder)
            self._adopt_live(camera, folder, index)
            current = int(index["current"])
            number = max(v["number"] for v in index["versions"]) + 1
            target = folder / f"v{number:04d}.npz"
            model.save(target)
            version = ModelVersion(
                number, time.time(), source, by, event_id, current, note, footage=footage_of(target)
            )
            self._make_live(camera, target)
            index["versions"].append(asdict(version))
            index["current"] = number
            self._write_index(folder, index)
        log.info(
            "normality model version saved",
            extra=fields(camera=camera, version=number, source=source, by=by or "-"),
        )
        return version

    def undo(self, camera: str, number: int, by: str) -> ModelVersion:
        """Take version `number` back: it is marked undone and its parent becomes current again. Only
        the current version can be undone (a later one was made on top of it). VigilError otherwise."""
        with self._locked(camera) as folder:
            index = self._read_index(camera)
            if index is None:
                raise VigilError(f"model of camera {camera}: no versions to undo")
            self._adopt_live(camera, folder, index)
            entry = next((v for v in index["versions"] if v["number"] == number), None)
            if entry is None or entry["parent"] is None:
                raise VigilError(f"model of camera {camera}: version {number} cannot be undone")
            if int(index["current"]) != number:
                raise VigilError(
                    f"model of camera {camera}: version {number} is not current ({index['current']} is); "
                    "undo the later one first"
                )
            self._make_live(camera, folder / f"v{entry['parent']:04d}.npz")
            entry["undone_at"], entry["undone_by"] = time.time(), by
            index["current"] = entry["parent"]
            self._write_index(folder, index)
        log.info("normality model version undone", extra=fields(camera=camera, version=number, by=by))
        return ModelVersion(**entry)

    def _first_index(self, camera: str, folder: Path) -> dict:
        """Version 1 is the live file as it is before the first feedback."""
        live = self.path(camera)
        if not live.exists():
            raise VigilError(f"model of camera {camera}: no model file at {live} to make a version of")
        shutil.copyfile(live, folder / "v0001.npz")
        first = ModelVersion(1, live.stat().st_mtime, "fitted", footage=footage_of(live))
        return {"current": 1, "versions": [asdict(first)]}

    def _adopt_live(self, camera: str, folder: Path, index: dict) -> None:
        """A live file that is not the current version (`vigil fit` or a warm-up wrote it since) becomes
        the next version, "fitted", and current: later versions build on it, and undo never goes back
        past it."""
        current = folder / f"v{int(index['current']):04d}.npz"
        live = self.path(camera)
        if not live.exists() or (current.exists() and _same_bytes(live, current)):
            return
        number = max(v["number"] for v in index["versions"]) + 1
        shutil.copyfile(live, folder / f"v{number:04d}.npz")
        note = "the live model file was replaced outside the console (vigil fit, or learnt during warm-up)"
        adopted = ModelVersion(number, live.stat().st_mtime, "fitted", note=note, footage=footage_of(live))
        index["versions"].append(asdict(adopted))
        index["current"] = number
        self._write_index(folder, index)
        log.info("live model file adopted as a new version", extra=fields(camera=camera, version=number))

    def _make_live(self, camera: str, version_file: Path) -> None:
        with open(version_file, "rb") as source, atomic_file(self.path(camera)) as live:
            shutil.copyfileobj(source, live)

    def _read_index(self, camera: str) -> dict | None:
        path = self.versions_dir(camera) / "index.json"
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise VigilError(f"model versions {path}: cannot read: {exc}") from exc

    @staticmethod
    def _write_index(folder: Path, index: dict) -> None:
        with atomic_file(folder / "index.json") as f:
            f.write(json.dumps(index, indent=1).encode())

    @contextmanager
    def _locked(self, camera: str) -> Iterator[Path]:
        """The camera's versions folder, held by this process alone (feedback may come from two)."""
        folder = self.versions_dir(camera)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield folder
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _same_bytes(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def footage_of(path: Path) -> str:
    """What normal footage the model file was learnt from, from its header ("" when not recorded)."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as arrays:
            meta = json.loads(str(arrays["meta"]))
    except (OSError, KeyError, ValueError):
        return ""
    p = meta.get("provenance")
    if not p:
        return ""
    return (
        f"{p['how']}: {p['clips']} clip{'s' if p['clips'] != 1 else ''}, {p['frames']:,} frames, "
        f"{p['seconds']:.0f} s of normal footage, learnt {p['created']}"
    )


class ModelFollower:
    """Per camera, the live model file checked at most every `interval_s`: when a newer version
    replaced it (feedback, undo, another process), the camera's model loaded anew, once."""

    def __init__(self, store: ModelStore, device: str = "cpu", interval_s: float = 1.0) -> None:
        self.store = store
        self.device = device
        self.interval_s = interval_s
        self._stamps: dict[str, tuple[int, int] | None] = {}
        self._next: dict[str, float] = {}

    def prime(self, camera: str) -> None:
        """The file as it is now is the model the camera runs with."""
        self._stamps[camera] = self.store.stamp(camera)

    def __call__(self, camera: str) -> NormalityModel | None:
        now = time.monotonic()
        if now < self._next.get(camera, 0.0):
            return None
        self._next[camera] = now + self.interval_s
        stamp = self.store.stamp(camera)
        if camera not in self._stamps:
            self._stamps[camera] = stamp
            return None
        if stamp is None or stamp == self._stamps[camera]:
            return None
        self._stamps[camera] = stamp
        from stages.normality import NormalityModel

        try:
            return NormalityModel.load(self.store.path(camera), device=self.device)
        except VigilError as exc:  # a bad file: keep the model in use, say so once per change
            log.error(f"newer model not loaded: {exc}", extra=fields(camera=camera))
            return None
