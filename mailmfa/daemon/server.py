"""mailmfa-authd: a resident process answering logins with warm LDAP connections.

Starting Python and importing ldap3 for each login costs ~90 ms; a daemon pays that once.
Every request goes through the same mailmfa.service.authenticate() as the in-process
checkpassword path, so the login decision is the same whichever way Dovecot asks.

Shape: the main thread accepts connections and handles signals (through a wakeup pipe,
so a reload never runs inside a signal handler); each connection gets a thread (at most
[daemon] max_connections), which reads bounded, deadline-limited request lines. Only a
complete, parsed request takes an LDAP connection from a small pool, so a stalled or
hostile client holds one cheap thread and nothing the other logins need.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import queue
import select
import signal
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from mailmfa import log
from mailmfa.backends.ports import BackendUnavailable
from mailmfa.backends.state import MemoryReuseStore
from mailmfa.config import Config, ConfigError, load, resolve_path
from mailmfa.core.types import Outcome, Request, Verdict
from mailmfa.daemon import protocol
from mailmfa.service import MAX_USER, authenticate, reuse_enabled, userdb_lookup

USAGE = """\
usage: mailmfa-authd [--config FILE] [--foreground] [--pid-file FILE] [--check]
       mailmfa-authd --help | --version

The mailmfa authentication daemon: answers login checks from mailmfa-checkpassword,
mailmfa-pam and Dovecot's Lua passdb (conf/dovecot/mailmfa.lua) on a UNIX socket
([daemon] socket, mode 0660, group [daemon] group), keeping LDAP connections warm.

  --config FILE    config (else $MAILMFA_CONFIG, else /etc/mailmfa/mailmfa.toml)
  --foreground     stay in the foreground and log to stderr (systemd, tests);
                   otherwise fork once the socket listens and log to syslog (auth)
  --pid-file FILE  write the daemon's PID there
  --check          validate the config, read the secret file, and exit
  --version        print the version and exit

Signals: SIGHUP reloads the config (a bad new config is logged and the old one kept;
[daemon] socket and group changes need a restart); SIGTERM/SIGINT stop cleanly and
remove the socket.
Exit status: 0 stopped cleanly / config valid; 1 config error; 2 usage error;
3 cannot listen (socket in use by a running daemon, permissions, unknown group).
"""

EXIT_CONFIG = 1
EXIT_USAGE = 2
EXIT_LISTEN = 3
SHUTDOWN_GRACE = 5.0  # seconds in-flight requests get at SIGTERM
CONTROL_SIGNALS = {signal.SIGHUP, signal.SIGTERM, signal.SIGINT}


class _Syslog:
    """A text stream writing lines to syslog: log.emit() needs only write() and flush()."""

    def __init__(self) -> None:
        import syslog

        syslog.openlog("mailmfa-authd", syslog.LOG_PID, syslog.LOG_AUTH)
        self._syslog = syslog

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line:
                self._syslog.syslog(self._syslog.LOG_INFO, line)
        return len(text)

    def flush(self) -> None:
        pass


class DirectoryPool:
    """At most `size` directories (LDAP connections), created on first use, reused while they
    work. A directory that raised something unexpected is dropped and a fresh one made."""

    def __init__(self, factory: Callable[[], Any], size: int) -> None:
        self._factory = factory
        self._free: queue.LifoQueue[list[Any]] = queue.LifoQueue()
        for _ in range(size):
            self._free.put([None, False])  # [directory or None, has served a request]
        self._closed = False

    def acquire(self, timeout: float) -> list[Any] | None:
        """A slot [directory, warm]; None when every connection stayed busy for `timeout`."""
        try:
            slot = self._free.get(timeout=timeout)
        except queue.Empty:
            return None
        if slot[0] is None:
            try:
                slot[0], slot[1] = self._factory(), False
            except BaseException:
                self._free.put(slot)  # never lose a slot
                raise
        return slot

    def release(self, slot: list[Any], broken: bool = False, warm: bool = True) -> None:
        """Give a slot back; `warm` False when its connection just failed (a retry on a
        connection made since would only double an outage's wait)."""
        if broken or self._closed:
            _close_quietly(slot[0])
            slot[0], slot[1] = None, False
        else:
            slot[1] = warm
        self._free.put(slot)

    def close(self) -> None:
        """Close idle directories now and busy ones when they come back (after a reload)."""
        self._closed = True
        while True:
            try:
                slot = self._free.get_nowait()
            except queue.Empty:
                break
            _close_quietly(slot[0])
        # slots in use are closed by release(); the queue is left empty


def _close_quietly(directory: Any) -> None:
    if directory is not None:
        with contextlib.suppress(Exception):  # closing never matters more than serving
            directory.close()


class _WriteGuard:
    """Wraps a directory to know whether a retry is safe: never after a write was attempted
    (record_success may have landed before the connection broke; a retry would call it a replay).

    Every method but the known read-only ones counts as a write, so a method the Directory port
    gains later is safe by default (no retry) without this class having to learn it."""

    READ_ONLY = frozenset({"lookup", "verify_password", "close"})

    def __init__(self, directory: Any) -> None:
        self._d = directory
        self.wrote = False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._d, name)
        if name in self.READ_ONLY or not callable(attr):
            return attr

        def write(*args: Any, **kwargs: Any) -> Any:
            self.wrote = True
            return attr(*args, **kwargs)

        return write


DirectoryFactory = Callable[[Config, dict], Any]  # (config, params cache) -> a Directory


class _State:
    """What a request needs, swapped as a whole on reload (a request keeps the one it started with)."""

    def __init__(self, config: Config, directory_factory: DirectoryFactory) -> None:
        self.config = config
        self.params_cache: dict[bytes, tuple[float, Any]] = {}
        self.pool = DirectoryPool(lambda: directory_factory(config, self.params_cache), config.daemon.pool_size)


PARAMS_TTL = 60.0  # seconds a TOTP params entry is reused from memory


def ldap_client_for(config: Config) -> str:
    """The LDAP library the daemon uses: [daemon] ldap_client, with "auto" meaning python-ldap
    when it is installed (a sixth of ldap3's CPU per login, CPU otherwise taken from Dovecot)
    and ldap3 otherwise. Raises ConfigError when "python-ldap" is asked for but missing."""
    wanted = config.daemon.ldap_client
    if wanted == "ldap3":
        return wanted
    try:  # through ldapc: it sets LDAPNOINIT before libldap is loaded
        import mailmfa.daemon.ldapc  # noqa: F401
    except ImportError:
        if wanted == "auto":
            return "ldap3"
        raise ConfigError(f"{config.path}: [daemon] ldap_client: python-ldap is not installed "
                          "(Debian: apt-get install python3-ldap)") from None
    return "python-ldap"


def _ldap_directory(config: Config, cache: dict[bytes, tuple[float, Any]]) -> Any:
    """A directory for the pool: LdapDirectory (ldap3), or when ldap_client_for() says
    "python-ldap" the same class on libldap (mailmfa/daemon/ldapc.py: 0.32
    instead of 1.82 ms of daemon CPU per login, bench/authd_cpu.py).

    Either way its params lookups go through `cache`, shared by the pool: a params entry
    (digits, algorithm, period, window) is shared by many tokens and hardly ever changes, and
    reading it costs one LDAP search of the five a login needs. `cache` belongs to one config
    (a reload starts empty); dict get/set are atomic, and two threads missing at once only read
    the entry twice.

    Other `[store]`/`[password]` pairs (single-host mode, mixed) get the same backends as every
    per-login program (entry.common.build_directory), without the LDAP-only optimisations.
    """
    if config.store.backend != "ldap" or config.password.backend != "ldap":
        from mailmfa.entry.common import build_directory

        return build_directory(config)
    if ldap_client_for(config) == "python-ldap":
        from mailmfa.daemon.ldapc import CLdapDirectory as base
    else:
        from mailmfa.backends.ldap import LdapDirectory as base

    class _Directory(base):  # type: ignore[valid-type, misc]
        def _params(self, params_dn: bytes | None):  # type: ignore[no-untyped-def]
            if params_dn is None:
                return super()._params(params_dn)
            now = time.monotonic()
            hit = cache.get(params_dn)
            if hit is not None and hit[0] > now:
                return hit[1]
            params = super()._params(params_dn)  # raises BackendUnavailable: nothing cached
            cache[params_dn] = (now + PARAMS_TTL, params)
            return params

    return _Directory(config)


class Daemon:
    """The listening socket, the connection threads and the current config/pool."""

    def __init__(self, config: Config, config_path: str, *, stream: TextIO | None = None,
                 directory_factory: DirectoryFactory = _ldap_directory) -> None:
        self.config_path = config_path
        self._factory = directory_factory
        self.state = _State(config, directory_factory)
        self.stream = stream
        self._log_lock = threading.Lock()
        self._conn_lock = threading.Lock()
        self._connections = 0
        self._threads: set[threading.Thread] = set()
        self.listener: socket.socket | None = None
        self.socket_path = config.daemon.socket
        self._stop = False
        self.served = 0
        # kept across reloads (only its `seconds` follows the config): a reload does not
        # forget the connections a mail client opened a moment ago
        self.reuse = MemoryReuseStore(config.policy.reuse_seconds)

    # -- logging ----------------------------------------------------------------------------
    def log(self, fields: dict[str, object]) -> None:
        with self._log_lock:
            log.emit(fields, self.stream)

    # -- socket -------------------------------------------------------------------------------
    def listen(self) -> None:
        """Bind the socket 0660 (group [daemon] group); raises OSError/KeyError when it cannot."""
        d = self.state.config.daemon
        path = d.socket
        parent = os.path.dirname(path)
        if parent and not os.path.isdir(parent):
            os.makedirs(parent, mode=0o755, exist_ok=True)
        if os.path.exists(path) or os.path.islink(path):
            st = os.lstat(path)
            if not stat.S_ISSOCK(st.st_mode):
                raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            probe.settimeout(1.0)
            try:
                probe.connect(path)
            except OSError:
                os.unlink(path)  # left behind by a daemon that died
            else:
                raise OSError(errno.EADDRINUSE, f"{path}: another mailmfa-authd is answering there")
            finally:
                probe.close()
        gid = grp.getgrnam(d.group).gr_gid if d.group else -1
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # never a moment with a socket others can connect to
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        try:
            if gid != -1:
                os.chown(path, -1, gid)
            os.chmod(path, 0o660)
            sock.listen(min(1024, max(16, d.max_connections)))
        except OSError:
            sock.close()
            os.unlink(path)
            raise
        self.listener = sock

    def warm_up(self) -> None:
        """Open one LDAP connection now, so a wrong bind password shows at start, not at a login."""
        slot = self.state.pool.acquire(0)
        if slot is None:
            return
        broken = False
        try:
            slot[0].lookup("mailmfa-authd-warm-up")
            slot[1] = True
        except BackendUnavailable as exc:
            self.log({"event": "warm_up", "result": "tempfail", "reason": exc.reason})
        except Exception as exc:  # noqa: BLE001
            broken = True
            self.log({"event": "warm_up", "result": "tempfail", "reason": "internal_error",
                      "error": type(exc).__name__})
        self.state.pool.release(slot, broken)

    # -- main loop ----------------------------------------------------------------------------
    def serve(self) -> None:
        """Accept until SIGTERM/SIGINT; SIGHUP reloads. Signals arrive through a wakeup pipe."""
        assert self.listener is not None
        rfd, wfd = os.pipe()
        os.set_blocking(rfd, False)
        os.set_blocking(wfd, False)
        handlers = {s: signal.signal(s, lambda *_: None) for s in CONTROL_SIGNALS}
        old_wakeup = signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, CONTROL_SIGNALS)  # main() held them until now
        self.listener.setblocking(False)
        self.log({"event": "start", "socket": self.socket_path, "pid": os.getpid(),
                  "pool_size": self.state.config.daemon.pool_size,
                  "ldap_client": ldap_client_for(self.state.config)})
        try:
            while not self._stop:
                try:
                    ready, _, _ = select.select([self.listener, rfd], [], [])
                except InterruptedError:
                    continue
                if rfd in ready:
                    try:
                        signums = os.read(rfd, 64)
                    except BlockingIOError:
                        signums = b""
                    for num in signums:
                        if num == signal.SIGHUP:
                            self.reload()
                        elif num in (signal.SIGTERM, signal.SIGINT):
                            self._stop = True
                if self.listener in ready and not self._stop:
                    self._accept()
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for s, h in handlers.items():
                signal.signal(s, h)
            os.close(rfd)
            os.close(wfd)
            self.shutdown()

    def _accept(self) -> None:
        assert self.listener is not None
        try:
            conn, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # EMFILE and friends: keep serving the connections we have
            self.log({"event": "accept", "result": "error", "error": exc.strerror})
            time.sleep(0.05)
            return
        conn.setblocking(True)
        with self._conn_lock:
            if self._connections >= self.state.config.daemon.max_connections:
                busy = True
            else:
                busy = False
                self._connections += 1
        if busy:
            try:
                conn.settimeout(0.1)
                conn.sendall(protocol.answer("TEMPFAIL", "busy"))
            except OSError:
                pass
            conn.close()
            self.log({"event": "accept", "result": "tempfail", "reason": "busy"})
            return
        thread = threading.Thread(target=self._serve_connection, args=(conn,), daemon=True)
        with self._conn_lock:
            self._threads.add(thread)
        thread.start()

    def reload(self) -> None:
        """SIGHUP: a new config for new requests; the old pool closes as its connections return."""
        try:
            config = load(self.config_path)
            config.check_secret_readable()
            ldap_client_for(config)
        except ConfigError as exc:
            self.log({"event": "reload", "result": "error", "error": str(exc), "kept": "old_config"})
            return
        except Exception as exc:  # noqa: BLE001 - a reload must never stop a running daemon
            self.log({"event": "reload", "result": "error", "error": type(exc).__name__, "kept": "old_config"})
            return
        old = self.state
        self.state = _State(config, self._factory)
        self.reuse.seconds = config.policy.reuse_seconds
        old.pool.close()
        fields: dict[str, object] = {"event": "reload", "result": "ok"}
        if config.daemon.socket != old.config.daemon.socket or config.daemon.group != old.config.daemon.group:
            fields["note"] = "socket_change_needs_restart"
        self.log(fields)

    def shutdown(self) -> None:
        """Stop listening, remove the socket, give in-flight requests SHUTDOWN_GRACE seconds."""
        if self.listener is not None:
            self.listener.close()
            self.listener = None
            try:
                os.unlink(self.socket_path)
            except FileNotFoundError:
                pass
        deadline = time.monotonic() + SHUTDOWN_GRACE
        with self._conn_lock:
            threads = list(self._threads)
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self.state.pool.close()
        self.log({"event": "stop", "served": self.served})

    # -- one connection ---------------------------------------------------------------------
    def _serve_connection(self, conn: socket.socket) -> None:
        try:
            self._converse(conn)
        except OSError:
            pass  # the client went away or stalled past its deadline: nothing to answer
        except Exception as exc:  # noqa: BLE001 - one broken connection never stops the daemon
            self.log({"event": "connection", "result": "error", "error": type(exc).__name__})
        finally:
            conn.close()
            with self._conn_lock:
                self._connections -= 1
                self._threads.discard(threading.current_thread())

    def _converse(self, conn: socket.socket) -> None:
        read_timeout = self.state.config.daemon.read_timeout
        buf = b""
        while not self._stop:
            deadline = time.monotonic() + read_timeout  # for the whole line, not per byte
            while b"\n" not in buf:
                if len(buf) >= protocol.MAX_LINE:
                    conn.sendall(protocol.answer("TEMPFAIL", "bad_request"))
                    self.log({"result": "tempfail", "reason": "bad_request", "error": "too_long"})
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                conn.settimeout(left)
                try:
                    chunk = conn.recv(4096)
                except TimeoutError:
                    return
                if not chunk:
                    return
                buf += chunk
            line, buf = buf.split(b"\n", 1)
            if len(line) >= protocol.MAX_LINE:
                conn.sendall(protocol.answer("TEMPFAIL", "bad_request"))
                return
            parsed = protocol.parse_request(line)
            if parsed is None:
                conn.sendall(protocol.answer("TEMPFAIL", "bad_request"))
                self.log({"result": "tempfail", "reason": "bad_request"})
                return
            command, args = parsed
            conn.settimeout(read_timeout)
            conn.sendall(self.handle(command, args))

    # -- one request --------------------------------------------------------------------------
    def handle(self, command: str, args: list[str]) -> bytes:
        """The answer line for one parsed request (also the unit-testable core of the daemon)."""
        if command == "PING":
            return protocol.answer("OK", "pong")
        started = time.monotonic()
        state = self.state
        if protocol.NOT_UTF8 in args:
            self.log({"result": "fail", "reason": "bad_input", "via": "authd"})
            return protocol.answer("FAIL", "unknown_user" if command == "LOOKUP" else "bad_input")
        if command == "LOOKUP":
            user = args[0]
            outcome = self._run(state, user, lambda d: userdb_lookup(d, user))
            fields: dict[str, object] = {"lookup": "userdb"}
        else:
            req = Request(*args)
            cfg = state.config
            reuse = self.reuse if reuse_enabled(cfg) else None
            outcome = self._run(state, req.user, lambda d: authenticate(req, d, cfg, time.time(), reuse))
            fields = {"rip": req.rip or None, "service": req.service or None}
        self.served += 1
        verdict = {Verdict.ACCEPT: "OK", Verdict.REJECT: "FAIL"}.get(outcome.verdict, "TEMPFAIL")
        self.log({"result": outcome.verdict.value, "user": outcome.user[:MAX_USER], **fields,
                  "reason": outcome.reason, "via": "authd",
                  "ms": round((time.monotonic() - started) * 1000, 1)})
        return protocol.answer(verdict, outcome.reason)


    def _run(self, state: _State, user: str, work: Callable[[Any], Outcome]) -> Outcome:
        """Run `work` with a pooled directory. A warm connection that turns out dead (slapd
        restarted, idle timeout) is retried once on a fresh one, unless a write was attempted."""
        cfg = state.config
        wait = cfg.ldap.timeout * max(1, len(cfg.ldap.uris)) * 2 + 1
        failed = Outcome(Verdict.TEMPFAIL, "internal_error", user)
        try:
            slot = state.pool.acquire(wait)
        except Exception as exc:  # noqa: BLE001 - a directory that cannot even be made
            self.log({"result": "tempfail", "reason": "internal_error", "error": type(exc).__name__})
            return failed
        if slot is None:
            return Outcome(Verdict.TEMPFAIL, "busy", user)
        broken = False
        outcome = failed
        try:
            for attempt in (1, 2):
                guard = _WriteGuard(slot[0])
                outcome = work(guard)
                retry = (attempt == 1 and slot[1] and not guard.wrote
                         and outcome.verdict is Verdict.TEMPFAIL and outcome.reason == "ldap_unavailable")
                if not retry:
                    break
                slot[1] = False  # the directory closed itself; the next call reconnects
            return outcome
        except Exception as exc:  # noqa: BLE001 - fail closed, replace the connection
            broken = True
            self.log({"result": "tempfail", "reason": "internal_error", "error": type(exc).__name__})
            outcome = failed
            return outcome
        finally:
            state.pool.release(slot, broken, warm=outcome.verdict is not Verdict.TEMPFAIL)


def _parse_argv(argv: list[str]) -> dict[str, Any] | str:
    opts: dict[str, Any] = {"config": None, "foreground": False, "pid_file": None, "check": False}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("--config", "--pid-file"):
            if i + 1 >= len(argv):
                return f"{arg} needs a FILE"
            opts[arg[2:].replace("-", "_")] = argv[i + 1]
            i += 2
            continue
        if arg.startswith(("--config=", "--pid-file=")):
            key, value = arg[2:].split("=", 1)
            opts[key.replace("-", "_")] = value
        elif arg == "--foreground":
            opts["foreground"] = True
        elif arg == "--check":
            opts["check"] = True
        else:
            return f"unknown argument {arg}"
        i += 1
    return opts



def _write_pid_file(path: str, pid: int) -> None:
    """Write `pid` to `path` atomically: a reader never sees an empty or half-written file."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="ascii") as fh:
            fh.write(f"{pid}\n")
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def main(argv: list[str] | None = None) -> int:
    """Console-script entry (mailmfa-authd)."""
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-h", "--help"):
        sys.stdout.write(USAGE)
        return 0
    if args == ["--version"]:
        from mailmfa import __version__

        sys.stdout.write(f"mailmfa-authd {__version__}\n")
        return 0
    opts = _parse_argv(args)
    if isinstance(opts, str):
        sys.stderr.write(f"mailmfa-authd: {opts}\n")
        return EXIT_USAGE
    path = resolve_path(opts["config"])
    try:
        config = load(path)
        config.check_secret_readable()
        client = ldap_client_for(config)
    except ConfigError as exc:
        sys.stderr.write(f"mailmfa-authd: {exc}\n")
        return EXIT_CONFIG
    if opts["check"]:
        sys.stdout.write(f"mailmfa-authd: {path}: ok (ldap_client={client})\n")
        return 0
    daemon = Daemon(config, path)
    try:
        daemon.listen()
    except (OSError, KeyError) as exc:
        what = f"group {config.daemon.group!r} does not exist" if isinstance(exc, KeyError) else str(exc)
        sys.stderr.write(f"mailmfa-authd: cannot listen on {config.daemon.socket}: {what}\n")
        return EXIT_LISTEN
    # held from here until serve() has its handlers and wakeup pipe: a SIGTERM right after the
    # start (the pid file is written before the LDAP warm-up) would otherwise kill the daemon
    # by default action, leaving its socket and pid file, or be swallowed by a handler whose
    # wakeup pipe is not set yet, leaving a daemon deaf to SIGTERM
    signal.pthread_sigmask(signal.SIG_BLOCK, CONTROL_SIGNALS)
    if not opts["foreground"] and not os.path.exists("/dev/log"):
        sys.stderr.write("mailmfa-authd: warning: no /dev/log (no syslog daemon): its log lines will be "
                         "lost; run it with --foreground and keep its stderr instead\n")
    if not opts["foreground"]:
        child = os.fork()
        if child > 0:
            # The parent writes the child's PID before it returns: whoever started the daemon
            # (an init script, a test) finds the file complete as soon as this exits.
            if opts["pid_file"]:
                try:
                    _write_pid_file(opts["pid_file"], child)
                except OSError as exc:
                    os.kill(child, signal.SIGTERM)
                    sys.stderr.write(f"mailmfa-authd: cannot write {opts['pid_file']}: {exc}\n")
                    os._exit(EXIT_LISTEN)
            os._exit(0)  # the socket already listens: clients queue until the child accepts
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)
        daemon.stream = _Syslog()  # type: ignore[assignment]
    elif opts["pid_file"]:
        try:
            _write_pid_file(opts["pid_file"], os.getpid())
        except OSError as exc:
            sys.stderr.write(f"mailmfa-authd: cannot write {opts['pid_file']}: {exc}\n")
            return EXIT_LISTEN
    daemon.warm_up()
    daemon.serve()
    if opts["pid_file"]:
        try:
            os.unlink(opts["pid_file"])
        except OSError:
            pass
    return 0


def run() -> None:
    """setuptools console-script wrapper: exit with main()'s status."""
    sys.exit(main())


if __name__ == "__main__":
    run()
