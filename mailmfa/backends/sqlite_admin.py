"""TokenAdmin over the SQLite store: the `mailmfa` commands in single-host mode.

A thin layer over SqliteStore (which already has one atomic statement per operation);
what it adds is the port's contract: user names validated as the LDAP side does, and
the errors the CLI maps to exit codes (UnknownUser, NotEnrolled, AlreadyEnrolled).

Which users exist: the store holds only enrolled users, so existence is asked of the
password side -- for `[password] backend = "pam"` the system's user database (NSS:
`pwd.getpwnam`, which covers /etc/passwd and any NSS source PAM itself would use), for
`"ldap"` the directory. A name with a stored token always exists as well, so the token
of an account deleted meanwhile can still be inspected and removed. Enrolling a name
that is neither is refused (UnknownUser): a typo must not create a token nobody owns.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from mailmfa.backends.combined import password_checker
from mailmfa.backends.ports import AdminError, AlreadyEnrolled, NotEnrolled, UnknownUser
from mailmfa.backends.sqlite import SqliteStore
from mailmfa.config import Config
from mailmfa.core.enroll import NewToken
from mailmfa.core.types import TokenState, TotpParams

MAX_USER = 256  # as the login path and the LDAP admin


class SqliteTokenAdmin:
    """TokenAdmin port over SqliteStore. One instance per command; not thread-safe.

    Which users exist is the `[password] backend`'s answer (see the module doc): the same
    checker a login's password goes to."""

    def __init__(self, config: Config, store: SqliteStore | None = None) -> None:
        self.config = config
        self.store = store or SqliteStore(config.store.path, config.store.timeout)
        self.password: Any = password_checker(config)

    # -- users ----------------------------------------------------------------------------
    def _check_name(self, user: str) -> None:
        if not user or len(user) > MAX_USER or any(ord(c) < 0x20 or c == "\x7f" for c in user):
            raise UnknownUser(f"{user!r}: not a valid user name")

    def _require_user(self, user: str, info: TokenState | None) -> None:
        if info is None and not self.password.exists(user):
            where = "in the directory" if self.config.password.backend == "ldap" else "on this system"
            raise UnknownUser(f"{user}: no such user {where}")

    def _get(self, user: str) -> TokenState | None:
        """The stored token; UnknownUser when the name has neither a token nor an account."""
        self._check_name(user)
        info = self.store.get(user)
        self._require_user(user, info)
        return info

    # -- reading ----------------------------------------------------------------------------
    def enrolment_params(self) -> TotpParams:
        """[totp] of the config: SQLite tokens carry their params, so logins use these."""
        t = self.config.totp
        return TotpParams(t.digits, t.period, t.algorithm, t.window)

    def token_state(self, user: str) -> TokenState:
        info = self._get(user)
        if info is None:
            return TokenState(user, user, False)
        return info

    def list_enrolled(self, page_size: int = 500) -> Iterator[str]:
        return self.store.list_enrolled(page_size)

    # -- writing ----------------------------------------------------------------------------
    def write_token(self, user: str, token: NewToken, *, replace: bool = False) -> None:
        self._get(user)
        try:
            written = self.store.write_token(user, token.secret, token.params, token.created,
                                             last_step=token.last_step, replace=replace)
        except ValueError as exc:
            raise AdminError(f"{user}: the token cannot be written: {exc}") from None
        if not written:
            raise AlreadyEnrolled(f"{user} already has 2-step verification")

    def remove_token(self, user: str) -> bool:
        self._get(user)
        return self.store.remove_token(user)

    def set_drift(self, user: str, drift: int, last_step: int | None = None) -> None:
        self._get(user)
        if not self.store.set_drift(user, drift, last_step):
            raise NotEnrolled(f"{user} has no 2-step verification")

    def reset_failures(self, user: str) -> bool:
        self._get(user)
        return self.store.reset_failures(user)

    def close(self) -> None:
        try:
            self.password.close()
        finally:
            self.store.close()
