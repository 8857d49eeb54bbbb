"""`[store] backend` and `[password] backend` chosen independently: tokens in SQLite with
the password checked by an LDAP bind, and tokens in LDAP with the password checked by
PAM -- each through a real entry point (mailmfa-checkpassword on fd 3, mailmfa-pam as
pam_exec runs it)."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

import syspam
from mailmfa.backends.sqlite import SqliteStore
from mailmfa.core.types import TotpParams
from mfa import code_at, new_secret, run_checkpassword, write_config
from pamface import pam_bin
from servers import wait_for_step_safe


def test_sqlite_tokens_with_ldap_passwords(workdir, slapd):
    db = workdir / "mixed" / "mailmfa.db"
    cfg = write_config(workdir, slapd, "sqlite-ldap.toml", tail=f'[store]\nbackend = "sqlite"\npath = "{db}"\n')
    secret = new_secret()
    slapd.add_user("mix1", "mix1-pw")  # no token in LDAP
    store = SqliteStore(str(db))
    store.write_token("mix1", secret, TotpParams(), time.time())
    store.close()
    now = wait_for_step_safe()
    code = code_at(secret, now)
    proc = run_checkpassword(cfg, "mix1", "mix1-pw" + code)
    assert proc.returncode == 0, proc.stderr
    assert SqliteStore(str(db)).get("mix1").last_step == int(now // 30)
    assert not slapd.token_state("mix1").first("oathTOTPLastTimeStep")
    replay = run_checkpassword(cfg, "mix1", "mix1-pw" + code)
    assert replay.returncode == 1 and "reason=replay" in replay.stderr
    wrong = run_checkpassword(cfg, "mix1", "nope" + code)
    assert wrong.returncode == 1 and "reason=bad_password" in wrong.stderr
    # a name LDAP does not know: no token in SQLite and no entry to bind as
    ghost = run_checkpassword(cfg, "ghost-mix", "mix1-pw")
    assert ghost.returncode == 1 and "reason=bad_password" in ghost.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="creates a system user and a PAM service (root only)")
def test_ldap_tokens_with_pam_passwords(workdir, slapd):
    exe = pam_bin()
    if exe is None:
        pytest.skip("mailmfa-pam is not installed in this venv")
    with syspam.pam_service(syspam.password_service_text()) as pw_service:
        user = syspam.add_system_user("Sys-Mixed-pw", prefix="mmx")
        try:
            secret = new_secret()
            slapd.add_user(user, "a-different-ldap-pw", secret)
            cfg = write_config(workdir, slapd, "ldap-pam.toml",
                               tail=f'[password]\nbackend = "pam"\npam_service = "{pw_service}"\n')
            now = wait_for_step_safe()
            code = code_at(secret, now)

            def login(secret_text: str) -> subprocess.CompletedProcess[str]:
                return subprocess.run([exe, "--config", str(cfg)], input=secret_text, capture_output=True,
                                      text=True, timeout=60, check=False,
                                      env={"PAM_TYPE": "auth", "PAM_USER": user, "PAM_SERVICE": "test"})

            assert login("a-different-ldap-pw" + code).returncode == 1  # the LDAP password is not used
            ok = login("Sys-Mixed-pw" + code)
            assert ok.returncode == 0, ok.stderr
            assert int(slapd.token_state(user).first("oathTOTPLastTimeStep")) == int(now // 30)
            again = login("Sys-Mixed-pw" + code)
            assert again.returncode == 1 and "reason=replay" in again.stderr
        finally:
            syspam.remove_system_user(user)


def test_admin_cli_on_sqlite_tokens_knows_users_from_ldap(workdir, slapd):
    """[store] sqlite + [password] ldap: `mailmfa` writes tokens to SQLite and asks the
    directory (not the system) which users exist."""
    from test_admin_cli import mailmfa

    db = workdir / "mixed-admin" / "mailmfa.db"
    cfg = write_config(workdir, slapd, "sqlite-ldap-admin.toml",
                       tail=f'[store]\nbackend = "sqlite"\npath = "{db}"\n')
    slapd.add_user("mixadm1", "mixadm1-pw")
    assert mailmfa(cfg, "status", "mixadm1").returncode == 4
    assert mailmfa(cfg, "status", "root").returncode == 3  # a system user, but not in LDAP
    proc = mailmfa(cfg, "enroll", "mixadm1", "--no-verify", "--json")
    assert proc.returncode == 0, proc.stderr
    assert SqliteStore(str(db)).get("mixadm1") is not None
    assert not slapd.token_state("mixadm1").first("oathSecret")
    assert mailmfa(cfg, "enroll", "ghost-mix", "--no-verify").returncode == 3
    assert mailmfa(cfg, "disable", "mixadm1").returncode == 0
    assert SqliteStore(str(db)).get("mixadm1") is None
