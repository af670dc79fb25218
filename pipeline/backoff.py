"""Capped exponential backoff, shared by the RTSP reconnect loop and the network delivery workers."""

from __future__ import annotations


class Backoff:
    """Delays initial, 2x initial, 4x ... up to `max_s`; `reset` after a success starts over.

    `failures` counts the delays handed out since the last reset (a worker logs it on recovery).
    """

    def __init__(self, initial_s: float, max_s: float) -> None:
        if initial_s <= 0 or max_s < initial_s:
            raise ValueError(f"backoff: need 0 < initial ({initial_s}) <= max ({max_s})")
        self.initial_s = initial_s
        self.max_s = max_s
        self.failures = 0

    def next_delay(self) -> float:
        self.failures += 1
        return min(self.max_s, self.initial_s * 2 ** min(self.failures - 1, 30))

    def reset(self) -> None:
        self.failures = 0
