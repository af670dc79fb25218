"""Operator feedback end to end on real footage, through the real pipeline and the console's API.

A model fitted on Ped2's Train001 and Train002; a replay of Test007 raises alerts on the person walking
a bicycle (its track leads with class_in_place), the riders and the fast person. "Normal here" on the
walker's alert, sent to the console of a *running* realtime replay of Test007, makes model version 2;
the running camera picks it up within a second, so in that same run the walker (whose alert would start
~8 s in) raises none, while the fast person still does. Undo brings version 1 back.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import DETECTOR, POSE
from test_cli import VIGIL, env_for, vigil

pytestmark = pytest.mark.slow

TOKEN = "feedback-test-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(folder: Path, name: str, port: int) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(
        f"http: {{port: {port}, token_env: VIGIL_TEST_TOKEN}}\n"
        f"sinks: {{sqlite: {{path: {name}.db}}, jsonl: {{path: {name}.jsonl}}}}\n"
        f"detector: {{model: {DETECTOR}, imgsz: 960}}\n"
        f"pose: {{model: {POSE}}}\nappearance: {{model: {POSE}}}\nscoring: {{models_dir: models}}\n"
        f"events: {{media_dir: media-{name}}}\nconsole: {{path: console.db}}\n"
    )
    return path


def ended(jsonl: Path) -> dict[int, dict]:
    """Track id -> its ended event."""
    events = [json.loads(line) for line in jsonl.read_text().splitlines()]
    return {e["track_id"]: e for e in events if e["kind"] == "end"}


def api(port: int, method: str, path: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", method=method, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def test_normal_here_teaches_the_running_camera(tmp_path: Path, ped2: Path) -> None:
    env = env_for({"VIGIL_TEST_TOKEN": TOKEN})
    train = [str(ped2 / "train" / f"Train00{i}.mp4") for i in (1, 2)]
    clip = str(ped2 / "test" / "Test007.mp4")
    first = config(tmp_path, "first", 0)
    fit = vigil("fit", *train, "--camera", "ped2", "-c", str(first), cwd=tmp_path, env=env)
    assert fit.returncode == 0, fit.stderr[-2000:]

    run = vigil("replay", clip, "--camera", "ped2", "-c", str(first), cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    before = ended(tmp_path / "first.jsonl")
    walker = max(
        (e for e in before.values() if e["class_name"] == "bicycle" and e["start_frame"] > 60),
        key=lambda e: e["end_frame"] - e["start_frame"],
    )
    fast = [e for e in before.values() if e["reasons"][0]["attribute"] == "speed" and e["peak_score"] > 6]
    assert walker["reasons"][0]["attribute"] == "class_in_place"
    assert fast, "the fast person should alert on speed"
    assert (tmp_path / "media-first" / "ped2" / f"{walker['id']}.obs.npz").is_file()

    # the same event store and model, now under a realtime replay whose console takes the feedback
    port = free_port()
    second = config(tmp_path, "second", port)
    shared = second.read_text().replace("second.db", "first.db").replace("media-second", "media-first")
    second.write_text(shared)
    live = subprocess.Popen(
        [*VIGIL, "replay", clip, "--camera", "ped2", "-c", str(second), "--realtime"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                api(port, "GET", "/api/cameras")
                break
            except OSError:
                assert live.poll() is None and time.monotonic() < deadline, "console did not come up"
                time.sleep(0.2)
        taught = api(port, "POST", f"/api/alerts/{walker['id']}/review?action=normal_here")
        assert taught["model_version"] == 2 and "class_in_place" in taught["attributes"]
        _, stderr = live.communicate(timeout=180)
    finally:
        live.kill()
    assert live.returncode == 0, stderr[-2000:]
    assert "normality model replaced by a newer version" in stderr

    after = ended(tmp_path / "second.jsonl")
    assert walker["track_id"] not in after or after[walker["track_id"]]["class_name"] != "bicycle"
    assert any(e["reasons"][0]["attribute"] == "speed" and e["peak_score"] > 6 for e in after.values())

    versions = json.loads((tmp_path / "models" / "ped2.npz.versions" / "index.json").read_text())
    assert versions["current"] == 2 and versions["versions"][1]["event_id"] == walker["id"]
    # undo (the token is an operator; version 2 was made by it): version 1 is live again
    serve = subprocess.Popen(
        [*VIGIL, "serve", "-c", str(second)], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                undone = api(port, "POST", "/api/cameras/ped2/versions/2/undo")
                break
            except OSError:
                assert serve.poll() is None and time.monotonic() < deadline, "vigil serve did not come up"
                time.sleep(0.2)
        assert undone == {"camera": "ped2", "undone": 2, "current": 1}
        alert = api(port, "GET", f"/api/alerts/{walker['id']}")
        assert [r["action"] for r in alert["reviews"]] == ["undo_normal_here", "normal_here"]
        assert alert["review"] is None
    finally:
        serve.terminate()
        serve.wait(timeout=30)
    v1 = (tmp_path / "models" / "ped2.npz.versions" / "v0001.npz").read_bytes()
    assert (tmp_path / "models" / "ped2.npz").read_bytes() == v1
