"""`vigil eval --cache / --from-cache / --ablate-each`: the perception cache and the diagnostics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import VigilConfig
from pipeline.errors import ConfigError
from pipeline.evaluation.cache import PerceptionCache, perception_key
from pipeline.evaluation.report import clip_diagnostics
from pipeline.evaluation.trace import ClipTrace, top_attribute
from pipeline.packets import Scores


@pytest.mark.parametrize(
    ("update", "max_frames", "same"),
    [
        ({}, 40, False),  # a different frame limit is a different cache
        ({"detector": {"confidence": 0.5}}, None, False),
        ({"attributes": {"grid": (4, 4)}}, None, False),
        ({"pose": {"enabled": False}}, None, False),
        ({"scoring": {"knn_k": 3}}, None, True),  # scoring is not perception
        ({"events": {"start_score": 9.0}}, None, True),
    ],
)
def test_perception_key(update: dict[str, dict[str, object]], max_frames: int | None, same: bool) -> None:
    base = VigilConfig()
    dump = base.model_dump()
    changed = VigilConfig.model_validate({**dump, **{k: {**dump[k], **v} for k, v in update.items()}})
    assert (perception_key(changed, max_frames) == perception_key(base, None)) == same


def test_perception_key_resolves_model_paths(tmp_path: Path) -> None:
    """The same weights reached through another folder (another checkout beside ../shared) keep the key."""
    weights = tmp_path / "models" / "det.onnx"
    weights.parent.mkdir()
    weights.write_bytes(b"")
    (tmp_path / "checkout").mkdir()
    direct = VigilConfig.model_validate({"detector": {"model": str(weights)}})
    roundabout = VigilConfig.model_validate(
        {"detector": {"model": str(tmp_path / "checkout" / ".." / "models" / "det.onnx")}}
    )
    other = VigilConfig.model_validate({"detector": {"model": str(tmp_path / "models" / "other.onnx")}})
    assert perception_key(direct, None) == perception_key(roundabout, None) != perception_key(other, None)


def test_cache_miss_names_the_keys_found(tmp_path: Path) -> None:
    (tmp_path / "ped2" / "test").mkdir(parents=True)
    (tmp_path / "ped2" / "test" / "Test004-aaaaaaaaaaaa.npz").write_bytes(b"")
    with pytest.raises(
        ConfigError, match=r"no test clip Test004 for key bbbbbbbbbbbb \(keys there: aaaaaaaaaaaa\)"
    ):
        PerceptionCache(tmp_path, "ped2", "bbbbbbbbbbbb").load("test", "Test004")


def test_diagnostics_count_top_attributes() -> None:
    names = ("speed", "size")
    scores = Scores(
        track_id=np.array([1, 2]),
        attribute_names=names,
        attribute_scores=np.array([[0.5, 3.0], [4.0, np.nan]], np.float32),
        object_score=np.array([1.0, 2.0], np.float32),
        frame_score=2.0,
        smoothed_score=2.0,
    )
    assert top_attribute(scores) == "speed"  # the top object (2) is judged by speed
    trace = ClipTrace(top_attribute={0: "size", 1: "speed", 2: "", 3: "speed"})
    d = clip_diagnostics(trace, np.array([5.0, 1.0, 3.0, 9.0]), np.array([False, False, False, True]))
    assert d.top_normal_frames == [0, 2, 1]
    assert d.false_alarm_attributes == {"none": 1, "size": 1, "speed": 1}
    assert d.anomaly_attributes == {"speed": 1}


@pytest.mark.slow
def test_eval_from_cache_reproduces_streaming_figures(
    ped2: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Streaming run writes the cache; from the cache, the same fit and the same figures; ablations."""
    from conftest import DETECTOR

    from pipeline.cli import EXIT_USAGE, main
    from stages.normality import ATTRIBUTES

    config = tmp_path / "config.yaml"
    config.write_text(
        f"detector:\n  model: {DETECTOR}\npose:\n  enabled: false\nappearance:\n  enabled: false\n"
        "http:\n  enabled: false\n"
    )
    cache, out = tmp_path / "cache", tmp_path / "out"
    common = ["eval", "--data", str(ped2), "--clips", "Test004", "--train-clips", "Train001"]
    common += ["--max-frames", "20", "-c", str(config), "--out", str(out), "--no-plot"]
    assert main([*common, "--cache", str(cache)]) == 0
    assert main([*common, "--from-cache", str(cache)]) == 0
    streamed = json.loads((out / "ped2.json").read_text())
    cached = json.loads((out / "ped2-cached.json").read_text())
    assert (streamed["mode"], cached["mode"]) == ("streaming", "from-cache")
    assert streamed["fit"]["objects"] == cached["fit"]["objects"] > 0
    for key in ("frame_auc", "rbdc", "tbdc", "localisation", "diagnostics"):
        assert streamed[key] == cached[key], key
    assert streamed["per_clip"]["Test004"]["events"] == cached["per_clip"]["Test004"]["events"]
    assert (
        sum(cached["diagnostics"]["anomaly_attributes"].values())
        == cached["per_clip"]["Test004"]["anomalous"]
    )

    assert main([*common, "--from-cache", str(cache), "--ablate-each"]) == 0
    ablation = json.loads((out / "ablation.json").read_text())
    assert ablation["mode"] == "from-cache"
    assert [r["variant"] for r in ablation["ablation"]][:3] == [
        "all",
        f"-{ATTRIBUTES[0]}",
        f"only {ATTRIBUTES[0]}",
    ]
    assert len(ablation["ablation"]) == 1 + 2 * len(ATTRIBUTES)
    assert ablation["ablation"][0]["macro_causal"] == cached["frame_auc"]["causal_10"]["macro"]

    capsys.readouterr()
    stale = [a if a != "20" else "15" for a in common]  # another frame limit: a miss, not a silent reuse
    assert main([*stale, "--from-cache", str(cache)]) == EXIT_USAGE
    assert "no test clip Test004 for key" in capsys.readouterr().err
    assert main([*common, "--ablate-each"]) == EXIT_USAGE
    assert "--ablate-each needs --from-cache" in capsys.readouterr().err


@pytest.mark.slow
def test_eval_on_the_avenue_preset_keeps_scores_and_the_false_alert_estimate(tmp_path: Path) -> None:
    """A second scene through the same defaults: every frame's score and box kept, macro both ways, and
    the training clips cross-validated (two clips: two folds, one clip each)."""
    from conftest import DETECTOR, SHARED

    from pipeline.cli import main

    avenue = SHARED / "data" / "avenue_dev"
    config = tmp_path / "config.yaml"
    config.write_text(
        f"detector:\n  model: {DETECTOR}\npose:\n  enabled: false\nappearance:\n  enabled: false\n"
        "http:\n  enabled: false\n"
    )
    out = tmp_path / "out"
    args = ["eval", "--dataset", "avenue", "--data", str(avenue), "--clips", "21", "--max-frames", "30"]
    assert main([*args, "-c", str(config), "--out", str(out), "--no-plot"]) == 0
    result = json.loads((out / "avenue.json").read_text())
    assert result["dataset"] == "avenue" and result["train_clips"] == ["12", "16"]
    estimate = result["fit"]["false_alerts"]
    assert estimate["clips"] == 2 and estimate["folds"] == 2 and estimate["frames"] == 60
    assert estimate["seconds"] == pytest.approx(60 / 25, rel=0.05)  # 30 frames at 25 fps, twice
    assert "macro_padded" in result["frame_auc"]["causal_10"]
    # the cross-validation's held-out frames counted as normal too, from the same run: 30 frames each
    assert result["training_normals"] == {"clips": ["12", "16"], "frames": 60, "frames_without_score": 0}
    assert set(result["frame_auc_with_training_normals"]) == set(result["frame_auc"])
    explanations = result["explanations"]
    assert explanations["alerts"] == explanations["true_alerts"] + explanations["false_alerts"]
    assert [(i["start_frame"], i["end_frame"]) for i in explanations["intervals"]] == [(13, 29)]  # cut at 30
    assert explanations["reasons"]["file"].endswith("avenue_dev_reasons.json")
    with np.load(result["scores_file"]) as scores:
        assert scores["training_normals"].tolist() == ["12", "16"]
        assert scores["training_normal.16.frame_score"].shape == (30,)
        assert scores["21.frame_score"].shape == (30,)
        assert scores["21.labels"].tolist() == [1] * 30 or scores["21.labels"].shape == (30,)
        assert len(scores["21.boxes"]) == len(scores["21.box_score"]) == len(scores["21.box_frame"])
