"""Thunderbird's pattern through a real Dovecot: five IMAP connections opened together with one
password+code all succeed; the same string from another IP is refused; after `reuse_seconds` it
is refused from the first IP too. Through `passdb checkpassword` (Dovecot 2.3) and through
`passdb pam` -> pam_exec -> mailmfa-pam (2.3 and 2.4, which has no checkpassword driver)."""

from __future__ import annotations

import contextlib
import os
import pwd
import threading
import time

import pytest

import syspam
from mfa import checkpassword_bin, code_at, new_secret, write_config
from pamface import exec_service_text, pam_bin, passdb_pam
from servers import Dovecot, wait_for_step_safe

REUSE = 3


@pytest.mark.parametrize("face", ["checkpassword", "pam"])
def test_five_parallel_imap_connections_then_other_ip_then_expiry(slapd, dovecot_factory, workdir_factory, face):
    if face == "checkpassword" and not Dovecot.has_checkpassword():
        pytest.skip("Dovecot 2.4 has no checkpassword driver (the pam case covers 2.4)")
    if face == "pam" and pam_bin() is None:
        pytest.skip("mailmfa-pam is not installed in this venv (run `make venv`)")
    with contextlib.ExitStack() as stack:
        _thunderbird(slapd, dovecot_factory, workdir_factory(), face, stack)


def _thunderbird(slapd, dovecot_factory, wd, face, stack) -> None:
    user = f"thunder-{face}"
    state_dir = wd / "state"
    state_dir.mkdir()
    if face == "checkpassword":  # run by the dovecot user; passdb pam runs as root
        dovecot_user = pwd.getpwnam("dovecot")
        os.chown(state_dir, dovecot_user.pw_uid, dovecot_user.pw_gid)
    os.chmod(state_dir, 0o700)
    cfg = write_config(wd, slapd, f"{face}.toml", reuse_seconds=REUSE, state_file=state_dir / "state.db")
    if face == "checkpassword":
        passdb = f"driver = checkpassword\nargs = {checkpassword_bin()} --config {cfg}"
    else:
        service = stack.enter_context(syspam.pam_service(exec_service_text(cfg, wd / "pam.log", pam_bin())))
        passdb = passdb_pam(service)
    dc = dovecot_factory(passdb, workdir=wd / "dovecot")

    def mailmfa_log() -> str:
        return dc.log_text() if face == "checkpassword" else (wd / "pam.log").read_text()

    secret = new_secret()
    slapd.add_user(user, "thunderpw", secret)
    wait_for_step_safe(margin=4)
    string = "thunderpw" + code_at(secret)

    results: list = [None] * 5

    def connect(i: int) -> None:
        results[i] = dc.imap_login(user, string, source_ip="127.0.0.40", timeout=30)

    threads = [threading.Thread(target=connect, args=(i,)) for i in range(5)]
    slapd.pause()  # every connection's check waits on slapd, then all race together
    try:
        for t in threads:
            t.start()
        time.sleep(1.5)
    finally:
        slapd.resume()
    for t in threads:
        t.join(timeout=60)
    accepted_at = time.time()
    assert all(r is not None and r.ok and r.selected for r in results), results
    log = mailmfa_log()
    assert log.count("reason=reused") == 4 and log.count(f"result=ok user={user} ") == 5, log[-3000:]

    other = dc.imap_login(user, string, source_ip="127.0.0.41")
    assert not other.ok and not other.tempfail, other.text

    again = dc.imap_login(user, string, source_ip="127.0.0.40")  # still within reuse_seconds
    assert again.ok, again.text

    time.sleep(max(0.0, accepted_at + REUSE + 0.5 - time.time()))
    late = dc.imap_login(user, string, source_ip="127.0.0.40")
    assert not late.ok and not late.tempfail, late.text
    assert "thunderpw" not in dc.log_text() and "thunderpw" not in mailmfa_log()
    assert (state_dir / "state.db").stat().st_mode & 0o777 == 0o600
