"""Every attribute left out and alone, scored over one perception cache with one fitted model.

Perception is not re-run: each variant replays the cached clips through the scoring stages with
`scoring.attributes` set to the variant's attributes, and keeps the headline figures of it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from pipeline.config import VigilConfig
from pipeline.evaluation.cache import ClipRecord
from pipeline.evaluation.footage import Clip, LabelledFootage
from pipeline.evaluation.replay import replay_cached
from pipeline.evaluation.report import Figures, FitInfo, RunHeader, evaluate
from pipeline.logs import fields

if TYPE_CHECKING:
    from stages.normality import NormalityModel

log = logging.getLogger("vigil.eval")

ABLATION_NOTE = (
    "one model fitted once on cached training perception; each variant judges only its attributes "
    "(scoring.attributes); causal/centred = smoothed frame scores as in the main result"
)
ABLATION_COLUMNS = (
    "micro_causal",
    "macro_causal",
    "micro_centred",
    "macro_centred",
    "localisation",
    "rbdc",
    "tbdc",
)


@dataclass(frozen=True)
class AblationRow:
    """The headline figures of one variant."""

    variant: str
    micro_causal: float | None
    macro_causal: float | None
    micro_centred: float | None
    macro_centred: float | None
    localisation: float | None
    rbdc: float | None
    tbdc: float | None

    @classmethod
    def of(cls, label: str, figures: Figures) -> AblationRow:
        k = figures.k
        causal, centred = figures.frame_auc[f"causal_{k}"], figures.frame_auc[f"centred_{k}"]
        return cls(
            variant=label,
            micro_causal=causal.micro,
            macro_causal=causal.macro,
            micro_centred=centred.micro,
            macro_centred=centred.macro,
            localisation=figures.localisation.share,
            rbdc=figures.rbdc,
            tbdc=figures.tbdc,
        )


@dataclass
class AblationResult:
    """`vigil eval --ablate-each`: the run's header (no `attributes`: each row has its own), the model
    and one row per variant."""

    header: RunHeader
    fit: FitInfo
    rows: list[AblationRow]
    ablation_s: float

    def to_json(self) -> dict[str, object]:
        return {
            **self.header.to_json(with_attributes=False),
            "fit": self.fit.to_json(),
            "ablation": [asdict(row) for row in self.rows],
            "ablation_note": ABLATION_NOTE,
            "ablation_s": self.ablation_s,
        }


def ablation_variants() -> list[tuple[str, list[str] | None]]:
    """(label, judged attributes): all, then per attribute the run without it and with only it."""
    from stages.normality import ATTRIBUTES

    out: list[tuple[str, list[str] | None]] = [("all", None)]
    for a in ATTRIBUTES:
        out.append((f"-{a}", [b for b in ATTRIBUTES if b != a]))
        out.append((f"only {a}", [a]))
    return out


def ablate_each(
    variant_config: Callable[[list[str] | None], VigilConfig],
    data: LabelledFootage,
    test: Sequence[Clip],
    model: NormalityModel,
    records: Sequence[ClipRecord],
) -> tuple[list[AblationRow], float]:
    """Every variant scored over the same cached perception and the same fitted model; (rows, seconds).

    `variant_config(judged)` is the evaluation config judging only `judged` (None: all).
    """
    gts = {c.name: data.masks(c.name) for c in test} if data.has_masks else None
    rows = []
    t0 = time.monotonic()
    for label, judged in ablation_variants():
        config = variant_config(judged)
        rr = replay_cached(config, model, records)
        figures = evaluate(data, test, rr.collector, config.scoring.smoothing_frames, rr.report, masks=gts)
        rows.append(AblationRow.of(label, figures))
        log.info("ablation variant done", extra=fields(stage="eval", variant=label))
    return rows, round(time.monotonic() - t0, 1)


def ablation_table(rows: Sequence[AblationRow]) -> str:
    heads = ("micro c", "macro c", "micro ctr", "macro ctr", "loc", "RBDC", "TBDC")
    lines = [f"{'variant':<24}" + "".join(f"{h:>10}" for h in heads)]
    for row in rows:
        lines.append(f"{row.variant!s:<24}" + "".join(f"{getattr(row, c)!s:>10}" for c in ABLATION_COLUMNS))
    return "\n".join(lines)
