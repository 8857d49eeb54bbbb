"""Thunderbird's pattern through a real Dovecot 2.3: five IMAP connections opened together
with one password+code all succeed; the same string from another IP is refused; after
`reuse_seconds` it is refused from the first IP too."""

from __future__ import annotations

import os
import pwd
import threading
import time

import pytest

from mfa import checkpassword_bin, code_at, new_secret, write_config
from servers import Dovecot, wait_for_step_safe

pytestmark = pytest.mark.skipif(not Dovecot.has_checkpassword(),
                                reason="Dovecot 2.4 has no checkpassword driver")

REUSE = 3


def test_five_parallel_imap_connections_then_other_ip_then_expiry(slapd, dovecot_factory, workdir_factory):
    wd = workdir_factory()
    state_dir = wd / "state"
    state_dir.mkdir()
    dovecot_user = pwd.getpwnam("dovecot")
    os.chown(state_dir, dovecot_user.pw_uid, dovecot_user.pw_gid)
    os.chmod(state_dir, 0o700)
    cfg = write_config(wd, slapd, reuse_seconds=REUSE, state_file=state_dir / "state.db")
    dc = dovecot_factory(f"driver = checkpassword\nargs = {checkpassword_bin()} --config {cfg}",
                         workdir=wd / "dovecot")
    secret = new_secret()
    slapd.add_user("thunder", "thunderpw", secret)
    wait_for_step_safe(margin=4)
    string = "thunderpw" + code_at(secret)

    results: list = [None] * 5

    def connect(i: int) -> None:
        results[i] = dc.imap_login("thunder", string, source_ip="127.0.0.40", timeout=30)

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
    log = dc.log_text()
    assert log.count("reason=reused") == 4 and log.count("result=ok user=thunder") == 5, log[-3000:]

    other = dc.imap_login("thunder", string, source_ip="127.0.0.41")
    assert not other.ok and not other.tempfail, other.text

    again = dc.imap_login("thunder", string, source_ip="127.0.0.40")  # still within reuse_seconds
    assert again.ok, again.text

    time.sleep(max(0.0, accepted_at + REUSE + 0.5 - time.time()))
    late = dc.imap_login("thunder", string, source_ip="127.0.0.40")
    assert not late.ok and not late.tempfail, late.text
    assert "thunderpw" not in dc.log_text()
    assert (state_dir / "state.db").stat().st_mode & 0o777 == 0o600
