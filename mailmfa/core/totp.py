"""HOTP (RFC 4226) and TOTP (RFC 6238), stdlib only.

Our own few lines instead of pyotp on the login path: pyotp costs ~30 ms of import
per process, normalises non-ASCII digits, and its window check returns at the first
match instead of examining every candidate step.
"""

from __future__ import annotations

import hmac
import struct

_DIGESTS = {"SHA1": "sha1", "SHA256": "sha256", "SHA512": "sha512"}


def hotp(key: bytes, counter: int, digits: int = 6, algorithm: str = "SHA1") -> str:
    """The RFC 4226 value for `counter`, zero-padded to `digits`."""
    mac = hmac.new(key, struct.pack(">Q", counter), _DIGESTS[algorithm]).digest()
    offset = mac[-1] & 0x0F
    value = int.from_bytes(mac[offset : offset + 4], "big") & 0x7FFFFFFF
    return str(value % 10**digits).zfill(digits)


def time_step(now: float, period: int = 30) -> int:
    """The RFC 6238 time step T for Unix time `now` (T0 = 0)."""
    return int(now // period)


def matching_steps(
    key: bytes, code: str, center: int, window: int, digits: int = 6, algorithm: str = "SHA1"
) -> list[int]:
    """Every step in [center-window, center+window] whose code equals `code`.

    All candidates are computed and compared in constant time, so the time taken
    does not tell which step (if any) matched. Returns them in ascending order;
    the caller picks (usually the earliest not yet used).
    """
    found = []
    probe = code.encode("ascii", "replace")
    for step in range(center - window, center + window + 1):
        if step < 0:
            continue
        if hmac.compare_digest(hotp(key, step, digits, algorithm).encode(), probe):
            found.append(step)
    return found
