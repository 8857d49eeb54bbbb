"""The `mailmfa` admin command against a real slapd (shipped ACL, service account), driven as a
help desk would: by subprocess, the first code typed on stdin, computed (with pyotp) from the
key the command printed. Logins afterwards go through mailmfa-checkpassword and, where Dovecot
2.3 is installed, through a real IMAP login."""

from __future__ import annotations

import base64
import json
import os
import re
import stat
import subprocess
import time
from pathlib import Path

import pytest

from mfa import code_at, mailmfa_cmd, new_secret, run_checkpassword, write_config
from servers import HMAC_SHA1, Dovecot, free_port, wait_for_step_safe

HAS_CHECKPASSWORD = Dovecot.has_checkpassword()


def mailmfa(config: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([*mailmfa_cmd(), "--config", str(config), *args], input=stdin,
                          capture_output=True, text=True, timeout=60, check=False)


def secret_from(text: str) -> bytes:
    key = re.search(r"otpauth://totp/\S+[?&]secret=([A-Z2-7]+)", text).group(1)
    return base64.b32decode(key + "=" * (-len(key) % 8))


def wait_next_step(period: int = 30) -> float:
    """Sleep into the next TOTP step (so a test never needs the verifier's window to pass)."""
    time.sleep(period - time.time() % period + 0.1)
    return time.time()


class Enrolment:
    """`mailmfa enroll` running interactively: read what it shows, type answers."""

    def __init__(self, config: Path, user: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [*mailmfa_cmd(), "--config", str(config), "enroll", user, *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.out = ""

    def read_secret(self) -> bytes:
        """Read the instructions up to the prompt's line and return the key they show."""
        start = len(self.out)
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"no key shown:\n{self.out}\n{self.proc.stderr.read()}")
            self.out += line
            if "the app now shows" in line:
                return secret_from(self.out[start:])

    def type(self, text: str) -> None:
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def finish(self) -> tuple[int, str, str]:
        self.proc.stdin.close()
        self.out += self.proc.stdout.read()
        err = self.proc.stderr.read()
        return self.proc.wait(30), self.out, err


# ---------------------------------------------------------------------------------- fixtures


_n = iter(range(1, 100_000))


def new_user(slapd, secret: bytes | None = None, **kw) -> tuple[str, str]:
    uid = f"cli{next(_n)}"
    slapd.add_user(uid, "pw-" + uid, secret, **kw)
    return uid, "pw-" + uid


def entry(slapd, uid: str):
    return slapd.get(slapd.user_dn(uid), ["*", "+"])


def token_attrs(e) -> dict:
    return {k: v for k, v in e.items() if k.lower().startswith("oath")}


# ---------------------------------------------------------------------------------- enroll


def test_enroll_then_imap_login_with_next_code(slapd, config, dovecot):
    uid, pw = new_user(slapd)
    wait_for_step_safe(margin=5)
    e = Enrolment(config, uid)
    secret = e.read_secret()
    assert f"Account:    {uid}" in e.out and "Issuer:     Test Mail" in e.out
    assert "Key:        " + " ".join(re.findall(".{1,4}", base64.b32encode(secret).decode().rstrip("="))) in e.out
    assert "time-based" in e.out and "Digits:     6" in e.out and "Period:     30 seconds" in e.out
    assert "Algorithm:  SHA1" in e.out
    assert entry(slapd, uid).get("oathSecret") is None, "nothing may be written before the code"
    typed_at = time.time()
    e.type(code_at(secret, typed_at))
    rc, out, err = e.finish()
    assert rc == 0, err
    assert "NEXT code" in out
    assert f"event=enroll user={uid} result=ok verified=yes" in err
    state = entry(slapd, uid)
    assert {"oathtotpuser", "oathtotptoken"} <= {c.lower() for c in state["objectClass"]}
    assert state.first("oathSecret") == secret
    assert state.first("oathTOTPToken") == slapd.user_dn(uid)
    step = int(typed_at // 30)
    assert int(state.first("oathTOTPLastTimeStep")) == step
    assert abs(time.mktime(time.strptime(state.first("oathSecretTime"), "%Y%m%d%H%M%SZ"))
               - time.mktime(time.gmtime(typed_at))) < 5
    assert "oathTOTPParams" not in state  # [ldap] params_dn = "": [totp] applies
    # the activation code is used up ...
    replay = run_checkpassword(config, uid, pw + code_at(secret, typed_at))
    assert replay.returncode == 1 and "reason=replay" in replay.stderr
    # ... and the next code logs in through Dovecot
    now = wait_next_step()
    result = dovecot.imap_login(uid, pw + code_at(secret, now), source_ip="127.0.0.21")
    assert result.ok and result.selected, result.text
    assert int(slapd.token_state(uid).first("oathTOTPLastTimeStep")) == step + 1


def test_wrong_code_retry_and_new_key(slapd, config):
    uid, _ = new_user(slapd)
    wait_for_step_safe(margin=5)
    e = Enrolment(config, uid)
    first = e.read_secret()
    good = code_at(first)
    e.type("000000" if good != "000000" else "111111")
    e.type("12ab")
    e.type("new")
    second = e.read_secret()
    assert second != first
    e.type(code_at(second))
    rc, _, err = e.finish()
    assert rc == 0, err
    assert err.count("not right") == 1 and "not a code" in err
    assert slapd.token_state(uid).first("oathSecret") == second


def test_too_many_wrong_codes_gives_up_without_writing(slapd, config):
    uid, _ = new_user(slapd)
    before = entry(slapd, uid)
    proc = mailmfa(config, "enroll", uid, stdin="000001\n000002\n000003\n000004\n000005\n")
    assert proc.returncode == 1 and "nothing was written" in proc.stderr
    assert entry(slapd, uid) == before


@pytest.mark.parametrize("answer", ["", "quit\n"])
def test_abandoned_enrolment_leaves_entry_untouched(slapd, config, answer):
    uid, _ = new_user(slapd)
    before = entry(slapd, uid)
    proc = mailmfa(config, "enroll", uid, stdin=answer)
    assert proc.returncode == 1
    assert "abandoned: nothing was written; 2-step verification stays off" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert entry(slapd, uid) == before  # modifyTimestamp and entryCSN included


def test_abandoned_replacement_keeps_old_token(slapd, config):
    old = new_secret()
    uid, _ = new_user(slapd, old, last_step=123)
    before = entry(slapd, uid)
    proc = mailmfa(config, "enroll", "--replace", uid, stdin="")
    assert proc.returncode == 1 and "stays as it was" in proc.stderr
    assert entry(slapd, uid) == before


def test_enrolled_user_needs_replace(slapd, config):
    uid, _ = new_user(slapd, new_secret())
    slapd.ldapmodify(f"dn: {slapd.user_dn(uid)}\nchangetype: modify\nreplace: oathTOTPTimeStepDrift\n"
                     "oathTOTPTimeStepDrift: 4\n-\nreplace: oathFailureCount\noathFailureCount: 3\n")
    proc = mailmfa(config, "enroll", uid, "--no-verify")
    assert proc.returncode == 1 and "--replace" in proc.stderr and "Traceback" not in proc.stderr
    proc = mailmfa(config, "enroll", uid, "--no-verify", "--replace", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    state = slapd.token_state(uid)
    assert state.first("oathSecret") == secret_from(data["uri"])
    # a new key starts without the old one's history
    assert "oathTOTPTimeStepDrift" not in state and "oathFailureCount" not in state
    assert "oathTOTPLastTimeStep" not in state


def test_no_verify_json_qr_files_then_login(slapd, config, workdir):
    uid, pw = new_user(slapd)
    png, svg = workdir / f"{uid}.png", workdir / f"{uid}.svg"
    proc = mailmfa(config, "enroll", uid, "--no-verify", "--json", "--qr", str(png))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert set(data) == {"user", "dn", "enrolled", "verified", "uri", "key", "account", "issuer",
                         "digits", "period", "algorithm", "qr_file"}
    assert data["verified"] is False and data["issuer"] == "Test Mail" and data["digits"] == 6
    assert data["uri"] == (f"otpauth://totp/Test%20Mail:{uid}?secret={data['key']}&issuer=Test%20Mail"
                           "&algorithm=SHA1&digits=6&period=30")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert stat.S_IMODE(png.stat().st_mode) == 0o600  # it holds the key
    secret = secret_from(data["uri"])
    assert "oathTOTPLastTimeStep" not in slapd.token_state(uid)
    wait_for_step_safe()
    assert run_checkpassword(config, uid, pw + code_at(secret)).returncode == 0
    # SVG, and a QR drawn in the "terminal"
    uid2, _ = new_user(slapd)
    proc = mailmfa(config, "enroll", uid2, "--no-verify", "--qr", str(svg))
    assert proc.returncode == 0 and b"<svg" in svg.read_bytes()
    uid3, _ = new_user(slapd)
    proc = mailmfa(config, "enroll", uid3, "--terminal-qr", "yes", stdin="")
    assert proc.returncode == 1 and "█" in proc.stdout
    bad = mailmfa(config, "enroll", uid3, "--no-verify", "--qr", str(workdir / "x.gif"))
    assert bad.returncode == 2 and ".svg or .png" in bad.stderr



def test_qr_file_is_made_new_never_overwritten_nor_followed(slapd, config, workdir):
    """--qr FILE runs as root and the image holds the key: an existing file, a symlink (to a
    file or dangling) is refused with exit 2 before the directory is touched; a new file is
    0600 whatever the umask."""
    uid, _ = new_user(slapd)
    before = entry(slapd, uid)
    existing = workdir / f"{uid}-old.png"
    existing.write_bytes(b"keep me")
    existing.chmod(0o644)
    target = workdir / f"{uid}-target.png"
    target.write_bytes(b"not yours")
    link = workdir / f"{uid}-link.png"
    link.symlink_to(target)
    dangling = workdir / f"{uid}-dangling.svg"
    dangling.symlink_to(workdir / f"{uid}-would-be-created.svg")
    for path in (existing, link, dangling):
        proc = mailmfa(config, "enroll", uid, "--no-verify", "--qr", str(path))
        assert proc.returncode == 2, proc.stderr
        assert f"--qr: {path} exists: remove it or choose another name" in proc.stderr
        assert "Traceback" not in proc.stderr
    assert existing.read_bytes() == b"keep me" and stat.S_IMODE(existing.stat().st_mode) == 0o644
    assert target.read_bytes() == b"not yours"
    assert not (workdir / f"{uid}-would-be-created.svg").exists()
    assert entry(slapd, uid) == before  # refused before anything was written
    fresh = workdir / f"{uid}-new.png"
    proc = subprocess.run([*mailmfa_cmd(), "--config", str(config), "enroll", uid, "--no-verify",
                           "--qr", str(fresh)], capture_output=True, text=True, timeout=60, umask=0)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600 and fresh.stat().st_uid == os.getuid()
    assert fresh.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_qr_file_follows_the_interactive_enrolment(slapd, config, workdir):
    """"new" rewrites the same file with the new key; an abandoned enrolment removes it (its
    key was never stored); a completed one keeps it."""
    uid, _ = new_user(slapd)
    qr = workdir / f"{uid}.svg"
    e = Enrolment(config, uid, "--qr", str(qr))
    e.read_secret()
    first = qr.read_bytes()
    e.type("new")
    e.read_secret()
    assert qr.read_bytes() != first and b"<svg" in qr.read_bytes()
    rc, _, err = e.finish()  # end of input: abandoned
    assert rc == 1 and "abandoned" in err
    assert not qr.exists()
    wait_for_step_safe(margin=5)
    e = Enrolment(config, uid, "--qr", str(qr))
    secret = e.read_secret()
    e.type(code_at(secret))
    rc, _, err = e.finish()
    assert rc == 0, err
    assert stat.S_IMODE(qr.stat().st_mode) == 0o600 and b"<svg" in qr.read_bytes()

def test_base32_encoding_and_params_dn(workdir, slapd):
    cfg = write_config(workdir, slapd, "b32.toml",
                       extra_ldap=f'secret_encoding = "base32"\nparams_dn = "{slapd.params_dn}"')
    params8 = slapd.add_params("totp-sha1-8-30", digits=8, algorithm_oid=HMAC_SHA1)
    cfg8 = write_config(workdir, slapd, "p8.toml", extra_ldap=f'params_dn = "{params8}"')
    uid, pw = new_user(slapd)
    proc = mailmfa(cfg, "enroll", uid, "--no-verify", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    state = slapd.token_state(uid)
    assert state.first("oathSecret") == data["key"].encode()  # text, as configured
    assert state.first("oathTOTPParams") == slapd.params_dn
    wait_for_step_safe()
    assert run_checkpassword(cfg, uid, pw + code_at(secret_from(data["uri"]))).returncode == 0
    # the params entry decides what the app is told (8 digits) and what logins check
    uid8, pw8 = new_user(slapd)
    data = json.loads(mailmfa(cfg8, "enroll", uid8, "--no-verify", "--json").stdout)
    assert data["digits"] == 8 and "&digits=8&" in data["uri"]
    wait_for_step_safe()
    code8 = code_at(secret_from(data["uri"]), digits=8)
    assert run_checkpassword(cfg8, uid8, pw8 + code8).returncode == 0
    missing = write_config(workdir, slapd, "pmiss.toml", extra_ldap='params_dn = "cn=nope,ou=params,dc=example,dc=org"')
    proc = mailmfa(missing, "enroll", uid8, "--no-verify", "--replace")
    assert proc.returncode == 1 and "params_dn" in proc.stderr


def test_replace_keeps_separate_token_entry(slapd, config):
    uid, pw = new_user(slapd, new_secret(), token_on_user=False)
    proc = mailmfa(config, "enroll", uid, "--no-verify", "--replace", "--json")
    assert proc.returncode == 0, proc.stderr
    secret = secret_from(json.loads(proc.stdout)["uri"])
    assert slapd.token_state(uid, token_on_user=False).first("oathSecret") == secret
    assert entry(slapd, uid).first("oathTOTPToken") == slapd.token_dn(uid)
    wait_for_step_safe()
    assert run_checkpassword(config, uid, pw + code_at(secret)).returncode == 0


# ---------------------------------------------------------------------------------- status / list


def test_status(slapd, config):
    uid, _ = new_user(slapd, new_secret(), last_step=59_000_000)
    slapd.ldapmodify(
        f"dn: {slapd.user_dn(uid)}\nchangetype: modify\nreplace: oathTOTPTimeStepDrift\n"
        "oathTOTPTimeStepDrift: -7\n-\nreplace: oathFailureCount\noathFailureCount: 2\n-\n"
        "replace: oathLastFailure\noathLastFailure: 20261129101500Z\n-\n"
        "replace: oathSecretTime\noathSecretTime: 20261101080000Z\n")
    proc = mailmfa(config, "status", uid, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "user": uid, "dn": slapd.user_dn(uid), "enrolled": True, "token_dn": slapd.user_dn(uid),
        "algorithm": "SHA1", "digits": 6, "period": 30, "window": 1,
        "enrolled_since": "2026-11-01T08:00:00Z", "last_step": 59_000_000,
        "last_step_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(59_000_000 * 30)),
        "last_login": None, "failure_count": 2,
        "last_failure": "2026-11-29T10:15:00Z", "drift_steps": -7, "drift_seconds": -210,
        "problem": None, "throttle_wait_seconds": 0.0, "locked_out": False,
    }
    text = mailmfa(config, "status", uid).stdout
    assert "enrolled since:    2026-11-01 08:00:00 UTC" in text
    assert "failures:          2 (last 2026-11-29 10:15:00 UTC)" in text
    assert "-7 steps (the phone's clock is behind by 3 min 30 s)" in text
    plain, _ = new_user(slapd)
    proc = mailmfa(config, "status", plain, "--json")
    assert proc.returncode == 4 and json.loads(proc.stdout)["enrolled"] is False
    proc = mailmfa(config, "status", "no-such-user")
    assert proc.returncode == 3 and "no such user" in proc.stderr and not proc.stdout


def test_status_of_broken_token(slapd, config):
    uid, _ = new_user(slapd, new_secret(), token_on_user=False)
    slapd.ldapmodify(f"dn: {slapd.token_dn(uid)}\nchangetype: delete\n")
    proc = mailmfa(config, "status", uid, "--json")
    assert proc.returncode == 1 and "does not exist" in json.loads(proc.stdout)["problem"]
    # disable cleans it up
    assert mailmfa(config, "disable", uid).returncode == 0
    assert mailmfa(config, "status", uid).returncode == 4


def test_list_2000_users_paged_and_complete(slapd_factory):
    ldap = slapd_factory()
    cfg = write_config(ldap.workdir, ldap)
    users = ldap.add_many_users(2000, "enr")
    ldap.add_many_users(30, "plain", with_secret=False)
    # slapd's default limits cut even paged searches at 500: said loudly, never a partial list
    proc = mailmfa(cfg, "list", "--page-size", "100")
    assert proc.returncode == 78 and "size.prtotal=unlimited" in proc.stderr
    limits = (Path(__file__).resolve().parents[2] / "conf" / "ldap" / "limits.ldif").read_text()
    ldap.ldapmodify_config(limits.replace("olcDatabase={1}mdb,cn=config", ldap.database_dn))
    searches_before = ldap.log_text().count("oathTOTPToken=*")
    proc = mailmfa(cfg, "list", "--page-size", "100", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["count"] == 2000 and sorted(data["users"]) == sorted(users)
    pages = ldap.log_text().count("oathTOTPToken=*") - searches_before
    assert pages >= 20, f"{pages} search requests: not paged"
    text = mailmfa(cfg, "list").stdout.split()
    assert sorted(text) == sorted(users)


# ---------------------------------------------------------------------------------- diagnose / resync


@pytest.mark.parametrize("offset,words,clock", [(-180, "3 min ago", "behind"), (300, "5 min from now", "ahead")])
def test_diagnose_finds_clock_offset(slapd, config, offset, words, clock):
    secret = new_secret()
    uid, _ = new_user(slapd, secret)
    now = wait_for_step_safe()
    proc = mailmfa(config, "diagnose", uid, code_at(secret, now + offset), "--json")
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert d["matched"] and d["offset_seconds"] == offset and d["clock"] == clock
    assert not d["accepted_now"] and words in d["message"]
    assert f"mailmfa resync {uid} CODE1 CODE2" in d["message"]  # the user's name, as in the text output
    text = mailmfa(config, "diagnose", uid, code_at(secret, now + offset)).stdout
    assert f"The code matches {words}: the phone's clock is {clock}" in text


def test_diagnose_is_read_only_and_explains_no_match(slapd, config):
    secret = new_secret()
    uid, pw = new_user(slapd, secret)
    now = wait_for_step_safe()
    before = slapd.token_state(uid)
    proc = mailmfa(config, "diagnose", uid, code_at(secret, now), "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["accepted_now"] is True
    assert slapd.token_state(uid) == before
    # the very code diagnosed still logs in: diagnose never uses it up
    assert run_checkpassword(config, uid, pw + code_at(secret, now)).returncode == 0
    proc = mailmfa(config, "diagnose", uid, code_at(secret, now), "--json")
    assert json.loads(proc.stdout)["already_used"] is True
    other = code_at(new_secret(), now)
    proc = mailmfa(config, "diagnose", uid, other)
    if proc.returncode == 1:  # (a chance match within 24 h is possible, ~0.6 %)
        assert "another account" in proc.stdout
    for bad in ("12345", "abcdef", "1234567"):
        proc = mailmfa(config, "diagnose", uid, bad)
        assert proc.returncode == 2 and "6 digits" in proc.stderr
    plain, _ = new_user(slapd)
    assert mailmfa(config, "diagnose", plain, "123456").returncode == 4


def test_resync_makes_a_drifted_phone_work(slapd, config, dovecot):
    secret = new_secret()
    uid, pw = new_user(slapd, secret)
    behind = 180  # the phone's clock is 3 min behind
    now = wait_for_step_safe(margin=5)
    refused = run_checkpassword(config, uid, pw + code_at(secret, now - behind))
    assert refused.returncode == 1 and "reason=bad_code" in refused.stderr
    proc = mailmfa(config, "resync", uid, code_at(secret, now - behind - 30), code_at(secret, now - behind),
                   "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"user": uid, "drift_steps": -6, "drift_seconds": -180,
                                       "clock": "behind", "previous_drift_steps": 0}
    assert f"event=resync user={uid} result=ok drift=-6" in proc.stderr
    state = slapd.token_state(uid)
    assert state.first("oathTOTPTimeStepDrift") == "-6"
    assert int(state.first("oathTOTPLastTimeStep")) == int((now - behind) // 30)  # codes used up
    now = wait_next_step()
    result = dovecot.imap_login(uid, pw + code_at(secret, now - behind), source_ip="127.0.0.22")
    assert result.ok, result.text
    # not consecutive / not this token's codes
    proc = mailmfa(config, "resync", uid, code_at(secret, now - 600), code_at(secret, now - 540))
    assert proc.returncode == 1 and "consecutive" in proc.stderr


def test_resync_on_separate_token_entry(slapd, config):
    secret = new_secret()
    uid, _ = new_user(slapd, secret, token_on_user=False)
    now = wait_for_step_safe()
    proc = mailmfa(config, "resync", uid, code_at(secret, now + 270), code_at(secret, now + 300))
    assert proc.returncode == 0, proc.stderr
    assert slapd.token_state(uid, token_on_user=False).first("oathTOTPTimeStepDrift") == "10"



def test_codes_read_from_standard_input_with_dash(slapd, config):
    """CODE "-" reads the code from standard input (one per line), keeping it out of `ps`;
    the argv form keeps working (the tests above)."""
    secret = new_secret()
    uid, _ = new_user(slapd, secret)
    now = wait_for_step_safe()
    proc = mailmfa(config, "diagnose", uid, "-", "--json", stdin=code_at(secret, now - 180) + "\n")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["offset_seconds"] == -180
    proc = mailmfa(config, "diagnose", uid, "-", stdin="")  # no line: a usage error
    assert proc.returncode == 2 and 'CODE is "-" but standard input has no line' in proc.stderr
    proc = mailmfa(config, "diagnose", uid, "-", stdin="12ab\n")
    assert proc.returncode == 2 and "6 digits" in proc.stderr
    proc = mailmfa(config, "diagnose", uid, "-", stdin="9" * 200 + "\n")  # bounded read
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    # resync: both from stdin, in order ...
    codes = f"{code_at(secret, now + 270)}\r\n{code_at(secret, now + 300)}\n"
    proc = mailmfa(config, "resync", uid, "-", "-", "--json", stdin=codes)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["drift_steps"] == 10
    assert slapd.token_state(uid).first("oathTOTPTimeStepDrift") == "10"
    # ... or one of them
    uid2, _ = new_user(slapd, secret)
    proc = mailmfa(config, "resync", uid2, code_at(secret, now - 600), "-", "--json",
                   stdin=code_at(secret, now - 570) + "\n")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["drift_steps"] == -19
    proc = mailmfa(config, "resync", uid2, "-", "-", stdin=code_at(secret, now + 60) + "\n")
    assert proc.returncode == 2 and 'CODE2 is "-"' in proc.stderr

# ---------------------------------------------------------------------------------- disable


def test_disable_then_password_alone_or_refused_under_require_mfa(slapd, config, strict_config):
    secret = new_secret()
    uid, pw = new_user(slapd, secret, last_step=5)
    proc = mailmfa(config, "disable", uid, "--reason", "lost phone")
    assert proc.returncode == 0, proc.stderr
    assert f'event=mfa_disabled user={uid} reason="lost phone" result=ok' in proc.stderr
    e = entry(slapd, uid)
    assert not token_attrs(e)
    assert {c.lower() for c in e["objectClass"]} == {"inetorgperson"}
    assert run_checkpassword(config, uid, pw).returncode == 0
    strict = run_checkpassword(strict_config, uid, pw)
    assert strict.returncode == 1 and "reason=no_token" in strict.stderr
    again = mailmfa(config, "disable", uid)
    assert again.returncode == 4 and "nothing to do" in again.stdout


def test_disable_deletes_separate_token_entry(slapd, config):
    uid, pw = new_user(slapd, new_secret(), token_on_user=False)
    assert mailmfa(config, "disable", uid, "--json").returncode == 0
    assert slapd.get(slapd.token_dn(uid)) is None
    assert not token_attrs(entry(slapd, uid))
    assert run_checkpassword(config, uid, pw).returncode == 0


def test_password_restored(slapd, config, strict_config):
    secret = new_secret()
    uid, pw = new_user(slapd, secret)
    proc = mailmfa(config, "password-restored", uid)
    assert proc.returncode == 0, proc.stderr
    assert f"event=mfa_disabled user={uid} reason=password_restore result=ok" in proc.stderr
    assert not token_attrs(entry(slapd, uid))
    assert run_checkpassword(config, uid, pw).returncode == 0
    assert run_checkpassword(strict_config, uid, pw).returncode == 1
    # a restore procedure calls it for every user: no token is fine
    proc = mailmfa(config, "password-restored", uid, "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout) == {"user": uid, "removed": False,
                                                                "reason": "password_restore"}
    assert mailmfa(config, "password-restored", "no-such-user").returncode == 3


# ---------------------------------------------------------------------------------- errors


def test_errors_have_distinct_exit_codes_and_no_traceback(workdir, slapd, config):
    down = write_config(workdir, slapd, "down.toml", uris=[f"ldap://127.0.0.1:{free_port()}"])
    badbind = write_config(workdir, slapd, "badbind.toml")
    (workdir / "badbind.toml.ldap.secret").write_text("wrong\n")
    badcfg = workdir / "bad.toml"
    badcfg.write_text("[ldap]\nuser_base = 'x'\ntimeuot = 3\n")
    cases = [
        (down, ["status", "alice"], 111, "unavailable"),
        (down, ["list"], 111, "unavailable"),
        (badbind, ["status", "alice"], 78, "service account"),
        (badcfg, ["status", "alice"], 78, "timeuot"),
        (workdir / "missing.toml", ["list"], 78, "cannot read"),
        (config, ["status", "nobody-here"], 3, "no such user"),
        (config, ["status", "*"], 3, "no such user"),
        (config, ["disable", "x)(uid=*"], 3, "no such user"),
        (config, ["resync", "nobody", "123456"], 2, "CODE2"),
        (config, ["frobnicate"], 2, "invalid choice"),
        (config, ["list", "--page-size", "0"], 2, "between"),
    ]
    for cfg, args, code, text in cases:
        proc = mailmfa(cfg, *args)
        assert proc.returncode == code, (args, proc.stderr)
        assert text in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr


def test_help_reads_like_a_man_page(config):
    proc = subprocess.run([*mailmfa_cmd(), "--help"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0
    for word in ("enroll", "status", "list", "diagnose", "resync", "disable", "password-restored",
                 "exit status:", "111", "78"):
        assert word in proc.stdout
    for sub in ("enroll", "status", "list", "diagnose", "resync", "disable", "password-restored"):
        proc = subprocess.run([*mailmfa_cmd(), sub, "--help"], capture_output=True, text=True, check=False)
        assert proc.returncode == 0 and "exit status:" in proc.stdout and "--config" in proc.stdout


def test_service_user_only_needs_shipped_acl(slapd, config):
    """Everything above ran as the service account under conf/ldap/acl.ldif; a user can
    still not read their own secret after an enrolment."""
    uid, pw = new_user(slapd)
    assert mailmfa(config, "enroll", uid, "--no-verify").returncode == 0
    own = slapd.get(slapd.user_dn(uid), ["oathSecret", "oathSecretTime"], bind_dn=slapd.user_dn(uid),
                    password=pw)
    assert own is not None and "oathSecret" not in own and own.first("oathSecretTime")


@pytest.fixture(autouse=True)
def _no_stray_env(monkeypatch):
    monkeypatch.delenv("MAILMFA_CONFIG", raising=False)
    os.environ.pop("MAILMFA_DEBUG", None)


# ---------------------------------------------------------------------------------- unlock


def test_status_shows_throttle_and_unlock_clears_it(slapd, config):
    from mailmfa.backends.ldap import generalized_time

    secret = new_secret()
    uid, pw = new_user(slapd, secret)
    dn = slapd.user_dn(uid)
    slapd.ldapmodify(f"dn: {dn}\nchangetype: modify\nreplace: oathFailureCount\noathFailureCount: 7\n-\n"
                     f"replace: oathLastFailure\noathLastFailure: {generalized_time(time.time() - 5)}\n")
    wait_for_step_safe()
    proc = run_checkpassword(config, uid, pw + code_at(secret))
    assert proc.returncode == 1 and "reason=throttled" in proc.stderr

    st = mailmfa(config, "status", uid, "--json")
    data = json.loads(st.stdout)
    assert data["failure_count"] == 7 and data["throttle_wait_seconds"] > 0 and not data["locked_out"]
    assert "throttled: next code checked in" in mailmfa(config, "status", uid).stdout

    un = mailmfa(config, "unlock", uid)
    assert un.returncode == 0, un.stderr
    assert "event=throttle_reset" in un.stderr
    after = entry(slapd, uid)
    assert "oathFailureCount" not in after
    wait_for_step_safe()
    assert run_checkpassword(config, uid, pw + code_at(secret)).returncode == 0

    plain, _ = new_user(slapd)
    assert mailmfa(config, "unlock", plain).returncode == 4
    assert mailmfa(config, "unlock", "nobody-at-all").returncode == 3
