"""Throttle state for the admin face: read it (`mailmfa status`) and clear it (`mailmfa unlock`).

Kept apart from the login path: these run as the service account on an admin's request,
with the same LdapDirectory (same connection rules, timeouts, attribute names).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from mailmfa.config import Config
from mailmfa.core.throttle import FREE_TRIES, LOCKOUT_AFTER, is_locked_out, wait_seconds


@dataclass(frozen=True)
class ThrottleStatus:
    """What an admin needs: how many failed codes, since when, how long until the next try."""

    user: str
    failures: int
    last_failure: float | None  # Unix time
    wait_seconds: float  # 0: a code is checked now; inf: locked out until unlock
    locked_out: bool
    free_tries: int = FREE_TRIES
    lockout_after: int = LOCKOUT_AFTER

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly (inf becomes None, with locked_out true)."""
        out = asdict(self)
        if self.locked_out:
            out["wait_seconds"] = None
        return out


def read_throttle(config: Config, user: str, now: float, directory: Any = None) -> ThrottleStatus | None:
    """The user's throttle state, or None when the user is unknown or has no token.

    Raises BackendUnavailable when the directory cannot be reached."""
    from mailmfa.backends.ldap import LdapDirectory

    d = directory or LdapDirectory(config)
    try:
        record = d.lookup(user)
    finally:
        if directory is None:
            d.close()
    if record is None or record.token is None:
        return None
    t = record.token
    return ThrottleStatus(
        user=user,
        failures=t.failure_count,
        last_failure=t.last_failure,
        wait_seconds=wait_seconds(t.failure_count, t.last_failure, now),
        locked_out=is_locked_out(t.failure_count),
    )


def reset_throttle(config: Config, user: str, directory: Any = None) -> bool:
    """Clear the user's failure count and last failure (`mailmfa unlock USER`).

    True when done, False when the user is unknown or has no token. Raises
    BackendUnavailable when the directory cannot be reached or refuses the change."""
    from mailmfa.backends.ldap import LdapDirectory

    d = directory or LdapDirectory(config)
    try:
        record = d.lookup(user)
        if record is None or record.token is None:
            return False
        d.reset_failures(record)
        return True
    finally:
        if directory is None:
            d.close()
