"""mailmfa-authd as a test fixture: a real daemon process on a socket in a work directory."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

from servers import _Process, _tail, poll_until

LUA_SCRIPT = Path(__file__).resolve().parents[2] / "conf" / "dovecot" / "mailmfa.lua"


def authd_bin() -> str:
    """The venv's console script (the tests run from the venv `make test` builds)."""
    script = Path(sys.prefix) / "bin" / "mailmfa-authd"
    return str(script)


def ask(path: Path | str, line: bytes, timeout: float = 10) -> bytes:
    """Send raw request bytes, return the raw answer line (b"" when the daemon hung up)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        try:
            sock.sendall(line)
        except (BrokenPipeError, ConnectionResetError):
            # a daemon that refuses the connection (busy) answers and closes at once, maybe
            # before this send: its answer is still there to read
            pass
        return read_answer(sock)


def read_answer(sock: socket.socket) -> bytes:
    """One answer line (b"" or a partial line when the daemon hung up first)."""
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = sock.recv(256)
        if not chunk:
            break
        buf += chunk
    return buf


class Authd(_Process):
    """`mailmfa-authd --foreground --config CONFIG`; ready when PING is answered."""

    name = "authd"

    def __init__(self, workdir: Path, config: Path, socket_path: Path) -> None:
        super().__init__(workdir)
        self.config = config
        self.socket_path = socket_path

    def _command(self) -> list[str]:
        return [authd_bin(), "--foreground", "--config", str(self.config)]

    def _pings(self) -> bool:
        self._check_alive()
        try:
            return ask(self.socket_path, b"MFA1 PING\n", 1) == b"OK pong\n"
        except OSError:
            return False

    def _wait_ready(self, timeout: float) -> None:
        poll_until(self._pings, timeout, f"mailmfa-authd on {self.socket_path}",
                   on_timeout=lambda: _tail(self.log_path))

    def hup(self) -> None:
        """SIGHUP: reload the config."""
        import signal

        assert self._proc is not None
        self._proc.send_signal(signal.SIGHUP)

    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc else None


def daemon_toml(socket_path: Path, **keys: object) -> str:
    """A [daemon] section for mfa.write_config(tail=...)."""
    lines = ["[daemon]", f'socket = "{socket_path}"']
    for k, v in keys.items():
        if isinstance(v, bool):
            lines.append(f"{k} = {'true' if v else 'false'}")
        elif isinstance(v, str):
            lines.append(f'{k} = "{v}"')
        else:
            lines.append(f"{k} = {v}")
    return "\n".join(lines) + "\n"


def lua_passdb(socket_path: Path, *, worker: bool = True, script: Path | None = None,
               target: tuple[str, str, str] | None = None) -> tuple[str, str]:
    """(passdb body, extra config) for `passdb lua` as the shipped snippet writes it, for the
    installed Dovecot; on 2.3 the extra config ends with the snippet's global settings
    (auth_cache_size = 0), so a caller's own settings go before it, as in dovecot.conf.

    `worker`: in auth workers (the snippet's choice) or in the auth process. `script`: the
    Lua file, used where it is; by default a copy of the shipped one beside the socket (the
    test's 0755 workdir), as Dovecot's auth process (the dovecot user) must read it and the
    checkout may sit where that user cannot enter. `target`: what the script is told, as
    (2.4 lua_settings key, 2.3 environment variable, value); by default the daemon's socket."""
    import shutil

    from servers import Dovecot, snippet_globals

    if script is None:
        script = socket_path.parent / LUA_SCRIPT.name
        shutil.copyfile(LUA_SCRIPT, script)
        script.chmod(0o644)
    key, env, value = target or ("mailmfa_socket", "MAILMFA_AUTHD_SOCKET", str(socket_path))
    if Dovecot.version() >= (2, 4):  # conf/dovecot/auth-mailmfa-lua-2.4.conf.ext's passdb, as shipped
        body = shipped_lua_passdb_24()
        body = body.replace("lua_file = /etc/dovecot/mailmfa.lua", f"lua_file = {script}")
        body = body.replace("use_worker = yes", f"use_worker = {'yes' if worker else 'no'}")
        body = body.replace("mailmfa_socket = /run/mailmfa/authd.sock", f"{key} = {value}")
        return "driver = lua\n" + body, ""
    args = shipped_lua_args_23().replace("/etc/dovecot/mailmfa.lua", str(script))
    if not worker:
        args = args.replace("blocking=yes", "blocking=no")
    return (f"driver = lua\nargs = {args}",
            f"import_environment = $import_environment {env}={value}\n"
            + snippet_globals(LUA_SCRIPT.parent / "auth-mailmfa-lua.conf.ext"))


def shipped_lua_passdb_24() -> str:
    """The body of the `passdb lua { }` block in conf/dovecot/auth-mailmfa-lua-2.4.conf.ext, as
    shipped (comments dropped), so the tests on Dovecot 2.4 prove the file admins copy."""
    import re

    text = (LUA_SCRIPT.parent / "auth-mailmfa-lua-2.4.conf.ext").read_text()
    match = re.search(r"(?ms)^passdb lua \{\n(.*?)^\}", text)
    assert match, "conf/dovecot/auth-mailmfa-lua-2.4.conf.ext has no `passdb lua { ... }` block"
    lines = [ln.strip() for ln in match.group(1).splitlines() if ln.strip() and not ln.strip().startswith("#")]
    body = "\n".join(lines)
    for expected in ("lua_file = /etc/dovecot/mailmfa.lua", "use_worker = yes",
                     "mailmfa_socket = /run/mailmfa/authd.sock"):
        assert expected in body, f"conf/dovecot/auth-mailmfa-lua-2.4.conf.ext changed shape: {body!r}"
    return body


def shipped_lua_args_23() -> str:
    """The `args =` of the 2.3 passdb block in conf/dovecot/auth-mailmfa-lua.conf.ext, as shipped."""
    import re

    text = (LUA_SCRIPT.parent / "auth-mailmfa-lua.conf.ext").read_text()
    match = re.search(r"(?m)^passdb \{\n  driver = lua\n  args = (file=/etc/dovecot/mailmfa\.lua .*)\n\}", text)
    assert match, "conf/dovecot/auth-mailmfa-lua.conf.ext: the 2.3 passdb block changed shape"
    return match.group(1)


def race(slapd: object, sock: Path | str, line: bytes, n: int) -> list[bytes]:
    """Send `line` on `n` connections at once while slapd is held (SIGSTOP), so every request
    waits on it and they really race when it resumes (DESIGN.md: 2 cores rarely overlap).
    Returns the answers, sorted."""
    import threading
    import time

    answers: list[bytes] = []
    slapd.pause()  # type: ignore[attr-defined]
    try:
        threads = [threading.Thread(target=lambda: answers.append(ask(sock, line, 30))) for _ in range(n)]
        for t in threads:
            t.start()
        time.sleep(0.5)
    finally:
        slapd.resume()  # type: ignore[attr-defined]
    for t in threads:
        t.join(60)
    return sorted(answers)
