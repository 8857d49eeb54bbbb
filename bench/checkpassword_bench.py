"""Wall time of one direct mailmfa-checkpassword run (fd 3 protocol, real slapd on loopback),
median of N, and what its imports cost (python -X importtime).

    .venv/bin/python bench/checkpassword_bench.py [--runs 50]

Each run logs in a distinct user with a fresh code, so every run is a full accepted login:
service bind, user search, user bind, step update, exec of the reply program (/bin/true).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from mfa import checkpassword_bin, code_at, fd3_argv, write_config  # noqa: E402
from servers import Slapd, make_workdir, remove_workdir, wait_for_step_safe  # noqa: E402


def run_once(argv: list[str], user: str, password: str) -> tuple[float, int]:
    r, w = os.pipe()
    os.write(w, f"{user}\0{password}\0\0".encode())
    os.close(w)
    started = time.perf_counter()
    proc = subprocess.run(
        fd3_argv(r, argv),
        pass_fds=(r,), capture_output=True, env={"SERVICE": "imap", "TCPREMOTEIP": "192.0.2.1"})
    elapsed = time.perf_counter() - started
    os.close(r)
    return elapsed, proc.returncode


def importtime(config: Path, user: str, password: str) -> list[tuple[int, int, str]]:
    r, w = os.pipe()
    os.write(w, f"{user}\0{password}\0\0".encode())
    os.close(w)
    python = Path(sys.prefix) / "bin" / "python"
    proc = subprocess.run(
        fd3_argv(r, [str(python), "-X", "importtime", "-c",
                     "import sys; sys.argv=['x','--config',sys.argv[1],'/bin/true'];"
                     "from mailmfa.entry.checkpassword import main; main()", str(config)]),
        pass_fds=(r,), capture_output=True, text=True)
    os.close(r)
    rows = []
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            parts = [p.strip() for p in line[len("import time:"):].split("|")]
            if parts[0].isdigit():
                rows.append((int(parts[0]), int(parts[1]), parts[2]))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=50)
    args = ap.parse_args()
    wd = make_workdir("mailmfa-bench-")
    slapd = Slapd(wd / "slapd", log_level="0").start()
    try:
        config = write_config(wd, slapd)
        users = slapd.add_many_users(args.runs + 1, "bench", password="benchpw")
        exe = checkpassword_bin()
        base = statistics.median(run_once(["/usr/bin/python3", "-I", "-S", "-c", "pass"], "x", "y")[0]
                                 for _ in range(20))
        times = []
        wait_for_step_safe(margin=12)
        for i, (uid, secret) in enumerate(users.items()):
            if i == args.runs:
                break
            t, rc = run_once([exe, "--config", str(config), "/bin/true"], uid, "benchpw" + code_at(secret))
            if rc != 0:
                raise SystemExit(f"login {uid} failed with exit {rc}")
            times.append(t * 1000)
        times.sort()
        print(f"mailmfa-checkpassword, {args.runs} accepted logins against slapd on loopback:")
        print(f"  median {statistics.median(times):.1f} ms   p10 {times[len(times) // 10]:.1f} ms"
              f"   p90 {times[len(times) * 9 // 10]:.1f} ms   (python3 -I -S -c pass: {base * 1000:.1f} ms)")
        last = list(users)[-1]
        rows = importtime(config, last, "benchpw" + code_at(users[last]))
        total = sum(self_us for self_us, _, _ in rows)
        cumulative = {name.strip(): cum for _, cum, name in rows}
        print(f"imports (python -X importtime): {len(rows)} modules, {total / 1000:.1f} ms in total;"
              " cumulative per module:")
        for name in ("mailmfa.entry.checkpassword", "mailmfa.config", "tomllib", "mailmfa.backends.ldap",
                     "ldap3", "ssl", "mailmfa.service", "hmac", "hashlib"):
            if name in cumulative:
                print(f"  {name:<32} {cumulative[name] / 1000:6.1f} ms")
    finally:
        slapd.stop()
        remove_workdir(wd)


if __name__ == "__main__":
    main()
