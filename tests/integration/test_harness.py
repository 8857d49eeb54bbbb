"""The harness itself, against real servers: what later integration tests rely on.

Also the proof that conf/ldap/acl.ldif (applied by every Slapd) does what it says, and that
conf/ldap/oath-schema.ldif yields the entries slapo-otp uses.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from servers import (
    OATH_SCHEMA_LDIF,
    Dovecot,
    Slapd,
    escape_dn_value,
    escape_filter_value,
    ldif_entry,
    parse_ldif,
    wait_for_step_safe,
)

SECRET = b"12345678901234567890"


def totp_now(secret: bytes, period: int = 30, digits: int = 6) -> str:
    pyotp = pytest.importorskip("pyotp")
    return str(pyotp.TOTP(base64.b32encode(secret).decode(), digits=digits, interval=period).now())


# ---- pure helpers -------------------------------------------------------------------------------


def test_escape_dn_value() -> None:
    assert escape_dn_value('a,b+c"d\\e<f>g;h=i') == 'a\\,b\\+c\\"d\\\\e\\<f\\>g\\;h\\=i'
    assert escape_dn_value(" #x ") == "\\ #x\\ "
    assert escape_dn_value("#x") == "\\#x"


def test_ldif_roundtrip_of_binary_and_unsafe_values() -> None:
    text = ldif_entry("cn=x", [("oathSecret", b"\x00\xff"), ("cn", " lead"), ("sn", "ok"), ("o", "é")])
    assert "oathSecret:: AP8=" in text and "cn:: IGxlYWQ=" in text and "sn: ok" in text
    (entry,) = parse_ldif(text)
    assert entry.dn == "cn=x"
    assert entry["oathsecret"] == [b"\x00\xff"] and entry.first("cn") == " lead" and entry["o"] == ["é"]


# ---- slapd ----------------------------------------------------------------------------------------


def test_slapd_user_binds_with_password(slapd: Slapd) -> None:
    dn = slapd.add_user("h-alice", "alicepw", SECRET, mail="alice@example.org")
    assert dn == "uid=h-alice,ou=people,dc=example,dc=org"
    assert slapd.bind(dn, "alicepw")
    assert not slapd.bind(dn, "wrong")
    assert slapd.bind(slapd.service_dn, slapd.service_password)
    entry = slapd.get(dn)
    assert entry is not None
    assert {"inetOrgPerson", "oathTOTPUser", "oathTOTPToken"} <= set(entry["objectClass"])
    assert entry.first("oathTOTPToken") == dn and entry.first("oathTOTPParams") == slapd.params_dn
    assert entry.first("oathSecret") == SECRET
    params = slapd.get(slapd.params_dn)
    assert params is not None and params.first("oathOTPLength") == "6"
    assert params.first("oathHMACAlgorithm") == "1.2.840.113549.2.7"


def test_slapd_special_characters_in_uid(slapd: Slapd) -> None:
    uid = 'h-o,dd+"=x\\y; '
    dn = slapd.add_user(uid, "pw", SECRET, token_on_user=False)
    assert slapd.bind(dn, "pw")
    (user,) = slapd.search(slapd.people_dn, f"(uid={escape_filter_value(uid)})")
    assert user.first("uid") == uid
    token = slapd.token_state(uid, token_on_user=False)
    assert token is not None and token.first("oathSecret") == SECRET
    # slapd stores DN-valued attributes with hex escapes (\\2C, not \\,): compare DNs, not strings
    ref = user.first("oathTOTPToken")
    assert ref != slapd.token_dn(uid) and "\\2C" in ref
    assert slapd.get(ref).first("oathSecret") == SECRET  # type: ignore[union-attr]
    # separate token entries are invisible to users, even their owner
    assert slapd.search(ref, bind_dn=dn, password="pw") == []


def test_acl_service_reads_secret_and_writes_state(slapd: Slapd) -> None:
    dn = slapd.add_user("h-bob", "bobpw", SECRET, last_step=100)
    svc = {"bind_dn": slapd.service_dn, "password": slapd.service_password}
    (seen,) = slapd.search(dn, attrs=["oathSecret", "oathTOTPLastTimeStep", "userPassword"], **svc)
    assert seen.first("oathSecret") == SECRET
    assert seen.first("oathTOTPLastTimeStep") == "100"
    assert "userPassword" not in seen  # the service account never sees passwords
    # compare-and-swap of the last step: succeeds once, the stale second attempt fails
    cas = f"dn: {dn}\nchangetype: modify\ndelete: oathTOTPLastTimeStep\noathTOTPLastTimeStep: 100\n-\n" \
          "add: oathTOTPLastTimeStep\noathTOTPLastTimeStep: 101\n-\n"
    assert slapd.ldapmodify(cas, check=False, **svc).returncode == 0
    assert slapd.ldapmodify(cas, check=False, **svc).returncode == 16  # noSuchAttribute (value 100)
    assert slapd.token_state("h-bob").first("oathTOTPLastTimeStep") == "101"  # type: ignore[union-attr]


def test_acl_service_enrols_and_unenrols(slapd: Slapd) -> None:
    dn = slapd.add_user("h-carol", "carolpw")
    svc = {"bind_dn": slapd.service_dn, "password": slapd.service_password}
    secret_b64 = base64.b64encode(SECRET).decode()
    enrol = (
        f"dn: {dn}\nchangetype: modify\nadd: objectClass\nobjectClass: oathTOTPUser\nobjectClass: oathTOTPToken\n-\n"
        f"add: oathTOTPToken\noathTOTPToken: {dn}\n-\nadd: oathTOTPParams\noathTOTPParams: {slapd.params_dn}\n-\n"
        f"add: oathSecret\noathSecret:: {secret_b64}\n-\n"
    )
    slapd.ldapmodify(enrol, **svc)
    assert slapd.get(dn).first("oathSecret") == SECRET  # type: ignore[union-attr]
    # a separate token entry under ou=tokens
    tdn = "cn=h-carol2,ou=tokens,dc=example,dc=org"
    slapd.ldapadd(ldif_entry(tdn, [("objectClass", "device"), ("objectClass", "oathTOTPToken"),
                                   ("cn", "h-carol2"), ("oathSecret", SECRET)]), **svc)
    slapd.ldapmodify(f"dn: {tdn}\nchangetype: delete\n", **svc)
    # but no other objectClass values, and no passwords
    other = f"dn: {dn}\nchangetype: modify\ndelete: objectClass\nobjectClass: inetOrgPerson\n-\n"
    assert slapd.ldapmodify(other, check=False, **svc).returncode == 50
    pw = f"dn: {dn}\nchangetype: modify\nreplace: userPassword\nuserPassword: x\n-\n"
    assert slapd.ldapmodify(pw, check=False, **svc).returncode == 50
    unenrol = (
        f"dn: {dn}\nchangetype: modify\ndelete: oathSecret\n-\ndelete: oathTOTPToken\n-\n"
        "delete: oathTOTPParams\n-\ndelete: objectClass\nobjectClass: oathTOTPUser\nobjectClass: oathTOTPToken\n-\n"
    )
    slapd.ldapmodify(unenrol, **svc)
    assert "oathTOTPUser" not in slapd.get(dn)["objectClass"]  # type: ignore[index]


def test_acl_user_and_anonymous_cannot_read_secret(slapd: Slapd) -> None:
    dn = slapd.add_user("h-dave", "davepw", SECRET)
    (own,) = slapd.search(dn, attrs=["*", "oathSecret"], bind_dn=dn, password="davepw")
    assert "oathSecret" not in own and "userPassword" not in own
    assert own.first("oathTOTPParams") == slapd.params_dn  # own token state is readable
    assert own.first("objectClass") == "inetOrgPerson"
    assert slapd.search(dn, attrs=["oathSecret"], bind_dn="") == []  # anonymous sees nothing
    other = slapd.add_user("h-erin", "erinpw")
    (seen,) = slapd.search(dn, attrs=["*", "oathSecret"], bind_dn=other, password="erinpw")
    assert "oathSecret" not in seen and "oathTOTPParams" not in seen and seen.first("cn") == "h-dave"
    # the user can neither reset their replay state nor replace their secret...
    for attr, value in (("oathTOTPLastTimeStep", "0"), ("oathSecret", "x")):
        ldif = f"dn: {dn}\nchangetype: modify\nreplace: {attr}\n{attr}: {value}\n-\n"
        assert slapd.ldapmodify(ldif, bind_dn=dn, password="davepw", check=False).returncode == 50
    # ...but can change their own password
    ldif = f"dn: {dn}\nchangetype: modify\nreplace: userPassword\nuserPassword: newpw\n-\n"
    slapd.ldapmodify(ldif, bind_dn=dn, password="davepw")
    assert slapd.bind(dn, "newpw")


def test_slapd_many_users(slapd: Slapd) -> None:
    t0 = time.monotonic()
    users = slapd.add_many_users(300, "h-many", password=lambda uid: uid + "-pw")
    assert time.monotonic() - t0 < 5
    assert users["h-many7"] == hashlib.sha1(b"h-many7").digest()
    assert slapd.bind(slapd.user_dn("h-many299"), "h-many299-pw")
    assert len(slapd.search(slapd.people_dn, "(uid=h-many*)", ["1.1"])) == 300


def test_slapd_pause_resume_kill_restart(slapd_factory: Callable[..., Slapd]) -> None:
    server = slapd_factory(log_level="0")
    dn = server.add_user("h-frank", "frankpw", SECRET)
    port, pid = server.port, server.pid
    server.pause()
    assert not server.answers(timeout=0.3)
    server.resume()
    assert server.bind(dn, "frankpw")
    server.kill()
    assert server.pid is None
    server.restart()
    assert server.port == port and server.pid != pid
    assert server.bind(dn, "frankpw") and server.get(dn).first("oathSecret") == SECRET  # type: ignore[union-attr]
    server.pause()  # stop() must also work on a paused server (SIGTERM stays pending under SIGSTOP)
    server.stop()
    assert server.pid is None
    with pytest.raises(RuntimeError, match="exited 255"):  # ldapwhoami: can't contact server
        server.bind(dn, "frankpw")


@pytest.fixture(scope="module")
def slapd_otp(slapd_factory: Callable[..., Slapd]) -> Slapd:
    return slapd_factory(with_otp_overlay=True, with_ppolicy=True)


def _oath_schema(server: Slapd) -> set[str]:
    (sub,) = server.search("cn=Subschema", attrs=["attributeTypes", "objectClasses"], scope="base")
    return {v for k in ("attributeTypes", "objectClasses") for v in sub[k] if "'oath" in v}


def test_oath_schema_ldif_matches_otp_module(slapd: Slapd, slapd_otp: Slapd) -> None:
    from_ldif, from_module = _oath_schema(slapd), _oath_schema(slapd_otp)
    assert len(from_ldif) == 35 + 9
    assert from_ldif == from_module
    # and the two cannot be combined, as the LDIF's header says
    proc = subprocess.run(["ldapadd", "-Q", "-Y", "EXTERNAL", "-H", slapd_otp.ldapi_uri, "-f", str(OATH_SCHEMA_LDIF)],
                          capture_output=True, env={**os.environ, "LDAPNOINIT": "1"}, check=False)
    assert proc.returncode == 80 and b"Duplicate attributeType" in proc.stderr
    load = "dn: cn=module{0},cn=config\nchangetype: modify\nadd: olcModuleLoad\nolcModuleLoad: otp\n"
    assert slapd.ldapmodify_config(load, check=False).returncode == 80


def test_slapd_otp_overlay_checks_codes(slapd_otp: Slapd) -> None:
    server = slapd_otp
    dn = server.add_user("h-grace", "gracepw", SECRET)
    assert not server.bind(dn, "gracepw")  # the overlay wants password + code
    wait_for_step_safe()
    code = totp_now(SECRET)
    assert server.bind(dn, "gracepw" + code)
    assert not server.bind(dn, "gracepw" + code)  # replay of the same step is refused
    # observed with slapd 2.5.13: a WRONG password with a valid code still consumes the step
    dn_w = server.add_user("h-walter", "walterpw", SECRET)
    assert not server.bind(dn_w, "wrongpw" + code)
    assert server.token_state("h-walter").first("oathTOTPLastTimeStep") is not None  # type: ignore[union-attr]
    assert not server.bind(dn_w, "walterpw" + code)
    step = int(server.token_state("h-grace").first("oathTOTPLastTimeStep"))  # type: ignore[union-attr]
    assert step >= int(time.time()) // 30  # the overlay wrote it despite the ACL (internal op)
    # a separate token entry works too; user without token binds with the password alone
    dn2 = server.add_user("h-heidi", "heidipw", SECRET, token_on_user=False)
    assert server.bind(dn2, "heidipw" + totp_now(SECRET))
    assert server.bind(server.add_user("h-ivan", "ivanpw"), "ivanpw")


def test_slapd_ppolicy_locks_out(slapd_otp: Slapd) -> None:
    dn = slapd_otp.add_user("h-judy", "judypw")
    assert not any(slapd_otp.bind(dn, "bad") for _ in range(5))
    assert not slapd_otp.bind(dn, "judypw")  # pwdMaxFailure 5 of the default policy
    assert slapd_otp.get(dn, ["pwdAccountLockedTime"]).first("pwdAccountLockedTime")  # type: ignore[union-attr]


# ---- Dovecot --------------------------------------------------------------------------------------

STUB = """#!/usr/bin/python3 -IS
# checkpassword stub: password "pw" for everyone, "tmp" = temporary failure
import os, sys
data = b""
while True:
    chunk = os.read(3, 1024)
    if not chunk:
        break
    data += chunk
user, password = data.split(b"\\0")[:2]
if password == b"tmp":
    sys.exit(111)
if password != b"pw":
    sys.exit(1)
os.environ["USER"] = user.decode()
os.execv(sys.argv[1], sys.argv[1:])
"""


# Dovecot 2.4 has no checkpassword driver: there the same three answers come from a Lua passdb.
LUA_STUB = """\
function auth_password_verify(req, pass)
  if pass == "pw" then return dovecot.auth.PASSDB_RESULT_OK, {} end
  if pass == "tmp" then return dovecot.auth.PASSDB_RESULT_INTERNAL_FAILURE, "stub tempfail" end
  return dovecot.auth.PASSDB_RESULT_PASSWORD_MISMATCH, "stub mismatch"
end
"""


@pytest.fixture(scope="module")
def dovecot(dovecot_factory: Callable[..., Dovecot], workdir_factory: Callable[[], Path]) -> Dovecot:
    """A Dovecot whose passdb accepts "pw", tempfails "tmp" and refuses anything else."""
    workdir = workdir_factory()
    if not Dovecot.has_checkpassword():
        stub = workdir / "stub.lua"
        stub.write_text(LUA_STUB)
        stub.chmod(0o644)
        return dovecot_factory(f"driver = lua\nlua_file = {stub}", workdir=workdir)
    stub = workdir / "checkpassword-stub"
    stub.write_text(STUB)
    stub.chmod(0o755)
    return dovecot_factory(f"driver = checkpassword\nargs = {stub}", workdir=workdir)


def test_dovecot_imap(dovecot: Dovecot) -> None:
    ok = dovecot.imap_login("h-u1", "pw")
    assert ok.ok and ok.selected, ok
    bad = dovecot.imap_login("h-u1", "nope", source_ip="127.0.0.2")
    assert not bad.ok and not bad.tempfail and "AUTHENTICATIONFAILED" in bad.text
    tmp = dovecot.imap_login("h-u1", "tmp", source_ip="127.0.0.3")
    assert not tmp.ok and tmp.tempfail, tmp
    assert "rip=127.0.0.3" in dovecot.log_text()  # the source address reaches Dovecot
    assert (dovecot.home_dir / "h-u1" / "Maildir").is_dir()


def test_dovecot_pop3_and_doveadm(dovecot: Dovecot) -> None:
    ok = dovecot.pop3_login("h-u2", "pw")
    assert ok.ok and ok.selected, ok
    bad = dovecot.pop3_login("h-u2", "nope", source_ip="127.0.0.4")
    assert not bad.ok and not bad.tempfail
    assert dovecot.doveadm_auth_test("h-u3", "pw")[0] == 0
    assert dovecot.doveadm_auth_test("h-u3", "nope")[0] == 77


def test_dovecot_runs_checkpassword_as_dovecot(dovecot: Dovecot) -> None:
    if not Dovecot.has_checkpassword():
        pytest.skip("Dovecot >= 2.4 has no checkpassword passdb")
    # the auth worker that runs checkpassword is owned by the dovecot user
    import pwd

    uid = pwd.getpwnam("dovecot").pw_uid
    assert dovecot.pid is not None
    children = [p for p in os.listdir("/proc") if p.isdigit()]
    owners = set()
    for p in children:
        try:
            status = Path(f"/proc/{p}/status").read_text()
            cmdline = Path(f"/proc/{p}/cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(status.split("PPid:")[1].split()[0])
        if ppid == dovecot.pid and cmdline.startswith(b"dovecot/auth"):
            owners.add(int(status.split("Uid:")[1].split()[0]))
    assert owners == {uid}


def test_dovecot_pause_resume(dovecot: Dovecot) -> None:
    dovecot.pause()
    try:
        with pytest.raises(TimeoutError):  # no greeting: the harness raises, never "login failed"
            dovecot.imap_login("h-u4", "pw", timeout=0.5)
    finally:
        dovecot.resume()
    assert dovecot.imap_login("h-u4", "pw").ok


def test_dovecot_refuses_untraversable_workdir(tmp_path: Path) -> None:
    # pytest's tmp_path sits under /tmp/pytest-of-root (0700): the dovecot user could not enter it
    with pytest.raises(PermissionError, match="cannot be entered by 'dovecot'"):
        Dovecot(tmp_path / "d", "driver = static\nargs = password=x").start()
