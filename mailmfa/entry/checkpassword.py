"""Dovecot checkpassword entry point (the protocol djb defined, as Dovecot 2.3 runs it).

    mailmfa-checkpassword [--config FILE] [--socket PATH] REPLY-PROGRAM [ARGS...]

Reads `user\\0password\\0timestamp\\0` from fd 3, decides, and then
  - success: sets USER and execs the reply program (Dovecot's checkpassword-reply);
  - exit 1: wrong credentials (the client sees "Authentication failed");
  - exit 3: unknown user on a userdb lookup (AUTHORIZED=1);
  - exit 111: temporary failure (directory down, config error, anything unexpected),
    so an outage never looks like a wrong password and never lets anyone in;
  - exit 2: usage error (run by hand without a reply program).
"""

import os
import sys

from mailmfa.entry import EXIT_FAIL, EXIT_TEMPFAIL, EXIT_USAGE, parse_options

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs a login ~4 ms
if TYPE_CHECKING:  # annotations only: the login path imports these lazily
    from mailmfa.config import Config
    from mailmfa.core.types import Outcome

EXIT_NOUSER = 3  # checkpassword's own: unknown user on a userdb lookup
MAX_INPUT = 1024  # Dovecot refuses user+password over 512 bytes before it runs us

USAGE = """\
usage: mailmfa-checkpassword [--config FILE] [--socket PATH] REPLY-PROGRAM [ARGS...]

Checks a mail login (password with the authenticator code appended) for Dovecot's
checkpassword passdb/userdb. Input on file descriptor 3: user NUL password NUL
timestamp NUL. Config: --config FILE, else $MAILMFA_CONFIG, else
/etc/mailmfa/mailmfa.toml.

When mailmfa-authd runs, the login is sent to it ([daemon] use = "auto": when its
socket exists). --socket PATH is the fast way: ask the daemon at PATH before even
reading the config, which is then read only if the daemon cannot be reached
([daemon] fallback decides: check here, or fail temporarily).

Exit status: success execs REPLY-PROGRAM with USER set; 1 authentication failed;
3 unknown user (userdb lookup); 111 temporary failure (LDAP unreachable, config
error, internal error); 2 usage error.
"""


def read_fd3(limit: int = MAX_INPUT) -> bytes | None:
    """Read the request from fd 3; None when it is larger than `limit` (refused whole)."""
    chunks = []
    size = 0
    while True:
        chunk = os.read(3, 4096)
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def parse_request(data: bytes) -> tuple[str, str] | None:
    """(user, password) from the fd 3 bytes, or None when malformed or not UTF-8."""
    fields = data.split(b"\0")
    if len(fields) < 3:
        return None
    try:
        return fields[0].decode("utf-8"), fields[1].decode("utf-8")
    except UnicodeDecodeError:
        return None


def _parse_argv(argv: list[str]) -> "tuple[str | None, list[str], str | None] | str":
    """(config path, reply command, daemon socket) or a string naming the usage problem."""
    parsed = parse_options(argv)
    if isinstance(parsed, str):
        return parsed
    opts, i = parsed
    reply = argv[i:]
    if reply and reply[0] == "--":
        reply = reply[1:]
    elif reply and reply[0].startswith("-"):
        return f"unknown option {reply[0]}"
    if not reply:
        return "missing REPLY-PROGRAM (Dovecot appends it; see --help)"
    return opts["--config"], reply, opts["--socket"]


def _remote_ip(env: dict[str, str]) -> str:
    return env.get("TCPREMOTEIP") or env.get("REMOTE_IP") or env.get("AUTH_RIP") or ""


def run(argv: list[str], env: dict[str, str]) -> int:
    """Everything but the top-level catch; returns an exit code or execs."""
    if argv and argv[0] in ("-h", "--help"):
        sys.stdout.write(USAGE)
        return 0
    if argv and argv[0] == "--version":
        from mailmfa import __version__

        sys.stdout.write(f"mailmfa-checkpassword {__version__}\n")
        return 0
    parsed = _parse_argv(argv)
    if isinstance(parsed, str):
        sys.stderr.write(f"mailmfa-checkpassword: {parsed}\n")
        return EXIT_USAGE
    config_path, reply, socket_path = parsed

    from mailmfa.log import LoginLog

    service = env.get("SERVICE") or env.get("AUTH_SERVICE") or ""
    rip = _remote_ip(env)
    lookup = env.get("AUTHORIZED") == "1"
    logline = LoginLog(rip, service)
    finish = logline.finish

    raw = read_fd3()
    request = parse_request(raw) if raw is not None else None
    if request is None:
        return finish("fail", "bad_input", EXIT_FAIL)
    user, secret = request
    logline.fields["user"] = user[:256]
    if env.get("CREDENTIALS_LOOKUP") == "1":
        # Dovecot asks for the stored password (CRAM-MD5, DIGEST-MD5, ...): there is none a
        # client could compute a response from, and a userdb-style "exists" answer must not
        # be read as anything else
        return finish("fail", "no_plaintext", EXIT_FAIL)

    def conclude(verdict: str, reason: str) -> int:
        """Map the daemon's (or the in-process) verdict to the checkpassword protocol."""
        if lookup:
            if verdict == "OK":
                finish("ok", "userdb_lookup", 0, lookup="userdb")
                return _exec_reply(reply, dict(env, USER=user, AUTHORIZED="2"))
            if verdict == "TEMPFAIL":
                return finish("tempfail", reason, EXIT_TEMPFAIL, lookup="userdb")
            return finish("fail", "unknown_user", EXIT_NOUSER, lookup="userdb")
        if verdict == "OK":
            finish("ok", reason, 0)
            return _exec_reply(reply, dict(env, USER=user))
        if verdict == "TEMPFAIL":
            return finish("tempfail", reason, EXIT_TEMPFAIL)
        return finish("fail", reason, EXIT_FAIL)

    if lookup and not user:
        return conclude("FAIL", "unknown_user")

    tried_socket = False
    if socket_path:  # fast path: no config, no dataclasses, no LDAP stack
        from mailmfa import client
        from mailmfa.daemon import protocol

        line = protocol.lookup_request(user) if lookup else protocol.auth_request(user, secret, service, rip)
        answer = client.ask_socket(socket_path, line)
        if answer is None:
            tried_socket = True
        else:
            logline.fields["via"] = "authd"
            return conclude(*answer)

    from mailmfa import config as cfgmod
    from mailmfa.entry.common import load_config

    try:
        cfg = load_config(config_path, env)
    except cfgmod.ConfigError as exc:
        return finish("tempfail", "config_error", EXIT_TEMPFAIL, error=str(exc))

    from mailmfa.client import UNREACHABLE, ask_daemon, lookup_daemon
    from mailmfa.core.types import Request, Verdict

    request_obj = Request(user, secret, service, rip)
    if tried_socket:
        if not cfg.daemon.fallback:
            return finish("tempfail", UNREACHABLE, EXIT_TEMPFAIL)
        outcome = None
    else:  # client mode from the config ([daemon] use), when the daemon runs
        outcome = lookup_daemon(cfg, user) if lookup else ask_daemon(cfg, request_obj)
    if outcome is not None:
        logline.fields["via"] = "authd"
    elif lookup:
        outcome = _lookup_in_process(cfg, user)
    else:
        from mailmfa.entry.common import authenticate_here

        outcome = authenticate_here(cfg, request_obj)
    names = {Verdict.ACCEPT: "OK", Verdict.REJECT: "FAIL", Verdict.TEMPFAIL: "TEMPFAIL"}
    return conclude(names[outcome.verdict], outcome.reason)


def _lookup_in_process(cfg: "Config", user: str) -> "Outcome":
    """userdb lookup here: an Outcome (ACCEPT = the user exists)."""
    from mailmfa.entry.common import build_directory
    from mailmfa.service import userdb_lookup

    directory = build_directory(cfg)
    try:
        return userdb_lookup(directory, user)
    finally:
        directory.close()


def _exec_reply(reply: list[str], env: dict[str, str]) -> int:
    try:
        os.execve(reply[0], reply, env)
    except OSError as exc:
        from mailmfa import log

        log.emit({"result": "tempfail", "reason": "reply_exec_failed", "program": reply[0],
                  "error": exc.strerror})
    return EXIT_TEMPFAIL


def main(argv: list[str] | None = None) -> int:
    """Console-script entry. Catches everything: an exception must be a temporary
    failure (111), never Python's default exit 1, which Dovecot reads as a wrong password."""
    try:
        code = run(sys.argv[1:] if argv is None else argv, dict(os.environ))
    except BaseException as exc:  # noqa: BLE001 - fail closed whatever happened
        if isinstance(exc, SystemExit) and exc.code == 0:
            code = 0
        else:
            try:
                sys.stderr.write(
                    f"mailmfa result=tempfail reason=internal_error error={type(exc).__name__}\n"
                )
            except Exception:  # noqa: BLE001
                pass
            code = EXIT_TEMPFAIL
    sys.exit(code)


if __name__ == "__main__":
    main()
