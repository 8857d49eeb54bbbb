"""Single-host mode end to end: a real system user (useradd + chpasswd), the password
checked by pam_unix through a PAM service, the token in a SQLite file, and IMAP logins
through a real Dovecot (`passdb pam` -> pam_exec -> mailmfa-pam) -- plus 20 truly
overlapping logins with the same code against the SQLite file."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import time

import pytest

import syspam
from mailmfa.backends.sqlite import SqliteStore
from mailmfa.core.types import TotpParams
from mfa import code_at, new_secret
from pamface import exec_service_text, pam_bin, passdb_pam
from servers import poll_until, wait_for_step_safe

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creates system users and PAM services (root only)")


class Host(syspam.SingleHost):
    """The single host of this module, plus the pam_exec service that runs mailmfa-pam."""

    def __init__(self, workdir, exe):
        super().__init__(workdir)
        self.log = workdir / "pam.log"
        self.service = syspam.add_pam_service(exec_service_text(self.config, self.log, exe))

    def add_user(self, password, token=True):
        name = super().add_user(password)
        secret = None
        if token:  # what `mailmfa enrol` does in single-host mode
            secret = new_secret()
            store = SqliteStore(str(self.db))
            try:
                store.write_token(name, secret, TotpParams(), time.time())
            finally:
                store.close()
        return name, secret

    def close(self):
        syspam.remove_pam_service(self.service)
        super().close()


@pytest.fixture(scope="module")
def host(workdir_factory):
    exe = pam_bin()
    if exe is None:
        pytest.skip("mailmfa-pam is not installed in this venv (run `make venv`)")
    h = Host(workdir_factory(), exe)
    yield h
    h.close()


@pytest.fixture(scope="module")
def dovecot(host, dovecot_factory):
    return dovecot_factory(passdb_pam(host.service), workdir=host.workdir / "dovecot")


def test_imap_login_system_user_token_in_sqlite(host, dovecot):
    name, secret = host.add_user("Sys-pw 1")
    now = wait_for_step_safe(margin=4)
    code = code_at(secret, now)
    res = dovecot.imap_login(name, "Sys-pw 1" + code, source_ip="127.0.0.2")
    assert res.ok and res.selected, res.text + dovecot.log_text()[-2000:]
    info = host.token(name)
    assert info.last_step == int(now // 30) and info.last_login
    # the same code again (another client): replay; the wrong system password: refused
    assert not dovecot.imap_login(name, "Sys-pw 1" + code, source_ip="127.0.0.3").ok
    assert not dovecot.imap_login(name, "sys-pw 1" + code_at(secret, now + 30),
                                  source_ip="127.0.0.4").ok
    log = host.log.read_text()
    for reason in ("ok", "replay", "bad_password"):
        assert f"user={name} rip=" in log and f"reason={reason}" in log
    assert "Sys-pw" not in log
    # the database the login path created: WAL, schema versioned, nobody else may read it
    assert stat.S_IMODE(os.stat(host.db).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(host.db.parent).st_mode) == 0o750
    conn = sqlite3.connect(host.db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] >= 1
    conn.close()


def test_system_user_without_token_and_unknown_user(host, dovecot):
    name, _ = host.add_user("plain-pw", token=False)
    assert dovecot.imap_login(name, "plain-pw", source_ip="127.0.0.5").ok
    assert not dovecot.imap_login(name, "plain-pw123456", source_ip="127.0.0.6").ok
    assert not dovecot.imap_login("mmh-nobody", "plain-pw", source_ip="127.0.0.7").ok


def test_password_alone_refused_for_token_user(host, dovecot):
    name, _secret = host.add_user("tok-pw")
    res = dovecot.imap_login(name, "tok-pw", source_ip="127.0.0.8")
    assert not res.ok and not res.tempfail
    assert host.token(name).last_step is None


def _sleeping_in_busy_handler(pid: int) -> bool:
    """True while `pid` sits in (clock_)nanosleep: SQLite's busy handler waiting for the
    write lock (x86-64 syscall numbers 35 nanosleep, 230 clock_nanosleep)."""
    try:
        with open(f"/proc/{pid}/syscall") as fh:
            first = fh.read().split()[:1]
    except OSError:
        return False
    return first in (["35"], ["230"])


def test_twenty_parallel_logins_same_code_exactly_one_accepted(host):
    """The test holds SQLite's write lock while 20 mailmfa-pam processes (as pam_exec runs
    them) start, read the same token state, check the system password with pam_unix and
    reach the step update; once all 20 are seen waiting in SQLite's busy handler the lock
    is released and they race the compare-and-swap."""
    name, secret = host.add_user("race-pw")
    now = wait_for_step_safe(margin=8)
    attempt = ("race-pw" + code_at(secret, now)).encode()
    env = {"PAM_TYPE": "auth", "PAM_USER": name, "PAM_SERVICE": host.service, "PAM_RHOST": "192.0.2.9"}
    holder = sqlite3.connect(host.db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    procs = []
    try:
        for _ in range(20):
            p = subprocess.Popen([pam_bin(), "--config", str(host.config)], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
            p.stdin.write(attempt)
            p.stdin.close()
            procs.append(p)
        seen: set[int] = set()

        def all_waiting() -> bool:
            for p in procs:
                if p.poll() is not None:
                    raise AssertionError(f"a login finished while the lock was held: {p.communicate()}")
                if _sleeping_in_busy_handler(p.pid):
                    seen.add(p.pid)
            return len(seen) == len(procs)

        poll_until(all_waiting, 25, "20 logins waiting for the SQLite write lock", interval=0.005)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    results = [(p.wait(timeout=60), p.stderr.read().decode()) for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes.count(0) == 1, results
    assert codes.count(1) == 19, results
    assert sum("reason=replay" in err for _, err in results) == 19
    assert host.token(name).last_step == int(now // 30)


def test_password_service_pointing_back_at_mailmfa_does_not_recurse(host):
    """[password] pam_service = the service that runs mailmfa-pam: the nested mailmfa-pam
    sees MAILMFA_NESTED in its PAM environment and stops; the login is a bounded failure."""
    cfg = host.workdir / "recursive.toml"
    log = host.workdir / "recursive.log"
    name = syspam.unique_name("mmr")
    # the service name is known before the file exists: the config points at itself
    cfg.write_text(f'[store]\npath = "{host.db}"\n[password]\npam_service = "{name}"\n')
    os.chmod(cfg, 0o644)
    path = syspam.PAM_DIR / name
    path.write_text(exec_service_text(cfg, log, pam_bin()))
    try:
        started = time.monotonic()
        proc = syspam.pamtester(name, "someone", "pw123456", timeout=30)
        assert proc.returncode != 0
        assert time.monotonic() - started < 20
    finally:
        path.unlink()
    text = log.read_text()
    assert "reason=pam_recursion" in text
    assert "result=tempfail" in text and "reason=pam_unavailable" in text
