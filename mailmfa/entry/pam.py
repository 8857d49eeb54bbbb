"""PAM entry point, run by pam_exec (any PAM-using service: Dovecot 2.3/2.4 `passdb pam`,
saslauthd, ...):

    auth    required  pam_exec.so expose_authtok quiet /usr/bin/mailmfa-pam [--config FILE] [--socket PATH]

pam_exec gives the password+code on stdin (at most 511 bytes; Linux-PAM < 1.4 appended
a NUL), the user in PAM_USER, the client address in PAM_RHOST, the PAM service in
PAM_SERVICE and the stack in PAM_TYPE. Exit 0 is the only success.

PAM_TYPE: only `auth` (or no PAM_TYPE, when run by hand) runs the check. `account`,
`open_session` and `close_session` exit 0 without reading anything: the decision was
made in the auth stack, and Dovecot's passdb pam always calls the account stack after
it. `password` (a password change) and anything unknown exit 1: mailmfa changes no
passwords, and an unexpected use must not succeed.

--socket PATH: ask mailmfa-authd at PATH before reading any config (the same fast path as
mailmfa-checkpassword --socket: no config, no dataclasses, no typing, no LDAP stack); the
config is read only when the daemon cannot be reached, and `[daemon] fallback` decides.
"""

import os
import sys

from mailmfa.entry import EXIT_FAIL, EXIT_OK, EXIT_TEMPFAIL, EXIT_USAGE, parse_options

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs a login ~4 ms
if TYPE_CHECKING:  # annotations only: the login path imports these lazily
    from mailmfa.core.types import Outcome, Request
    from mailmfa.log import LoginLog

MAX_AUTHTOK = 511  # PAM_MAX_RESP_SIZE - 1: what pam_exec can send

NEUTRAL_TYPES = frozenset({"account", "open_session", "close_session"})

USAGE = """\
usage: mailmfa-pam [--config FILE] [--socket PATH]

Checks a login (password with the authenticator code appended) for pam_exec:

    auth     required  pam_exec.so expose_authtok quiet log=/var/log/mailmfa/pam.log /usr/bin/mailmfa-pam
    account  required  pam_permit.so

(log= keeps the program's one line per login: pam_exec discards its stderr otherwise.)

Reads the password+code from standard input (at most 511 bytes; one trailing NUL
is ignored), the user from PAM_USER, the client address from PAM_RHOST and the
service from PAM_SERVICE. Config: --config FILE, else $MAILMFA_CONFIG, else
/etc/mailmfa/mailmfa.toml.

When mailmfa-authd runs, the login is sent to it ([daemon] use = "auto": when its
socket exists). --socket PATH is the fast way: ask the daemon at PATH before even
reading the config, which is then read only if the daemon cannot be reached
([daemon] fallback decides: check here, or fail temporarily). A daemon that was
reached but did not answer in time is a temporary failure.

PAM_TYPE=auth (or unset) runs the check; account, open_session and close_session
exit 0 at once (the auth stack decided); password and any other type exit 1.

Exit status: 0 success; 1 authentication failed; 111 temporary failure (backend
unreachable, config error, internal error; pam_exec reports every non-zero status
as a failure, the log line tells them apart); 2 usage error.
"""


def read_authtok(fd: int = 0, limit: int = MAX_AUTHTOK) -> bytes | None:
    """The token from `fd`, without one trailing NUL; None when longer than `limit`."""
    chunks = []
    size = 0
    while True:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        size += len(chunk)
        if size > limit + 1:  # room for the NUL older pam_exec versions append
            return None
        chunks.append(chunk)
    data = b"".join(chunks)
    if data.endswith(b"\0"):
        data = data[:-1]
    if len(data) > limit:
        return None
    return data


def _parse_argv(argv: list[str]) -> "str | tuple[str | None, str | None]":
    """(config path, daemon socket), each None when not given, or a string naming the
    usage problem."""
    parsed = parse_options(argv)
    if isinstance(parsed, str):
        return parsed
    opts, i = parsed
    if i < len(argv):
        return f"unexpected argument {argv[i]}"
    return opts["--config"], opts["--socket"]


def decide(req: "Request", config_path: str | None, env: dict[str, str],
           extra: dict[str, object], daemon_down: bool = False) -> "Outcome":
    """The verdict for `req`, for mailmfa-pam and the pam_python module alike: the resident
    daemon's when `[daemon] use` says to ask it (see check_in_process), else decided here.
    `daemon_down`: --socket found no daemon; `[daemon] fallback` decides."""
    from mailmfa.entry.common import check_in_process

    return check_in_process(req, config_path, env, extra, daemon_down)


def run(argv: list[str], env: dict[str, str], stdin_fd: int = 0) -> int:
    """Everything but the top-level catch; returns the exit code."""
    if argv and argv[0] in ("-h", "--help"):
        sys.stdout.write(USAGE)
        return EXIT_OK
    if argv and argv[0] == "--version":
        from mailmfa import __version__

        sys.stdout.write(f"mailmfa-pam {__version__}\n")
        return EXIT_OK
    parsed = _parse_argv(argv)
    if isinstance(parsed, str):
        sys.stderr.write(f"mailmfa-pam: {parsed}\n")
        return EXIT_USAGE
    config_path, socket_path = parsed

    pam_type = env.get("PAM_TYPE", "auth")
    if pam_type in NEUTRAL_TYPES:
        return EXIT_OK

    from mailmfa.log import LoginLog

    service = env.get("PAM_SERVICE", "")
    rip = env.get("PAM_RHOST", "")
    logline = LoginLog(rip, service)
    user = env.get("PAM_USER", "")
    logline.fields["user"] = user[:256] or None
    if pam_type != "auth":
        return logline.finish("fail", "unsupported_pam_type", EXIT_FAIL, pam_type=pam_type[:32])
    if env.get("MAILMFA_NESTED"):
        # started by mailmfa's own password check: [password] pam_service names a
        # service that runs mailmfa-pam. Stop here rather than recurse.
        return logline.finish("tempfail", "pam_recursion", EXIT_TEMPFAIL)

    raw = read_authtok(stdin_fd)
    if raw is None or b"\0" in raw or not user:
        return logline.finish("fail", "bad_input", EXIT_FAIL)
    try:
        secret = raw.decode("utf-8")
    except UnicodeDecodeError:
        return logline.finish("fail", "bad_input", EXIT_FAIL)

    if socket_path:  # fast path: no config, no dataclasses, no LDAP stack
        from mailmfa import client
        from mailmfa.daemon import protocol

        answer = client.ask_socket(socket_path, protocol.auth_request(user, secret, service, rip))
        if answer is not None:
            return _conclude(logline, answer[0], answer[1], {"via": "authd"})

    from mailmfa.core.types import Request

    extra: dict[str, object] = {}
    outcome = decide(Request(user, secret, service, rip), config_path, env, extra, daemon_down=bool(socket_path))
    return _conclude(logline, outcome.verdict.name, outcome.reason, extra)


_RESULTS = {  # the daemon's answer words and Verdict names alike
    "OK": ("ok", EXIT_OK), "ACCEPT": ("ok", EXIT_OK),
    "TEMPFAIL": ("tempfail", EXIT_TEMPFAIL),
}


def _conclude(logline: "LoginLog", verdict: str, reason: str, extra: dict[str, object]) -> int:
    """The log line and exit status for a verdict; anything but OK/ACCEPT and TEMPFAIL is a
    failure (fail closed)."""
    result, code = _RESULTS.get(verdict, ("fail", EXIT_FAIL))
    return logline.finish(result, reason, code, **extra)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry. Catches everything, SystemExit included: for pam_exec exit 0
    means "let them in", so only run()'s explicit accept may produce it; any exception
    is a temporary failure (111)."""
    try:
        code = run(sys.argv[1:] if argv is None else argv, dict(os.environ))
    except BaseException as exc:  # noqa: BLE001 - fail closed whatever happened
        try:
            sys.stderr.write(f"mailmfa result=tempfail reason=internal_error error={type(exc).__name__}\n")
        except (OSError, ValueError):
            pass  # no log is better than a different exit code
        code = EXIT_TEMPFAIL
    sys.exit(code)


if __name__ == "__main__":
    main()
