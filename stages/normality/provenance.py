"""Where a normality model came from: how it was learnt, from how much footage, when, which version.

Kept in the model's header (JSON), so an operator can tell a model learnt online during warm-up from
one fitted by `vigil fit`, and so later versions of a camera's model (issue 17) can number on from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, get_args

How = Literal["warm-up", "vigil fit"]
HOW: tuple[str, ...] = get_args(How)


@dataclass(frozen=True)
class Provenance:
    """How a model was learnt. `version` is the camera's model version: its first model is 1."""

    how: How
    created: str  # ISO 8601, UTC, to the second
    seconds: float  # normal footage learnt from
    frames: int
    clips: int
    version: int = 1

    def __post_init__(self) -> None:
        if self.how not in HOW:
            raise ValueError(f"Provenance: how must be one of {HOW}, got {self.how!r}")
        if self.version < 1 or self.frames < 0 or self.clips < 0 or self.seconds < 0:
            raise ValueError(f"Provenance: negative counts or version < 1: {self}")

    @classmethod
    def now(cls, how: How, seconds: float, frames: int, clips: int) -> Provenance:
        """A first model (version 1) learnt just now."""
        created = datetime.now(UTC).isoformat(timespec="seconds")
        return cls(how, created, round(seconds, 3), frames, clips)

    def to_dict(self) -> dict[str, Any]:
        return {
            "how": self.how,
            "created": self.created,
            "seconds": self.seconds,
            "frames": self.frames,
            "clips": self.clips,
            "version": self.version,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Provenance:
        return cls(
            how=d["how"],
            created=str(d["created"]),
            seconds=float(d["seconds"]),
            frames=int(d["frames"]),
            clips=int(d["clips"]),
            version=int(d["version"]),
        )
