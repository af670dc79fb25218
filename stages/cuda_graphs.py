"""Replay a small network as CUDA graphs: one launch per call instead of hundreds of Python-level ops.

A nano YOLO runs a few hundred small kernels per forward. Launched op by op from Python, each one
also gives up and re-takes the GIL, so when the runner's other stage threads are busy in Python the
network waits for the interpreter far longer than for the GPU (on an H200 the GPU sat nearly idle;
bench/results/README.md). A captured CUDA graph is replayed with one call.

Graphs need fixed shapes: the batch is padded up to the next bucket (1, 2, 4, 8, ... `max_batch`).
All buckets for one input shape (the crop size) are captured up front, when the stage is built in
the main thread: capturing while other stage threads launch CUDA work invalidates the capture (seen
on an H200: "operation not permitted when stream is capturing"). Other shapes (full frames) and
larger batches run eagerly. Outputs are copied out of the graph's static buffers before the next
replay. Each graph gets its own copy of the module: YOLO heads cache anchors per input shape and
rebind them when the shape changes, which would free memory that an earlier graph still reads.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch

Output = torch.Tensor | tuple[torch.Tensor, ...] | list[torch.Tensor]


def bucket(n: int, max_batch: int) -> int:
    """The smallest power of two >= n, capped at `max_batch` (n itself when it is larger)."""
    if n >= max_batch:
        return n
    b = 1
    while b < n:
        b *= 2
    return min(b, max_batch)


class _Graph:
    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor], example: torch.Tensor) -> None:
        self.forward = forward  # holds the module copy this graph reads
        self.input = example.clone()
        stream = torch.cuda.Stream(device=example.device)
        stream.wait_stream(torch.cuda.current_stream(example.device))
        with torch.cuda.stream(stream):  # warm-up on a side stream, as capture requires
            for _ in range(2):
                forward(self.input)
        torch.cuda.current_stream(example.device).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.output = forward(self.input)
        torch.cuda.synchronize(example.device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        self.input[:n].copy_(x)
        if n < len(self.input):
            self.input[n:].zero_()
        self.graph.replay()
        return self.output[:n].clone()


def first_output(y: Output) -> torch.Tensor:
    """The decoded predictions of an ultralytics model in eval mode ((y, raw) -> y)."""
    return y[0] if isinstance(y, (list, tuple)) else y


class GraphedModule:
    """`select(module(x))`, replayed from CUDA graphs captured for inputs of shape (b, *sample_shape).

    Nothing is captured when the module is not on CUDA or `sample_shape` is None: every call is eager.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        sample_shape: tuple[int, ...] | None,
        select: Callable[[Output], torch.Tensor] = first_output,
        max_batch: int = 32,
    ) -> None:
        self.module = module
        self.select = select
        self.max_batch = max_batch
        self.eager_calls = 0
        self._graphs: dict[tuple[int, ...], _Graph] = {}
        param = next(module.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        if sample_shape is None or device.type != "cuda":
            return
        with torch.inference_mode():
            b = 1
            while True:
                own = copy.deepcopy(module)
                example = torch.zeros((b, *sample_shape), device=device)
                self._graphs[(b, *sample_shape)] = _Graph(lambda t, own=own: self.select(own(t)), example)
                if b >= max_batch:
                    break
                b = min(2 * b, max_batch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.select(self.module(x))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        graph = None
        if x.device.type == "cuda" and 0 < len(x) <= self.max_batch:
            graph = self._graphs.get((bucket(len(x), self.max_batch), *x.shape[1:]))
        if graph is None:
            self.eager_calls += 1
            return self.forward(x)
        return graph(x)

    @property
    def graphs(self) -> int:
        return len(self._graphs)
