"""SQLite token store for single-host mode: tokens and login state in one local file.

Same data model as the OATH-LDAP attributes (secret, params, last step, drift, failure
count, last failure, last login, secret time), so every feature works the same in both
modes. Why these choices:

- WAL journal: logins read while another login writes; `timeout` bounds the wait for
  the single write lock, after which the login is a temporary failure, never a guess.
- The replay guard is one conditional UPDATE (`... WHERE last_step IS <value read>
  AND (last_step IS NULL OR last_step < <new step>)`): SQLite runs it atomically under
  its write lock, so of N concurrent logins with the same code exactly one changes the
  row; the rest see rowcount 0 -- the same compare-and-swap as the LDAP modify.
- The file holds TOTP secrets: it is created 0600 (its directory 0750) and a file that
  others can read or write is refused rather than used.
- `PRAGMA user_version` carries the schema version; migrations run once, in a write
  transaction, and a newer schema than this code knows is refused.
- Rows are keyed by `user_key(name)` (mailmfa/core/names.py), never the name as typed: the
  password side (an LDAP bind, sssd) may take `BOB` for `bob`, and an exact-match lookup
  would then find no token and let the password alone in. Schema 2 re-keys older files.

One SqliteStore per concurrent login (like LdapDirectory); not thread-safe.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Callable, Iterator

from mailmfa.backends.ports import BackendUnavailable
from mailmfa.core.names import user_key
from mailmfa.core.types import ALGORITHMS, Token, TokenState, TotpParams, UserRecord

SCHEMA_VERSION = 2


def _rekey(conn: sqlite3.Connection, path: str) -> None:
    """Schema 2: every row under user_key(user). Two rows that become one key are two
    names for one login (`Bob`, `bob`): refused, naming both, rather than one dropped."""
    rows = conn.execute("SELECT user FROM tokens").fetchall()
    keys: dict[str, str] = {}
    for (name,) in rows:
        key = user_key(name)
        if not key:
            raise BackendUnavailable(
                "store_schema", f"{path}: {name!r} is no login name (nothing left of it as one); "
                f"delete its token first: sqlite3 {path} \"DELETE FROM tokens WHERE user = '...'\"")
        if key in keys:
            raise BackendUnavailable(
                "store_schema", f"{path}: {keys[key]!r} and {name!r} are one login name to the password check; "
                f"delete one token first: sqlite3 {path} \"DELETE FROM tokens WHERE user = '...'\"")
        keys[key] = name
    for key, name in keys.items():
        if key != name:
            conn.execute("UPDATE tokens SET user = ? WHERE user = ?", (key, name))


# version -> statements (or functions of the connection and path) that bring the schema
# from version-1 to version
_MIGRATIONS: dict[int, tuple[str | Callable[[sqlite3.Connection, str], None], ...]] = {
    1: (
        """CREATE TABLE tokens (
            user          TEXT PRIMARY KEY NOT NULL,
            secret        BLOB NOT NULL,
            digits        INTEGER NOT NULL CHECK (digits BETWEEN 6 AND 8),
            period        INTEGER NOT NULL CHECK (period BETWEEN 1 AND 3600),
            algorithm     TEXT NOT NULL CHECK (algorithm IN ('SHA1', 'SHA256', 'SHA512')),
            "window"      INTEGER NOT NULL CHECK ("window" BETWEEN 0 AND 10),
            last_step     INTEGER,
            drift         INTEGER NOT NULL DEFAULT 0,
            failure_count INTEGER NOT NULL DEFAULT 0,
            last_failure  INTEGER,
            last_login    INTEGER,
            secret_time   INTEGER
        ) STRICT""",
    ),
    2: (_rekey,),
}

_COLUMNS = ('user, secret, digits, period, algorithm, "window", last_step, drift, '
            "failure_count, last_failure, last_login, secret_time")

FILE_MODE = 0o600
DIR_MODE = 0o750
UNAVAILABLE = "store_unavailable"
_URI_ESCAPES = {"%": "%25", "?": "%3f", "#": "%23"}


def _state(row: tuple) -> TokenState:
    """A stored row as the admin's view of the token (the DN of a SQLite token is the user name)."""
    user, secret, digits, period, algorithm, window, last, drift, fails, last_fail, last_login, stime = row
    return TokenState(user, user, True, "", bytes(secret) or None, TotpParams(digits, period, algorithm, window),
                      stime, last, drift, fails, last_fail, last_login,
                      "" if secret else "the token has no usable secret")


def login_token(state: TokenState) -> Token:
    """The login path's view, with the throttle state the core decides on."""
    assert state.params is not None
    return Token(state.user, state.secret or b"", state.params, state.last_step, state.drift,
                 failure_count=state.failure_count or 0, last_failure=state.last_failure)


def _unavailable(exc: BaseException) -> BackendUnavailable:
    return BackendUnavailable(UNAVAILABLE, f"{type(exc).__name__}: {exc}")


class SqliteStore:
    """Token store over a local SQLite file: the token half of the Directory port
    (lookup, record_success, record_failure) plus the admin operations."""

    def __init__(self, path: str, timeout: float = 5.0, *, create: bool = True) -> None:
        self.path = path
        self.timeout = timeout
        self.create = create
        self._conn: sqlite3.Connection | None = None

    # -- opening ----------------------------------------------------------------------
    def _prepare_file(self) -> None:
        """Create the directory (0750) and the file (0600) if missing; refuse a file
        that others can read or write: it holds every user's TOTP secret."""
        parent = os.path.dirname(self.path) or "."
        if self.create and not os.path.isdir(parent):
            try:
                os.mkdir(parent, DIR_MODE)
            except FileExistsError:
                pass
        if self.create:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
                os.close(fd)
            except FileExistsError:
                pass
        st = os.lstat(self.path)
        if not stat.S_ISREG(st.st_mode):  # a symlink too: set `path` to the file itself
            raise BackendUnavailable("store_unsafe", f"{self.path} is not a regular file")
        if st.st_mode & 0o007:
            raise BackendUnavailable(
                "store_unsafe", f"{self.path} is accessible by others; run: chmod o-rwx {self.path}")

    def _open(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        try:
            self._prepare_file()
            # mode=rw: SQLite itself never creates the file (with its default 0644 mode)
            uri = "file:" + "".join(_URI_ESCAPES.get(c, c) for c in self.path) + "?mode=rw"
            # check_same_thread off: a daemon may hand an instance to a worker thread (one
            # instance is still never used by two logins at once)
            conn = sqlite3.connect(uri, timeout=self.timeout, isolation_level=None, uri=True,
                                   check_same_thread=False)
        except OSError as exc:
            raise BackendUnavailable(UNAVAILABLE, f"{self.path}: {exc.strerror}") from None
        except sqlite3.Error as exc:
            raise _unavailable(exc) from None
        try:
            conn.execute("PRAGMA synchronous = FULL")  # an accepted step survives a crash
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version != SCHEMA_VERSION:
                self._migrate(conn, version)
        except BackendUnavailable:
            conn.close()
            raise
        except sqlite3.Error as exc:
            conn.close()
            raise _unavailable(exc) from None
        self._conn = conn
        return conn

    def _migrate(self, conn: sqlite3.Connection, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise BackendUnavailable(
                "store_schema", f"{self.path} has schema {version}, this mailmfa knows {SCHEMA_VERSION}")
        if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            conn.execute("PRAGMA journal_mode = WAL")  # persistent; not inside a transaction
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = conn.execute("PRAGMA user_version").fetchone()[0]  # another process may have won
            for v in range(current + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[v]:
                    if callable(statement):
                        statement(conn, self.path)
                    else:
                        conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
        self._conn = None

    def _run(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        conn = self._open()
        try:
            return conn.execute(sql, args)
        except sqlite3.Error as exc:
            raise _unavailable(exc) from None

    # -- the token half of the Directory port -------------------------------------------
    def lookup(self, user: str) -> UserRecord | None:
        """The user's record with their token, or None when no token is stored."""
        info = self.get(user)
        if info is None:
            return None
        return UserRecord(user, user, login_token(info))

    def record_success(self, record: UserRecord, step: int, now: float) -> bool:
        """Compare-and-swap, as the LDAP adapter's delete-old/add-new modify: move the
        last step from the value this login read (record.token.last_step) to `step`, and
        reset the throttle state (failure count 0, no last failure) in the same update.
        False when the row changed since (another login won, or a failure was counted
        since lookup: parallel guesses cannot share one throttle decision) or `step` is
        not later."""
        token = record.token
        assert token is not None
        sql = ("UPDATE tokens SET last_step = ?, last_login = ?, failure_count = 0, last_failure = NULL "
               "WHERE user = ? AND last_step IS ? AND (last_step IS NULL OR last_step < ?) "
               "AND failure_count = ?")
        args = (step, int(now), user_key(record.name), token.last_step, step, token.failure_count)
        return self._run(sql, args).rowcount == 1

    def record_failure(self, record: UserRecord, now: float) -> int:
        """Count a failed attempt (for throttling); returns the new count (0: no token)."""
        cur = self._run(
            "UPDATE tokens SET failure_count = failure_count + 1, last_failure = ? WHERE user = ? "
            "RETURNING failure_count",
            (int(now), user_key(record.name)),
        )
        rows = cur.fetchall()  # step to the end: the change commits when the statement completes
        return int(rows[0][0]) if rows else 0

    # -- admin operations ----------------------------------------------------------------
    def get(self, user: str) -> TokenState | None:
        """The stored token of `user`, or None."""
        row = self._run(f"SELECT {_COLUMNS} FROM tokens WHERE user = ?", (user_key(user),)).fetchone()
        if row is None:
            return None
        try:
            return _state(row)
        except (TypeError, ValueError) as exc:
            raise BackendUnavailable("token_invalid", type(exc).__name__) from None

    def list_tokens(self) -> list[TokenState]:
        """Every stored token, by user name."""
        rows = self._run(f"SELECT {_COLUMNS} FROM tokens ORDER BY user").fetchall()
        return [_state(r) for r in rows]

    def list_enrolled(self, page_size: int = 500) -> Iterator[str]:
        """Every enrolled user's name, a page at a time (keyset pagination: a user added
        or removed meanwhile never makes the listing skip or repeat another)."""
        after = ""
        while True:
            rows = self._run("SELECT user FROM tokens WHERE user > ? ORDER BY user LIMIT ?",
                             (after, page_size)).fetchall()
            yield from (r[0] for r in rows)
            if len(rows) < page_size:
                return
            after = rows[-1][0]

    def write_token(self, user: str, secret: bytes, params: TotpParams, now: float, *,
                    last_step: int | None = None, replace: bool = True) -> bool:
        """Enrol (or re-enrol) `user`: a new secret starts with fresh state (no drift, no
        failures, no last login). Pass the activation code's step as `last_step` so that code is consumed.
        With replace=False an existing token is kept and False is returned."""
        user = user_key(user)
        if not user or not secret:
            raise ValueError("user and secret must not be empty")
        if params.algorithm not in ALGORITHMS:
            raise ValueError(f"unsupported algorithm {params.algorithm!r}")
        values = (user, secret, params.digits, params.period, params.algorithm, params.window,
                  last_step, int(now))
        insert = ('INSERT INTO tokens (user, secret, digits, period, algorithm, "window", last_step, '
                  "secret_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
        if replace:
            insert += (' ON CONFLICT(user) DO UPDATE SET secret = excluded.secret, digits = excluded.digits, '
                       'period = excluded.period, algorithm = excluded.algorithm, "window" = excluded."window", '
                       "last_step = excluded.last_step, drift = 0, failure_count = 0, last_failure = NULL, "
                       "last_login = NULL, secret_time = excluded.secret_time")
        else:
            insert += " ON CONFLICT(user) DO NOTHING"
        return self._run(insert, values).rowcount == 1

    def remove_token(self, user: str) -> bool:
        """Switch 2FA off for `user` (e.g. after a password reset); False if none was stored."""
        return self._run("DELETE FROM tokens WHERE user = ?", (user_key(user),)).rowcount == 1

    def set_drift(self, user: str, drift: int, last_step: int | None = None) -> bool:
        """Set the clock offset, in steps, and, if given, mark steps up to `last_step` as
        used (the codes given for a resync; an already later step is kept). False if
        `user` has no token."""
        return self._run(
            "UPDATE tokens SET drift = ?, last_step = CASE WHEN ? IS NULL THEN last_step "
            "WHEN last_step IS NULL OR last_step < ? THEN ? ELSE last_step END WHERE user = ?",
            (int(drift), last_step, last_step, last_step, user_key(user)),
        ).rowcount == 1

    def reset_failures(self, user: str) -> bool:
        """Clear the failure count (lifts throttling); False if `user` has no token."""
        return self._run(
            "UPDATE tokens SET failure_count = 0, last_failure = NULL WHERE user = ?", (user_key(user),)
        ).rowcount == 1

    def schema_version(self) -> int:
        """The schema version of the open file (for `status` output and tests)."""
        return int(self._run("PRAGMA user_version").fetchone()[0])
