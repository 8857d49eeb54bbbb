"""Small helpers for the throttle/fault/hostile-input tests (processes run as Dovecot runs them)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pyotp

from mfa import checkpassword_bin


def request_bytes(user: str, secret: str) -> bytes:
    return user.encode() + b"\0" + secret.encode() + b"\0\0"


def spawn(config: Path, data: bytes, rip: str = "192.0.2.7", env: dict[str, str] | None = None,
          user: str | None = None, preexec: Callable[[], None] | None = None) -> subprocess.Popen[str]:
    """Start mailmfa-checkpassword with `data` on fd 3 (reply program /usr/bin/env)."""
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)
    try:
        return subprocess.Popen(
            ["/bin/bash", "-c", f'exec "$0" "$@" 3<&{r} {r}<&-', checkpassword_bin(),
             "--config", str(config), "/usr/bin/env"],
            pass_fds=(r,), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={"SERVICE": "imap", "TCPREMOTEIP": rip, **(env or {})},
            user=user, preexec_fn=preexec,  # noqa: PLW1509 - only a setrlimit, no locks taken
        )
    finally:
        os.close(r)


def run(config: Path, data: bytes, timeout: float = 30, **kw) -> tuple[int, str, str, float]:
    """(exit code, stdout, stderr, seconds); a hang raises TimeoutExpired after `timeout`."""
    started = time.monotonic()
    proc = spawn(config, data, **kw)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return proc.returncode, out, err, time.monotonic() - started


def login(config: Path, user: str, secret: str, **kw) -> tuple[int, str, str, float]:
    return run(config, request_bytes(user, secret), **kw)


def wrong_code(secret: bytes, now: float | None = None) -> str:
    """A code that matches no step of the last day nor the window: a guess, not a stale code."""
    now = time.time() if now is None else now
    totp = pyotp.TOTP(__import__("base64").b32encode(secret).decode())
    used = {totp.at(int(now) - 30 * k) for k in range(-3, 2885)}
    return next(f"{n:06d}" for n in range(1_000_000) if f"{n:06d}" not in used)


def reason(stderr: str) -> str:
    for line in stderr.splitlines():
        if line.startswith("mailmfa result="):
            for part in line.split():
                if part.startswith("reason="):
                    return part[len("reason="):]
    return ""
