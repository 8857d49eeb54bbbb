#!/usr/bin/env python3
"""Cost of a login through PAM: pam_exec + mailmfa-pam (a Python process per login)
against pam_python (mailmfa inside the PAM caller), on real parts.

    .venv/bin/python bench/pam_bench.py [--logins N] [--clients C] [--json]

Runs as root (writes /etc/pam.d/<unique>, creates one system user; both removed at exit).
Backends: LDAP (a real slapd from the test harness) and single-host mode (SQLite file +
pam_unix). Two callers:
  - pamtester: one process per login (the caller is short-lived, like su or a CGI);
  - Dovecot `passdb pam` IMAP LOGIN+LOGOUT, sequential and with C parallel clients
    (the caller is Dovecot's long-lived auth worker).
Each login is a user without a token (lookup + password check, no state write), so
the same login can be repeated; a login with a code adds one step update (~1 ms).
Figures are wall-clock medians/throughput on this machine; speed goals live here, never
in the timed tests.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(ROOT))

import syspam  # noqa: E402
from mfa import write_config  # noqa: E402
from pamface import exec_service_text, pam_bin, passdb_pam, python_service_text  # noqa: E402
from servers import Dovecot, Slapd, make_workdir, remove_workdir  # noqa: E402


def _summary(times: list[float], cpu: list[float]) -> dict[str, float]:
    times = sorted(times)
    return {"median_ms": round(statistics.median(times), 1), "p90_ms": round(times[int(len(times) * 0.9) - 1], 1),
            "cpu_ms": round(statistics.median(cpu), 1)}


def _children_cpu() -> float:
    """CPU seconds of all waited-for children (pamtester and whatever it ran)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _group_cpu(pgid: int) -> float:
    """CPU seconds of a process group, including its reaped children (Dovecot's master waits
    for auth workers, which wait for pam_exec's programs): unlike wall time, this does not
    grow when other work on the machine competes for the CPU."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after ")": state ppid pgrp ...
            total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total / os.sysconf("SC_CLK_TCK")


def time_pamtester(cases: dict[str, tuple[str, str, str]], n: int) -> dict[str, dict[str, float]]:
    """label -> (service, user, password). Round-robin, so load from other processes on
    the machine hits every variant alike."""
    times: dict[str, list[float]] = {label: [] for label in cases}
    cpu: dict[str, list[float]] = {label: [] for label in cases}
    for _ in range(n):
        for label, (service, user, password) in cases.items():
            c, t = _children_cpu(), time.perf_counter()
            proc = syspam.pamtester(service, user, password)
            times[label].append((time.perf_counter() - t) * 1000)
            cpu[label].append((_children_cpu() - c) * 1000)
            if proc.returncode != 0:
                raise RuntimeError(f"pamtester {label} failed: {proc.stdout}{proc.stderr}")
    return {label: _summary(times[label], cpu[label]) for label in cases}


def time_imap(cases: dict[str, tuple[Dovecot, str, str]], n: int, clients: int) -> dict[str, dict[str, float]]:
    """Sequential logins round-robin over the Dovecots, then C parallel clients on each."""
    times: dict[str, list[float]] = {label: [] for label in cases}
    cpu: dict[str, list[float]] = {label: [] for label in cases}
    for dc, user, password in cases.values():
        for _ in range(3):  # warm up: auth worker started
            assert dc.imap_login(user, password).ok
    for _ in range(n):
        for label, (dc, user, password) in cases.items():
            assert dc.pid is not None
            c, t = _group_cpu(dc.pid), time.perf_counter()
            res = dc.imap_login(user, password)
            times[label].append((time.perf_counter() - t) * 1000)
            time.sleep(0.05)  # let the login's processes exit and be reaped into the totals
            cpu[label].append((_group_cpu(dc.pid) - c) * 1000)
            if not res.ok:
                raise RuntimeError(f"IMAP login {label} failed: {res.text}")
    out = {label: _summary(times[label], cpu[label]) for label in cases}
    for label, (dc, user, password) in cases.items():
        errors: list[str] = []

        def worker(count: int, dc: Dovecot = dc, user: str = user, password: str = password,
                   errors: list[str] = errors) -> None:
            for _ in range(count):
                res = dc.imap_login(user, password)
                if not res.ok:
                    errors.append(res.text)

        per = max(2, (2 * n) // clients)
        threads = [threading.Thread(target=worker, args=(per,)) for _ in range(clients)]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        elapsed = time.perf_counter() - t
        if errors:
            raise RuntimeError(f"parallel IMAP logins {label} failed: {errors[:3]}")
        out[label]["parallel_logins_per_s"] = round(per * clients / elapsed, 1)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--logins", type=int, default=30, help="logins per measurement (default 30)")
    ap.add_argument("--clients", type=int, default=8, help="parallel IMAP clients (default 8)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("pam_bench: run as root (writes /etc/pam.d, creates a system user)", file=sys.stderr)
        return 2
    exe = pam_bin()
    if exe is None or not syspam.PAM_PYTHON:
        print("pam_bench: needs the venv's mailmfa-pam (make venv) and libpam-python", file=sys.stderr)
        return 2

    results: dict[str, dict[str, dict[str, float]]] = {}
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    workdir = make_workdir("mailmfa-bench-")
    slapd = Slapd(workdir / "slapd", log_level="0")
    started: list[Dovecot] = []
    try:
        slapd.start()
        slapd.add_user("benchuser", "benchpw")
        ldap_cfg = write_config(workdir, slapd, "ldap.toml")

        pw_service = syspam.add_pam_service(syspam.password_service_text())
        sys_user = syspam.add_system_user("benchpw", prefix="mmb")
        sqlite_cfg = workdir / "sqlite.toml"
        sqlite_cfg.write_text(f'[store]\npath = "{workdir}/lib/mailmfa.db"\n'
                              f'[password]\npam_service = "{pw_service}"\n')
        os.chmod(sqlite_cfg, 0o644)

        baseline = syspam.add_pam_service("auth required pam_permit.so\naccount required pam_permit.so\n")
        pam_cases = {"pam_permit (PAM alone)": (baseline, "x", "x")}
        imap_cases: dict[str, tuple[Dovecot, str, str]] = {}
        for backend, cfg, user in (("ldap", ldap_cfg, "benchuser"), ("sqlite", sqlite_cfg, sys_user)):
            for variant in ("pam_exec", "pam_python"):
                if variant == "pam_exec":
                    text = exec_service_text(cfg, workdir / f"{backend}.log", exe)
                else:
                    text = python_service_text(cfg)
                service = syspam.add_pam_service(text)
                label = f"{variant} / {backend}"
                pam_cases[label] = (service, user, "benchpw")
                dc = Dovecot(workdir / f"dc-{backend}-{variant}", passdb_pam(service), auth_debug=False)
                started.append(dc)
                dc.start()
                imap_cases[label] = (dc, user, "benchpw")
        # Dovecot's own floor: a passdb that runs no program at all
        dc = Dovecot(workdir / "dc-static", "driver = static\nargs = password=benchpw", auth_debug=False)
        started.append(dc)
        dc.start()
        imap_cases["static passdb (Dovecot alone)"] = (dc, "benchuser", "benchpw")
        results["pamtester"] = time_pamtester(pam_cases, args.logins)
        results["imap"] = time_imap(imap_cases, args.logins, args.clients)
    finally:
        for dc in started:
            dc.stop()
        slapd.stop()
        remove_workdir(workdir)
        syspam._cleanup()

    if args.json:
        print(json.dumps({"load_average": load, **results}, indent=2))
        return 0
    print(f"load average before: {load}")
    print(f"pamtester, one process per login ({args.logins} logins; wall median, p90, CPU median in ms):")
    for label, r in results["pamtester"].items():
        print(f"  {label:32} {r['median_ms']:7.1f} {r['p90_ms']:7.1f} {r['cpu_ms']:7.1f}")
    print("Dovecot passdb pam, IMAP LOGIN+LOGOUT (wall median, p90, CPU median of all Dovecot processes in ms;")
    print(f"  logins/s with {args.clients} parallel clients):")
    for label, r in results["imap"].items():
        print(f"  {label:32} {r['median_ms']:7.1f} {r['p90_ms']:7.1f} {r['cpu_ms']:7.1f} "
              f"{r['parallel_logins_per_s']:7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
