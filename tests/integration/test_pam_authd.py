"""mailmfa-pam --socket on real parts: Dovecot `passdb pam` -> pam_exec -> the
checkpassword/mailmfa-pam shim (python3 -IS) -> mailmfa-authd -> a real slapd, with the PAM
service written from conf/pam.d/mailmfa's commented fast line."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

import syspam
from authd import Authd, daemon_toml
from mfa import code_at, token_user, write_config
from pamface import fast_exec_service_text, pam_shim, passdb_pam
from servers import wait_for_step_safe

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="writes /etc/pam.d (root only)"),
    pytest.mark.skipif(not shutil.which("dovecot", path="/usr/sbin:/usr/bin:/sbin:/bin"),
                       reason="dovecot is not installed"),
]



@pytest.fixture(scope="module")
def sock(workdir):
    return workdir / "authd.sock"


@pytest.fixture(scope="module")
def config(workdir, slapd, sock):
    return write_config(workdir, slapd, "pam-authd.toml", tail=daemon_toml(sock, fallback=False))


@pytest.fixture(scope="module")
def authd(workdir, config, sock):
    with Authd(workdir / "authd", config, sock) as server:
        yield server


@pytest.fixture(scope="module")
def shim(workdir):
    return pam_shim(workdir / "app")


@pytest.fixture(scope="module")
def pam_log(workdir):
    return workdir / "pam.log"


@pytest.fixture(scope="module")
def dovecot(dovecot_factory, workdir, config, sock, shim, pam_log, authd):
    with syspam.pam_service(fast_exec_service_text(config, pam_log, str(shim), sock)) as service:
        yield dovecot_factory(passdb_pam(service), workdir=workdir / "dc")


def new_user(slapd):
    return token_user(slapd, "pa")


def wrong(code: str) -> str:
    return "000000" if code != "000000" else "111111"


def test_shim_socket_fast_path_imports_what_checkpassword_does(authd, sock, shim, workdir, slapd):
    """`python3 -IS -X importtime` on the shim: no config read, no typing/dataclasses/LDAP."""
    uid, pw, secret = new_user(slapd)
    wait_for_step_safe()
    env = {"PAM_TYPE": "auth", "PAM_USER": uid, "PAM_SERVICE": "imap", "PAM_RHOST": "192.0.2.50"}
    argv = ["/usr/bin/python3", "-IS", "-X", "importtime", str(shim), "--socket", str(sock),
            "--config", str(workdir / "no-such-config.toml")]  # never read while the daemon answers
    proc = subprocess.run(argv, input=(pw + code_at(secret)).encode(), env=env, capture_output=True,
                          timeout=30, check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert f"mailmfa result=ok user={uid} rip=192.0.2.50 service=imap reason=ok via=authd" in err
    imported = {line.split("|")[-1].strip() for line in err.splitlines() if line.startswith("import time:")}
    assert {"mailmfa.entry.pam", "mailmfa.client"} <= imported  # the profile really ran
    assert not {"mailmfa.config", "tomllib", "typing", "dataclasses", "enum", "ldap3", "pyotp", "logging",
                "mailmfa.core.types", "socket"} & imported
    again = subprocess.run(argv[:1] + argv[4:], input=(pw + code_at(secret)).encode(), env=env,
                           capture_output=True, timeout=30, check=False)
    assert again.returncode == 1 and b"reason=replay via=authd" in again.stderr


def test_imap_login_through_passdb_pam_and_authd(dovecot, authd, slapd, pam_log):
    uid, pw, secret = new_user(slapd)
    wait_for_step_safe(margin=4)
    code = code_at(secret)
    res = dovecot.imap_login(uid, pw + wrong(code), source_ip="127.0.0.2")
    assert not res.ok, res.text
    res = dovecot.imap_login(uid, pw + code, source_ip="127.0.0.3")
    assert res.ok and res.selected, res.text + dovecot.log_text()[-2000:]
    res = dovecot.imap_login(uid, pw + code, source_ip="127.0.0.4")
    assert not res.ok, res.text
    log = pam_log.read_text()
    assert f"result=fail user={uid} rip=127.0.0.2 service=" in log
    assert f"result=ok user={uid} rip=127.0.0.3 service=" in log
    mine = [line for line in log.splitlines() if f"user={uid} " in line]
    assert [line.split("reason=")[1].split()[:2] for line in mine] == [
        ["bad_code", "via=authd"], ["ok", "via=authd"], ["replay", "via=authd"]]
    assert pw not in log and code not in log
    assert f"result=ok user={uid} rip=127.0.0.3" in authd.log_text()  # the daemon decided


def test_daemon_killed_is_temporary_and_restart_needs_no_dovecot_restart(dovecot, authd, slapd, pam_log):
    pid = dovecot.pid
    uid, pw, secret = new_user(slapd)
    authd.kill()  # SIGKILL: the socket file stays behind, nobody answers
    try:
        wait_for_step_safe()
        res = dovecot.imap_login(uid, pw + code_at(secret), source_ip="127.0.0.11")
        assert not res.ok, res.text  # PAM has no temporary failure: the client sees a plain failure
    finally:
        authd.start()
    log = pam_log.read_text()
    assert f"result=tempfail user={uid} rip=127.0.0.11 service=" in log
    assert "reason=daemon_unavailable" in [line for line in log.splitlines() if f"user={uid} " in line][-1]
    assert not slapd.token_state(uid).first("oathTOTPLastTimeStep")  # nothing was checked in-process
    wait_for_step_safe(margin=4)
    res = dovecot.imap_login(uid, pw + code_at(secret), source_ip="127.0.0.12")
    assert res.ok, res.text
    assert dovecot.pid == pid
    assert f"result=ok user={uid} rip=127.0.0.12 service=" in pam_log.read_text()


def test_daemon_absent_with_fallback_checks_in_process(dovecot_factory, workdir, slapd, shim):
    absent = workdir / "absent.sock"  # no daemon ever listened here
    cfg = write_config(workdir, slapd, "pam-fallback.toml", tail=daemon_toml(absent, fallback=True))
    log = workdir / "pam-fallback.log"
    with syspam.pam_service(fast_exec_service_text(cfg, log, str(shim), absent)) as service:
        dc = dovecot_factory(passdb_pam(service), workdir=workdir / "dc-fallback")
        uid, pw, secret = new_user(slapd)
        wait_for_step_safe(margin=4)
        code = code_at(secret)
        assert not dc.imap_login(uid, pw + wrong(code), source_ip="127.0.0.21").ok
        res = dc.imap_login(uid, pw + code, source_ip="127.0.0.22")
        assert res.ok, res.text + dc.log_text()[-2000:]
    text = log.read_text()
    assert f"result=fail user={uid} rip=127.0.0.21 service={service} reason=bad_code" in text
    assert f"result=ok user={uid} rip=127.0.0.22 service={service} reason=ok" in text
    assert "via=authd" not in text
    assert int(slapd.token_state(uid).first("oathTOTPLastTimeStep")) > 0
