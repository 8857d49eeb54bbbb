"""The `mailmfa` admin command in single-host mode: real system users (useradd + chpasswd,
removed after), passwords through pam_unix, tokens in a real SQLite file in a temp dir.
Every command runs by subprocess as a help desk would (the first code on stdin, computed
from the key the command printed); logins go through the real `mailmfa-pam` executable
with pam_exec's environment. Also the brute-force throttle end to end in this mode."""

from __future__ import annotations

import base64
import json
import os
import stat
import time

import pytest

import syspam
from mfa import code_at, wrong_code
from servers import wait_for_step_safe
from test_admin_cli import Enrolment, mailmfa, wait_next_step

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creates system users and PAM services (root only)")


def _policy(require_mfa: bool = False) -> str:
    return f'[policy]\nreuse_seconds = 0\nrequire_mfa = {"true" if require_mfa else "false"}\n'


class Host(syspam.SingleHost):
    """The single host of this module, with a second config that requires 2FA."""

    def __init__(self, workdir):
        super().__init__(workdir, _policy(), user_prefix="mma")
        self.strict = self._config("strict.toml", require_mfa=True)

    def _config(self, name, *, db=None, require_mfa=False):
        return self.write_config(name, _policy(require_mfa), db)

    login = syspam.SingleHost.pam_login

    def status(self, user):
        proc = mailmfa(self.config, "status", user, "--json")
        return proc.returncode, json.loads(proc.stdout) if proc.stdout else None


@pytest.fixture(scope="module")
def host(workdir_factory):
    yield from Host.fixture(workdir_factory())


def _enrol_no_verify(host, user) -> bytes:
    proc = mailmfa(host.config, "enroll", user, "--no-verify", "--json")
    assert proc.returncode == 0, proc.stderr
    key = json.loads(proc.stdout)["key"]
    return base64.b32decode(key + "=" * (-len(key) % 8))


def test_enroll_status_login_unlock_disable(host):
    user = host.add_user("Pw-one 1")
    rc, data = host.status(user)
    assert rc == 4 and data["enrolled"] is False
    wait_for_step_safe(margin=5)
    e = Enrolment(host.config, user)
    secret = e.read_secret()
    assert f"Account:    {user}" in e.out and "Issuer:     Single Host" in e.out
    typed_at = time.time()
    e.type(code_at(secret, typed_at))
    rc, out, err = e.finish()
    assert rc == 0, err
    assert f"event=enroll user={user} result=ok verified=yes" in err
    step = int(typed_at // 30)
    # the command created the database: 0600 in a 0750 directory
    assert stat.S_IMODE(os.stat(host.db).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(host.db.parent).st_mode) == 0o750

    rc, data = host.status(user)
    assert rc == 0, data
    assert data["enrolled"] is True and data["user"] == user
    assert (data["algorithm"], data["digits"], data["period"], data["window"]) == ("SHA1", 6, 30, 1)
    assert data["last_step"] == step and data["enrolled_since"] and data["drift_steps"] == 0
    assert data["failure_count"] == 0 and data["throttle_wait_seconds"] == 0 and not data["locked_out"]
    assert data["problem"] is None and data["last_login"] is None
    assert "2-step:            enrolled" in mailmfa(host.config, "status", user).stdout
    listed = mailmfa(host.config, "list", "--json")
    assert listed.returncode == 0 and user in json.loads(listed.stdout)["users"]

    # the activation code is used up; the next one logs in through mailmfa-pam
    rc, log = host.login(user, "Pw-one 1" + code_at(secret, typed_at))
    assert rc == 1 and "reason=replay" in log, log
    now = wait_next_step()
    rc, log = host.login(user, "Pw-one 1" + code_at(secret, now))
    assert rc == 0 and "result=ok" in log and "reason=ok " in log, log
    _, data = host.status(user)
    assert data["last_step"] == int(now // 30) and data["last_login"]

    un = mailmfa(host.config, "unlock", user, "--json")
    assert un.returncode == 0 and json.loads(un.stdout)["unlocked"] is True
    assert f"event=throttle_reset user={user}" in un.stderr

    off = mailmfa(host.config, "disable", user, "--reason", "ticket 42")
    assert off.returncode == 0, off.stderr
    assert f"event=mfa_disabled user={user}" in off.stderr and 'reason="ticket 42"' in off.stderr
    assert host.status(user)[0] == 4
    rc, log = host.login(user, "Pw-one 1")  # the password alone logs in now
    assert rc == 0 and "reason=ok_no_token" in log, log
    assert mailmfa(host.config, "disable", user).returncode == 4
    assert user not in json.loads(mailmfa(host.config, "list", "--json").stdout)["users"]


def test_throttle_end_to_end_then_unlock(host):
    """5 wrong codes with the right password, then the right code is refused as throttled
    (and not used up); a wrong password does not count; `mailmfa unlock` lifts it."""
    user = host.add_user("Pw-two 2")
    secret = _enrol_no_verify(host, user)
    now = wait_for_step_safe(margin=15)
    rc, log = host.login(user, "wrong-pw" + wrong_code(secret, now))
    assert rc == 1 and "reason=bad_password" in log, log
    used: set[str] = set()
    for _ in range(5):
        code = wrong_code(secret, now, used)
        used.add(code)
        rc, log = host.login(user, "Pw-two 2" + code)
        assert rc == 1 and "reason=bad_code" in log, log
    rc, log = host.login(user, "Pw-two 2" + code_at(secret, now))
    assert rc == 1 and "reason=throttled" in log, log
    rc, data = host.status(user)
    assert data["failure_count"] == 5 and data["throttle_wait_seconds"] > 0 and data["last_step"] is None
    assert "throttled: next code checked in" in mailmfa(host.config, "status", user).stdout

    un = mailmfa(host.config, "unlock", user)
    assert un.returncode == 0, un.stderr
    assert host.status(user)[1]["failure_count"] == 0
    rc, log = host.login(user, "Pw-two 2" + code_at(secret, now))  # not used up while throttled
    assert rc == 0 and "reason=ok " in log, log
    assert time.time() // 30 == now // 30, "the test straddled a step: raise the margin"


def test_diagnose_and_resync_a_drifted_phone(host):
    user = host.add_user("Pw-three 3")
    secret = _enrol_no_verify(host, user)
    now = wait_for_step_safe(margin=12)
    n = int(now // 30)
    d = mailmfa(host.config, "diagnose", user, code_at(secret, now - 210), "--json")
    assert d.returncode == 0, d.stderr
    data = json.loads(d.stdout)
    assert data["matched"] and data["offset_steps"] == -7 and data["clock"] == "behind"
    assert host.status(user)[1]["last_step"] is None  # read-only
    r = mailmfa(host.config, "resync", user, code_at(secret, now - 180), code_at(secret, now - 150), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["drift_steps"] == -5
    _, data = host.status(user)
    assert (data["drift_steps"], data["last_step"]) == (-5, n - 5)
    rc, log = host.login(user, "Pw-three 3" + code_at(secret, now - 120))  # the phone's next code
    assert rc == 0 and "reason=ok " in log, log
    assert time.time() // 30 == n, "the test straddled a step: raise the margin"


def test_password_restored_and_require_mfa(host):
    user = host.add_user("Pw-four 4")
    _enrol_no_verify(host, user)
    pr = mailmfa(host.config, "password-restored", user)
    assert pr.returncode == 0 and "reason=password_restore" in pr.stderr
    assert mailmfa(host.config, "password-restored", user).returncode == 0  # no token: fine
    rc, log = host.login(user, "Pw-four 4", config=host.strict)
    assert rc == 1 and "reason=no_token" in log, log
    rc, log = host.login(user, "Pw-four 4")
    assert rc == 0 and "reason=ok_no_token" in log, log


def test_enrol_replace_list_paged_and_errors(host):
    users = [host.add_user("Pw-five 5") for _ in range(3)]
    for u in users:
        _enrol_no_verify(host, u)
    again = mailmfa(host.config, "enroll", users[0], "--no-verify")
    assert again.returncode == 1 and "--replace" in again.stderr
    assert mailmfa(host.config, "enroll", users[0], "--no-verify", "--replace").returncode == 0
    listed = mailmfa(host.config, "list", "--page-size", "1", "--json")
    names = json.loads(listed.stdout)["users"]
    assert set(users) <= set(names) and len(names) == len(set(names))
    assert mailmfa(host.config, "list", "--page-size", "2").stdout.split() == names

    plain = host.add_user("Pw-six 6")
    for args, code in ((("status", "mma-nobody"), 3), (("enroll", "mma-nobody", "--no-verify"), 3),
                       (("unlock", plain), 4), (("disable", plain), 4),
                       (("resync", plain, "123456", "234567"), 4), (("diagnose", users[1], "12x"), 2)):
        proc = mailmfa(host.config, *args)
        assert proc.returncode == code, (args, proc.returncode, proc.stderr)
        assert "Traceback" not in proc.stderr
    # a database others may read is refused (configuration error), a store that cannot be
    # opened is a temporary failure
    unsafe = host.workdir / "unsafe.db"
    unsafe.write_bytes(b"")
    os.chmod(unsafe, 0o644)
    proc = mailmfa(host._config("unsafe.toml", db=unsafe), "status", plain)
    assert proc.returncode == 78 and "chmod o-rwx" in proc.stderr and "Traceback" not in proc.stderr
    blocker = host.workdir / "not-a-dir"
    blocker.write_text("")
    proc = mailmfa(host._config("down.toml", db=blocker / "x.db"), "status", plain)
    assert proc.returncode == 111 and "Traceback" not in proc.stderr
