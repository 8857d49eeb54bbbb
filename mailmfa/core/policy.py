"""Decisions about a code, separated from where the token state lives.

Pure functions over values: the adapters read the state, call these, and write
back exactly what they return, so every store (LDAP, SQLite) and every entry point
applies the same rules.
"""

from __future__ import annotations

from mailmfa.core.record import record
from mailmfa.core.totp import matching_steps, time_step
from mailmfa.core.types import Token

CODE_OK = "ok"
CODE_BAD = "bad_code"
CODE_REPLAY = "replay"


@record
class CodeCheck:
    """`result` is CODE_OK, CODE_BAD or CODE_REPLAY; `step` is the step to record on success."""

    result: str
    step: int | None = None


def check_code(token: Token, code: str, now: float) -> CodeCheck:
    """Match `code` against the token around `now` (plus the learned drift).

    A step not strictly later than the last accepted one is a replay: within a
    window a code stays valid for up to (2*window+1) periods, and without this rule
    a code seen by a shoulder-surfer could be used again.
    """
    p = token.params
    center = time_step(now, p.period) + token.drift
    steps = matching_steps(token.secret, code, center, p.window, p.digits, p.algorithm)
    if not steps:
        return CodeCheck(CODE_BAD)
    last = token.last_step
    fresh = [s for s in steps if last is None or s > last]
    if not fresh:
        return CodeCheck(CODE_REPLAY, steps[-1])
    return CodeCheck(CODE_OK, fresh[0])


# A code from the last day that is no longer valid is what a mail client that stored
# "password+code" sends when it reconnects: the user's own code, not a guess.
STALE_HORIZON = 86_400.0


def is_stale_code(token: Token, code: str, now: float, horizon: float = STALE_HORIZON) -> bool:
    """True when `code` was the token's code at some step within `horizon` seconds before
    the verification window.

    Such a failure is not counted by the throttle: otherwise a phone polling with a
    stored string locks its owner out of every other client. It gives an attacker
    nothing (the code is refused all the same) and a random guess lands on one of these
    ~2 900 codes with probability ~0.3 %, which merely spares that guess from counting.
    All candidates are compared, in constant time per candidate.
    """
    p = token.params
    center = time_step(now, p.period) + token.drift
    oldest = max(0, center - int(horizon // p.period))
    newest = center - p.window - 1
    if newest < oldest:
        return False
    window = (newest - oldest) // 2
    mid = oldest + window
    found = matching_steps(token.secret, code, mid, window, p.digits, p.algorithm)
    if (newest - oldest) % 2:  # an even count of steps: the range above misses `newest`
        found += matching_steps(token.secret, code, newest, 0, p.digits, p.algorithm)
    return bool(found)
