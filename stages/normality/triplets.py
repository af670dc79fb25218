"""Scene-graph triplet statistics: how often (subject class, predicate, object class) occurs.

The rarity of a triplet is judged against the opportunities to see it: the pairs of tracks of the
subject's and the object's class seen together in training (the relations learner counts them).
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np

from pipeline.errors import ModelError


class TripletStats:
    def __init__(self, triplets: Counter[tuple[str, str, str]], pairs: Counter[tuple[str, str]], frames: int):
        self.triplets = triplets
        self.pairs = pairs
        self.frames = frames

    @classmethod
    def empty(cls) -> TripletStats:
        return cls(Counter(), Counter(), 0)

    def absorb(self, subject: str, predicate: str, obj: str, weight: int) -> None:
        """Count one relation `weight` more times, and the chances to see it with it (operator feedback)."""
        self.triplets[(subject, predicate, obj)] += weight
        self.pairs[(subject, obj)] += weight

    def probability(self, subject: str, predicate: str, obj: str) -> float:
        """P(triplet | both classes present), with a Jeffreys-like prior (unseen -> small, finite)."""
        seen = self.triplets.get((subject, predicate, obj), 0)
        chances = self.pairs.get((subject, obj), 0)
        return (seen + 0.5) / (chances + 1.0)

    def count(self, subject: str, predicate: str, obj: str) -> int:
        return self.triplets.get((subject, predicate, obj), 0)

    def chances(self, subject: str, obj: str) -> int:
        """The occasions to see a relation of these classes (pairs of tracks of them seen together)."""
        return self.pairs.get((subject, obj), 0)

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        doc = {
            "triplets": [[*k, v] for k, v in sorted(self.triplets.items())],
            "pairs": [[*k, v] for k, v in sorted(self.pairs.items())],
            "frames": self.frames,
        }
        return {f"{prefix}.json": np.array(json.dumps(doc))}

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray], prefix: str) -> TripletStats:
        try:
            doc = json.loads(str(a[f"{prefix}.json"]))
            triplets = Counter({(s, p, o): int(n) for s, p, o, n in doc["triplets"]})
            pairs = Counter({(s, o): int(n) for s, o, n in doc["pairs"]})
            return cls(triplets, pairs, int(doc["frames"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"triplet statistics are corrupt: {exc}") from exc
