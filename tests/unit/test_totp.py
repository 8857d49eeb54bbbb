"""RFC 4226 Appendix D and RFC 6238 Appendix B vectors, and window edges."""

import pyotp
import pytest

from mailmfa.core.totp import hotp, matching_steps, time_step

RFC4226_KEY = b"12345678901234567890"
RFC4226 = ["755224", "287082", "359152", "969429", "338314",
           "254676", "287922", "162583", "399871", "520489"]

SEEDS = {
    "SHA1": b"12345678901234567890",
    "SHA256": b"12345678901234567890123456789012",
    "SHA512": b"1234567890123456789012345678901234567890123456789012345678901234",
}
RFC6238 = [  # (time, SHA1, SHA256, SHA512)
    (59, "94287082", "46119246", "90693936"),
    (1111111109, "07081804", "68084774", "25091201"),
    (1111111111, "14050471", "67062674", "99943326"),
    (1234567890, "89005924", "91819424", "93441116"),
    (2000000000, "69279037", "90698825", "38618901"),
    (20000000000, "65353130", "77737706", "47863826"),
]


@pytest.mark.parametrize("counter,expected", enumerate(RFC4226))
def test_rfc4226_vectors(counter, expected):
    assert hotp(RFC4226_KEY, counter) == expected


@pytest.mark.parametrize("row", RFC6238)
@pytest.mark.parametrize("index,algorithm", [(1, "SHA1"), (2, "SHA256"), (3, "SHA512")])
def test_rfc6238_vectors(row, index, algorithm):
    now = row[0]
    assert hotp(SEEDS[algorithm], time_step(now, 30), 8, algorithm) == row[index]


def test_agrees_with_pyotp_for_random_keys():
    import base64
    import os

    for _ in range(50):
        key = os.urandom(20)
        now = int.from_bytes(os.urandom(4), "big")
        ref = pyotp.TOTP(base64.b32encode(key).decode()).at(now)
        assert hotp(key, time_step(now)) == ref


def test_window_edges():
    key = b"k" * 20
    center = 1000
    for offset in (-1, 0, 1):
        code = hotp(key, center + offset)
        assert center + offset in matching_steps(key, code, center, 1)
    for offset in (-2, 2):
        code = hotp(key, center + offset)
        assert center + offset not in matching_steps(key, code, center, 1)
    if hotp(key, center + 1) != hotp(key, center):
        assert matching_steps(key, hotp(key, center + 1), center, 0) == []


def test_non_digit_code_never_matches():
    key = b"k" * 20
    code = hotp(key, 5)
    fullwidth = "".join(chr(ord(c) + 0xFEE0) for c in code)
    assert matching_steps(key, fullwidth, 5, 1) == []
