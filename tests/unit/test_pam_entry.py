"""mailmfa-pam's protocol handling before any backend is involved: bounded stdin, the
trailing NUL, PAM_TYPE, usage. Real pipes, real fds; no backends needed."""

import os

import pytest

from mailmfa.entry import pam as entry


def _fd_with(data: bytes) -> int:
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)
    return r


@pytest.mark.parametrize(
    "data,expected",
    [
        (b"pw123456", b"pw123456"),
        (b"pw123456\0", b"pw123456"),
        (b"pw123456\0\0", b"pw123456\0"),  # only one NUL is pam_exec's; the rest is refused later
        (b"", b""),
        (b"a" * 511, b"a" * 511),
        (b"a" * 511 + b"\0", b"a" * 511),
        (b"a" * 512, None),
        (b"a" * 5000, None),
    ],
)
def test_read_authtok(data, expected):
    fd = _fd_with(data)
    try:
        assert entry.read_authtok(fd) == expected
    finally:
        os.close(fd)


def _run(env, data=b"", argv=None, capsys=None):
    fd = _fd_with(data)
    try:
        return entry.run(argv or ["--config", "/nonexistent/mailmfa.toml"], env, fd)
    finally:
        os.close(fd)


@pytest.mark.parametrize("pam_type", ["account", "open_session", "close_session"])
def test_neutral_pam_types_succeed_without_reading(pam_type, capsys):
    assert _run({"PAM_TYPE": pam_type, "PAM_USER": "alice"}) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("pam_type", ["password", "chauthtok", "weird"])
def test_other_pam_types_fail_closed(pam_type, capsys):
    assert _run({"PAM_TYPE": pam_type, "PAM_USER": "alice"}, b"pw123456") == 1
    assert "reason=unsupported_pam_type" in capsys.readouterr().err


@pytest.mark.parametrize("data", [b"a" * 600, b"pw\0x123456", b"\xff\xfe123456"])
def test_bad_input_is_refused(data, capsys):
    assert _run({"PAM_TYPE": "auth", "PAM_USER": "alice"}, data) == 1
    assert "reason=bad_input" in capsys.readouterr().err


def test_missing_user_is_refused(capsys):
    assert _run({"PAM_TYPE": "auth"}, b"pw123456") == 1
    assert "reason=bad_input" in capsys.readouterr().err


def test_config_error_is_temporary_and_names_the_file(capsys):
    env = {"PAM_TYPE": "auth", "PAM_USER": "alice", "PAM_RHOST": "192.0.2.1", "PAM_SERVICE": "dovecot"}
    assert _run(env, b"pw123456") == 111
    err = capsys.readouterr().err
    assert "result=tempfail" in err and "reason=config_error" in err and "/nonexistent/mailmfa.toml" in err
    assert "rip=192.0.2.1" in err and "service=dovecot" in err
    assert "pw123456" not in err


def test_usage(capsys):
    assert entry.run(["--help"], {}, 0) == 0
    assert "pam_exec.so expose_authtok" in capsys.readouterr().out
    assert entry.run(["--bogus"], {}, 0) == 2
    assert entry.run(["--config"], {}, 0) == 2


def test_main_turns_any_exception_into_tempfail(monkeypatch):
    def boom(*a, **k):
        raise SystemExit(0)  # even a "successful" exit from deep inside is not an accept

    monkeypatch.setattr(entry, "run", boom)
    with pytest.raises(SystemExit) as exc:
        entry.main([])
    assert exc.value.code == 111
