"""Console access control: users with roles, argon2id passwords, login throttling and sessions.

Everything lives in one SQLite file (`console.path`) so the web app and `vigil user` share it; one
connection behind a lock makes the store safe from any thread (as in pipeline/sinks/sqlite.py).
A session token is handed out once and only its SHA-256 is stored, so a copy of the file cannot be
used to log in. Login failures are counted per (name, client address) and, with a larger budget,
per name; the answer to a refused login never tells whether the name exists.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import re
import secrets
import sqlite3
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import TracebackType

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from pipeline.config import ConsoleConfig
from pipeline.errors import VigilError
from pipeline.logs import fields
from pipeline.sqlite_shared import SharedConnection

log = logging.getLogger("vigil.console")

NAME_RULE = "1-64 characters of A-Z a-z 0-9 _ . @ -"
_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
MIN_PASSWORD_CHARS = 8
#: longer passwords are refused: hashing megabytes on every login attempt would be a cheap denial of service
MAX_PASSWORD_CHARS = 1024
#: a lockout never lasts longer than this, however many failures
MAX_LOCKOUT_S = 3600.0
#: a name alone (from any address) may fail this many times as often as one (name, address) pair
NAME_ATTEMPTS_FACTOR = 5
#: failures are forgotten after this long without another one
FORGET_FAILURES_S = 86400.0
#: `session()` writes last_seen at most this often, so a page with many requests is not many writes
TOUCH_INTERVAL_S = 5.0
_MAX_CLIENT_CHARS = 200
_MAX_TOKEN_CHARS = 256

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name                TEXT PRIMARY KEY,
    role                TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    password_hash       TEXT NOT NULL,
    created_at          REAL NOT NULL,
    password_changed_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    id_hash    TEXT PRIMARY KEY,
    user       TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    csrf       TEXT NOT NULL,
    created_at REAL NOT NULL,
    last_seen  REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions (user);
CREATE TABLE IF NOT EXISTS login_failures (
    key          TEXT PRIMARY KEY,
    failures     INTEGER NOT NULL,
    locked_until REAL NOT NULL,
    last_failure REAL NOT NULL
);
"""


class Role(StrEnum):
    """What a user may do; each role includes the ones before it (admin ⊇ operator ⊇ viewer)."""

    viewer = "viewer"
    operator = "operator"
    admin = "admin"

    def can(self, required: Role) -> bool:
        """Whether this role includes `required`."""
        order = list(Role)
        return order.index(self) >= order.index(required)

    @classmethod
    def parse(cls, value: str) -> Role:
        """`value` as a Role, or a VigilError listing the roles."""
        try:
            return cls(value)
        except ValueError:
            raise VigilError(f"unknown role {value!r}: expected {', '.join(cls)}") from None


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    created_at: float


@dataclass(frozen=True)
class Session:
    """A logged-in user. `token` goes in the cookie; `csrf` must come back with every form or write."""

    token: str = field(repr=False)
    user: str
    role: Role
    csrf: str = field(repr=False)
    #: the session ends at this time at the latest (it ends earlier when unused for `session_idle_s`)
    expires_at: float


class LoginThrottled(VigilError):
    """Too many failed logins for this name (from this address): no password is checked until later."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"too many failed logins: try again in {retry_after_s} s")
        self.retry_after_s = retry_after_s


def name_problem(name: str) -> str | None:
    """Why `name` cannot be a user name, or None when it can."""
    if _NAME.fullmatch(name) is None:
        return f"user name {name!r}: expected {NAME_RULE}"
    return None


def password_problem(password: str) -> str | None:
    """Why `password` cannot be set, or None when it can (never quotes the password)."""
    if len(password) < MIN_PASSWORD_CHARS:
        return f"password too short: at least {MIN_PASSWORD_CHARS} characters"
    if len(password) > MAX_PASSWORD_CHARS:
        return f"password too long: at most {MAX_PASSWORD_CHARS} characters"
    return None


def lockout_duration(failures: int, attempts: int, base_s: float) -> float:
    """Seconds locked after `failures` in a row: none below `attempts`, then `base_s` doubling, capped."""
    if failures < attempts:
        return 0.0
    return min(base_s * 2.0 ** min(failures - attempts, 32), MAX_LOCKOUT_S)


def check_csrf(session: Session, submitted: str) -> bool:
    """Whether `submitted` is the session's CSRF token (compared in constant time)."""
    return bool(submitted) and hmac.compare_digest(session.csrf.encode(), submitted.encode())


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class UserStore:
    """Users, sessions and login throttling in one SQLite file, with the limits of `ConsoleConfig`."""

    def __init__(
        self,
        path: str | Path,
        settings: ConsoleConfig | None = None,
        hasher: PasswordHasher | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        """Open (creating if needed) the store; `hasher` defaults to argon2-cffi's argon2id defaults."""
        self.path = Path(path)
        self.settings = settings if settings is not None else ConsoleConfig()
        self.hasher = hasher if hasher is not None else PasswordHasher()
        # verified against when the name is unknown, so the reply takes as long as for a wrong password
        self._dummy_hash = self.hasher.hash(secrets.token_urlsafe(16))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            created = not self.path.exists()
            db = sqlite3.connect(self.path, timeout=timeout_s, check_same_thread=False, isolation_level=None)
            self._conn = SharedConnection(db, f"console store {self.path}")
            if created:
                self.path.chmod(0o600)  # password hashes: readable by the service's user only
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            db.executescript(SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise VigilError(f"console store {self.path}: cannot open: {exc}") from exc

    @classmethod
    def from_config(cls, settings: ConsoleConfig, hasher: PasswordHasher | None = None) -> UserStore:
        return cls(settings.path, settings, hasher)

    # ---- users -----------------------------------------------------------------------------------

    def add(self, name: str, password: str, role: Role | str) -> User:
        """Create a user; VigilError if the name is taken or breaks the rules, or the password is weak."""
        role = Role.parse(role)
        if problem := name_problem(name) or password_problem(password):
            raise VigilError(problem)
        password_hash = self.hasher.hash(password)
        now = time.time()
        with self._conn.transaction() as db:
            if db.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
                raise VigilError(f"user {name} already exists")
            db.execute(
                "INSERT INTO users (name, role, password_hash, created_at, password_changed_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (name, role.value, password_hash, now, now),
            )
        return User(name, role, now)

    def remove(self, name: str) -> None:
        """Delete a user and (by the foreign key) their sessions; the last admin cannot be removed."""
        with self._conn.transaction() as db:
            self._require_not_last_admin(db, name, "remove")
            db.execute("DELETE FROM users WHERE name = ?", (name,))

    def set_password(self, name: str, password: str) -> int:
        """Change a password and end the user's sessions; returns how many were ended."""
        if problem := password_problem(password):
            raise VigilError(problem)
        password_hash = self.hasher.hash(password)
        with self._conn.transaction() as db:
            self._require_user(db, name)
            db.execute(
                "UPDATE users SET password_hash = ?, password_changed_at = ? WHERE name = ?",
                (password_hash, time.time(), name),
            )
            return db.execute("DELETE FROM sessions WHERE user = ?", (name,)).rowcount

    def set_role(self, name: str, role: Role | str) -> None:
        """Change a role (open sessions see it at once); the last admin cannot be demoted."""
        role = Role.parse(role)
        with self._conn.transaction() as db:
            if role is not Role.admin:
                self._require_not_last_admin(db, name, "demote")
            else:
                self._require_user(db, name)
            db.execute("UPDATE users SET role = ? WHERE name = ?", (role.value, name))

    def get(self, name: str) -> User | None:
        with self._conn.transaction() as db:
            row = db.execute("SELECT name, role, created_at FROM users WHERE name = ?", (name,)).fetchone()
        return None if row is None else User(row[0], Role(row[1]), row[2])

    def users(self) -> list[User]:
        """Every user, by name."""
        with self._conn.transaction() as db:
            rows = db.execute("SELECT name, role, created_at FROM users ORDER BY name").fetchall()
        return [User(r[0], Role(r[1]), r[2]) for r in rows]

    def count(self) -> int:
        with self._conn.transaction() as db:
            return int(db.execute("SELECT COUNT(*) FROM users").fetchone()[0])

    # ---- login -----------------------------------------------------------------------------------

    def authenticate(self, name: str, password: str, client: str, now: float | None = None) -> User | None:
        """The user if `password` is theirs, else None (the same for an unknown name and a wrong password).

        Raises LoginThrottled, without checking the password, while this name is locked from `client`
        or from everywhere. A success clears the (name, client) count.
        """
        now = time.time() if now is None else now
        if name_problem(name):  # no user can have this name: nothing to guess, nothing to count
            self._verify(self._dummy_hash, password)
            return None
        keys = (f"{name}|{client[:_MAX_CLIENT_CHARS]}", name)
        with self._conn.transaction() as db:
            locked = [until for key in keys if (until := self._locked_until(db, key)) > now]
            if locked:
                raise LoginThrottled(math.ceil(max(locked) - now))
            row = db.execute(
                "SELECT role, created_at, password_hash FROM users WHERE name = ?", (name,)
            ).fetchone()
        if row is None:
            self._verify(self._dummy_hash, password)
            self._record_failure(keys, now)
            return None
        role, created_at, stored = row
        if not self._verify(stored, password):
            self._record_failure(keys, now)
            return None
        with self._conn.transaction() as db:
            db.execute("DELETE FROM login_failures WHERE key = ?", (keys[0],))
        if self.hasher.check_needs_rehash(stored):
            self._rehash(name, stored, password)
        return User(name, Role(role), created_at)

    @staticmethod
    def _locked_until(db: sqlite3.Connection, key: str) -> float:
        row = db.execute("SELECT locked_until FROM login_failures WHERE key = ?", (key,)).fetchone()
        return 0.0 if row is None else float(row[0])

    def _verify(self, password_hash: str, password: str) -> bool:
        if len(password) > MAX_PASSWORD_CHARS:
            password = ""  # as much work as any other wrong password, none more
        try:
            return self.hasher.verify(password_hash, password)
        except VerificationError:  # VerifyMismatchError: the wrong password
            return False
        except InvalidHashError:
            log.warning("console store: a stored password hash is corrupt", extra=fields(path=str(self.path)))
            return False

    def _record_failure(self, keys: tuple[str, str], now: float) -> None:
        """Count one failure on the (name, client) key and on the name, and lock those over budget."""
        attempts = self.settings.login_attempts
        budgets = (attempts, attempts * NAME_ATTEMPTS_FACTOR)
        with self._conn.transaction() as db:
            for key, budget in zip(keys, budgets, strict=True):
                row = db.execute(
                    "SELECT failures, last_failure FROM login_failures WHERE key = ?", (key,)
                ).fetchone()
                failures = 1 if row is None or now - row[1] > FORGET_FAILURES_S else row[0] + 1
                locked_until = now + lockout_duration(failures, budget, self.settings.lockout_s)
                db.execute(
                    "INSERT INTO login_failures (key, failures, locked_until, last_failure)"
                    " VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (key) DO UPDATE SET failures = excluded.failures,"
                    " locked_until = excluded.locked_until, last_failure = excluded.last_failure",
                    (key, failures, locked_until, now),
                )

    def _rehash(self, name: str, stored: str, password: str) -> None:
        """Store the password under the hasher's current parameters (unless it changed meanwhile)."""
        new_hash = self.hasher.hash(password)
        with self._conn.transaction() as db:
            db.execute(
                "UPDATE users SET password_hash = ? WHERE name = ? AND password_hash = ?",
                (new_hash, name, stored),
            )

    # ---- sessions --------------------------------------------------------------------------------

    def create_session(self, user: User, now: float | None = None) -> Session:
        """A new session for `user`; its token is returned here only (the store keeps its SHA-256)."""
        now = time.time() if now is None else now
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        expires_at = now + self.settings.session_max_s
        with self._conn.transaction() as db:
            row = db.execute("SELECT role FROM users WHERE name = ?", (user.name,)).fetchone()
            if row is None:
                raise VigilError(f"no user named {user.name}")
            db.execute(
                "INSERT INTO sessions (id_hash, user, csrf, created_at, last_seen, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (_token_hash(token), user.name, csrf, now, now, expires_at),
            )
        return Session(token, user.name, Role(row[0]), csrf, expires_at)

    def session(self, token: str, now: float | None = None) -> Session | None:
        """The live session of `token` with the user's current role, or None (unknown, expired, ended)."""
        if not token or len(token) > _MAX_TOKEN_CHARS:
            return None
        now = time.time() if now is None else now
        id_hash = _token_hash(token)
        with self._conn.transaction() as db:
            row = db.execute(
                "SELECT s.user, u.role, s.csrf, s.last_seen, s.expires_at FROM sessions s"
                " JOIN users u ON u.name = s.user WHERE s.id_hash = ?",
                (id_hash,),
            ).fetchone()
            if row is None:
                return None
            user, role, csrf, last_seen, expires_at = row
            if now >= expires_at or now - last_seen > self.settings.session_idle_s:
                db.execute("DELETE FROM sessions WHERE id_hash = ?", (id_hash,))
                return None
            if now - last_seen >= TOUCH_INTERVAL_S:
                db.execute("UPDATE sessions SET last_seen = ? WHERE id_hash = ?", (now, id_hash))
        return Session(token, user, Role(role), csrf, expires_at)

    def end_session(self, token: str) -> None:
        """Log out: the token stops working (an unknown token is not an error)."""
        with self._conn.transaction() as db:
            db.execute("DELETE FROM sessions WHERE id_hash = ?", (_token_hash(token),))

    def purge_expired(self, now: float | None = None) -> int:
        """Delete expired sessions and long-quiet failure counts; returns how many sessions went."""
        now = time.time() if now is None else now
        with self._conn.transaction() as db:
            ended = db.execute(
                "DELETE FROM sessions WHERE expires_at <= ? OR last_seen < ?",
                (now, now - self.settings.session_idle_s),
            ).rowcount
            db.execute(
                "DELETE FROM login_failures WHERE locked_until <= ? AND last_failure < ?",
                (now, now - FORGET_FAILURES_S),
            )
        return ended

    # ---- lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> UserStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _require_user(self, db: sqlite3.Connection, name: str) -> str:
        row = db.execute("SELECT role FROM users WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise VigilError(f"no user named {name}")
        return str(row[0])

    def _require_not_last_admin(self, db: sqlite3.Connection, name: str, action: str) -> None:
        if self._require_user(db, name) != Role.admin:
            return
        admins = db.execute("SELECT COUNT(*) FROM users WHERE role = ?", (Role.admin.value,)).fetchone()[0]
        if admins == 1:
            raise VigilError(f"cannot {action} {name}: the last admin (add another admin first)")
