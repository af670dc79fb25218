"""The console's web app: HTML pages (Jinja2, a little plain JavaScript, no build step, no CDN) and the
JSON API they use, which scripts call too (OpenAPI at /api/openapi.json), plus /metrics and /healthz.

Who may do what: a browser logs in (session cookie: HttpOnly, SameSite=Strict, Secure over HTTPS) and
every form and API write carries the session's CSRF token; a machine client sends the bearer token of
`http.token_env` instead (operator rights, no cookie, so no CSRF). Viewers read, operators review,
admins also undo another operator's model version.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import json
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, Form, HTTPException, Query, Request
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pipeline.console.alerts import STATES, AlertFilter, AlertReader, AlertRow
from pipeline.console.cameras import CameraBoard
from pipeline.console.ranges import NormalRanges
from pipeline.console.reviewing import FeedbackOutcome, Reviewing, ReviewRefused
from pipeline.console.users import LoginThrottled, Role, Session, UserStore, check_csrf
from pipeline.errors import VigilError
from pipeline.http import HealthProbe
from pipeline.metrics import Metrics
from pipeline.model_store import ModelVersion

log = logging.getLogger("vigil.console")
HERE = Path(__file__).parent
COOKIE = "vigil_session"
LOGIN_COOKIE = "vigil_login"
ACTIONS = {"acknowledged": "Acknowledge", "false_alarm": "False alarm", "normal_here": "Normal here"}


@dataclass(frozen=True)
class Identity:
    """Who is asking: a logged-in user (with their session) or the machine token."""

    user: str
    role: Role
    session: Session | None

    @property
    def csrf(self) -> str:
        return self.session.csrf if self.session is not None else ""


@dataclass
class Console:
    """Everything the pages and the API read and act on (built by the composition root)."""

    users: UserStore
    reader: AlertReader
    reviewing: Reviewing
    board: CameraBoard
    metrics: Metrics
    health: HealthProbe
    token: str | None
    feedback_weight: int
    secure_cookies: str
    retention: Callable[[], dict[str, object]] | None = None
    ranges: NormalRanges | None = None


# ---- who is asking ---------------------------------------------------------------------------------


def identity(request: Request) -> Identity | None:
    console: Console = request.app.state.console
    if console.token and request.headers.get("authorization", "").startswith("Bearer "):
        return Identity("api-token", Role.operator, None) if _bearer_ok(request, console.token) else None
    token = request.cookies.get(COOKIE)
    session = console.users.session(token) if token else None
    return None if session is None else Identity(session.user, session.role, session)


def page_user(request: Request) -> Identity:
    who = identity(request)
    if who is None:
        raise HTTPException(303, headers={"Location": "/login"})
    return who


def api_user(request: Request) -> Identity:
    who = identity(request)
    if who is None:
        raise HTTPException(401, "log in or send the bearer token", headers={"WWW-Authenticate": "Bearer"})
    return who


Page = Annotated[Identity, Depends(page_user)]
Api = Annotated[Identity, Depends(api_user)]


def alert_filters(
    camera: str | None = None,
    state: str | None = None,
    reason: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> AlertFilter:
    """The inbox's filters from the query (pages and API alike); 400 with the reason when one is bad."""
    try:
        return AlertFilter(camera or None, state or None, reason or None, _time(since), _time(until))
    except VigilError as exc:
        raise HTTPException(400, str(exc)) from None


Filters = Annotated[AlertFilter, Depends(alert_filters)]


def create_app(console: Console) -> FastAPI:
    app = FastAPI(title="Vigil console API", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters["when"] = _when
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.state.console = console

    async def checked_write(request: Request, who: Identity, form_csrf: str | None) -> None:
        """Writes from a browser session need the session's CSRF token (form field or header)."""
        if who.session is None:
            return  # bearer token: no cookie, nothing to forge
        submitted = form_csrf or request.headers.get("x-csrf-token", "")
        if not check_csrf(who.session, submitted):
            raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")

    def render(request: Request, name: str, who: Identity | None, **context: object) -> HTMLResponse:
        return templates.TemplateResponse(
            request, name, {"who": who, "states": STATES, "actions": ACTIONS, **context}
        )

    # ---- login -----------------------------------------------------------------------------------

    def login_form(request: Request, error: str | None, status: int = 200) -> HTMLResponse:
        """The login page with a fresh pre-session CSRF token, also set as a cookie (double submit:
        another site can make a browser post the form, but not read or set this cookie)."""
        token = secrets.token_urlsafe(24)
        response = render(request, "login.html", None, error=error, login_csrf=token)
        response.status_code = status
        response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="strict", path="/login")
        return response

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_page(request: Request) -> HTMLResponse:
        return login_form(request, None)

    @app.post("/login", include_in_schema=False)
    def login(
        request: Request,
        username: Annotated[str, Form()] = "",
        password: Annotated[str, Form()] = "",
        csrf: Annotated[str, Form()] = "",
    ) -> Response:
        client = request.client.host if request.client else "?"
        expected = request.cookies.get(LOGIN_COOKIE, "")
        if not expected or not hmac.compare_digest(expected.encode(), csrf.encode()):
            return login_form(request, "the login form expired: please try again", 403)
        try:
            user = console.users.authenticate(username, password, client)
        except LoginThrottled as exc:
            response = login_form(request, str(exc), 429)
            response.headers["Retry-After"] = str(exc.retry_after_s)
            return response
        if user is None:
            log.warning("console login refused", extra={"client": client})
            return login_form(request, "wrong user name or password", 401)
        session = console.users.create_session(user)
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(LOGIN_COOKIE, path="/login")
        secure = console.secure_cookies == "always" or (
            console.secure_cookies == "auto" and request.url.scheme == "https"
        )
        response.set_cookie(
            COOKIE, session.token, httponly=True, samesite="strict", secure=secure, path="/",
            max_age=int(session.expires_at - dt.datetime.now().timestamp()),
        )  # fmt: skip
        log.info("console login", extra={"user": user.name, "client": client})
        return response

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request, who: Page, csrf: Annotated[str, Form()] = "") -> Response:
        await checked_write(request, who, csrf)
        token = request.cookies.get(COOKIE)
        if token:
            console.users.end_session(token)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    # ---- pages -----------------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def cameras_page(request: Request, who: Page) -> HTMLResponse:
        return render(request, "cameras.html", who, cameras=console.board.cameras())

    @app.get("/alerts", response_class=HTMLResponse, include_in_schema=False)
    def inbox_page(request: Request, who: Page, filters: Filters, cursor: str | None = None) -> HTMLResponse:
        rows, following = console.reader.page(filters, 50, cursor)
        query = {k: v for k, v in request.query_params.items() if k != "cursor"}
        since, until = query.get("since", ""), query.get("until", "")  # as typed, for the form
        return render(
            request, "inbox.html", who, rows=rows, next_cursor=following, filters=filters, query=query,
            cameras=console.board.names(), reasons=console.reader.reasons(), since=since,
            until=until, live=cursor is None and not until, last_seq=console.reader.last_seq(),
        )  # fmt: skip

    @app.get("/alerts/{event_id}/row", response_class=HTMLResponse, include_in_schema=False)
    def inbox_row(request: Request, who: Page, event_id: str) -> HTMLResponse:
        row = _alert_or_404(console.reader, event_id)
        return render(request, "_row.html", who, row=row)

    @app.get("/alerts/{event_id}", response_class=HTMLResponse, include_in_schema=False)
    def alert_page(request: Request, who: Page, event_id: str) -> HTMLResponse:
        row = _alert_or_404(console.reader, event_id)
        seen = console.board.observations(row.camera, event_id)  # read once for the count, size, ranges
        message = console.reader.message(event_id) or {}
        versions, current = console.reviewing.models.versions(row.camera)
        return render(
            request, "alert.html", who, row=row, message=message, reviews=console.reader.reviews(event_id),
            versions=versions, current=current, weight=console.feedback_weight,
            observations=None if seen is None else len(seen),
            size=console.board.frame_size(row, seen),
            ranges=console.ranges.of(row.camera, seen) if console.ranges is not None else {},
        )  # fmt: skip

    @app.post("/alerts/{event_id}/review", include_in_schema=False)
    async def review_form(
        request: Request, who: Page, event_id: str, action: Annotated[str, Form()] = "",
        csrf: Annotated[str, Form()] = "",
    ) -> Response:  # fmt: skip
        await checked_write(request, who, csrf)
        _review(console, event_id, action, who)
        return RedirectResponse(f"/alerts/{event_id}", status_code=303)

    @app.post("/cameras/{camera}/versions/{number}/undo", include_in_schema=False)
    async def undo_form(
        request: Request, who: Page, camera: str, number: int, csrf: Annotated[str, Form()] = "",
        back: Annotated[str, Form()] = "",
    ) -> Response:  # fmt: skip
        await checked_write(request, who, csrf)
        _undo(console, camera, number, who)
        target = back if back.startswith("/") and not back.startswith("//") else f"/cameras/{camera}"
        return RedirectResponse(target, status_code=303)

    @app.get("/cameras/{camera}", response_class=HTMLResponse, include_in_schema=False)
    def camera_page(request: Request, who: Page, camera: str) -> HTMLResponse:
        since = dt.datetime.now().timestamp() - 3600
        versions, current = console.reviewing.models.versions(camera)
        return render(
            request, "camera.html", who, camera=console.board.camera(camera), versions=versions,
            current=current, scores=console.reader.scores(camera, since),
            alerts=console.reader.timeline(camera, since), since=since,
        )  # fmt: skip

    @app.get("/audit", response_class=HTMLResponse, include_in_schema=False)
    def audit_page(request: Request, who: Page, before: int | None = None) -> HTMLResponse:
        rows = console.reader.reviews(limit=100, before=before)
        return render(request, "audit.html", who, rows=rows, retention=_retention(console))

    # ---- media -----------------------------------------------------------------------------------

    @app.get("/media/{name}", include_in_schema=False)
    def media(who: Page, name: str) -> Response:
        """An event's snapshot (<id>.jpg) or clip (<id>.mp4, range requests): only the files the store
        recorded for that event, never a path from the request."""
        event_id, _, ext = name.rpartition(".")
        row = _alert_or_404(console.reader, event_id)
        path = {"jpg": row.snapshot_path, "mp4": row.clip_path}.get(ext)
        if not path or not Path(path).is_file():
            raise HTTPException(404, "no such media (not recorded, or deleted by retention)")
        kind = "image/jpeg" if ext == "jpg" else "video/mp4"
        return FileResponse(path, media_type=kind, filename=name if ext == "mp4" else None)

    @app.get("/api/cameras/{camera}/preview.jpg", include_in_schema=False)
    def preview(who: Page, camera: str) -> Response:
        live = console.board.live
        shot = live.preview(camera) if live is not None else None
        if shot is None:
            return Response(status_code=204)
        jpeg, number = shot
        return Response(
            jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store", "X-Frame": str(number)}
        )

    # ---- JSON API --------------------------------------------------------------------------------

    @app.get("/api/cameras", tags=["cameras"])
    def api_cameras(who: Api) -> dict[str, object]:
        """Every camera with its state, analysed fps, drops, alerts today and model version."""
        return {"cameras": [c.to_json() for c in console.board.cameras()]}

    @app.get("/api/alerts", tags=["alerts"])
    def api_alerts(
        who: Api, filters: Filters, cursor: str | None = None, limit: Annotated[int, Query(ge=1, le=500)] = 50
    ) -> dict[str, object]:
        """Alerts newest first, filtered; `next` is the cursor of the following page (null: last page).
        `since`/`until`: ISO 8601 times or Unix seconds."""
        rows, following = console.reader.page(filters, limit, cursor)
        return {"alerts": [r.to_json() for r in rows], "next": following}

    @app.get("/api/alerts/{event_id}", tags=["alerts"])
    def api_alert(who: Api, event_id: str) -> dict[str, object]:
        """One alert: its inbox row, its latest message (reasons, trajectory) and its reviews."""
        row = _alert_or_404(console.reader, event_id)
        return {
            **row.to_json(),
            "message": console.reader.message(event_id),
            "reviews": [r.__dict__ for r in console.reader.reviews(event_id)],
        }

    @app.post("/api/alerts/{event_id}/review", tags=["alerts"])
    async def api_review(request: Request, who: Api, event_id: str, action: str) -> dict[str, object]:
        """acknowledged | false_alarm | normal_here (operators; normal_here makes a model version)."""
        await checked_write(request, who, None)
        outcome = _review(console, event_id, action, who)
        body: dict[str, object] = {"id": event_id, "review": action}
        if outcome is not None:
            body["model_version"] = outcome.version.number
            body["observations"] = outcome.observations
            body["weight"] = outcome.weight
            body["attributes"] = list(outcome.taken)
        return body

    @app.post("/api/cameras/{camera}/versions/{number}/undo", tags=["cameras"])
    async def api_undo(request: Request, who: Api, camera: str, number: int) -> dict[str, object]:
        """Take back a model version made by feedback (its maker or an admin)."""
        await checked_write(request, who, None)
        undone = _undo(console, camera, number, who)
        return {"camera": camera, "undone": undone.number, "current": undone.parent}

    @app.get("/api/cameras/{camera}/versions", tags=["cameras"])
    def api_versions(who: Api, camera: str) -> dict[str, object]:
        versions, current = console.reviewing.models.versions(camera)
        return {"current": current, "versions": [v.__dict__ for v in versions]}

    @app.get("/api/audit", tags=["audit"])
    def api_audit(
        who: Api, before: int | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 200
    ) -> dict:
        """Every review action, newest first: who, when, which event, which model version."""
        return {"reviews": [r.__dict__ for r in console.reader.reviews(limit=limit, before=before)]}

    @app.get("/api/retention", tags=["audit"])
    def api_retention(who: Api) -> dict[str, object]:
        return _retention(console) or {}

    @app.get("/api/stream", tags=["alerts"])
    async def api_stream(request: Request, who: Api, after: int | None = None) -> StreamingResponse:
        """Server-sent events: one `alert` message (the inbox row as JSON) per new or changed alert."""
        start = console.reader.last_seq() if after is None else after

        async def events() -> AsyncIterator[bytes]:
            seq = start
            yield b"retry: 2000\n\n"
            idle = 0.0
            while not await request.is_disconnected():
                # an indexed query of well under a millisecond: run on the loop (a worker thread would
                # outlive the server's shutdown while a stream is open)
                rows = console.reader.changed_since(seq)
                for row in rows:
                    seq = max(seq, row.last_seq)
                    yield f"id: {seq}\nevent: alert\ndata: {_json(row.to_json())}\n\n".encode()
                if rows:
                    idle = 0.0
                    continue
                await asyncio.sleep(0.1)
                idle += 0.1
                if idle >= 15.0:
                    idle = 0.0
                    yield b": keepalive\n\n"

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
        )

    # ---- metrics and health ----------------------------------------------------------------------

    @app.get("/metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        if console.token and not _bearer_ok(request, console.token):
            return PlainTextResponse("missing or wrong bearer token\n", 401, {"WWW-Authenticate": "Bearer"})
        return Response(generate_latest(console.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", include_in_schema=False)
    def healthz(request: Request) -> Response:
        code, body = console.health.response(not console.token or _bearer_ok(request, console.token))
        return Response(body, code, media_type="application/json")

    @app.exception_handler(VigilError)
    async def vigil_error(request: Request, exc: VigilError) -> Response:
        status = 403 if isinstance(exc, ReviewRefused) else 400
        return PlainTextResponse(str(exc) + "\n", status)

    return app


# ---- helpers ---------------------------------------------------------------------------------------


def _review(console: Console, event_id: str, action: str, who: Identity) -> FeedbackOutcome | None:
    if action not in ACTIONS:
        raise HTTPException(400, f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}")
    return console.reviewing.review(event_id, action, who.user, who.role)


def _undo(console: Console, camera: str, number: int, who: Identity) -> ModelVersion:
    return console.reviewing.undo(camera, number, who.user, who.role)


def _alert_or_404(reader: AlertReader, event_id: str) -> AlertRow:
    row = reader.get(event_id)
    if row is None:
        raise HTTPException(404, f"no alert {event_id!r}")
    return row


def _bearer_ok(request: Request, token: str) -> bool:
    return hmac.compare_digest(request.headers.get("authorization", "").encode(), f"Bearer {token}".encode())


def _retention(console: Console) -> dict[str, object] | None:
    return console.retention() if console.retention is not None else None


def _time(value: str | None) -> float | None:
    """ISO 8601 (local time without a zone) or Unix seconds; None for empty."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return dt.datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise HTTPException(400, f"not a time: {value!r} (ISO 8601 or Unix seconds)") from None


def _when(value: float | None) -> str:
    if not value:
        return ""
    return dt.datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S")


def _json(data: dict[str, object]) -> str:
    return json.dumps(data, separators=(",", ":"))
