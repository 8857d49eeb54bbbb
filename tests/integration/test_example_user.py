"""The shipped conf/ldap/example-user.ldif, applied as README "Configure LDAP" says to a slapd
that has no ou=people yet (a fresh directory), with the shipped schema and ACL: the password
set afterwards with ldappasswd, the user enrolled with `mailmfa enroll`, then a login through
mailmfa-checkpassword with password+code."""

from __future__ import annotations

import base64
import json
import re
import subprocess
from pathlib import Path

from mfa import code_at, mailmfa_cmd, run_checkpassword, write_config
from servers import REPO_ROOT, Slapd, wait_for_step_safe

USER_LDIF = REPO_ROOT / "conf" / "ldap" / "example-user.ldif"


def shipped_ldif(slapd: Slapd) -> str:
    """The file as shipped (its suffix is the harness's; substituted should that ever differ)."""
    return USER_LDIF.read_text().replace("dc=example,dc=org", slapd.suffix)


def test_no_password_in_the_file() -> None:
    text = USER_LDIF.read_text()
    assert not re.search(r"(?mi)^userPassword:", text)
    assert re.search(r"(?m)^dn: ou=people,dc=example,dc=org$", text)
    assert re.search(r"(?m)^dn: uid=alice,ou=people,dc=example,dc=org$", text)


def test_user_from_ldif_enrols_and_logs_in(slapd: Slapd, workdir: Path) -> None:
    # a fresh directory: no ou=people (the harness makes one, empty in this module's slapd)
    slapd.ldapmodify(f"dn: {slapd.people_dn}\nchangetype: delete\n")
    assert slapd.get(slapd.people_dn) is None
    slapd.ldapadd(shipped_ldif(slapd))
    dn = slapd.user_dn("alice")
    entry = slapd.get(dn, ["objectClass", "uid", "cn", "sn", "mail", "userPassword"])
    assert "inetOrgPerson" in entry["objectClass"] and entry["uid"] == ["alice"]
    assert entry["mail"] == [f"alice@{'.'.join(p[3:] for p in slapd.suffix.split(','))}"]
    assert "userPassword" not in entry

    # README: the password afterwards with ldappasswd (-S asks; -T reads a file, as here)
    password = "alice-" + base64.b32encode(b"example-user!").decode().rstrip("=")
    pw_file = workdir / "alice.pw"
    pw_file.write_text(password)
    subprocess.run(["ldappasswd", "-x", "-H", slapd.uri, "-D", slapd.admin_dn, "-w", slapd.admin_password,
                    "-T", str(pw_file), dn], check=True, capture_output=True, text=True, timeout=30)
    assert slapd.bind(dn, password)

    config = write_config(workdir, slapd)  # user_base ou=people, the default user_filter
    # enrolled as for hand-over (--no-verify: no step used up, so the current code logs in and
    # the test waits for no next step; the interactive enrolment is test_admin_cli's)
    enrol = subprocess.run([*mailmfa_cmd(), "--config", str(config), "enroll", "alice", "--no-verify", "--json"],
                           capture_output=True, text=True, timeout=60, check=False)
    assert enrol.returncode == 0, enrol.stdout + enrol.stderr
    shown = json.loads(enrol.stdout)
    assert shown["user"] == "alice" and shown["dn"] == dn and shown["enrolled"] is True
    key = shown["key"].replace(" ", "")
    secret = base64.b32decode(key + "=" * (-len(key) % 8))
    assert {"oathtotpuser", "oathtotptoken"} <= {c.lower() for c in slapd.get(dn, ["objectClass"])["objectClass"]}

    wait_for_step_safe()
    code = code_at(secret)
    alone = run_checkpassword(config, "alice", password)
    assert alone.returncode == 1, alone.stderr  # the password alone is refused
    ok = run_checkpassword(config, "alice", password + code)
    assert ok.returncode == 0, ok.stderr
    assert "reason=ok " in ok.stderr
