"""Splitting password+code, and the code decision (replay, drift)."""

import pytest

from mailmfa.core.ldapescape import escape_filter_value, fill_filter
from mailmfa.core.policy import CODE_BAD, CODE_OK, CODE_REPLAY, check_code
from mailmfa.core.split import split_code
from mailmfa.core.totp import hotp
from mailmfa.core.types import Token, TotpParams


@pytest.mark.parametrize(
    "secret,digits,expected",
    [
        ("secret123456", 6, ("secret", "123456")),
        ("secret12345678", 8, ("secret", "12345678")),
        ("123456", 6, ("", "123456")),  # empty password part: split, refused later
        ("12345", 6, None),  # shorter than N
        ("", 6, None),
        ("secret12345a", 6, None),  # non-digit in the code part
        ("secret１２３４５６", 6, None),  # full-width digits
        ("secret١٢٣٤٥٦", 6, None),  # Arabic-Indic digits
        ("pass word 000000", 6, ("pass word ", "000000")),
        ("päss123456", 6, ("päss", "123456")),
    ],
)
def test_split(secret, digits, expected):
    assert split_code(secret, digits) == expected


def _token(last=None, drift=0, window=1):
    return Token("uid=a", b"0123456789abcdefghij", TotpParams(window=window), last, drift)


NOW = 1_700_000_000.0
STEP = int(NOW // 30)


def test_current_code_ok_and_earliest_fresh_step_recorded():
    tok = _token()
    code = hotp(tok.secret, STEP)
    res = check_code(tok, code, NOW)
    assert res.result == CODE_OK and res.step == STEP


def test_replay_of_same_or_earlier_step():
    code = hotp(b"0123456789abcdefghij", STEP)
    assert check_code(_token(last=STEP), code, NOW).result == CODE_REPLAY
    assert check_code(_token(last=STEP + 1), code, NOW).result == CODE_REPLAY
    assert check_code(_token(last=STEP - 1), code, NOW).result == CODE_OK


def test_three_steps_old_is_bad():
    code = hotp(b"0123456789abcdefghij", STEP - 3)
    assert check_code(_token(), code, NOW).result == CODE_BAD


def test_drift_shifts_the_window():
    code = hotp(b"0123456789abcdefghij", STEP - 10)
    assert check_code(_token(), code, NOW).result == CODE_BAD
    res = check_code(_token(drift=-10), code, NOW)
    assert res.result == CODE_OK and res.step == STEP - 10


@pytest.mark.parametrize(
    "user,escaped",
    [("*", r"\2a"), (")(uid=*", r"\29\28uid=\2a"), ("a\\b", r"a\5cb"), ("a\0", r"a\00"),
     ("alice", "alice")],
)
def test_filter_escaping(user, escaped):
    assert escape_filter_value(user) == escaped
    assert fill_filter("(uid={user})", user) == f"(uid={escaped})"
