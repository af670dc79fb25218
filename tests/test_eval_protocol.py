"""The held-out normal training frames as extra normal clips, and the explanation-quality figures:
hand-made cases worked out by hand, and the bundled anomaly descriptions against the real labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import SourceError
from pipeline.evaluation.anomaly_reasons import (
    PRESET_FILES,
    PRESETS_DIR,
    ExpectedReasons,
    load_anomaly_reasons,
    reasons_file,
)
from pipeline.evaluation.explanations import alerts_of, anomalous_intervals, explanation_figures, on_region
from pipeline.evaluation.footage import LabelledFootage
from pipeline.evaluation.metrics import (
    GroundTruthRegions,
    frame_auc_macro,
    frame_auc_micro,
    frame_auc_with_normals,
)
from pipeline.evaluation.trace import ClipTrace
from pipeline.evaluation.training_normals import on_frame_grid, training_normals
from pipeline.packets import Event, Reason

A = np.array
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
ATTRS = ("speed", "pose", "class_in_place", "dwell")

# ---- frame AUC with extra normal clips -----------------------------------------------------------


@pytest.mark.parametrize(
    ("scores", "labels", "normals", "micro", "macro", "skipped"),
    [
        # normals {1, 0.5, 2.5} vs anomalous {2, 3}: 5 of 6 pairs right, micro and macro alike
        ([A([1.0, 2.0, 3.0])], [A([0, 1, 1])], [A([0.5, 2.5])], 5 / 6, 5 / 6, ()),
        # an all-anomalous clip gets an AUC once normal frames are appended: {5, 6} vs {1, 7} -> 2/4
        ([A([5.0, 6.0])], [A([1, 1])], [A([1.0]), A([7.0])], 0.5, 0.5, ()),
        # two clips: micro pools each normal frame once; macro appends them to each clip
        # clip 1: {0.2} + {0.5} vs {0.9}: 1; clip 2: {0.1} + {0.5} vs {0.3}: 1/2; micro: 5 of 6
        ([A([0.2, 0.9]), A([0.1, 0.3])], [A([0, 1]), A([0, 1])], [A([0.5])], 5 / 6, 0.75, ()),
        # an all-normal test clip stays one class: skipped
        ([A([0.1, 0.9]), A([0.4])], [A([0, 1]), A([0])], [A([0.2])], 1.0, 1.0, (1,)),
    ],
)
def test_frame_auc_with_normals(scores, labels, normals, micro, macro, skipped) -> None:
    r = frame_auc_with_normals(scores, labels, normals)
    assert r.micro == pytest.approx(micro)
    assert r.macro.mean == pytest.approx(macro)
    assert r.macro.skipped == skipped
    assert len(r.macro_padded.per_clip) == len(scores)


def test_frame_auc_without_normals_is_the_plain_figure() -> None:
    scores, labels = [A([0.1, 0.5, 0.4, 0.9]), A([0.3, 0.2])], [A([0, 0, 1, 1]), A([1, 0])]
    r = frame_auc_with_normals(scores, labels, [])
    assert r.micro == frame_auc_micro(scores, labels)
    assert r.macro == frame_auc_macro(scores, labels)


@pytest.mark.parametrize(
    ("pts", "scores", "series", "missing"),
    [
        ([0.0, 0.04, 0.08], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0], 0),  # every frame analysed
        ([0.0, 0.1, 0.2, 0.4], [1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 3.0, 4.0], 1),  # a gap holds the last
        (
            [0.4, 0.0, 0.2, 0.1],
            [4.0, 1.0, 3.0, 2.0],
            [1.0, 2.0, 3.0, 3.0, 4.0],
            1,
        ),  # any order in, time order
        ([5.0, 5.1, 5.2], [1.0, np.nan, 3.0], [1.0, 1.0, 3.0], 1),  # NaN: not scored; grid from the first pts
        ([], [], [], 0),
    ],
)
def test_held_out_frames_on_the_frame_grid(pts, scores, series, missing) -> None:
    out, n_missing = on_frame_grid(pts, scores)
    assert out.tolist() == pytest.approx(series)
    assert n_missing == missing


def test_training_normals_from_the_cross_validation_estimate() -> None:
    from stages.normality.crossval import FalseAlertEstimate, HeldOutClip, ScoredFrame

    def clip(name: str, scores: list[float]) -> HeldOutClip:
        return HeldOutClip(name, tuple(ScoredFrame(i * 0.04, s, ()) for i, s in enumerate(scores)))

    estimate = FalseAlertEstimate((clip("001_16", [4.0, 5.0]), clip("000_12", [1.0]), clip("002_x", [])), 2)
    clips = training_normals(estimate, {"000_12": "12", "001_16": "16"})
    assert [(c.name, c.scores.tolist()) for c in clips] == [("12", [1.0]), ("16", [4.0, 5.0])]
    assert training_normals(None, {}) == ()


# ---- alerts, intervals, reasons ------------------------------------------------------------------


def event(eid: str, kind: str, camera: str, start: int, end: int, top: str | None) -> Event:
    reasons = () if top is None else (Reason(top, "", "", 3.0, ""), Reason("size", "", "", 1.0, ""))
    return Event(
        eid,
        kind,
        camera,
        start * 0.1,
        end * 0.1,
        start,
        end,
        1,
        "person",
        (0, 0, 1, 1),
        (),
        3.0,
        3.0,
        reasons,
    )  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("labels", "runs"),
    [
        ([0, 1, 1, 0, 1], [(1, 2), (4, 4)]),
        ([0, 0, 0], []),
        ([1, 1, 1], [(0, 2)]),
        ([], []),
    ],
)
def test_anomalous_intervals(labels, runs) -> None:
    assert [(i.start_frame, i.end_frame) for i in anomalous_intervals("c", A(labels, bool))] == runs


def test_an_alert_is_its_messages_top_reason_at_the_peak() -> None:
    alerts = alerts_of(
        [
            event("a", "new", "c", 3, 5, "dwell"),
            event("b", "new", "d", 0, 2, None),
            event("a", "update", "c", 3, 8, "pose"),
            event("a", "end", "c", 3, 7, "pose"),
        ]
    )
    assert [(a.id, a.clip, a.start_frame, a.end_frame, a.opened_frame, a.top_reason) for a in alerts] == [
        ("a", "c", 3, 8, 5, "pose"),
        ("b", "d", 0, 2, 2, "none"),
    ]


@pytest.mark.parametrize(
    ("span", "true"),
    [
        ((0, 1), False),  # before the anomaly
        ((1, 2), True),  # its last frame touches the anomaly
        ((4, 6), True),  # inside
        ((7, 9), False),  # after it
        ((8, 20), False),  # past the labels: normal
    ],
)
def test_true_alert_is_any_anomalous_frame_in_its_span(span: tuple[int, int], true: bool) -> None:
    labels = {"c": A([0, 0, 1, 1, 1, 1, 1, 0, 0], bool)}
    figures = explanation_figures(labels, [event("a", "end", "c", *span, "speed")])
    assert (figures.true_alerts, figures.false_alerts) == (int(true), int(not true))
    assert figures.intervals[0].hit is true


def test_explanation_figures_per_clip_and_reasons(tmp_path: Path) -> None:
    labels = {"c": A([0, 1, 1, 0, 0, 1, 1, 0], bool), "d": A([0, 0, 0, 0], bool)}
    events = [
        event("t1", "new", "c", 1, 2, "speed"),  # true, right
        event("t2", "new", "c", 5, 6, "dwell"),  # true, wrong
        event("f1", "new", "c", 3, 4, "dwell"),  # false
        event("f2", "new", "d", 0, 3, "size"),  # false
        event("x", "new", "elsewhere", 0, 3, "size"),  # not a test clip: ignored
    ]
    path = tmp_path / "r.json"
    path.write_text(
        json.dumps(
            {
                "source": "hand-made",
                "clips": {
                    "c": [
                        {"start_frame": 1, "end_frame": 2, "reasons": ["speed"]},
                        {"start_frame": 5, "end_frame": 6, "reasons": ["pose"], "what": "a dance"},
                    ]
                },
            }
        )
    )
    f = explanation_figures(labels, events, load_anomaly_reasons(path, ATTRS), lambda a: a.id == "t1")
    assert (f.alerts, f.true_alerts, f.false_alerts) == (4, 2, 2)
    assert (f.true_on_region, f.true_off_region_by_top_reason) == (1, {"dwell": 1})
    assert f.false_by_top_reason == {"dwell": 1, "size": 1}
    assert f.true_by_top_reason == {"c": {"dwell": 1, "speed": 1}}
    assert [(i.start_frame, i.end_frame, i.hit, i.first_alert_frame) for i in f.intervals] == [
        (1, 2, True, 2),
        (5, 6, True, 6),
    ]
    assert f.reasons is not None
    assert (f.reasons.described, f.reasons.right, f.reasons.share_right) == (2, 1, 0.5)
    assert f.reasons.wrong_by_top_reason == {"dwell": 1}
    assert (f.reasons.described_on_region, f.reasons.right_on_region) == (1, 1)
    unlocated = explanation_figures(labels, events)  # no pixel masks: no region split, no reasons
    assert unlocated.true_on_region is None and unlocated.reasons is None


REGIONS = GroundTruthRegions(
    boxes=(np.zeros((0, 4)), A([[0.0, 0.0, 10.0, 10.0]]), A([[50.0, 50.0, 60.0, 60.0]])),
    track=(np.zeros(0, np.int64), A([0]), A([0])),
)


@pytest.mark.parametrize(
    ("boxes", "on"),
    [
        ([(1, A([0.0, 0.0, 10.0, 10.0]))], True),
        ([(1, A([5.0, 0.0, 15.0, 10.0]))], True),  # IoU 1/3
        ([(1, A([9.0, 0.0, 19.0, 10.0]))], False),  # IoU 1/19 < 0.1
        ([(0, A([0.0, 0.0, 10.0, 10.0]))], False),  # no region in that frame
        ([(2, A([0.0, 0.0, 10.0, 10.0])), (2, A([50.0, 50.0, 60.0, 60.0]))], True),
        ([(7, A([0.0, 0.0, 10.0, 10.0]))], False),  # past the clip
        ([], False),
    ],
)
def test_an_alert_on_the_region_is_its_box_on_a_ground_truth_region(boxes, on: bool) -> None:
    assert on_region(boxes, REGIONS) is on


def test_trace_keeps_each_tracks_boxes() -> None:
    trace = ClipTrace(
        boxes={0: A([[0.0, 0, 1, 1], [2.0, 2, 3, 3]]), 2: A([[4.0, 4, 5, 5]])},
        track_ids={0: A([7, 8]), 2: A([8])},
    )
    assert [(t, b.tolist()) for t, b in trace.track_boxes(8, 0, 5)] == [(0, [2, 2, 3, 3]), (2, [4, 4, 5, 5])]
    assert trace.track_boxes(8, 1, 1) == [] and trace.track_boxes(9, 0, 5) == []


# ---- the anomaly_reasons file --------------------------------------------------------------------


def test_reasons_file_parses(tmp_path: Path) -> None:
    path = tmp_path / "anomaly_reasons.json"
    entry = {"start_frame": 3, "end_frame": 9, "reasons": ["speed", "pose"], "what": "running"}
    path.write_text(json.dumps({"source": "README", "clips": {"21": [entry]}}))
    reasons = load_anomaly_reasons(path, ATTRS)
    assert reasons.source == "README"
    assert reasons.clips["21"] == (ExpectedReasons(3, 9, frozenset({"speed", "pose"}), "running"),)
    assert reasons.expected("21", 0, 3) == {"speed", "pose"}
    assert reasons.expected("21", 10, 12) is None and reasons.expected("17", 0, 99) is None
    reasons.check_lengths({"21": 10, "other": 1})
    with pytest.raises(
        SourceError, match=r"anomaly_reasons.json: clips.21\[0\]: end_frame 9 past the clip's 9"
    ):
        reasons.check_lengths({"21": 9})


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", r"cannot read anomaly reasons"),
        ('["17"]', r'expected an object with "clips"'),
        ('{"clips": {}, "extra": 1}', r"unknown keys extra"),
        ('{"clips": {"17": {}}}', r"clips.17: expected a list"),
        ('{"clips": {"17": [3]}}', r"clips.17\[0\]: expected an object"),
        ('{"clips": {"17": [{"start_frame": 0, "reasons": ["pose"]}]}}', r"clips.17\[0\]: expected keys"),
        (
            '{"clips": {"17": [{"start_frame": 5, "end_frame": 2, "reasons": ["pose"]}]}}',
            r"end_frame 2 < start",
        ),
        ('{"clips": {"17": [{"start_frame": -1, "end_frame": 2, "reasons": ["pose"]}]}}', r"whole frame"),
        ('{"clips": {"17": [{"start_frame": 0.5, "end_frame": 2, "reasons": ["pose"]}]}}', r"whole frame"),
        ('{"clips": {"17": [{"start_frame": 0, "end_frame": 2, "reasons": []}]}}', r"non-empty list"),
        (
            '{"clips": {"21": [{"start_frame": 0, "end_frame": 2, "reasons": ["pose"]}, '
            '{"start_frame": 0, "end_frame": 2, "reasons": ["dancing"]}]}}',
            r"clips.21\[1\]: unknown attributes dancing",
        ),
    ],
)
def test_bad_reasons_file_is_one_line_naming_file_and_entry(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "anomaly_reasons.json"
    path.write_text(content)
    with pytest.raises(SourceError, match=message) as info:
        load_anomaly_reasons(path, ATTRS)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_which_reasons_file(tmp_path: Path) -> None:
    given = tmp_path / "mine.json"
    assert reasons_file(tmp_path, "avenue", given) == given
    assert reasons_file(tmp_path, "avenue", None) == PRESETS_DIR / PRESET_FILES["avenue"]
    assert reasons_file(tmp_path, "custom", None) is None
    (tmp_path / "anomaly_reasons.json").write_text("{}")
    assert reasons_file(tmp_path, "avenue", None) == tmp_path / "anomaly_reasons.json"


@pytest.mark.parametrize(("folder", "preset"), [("avenue_dev", "avenue"), ("ucsd_ped2", "ped2")])
def test_bundled_descriptions_cover_the_labelled_anomalies(folder: str, preset: str) -> None:
    """Each preset parses against the real attribute names, and its spans are the anomalous runs of
    the real frame labels, every one described."""
    from stages.normality import ATTRIBUTES

    root = SHARED / folder
    if not root.exists():
        pytest.skip(f"{root} not here")
    reasons = load_anomaly_reasons(PRESETS_DIR / PRESET_FILES[preset], ATTRIBUTES)
    test = LabelledFootage.open(root, preset).test_clips()
    reasons.check_lengths({c.name: len(c.labels) for c in test})
    for c in test:
        runs = [(i.start_frame, i.end_frame) for i in anomalous_intervals(c.name, c.labels)]
        assert [(e.start_frame, e.end_frame) for e in reasons.clips[c.name]] == runs, c.name
