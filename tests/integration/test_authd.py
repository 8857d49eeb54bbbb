"""mailmfa-authd on real servers: the daemon itself, Dovecot's Lua passdb asking it, and
mailmfa-checkpassword's client mode -- all against a real slapd and a real Dovecot."""

from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
import threading
import time

import pytest

from authd import Authd, ask, authd_bin, daemon_toml, lua_passdb, race, read_answer
from mailmfa import client
from mailmfa.daemon import protocol
from mfa import checkpassword_bin, code_at, run_checkpassword, token_user, write_config
from servers import Dovecot, poll_until, wait_for_step_safe

HAS_CHECKPASSWORD = Dovecot.has_checkpassword()


@pytest.fixture(scope="module")
def workdir(workdir_factory):
    return workdir_factory()


@pytest.fixture(scope="module")
def sock(workdir):
    return workdir / "authd.sock"


@pytest.fixture(scope="module")
def config(workdir, slapd, sock):
    return write_config(workdir, slapd, tail=daemon_toml(sock, fallback=False, read_timeout=1.0))


@pytest.fixture(scope="module")
def authd(workdir, config, sock):
    with Authd(workdir / "authd", config, sock) as server:
        yield server


@pytest.fixture(scope="module")
def lua_dovecot(dovecot_factory, workdir, sock, authd):
    passdb, extra = lua_passdb(sock)
    return dovecot_factory(passdb, extra=extra, workdir=workdir / "dc-lua")


@pytest.fixture(scope="module")
def cp_dovecot(dovecot_factory, workdir, config, authd):
    if not HAS_CHECKPASSWORD:
        pytest.skip("no checkpassword driver in this Dovecot (2.4)")
    return dovecot_factory(f"driver = checkpassword\nargs = {checkpassword_bin()} --config {config}",
                           workdir=workdir / "dc-cp")


_n = iter(range(1, 100_000))


def new_user(slapd, prefix="d"):
    return token_user(slapd, prefix)


def wrong(code: str) -> str:
    return "000000" if code != "000000" else "111111"


# --------------------------------------------------------------------------- the daemon itself

def test_socket_is_0660_group_dovecot(authd, sock):
    import grp

    st = os.stat(sock)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660
    assert st.st_gid == grp.getgrnam("dovecot").gr_gid


def test_auth_lookup_and_replay_over_the_socket(authd, sock, slapd):
    uid, pw, secret = new_user(slapd)
    wait_for_step_safe()
    code = code_at(secret)
    assert ask(sock, protocol.auth_request(uid, pw + code, "imap", "192.0.2.1")) == b"OK ok\n"
    assert ask(sock, protocol.auth_request(uid, pw + code, "imap", "192.0.2.1")) == b"FAIL replay\n"
    assert ask(sock, protocol.auth_request(uid, pw + wrong(code))) == b"FAIL bad_code\n"
    assert ask(sock, protocol.auth_request(uid, "x" + pw + code)) == b"FAIL bad_password\n"
    assert ask(sock, protocol.auth_request("*", pw + code)) == b"FAIL unknown_user\n"
    assert ask(sock, protocol.lookup_request(uid)) == b"OK userdb_lookup\n"
    assert ask(sock, protocol.lookup_request("ghost")) == b"FAIL unknown_user\n"
    assert int(slapd.token_state(uid).first("oathTOTPLastTimeStep")) == int(time.time() // 30)
    log = authd.log_text()
    assert f"result=ok user={uid} rip=192.0.2.1 service=imap reason=ok via=authd" in log
    assert pw not in log and code not in log


def test_several_requests_on_one_connection(authd, sock, slapd):
    uid = new_user(slapd)[0]
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(sock))
        s.sendall(b"MFA1 PING\n" + protocol.lookup_request(uid) + protocol.lookup_request("ghost"))
        buf = b""
        while buf.count(b"\n") < 3:
            buf += s.recv(256)
    assert buf == b"OK pong\nOK userdb_lookup\nFAIL unknown_user\n"


def test_64_concurrent_clients_all_answered_correctly(authd, sock, slapd):
    users = slapd.add_many_users(64, prefix=f"conc{next(_n)}-", password=lambda u: "pw-" + u)
    wait_for_step_safe(margin=8)
    now = time.time()
    expected, lines = {}, {}
    for i, (uid, secret) in enumerate(sorted(users.items())):
        code = code_at(secret, now)
        good = i % 2 == 0
        lines[uid] = protocol.auth_request(uid, f"pw-{uid}" + (code if good else wrong(code)))
        expected[uid] = b"OK ok\n" if good else b"FAIL bad_code\n"
    answers: dict[str, bytes] = {}
    barrier = threading.Barrier(64)

    def client(uid: str) -> None:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(30)
            s.connect(str(sock))
            barrier.wait()
            s.sendall(lines[uid])
            answers[uid] = read_answer(s)

    threads = [threading.Thread(target=client, args=(u,)) for u in lines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert answers == expected


def test_same_code_sixteen_times_at_once_exactly_one_accepted(authd, sock, slapd):
    uid, pw, secret = new_user(slapd)
    wait_for_step_safe(margin=8)
    line = protocol.auth_request(uid, pw + code_at(secret))
    answers = race(slapd, sock, line, 16)
    assert answers == [b"FAIL replay\n"] * 15 + [b"OK ok\n"]


def test_garbage_and_stalling_clients_do_not_block_others(authd, sock, slapd):
    uid, pw, secret = new_user(slapd)
    stallers = []
    for i in range(12):  # more than the LDAP pool (4) and than any worker count
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(10)
        s.connect(str(sock))
        if i % 2:
            s.sendall(b"MFA1 AUTH " + uid.encode())  # half a request, then nothing
        stallers.append(s)
    try:
        assert ask(sock, b"\x00\xffgarbage\n") == b"TEMPFAIL bad_request\n"
        assert ask(sock, b"MFA2 AUTH a b c d\n") == b"TEMPFAIL bad_request\n"
        assert ask(sock, b"MFA1 AUTH a%zz b c d\n") == b"TEMPFAIL bad_request\n"
        assert ask(sock, b"A" * (protocol.MAX_LINE + 100)) == b"TEMPFAIL bad_request\n"
        assert ask(sock, b"MFA1 AUTH %E9t%E9 pw123456 imap 1.2.3.4\n") == b"FAIL bad_input\n"  # Latin-1
        wait_for_step_safe()
        started = time.monotonic()
        assert ask(sock, protocol.auth_request(uid, pw + code_at(secret))) == b"OK ok\n"
        assert time.monotonic() - started < 1.0
        # the stalled connections are dropped after read_timeout (1 s here), unanswered
        time.sleep(1.3)
        for s in stallers:
            assert s.recv(64) == b""
    finally:
        for s in stallers:
            s.close()


def test_connections_over_the_limit_are_told_busy(workdir_factory, slapd):
    wd = workdir_factory()
    s = wd / "busy.sock"
    server = Authd(wd / "authd", write_config(wd, slapd, tail=daemon_toml(s, max_connections=2, read_timeout=5.0)), s)
    server.start()
    held: list[socket.socket] = []

    def hold() -> bool:
        """One more connection the daemon serves (answers a PING on it and keeps it). Until
        start()'s own probe connection is closed on the daemon's side it still counts, so
        the daemon may turn a new one away: then try again."""
        c = socket.socket(socket.AF_UNIX)
        c.settimeout(5)
        c.connect(str(s))
        try:
            c.sendall(b"MFA1 PING\n")
            served = read_answer(c) == b"OK pong\n"
        except (BrokenPipeError, ConnectionResetError):  # turned away before it read the request
            served = False
        if served:
            held.append(c)
        else:
            c.close()
        return served

    try:
        for n in (1, 2):
            poll_until(hold, 5, f"held connection {n}")
        # the third is answered at once: the per-login client and the test helper both read
        # that answer even when their request meets the closed connection
        assert client.exchange(str(s), b"MFA1 PING\n", 10) == ("TEMPFAIL", "busy")
        assert ask(s, b"MFA1 PING\n") == b"TEMPFAIL busy\n"
        held.pop().close()
        poll_until(lambda: ask(s, b"MFA1 PING\n") == b"OK pong\n", 5, "a free connection slot")
    finally:
        for c in held:
            c.close()
        server.stop()


def _start_in_background(wd, slapd):  # noqa: ANN001, ANN202
    """mailmfa-authd as an init script starts it (forks, --pid-file): (socket, pid file,
    config, the finished starter process)."""
    s, pid_file = wd / "bg.sock", wd / "authd.pid"
    cfg = write_config(wd, slapd, tail=daemon_toml(s))
    proc = subprocess.run([authd_bin(), "--config", str(cfg), "--pid-file", str(pid_file)],
                          capture_output=True, text=True, timeout=30, check=False)
    return s, pid_file, cfg, proc


def test_background_mode_forks_writes_pid_and_stops_on_sigterm(workdir_factory, slapd):
    import signal

    s, pid_file, cfg, proc = _start_in_background(workdir_factory(), slapd)
    assert proc.returncode == 0, proc.stderr  # the parent returns once the socket listens
    pid = int(pid_file.read_text())  # ... and once the pid file is complete: no waiting
    try:
        assert ask(s, b"MFA1 PING\n") == b"OK pong\n"
        check = subprocess.run([authd_bin(), "--config", str(cfg), "--check"], capture_output=True,
                               text=True, timeout=30, check=False)
        assert check.returncode == 0 and f"{cfg}: ok (ldap_client=" in check.stdout, check
    finally:
        os.kill(pid, signal.SIGTERM)
    poll_until(lambda: not s.exists() and not pid_file.exists(), 10, "socket and pid file removed")


def test_unreadable_secret_file_is_a_config_error_at_start(workdir_factory, slapd):
    """--check and the start read [ldap] bind_password_file: a secret the daemon cannot read
    is exit 1 naming the file now, not a temporary failure at every login later."""
    wd = workdir_factory()
    cfg = write_config(wd, slapd, tail=daemon_toml(wd / "s.sock"))
    text = cfg.read_text()
    assert "bind_password_file" in text
    cfg.write_text(re.sub(r'(?m)^bind_password_file = .*$', f'bind_password_file = "{wd}/missing.secret"', text))
    for extra in (["--check"], ["--foreground"]):
        proc = subprocess.run([authd_bin(), "--config", str(cfg), *extra], capture_output=True, text=True,
                              timeout=30, check=False)
        assert proc.returncode == 1, proc
        assert f"bind_password_file: cannot read {wd}/missing.secret" in proc.stderr, proc.stderr


def test_background_start_without_syslog_says_so(workdir_factory, slapd):
    """Forked, the daemon logs to syslog; with no /dev/log those lines would vanish unnoticed.
    Also: a SIGTERM at once after the start (before the LDAP warm-up is done) still stops it
    cleanly -- main() holds the signals until the handlers are in place (it used to die by
    default action, leaving its socket and pid file, or, a moment later, to swallow the signal
    in a handler with no wakeup pipe yet and ignore SIGTERM from then on)."""
    import signal

    if os.path.exists("/dev/log"):
        pytest.skip("a syslog socket exists here")
    s, pid_file, _, proc = _start_in_background(workdir_factory(), slapd)
    try:
        assert proc.returncode == 0 and "no /dev/log" in proc.stderr and "--foreground" in proc.stderr, proc
    finally:
        os.kill(int(pid_file.read_text()), signal.SIGTERM)
    poll_until(lambda: not s.exists() and not pid_file.exists(), 10, "socket and pid file removed")


def test_second_daemon_on_the_same_socket_refuses_to_start(authd, config, sock):
    proc = subprocess.run([authd_bin(), "--foreground", "--config", str(config)],
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 3, proc.stderr
    assert "another mailmfa-authd" in proc.stderr
    assert ask(sock, b"MFA1 PING\n") == b"OK pong\n"


def test_warm_connection_survives_slapd_restart_and_outage_is_temporary(authd, sock, slapd):
    uid, pw, secret = new_user(slapd)
    assert ask(sock, protocol.lookup_request(uid)) == b"OK userdb_lookup\n"
    slapd.restart()  # every pooled LDAP connection is now dead
    assert ask(sock, protocol.lookup_request(uid)) == b"OK userdb_lookup\n"
    slapd.stop()
    try:
        started = time.monotonic()
        assert ask(sock, protocol.auth_request(uid, pw + "123456"), 30) == b"TEMPFAIL ldap_unavailable\n"
        assert time.monotonic() - started < 10
    finally:
        slapd.start()
    wait_for_step_safe()
    assert ask(sock, protocol.auth_request(uid, pw + code_at(secret))) == b"OK ok\n"


def test_reuse_window_is_kept_in_memory_and_survives_reload(workdir_factory, slapd):
    """[policy] reuse_seconds through the daemon: the same password+code from the same client
    within the window is accepted again (a mail client's parallel connections), from another
    address it is a replay; the daemon keeps the entries in memory, never in state_file."""
    wd = workdir_factory()
    s = wd / "reuse.sock"
    state_file = wd / "never.db"
    cfg = write_config(wd, slapd, reuse_seconds=60, state_file=state_file, tail=daemon_toml(s))
    server = Authd(wd / "authd", cfg, s)
    server.start()
    try:
        uid, pw, secret = new_user(slapd, "reuse")
        wait_for_step_safe()
        line = protocol.auth_request(uid, pw + code_at(secret), "imap", "192.0.2.10")
        assert ask(s, line) == b"OK ok\n"
        assert ask(s, line) == b"OK reused\n"
        assert ask(s, protocol.auth_request(uid, pw + code_at(secret), "imap", "192.0.2.11")) == b"FAIL replay\n"
        server.hup()
        poll_until(lambda: "event=reload result=ok" in server.log_text(), 5, "reload")
        assert ask(s, line) == b"OK reused\n"
        assert not state_file.exists()
        assert "state_unavailable" not in server.log_text()
    finally:
        server.stop()


def test_reload_on_sighup_keeps_old_config_when_new_is_bad_and_sigterm_cleans_up(
        workdir_factory, slapd):
    wd = workdir_factory()
    s = wd / "reload.sock"
    cfg = write_config(wd, slapd, tail=daemon_toml(s))
    server = Authd(wd / "authd", cfg, s)
    server.start()
    try:
        plain = f"plain{next(_n)}"
        slapd.add_user(plain, "plainpw")
        assert ask(s, protocol.auth_request(plain, "plainpw")) == b"OK ok_no_token\n"
        write_config(wd, slapd, require_mfa=True, tail=daemon_toml(s))
        server.hup()
        poll_until(lambda: "event=reload result=ok" in server.log_text(), 5, "reload")
        assert ask(s, protocol.auth_request(plain, "plainpw")) == b"FAIL no_token\n"
        cfg.write_text(cfg.read_text() + "\n[daemon]\nbogus = 1\n")
        server.hup()
        poll_until(lambda: "event=reload result=error" in server.log_text(), 5, "failed reload")
        assert "kept=old_config" in server.log_text()
        assert ask(s, protocol.auth_request(plain, "plainpw")) == b"FAIL no_token\n"
        server._proc.terminate()
        assert server._proc.wait(10) == 0
        assert not s.exists()
        assert "event=stop" in server.log_text()
    finally:
        server.stop()


# --------------------------------------------------------------------------- Dovecot Lua passdb

def test_lua_passdb_imap_login(lua_dovecot, authd, slapd):
    uid, pw, secret = new_user(slapd, "lua")
    wait_for_step_safe()
    code = code_at(secret)
    res = lua_dovecot.imap_login(uid, pw + code, source_ip="127.0.0.21")
    assert res.ok and res.selected, res.text
    for what, attempt, ip in [("replay", pw + code, "127.0.0.22"), ("wrong code", pw + wrong(code), "127.0.0.23"),
                              ("wrong password", "x" + pw + code, "127.0.0.24")]:
        res = lua_dovecot.imap_login(uid, attempt, source_ip=ip)
        assert not res.ok and not res.tempfail, (what, res.text)
    res = lua_dovecot.pop3_login(uid, "nope", source_ip="127.0.0.25")
    assert not res.ok and not res.tempfail, res.text
    log = lua_dovecot.log_text()
    # failures are named in Dovecot's log; every login, success included, in the daemon's
    assert "db-lua: mailmfa result=fail reason=replay" in log
    assert "db-lua: mailmfa result=ok" not in log
    assert f"result=ok user={uid} rip=127.0.0.21 service=imap reason=ok via=authd" in authd.log_text()
    assert pw not in log and pw not in authd.log_text()
    # the script's return values are what this Dovecot expects (2.4.1 refuses a string after OK)
    assert "invalid return value" not in log, log[-3000:]


def test_lua_userdb_asks_the_daemon_who_exists(dovecot_factory, workdir, sock, authd, slapd):
    """mailmfa.lua as the userdb too (MFA1 LOOKUP): a directory user exists, with the mail
    fields the userdb block sets; a name nobody has does not (LMTP, doveadm); and an IMAP
    login with passdb and userdb both through mailmfa-authd works end to end."""
    passdb, extra = lua_passdb(sock)
    script = sock.parent / "mailmfa.lua"
    home = workdir / "dc-lua-userdb" / "home"
    if Dovecot.version() >= (2, 4):
        userdb = (f"driver = lua\nlua_file = {script}\nuse_worker = yes\nlua_settings {{\n"
                  f"  mailmfa_socket = {sock}\n}}\nfields {{\n  uid = dovecot\n  gid = dovecot\n"
                  f"  home = {home}/%{{user}}\n}}")
    else:
        userdb = (f"driver = lua\nargs = file={script} blocking=yes\n"
                  f"default_fields = uid=dovecot gid=dovecot home={home}/%u")
    dc = dovecot_factory(passdb, userdb=userdb, extra=extra, workdir=workdir / "dc-lua-userdb")
    uid, pw, secret = new_user(slapd, "luau")

    def user(name: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["doveadm", "-c", str(dc.config_path), "user", name], capture_output=True,
                              text=True, timeout=60, check=False)

    found = user(uid)
    assert found.returncode == 0 and f"{home}/{uid}" in found.stdout, found
    assert f"user={uid} " in authd.log_text() and "reason=userdb_lookup" in authd.log_text()
    ghost = user("nobody-here-" + uid)
    assert ghost.returncode != 0 and "exist" in (ghost.stdout + ghost.stderr), ghost
    wait_for_step_safe()
    res = dc.imap_login(uid, pw + code_at(secret), source_ip="127.0.0.26")
    assert res.ok and res.selected, res.text
    assert "invalid return value" not in dc.log_text(), dc.log_text()[-3000:]


def test_lua_keeps_its_connection_and_survives_the_idle_drop(lua_dovecot, authd, slapd):
    first = new_user(slapd, "luaidle")
    second = new_user(slapd, "luaidle")
    wait_for_step_safe(margin=6)
    assert lua_dovecot.imap_login(first[0], first[1] + code_at(first[2]), source_ip="127.0.0.26").ok
    time.sleep(1.5)  # the daemon drops connections idle for read_timeout (1 s here)
    res = lua_dovecot.imap_login(second[0], second[1] + code_at(second[2]), source_ip="127.0.0.27")
    assert res.ok, res.text
    assert "mailmfa-authd unreachable" not in lua_dovecot.log_text()


def test_lua_passdb_concurrent_imap_logins(lua_dovecot, slapd):
    users = slapd.add_many_users(24, prefix=f"luac{next(_n)}-", password=lambda u: "pw-" + u)
    wait_for_step_safe(margin=8)
    results: dict[str, bool] = {}
    barrier = threading.Barrier(len(users))

    def login(uid: str, secret: bytes) -> None:
        barrier.wait()
        results[uid] = lua_dovecot.imap_login(uid, "pw-" + uid + code_at(secret), timeout=30).ok

    threads = [threading.Thread(target=login, args=item) for item in users.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == dict.fromkeys(users, True)


# --------------------------------------------------------------------------- checkpassword client mode

def test_checkpassword_client_mode_imports_no_ldap_stack(authd, config, slapd):
    uid, pw, secret = new_user(slapd, "cp")
    wait_for_step_safe()
    proc = run_checkpassword(config, uid, pw + code_at(secret), env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert proc.returncode == 0, proc.stderr
    assert f"USER={uid}" in proc.stdout.splitlines()
    assert "via=authd" in proc.stderr
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "mailmfa.client" in imported  # the profile really ran
    assert not {"ldap3", "pyotp", "logging", "mailmfa.backends.ldap", "mailmfa.service"} & imported
    proc = run_checkpassword(config, uid, "", env={"AUTHORIZED": "1"})
    assert proc.returncode == 0 and "AUTHORIZED=2" in proc.stdout.splitlines()
    assert run_checkpassword(config, "ghost", "", env={"AUTHORIZED": "1"}).returncode == 3


def run_with_socket(sock, config, user, password, env=None):
    """run_checkpassword() with `--socket PATH` before the reply program (the fast path)."""
    r, w = os.pipe()
    os.write(w, user.encode() + b"\0" + password.encode() + b"\0\0")
    os.close(w)
    try:
        return subprocess.run(
            ["/bin/bash", "-c", f'exec "$0" "$@" 3<&{r} {r}<&-', checkpassword_bin(),
             "--socket", str(sock), "--config", str(config), "/usr/bin/env"],
            pass_fds=(r,), capture_output=True, text=True, timeout=30, check=False,
            env={"SERVICE": "imap", "TCPREMOTEIP": "192.0.2.7", **(env or {})})
    finally:
        os.close(r)


def test_checkpassword_socket_option_reads_no_config(authd, sock, workdir, slapd):
    uid, pw, secret = new_user(slapd, "fast")
    missing = workdir / "no-such-config.toml"  # never read while the daemon answers
    wait_for_step_safe()
    proc = run_with_socket(sock, missing, uid, pw + code_at(secret), env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert proc.returncode == 0, proc.stderr
    assert f"USER={uid}" in proc.stdout.splitlines() and "via=authd" in proc.stderr
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "mailmfa.client" in imported
    assert not {"mailmfa.config", "tomllib", "typing", "dataclasses", "ldap3", "mailmfa.core.types",
                "socket"} & imported
    proc = run_with_socket(sock, missing, uid, pw + code_at(secret))
    assert proc.returncode == 1 and "reason=replay" in proc.stderr
    proc = run_with_socket(sock, missing, uid, "", env={"AUTHORIZED": "1"})
    assert proc.returncode == 0 and "AUTHORIZED=2" in proc.stdout.splitlines()
    assert run_with_socket(sock, missing, "ghost", "", env={"AUTHORIZED": "1"}).returncode == 3
    # daemon unreachable: now the config is read, and its [daemon] fallback decides
    stale = workdir / "fast-stale.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(stale))
    proc = run_with_socket(stale, missing, uid, pw + "123456")
    assert proc.returncode == 111 and "reason=config_error" in proc.stderr
    no_fb = write_config(workdir, slapd, "fast-nofb.toml", tail=daemon_toml(stale, fallback=False))
    proc = run_with_socket(stale, no_fb, uid, pw + "123456")
    assert proc.returncode == 111 and "reason=daemon_unavailable" in proc.stderr
    fb = write_config(workdir, slapd, "fast-fb.toml", tail=daemon_toml(stale, fallback=True))
    proc = run_with_socket(stale, fb, uid, pw + "123456")
    assert proc.returncode == 1 and "reason=bad_code" in proc.stderr and "via=authd" not in proc.stderr


def test_checkpassword_client_mode_through_dovecot(cp_dovecot, slapd):
    uid, pw, secret = new_user(slapd, "cpd")
    wait_for_step_safe()
    code = code_at(secret)
    res = cp_dovecot.imap_login(uid, pw + code, source_ip="127.0.0.31")
    assert res.ok and res.selected, res.text
    res = cp_dovecot.imap_login(uid, pw + code, source_ip="127.0.0.32")
    assert not res.ok and not res.tempfail
    log = cp_dovecot.log_text()
    assert f"result=ok user={uid}" in log and "via=authd" in log


def test_unreachable_daemon_falls_back_only_when_configured(workdir, slapd):
    stale = workdir / "stale.sock"  # a socket file nobody listens on (a daemon that crashed)
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(stale))
    uid, pw, secret = new_user(slapd, "fb")
    no_fb = write_config(workdir, slapd, "nofb.toml", tail=daemon_toml(stale, fallback=False))
    proc = run_checkpassword(no_fb, uid, pw + "123456")
    assert proc.returncode == 111 and "reason=daemon_unavailable" in proc.stderr
    always = write_config(workdir, slapd, "always.toml",
                          tail=daemon_toml(workdir / "missing.sock", use="always", fallback=False))
    assert run_checkpassword(always, uid, pw + "123456").returncode == 111
    fb = write_config(workdir, slapd, "fb.toml", tail=daemon_toml(stale, fallback=True))
    never = write_config(workdir, slapd, "never.toml", tail=daemon_toml(stale, use="never", fallback=False))
    wait_for_step_safe()
    proc = run_checkpassword(fb, uid, pw + code_at(secret))
    assert proc.returncode == 0 and "via=authd" not in proc.stderr, proc.stderr
    proc = run_checkpassword(never, uid, pw + code_at(secret))
    assert proc.returncode == 1 and "reason=replay" in proc.stderr


# --------------------------------------------------------------------------- daemon down and back

def test_daemon_killed_is_temporary_and_restart_needs_no_dovecot_restart(authd, lua_dovecot, slapd, request):
    # the checkpassword client mode too where Dovecot still has that driver (2.3)
    cp_dovecot = request.getfixturevalue("cp_dovecot") if HAS_CHECKPASSWORD else None
    dovecots = [d for d in (lua_dovecot, cp_dovecot) if d is not None]
    pids = [d.pid for d in dovecots]
    uid, pw, secret = new_user(slapd, "kill")
    authd.kill()  # SIGKILL: the socket file stays behind, nobody answers
    try:
        res = lua_dovecot.imap_login(uid, pw + "123456", source_ip="127.0.0.41")
        assert not res.ok and res.tempfail, res.text
        if cp_dovecot is not None:
            res = cp_dovecot.imap_login(uid, pw + "123456", source_ip="127.0.0.42")
            assert not res.ok and res.tempfail, res.text
    finally:
        authd.start()
    wait_for_step_safe(margin=4)
    code_now = code_at(secret)
    assert lua_dovecot.imap_login(uid, pw + code_now, source_ip="127.0.0.43").ok
    if cp_dovecot is not None:
        uid2, pw2, secret2 = new_user(slapd, "kill")
        assert cp_dovecot.imap_login(uid2, pw2 + code_at(secret2), source_ip="127.0.0.44").ok
        assert "reason=daemon_unavailable" in cp_dovecot.log_text()
    assert [d.pid for d in dovecots] == pids
    assert "mailmfa-authd unreachable" in lua_dovecot.log_text()


def test_pam_entry_asks_the_daemon(authd, config, slapd):
    """mailmfa-pam (pam_exec's program) goes through the daemon when [daemon] use allows."""
    import sys
    from pathlib import Path

    exe = Path(sys.prefix) / "bin" / "mailmfa-pam"
    if not exe.exists():
        pytest.skip("mailmfa-pam is not installed in this venv (make venv)")
    uid, pw, secret = new_user(slapd)
    wait_for_step_safe()
    env = {"PAM_USER": uid, "PAM_TYPE": "auth", "PAM_SERVICE": "imap", "PAM_RHOST": "192.0.2.44"}
    ok = subprocess.run([str(exe), "--config", str(config)], input=(pw + code_at(secret)).encode(),
                        capture_output=True, env=env, timeout=30)
    assert ok.returncode == 0, ok.stderr
    assert b"via=authd" in ok.stderr and b"reason=ok" in ok.stderr
    again = subprocess.run([str(exe), "--config", str(config)], input=(pw + code_at(secret)).encode(),
                           capture_output=True, env=env, timeout=30)
    assert again.returncode == 1 and b"reason=replay" in again.stderr and b"via=authd" in again.stderr


def test_dovecot_auth_cache_never_replays_a_code(dovecot_factory, workdir, sock, config, authd, slapd, request):
    """Many LDAP setups turn Dovecot's auth cache on globally. A cached password+code must never
    let the same code in twice (Dovecot would answer from its cache without asking mailmfa),
    neither for an IMAP login nor for SMTP AUTH through Dovecot's auth socket, which carries no
    session ID (as Postfix sends it; doveadm auth test here). 2.3 caches passdb lua (under %u)
    and 2.4 passdb pam whenever auth_cache_size is set: their shipped snippets set
    auth_cache_size = 0 after the admin's own settings (the cache goes first here, as in
    dovecot.conf). checkpassword and 2.3's pam keep no cache key; 2.4's Lua passdb caches only
    for a script with auth_passdb_get_cache_key."""
    import syspam
    from pamface import exec_service_text, pam_24_globals, pam_bin, passdb_pam

    cache = "auth_cache_size = 1M\nauth_cache_ttl = 1 hour\nauth_cache_negative_ttl = 1 hour\n"
    passdb, extra = lua_passdb(sock)
    dovecots = {"lua": dovecot_factory(passdb, extra=cache + extra, workdir=workdir / "dc-lua-cache")}
    if HAS_CHECKPASSWORD:
        dovecots["checkpassword"] = dovecot_factory(
            f"driver = checkpassword\nargs = {checkpassword_bin()} --config {config}", extra=cache,
            workdir=workdir / "dc-cp-cache")
    if pam_bin() is not None:
        service = syspam.add_pam_service(exec_service_text(config, workdir / "cache-pam.log", pam_bin()))
        request.addfinalizer(lambda: syspam.remove_pam_service(service))
        # 2.4's shipped snippet turns the cache off (its passdb pam would cache); 2.3's needs not
        globals_ = pam_24_globals() if not HAS_CHECKPASSWORD else ""
        dovecots["pam"] = dovecot_factory(passdb_pam(service), extra=cache + globals_, workdir=workdir / "dc-pam-cache")
    for name, dc in dovecots.items():
        uid, pw, secret = new_user(slapd, "cache")
        wait_for_step_safe()
        code = code_at(secret)
        assert dc.imap_login(uid, pw + code, source_ip="127.0.0.31").ok, name
        again = dc.imap_login(uid, pw + code, source_ip="127.0.0.32")  # strict config: a replay
        assert not again.ok, f"{name}: Dovecot's auth cache accepted a used code: {again.text}"
        # Postfix's SMTP AUTH through Dovecot's auth socket sends no session ID: the same again
        uid, pw, secret = new_user(slapd, "cache")
        wait_for_step_safe()
        code = code_at(secret)
        assert dc.doveadm_auth_test(uid, pw + code, service="smtp")[0] == 0, name
        result = dc.doveadm_auth_test(uid, pw + code, service="smtp")
        assert result[0] != 0, f"{name}: a session-less SMTP AUTH replay was accepted from the cache: {result[1]}"
