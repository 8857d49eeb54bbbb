"""The narrow interfaces the orchestrator needs; adapters implement them."""

from __future__ import annotations

from typing import Protocol

from mailmfa.core.types import UserRecord


class BackendUnavailable(Exception):
    """A temporary failure: directory down, timeout, service bind refused.

    Always mapped to TEMPFAIL, never to a refusal or an acceptance: an outage must
    not look like a wrong password (clients would drop the saved password) nor let
    anyone in. `reason` is the log reason (ldap_unavailable, service_bind_failed, ...).
    """

    def __init__(self, reason: str = "ldap_unavailable", detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason = reason
        self.detail = detail


class Directory(Protocol):
    def lookup(self, user: str) -> UserRecord | None:
        """The user and their token, or None for an unknown user."""

    def verify_password(self, record: UserRecord, password: str) -> bool:
        """True when `password` is the user's password (never called with an empty one)."""

    def record_success(self, record: UserRecord, step: int, now: float) -> bool:
        """Atomically move the token's last step from record.token.last_step to `step`.

        False when another login got there first (compare-and-swap lost): a replay.
        """

    def close(self) -> None:
        """Release connections."""


class PasswordChecker(Protocol):
    """The password factor alone, when it is checked somewhere other than where the
    token lives (single-host mode: PAM; or an LDAP bind beside a SQLite token store)."""

    def check(self, user: str, password: str) -> bool:
        """True when `password` is the user's; False when refused (unknown user too).

        Raises BackendUnavailable when the checker cannot answer now."""

    def close(self) -> None:
        """Release whatever the checker holds."""
