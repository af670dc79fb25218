"""Evaluation metrics on small hand-made cases whose answers are worked out by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import ConfigError, PacketError, SourceError
from pipeline.evaluation.benchmark import judged_attributes, result_name
from pipeline.evaluation.footage import LabelledFootage
from pipeline.evaluation.metrics import (
    GroundTruthRegions,
    box_iou,
    frame_auc_macro,
    frame_auc_macro_padded,
    frame_auc_micro,
    localisation,
    rbdc_tbdc,
    regions_from_masks,
    smooth_causal,
    smooth_centred,
)
from pipeline.evaluation.trace import ClipTrace

A = np.array


@pytest.mark.parametrize(
    ("scores", "labels", "expected"),
    [
        ([A([0.1, 0.2, 0.9, 0.8])], [A([0, 0, 1, 1])], 1.0),
        ([A([0.9, 0.8, 0.1, 0.2])], [A([0, 0, 1, 1])], 0.0),
        # 3 of 4 (positive, negative) pairs ordered right
        ([A([0.1, 0.5, 0.4, 0.9])], [A([0, 0, 1, 1])], 0.75),
        # micro: clip 2's scores are higher everywhere, so concatenation mixes them up
        ([A([0.1, 0.2]), A([0.5, 0.6])], [A([0, 1]), A([0, 1])], 0.75),
        # NaN scores rank lowest
        ([A([np.nan, 0.2, 0.9])], [A([0, 0, 1])], 1.0),
    ],
)
def test_frame_auc_micro(scores: list[np.ndarray], labels: list[np.ndarray], expected: float) -> None:
    assert frame_auc_micro(scores, labels) == pytest.approx(expected)


def test_frame_auc_macro_skips_single_class_clips() -> None:
    scores = [A([0.1, 0.2]), A([0.5, 0.6]), A([0.3, 0.1, 0.2]), A([0.9, 0.1])]
    labels = [A([0, 1]), A([0, 1]), A([1, 1, 1]), A([0, 1])]
    macro = frame_auc_macro(scores, labels)
    assert macro.skipped == (2,)
    assert macro.per_clip[:2] == (1.0, 1.0) and np.isnan(macro.per_clip[2]) and macro.per_clip[3] == 0.0
    assert macro.mean == pytest.approx(2 / 3)
    assert frame_auc_micro(scores, labels) != pytest.approx(macro.mean)


def test_frame_auc_all_single_class_is_nan() -> None:
    assert np.isnan(frame_auc_macro([A([1.0, 2.0])], [A([1, 1])]).mean)
    assert np.isnan(frame_auc_micro([A([1.0, 2.0])], [A([0, 0])]))


def test_frame_auc_rejects_mismatched_lengths() -> None:
    with pytest.raises(PacketError, match=r"scores shape \(3,\) != labels shape \(2,\)"):
        frame_auc_micro([A([1.0, 2.0, 3.0])], [A([0, 1])])


@pytest.mark.parametrize(
    ("k", "causal", "centred"),
    [
        (1, [1, 2, 6, 3], [1, 2, 6, 3]),
        (2, [1, 1.5, 4, 4.5], [1.5, 4, 4.5, 3]),
        (3, [1, 1.5, 3, 11 / 3], [1.5, 3, 11 / 3, 4.5]),
    ],
)
def test_smoothing(k: int, causal: list[float], centred: list[float]) -> None:
    x = A([1.0, 2.0, 6.0, 3.0])
    assert smooth_causal(x, k) == pytest.approx(causal)
    assert smooth_centred(x, k) == pytest.approx(centred)


def test_box_iou() -> None:
    iou = box_iou(A([[0, 0, 10, 10]]), A([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]]))
    assert iou == pytest.approx(A([[1.0, 50 / 150, 0.0]]))


def test_regions_and_tracks_from_masks() -> None:
    m = np.zeros((4, 20, 30), bool)
    m[0, 2:5, 2:6] = True  # object 1 ...
    m[1, 3:6, 3:7] = True  # ... moves and overlaps its previous self
    m[1, 10:15, 20:25] = True  # object 2 appears
    m[2, 11:16, 21:26] = True  # object 2 continues; object 1 gone
    m[3, 2:4, 2:4] = True  # a new object where 1 was two frames ago: a new track
    gt = regions_from_masks(m)
    assert [len(b) for b in gt.boxes] == [1, 2, 1, 1]
    assert gt.boxes[0].tolist() == [[2, 2, 6, 5]]
    assert gt.track[0][0] == gt.track[1][0]
    assert gt.track[1][1] == gt.track[2][0] != gt.track[1][0]
    assert gt.track[3][0] not in (gt.track[1][0], gt.track[1][1])
    assert gt.n_tracks == 3


def gt_one_track(n_frames: int, box: list[float]) -> GroundTruthRegions:
    return GroundTruthRegions(
        tuple(A([box], float) for _ in range(n_frames)), tuple(A([0]) for _ in range(n_frames))
    )


def test_rbdc_tbdc_perfect_detector() -> None:
    gt = gt_one_track(10, [10, 10, 20, 20])
    boxes = [[A([[10, 10, 20, 20]], float)] for _ in range(10)]
    scores = [[A([1.0])] for _ in range(10)]
    res = rbdc_tbdc([boxes], [scores], [gt])
    assert res.rbdc.area == pytest.approx(1.0) and res.tbdc.area == pytest.approx(1.0)
    assert (res.n_regions, res.n_tracks, res.n_frames) == (10, 1, 10)


def test_rbdc_tbdc_hand_computed() -> None:
    # 4 frames, one GT track of 4 regions; detections hit regions in frames 0 and 1 (scores 0.9, 0.5);
    # one false positive per frame in frames 2 and 3 (scores 0.7, 0.3).
    gt = gt_one_track(4, [0, 0, 10, 10])
    hit, miss = A([[0, 0, 10, 10]], float), A([[50, 50, 60, 60]], float)
    boxes = [[hit], [hit], [miss], [miss]]
    scores = [[A([0.9])], [A([0.5])], [A([0.7])], [A([0.3])]]
    res = rbdc_tbdc([boxes], [scores], [gt], beta=0.1, alpha=0.5)
    # thresholds 0.9, 0.7, 0.5, 0.3 -> (FPR, RBDR): (0, .25), (.25, .25), (.25, .5), (.5, .5); flat to 1
    assert res.rbdc.fpr.tolist() == pytest.approx([0, 0, 0.25, 0.25, 0.5, 1.0])
    assert res.rbdc.rate.tolist() == pytest.approx([0, 0.25, 0.25, 0.5, 0.5, 0.5])
    assert res.rbdc.area == pytest.approx(0.25 * 0.25 + 0.25 * 0.5 + 0.5 * 0.5)
    # track needs ceil(0.5 * 4) = 2 detected regions: reached at threshold 0.5 (FPR .25)
    assert res.tbdc.area == pytest.approx(0.75)


def test_rbdc_low_iou_is_a_false_positive() -> None:
    gt = gt_one_track(2, [0, 0, 10, 10])
    near = A([[0, 0, 10, 100]], float)  # IoU 0.1 exactly: counts as a hit
    far = A([[0, 0, 10, 101]], float)  # IoU just under 0.1: a false positive
    res_near = rbdc_tbdc([[near, near]], [[A([1.0]), A([1.0])]], [gt])
    res_far = rbdc_tbdc([[far, far]], [[A([1.0]), A([1.0])]], [gt])
    assert res_near.rbdc.area == pytest.approx(1.0)
    assert res_far.rbdc.area == 0.0 and res_far.rbdc.fpr.tolist()[1] == pytest.approx(1.0)


def test_rbdc_fpr_beyond_one_is_cut() -> None:
    # 1 frame, 3 false positives scored above the only hit: FPR reaches 3 before any detection
    gt = gt_one_track(1, [0, 0, 10, 10])
    boxes = [[A([[0, 0, 10, 10], [50, 50, 60, 60], [70, 70, 80, 80], [90, 90, 99, 99]], float)]]
    scores = [[A([0.1, 0.9, 0.8, 0.7])]]
    assert rbdc_tbdc(boxes, scores, [gt]).rbdc.area == 0.0


def test_localisation() -> None:
    gt = gt_one_track(3, [0, 0, 10, 10])
    boxes = [A([[0, 0, 10, 10], [50, 50, 60, 60]], float)] * 3
    scores = [A([0.9, 0.1]), A([0.1, 0.9]), A([0.5, 0.2])]
    loc = localisation([boxes], [scores], [gt], [A([1, 1, 0])])
    assert (loc.hits, loc.evaluated, loc.no_box) == (1, 2, 0) and loc.share == 0.5
    empty = localisation([[np.zeros((0, 4))]], [[np.zeros(0)]], [gt_one_track(1, [0, 0, 5, 5])], [A([1])])
    assert (empty.hits, empty.evaluated, empty.no_box) == (0, 1, 1)


def test_ped2_dataset(ped2: Path) -> None:
    data = LabelledFootage.open(ped2)
    test = data.test_clips(["Test001", "Test003"])
    assert [c.name for c in test] == ["Test001", "Test003"]
    assert test[0].labels is not None and test[0].labels.shape == (180,) and test[0].labels.dtype == bool
    masks = data.masks("Test003")
    assert masks.shape == (150, 240, 360)
    gt = regions_from_masks(masks)
    labelled = test[1].labels
    assert labelled is not None
    assert [len(b) > 0 for b in gt.boxes] == labelled.tolist()
    assert len(data.train_clips()) >= 15
    with pytest.raises(SourceError, match="unknown clips Test999"):
        data.test_clips(["Test999"])
    with pytest.raises(SourceError, match="missing"):
        LabelledFootage.open(ped2 / "nope")


# ---- the `vigil eval` driver ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("only", "ablate", "name"),
    [
        (None, None, "ped2.json"),
        (["speed", "pose"], None, "ped2-only-speed+pose.json"),
        (None, ["appearance"], "ped2-minus-appearance.json"),
    ],
)
def test_result_name(only: list[str] | None, ablate: list[str] | None, name: str) -> None:
    assert result_name("ped2", only, ablate) == name


def test_judged_attributes() -> None:
    from stages.normality import ATTRIBUTES

    assert judged_attributes(None, None) is None
    assert judged_attributes(["speed"], None) == ["speed"]
    assert judged_attributes(None, ["speed"]) == [a for a in ATTRIBUTES if a != "speed"]
    with pytest.raises(ConfigError, match="unknown attributes warp"):
        judged_attributes(["warp"], None)
    with pytest.raises(ConfigError, match="removes every attribute"):
        judged_attributes(None, list(ATTRIBUTES))


def test_trace_fills_missing_frames_causally() -> None:
    trace = ClipTrace(frame_score={0: 1.0, 1: 3.0, 3: 2.0, 4: float("nan")})
    series, missing = trace.series(6)
    assert series.tolist() == [1.0, 3.0, 3.0, 2.0, 2.0, 2.0] and missing == 3


def test_limited_source_stops_after_n_frames(ped2: Path) -> None:
    from pipeline.harness import run_stages
    from pipeline.sources.file import FileSource
    from pipeline.sources.limited import LimitedSource

    source = LimitedSource(FileSource("Test002", ped2 / "test" / "Test002.mp4"), 7)
    _, report = run_stages([], [source])
    assert report.frames_decoded == {"Test002": 7} and not report.source_errors


@pytest.mark.slow
def test_vigil_eval_end_to_end(ped2: Path, tmp_path: Path) -> None:
    """Fit on two short training clips, replay one test clip: every figure is in the JSON."""
    import json

    from conftest import DETECTOR

    from pipeline.cli import main

    config = tmp_path / "config.yaml"  # detector only: pose and appearance have their own tests
    config.write_text(
        f"detector:\n  model: {DETECTOR}\npose:\n  enabled: false\nappearance:\n  enabled: false\n"
        "http:\n  enabled: false\n"
    )
    out = tmp_path / "r.json"
    argv = ["eval", "--data", str(ped2), "--clips", "Test003", "--train-clips", "Train001,Train002"]
    argv += ["--max-frames", "25", "--out", str(out), "-c", str(config)]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["replay"]["frames"] == 25 and result["replay"]["fps"] > 0
    assert set(result["frame_auc"]) == {"raw", "causal_10", "centred_10"}
    assert result["per_clip"]["Test003"]["frames"] == 25 and result["frames_without_score"] == 0
    assert 0 <= result["rbdc"] <= 1 and 0 <= result["tbdc"] <= 1
    assert result["gt_regions"] > 0 and Path(result["plot"]).stat().st_size > 0
    ev = result["per_clip"]["Test003"]["events"]
    assert ev["new"] == ev["end"]  # every event opened is ended, the last ones at end of stream
    lines = Path(result["events_file"]).read_text().splitlines()
    assert len(lines) == ev["new"] + ev["update"] + ev["end"]


@pytest.mark.parametrize("smooth", [smooth_causal, smooth_centred])
def test_smoothing_keeps_equal_windows_equal(smooth) -> None:
    """A running sum's rounding depends on what came before: equal windows must still tie exactly."""
    rng = np.random.default_rng(0)
    block = rng.random(5) * 1e3
    x = np.concatenate([block, rng.random(200) * 1e6, block, rng.random(50), block])
    out = smooth(x, 5)
    # the windows that cover exactly one copy of the block (causal: ends at its last value)
    ends = [4, 209, 264] if smooth is smooth_causal else [2, 207, 262]
    assert out[ends[0]] == out[ends[1]] == out[ends[2]]


@pytest.mark.parametrize(
    ("scores", "labels", "expected"),
    [
        ([A([0.0, 1.0, 2.0])], [A([0, 0, 1])], 1.0),  # perfect: padding keeps it perfect
        ([A([5.0, 5.0])], [A([1, 1])], 2 / 3),  # one class, constant: ties with the normal pad
        ([A([2.0, 1.0])], [A([0, 1])], 0.5),  # inverted pair: 2 of 4 pairs ordered after padding
    ],
)
def test_frame_auc_macro_padded(scores, labels, expected: float) -> None:
    macro = frame_auc_macro_padded(scores, labels)
    assert macro.mean == pytest.approx(expected)
    assert macro.skipped == ()
