"""Server-side sessions for mailmfa-web, in one SQLite file, with sealed fields.

Why not Flask's cookie session: a signed cookie is readable by the browser (it is only
base64), cannot be revoked at sign-out, and would carry the pending enrolment secret.
Here the cookie holds two random values, `SID.KEY`:

- SID names the row; the database stores only sha256(SID), so a copy of the database
  does not give anyone a usable cookie;
- KEY (32 random bytes) never reaches the server's disk. Sensitive fields (the password
  kept between the two sign-in screens, the pending enrolment secret) are sealed with
  AES-GCM under KEY, bound to the row and the field name. A copy of the database alone
  reveals none of them, and the browser alone holds nothing but the key.

Sessions end after `idle` seconds without a request, or `max_age` seconds in all.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import secrets
import sqlite3
import stat
import threading
import time
from collections.abc import Callable
from typing import Any

MAX_COOKIE = 200
_SCHEMA = """CREATE TABLE IF NOT EXISTS sessions (
  id TEXT PRIMARY KEY, data TEXT NOT NULL, created REAL NOT NULL, touched REAL NOT NULL)"""
_TOUCH_EVERY = 30.0  # rewrite an unchanged session at most this often (keeps it alive)
_SWEEP_EVERY = 60.0


class StateDirError(Exception):
    """The state directory is missing, unusable or open to others."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _row_id(sid: str) -> str:
    return hashlib.sha256(sid.encode("ascii")).hexdigest()


class Session:
    """One visitor's state. Plain values are JSON; secrets go through seal()/unseal()."""

    def __init__(self, sid: str | None, key: bytes, data: dict[str, Any], created: float,
                 touched: float) -> None:
        self.sid = sid
        self.key = key
        self.data = data
        self.created = created
        self.touched = touched
        self.modified = False
        self.ended = False
        self.old_row: str | None = None

    # dict-like access for plain values
    def get(self, name: str, default: Any = None) -> Any:
        return self.data.get(name, default)

    def __getitem__(self, name: str) -> Any:
        return self.data[name]

    def __setitem__(self, name: str, value: Any) -> None:
        self.data[name] = value
        self.modified = True

    def __contains__(self, name: str) -> bool:
        return name in self.data

    def pop(self, name: str, default: Any = None) -> Any:
        if name in self.data:
            self.modified = True
        return self.data.pop(name, default)

    @property
    def row(self) -> str | None:
        return _row_id(self.sid) if self.sid else None

    def _ensure_id(self) -> None:
        if self.sid is None:
            self.sid = secrets.token_urlsafe(32)

    # sealed values
    def _aead(self):
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        return AESGCM(self.key)

    def seal(self, name: str, value: bytes) -> None:
        """Store `value` encrypted under the cookie's key, bound to this session and `name`."""
        self._ensure_id()
        nonce = os.urandom(12)
        blob = nonce + self._aead().encrypt(nonce, value, f"{self.row}|{name}".encode())
        self.data.setdefault("_sealed", {})[name] = _b64(blob)
        self.modified = True

    def unseal(self, name: str) -> bytes | None:
        """The sealed value, or None when absent or not openable (wrong key, tampered)."""
        from cryptography.exceptions import InvalidTag

        text = self.data.get("_sealed", {}).get(name)
        if not text or self.sid is None:
            return None
        try:
            blob = _unb64(text)
            return self._aead().decrypt(blob[:12], blob[12:], f"{self.row}|{name}".encode())
        except (InvalidTag, ValueError, binascii.Error):
            return None

    def drop_sealed(self, name: str) -> None:
        sealed = self.data.get("_sealed", {})
        if name in sealed:
            del sealed[name]
            self.modified = True

    def rotate(self) -> None:
        """New SID and KEY (after sign-in: a cookie planted before it becomes worthless).

        Sealed values are re-encrypted under the new key; the old row is deleted on save.
        """
        opened = {n: self.unseal(n) for n in list(self.data.get("_sealed", {}))}
        if self.sid is not None and self.old_row is None:
            self.old_row = self.row
        self.sid = secrets.token_urlsafe(32)
        self.key = secrets.token_bytes(32)
        self.data["_sealed"] = {}
        for name, value in opened.items():
            if value is not None:
                self.seal(name, value)
        self.modified = True

    def end(self) -> None:
        """Sign-out: forget everything, delete the row, expire the cookie."""
        self.data = {}
        self.ended = True
        self.modified = True

    def cookie_value(self) -> str:
        assert self.sid is not None
        return f"{self.sid}.{_b64(self.key)}"


class SessionStore:
    """SQLite-backed sessions; one connection per thread (WSGI servers may use threads)."""

    def __init__(self, state_dir: str, idle: int, max_age: int = 8 * 3600,
                 clock: Callable[[], float] = time.time) -> None:
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, "sessions.sqlite3")
        self.idle = idle
        self.max_age = max_age
        self.clock = clock
        self._local = threading.local()
        self._last_sweep = 0.0
        self._check_dir()
        try:
            self._db().execute(_SCHEMA)
        except sqlite3.Error as exc:
            owner = self._owner(self.path)
            raise StateDirError(f"cannot use {self.path} ({exc}); it must belong to the user the page "
                                f"runs as{f' (it belongs to {owner})' if owner else ''}") from None

    @staticmethod
    def _owner(path: str) -> str:
        import pwd

        try:
            uid = os.stat(path).st_uid
        except OSError:
            return ""
        try:
            return pwd.getpwuid(uid).pw_name
        except KeyError:
            return str(uid)

    def _check_dir(self) -> None:
        try:
            st = os.stat(self.state_dir)
        except FileNotFoundError:
            try:
                os.makedirs(self.state_dir, mode=0o700)
            except OSError as exc:
                raise StateDirError(f"cannot create state_dir {self.state_dir}: {exc.strerror}") from None
            st = os.stat(self.state_dir)
        if not stat.S_ISDIR(st.st_mode):
            raise StateDirError(f"state_dir {self.state_dir} is not a directory")
        if os.geteuid() == 0 and st.st_uid != 0:
            # root opening files in a directory another user controls would follow what that
            # user put there (a symlink to anywhere), and would leave a root-owned database
            # the page, run as that user, cannot open
            owner = self._owner(self.state_dir)
            raise StateDirError(f"state_dir {self.state_dir} belongs to {owner}: run mailmfa-web as "
                                f"that user (runuser -u {owner} -- mailmfa-web ...), not as root")
        if st.st_mode & 0o077:
            raise StateDirError(
                f"state_dir {self.state_dir} is open to others (mode {stat.filemode(st.st_mode)}); "
                f"it holds sessions: run chmod 0700 {self.state_dir}"
            )

    def _db(self) -> sqlite3.Connection:
        # per thread, and per process: a connection must not cross a fork (gunicorn --preload)
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            old = os.umask(0o077)
            try:
                conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None, check_same_thread=True)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            finally:
                os.umask(old)
            self._local.conn = conn
            self._local.pid = os.getpid()
        return conn

    def new(self) -> Session:
        now = self.clock()
        return Session(None, secrets.token_bytes(32), {}, now, now)

    def load(self, cookie: str | None) -> Session:
        """The session named by the cookie, or a new empty one (unknown, expired, malformed)."""
        if not cookie or len(cookie) > MAX_COOKIE or cookie.count(".") != 1:
            return self.new()
        sid, key_text = cookie.split(".")
        try:
            key = _unb64(key_text)
            sid.encode("ascii")
        except (ValueError, binascii.Error, UnicodeEncodeError):
            return self.new()
        if len(key) != 32 or not sid:
            return self.new()
        row = self._db().execute(
            "SELECT data, created, touched FROM sessions WHERE id = ?", (_row_id(sid),)
        ).fetchone()
        if row is None:
            return self.new()
        now = self.clock()
        if now - row[2] > self.idle or now - row[1] > self.max_age:
            self._db().execute("DELETE FROM sessions WHERE id = ?", (_row_id(sid),))
            return self.new()
        return Session(sid, key, json.loads(row[0]), row[1], row[2])

    def save(self, s: Session) -> str | None:
        """Write the session if needed; returns the cookie value to send, "" to expire the
        cookie, or None to leave the browser's cookie as it is."""
        db = self._db()
        now = self.clock()
        if s.old_row:
            db.execute("DELETE FROM sessions WHERE id = ?", (s.old_row,))
        if s.ended:
            if s.row:
                db.execute("DELETE FROM sessions WHERE id = ?", (s.row,))
            return ""
        if not s.data:
            return None
        if not s.modified and now - s.touched < _TOUCH_EVERY:
            return None
        s._ensure_id()
        db.execute(
            "INSERT INTO sessions (id, data, created, touched) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET data = excluded.data, touched = excluded.touched",
            (s.row, json.dumps(s.data, separators=(",", ":")), s.created, now),
        )
        self._sweep(now)
        return s.cookie_value()

    def _sweep(self, now: float) -> None:
        if now - self._last_sweep < _SWEEP_EVERY:
            return
        self._last_sweep = now
        self._db().execute(
            "DELETE FROM sessions WHERE touched < ? OR created < ?", (now - self.idle, now - self.max_age)
        )

    def count(self) -> int:
        return int(self._db().execute("SELECT count(*) FROM sessions").fetchone()[0])
