"""Which transport the Lua passdb should use to reach mailmfa-authd (issue #7: "over the UNIX
socket with Debian's lua-socket, or another transport Dovecot's Lua offers, whichever works on
both versions and measures better").

The two transports Dovecot's Lua has on 2.3 and 2.4:
  lua-socket     conf/dovecot/mailmfa.lua as shipped: one MFA1 line over a kept UNIX socket
  dovecot.http   bench/lua-http-client.lua: the same line as an HTTP/1.1 POST body, with
                 Dovecot's own HTTP client (keep-alive) to loopback TCP
Both talk to one stub server (a separate process) that answers every request "OK ok" at once,
with no LDAP behind it, so only the transport differs: IMAP LOGIN+LOGOUT through a real Dovecot
(auth workers), 1 and 8 clients, cells interleaved; logins/s, p50, and CPU per login of
Dovecot's auth processes, of the stub, and of the whole machine.

    bench/lua_transport.py [--seconds 6] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

from common import LUA_SCRIPT, REPO, make_workdir, poll_until, process_cpu, remove_workdir

from authd import lua_passdb
from servers import Dovecot, free_port

HTTP_SCRIPT = REPO / "bench" / "lua-http-client.lua"
ANSWER = b"OK ok\n"


# ------------------------------------------------------------------------------ the stub server

def _serve_lines(conn: socket.socket) -> None:
    with conn:
        buf = b""
        while True:
            data = conn.recv(8192)
            if not data:
                return
            buf += data
            while b"\n" in buf:
                _, buf = buf.split(b"\n", 1)
                conn.sendall(ANSWER)


def _serve_http(conn: socket.socket) -> None:
    """HTTP/1.1 keep-alive, just enough for Dovecot's client: headers, Content-Length body."""
    response = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
                + str(len(ANSWER)).encode() + b"\r\n\r\n" + ANSWER)
    with conn:
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                data = conn.recv(8192)
                if not data:
                    return
                buf += data
            head, buf = buf.split(b"\r\n\r\n", 1)
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            while len(buf) < length:
                data = conn.recv(8192)
                if not data:
                    return
                buf += data
            buf = buf[length:]
            conn.sendall(response)


def serve(unix_path: str, port: int) -> None:
    """The stub: a thread per connection on both listeners, until killed."""
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(unix_path)
    os.chmod(unix_path, 0o666)
    unix.listen(64)
    tcp = socket.socket(socket.AF_INET)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("127.0.0.1", port))
    tcp.listen(64)

    def accept(listener: socket.socket, handler) -> None:  # noqa: ANN001
        while True:
            conn, _ = listener.accept()
            if listener is tcp:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=handler, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, args=(unix, _serve_lines), daemon=True).start()
    accept(tcp, _serve_http)


# ------------------------------------------------------------------------------ the bench

def passdbs(unix_path: Path, url: str) -> dict[str, tuple[str, str]]:
    """name -> (passdb body, extra config) for the installed Dovecot, both as the shipped
    snippet writes it (auth workers); the twin is told the stub's URL instead of a socket."""
    return {"lua-socket (UNIX)": lua_passdb(unix_path, script=LUA_SCRIPT),
            "dovecot.http (TCP)": lua_passdb(unix_path, script=HTTP_SCRIPT,
                                             target=("mailmfa_url", "MAILMFA_BENCH_URL", url))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=6.0, help="per cell (default 6)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", default="1,8")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--serve", nargs=2, metavar=("UNIX_PATH", "PORT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return
    import run  # bench/run.py: the IMAP load generator

    levels = [int(x) for x in args.clients.split(",")]
    wd = make_workdir("mailmfa-bench-")
    wd.chmod(0o755)
    unix_path, port = wd / "stub.sock", free_port()
    stub = subprocess.Popen([sys.executable, __file__, "--serve", str(unix_path), str(port)])
    dovecots: dict[str, Dovecot] = {}
    results: dict[str, dict[int, dict]] = {}
    try:
        poll_until(unix_path.exists, 10, "stub server")
        for idx, (name, (body, extra)) in enumerate(passdbs(unix_path, f"http://127.0.0.1:{port}/auth").items()):
            dc = Dovecot(wd / f"dc{idx}", body, extra=extra, auth_debug=False).start()
            dovecots[name] = dc
            warm = run.imap_cell(dc.imap_port, [f"w{idx}u{i}" for i in range(10)], lambda u: "x", 2, 60)
            if warm["fails"]:
                raise SystemExit(f"{name}: warm-up logins failed; Dovecot log:\n{dc.log_text()[-3000:]}")
        parts: dict[str, dict[int, list[dict]]] = {n: {c: [] for c in levels} for n in dovecots}
        serial = 0
        for _ in range(args.rounds):
            for c in levels:
                for name, dc in dovecots.items():
                    roots = {"dovecot": dc.pid, "stub": stub.pid}
                    users = [f"u{serial}x{i}" for i in range(int(args.seconds * 400 / args.rounds) + 50)]
                    serial += 1
                    before = process_cpu(roots)
                    cell = run.imap_cell(dc.imap_port, users, lambda u: "x", c, args.seconds / args.rounds)
                    after = process_cpu(roots)
                    cell["procs_ms"] = {k: v - before.get(k, 0.0) for k, v in after.items()}
                    parts[name][c].append(cell)
        for name in dovecots:
            results[name] = {}
            for c in levels:
                s = run.summarize(parts[name][c])
                procs = s.pop("procs_ms")
                s["auth_ms"] = procs.get("dovecot: auth", 0.0)
                s["stub_ms"] = sum(v for k, v in procs.items() if k.startswith("stub: "))
                results[name][c] = s
    finally:
        for dc in dovecots.values():
            dc.stop()
        stub.kill()
        stub.wait()
        remove_workdir(wd)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"Lua passdb transports through Dovecot {'.'.join(map(str, Dovecot.version()))} (auth workers), "
          f"stub answering OK at once, {args.seconds:g} s per cell")
    head = (f"{'transport':20s} {'clients':>7s} {'logins/s':>9s} {'p50 ms':>7s} {'fails':>5s} "
            f"{'auth ms/login':>13s} {'stub ms/login':>13s} {'machine':>8s}")
    print(head)
    print("-" * len(head))
    for c in levels:
        for name, cells in results.items():
            r = cells[c]
            print(f"{name:20s} {c:7d} {r['per_s']:9.1f} {r['p50']:7.1f} {r['fails']:5d} "
                  f"{r['auth_ms']:13.2f} {r['stub_ms']:13.2f} {r['cpu_ms']:8.2f}")


if __name__ == "__main__":
    main()
