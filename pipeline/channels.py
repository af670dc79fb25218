"""Bounded channels between the runner's threads.

`Ingress` sits between the sources and the first stage: one lane per camera, read round-robin so
no camera starves another. In live mode a full lane drops its oldest *frame* (control messages
are never dropped) so latency cannot build up; in replay mode a full lane blocks the source so
nothing is lost. With `max_in_flight`, a camera's frame is only released to the pipeline while fewer
than that many of its frames are inside it (the runner calls `release` when one completes): frames
then wait where the freshest-wins drop applies instead of queueing behind a slow stage.
`Pipe` is the plain bounded FIFO between two stages (backpressure only).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from pipeline.packets import FramePacket, SourceEvent

Item = FramePacket | SourceEvent


class Closed(Exception):
    """The channel is closed and empty: no more items will come."""


class Ingress:
    def __init__(
        self,
        capacity: int,
        drop_oldest: bool,
        on_drop: Callable[[str], None],
        max_in_flight: int = 0,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"ingress capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.drop_oldest = drop_oldest
        self.max_in_flight = max_in_flight  # 0: unlimited
        self._in_flight: dict[str, int] = {}
        self._on_drop = on_drop
        self._lanes: dict[str, deque[Item]] = {}
        self._order: deque[str] = deque()
        self._cond = threading.Condition()
        self._closed = False

    def open_lane(self, camera: str) -> None:
        with self._cond:
            if camera not in self._lanes:
                self._lanes[camera] = deque()
                self._in_flight[camera] = 0
                self._order.append(camera)

    def put(self, camera: str, item: Item, stop: threading.Event) -> bool:
        """Queue `item`; returns False if it could not be queued because `stop` was set."""
        with self._cond:
            lane = self._lanes[camera]
            if isinstance(item, FramePacket):
                while self._frames_in(lane) >= self.capacity:
                    if self.drop_oldest:
                        self._drop_oldest_frame(camera, lane)
                        break
                    if stop.is_set():
                        return False
                    self._cond.wait(0.05)
            lane.append(item)
            self._cond.notify_all()
            return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def depth(self) -> int:
        with self._cond:
            return sum(len(lane) for lane in self._lanes.values())

    def release(self, camera: str) -> None:
        """One of `camera`'s frames left the pipeline: another may enter."""
        with self._cond:
            if self._in_flight.get(camera, 0) > 0:
                self._in_flight[camera] -= 1
                self._cond.notify_all()

    def _ready(self, camera: str) -> bool:
        lane = self._lanes[camera]
        if not lane:
            return False
        if self.max_in_flight <= 0 or isinstance(lane[0], SourceEvent):
            return True
        return self._in_flight[camera] < self.max_in_flight

    def _any_ready(self) -> bool:
        return any(self._ready(camera) for camera in self._lanes)

    def _count_ready(self) -> int:
        if self.max_in_flight <= 0:
            return sum(len(lane) for lane in self._lanes.values())
        return sum(1 for camera in self._lanes if self._ready(camera))

    def get_batch(self, max_items: int, timeout: float, max_wait: float = 0.0) -> list[Item]:
        """Up to `max_items` items, round-robin over cameras; [] on timeout; Closed when done.

        With `max_wait` > 0, once one item is there, waits up to that long for the batch to fill
        (frames of other cameras arriving), so batching never adds more than `max_wait` latency.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._any_ready():
                if self._closed and not any(self._lanes.values()):
                    raise Closed
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._cond.wait(remaining)
            fill_deadline = time.monotonic() + max_wait
            while (
                max_wait > 0
                and not self._closed
                and self._count_ready() < max_items
                and (remaining := fill_deadline - time.monotonic()) > 0
            ):
                self._cond.wait(remaining)
            batch: list[Item] = []
            while len(batch) < max_items and self._any_ready():
                camera = self._order[0]
                self._order.rotate(-1)
                if self._ready(camera):
                    item = self._lanes[camera].popleft()
                    batch.append(item)
                    if isinstance(item, SourceEvent):
                        break  # deliver control messages on their own, in order
                    if self.max_in_flight > 0:
                        self._in_flight[camera] += 1
            self._cond.notify_all()
            return batch

    @staticmethod
    def _frames_in(lane: deque[Item]) -> int:
        return sum(1 for item in lane if isinstance(item, FramePacket))

    def _drop_oldest_frame(self, camera: str, lane: deque[Item]) -> None:
        for i, item in enumerate(lane):
            if isinstance(item, FramePacket):
                del lane[i]
                self._on_drop(camera)
                return


class Pipe:
    """Bounded FIFO between two stage workers; `put` blocks when full (backpressure)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: deque[Item] = deque()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, item: Item, abort: threading.Event) -> bool:
        with self._cond:
            while len(self._items) >= self.capacity:
                if abort.is_set():
                    return False
                self._cond.wait(0.05)
            self._items.append(item)
            self._cond.notify_all()
            return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def depth(self) -> int:
        with self._cond:
            return len(self._items)

    def get_batch(self, max_items: int, timeout: float, max_wait: float = 0.0) -> list[Item]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._items:
                if self._closed:
                    raise Closed
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._cond.wait(remaining)
            fill_deadline = time.monotonic() + max_wait
            while (
                max_wait > 0
                and not self._closed
                and len(self._items) < max_items
                and (remaining := fill_deadline - time.monotonic()) > 0
            ):
                self._cond.wait(remaining)
            batch: list[Item] = []
            while self._items and len(batch) < max_items:
                batch.append(self._items.popleft())
                if isinstance(batch[-1], SourceEvent):
                    break
            self._cond.notify_all()
            return batch
