"""A small torch MLP that predicts a track's next velocity from its last k velocities.

Velocities are in box-heights/s, divided by one scale learnt from training so the net sees unit
-sized inputs. The raw dynamics score is the prediction error relative to how fast the track moves:
error / (mean |velocity| of the window + 1), both in those units. Erratic means unpredictable for its
own motion: a fast, smooth rider misses the next step by more pixels than a walker but is not
erratic (its speed is judged by the speed attribute); the + 1 (one typical speed) keeps near-still
tracks from being judged on box jitter alone. Training is seeded and deterministic on CPU.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pipeline.errors import ModelError
from stages.normality.memory import torch_threads

HIDDEN = 32


class DynamicsPredictor:
    def __init__(self, history: int, scale: float, net: nn.Sequential, device: torch.device) -> None:
        self.history = history
        self.scale = scale
        self.device = device
        self.net = net.to(device).eval()
        linears = [m for m in net if isinstance(m, nn.Linear)]
        self._layers = [(m.weight.detach().cpu().numpy(), m.bias.detach().cpu().numpy()) for m in linears]

    @staticmethod
    def build_net(history: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Linear(2 * history, HIDDEN),
            nn.Tanh(),
            nn.Linear(HIDDEN, HIDDEN),
            nn.Tanh(),
            nn.Linear(HIDDEN, 2),
        )

    @classmethod
    def train(
        cls, windows: np.ndarray, history: int, epochs: int, seed: int, device: torch.device
    ) -> DynamicsPredictor:
        """`windows` (M, history + 1, 2): velocity sequences; the last step is the target."""
        if windows.ndim != 3 or windows.shape[1:] != (history + 1, 2):
            raise ModelError(f"dynamics: expected windows (M, {history + 1}, 2), got {windows.shape}")
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        net = cls.build_net(history)
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * (1.0 / max(p.shape[-1], 1)) ** 0.5)
        finite = np.all(np.isfinite(windows), axis=(1, 2))
        windows = windows[finite]
        scale = float(np.std(windows)) if len(windows) else 1.0
        scale = max(scale, 1e-3)
        if len(windows) >= 8:
            with torch_threads(1):  # tiny steps: threads only add wake-ups (see memory.torch_threads)
                cls._fit(net, windows, scale, epochs, gen)
        return cls(history, scale, net, device)

    @staticmethod
    def _fit(
        net: nn.Sequential, windows: np.ndarray, scale: float, epochs: int, gen: torch.Generator
    ) -> None:
        """Adam on the squared error of the normalised next velocity, seeded batches."""
        x = torch.from_numpy((windows[:, :-1] / scale).reshape(len(windows), -1).astype(np.float32))
        y = torch.from_numpy((windows[:, -1] / scale).astype(np.float32))
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        net.train()
        batch = 256
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=gen)
            for s in range(0, len(x), batch):
                idx = order[s : s + batch]
                opt.zero_grad()
                loss = ((net(x[idx]) - y[idx]) ** 2).sum(dim=1).mean()
                loss.backward()
                opt.step()
        net.eval()

    def error(self, windows: np.ndarray) -> np.ndarray:
        """Prediction error relative to the track's speed per window (M, history + 1, 2); NaN windows
        give NaN."""
        out = np.full(len(windows), np.nan)
        ok = np.all(np.isfinite(windows), axis=(1, 2)) if len(windows) else np.zeros(0, bool)
        if not ok.any():
            return out
        w = windows[ok] / self.scale
        x = w[:, :-1].reshape(len(w), -1).astype(np.float32)
        if self.device.type == "cpu":  # tiny batches: plain numpy beats torch's thread wake-ups
            h = x
            for i, (weight, bias) in enumerate(self._layers):
                h = h @ weight.T + bias
                if i < len(self._layers) - 1:
                    h = np.tanh(h)
            pred = h
        else:
            with torch.no_grad():
                pred = self.net(torch.from_numpy(x).to(self.device)).cpu().numpy()
        speed = np.linalg.norm(w, axis=2).mean(axis=1)
        out[ok] = np.linalg.norm(pred - w[:, -1], axis=1) / (speed + 1.0)
        return out

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        arrays = {f"{prefix}.{k}": v.detach().cpu().numpy() for k, v in self.net.state_dict().items()}
        arrays[f"{prefix}.history"] = np.array(self.history)
        arrays[f"{prefix}.scale"] = np.array(self.scale)
        return arrays

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray], prefix: str, device: torch.device) -> DynamicsPredictor:
        history = int(a[f"{prefix}.history"])
        net = cls.build_net(history)
        state = {k: torch.from_numpy(a[f"{prefix}.{k}"]) for k in net.state_dict()}
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            raise ModelError(f"dynamics weights do not fit the network: {str(exc).splitlines()[0]}") from exc
        return cls(history, float(a[f"{prefix}.scale"]), net, device)
