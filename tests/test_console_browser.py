"""The operator console in a real browser: Playwright driving Debian's chromium.

First against a live `vigil replay --realtime` of Ped2's Test004 (log in, the camera preview changes, an
alert arrives in the inbox without a reload while the clip plays, its reasons show); then, once that replay
has ended, against `vigil serve` over the event store it left (the clip with range requests, CSRF and role
checks, "normal here" moving the model version and undo moving it back, the audit log, the JSON API).

With VIGIL_SCREENSHOTS set, the main pages are saved there (cameras.png, inbox.png, alert.png,
camera.png, audit.png) for the README.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import DETECTOR, POSE
from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect, sync_playwright
from test_cli import VIGIL, env_for

CHROMIUM = Path("/usr/bin/chromium")
WAIT_MS = 30_000
ALICE = ("alice", "alice-operator-pw")
VICTOR = ("victor", "victor-viewer-pw")
API_TOKEN_ENV = "VIGIL_TEST_API_TOKEN"
API_TOKEN = "api-t0ken-for-browser-tests"
WRONG_LOGIN = "wrong user name or password"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"no chromium at {CHROMIUM} (Debian package chromium)"),
]


# ---- the servers -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config_text(folder: Path, clip: Path, port: int, token_env: str | None = None) -> str:
    """The replay's config: one camera on Test004 with the fitted model, every store in `folder`."""
    model = folder / "models" / "cam4.npz"
    token = f"  token_env: {token_env}\n" if token_env else ""
    return (
        f"cameras:\n  - {{name: cam4, url: '{clip}', analysis_fps: 5, model: '{model}'}}\n"
        f"http:\n  port: {port}\n{token}"
        "runtime:\n  drain_timeout_s: 10.0\n"
        "sinks:\n  sqlite: {path: events.db}\n  jsonl: {path: events.jsonl}\n"
        "events: {media_dir: media}\nconsole: {path: console.db}\nscoring: {models_dir: models}\n"
        f"detector: {{model: '{DETECTOR}'}}\npose: {{model: '{POSE}'}}\nappearance: {{model: '{POSE}'}}\n"
    )


def run_vigil(*args: str, cwd: Path, stdin: str | None = None, timeout: float = 300) -> None:
    result = subprocess.run(
        [*VIGIL, *args], cwd=cwd, env=env_for(), input=stdin, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"vigil {' '.join(args)} failed:\n{result.stderr[-3000:]}"


def answers(url: str) -> bool:
    """Any HTTP answer counts (a 503 while the cameras start is still the server up)."""
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


@dataclass
class Site:
    """The console's server processes, one after the other on the same port, and their logs."""

    folder: Path
    clip: Path
    port: int
    replay: subprocess.Popen | None = None
    serve: subprocess.Popen | None = None
    logs: list[Path] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tail(self, chars: int = 3000) -> str:
        return "\n".join(f"--- {p.name}:\n{p.read_text(errors='replace')[-chars:]}" for p in self.logs)

    def start(self, *args: str, log: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        path = self.folder / log
        self.logs.append(path)
        with path.open("w") as out:  # the child keeps its own descriptor
            return subprocess.Popen(
                [*VIGIL, *args], cwd=self.folder, env=env or env_for(), stdout=out, stderr=subprocess.STDOUT
            )

    def wait_until_up(self, proc: subprocess.Popen, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while not answers(f"{self.url}/healthz"):
            if proc.poll() is not None:
                raise AssertionError(f"vigil exited ({proc.returncode}) before serving:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.url}/healthz silent after {timeout_s}s:\n{self.tail()}")
            time.sleep(0.1)


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, ped2: Path) -> Iterator[Site]:
    """A 20-frame model of cam4, an operator and a viewer, and `vigil replay --realtime` of Test004
    (~18 s) serving the console; the replay has just answered /healthz when this returns."""
    folder = tmp_path_factory.mktemp("console")
    clip = ped2 / "test" / "Test004.mp4"
    port = free_port()
    cfg = folder / "cfg.yaml"
    cfg.write_text(config_text(folder, clip, port))
    run_vigil(
        "fit", str(ped2 / "train" / "Train001.mp4"), "--camera", "cam4", "-c", str(cfg),
        "--max-frames", "20", "--out", str(folder / "models" / "cam4.npz"), cwd=folder,
    )  # fmt: skip
    for (name, password), role in ((ALICE, "operator"), (VICTOR, "viewer")):
        run_vigil("user", "add", name, "--role", role, "--password-stdin", "-c", str(cfg),
                  cwd=folder, stdin=password + "\n", timeout=60)  # fmt: skip
    site = Site(folder, clip, port)
    site.replay = site.start("replay", str(clip), "--camera", "cam4", "-c", str(cfg), "--realtime",
                             log="replay.log")  # fmt: skip
    try:
        site.wait_until_up(site.replay)
        yield site
    finally:
        stop(site.replay)
        stop(site.serve)


@pytest.fixture(scope="module")
def served(site: Site) -> Site:
    """The replay ended by itself; `vigil serve` now serves the console over the store it left, with an
    API token set (http.token_env) so that the bearer route of the JSON API is exercised too."""
    assert site.replay is not None
    try:
        code = site.replay.wait(timeout=180)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the realtime replay of an 18 s clip still runs after 180 s:\n{site.tail()}")
    assert code == 0, f"vigil replay exited {code}:\n{site.tail()}"
    cfg = site.folder / "cfg-serve.yaml"
    cfg.write_text(config_text(site.folder, site.clip, site.port, token_env=API_TOKEN_ENV))
    site.serve = site.start("serve", "-c", str(cfg), log="serve.log", env=env_for({API_TOKEN_ENV: API_TOKEN}))
    site.wait_until_up(site.serve, timeout_s=60)
    return site


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def new_context(browser: Browser) -> Iterator[Callable[[], BrowserContext]]:
    """Browser contexts (each its own cookies) that are closed after the test."""
    contexts: list[BrowserContext] = []

    def make() -> BrowserContext:
        ctx = browser.new_context(viewport={"width": 1280, "height": 800})
        ctx.set_default_timeout(WAIT_MS)
        contexts.append(ctx)
        return ctx

    yield make
    for ctx in contexts:
        ctx.close()


# ---- page helpers ----------------------------------------------------------------------------------


def shoot(page: Page, name: str) -> None:
    """Save the page for the README when VIGIL_SCREENSHOTS names a folder."""
    folder = os.environ.get("VIGIL_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / name), full_page=True)


def submit_login(page: Page, url: str, name: str, password: str) -> None:
    page.goto(f"{url}/login")
    form = page.locator("form#login")
    form.locator("input[name=username]").fill(name)
    form.locator("input[name=password]").fill(password)
    form.locator("button[type=submit]").click()


def log_in(page: Page, url: str, name: str, password: str) -> None:
    submit_login(page, url, name, password)
    try:
        page.wait_for_url(lambda u: "/login" not in u, timeout=WAIT_MS)
    except Exception as exc:
        error = page.locator(".error")
        said = error.first.inner_text() if error.count() else "(no .error)"
        raise AssertionError(f"{name} could not log in: {said}") from exc


def wait_loaded(page: Page, css: str) -> None:
    """The image `css` has loaded a picture (not a broken or pending one)."""
    page.wait_for_function(
        "s => { const i = document.querySelector(s); return !!i && i.complete && i.naturalWidth > 0; }",
        arg=css,
        timeout=WAIT_MS,
    )


def version_number(locator: Locator) -> int:
    expect(locator).to_have_text(re.compile(r"v\d+"), timeout=WAIT_MS)
    return int(re.search(r"v(\d+)", locator.inner_text())[1])  # type: ignore[index]


def current_version(page: Page, url: str) -> str:
    page.goto(f"{url}/cameras/cam4")
    current = page.locator("table#versions tr.version.current[data-version]")
    expect(current, "exactly one current model version on the camera page").to_have_count(1, timeout=WAIT_MS)
    return (current.get_attribute("data-version") or "").removeprefix("v")


def every_form_has_csrf(page: Page) -> None:
    """Every form of a logged-in page carries the session's CSRF token (the login form has no session)."""
    forms = page.locator("form")
    with_token = page.locator("form:has(input[type=hidden][name=csrf])")
    assert forms.count() == with_token.count(), f"{page.url}: a form without a hidden csrf input"


# ---- the tests -------------------------------------------------------------------------------------


@pytest.mark.timeout(600)
def test_live_replay_in_the_browser(site: Site, new_context: Callable[[], BrowserContext]) -> None:
    url = site.url
    ctx = new_context()
    page = ctx.new_page()

    # not logged in: every page sends you to the login form
    page.goto(f"{url}/")
    page.wait_for_url(re.compile(r"/login"), timeout=WAIT_MS)
    expect(page.locator("form#login")).to_be_visible(timeout=WAIT_MS)

    # a wrong password and an unknown user read the same: nothing says which part was wrong
    said = []
    for name, password in ((ALICE[0], "not-her-password"), ("mallory", ALICE[1])):
        submit_login(page, url, name, password)
        error = page.locator(".error")
        expect(error).to_contain_text(WRONG_LOGIN, ignore_case=True, timeout=WAIT_MS)
        said.append(error.inner_text().strip())
        assert "/login" in page.url
    assert said[0] == said[1], f"the login errors tell a wrong password from an unknown user: {said}"
    page.goto(f"{url}/")
    page.wait_for_url(re.compile(r"/login"), timeout=WAIT_MS)  # still not logged in

    log_in(page, url, *ALICE)

    # the inbox, open from the start: an alert must arrive in it without a reload
    inbox = ctx.new_page()
    inbox.goto(f"{url}/alerts")
    expect(inbox.locator("table#inbox")).to_be_visible(timeout=WAIT_MS)
    rows = inbox.locator("table#inbox tbody tr.alert[data-event-id]")
    known = rows.evaluate_all("rs => rs.map(r => r.dataset.eventId)")
    inbox.evaluate("() => { window.__vigilNotReloaded = true; }")

    # the camera preview follows the clip
    page.goto(f"{url}/")
    card = page.locator('.camera-card[data-camera="cam4"]')
    expect(card).to_be_visible(timeout=WAIT_MS)
    expect(card.locator(".state")).not_to_be_empty(timeout=WAIT_MS)
    version_number(card.locator(".model-version"))
    preview_css = '.camera-card[data-camera="cam4"] img.preview'
    wait_loaded(page, preview_css)
    preview = page.locator(preview_css)
    first_src, first_shot = preview.get_attribute("src"), preview.screenshot()
    deadline = time.monotonic() + 20
    while True:
        time.sleep(0.5)
        wait_loaded(page, preview_css)
        src, shot = preview.get_attribute("src"), preview.screenshot()
        if shot != first_shot:
            break
        assert time.monotonic() < deadline, (
            f"the cam4 preview did not change in 20 s (src {first_src!r} -> {src!r}):\n{site.tail()}"
        )
    if os.environ.get("VIGIL_SCREENSHOTS"):  # the card's figures as they are now, not at page load
        page.reload()
        wait_loaded(page, preview_css)
        shoot(page, "cameras.png")

    # the alert arrives in the open inbox while the replay plays
    try:
        inbox.wait_for_function(
            "known => [...document.querySelectorAll('table#inbox tbody tr.alert[data-event-id]')]"
            ".some(r => !known.includes(r.dataset.eventId))",
            arg=known,
            timeout=60_000,
        )
    except Exception as exc:
        raise AssertionError(
            f"no new alert row in the open inbox within 60 s ({len(known)} at load):\n{site.tail()}"
        ) from exc
    assert inbox.evaluate("() => window.__vigilNotReloaded === true"), "the inbox reloaded to show the alert"
    assert site.replay is not None and site.replay.poll() is None, (
        "the alert showed only after the replay had ended"
    )
    ids = rows.evaluate_all("rs => rs.map(r => r.dataset.eventId)")
    event_id = next(i for i in ids if i not in known)
    row = inbox.locator(f'table#inbox tbody tr.alert[data-event-id="{event_id}"]')
    expect(row.locator(".reason-chip").first).to_be_visible(timeout=WAIT_MS)
    expect(row.locator("img.snapshot-thumb")).to_be_attached(timeout=WAIT_MS)
    expect(row.locator(".review-state")).not_to_be_empty(timeout=WAIT_MS)

    # open it: its reasons are there already
    # (a DOM click on the link itself: a mouse click at its position could land on the row a newer
    # alert pushes under the pointer meanwhile)
    link = row.locator("a.open")
    expect(link).to_have_attribute("href", re.compile(rf"/alerts/{re.escape(event_id)}$"))
    link.dispatch_event("click")
    try:
        inbox.wait_for_url(re.compile(rf"/alerts/{re.escape(event_id)}$"), timeout=WAIT_MS)
    except Exception as exc:
        raise AssertionError(f"opening alert {event_id} from the inbox led to {inbox.url}") from exc
    reasons = inbox.locator("li.reason[data-attribute]")
    expect(reasons.first).to_be_visible(timeout=WAIT_MS)
    assert all(reasons.evaluate_all("rs => rs.map(r => r.dataset.attribute)")), "a reason without attribute"


@pytest.mark.timeout(600)
def test_review_in_the_browser(served: Site, new_context: Callable[[], BrowserContext]) -> None:
    url = served.url
    ctx = new_context()
    page = ctx.new_page()
    log_in(page, url, *ALICE)

    # the inbox lists what the replay raised; the JSON API agrees, by cookie and by bearer token
    page.goto(f"{url}/alerts")
    rows = page.locator("table#inbox tbody tr.alert[data-event-id]")
    expect(rows.first).to_be_visible(timeout=WAIT_MS)
    event_id = rows.first.get_attribute("data-event-id")
    assert event_id
    api = ctx.request.get(f"{url}/api/alerts")
    assert api.status == 200, api.text()[:500]
    body = api.json()
    assert set(body) >= {"alerts", "next"} and body["alerts"], body
    assert event_id in json.dumps(body["alerts"]), f"{event_id} not in /api/alerts"
    stranger = new_context().request
    anonymous = stranger.get(f"{url}/api/alerts", max_redirects=0)
    assert anonymous.status != 200 and event_id not in anonymous.text(), "the API answers without a login"
    bearer = stranger.get(f"{url}/api/alerts", headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert bearer.status == 200 and event_id in bearer.text(), f"bearer token refused: {bearer.status}"

    # the alert: snapshot, trajectory, reasons, and its clip with range requests
    page.goto(f"{url}/alerts/{event_id}")
    wait_loaded(page, "img.snapshot")
    expect(page.locator("svg.trajectory")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("li.reason[data-attribute]").first).to_be_visible(timeout=WAIT_MS)
    source = page.locator("video#clip source")
    expect(source).to_have_attribute("src", re.compile(rf"/media/{re.escape(event_id)}\.mp4$"))
    expect(page.locator("a.download")).to_have_attribute("href", re.compile(r"\S"))
    media = f"{url}/media/{event_id}.mp4"
    part = ctx.request.get(media, headers={"Range": "bytes=0-99"})
    assert part.status == 206, f"range request on the clip: {part.status}"
    assert len(part.body()) == 100 and part.body()[4:8] == b"ftyp", part.body()[:16]
    assert part.headers.get("content-range", "").startswith("bytes 0-99/"), part.headers
    every_form_has_csrf(page)
    expect(page.locator(".review-state")).not_to_be_empty(timeout=WAIT_MS)
    state_before = page.locator(".review-state").inner_text()
    shoot(page, "alert.png")

    # a review without its CSRF token, or with a forged one, is refused and changes nothing
    review = f"{url}/alerts/{event_id}/review"
    for form in ({"action": "acknowledged"}, {"action": "acknowledged", "csrf": "forged"}):
        refused = ctx.request.post(review, form=form, max_redirects=0)
        assert refused.status == 403, f"review with {form}: {refused.status}"
    page.reload()
    expect(page.locator(".review-state")).to_have_text(state_before, timeout=WAIT_MS)

    # "normal here" learns: the model version moves on; undo moves it back
    version = version_number(page.locator(".model-version"))
    page.locator("form.review button[name=action][value=normal_here]").click()
    expect(page.locator(".review-state")).to_contain_text("normal", ignore_case=True, timeout=60_000)
    expect(page.locator(".model-version")).to_have_text(re.compile(rf"\bv{version + 1}\b"), timeout=60_000)
    assert current_version(page, url) == str(version + 1)
    expect(page.locator("table#versions tr.version[data-version]")).to_have_count(2, timeout=WAIT_MS)
    shoot(page, "camera.png")
    page.goto(f"{url}/alerts/{event_id}")
    page.locator("form.undo button").click()
    expect(page.locator(".model-version")).to_have_text(re.compile(rf"\bv{version}\b"), timeout=60_000)
    assert current_version(page, url) == str(version)

    page.goto(f"{url}/alerts")
    expect(rows.first).to_be_visible(timeout=WAIT_MS)
    shoot(page, "inbox.png")

    # the audit log says who did what
    page.goto(f"{url}/audit")
    audit = page.locator("table#audit tbody tr")
    expect(audit.filter(has_text="alice").filter(has_text=re.compile("normal", re.I)).first).to_be_visible(
        timeout=WAIT_MS
    )
    shoot(page, "audit.png")

    # a viewer sees the alert but cannot review it, not even with a valid CSRF token
    viewer = new_context()
    vpage = viewer.new_page()
    log_in(vpage, url, *VICTOR)
    vpage.goto(f"{url}/alerts/{event_id}")
    expect(vpage.locator("li.reason[data-attribute]").first).to_be_visible(timeout=WAIT_MS)
    expect(vpage.locator("form.review button[name=action]")).to_have_count(0)
    token = vpage.locator("form#logout input[name=csrf]").input_value()
    assert token
    refused = viewer.request.post(review, form={"action": "acknowledged", "csrf": token}, max_redirects=0)
    assert refused.status == 403, f"a viewer's review: {refused.status}"

    # logging out ends the session
    page.locator("form#logout button").click()
    page.goto(f"{url}/")
    page.wait_for_url(re.compile(r"/login"), timeout=WAIT_MS)
