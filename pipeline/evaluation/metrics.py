"""Evaluation metrics for video anomaly detection (pure numpy / scikit-learn).

Frame level: ROC AUC micro (all test frames concatenated) and macro (mean of per-clip AUCs).
Region and track level (Ramachandra, Jones & Vatsavai, "Street Scene", WACV 2020): RBDC and TBDC.
Localisation: how often the top-scored box of an anomalous frame lies on the anomaly.
Every function says exactly what it computes; none of them looks at anything but its arguments.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import networkx as nx
import numpy as np

from pipeline.boxes import box_iou
from pipeline.errors import PacketError

# --------------------------------------------------------------------------------------------------
# frame level


def _check_pairs(scores: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> None:
    if len(scores) != len(labels):
        raise PacketError(f"metrics: {len(scores)} score arrays but {len(labels)} label arrays")
    for i, (s, y) in enumerate(zip(scores, labels, strict=True)):
        if np.shape(s) != np.shape(y) or np.ndim(s) != 1:
            raise PacketError(f"metrics: clip {i}: scores shape {np.shape(s)} != labels shape {np.shape(y)}")


def frame_auc_micro(scores: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> float:
    """ROC AUC over all frames of all clips concatenated (scores must be comparable across clips).

    NaN scores count as the lowest score. Returns NaN when the concatenation has only one class.
    """
    from sklearn.metrics import roc_auc_score  # imported here: it costs seconds at CLI start-up

    _check_pairs(scores, labels)
    s = np.concatenate([np.asarray(x, np.float64) for x in scores])
    y = np.concatenate([np.asarray(x) for x in labels]).astype(bool)
    if y.all() or not y.any():
        return float("nan")
    finite = np.isfinite(s)
    lowest = float(s[finite].min()) - 1.0 if finite.any() else 0.0
    return float(roc_auc_score(y, np.where(np.isnan(s), lowest, s)))


@dataclass(frozen=True)
class MacroAUC:
    """Mean of per-clip AUCs over the clips that have both classes; the others are listed as skipped."""

    mean: float
    per_clip: tuple[float, ...]  # NaN for skipped clips, in input order
    skipped: tuple[int, ...]  # indices of clips with a single class (no AUC defined)


def frame_auc_macro(scores: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> MacroAUC:
    """Per-clip ROC AUC, averaged over clips. A clip whose frames are all normal or all anomalous
    (several Ped2 test clips are anomalous in every frame) has no AUC: it is skipped, not counted
    as 0 or 1, and reported in `skipped`. The mean is NaN when every clip is skipped.
    """
    _check_pairs(scores, labels)
    per: list[float] = []
    skipped: list[int] = []
    for i, (s, y) in enumerate(zip(scores, labels, strict=True)):
        yb = np.asarray(y).astype(bool)
        if yb.all() or not yb.any():
            per.append(float("nan"))
            skipped.append(i)
            continue
        per.append(frame_auc_micro([s], [y]))
    valid = [a for a in per if not np.isnan(a)]
    return MacroAUC(float(np.mean(valid)) if valid else float("nan"), tuple(per), tuple(skipped))


def frame_auc_macro_padded(scores: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> MacroAUC:
    """Per-clip AUC as the published code computes it (e.g. the AED-MAE / SSMTL evaluation scripts):
    each clip's scores min-max scaled to [0, 1], then one normal frame scored 0 and one anomalous
    frame scored 1 added, so every clip, single-class ones too, has an AUC. Nothing is skipped; a
    clip of constant scores counts as scores of 0. Reported beside `frame_auc_macro` for comparison
    with the literature; it is kinder than the unpadded mean on clips that are nearly one class.
    """
    _check_pairs(scores, labels)
    per: list[float] = []
    for s, y in zip(scores, labels, strict=True):
        x = np.asarray(s, np.float64)
        if len(x) and np.isnan(x).any():  # NaN counts as the lowest score, as in frame_auc_micro
            x = np.where(np.isnan(x), np.nanmin(x) if not np.isnan(x).all() else 0.0, x)
        span = float(x.max() - x.min()) if len(x) else 0.0
        scaled = (x - x.min()) / span if span > 0 else np.zeros_like(x)
        padded_y = np.concatenate([[0], np.asarray(y).astype(int), [1]])
        per.append(frame_auc_micro([np.concatenate([[0.0], scaled, [1.0]])], [padded_y]))
    return MacroAUC(float(np.mean(per)) if per else float("nan"), tuple(per), ())


@dataclass(frozen=True)
class WithNormalsAUC:
    """Frame AUC with extra all-normal clips counted as normal frames (see `frame_auc_with_normals`)."""

    micro: float
    macro: MacroAUC
    macro_padded: MacroAUC


def frame_auc_with_normals(
    scores: Sequence[np.ndarray], labels: Sequence[np.ndarray], normals: Sequence[np.ndarray]
) -> WithNormalsAUC:
    """Frame AUC of labelled clips with the frames of `normals` (clips whose every frame is normal,
    e.g. held-out normal training clips) added as normal frames.

    micro: every labelled and every normal frame pooled, each frame once. macro and macro_padded:
    per labelled clip, that clip's frames followed by all the normal frames, as one clip, then
    `frame_auc_macro` / `frame_auc_macro_padded` over those clips (so a clip anomalous in every frame
    gets an AUC too; a normal clip alone has none and is not a clip of its own). Scores must be
    comparable across clips, as for micro AUC. With no normal frames, the plain figures.
    """
    _check_pairs(scores, labels)
    extra = np.concatenate([np.asarray(x, np.float64) for x in normals]) if normals else np.zeros(0)
    zeros = np.zeros(len(extra), bool)
    micro = frame_auc_micro([*scores, extra], [*labels, zeros])
    joined = [np.concatenate([np.asarray(s, np.float64), extra]) for s in scores]
    joined_y = [np.concatenate([np.asarray(y).astype(bool), zeros]) for y in labels]
    return WithNormalsAUC(micro, frame_auc_macro(joined, joined_y), frame_auc_macro_padded(joined, joined_y))


def smooth_causal(scores: np.ndarray, k: int) -> np.ndarray:
    """Trailing mean: out[t] = mean(scores[max(0, t-k+1) : t+1]). What a live system can compute."""
    if k < 1:
        raise PacketError(f"smooth_causal: k must be >= 1, got {k}")
    x = np.asarray(scores, np.float64)
    t = np.arange(len(x))
    return window_means(x, np.maximum(0, t - k + 1), t + 1)


def smooth_centred(scores: np.ndarray, k: int) -> np.ndarray:
    """Centred mean over the window [t - (k-1)//2, t + k//2], clipped at the clip's ends.

    Uses future frames, so it is an offline figure (the one most papers report), never an alert rule.
    """
    if k < 1:
        raise PacketError(f"smooth_centred: k must be >= 1, got {k}")
    x = np.asarray(scores, np.float64)
    t = np.arange(len(x))
    return window_means(x, np.maximum(0, t - (k - 1) // 2), np.minimum(len(x), t + k // 2 + 1))


def window_means(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """mean(x[lo[t]:hi[t]]) for every t, each window summed on its own in sorted order.

    A running cumulative sum would be cheaper, but its rounding depends on everything before the
    window: two windows holding the same values then differ in the last bit, and the AUC counts a tie
    as a win or a loss. Summing each window's sorted values makes equal windows equal.
    """
    if len(x) == 0:
        return np.zeros(0)
    width = int((hi - lo).max())
    idx = lo[:, None] + np.arange(width)[None, :]
    inside = idx < hi[:, None]
    values = np.where(inside, x[np.minimum(idx, len(x) - 1)], 0.0)
    values = np.sort(values, axis=1)  # the padding zeros sort in too; equal windows still match
    return values.sum(axis=1) / (hi - lo)


# --------------------------------------------------------------------------------------------------
# regions and tracks


@dataclass(frozen=True)
class GroundTruthRegions:
    """Ground-truth anomalous regions of one clip.

    `boxes[t]` is an (R_t, 4) array of xyxy boxes (bounding boxes of the mask's connected
    components in frame t); `track[t]` gives each region's ground-truth track id.
    """

    boxes: tuple[np.ndarray, ...]
    track: tuple[np.ndarray, ...]

    @property
    def n_tracks(self) -> int:
        ids = [t for tr in self.track for t in tr.tolist()]
        return len(set(ids))


def regions_from_masks(masks: np.ndarray, min_area: int = 0) -> GroundTruthRegions:
    """GT regions = 8-connected components of each frame's mask (area > `min_area` pixels), as boxes
    [x, y, x + w, y + h]; GT tracks link a component to every component of the previous frame whose
    pixels it overlaps, and a track is a connected component of that link graph.
    """
    if masks.ndim != 3:
        raise PacketError(f"regions_from_masks: expected (T, H, W) masks, got shape {masks.shape}")
    boxes: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    keep: list[list[int]] = []
    links = nx.Graph()
    for t in range(len(masks)):
        n, lab, stats, _ = cv2.connectedComponentsWithStats(masks[t].astype(np.uint8), connectivity=8)
        ids = [c for c in range(1, n) if stats[c, cv2.CC_STAT_AREA] > min_area]
        x, y, w, h = (stats[ids, k] for k in (0, 1, 2, 3))
        boxes.append(np.stack([x, y, x + w, y + h], axis=1).astype(np.float64).reshape(-1, 4))
        labels.append(lab)
        keep.append(ids)
        for j, c in enumerate(ids):
            links.add_node((t, j))
            if t > 0 and keep[t - 1]:
                prev = labels[t - 1][lab == c]
                for pj, pc in enumerate(keep[t - 1]):
                    if np.any(prev == pc):
                        links.add_edge((t - 1, pj), (t, j))
        if t > 0:
            labels[t - 1] = np.empty(0)  # only the previous frame's labels are needed
    track_of: dict[tuple[int, int], int] = {}
    for tid, comp in enumerate(sorted(nx.connected_components(links), key=min)):
        for node in comp:
            track_of[node] = tid
    tracks = tuple(
        np.array([track_of[(t, j)] for j in range(len(keep[t]))], np.int64) for t in range(len(masks))
    )
    return GroundTruthRegions(tuple(boxes), tracks)


@dataclass(frozen=True)
class DetectionCurve:
    """Detection rate vs false positives per frame, and its area over FPR in [0, 1]."""

    fpr: np.ndarray  # false positives per frame, increasing
    rate: np.ndarray  # detection rate at each point
    area: float


def _curve(thresholds_det: np.ndarray, fp_scores: np.ndarray, n_frames: int, n_gt: int) -> DetectionCurve:
    """Sweep a threshold down through every score: a GT unit is detected when its own detection
    threshold (`thresholds_det`, -inf when never detected) is >= the threshold; a false positive
    counts when its score is >= the threshold. The curve starts at (0, 0); beyond the lowest score
    it stays flat; the area is integrated (trapezoids) over FPR in [0, 1] and so lies in [0, 1].
    """
    levels = np.unique(np.concatenate([thresholds_det[np.isfinite(thresholds_det)], fp_scores]))[::-1]
    det_sorted = np.sort(thresholds_det)
    fp_sorted = np.sort(fp_scores)
    fpr = [0.0]
    rate = [0.0]
    for thr in levels:
        n_fp = len(fp_sorted) - np.searchsorted(fp_sorted, thr, side="left")
        n_det = len(det_sorted) - np.searchsorted(det_sorted, thr, side="left")
        fpr.append(n_fp / max(n_frames, 1))
        rate.append(n_det / n_gt if n_gt else 0.0)
    x, y = np.array(fpr), np.array(rate)
    if x[-1] < 1.0:
        x, y = np.append(x, 1.0), np.append(y, y[-1])
    # area over [0, 1]: cut the curve at FPR = 1 (interpolating the crossing)
    inside = x <= 1.0
    xs, ys = x[inside], y[inside]
    if not inside.all():
        k = int(np.argmax(~inside))
        x0, x1, y0, y1 = x[k - 1], x[k], y[k - 1], y[k]
        y_at_1 = y0 + (y1 - y0) * (1.0 - x0) / (x1 - x0) if x1 > x0 else y1
        xs, ys = np.append(xs, 1.0), np.append(ys, y_at_1)
    area = float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2))
    return DetectionCurve(x, y, area)


@dataclass(frozen=True)
class RegionTrackResult:
    rbdc: DetectionCurve
    tbdc: DetectionCurve
    n_regions: int
    n_tracks: int
    n_frames: int


def rbdc_tbdc(
    det_boxes: Sequence[Sequence[np.ndarray]],
    det_scores: Sequence[Sequence[np.ndarray]],
    gt: Sequence[GroundTruthRegions],
    beta: float = 0.1,
    alpha: float = 0.1,
) -> RegionTrackResult:
    """Region- and track-based detection criteria (Ramachandra et al. 2020) over several clips.

    Inputs per clip and frame: detected boxes (D, 4) xyxy and their anomaly scores (D,), and the GT
    regions. At a score threshold:
    - a GT region is detected when a detection with score >= threshold in the same frame has box
      IoU >= `beta` with it; a detection that has IoU >= `beta` with no GT region of its frame is a
      false positive (detections matching a GT region are never false positives);
    - RBDR = detected GT regions / all GT regions; TBDR = GT tracks with at least `alpha` of their
      regions detected / all GT tracks; FPR = false positives / all frames (of all clips).
    RBDC and TBDC are the areas under RBDR(FPR) and TBDR(FPR) for FPR in [0, 1].
    """
    if not (len(det_boxes) == len(det_scores) == len(gt)):
        raise PacketError(
            f"rbdc_tbdc: {len(det_boxes)} box clips, {len(det_scores)} score clips, {len(gt)} GT"
        )
    region_thr: list[float] = []
    fp_scores: list[float] = []
    track_thr: list[float] = []
    n_frames = 0
    for c, (boxes_c, scores_c, g) in enumerate(zip(det_boxes, det_scores, gt, strict=True)):
        if len(boxes_c) != len(g.boxes) or len(scores_c) != len(g.boxes):
            raise PacketError(
                f"rbdc_tbdc: clip {c}: {len(boxes_c)} box frames, {len(scores_c)} score frames, "
                f"{len(g.boxes)} GT frames"
            )
        n_frames += len(g.boxes)
        per_track: dict[int, list[float]] = {}
        for t, (b, s, gb, gtr) in enumerate(zip(boxes_c, scores_c, g.boxes, g.track, strict=True)):
            b = np.asarray(b, np.float64).reshape(-1, 4)
            s = np.nan_to_num(np.asarray(s, np.float64).reshape(-1), nan=-np.inf)
            if len(b) != len(s):
                raise PacketError(f"rbdc_tbdc: clip {c} frame {t}: {len(b)} boxes but {len(s)} scores")
            iou = box_iou(b, gb) if len(gb) else np.zeros((len(b), 0))
            hit = iou >= beta
            fp_scores.extend(s[~hit.any(axis=1)].tolist())
            for r in range(len(gb)):
                best = float(s[hit[:, r]].max()) if hit[:, r].any() else -np.inf
                region_thr.append(best)
                per_track.setdefault(int(gtr[r]), []).append(best)
        for values in per_track.values():
            need = max(1, int(np.ceil(alpha * len(values) - 1e-9)))
            track_thr.append(sorted(values, reverse=True)[need - 1])
    fp = np.array(fp_scores, np.float64)
    fp = fp[np.isfinite(fp)]
    rt, tt = np.array(region_thr, np.float64), np.array(track_thr, np.float64)
    return RegionTrackResult(
        rbdc=_curve(rt, fp, n_frames, len(rt)),
        tbdc=_curve(tt, fp, n_frames, len(tt)),
        n_regions=len(rt),
        n_tracks=len(tt),
        n_frames=n_frames,
    )


# --------------------------------------------------------------------------------------------------
# localisation


@dataclass(frozen=True)
class Localisation:
    share: float  # hits / evaluated frames (NaN when none)
    hits: int
    evaluated: int  # anomalous frames with a non-empty GT mask
    no_box: int  # evaluated frames with no scored box (counted as misses)


def localisation(
    det_boxes: Sequence[Sequence[np.ndarray]],
    det_scores: Sequence[Sequence[np.ndarray]],
    gt: Sequence[GroundTruthRegions],
    labels: Sequence[np.ndarray],
    beta: float = 0.1,
) -> Localisation:
    """Share of anomalous frames (label 1 and at least one GT region) whose single highest-scored
    box has IoU >= `beta` with some GT region of that frame. Frames with no box count as misses;
    anomalous frames without a GT region are not evaluated.
    """
    hits = evaluated = no_box = 0
    for boxes_c, scores_c, g, y in zip(det_boxes, det_scores, gt, labels, strict=True):
        for t, (b, s, gb) in enumerate(zip(boxes_c, scores_c, g.boxes, strict=True)):
            if not y[t] or len(gb) == 0:
                continue
            evaluated += 1
            s = np.nan_to_num(np.asarray(s, np.float64).reshape(-1), nan=-np.inf)
            if len(s) == 0:
                no_box += 1
                continue
            top = np.asarray(b, np.float64).reshape(-1, 4)[int(np.argmax(s))]
            hits += int((box_iou(top[None], gb) >= beta).any())
    return Localisation(hits / evaluated if evaluated else float("nan"), hits, evaluated, no_box)
