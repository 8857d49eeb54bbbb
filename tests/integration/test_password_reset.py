"""An administrative password reset switches 2FA off (lost phone: "after a successful password
restore, 2-step verification is switched off"), detected on the login path from Debian's slapd
ppolicy module: an administrator's password change with pwdMustChange: TRUE sets pwdReset."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from mfa import code_at, new_secret, run_checkpassword, write_config
from servers import wait_for_step_safe

PPOLICY = {"pwdAttribute": "userPassword", "pwdMustChange": "TRUE"}


@pytest.fixture(scope="module")
def ldap(slapd_factory):
    return slapd_factory(with_ppolicy=True, ppolicy=PPOLICY)


@pytest.fixture(scope="module")
def config(ldap):
    return write_config(ldap.workdir, ldap)


@pytest.fixture(scope="module")
def strict_config(ldap):
    return write_config(ldap.workdir, ldap, "strict.toml", require_mfa=True)


_n = iter(range(1, 10_000))


def reset_password(ldap, uid: str, new: str) -> None:
    """What a help desk does in its directory tool: set the password as the administrator."""
    ldap.ldapmodify(f"dn: {ldap.user_dn(uid)}\nchangetype: modify\nreplace: userPassword\nuserPassword: {new}\n")
    assert ldap.get(ldap.user_dn(uid), ["pwdReset"]).first("pwdReset") == "TRUE"


def oath_attrs(ldap, uid: str) -> dict:
    e = ldap.get(ldap.user_dn(uid), ["*"])
    out = {k: v for k, v in e.items() if k.lower().startswith("oath")}
    classes = {c.lower() for c in e["objectClass"]}
    if classes & {"oathtotpuser", "oathtotptoken"}:
        out["objectClass"] = sorted(classes)
    return out


@pytest.mark.parametrize("token_on_user", [True, False])
def test_admin_reset_switches_2fa_off_at_next_login(ldap, config, token_on_user):
    uid = f"reset{next(_n)}"
    secret = new_secret()
    ldap.add_user(uid, "oldpw", secret, token_on_user=token_on_user)
    # before the reset the code is required
    assert run_checkpassword(config, uid, "oldpw").returncode == 1
    reset_password(ldap, uid, "newpw")
    proc = run_checkpassword(config, uid, "newpw")
    assert proc.returncode == 0, proc.stderr
    assert f"event=mfa_disabled user={uid} reason=password_reset" in proc.stderr
    assert "reason=ok_no_token" in proc.stderr
    assert oath_attrs(ldap, uid) == {}
    if not token_on_user:
        assert ldap.get(ldap.token_dn(uid)) is None
    # stays off (no second removal, no error)
    again = run_checkpassword(config, uid, "newpw")
    assert again.returncode == 0 and "mfa_disabled" not in again.stderr


def test_reset_under_require_mfa_refuses_until_enrolled_again(ldap, strict_config):
    uid = f"reset{next(_n)}"
    ldap.add_user(uid, "oldpw", new_secret())
    reset_password(ldap, uid, "newpw")
    proc = run_checkpassword(strict_config, uid, "newpw")
    assert proc.returncode == 1 and "reason=no_token" in proc.stderr
    assert "reason=password_reset" in proc.stderr and oath_attrs(ldap, uid) == {}


def test_token_enrolled_after_the_reset_stays(ldap, config):
    uid = f"reset{next(_n)}"
    ldap.add_user(uid, "oldpw", new_secret())
    reset_password(ldap, uid, "newpw")
    time.sleep(1.1)  # GeneralizedTime has whole seconds: enrol strictly after the reset
    cmd = Path(sys.prefix) / "bin" / "mailmfa"
    args = [str(cmd)] if cmd.exists() else [sys.executable, "-m", "mailmfa.admin"]
    proc = subprocess.run([*args, "--config", str(config), "enroll", uid, "--replace", "--no-verify", "--json"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    import base64
    import json

    key = json.loads(proc.stdout)["key"]
    secret = base64.b32decode(key + "=" * (-len(key) % 8))
    wait_for_step_safe()
    login = run_checkpassword(config, uid, "newpw" + code_at(secret))
    assert login.returncode == 0 and "reason=ok " in login.stderr + " "
    assert "mfa_disabled" not in login.stderr
    assert ldap.token_state(uid).first("oathSecret") == secret
    # and the password alone is still refused: 2FA is on
    assert run_checkpassword(config, uid, "newpw").returncode == 1


def test_user_changing_own_password_keeps_2fa(ldap, config):
    uid = f"reset{next(_n)}"
    secret = new_secret()
    ldap.add_user(uid, "oldpw", secret)
    dn = ldap.user_dn(uid)
    ldap.ldapmodify(f"dn: {dn}\nchangetype: modify\nreplace: userPassword\nuserPassword: mynewpw\n",
                    bind_dn=dn, password="oldpw")
    assert ldap.get(dn, ["pwdReset"]).first("pwdReset") is None
    wait_for_step_safe()
    proc = run_checkpassword(config, uid, "mynewpw" + code_at(secret))
    assert proc.returncode == 0 and "mfa_disabled" not in proc.stderr
    assert "oathSecret" in oath_attrs(ldap, uid)


def test_reset_that_cannot_be_applied_is_a_temporary_failure(slapd_factory, workdir_factory):
    """An ACL that does not let the service account remove oathTOTPUser: the login must not
    go through without the code while the token is still there -- it is a tempfail (111)."""
    from servers import ACL_LDIF

    rule = ('olcAccess: {2}to attrs=objectClass val=oathTOTPUser\n'
            '  by dn.exact="cn=mailmfa,ou=services,dc=example,dc=org" ')
    acl = ACL_LDIF.read_text().replace(rule + "write", rule + "read")
    assert acl != ACL_LDIF.read_text()
    path = workdir_factory() / "acl.ldif"
    path.write_text(acl)
    ldap = slapd_factory(with_ppolicy=True, ppolicy=PPOLICY, acl_ldif=path)
    cfg = write_config(ldap.workdir, ldap)
    ldap.add_user("stuck", "oldpw", new_secret())
    reset_password(ldap, "stuck", "newpw")
    proc = run_checkpassword(cfg, "stuck", "newpw")
    assert proc.returncode == 111 and "reason=password_reset_failed" in proc.stderr
    assert "oathSecret" in oath_attrs(ldap, "stuck")
