"""The core login path on real servers: slapd + mailmfa-checkpassword, directly (fd 3, as
Dovecot runs it) and through a real Dovecot 2.3 IMAP login."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from mfa import checkpassword_bin, code_at, fd3_argv, new_secret, run_checkpassword, token_user, write_config
from servers import Dovecot, wait_for_step_safe

HAS_CHECKPASSWORD = Dovecot.has_checkpassword()
needs_checkpassword = pytest.mark.skipif(
    not HAS_CHECKPASSWORD,
    reason=f"Dovecot {'.'.join(map(str, Dovecot.version()))} has no checkpassword driver "
    "(removed in 2.4); the direct-protocol tests still run",
)


_n = iter(range(1, 10_000))


def user_with_token(slapd, *, token_on_user=True, prefix="u"):
    return token_user(slapd, prefix, token_on_user=token_on_user)


# --------------------------------------------------------------------------- direct protocol

def test_accepts_password_plus_code_and_execs_reply(slapd, config):
    uid, pw, secret = user_with_token(slapd)
    wait_for_step_safe()
    proc = run_checkpassword(config, uid, pw + code_at(secret))
    assert proc.returncode == 0, proc.stderr
    assert f"USER={uid}" in proc.stdout.splitlines()
    assert f"mailmfa result=ok user={uid} rip=192.0.2.7 service=imap reason=ok" in proc.stderr
    state = slapd.token_state(uid)
    assert int(state.first("oathTOTPLastTimeStep")) == int(time.time() // 30)
    assert state.first("oathLastLogin")


def test_token_in_separate_entry(slapd, config):
    uid, pw, secret = user_with_token(slapd, token_on_user=False)
    wait_for_step_safe()
    assert run_checkpassword(config, uid, pw + code_at(secret)).returncode == 0
    assert slapd.token_state(uid, token_on_user=False).first("oathTOTPLastTimeStep")


@pytest.mark.parametrize("case", ["bad_code", "bad_password", "replay", "old_code", "no_code"])
def test_refusals_exit_1_with_reason(slapd, config, case):
    uid, pw, secret = user_with_token(slapd)
    wait_for_step_safe()
    now = time.time()
    if case == "bad_code":
        good = code_at(secret)
        attempt = pw + ("000000" if good != "000000" else "111111")
    elif case == "bad_password":
        attempt = "wrong" + code_at(secret)
    elif case == "replay":
        assert run_checkpassword(config, uid, pw + code_at(secret)).returncode == 0
        attempt = pw + code_at(secret)
    elif case == "old_code":
        attempt = pw + code_at(secret, now - 90)
        if attempt[-6:] in {code_at(secret, now + d) for d in (-30, 0, 30)}:
            pytest.skip("code collision")
    else:
        attempt = pw
    proc = run_checkpassword(config, uid, attempt)
    assert proc.returncode == 1, proc.stderr
    expected = {"old_code": "bad_code", "no_code": "bad_code"}.get(case, case)
    assert f"reason={expected}" in proc.stderr
    assert "USER=" not in proc.stdout
    # never the password, the code or the whole string in the log
    assert pw not in proc.stderr and attempt[-6:] not in proc.stderr


def test_both_factors_evaluated_password_wrong_reported_first(slapd, config):
    uid, pw, secret = user_with_token(slapd)
    proc = run_checkpassword(config, uid, "nope000000")
    assert proc.returncode == 1 and "reason=bad_password" in proc.stderr


def test_empty_password_part_is_never_a_bind(slapd, config):
    uid, pw, secret = user_with_token(slapd)
    wait_for_step_safe()
    proc = run_checkpassword(config, uid, code_at(secret))
    assert proc.returncode == 1 and "reason=bad_password" in proc.stderr
    assert not slapd.token_state(uid).first("oathTOTPLastTimeStep")


@pytest.mark.parametrize("n,password,variant", [
    (1, "Shalom-\u05e9\u05dc\u05d5\u05dd", None),  # mixed direction: SASLprep raises
    (2, "tab\there", "tab here"),                 # a control character: SASLprep raises
    (3, "softhyphen", "soft\u00adhyphen"),        # SASLprep maps U+00AD to nothing
])
def test_password_reaches_the_directory_as_typed(slapd, config, n, password, variant):
    """slapd compares a simple bind's password byte for byte; the ldap3 path must not
    SASLprep it (a right password failing as ldap_unavailable, a changed one matching)."""
    uid = f"typed{n}"
    secret = new_secret()
    slapd.add_user(uid, password, secret)
    now = wait_for_step_safe()
    proc = run_checkpassword(config, uid, password + code_at(secret, now))
    assert proc.returncode == 0 and "reason=ok " in proc.stderr, proc.stderr
    if variant is not None:
        proc = run_checkpassword(config, uid, variant + code_at(secret, now + 30))
        assert proc.returncode == 1 and "reason=bad_password" in proc.stderr, proc.stderr
    proc = run_checkpassword(config, uid, "x\x01" + code_at(secret, now + 30))
    assert proc.returncode == 1 and "reason=bad_password" in proc.stderr, proc.stderr


def test_unknown_user(config):
    proc = run_checkpassword(config, "nobody-here", "pw123456")
    assert proc.returncode == 1 and "reason=unknown_user" in proc.stderr


def test_no_token_password_alone_unless_required(slapd, config, strict_config):
    uid = f"plain{next(_n)}"
    slapd.add_user(uid, "plainpw")
    assert run_checkpassword(config, uid, "plainpw").returncode == 0
    assert run_checkpassword(config, uid, "wrong").returncode == 1
    proc = run_checkpassword(strict_config, uid, "plainpw")
    assert proc.returncode == 1 and "reason=no_token" in proc.stderr


@pytest.mark.parametrize("name", ["*", "u*", ")(uid=*", "*)(objectClass=*", "\\", "\\2a", "(", "x)(|(uid=*"])
def test_filter_metacharacters_never_match_another_entry(slapd, config, name):
    # a real user exists whose password the attacker uses with a wildcard name
    uid, pw, secret = user_with_token(slapd, prefix="meta")
    proc = run_checkpassword(config, name, pw + code_at(secret))
    assert proc.returncode == 1
    assert "reason=unknown_user" in proc.stderr


def test_username_with_metacharacters_matches_only_itself(slapd, config):
    evil = "ev*l)(uid=\\"
    secret = new_secret()
    slapd.add_user(evil, "evilpw", secret)
    slapd.add_user("evxl", "evilpw", new_secret())
    wait_for_step_safe()
    proc = run_checkpassword(config, evil, "evilpw" + code_at(secret))
    assert proc.returncode == 0, proc.stderr
    assert int(slapd.token_state(evil).first("oathTOTPLastTimeStep")) == int(time.time() // 30)


@pytest.mark.parametrize(
    "raw",
    [b"", b"alice", b"alice\0pw", b"\xff\xfe\0pw123456\0\0", b"a" * 5000 + b"\0pw\0\0", b"\0\0\0"],
)
def test_malformed_input_is_refused(config, raw):
    proc = run_checkpassword(config, "", "", raw=raw)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr


def test_userdb_lookup(slapd, config):
    uid, pw, secret = user_with_token(slapd)
    proc = run_checkpassword(config, uid, "", env={"AUTHORIZED": "1"})
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert f"USER={uid}" in out and "AUTHORIZED=2" in out
    proc = run_checkpassword(config, "ghost", "", env={"AUTHORIZED": "1"})
    assert proc.returncode == 3
    # a credentials lookup (non-plaintext mechanisms) is never answered "exists"
    proc = run_checkpassword(config, uid, "", env={"AUTHORIZED": "1", "CREDENTIALS_LOOKUP": "1"})
    assert proc.returncode == 1 and "reason=no_plaintext" in proc.stderr and "USER=" not in proc.stdout


def test_config_errors_are_temporary(workdir, slapd):
    bad = workdir / "bad.toml"
    bad.write_text("[ldap]\nuser_base = 'x'\ntimeuot = 3\n")
    proc = run_checkpassword(bad, "alice", "pw123456")
    assert proc.returncode == 111
    assert "reason=config_error" in proc.stderr and "timeuot" in proc.stderr
    missing = run_checkpassword(workdir / "nope.toml", "alice", "pw123456")
    assert missing.returncode == 111 and "reason=config_error" in missing.stderr


def test_service_bind_failure_is_temporary(workdir, slapd):
    cfg = write_config(workdir, slapd, "badbind.toml")
    (workdir / "badbind.toml.ldap.secret").write_text("wrong\n")
    uid, pw, secret = user_with_token(slapd)
    proc = run_checkpassword(cfg, uid, pw + code_at(secret))
    assert proc.returncode == 111 and "reason=service_bind_failed" in proc.stderr


def test_unreachable_directory_is_temporary_and_bounded(workdir, slapd):
    from servers import free_port

    cfg = write_config(workdir, slapd, "down.toml", uris=[f"ldap://127.0.0.1:{free_port()}"])
    started = time.monotonic()
    proc = run_checkpassword(cfg, "alice", "pw123456")
    assert proc.returncode == 111 and "reason=ldap_unavailable" in proc.stderr
    assert time.monotonic() - started < 10


def test_second_uri_serves_when_first_is_down(workdir, slapd):
    from servers import free_port

    cfg = write_config(workdir, slapd, "failover.toml",
                       uris=[f"ldap://127.0.0.1:{free_port()}", slapd.uri])
    uid, pw, secret = user_with_token(slapd)
    wait_for_step_safe()
    assert run_checkpassword(cfg, uid, pw + code_at(secret)).returncode == 0


def test_twenty_parallel_logins_same_code_exactly_one_accepted(slapd, config):
    """slapd is held (SIGSTOP) until all 20 processes wait on it, then released together,
    so the compare-and-swap step update really races (DESIGN.md: 2 cores rarely overlap)."""
    uid, pw, secret = user_with_token(slapd)
    wait_for_step_safe(margin=8)
    attempt = (uid.encode() + b"\0" + (pw + code_at(secret)).encode() + b"\0\0")
    procs = []
    slapd.pause()
    try:
        for _ in range(20):
            r, w = os.pipe()
            os.write(w, attempt)
            os.close(w)
            procs.append(subprocess.Popen(
                fd3_argv(r, [checkpassword_bin(), "--config", str(config), "/usr/bin/env"]),
                pass_fds=(r,), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                env={"SERVICE": "imap", "TCPREMOTEIP": "192.0.2.9"}))
            os.close(r)
        time.sleep(1.0)
    finally:
        slapd.resume()
    results = [(p.wait(timeout=60), p.communicate()[1]) for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes.count(0) == 1, results
    assert codes.count(1) == 19, results
    assert sum("reason=replay" in err for _, err in results) == 19


# --------------------------------------------------------------------------- through Dovecot

@needs_checkpassword
def test_imap_login_and_select(dovecot, slapd):
    uid, pw, secret = user_with_token(slapd)
    wait_for_step_safe()
    res = dovecot.imap_login(uid, pw + code_at(secret))
    assert res.ok and res.selected, res.text
    log = dovecot.log_text()
    assert f"user={uid}" in log and "result=ok" in log
    assert pw not in log


@needs_checkpassword
def test_pop3_login(dovecot, slapd):
    uid, pw, secret = user_with_token(slapd)
    wait_for_step_safe()
    assert dovecot.pop3_login(uid, pw + code_at(secret)).ok


@needs_checkpassword
def test_imap_refusals(dovecot, slapd, dovecot_factory, strict_config, workdir):
    uid, pw, secret = user_with_token(slapd)
    wait_for_step_safe(margin=6)
    code = code_at(secret)
    wrong = "000000" if code != "000000" else "111111"
    old = code_at(secret, time.time() - 90)
    cases = {
        "wrong code": (uid, pw + wrong, "127.0.0.2"),
        "wrong password": (uid, "x" + pw + code, "127.0.0.3"),
        "three steps old": (uid, pw + old, "127.0.0.4"),
        "unknown user": ("ghost", pw + code, "127.0.0.5"),
        "wildcard user": ("*", pw + code, "127.0.0.6"),
    }
    for what, (user, password, ip) in cases.items():
        res = dovecot.imap_login(user, password, source_ip=ip)
        assert not res.ok and not res.tempfail, (what, res.text)
    # the right one works, then the same code replayed (from another client) is refused
    assert dovecot.imap_login(uid, pw + code, source_ip="127.0.0.7").ok
    res = dovecot.imap_login(uid, pw + code, source_ip="127.0.0.8")
    assert not res.ok and not res.tempfail
    assert "reason=replay" in dovecot.log_text()

    plain = f"plain{next(_n)}"
    slapd.add_user(plain, "plainpw")
    strict = dovecot_factory(f"driver = checkpassword\nargs = {checkpassword_bin()} --config {strict_config}",
                             workdir=workdir / "dovecot-strict")
    res = strict.imap_login(plain, "plainpw", source_ip="127.0.0.9")
    assert not res.ok and not res.tempfail
    assert "reason=no_token" in strict.log_text()


@needs_checkpassword
def test_imap_with_slapd_stopped_is_unavailable(dovecot_factory, slapd_factory, workdir_factory):
    server = slapd_factory()
    wd = workdir_factory()
    cfg = write_config(wd, server)
    dc = dovecot_factory(f"driver = checkpassword\nargs = {checkpassword_bin()} --config {cfg}", workdir=wd / "dc")
    secret = new_secret()
    server.add_user("stopme", "pw", secret)
    server.stop()
    res = dc.imap_login("stopme", "pw" + code_at(secret), source_ip="127.0.0.10")
    assert not res.ok and res.tempfail, res.text
    server.start()
    server.pause()
    try:
        res = dc.imap_login("stopme", "pw" + code_at(secret), source_ip="127.0.0.11", timeout=30)
        assert not res.ok and res.tempfail, res.text
    finally:
        server.resume()
    assert "reason=ldap_unavailable" in dc.log_text()


# --------------------------------------------------------------------------- otp overlay interop

def test_interop_with_slapd_otp_overlay(slapd_factory, workdir_factory):
    """One entry, two checkers: slapd's otp overlay (a plain LDAP bind with password+code)
    and mailmfa share oathTOTPLastTimeStep, so a code used through one is refused by the other."""
    if not os.path.exists("/usr/lib/ldap/otp.so"):
        pytest.skip("this slapd package ships no otp module")
    server = slapd_factory(with_otp_overlay=True)
    wd = workdir_factory()
    cfg = write_config(wd, server, extra_ldap="otp_overlay = true")
    secret = new_secret()
    dn = server.add_user("both", "pw", secret)
    wait_for_step_safe(margin=5)
    now = time.time()
    code_now, code_next = code_at(secret, now), code_at(secret, now + 30)
    if code_now == code_next:
        pytest.skip("code collision")
    # mailmfa accepts the current code; the overlay then refuses that same code
    assert run_checkpassword(cfg, "both", "pw" + code_now).returncode == 0
    assert not server.bind(dn, "pw" + code_now)
    # the overlay accepts the next code (within its window); mailmfa then refuses it
    assert server.bind(dn, "pw" + code_next)
    proc = run_checkpassword(cfg, "both", "pw" + code_next)
    assert proc.returncode == 1 and "reason=replay" in proc.stderr
    # the password alone is refused by both
    assert not server.bind(dn, "pw")
    assert run_checkpassword(cfg, "both", "pw").returncode == 1


# --------------------------------------------------------------------------- as Dovecot deploys it

def test_shim_runs_as_dovecot_user_without_path_or_home(slapd, config):
    """checkpassword/mailmfa-checkpassword under /usr/bin/python3 -IS, as the `dovecot` user,
    with an environment holding nothing but what Dovecot sets."""
    import pwd

    from mfa import SHIM
    from servers import check_traversable

    try:
        check_traversable(SHIM.parent)
    except Exception as exc:  # noqa: BLE001 - a checkout under e.g. /root cannot be reached
        pytest.skip(f"source checkout not reachable by the dovecot user: {exc}")
    pwd.getpwnam("dovecot")
    uid, pw, secret = user_with_token(slapd)
    wait_for_step_safe()
    r, w = os.pipe()
    os.write(w, f"{uid}\0{pw}{code_at(secret)}\0\0".encode())
    os.close(w)
    proc = subprocess.run(fd3_argv(r, [str(SHIM), "--config", str(config), "/usr/bin/env"]),
                          pass_fds=(r,), capture_output=True, text=True, user="dovecot", group="dovecot",
                          env={"SERVICE": "imap", "TCPREMOTEIP": "192.0.2.7"}, timeout=30)
    os.close(r)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert f"USER={uid}" in out
    assert not any(line.startswith(("PATH=", "HOME=")) for line in out)


def test_shim_writes_no_bytecode(workdir, config):
    """Run as root under Dovecot's umask 0077 (pam_exec in the auth worker), a shim that wrote
    .pyc files would leave them 0600: every later run as `dovecot` would recompile (-B)."""
    from pamface import pam_shim

    shim = pam_shim(workdir / "nobytecode").with_name("mailmfa-checkpassword")
    package = shim.parent.parent / "mailmfa"
    r, w = os.pipe()
    os.write(w, b"someone\0pw123456\0\0")
    os.close(w)
    proc = subprocess.run(fd3_argv(r, [str(shim), "--socket", str(workdir / "no.sock"), "--config", str(config),
                                       "/bin/true"]),
                          pass_fds=(r,), capture_output=True, text=True, env={}, timeout=60,
                          preexec_fn=lambda: os.umask(0o077))
    os.close(r)
    assert proc.returncode in (1, 111) and "mailmfa result=" in proc.stderr, proc.stderr
    assert not list(package.rglob("*.pyc")), "the shim wrote bytecode"


def test_shim_without_the_package_is_a_temporary_failure(workdir):
    """A shim copied where no mailmfa package is reachable (not beside it, not in the system
    interpreter's site directories) answers 111, never Python's exit 1 (a wrong password)."""
    from mfa import SHIM

    probe = subprocess.run(["/usr/bin/python3", "-I", "-c", "import mailmfa"], capture_output=True)
    if probe.returncode == 0:
        pytest.skip("mailmfa is installed for /usr/bin/python3: the copied shim would find it")
    lonely = workdir / "lonely" / "bin"
    lonely.mkdir(parents=True)
    shutil.copy(SHIM, lonely / "mailmfa-checkpassword")
    r, w = os.pipe()
    os.write(w, b"someone\0pw123456\0\0")
    os.close(w)
    proc = subprocess.run(fd3_argv(r, [str(lonely / "mailmfa-checkpassword"), "/bin/true"]), pass_fds=(r,),
                          capture_output=True, text=True, env={}, timeout=30)
    os.close(r)
    assert proc.returncode == 111, proc.stderr
    assert "reason=not_installed" in proc.stderr and "Traceback" not in proc.stderr


@needs_checkpassword
def test_checkpassword_as_userdb_too(dovecot_factory, slapd, config, workdir):
    """The shipped snippet's shape: checkpassword as passdb and userdb (override_fields)."""
    wd = workdir / "dovecot-userdb"
    wd.mkdir()
    home = wd / "homes"
    home.mkdir()
    os.chown(home, *__import__("pwd").getpwnam("dovecot")[2:4])
    exe = checkpassword_bin()
    dc = dovecot_factory(
        f"driver = checkpassword\nargs = {exe} --config {config}",
        userdb=f"driver = checkpassword\nargs = {exe} --config {config}\n"
               f"override_fields = uid=dovecot gid=dovecot home={home}/%u",
        workdir=wd)
    uid, pw, secret = user_with_token(slapd)
    wait_for_step_safe()
    res = dc.imap_login(uid, pw + code_at(secret), source_ip="127.0.0.12")
    assert res.ok and res.selected, res.text
    assert f"result=ok user={uid} rip=127.0.0.12 service=imap reason=userdb_lookup" in dc.log_text()
