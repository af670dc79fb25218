"""UCSD Ped2 as laid out in ../shared/data/ucsd_ped2: the `ped2` preset of `pipeline.evaluation.footage`.

Kept as names of their own for the evaluation code written against Ped2 first; new code uses
`LabelledFootage.open(root, "ped2")` directly.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.evaluation.footage import PRESETS, Clip, FootageFormat, LabelledFootage

Ped2Clip = Clip


class Ped2(LabelledFootage):
    @classmethod
    def open(cls, root: Path, format: FootageFormat | str = PRESETS["ped2"]) -> LabelledFootage:
        return super().open(root, format)
