"""Brute-force throttle: how long a user must wait before the next code is checked.

Pure functions of (failure count, time of the last counted failure, now), so every
store and every mail server of a cluster decide the same way from the same state, and
bench/bruteforce_sim.py can replay months of guessing with an injected clock.

Only failed *codes* that came with the right password are counted (the orchestrator
checks the password first), so a stranger without the password cannot lock anyone out.

The schedule (bench/bruteforce_sim.py prints what it yields):
  - FREE_TRIES failures cost nothing: typos are normal;
  - then the wait doubles from FIRST_DELAY (30 s after the 5th failure, 60 s after the
    6th, ...) up to MAX_DELAY (one day): a user who mistyped five times waits 30 s, while
    an attacker who has the password gets ~16 codes a day at first and ~1 a day later;
  - after LOCKOUT_AFTER consecutive failures codes are refused until an admin runs
    `mailmfa unlock` (NIST SP 800-63B 5.2.2 allows at most 100 consecutive failures);
    with the schedule above an attacker needs about 80 days to get there.
Any success resets the count.
"""

from __future__ import annotations

import math

FREE_TRIES = 5
FIRST_DELAY = 30.0
MAX_DELAY = 86_400.0
LOCKOUT_AFTER = 100


def delay_after(failures: int) -> float:
    """Seconds that must pass after the last counted failure; inf once locked out."""
    if failures < FREE_TRIES:
        return 0.0
    if failures >= LOCKOUT_AFTER:
        return math.inf
    exponent = min(failures - FREE_TRIES, 40)  # 2**40 * 30 s is far past MAX_DELAY
    return min(MAX_DELAY, FIRST_DELAY * 2.0**exponent)


def wait_seconds(failures: int, last_failure: float | None, now: float) -> float:
    """0 when a code may be checked at `now`, else the seconds left (inf: locked out).

    A last failure in the future (another server's clock runs ahead) waits at most the
    full delay, never longer. A count without a timestamp (both are written by one
    modify, so only a hand edit does this) counts from the epoch: allowed, and the next
    failure writes a timestamp.
    """
    delay = delay_after(failures)
    if delay == 0.0 or math.isinf(delay):
        return delay
    since = 0.0 if last_failure is None else last_failure
    return max(0.0, min(delay, since + delay - now))


def is_locked_out(failures: int) -> bool:
    """True when only an admin reset (`mailmfa unlock`) lets codes be checked again."""
    return failures >= LOCKOUT_AFTER
