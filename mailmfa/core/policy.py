"""Decisions about a code, separated from where the token state lives.

Pure functions over values: the adapters read the state, call these, and write
back exactly what they return, so every store (LDAP, SQLite) and every entry point
applies the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailmfa.core.totp import matching_steps, time_step
from mailmfa.core.types import Token

CODE_OK = "ok"
CODE_BAD = "bad_code"
CODE_REPLAY = "replay"


@dataclass(frozen=True)
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
