"""The stage contract.

A stage declares a unique `name`, the packet slots it `needs` and those it `provides`, and
implements `process`. Per-camera state is created in `on_source_added` and freed in
`on_source_eos`; both are delivered in-band, in order with the camera's frames.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from pipeline.packets import SLOTS, Event, FramePacket, SourceEvent


class Stage(ABC):
    name: ClassVar[str]
    needs: ClassVar[tuple[str, ...]] = ("frame",)
    provides: ClassVar[tuple[str, ...]] = ()
    #: frames a worker may hand to `process_batch` at once (frames of several cameras together)
    max_batch: int = 1
    #: once a frame is waiting, how long to wait for more to fill a batch (bounds added latency)
    batch_wait_s: float = 0.0
    #: the stage spends most of its time running Python (numpy on small arrays included), holding the
    #: interpreter lock, rather than in native code that releases it (models, optical flow, codecs).
    #: The runner runs consecutive interpreter-bound stages in one thread (RunnerOptions).
    interpreter_bound: ClassVar[bool] = False

    def on_start(self) -> None:
        """Load models, open files. Called once in the stage's worker before the first packet."""

    def on_stop(self) -> None:
        """Release what on_start took. Called once, even after errors."""

    def on_source_added(self, event: SourceEvent) -> None:
        """A camera was attached: create its state here."""

    def on_source_eos(self, event: SourceEvent) -> None:
        """A camera ended (file finished, source removed): free its state here."""

    def drain_events(self) -> list[Event]:
        """Events produced by a control hook (e.g. alerts ended on EOS); the runner sends them in-band."""
        return []

    @abstractmethod
    def process(self, packet: FramePacket) -> None:
        """Read the `needs` slots of `packet` and fill its `provides` slots."""

    def process_batch(self, packets: list[FramePacket]) -> None:
        """Process several packets; stages with batched models override this."""
        for packet in packets:
            self.process(packet)

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        for slot in (*getattr(cls, "needs", ()), *getattr(cls, "provides", ())):
            if slot not in SLOTS:
                raise TypeError(
                    f"stage {cls.__name__}: unknown slot {slot!r}; known slots: {', '.join(SLOTS)}"
                )
