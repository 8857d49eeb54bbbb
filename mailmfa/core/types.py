"""Plain values passed between the pure core and its adapters.

Frozen records (core/record.py: dataclass-like, without the cost of importing
dataclasses on every login) so a verdict or a token can be shared by a resident
daemon's threads without copying, and so nothing downstream can alter what the core decided.
"""

from __future__ import annotations

import enum

from mailmfa.core.record import field, record

# OIDs used by the OATH-LDAP schema's oathHMACAlgorithm (RFC 8018 appendix B.1).
ALGORITHM_OIDS = {
    "1.2.840.113549.2.7": "SHA1",
    "1.2.840.113549.2.9": "SHA256",
    "1.2.840.113549.2.11": "SHA512",
}
OIDS_BY_ALGORITHM = {name: oid for oid, name in ALGORITHM_OIDS.items()}
ALGORITHMS = ("SHA1", "SHA256", "SHA512")


class Verdict(enum.Enum):
    """What an entry point answers: the three outcomes every auth protocol can express."""

    ACCEPT = "ok"
    REJECT = "fail"
    TEMPFAIL = "tempfail"


@record
class TotpParams:
    digits: int = 6
    period: int = 30
    algorithm: str = "SHA1"
    window: int = 1


@record
class Token:
    """A user's TOTP token as stored; the secret never appears in repr()."""

    dn: str
    secret: bytes = field(repr=False)
    params: TotpParams
    last_step: int | None = None
    drift: int = 0
    # throttle state (core/throttle.py): failed codes with the right password since the
    # last success, and when the last one was counted (Unix time)
    failure_count: int = 0
    last_failure: float | None = None


@record
class UserRecord:
    """A directory user as the login path needs it: where to bind, and the token if any."""

    name: str
    dn: str
    token: Token | None = None
    # the directory says the password was reset by an administrator after this token was
    # enrolled (ppolicy pwdReset): the token is to be removed and the login goes on without it
    password_reset: bool = False


@record
class Request:
    """One authentication attempt, protocol-independent.

    `secret` is the password with the code appended; it never appears in repr().
    """

    user: str
    secret: str = field(repr=False)
    service: str = ""
    rip: str = ""


@record
class Outcome:
    """The answer of authenticate(), with what an admin needs to act on it."""

    verdict: Verdict
    reason: str
    user: str
    dn: str = ""
    step: int | None = None


@record
class TokenState:
    """A user's 2-step verification as the admin sees it. Times are Unix seconds.

    `secret` is present for enrolled users (diagnose and resync need it) and never
    appears in repr(). `problem` names a token that exists but cannot be used
    (dangling link, missing secret, bad params) -- shown by `status`, not raised.
    """

    user: str
    dn: str
    enrolled: bool
    token_dn: str = ""
    secret: bytes | None = field(default=None, repr=False)
    params: TotpParams | None = None
    secret_time: float | None = None
    last_step: int | None = None
    drift: int = 0
    failure_count: int | None = None
    last_failure: float | None = None
    last_login: float | None = None
    problem: str = ""
