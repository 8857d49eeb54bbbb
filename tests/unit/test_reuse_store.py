"""The reuse store on a real SQLite file: keyed hashes only, expiry, fail-safe when unusable."""

import os
import stat

import pytest

from mailmfa.backends.state import MemoryReuseStore, ReuseStore, open_reuse_store

NOW = 1_800_000_000.0
TOKEN = b"0123456789abcdefghij"  # the token's secret: part of every entry's identity
K = {"token": TOKEN}


def store(kind, tmp_path, seconds=60):
    return ReuseStore(str(tmp_path / "s.db"), seconds) if kind == "sqlite" else MemoryReuseStore(seconds)


def test_off_when_zero_seconds(tmp_path):
    assert open_reuse_store(str(tmp_path / "s.db"), 0) is None
    assert not (tmp_path / "s.db").exists()


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_remember_then_seen_same_user_string_ip_only(tmp_path, kind):
    """The per-login programs' file and the daemon's memory keep the same rules."""
    s = ReuseStore(str(tmp_path / "s.db"), 60) if kind == "sqlite" else MemoryReuseStore(60)
    assert not s.seen("alice", "pw123456", "192.0.2.1", NOW, **K)
    assert s.remember("alice", "pw123456", "192.0.2.1", NOW, **K)
    assert s.seen("alice", "pw123456", "192.0.2.1", NOW + 59, **K)
    assert not s.seen("alice", "pw123456", "192.0.2.1", NOW + 60, **K)  # expired
    assert not s.seen("alice", "pw123456", "192.0.2.2", NOW, **K)  # other IP
    assert not s.seen("alice", "pw123457", "192.0.2.1", NOW, **K)  # other string
    assert not s.seen("bob", "pw123456", "192.0.2.1", NOW, **K)  # other user
    assert not s.seen("alicepw", "123456", "192.0.2.1", NOW, **K)  # no field-boundary collisions
    s.close()



@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_entry_is_tied_to_the_token_secret(tmp_path, kind):
    """After a re-enrolment (new secret) or a removal the old token's password+code never
    matches an entry again, from the same IP, however long reuse_seconds is."""
    s = store(kind, tmp_path, 3600)
    assert s.remember("alice", "pw123456", "192.0.2.1", NOW, **K)
    assert s.seen("alice", "pw123456", "192.0.2.1", NOW + 5, **K)
    assert not s.seen("alice", "pw123456", "192.0.2.1", NOW + 5, token=b"NEW-SECRET-0123456789")
    assert not s.seen("alice", "pw123456", "192.0.2.1", NOW + 5, token=b"")
    s.close()


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_entry_spans_the_mail_services(tmp_path, kind):
    """The service is not part of an entry: a mail client logs in to IMAP and then sends
    through SMTP AUTH with the same saved password+code, from the same address."""
    s = store(kind, tmp_path)
    assert s.remember("alice", "pw123456", "192.0.2.1", NOW, **K)
    assert s.seen("alice", "pw123456", "192.0.2.1", NOW + 1, **K)
    assert not s.seen("alice", "pw123456", "192.0.2.2", NOW + 1, **K)  # the address still counts
    s.close()


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_lowered_seconds_shorten_entries_already_stored(tmp_path, kind):
    """What a reload does (the daemon sets .seconds; a per-login program reads the new
    config): an entry is judged by the CURRENT window, not the one it was stored under."""
    s = store(kind, tmp_path, 3600)
    assert s.remember("alice", "pw123456", "192.0.2.1", NOW, **K)
    assert s.seen("alice", "pw123456", "192.0.2.1", NOW + 1800, **K)
    s.seconds = 60
    assert not s.seen("alice", "pw123456", "192.0.2.1", NOW + 1800, **K)
    assert s.seen("alice", "pw123456", "192.0.2.1", NOW + 59, **K)
    assert not s.seen("alice", "pw123456", "192.0.2.1", NOW + 60, **K)
    s.close()
    if kind == "sqlite":  # a new process with the lowered setting reads the same file
        again = ReuseStore(str(tmp_path / "s.db"), 60)
        assert not again.seen("alice", "pw123456", "192.0.2.1", NOW + 1800, **K)
        assert again.seen("alice", "pw123456", "192.0.2.1", NOW + 30, **K)
        again.close()


def test_previous_format_file_is_upgraded_not_fatal(tmp_path, capsys):
    """A state file written by the previous version (table `reuse` with expiry times, digests
    without the token) works: the old rows are dropped, new entries are kept."""
    import sqlite3

    path = tmp_path / "s.db"
    db = sqlite3.connect(str(path))
    db.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL)")
    db.execute("CREATE TABLE reuse (digest BLOB PRIMARY KEY, expires REAL NOT NULL)")
    db.execute("INSERT INTO meta VALUES ('key', ?)", (b"k" * 32,))
    db.execute("INSERT INTO reuse VALUES (?, ?)", (b"d" * 32, NOW + 3600))
    db.commit()
    db.close()
    os.chmod(path, 0o600)
    s = ReuseStore(str(path), 60)
    assert not s.seen("alice", "pw123456", "192.0.2.1", NOW, **K)
    assert s.remember("alice", "pw123456", "192.0.2.1", NOW, **K)
    assert s.seen("alice", "pw123456", "192.0.2.1", NOW + 1, **K)
    s.close()
    tables = {r[0] for r in sqlite3.connect(str(path)).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"meta", "reuse_v2"}
    assert "state_unavailable" not in capsys.readouterr().err

def test_no_ip_no_reuse(tmp_path):
    s = ReuseStore(str(tmp_path / "s.db"), 60)
    assert not s.remember("alice", "pw123456", "", NOW, **K)
    assert not s.seen("alice", "pw123456", "", NOW, **K)


def test_second_process_sees_entry_and_expired_rows_are_purged(tmp_path):
    path = str(tmp_path / "s.db")
    a, b = ReuseStore(path, 60), ReuseStore(path, 60)
    assert a.remember("alice", "pw123456", "192.0.2.1", NOW, **K)
    assert b.seen("alice", "pw123456", "192.0.2.1", NOW + 1, **K)
    b.remember("bob", "x654321", "192.0.2.1", NOW + 120, **K)  # purges alice's expired row
    import sqlite3

    rows = sqlite3.connect(path).execute("SELECT count(*) FROM reuse_v2").fetchone()[0]
    assert rows == 1


def test_file_is_private_and_holds_no_clear_text(tmp_path):
    path = tmp_path / "s.db"
    s = ReuseStore(str(path), 60)
    s.remember("alice", "Secretpw123456", "192.0.2.1", NOW, **K)
    s.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    raw = path.read_bytes()
    for needle in (b"alice", b"Secretpw", b"123456", b"192.0.2.1", TOKEN, b"imap"):
        assert needle not in raw


def test_unusable_file_means_no_reuse_and_one_log_line(tmp_path, capsys):
    bad = tmp_path / "not-a-db"
    bad.write_bytes(b"this is not sqlite" * 100)
    s = ReuseStore(str(bad), 60)
    assert not s.remember("alice", "pw123456", "192.0.2.1", NOW, **K)
    assert not s.seen("alice", "pw123456", "192.0.2.1", NOW, **K)
    err = capsys.readouterr().err
    assert err.count("event=state_unavailable") == 1 and "effect=reuse_off" in err
    missing_dir = ReuseStore(str(tmp_path / "nope" / "s.db"), 60)
    assert not missing_dir.seen("alice", "pw123456", "192.0.2.1", NOW, **K)


def test_symlink_is_not_followed(tmp_path, capsys):
    target = tmp_path / "elsewhere"
    target.write_text("keep me")
    link = tmp_path / "s.db"
    os.symlink(target, link)
    s = ReuseStore(str(link), 60)
    assert not s.remember("alice", "pw123456", "192.0.2.1", NOW, **K)
    assert target.read_text() == "keep me"
    assert "state_unavailable" in capsys.readouterr().err


# --------------------------------------------------------------------------- the daemon's, in memory

def test_memory_store_follows_a_reload_that_turns_reuse_off():
    s = MemoryReuseStore(60)
    assert s.remember("alice", "pw123456", "192.0.2.1", NOW, **K)
    assert not s.remember("bob", "pw123456", "", NOW, **K)  # no IP, no reuse
    s.seconds = 0  # reloaded with reuse off
    assert not s.seen("alice", "pw123456", "192.0.2.1", NOW + 1, **K)


def test_memory_store_holds_digests_only_and_purges_expired():
    s = MemoryReuseStore(60)
    s.remember("alice", "pw123456", "192.0.2.1", NOW, **K)
    s.remember("bob", "pw654321", "192.0.2.1", NOW + 1, **K)
    held = b"".join(s._remembered)
    assert b"alice" not in held and b"123456" not in held and b"192.0.2.1" not in held
    s.remember("carol", "pw111111", "192.0.2.1", NOW + 60.5, **K)  # alice expired: dropped
    assert len(s) == 2
    s.remember("dave", "pw222222", "192.0.2.1", NOW + 200, **K)  # bob and carol expired too
    assert len(s) == 1


def test_memory_store_is_bounded_oldest_first(monkeypatch):
    monkeypatch.setattr(MemoryReuseStore, "MAX_ENTRIES", 3)
    s = MemoryReuseStore(60)
    for i in range(5):
        s.remember(f"u{i}", "pw123456", "192.0.2.1", NOW + i, **K)
    assert len(s) == 3
    assert not s.seen("u0", "pw123456", "192.0.2.1", NOW + 5, **K)
    assert s.seen("u4", "pw123456", "192.0.2.1", NOW + 5, **K)


def test_memory_store_waiter_wakes_when_the_winner_remembers():
    import threading
    import time

    s = MemoryReuseStore(60)
    got = []
    waiter = threading.Thread(
        target=lambda: got.append(s.seen("alice", "pw123456", "192.0.2.1", NOW, wait=5, **K)))
    started = time.monotonic()
    waiter.start()
    time.sleep(0.1)
    s.remember("alice", "pw123456", "192.0.2.1", NOW, **K)
    waiter.join(5)
    assert got == [True] and time.monotonic() - started < 2
    assert not s.seen("bob", "pw123456", "192.0.2.1", NOW, wait=0.05, **K)  # times out: False
