"""The shipped conf/ldap/service-account.ldif, applied as README "Configure LDAP" says, to a real
slapd with the shipped schema and ACL: the placeholder password lets nobody in, ldappasswd -T
sets the password from the very secret file mailmfa reads, and the account then does what
mailmfa needs (find a user, read the token, record the used step) and cannot read
userPassword."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path

import pytest

from mfa import code_at, mailmfa_cmd, run_checkpassword, token_user, write_config
from servers import REPO_ROOT, Slapd, wait_for_step_safe

SERVICE_LDIF = REPO_ROOT / "conf" / "ldap" / "service-account.ldif"


def shipped_ldif(slapd: Slapd) -> str:
    """The file as shipped (its suffix is the harness's; substituted should that ever differ)."""
    return SERVICE_LDIF.read_text().replace("dc=example,dc=org", slapd.suffix)


@pytest.fixture(scope="module")
def account(slapd: Slapd, workdir: Path) -> tuple[Path, str]:
    """The harness's own service account and ou=services replaced by the shipped LDIF, then
    the README's password steps: (config, the password in the secret file)."""
    assert slapd.service_dn == f"cn=mailmfa,ou=services,{slapd.suffix}"
    slapd.ldapmodify(f"dn: {slapd.service_dn}\nchangetype: delete\n\n"
                     f"dn: ou=services,{slapd.suffix}\nchangetype: delete\n")
    assert slapd.get(f"ou=services,{slapd.suffix}") is None
    slapd.ldapadd(shipped_ldif(slapd))
    config = write_config(workdir, slapd)
    secret_file = workdir / "mailmfa.toml.ldap.secret"
    # README: head -c 24 /dev/urandom | base64 | tr -d '\n' > ldap.secret; ldappasswd -T ldap.secret
    # (-T keeps a trailing newline as part of the password; mailmfa would drop it)
    secret_file.write_text(base64.b64encode(os.urandom(24)).decode())
    subprocess.run(["ldappasswd", "-x", "-H", slapd.uri, "-D", slapd.admin_dn, "-w", slapd.admin_password,
                    "-T", str(secret_file), slapd.service_dn],
                   check=True, capture_output=True, text=True, timeout=30)
    return config, secret_file.read_text()


def test_placeholder_password_lets_nobody_in(slapd: Slapd) -> None:
    scratch = f"cn=placeholder,ou=people,{slapd.suffix}"
    entry = shipped_ldif(slapd).split("\n\n")[-1].replace(slapd.service_dn, scratch)
    entry = entry.replace("\ncn: mailmfa\n", "\ncn: placeholder\n")
    slapd.ldapadd(entry)
    stored = slapd.get(scratch, ["userPassword"])["userPassword"][0]
    assert stored == "{SSHA}not-set-use-ldappasswd"
    for guess in ("not-set-use-ldappasswd", stored, "{SSHA}", "x"):
        assert not slapd.bind(scratch, guess)


def test_password_from_secret_file(slapd: Slapd, account: tuple[Path, str]) -> None:
    config, password = account
    assert slapd.bind(slapd.service_dn, password)
    whoami = subprocess.run(["ldapwhoami", "-x", "-H", slapd.uri, "-D", slapd.service_dn,
                             "-y", str(config.parent / "mailmfa.toml.ldap.secret")],
                            capture_output=True, text=True, timeout=30, check=False)
    assert whoami.returncode == 0 and slapd.service_dn in whoami.stdout, whoami.stderr
    assert not slapd.bind(slapd.service_dn, slapd.service_password)
    entry = slapd.get(slapd.service_dn, ["objectClass", "userPassword"])
    assert {"organizationalRole", "simpleSecurityObject"} <= set(entry["objectClass"])
    assert entry["userPassword"][0].startswith("{SSHA}")  # hashed by slapd, not stored as sent


def test_reads_tokens_not_passwords(slapd: Slapd, account: tuple[Path, str]) -> None:
    _, password = account
    uid, _, secret = token_user(slapd, "svc")
    seen = slapd.get(slapd.user_dn(uid), ["userPassword", "oathSecret", "oathTOTPToken"],
                     bind_dn=slapd.service_dn, password=password)
    assert seen["oathSecret"] == [secret]
    assert seen["oathTOTPToken"] == [slapd.user_dn(uid)]
    assert "userPassword" not in seen
    # not even as a filter: a search on userPassword finds nothing for the service account
    assert slapd.search(slapd.people_dn, f"(&(uid={uid})(userPassword=*))", ["dn"],
                        bind_dn=slapd.service_dn, password=password) == []


def test_mailmfa_works_with_it(slapd: Slapd, account: tuple[Path, str]) -> None:
    config, _ = account
    uid, password, secret = token_user(slapd, "svcl")
    status = subprocess.run([*mailmfa_cmd(), "--config", str(config), "status", uid],
                            capture_output=True, text=True, timeout=60, check=False)
    assert status.returncode == 0, status.stdout + status.stderr
    wait_for_step_safe()
    code = code_at(secret)
    ok = run_checkpassword(config, uid, password + code)
    assert ok.returncode == 0, ok.stderr
    assert "reason=ok " in ok.stderr
    replay = run_checkpassword(config, uid, password + code)  # the step was recorded
    assert replay.returncode == 1 and "reason=replay" in replay.stderr, replay.stderr
