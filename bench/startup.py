"""What one mailmfa-checkpassword run costs, run directly (no Dovecot): median wall time of
N runs in-process and in client mode (daemon), plus `python -X importtime` top costs.

    bench/startup.py [--runs 50] [--baseline DIR] [--json]

--baseline DIR: also time another checkout's shim (e.g. `git worktree add` or `git archive`
of an older commit) to compare before/after an import change.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common import (
    SHIM,
    AuthdProcess,
    Slapd,
    make_workdir,
    median,
    remove_workdir,
    run_checkpassword,
    secret_of,
    totp,
    venv_bin,
    wait_step_margin,
    write_config,
)


def importtime_top(exe: list[str], config: Path, user: str, password: str, n: int = 8,
                   repeat: int = 7) -> list[tuple[str, float]]:
    """Top `n` modules by cumulative import time (ms), top-level imports only; each module's
    minimum over `repeat` runs (other processes' load only ever adds time)."""
    if Path(exe[0]) == SHIM:  # its #! line says -IS, which ignores PYTHONPROFILEIMPORTTIME
        exe = ["/usr/bin/python3", "-IS", *exe]
    exe = [exe[0], "-X", "importtime", *exe[1:]] if exe[0].endswith("python3") else exe
    env = {} if exe[0].endswith("python3") else {"PYTHONPROFILEIMPORTTIME": "1"}
    best: dict[str, float] = {}
    for _ in range(repeat):
        _code, err = run_checkpassword(exe, config, user, password, env)
        for line in err.splitlines():
            if not line.startswith("import time:") or "cumulative" in line:
                continue
            _self_us, cum_us, name = line[len("import time:"):].split("|")
            if name.startswith("  "):  # nested: counted in its parent's cumulative time
                continue
            ms = int(cum_us) / 1000
            best[name.strip()] = min(ms, best.get(name.strip(), ms))
    rows = list(best.items())
    total = sum(ms for _, ms in rows)
    rows.sort(key=lambda r: -r[1])
    return [("(all top-level imports)", round(total, 1)), *[(n_, round(ms, 1)) for n_, ms in rows[:n]]]


def time_runs(exe: list[str], config: Path, users: list[str], expect: int = 0) -> list[float]:
    times = []
    for uid in users:
        wait_step_margin(1.0)
        pw = f"pw-{uid}" + totp(secret_of(uid), time.time())
        t0 = time.perf_counter()
        code, err = run_checkpassword(exe, config, uid, pw)
        times.append((time.perf_counter() - t0) * 1000)
        if code != expect:
            raise SystemExit(f"{exe}: {uid}: exit {code}\n{err}")
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--baseline", type=Path, help="another checkout whose shim is timed too")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()

    wd = make_workdir("mailmfa-bench-")
    ldap = Slapd(wd / "ldap", log_level="0").start()
    authd = None
    try:
        n = args.runs
        users = [f"s{i}" for i in range(7 * n + 40)]
        ldap.add_many_users(len(users), prefix="s", password=lambda u: f"pw-{u}")
        plain = write_config(wd, ldap, "inproc.toml", '[daemon]\nuse = "never"\n')
        plain_base = write_config(wd, ldap, "base.toml")  # no [daemon]: an older checkout parses it
        sock = wd / "authd.sock"
        client = write_config(wd, ldap, "client.toml", f'[daemon]\nsocket = "{sock}"\nuse = "always"\n'
                              "fallback = false\n")
        authd = AuthdProcess(wd, client, sock).start()
        shim = [str(SHIM)]  # its own #! line: python3 -ISB
        script = [venv_bin("mailmfa-checkpassword")]
        it = iter(users)
        cases: dict[str, tuple[list[str], Path]] = {
            "in-process (shim, python3 -ISB)": (shim, plain),
            "in-process (venv console script)": (script, plain),
            "client mode → daemon (shim)": (shim, client),
            "client mode → daemon (venv console script)": (script, client),
            "--socket → daemon (shim)": ([*shim, "--socket", str(sock)], client),
            "--socket → daemon (venv console script)": ([*script, "--socket", str(sock)], client),
        }
        if args.baseline:
            cases["baseline in-process (shim)"] = (
                ["/usr/bin/python3", "-I", str(args.baseline / "checkpassword" / "mailmfa-checkpassword")],
                plain_base)
        # interleaved (A B C ... A B C ...), so the machine's load hits every case alike
        times: dict[str, list[float]] = {name: [] for name in cases}
        for exe, cfg in cases.values():
            time_runs(exe, cfg, [next(it)])  # warm the page cache
        for _ in range(n):
            for name, (exe, cfg) in cases.items():
                times[name] += time_runs(exe, cfg, [next(it)])
        results = {}
        for name, (exe, cfg) in cases.items():
            top = importtime_top(exe, cfg, next(it), "x")  # a refused login: the same imports
            results[name] = {"median_ms": round(median(times[name]), 1), "min_ms": round(min(times[name]), 1),
                             "importtime_ms": top}
        if args.json:
            print(json.dumps(results, indent=2))
            return
        print(f"mailmfa-checkpassword, one run, median of {n} (successful 2FA logins, real slapd)")
        for name, r in results.items():
            print(f"  {name:45s} {r['median_ms']:7.1f} ms  (min {r['min_ms']:.1f})")
        for name, r in results.items():
            print(f"\n-X importtime, top-level cumulative (ms): {name}")
            for mod, ms in r["importtime_ms"]:
                print(f"  {ms:7.1f}  {mod}")
    finally:
        if authd:
            authd.stop()
        ldap.stop()
        remove_workdir(wd)


if __name__ == "__main__":
    main()
