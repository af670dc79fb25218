"""The console's web app through FastAPI's TestClient, over real stores in a temporary folder: logins and
their throttling, cookies, roles, CSRF, the bearer token, media, paging, the live stream, and "normal
here" teaching the camera's model (and undo taking it back)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from httpx import Response
from synthetic import Walker, frame_sample, normal_footage

from pipeline.config import ConsoleConfig, ScoringConfig, VigilConfig
from pipeline.console.alerts import AlertReader
from pipeline.console.app import COOKIE, Console, create_app
from pipeline.console.cameras import CameraBoard
from pipeline.console.live import LiveView
from pipeline.console.reviewing import Reviewing
from pipeline.console.users import UserStore
from pipeline.http import HealthProbe
from pipeline.metrics import Metrics
from pipeline.model_store import ModelStore
from pipeline.packets import Event, Reason
from pipeline.sinks.sqlite import SqliteEventStore
from stages.normality import NormalityModel, fit_normality
from stages.normality.observations import EventObservations, concat_rows, observations_path, take_rows

T0 = 1_700_000_000.0
CAMERA = "cam"  # the synthetic footage's camera: the fitted model is its model
WRONG_LOGIN = "wrong user name or password"
TOKEN = "machine-t0ken"
USERS = {
    "alice": ("alice-operator-pw", "operator"),
    "bob": ("bob-operator-pw", "operator"),
    "victor": ("victor-viewer-pw", "viewer"),
    "ada": ("ada-admin-pw", "admin"),
}
CLIP = bytes(range(256)) * 8


def event(event_id: str, kind: str = "new", *, camera: str = CAMERA, at: float = T0, **paths: str) -> Event:
    return Event(
        id=event_id,
        kind=kind,  # type: ignore[arg-type]
        camera=camera,
        start_time=at - T0,
        end_time=at - T0 + 1.0,
        start_frame=10,
        end_frame=20,
        track_id=7,
        class_name="person",
        box=(100.0, 50.0, 130.0, 120.0),
        trajectory=((at - T0, 100.0, 50.0, 130.0, 120.0),),
        score=4.0,
        peak_score=6.5,
        reasons=(Reason("speed", "3.4 h/s", "0.9 ± 0.3", 6.5, "moves 3.8x faster than people here"),),
        snapshot_path=paths.get("snapshot"),
        clip_path=paths.get("clip"),
        created_at=at,
    )


@pytest.fixture(scope="module")
def fitted() -> NormalityModel:
    return fit_normality(normal_footage(clips=2, frames=30), ScoringConfig(), seed=0)


@dataclass
class Site:
    app: object
    store: SqliteEventStore
    reader: AlertReader
    models: ModelStore
    media: Path
    users: UserStore

    def client(self, base_url: str = "http://testserver") -> TestClient:
        return TestClient(self.app, base_url=base_url)  # type: ignore[arg-type]


Build = Callable[..., Site]


@pytest.fixture
def build(tmp_path: Path, fitted: NormalityModel) -> Iterator[Build]:
    """A console over real stores in `tmp_path`: events cam-1 (ended, snapshot and clip), cam-2 (snapshot),
    cam-3 (its snapshot deleted since), hall-1..4; four users; the fitted model as camera cam's."""
    closers: list[Callable[[], None]] = []

    def make(token: str | None = None, secure: str = "auto", login_attempts: int = 5) -> Site:
        media = tmp_path / "media"
        (media / CAMERA).mkdir(parents=True)
        snapshot = media / CAMERA / "cam-1.jpg"
        snapshot.write_bytes(cv2.imencode(".jpg", np.full((240, 360, 3), 90, np.uint8))[1].tobytes())
        clip = media / CAMERA / "cam-1.mp4"
        clip.write_bytes(CLIP)
        store = SqliteEventStore(tmp_path / "events.db", outbox_sinks=("mqtt",))
        store.write(
            [
                event("cam-1", at=T0, snapshot=str(snapshot)),
                event("cam-2", at=T0 + 10, snapshot=str(snapshot)),
                event("cam-3", at=T0 + 20, snapshot=str(media / CAMERA / "gone.jpg")),
                *(event(f"hall-{i}", camera="hall", at=T0 + 30 + i) for i in range(1, 5)),
                event("cam-1", "end", at=T0 + 5, clip=str(clip)),
            ]
        )
        reader = AlertReader(store.path)
        settings = ConsoleConfig(path=tmp_path / "console.db", login_attempts=login_attempts, lockout_s=60.0)
        users = UserStore(
            settings.path, settings, hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
        )
        for name, (password, role) in USERS.items():
            users.add(name, password, role)
        models = ModelStore(VigilConfig(scoring=ScoringConfig(models_dir=tmp_path / "models")))
        models.save(fitted)
        metrics = Metrics()
        reviewing = Reviewing(store, reader, models, media, weight=5)
        board = CameraBoard([CAMERA, "hall"], reader, models, metrics, LiveView(), media)
        console = Console(
            users, reader, reviewing, board, metrics, HealthProbe(metrics, 30.0), token, 5, secure
        )
        closers.extend([store.close, reader.close, users.close])
        return Site(create_app(console), store, reader, models, media, users)

    yield make
    for close in closers:
        close()


@pytest.fixture
def site(build: Build) -> Site:
    return build()


def post_login(client: TestClient, name: str, password: str, csrf: str | None = None) -> Response:
    """Submit the login form as a browser does: fetched first (its CSRF field and cookie), then posted."""
    if csrf is None:
        match = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text)
        assert match is not None
        csrf = match.group(1)
    return client.post(
        "/login", data={"username": name, "password": password, "csrf": csrf}, follow_redirects=False
    )


def login(site: Site, name: str, base_url: str = "http://testserver") -> tuple[TestClient, str]:
    """A client logged in as `name`, and its session's CSRF token (as the pages carry it)."""
    client = site.client(base_url)
    response = post_login(client, name, USERS[name][0])
    assert response.status_code == 303, response.text
    page = client.get("/")
    assert page.status_code == 200
    match = re.search(r'data-csrf="([^"]+)"', page.text)
    assert match is not None
    return client, match.group(1)


def review_state(html: str, event_id: str) -> str:
    match = re.search(rf'data-event-id="{event_id}".*?<td class="review-state">([^<]*)</td>', html, re.S)
    assert match is not None, f"no inbox row for {event_id}"
    return match.group(1)


# ---- logging in ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/", "/alerts", "/alerts/cam-1", "/cameras/cam", "/audit", "/media/cam-1.jpg"]
)
def test_pages_without_a_session_redirect_to_login(site: Site, path: str) -> None:
    response = site.client().get(path, follow_redirects=False)
    assert (response.status_code, response.headers["location"]) == (303, "/login")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/alerts"),
        ("GET", "/api/alerts/cam-1"),
        ("GET", "/api/cameras"),
        ("GET", "/api/audit"),
        ("GET", "/api/stream"),
        ("POST", "/api/alerts/cam-1/review?action=acknowledged"),
    ],
)
def test_the_api_without_credentials_is_401(site: Site, method: str, path: str) -> None:
    response = site.client().request(method, path)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert site.reader.reviews() == []


def test_wrong_password_and_unknown_user_get_the_same_answer(site: Site) -> None:
    client = site.client()
    wrong = post_login(client, "alice", "not-her-password")
    unknown = post_login(client, "mallory", "alice-operator-pw")
    assert wrong.status_code == unknown.status_code == 401
    assert WRONG_LOGIN in wrong.text

    def page(response: Response) -> str:  # the form's fresh CSRF token differs each time
        return re.sub(r'name="csrf" value="[^"]+"', "", response.text)

    assert page(wrong) == page(unknown)  # nothing tells whether the name exists
    assert COOKIE not in wrong.cookies and COOKIE not in client.cookies


def test_failed_logins_are_throttled(build: Build) -> None:
    site = build(login_attempts=3)
    client = site.client()
    for _ in range(3):
        assert post_login(client, "alice", "guess-guess").status_code == 401
    # locked now: even the right password is not checked
    locked = post_login(client, "alice", USERS["alice"][0])
    assert locked.status_code == 429
    assert 0 < int(locked.headers["retry-after"]) <= 60
    assert "too many failed logins" in locked.text
    assert COOKIE not in client.cookies
    login(site, "bob")  # another name is not locked


@pytest.mark.parametrize("forged", [None, "", "guessed-token"])
def test_login_needs_the_login_forms_csrf_token(site: Site, forged: str | None) -> None:
    """Double submit: the form's hidden field must equal the cookie the form came with."""
    client = site.client()
    client.get("/login")  # the browser holds the form's cookie, but another site cannot read the field
    data = {"username": "alice", "password": USERS["alice"][0]} | ({} if forged is None else {"csrf": forged})
    response = client.post("/login", data=data, follow_redirects=False)
    assert response.status_code == 403 and "the login form expired" in response.text
    assert COOKIE not in client.cookies
    fresh = site.client()  # no form cookie at all: the right field alone does not do either
    match = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text)
    assert match is not None
    assert post_login(fresh, "alice", USERS["alice"][0], csrf=match.group(1)).status_code == 403


@pytest.mark.parametrize(
    ("secure", "base_url", "flagged"),
    [
        ("auto", "http://testserver", False),
        ("auto", "https://testserver", True),
        ("always", "http://testserver", True),
        ("never", "https://testserver", False),
    ],
)
def test_login_sets_a_strict_http_only_cookie(
    build: Build, secure: str, base_url: str, flagged: bool
) -> None:
    site = build(secure=secure)
    response = post_login(site.client(base_url), "alice", USERS["alice"][0])
    assert (response.status_code, response.headers["location"]) == (303, "/")
    (cookie,) = [c for c in response.headers.get_list("set-cookie") if c.startswith(f"{COOKIE}=")]
    parts = {p.strip().split("=")[0].lower(): p.strip() for p in cookie.split(";")}
    assert cookie.startswith(f"{COOKIE}=")
    assert "httponly" in parts and parts["samesite"].lower() == "samesite=strict"
    assert parts["path"] == "Path=/"
    assert 43000 < int(parts["max-age"].split("=")[1]) <= 43200  # session_max_s
    assert ("secure" in parts) == flagged


def test_logout_ends_the_session(site: Site) -> None:
    client, csrf = login(site, "alice")
    token = client.cookies[COOKIE]
    assert client.post("/logout", data={"csrf": "forged"}, follow_redirects=False).status_code == 403
    assert client.get("/api/alerts").status_code == 200  # a refused logout leaves the session alive

    response = client.post("/logout", data={"csrf": csrf}, follow_redirects=False)
    assert (response.status_code, response.headers["location"]) == (303, "/login")
    assert (
        f'{COOKIE}=""' in response.headers["set-cookie"]
        or "max-age=0" in response.headers["set-cookie"].lower()
    )
    stale = site.client()
    stale.cookies.set(COOKIE, token)  # the old cookie, kept by someone: no longer works
    assert stale.get("/api/alerts").status_code == 401
    assert stale.get("/alerts", follow_redirects=False).status_code == 303


# ---- roles and CSRF ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/", "/alerts", "/alerts?state=open&camera=hall", "/alerts/cam-1", "/cameras/cam", "/audit",
     "/api/alerts", "/api/alerts/cam-1", "/api/cameras", "/api/cameras/cam/versions", "/api/audit"],
)  # fmt: skip
def test_a_viewer_reads_everything(site: Site, path: str) -> None:
    client, _ = login(site, "victor")
    response = client.get(path)
    assert response.status_code == 200, response.text
    if path == "/api/alerts/cam-1":
        body = response.json()
        assert (body["id"], body["open"], body["reasons"], body["message"]["kind"]) == (
            "cam-1", False, ["speed"], "end"
        )  # fmt: skip
    if path == "/api/cameras":
        assert [c["name"] for c in response.json()["cameras"]] == [CAMERA, "hall"]
        assert response.json()["cameras"][0]["model_version"] == 1
    if path == "/alerts/cam-1":
        assert "moves 3.8x faster than people here" in response.text
        assert 'action="/alerts/cam-1/review"' not in response.text  # no review buttons for a viewer


@pytest.mark.parametrize("how", ["api", "form"])
def test_a_viewer_may_not_review(site: Site, how: str) -> None:
    client, csrf = login(site, "victor")
    if how == "api":
        response = client.post("/api/alerts/cam-2/review?action=acknowledged", headers={"X-CSRF-Token": csrf})
    else:
        response = client.post("/alerts/cam-2/review", data={"action": "acknowledged", "csrf": csrf})
    assert response.status_code == 403
    assert "may not review" in response.text
    assert site.reader.reviews() == [] and site.reader.get("cam-2").review is None  # type: ignore[union-attr]


def test_an_operator_reviews_with_the_form(site: Site) -> None:
    client, csrf = login(site, "alice")
    response = client.post(
        "/alerts/cam-2/review", data={"action": "false_alarm", "csrf": csrf}, follow_redirects=False
    )
    assert (response.status_code, response.headers["location"]) == (303, "/alerts/cam-2")

    listed = client.get("/api/alerts", params={"state": "false_alarm"}).json()["alerts"]
    assert [(a["id"], a["review"], a["reviewed_by"]) for a in listed] == [("cam-2", "false_alarm", "alice")]
    assert review_state(client.get("/alerts").text, "cam-2") == "false alarm"
    assert review_state(client.get("/alerts").text, "cam-3") == "open"
    assert "alice: false alarm" in client.get("/alerts/cam-2").text
    (audit,) = client.get("/api/audit").json()["reviews"]
    assert (audit["event_id"], audit["action"], audit["user"]) == ("cam-2", "false_alarm", "alice")
    sent = site.store.pending("mqtt")[-1].event  # the review goes out to MQTT too
    assert (sent["id"], sent["kind"], sent["review"]["by"]) == ("cam-2", "review", "alice")  # type: ignore[index]


def test_an_operator_reviews_through_the_api_with_the_csrf_header(site: Site) -> None:
    client, csrf = login(site, "alice")
    response = client.post("/api/alerts/cam-3/review?action=acknowledged", headers={"X-CSRF-Token": csrf})
    assert response.status_code == 200
    assert response.json() == {"id": "cam-3", "review": "acknowledged"}
    assert client.get("/api/alerts/cam-3").json()["review"] == "acknowledged"


@pytest.mark.parametrize("how", ["form", "api"])
@pytest.mark.parametrize("csrf", [None, "", "forged-token"])
def test_writes_without_the_right_csrf_token_are_refused(site: Site, how: str, csrf: str | None) -> None:
    client, _ = login(site, "alice")
    if how == "form":
        data = {"action": "acknowledged"} | ({} if csrf is None else {"csrf": csrf})
        response = client.post("/alerts/cam-2/review", data=data)
    else:
        headers = {} if csrf is None else {"X-CSRF-Token": csrf}
        response = client.post("/api/alerts/cam-2/review?action=acknowledged", headers=headers)
    assert response.status_code == 403
    assert "CSRF" in response.text
    assert site.reader.reviews() == []


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/api/alerts/cam-2/review?action=approve", 400, "unknown action 'approve'"),
        ("/api/alerts/cam-2/review?action=undo_normal_here", 400, "unknown action"),
        ("/api/alerts/nobody/review?action=acknowledged", 400, "no alert 'nobody'"),
    ],
)
def test_bad_reviews_are_clear_errors(site: Site, path: str, status: int, message: str) -> None:
    client, csrf = login(site, "alice")
    response = client.post(path, headers={"X-CSRF-Token": csrf})
    assert response.status_code == status and message in response.text
    assert site.reader.reviews() == []


# ---- the machine token ---------------------------------------------------------------------------


def test_the_bearer_token_reads_and_reviews_without_csrf(build: Build) -> None:
    site = build(token=TOKEN)
    client = site.client()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/api/alerts", headers=auth).status_code == 200
    response = client.post("/api/alerts/cam-2/review?action=acknowledged", headers=auth)
    assert response.status_code == 200
    alert = site.reader.get("cam-2")
    assert alert is not None and (alert.review, alert.reviewed_by) == ("acknowledged", "api-token")


@pytest.mark.parametrize("header", ["Bearer wrong-token", f"Bearer {TOKEN}x", f"Basic {TOKEN}", "Bearer "])
def test_a_wrong_token_is_401(build: Build, header: str) -> None:
    site = build(token=TOKEN)
    client = site.client()
    assert client.get("/api/alerts", headers={"Authorization": header}).status_code == 401
    response = client.post("/api/alerts/cam-2/review?action=acknowledged", headers={"Authorization": header})
    assert response.status_code == 401
    assert site.reader.reviews() == []


def test_metrics_and_health_with_a_token(build: Build) -> None:
    site = build(token=TOKEN)
    client = site.client()
    refused = client.get("/metrics")
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    assert client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
    metrics = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert metrics.status_code == 200 and "vigil_stage_frames_in" in metrics.text

    health = client.get("/healthz")  # open, but only the status without the token
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    full = client.get("/healthz", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert full == {"status": "ok", "stalled_cameras": [], "failing_stages": []}


def test_metrics_and_health_without_a_token_are_open(site: Site) -> None:
    client = site.client()
    assert client.get("/metrics").status_code == 200
    assert client.get("/healthz").json()["stalled_cameras"] == []


# ---- media ---------------------------------------------------------------------------------------


def test_media_serves_the_recorded_snapshot_and_clip_with_ranges(site: Site) -> None:
    client, _ = login(site, "victor")
    snapshot = client.get("/media/cam-1.jpg")
    assert snapshot.status_code == 200 and snapshot.headers["content-type"] == "image/jpeg"
    assert snapshot.content == (site.media / CAMERA / "cam-1.jpg").read_bytes()

    whole = client.get("/media/cam-1.mp4")
    assert whole.status_code == 200 and whole.content == CLIP
    assert whole.headers["content-type"] == "video/mp4" and whole.headers["accept-ranges"] == "bytes"
    part = client.get("/media/cam-1.mp4", headers={"Range": "bytes=100-299"})
    assert part.status_code == 206
    assert part.content == CLIP[100:300]
    assert part.headers["content-range"] == f"bytes 100-299/{len(CLIP)}"
    tail = client.get("/media/cam-1.mp4", headers={"Range": "bytes=-16"})
    assert tail.status_code == 206 and tail.content == CLIP[-16:]
    assert client.get("/api/alerts/cam-1").json()["clip"] == "/media/cam-1.mp4"


@pytest.mark.parametrize(
    "name",
    ["nobody.jpg", "cam-2.mp4", "cam-3.jpg", "cam-1.png", "cam-1", "cam-1.jpg.mp4", "..%2Fevents.db"],
)
def test_media_is_404_for_anything_not_recorded(site: Site, name: str) -> None:
    client, _ = login(site, "victor")
    assert client.get(f"/media/{name}").status_code == 404


# ---- the inbox API -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, ["hall-4", "hall-3", "hall-2", "hall-1", "cam-3", "cam-2", "cam-1"]),
        ({"camera": "hall"}, ["hall-4", "hall-3", "hall-2", "hall-1"]),
        ({"state": "ended"}, ["cam-1"]),
        ({"since": str(T0 + 10), "until": str(T0 + 32)}, ["hall-1", "cam-3", "cam-2"]),
    ],
)
def test_api_alerts_pages_through_next(site: Site, params: dict[str, str], expected: list[str]) -> None:
    client, _ = login(site, "victor")
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(10):
        query = params | {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        body = client.get("/api/alerts", params=query).json()
        assert len(body["alerts"]) <= 2
        seen += [a["id"] for a in body["alerts"]]
        cursor = body["next"]
        if cursor is None:
            break
    assert seen == expected


@pytest.mark.parametrize(
    "params",
    [
        {"cursor": "not-a-cursor"},
        {"state": "closed"},
        {"since": "yesterday"},
        {"limit": "0"},
        {"limit": "501"},
    ],
)
def test_api_alerts_refuses_bad_parameters(site: Site, params: dict[str, str]) -> None:
    client, _ = login(site, "victor")
    assert client.get("/api/alerts", params=params).status_code in (400, 422)


def test_openapi_lists_the_api_only(site: Site) -> None:
    paths = site.client().get("/api/openapi.json").json()["paths"]
    assert {"/api/alerts", "/api/alerts/{event_id}/review", "/api/stream"} <= set(paths)
    assert not [p for p in paths if not p.startswith("/api/")]


@pytest.mark.timeout(30)
def test_stream_sends_an_alert_written_after_it_started(site: Site) -> None:
    client, _ = login(site, "victor")
    deadline = time.monotonic() + 20
    with client.stream("GET", "/api/stream") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        assert next(lines) == "retry: 2000"
        site.store.write([event("late-1", camera="hall", at=T0 + 99)])
        event_line = None
        for line in lines:
            assert time.monotonic() < deadline, "no alert on the stream"
            if line.startswith("event: "):
                event_line = line
                data = next(lines)
                break
    assert event_line == "event: alert"
    row = json.loads(data.removeprefix("data: "))
    assert (row["id"], row["camera"], row["open"]) == ("late-1", "hall", True)  # not an older alert


# ---- "normal here" -------------------------------------------------------------------------------


def record_observations(site: Site, event_id: str, frames: int = 6) -> Path:
    """What the event stage would have kept of a fast walker: its attribute rows, frame by frame."""
    rng = np.random.default_rng(3)
    walker = Walker(track_id=7, speed=3.0)
    rows = [take_rows(frame_sample([walker], f / 10, rng).attributes, np.array([0])) for f in range(frames)]
    seen = EventObservations(CAMERA, event_id, 7, (240, 360), concat_rows(rows))
    return seen.save(observations_path(site.media, CAMERA, event_id))


def test_normal_here_without_observations_is_a_clear_400(site: Site) -> None:
    client, csrf = login(site, "alice")
    before = site.models.path(CAMERA).read_bytes()
    response = client.post("/api/alerts/cam-2/review?action=normal_here", headers={"X-CSRF-Token": csrf})
    assert response.status_code == 400
    assert "no recorded observations" in response.text
    assert str(observations_path(site.media, CAMERA, "cam-2")) in response.text
    assert site.models.path(CAMERA).read_bytes() == before
    assert client.get("/api/cameras/cam/versions").json()["current"] == 1
    assert site.reader.reviews() == []


@pytest.mark.parametrize(
    ("undoer", "allowed"), [("alice", True), ("ada", True), ("bob", False), ("victor", False)]
)
def test_normal_here_makes_a_model_version_its_maker_or_an_admin_can_undo(
    site: Site, undoer: str, allowed: bool
) -> None:
    record_observations(site, "cam-2")
    original = site.models.path(CAMERA).read_bytes()
    alice, csrf = login(site, "alice")
    assert "this object's 6 observations" in alice.get("/alerts/cam-2").text

    taught = alice.post("/api/alerts/cam-2/review?action=normal_here", headers={"X-CSRF-Token": csrf})
    assert taught.status_code == 200, taught.text
    body = taught.json()
    assert (body["model_version"], body["observations"], body["weight"]) == (2, 6, 5)
    assert "speed" in body["attributes"]
    versions = alice.get("/api/cameras/cam/versions").json()
    assert versions["current"] == 2
    assert (versions["versions"][1]["by"], versions["versions"][1]["event_id"]) == ("alice", "cam-2")
    assert site.models.path(CAMERA).read_bytes() != original
    alert = alice.get("/api/alerts/cam-2").json()
    assert alert["review"] == "normal_here" and alert["reviews"][0]["model_version"] == 2

    client, token = login(site, undoer)
    response = client.post("/api/cameras/cam/versions/2/undo", headers={"X-CSRF-Token": token})
    if not allowed:
        assert response.status_code == 403
        assert client.get("/api/cameras/cam/versions").json()["current"] == 2
        return
    assert response.status_code == 200, response.text
    assert response.json() == {"camera": CAMERA, "undone": 2, "current": 1}
    assert site.models.path(CAMERA).read_bytes() == original
    after = client.get("/api/alerts/cam-2").json()
    assert after["review"] is None
    actions = [(r["action"], r["user"], r["undone_by"]) for r in after["reviews"]]
    assert actions == [("undo_normal_here", undoer, None), ("normal_here", "alice", undoer)]
    again = client.post("/api/cameras/cam/versions/2/undo", headers={"X-CSRF-Token": token})
    assert again.status_code == 400 and "version 2 is not current (1 is)" in again.text


@pytest.mark.parametrize(
    ("back", "location"),
    [
        ("/alerts/cam-2", "/alerts/cam-2"),
        ("", "/cameras/cam"),
        ("//evil.example/x", "/cameras/cam"),  # never off-site
        ("https://evil.example/x", "/cameras/cam"),
    ],
)
def test_undo_form_goes_back_only_within_the_console(site: Site, back: str, location: str) -> None:
    record_observations(site, "cam-2")
    client, csrf = login(site, "alice")
    taught = client.post(
        "/alerts/cam-2/review", data={"action": "normal_here", "csrf": csrf}, follow_redirects=False
    )
    assert (taught.status_code, taught.headers["location"]) == (303, "/alerts/cam-2")
    assert "Model v2 made from this alert by alice" in client.get("/alerts/cam-2").text

    response = client.post(
        "/cameras/cam/versions/2/undo", data={"csrf": csrf, "back": back}, follow_redirects=False
    )
    assert (response.status_code, response.headers["location"]) == (303, location)
    assert client.get("/api/cameras/cam/versions").json()["current"] == 1
