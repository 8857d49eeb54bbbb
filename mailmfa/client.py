"""Ask mailmfa-authd instead of checking in-process: the per-login programs' fast path.

Stdlib only (no ldap3, no pyotp, no logging): a checkpassword or PAM program that finds
the daemon's socket pays for starting Python and one round trip, nothing else.

    outcome = ask_daemon(config, request)
    if outcome is None:
        ...check in-process (mailmfa.service.authenticate)...

`[daemon] use` decides whether the daemon is asked: "never"; "auto" (default) when the
socket exists; "always" (a missing socket counts as a daemon that is down). A daemon that
cannot be reached gives None when `[daemon] fallback` is true (check in-process), else a
TEMPFAIL outcome. A daemon that was reached but did not answer in `[daemon] timeout` is
always a TEMPFAIL: it may have processed the login already (a retry in-process would then
see the code as replayed), and a slow daemon should not also get a second load.
"""

import os

from mailmfa.daemon import protocol

try:  # the C module itself: `import socket` costs a login ~5 ms (enum, selectors, collections)
    from _socket import AF_UNIX, SOCK_STREAM
    from _socket import socket as _stream_socket
except ImportError:  # not CPython
    from socket import AF_UNIX, SOCK_STREAM
    from socket import socket as _stream_socket

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs a login ~4 ms
if TYPE_CHECKING:
    from mailmfa.config import Config
    from mailmfa.core.types import Outcome, Request

DEFAULT_TIMEOUT = 15.0  # [daemon] timeout's default, for callers that read no config
UNREACHABLE = "daemon_unavailable"
NO_ANSWER = "daemon_timeout"
BAD_ANSWER = "daemon_bad_answer"


class Unreachable(Exception):
    """Nothing was sent: the daemon is not running (or the socket is not ours to use)."""


def exchange(path: str, line: bytes, timeout: float) -> tuple[str, str]:
    """Send one request line, return (verdict, reason). Raises Unreachable when nothing
    could be sent (no daemon), TimeoutError/OSError/ValueError after (no usable answer)."""
    sock = _stream_socket(AF_UNIX, SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except OSError as exc:
            raise Unreachable(exc.strerror or type(exc).__name__) from None
        try:
            sock.sendall(line)
        except (BrokenPipeError, ConnectionResetError):
            pass  # a daemon that turns the connection away (busy) answers and closes at once,
            # maybe before this send: its answer is still there to read
        buf = b""
        while not buf.endswith(b"\n") and len(buf) < 256:
            chunk = sock.recv(256)
            if not chunk:
                break
            buf += chunk
    finally:
        sock.close()
    parsed = protocol.parse_answer(buf)
    if parsed is None:
        raise ValueError("not an answer")
    return parsed


def ask_socket(path: str, line: bytes, timeout: float = DEFAULT_TIMEOUT) -> "tuple[str, str] | None":
    """(verdict, reason) from the daemon at `path`, or None when it could not be reached
    (nothing was sent: the caller may check elsewhere). A daemon that was reached but gave
    no usable answer is ("TEMPFAIL", NO_ANSWER or BAD_ANSWER): never retried elsewhere.
    The --socket fast path of the per-login programs: needs no config."""
    try:
        return exchange(path, line, timeout)
    except Unreachable:
        return None
    except TimeoutError:
        return "TEMPFAIL", NO_ANSWER
    except (OSError, ValueError):
        return "TEMPFAIL", BAD_ANSWER


def _ask(config: "Config", line: bytes, user: str) -> "Outcome | None":
    from mailmfa.core.types import Outcome, Verdict

    d = config.daemon
    if d.use == "never" or (d.use == "auto" and not os.path.exists(d.socket)):
        return None
    answer = ask_socket(d.socket, line, d.timeout)
    if answer is None:
        return None if d.fallback else Outcome(Verdict.TEMPFAIL, UNREACHABLE, user)
    verdicts = {"OK": Verdict.ACCEPT, "FAIL": Verdict.REJECT, "TEMPFAIL": Verdict.TEMPFAIL}
    return Outcome(verdicts[answer[0]], answer[1], user)


def ask_daemon(config: "Config", request: "Request") -> "Outcome | None":
    """The daemon's answer for one login, or None when the caller should check in-process."""
    line = protocol.auth_request(request.user, request.secret, request.service, request.rip)
    return _ask(config, line, request.user)


def lookup_daemon(config: "Config", user: str) -> "Outcome | None":
    """userdb lookup through the daemon: ACCEPT = the user exists, REJECT = unknown user;
    None when the caller should look up in-process."""
    return _ask(config, protocol.lookup_request(user), user)
