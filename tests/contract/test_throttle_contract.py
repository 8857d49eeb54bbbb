"""The throttle's promises (issue 6), held by both stores: failures are counted
atomically from what is stored, a success resets them in its compare-and-swap, and
that swap loses when a failure was counted since the login's lookup."""

from __future__ import annotations

import secrets
import time

from mailmfa.config import parse
from mailmfa.core.throttle import FREE_TRIES
from mailmfa.core.types import Request, Verdict
from mfa import code_at, wrong_code


def _state(side, user: str) -> tuple[int, float | None]:
    d = side.directory()
    try:
        token = d.lookup(user).token
    finally:
        d.close()
    return token.failure_count, token.last_failure


def test_lookup_of_a_fresh_token_has_no_failures(side):
    user = side.add_user("pw-t0", secrets.token_bytes(20))
    assert _state(side, user) == (0, None)


def test_record_failure_counts_from_the_stored_value(side):
    user = side.add_user("pw-t1", secrets.token_bytes(20))
    a, b = side.directory(), side.directory()
    try:
        rec_a, rec_b = a.lookup(user), b.lookup(user)  # both read "no failures"
        a.record_failure(rec_a, 1_000_000.0)
        b.record_failure(rec_b, 1_000_005.0)  # a stale record: still counted on top
        a.record_failure(a.lookup(user), 1_000_009.0)
    finally:
        a.close()
        b.close()
    count, last = _state(side, user)
    assert count == 3
    assert int(last) == 1_000_009


def test_success_resets_the_failures(side):
    user = side.add_user("pw-t2", secrets.token_bytes(20))
    d = side.directory()
    try:
        d.record_failure(d.lookup(user), time.time())
        d.record_failure(d.lookup(user), time.time())
    finally:
        d.close()
    d = side.directory()
    try:
        rec = d.lookup(user)
        assert rec.token.failure_count == 2
        assert d.record_success(rec, int(time.time() // 30), time.time()) is True
    finally:
        d.close()
    assert _state(side, user) == (0, None)


def test_success_loses_when_a_failure_was_counted_since_lookup(side):
    user = side.add_user("pw-t3", secrets.token_bytes(20))
    step = int(time.time() // 30)
    a, b = side.directory(), side.directory()
    try:
        rec_a = a.lookup(user)  # the login about to succeed read "no failures"
        b.record_failure(b.lookup(user), time.time())  # a parallel guess counted meanwhile
        assert a.record_success(rec_a, step, time.time()) is False
        assert side.last_step(user) is None
        fresh = a.lookup(user)
        assert fresh.token.failure_count == 1
        assert a.record_success(fresh, step, time.time()) is True
    finally:
        a.close()
        b.close()
    assert side.last_step(user) == step
    assert _state(side, user) == (0, None)


def test_authenticate_throttles_after_the_free_tries(side):
    """Through the one orchestrator: FREE_TRIES wrong codes with the right password are
    counted, then even the right code is refused as `throttled` without being used;
    a wrong password never counts."""
    from mailmfa.service import authenticate
    from servers import wait_for_step_safe

    secret = secrets.token_bytes(20)
    user = side.add_user("pw-t4", secret)
    cfg = parse(side.login_config())

    def login(secret_text: str) -> tuple[Verdict, str]:
        d = side.directory()
        try:
            out = authenticate(Request(user, secret_text, "imap", "192.0.2.8"), d, cfg, time.time())
        finally:
            d.close()
        return out.verdict, out.reason

    now = time.time()
    assert login("not-the-pw" + wrong_code(secret, now)) == (Verdict.REJECT, "bad_password")
    assert _state(side, user)[0] == 0
    used: set[str] = set()
    for i in range(FREE_TRIES):
        code = wrong_code(secret, time.time(), used)
        used.add(code)
        assert login("pw-t4" + code) == (Verdict.REJECT, "bad_code"), i
    assert _state(side, user)[0] == FREE_TRIES
    now = wait_for_step_safe()
    assert login("pw-t4" + code_at(secret, now)) == (Verdict.REJECT, "throttled")
    assert side.last_step(user) is None  # the right code was not consumed
    assert _state(side, user)[0] == FREE_TRIES  # nor counted
