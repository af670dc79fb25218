"""AttributesStage: scale-free kinematics from tracks, flow inside boxes, blobs, pose/appearance rows."""

from __future__ import annotations

import time

import numpy as np
import pytest

from pipeline.config import AttributesConfig
from pipeline.errors import PacketError
from pipeline.packets import COCO_KEYPOINTS, Detections, Embeddings, FlowField, Frame, ObjectAttributes, Poses
from stages.attributes import POSE_DIM, AttributeExtractor, magnitude_edges, motion_histogram
from stages.blobs import BlobIds, find_blobs
from stages.flow import box_flow
from stages.track_history import TrackHistory

NAMES = ("person", "bicycle")


def frame(index: int, pts: float, size: tuple[int, int] = (240, 360), camera: str = "cam") -> Frame:
    return Frame(camera, index, pts, np.zeros((*size, 3), np.uint8), time.time())


def dets(boxes: list[list[float]], ids: list[int], cls: list[int] | None = None) -> Detections:
    n = len(boxes)
    return Detections(
        xyxy=np.array(boxes, np.float32).reshape(n, 4),
        class_id=np.array(cls if cls is not None else [0] * n, np.int32),
        confidence=np.full(n, 0.9, np.float32),
        track_id=np.array(ids, np.int64),
        class_names=NAMES,
    )


def no_flow(size: tuple[int, int] = (240, 360), valid: bool = True, dt: float = 0.1) -> FlowField:
    return FlowField(np.zeros((*size, 2), np.float32), dt=dt, scale=1.0, valid=valid)


def run_box(
    extractor: AttributeExtractor,
    boxes: list[list[float]],
    times: list[float],
    size: tuple[int, int] = (240, 360),
) -> ObjectAttributes:
    out = None
    for i, (box, t) in enumerate(zip(boxes, times, strict=True)):
        out = extractor(frame(i, t, size), dets([box], [7]), no_flow(size))
    assert out is not None
    return out


def moving_box(
    t: float, scale: float = 1.0, vx: float = 30.0, h: float = 40.0, grow: float = 0.0
) -> list[float]:
    """A box whose bottom centre moves at `vx` px/s; `grow` multiplies its height by exp(grow * t)."""
    hh = h * np.exp(grow * t)
    x, y = 50 + vx * t, 200.0
    return [scale * (x - hh / 4), scale * (y - hh), scale * (x + hh / 4), scale * y]


@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("scale", [0.5, 1.0, 2.0])
def test_velocity_is_invariant_to_stride_and_image_scale(stride: int, scale: float) -> None:
    times = [i / 10 for i in range(0, 30, stride)]
    size = (round(240 * scale), round(360 * scale))
    a = run_box(AttributeExtractor(), [moving_box(t, scale) for t in times], times, size)
    # 30 px/s over a 40 px box = 0.75 box-heights per second, to the right
    assert a.velocity[0] == pytest.approx([0.75, 0.0], abs=0.01)
    assert a.speed[0] == pytest.approx(0.75, abs=0.01)
    assert a.direction[0] == pytest.approx(0.0, abs=0.01)
    assert a.height[0] == pytest.approx(40 * scale / size[0], rel=1e-3)
    assert a.ground[0] == pytest.approx(
        [(50 + 30 * times[-1]) * scale / size[1], 200 * scale / size[0]], rel=1e-3
    )


@pytest.mark.parametrize(("grow", "sign"), [(0.5, 1), (-0.5, -1), (0.0, 0)])
def test_scale_rate_sign(grow: float, sign: int) -> None:
    times = [i / 10 for i in range(8)]
    a = run_box(AttributeExtractor(), [moving_box(t, vx=0.0, grow=grow) for t in times], times)
    assert a.scale_rate[0] == pytest.approx(grow, abs=0.02)
    assert np.sign(round(float(a.scale_rate[0]), 3)) == sign


@pytest.mark.parametrize(
    ("vx", "min_dwell", "max_dwell"), [(0.0, 2.8, 3.0), (2.0, 2.8, 3.0), (60.0, 0.0, 0.75)]
)
def test_dwell_grows_for_a_standing_object(vx: float, min_dwell: float, max_dwell: float) -> None:
    times = [i / 10 for i in range(30)]
    a = run_box(AttributeExtractor(), [moving_box(t, vx=vx) for t in times], times)
    assert min_dwell <= a.dwell[0] <= max_dwell
    assert a.age[0] == 30


def test_first_sighting_has_no_kinematics_and_untracked_has_no_history() -> None:
    ex = AttributeExtractor()
    a = ex(frame(0, 0.0), dets([[10, 10, 20, 50], [100, 10, 110, 50]], [3, -1]), no_flow(valid=False))
    assert np.isnan(a.velocity).all() and np.isnan(a.speed).all() and np.isnan(a.scale_rate).all()
    assert np.isnan(a.flow_speed).all() and np.isnan(a.motion_hist).all()  # invalid flow: unknown
    b = ex(frame(1, 0.1), dets([[12, 10, 22, 50], [102, 10, 112, 50]], [3, -1]), no_flow())
    assert np.isfinite(b.velocity[0]).all() and np.isnan(b.velocity[1]).all()
    assert b.age.tolist() == [2, 1]


def test_clock_going_back_restarts_a_track_and_a_repeat_replaces() -> None:
    hist = TrackHistory(velocity_window=3, velocity_window_s=0.2)
    for i in range(3):
        hist.update(1, i / 10, (10.0 * i, 0.0, 10.0 * i + 5, 10.0))
    assert hist.update(1, 0.2, (25.0, 0.0, 30.0, 10.0)).age == 3  # same time again: replaces the last sample
    restarted = hist.update(1, 0.0, (0.0, 0.0, 5.0, 10.0))
    assert restarted.age == 1 and np.isnan(restarted.velocity).all()


@pytest.mark.parametrize(("fps", "boxes"), [(10.0, 5), (25.0, 11), (30.0, 13), (2.0, 5)])
def test_velocity_is_fitted_over_the_same_time_at_any_frame_rate(fps: float, boxes: int) -> None:
    """0.4 s of boxes, at least five: a walker's speed means the same on a 10 and a 25 fps camera."""
    hist = TrackHistory(velocity_window=5, velocity_window_s=0.4)
    for i in range(40):
        t = i / fps
        jitter = 3.0 * (-1) ** i  # px: the box's edges jump back and forth every frame
        k = hist.update(1, t, (100.0 + 40 * t + jitter, 50.0, 110.0 + 40 * t + jitter, 90.0))
    assert hist._window(hist._tracks[1].t) == boxes
    # over the window the jitter averages out: 40 px/s over a 40 px box
    assert k.velocity[0] == pytest.approx(1.0, abs=0.35)


def test_tracks_expire() -> None:
    hist = TrackHistory(velocity_window=3, velocity_window_s=0.2, expiry_s=1.0)
    hist.update(1, 0.0, (0.0, 0.0, 5.0, 10.0))
    hist.update(2, 1.5, (0.0, 0.0, 5.0, 10.0))
    hist.expire(1.5)
    assert 1 not in hist and 2 in hist and len(hist) == 1


def _walk(velocity_from: str, boxes: list[tuple[float, float, float, float]]) -> tuple[float, float]:
    hist = TrackHistory(velocity_window=5, velocity_from=velocity_from)
    for i, box in enumerate(boxes):
        k = hist.update(7, i / 10, box)
    return k.velocity


@pytest.mark.parametrize("velocity_from", ["edges", "ground"])
def test_a_translating_box_moves_at_its_speed_either_way(velocity_from: str) -> None:
    boxes = [(100.0 + 4 * i, 50.0 - 2 * i, 110.0 + 4 * i, 90.0 - 2 * i) for i in range(5)]  # 40 px tall
    assert np.allclose(_walk(velocity_from, boxes), (1.0, -0.5))  # 40 / 20 px/s over 40 px


@pytest.mark.parametrize(
    ("velocity_from", "moving"),
    [("edges", False), ("ground", True)],
)
def test_a_box_whose_bottom_edge_jumps_moves_only_by_the_ground_point(
    velocity_from: str, moving: bool
) -> None:
    # a still walker whose legs other people hide and reveal: the bottom edge jumps, the top stays
    bottoms = [90.0, 90.0, 76.0, 76.0, 62.0]
    boxes = [(100.0, 50.0, 110.0, b) for b in bottoms]
    vx, vy = _walk(velocity_from, boxes)
    assert vx == 0.0 and (abs(vy) > 1.0) is moving


def test_edges_take_the_slower_edge_and_zero_when_they_disagree() -> None:
    growing = [(100.0 - i, 50.0, 110.0 + 3 * i, 90.0) for i in range(5)]  # both edges outwards
    assert _walk("edges", growing)[0] == 0.0  # the edges move apart: the box only widens
    sliding = [(100.0 + i, 50.0, 110.0 + 3 * i, 90.0) for i in range(5)]  # both right, 10 and 30 px/s
    assert np.isclose(_walk("edges", sliding)[0], 10.0 / 40.0)


def test_flow_speed_and_motion_histogram_from_uniform_flow() -> None:
    flow = np.zeros((240, 360, 2), np.float32)
    flow[100:140, 100:120] = (4.0, 0.0)  # 4 px per dt=0.1 s to the right, over the whole box
    ex = AttributeExtractor(AttributesConfig(blob_box_margin=0.5))
    a = ex(frame(0, 0.0), dets([[100, 100, 120, 140]], [1]), FlowField(flow, dt=0.1, scale=1.0))
    assert a.flow_speed[0] == pytest.approx(1.0)  # 40 px/s over 40 px
    hist = a.motion_hist[0].reshape(4, 8)
    assert hist.sum() == pytest.approx(1.0)
    assert hist[2, 0] == pytest.approx(1.0)  # magnitude bin [1, 4) box-heights/s, orientation 0 (right)
    assert not a.is_blob.any()


@pytest.mark.parametrize(
    ("vector", "ori_bin"), [((1.0, 0.0), 0), ((0.0, 1.0), 2), ((-1.0, 0.0), 4), ((0.0, -1.0), 6)]
)
def test_motion_histogram_orientation(vector: tuple[float, float], ori_bin: int) -> None:
    vectors = np.tile(np.array(vector, np.float32) * 10, (5, 1))
    hist = motion_histogram(vectors, box_height=20.0, dt=0.1, bins=(4, 8)).reshape(4, 8)
    assert hist[:, ori_bin].sum() == pytest.approx(1.0)
    assert magnitude_edges(4).tolist() == [0.0, 0.25, 1.0, 4.0, np.inf]


def patch_flow(y: int, x: int, size: int = 30, mag: float = 3.0) -> FlowField:
    flow = np.zeros((240, 360, 2), np.float32)
    flow[y : y + size, x : x + size] = (0.0, mag)  # falling 3 px per frame
    return FlowField(flow, dt=0.1, scale=1.0)


def test_blob_for_a_moving_patch_with_no_box() -> None:
    ex = AttributeExtractor()
    a = ex(frame(0, 0.0), dets([[10, 10, 30, 60]], [1]), patch_flow(100, 200))
    assert a.is_blob.tolist() == [False, True]
    assert a.class_id[1] == -1 and a.track_id[1] <= -2 and a.name_of(1) == "moving region"
    assert a.xyxy[1] == pytest.approx([200, 100, 230, 130], abs=1.5)
    b = ex(frame(1, 0.1), dets([[10, 10, 30, 60]], [1]), patch_flow(103, 200))
    assert b.track_id[1] == a.track_id[1]  # the same falling thing keeps its id
    assert b.velocity[1][1] > 0  # and moves down


@pytest.mark.parametrize(
    "box",
    [[195, 95, 235, 135], [205, 105, 225, 125]],  # covering it, and inside it (margin covers the rest)
)
def test_no_blob_for_a_patch_explained_by_a_box(box: list[float]) -> None:
    a = AttributeExtractor()(frame(0, 0.0), dets([box], [1]), patch_flow(100, 200))
    assert not a.is_blob.any()


@pytest.mark.parametrize(("size", "mag", "found"), [(30, 3.0, True), (5, 3.0, False), (30, 0.5, False)])
def test_blob_thresholds(size: int, mag: float, found: bool) -> None:
    boxes = find_blobs(patch_flow(100, 200, size, mag), (240, 360), np.zeros((0, 4), np.float32), fps=10.0)
    assert (len(boxes) == 1) == found


def test_blob_threshold_is_per_source_frame_under_a_stride() -> None:
    # 3 px per dt = 0.2 s at 10 fps is 1.5 px per source frame, above the 1 px threshold; half of it is not
    flow = patch_flow(100, 200, 30, 3.0)
    strided = FlowField(flow.flow, dt=0.2, scale=1.0)
    assert len(find_blobs(strided, (240, 360), np.zeros((0, 4), np.float32), fps=10.0)) == 1
    slow = FlowField(flow.flow / 2, dt=0.2, scale=1.0)
    assert len(find_blobs(slow, (240, 360), np.zeros((0, 4), np.float32), fps=10.0)) == 0


def test_blob_ids_are_negative_and_stable() -> None:
    ids = BlobIds()
    first = ids.assign(np.array([[0, 0, 10, 10], [50, 50, 60, 60]], np.float32))
    second = ids.assign(np.array([[51, 51, 61, 61], [100, 100, 110, 110]], np.float32))
    assert first.tolist() == [-2, -3] and second.tolist() == [-3, -4]


def test_pose_and_appearance_rows() -> None:
    cfg = AttributesConfig(appearance_dim=8)
    kp = np.full((1, COCO_KEYPOINTS, 2), 0.5, np.float32)
    poses = Poses(np.array([1]), np.array([5]), kp, np.ones((1, COCO_KEYPOINTS), np.float32))
    vec = np.eye(8, dtype=np.float32)[:1]
    emb = Embeddings(np.array([0]), np.array([4]), vec)
    a = AttributeExtractor(cfg)(
        frame(0, 0.0), dets([[0, 0, 10, 30], [50, 0, 60, 30]], [4, 5]), no_flow(), poses, emb
    )
    assert a.pose.shape == (2, POSE_DIM) and a.appearance.shape == (2, 8)
    assert (
        np.isnan(a.pose[0]).all()
        and a.pose[1, :34] == pytest.approx(0.5)
        and a.pose[1, 34:] == pytest.approx(1)
    )
    assert a.appearance[0] == pytest.approx(vec[0]) and np.isnan(a.appearance[1]).all()


def test_without_pose_or_appearance_rows_are_nan_of_fixed_width() -> None:
    a = AttributeExtractor()(frame(0, 0.0), dets([[0, 0, 10, 30]], [4]), no_flow())
    assert a.pose.shape == (1, POSE_DIM) and a.appearance.shape == (1, AttributesConfig().appearance_dim)
    assert np.isnan(a.pose).all() and np.isnan(a.appearance).all()


@pytest.mark.parametrize("valid", [True, False])
def test_empty_frame(valid: bool) -> None:
    a = AttributeExtractor()(frame(0, 0.0), Detections.empty(NAMES), no_flow(valid=valid))
    assert len(a) == 0 and a.motion_hist.shape == (0, 32) and a.pose.shape == (0, POSE_DIM)


def test_wrong_inputs_are_packet_errors() -> None:
    ex = AttributeExtractor(AttributesConfig(appearance_dim=8))
    with pytest.raises(PacketError, match=r"Detections\.xyxy"):
        Detections(
            np.zeros((1, 3), np.float32), np.zeros(1, np.int32), np.ones(1, np.float32), np.zeros(1, np.int64)
        )
    with pytest.raises(PacketError, match="flow grid"):
        ex(frame(0, 0.0), dets([[0, 0, 10, 30]], [1]), no_flow(size=(480, 720)))
    emb = Embeddings(np.array([0]), np.array([1]), np.ones((1, 16), np.float32))
    with pytest.raises(PacketError, match="appearance_dim=8"):
        ex(frame(0, 0.0), dets([[0, 0, 10, 30]], [1]), no_flow(), appearance=emb)
    poses = Poses(
        np.array([3]),
        np.array([1]),
        np.zeros((1, COCO_KEYPOINTS, 2), np.float32),
        np.zeros((1, 17), np.float32),
    )
    with pytest.raises(PacketError, match="pose 0 refers to detection 3"):
        ex(frame(0, 0.0), dets([[0, 0, 10, 30]], [1]), no_flow(), poses=poses)


def test_camera_state_is_per_camera_and_freed() -> None:
    ex = AttributeExtractor()
    ex.add_camera("a")
    for cam in ("a", "b"):
        ex(frame(0, 0.0, camera=cam), dets([[0, 0, 10, 30]], [1]), no_flow())
    a = ex(frame(1, 0.1, camera="a"), dets([[3, 0, 13, 30]], [1]), no_flow())
    assert a.age[0] == 2 and a.speed[0] == pytest.approx(1.0)  # 3 px in 0.1 s over a 30 px box
    ex.drop_camera("a")
    assert ex.cameras == ("b",)


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_box_flow_reads_the_grid_under_the_box(scale: float) -> None:
    grid = np.zeros((round(240 * scale), round(360 * scale), 2), np.float32)
    r1, r2, c1, c2 = (round(v * scale) for v in (100, 140, 200, 220))
    grid[r1:r2, c1:c2] = (2.0, -1.0)
    vectors = box_flow(
        FlowField(grid, dt=0.1, scale=scale), (240, 360), np.array([200, 100, 220, 140], np.float32)
    )
    assert vectors.shape == ((r2 - r1) * (c2 - c1), 2) and (vectors == [2.0, -1.0]).all()
    assert (
        len(box_flow(FlowField(grid, 0.1, scale), (240, 360), np.array([400, 0, 420, 30], np.float32))) == 0
    )


@pytest.mark.parametrize(("y", "x"), [(100, 0), (100, 330), (0, 200), (210, 200)])
def test_blob_cut_by_the_frame_edge_is_left_out_unless_asked(y: int, x: int) -> None:
    """A region touching the border is someone walking into view; inside the picture it counts."""
    none = np.zeros((0, 4), np.float32)
    assert len(find_blobs(patch_flow(y, x), (240, 360), none, fps=10.0)) == 0
    assert len(find_blobs(patch_flow(y, x), (240, 360), none, fps=10.0, ignore_border=False)) == 1
    assert len(find_blobs(patch_flow(100, 200), (240, 360), none, fps=10.0)) == 1


def _flow_with(patches: list[tuple[int, int, int, int, tuple[float, float]]]) -> FlowField:
    """Flow grid (240 x 360) with rectangles (y1, y2, x1, x2) moving by the given (dx, dy) per dt."""
    grid = np.zeros((240, 360, 2), np.float32)
    for y1, y2, x1, x2, v in patches:
        grid[y1:y2, x1:x2] = v
    return FlowField(grid, dt=0.1, scale=1.0)


VAN = np.array([[100, 100, 200, 160]], np.float32)  # a 60 px tall detection moving right by 4 px per frame


@pytest.mark.parametrize(
    ("region", "velocity", "reach", "kept"),
    [
        ((172, 190, 110, 190), (4.0, 0.0), 0.5, False),  # smeared below the van, moving with it: spill
        ((172, 190, 110, 190), (3.0, 0.5), 0.5, False),  # within half the van's flow of it: spill
        ((172, 190, 110, 190), (-4.0, 0.0), 0.5, True),  # moving the other way: something else
        ((172, 190, 110, 190), (0.0, 4.0), 0.5, True),  # falling beside it: something else
        ((172, 190, 110, 190), (4.0, 0.0), 0.0, True),  # reach 0: the filter is off
        ((215, 235, 110, 190), (4.0, 0.0), 0.5, True),  # farther than half a van-height: another object
    ],
)
def test_flow_spill_of_a_moving_detection_is_no_blob(region, velocity, reach: float, kept: bool) -> None:
    flow = _flow_with([(100, 160, 100, 200, (4.0, 0.0)), (*region, velocity)])
    found = find_blobs(flow, (240, 360), VAN, fps=10.0, spill_reach=reach)
    assert (len(found) == 1) == kept


def test_a_still_detection_explains_no_moving_region_beside_it() -> None:
    flow = _flow_with([(172, 190, 110, 190, (4.0, 0.0))])  # the box itself does not move
    assert len(find_blobs(flow, (240, 360), VAN, fps=10.0, spill_reach=0.5)) == 1


@pytest.mark.parametrize("seed", range(6))
def test_regions_on_the_mask_rectangle_are_those_of_the_whole_grid(seed: int) -> None:
    """`_regions` opens and labels only the bounding rectangle of the mask's pixels: the same labels
    (in the same order) and stats as opening and labelling the whole grid."""
    import cv2

    from stages.blobs import _regions

    rng = np.random.default_rng(seed)
    mask = np.zeros((180, 320), np.uint8)
    y0, x0 = int(rng.integers(0, 90)), int(rng.integers(0, 160))  # odd and even corners
    h, w = int(rng.integers(30, 180 - y0)), int(rng.integers(30, 320 - x0))
    mask[y0 : y0 + h, x0 : x0 + w] = rng.random((h, w)) < 0.08  # speckle
    for _ in range(12):  # regions of all shapes, touching each other and the rectangle's edges at times
        y, x = int(rng.integers(y0, y0 + h)), int(rng.integers(x0, x0 + w))
        mask[y : min(y0 + h, y + int(rng.integers(1, 15))), x : min(x0 + w, x + int(rng.integers(1, 15)))] = 1
    opened = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    count, want_labels, want_stats, _ = cv2.connectedComponentsWithStats(opened, connectivity=8)
    labels, stats, (ox, oy) = _regions(mask)
    assert count > 3
    np.testing.assert_array_equal(stats[1:], want_stats[1:])
    np.testing.assert_array_equal(labels, want_labels[oy : oy + labels.shape[0], ox : ox + labels.shape[1]])
    assert (want_labels[opened == 0] == 0).all() and labels.max() == count - 1
