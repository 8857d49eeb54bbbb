"""The SQLite store on a real file: safe creation, schema versioning, WAL, the
compare-and-swap under real concurrent writers, and the admin operations."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import time

import pytest

from mailmfa.backends.ports import BackendUnavailable
from mailmfa.backends.sqlite import SCHEMA_VERSION, SqliteStore
from mailmfa.core.types import TotpParams, UserRecord

SECRET = b"12345678901234567890"


@pytest.fixture
def db(tmp_path):
    return str(tmp_path / "state" / "mailmfa.db")


def _store(path, **kw):
    return SqliteStore(path, **kw)


def test_created_with_safe_permissions_wal_and_schema(db):
    old = os.umask(0o002)  # a permissive umask must not widen the file's mode
    try:
        s = _store(db)
        s.write_token("alice", SECRET, TotpParams(), 1000.0)
        assert s.schema_version() == SCHEMA_VERSION
        s.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(db)).st_mode) == 0o750
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()
    for extra in ("-wal", "-shm"):
        if os.path.exists(db + extra):
            assert stat.S_IMODE(os.stat(db + extra).st_mode) & 0o077 == 0


def test_file_readable_by_others_is_refused(db):
    s = _store(db)
    s.write_token("alice", SECRET, TotpParams(), 1000.0)
    s.close()
    os.chmod(db, 0o644)
    with pytest.raises(BackendUnavailable) as exc:
        _store(db).lookup("alice")
    assert exc.value.reason == "store_unsafe"
    os.chmod(db, 0o660)  # a group (e.g. a web UI's) may share it
    assert _store(db).lookup("alice") is not None


def test_symlink_is_refused(db, tmp_path):
    real = tmp_path / "elsewhere.db"
    s = _store(str(real))
    s.write_token("alice", SECRET, TotpParams(), 1.0)
    s.close()
    os.makedirs(os.path.dirname(db), exist_ok=True)
    os.symlink(real, db)
    with pytest.raises(BackendUnavailable) as exc:
        _store(db).lookup("alice")
    assert exc.value.reason == "store_unsafe"


def test_missing_file_is_not_created_when_create_is_false(db):
    with pytest.raises(BackendUnavailable) as exc:
        _store(db, create=False).lookup("alice")
    assert exc.value.reason == "store_unavailable"
    assert not os.path.exists(db)


def test_newer_schema_is_refused(db):
    s = _store(db)
    s.lookup("x")
    s.close()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(BackendUnavailable) as exc:
        _store(db).lookup("x")
    assert exc.value.reason == "store_schema"


def test_not_a_database_is_unavailable(db):
    os.makedirs(os.path.dirname(db), exist_ok=True)
    with open(db, "wb") as fh:
        fh.write(b"this is not sqlite" * 100)
    os.chmod(db, 0o600)
    with pytest.raises(BackendUnavailable) as exc:
        _store(db).lookup("x")
    assert exc.value.reason == "store_unavailable"


def test_admin_operations(db):
    s = _store(db)
    params = TotpParams(8, 60, "SHA256", 2)
    assert s.write_token("bob", SECRET, params, 1000.0, last_step=5) is True
    assert s.write_token("bob", b"x" * 20, params, 1001.0, replace=False) is False
    info = s.get("bob")
    assert info.secret == SECRET and info.params == params and info.last_step == 5 and info.secret_time == 1000
    assert "12345" not in repr(info)
    rec = s.lookup("bob")
    assert rec.token.params == params and rec.token.last_step == 5
    assert s.set_drift("bob", -2) and s.get("bob").drift == -2
    assert s.record_failure(rec, 2000.0) == 1
    assert s.record_failure(rec, 2001.0) == 2
    assert (s.get("bob").failure_count, s.get("bob").last_failure) == (2, 2001)
    assert s.reset_failures("bob") and s.get("bob").failure_count == 0
    # re-enrolment: new secret, fresh state
    assert s.write_token("bob", b"y" * 20, TotpParams(), 3000.0) is True
    info = s.get("bob")
    state = (info.secret, info.last_step, info.drift, info.failure_count, info.secret_time)
    assert state == (b"y" * 20, None, 0, 0, 3000)
    s.write_token("alice", SECRET, TotpParams(), 1.0)
    assert [i.user for i in s.list_tokens()] == ["alice", "bob"]
    assert s.remove_token("bob") is True and s.remove_token("bob") is False
    assert s.get("bob") is None and s.lookup("bob") is None
    assert not s.set_drift("ghost", 1) and not s.reset_failures("ghost")
    assert s.record_failure(UserRecord("ghost", "ghost", None), 1.0) == 0
    with pytest.raises(ValueError):
        s.write_token("x", SECRET, TotpParams(6, 30, "MD5", 1), 1.0)
    s.close()


def test_user_names_are_data_not_sql(db):
    s = _store(db)
    evil = "x' OR '1'='1"
    s.write_token("alice", SECRET, TotpParams(), 1.0)
    assert s.lookup(evil) is None
    s.write_token(evil, SECRET, TotpParams(), 1.0)
    assert s.lookup(evil).name == evil and s.lookup("alice").token.last_step is None


def test_cas_under_concurrent_writers(db):
    """20 connections read the same state, then race the update: exactly one wins."""
    s = _store(db)
    s.write_token("carol", SECRET, TotpParams(), 1.0)
    s.close()
    stores = [_store(db, timeout=30) for _ in range(20)]
    records = [st.lookup("carol") for st in stores]
    barrier = threading.Barrier(20)
    results = []

    def race(st, rec):
        barrier.wait()
        results.append(st.record_success(rec, 1234, time.time()))

    threads = [threading.Thread(target=race, args=(st, rec)) for st, rec in zip(stores, records, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 19 + [True]
    assert _store(db).get("carol").last_step == 1234


def test_a_held_write_lock_is_a_bounded_temporary_failure(db):
    s = _store(db)
    s.write_token("dave", SECRET, TotpParams(), 1.0)
    rec = s.lookup("dave")
    s.close()
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        waiting = _store(db, timeout=0.3)
        assert waiting.lookup("dave") is not None  # WAL: readers are not blocked
        started = time.monotonic()
        with pytest.raises(BackendUnavailable) as exc:
            waiting.record_success(rec, 99, time.time())
        assert exc.value.reason == "store_unavailable"
        assert time.monotonic() - started < 3
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_success_resets_throttle_and_loses_to_a_failure_counted_since_lookup(db):
    s = _store(db)
    s.write_token("erin", SECRET, TotpParams(), 1.0)
    rec = s.lookup("erin")
    s.record_failure(rec, 10.0)
    other = _store(db)
    stale = other.lookup("erin")  # saw failure_count 1
    s.record_failure(rec, 11.0)  # a parallel guess counted after that lookup
    assert other.record_success(stale, 100, 12.0) is False
    fresh = other.lookup("erin")
    assert other.record_success(fresh, 100, 13.0) is True
    info = s.get("erin")
    assert (info.last_step, info.failure_count, info.last_failure, info.last_login) == (100, 0, None, 13)


def test_set_drift_marks_resync_steps_used(db):
    s = _store(db)
    s.write_token("finn", SECRET, TotpParams(), 1.0, last_step=50)
    assert s.set_drift("finn", 2, last_step=40) and s.get("finn").last_step == 50  # never backwards
    assert s.set_drift("finn", 3, last_step=60) and (s.get("finn").drift, s.get("finn").last_step) == (3, 60)
    assert s.set_drift("finn", 0) and s.get("finn").last_step == 60


def test_list_enrolled_pages(db):
    s = _store(db)
    names = [f"user{i:02d}" for i in range(7)]
    for n in reversed(names):
        s.write_token(n, SECRET, TotpParams(), 1.0)
    assert list(s.list_enrolled(page_size=2)) == names
    assert list(s.list_enrolled(page_size=7)) == names
    assert list(_store(str(db) + "-empty").list_enrolled()) == []


def test_lookup_carries_the_throttle_state(db):
    s = _store(db)
    s.write_token("gus", SECRET, TotpParams(), 1.0)
    s.record_failure(s.lookup("gus"), 1234.0)
    token = s.lookup("gus").token
    assert (token.failure_count, token.last_failure) == (1, 1234)


def _schema_1_file(path: str, users: list[str]) -> None:
    """A database as mailmfa 0.1 wrote it (schema 1: rows under the name as given)."""
    from mailmfa.backends.sqlite import _MIGRATIONS

    os.makedirs(os.path.dirname(path), mode=0o750, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    conn = sqlite3.connect(path)
    for statement in _MIGRATIONS[1]:
        conn.execute(statement)
    for user in users:
        conn.execute('INSERT INTO tokens (user, secret, digits, period, algorithm, "window") '
                     "VALUES (?, ?, 6, 30, 'SHA1', 1)", (user, SECRET))
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()


def test_schema_2_files_rows_under_the_canonical_name(db):
    _schema_1_file(db, ["Alice", "carol", "\uff24\uff41\uff56\uff45"])
    s = _store(db)
    assert s.schema_version() == SCHEMA_VERSION == 2
    assert list(s.list_enrolled()) == ["alice", "carol", "dave"]
    for typed in ("alice", "ALICE", "Alice"):
        record = s.lookup(typed)
        assert record is not None and record.name == typed and record.token.secret == SECRET
    s.write_token("CAROL", SECRET, TotpParams(), 2.0, replace=False)  # the same user: kept, not added
    assert list(s.list_enrolled()) == ["alice", "carol", "dave"]


def test_schema_2_refuses_two_rows_for_one_name(db):
    _schema_1_file(db, ["Bob", "bob", "erin"])
    with pytest.raises(BackendUnavailable) as exc:
        _store(db).lookup("erin")
    assert exc.value.reason == "store_schema"
    assert "'Bob'" in exc.value.detail and "'bob'" in exc.value.detail
    conn = sqlite3.connect(db)  # nothing changed: the migration rolled back
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert sorted(r[0] for r in conn.execute("SELECT user FROM tokens")) == ["Bob", "bob", "erin"]
    conn.close()


def test_schema_2_refuses_a_name_with_nothing_left(db):
    _schema_1_file(db, ["\u00ad", "erin"])  # a soft hyphen alone: no login name at all
    with pytest.raises(BackendUnavailable) as exc:
        _store(db).lookup("erin")
    assert exc.value.reason == "store_schema" and "no login name" in exc.value.detail
