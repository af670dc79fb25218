"""Console access control: users and roles, login throttling, sessions, CSRF, and `vigil user`."""

from __future__ import annotations

import hashlib
import io
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from pipeline.cli import main
from pipeline.config import ConsoleConfig
from pipeline.console.users import (
    MAX_LOCKOUT_S,
    NAME_ATTEMPTS_FACTOR,
    TOUCH_INTERVAL_S,
    LoginThrottled,
    Role,
    Session,
    User,
    UserStore,
    check_csrf,
    lockout_duration,
)
from pipeline.errors import VigilError

PASSWORD = "correct horse"
T0 = 1_000_000.0


def fast_hasher(time_cost: int = 1) -> PasswordHasher:
    return PasswordHasher(time_cost=time_cost, memory_cost=8, parallelism=1)


class CountingHasher(PasswordHasher):
    """A cheap hasher that counts verifications, to see that unknown names cost one too."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1)
        self.verified = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        self.verified += 1
        return super().verify(hash, password)


SETTINGS = ConsoleConfig(session_idle_s=100.0, session_max_s=250.0, login_attempts=3, lockout_s=10.0)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[UserStore]:
    with UserStore(tmp_path / "console.db", SETTINGS, hasher=fast_hasher()) as s:
        yield s


@pytest.fixture
def alice(store: UserStore) -> UserStore:
    store.add("alice", PASSWORD, Role.operator)
    return store


# ---- roles and users -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "required", "allowed"),
    [
        (Role.viewer, Role.viewer, True),
        (Role.viewer, Role.operator, False),
        (Role.viewer, Role.admin, False),
        (Role.operator, Role.viewer, True),
        (Role.operator, Role.operator, True),
        (Role.operator, Role.admin, False),
        (Role.admin, Role.viewer, True),
        (Role.admin, Role.operator, True),
        (Role.admin, Role.admin, True),
    ],
)
def test_role_order(role: Role, required: Role, allowed: bool) -> None:
    assert role.can(required) is allowed


def test_add_get_list_count(store: UserStore) -> None:
    store.add("bob", PASSWORD, "viewer")
    store.add("alice@site", PASSWORD, Role.admin)
    assert store.count() == 2
    assert [(u.name, u.role) for u in store.users()] == [("alice@site", Role.admin), ("bob", Role.viewer)]
    bob = store.get("bob")
    assert bob is not None and bob.role is Role.viewer and bob.created_at > 0
    assert store.get("carol") is None


def test_add_twice_is_refused(alice: UserStore) -> None:
    with pytest.raises(VigilError, match="alice already exists"):
        alice.add("alice", "another password", Role.viewer)


@pytest.mark.parametrize("name", ["", "x" * 65, "two words", "a/b", "zoë", "a|b"])
def test_bad_names_are_refused(store: UserStore, name: str) -> None:
    with pytest.raises(VigilError, match="user name"):
        store.add(name, PASSWORD, Role.viewer)
    assert store.count() == 0


@pytest.mark.parametrize(
    ("password", "rule"), [("", "at least 8"), ("1234567", "at least 8"), ("x" * 1025, "at most")]
)
def test_weak_passwords_are_refused(store: UserStore, password: str, rule: str) -> None:
    with pytest.raises(VigilError, match=rule):
        store.add("bob", password, Role.viewer)
    store.add("bob", PASSWORD, Role.viewer)
    with pytest.raises(VigilError, match=rule):
        store.set_password("bob", password)


def test_unknown_role_is_refused(store: UserStore) -> None:
    with pytest.raises(VigilError, match="expected viewer, operator, admin"):
        store.add("bob", PASSWORD, "root")


def test_remove_and_set_role(alice: UserStore) -> None:
    alice.set_role("alice", Role.viewer)
    assert alice.get("alice").role is Role.viewer
    alice.remove("alice")
    assert alice.get("alice") is None and alice.count() == 0
    with pytest.raises(VigilError, match="no user named alice"):
        alice.remove("alice")
    with pytest.raises(VigilError, match="no user named alice"):
        alice.set_password("alice", PASSWORD)


def test_the_last_admin_stays(store: UserStore) -> None:
    store.add("root", PASSWORD, Role.admin)
    with pytest.raises(VigilError, match="last admin"):
        store.remove("root")
    with pytest.raises(VigilError, match="last admin"):
        store.set_role("root", Role.operator)
    store.add("second", PASSWORD, Role.admin)
    store.set_role("root", Role.operator)
    assert store.get("root").role is Role.operator


def test_password_is_hashed_with_argon2id_and_rehashed_on_login(tmp_path: Path) -> None:
    path = tmp_path / "console.db"
    with UserStore(path, SETTINGS, hasher=fast_hasher(time_cost=1)) as old:
        old.add("alice", PASSWORD, Role.viewer)
    stored = stored_hash(path)
    assert stored.startswith("$argon2id$") and "t=1" in stored and PASSWORD not in stored
    with UserStore(path, SETTINGS, hasher=fast_hasher(time_cost=2)) as new:
        assert new.authenticate("alice", PASSWORD, "10.0.0.1", now=T0) is not None
    assert "t=2" in stored_hash(path)


def stored_hash(path: Path) -> str:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT password_hash FROM users WHERE name = 'alice'").fetchone()[0]


def test_default_hasher_is_argon2id_with_library_defaults(tmp_path: Path) -> None:
    store = UserStore.from_config(ConsoleConfig(path=tmp_path / "console.db"))
    default = PasswordHasher()
    assert (store.hasher.time_cost, store.hasher.memory_cost) == (default.time_cost, default.memory_cost)
    store.close()


# ---- login -------------------------------------------------------------------------------------------


def test_login_with_the_right_password(alice: UserStore) -> None:
    user = alice.authenticate("alice", PASSWORD, "10.0.0.1", now=T0)
    assert user is not None and user.name == "alice" and user.role is Role.operator


@pytest.mark.parametrize(
    ("name", "password"), [("alice", "wrong password"), ("mallory", PASSWORD), ("Alice", PASSWORD)]
)
def test_wrong_password_and_unknown_user_look_the_same(alice: UserStore, name: str, password: str) -> None:
    assert alice.authenticate(name, password, "10.0.0.1", now=T0) is None


def test_unknown_user_costs_a_verification_too(tmp_path: Path) -> None:
    hasher = CountingHasher()
    with UserStore(tmp_path / "console.db", SETTINGS, hasher=hasher) as store:
        store.add("alice", PASSWORD, Role.viewer)
        for name in ("alice", "mallory", "not a valid name"):
            before = hasher.verified
            assert store.authenticate(name, "wrong password", "10.0.0.1", now=T0) is None
            assert hasher.verified == before + 1, name


@pytest.mark.parametrize(
    ("failures", "expected"),
    [(0, 0.0), (2, 0.0), (3, 10.0), (4, 20.0), (5, 40.0), (12, 3600.0), (10_000, MAX_LOCKOUT_S)],
)
def test_lockout_duration(failures: int, expected: float) -> None:
    assert lockout_duration(failures, attempts=3, base_s=10.0) == expected


def fail(store: UserStore, times: int, now: float, client: str = "10.0.0.1", name: str = "alice") -> None:
    for _ in range(times):
        assert store.authenticate(name, "wrong password", client, now=now) is None


@pytest.mark.parametrize("name", ["alice", "mallory"])  # a lockout must not tell whether the name exists
def test_lockout_after_n_failures_then_doubling(alice: UserStore, name: str) -> None:
    fail(alice, 3, T0, name=name)
    with pytest.raises(LoginThrottled) as locked:
        alice.authenticate(name, PASSWORD, "10.0.0.1", now=T0 + 1)  # even the right password is not tried
    assert locked.value.retry_after_s == 9
    assert "try again in 9 s" in str(locked.value) and isinstance(locked.value, VigilError)
    fail(alice, 1, T0 + 10, name=name)  # the lock is over: one more failure locks for twice as long
    with pytest.raises(LoginThrottled) as locked:
        alice.authenticate(name, PASSWORD, "10.0.0.1", now=T0 + 11)
    assert locked.value.retry_after_s == 19
    result = alice.authenticate(name, PASSWORD, "10.0.0.1", now=T0 + 30)
    assert (result is not None) is (name == "alice")


def test_lockout_is_per_name_and_client(alice: UserStore) -> None:
    alice.add("bob", PASSWORD, Role.viewer)
    fail(alice, 3, T0, client="10.0.0.1")
    assert alice.authenticate("alice", PASSWORD, "10.0.0.2", now=T0 + 1) is not None  # another address
    assert alice.authenticate("bob", PASSWORD, "10.0.0.1", now=T0 + 1) is not None  # another name
    with pytest.raises(LoginThrottled):
        alice.authenticate("alice", PASSWORD, "10.0.0.1", now=T0 + 1)


def test_many_addresses_lock_the_name(alice: UserStore) -> None:
    budget = SETTINGS.login_attempts * NAME_ATTEMPTS_FACTOR
    for i in range(budget):
        fail(alice, 1, T0, client=f"10.0.1.{i}")
    with pytest.raises(LoginThrottled):
        alice.authenticate("alice", PASSWORD, "10.0.2.1", now=T0 + 1)


def test_success_clears_the_count(alice: UserStore) -> None:
    fail(alice, 2, T0)
    assert alice.authenticate("alice", PASSWORD, "10.0.0.1", now=T0) is not None
    fail(alice, 2, T0)  # 2, not 4: not locked
    assert alice.authenticate("alice", PASSWORD, "10.0.0.1", now=T0) is not None


# ---- sessions ----------------------------------------------------------------------------------------


def login(store: UserStore, now: float = T0) -> Session:
    user = store.authenticate("alice", PASSWORD, "10.0.0.1", now=now)
    assert user is not None
    return store.create_session(user, now=now)


def test_session_round_trip_and_logout(alice: UserStore) -> None:
    session = login(alice)
    assert session.expires_at == T0 + SETTINGS.session_max_s
    found = alice.session(session.token, now=T0 + 1)
    assert found == session
    assert session.token not in repr(session) and session.csrf not in repr(session)
    alice.end_session(session.token)
    assert alice.session(session.token, now=T0 + 2) is None


@pytest.mark.parametrize("token", ["", "nope", "x" * 10_000])
def test_unknown_tokens(alice: UserStore, token: str) -> None:
    login(alice)
    assert alice.session(token, now=T0) is None


def test_idle_expiry_counts_from_the_last_use(alice: UserStore) -> None:
    session = login(alice)
    assert alice.session(session.token, now=T0 + 90) is not None
    assert alice.session(session.token, now=T0 + 180) is not None  # 90 s after the last use
    assert alice.session(session.token, now=T0 + 281) is None  # 101 s unused
    assert alice.session(session.token, now=T0 + 282) is None  # and gone for good


def test_last_seen_is_written_at_most_every_few_seconds(alice: UserStore) -> None:
    session = login(alice)
    assert alice.session(session.token, now=T0 + TOUCH_INTERVAL_S / 2) is not None  # not written
    assert alice.session(session.token, now=T0 + 101) is None  # so idle since T0


def test_absolute_expiry(alice: UserStore) -> None:
    session = login(alice)
    for t in range(50, 250, 50):  # used every 50 s: never idle
        assert alice.session(session.token, now=T0 + t) is not None
    assert alice.session(session.token, now=T0 + 250) is None


def test_sessions_follow_the_user(alice: UserStore) -> None:
    session = login(alice)
    alice.set_role("alice", Role.viewer)
    assert alice.session(session.token, now=T0 + 1).role is Role.viewer
    alice.remove("alice")
    assert alice.session(session.token, now=T0 + 2) is None
    with pytest.raises(VigilError, match="no user named alice"):
        alice.create_session(User(session.user, session.role, T0), now=T0 + 3)


def test_new_password_ends_sessions(alice: UserStore) -> None:
    first, second = login(alice), login(alice)
    assert alice.set_password("alice", "a new password") == 2
    assert alice.session(first.token, now=T0 + 1) is None and alice.session(second.token, now=T0 + 1) is None
    assert alice.authenticate("alice", PASSWORD, "10.0.0.1", now=T0 + 1) is None
    assert alice.authenticate("alice", "a new password", "10.0.0.1", now=T0 + 1) is not None


def test_purge_expired(alice: UserStore) -> None:
    old, fresh = login(alice, now=T0), login(alice, now=T0 + 200)
    assert alice.purge_expired(now=T0 + 210) == 1
    assert alice.session(fresh.token, now=T0 + 211) is not None
    assert alice.session(old.token, now=T0 + 211) is None


@pytest.mark.parametrize(("submitted", "ok"), [(None, True), ("", False), ("wrong", False), ("é", False)])
def test_csrf(alice: UserStore, submitted: str | None, ok: bool) -> None:
    session = login(alice)
    assert check_csrf(session, session.csrf if submitted is None else submitted) is ok


def test_only_the_token_hash_is_stored(tmp_path: Path) -> None:
    path = tmp_path / "console.db"
    with UserStore(path, SETTINGS, hasher=fast_hasher()) as store:
        store.add("alice", PASSWORD, Role.viewer)
        session = login(store)
        on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("console.db"))
        assert session.token.encode() not in on_disk and PASSWORD.encode() not in on_disk
        with sqlite3.connect(path) as db:
            (id_hash,) = db.execute("SELECT id_hash FROM sessions").fetchone()
        assert id_hash == hashlib.sha256(session.token.encode()).hexdigest()
    assert path.stat().st_mode & 0o077 == 0  # readable by its owner only


# ---- vigil user ----------------------------------------------------------------------------------------


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text("console:\n  path: console.db\n")
    return path


def vigil_user(monkeypatch: pytest.MonkeyPatch, config: Path, *args: str, stdin: str = "") -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    return main(["user", *args, "-c", str(config)])


def test_cli_add_list_passwd_remove(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    assert (
        vigil_user(
            monkeypatch,
            config,
            "add",
            "alice",
            "--role",
            "operator",
            "--password-stdin",
            stdin=f"{PASSWORD}\n",
        )
        == 0
    )
    assert capsys.readouterr().err.strip() == "user alice added (operator)"
    assert vigil_user(monkeypatch, config, "add", "bob", "--password-stdin", stdin=f"{PASSWORD}\n") == 0
    assert capsys.readouterr().err.strip() == "user bob added (viewer)"
    assert vigil_user(monkeypatch, config, "list") == 0
    assert capsys.readouterr().out.splitlines() == ["alice operator", "bob viewer"]
    assert (
        vigil_user(monkeypatch, config, "passwd", "alice", "--password-stdin", stdin="a new password\n") == 0
    )
    assert capsys.readouterr().err.strip() == "user alice: password changed, 0 session(s) ended"
    assert vigil_user(monkeypatch, config, "role", "bob", "--role", "admin") == 0
    assert vigil_user(monkeypatch, config, "remove", "alice") == 0
    err = capsys.readouterr().err
    assert err.splitlines() == ["user bob is now admin", "user alice removed"]
    with UserStore(config.parent / "console.db", hasher=fast_hasher()) as store:
        assert [(u.name, u.role) for u in store.users()] == [("bob", Role.admin)]
        assert store.authenticate("bob", PASSWORD, "cli-test") is not None


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (("add", "alice", "--password-stdin"), f"{PASSWORD}\n", "user alice already exists"),
        (("add", "bob", "--password-stdin"), "tiny\n", "at least 8 characters"),
        (("add", "bob", "--password-stdin"), "", "stdin is empty"),
        (("add", "bob"), f"{PASSWORD}\n", "with --password-stdin"),
        (("add", "bad name", "--password-stdin"), f"{PASSWORD}\n", "user name"),
        (("passwd", "carol", "--password-stdin"), f"{PASSWORD}\n", "no user named carol"),
        (("remove", "carol"), "", "no user named carol"),
    ],
)
def test_cli_errors_are_one_line(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    config: Path,
    args: tuple[str, ...],
    stdin: str,
    message: str,
) -> None:
    with UserStore(config.parent / "console.db", hasher=fast_hasher()) as store:
        store.add("alice", PASSWORD, Role.viewer)
    assert vigil_user(monkeypatch, config, *args, stdin=stdin) == 2
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("vigil: error: ") and message in lines[0], err
    assert out == "" and PASSWORD not in err and "tiny" not in err
