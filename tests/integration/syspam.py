"""Real PAM service files and real system users for tests (root only), removed afterwards.

Why real ones: what mailmfa-pam and single-host mode must get right (pam_exec's stdin and
environment, pam_unix checking /etc/shadow, Dovecot's passdb pam calling the account
stack) are properties of Linux-PAM and the system, not of our code.

Names are unique per test run (a random tag), so helpers running suites in parallel on
the same machine do not collide; everything made is removed at exit even when a test fails.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

PAM_DIR = Path("/etc/pam.d")
TAG = secrets.token_hex(3)
PAM_PYTHON = next((p for p in ("/lib/security/pam_python.so", "/usr/lib/security/pam_python.so",
                               "/lib/x86_64-linux-gnu/security/pam_python.so")
                   if os.path.exists(p)), None)

_made_services: list[Path] = []
_made_users: list[str] = []
_n = iter(range(1, 1_000_000))


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if not found:
        raise FileNotFoundError(f"{name} is not installed")
    return found


def unique_name(prefix: str = "mmfa") -> str:
    """A short name valid as a PAM service and as a Linux user name (<= 32 chars, lowercase)."""
    return f"{prefix}{TAG}x{next(_n)}"


def add_pam_service(text: str, prefix: str = "mmfa") -> str:
    """Write /etc/pam.d/<unique name> with `text`; returns the service name."""
    name = unique_name(prefix)
    path = PAM_DIR / name
    path.write_text(text)
    path.chmod(0o644)
    _made_services.append(path)
    return name


def remove_pam_service(name: str) -> None:
    path = PAM_DIR / name
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    if path in _made_services:
        _made_services.remove(path)


@contextlib.contextmanager
def pam_service(text: str, prefix: str = "mmfa") -> Iterator[str]:
    name = add_pam_service(text, prefix)
    try:
        yield name
    finally:
        remove_pam_service(name)


def _retry(args: list[str], input_text: str | None = None) -> None:
    """useradd/chpasswd/userdel take /etc/passwd's lock: retry briefly when another
    process (another helper's tests) holds it."""
    for attempt in range(20):
        proc = subprocess.run(args, input=input_text, capture_output=True, text=True, timeout=60, check=False)
        if proc.returncode == 0:
            return
        if "lock" not in (proc.stderr + proc.stdout).lower() or attempt == 19:
            raise RuntimeError(f"{args[0]} exited {proc.returncode}: {proc.stderr.strip()}")
        time.sleep(0.1)


def add_system_user(password: str, prefix: str = "mmfa") -> str:
    """A real local account (no home, no login shell) with `password` set via chpasswd."""
    name = unique_name(prefix)
    _retry([_tool("useradd"), "--no-create-home", "--home-dir", "/nonexistent", "--shell",
            "/usr/sbin/nologin", "--no-user-group", name])
    _made_users.append(name)
    _retry([_tool("chpasswd")], f"{name}:{password}\n")
    return name


def remove_system_user(name: str) -> None:
    with contextlib.suppress(RuntimeError):
        _retry([_tool("userdel"), "--remove", name])
    if name in _made_users:
        _made_users.remove(name)


@atexit.register
def _cleanup() -> None:
    while _made_services:
        with contextlib.suppress(OSError):
            _made_services.pop().unlink()
    while _made_users:
        name = _made_users.pop()
        with contextlib.suppress(Exception):
            remove_system_user(name)


def pamtester(service: str, user: str, password: str, *ops: str, rhost: str = "192.0.2.7",
              timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`pamtester -v -I rhost=RHOST SERVICE USER OPS...` with the password on stdin (pamtester
    answers PAM's prompt from stdin). Exit 0 when every operation succeeded."""
    return subprocess.run(
        [_tool("pamtester"), "-v", "-I", f"rhost={rhost}", service, user, *(ops or ("authenticate",))],
        input=password + "\n", capture_output=True, text=True, timeout=timeout, check=False,
    )


def password_service_text() -> str:
    """A PAM service checking the system password alone (single-host mode's password factor).
    nodelay: no ~2 s pam_unix sleep after a wrong password (mailmfa throttles by itself)."""
    return "auth required pam_unix.so nodelay\naccount required pam_unix.so\n"


class SingleHost:
    """One single-host setup for a test module: a password PAM service (pam_unix), system
    users, config files without [ldap] (the embedded default: [store] sqlite + [password] pam)
    and the SQLite token database. close() removes the users and the PAM service."""

    rip = "192.0.2.21"  # the client address pam_login reports

    def __init__(self, workdir: Path, tail: str = "", user_prefix: str = "mmh") -> None:
        self.workdir = workdir
        self.db = workdir / "lib" / "mailmfa.db"  # created by the first program that opens it
        self.user_prefix = user_prefix
        self.password_service = add_pam_service(password_service_text())
        self.users: list[str] = []
        self.config = self.write_config("mailmfa.toml", tail)

    def write_config(self, name: str, tail: str = "", db: Path | None = None) -> Path:
        """A config in the workdir (readable by Dovecot's auth process); `tail` adds TOML."""
        path = self.workdir / name
        path.write_text(
            f'[store]\npath = "{db or self.db}"\ntimeout = 30\n'
            f'[password]\npam_service = "{self.password_service}"\n'
            '[totp]\nissuer = "Single Host"\n' + tail)
        os.chmod(path, 0o644)
        return path

    def add_user(self, password: str) -> str:
        name = add_system_user(password, prefix=self.user_prefix)
        self.users.append(name)
        return name

    def pam_login(self, user: str, secret_text: str, config: Path | None = None,
                  rip: str | None = None) -> tuple[int, str]:
        """One login as pam_exec runs mailmfa-pam: (exit status, its log line)."""
        from pamface import pam_bin

        env = {"PAM_TYPE": "auth", "PAM_USER": user, "PAM_SERVICE": "imap", "PAM_RHOST": rip or self.rip}
        proc = subprocess.run([str(pam_bin()), "--config", str(config or self.config)],
                              input=secret_text.encode(), env=env, capture_output=True, timeout=60, check=False)
        return proc.returncode, proc.stderr.decode()

    def token(self, user: str):  # -> TokenState | None
        from mailmfa.backends.sqlite import SqliteStore

        store = SqliteStore(str(self.db), 5.0)
        try:
            return store.get(user)
        finally:
            store.close()

    def close(self) -> None:
        for name in self.users:
            remove_system_user(name)
        remove_pam_service(self.password_service)

    @classmethod
    def fixture(cls, workdir: Path) -> Iterator[SingleHost]:
        """A module fixture's body: the host, closed at the end; skipped without mailmfa-pam."""
        import pytest

        from pamface import pam_bin

        if pam_bin() is None:
            pytest.skip("mailmfa-pam is not installed in this venv (run `make venv`)")
        host = cls(workdir)
        yield host
        host.close()
