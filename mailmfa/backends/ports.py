"""The narrow interfaces the orchestrator needs; adapters implement them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

from mailmfa.core.types import UserRecord

if TYPE_CHECKING:  # the login path must not pay for importing the admin side
    from mailmfa.core.enroll import NewToken
    from mailmfa.core.types import TokenState, TotpParams


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
        The same update resets the throttle state (failure count 0, no last failure),
        and is refused as well when a failure was counted since `lookup`, so that
        parallel guesses cannot all be checked against one throttle decision.
        """

    def record_failure(self, record: UserRecord, now: float) -> None:
        """Count one failed code (called only when the password part was right).

        Atomic across mail servers: increments from what is stored, not from what
        `lookup` saw. Raises BackendUnavailable only when the store cannot be reached.
        """

    def remove_token(self, record: UserRecord) -> None:
        """Switch 2FA off for `record` (its token and the link to it), in one step.

        Called only for records whose lookup() set `password_reset`; a backend that never
        sets it need not implement this.
        """

    def close(self) -> None:
        """Release connections."""


# ------------------------------------------------------------------------------------ admin


class AdminError(Exception):
    """An expected admin-side refusal, worded for the help desk (no traceback shown)."""


class UnknownUser(AdminError):
    """No entry for this user name, or more than one (never guess which is meant)."""


class AlreadyEnrolled(AdminError):
    """The user has a token and the caller did not ask to replace it."""


class NotEnrolled(AdminError):
    """The user exists but has no token."""


class ListIncomplete(AdminError):
    """The store stopped a listing early (a server size limit): a configuration problem."""


class TokenAdmin(Protocol):
    """What the admin CLI (and later a web UI) needs from a token store.

    Users are named as they log in. Every method may raise BackendUnavailable (outage:
    retry later) and UnknownUser; the store's own layout (token on the user entry or
    separately, raw or base32 secret, params entries) stays behind this interface.
    Writes are single atomic operations: a crash never leaves 2FA half on.
    """

    def enrolment_params(self) -> TotpParams:
        """The TOTP parameters a new token gets (and the login path will use for it)."""

    def token_state(self, user: str) -> TokenState:
        """The user's token, or a state with enrolled=False; broken tokens set `problem`."""

    def write_token(self, user: str, token: NewToken, *, replace: bool = False) -> None:
        """Store a new token (secret, params, creation time, used step) in one write.

        Raises AlreadyEnrolled when the user has a token and `replace` is false; with
        `replace`, the old secret and its history (drift, failures) are gone afterwards.
        """

    def remove_token(self, user: str) -> bool:
        """Remove the token and the user's link to it in one step; False when there was none."""

    def set_drift(self, user: str, drift: int, last_step: int | None = None) -> None:
        """Store the clock drift (whole steps) and, if given, mark steps up to `last_step`
        as used (the codes given for a resync). Raises NotEnrolled."""

    def reset_failures(self, user: str) -> bool:
        """Clear the brute-force throttle (failure count, last failure): `mailmfa unlock`.
        False when the user has no token. Raises UnknownUser."""

    def list_enrolled(self, page_size: int = 500) -> Iterator[str]:
        """Every enrolled user's name, fetched a page at a time (any directory size).

        Raises ListIncomplete when the store stops before the end (e.g. a size limit), so a
        partial list is never taken for the whole.
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
