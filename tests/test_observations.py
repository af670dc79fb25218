"""ObservationRecorder: what "normal here" will teach, recorded while an alert is open."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from synthetic import Walker, frame_sample

from stages.normality.observations import EventObservations, ObservationRecorder


@pytest.mark.parametrize(
    ("frames", "max_frames", "kept"),
    [(10, 200, list(range(10))), (7, 4, [0, 4]), (40, 8, [0, 8, 16, 24, 32])],
)
def test_keeps_fewer_than_max_frames_spread_over_the_event(
    frames: int, max_frames: int, kept: list[int]
) -> None:
    rng = np.random.default_rng(0)
    recorder = ObservationRecorder("cam", max_frames=max_frames)
    recorder.start("e1", 1)
    for i in range(frames):
        fs = frame_sample([Walker(1), Walker(2, x=0.3)], i / 10, rng)
        fs.attributes.dwell[:] = i  # each frame's row tells which frame it was
        recorder.add(fs.attributes, fs.scene_graph, (240, 360))
    seen = recorder.finish("e1")
    assert seen is not None and set(seen.attrs.track_id.tolist()) == {1}
    assert seen.attrs.dwell.tolist() == kept  # thinned to every other kept frame each time it fills
    assert recorder.finish("e1") is None  # finished: nothing left


def test_relations_once_each_and_a_file_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    recorder = ObservationRecorder("cam")
    recorder.start("e1", 1)
    recorder.start("e2", 3)  # a track never seen: no observations
    for i in range(5):
        fs = frame_sample([Walker(1), Walker(2, x=0.3)], i / 10, rng, relations=[(1, "near", 2)])
        recorder.add(fs.attributes, fs.scene_graph, (240, 360))
    assert recorder.observations("e2") is None
    seen = recorder.observations("e1")
    assert seen is not None and len(seen) == 5
    assert [(e[0], e[2], e[3]) for e in seen.edges] == [(1, "near", 2)]
    back = EventObservations.load(seen.save(tmp_path / "e1.obs.npz"))
    assert (back.camera, back.event_id, back.track_id, back.frame_size) == ("cam", "e1", 1, (240, 360))
    assert back.edges == seen.edges and np.array_equal(back.attrs.xyxy, seen.attrs.xyxy)
