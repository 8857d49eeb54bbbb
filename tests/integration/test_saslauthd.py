"""Postfix SMTP AUTH's usual path: saslauthd -a pam -> the shipped PAM service (pam_exec ->
mailmfa-pam). A real saslauthd on a private socket, asked with testsaslauthd as Postfix's
Cyrus SASL would ask it.

Debian's /etc/default/saslauthd starts it with `-c` (a credential cache, 8 hours by default):
saslauthd then answers a password+code it has seen from its cache, never asking PAM -- a
replayed code let in. Without `-c` every attempt reaches mailmfa. README ("mailmfa-pam") tells
admins to drop `-c`; these tests show both, so that advice stays true."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import syspam
from mfa import code_at, token_user
from pamface import exec_service_text, pam_bin
from servers import Slapd, poll_until, wait_for_step_safe

pytestmark = pytest.mark.skipif(shutil.which("saslauthd", path="/usr/sbin:/usr/bin") is None,
                                reason="saslauthd not installed (Debian: sasl2-bin)")


@pytest.fixture(scope="module")
def pam_service(config: Path, workdir: Path) -> Iterator[str]:
    exe = pam_bin()
    if exe is None:
        pytest.skip("mailmfa-pam is not installed in this venv (make venv)")
    with syspam.pam_service(exec_service_text(config, workdir / "sasl-pam.log", exe), prefix="mmsasl") as name:
        yield name


def _saslauthd(workdir_factory: Callable[[], Path], cache: bool) -> Iterator[Path]:
    run = workdir_factory()
    argv = ["/usr/sbin/saslauthd", "-a", "pam", "-m", str(run), "-n", "1", "-d"] + (["-c"] if cache else [])
    # its own session: on SIGTERM saslauthd signals its whole process group
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        poll_until(lambda: (run / "mux").exists(), 10, "saslauthd")
        yield run / "mux"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def plain_saslauthd(workdir_factory: Callable[[], Path]) -> Iterator[Path]:
    yield from _saslauthd(workdir_factory, cache=False)


@pytest.fixture(scope="module")
def caching_saslauthd(workdir_factory: Callable[[], Path]) -> Iterator[Path]:
    yield from _saslauthd(workdir_factory, cache=True)


def ask(mux: Path, service: str, user: str, password: str) -> bool:
    out = subprocess.run(["/usr/sbin/testsaslauthd", "-f", str(mux), "-s", service, "-u", user, "-p", password],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.startswith("0: "), out.stdout + out.stderr  # an answer, not a transport error
    return out.stdout.startswith("0: OK")


def fresh_code(secret: bytes) -> str:
    wait_for_step_safe(margin=5)  # both attempts in one step: the second is a replay, not a new code
    return code_at(secret)


def test_without_cache_every_attempt_reaches_mailmfa(plain_saslauthd: Path, pam_service: str, slapd: Slapd) -> None:
    uid, pw, secret = token_user(slapd, "sasl")
    assert secret is not None
    code = fresh_code(secret)
    assert not ask(plain_saslauthd, pam_service, uid, pw)  # the password alone
    assert ask(plain_saslauthd, pam_service, uid, pw + code)
    assert not ask(plain_saslauthd, pam_service, uid, pw + code)  # the same code again: a replay


def test_debians_default_cache_replays_a_code(caching_saslauthd: Path, pam_service: str, slapd: Slapd,
                                              workdir: Path) -> None:
    """Why README says to drop -c: the second answer comes from saslauthd's cache."""
    uid, pw, secret = token_user(slapd, "sasl")
    assert secret is not None
    code = fresh_code(secret)
    assert ask(caching_saslauthd, pam_service, uid, pw + code)
    assert ask(caching_saslauthd, pam_service, uid, pw + code), "saslauthd -c no longer caches: update README"
    log = (workdir / "sasl-pam.log").read_text()
    assert log.count(f"user={uid} ") == 1, "mailmfa saw the replay: the cache did not answer it"
