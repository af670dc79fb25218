"""A camera that learnt its model during warm-up keeps it: saved with its provenance, loaded at the next
start instead of learnt again. The real `vigil replay` on real Ped2 frames, twice."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import av
import cv2
import pytest
from conftest import DETECTOR, POSE, REPO

from pipeline.config import perception_settings
from pipeline.configfile import load_config
from stages.normality import NormalityModel

FRAMES = 40  # 4 s at Ped2's 10 fps: 2.5 s of warm-up, then scored
WARMUP_S = 2.5


def first_frames(clip: Path, folder: Path, n: int) -> Path:
    """The clip's first `n` frames as PNG files (a folder camera, lossless, at its own 10 fps)."""
    folder.mkdir()
    with av.open(str(clip)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if i == n:
                break
            cv2.imwrite(str(folder / f"{i:04d}.png"), frame.to_ndarray(format="bgr24"))
    return folder


def replay(folder: Path, config: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "replay", str(folder), "--camera", "walk", "-c", str(config)],
        cwd=cwd,
        env={"PYTHONPATH": str(REPO), "YOLO_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(cwd)},
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_warmed_up_model_is_saved_and_loaded_at_the_next_start(ped2: Path, tmp_path: Path) -> None:
    frames = first_frames(ped2 / "train" / "Train001.mp4", tmp_path / "walk", FRAMES)
    config = tmp_path / "cfg.yaml"
    config.write_text(
        "http: {port: 0}\nsinks: {sqlite: {path: events.db}, jsonl: {path: '-'}}\n"
        f"detector: {{model: {DETECTOR}}}\npose: {{model: {POSE}}}\nappearance: {{model: {POSE}}}\n"
        f"scoring: {{models_dir: models, warmup_s: {WARMUP_S}}}\n"
        "events: {alerts_per_hour: 1, snapshots: false, clips: false}\n"
    )
    saved = tmp_path / "models" / "walk.npz"

    first = replay(frames, config, tmp_path)
    assert first.returncode == 0, first.stderr
    assert "no normality model: learning online first" in first.stderr
    assert f"normality model saved camera=walk path={saved}" in first.stderr
    assert "alert budget camera=walk" in first.stderr  # applied as soon as the model arrived
    model = NormalityModel.load(saved)
    p = model.provenance
    assert p is not None and (p.how, p.version, p.clips) == ("warm-up", 1, 1)
    assert p.frames == int(WARMUP_S * 10) + 1 and p.seconds == pytest.approx(WARMUP_S + 0.1)
    assert model.false_alerts is not None and model.false_alerts.clips == 3  # stretches of the warm-up
    assert model.perception == perception_settings(load_config(config))
    written = saved.stat().st_mtime_ns, saved.read_bytes()

    second = replay(frames, config, tmp_path)
    assert second.returncode == 0, second.stderr
    assert "learning online" not in second.stderr and "warm-up over" not in second.stderr
    assert "no normality model" not in second.stderr and "re-run `vigil fit`" not in second.stderr
    assert "alert budget camera=walk" in second.stderr  # from the loaded model's estimate
    assert (saved.stat().st_mtime_ns, saved.read_bytes()) == written
