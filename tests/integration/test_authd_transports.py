"""mailmfa-authd on both LDAP transports ([daemon] ldap_client = "python-ldap" and "ldap3"):
the same answers against the same real slapd (the decisions are LdapDirectory's; only the
transport differs). The other daemon tests run the default, "auto": python-ldap when installed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from authd import Authd, ask, daemon_toml, race
from mailmfa.daemon import protocol
from mfa import code_at, token_user, write_config
from servers import free_port, wait_for_step_safe

try:
    import ldap  # noqa: F401
    HAVE_PYTHON_LDAP = True
except ImportError:
    HAVE_PYTHON_LDAP = False
needs_python_ldap = pytest.mark.skipif(not HAVE_PYTHON_LDAP, reason="python-ldap (python3-ldap) is not installed")
CLIENTS = [pytest.param("python-ldap", marks=needs_python_ldap), "ldap3"]

_n = iter(range(1, 100_000))


@pytest.fixture(scope="module")
def wd(workdir_factory):
    return workdir_factory()


def start(wd, slapd, name, client, **ldap_kw):
    sock = wd / f"{name}.sock"
    cfg = write_config(wd, slapd, f"{name}.toml", tail=daemon_toml(sock, ldap_client=client), **ldap_kw)
    server = Authd(wd / name, cfg, sock)
    server.start()
    return server, sock


@pytest.fixture(scope="module", params=CLIENTS)
def daemon(request, wd, slapd):
    client = request.param
    server, sock = start(wd, slapd, f"pl-{client}", client)
    yield sock
    # libldap really served (or really did not)
    assert ("/_ldap." in Path(f"/proc/{server.pid}/maps").read_text()) == (client == "python-ldap")
    server.stop()


def new_user(slapd, token_on_user=True):
    return token_user(slapd, "pl", token_on_user=token_on_user)


def test_same_answers_as_ldap3(daemon, slapd):
    uid, pw, secret = new_user(slapd)
    other, opw, osecret = new_user(slapd, token_on_user=False)
    plain = f"plain{next(_n)}"
    slapd.add_user(plain, "plainpw")
    wait_for_step_safe()
    code = code_at(secret)
    wrong = "000000" if code != "000000" else "111111"
    cases = [
        (protocol.auth_request(uid, pw + code), b"OK ok\n"),
        (protocol.auth_request(uid, pw + code), b"FAIL replay\n"),
        (protocol.auth_request(uid, pw + wrong), b"FAIL bad_code\n"),
        (protocol.auth_request(uid, "x" + pw + code), b"FAIL bad_password\n"),
        (protocol.auth_request(uid, code), b"FAIL bad_password\n"),
        (protocol.auth_request(other, opw + code_at(osecret)), b"OK ok\n"),
        (protocol.auth_request(plain, "plainpw"), b"OK ok_no_token\n"),
        (protocol.auth_request(plain, "nope"), b"FAIL bad_password\n"),
        (protocol.auth_request("*", pw + code), b"FAIL unknown_user\n"),
        (protocol.auth_request(")(uid=*", pw + code), b"FAIL unknown_user\n"),
        (protocol.lookup_request(uid), b"OK userdb_lookup\n"),
        (protocol.lookup_request("ghost"), b"FAIL unknown_user\n"),
    ]
    for line, expected in cases:
        assert ask(daemon, line) == expected, line
    assert int(slapd.token_state(uid).first("oathTOTPLastTimeStep")) == int(time.time() // 30)
    assert slapd.token_state(other, token_on_user=False).first("oathTOTPLastTimeStep")


def test_same_code_at_once_exactly_one_accepted(daemon, slapd):
    uid, pw, secret = new_user(slapd)
    wait_for_step_safe(margin=8)
    line = protocol.auth_request(uid, pw + code_at(secret))
    answers = race(slapd, daemon, line, 12)
    assert answers == [b"FAIL replay\n"] * 11 + [b"OK ok\n"]


@pytest.mark.parametrize("client", CLIENTS)
def test_failover_bad_service_password_and_outage(wd, slapd_factory, client):
    server = slapd_factory()
    dead = f"ldap://127.0.0.1:{free_port()}"
    d, sock = start(wd, server, f"plfo-{client}", client, uris=[dead, server.uri])
    try:
        uid, pw, secret = new_user(server)
        wait_for_step_safe()
        assert ask(sock, protocol.auth_request(uid, pw + code_at(secret))) == b"OK ok\n"
        server.restart()  # pooled connections (service and user-bind) die; the next login reconnects
        assert ask(sock, protocol.auth_request(uid, "nope123456")) == b"FAIL bad_password\n"
        assert ask(sock, protocol.lookup_request(uid)) == b"OK userdb_lookup\n"
        server.stop()
        started = time.monotonic()
        assert ask(sock, protocol.auth_request(uid, pw + "123456"), 30) == b"TEMPFAIL ldap_unavailable\n"
        assert time.monotonic() - started < 10
    finally:
        d.stop()
        if not server.running:
            server.start()
    sock = wd / f"plbad-{client}.sock"
    cfg = write_config(wd, server, f"plbad-{client}.toml", tail=daemon_toml(sock, ldap_client=client))
    (wd / f"plbad-{client}.toml.ldap.secret").write_text("wrong\n")
    d = Authd(wd / f"plbad-{client}", cfg, sock)
    d.start()
    try:
        assert ask(sock, protocol.lookup_request("x")) == b"TEMPFAIL service_bind_failed\n"
    finally:
        d.stop()


def test_auto_picks_python_ldap_when_installed(wd, slapd):
    """The default, ldap_client = "auto": the start line names the library actually used."""
    server, sock = start(wd, slapd, "plauto", "auto")
    try:
        uid, pw, secret = new_user(slapd)
        wait_for_step_safe()
        assert ask(sock, protocol.auth_request(uid, pw + code_at(secret))) == b"OK ok\n"
        expected = "python-ldap" if HAVE_PYTHON_LDAP else "ldap3"
        start_line = next(line for line in server.log_path.read_text().splitlines() if "event=start" in line)
        assert f"ldap_client={expected}" in start_line
        assert ("/_ldap." in Path(f"/proc/{server.pid}/maps").read_text()) == HAVE_PYTHON_LDAP
    finally:
        server.stop()
