"""A Directory made of two parts: where the token lives, and who checks the password.

authenticate() sees one Directory whatever the backends are; this adapter joins a token
store (SqliteStore, or LdapDirectory) with a PasswordChecker (PAM, or an LDAP bind), so
`[store] backend` and `[password] backend` can be chosen independently.
"""

from __future__ import annotations

from typing import Any

from mailmfa.backends.ports import PasswordChecker
from mailmfa.core.types import UserRecord


class CombinedDirectory:
    """Directory port: lookup and step updates from `store`, password from `password`.

    absent_is_tokenless: the store only holds enrolled users (SQLite), so a user it does
    not know is a user without a token, whose existence the password check decides.
    """

    def __init__(self, store: Any, password: PasswordChecker, *, absent_is_tokenless: bool) -> None:
        self.store = store
        self.password = password
        self.absent_is_tokenless = absent_is_tokenless

    def lookup(self, user: str) -> UserRecord | None:
        record = self.store.lookup(user)
        if record is None and self.absent_is_tokenless:
            return UserRecord(user, user, None)
        return record

    def verify_password(self, record: UserRecord, password: str) -> bool:
        return bool(password) and self.password.check(record.name, password)

    def user_exists(self, user: str) -> bool:
        """Whether the password side knows `user`: lookup() cannot say for a user the store
        does not hold (absent is tokenless), and a userdb lookup must not answer "exists"
        for any name (LMTP/LDA recipient checks rely on it)."""
        return bool(self.password.exists(user))

    def record_success(self, record: UserRecord, step: int, now: float) -> bool:
        return bool(self.store.record_success(record, step, now))

    def record_failure(self, record: UserRecord, now: float) -> Any:
        """Throttling state lives with the token (see ports: record_failure)."""
        return self.store.record_failure(record, now)

    def remove_token(self, record: UserRecord) -> None:
        """Switch 2FA off for `record` (after an administrator's password reset)."""
        self.store.remove_token(record.name if self.absent_is_tokenless else record)

    def close(self) -> None:
        try:
            self.password.close()
        finally:
            self.store.close()


def password_checker(cfg: Any) -> Any:
    """The PasswordChecker `[password] backend` names: the login's password factor, and for
    the admin side and userdb lookups the one that says which users exist."""
    if cfg.password.backend == "pam":
        from mailmfa.backends.pampw import PamPassword

        return PamPassword(cfg.password.pam_service)
    from mailmfa.backends.ldap import LdapDirectory

    return LdapPassword(LdapDirectory(cfg))


class LdapPassword:
    """PasswordChecker by binding as the user's LDAP entry (tokens kept elsewhere)."""

    def __init__(self, directory: Any) -> None:
        self.directory = directory

    def check(self, user: str, password: str) -> bool:
        if not password:
            return False
        record = self.directory.lookup(user)
        return record is not None and self.directory.verify_password(record, password)

    def exists(self, user: str) -> bool:
        return self.directory.lookup(user) is not None

    def close(self) -> None:
        self.directory.close()
