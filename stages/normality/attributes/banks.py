"""What the nearest-neighbour attributes (motion, pose, appearance) share: their memory banks."""

from __future__ import annotations

import logging

import numpy as np

from stages.normality.attributes.base import FitData, FrameView
from stages.normality.memory import MemoryBank, coreset

log = logging.getLogger("vigil.fit")
#: fewest rows a bank keeps when leaving out a fold's unbanked objects
MIN_BANK_ROWS = 50


def build_bank(name: str, feats: np.ndarray, data: FitData, objects: np.ndarray | None = None) -> MemoryBank:
    """The finite rows of `feats`, coreset-subsampled to ScoringConfig.memory_size when larger.

    `objects`: FitData's objects the rows are (a mask or indices; None: row for row). Objects the fit
    leaves out of the banks (`FitData.unbanked`) are left out, unless that leaves fewer than
    `MIN_BANK_ROWS` rows: a bank of one person's rows still says more than none."""
    config = data.config
    finite = np.all(np.isfinite(feats), axis=1) if len(feats) else np.zeros(0, bool)
    if data.unbanked is not None and len(feats):
        unbanked = data.unbanked if objects is None else data.unbanked[objects]
        if np.count_nonzero(finite & ~unbanked) >= MIN_BANK_ROWS:
            finite &= ~unbanked
    feats = feats[finite] if len(feats) else feats
    keep = coreset(feats, config.memory_size, config.coreset, data.seed, data.device)
    log.info("memory bank", extra={"bank": name, "rows": len(keep), "of": len(feats)})
    return MemoryBank(feats[keep], data.device)


def absorb_rows(frame: FrameView, bank: str, features: np.ndarray, rows: np.ndarray) -> None:
    """Feedback of a nearest-neighbour attribute: the judged feature rows of the objects `rows` join
    the bank, once each (a bank keeps examples, not frequencies: the k-NN distance to a row is 0 once
    it is in, whatever the weight). Rows not judged (NaN) are left out."""
    picked = features[rows]
    frame.model.banks[bank].add(picked[np.all(np.isfinite(picked), axis=1)])
