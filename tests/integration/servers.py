"""Real slapd and Dovecot instances for integration tests.

One reusable module, stdlib + subprocess only, so it works from any Python that can run the tests
(Debian's /usr/bin/python3 or a venv built from it) and needs no pytest at import time.

Why real servers: the things mailmfa must get right (ACLs on oathSecret, atomic replay updates,
the checkpassword protocol, Dovecot's penalties and the user it runs programs as) are properties of
the servers, not of our code, and mocks would just restate our assumptions.

Every server runs in the foreground as a child of the test process, on 127.0.0.1 and a free port,
with all state in a work directory, and is stopped by PID. Nothing here touches system services.

Typical use (see conftest.py for the fixtures)::

    with Slapd(make_workdir()) as ldap:
        dn = ldap.add_user("alice", "alicepw", secret=b"12345678901234567890")
        ...
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import dataclasses
import hashlib
import imaplib
import os
import poplib
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import urllib.parse
import weakref
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Self

REPO_ROOT = Path(__file__).resolve().parents[2]
OATH_SCHEMA_LDIF = REPO_ROOT / "conf" / "ldap" / "oath-schema.ldif"
ACL_LDIF = REPO_ROOT / "conf" / "ldap" / "acl.ldif"

SYSTEM_SCHEMA_DIR = Path("/etc/ldap/schema")
LDAP_MODULE_DIR = Path("/usr/lib/ldap")

# HMAC algorithm OIDs used by the OATH-LDAP schema (oathHMACAlgorithm).
HMAC_SHA1 = "1.2.840.113549.2.7"
HMAC_SHA256 = "1.2.840.113549.2.9"
HMAC_SHA512 = "1.2.840.113549.2.11"

# Attributes that are octet strings: always returned as bytes by Slapd.search(), because ldapsearch
# prints a value as plain text whenever its bytes happen to be printable.
BINARY_ATTRIBUTES = frozenset({"oathsecret"})

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0

# Servers still running when the interpreter exits (a test run interrupted outside the fixtures).
_LIVE: weakref.WeakSet[_Process] = weakref.WeakSet()


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free a moment ago (bind to port 0 and let the kernel pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def poll_until(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    interval: float = 0.02,
    on_timeout: Callable[[], str] | None = None,
) -> None:
    """Call `predicate` until it returns true; raise TimeoutError naming `what` (plus details) if not."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() >= deadline:
            details = on_timeout() if on_timeout else ""
            raise TimeoutError(f"{what}: not ready after {timeout:.1f} s\n{details}")
        time.sleep(interval)


def _all_threads_stopped(pid: int) -> bool:
    """True when every thread of `pid` is in the stopped state (T) per /proc."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
        for tid in tasks:
            with open(f"/proc/{pid}/task/{tid}/stat") as fh:
                state = fh.read().rsplit(")", 1)[1].split()[0]
            if state not in ("T", "t"):
                return False
    except (OSError, IndexError):
        return True  # gone (or not Linux): nothing left to wait for
    return True


def wait_for_step_safe(period: int = 30, margin: float = 2.0) -> float:
    """Sleep out the rest of the current TOTP step if fewer than `margin` seconds are left.

    A test that computes a code and then logs in must not straddle a step boundary (and must never
    rely on the verifier's window to pass). Returns the current time after any wait.
    """
    now = time.time()
    left = period - (now % period)
    if left < margin:
        time.sleep(left + 0.05)
        now = time.time()
    return now


def make_workdir(prefix: str = "mailmfa-test-") -> Path:
    """Create a fresh directory that the `dovecot` user can traverse (mode 0755).

    pytest's tmp_path lives under /tmp/pytest-of-root (0700), which Dovecot's auth process, running
    as `dovecot`, cannot enter: anything Dovecot must read goes in a directory made here.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def remove_workdir(path: Path) -> None:
    """Remove a directory made by make_workdir(), ignoring what is already gone."""
    shutil.rmtree(path, ignore_errors=True)


def check_traversable(path: Path, user: str = "dovecot") -> None:
    """Raise if `user` (not root) cannot enter `path` and every parent: fail early and say why."""
    pw = pwd.getpwnam(user)
    for p in [path, *path.parents]:
        st = p.stat()
        if st.st_uid == pw.pw_uid:
            ok = st.st_mode & stat.S_IXUSR
        elif st.st_gid == pw.pw_gid:
            ok = st.st_mode & stat.S_IXGRP
        else:
            ok = st.st_mode & stat.S_IXOTH
        if not ok:
            raise PermissionError(
                f"{p} (mode {stat.filemode(st.st_mode)}) cannot be entered by {user!r}; "
                f"Dovecot runs its auth helpers as {user!r}: use make_workdir()"
            )


def escape_dn_value(value: str) -> str:
    """Escape an attribute value for use in a DN (RFC 4514 section 2.4)."""
    out = []
    for i, ch in enumerate(value):
        if ch in ',+"\\<>;=':
            out.append("\\" + ch)
        elif ch == "\0":
            out.append("\\00")
        elif ch == " " and (i == 0 or i == len(value) - 1):
            out.append("\\ ")
        elif ch == "#" and i == 0:
            out.append("\\#")
        else:
            out.append(ch)
    return "".join(out)


def escape_filter_value(value: str) -> str:
    """Escape an assertion value for use in a search filter (RFC 4515 section 3)."""
    return "".join(f"\\{ord(c):02x}" if c in "*()\\\0" else c for c in value)


def ssha(password: str | bytes, salt: bytes | None = None) -> str:
    """Hash a password as {SSHA}, the scheme slapd checks natively (no slappasswd process)."""
    raw = password.encode() if isinstance(password, str) else password
    salt = os.urandom(8) if salt is None else salt
    return "{SSHA}" + base64.b64encode(hashlib.sha1(raw + salt).digest() + salt).decode()


def ldif_line(attr: str, value: str | bytes | int) -> str:
    """One LDIF attribute line; base64 (`attr:: ...`) when RFC 2849 says the value is not SAFE."""
    if isinstance(value, int):
        value = str(value)
    raw = value.encode() if isinstance(value, str) else value
    safe = all(0 < c < 0x80 and c not in (0x0A, 0x0D) for c in raw) and (
        not raw or (raw[0] not in b" :<" and raw[-1] != 0x20)
    )
    if safe:
        return f"{attr}: {raw.decode()}"
    return f"{attr}:: {base64.b64encode(raw).decode()}"


def ldif_entry(dn: str, attrs: Iterable[tuple[str, str | bytes | int]]) -> str:
    """An LDIF record (for ldapadd) from a DN and (attribute, value) pairs, in the given order."""
    lines = [ldif_line("dn", dn)]
    lines.extend(ldif_line(a, v) for a, v in attrs)
    return "\n".join(lines) + "\n\n"


def parse_ldif(text: str) -> list[Entry]:
    """Parse `ldapsearch -LLL` output into entries (values str, or bytes when not UTF-8/binary)."""
    entries: list[Entry] = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines: list[str] = []
        for line in block.splitlines():
            if line.startswith("#"):
                continue
            if line.startswith(" ") and lines:
                lines[-1] += line[1:]
            else:
                lines.append(line)
        if not lines:
            continue
        entry: Entry | None = None
        for line in lines:
            attr, sep, rest = line.partition(":")
            if not sep:
                continue
            raw: bytes | None = None
            if rest.startswith(":"):
                raw = base64.b64decode(rest[1:].strip())
                value: str | bytes
                try:
                    value = raw.decode()
                except UnicodeDecodeError:
                    value = raw
            else:
                value = rest.removeprefix(" ")
            if attr.lower() in BINARY_ATTRIBUTES:
                value = raw if raw is not None else str(value).encode()
            if entry is None:
                if attr.lower() != "dn":
                    raise ValueError(f"LDIF record does not start with dn: {block[:80]!r}")
                entry = Entry(str(value))
                continue
            entry.setdefault(attr, []).append(value)
        if entry is not None:
            entries.append(entry)
    return entries


class Entry(dict):  # type: ignore[type-arg]
    """A search result: attribute name -> list of values, names matched case-insensitively."""

    def __init__(self, dn: str) -> None:
        super().__init__()
        self.dn = dn

    def _key(self, name: str) -> str:
        for k in self.keys():
            if k.lower() == name.lower():
                return str(k)
        return name

    def __getitem__(self, name: str) -> list[Any]:
        return super().__getitem__(self._key(name))  # type: ignore[no-any-return]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(self._key(name))

    def get(self, name: str, default: Any = None) -> Any:
        return super().get(self._key(name), default)

    def first(self, name: str, default: Any = None) -> Any:
        """The first value of `name`, or `default` when the attribute is absent."""
        values = self.get(name)
        return values[0] if values else default

    def __repr__(self) -> str:
        return f"Entry({self.dn!r}, {dict(self)!r})"


def _find_binary(name: str) -> str:
    """Absolute path of a server tool (root's PATH may lack /usr/sbin in some runners)."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if not found:
        raise FileNotFoundError(f"{name} is not installed")
    return found


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


# LDAP tools must not pick up ~/.ldaprc or /etc/ldap/ldap.conf (TLS settings, BASE, URI...).
_LDAP_ENV = {**os.environ, "LDAPNOINIT": "1"}


def _run(args: list[str], input_text: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        args, input=input_text, capture_output=True, text=True, errors="replace", env=_LDAP_ENV, timeout=60,
        check=False,
    )
    if check and proc.returncode != 0:
        shown = " ".join("***" if i > 0 and args[i - 1] == "-w" else a for i, a in enumerate(args))
        raise RuntimeError(f"{shown} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


# --------------------------------------------------------------------------------------------
# Process lifecycle shared by both servers
# --------------------------------------------------------------------------------------------


class _Process:
    """A foreground server child: start/stop by PID, SIGSTOP/SIGCONT, log file, context manager."""

    name = "server"

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / f"{self.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False

    # subclasses implement _command() and _wait_ready(timeout)
    def _command(self) -> list[str]:
        raise NotImplementedError

    def _before_start(self) -> None:
        """Hook: build configuration on the first start."""

    def _after_start(self) -> None:
        """Hook: first-start provisioning once the server answers."""

    def _wait_ready(self, timeout: float) -> None:
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        """PID of the running server (None when stopped)."""
        return self._proc.pid if self._proc and self._proc.poll() is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    def log_text(self) -> str:
        """The whole server log so far (assert on it, or show it when a test fails)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def start(self, timeout: float = START_TIMEOUT) -> Self:
        """Start the server and wait until it serves; raise with the log tail if it does not."""
        if self.running:
            return self
        self._before_start()
        with open(self.log_path, "ab") as log:
            log.write(f"---- start {time.strftime('%H:%M:%S')} ----\n".encode())
            log.flush()
            # own session: a ^C at the terminal reaches pytest, which then stops us by PID
            self._proc = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.workdir,
            )
        self._paused = False
        _LIVE.add(self)
        try:
            self._wait_ready(timeout)
            self._after_start()
        except BaseException:
            self.kill()
            raise
        return self

    def _check_alive(self) -> None:
        assert self._proc is not None
        if self._proc.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with {self._proc.returncode} while starting\n{_tail(self.log_path)}"
            )

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM by PID, wait, SIGKILL (the whole process group) if it does not exit in time."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            if self._paused:  # a stopped process keeps SIGTERM pending until it is continued
                self.resume()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._killpg()
                proc.wait()
        self._forget()

    def kill(self) -> None:
        """SIGKILL, as a crash would: no shutdown, whatever the server had not written is lost."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            self._killpg()
            proc.wait()
        self._forget()

    def _killpg(self) -> None:
        """SIGKILL the server's whole process group (also children outliving a killed master)."""
        assert self._proc is not None
        try:
            os.killpg(self._proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _forget(self) -> None:
        """After the server exited: kill leftovers in its group and mark it stopped."""
        self._killpg()
        self._proc = None
        self._paused = False
        _LIVE.discard(self)

    def pause(self) -> None:
        """SIGSTOP to the server's process group: it keeps its sockets but answers nothing (a hung
        server, or a gate that lets many clients queue up and then race when resume() is called)."""
        if self._proc is None or self._proc.poll() is not None:
            raise RuntimeError(f"{self.name} is not running")
        os.killpg(self._proc.pid, signal.SIGSTOP)
        self._paused = True
        # SIGSTOP takes effect when each thread next enters the kernel: on a loaded machine
        # a thread can still answer a request right after killpg returns. Wait until every
        # thread is seen stopped, so "paused" means paused.
        deadline = time.monotonic() + 2.0
        while not _all_threads_stopped(self._proc.pid) and time.monotonic() < deadline:
            time.sleep(0.001)

    def resume(self) -> None:
        """SIGCONT after pause()."""
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGCONT)
        self._paused = False

    def restart(self, timeout: float = START_TIMEOUT) -> None:
        """Stop (if running) and start again: same port, same data."""
        self.stop()
        self.start(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_LIVE):
        with contextlib.suppress(Exception):  # best effort at interpreter exit
            server.kill()


# --------------------------------------------------------------------------------------------
# slapd
# --------------------------------------------------------------------------------------------

# An anonymous simple bind request (messageID 1, LDAPv3, empty name and password): enough to know
# slapd is answering LDAP, without any client library.
_ANON_BIND = bytes.fromhex("300c020101600702010304008000")


class Slapd(_Process):
    """A real OpenLDAP slapd with a fresh cn=config and mdb database under `workdir`.

    The shipped conf/ldap/acl.ldif is applied on first start (through ldapi + SASL EXTERNAL, as an
    administrator would), so every test also proves the ACL we ship.
    """

    name = "slapd"

    suffix = "dc=example,dc=org"
    admin_dn = "cn=admin,dc=example,dc=org"
    admin_password = "adminpw"
    service_dn = "cn=mailmfa,ou=services,dc=example,dc=org"
    service_password = "servicepw"
    people_dn = "ou=people,dc=example,dc=org"
    tokens_dn = "ou=tokens,dc=example,dc=org"
    params_base_dn = "ou=params,dc=example,dc=org"
    params_dn = "cn=totp-sha1-6-30,ou=params,dc=example,dc=org"
    policy_dn = "cn=default,ou=policies,dc=example,dc=org"
    database_dn = "olcDatabase={1}mdb,cn=config"

    DEFAULT_PPOLICY: Mapping[str, str] = {
        "pwdAttribute": "userPassword",
        "pwdLockout": "TRUE",
        "pwdMaxFailure": "5",
        "pwdLockoutDuration": "300",
        "pwdFailureCountInterval": "300",
    }

    def __init__(
        self,
        workdir: Path,
        with_otp_overlay: bool = False,
        with_ppolicy: bool = False,
        *,
        log_level: str = "stats",
        acl_ldif: Path | None = ACL_LDIF,
        ppolicy: Mapping[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        """`log_level` is slapd's -d level ("0" for errors only; "stats" logs each operation);
        `acl_ldif=None` leaves the database without olcAccess (slapd's default: read for all);
        `ppolicy` replaces DEFAULT_PPOLICY's attributes of the default policy entry."""
        super().__init__(workdir)
        self.with_otp_overlay = with_otp_overlay
        self.with_ppolicy = with_ppolicy
        self.log_level = log_level
        self.acl_ldif = acl_ldif
        self.ppolicy = dict(self.DEFAULT_PPOLICY if ppolicy is None else ppolicy)
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.uri = f"ldap://{self.host}:{self.port}"
        self.config_dir = self.workdir / "slapd.d"
        self.data_dir = self.workdir / "data"
        self.socket_path = self.workdir / "ldapi"
        self.ldapi_uri = "ldapi://" + urllib.parse.quote(str(self.socket_path), safe="")
        # more URLs for slapd -h (e.g. "ldaps://127.0.0.1:PORT/" once TLS is configured); used
        # from the next (re)start
        self.extra_listeners: list[str] = []
        self._provisioned = False

    # ---- configuration ---------------------------------------------------------------------

    def config_ldif(self) -> str:
        """The cn=config LDIF given to `slapadd -n0` (public so a failing test can print it)."""
        modules = ["back_mdb"]
        if self.with_otp_overlay:
            modules.append("otp")
        if self.with_ppolicy:
            modules.append("ppolicy")
        parts = [
            ldif_entry(
                "cn=config",
                [
                    ("objectClass", "olcGlobal"),
                    ("cn", "config"),
                    ("olcPidFile", str(self.workdir / "slapd.pid")),
                    ("olcArgsFile", str(self.workdir / "slapd.args")),
                ],
            ),
            ldif_entry(
                "cn=module{0},cn=config",
                [
                    ("objectClass", "olcModuleList"),
                    ("cn", "module{0}"),
                    ("olcModulePath", str(LDAP_MODULE_DIR)),
                    *[("olcModuleLoad", m) for m in modules],
                ],
            ),
            ldif_entry("cn=schema,cn=config", [("objectClass", "olcSchemaConfig"), ("cn", "schema")]),
        ]
        schemas = [SYSTEM_SCHEMA_DIR / f"{s}.ldif" for s in ("core", "cosine", "nis", "inetorgperson")]
        if not self.with_otp_overlay:  # the otp module defines the OATH-LDAP schema itself
            schemas.append(OATH_SCHEMA_LDIF)
        parts.extend(f"include: file://{p}\n\n" for p in schemas)
        parts.append(
            ldif_entry(
                "olcDatabase={-1}frontend,cn=config",
                [
                    ("objectClass", "olcDatabaseConfig"),
                    ("objectClass", "olcFrontendConfig"),
                    ("olcDatabase", "{-1}frontend"),
                ],
            )
        )
        parts.append(
            ldif_entry(
                "olcDatabase={0}config,cn=config",
                [
                    ("objectClass", "olcDatabaseConfig"),
                    ("olcDatabase", "{0}config"),
                    (
                        "olcAccess",
                        (
                            "{0}to * by dn.exact=gidNumber=0+uidNumber=0,cn=peercred,cn=external,cn=auth"
                            " manage by * break"
                        ),
                    ),
                ],
            )
        )
        parts.append(
            ldif_entry(
                self.database_dn,
                [
                    ("objectClass", "olcDatabaseConfig"),
                    ("objectClass", "olcMdbConfig"),
                    ("olcDatabase", "{1}mdb"),
                    ("olcSuffix", self.suffix),
                    ("olcRootDN", self.admin_dn),
                    ("olcRootPW", ssha(self.admin_password)),
                    ("olcDbDirectory", str(self.data_dir)),
                    ("olcDbMaxSize", str(1 << 30)),
                    # no fsync per commit: a SIGKILLed slapd still keeps its data (the kernel has
                    # it), only a machine crash would lose it -- fine for tests, and 2 000 adds
                    # take a fraction of a second instead of seconds
                    ("olcDbNoSync", "TRUE"),
                    ("olcDbIndex", "objectClass eq"),
                    ("olcDbIndex", "uid eq"),
                    ("olcDbIndex", "cn eq"),
                    ("olcDbIndex", "mail eq"),
                ],
            )
        )
        overlay = 0
        if self.with_ppolicy:
            parts.append(
                ldif_entry(
                    f"olcOverlay={{{overlay}}}ppolicy,{self.database_dn}",
                    [
                        ("objectClass", "olcOverlayConfig"),
                        ("objectClass", "olcPPolicyConfig"),
                        ("olcOverlay", f"{{{overlay}}}ppolicy"),
                        ("olcPPolicyDefault", self.policy_dn),
                    ],
                )
            )
            overlay += 1
        if self.with_otp_overlay:
            parts.append(
                ldif_entry(
                    f"olcOverlay={{{overlay}}}otp,{self.database_dn}",
                    [("objectClass", "olcOverlayConfig"), ("olcOverlay", f"{{{overlay}}}otp")],
                )
            )
        return "".join(parts)

    def _before_start(self) -> None:
        if self.config_dir.exists():  # a restart, or a new Slapd on an existing workdir
            self._provisioned = True
            return
        self.config_dir.mkdir(parents=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        ldif_path = self.workdir / "config.ldif"
        ldif_path.write_text(self.config_ldif())
        _run([_find_binary("slapadd"), "-n0", "-F", str(self.config_dir), "-l", str(ldif_path)])

    def _command(self) -> list[str]:
        if self.socket_path.exists():  # a SIGKILLed slapd leaves its socket behind
            self.socket_path.unlink()
        return [
            _find_binary("slapd"),
            "-h",
            " ".join([f"{self.uri}/", self.ldapi_uri, *self.extra_listeners]),
            "-F",
            str(self.config_dir),
            "-d",
            self.log_level,
        ]

    def answers(self, timeout: float = 0.5) -> bool:
        """True if slapd answers an anonymous bind within `timeout` (False while paused)."""
        self._check_alive()
        if not self.socket_path.exists():
            return False
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
                sock.sendall(_ANON_BIND)
                return sock.recv(64)[:1] == b"\x30"
        except OSError:
            return False

    def _wait_ready(self, timeout: float) -> None:
        poll_until(self.answers, timeout, f"slapd on {self.uri}", on_timeout=lambda: _tail(self.log_path))

    def _after_start(self) -> None:
        if self._provisioned:
            return
        if self.acl_ldif is not None:
            self.apply_acl(self.acl_ldif)
        self.ldapadd(self._base_ldif())
        self._provisioned = True

    def apply_acl(self, path: Path) -> None:
        """Apply an ACL LDIF as shipped, pointing its `dn:` at this server's mdb database."""
        text = Path(path).read_text()
        text = re.sub(r"(?m)^dn:\s*olcDatabase=\{\d+\}mdb,cn=config\s*$", f"dn: {self.database_dn}", text)
        self.ldapmodify_config(text)

    def _base_ldif(self) -> str:
        parts = [
            ldif_entry(self.suffix, [("objectClass", "dcObject"), ("objectClass", "organization"),
                                     ("dc", "example"), ("o", "Example")]),
        ]
        for ou_dn in (self.people_dn, "ou=services," + self.suffix, self.tokens_dn, self.params_base_dn):
            ou = ou_dn.split(",")[0].split("=")[1]
            parts.append(ldif_entry(ou_dn, [("objectClass", "organizationalUnit"), ("ou", ou)]))
        parts.append(
            ldif_entry(
                self.service_dn,
                [
                    ("objectClass", "applicationProcess"),
                    ("objectClass", "simpleSecurityObject"),
                    ("cn", "mailmfa"),
                    ("description", "mailmfa service account (reads tokens, writes their state)"),
                    ("userPassword", ssha(self.service_password)),
                ],
            )
        )
        parts.append(self._params_ldif("totp-sha1-6-30", 6, HMAC_SHA1, 30, 1))
        if self.with_ppolicy:
            parts.append(ldif_entry("ou=policies," + self.suffix,
                                    [("objectClass", "organizationalUnit"), ("ou", "policies")]))
            parts.append(
                ldif_entry(
                    self.policy_dn,
                    [
                        ("objectClass", "device"),
                        ("objectClass", "pwdPolicy"),
                        ("cn", "default"),
                        *self.ppolicy.items(),
                    ],
                )
            )
        return "".join(parts)

    # ---- LDAP tools ------------------------------------------------------------------------

    def _auth_args(self, bind_dn: str | None, password: str | None) -> list[str]:
        """-x plus -D/-w; bind_dn None means the admin, "" means anonymous."""
        if bind_dn is None:
            bind_dn, password = self.admin_dn, self.admin_password
        if bind_dn == "":
            return ["-x", "-H", self.uri]
        return ["-x", "-H", self.uri, "-D", bind_dn, "-w", password or ""]

    def ldapadd(self, ldif: str, *, bind_dn: str | None = None, password: str | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        """ldapadd as the admin (or as `bind_dn`); raises on failure unless check=False."""
        return _run([_find_binary("ldapadd"), *self._auth_args(bind_dn, password)], ldif, check)

    def ldapmodify(self, ldif: str, *, bind_dn: str | None = None, password: str | None = None,
                   check: bool = True) -> subprocess.CompletedProcess[str]:
        """ldapmodify as the admin (or as `bind_dn`, e.g. to probe ACLs with check=False:
        returncode 50 is insufficientAccess)."""
        return _run([_find_binary("ldapmodify"), *self._auth_args(bind_dn, password)], ldif, check)

    def ldapmodify_config(self, ldif: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """ldapmodify on cn=config over ldapi with SASL EXTERNAL (root), like an administrator."""
        return _run([_find_binary("ldapmodify"), "-Q", "-Y", "EXTERNAL", "-H", self.ldapi_uri], ldif, check)

    def search(
        self,
        base: str,
        filter: str = "(objectClass=*)",
        attrs: Iterable[str] = (),
        *,
        scope: str = "sub",
        bind_dn: str | None = None,
        password: str | None = None,
    ) -> list[Entry]:
        """ldapsearch as the admin (or `bind_dn`; "" = anonymous). Entries whose base does not exist
        give []; oathSecret comes back as bytes, other values as str (bytes if not UTF-8)."""
        args = [
            _find_binary("ldapsearch"), "-LLL", "-o", "ldif-wrap=no",
            *self._auth_args(bind_dn, password),
            "-b", base, "-s", scope, filter, *attrs,
        ]
        proc = _run(args, check=False)
        if proc.returncode == 32:  # noSuchObject
            return []
        if proc.returncode != 0:
            raise RuntimeError(f"ldapsearch -b {base} {filter} exited {proc.returncode}: {proc.stderr}")
        return parse_ldif(proc.stdout)

    def get(self, dn: str, attrs: Iterable[str] = ("*", "+"), **kw: Any) -> Entry | None:
        """One entry by DN (scope base), or None."""
        found = self.search(dn, "(objectClass=*)", attrs, scope="base", **kw)
        return found[0] if found else None

    def bind(self, dn: str, password: str) -> bool:
        """True if a simple bind as `dn` succeeds (ldapwhoami); False on invalidCredentials (49)."""
        proc = _run([_find_binary("ldapwhoami"), "-x", "-H", self.uri, "-D", dn, "-w", password], check=False)
        if proc.returncode == 0:
            return True
        if proc.returncode == 49:
            return False
        raise RuntimeError(f"ldapwhoami -D {dn} exited {proc.returncode}: {proc.stderr}")

    # ---- provisioning ----------------------------------------------------------------------

    def user_dn(self, uid: str) -> str:
        """DN of a user made by add_user()."""
        return f"uid={escape_dn_value(uid)},{self.people_dn}"

    def token_dn(self, uid: str) -> str:
        """DN of a separate token entry made by add_user(token_on_user=False)."""
        return f"cn={escape_dn_value(uid)},{self.tokens_dn}"

    def _params_ldif(self, cn: str, digits: int, algorithm_oid: str, period: int, window: int) -> str:
        return ldif_entry(
            f"cn={escape_dn_value(cn)},{self.params_base_dn}",
            [
                ("objectClass", "device"),
                ("objectClass", "oathTOTPParams"),
                ("cn", cn),
                ("oathOTPLength", digits),
                ("oathHMACAlgorithm", algorithm_oid),
                ("oathTOTPTimeStepPeriod", period),
                ("oathTOTPTimeStepWindow", window),
            ],
        )

    def add_params(self, cn: str, digits: int = 6, algorithm_oid: str = HMAC_SHA1, period: int = 30,
                   window: int = 1) -> str:
        """Add a TOTP params entry under ou=params; returns its DN."""
        self.ldapadd(self._params_ldif(cn, digits, algorithm_oid, period, window))
        return f"cn={escape_dn_value(cn)},{self.params_base_dn}"

    _DEFAULT = object()

    def _user_ldif(
        self,
        uid: str,
        password: str | None,
        secret: bytes | None,
        token_on_user: bool,
        params_dn: str | None,
        cn: str | None,
        mail: str | None,
        last_step: int | None,
    ) -> str:
        dn = self.user_dn(uid)
        token_attrs: list[tuple[str, str | bytes | int]] = []
        if secret is not None:
            token_attrs.append(("oathSecret", secret))
            if params_dn is not None:
                token_attrs.append(("oathTOTPParams", params_dn))
            if last_step is not None:
                token_attrs.append(("oathTOTPLastTimeStep", last_step))
        classes = ["inetOrgPerson"]
        attrs: list[tuple[str, str | bytes | int]] = [("uid", uid), ("cn", cn or uid), ("sn", uid)]
        if mail:
            attrs.append(("mail", mail))
        if password is not None:
            attrs.append(("userPassword", ssha(password)))
        out = ""
        if secret is not None:
            classes.append("oathTOTPUser")
            if token_on_user:
                classes.append("oathTOTPToken")
                attrs.append(("oathTOTPToken", dn))
                attrs.extend(token_attrs)
            else:
                tdn = self.token_dn(uid)
                attrs.append(("oathTOTPToken", tdn))
                out += ldif_entry(
                    tdn, [("objectClass", "device"), ("objectClass", "oathTOTPToken"), ("cn", uid), *token_attrs]
                )
        # all objectClass lines first and together (slapadd insists; harmless for ldapadd)
        return out + ldif_entry(dn, [*[("objectClass", c) for c in classes], *attrs])

    def add_user(
        self,
        uid: str,
        password: str | None,
        secret: bytes | None = None,
        *,
        token_on_user: bool = True,
        params_dn: str | None | object = _DEFAULT,
        cn: str | None = None,
        mail: str | None = None,
        last_step: int | None = None,
    ) -> str:
        """Add an inetOrgPerson (password stored as {SSHA}); with `secret` (raw bytes, as slapo-otp
        stores it) also an oathTOTPUser whose token is the user entry itself or, with
        token_on_user=False, cn=<uid>,ou=tokens. `params_dn=None` leaves oathTOTPParams out.
        Returns the user DN (special characters in `uid` are escaped)."""
        pdn = self.params_dn if params_dn is self._DEFAULT else params_dn
        assert pdn is None or isinstance(pdn, str)
        self.ldapadd(self._user_ldif(uid, password, secret, token_on_user, pdn, cn, mail, last_step))
        return self.user_dn(uid)

    def add_many_users(
        self,
        n: int,
        prefix: str = "user",
        *,
        password: str | Callable[[str], str] = "userpw",
        with_secret: bool = True,
        params_dn: str | None = None,
        start: int = 0,
    ) -> dict[str, bytes | None]:
        """Add `n` users <prefix><i> in one ldapadd (2 000 take well under a second).

        Secrets are deterministic (sha1 of the uid, 20 bytes) so a test can recompute them;
        `password` may be a function of the uid. Returns uid -> secret (None without secrets).
        """
        pdn = params_dn or self.params_dn
        users: dict[str, bytes | None] = {}
        chunks = []
        for i in range(start, start + n):
            uid = f"{prefix}{i}"
            secret = hashlib.sha1(uid.encode()).digest() if with_secret else None
            pw = password(uid) if callable(password) else password
            chunks.append(self._user_ldif(uid, pw, secret, True, pdn, None, None, None))
            users[uid] = secret
        self.ldapadd("".join(chunks))
        return users

    def token_state(self, uid: str, token_on_user: bool = True) -> Entry | None:
        """The token entry of `uid` as the admin sees it (secret, last step, drift...)."""
        return self.get(self.user_dn(uid) if token_on_user else self.token_dn(uid))


# --------------------------------------------------------------------------------------------
# Dovecot
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LoginResult:
    """Outcome of an IMAP/POP3 login. `text` is the server's answer (without tag), `selected`
    says whether the mailbox could be opened afterwards (SELECT INBOX / STAT)."""

    ok: bool
    text: str
    selected: bool = False

    @property
    def tempfail(self) -> bool:
        """Dovecot's "Temporary authentication failure" (checkpassword exit 111, crash, timeout)."""
        return "[UNAVAILABLE]" in self.text or "[SYS/TEMP]" in self.text


def _bound_create_socket(host: str, port: int, source_ip: str, timeout: float | None) -> socket.socket:
    return socket.create_connection((host, port), timeout, source_address=(source_ip, 0))


class _IMAP(imaplib.IMAP4):
    def __init__(self, host: str, port: int, source_ip: str, timeout: float) -> None:
        self._source_ip = source_ip
        super().__init__(host, port, timeout=timeout)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return _bound_create_socket(self.host, self.port, self._source_ip, timeout)


class _POP3(poplib.POP3):
    def __init__(self, host: str, port: int, source_ip: str, timeout: float) -> None:
        self._source_ip = source_ip
        super().__init__(host, port, timeout=timeout)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return _bound_create_socket(self.host, self.port, self._source_ip, timeout)


def _text(arg: object) -> str:
    return arg.decode(errors="replace") if isinstance(arg, bytes) else str(arg)


def imap_login(
    port: int,
    user: str,
    password: str,
    source_ip: str = "127.0.0.1",
    timeout: float = 10,
    host: str = "127.0.0.1",
) -> LoginResult:
    """LOGIN from `source_ip` (any 127.0.0.N works on Linux), then SELECT INBOX and LOGOUT.

    A NO/BAD answer gives ok=False; connection errors and timeouts raise, so a dead server can
    never pass for a refused login.
    """
    client = _IMAP(host, port, source_ip, timeout)
    try:
        try:
            typ, data = client.login(user, password)
        except imaplib.IMAP4.error as exc:
            return LoginResult(False, _text(exc.args[0] if exc.args else exc))
        text = _text(data[-1]) if data else typ
        selected = client.select("INBOX")[0] == "OK"
        return LoginResult(True, text, selected)
    finally:
        try:
            client.logout()
        except (imaplib.IMAP4.error, OSError):
            client.shutdown()


def pop3_login(
    port: int,
    user: str,
    password: str,
    source_ip: str = "127.0.0.1",
    timeout: float = 10,
    host: str = "127.0.0.1",
) -> LoginResult:
    """USER/PASS from `source_ip`, then STAT (selected = mailbox opened) and QUIT."""
    client = _POP3(host, port, source_ip, timeout)
    try:
        try:
            client.user(user)
            resp = client.pass_(password)
        except poplib.error_proto as exc:
            return LoginResult(False, _text(exc.args[0] if exc.args else exc))
        try:
            client.stat()
            selected = True
        except poplib.error_proto:
            selected = False
        return LoginResult(True, _text(resp), selected)
    finally:
        try:
            client.quit()
        except (poplib.error_proto, OSError):
            client.close()


class Dovecot(_Process):
    """A real Dovecot (master in the foreground) with its own config, sockets, state and log.

    Starts in ~40 ms; stop() takes ~1.1 s (the master lingers ~1 s for its log process).

    It keeps `default_internal_user = dovecot`, so passdb programs run as `dovecot` exactly as in
    production; the work directory (and its parents) must therefore be traversable by `dovecot`.
    `login_trusted_networks` is not set: Dovecot's rip is the real source address.
    """

    name = "dovecot"
    _version: tuple[int, ...] | None = None

    def __init__(
        self,
        workdir: Path,
        passdb: str,
        userdb: str | None = None,
        extra: str = "",
        *,
        auth_debug: bool = True,
        protocols: Iterable[str] = ("imap", "pop3"),
    ) -> None:
        """`passdb`/`userdb` are block bodies (e.g. "driver = checkpassword\\nargs = /x/y"); `extra`
        is appended verbatim to the config (it can override anything above it)."""
        super().__init__(workdir)
        self.passdb = passdb
        self.userdb = userdb
        self.extra = extra
        self.auth_debug = auth_debug
        self.protocols = tuple(protocols)
        self.imap_port = free_port()
        self.pop3_port = free_port()
        self.config_path = self.workdir / "dovecot.conf"
        self.base_dir = self.workdir / "run"
        self.state_dir = self.workdir / "state"
        self.home_dir = self.workdir / "home"

    @classmethod
    def version(cls) -> tuple[int, ...]:
        """Installed Dovecot version, e.g. (2, 3, 19, 1)."""
        if cls._version is None:
            out = subprocess.run([_find_binary("dovecot"), "--version"], capture_output=True, text=True,
                                 check=True).stdout
            cls._version = tuple(int(x) for x in re.findall(r"\d+", out.split()[0]))
        return cls._version

    @classmethod
    def has_checkpassword(cls) -> bool:
        """The checkpassword passdb driver exists up to 2.3 (removed in 2.4)."""
        return cls.version() < (2, 4)

    def _default_userdb(self) -> str:
        if self.version() >= (2, 4):
            return (
                "driver = static\nfields {\n  uid = dovecot\n  gid = dovecot\n"
                f"  home = {self.home_dir}/%{{user}}\n}}"
            )
        return f"driver = static\nargs = uid=dovecot gid=dovecot home={self.home_dir}/%u"

    def config_text(self) -> str:
        """The generated dovecot.conf (2.3 syntax, or 2.4 syntax when 2.4 is installed)."""
        userdb = self.userdb if self.userdb is not None else self._default_userdb()
        v24 = self.version() >= (2, 4)
        lines = []
        if v24:  # the 2.4 names of the same settings (run on Debian 13, Dovecot 2.4.1)
            lines += ["dovecot_config_version = 2.4.0", "dovecot_storage_version = 2.4.0"]
        lines += [
            f"protocols = {' '.join(self.protocols)}",
            "listen = 127.0.0.1",
            f"base_dir = {self.base_dir}",
            f"state_dir = {self.state_dir}",
            f"log_path = {self.log_path}",
            "ssl = no",
            "auth_allow_cleartext = yes" if v24 else "disable_plaintext_auth = no",
            "auth_mechanisms = plain login",
            # no 2 s delay after a failure (the per-IP penalty is switched off in service anvil);
            # 2.3.19 still answers failures (and tempfails) on its 0.5 s flush tick
            "auth_failure_delay = 0",
            "auth_verbose = yes",
            f"auth_debug = {'yes' if self.auth_debug else 'no'}",
            "default_internal_user = dovecot",
            "default_login_user = dovenull",
            # the packaged dovecot user has a system uid (< 500, Dovecot's default floor)
            "first_valid_uid = 1",
            "first_valid_gid = 1",
        ]
        # 2.4 has no per-listener `address` (the global `listen` above applies)
        address = "" if v24 else "    address = 127.0.0.1\n"
        if v24:
            lines += ["mail_driver = maildir", "mail_path = ~/Maildir"]
        else:
            lines += ["mail_location = maildir:~/Maildir"]
        lines += [
            "service imap-login {",
            f"  inet_listener imap {{\n{address}    port = {self.imap_port}\n  }}",
            "  inet_listener imaps {\n    port = 0\n  }",
            "}",
            "service pop3-login {",
            f"  inet_listener pop3 {{\n{address}    port = {self.pop3_port}\n  }}",
            "  inet_listener pop3s {\n    port = 0\n  }",
            "}",
            # without this, anvil's per-IP penalty delays repeated failures by 2-15 s
            "service anvil {\n  unix_listener anvil-auth-penalty {\n    mode = 0\n  }\n}",
            ("passdb mailmfa {" if v24 else "passdb {"),
            self.passdb.strip(),
            "}",
            ("userdb mailmfa {" if v24 else "userdb {"),
            userdb.strip(),
            "}",
            self.extra,
        ]
        return "\n".join(lines) + "\n"

    def _before_start(self) -> None:
        self.workdir.chmod(0o755)
        check_traversable(self.workdir)
        dovecot = pwd.getpwnam("dovecot")
        self.home_dir.mkdir(exist_ok=True)
        os.chown(self.home_dir, dovecot.pw_uid, dovecot.pw_gid)
        self.config_path.write_text(self.config_text())

    def _command(self) -> list[str]:
        return [_find_binary("dovecot"), "-c", str(self.config_path), "-F"]

    def _greets(self) -> bool:
        self._check_alive()
        try:
            with socket.create_connection(("127.0.0.1", self.imap_port), timeout=0.5) as sock:
                return sock.recv(256).startswith(b"* OK")
        except OSError:
            return False

    def _wait_ready(self, timeout: float) -> None:
        poll_until(self._greets, timeout, f"dovecot imap on 127.0.0.1:{self.imap_port}",
                   on_timeout=lambda: _tail(self.log_path))

    def imap_login(self, user: str, password: str, source_ip: str = "127.0.0.1",
                   timeout: float = 10) -> LoginResult:
        """imap_login() against this instance."""
        return imap_login(self.imap_port, user, password, source_ip, timeout)

    def pop3_login(self, user: str, password: str, source_ip: str = "127.0.0.1",
                   timeout: float = 10) -> LoginResult:
        """pop3_login() against this instance."""
        return pop3_login(self.pop3_port, user, password, source_ip, timeout)

    def doveadm_auth_test(self, user: str, password: str, rip: str = "192.0.2.7",
                          service: str = "imap", extra: Mapping[str, str] | None = None) -> tuple[int, str]:
        """`doveadm auth test` through this instance's auth service: (exit code, output).
        0 = accepted, 77 = refused; temporary failures exit non-zero with an error message."""
        args = [_find_binary("doveadm"), "-c", str(self.config_path), "auth", "test",
                "-x", f"service={service}", "-x", f"rip={rip}"]
        for k, v in (extra or {}).items():
            args += ["-x", f"{k}={v}"]
        proc = subprocess.run([*args, user, password], capture_output=True, text=True, timeout=60, check=False)
        return proc.returncode, proc.stdout + proc.stderr



def console_scripts() -> list[str]:
    """The programs setup.cfg installs (its console_scripts), by name."""
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(REPO_ROOT / "setup.cfg")
    lines = cfg["options.entry_points"]["console_scripts"].strip().splitlines()
    return [line.split("=")[0].strip() for line in lines]

def snippet_globals(path: Path) -> str:
    """The settings a shipped Dovecot snippet sets outside its blocks (e.g. `auth_cache_size =
    0`), uncommented lines only, to append after a test's own settings as the include would
    (Debian includes conf.d/auth-*.conf.ext at the end of 10-auth.conf)."""
    lines, depth = [], 0
    for line in path.read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        opens, closes = text.count("{") - text.count("%{"), text.count("}") - text.count("%{")
        if depth == 0 and "=" in text and not opens and not closes:
            lines.append(text)
        depth += opens - closes
    return "\n".join(lines) + ("\n" if lines else "")

__all__ = [
    "console_scripts",
    "snippet_globals",
    "ACL_LDIF",
    "BINARY_ATTRIBUTES",
    "HMAC_SHA1",
    "HMAC_SHA256",
    "HMAC_SHA512",
    "OATH_SCHEMA_LDIF",
    "REPO_ROOT",
    "Dovecot",
    "Entry",
    "LoginResult",
    "Slapd",
    "check_traversable",
    "escape_dn_value",
    "escape_filter_value",
    "free_port",
    "imap_login",
    "ldif_entry",
    "ldif_line",
    "make_workdir",
    "parse_ldif",
    "poll_until",
    "pop3_login",
    "remove_workdir",
    "ssha",
    "wait_for_step_safe",
]
