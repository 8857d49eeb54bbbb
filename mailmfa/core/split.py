"""Split `password123456` into password and code.

Only ASCII digits count as code digits: str.isdigit() would also accept full-width
and other Unicode digits, which an authenticator app never produces and which would
let visually different inputs collide.
"""

from __future__ import annotations

_ASCII_DIGITS = frozenset("0123456789")


def is_code(text: str, digits: int) -> bool:
    """True when `text` is exactly `digits` ASCII digits."""
    return len(text) == digits and all(c in _ASCII_DIGITS for c in text)


def split_code(secret: str, digits: int) -> tuple[str, str] | None:
    """Return (password, code) or None when the last `digits` characters are not a code.

    An empty password part is returned as such; the caller refuses it (an empty
    simple bind is an anonymous bind in LDAP and must never count as a password).
    """
    if digits <= 0 or len(secret) < digits:
        return None
    password, code = secret[:-digits], secret[-digits:]
    if not is_code(code, digits):
        return None
    return password, code
