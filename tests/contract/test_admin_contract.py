"""The TokenAdmin port's promises (what every `mailmfa` command relies on), held by both
stores: what the admin writes is what the login path reads, and back."""

from __future__ import annotations

import secrets
import time

import pytest

from mailmfa.backends.ports import AlreadyEnrolled, NotEnrolled, UnknownUser
from mailmfa.core.enroll import NewToken
from mailmfa.core.types import TotpParams


def _login_token(side, user: str):
    d = side.directory()
    try:
        rec = d.lookup(user)
    finally:
        d.close()
    return rec.token if rec is not None else None


@pytest.fixture
def admin(side):
    a = side.admin()
    yield a
    a.close()


def test_enrolment_params_are_the_configured_ones(admin):
    assert admin.enrolment_params() == TotpParams(6, 30, "SHA1", 1)


def test_state_of_users_without_token_and_of_unknown_names(side, admin):
    user = side.add_user("pw-a0")
    state = admin.token_state(user)
    assert (state.user, state.enrolled, state.secret) == (user, False, None)
    for bad in ("nobody-at-all", "", "x\ny", "a" * 300):
        with pytest.raises(UnknownUser):
            admin.token_state(bad)


def test_write_then_read_through_both_paths(side, admin):
    user = side.add_user("pw-a1")
    params = admin.enrolment_params()
    secret = secrets.token_bytes(20)
    created = time.time()
    step = int(created // 30)
    admin.write_token(user, NewToken(secret, params, created, step))
    state = admin.token_state(user)
    assert state.enrolled and not state.problem
    assert state.secret == secret and state.params == params
    assert state.last_step == step and state.drift == 0
    assert int(state.secret_time) == int(created)
    assert not state.failure_count and state.last_failure is None and state.last_login is None
    assert secret.hex() not in repr(state)
    token = _login_token(side, user)  # the login path reads the same token
    assert token.secret == secret and token.params == params and token.last_step == step
    with pytest.raises(AlreadyEnrolled):
        admin.write_token(user, NewToken(secrets.token_bytes(20), params, time.time()))
    assert admin.token_state(user).secret == secret  # a refused write changed nothing


def test_replace_gives_a_new_secret_without_the_old_history(side, admin):
    secret = secrets.token_bytes(20)
    user = side.add_user("pw-a2", secret)
    d = side.directory()
    try:
        rec = d.lookup(user)
        assert d.record_success(rec, int(time.time() // 30), time.time())
        d.record_failure(d.lookup(user), time.time())
    finally:
        d.close()
    admin.set_drift(user, 2)
    before = admin.token_state(user)
    assert (before.failure_count, before.drift) == (1, 2) and before.last_login is not None
    new = secrets.token_bytes(20)
    admin.write_token(user, NewToken(new, admin.enrolment_params(), time.time(), None), replace=True)
    state = admin.token_state(user)
    assert state.secret == new and state.last_step is None and state.drift == 0
    assert not state.failure_count and state.last_failure is None and state.last_login is None
    token = _login_token(side, user)
    assert (token.secret, token.last_step, token.drift, token.failure_count) == (new, None, 0, 0)


def test_set_drift_marks_the_resync_steps_used_and_never_goes_back(side, admin):
    step = int(time.time() // 30)
    user = side.add_user("pw-a3", secrets.token_bytes(20), last_step=step)
    admin.set_drift(user, -6, step + 2)
    state = admin.token_state(user)
    assert (state.drift, state.last_step) == (-6, step + 2)
    admin.set_drift(user, 4, step)  # an older step is not written back
    state = admin.token_state(user)
    assert (state.drift, state.last_step) == (4, step + 2)
    token = _login_token(side, user)
    assert (token.drift, token.last_step) == (4, step + 2)
    plain = side.add_user("pw-a3b")
    with pytest.raises(NotEnrolled):
        admin.set_drift(plain, 1)
    with pytest.raises(UnknownUser):
        admin.set_drift("nobody-at-all", 1)


def test_reset_failures_lifts_the_throttle(side, admin):
    user = side.add_user("pw-a4", secrets.token_bytes(20))
    d = side.directory()
    try:
        for _ in range(3):
            d.record_failure(d.lookup(user), time.time())
    finally:
        d.close()
    assert admin.token_state(user).failure_count == 3
    assert admin.reset_failures(user) is True
    state = admin.token_state(user)
    assert not state.failure_count and state.last_failure is None
    token = _login_token(side, user)
    assert (token.failure_count, token.last_failure) == (0, None)
    assert admin.reset_failures(side.add_user("pw-a4b")) is False
    with pytest.raises(UnknownUser):
        admin.reset_failures("nobody-at-all")


def test_remove_token_switches_2fa_off_once(side, admin):
    user = side.add_user("pw-a5", secrets.token_bytes(20))
    assert admin.remove_token(user) is True
    assert admin.token_state(user).enrolled is False
    assert _login_token(side, user) is None
    d = side.directory()
    try:  # the password alone is now the whole login
        rec = d.lookup(user)
        assert rec is not None and d.verify_password(rec, "pw-a5")
    finally:
        d.close()
    assert admin.remove_token(user) is False
    with pytest.raises(UnknownUser):
        admin.remove_token("nobody-at-all")


def test_list_enrolled_is_paged_and_complete(side, admin):
    enrolled = {side.add_user("pw-a6", secrets.token_bytes(20)) for _ in range(5)}
    plain = side.add_user("pw-a6")
    gone = side.add_user("pw-a6", secrets.token_bytes(20))
    assert admin.remove_token(gone)
    listed = list(admin.list_enrolled(page_size=2))
    assert len(listed) == len(set(listed))  # no page repeats a name
    assert enrolled <= set(listed)
    assert plain not in listed and gone not in listed
    assert set(admin.list_enrolled(page_size=500)) == set(listed)
