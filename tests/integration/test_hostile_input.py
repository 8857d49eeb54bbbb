"""Hostile input to the real executable: any fd 3 bytes, metacharacters, overlong fields,
control characters in log fields, an untrusted environment (LDAP* variables, ~/.ldaprc,
ldap.conf), a config others can write.

The PAM stdin side belongs to the PAM entry point (issue 5) and is tested there."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cprun import login, reason, run
from mfa import code_at, new_secret, write_config
from servers import wait_for_step_safe

NEVER_ACCEPT = {1, 111}


@pytest.fixture(scope="module")
def victim(slapd):
    """A real user with a token and one without, whose passwords appear in the generated input."""
    secret = new_secret()
    slapd.add_user("victim", "victimpw", secret)
    slapd.add_user("plainvictim", "plainpw")
    return secret


def _assert_refused(rc: int, out: str, err: str) -> None:
    assert rc in NEVER_ACCEPT, (rc, err)
    assert "Traceback" not in err and "USER=" not in out
    lines = [line for line in err.splitlines() if line]
    assert lines and all(line.startswith("mailmfa ") for line in lines), err


_field = st.one_of(
    st.binary(max_size=40),
    st.text(max_size=30).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"victim", b"plainvictim", b"*", b")(uid=*", b"victimpw", b"plainvictim\n",
                     b"victimpw123456", b"\xff\xfe", b"a" * 600, b"\\", b"uid=victim,ou=people"]),
)
_structured = st.lists(_field, min_size=0, max_size=5).map(lambda parts: b"\0".join(parts))
_fd3 = st.one_of(st.binary(max_size=2000), _structured,
                 st.tuples(_field, _field).map(lambda t: t[0] + b"\0" + t[1] + b"\0\0"))


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(data=_fd3)
def test_any_fd3_bytes_are_refused_without_a_traceback(config, victim, data):
    rc, out, err, _ = run(config, data, timeout=30)
    _assert_refused(rc, out, err)


@pytest.mark.parametrize("name", ["victim,ou=people", "victim+cn=x", "cn=admin,dc=example,dc=org",
                                  "#victim", " victim", "victim ", 'vic"tim', "victim\\,x", "<victim>",
                                  "victim;x", "uid=victim"])
def test_dn_metacharacters_in_names_never_reach_a_dn(config, victim, name):
    wait_for_step_safe()
    rc, out, err, _ = login(config, name, "victimpw" + code_at(victim))
    _assert_refused(rc, out, err)
    assert rc == 1
    # LDAP equality ignores leading/trailing spaces: such names are refused before any search
    expected = "bad_input" if name != name.strip() else "unknown_user"
    assert reason(err) == expected, err


@pytest.mark.parametrize("user,secret,why", [
    ("v" * 257, "victimpw123456", "bad_input"),
    ("victim", "x" * 520, "bad_input"),
    ("victim", "x" * 2000, "bad_input"),  # over the fd 3 limit: refused whole
])
def test_overlong_fields_refused(config, victim, user, secret, why):
    rc, out, err, _ = login(config, user, secret)
    _assert_refused(rc, out, err)
    assert reason(err) == why


def test_control_characters_cannot_forge_log_lines(config, victim):
    evil = 'victim reason=ok\nmailmfa result=ok user=victim\r\x1b[2J"'
    rc, out, err, _ = login(config, evil, "victimpw" + code_at(victim))
    _assert_refused(rc, out, err)
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("mailmfa result=fail user=\"victim reason=ok\\x0amailmfa result=ok")
    assert "\\x0d\\x1b[2J\\\"" in lines[0] and "reason=bad_input" in lines[0]
    assert "victimpw" not in err


def test_environment_cannot_redirect_the_ldap_client(slapd_factory, workdir_factory):
    """ldap3 reads no LDAP* variables, ~/.ldaprc or ldap.conf: point them all at a second
    slapd where the user has another password, and show only the configured server is used."""
    real, decoy = slapd_factory(), slapd_factory()
    wd = workdir_factory()
    cfg = write_config(wd, real)
    secret = new_secret()
    real.add_user("envuser", "realpw", secret)
    decoy.add_user("envuser", "decoypw", secret)
    home = wd / "home"
    home.mkdir()
    (home / ".ldaprc").write_text(f"URI {decoy.uri}\nBINDDN {decoy.admin_dn}\nBASE {decoy.suffix}\n")
    (home / "ldaprc").write_text(f"URI {decoy.uri}\n")
    conf = wd / "ldap.conf"
    conf.write_text(f"URI {decoy.uri}\nBASE {decoy.suffix}\nTLS_REQCERT never\n")
    env = {"HOME": str(home), "LDAPURI": decoy.uri, "LDAPHOST": "127.0.0.1",
           "LDAPPORT": str(decoy.port), "LDAPBINDDN": decoy.admin_dn, "LDAPBASE": decoy.suffix,
           "LDAPCONF": str(conf), "LDAPRC": str(home / ".ldaprc"), "LDAPNOINIT": ""}
    decoy_log_before = decoy.log_text().count("ACCEPT from")
    wait_for_step_safe(margin=5)
    rc, _, err, _ = login(cfg, "envuser", "decoypw" + code_at(secret), env=env)
    assert rc == 1 and reason(err) == "bad_password", err
    rc, _, err, _ = login(cfg, "envuser", "realpw" + code_at(secret), env=env)
    assert rc == 0, err
    assert decoy.log_text().count("ACCEPT from") == decoy_log_before  # never even connected
    assert not decoy.token_state("envuser").first("oathTOTPLastTimeStep")


def test_config_writable_by_others_is_refused_with_a_clear_message(workdir, slapd):
    cfg = write_config(workdir, slapd, "world.toml")
    os.chmod(cfg, 0o666)
    try:
        rc, out, err, _ = login(cfg, "victim", "victimpw123456")
    finally:
        os.chmod(cfg, 0o644)
    assert rc == 111 and "USER=" not in out
    assert "reason=config_error" in err and "writable by others" in err and f"chmod o-w {cfg}" in err
    assert login(cfg, "victim", "victimpw123456")[0] == 1  # the same file, fixed: a normal refusal


# --------------------------------------------------------------------------- PAM stdin

_pam_user = st.one_of(
    st.sampled_from(["victim", "plainvictim", "*", ")(uid=*", "victim ", "", "a" * 600, "\\"]),
    st.text(max_size=30).filter(lambda s: "\0" not in s),  # an environment value cannot hold NUL
)
_pam_stdin = st.one_of(st.binary(max_size=700), _field,
                       _field.map(lambda b: b + b"\0"), st.sampled_from([b"victimpw", b"victimpw\0", b""]))


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(user=_pam_user, data=_pam_stdin)
def test_any_pam_stdin_is_refused_without_a_traceback(config, victim, user, data):
    """mailmfa-pam as pam_exec runs it: the token on stdin, the user in PAM_USER."""
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.prefix) / "bin" / "mailmfa-pam"
    if not exe.exists():
        pytest.skip("mailmfa-pam is not installed in this venv (make venv)")
    proc = subprocess.run([str(exe), "--config", str(config)], input=data, capture_output=True, timeout=30,
                          env={"PAM_USER": user, "PAM_TYPE": "auth", "PAM_SERVICE": "imap",
                               "PAM_RHOST": "192.0.2.66"})
    err = proc.stderr.decode("utf-8", "replace")
    _assert_refused(proc.returncode, proc.stdout.decode("utf-8", "replace"), err)
