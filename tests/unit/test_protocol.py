"""The MFA1 wire protocol (pure functions shared by mailmfa-authd and its clients)."""

from __future__ import annotations

import pytest

from mailmfa.daemon import protocol


@pytest.mark.parametrize("value", ["", "alice", "a b", "x\ny", "ü€", "%41", "\x00", "a+b@c.d~_-", "\\", " " * 3])
def test_fields_roundtrip_and_never_contain_separators(value):
    line = protocol.auth_request(value, value + "123456", value, value)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert line.count(b" ") == 5  # exactly the separators: no field can add one
    assert protocol.parse_request(line) == ("AUTH", [value, value + "123456", value, value])


def test_lookup_and_ping():
    assert protocol.parse_request(protocol.lookup_request("bob")) == ("LOOKUP", ["bob"])
    assert protocol.parse_request(b"MFA1 PING\r\n") == ("PING", [])


@pytest.mark.parametrize("line", [
    b"", b"MFA1", b"MFA2 PING", b"mfa1 PING", b"MFA1 AUTH a b c", b"MFA1 AUTH a b c d e",
    b"MFA1 LOOKUP", b"MFA1 NOPE x", b"MFA1 AUTH a%2 b c d", b"MFA1 AUTH a%zz b c d",
    b"MFA1 AUTH a\x00 b c d", b"MFA1 AUTH a\tb c d e",
    b"MFA1  AUTH a b c d",
])
def test_malformed_requests_are_refused(line):
    assert protocol.parse_request(line) is None


def test_answers():
    assert protocol.answer("OK", "ok") == b"OK ok\n"
    assert protocol.answer("FAIL", "bad code\n") == b"FAIL badcode\n"
    assert protocol.answer("TEMPFAIL", "") == b"TEMPFAIL unknown\n"
    assert protocol.parse_answer(b"TEMPFAIL ldap_unavailable\n") == ("TEMPFAIL", "ldap_unavailable")
    for bad in (b"OK ok", b"MAYBE x\n", b"OK a b\n", b""):
        assert protocol.parse_answer(bad) is None


def test_well_encoded_but_not_utf8_is_marked_not_malformed():
    assert protocol.parse_request(b"MFA1 AUTH %FF%FE b c d") == ("AUTH", [protocol.NOT_UTF8, "b", "c", "d"])
    assert protocol.encode_field(protocol.NOT_UTF8).startswith("%00")  # a real value cannot collide
