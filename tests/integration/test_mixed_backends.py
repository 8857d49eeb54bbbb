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


def test_sqlite_tokens_meet_every_name_the_directory_binds(workdir, slapd):
    """LDAP finds `MIXV`, `ｍｉｘｖ` and `mi<soft hyphen>xv` as mixv (caseIgnoreMatch): each
    must meet mixv's SQLite token, never pass as a user without one on the password alone;
    and a token enrolled under another case (`Mixw`) guards the name as logged in (`mixw`)."""
    db = workdir / "mixed-names" / "mailmfa.db"
    cfg = write_config(workdir, slapd, "sqlite-ldap-names.toml",
                       tail=f'[store]\nbackend = "sqlite"\npath = "{db}"\n')
    secret = new_secret()
    slapd.add_user("mixv", "mixv-pw")
    slapd.add_user("mixw", "mixw-pw")
    store = SqliteStore(str(db))
    store.write_token("mixv", secret, TotpParams(), time.time())
    store.write_token("Mixw", new_secret(), TotpParams(), time.time())
    store.close()
    for variant in ("MIXV", "\uff4d\uff49\uff58\uff56", "mi\u00adxv", "Mixv"):
        proc = run_checkpassword(cfg, variant, "mixv-pw")
        assert proc.returncode == 1 and "reason=bad_code" in proc.stderr, (variant, proc.stderr)
    proc = run_checkpassword(cfg, "mixw", "mixw-pw")
    assert proc.returncode == 1 and "reason=bad_code" in proc.stderr, proc.stderr
    now = wait_for_step_safe()
    ok = run_checkpassword(cfg, "MIXV", "mixv-pw" + code_at(secret, now))
    assert ok.returncode == 0, ok.stderr
    replay = run_checkpassword(cfg, "mixv", "mixv-pw" + code_at(secret, now))  # one token, one step
    assert replay.returncode == 1 and "reason=replay" in replay.stderr, replay.stderr


def test_userdb_lookup_asks_the_password_side(workdir, slapd):
    """SQLite holds only enrolled users: a userdb lookup (LMTP/LDA recipient checks) of a
    name it does not hold is answered by the directory, not "exists" for anything."""
    db = workdir / "mixed-userdb" / "mailmfa.db"
    cfg = write_config(workdir, slapd, "sqlite-ldap-userdb.toml",
                       tail=f'[store]\nbackend = "sqlite"\npath = "{db}"\n')
    slapd.add_user("mixu", "mixu-pw")
    store = SqliteStore(str(db))
    store.write_token("mixe", new_secret(), TotpParams(), time.time())  # in SQLite, not in LDAP
    store.close()
    found = run_checkpassword(cfg, "mixu", "", env={"AUTHORIZED": "1"})
    assert found.returncode == 0 and "AUTHORIZED=2" in found.stdout.splitlines(), found.stderr
    for ghost in ("no-such-user", "../../etc"):
        proc = run_checkpassword(cfg, ghost, "", env={"AUTHORIZED": "1"})
        assert proc.returncode == 3, (ghost, proc.stderr)
    # a token left behind for a user the directory no longer has: no account
    assert run_checkpassword(cfg, "mixe", "", env={"AUTHORIZED": "1"}).returncode == 3


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


def test_web_page_on_sqlite_tokens_with_ldap_passwords(workdir, slapd):
    """mailmfa-web's app (Flask's test client, in process) on the mixed pair: the LDAP password
    signs in, the profile's name is the LDAP entry's cn, the token is written to SQLite (not
    LDAP) and removed from there. The browser flows are in test_web*.py."""
    pytest.importorskip("flask")
    pytest.importorskip("cryptography")
    import base64
    import re

    from mailmfa.config import load
    from mailmfa.web.app import create_app

    db = workdir / "mixed-web" / "mailmfa.db"
    state = workdir / "mixed-web-state"
    state.mkdir(mode=0o700)
    cfg = write_config(workdir, slapd, "sqlite-ldap-web.toml",
                       tail=f'[store]\nbackend = "sqlite"\npath = "{db}"\n'
                            f'[web]\nstate_dir = "{state}"\nsecure_cookies = false\n')
    slapd.add_user("mixweb", "mixweb-pw", cn="Mixweb Example")
    client = create_app(load(str(cfg))).test_client()

    def post(get_path: str, post_path: str, **form: str):
        page = client.get(get_path).get_data(as_text=True)
        token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        return client.post(post_path, data={"csrf": token, **form})

    r = post("/login", "/login", login="mixweb", password="mixweb-pw")
    assert r.status_code == 303 and r.headers["Location"].endswith("/profile")
    profile = client.get("/profile").get_data(as_text=True)
    assert "Mixweb Example" in profile
    assert post("/2fa", "/2fa", password="mixweb-pw").status_code == 303
    assert post("/2fa/manage", "/2fa/enable").headers["Location"].endswith("/2fa/apps")
    setup = client.get("/2fa/setup").get_data(as_text=True)
    key = re.search(r'id="manual-key">([A-Z2-7 ]+)<', setup).group(1).replace(" ", "")
    secret = base64.b32decode(key + "=" * (-len(key) % 8))
    now = wait_for_step_safe()
    r = post("/2fa/setup", "/2fa/verify", pin=code_at(secret, now))
    assert r.status_code == 303 and r.headers["Location"].endswith("/2fa/enabled"), r.get_data(as_text=True)
    info = SqliteStore(str(db)).get("mixweb")
    assert info is not None and info.secret == secret and info.last_step == int(now // 30)
    assert "oathSecret" not in slapd.get(slapd.user_dn("mixweb"))
    # disable: the password (an LDAP bind, the user now enrolled) then Disable
    assert post("/2fa", "/2fa", password="wrong").status_code == 401
    assert post("/2fa", "/2fa", password="mixweb-pw").status_code == 303
    assert post("/2fa/manage", "/2fa/disable").headers["Location"].endswith("/2fa/disabled")
    assert SqliteStore(str(db)).get("mixweb") is None


def test_daemon_with_sqlite_tokens(workdir, slapd):
    """mailmfa-authd builds the same backends as the per-login programs: here SQLite tokens
    with LDAP passwords (no LDAP token at all)."""
    from authd import Authd, ask, daemon_toml
    from mailmfa.daemon import protocol

    db = workdir / "mixed-authd" / "mailmfa.db"
    sock = workdir / "mixed-authd.sock"
    cfg = write_config(workdir, slapd, "authd-sqlite.toml",
                       tail=f'[store]\nbackend = "sqlite"\npath = "{db}"\n' + daemon_toml(sock))
    secret = new_secret()
    slapd.add_user("mixd1", "mixd1-pw")
    store = SqliteStore(str(db))
    store.write_token("mixd1", secret, TotpParams(), time.time())
    store.close()
    server = Authd(workdir / "authd-mixed", cfg, sock)
    server.start()
    try:
        now = wait_for_step_safe()
        line = protocol.auth_request("mixd1", "mixd1-pw" + code_at(secret, now), "imap", "192.0.2.5")
        assert ask(sock, line) == b"OK ok\n"
        assert ask(sock, line.replace(b"192.0.2.5", b"192.0.2.6")) == b"FAIL replay\n"
        assert SqliteStore(str(db)).get("mixd1").last_step == int(now // 30)
    finally:
        server.stop()
