"""ScoreStage through the real runner: per-camera state, frame score, causal smoothing, ablation."""

from __future__ import annotations

import time
from dataclasses import replace
from functools import partial

import numpy as np
import pytest
from synthetic import Walker, frame_sample, normal_clip, normal_footage

from pipeline.config import ScoringConfig, VigilConfig, perception_settings
from pipeline.errors import ConfigError, ModelError
from pipeline.harness import FramesSource, run_stages
from pipeline.packets import Frame, FramePacket, SourceEvent
from pipeline.stage import Stage
from stages.normality import NormalityModel, fit_normality
from stages.normality.fit import FrameSample
from stages.normality.learn import learn_model
from stages.score import ANY_CAMERA, Scorer, ScoreStage


@pytest.fixture(scope="module")
def model() -> NormalityModel:
    return fit_normality(normal_footage(clips=10, frames=50), ScoringConfig(), seed=0)


class ReplayAttributes(Stage):
    """Test input: hands each frame the hand-built attributes and scene graph of its camera and index."""

    name = "attributes"
    needs = ("frame",)
    provides = ("attributes", "scene_graph")

    def __init__(self, streams: dict[str, list[FrameSample]]) -> None:
        self.streams = streams

    def process(self, packet: FramePacket) -> None:
        s = self.streams[packet.frame.camera][packet.frame.index]
        packet.attributes, packet.scene_graph = s.attributes, s.scene_graph


# a blank picture of the synthetic walkway's size (360 x 240): boxes are judged against the frame edge
WALKWAY = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (240, 360, 3))


def frames(camera: str, n: int) -> list[Frame]:
    image = WALKWAY
    return [Frame(camera, i, i / 10, image, time.time()) for i in range(n)]


def anomalous_stream(n: int) -> list[FrameSample]:
    """Normal walkers; a fast one appears in frames 20-29; frames 30-34 are empty."""
    rng = np.random.default_rng(3)
    out = []
    for i in range(n):
        walkers = [Walker(1), Walker(2, speed=-1.0)]
        if 20 <= i < 30:
            walkers.append(Walker(3, speed=5.0))
        if 30 <= i < 35:
            walkers = []
        out.append(frame_sample(walkers, i / 10, rng, clip="a"))
    return out


def test_score_stage_through_runner(model: NormalityModel) -> None:
    streams = {"cam_a": anomalous_stream(40), "cam_b": normal_clip(77, 40, clip="b")}
    cfg = ScoringConfig(smoothing_frames=5)
    stage = ScoreStage({"cam_a": model, ANY_CAMERA: model}, cfg)
    packets, report = run_stages(
        [ReplayAttributes(streams), stage], [FramesSource(c, frames(c, 40)) for c in streams]
    )
    assert report.stage_errors == {} and len(packets) == 80
    assert stage._scorers == {}  # per-camera state freed at end of stream
    for camera in streams:
        mine = sorted((p for p in packets if p.frame.camera == camera), key=lambda p: p.frame.index)
        history: list[float] = []
        for p in mine:
            s = p.scores
            assert s is not None and len(s.track_id) == len(p.attributes)
            want = float(s.object_score.max()) if len(s.object_score) else 0.0
            assert s.frame_score == pytest.approx(want)
            history.append(s.frame_score)
            assert s.smoothed_score == pytest.approx(np.mean(history[-5:]))  # causal trailing mean
    a = sorted((p for p in packets if p.frame.camera == "cam_a"), key=lambda p: p.frame.index)
    fast = [p.scores.object_score[p.scores.track_id == 3][0] for p in a[22:30]]
    assert min(fast) > 3
    assert max(p.scores.frame_score for p in a[:20]) < max(fast)
    assert all(p.scores.frame_score == 0.0 for p in a[30:35])


def test_camera_without_model_scores_zero(model: NormalityModel) -> None:
    stage = ScoreStage({"other": model}, ScoringConfig(warmup_s=0))
    stream = {"cam_x": normal_clip(5, 10, clip="x")}
    packets, _ = run_stages([ReplayAttributes(stream), stage], [FramesSource("cam_x", frames("cam_x", 10))])
    assert all(p.scores is not None and p.scores.frame_score == 0.0 for p in packets)
    assert all(np.isnan(p.scores.attribute_scores).all() for p in packets)


def test_state_is_per_camera(model: NormalityModel) -> None:
    """Interleaving another camera does not change a camera's scores (track histories are separate)."""
    a, b = anomalous_stream(30), normal_clip(9, 30, clip="b")
    alone = Scorer(model, ScoringConfig())
    solo = [alone.score(s.attributes, s.scene_graph, s.pts, (240, 360)).attribute_scores for s in a]
    stage = ScoreStage({ANY_CAMERA: model}, ScoringConfig())
    for cam in ("a", "b"):
        stage.on_source_added(SourceEvent(cam, "added"))
    mixed = []
    for sa, sb in zip(a, b, strict=True):
        for cam, s in (("a", sa), ("b", sb)):
            p = FramePacket(Frame(cam, 0, s.pts, WALKWAY, 0.0))
            p.attributes, p.scene_graph = s.attributes, s.scene_graph
            stage.process(p)
            if cam == "a":
                mixed.append(p.scores.attribute_scores)
    for x, y in zip(solo, mixed, strict=True):
        np.testing.assert_array_equal(x, y)
    stage.on_source_eos(SourceEvent("a", "eos"))
    assert set(stage._scorers) == {"b"}


@pytest.mark.parametrize("combine", ["max", "top2_mean"])
def test_combination_is_calibrated_on_normal_data(model: NormalityModel, combine: str) -> None:
    obj = []
    for k in range(4):  # new clips: 12 walkers never seen in training
        scorer = Scorer(model, ScoringConfig(combine=combine))
        obj += [
            scorer.score(s.attributes, s.scene_graph, s.pts).object_score for s in normal_clip(31 + k, 60)
        ]
    obj = np.concatenate(obj)
    assert np.median(obj) < 1.0 and (obj > 3).mean() < 0.03


def test_wrong_grid_is_a_model_error(model: NormalityModel) -> None:
    s = normal_clip(1, 1)[0]
    bad = s.attributes.cell.copy()
    bad[0] = 999
    attrs = replace(s.attributes, cell=bad)
    with pytest.raises(ModelError, match="grid"):
        Scorer(model, ScoringConfig()).score(attrs, s.scene_graph, 0.0)


@pytest.mark.parametrize(("attributes", "message"), [([], "empty"), (["speed", "nope"], "unknown")])
def test_bad_ablation_config(model: NormalityModel, attributes: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ScoreStage({ANY_CAMERA: model}, ScoringConfig(attributes=attributes))


def test_camera_without_model_learns_online_then_scores() -> None:
    """Warm-up: 6 s of normal walking is learnt online, then a fast walker stands out."""
    rng = np.random.default_rng(2)
    stream = [s for k in range(3) for s in normal_clip(40 + k, 30)]  # 9 s of normal footage
    stream += [frame_sample([Walker(1), Walker(8, speed=5.0)], 9 + i / 10, rng) for i in range(20)]
    stream = [replace(s, pts=i / 10) for i, s in enumerate(stream)]
    models: dict[str, NormalityModel] = {}
    saved: list[NormalityModel] = []
    config = VigilConfig(scoring=ScoringConfig(warmup_s=6.0))
    learn = partial(learn_model, config, seed=0, how="warm-up")  # as the composition root wires it
    stage = ScoreStage(models, config.scoring, learn=learn, save=saved.append)
    packets, report = run_stages(
        [ReplayAttributes({"cam": stream}), stage], [FramesSource("cam", frames("cam", len(stream)))]
    )
    assert report.stage_errors == {}
    packets.sort(key=lambda p: p.frame.index)
    assert all(p.scores.frame_score == 0.0 for p in packets[:60])  # still learning
    assert "cam" in models and models["cam"].counts["frames"] == models["cam"].counts["frames_held_out"] == 61
    fast = [p.scores.object_score[p.scores.track_id == 8][0] for p in packets[-15:]]
    assert min(fast) > 3
    # learnt as `vigil fit` learns: a false-alert estimate over stretches of the warm-up, and kept once
    model = models["cam"]
    assert saved == [model]
    curve = model.false_alerts
    assert curve is not None and curve.folds == 3 and curve.clips == 3 and curve.frames == 61
    assert model.perception == perception_settings(config)
    p = model.provenance
    assert p is not None and (p.how, p.frames, p.clips, p.version) == ("warm-up", 61, 1, 1)
    assert p.seconds == pytest.approx(6.1)


def test_without_a_learner_a_camera_without_model_is_not_learnt() -> None:
    models: dict[str, NormalityModel] = {}
    stage = ScoreStage(models, ScoringConfig(warmup_s=0.5))
    stream = normal_clip(4, 20)
    packets, _ = run_stages(
        [ReplayAttributes({"cam": stream}), stage], [FramesSource("cam", frames("cam", 20))]
    )
    assert models == {} and all(p.scores.frame_score == 0.0 for p in packets)


@pytest.mark.parametrize("window", [1, 3, 5])
def test_track_smoother_damps_flicker_within_a_track_not_onset(window: int) -> None:
    from stages.score import TrackSmoother

    smooth = TrackSmoother(window)
    ids = np.array([7, 9, -1])
    steps = window + 3
    # track 7 is anomalous from its first frame; track 9 is normal with a one-frame spike at frame 2
    out = [smooth(ids, np.array([6.0, 6.0 if t == 2 else 0.0, 6.0])) for t in range(steps)]
    persistent = [o[0] for o in out]
    flicker = [o[1] for o in out]
    assert persistent == pytest.approx([6.0] * steps)  # scored at onset, not ramped up
    assert max(flicker) == pytest.approx(6.0 / min(window, 3))  # a spike is averaged with the track's past
    assert all(o[2] == pytest.approx(6.0) for o in out)  # untracked rows: their own frame's score


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([np.nan, 1.0, 3.0], [np.nan, 1.0, 2.0]),  # nothing measured yet: NaN
        ([2.0, np.nan, 4.0], [2.0, 2.0, 3.0]),  # a frame without a value keeps the others' mean
    ],
)
def test_track_smoother_leaves_unmeasured_frames_out(values: list[float], expected: list[float]) -> None:
    from stages.score import TrackSmoother

    smooth = TrackSmoother(5)
    out = [float(smooth(np.array([3]), np.array([v]))[0]) for v in values]
    np.testing.assert_allclose(out, expected)
