"""`mailmfa check-setup` against the installed Dovecot's own doveconf: the shipped snippets pass
with the auth cache on, the configurations that replay a code are named with their fix."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from authd import lua_passdb
from mfa import mailmfa_cmd
from pamface import PAM_CONF, pam_24_globals, passdb_pam
from servers import Dovecot

CACHE_ON = "auth_cache_size = 1M\n"


def check(tmp: Path, passdb: str, extra: str, sasl_options: str = "-m /var/run/saslauthd",
          userdb: bool = True) -> tuple[int, str]:
    """Write a dovecot.conf (the harness's, never started), a PAM dir and saslauthd defaults,
    and run check-setup on them."""
    dc = Dovecot(tmp / "dc", passdb, extra=extra)
    conf = tmp / "dovecot.conf"
    text = dc.config_text()
    if not userdb:  # drop the harness's userdb block (its 2.4 form nests a fields { } block)
        lines = text.splitlines(keepends=True)
        start = next(i for i, ln in enumerate(lines) if ln.startswith("userdb"))
        depth, end = 0, start
        for end in range(start, len(lines)):
            depth += lines[end].count("{") - lines[end].count("}")
            if depth == 0:
                break
        text = "".join(lines[:start] + lines[end + 1:])
    conf.write_text(text)
    pam_dir = tmp / "pam.d"
    pam_dir.mkdir(exist_ok=True)
    (pam_dir / "mailmfa").write_text((PAM_CONF / "mailmfa").read_text())  # as shipped
    (pam_dir / "smtp").write_text((PAM_CONF / "mailmfa").read_text())
    defaults = tmp / "saslauthd"
    defaults.write_text(f'START=yes\nMECHANISMS="pam"\nOPTIONS="{sasl_options}"\n')
    out = subprocess.run([*mailmfa_cmd(), "check-setup", "--dovecot-config", str(conf), "--pam-dir", str(pam_dir),
                          "--saslauthd-defaults", str(defaults)], capture_output=True, text=True, timeout=60)
    return out.returncode, out.stdout + out.stderr


def test_shipped_lua_snippet_passes_with_the_cache_on(tmp_path: Path) -> None:
    passdb, extra = lua_passdb(tmp_path / "authd.sock")
    code, text = check(tmp_path, passdb, CACHE_ON + extra)  # the admin's cache, then the snippet
    assert code == 0, text
    assert "ok    Dovecot passdb lua (mailmfa.lua)" in text


@pytest.mark.skipif(Dovecot.version() >= (2, 4), reason="2.4 does not cache the Lua passdb")
def test_23_lua_with_the_cache_on_is_named(tmp_path: Path) -> None:
    passdb, extra = lua_passdb(tmp_path / "authd.sock")
    code, text = check(tmp_path, passdb, extra + CACHE_ON)  # set again after the snippet
    assert code == 1, text
    assert "FAIL  Dovecot passdb lua (mailmfa.lua)" in text and "fix: auth_cache_size = 0" in text


def test_pam_passdb_with_the_cache_on(tmp_path: Path) -> None:
    code, text = check(tmp_path, passdb_pam("mailmfa"), CACHE_ON)
    if Dovecot.version() >= (2, 4):  # caches passdb pam: the shipped snippet's global turns it off
        assert code == 1 and "FAIL  Dovecot passdb pam (PAM service mailmfa)" in text, text
        code, text = check(tmp_path, passdb_pam("mailmfa"), CACHE_ON + pam_24_globals())
    assert code == 0, text
    assert "ok    Dovecot passdb pam (PAM service mailmfa)" in text


def test_saslauthd_cache_is_named(tmp_path: Path) -> None:
    passdb, extra = lua_passdb(tmp_path / "authd.sock")
    code, text = check(tmp_path, passdb, extra, sasl_options="-c -m /var/run/saslauthd")
    assert code == 1, text
    assert "FAIL  saslauthd -a pam (PAM service smtp)" in text and "remove -c from OPTIONS" in text


def test_passdb_pam_that_asks_another_service_is_named(tmp_path: Path) -> None:
    """The slip the 2.4 snippet warns about: a bare `service_name` inside passdb pam is another
    setting, so Dovecot asks PAM service "dovecot" -- the system password alone, no code."""
    body = "driver = pam\nservice_name = mailmfa" if Dovecot.version() >= (2, 4) else "driver = pam"
    code, text = check(tmp_path, body, "")
    assert code == 1, text
    assert "FAIL  Dovecot passdb pam (PAM service dovecot)" in text and "need no code" in text


def test_a_password_only_passdb_beside_mailmfas_is_named(tmp_path: Path) -> None:
    """The passdb mailmfa's replaced, left included (auth-ldap.conf.ext, auth-system.conf.ext):
    Dovecot asks it when mailmfa refuses, and it accepts the password alone."""
    users = tmp_path / "users"
    users.write_text("")
    if Dovecot.version() >= (2, 4):
        other = f"passdb passwd-file {{\n  passwd_file_path = {users}\n{{deny}}}}\n"
    else:
        other = f"passdb {{\n  driver = passwd-file\n  args = {users}\n{{deny}}}}\n"
    passdb, extra = lua_passdb(tmp_path / "authd.sock")
    code, text = check(tmp_path, passdb, extra + other.replace("{deny}", ""))
    assert code == 1, text
    assert "FAIL  Dovecot passdb passwd-file" in text and "needs no code" in text, text
    code, text = check(tmp_path, passdb, extra + other.replace("{deny}", "  deny = yes\n"))
    assert code == 0, text  # a deny list only ever refuses


def test_no_userdb_is_named(tmp_path: Path) -> None:
    """The snippets leave the userdb to the admin: with none, every login mailmfa accepts
    fails afterwards, and doveconf itself says nothing."""
    passdb, extra = lua_passdb(tmp_path / "authd.sock")
    code, text = check(tmp_path, passdb, extra, userdb=False)
    assert code == 1 and "FAIL  Dovecot userdb" in text, text
