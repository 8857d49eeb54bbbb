"""The login benchmark: one command, one table (see README, "Performance").

Through the same real Dovecot and slapd on loopback, IMAP LOGIN+LOGOUT with distinct users
(so codes never collide), 1 and 8 concurrent clients, for each way of checking a login:

  native passdb ldap   Dovecot's own LDAP bind, no 2FA (the ceiling)
  otp overlay          slapd's otp overlay checks password+code at that bind (the native peer)
  checkpassword        mailmfa-checkpassword, checking in-process (imports ldap3 per login)
  checkpassword→authd  mailmfa-checkpassword in client mode ([daemon] use), asking mailmfa-authd
  checkpassword --socket   the same with --socket PATH: asks before reading any config
  lua→authd            Dovecot's passdb lua (conf/dovecot/mailmfa.lua, blocking=yes: auth workers)
  lua→authd no worker  the same script run in the auth process itself (blocking=no)
  pam→authd            Dovecot's passdb pam -> pam_exec -> checkpassword/mailmfa-pam --socket (root only:
                       writes a PAM service under /etc/pam.d, removed at the end)
  (python floor)       reference: bench/python-floor-checkpassword starts Python -IS and execs the
                       reply, checking nothing: the least a Python checkpassword program costs

cpu/login: the whole machine's busy CPU time during the cell divided by its logins (/proc/stat).
--breakdown: the same per login by process (Dovecot's per-login imap/imap-login, its auth and
auth-worker, the rest of Dovecot, slapd, mailmfa-authd, the load generator), from /proc/PID/stat.

Then mailmfa-authd alone: authentications/s at 1/8/64 concurrent connections, and its RSS
after --daemon-requests requests (default 20 000; --full: 100 000).

    bench/run.py [--seconds 6] [--rounds 3] [--full] [--only NAME,...] [--breakdown] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from common import (
    LUA_SCRIPT,
    SHIM,
    AuthdProcess,
    Slapd,
    make_workdir,
    median,
    pam_authd_passdb,
    percentile,
    process_cpu,
    remove_pam_services,
    remove_workdir,
    secret_of,
    totp,
    wait_step_margin,
    write_config,
)

from authd import lua_passdb
from servers import Dovecot

PEER = "otp overlay"
FLOOR = "(python floor)"
PY_FLOOR = Path(__file__).resolve().parent / "python-floor-checkpassword"
Password = Callable[[str], str]


# ------------------------------------------------------------------------------ IMAP load

def imap_login_logout(port: int, user: str, password: str) -> bool:
    """LOGIN then LOGOUT on a raw socket (imaplib would cost the load generator more CPU)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        f = s.makefile("rb")
        if not f.readline().startswith(b"* OK"):
            raise OSError("no greeting")
        s.sendall(f'a LOGIN "{user}" "{password}"\r\n'.encode())
        while True:
            line = f.readline()
            if not line:
                raise OSError("closed during LOGIN")
            if line.startswith(b"a "):
                ok = line.startswith(b"a OK")
                break
        s.sendall(b"b LOGOUT\r\n")
        while (line := f.readline()) and not line.startswith(b"b "):
            pass
        return ok


def drive(names: list[str], clients: int, seconds: float, prepare: Callable[[str], Any],
          attempt: Callable[[Any, Any], bool], session: Callable[[], Any] = contextlib.nullcontext) -> dict:
    """The load generator: `clients` threads, each in its own `session()`, take distinct names
    and time `attempt(session, prepare(name))` (True = the expected answer) until `seconds`
    have passed or the names run out."""
    it = iter(names)
    lock = threading.Lock()
    lat: list[float] = []
    fails = [0]
    deadline = 0.0  # set once the step margin is waited out

    def client() -> None:
        with session() as conn:
            while time.monotonic() < deadline:
                with lock:
                    name = next(it, None)
                if name is None:
                    return
                request = prepare(name)
                t0 = time.perf_counter()
                try:
                    ok = attempt(conn, request)
                except OSError:
                    ok = False
                dt = time.perf_counter() - t0
                with lock:
                    lat.append(dt)
                    if not ok:
                        fails[0] += 1

    wait_step_margin()
    started = time.monotonic()
    deadline = started + seconds
    busy_before = machine_busy_ms()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"lat_ms": [x * 1000 for x in lat], "fails": fails[0], "elapsed": time.monotonic() - started,
            "busy_ms": machine_busy_ms() - busy_before}


def imap_cell(port: int, users: list[str], password: Password, clients: int, seconds: float) -> dict:
    """`clients` IMAP clients log in as fast as they can for `seconds` (or until users run out)."""
    return drive(users, clients, seconds, lambda uid: (uid, password(uid)),
                 lambda _conn, up: imap_login_logout(port, *up))


def machine_busy_ms() -> float:
    """CPU time the whole machine spent busy (all CPUs, from /proc/stat), in ms: per login it
    compares variants by the CPU they cost, which load from elsewhere disturbs less than
    logins/s (it also counts the load generator and any other process, alike for all)."""
    with open("/proc/stat") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) * 1000 / os.sysconf("SC_CLK_TCK")


def summarize(parts: list[dict]) -> dict:
    """One cell's figures from its rounds."""
    ms = [x for p in parts for x in p["lat_ms"]]
    elapsed = sum(p["elapsed"] for p in parts)
    procs: dict[str, float] = {}
    for p in parts:
        for k, v in p.get("procs_ms", {}).items():
            procs[k] = procs.get(k, 0.0) + v
    return {"procs_ms": {k: v / max(1, len(ms)) for k, v in procs.items()},
            "logins": len(ms), "fails": sum(p["fails"] for p in parts), "per_s": len(ms) / elapsed,
            "cpu_ms": sum(p["busy_ms"] for p in parts) / max(1, len(ms)),
            "p50": median(ms), "p95": percentile(ms, 95), "p99": percentile(ms, 99)}


# ------------------------------------------------------------------------------ variants

class Users:
    """Distinct users per variant and cell, provisioned in one ldapadd each."""

    def __init__(self, ldap: Slapd, prefix: str, n: int) -> None:
        ldap.add_many_users(n, prefix=prefix, password=lambda u: f"pw-{u}")
        self.names = [f"{prefix}{i}" for i in range(n)]
        self._next = 0

    def take(self, n: int) -> list[str]:
        out = self.names[self._next:self._next + n]
        self._next += n
        return out


def with_code(uid: str) -> str:
    return f"pw-{uid}" + totp(secret_of(uid), time.time())


def password_only(uid: str) -> str:
    return f"pw-{uid}"


def default_ldap_client() -> str:
    try:
        import ldap  # noqa: F401
    except ImportError:
        return "ldap3"
    return "python-ldap"


def ldap_passdb(workdir: Path, ldap: Slapd, name: str, uri: str) -> str:
    """Dovecot's own passdb ldap with an authentication bind to a DN template (one LDAP
    request per login, no search) to slapd at `uri`: the ceiling, and with the otp overlay
    the native peer."""
    if Dovecot.version() >= (2, 4):
        # 2.4.1 insists on a filter even when the DN template makes it unused
        return (f"driver = ldap\nldap_uris = {uri}\nldap_base = {ldap.people_dn}\n"
                f"passdb_ldap_filter = (uid=%{{user}})\n"
                f"passdb_ldap_bind = yes\npassdb_ldap_bind_userdn = uid=%{{user}},{ldap.people_dn}")
    conf = workdir / f"{name}-ldap.conf.ext"
    conf.write_text(
        f"uris = {uri}\nldap_version = 3\nauth_bind = yes\n"
        f"auth_bind_userdn = uid=%u,{ldap.people_dn}\nbase = {ldap.people_dn}\n")
    conf.chmod(0o644)
    return f"driver = ldap\nargs = {conf}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=6.0, help="per cell (default 6)")
    ap.add_argument("--clients", default="1,8", help="concurrency levels (default 1,8)")
    ap.add_argument("--rounds", type=int, default=3, help="each cell is split into this many rounds")
    ap.add_argument("--full", action="store_true", help="daemon RSS after 100 000 requests")
    ap.add_argument("--daemon-requests", type=int, default=20_000)
    ap.add_argument("--only", default="", help="comma-separated variant names (default all)")
    ap.add_argument("--ldap-client", choices=("ldap3", "python-ldap"), default=default_ldap_client(),
                    help="mailmfa-authd's [daemon] ldap_client (default: python-ldap when installed)")
    ap.add_argument("--breakdown", action="store_true",
                    help="also print each variant's CPU per login by process (Dovecot's, slapd, mailmfa-authd)")
    ap.add_argument("--ldapi", action="store_true",
                    help="every variant reaches slapd over its UNIX socket (ldapi://) instead of loopback TCP")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    levels = [int(x) for x in args.clients.split(",")]
    load_before = os.getloadavg()
    per_cell = int(args.seconds * 300) + 50  # more users than any variant can log in

    wd = make_workdir("mailmfa-bench-")
    ldap = Slapd(wd / "ldap", log_level="0")
    otp_ldap = Slapd(wd / "otp", with_otp_overlay=True, log_level="0")
    servers: list = [ldap.start(), otp_ldap.start()]
    results: dict[str, dict[int, dict]] = {}
    daemon_results: dict = {}
    try:
        sock = wd / "authd.sock"
        def uri(server: Slapd) -> str:  # where every variant reaches slapd
            return server.ldapi_uri if args.ldapi else server.uri

        inproc_cfg = write_config(wd, ldap, "inproc.toml", '[daemon]\nuse = "never"\n', uri=uri(ldap))
        client_cfg = write_config(wd, ldap, "client.toml",
                                  f'[daemon]\nsocket = "{sock}"\nuse = "always"\nfallback = false\n'
                                  f'ldap_client = "{args.ldap_client}"\n', uri=uri(ldap))
        authd = AuthdProcess(wd, client_cfg, sock).start()
        servers.append(authd)
        rss_fresh = authd.rss_kib()
        shim = f"{SHIM}"
        cp_socket = f"driver = checkpassword\nargs = {shim} --socket {sock} --config {client_cfg}"
        lua_worker = lua_passdb(sock, worker=True, script=LUA_SCRIPT)
        lua_inproc = lua_passdb(sock, worker=False, script=LUA_SCRIPT)
        variants: dict[str, tuple[Slapd, str, str, Password]] = {
            "native passdb ldap": (ldap, ldap_passdb(wd, ldap, "native", uri(ldap)), "", password_only),
            PEER: (otp_ldap, ldap_passdb(wd, otp_ldap, "otp", uri(otp_ldap)), "", with_code),
        }
        if Dovecot.has_checkpassword():  # the checkpassword driver is gone in 2.4
            variants |= {
                "checkpassword": (ldap, f"driver = checkpassword\nargs = {shim} --config {inproc_cfg}", "",
                                  with_code),
                "checkpassword→authd": (ldap, f"driver = checkpassword\nargs = {shim} --config {client_cfg}", "",
                                        with_code),
                "checkpassword --socket": (ldap, cp_socket, "", with_code),
            }
        variants |= {
            "lua→authd": (ldap, *lua_worker, with_code),
            "lua→authd no worker": (ldap, *lua_inproc, with_code),
        }
        if Dovecot.has_checkpassword():
            variants[FLOOR] = (ldap, f"driver = checkpassword\nargs = {PY_FLOOR}", "", password_only)
        if pam_passdb := pam_authd_passdb(wd, sock, client_cfg):
            variants["pam→authd"] = (ldap, pam_passdb, "", with_code)
        only = {x.strip() for x in args.only.split(",") if x.strip()}
        chosen = {name: v for name, v in variants.items() if not only or name in only}
        # every variant's Dovecot runs at once and the cells go in rounds (A B C ... A B C ...),
        # so a burst of load from other processes hits every variant alike
        running: dict[str, tuple[Dovecot, Users, Password, dict[str, int]]] = {}
        for idx, (name, (server, passdb, extra, password)) in enumerate(chosen.items()):
            users = Users(server, f"v{idx}u", per_cell * len(levels) + 20)
            dc = Dovecot(wd / f"dc{idx}", passdb, extra=extra, auth_debug=False).start()
            servers.append(dc)
            imap_cell(dc.imap_port, users.take(10), password, 2, 60)  # warm-up (pages, workers)
            roots = {"dovecot": dc.pid, "slapd": server.pid, "mailmfa-authd": authd.proc.pid}
            running[name] = (dc, users, password, roots)
        parts: dict[str, dict[int, list[dict]]] = {name: {c: [] for c in levels} for name in running}
        for _ in range(args.rounds):
            for c in levels:
                for name, (dc, users, password, roots) in running.items():
                    before, own = process_cpu(roots), os.times()
                    cell = imap_cell(dc.imap_port, users.take(per_cell // args.rounds), password,
                                     c, args.seconds / args.rounds)
                    after, own_after = process_cpu(roots), os.times()
                    cell["procs_ms"] = {k: v - before.get(k, 0.0) for k, v in after.items()}
                    cell["procs_ms"]["bench client"] = (own_after.user + own_after.system
                                                        - own.user - own.system) * 1000
                    parts[name][c].append(cell)
        for name in running:
            results[name] = {c: summarize(parts[name][c]) for c in levels}
            running[name][0].stop()
        if not only or "authd" in only:
            daemon_results = bench_daemon(ldap, sock, authd, args)
            daemon_results["rss_fresh_kib"] = rss_fresh
    finally:
        for s in reversed(servers):
            s.stop()
        remove_pam_services()
        remove_workdir(wd)
    if args.json:
        print(json.dumps({"imap": results, "authd": daemon_results}, indent=2))
        return
    print_tables(results, daemon_results, levels, args)
    print(f"\nload average (1 min) before/after: {load_before[0]:.2f} / {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} CPUs (other processes' load skews every figure)")


# ------------------------------------------------------------------------------ daemon alone

def bench_daemon(ldap: Slapd, sock: Path, authd: AuthdProcess, args: argparse.Namespace) -> dict:
    """AUTH requests over persistent connections: successful 2FA logins of distinct users."""
    from mailmfa.daemon import protocol

    out: dict = {"levels": {}}
    n_users = int(args.seconds * 800) + 100
    users = Users(ldap, "dmn", n_users * 3)
    for conns in (1, 8, 64):
        out["levels"][conns] = r = daemon_cell(sock, users.take(n_users), conns, args.seconds)
        print(f"  authd {conns} connections: {r['per_s']:.0f}/s", file=sys.stderr)

    # memory: many requests (bad codes for a cycling set of users: the full LDAP path but the
    # last write), over 8 connections; RSS before and after
    total = 100_000 if args.full else args.daemon_requests
    out["rss_start_kib"] = authd.rss_kib()
    cycle = itertools.cycle(users.names[:500])
    lock = threading.Lock()
    done = [0]
    t0 = time.monotonic()

    def hammer() -> None:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(30)
            s.connect(str(sock))
            f = s.makefile("rb")
            while True:
                with lock:
                    if done[0] >= total:
                        return
                    done[0] += 1
                    uid = next(cycle)
                s.sendall(protocol.auth_request(uid, f"pw-{uid}000000", "imap", "127.0.0.1"))
                f.readline()

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out["rss_requests"] = total
    out["rss_seconds"] = time.monotonic() - t0
    out["rss_end_kib"] = authd.rss_kib()
    return out


def daemon_cell(sock: Path, names: list[str], conns: int, seconds: float) -> dict:
    """`conns` persistent connections sending successful logins for `seconds`."""
    from mailmfa.daemon import protocol

    @contextlib.contextmanager
    def connection() -> Iterator[tuple[socket.socket, Any]]:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(30)
            s.connect(str(sock))
            yield s, s.makefile("rb")

    def attempt(conn: tuple[socket.socket, Any], line: bytes) -> bool:
        conn[0].sendall(line)
        return conn[1].readline() == b"OK ok\n"

    r = drive(names, conns, seconds, lambda uid: protocol.auth_request(uid, with_code(uid), "imap", "127.0.0.1"),
              attempt, connection)
    lat = r["lat_ms"]
    return {"auths": len(lat), "per_s": len(lat) / r["elapsed"], "p50": median(lat), "p99": percentile(lat, 99),
            "not_ok": r["fails"]}


def print_breakdown(results: dict, levels: list[int]) -> None:
    """CPU per login by process: where a variant's extra cost goes (per-process times are
    exact; the machine total comes from /proc/stat ticks, so the rows need not add up to it)."""
    def group(key: str) -> str:
        if key == "dovecot: exited via dovecot":
            return "per-login"
        if key.startswith("dovecot: exited via"):
            return "programs"
        if key in ("dovecot: auth", "slapd: slapd", "mailmfa-authd: mailmfa-authd", "bench client"):
            return key
        if key.startswith("dovecot: "):
            return "dovecot etc"
        return "other"
    cols = ["per-login", "programs", "dovecot: auth", "dovecot etc", "slapd: slapd", "mailmfa-authd: mailmfa-authd",
            "bench client"]
    short = ["per-login", "programs", "auth", "dovecot etc", "slapd", "authd", "bench"]
    print("\nCPU ms per login by process (per-login: Dovecot's imap-login and imap processes; programs: "
          "what the auth process ran, checkpassword or pam_exec's; auth: auth and auth-worker)")
    head = f"{'variant':24s} {'clients':>7s} " + " ".join(f"{x:>11s}" for x in short) + f" {'machine':>8s}"
    print(head)
    print("-" * len(head))
    for c in levels:
        for name, cells in results.items():
            grouped: dict[str, float] = {}
            for k, v in cells[c]["procs_ms"].items():
                grouped[group(k)] = grouped.get(group(k), 0.0) + v
            print(f"{name:24s} {c:7d} " + " ".join(f"{grouped.get(k, 0.0):11.2f}" for k in cols)
                  + f" {cells[c]['cpu_ms']:8.2f}")


# issue #7's goals, as ratios to the peer in the same run: (variant, clients, what, limit)
GOALS = [("lua→authd", 8, "p50", 1.1), ("lua→authd", 8, "throughput", 1.0),
         ("checkpassword --socket", 1, "p50", 2.0), ("checkpassword --socket", 8, "p50", 2.0)]


def goal_lines(results: dict, levels: list[int]) -> list[str]:
    """One line per goal whose cells were measured: the ratio, the limit, met or not."""
    out = []
    for name, clients, what, limit in GOALS:
        cell, peer = results.get(name, {}).get(clients), results.get(PEER, {}).get(clients)
        if cell is None or peer is None or clients not in levels:
            continue
        if cell["fails"] or peer["fails"]:  # a ratio to a variant that failed logins means nothing
            out.append(f"goal: {name} at {clients} clients: {what}: NOT measured ({cell['fails']} failed logins, "
                       f"the peer {peer['fails']}; see the Dovecot logs)")
            continue
        if what == "p50":
            ratio, ok, rel = cell["p50"] / peer["p50"], cell["p50"] / peer["p50"] <= limit, "<="
        else:
            ratio, ok, rel = cell["per_s"] / peer["per_s"], cell["per_s"] / peer["per_s"] >= limit, ">="
        out.append(f"goal: {name} at {clients} clients: {what} {ratio:.2f}x the peer's (goal {rel} {limit:g}x): "
                   f"{'met' if ok else 'NOT met'}")
    return out


def print_tables(results: dict, daemon: dict, levels: list[int], args: argparse.Namespace) -> None:
    print(f"IMAP LOGIN+LOGOUT through Dovecot {'.'.join(map(str, Dovecot.version()))}, "
          f"{args.seconds:g} s per cell, distinct users; ratios to the native peer ({PEER}); "
          f"authd ldap_client = {args.ldap_client}")
    head = (f"{'variant':24s} {'clients':>7s} {'logins/s':>9s} {'p50 ms':>7s} {'p95 ms':>7s} {'p99 ms':>7s} "
            f"{'fails':>5s} {'thr/peer':>8s} {'p50/peer':>8s} {'cpu/login':>9s}")
    print(head)
    print("-" * len(head))
    for c in levels:
        peer = results.get(PEER, {}).get(c)
        for name, cells in results.items():
            r = cells[c]
            thr = r["per_s"] / peer["per_s"] if peer else float("nan")
            p50 = r["p50"] / peer["p50"] if peer else float("nan")
            print(f"{name:24s} {c:7d} {r['per_s']:9.1f} {r['p50']:7.1f} {r['p95']:7.1f} {r['p99']:7.1f} "
                  f"{r['fails']:5d} {thr:7.2f}x {p50:7.2f}x {r['cpu_ms']:6.1f} ms")
    for line in goal_lines(results, levels):
        print(line)
    if args.breakdown:
        print_breakdown(results, levels)
    if not Dovecot.has_checkpassword():
        print("checkpassword variants, python floor: not measured (Dovecot 2.4 has no checkpassword driver)")
    if "pam→authd" not in results and os.geteuid() != 0:
        print("pam→authd: not measured (needs root: it writes a PAM service under /etc/pam.d)")
    if daemon:
        print(f"\nmailmfa-authd alone, ldap_client = {args.ldap_client} (successful 2FA logins of distinct "
              "users, persistent connections)")
        print(f"{'connections':>11s} {'auths/s':>8s} {'p50 ms':>7s} {'p99 ms':>7s} {'not ok':>6s}")
        for conns, r in daemon["levels"].items():
            print(f"{conns:11d} {r['per_s']:8.0f} {r['p50']:7.1f} {r['p99']:7.1f} {r['not_ok']:6d}")
        print(f"RSS {daemon['rss_fresh_kib'] / 1024:.1f} MiB fresh (one warm LDAP connection), "
              f"{daemon['rss_start_kib'] / 1024:.1f} MiB at start of the memory run, "
              f"{daemon['rss_end_kib'] / 1024:.1f} MiB after {daemon['rss_requests']:,} more requests "
              f"({daemon['rss_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
