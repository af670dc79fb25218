"""Operator feedback, "this is normal here": an event's observations added to a model, attribute by
attribute, through each attribute's own `absorb_normal`.

Every recorded frame of the event's object counts `weight` normal observations of each attribute that
takes feedback, in the cell and as the class it was seen (geometric attributes skip the frames where
its box was cut by the frame edge, as in the fit); each distinct relation it took part in counts once
per pair of objects, as relations are counted in the fit. Calibrators stay: they are the scale of
held-out normal data, and the raw scores of such objects drop on that scale. Attributes whose model
part cannot take an observation say why in the report.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stages.normality.attributes import REGISTRY
from stages.normality.features import HistoryFeatures, truncated
from stages.normality.judge import frame_view
from stages.normality.model import NormalityModel
from stages.normality.observations import EventObservations


@dataclass(frozen=True)
class AttributeFeedback:
    """What one attribute took from the event: `observations` rows (each worth `weight`), or why not."""

    attribute: str
    observations: int
    weight: int
    skipped: str | None = None


def absorb_event(model: NormalityModel, seen: EventObservations, weight: int) -> list[AttributeFeedback]:
    """Add the event's observations to `model` in place; one report line per attribute."""
    n = len(seen)
    frame = frame_view(model, seen.attrs, seen.graph(), HistoryFeatures.none(n), k=1)
    rows = np.arange(n)
    whole = rows[~truncated(seen.attrs.xyxy, seen.frame_size)]
    report = []
    for name, attribute in REGISTRY.items():
        if not attribute.absorbs_feedback:
            report.append(AttributeFeedback(name, 0, weight, attribute.no_feedback))
            continue
        mine = whole if attribute.geometric else rows
        if len(mine) == 0:
            report.append(AttributeFeedback(name, 0, weight, "its box was cut by the frame edge throughout"))
            continue
        attribute.absorb_normal(frame, mine, weight)
        report.append(AttributeFeedback(name, len(mine), weight))
    return report
