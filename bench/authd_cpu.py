"""What one authentication costs mailmfa-authd and slapd: wall time and CPU time per
successful 2FA login, measured two ways against a real slapd.

  in-process   Daemon.handle() called in a loop (authenticate(), pool, log line; no socket)
  socket       the daemon process over one persistent connection: its CPU and slapd's, from
               /proc/PID/stat (what a Lua passdb connection costs the machine)

    bench/authd_cpu.py [--users 3000] [--ldap-client auto|ldap3|python-ldap] [--ldapi] [--profile]

--ldapi: reach slapd over its UNIX socket instead of loopback TCP.

--profile: the in-process loop under cProfile, top functions by own time.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import sys
import time

from common import AuthdProcess, Slapd, make_workdir, remove_workdir, secret_of, totp, write_config


def cpu_ms(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=3000)
    ap.add_argument("--ldap-client", default="auto", choices=("auto", "ldap3", "python-ldap"))
    ap.add_argument("--ldapi", action="store_true", help="slapd over its UNIX socket (ldapi://)")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    from mailmfa.config import load
    from mailmfa.daemon import protocol
    from mailmfa.daemon.server import Daemon, ldap_client_for

    wd = make_workdir("mailmfa-bench-")
    ldap = Slapd(wd / "ldap", log_level="0").start()
    authd = None
    try:
        n = args.users
        ldap.add_many_users(2 * n, prefix="c", password=lambda u: f"pw-{u}")
        sock = wd / "authd.sock"
        cfg = write_config(wd, ldap, "c.toml", f'[daemon]\nsocket = "{sock}"\nldap_client = "{args.ldap_client}"\n',
                           uri=ldap.ldapi_uri if args.ldapi else None)
        config = load(str(cfg))
        users = [f"c{i}" for i in range(2 * n)]

        def login(uid: str) -> list[str]:
            return [uid, f"pw-{uid}" + totp(secret_of(uid), time.time()), "imap", "192.0.2.1"]

        # in-process: the daemon's handle() in a loop
        daemon = Daemon(config, str(cfg), stream=open(os.devnull, "w"))  # noqa: SIM115
        for uid in users[:50]:
            daemon.handle("AUTH", login(uid))
        reqs = [login(uid) for uid in users[50:n]]
        profiler = None
        if args.profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        c0, t0 = time.process_time(), time.perf_counter()
        ok = sum(daemon.handle("AUTH", r) == b"OK ok\n" for r in reqs)
        wall, cpu = (time.perf_counter() - t0) / len(reqs) * 1000, (time.process_time() - c0) / len(reqs) * 1000
        if profiler:
            profiler.disable()
        print(f"ldap_client = {ldap_client_for(config)}")
        print(f"in-process: {len(reqs)} logins ({ok} ok): {wall:.3f} ms wall, {cpu:.3f} ms CPU per login "
              "(this process, slapd excluded)")

        # over the socket: the daemon process and slapd, one persistent connection
        authd = AuthdProcess(wd, cfg, sock).start()
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(sock))
            f = s.makefile("rb")
            for uid in users[n:n + 50]:
                s.sendall(protocol.auth_request(*login(uid)))
                f.readline()
            rest = users[n + 50:]
            d0, l0, t0 = cpu_ms(authd.proc.pid), cpu_ms(ldap.pid), time.perf_counter()
            bad = 0
            for uid in rest:
                s.sendall(protocol.auth_request(*login(uid)))
                bad += f.readline() != b"OK ok\n"
            k = len(rest)
            print(f"socket: {k} logins ({bad} not ok): {(time.perf_counter() - t0) / k * 1000:.3f} ms wall; "
                  f"CPU per login: mailmfa-authd {(cpu_ms(authd.proc.pid) - d0) / k:.3f} ms, "
                  f"slapd {(cpu_ms(ldap.pid) - l0) / k:.3f} ms")
        if profiler:
            import pstats

            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(20)
            print(out.getvalue())
    finally:
        if authd:
            authd.stop()
        ldap.stop()
        remove_workdir(wd)


if __name__ == "__main__":
    sys.exit(main())
