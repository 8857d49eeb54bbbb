"""The reuse store on a real SQLite file: keyed hashes only, expiry, fail-safe when unusable."""

import os
import stat

import pytest

from mailmfa.backends.state import MemoryReuseStore, ReuseStore, open_reuse_store

NOW = 1_800_000_000.0


def test_off_when_zero_seconds(tmp_path):
    assert open_reuse_store(str(tmp_path / "s.db"), 0) is None
    assert not (tmp_path / "s.db").exists()


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_remember_then_seen_same_user_string_ip_only(tmp_path, kind):
    """The per-login programs' file and the daemon's memory keep the same rules."""
    s = ReuseStore(str(tmp_path / "s.db"), 60) if kind == "sqlite" else MemoryReuseStore(60)
    assert not s.seen("alice", "pw123456", "192.0.2.1", NOW)
    assert s.remember("alice", "pw123456", "192.0.2.1", NOW)
    assert s.seen("alice", "pw123456", "192.0.2.1", NOW + 59)
    assert not s.seen("alice", "pw123456", "192.0.2.1", NOW + 60)  # expired
    assert not s.seen("alice", "pw123456", "192.0.2.2", NOW)  # other IP
    assert not s.seen("alice", "pw123457", "192.0.2.1", NOW)  # other string
    assert not s.seen("bob", "pw123456", "192.0.2.1", NOW)  # other user
    assert not s.seen("alicepw", "123456", "192.0.2.1", NOW)  # no field-boundary collisions
    s.close()


def test_no_ip_no_reuse(tmp_path):
    s = ReuseStore(str(tmp_path / "s.db"), 60)
    assert not s.remember("alice", "pw123456", "", NOW)
    assert not s.seen("alice", "pw123456", "", NOW)


def test_second_process_sees_entry_and_expired_rows_are_purged(tmp_path):
    path = str(tmp_path / "s.db")
    a, b = ReuseStore(path, 60), ReuseStore(path, 60)
    assert a.remember("alice", "pw123456", "192.0.2.1", NOW)
    assert b.seen("alice", "pw123456", "192.0.2.1", NOW + 1)
    b.remember("bob", "x654321", "192.0.2.1", NOW + 120)  # purges alice's expired row
    import sqlite3

    rows = sqlite3.connect(path).execute("SELECT count(*) FROM reuse").fetchone()[0]
    assert rows == 1


def test_file_is_private_and_holds_no_clear_text(tmp_path):
    path = tmp_path / "s.db"
    s = ReuseStore(str(path), 60)
    s.remember("alice", "Secretpw123456", "192.0.2.1", NOW)
    s.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    raw = path.read_bytes()
    for needle in (b"alice", b"Secretpw", b"123456", b"192.0.2.1"):
        assert needle not in raw


def test_unusable_file_means_no_reuse_and_one_log_line(tmp_path, capsys):
    bad = tmp_path / "not-a-db"
    bad.write_bytes(b"this is not sqlite" * 100)
    s = ReuseStore(str(bad), 60)
    assert not s.remember("alice", "pw123456", "192.0.2.1", NOW)
    assert not s.seen("alice", "pw123456", "192.0.2.1", NOW)
    err = capsys.readouterr().err
    assert err.count("event=state_unavailable") == 1 and "effect=reuse_off" in err
    missing_dir = ReuseStore(str(tmp_path / "nope" / "s.db"), 60)
    assert not missing_dir.seen("alice", "pw123456", "192.0.2.1", NOW)


def test_symlink_is_not_followed(tmp_path, capsys):
    target = tmp_path / "elsewhere"
    target.write_text("keep me")
    link = tmp_path / "s.db"
    os.symlink(target, link)
    s = ReuseStore(str(link), 60)
    assert not s.remember("alice", "pw123456", "192.0.2.1", NOW)
    assert target.read_text() == "keep me"
    assert "state_unavailable" in capsys.readouterr().err


# --------------------------------------------------------------------------- the daemon's, in memory

def test_memory_store_follows_a_reload_that_turns_reuse_off():
    s = MemoryReuseStore(60)
    assert s.remember("alice", "pw123456", "192.0.2.1", NOW)
    assert not s.remember("bob", "pw123456", "", NOW)  # no IP, no reuse
    s.seconds = 0  # reloaded with reuse off
    assert not s.seen("alice", "pw123456", "192.0.2.1", NOW + 1)


def test_memory_store_holds_digests_only_and_purges_expired():
    s = MemoryReuseStore(60)
    s.remember("alice", "pw123456", "192.0.2.1", NOW)
    s.remember("bob", "pw654321", "192.0.2.1", NOW + 1)
    held = b"".join(s._expiry)
    assert b"alice" not in held and b"123456" not in held and b"192.0.2.1" not in held
    s.remember("carol", "pw111111", "192.0.2.1", NOW + 60.5)  # alice expired: dropped
    assert len(s) == 2
    s.remember("dave", "pw222222", "192.0.2.1", NOW + 200)  # bob and carol expired too
    assert len(s) == 1


def test_memory_store_is_bounded_oldest_first(monkeypatch):
    monkeypatch.setattr(MemoryReuseStore, "MAX_ENTRIES", 3)
    s = MemoryReuseStore(60)
    for i in range(5):
        s.remember(f"u{i}", "pw123456", "192.0.2.1", NOW + i)
    assert len(s) == 3
    assert not s.seen("u0", "pw123456", "192.0.2.1", NOW + 5)
    assert s.seen("u4", "pw123456", "192.0.2.1", NOW + 5)


def test_memory_store_waiter_wakes_when_the_winner_remembers():
    import threading
    import time

    s = MemoryReuseStore(60)
    got = []
    waiter = threading.Thread(target=lambda: got.append(s.seen("alice", "pw123456", "192.0.2.1", NOW, wait=5)))
    started = time.monotonic()
    waiter.start()
    time.sleep(0.1)
    s.remember("alice", "pw123456", "192.0.2.1", NOW)
    waiter.join(5)
    assert got == [True] and time.monotonic() - started < 2
    assert not s.seen("bob", "pw123456", "192.0.2.1", NOW, wait=0.05)  # times out: False
