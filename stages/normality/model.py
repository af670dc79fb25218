"""The per-camera normality model: its parts, and saving/loading them as npz (+ an embedded JSON header).

The file is one `.npz` whose `meta` entry is a JSON document (format version, the ScoringConfig it
was built with, class names, grid shape, counts); it is read with `allow_pickle=False`, so loading a
model file never runs code.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.errors import ModelError
from stages.normality.alert_budget import AlertCurve
from stages.normality.attributes import ATTRIBUTES, REGISTRY
from stages.normality.calibration import TailCalibrator, TailPrior
from stages.normality.classes import BLOB, UNKNOWN
from stages.normality.dynamics import DynamicsPredictor
from stages.normality.grids import CountGrid, QuantileGrid
from stages.normality.memory import MemoryBank, OneBlasThread, resolve_device
from stages.normality.provenance import Provenance
from stages.normality.triplets import TripletStats

FORMAT = "vigil-normality"
VERSION = 6  # 2: attribute gait (calibrator and holdout column); 3: sustained evidence calibrators;
# 4: relative dynamics error, median sustained evidence and its tail floor (calibrated values changed);
# 5: calibrators count held-out tracks (holdout_groups) and shrink their tails toward a prior;
# attributes' plain tables (`t.NAME`): dwell's stay counts, limb motion's; speed_vs_pose gone;
# scale change from the visible size (table q.visible_scale_rate), thrown objects;
# 6: dwell's at-risk counts are product-limit ones (stayed to the rung before, followed to this);
# relation triplets counted per pair of tracks, not per frame

#: the model parts the attributes own, by name, in the order of the registry (the file's entries)
QUANTITIES = tuple(q for a in REGISTRY.values() for q in a.quantities)
BANKS = tuple(a.bank for a in REGISTRY.values() if a.bank is not None)
TABLES = tuple(t for a in REGISTRY.values() for t in a.tables)


@dataclass
class NormalityModel:
    camera: str
    class_names: tuple[str, ...]  # detector vocabulary + BLOB + UNKNOWN: the class axis of the grids
    grid: tuple[int, int]
    config: dict[str, Any]
    counts: dict[str, int]
    place: CountGrid
    direction: np.ndarray  # (C, K, DIRECTION_BINS) counts
    quantities: dict[str, QuantileGrid]
    banks: dict[str, MemoryBank]
    pose_fill: np.ndarray  # (17, 2) mean keypoints, stands in for unseen ones
    triplets: TripletStats
    dynamics: DynamicsPredictor
    calibrators: dict[str, TailCalibrator] = field(default_factory=dict)
    #: plain arrays the attributes own (Attribute.tables), by name
    tables: dict[str, np.ndarray] = field(default_factory=dict)
    holdout_raw: np.ndarray = field(default_factory=lambda: np.zeros((0, len(ATTRIBUTES))))
    #: each held-out row's independent sample (its track; stages.normality.fit); empty: every row its own
    holdout_groups: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    #: sustained evidence (stages.normality.sustained): its window and minimum applicable frames
    #: (window 0: none), one calibrator per attribute, and the held-out rows' values (NaN: too young)
    sustained_window: int = 0
    sustained_min_frames: int = 0
    sustained_calibrators: dict[str, TailCalibrator] = field(default_factory=dict)
    holdout_sustained: np.ndarray = field(default_factory=lambda: np.zeros((0, len(ATTRIBUTES))))
    #: the perception settings its footage was measured with (pipeline.config.perception_settings);
    #: empty when not recorded (a fit from samples)
    perception: dict[str, Any] = field(default_factory=dict)
    #: false alerts per hour by start score on held-out normal clips (stages.normality.crossval);
    #: None when not measured (cross-validation off, or too little footage to split into folds)
    false_alerts: AlertCurve | None = None
    #: how, when and from how much footage it was learnt; None for a model fitted from samples alone
    #: (tests, `vigil eval`) and for files written before it was recorded
    provenance: Provenance | None = None

    @property
    def cells(self) -> int:
        return self.grid[0] * self.grid[1]

    def class_index(self, names: tuple[str, ...], class_id: np.ndarray, is_blob: np.ndarray) -> np.ndarray:
        """Map an ObjectAttributes class_id (indexing `names`) to this model's class axis."""
        lookup = self._class_lookup
        unknown = lookup[UNKNOWN]
        table = self._class_tables.get(names)
        if table is None:  # the detector's vocabulary: one per camera, mapped once
            table = np.array([lookup.get(n, unknown) for n in names] or [unknown], np.int64)
            self._class_tables[names] = table
        safe = np.clip(class_id, 0, max(len(names) - 1, 0))
        out = np.where((class_id >= 0) & (class_id < len(names)), table[safe], unknown)
        return np.where(is_blob, lookup[BLOB], out)

    # Lookups derived from the model's arrays, built on first use. A model's class axis does not change
    # once it is built (fit and warm-up build a new model); its direction counts only through
    # add_direction, which drops their cached totals.

    @cached_property
    def _class_lookup(self) -> dict[str, int]:
        """Class name -> index on the class axis."""
        return {n: i for i, n in enumerate(self.class_names)}

    @cached_property
    def _class_tables(self) -> dict[tuple[str, ...], np.ndarray]:
        """A detector vocabulary -> its classes' indices on the class axis (filled by class_index)."""
        return {}

    @cached_property
    def _class_flags(self) -> dict[str, np.ndarray]:
        """A class name -> (K,) True on the class axis where the class is that name (filled by is_class)."""
        return {}

    def is_class(self, name: str) -> np.ndarray:
        """(K,) True on the class axis where the class is `name`."""
        flags = self._class_flags.get(name)
        if flags is None:
            flags = self._class_flags[name] = np.array([n == name for n in self.class_names], bool)
        return flags

    def add_direction(self, cell: np.ndarray, cls: np.ndarray, sector: np.ndarray, weight: float) -> None:
        """Count `weight` more objects heading into `sector` in (cell, class) (operator feedback)."""
        np.add.at(self.direction, (cell, cls, sector), float(weight))
        self.__dict__.pop("direction_totals", None)  # the cached sums are recomputed on next use

    @cached_property
    def direction_totals(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sums of the direction counts: per class and sector over all cells (K, B), their total per
        class (K,), and per cell and class (C, K)."""
        per_class = self.direction.sum(axis=0)
        return per_class, per_class.sum(axis=1), self.direction.sum(axis=2)

    def object_calibrator(self, attributes: tuple[str, ...], how: str) -> TailCalibrator:
        """Calibrator of the object combination for this attribute subset, from the held-out raw scores."""
        from stages.normality.judge import calibrate, calibrate_sustained, combine

        idx = [ATTRIBUTES.index(a) for a in attributes]
        scores = calibrate(self, self.holdout_raw[:, idx], attributes)
        if self.sustained_window and len(self.holdout_sustained) == len(scores):
            scores = np.fmax(scores, calibrate_sustained(self, self.holdout_sustained[:, idx], attributes))
        groups = self.holdout_groups if len(self.holdout_groups) == len(scores) else None
        return TailCalibrator.fit(combine(scores, how), groups, TailPrior.LOG10_SCORE)

    # ---------------------------------------------------------------------------------------------
    # persistence

    def save(self, path: str | Path) -> Path:
        """Write the model to `path` atomically: a reader (the next start) sees the old file or the
        whole new one, never a part. OSError when it cannot be written (no partial file is left)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "camera": self.camera,
            "class_names": list(self.class_names),
            "grid": list(self.grid),
            "config": self.config,
            "perception": self.perception,
            "false_alerts": None if self.false_alerts is None else self.false_alerts.to_dict(),
            "provenance": None if self.provenance is None else self.provenance.to_dict(),
            "counts": self.counts,
            "attributes": list(ATTRIBUTES),
            "sustained": {
                "window": self.sustained_window,
                "min_frames": self.sustained_min_frames,
                "attributes": sorted(self.sustained_calibrators),
            },
        }
        arrays: dict[str, np.ndarray] = {
            "meta": np.array(json.dumps(meta)),
            "place.counts": self.place.counts,
            "direction": self.direction,
            "pose_fill": self.pose_fill,
        }
        for name, q in self.quantities.items():
            arrays.update(q.to_arrays(f"q.{name}"))
        for name, bank in self.banks.items():
            arrays[f"bank.{name}"] = bank.features
        for name, table in self.tables.items():
            arrays[f"t.{name}"] = table
        arrays.update(self.triplets.to_arrays("triplets"))
        arrays.update(self.dynamics.to_arrays("dynamics"))
        arrays["holdout_raw"] = self.holdout_raw
        arrays["holdout_groups"] = self.holdout_groups
        for name, cal in self.calibrators.items():
            arrays.update(cal.to_arrays(f"cal.{name}"))
        arrays["holdout_sustained"] = self.holdout_sustained
        for name, cal in self.sustained_calibrators.items():
            arrays.update(cal.to_arrays(f"scal.{name}"))
        tmp = path.with_name(path.name + ".tmp.npz")
        try:
            with tmp.open("wb") as f:
                np.savez_compressed(f, **arrays)
                f.flush()
                os.fsync(f.fileno())  # on disk before the rename makes it the model
            tmp.replace(path)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> NormalityModel:
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"normality model {path}: file not found (run `vigil fit` for this camera)")
        arrays = _read_npz(path)
        try:
            meta = json.loads(str(arrays["meta"]))
        except (KeyError, ValueError) as exc:
            raise ModelError(f"normality model {path}: missing or corrupt header; {RECREATE}") from exc
        if meta.get("format") != FORMAT:
            raise ModelError(f"normality model {path}: not a Vigil normality model; {RECREATE}")
        if meta.get("version") != VERSION:
            raise ModelError(
                f"normality model {path}: format version {meta.get('version')}, this Vigil reads {VERSION}; "
                "re-run `vigil fit`"
            )
        dev: torch.device = resolve_device(device)
        blas = OneBlasThread() if dev.type == "cpu" else None  # one limit for the three banks
        try:
            return cls(
                camera=str(meta["camera"]),
                class_names=tuple(meta["class_names"]),
                grid=(int(meta["grid"][0]), int(meta["grid"][1])),
                config=dict(meta["config"]),
                counts={k: int(v) for k, v in meta["counts"].items()},
                place=CountGrid(arrays["place.counts"]),
                direction=arrays["direction"],
                quantities={q: QuantileGrid.from_arrays(arrays, f"q.{q}") for q in QUANTITIES},
                banks={b: MemoryBank(arrays[f"bank.{b}"], dev, blas) for b in BANKS},
                pose_fill=arrays["pose_fill"],
                triplets=TripletStats.from_arrays(arrays, "triplets"),
                dynamics=DynamicsPredictor.from_arrays(arrays, "dynamics", dev),
                calibrators={c: TailCalibrator.from_arrays(arrays, f"cal.{c}") for c in ATTRIBUTES},
                tables={t: arrays[f"t.{t}"] for t in TABLES},
                holdout_raw=arrays["holdout_raw"],
                holdout_groups=arrays["holdout_groups"],
                sustained_window=int(meta["sustained"]["window"]),
                sustained_min_frames=int(meta["sustained"]["min_frames"]),
                sustained_calibrators={
                    c: TailCalibrator.from_arrays(arrays, f"scal.{c}")
                    for c in meta["sustained"]["attributes"]
                },
                holdout_sustained=arrays["holdout_sustained"],
                perception=dict(meta.get("perception", {})),
                false_alerts=AlertCurve.from_dict(meta["false_alerts"]) if meta.get("false_alerts") else None,
                provenance=Provenance.from_dict(meta["provenance"]) if meta.get("provenance") else None,
            )
        except KeyError as exc:
            raise ModelError(
                f"normality model {path}: missing entry {exc.args[0]!r} (corrupt or incompatible); {RECREATE}"
            ) from exc
        except ValueError as exc:  # a header entry out of range (AlertCurve, Provenance)
            raise ModelError(f"normality model {path}: corrupt header ({exc}); {RECREATE}") from exc


#: how an operator gets a good model file back
RECREATE = "re-create it with `vigil fit --camera NAME FOOTAGE...`"
_ZIP_MAGIC = b"PK\x03\x04"


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a model file, or a ModelError saying what is wrong with it.

    The file must be an npz (zip) archive of plain arrays. Anything else is refused before numpy sees
    it: `np.load` takes other files for pickles and suggests `allow_pickle=`, which a model file never
    needs and an operator must not be pointed at.
    """
    try:
        with path.open("rb") as f:
            head = f.read(len(_ZIP_MAGIC))
    except OSError as exc:
        raise ModelError(f"normality model {path}: cannot read it: {exc.strerror or exc}") from exc
    if head != _ZIP_MAGIC:
        what = "the file is empty" if not head else "the file is not an npz archive (damaged or another kind)"
        raise ModelError(f"normality model {path}: {what}; {RECREATE}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise ModelError(f"normality model {path}: damaged npz archive ({exc}); {RECREATE}") from exc
    except ValueError as exc:  # object arrays (pickles) or a damaged entry: never loaded
        raise ModelError(
            f"normality model {path}: holds entries that are not plain arrays; {RECREATE}"
        ) from exc
