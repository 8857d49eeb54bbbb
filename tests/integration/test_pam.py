"""The PAM face on real parts: Linux-PAM stacks driven by pamtester, and a real Dovecot's
`passdb pam`, each running mailmfa against a real slapd -- through pam_exec +
mailmfa-pam, and in-process through pam_python."""

from __future__ import annotations

import os
import shutil

import pytest

import syspam
from mfa import code_at, token_user, write_config
from pamface import exec_service_text, pam_bin, passdb_pam, python_service_text
from servers import free_port, wait_for_step_safe

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="writes /etc/pam.d (root only)"),
    pytest.mark.skipif(not shutil.which("pamtester", path="/usr/bin:/bin:/usr/sbin:/sbin"),
                       reason="pamtester is not installed"),
]

VARIANTS = ["exec", "python"]


@pytest.fixture(scope="module")
def exe():
    path = pam_bin()
    if path is None:
        pytest.skip("mailmfa-pam is not installed in this venv (run `make venv`)")
    return path


@pytest.fixture(scope="module")
def config(workdir, slapd):
    return write_config(workdir, slapd, "pam.toml")


@pytest.fixture(scope="module")
def services(workdir, config, exe):
    """variant -> PAM service name, both from the shipped files in conf/pam.d."""
    made = {"exec": syspam.add_pam_service(exec_service_text(config, workdir / "pam.log", exe))}
    if syspam.PAM_PYTHON:
        made["python"] = syspam.add_pam_service(python_service_text(config))
    yield made
    for name in made.values():
        syspam.remove_pam_service(name)


def _service(services, variant):
    if variant not in services:
        pytest.skip("libpam-python is not installed")
    return services[variant]


def _log(workdir, proc, variant):
    """Where the variant's log line went: pam_exec's log= file, or the caller's stderr."""
    if variant == "exec":
        return (workdir / "pam.log").read_text()
    return proc.stderr


def _user(slapd, token=True):
    return token_user(slapd, "p", token=token)


# --------------------------------------------------------------------------- pamtester

@pytest.mark.parametrize("variant", VARIANTS)
def test_pamtester_accepts_once_then_refuses_replay(slapd, services, workdir, variant):
    service = _service(services, variant)
    uid, pw, secret = _user(slapd)
    now = wait_for_step_safe()
    ok = syspam.pamtester(service, uid, pw + code_at(secret, now), "authenticate", "acct_mgmt")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "successfully authenticated" in ok.stdout + ok.stderr
    assert f"mailmfa result=ok user={uid} rip=192.0.2.7 service={service} reason=ok" in _log(workdir, ok, variant)
    assert int(slapd.token_state(uid).first("oathTOTPLastTimeStep")) == int(now // 30)

    again = syspam.pamtester(service, uid, pw + code_at(secret, now))
    assert again.returncode != 0
    assert f"user={uid}" in _log(workdir, again, variant) and "reason=replay" in _log(workdir, again, variant)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", ["bad_code", "bad_password", "password_alone", "unknown_user"])
def test_pamtester_refusals(slapd, services, workdir, variant, case):
    service = _service(services, variant)
    uid, pw, secret = _user(slapd)
    wait_for_step_safe()
    code = code_at(secret)
    attempt = {
        "bad_code": pw + ("000000" if code != "000000" else "111111"),
        "bad_password": "wrong" + code,
        "password_alone": pw,
        "unknown_user": pw + code,
    }[case]
    user = "ghost-" + uid if case == "unknown_user" else uid
    proc = syspam.pamtester(service, user, attempt)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    expected = {"password_alone": "bad_code"}.get(case, case)
    log = _log(workdir, proc, variant)
    assert f"user={user}" in log and f"reason={expected}" in log
    mine = [line for line in log.splitlines() if f"user={user}" in line]
    assert mine and all(pw not in line and code not in line for line in mine)
    assert not slapd.token_state(uid).first("oathTOTPLastTimeStep")


@pytest.mark.parametrize("variant", VARIANTS)
def test_pamtester_user_without_token(slapd, services, variant):
    service = _service(services, variant)
    uid, pw, _ = _user(slapd, token=False)
    assert syspam.pamtester(service, uid, pw).returncode == 0
    assert syspam.pamtester(service, uid, pw + "x").returncode != 0


@pytest.mark.parametrize("variant", VARIANTS)
def test_directory_down_fails_closed(workdir, slapd, exe, variant):
    cfg = write_config(workdir, slapd, f"down-{variant}.toml", uris=[f"ldap://127.0.0.1:{free_port()}"],
                       timeout=1.0)
    log = workdir / f"down-{variant}.log"
    if variant == "exec":
        text = exec_service_text(cfg, log, exe)
    elif syspam.PAM_PYTHON:
        text = python_service_text(cfg)
    else:
        pytest.skip("libpam-python is not installed")
    with syspam.pam_service(text) as service:
        uid, pw, secret = _user(slapd)
        proc = syspam.pamtester(service, uid, pw + code_at(secret))
    assert proc.returncode != 0
    out = log.read_text() if variant == "exec" else proc.stderr
    assert "result=tempfail" in out and "reason=ldap_unavailable" in out


def test_pam_exec_account_stack_is_neutral(workdir, config, exe):
    """mailmfa-pam listed under `account` exits 0 at once (the auth stack decided)."""
    text = (f"auth required pam_deny.so\n"
            f"account required pam_exec.so quiet log={workdir / 'acct.log'} {exe} --config {config}\n")
    with syspam.pam_service(text) as service:
        proc = syspam.pamtester(service, "anyone", "", "acct_mgmt")
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------------------- Dovecot

@pytest.fixture(scope="module")
def dovecot_pam(dovecot_factory, services, workdir):
    """variant -> a Dovecot whose passdb pam uses that variant's PAM service."""
    return {v: dovecot_factory(passdb_pam(name), workdir=workdir / f"dovecot-{v}")
            for v, name in services.items()}


@pytest.mark.parametrize("variant", VARIANTS)
def test_imap_login_through_passdb_pam(dovecot_pam, slapd, workdir, variant):
    if variant not in dovecot_pam:
        pytest.skip("libpam-python is not installed")
    dc = dovecot_pam[variant]
    uid, pw, secret = _user(slapd)
    wait_for_step_safe(margin=4)
    code = code_at(secret)
    wrong = "000000" if code != "000000" else "111111"
    res = dc.imap_login(uid, pw + wrong, source_ip="127.0.0.2")
    assert not res.ok, res.text
    res = dc.imap_login(uid, "x" + pw + code, source_ip="127.0.0.3")
    assert not res.ok, res.text
    res = dc.imap_login(uid, pw + code, source_ip="127.0.0.4")
    assert res.ok and res.selected, res.text + dc.log_text()[-2000:]
    res = dc.imap_login(uid, pw + code, source_ip="127.0.0.5")
    assert not res.ok, res.text
    log = (workdir / "pam.log").read_text() if variant == "exec" else dc.log_text()
    assert f"user={uid} rip=127.0.0.4 service=" in log
    for reason in ("bad_code", "bad_password", "ok", "replay"):
        assert f"reason={reason}" in log
    assert pw not in log and pw not in dc.log_text()


def test_pam_python_restarts_the_interpreter_per_login(dovecot_factory, workdir):
    """The evidence behind README's advice (pam_exec over pam_python): libpam-python
    finalises Python at pam_end, so Dovecot's long-lived auth worker gets a fresh, empty
    interpreter for every login -- nothing (imported modules, connections) carries over.
    If this ever fails, pam_python may have become worth it: re-run bench/pam_bench.py."""
    if not syspam.PAM_PYTHON:
        pytest.skip("libpam-python is not installed")
    probe = workdir / "probe_module.py"
    probe.write_text(
        "import os, sys\n"
        "def pam_sm_authenticate(pamh, flags, argv):\n"
        "    seen = getattr(sys, '_mailmfa_probe', None)\n"
        "    sys._mailmfa_probe = os.getpid()\n"
        "    sys.stderr.write(f'probe pid={os.getpid()} seen={seen}\\n')\n"
        "    return pamh.PAM_SUCCESS\n"
        "def pam_sm_setcred(pamh, flags, argv):\n"
        "    return pamh.PAM_SUCCESS\n")
    text = f"auth required {syspam.PAM_PYTHON} {probe}\naccount required pam_permit.so\n"
    with syspam.pam_service(text) as service:
        dc = dovecot_factory(passdb_pam(service), workdir=workdir / "dovecot-probe")
        for ip in ("127.0.0.20", "127.0.0.21", "127.0.0.22"):
            assert dc.imap_login("anyone", "anything", source_ip=ip).ok
    lines = [line.split("probe ", 1)[1] for line in dc.log_text().splitlines() if "probe pid=" in line]
    assert len(lines) == 3, dc.log_text()[-2000:]
    pids = {line.split()[0] for line in lines}
    assert len(pids) == 1, "expected one auth worker serving all three logins"
    assert all(line.endswith("seen=None") for line in lines), lines
