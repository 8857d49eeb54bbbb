"""mailmfa-authd with [daemon] ldap_client = "python-ldap": the same answers as with ldap3,
against the same real slapd (the decisions are LdapDirectory's; only the transport differs)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from authd import Authd, ask, daemon_toml, race
from mailmfa.daemon import protocol
from mfa import code_at, new_secret, write_config
from servers import free_port, wait_for_step_safe

pytest.importorskip("ldap", reason="python-ldap (python3-ldap) is not installed")

_n = iter(range(1, 100_000))


@pytest.fixture(scope="module")
def wd(workdir_factory):
    return workdir_factory()


def start(wd, slapd, name, **ldap_kw):
    sock = wd / f"{name}.sock"
    cfg = write_config(wd, slapd, f"{name}.toml", tail=daemon_toml(sock, ldap_client="python-ldap"), **ldap_kw)
    server = Authd(wd / name, cfg, sock)
    server.start()
    return server, sock


@pytest.fixture(scope="module")
def daemon(wd, slapd):
    server, sock = start(wd, slapd, "pl")
    yield sock
    assert "/_ldap." in Path(f"/proc/{server.pid}/maps").read_text()  # libldap really served
    server.stop()


def new_user(slapd, token_on_user=True):
    uid = f"pl{next(_n)}"
    secret = new_secret()
    slapd.add_user(uid, "pw-" + uid, secret, token_on_user=token_on_user)
    return uid, "pw-" + uid, secret


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


def test_failover_bad_service_password_and_outage(wd, slapd_factory):
    server = slapd_factory()
    dead = f"ldap://127.0.0.1:{free_port()}"
    d, sock = start(wd, server, "plfo", uris=[dead, server.uri])
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
    sock = wd / "plbad.sock"
    cfg = write_config(wd, server, "plbad.toml", tail=daemon_toml(sock, ldap_client="python-ldap"))
    (wd / "plbad.toml.ldap.secret").write_text("wrong\n")
    d = Authd(wd / "plbad", cfg, sock)
    d.start()
    try:
        assert ask(sock, protocol.lookup_request("x")) == b"TEMPFAIL service_bind_failed\n"
    finally:
        d.stop()
