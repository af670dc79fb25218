"""The gait window (box aspect and speed history) spans the same time at any frame rate."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic import Walker, frame_sample

from pipeline.config import ScoringConfig
from stages.normality.features import TrackMemory


@pytest.mark.parametrize(("fps", "samples"), [(10.0, 8), (25.0, 20), (30.0, 24), (5.0, 8)])
def test_the_gait_window_holds_0_8_s_and_at_least_8_samples(fps: float, samples: int) -> None:
    memory = TrackMemory.of(ScoringConfig())
    rng = np.random.default_rng(0)
    for i in range(60):
        s = frame_sample([Walker(1)], i / fps, rng)
        hist = memory.update(s.attributes, s.pts)
    track = memory.tracks[int(s.attributes.track_id[0])]
    assert len(track.log_aspect) == len(track.speed) == samples
    assert np.isfinite(hist.stride[0]) and np.isfinite(hist.track_speed[0])


@pytest.mark.parametrize(("fps", "first_stride"), [(10.0, 5), (25.0, 13)])
def test_a_stride_needs_half_a_second_of_history(fps: float, first_stride: int) -> None:
    """Six samples at 10 fps, fourteen at 25 fps: a shorter stretch misses part of a stride."""
    memory = TrackMemory.of(ScoringConfig())
    rng = np.random.default_rng(0)
    strides = []
    for i in range(20):
        s = frame_sample([Walker(1)], i / fps, rng)
        strides.append(float(memory.update(s.attributes, s.pts).stride[0]))
    assert np.isnan(strides[:first_stride]).all() and np.isfinite(strides[first_stride:]).all()
