"""The registry of judged attributes: one object per attribute, by name, in a fixed order.

The order is the column order of raw and calibrated scores (Scores.attribute_names) and of the model
file's held-out arrays, so it only grows at the end. Adding an attribute is one file (an `Attribute`
subclass: how it is learnt, judged and explained) and one line here. The registry is a constant: its
objects are stateless, and nothing registers at run time.
"""

from __future__ import annotations

from types import MappingProxyType

from pipeline.errors import ModelError
from stages.normality.attributes.appearance import Appearance
from stages.normality.attributes.base import Attribute
from stages.normality.attributes.class_in_place import ClassInPlace
from stages.normality.attributes.direction import Direction
from stages.normality.attributes.dwell import Dwell
from stages.normality.attributes.dynamics import Dynamics
from stages.normality.attributes.gait import Gait
from stages.normality.attributes.limb_motion import LimbMotion
from stages.normality.attributes.motion import Motion
from stages.normality.attributes.pose import Pose
from stages.normality.attributes.relations import Relations
from stages.normality.attributes.scale_change import ScaleChange
from stages.normality.attributes.size import Size
from stages.normality.attributes.speed import Speed
from stages.normality.attributes.unexplained_motion import UnexplainedMotion


def _registry(*attributes: Attribute) -> MappingProxyType[str, Attribute]:
    names = [a.name for a in attributes]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ModelError(f"attributes registered twice: {', '.join(duplicates)}")
    return MappingProxyType({a.name: a for a in attributes})


REGISTRY = _registry(
    ClassInPlace(),
    Speed(),
    Direction(),
    Size(),
    Motion(),
    Pose(),
    Appearance(),
    Relations(),
    Dynamics(),
    ScaleChange(),
    Dwell(),
    UnexplainedMotion(),
    LimbMotion(),
    Gait(),
)

#: every attribute the model judges, in the order of Scores.attribute_names
ATTRIBUTES: tuple[str, ...] = tuple(REGISTRY)


def attribute(name: str) -> Attribute:
    """The registered attribute `name`; ModelError naming the known ones otherwise."""
    found = REGISTRY.get(name)
    if found is None:
        raise ModelError(f"unknown attribute {name!r}; known: {', '.join(ATTRIBUTES)}")
    return found


__all__ = ["ATTRIBUTES", "REGISTRY", "Attribute", "attribute"]
