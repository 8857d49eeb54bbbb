"""mailmfa-authd's connection pool: slot accounting (pure logic, no server needed)."""

from __future__ import annotations

import pytest

from mailmfa.daemon.server import DirectoryPool


class Conn:
    closed = 0

    def close(self) -> None:
        Conn.closed += 1


def test_lazy_creation_reuse_and_bound():
    made = []
    pool = DirectoryPool(lambda: made.append(Conn()) or made[-1], 2)
    a = pool.acquire(0)
    b = pool.acquire(0)
    assert a[0] is not b[0] and len(made) == 2 and a[1] is False
    assert pool.acquire(0.05) is None  # both busy
    pool.release(a)
    again = pool.acquire(0)
    assert again[0] is made[0] and again[1] is True  # warm now
    pool.release(again, warm=False)
    assert pool.acquire(0)[1] is False


def test_factory_failure_loses_no_slot():
    calls = []

    def factory():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return Conn()

    pool = DirectoryPool(factory, 1)
    with pytest.raises(RuntimeError):
        pool.acquire(0)
    assert pool.acquire(0) is not None


def test_broken_and_retired_directories_are_closed():
    Conn.closed = 0
    pool = DirectoryPool(Conn, 2)
    a, b = pool.acquire(0), pool.acquire(0)
    a_dir = a[0]
    pool.release(a, broken=True)
    assert Conn.closed == 1
    c = pool.acquire(0)
    assert c[0] is not a_dir and c[1] is False  # re-made on next use
    pool.release(c)
    pool.close()  # a reload: idle ones closed now...
    assert Conn.closed == 2
    pool.release(b)  # ...busy ones when they come back
    assert Conn.closed == 3


# --------------------------------------------------------------------------- _WriteGuard

class _Recorder:
    """A stand-in directory that records calls (the guard's logic only, no LDAP)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *a, **k: self.calls.append(name) or name


def test_write_guard_reads_are_not_writes_everything_else_is():
    from mailmfa.daemon.server import _WriteGuard

    d = _Recorder()
    g = _WriteGuard(d)
    assert g.lookup("alice") == "lookup" and g.verify_password(None, "pw") == "verify_password"
    g.close()
    assert not g.wrote
    for method in ("record_success", "record_failure", "remove_token", "a_method_added_later"):
        g = _WriteGuard(d)
        assert getattr(g, method)(None) == method
        assert g.wrote, method
    assert d.calls == ["lookup", "verify_password", "close", "record_success", "record_failure",
                       "remove_token", "a_method_added_later"]
