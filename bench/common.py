"""Shared pieces of the benchmarks: the test harness's real servers, TOTP codes, statistics."""

from __future__ import annotations

import hashlib
import hmac
import os
import pwd
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
sys.path.insert(0, str(REPO))

from servers import Slapd, make_workdir, poll_until, remove_workdir  # noqa: E402

SHIM = REPO / "checkpassword" / "mailmfa-checkpassword"
PAM_SHIM = REPO / "checkpassword" / "mailmfa-pam"  # the same shim; the name picks mailmfa.entry.pam
LUA_SCRIPT = REPO / "conf" / "dovecot" / "mailmfa.lua"

__all__ = ["LUA_SCRIPT", "PAM_SHIM", "REPO", "SHIM", "Slapd", "make_workdir", "poll_until", "remove_workdir"]


def venv_bin(name: str) -> str:
    """A console script of the interpreter running the bench (the venv `make bench` builds)."""
    path = Path(sys.prefix) / "bin" / name
    if not path.exists():
        raise SystemExit(f"{path} missing: run `make venv` (or `make bench`)")
    return str(path)


def totp(secret: bytes, when: float, digits: int = 6, period: int = 30) -> str:
    """RFC 6238 SHA1 code (the bench's own, independent of mailmfa.core)."""
    mac = hmac.new(secret, struct.pack(">Q", int(when // period)), hashlib.sha1).digest()
    off = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[off:off + 4])[0] & 0x7FFFFFFF
    return str(value % 10**digits).zfill(digits)


def secret_of(uid: str) -> bytes:
    """Slapd.add_many_users()'s deterministic secret."""
    return hashlib.sha1(uid.encode()).digest()


def wait_step_margin(margin: float = 3.0, period: int = 30) -> None:
    """Do not start a timed cell in the last `margin` seconds of a step (codes roll over)."""
    left = period - (time.time() % period)
    if left < margin:
        time.sleep(left + 0.05)


def write_config(workdir: Path, ldap: Slapd, name: str, daemon: str = "", uri: str | None = None) -> Path:
    secret = workdir / f"{name}.secret"
    secret.write_text(ldap.service_password + "\n")
    secret.chmod(0o644)
    # the reuse store ([policy] reuse_seconds, default 60) where the per-login programs, run
    # by Dovecot as `dovecot`, can write it, as in a real installation's /var/lib/mailmfa
    state = workdir / "state"
    state.mkdir(exist_ok=True)
    pw = pwd.getpwnam("dovecot")
    os.chown(state, pw.pw_uid, pw.pw_gid)
    path = workdir / name
    path.write_text(
        f'[ldap]\nuris = ["{uri or ldap.uri}"]\nbind_dn = "{ldap.service_dn}"\n'
        f'bind_password_file = "{secret}"\nuser_base = "ou=people,{ldap.suffix}"\ntimeout = 3\n'
        f'[policy]\nstate_file = "{state}/state.db"\n'
        f"{daemon}"
    )
    path.chmod(0o644)
    return path


def pam_authd_passdb(workdir: Path, sock: Path, config: Path) -> str | None:
    """The `passdb pam` body for pam→authd: a PAM service from conf/pam.d/mailmfa's commented
    fast line (pam_exec -> checkpassword/mailmfa-pam --socket SOCK), written to /etc/pam.d under
    a unique name. None when not root (it cannot be written). remove_pam_services() removes it
    (and so does exit)."""
    if os.geteuid() != 0:
        return None
    import syspam
    from pamface import fast_exec_service_text, passdb_pam

    text = fast_exec_service_text(config, workdir / "pam.log", str(PAM_SHIM), sock)
    return passdb_pam(syspam.add_pam_service(text, prefix="mmbench"))


def remove_pam_services() -> None:
    """Remove the PAM services pam_authd_passdb() wrote."""
    if "syspam" in sys.modules:
        sys.modules["syspam"]._cleanup()


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


class AuthdProcess:
    """mailmfa-authd --foreground on its own socket; stopped by PID."""

    def __init__(self, workdir: Path, config: Path, sock: Path) -> None:
        self.workdir, self.config, self.sock = workdir, config, sock
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AuthdProcess:
        log = open(self.workdir / "authd.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen([venv_bin("mailmfa-authd"), "--foreground", "--config", str(self.config)],
                                     stdout=log, stderr=log, stdin=subprocess.DEVNULL)

        def ready() -> bool:
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.settimeout(1)
                    s.connect(str(self.sock))
                    s.sendall(b"MFA1 PING\n")
                    return s.recv(64) == b"OK pong\n"
            except OSError:
                return False

        poll_until(ready, 15, "mailmfa-authd")
        return self

    def rss_kib(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return -1

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)


def run_checkpassword(exe: list[str], config: Path, user: str, password: str,
                      env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run a checkpassword program as Dovecot does: request on fd 3, /bin/true as the reply
    program. posix_spawn, so the measured time is the program's, not a shell's."""
    r, w = os.pipe()
    os.write(w, user.encode() + b"\0" + password.encode() + b"\0\0")
    os.close(w)
    er, ew = os.pipe()
    argv = [*exe, "--config", str(config), "/bin/true"]
    environ = {"SERVICE": "imap", "TCPREMOTEIP": "192.0.2.7", **(env or {})}
    try:
        pid = os.posix_spawn(argv[0], argv, environ, file_actions=[
            (os.POSIX_SPAWN_DUP2, r, 3),
            (os.POSIX_SPAWN_DUP2, ew, 2),
            (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0),
        ])
    finally:
        os.close(r)
        os.close(ew)
    chunks = []
    while chunk := os.read(er, 65536):
        chunks.append(chunk)
    os.close(er)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode(errors="replace")


def process_cpu(roots: dict[str, int]) -> dict[str, float]:
    """CPU time (ms) spent so far by each process tree in `roots` (label -> pid), split by
    process name: "<label>: <comm>" for live processes, "<label>: exited via <comm>" for the
    exited ones, by the live process that reaped them (Dovecot's master reaps the per-login imap
    and imap-login, the auth process the checkpassword and pam_exec programs). Two calls around a
    cell, minus each other, say where a login's CPU goes (bench/run.py --breakdown)."""
    tick = os.sysconf("SC_CLK_TCK")
    procs: dict[int, tuple[str, int, int, int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            raw = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue  # exited meanwhile
        comm = raw[raw.index("(") + 1:raw.rindex(")")]
        f = raw.rsplit(")", 1)[1].split()
        procs[int(name)] = (comm, int(f[1]), int(f[11]) + int(f[12]), int(f[13]) + int(f[14]))
    children: dict[int, list[int]] = {}
    for pid, (_, ppid, _, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    out: dict[str, float] = {}
    for label, root in roots.items():
        if root not in procs:
            continue
        stack = [root]
        while stack:
            pid = stack.pop()
            stack += children.get(pid, [])
            comm, _, own, reaped = procs[pid]
            for key, ticks in ((f"{label}: {comm}", own), (f"{label}: exited via {comm}", reaped)):
                out[key] = out.get(key, 0.0) + ticks * 1000 / tick
    return out
