"""The Directory port's promises, checked against every store (see conftest.py).

What authenticate() relies on, and nothing more: grow this suite with the port
(record_failure, the admin operations) so both stores keep the same behaviour.
"""

from __future__ import annotations

import secrets
import time

import pytest

from mailmfa.backends.ports import BackendUnavailable
from mailmfa.core.types import Request, TotpParams, Verdict


def _code(secret: bytes, when: float) -> str:
    from mfa import code_at

    return code_at(secret, when)


def test_lookup_returns_the_token_as_stored(side):
    secret = secrets.token_bytes(20)
    user = side.add_user("pw-one", secret)
    d = side.directory()
    try:
        rec = d.lookup(user)
    finally:
        d.close()
    assert rec is not None and rec.name == user
    assert rec.token is not None
    assert rec.token.secret == secret
    assert rec.token.params == TotpParams(6, 30, "SHA1", 1)
    assert rec.token.last_step is None and rec.token.drift == 0
    assert (rec.token.failure_count, rec.token.last_failure) == (0, None)
    assert rec.password_reset is False  # only LDAP with ppolicy's pwdReset sets it
    assert secret.hex() not in repr(rec)


def test_lookup_of_a_user_without_token(side):
    user = side.add_user("pw-two")
    d = side.directory()
    try:
        rec = d.lookup(user)
        assert rec is not None and rec.token is None
        assert d.verify_password(rec, "pw-two")
    finally:
        d.close()


def test_unknown_user_never_has_a_token_nor_a_password(side):
    d = side.directory()
    try:
        rec = d.lookup("nobody-at-all")
        # LDAP knows its users (None); SQLite holds only tokens, so an unknown name is a
        # user without token whose password check (PAM) refuses: the same login outcome.
        assert rec is None or (rec.token is None and not d.verify_password(rec, "anything"))
    finally:
        d.close()


def test_verify_password(side):
    user = side.add_user("right-pw", secrets.token_bytes(20))
    d = side.directory()
    try:
        rec = d.lookup(user)
        assert d.verify_password(rec, "right-pw")
        assert not d.verify_password(rec, "wrong-pw")
        assert not d.verify_password(rec, "right-pw ")
        assert d.verify_password(rec, "right-pw")  # a refusal leaves the directory usable
    finally:
        d.close()


def test_record_success_is_a_compare_and_swap(side):
    user = side.add_user("pw-cas", secrets.token_bytes(20))
    step = int(time.time() // 30)
    a, b = side.directory(), side.directory()
    try:
        rec_a, rec_b = a.lookup(user), b.lookup(user)  # both read "no step yet"
        assert a.record_success(rec_a, step, time.time()) is True
        assert b.record_success(rec_b, step, time.time()) is False  # stale: lost the race
        assert a.record_success(rec_a, step, time.time()) is False  # same step twice: never
        assert side.last_step(user) == step
        fresh = b.lookup(user)
        assert fresh.token.last_step == step
        assert b.record_success(fresh, step + 1, time.time()) is True
        assert side.last_step(user) == step + 1
    finally:
        a.close()
        b.close()


def test_authenticate_accepts_once_then_refuses_the_replay(side):
    from mailmfa.config import parse
    from mailmfa.service import authenticate
    from servers import wait_for_step_safe

    secret = secrets.token_bytes(20)
    user = side.add_user("pw-replay", secret)
    cfg = parse(side.login_config())
    now = wait_for_step_safe()
    attempt = Request(user, "pw-replay" + _code(secret, now), "imap", "192.0.2.7")
    for expected, reason in ((Verdict.ACCEPT, "ok"), (Verdict.REJECT, "replay")):
        d = side.directory()
        try:
            out = authenticate(attempt, d, cfg, time.time())
        finally:
            d.close()
        assert (out.verdict, out.reason) == (expected, reason)
    assert side.last_step(user) == int(now // 30)


def test_provisioned_last_step_is_read_and_guards_the_update(side):
    secret = secrets.token_bytes(20)
    step = int(time.time() // 30)
    user = side.add_user("pw-prov", secret, last_step=step)
    a, b = side.directory(), side.directory()
    try:
        rec_a, rec_b = a.lookup(user), b.lookup(user)
        assert rec_a.token.last_step == step
        assert a.record_success(rec_a, step + 1, time.time()) is True
        assert b.record_success(rec_b, step + 1, time.time()) is False
        assert b.record_success(rec_b, step + 2, time.time()) is False  # stale record, later step
        assert side.last_step(user) == step + 1
    finally:
        a.close()
        b.close()


def test_remove_token_switches_2fa_off(side):
    """What the login path does after an administrator's password reset: the token (and
    the link to it) goes in one step, and the user logs in with the password alone."""
    user = side.add_user("pw-rm", secrets.token_bytes(20))
    d = side.directory()
    try:
        d.remove_token(d.lookup(user))
        rec = d.lookup(user)
        assert rec is not None and rec.token is None
        assert d.verify_password(rec, "pw-rm")
    finally:
        d.close()
    assert side.last_step(user) is None


def test_backend_down_is_backend_unavailable(side):
    d = side.broken_directory()
    try:
        with pytest.raises(BackendUnavailable):
            d.lookup("anyone")
    finally:
        d.close()
