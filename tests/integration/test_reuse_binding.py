"""What a reuse-window entry is tied to, through the real login path against a real slapd:
mailmfa-checkpassword with its SQLite state file, and mailmfa-authd with its memory store.

An entry is accepted again only for the same token secret (a re-enrolment through
`mailmfa enroll --replace` ends it), from any mail service (IMAP's login, then SMTP AUTH to
send), and within the CURRENT `[policy] reuse_seconds` (lowering it shortens entries already
stored). A state file of the previous format is upgraded, never a crash."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from authd import Authd, ask, daemon_toml
from cprun import login, reason
from mailmfa.daemon import protocol
from mfa import code_at, mailmfa_cmd, new_secret, write_config
from servers import poll_until, wait_for_step_safe

IP = "192.0.2.60"
_n = iter(range(1, 100_000))


def new_user(slapd, prefix: str) -> tuple[str, str, bytes]:
    uid = f"{prefix}{next(_n)}"
    secret = new_secret()
    slapd.add_user(uid, "pw-" + uid, secret)
    return uid, "pw-" + uid, secret


def reenrol(config: Path, uid: str) -> None:
    """What a help desk does after a lost phone: a new key, through the admin CLI."""
    proc = subprocess.run([*mailmfa_cmd(), "--config", str(config), "enroll", uid, "--replace",
                           "--no-verify", "--json"], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["enrolled"] is True


def cp(config: Path, uid: str, secret: str, service: str = "imap") -> tuple[int, str]:
    rc, _, err, _ = login(config, uid, secret, rip=IP, env={"SERVICE": service})
    return rc, reason(err)


# --------------------------------------------------------------------------- checkpassword (SQLite)


def test_checkpassword_reenrolment_ends_reuse_of_the_old_code(slapd, workdir):
    cfg = write_config(workdir, slapd, "rb-enrol.toml", reuse_seconds=3600, state_file=workdir / "rb-enrol.db")
    uid, pw, secret = new_user(slapd, "rbe")
    wait_for_step_safe(margin=8)
    old = pw + code_at(secret)
    assert cp(cfg, uid, old) == (0, "ok")
    assert cp(cfg, uid, old) == (0, "reused")
    reenrol(cfg, uid)
    rc, why = cp(cfg, uid, old)
    assert rc == 1 and why == "bad_code", why


def test_checkpassword_reuse_spans_imap_and_smtp(slapd, workdir):
    """A mail client's IMAP login, then SMTP AUTH (Postfix through Dovecot's auth socket) to
    send, with the one saved password+code: the second is the same burst, not a replay."""
    cfg = write_config(workdir, slapd, "rb-svc.toml", reuse_seconds=60, state_file=workdir / "rb-svc.db")
    uid, pw, secret = new_user(slapd, "rbs")
    wait_for_step_safe(margin=8)
    string = pw + code_at(secret)
    assert cp(cfg, uid, string, "imap") == (0, "ok")
    assert cp(cfg, uid, string, "smtp") == (0, "reused")
    assert cp(cfg, uid, string, "pop3") == (0, "reused")


def test_checkpassword_lowered_reuse_seconds_shortens_stored_entries(slapd, workdir):
    state = workdir / "rb-low.db"
    long_cfg = write_config(workdir, slapd, "rb-long.toml", reuse_seconds=3600, state_file=state)
    short_cfg = write_config(workdir, slapd, "rb-short.toml", reuse_seconds=1, state_file=state)
    uid, pw, secret = new_user(slapd, "rbl")
    wait_for_step_safe(margin=8)
    string = pw + code_at(secret)
    assert cp(long_cfg, uid, string) == (0, "ok")
    time.sleep(1.2)
    assert cp(long_cfg, uid, string) == (0, "reused")  # 1.2 s old: fine under 3600
    assert cp(short_cfg, uid, string) == (1, "replay")  # the same entry under the lowered setting


def test_checkpassword_previous_format_state_file_is_upgraded(slapd, workdir):
    """A state file left by the previous version (table `reuse` with expiry times)."""
    state = workdir / "rb-old.db"
    db = sqlite3.connect(str(state))
    db.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL)")
    db.execute("CREATE TABLE reuse (digest BLOB PRIMARY KEY, expires REAL NOT NULL)")
    db.execute("INSERT INTO meta VALUES ('key', ?)", (b"k" * 32,))
    db.execute("INSERT INTO reuse VALUES (?, ?)", (b"d" * 32, time.time() + 3600))
    db.commit()
    db.close()
    state.chmod(0o600)
    cfg = write_config(workdir, slapd, "rb-old.toml", reuse_seconds=60, state_file=state)
    uid, pw, secret = new_user(slapd, "rbo")
    wait_for_step_safe(margin=8)
    string = pw + code_at(secret)
    rc, _, err, _ = login(cfg, uid, string, rip=IP)
    assert rc == 0 and "Traceback" not in err and "state_unavailable" not in err, err
    assert cp(cfg, uid, string) == (0, "reused")
    tables = {r[0] for r in sqlite3.connect(str(state)).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"meta", "reuse_v2"}


# --------------------------------------------------------------------------- mailmfa-authd (memory)


@pytest.fixture
def daemon(workdir_factory, slapd):
    wd = workdir_factory()
    sock = wd / "rb.sock"

    def configure(reuse_seconds: int) -> Path:
        return write_config(wd, slapd, reuse_seconds=reuse_seconds, state_file=wd / "never.db",
                            tail=daemon_toml(sock))

    server = Authd(wd / "authd", configure(3600), sock)
    server.start()
    try:
        yield server, sock, configure
    finally:
        server.stop()


def test_daemon_reenrolment_address_and_lowered_window(daemon, slapd):
    server, sock, configure = daemon
    uid, pw, secret = new_user(slapd, "rbd")
    wait_for_step_safe(margin=8)
    string = pw + code_at(secret)
    imap = protocol.auth_request(uid, string, "imap", IP)
    assert ask(sock, imap) == b"OK ok\n"
    assert ask(sock, imap) == b"OK reused\n"
    assert ask(sock, protocol.auth_request(uid, string, "smtp", IP)) == b"OK reused\n"
    assert ask(sock, protocol.auth_request(uid, string, "imap", "192.0.2.61")) == b"FAIL replay\n"
    time.sleep(1.2)
    assert ask(sock, imap) == b"OK reused\n"
    configure(1)  # lower the window, then reload: the 1.2 s old entry is out of it
    server.hup()
    poll_until(lambda: "event=reload result=ok" in server.log_text(), 5, "reload")
    assert ask(sock, imap) == b"FAIL replay\n"

    # a second user: re-enrolled while the daemon holds an entry for the old token
    uid2, pw2, secret2 = new_user(slapd, "rbd")
    configure(3600)
    server.hup()
    poll_until(lambda: server.log_text().count("event=reload result=ok") == 2, 5, "second reload")
    wait_for_step_safe(margin=8)
    old = protocol.auth_request(uid2, pw2 + code_at(secret2), "imap", IP)
    assert ask(sock, old) == b"OK ok\n"
    assert ask(sock, old) == b"OK reused\n"
    reenrol(configure(3600), uid2)
    answer = ask(sock, old)
    assert answer.startswith(b"FAIL "), answer
    assert "state_unavailable" not in server.log_text()


# --------------------------------------------------------------------------- the web sign-in


def test_web_sign_in_neither_reuses_nor_leaves_an_entry(workdir, slapd):
    """mailmfa-web's app (Flask's test client, in process, client address 127.0.0.1) with the
    reuse window on: a password+code just used for IMAP from that address is a replay on the
    sign-in page, and one used to sign in on the page is a replay for IMAP."""
    pytest.importorskip("flask")
    pytest.importorskip("cryptography")
    import re

    from mailmfa.config import load
    from mailmfa.web.app import create_app

    state = workdir / "rb-web-state"
    state.mkdir(mode=0o700)
    reuse_db = workdir / "rb-web.db"
    cfg = write_config(workdir, slapd, "rb-web.toml", reuse_seconds=3600, state_file=reuse_db,
                       tail=f'[web]\nstate_dir = "{state}"\nsecure_cookies = false\n')

    def web_sign_in(uid: str, pw: str, code: str) -> tuple[int, str]:
        client = create_app(load(str(cfg))).test_client()

        def post(path: str, **form: str):
            page = client.get(path).get_data(as_text=True)
            token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
            return client.post(path, data={"csrf": token, **form})

        r = post("/login", login=uid, password=pw)
        assert r.status_code == 303 and r.headers["Location"].endswith("/login/code"), r.status_code
        r = post("/login/code", code=code)
        return r.status_code, r.headers.get("Location", "")

    uid, pw, secret = new_user(slapd, "rbw")
    uid2, pw2, secret2 = new_user(slapd, "rbw")
    wait_for_step_safe(margin=8)
    code = code_at(secret)
    rc, _, err, _ = login(cfg, uid, pw + code, rip="127.0.0.1")
    assert rc == 0 and reason(err) == "ok", err
    assert login(cfg, uid, pw + code, rip="127.0.0.1")[0] == 0  # IMAP's own window works
    status, _ = web_sign_in(uid, pw, code)
    assert status == 401, status  # refused as a replay, not signed in

    code2 = code_at(secret2)
    size_before = reuse_db.stat().st_size
    with sqlite3.connect(str(reuse_db)) as db:
        rows_before = db.execute("SELECT count(*) FROM reuse_v2").fetchone()[0]
    status, where = web_sign_in(uid2, pw2, code2)
    assert status == 303 and where.endswith("/profile"), (status, where)
    with sqlite3.connect(str(reuse_db)) as db:
        assert db.execute("SELECT count(*) FROM reuse_v2").fetchone()[0] == rows_before
    assert reuse_db.stat().st_size == size_before
    rc, _, err, _ = login(cfg, uid2, pw2 + code2, rip="127.0.0.1")
    assert rc == 1 and reason(err) == "replay", err
