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


@pytest.mark.parametrize("argv,expected", [
    (["--socket", "/run/a.sock"], (None, "/run/a.sock")),
    (["--socket=/run/a.sock", "--config", "/etc/m.toml"], ("/etc/m.toml", "/run/a.sock")),
    (["--config=/etc/m.toml"], ("/etc/m.toml", None)),
    (["--socket"], "--socket needs a PATH"),
    (["--sockets", "/x"], "unexpected argument --sockets"),
])
def test_parse_argv(argv, expected):
    assert entry._parse_argv(argv) == expected


def _answering(tmp_path, answer: bytes):
    """A UNIX socket that reads one request and answers `answer` (the daemon's side of one
    exchange, to test the entry's mapping without a directory behind it)."""
    import socket
    import threading

    path = tmp_path / "d.sock"
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(path))
    srv.listen(1)

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(answer)
        srv.close()

    threading.Thread(target=serve, daemon=True).start()
    return path


@pytest.mark.parametrize("answer,code,words", [
    (b"OK ok\n", 0, "result=ok user=alice rip=192.0.2.1 reason=ok via=authd"),
    (b"FAIL bad_code\n", 1, "result=fail user=alice rip=192.0.2.1 reason=bad_code via=authd"),
    (b"TEMPFAIL ldap_unavailable\n", 111, "result=tempfail user=alice rip=192.0.2.1 reason=ldap_unavailable"),
    (b"YES\n", 111, "reason=daemon_bad_answer via=authd"),
    (b"", 111, "reason=daemon_bad_answer via=authd"),
])
def test_socket_answers_map_to_exit_codes_without_reading_config(tmp_path, capsys, answer, code, words):
    sock = _answering(tmp_path, answer)
    env = {"PAM_TYPE": "auth", "PAM_USER": "alice", "PAM_RHOST": "192.0.2.1"}
    argv = ["--socket", str(sock), "--config", "/nonexistent/mailmfa.toml"]
    assert _run(env, b"pw123456", argv) == code
    err = capsys.readouterr().err
    assert words in err and "config_error" not in err and "pw123456" not in err


def test_unreachable_socket_reads_the_config(tmp_path, capsys):
    import socket

    stale = tmp_path / "stale.sock"  # a socket file nobody listens on
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(stale))
    env = {"PAM_TYPE": "auth", "PAM_USER": "alice"}
    assert _run(env, b"pw123456", ["--socket", str(stale), "--config", "/nonexistent/mailmfa.toml"]) == 111
    assert "reason=config_error" in capsys.readouterr().err


def test_socket_is_not_asked_for_neutral_types(tmp_path):
    assert _run({"PAM_TYPE": "account", "PAM_USER": "alice"}, b"", ["--socket", str(tmp_path / "none")]) == 0
