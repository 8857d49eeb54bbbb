"""Helpers shared by the mailmfa integration tests: config files, users, codes, the executable."""

from __future__ import annotations

import base64
import itertools
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pyotp

from servers import REPO_ROOT, Slapd

SHIM = REPO_ROOT / "checkpassword" / "mailmfa-checkpassword"


def checkpassword_bin() -> str:
    """The installed console script of the test venv, else the source checkout's shim."""
    venv_script = Path(sys.prefix) / "bin" / "mailmfa-checkpassword"
    return str(venv_script if venv_script.exists() else SHIM)


def mailmfa_cmd() -> list[str]:
    """The admin CLI: the installed console script of the test venv, else the module."""
    script = Path(sys.prefix) / "bin" / "mailmfa"
    return [str(script)] if script.exists() else [sys.executable, "-m", "mailmfa.admin"]


def write_config(workdir: Path, slapd: Slapd, name: str = "mailmfa.toml", *,
                 uris: list[str] | None = None, extra_ldap: str = "", tail: str = "",
                 require_mfa: bool = False, timeout: float = 2.0,
                 reuse_seconds: int = 0, state_file: Path | None = None) -> Path:
    """A mailmfa.toml (and its service password file) readable by Dovecot's auth process.

    Reuse of a just-verified password+code is off unless `reuse_seconds` is given (tests
    of strict replay refusal rely on that); its state file defaults to the workdir."""
    secret_file = workdir / f"{name}.ldap.secret"
    secret_file.write_text(slapd.service_password + "\n")
    os.chmod(secret_file, 0o644)
    uri_list = ", ".join(f'"{u}"' for u in (uris or [slapd.uri]))
    path = workdir / name
    path.write_text(
        f"""[ldap]
uris = [{uri_list}]
bind_dn = "{slapd.service_dn}"
bind_password_file = "{secret_file}"
user_base = "ou=people,{slapd.suffix}"
timeout = {timeout}
{extra_ldap}
[totp]
issuer = "Test Mail"
[policy]
require_mfa = {"true" if require_mfa else "false"}
reuse_seconds = {reuse_seconds}
state_file = "{state_file or workdir / (name + '.state.db')}"
{tail}"""
    )
    os.chmod(path, 0o644)
    return path


def new_secret() -> bytes:
    return secrets.token_bytes(20)


_uids = itertools.count(1)


def token_user(slapd: Slapd, prefix: str, *, token: bool = True, token_on_user: bool = True,
               ) -> tuple[str, str, bytes | None]:
    """A new user `<prefix><n>` with password `pw-<uid>` and (unless token=False) a fresh
    TOTP token: (uid, password, secret)."""
    uid = f"{prefix}{next(_uids)}"
    secret = new_secret() if token else None
    slapd.add_user(uid, "pw-" + uid, secret, token_on_user=token_on_user)
    return uid, "pw-" + uid, secret


def code_at(secret: bytes, when: float | None = None, digits: int = 6) -> str:
    """The code an authenticator app shows, computed with pyotp (an independent implementation)."""
    totp = pyotp.TOTP(base64.b32encode(secret).decode(), digits=digits)
    return totp.at(int(time.time() if when is None else when))


def fd3_argv(read_fd: int, argv: list[str]) -> list[str]:
    """argv that runs `argv` with `read_fd` moved to fd 3 (Dovecot's checkpassword input)."""
    redirect = "" if read_fd == 3 else f" 3<&{read_fd} {read_fd}<&-"
    return ["/bin/bash", "-c", f'exec "$0" "$@"{redirect}', *argv]


def run_checkpassword(config: Path, user: str, password: str, env: dict[str, str] | None = None,
                      raw: bytes | None = None, exe: str | None = None,
                      timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run the executable as Dovecot does: request on fd 3, reply program last in argv.

    The reply program is /usr/bin/env, so a success prints the environment it was given.
    """
    data = raw if raw is not None else user.encode() + b"\0" + password.encode() + b"\0\0"
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)
    try:
        return subprocess.run(
            fd3_argv(r, [exe or checkpassword_bin(), "--config", str(config), "/usr/bin/env"]),
            pass_fds=(r,), capture_output=True, text=True,
            env={"SERVICE": "imap", "TCPREMOTEIP": "192.0.2.7", **(env or {})}, timeout=timeout,
        )
    finally:
        os.close(r)


def wrong_code(secret: bytes, now: float, avoid: set[str] | frozenset[str] = frozenset()) -> str:
    """A code that is neither valid around `now` nor one of the last day's (the throttle
    does not count those stale codes), chosen with the core's own rules -- so a test
    counting failures cannot flake on a chance hit. Default params (6 digits, 30 s, ±1)."""
    from mailmfa.core.policy import CODE_BAD, check_code, is_stale_code
    from mailmfa.core.types import Token, TotpParams

    token = Token("x", secret, TotpParams())
    while True:
        code = f"{secrets.randbelow(10**6):06d}"
        if (code not in avoid and check_code(token, code, now).result == CODE_BAD
                and not is_stale_code(token, code, now)):
            return code
