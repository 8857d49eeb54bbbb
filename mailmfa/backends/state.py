"""The reuse store: "this exact password+code was just accepted from this client IP".

Mail clients open several connections within seconds with the same password+code; strict
replay refusal would fail all but one. After a success the orchestrator remembers a keyed
hash of (user, whole password+code string, client IP, token secret) with the time
it was remembered, and a replayed code is accepted again only when that hash is present and
younger than the CURRENT `reuse_seconds` (the password is still checked by the directory
every time). Why each field is in the hash:
- not the service, on purpose: a mail client logs in to IMAP and, to send, SMTP AUTH with
  the same saved password+code (the web sign-in uses no window at all);
- the token's secret (inside the HMAC input, never stored): after a re-enrolment (new
  secret) or a removal the old token's password+code never matches an entry again;
- the time remembered, not an expiry: lowering `reuse_seconds` (and reloading) shortens
  the entries already stored, too.

A local SQLite file (stdlib sqlite3, imported only when reuse is on), because the
guarantee is per client connection burst, which lands on one mail server. What it holds:
a random 32-byte key (made when the file is created) and HMAC-SHA256 digests with the time
they were remembered -- no user name, password, code, IP or token secret in clear. The key
sits beside the digests, so the file is created 0600 and must be protected like the rest of
/var/lib/mailmfa: with the key, a digest can be tested against guesses (HMAC-SHA256 rather
than scrypt because this runs on every login; the entries live `reuse_seconds` only).
Entries are kept in table `reuse_v2`; a file from an earlier version (table `reuse`, no
token in its digests) has that table dropped on first use: its entries would
never match again anyway, and losing them only means a strict replay refusal.

Failure is never fatal and never an acceptance: if the file cannot be opened, read or
written (read-only, disk full, wrong owner), reuse simply does not apply -- the login is
decided by strict replay refusal -- and one log line says why.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import threading
import time
from typing import Any

from mailmfa import log

BUSY_TIMEOUT = 2.0  # seconds SQLite waits for another process' write lock
POLL_INTERVAL = 0.05


def _digest(key: bytes, user: str, secret: str, rip: str, token: bytes) -> bytes:
    """Length-prefixed fields, so ("ab","c") and ("a","bc") never collide. `token` is the
    token's secret: it only ever enters the HMAC, so it is never stored."""
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for raw in (*(f.encode("utf-8", "surrogatepass") for f in (user, secret, rip)), token):
        mac.update(len(raw).to_bytes(4, "big"))
        mac.update(raw)
    return mac.digest()


class ReuseStore:
    """One SQLite file; not thread-safe (one instance per concurrent login, like LdapDirectory)."""

    def __init__(self, path: str, seconds: int) -> None:
        self.path = path
        self.seconds = seconds
        self._db: Any = None
        self._key: bytes | None = None
        self._failed = False

    # -- plumbing -------------------------------------------------------------------------
    def _problem(self, what: str, exc: BaseException) -> None:
        if not self._failed:  # one line per login is enough
            log.emit({"event": "state_unavailable", "path": self.path, "op": what,
                      "error": f"{type(exc).__name__}: {exc}", "effect": "reuse_off"})
        self._failed = True
        self.close()

    def _open(self) -> Any:
        if self._db is not None:
            return self._db
        import sqlite3

        # Create the file ourselves so it is born 0600 (SQLite would use 0644 & ~umask);
        # O_NOFOLLOW: a symlink planted in the state directory is not followed.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        os.close(fd)
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None)
        try:
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL)")
            db.execute("DROP TABLE IF EXISTS reuse")  # an earlier version's format (see above)
            db.execute("CREATE TABLE IF NOT EXISTS reuse_v2 (digest BLOB PRIMARY KEY, remembered REAL NOT NULL)")
            db.execute("INSERT OR IGNORE INTO meta VALUES ('key', ?)", (os.urandom(32),))
            row = db.execute("SELECT value FROM meta WHERE name = 'key'").fetchone()
        except BaseException:
            db.close()
            raise
        if not row or not isinstance(row[0], bytes) or len(row[0]) < 16:
            db.close()
            raise ValueError("state file has no valid key")
        self._key = row[0]
        self._db = db
        return db

    def close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(Exception):  # closing must never raise
                self._db.close()
        self._db = None

    # -- the two operations -----------------------------------------------------------------
    def seen(self, user: str, secret: str, rip: str, now: float, wait: float = 0.0, *,
             token: bytes) -> bool:
        """True when this string was accepted from `rip`, with the same token secret, less
        than `seconds` (its current value) before `now`.

        `wait` > 0 polls for that long: a parallel login that just won the step update
        writes its entry right after, and the loser of that race should see it.
        Any problem is False (reuse off), never an exception.
        """
        if not rip or self.seconds <= 0 or self._failed:
            return False
        deadline = time.monotonic() + wait
        while True:
            try:
                db = self._open()
                assert self._key is not None
                row = db.execute(
                    "SELECT 1 FROM reuse_v2 WHERE digest = ? AND remembered > ?",
                    (_digest(self._key, user, secret, rip, token), now - self.seconds),
                ).fetchone()
            except Exception as exc:  # noqa: BLE001 - any storage problem turns reuse off
                self._problem("read", exc)
                return False
            if row:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_INTERVAL)

    def remember(self, user: str, secret: str, rip: str, now: float, *,
                 token: bytes) -> bool:
        """Record an accepted string (and purge expired entries); False if it could not."""
        if not rip or self.seconds <= 0 or self._failed:
            return False
        try:
            db = self._open()
            assert self._key is not None
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("DELETE FROM reuse_v2 WHERE remembered <= ?", (now - self.seconds,))
                db.execute(
                    "INSERT OR REPLACE INTO reuse_v2 VALUES (?, ?)",
                    (_digest(self._key, user, secret, rip, token), now),
                )
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            return True
        except Exception as exc:  # noqa: BLE001
            self._problem("write", exc)
            return False


class MemoryReuseStore:
    """The resident daemon's reuse store: the same keyed digests, in memory, shared by its threads.

    While mailmfa-authd runs it decides every login, so the entries need not outlive it; and
    per login, opening the SQLite file and a write transaction cost more than the LDAP work.
    The key is made at start and never leaves the process. Bounded: past MAX_ENTRIES the
    oldest entries go first (a lost entry only means a strict replay refusal).
    """

    MAX_ENTRIES = 100_000

    def __init__(self, seconds: int) -> None:
        self.seconds = seconds  # the daemon updates it on reload
        self._key = os.urandom(32)
        self._remembered: dict[bytes, float] = {}  # insertion order = age order: oldest first
        self._changed = threading.Condition()

    def seen(self, user: str, secret: str, rip: str, now: float, wait: float = 0.0, *,
             token: bytes) -> bool:
        """As ReuseStore.seen; a waiting caller wakes as soon as another thread remembers."""
        if not rip or self.seconds <= 0:
            return False
        digest = _digest(self._key, user, secret, rip, token)
        deadline = time.monotonic() + wait
        with self._changed:
            while True:
                remembered = self._remembered.get(digest)
                if remembered is not None and remembered > now - self.seconds:
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)

    def remember(self, user: str, secret: str, rip: str, now: float, *,
                 token: bytes) -> bool:
        """Record an accepted string, dropping expired (and, when full, the oldest) entries."""
        if not rip or self.seconds <= 0:
            return False
        digest = _digest(self._key, user, secret, rip, token)
        with self._changed:
            entries = self._remembered
            entries.pop(digest, None)
            oldest_kept = now - self.seconds
            while entries:
                oldest = next(iter(entries))
                if entries[oldest] > oldest_kept and len(entries) < self.MAX_ENTRIES:
                    break
                del entries[oldest]
            entries[digest] = now
            self._changed.notify_all()
        return True

    def __len__(self) -> int:
        return len(self._remembered)

    def close(self) -> None:
        """Nothing to release (the same interface as ReuseStore)."""


def open_reuse_store(path: str, seconds: int) -> ReuseStore | None:
    """A store, or None when reuse is off (nothing is imported or opened then)."""
    if seconds <= 0:
        return None
    return ReuseStore(path, seconds)
