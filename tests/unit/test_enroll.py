"""Pure admin logic: otpauth URI, key display, code input, clock-offset diagnosis, resync,
GeneralizedTime, and the ppolicy reset rule. Codes come from pyotp (an independent TOTP)."""

import base64
import urllib.parse

import pyotp
import pytest

from mailmfa.core import enroll
from mailmfa.core.types import TotpParams

SECRET = b"12345678901234567890"
P = TotpParams()
NOW = 1_790_000_000.0 + 7  # 7 s into a step


def code(when: float, secret: bytes = SECRET, digits: int = 6) -> str:
    return pyotp.TOTP(base64.b32encode(secret).decode(), digits=digits).at(int(when))


def test_uri_shape_and_quoting():
    uri = enroll.otpauth_uri(SECRET, "alice@example.org", "Example Mail: Büro", P)
    assert uri.startswith("otpauth://totp/Example%20Mail%3A%20B%C3%BCro:alice%40example.org?")
    parts = urllib.parse.urlsplit(uri)
    q = urllib.parse.parse_qs(parts.query)
    assert q == {"secret": ["GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"], "issuer": ["Example Mail: Büro"],
                 "algorithm": ["SHA1"], "digits": ["6"], "period": ["30"]}
    # the label has exactly one unencoded ':' -- the separator
    issuer, _, account = parts.path.lstrip("/").partition(":")
    assert parts.path.count(":") == 1
    assert urllib.parse.unquote(issuer) == "Example Mail: Büro"
    assert urllib.parse.unquote(account) == "alice@example.org"
    # pyotp parses what we build into the same generator (it unquotes the whole URI before
    # splitting the label, so it cannot take a ':' inside the issuer: use a plain one)
    parsed = pyotp.parse_uri(enroll.otpauth_uri(SECRET, "alice@example.org", "Example Mail", P))
    assert parsed.issuer == "Example Mail" and parsed.name == "alice@example.org"
    assert parsed.now() == pyotp.TOTP(base64.b32encode(SECRET).decode()).now()


def test_uri_other_params():
    uri = enroll.otpauth_uri(SECRET, "bob", "X", TotpParams(8, 60, "SHA256", 1))
    assert uri.endswith("&algorithm=SHA256&digits=8&period=60")


def test_keys():
    assert enroll.base32_key(SECRET) == "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
    assert enroll.grouped_key(SECRET) == "GEZD GNBV GY3T QOJQ GEZD GNBV GY3T QOJQ"
    assert "=" not in enroll.base32_key(b"\x01" * 21)


@pytest.mark.parametrize("text,expected", [
    ("123456", "123456"), (" 123 456\n", "123456"), ("12345", None), ("1234567", None),
    ("12345a", None), ("１２３４５６", None), ("", None), ("1" * 100, None),
])
def test_normalize_code(text, expected):
    assert enroll.normalize_code(text, 6) == expected


def test_verify_first_code_takes_earliest_matching_step():
    step = int(NOW // 30)
    assert enroll.verify_first_code(SECRET, code(NOW), NOW, P) == step
    assert enroll.verify_first_code(SECRET, code(NOW - 30), NOW, P) == step - 1
    assert enroll.verify_first_code(SECRET, code(NOW - 90), NOW, P) is None


@pytest.mark.parametrize("seconds", [0, 1, 59, 60, 210, 3600, 7260, 86400])
def test_duration_words(seconds):
    words = enroll.duration_words(seconds)
    total = 0
    for n, unit in zip(words.split()[::2], words.split()[1::2]):
        total += int(n) * {"h": 3600, "min": 60, "s": 1}[unit]
    assert total == seconds and enroll.duration_words(-seconds) == words


@pytest.mark.parametrize("offset,words,clock", [(-180, "3 min ago", "behind"), (-210, "3 min 30 s ago", "behind"),
                                                (300, "5 min from now", "ahead"), (-23 * 3600, "23 h ago", "behind")])
def test_diagnose_finds_clock_offset(offset, words, clock):
    d = enroll.diagnose(SECRET, code(NOW + offset), NOW, P)
    assert d.matched and not d.accepted_now and not d.in_window
    assert d.offset_seconds == offset and d.offset_steps == offset // 30
    assert f"matches {words}: the phone's clock is {clock}" in d.message


def test_diagnose_current_code_is_accepted_and_used_code_is_named():
    d = enroll.diagnose(SECRET, code(NOW), NOW, P)
    assert d.accepted_now and d.offset_steps == 0 and "valid now" in d.message
    used = enroll.diagnose(SECRET, code(NOW), NOW, P, last_step=int(NOW // 30))
    assert used.in_window and used.already_used and not used.accepted_now
    assert "already used" in used.message


def test_diagnose_with_learned_drift():
    # phone 5 min behind and the drift already learned: accepted
    d = enroll.diagnose(SECRET, code(NOW - 300), NOW, P, drift=-10)
    assert d.accepted_now and d.offset_steps == -10
    # the phone's clock was fixed since: the drift now gets in the way
    fixed = enroll.diagnose(SECRET, code(NOW), NOW, P, drift=-10)
    assert not fixed.accepted_now and "drift" in fixed.message


def test_diagnose_no_match_names_the_likely_cause():
    # a code of another key: pick one that (checked independently) matches nothing within 24 h
    other = b"another secret 12345"
    steps = range(int(NOW // 30) - 2880, int(NOW // 30) + 2881)
    mine = {code(s * 30) for s in steps}
    foreign = next(c for c in (code(NOW + i * 30, other) for i in range(50)) if c not in mine)
    d = enroll.diagnose(SECRET, foreign, NOW, P)
    assert not d.matched and d.offset_steps is None
    assert "another account" in d.message


def test_diagnose_horizon_is_24h_each_side():
    c = code(NOW - 24 * 3600 + 30)
    assert enroll.diagnose(SECRET, c, NOW, P).matched
    d = enroll.diagnose(SECRET, c, NOW, P, horizon=3600)
    assert not d.matched or d.offset_steps != (-24 * 3600 + 30) // 30


@pytest.mark.parametrize("offset", [-180, 300, 0, -86000])
def test_resync_finds_drift_from_two_consecutive_codes(offset):
    t = NOW + offset
    r = enroll.resync(SECRET, code(t - 30), code(t), NOW, P)
    assert r.error == "" and r.drift == int(t // 30) - int(NOW // 30) and r.step == int(t // 30)


def test_resync_refuses_non_consecutive_reversed_and_used():
    assert enroll.resync(SECRET, code(NOW - 60), code(NOW), NOW, P).drift is None
    assert enroll.resync(SECRET, code(NOW), code(NOW - 30), NOW, P).drift is None
    r = enroll.resync(SECRET, code(NOW - 30), code(NOW), NOW, P, last_step=int(NOW // 30))
    assert r.drift is None and "already used" in r.error


@pytest.mark.parametrize("text,expected", [
    ("20261129044812Z", 1795927692.0), (b"20261129044812Z", 1795927692.0),
    ("20261129044812.5Z", 1795927692.5), ("20261129054812+0100", 1795927692.0),
    ("202611290448Z", 1795927680.0), ("garbage", None), (None, None), ("20261399000000Z", None),
])
def test_generalized_time(text, expected):
    assert enroll.parse_generalized_time(text) == expected


@pytest.mark.parametrize("reset,changed,enrolled,off", [
    (None, None, None, False),
    (b"FALSE", b"20261129044812Z", None, False),
    (b"TRUE", b"20261129044812Z", b"20261129044811Z", True),   # enrolled before the reset
    (b"TRUE", b"20261129044812Z", b"20261129044812Z", False),  # same second: provisioning keeps it
    (b"TRUE", b"20261129044812Z", b"20261129044813Z", False),  # re-enrolled after the reset
    (b"TRUE", None, b"20261129044813Z", True),
    (b"TRUE", b"20261129044812Z", None, True),                 # token of unknown age
    ("true", "20261129044812Z", "bad", True),
])
def test_reset_disables_token(reset, changed, enrolled, off):
    assert enroll.reset_disables_token(reset, changed, enrolled) is off
