"""Brute-force throttle and faults on real processes: slapd (killed, paused, a second one for
failover), the mailmfa-checkpassword executable, a real SQLite state file (read-only, full).

Every login must end as accepted (0), refused (1) or temporary failure (111): none accepted
wrongly, none hanging, and the stored step never going backwards."""

from __future__ import annotations

import os
import resource
import threading
import time

import pytest

from cprun import login, reason, request_bytes, spawn, wrong_code
from mailmfa import config as cfgmod
from mailmfa.backends.ldap import LdapDirectory, generalized_time
from mailmfa.core import throttle
from mfa import code_at, new_secret, write_config
from servers import wait_for_step_safe

_n = iter(range(1, 100_000))


def new_user(server, *, token_on_user=True, prefix="t", servers=()):
    uid = f"{prefix}{next(_n)}"
    secret = new_secret()
    for s in (server, *servers):
        s.add_user(uid, "pw-" + uid, secret, token_on_user=token_on_user)
    return uid, "pw-" + uid, secret


def set_state(server, uid, count=None, last=None, token_on_user=True):
    dn = server.user_dn(uid) if token_on_user else server.token_dn(uid)
    lines = [f"dn: {dn}", "changetype: modify"]
    lines += ["replace: oathFailureCount"] + ([f"oathFailureCount: {count}"] if count is not None else [])
    lines += ["-", "replace: oathLastFailure"] + ([f"oathLastFailure: {generalized_time(last)}"]
                                                  if last is not None else [])
    server.ldapmodify("\n".join(lines) + "\n")


def failures(server, uid, token_on_user=True):
    e = server.token_state(uid, token_on_user)
    return int(e.first("oathFailureCount", 0)), e.first("oathLastFailure")


# --------------------------------------------------------------------------- throttle


@pytest.mark.parametrize("token_on_user", [True, False])
def test_five_failures_counted_then_throttled_without_revealing_the_code(slapd, config, token_on_user):
    uid, pw, secret = new_user(slapd, token_on_user=token_on_user)
    bad = pw + wrong_code(secret)
    for _ in range(5):
        rc, _, err, _ = login(config, uid, bad)
        assert (rc, reason(err)) == (1, "bad_code"), err
    count, last = failures(slapd, uid, token_on_user)
    assert count == 5 and last
    wait_for_step_safe()
    right = login(config, uid, pw + code_at(secret))
    wrong = login(config, uid, pw + wrong_code(secret))
    for rc, out, err, _ in (right, wrong):
        assert (rc, reason(err)) == (1, "throttled") and "USER=" not in out
    assert right[2].replace(right[2].split("ms=")[-1], "") == wrong[2].replace(wrong[2].split("ms=")[-1], "")
    state = slapd.token_state(uid, token_on_user)
    assert not state.first("oathTOTPLastTimeStep")  # the right code was not consumed
    assert failures(slapd, uid, token_on_user)[0] == 5  # throttled tries are not counted


def test_wrong_password_never_counts_even_with_wrong_codes(slapd, config):
    uid, pw, secret = new_user(slapd)
    for _ in range(7):
        rc, _, err, _ = login(config, uid, "not-" + pw + wrong_code(secret))
        assert (rc, reason(err)) == (1, "bad_password")
    assert failures(slapd, uid) == (0, None)


def test_after_the_wait_the_right_code_works_and_resets(slapd, config):
    uid, pw, secret = new_user(slapd)
    set_state(slapd, uid, 5, time.time() - 31)  # five typos, 31 s ago: the wait (30 s) is over
    wait_for_step_safe()
    rc, _, err, _ = login(config, uid, pw + code_at(secret))
    assert rc == 0, err
    assert failures(slapd, uid) == (0, None)
    assert int(slapd.token_state(uid).first("oathTOTPLastTimeStep")) == int(time.time() // 30)


def test_replay_and_stored_string_do_not_count(slapd, config):
    uid, pw, secret = new_user(slapd)
    wait_for_step_safe()
    now = time.time()
    assert login(config, uid, pw + code_at(secret, now))[0] == 0
    for _ in range(6):
        assert reason(login(config, uid, pw + code_at(secret, now))[2]) == "replay"
    stored = pw + code_at(secret, now - 600)  # a client reconnecting with a 10-minute-old string
    for _ in range(6):
        assert reason(login(config, uid, stored)[2]) == "bad_code"
    assert failures(slapd, uid)[0] == 0


def test_parallel_failures_are_all_counted(slapd, config):
    """slapd held (SIGSTOP) until 4 wrong-code logins wait on it: their compare-and-swap
    increments race, and the losers re-read and retry."""
    uid, pw, secret = new_user(slapd)
    data = request_bytes(uid, pw + wrong_code(secret))
    slapd.pause()
    try:
        procs = [spawn(config, data) for _ in range(4)]
        time.sleep(1.0)
    finally:
        slapd.resume()
    results = [(p.wait(timeout=60), p.communicate()[1]) for p in procs]
    assert all(rc == 1 and reason(err) == "bad_code" for rc, err in results), results
    assert failures(slapd, uid)[0] == 4


def test_success_refused_when_a_failure_was_counted_since_lookup(slapd, config):
    """Parallel guesses cannot all ride on one throttle decision: the success's step update
    also asserts the failure count it read."""
    uid, _pw, _secret = new_user(slapd)
    cfg = cfgmod.load(str(config))
    d = LdapDirectory(cfg)
    try:
        record = d.lookup(uid)
        set_state(slapd, uid, 1, time.time())  # another server counted a failure meanwhile
        assert d.record_success(record, int(time.time() // 30), time.time()) is False
        record = d.lookup(uid)
        assert record.token.failure_count == 1
        step = int(time.time() // 30)
        assert d.record_success(record, step, time.time()) is True
        record = d.lookup(uid)  # the count is now "0": the next success swaps "0" for "0"
        assert record.token.failure_count == 0 and record.token.last_step == step
        assert d.record_success(record, step + 1, time.time()) is True
        d.record_failure(d.lookup(uid), time.time())
        assert d.lookup(uid).token.failure_count == 1
    finally:
        d.close()
    count, last = failures(slapd, uid)
    assert count == 1 and last


def test_admin_read_and_reset(slapd, config):
    """What `mailmfa status` reads and `mailmfa unlock` clears, through the admin port."""
    from mailmfa.backends.ldap_admin import LdapTokenAdmin
    from mailmfa.backends.ports import UnknownUser

    uid, _pw, _secret = new_user(slapd, token_on_user=False)
    admin = LdapTokenAdmin(cfgmod.load(str(config)))
    try:
        now = time.time()
        set_state(slapd, uid, 7, now - 10, token_on_user=False)
        st = admin.token_state(uid)
        assert st.failure_count == 7 and abs(st.last_failure - (now - 10)) < 2
        wait = throttle.wait_seconds(st.failure_count, st.last_failure, now)
        assert 100 < wait <= throttle.delay_after(7) and not throttle.is_locked_out(st.failure_count)
        set_state(slapd, uid, 100, now, token_on_user=False)
        st = admin.token_state(uid)
        assert throttle.is_locked_out(st.failure_count)
        assert throttle.wait_seconds(st.failure_count, st.last_failure, now + 10**7) == float("inf")
        assert admin.reset_failures(uid) is True
        assert failures(slapd, uid, token_on_user=False) == (0, None)
        st = admin.token_state(uid)
        assert throttle.wait_seconds(st.failure_count or 0, st.last_failure, now) == 0
        with pytest.raises(UnknownUser):
            admin.reset_failures("ghost")
        plain = f"plain{next(_n)}"
        slapd.add_user(plain, "pw")
        assert admin.reset_failures(plain) is False
    finally:
        admin.close()


def test_locked_out_until_unlock(slapd, config):
    from mailmfa.backends.ldap_admin import LdapTokenAdmin

    uid, pw, secret = new_user(slapd)
    set_state(slapd, uid, throttle.LOCKOUT_AFTER, time.time() - 10**7)
    wait_for_step_safe()
    assert reason(login(config, uid, pw + code_at(secret))[2]) == "throttled"
    admin = LdapTokenAdmin(cfgmod.load(str(config)))
    try:
        assert admin.reset_failures(uid)
    finally:
        admin.close()
    assert login(config, uid, pw + code_at(secret))[0] == 0


# --------------------------------------------------------------------------- faults: slapd


def test_slapd_killed_mid_run_then_restarted(slapd_factory, workdir_factory):
    """Logins run back to back while slapd is SIGKILLed and restarted. Each ends 0/1/111
    within bounds; wrong credentials never pass; the stored step never goes backwards."""
    server = slapd_factory()
    wd = workdir_factory()
    cfg = write_config(wd, server, timeout=1)
    users = [new_user(server, prefix="k") for _ in range(40)]
    results: list[tuple[str, str, int, str, float, int, float]] = []
    stop = threading.Event()

    def run_logins():
        for i, (uid, pw, secret) in enumerate(users):
            if stop.is_set():
                break
            kind = ("good", "bad_password", "bad_code")[i % 3]
            now = wait_for_step_safe(margin=3)
            step = int(now // 30)
            secret_str = {"good": pw + code_at(secret, now),
                          "bad_password": "x" + pw + code_at(secret, now),
                          "bad_code": pw + wrong_code(secret, now)}[kind]
            started = time.monotonic()
            rc, _, err, secs = login(cfg, uid, secret_str, timeout=30)
            results.append((uid, kind, rc, err, secs, step, started))

    t = threading.Thread(target=run_logins)
    t.start()
    time.sleep(1.0)
    server.kill()
    time.sleep(1.5)
    server.start()
    restarted = time.monotonic()
    t.join(timeout=120)
    stop.set()
    assert not t.is_alive()
    rcs = [r[2] for r in results]
    assert all(rc in (0, 1, 111) for rc in rcs), results
    assert all("Traceback" not in r[3] for r in results)
    assert all(r[4] < 10 for r in results), [r[4] for r in results]  # no hang
    assert 111 in rcs, "the kill should have caused temporary failures"
    after = [r for r in results if r[6] > restarted and r[1] == "good"]
    assert after and all(r[2] == 0 for r in after), after  # served again once restarted
    for uid, kind, rc, err, _, step, _ in results:
        if kind != "good":
            assert rc != 0, (uid, kind, err)
        else:
            assert rc in (0, 111), (uid, err)
        stored = server.token_state(uid).first("oathTOTPLastTimeStep")
        if rc == 0:
            assert int(stored) == step
        if stored is not None:
            assert int(stored) >= step - 1  # written by this run, never an older value
    assert sum(1 for r in results if r[1] == "good" and r[2] == 0) >= 3


def test_paused_slapd_is_a_bounded_temporary_failure_and_nothing_is_written(slapd_factory,
                                                                           workdir_factory):
    server = slapd_factory()
    cfg = write_config(workdir_factory(), server, timeout=1)
    uid, pw, secret = new_user(server)
    server.pause()
    try:
        rc, _, err, secs = login(cfg, uid, pw + code_at(secret), timeout=30)
    finally:
        server.resume()
    assert rc == 111 and reason(err) == "ldap_unavailable", err
    assert secs < 4, secs
    assert not server.token_state(uid).first("oathTOTPLastTimeStep")


def test_second_slapd_serves_when_first_hangs_or_is_down(slapd_factory, workdir_factory):
    first, second = slapd_factory(), slapd_factory()
    cfg = write_config(workdir_factory(), first, uris=[first.uri, second.uri], timeout=1)
    uid, pw, secret = new_user(first, servers=(second,))
    wait_for_step_safe(margin=8)
    first.pause()
    try:
        rc, _, err, secs = login(cfg, uid, pw + code_at(secret), timeout=30)
    finally:
        first.resume()
    assert rc == 0, err
    assert secs < 4, secs  # about one timeout for the hung server
    assert second.token_state(uid).first("oathTOTPLastTimeStep")
    assert not first.token_state(uid).first("oathTOTPLastTimeStep")
    # now the first is down (connection refused): the second serves without delay
    uid2, pw2, secret2 = new_user(first, servers=(second,))
    first.stop()
    try:
        rc, _, err, secs = login(cfg, uid2, pw2 + code_at(secret2), timeout=30)
    finally:
        first.start()
    assert rc == 0 and secs < 3, (err, secs)


def test_all_servers_hung_is_temporary_within_bounds(slapd_factory, workdir_factory):
    first, second = slapd_factory(), slapd_factory()
    cfg = write_config(workdir_factory(), first, uris=[first.uri, second.uri], timeout=1)
    uid, pw, secret = new_user(first, servers=(second,))
    first.pause()
    second.pause()
    try:
        rc, _, err, secs = login(cfg, uid, pw + code_at(secret), timeout=30)
    finally:
        first.resume()
        second.resume()
    assert rc == 111 and reason(err) == "ldap_unavailable", err
    assert secs < 2 * 1 + 3, secs
    for s in (first, second):
        e = s.token_state(uid)
        assert not e.first("oathTOTPLastTimeStep") and not e.first("oathFailureCount")


# --------------------------------------------------------------------------- faults: SQLite state


def _parallel_same_string(cfg, uid, secret_str, n, server, **kw):
    data = request_bytes(uid, secret_str)
    server.pause()
    try:
        procs = [spawn(cfg, data, rip="192.0.2.50", **kw) for _ in range(n)]
        time.sleep(1.0)
    finally:
        server.resume()
    return [(p.wait(timeout=60), p.communicate()[1]) for p in procs]


def test_reuse_with_working_state_file_accepts_parallel_twins(slapd, workdir):
    state = workdir / "reuse-ok.db"
    cfg = write_config(workdir, slapd, "reuse-ok.toml", reuse_seconds=60, state_file=state)
    uid, pw, secret = new_user(slapd)
    wait_for_step_safe(margin=8)
    results = _parallel_same_string(cfg, uid, pw + code_at(secret), 5, slapd)
    assert sorted(rc for rc, _ in results) == [0] * 5, results
    reasons = sorted(reason(err) for _, err in results)
    assert reasons.count("ok") == 1 and reasons.count("reused") == 4, reasons
    assert oct(state.stat().st_mode & 0o777) == "0o600"


def test_read_only_state_file_means_strict_refusal_never_a_wrong_accept(slapd, workdir):
    """Run as the `dovecot` user (as Dovecot does) against a state file it cannot write."""
    sdir = workdir / "ro-state"
    sdir.mkdir()
    os.chmod(sdir, 0o755)
    state = sdir / "state.db"
    cfg = write_config(workdir, slapd, "reuse-ro.toml", reuse_seconds=60, state_file=state)
    uid0, pw0, secret0 = new_user(slapd)
    wait_for_step_safe(margin=8)
    assert login(cfg, uid0, pw0 + code_at(secret0))[0] == 0  # root creates a valid file
    os.chmod(state, 0o644)  # owned by root: read-only for dovecot
    uid, pw, secret = new_user(slapd)
    results = _parallel_same_string(cfg, uid, pw + code_at(secret), 3, slapd, user="dovecot")
    assert sorted(rc for rc, _ in results) == [0, 1, 1], results
    assert all("Traceback" not in err for _, err in results)
    assert any("event=state_unavailable" in err for _, err in results)
    assert sum(reason(err) == "replay" for _, err in results) == 2


def test_full_disk_state_file_means_strict_refusal(slapd, workdir):
    """RLIMIT_FSIZE=0 in the login process: every write to the state file fails (EFBIG),
    as on a full disk."""
    state = workdir / "full.db"
    cfg = write_config(workdir, slapd, "reuse-full.toml", reuse_seconds=60, state_file=state)
    uid0, pw0, secret0 = new_user(slapd)
    wait_for_step_safe(margin=8)
    assert login(cfg, uid0, pw0 + code_at(secret0))[0] == 0  # the file exists and works

    def no_file_growth():
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))

    uid, pw, secret = new_user(slapd)
    results = _parallel_same_string(cfg, uid, pw + code_at(secret), 3, slapd, preexec=no_file_growth)
    assert sorted(rc for rc, _ in results) == [0, 1, 1], results
    assert all("Traceback" not in err for _, err in results)
    assert any("event=state_unavailable" in err for _, err in results)
