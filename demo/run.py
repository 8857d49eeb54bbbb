"""`make demo`: mailmfa end to end on loopback, with real servers.

Starts a private slapd (OATH-LDAP schema, the shipped ACL) and a private Dovecot whose
passdb runs mailmfa-checkpassword, provisions a demo user with a TOTP token, prints the
otpauth URI and a QR code, then shows an IMAP login with password+code accepted and a
wrong and a replayed code refused. With --serve the servers stay up for a real mail client.
With --daemon the login goes the fast way: Dovecot's Lua passdb asks a running mailmfa-authd
(no process per login); with --pam (and on Dovecot 2.4 without --daemon) through passdb pam.
"""

from __future__ import annotations

import argparse
import base64
import os
import pwd
import secrets
import sys
import time
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from authd import Authd, lua_passdb  # noqa: E402
from mailmfa.core.totp import hotp, time_step  # noqa: E402
from pamface import exec_service_text, pam_24_globals, passdb_pam  # noqa: E402
from servers import Dovecot, Slapd, make_workdir, remove_workdir, wait_for_step_safe  # noqa: E402

USER, PASSWORD, ISSUER = "demo", "demo-password", "mailmfa demo"


def say(text: str = "") -> None:
    print(text, flush=True)


def checkpassword_bin() -> str:
    exe = Path(sys.prefix) / "bin" / "mailmfa-checkpassword"
    return str(exe if exe.exists() else ROOT / "checkpassword" / "mailmfa-checkpassword")


def pam_passdb(workdir: Path, config: Path) -> tuple[str, Path, str]:
    """Dovecot 2.4 has no checkpassword: passdb pam -> pam_exec -> mailmfa-pam, with a
    uniquely named PAM service (removed at the end). Returns (passdb, pam file, label)."""
    exe = Path(sys.prefix) / "bin" / "mailmfa-pam"
    name = workdir.name
    pam_file = Path("/etc/pam.d") / name
    pam_file.write_text(exec_service_text(config, workdir / "pam.log", str(exe)))
    return passdb_pam(name), pam_file, "passdb pam -> pam_exec -> mailmfa-pam"


def write_config(workdir: Path, slapd: Slapd, tail: str = "") -> Path:
    secret_file = workdir / "ldap.secret"
    secret_file.write_text(slapd.service_password + "\n")
    secret_file.chmod(0o644)  # read by Dovecot's auth process (the dovecot user)
    state_dir = workdir / "state"  # written by the login check, which runs as the dovecot user
    state_dir.mkdir(mode=0o700)
    pw = pwd.getpwnam("dovecot")
    os.chown(state_dir, pw.pw_uid, pw.pw_gid)
    path = workdir / "mailmfa.toml"
    path.write_text(f"""[ldap]
uris = ["{slapd.uri}"]
bind_dn = "{slapd.service_dn}"
bind_password_file = "{secret_file}"
user_base = "ou=people,{slapd.suffix}"
timeout = 3
[totp]
issuer = "{ISSUER}"
[policy]
require_mfa = true
reuse_seconds = 60
state_file = "{state_dir / 'state.db'}"
{tail}""")
    path.chmod(0o644)
    return path


def show_login(dovecot: Dovecot, what: str, password: str, ip: str) -> bool:
    res = dovecot.imap_login(USER, password, source_ip=ip)
    verdict = "accepted" if res.ok else "refused"
    extra = " (SELECT INBOX ok)" if res.selected else ""
    say(f"  {what:<41} -> {verdict}{extra}: {res.text.strip()[:70]}")
    return res.ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--serve", action="store_true", help="keep slapd and Dovecot running until Ctrl-C")
    ap.add_argument("--pam", action="store_true",
                    help="use passdb pam (the Dovecot 2.4 path) even where checkpassword exists")
    ap.add_argument("--daemon", action="store_true",
                    help="run mailmfa-authd and Dovecot's Lua passdb (the fast path, 2.3 and 2.4)")
    args = ap.parse_args()
    use_pam = not args.daemon and (args.pam or not Dovecot.has_checkpassword())

    workdir = make_workdir("mailmfa-demo-")
    slapd = dovecot = pam_file = authd = None
    try:
        say("== Starting a private slapd on loopback")
        slapd = Slapd(workdir / "slapd").start()
        say(f"   {slapd.uri}  (suffix {slapd.suffix}, OATH-LDAP schema, ACL from conf/ldap/acl.ldif)")
        secret = secrets.token_bytes(20)
        slapd.add_user(USER, PASSWORD, secret, cn="Demo User", mail="demo@example.org")
        sock = workdir / "authd.sock"
        config = write_config(workdir, slapd, f'[daemon]\nsocket = "{sock}"\n' if args.daemon else "")

        extra = ""
        if args.daemon:
            authd = Authd(workdir / "authd", config, sock).start()
            say(f"== Started mailmfa-authd on {sock} (warm LDAP connections)")
            passdb, extra = lua_passdb(sock)
            label = "passdb lua (conf/dovecot/mailmfa.lua) -> mailmfa-authd"
        elif use_pam:
            passdb, pam_file, label = pam_passdb(workdir, config)
            if Dovecot.version() >= (2, 4):
                extra = pam_24_globals()  # the shipped 2.4 snippet's auth_cache_size = 0
        else:
            passdb = f"driver = checkpassword\nargs = {checkpassword_bin()} --config {config}"
            label = "passdb checkpassword -> mailmfa-checkpassword"
        version = ".".join(map(str, Dovecot.version()))
        say(f"== Starting a private Dovecot {version} with {label}")
        dovecot = Dovecot(workdir / "dovecot", passdb, extra=extra).start()
        say(f"   IMAP on 127.0.0.1:{dovecot.imap_port}, POP3 on 127.0.0.1:{dovecot.pop3_port}")

        key = base64.b32encode(secret).decode().rstrip("=")
        uri = (f"otpauth://totp/{quote(ISSUER)}:{quote(USER)}?secret={key}"
               f"&issuer={quote(ISSUER)}&algorithm=SHA1&digits=6&period=30")
        say("\n== Demo user (token provisioned in LDAP)")
        say(f"   user: {USER}   password: {PASSWORD}")
        say(f"   otpauth URI: {uri}")
        say(f"   can't scan? key: {' '.join(key[i:i + 4] for i in range(0, len(key), 4))}"
            "  (time-based, 6 digits, 30 s)")
        try:
            import segno

            segno.make(uri, error="m").terminal(compact=True)
        except ImportError:
            say("   (install python3-segno to see the QR code here)")

        say("\n== IMAP logins (password with the current code appended)")
        wait_for_step_safe(margin=4)
        code = hotp(secret, time_step(time.time()))
        wrong = f"{(int(code) + 1) % 10**6:06d}"
        ok = show_login(dovecot, "password + current code", PASSWORD + code, "127.0.0.2")
        bad = show_login(dovecot, "password + wrong code", PASSWORD + wrong, "127.0.0.3")
        replay = show_login(dovecot, "password + same code again (replay)", PASSWORD + code, "127.0.0.4")
        pw_only = show_login(dovecot, "password alone", PASSWORD, "127.0.0.5")
        reused = show_login(dovecot, "same code, first client's 2nd connection", PASSWORD + code, "127.0.0.2")
        say("\n== What mailmfa logged (one key=value line per attempt; no password, no code)")
        logged = dovecot.log_text()
        if authd is not None:
            logged = authd.log_text()
        elif use_pam and (workdir / "pam.log").exists():
            logged = (workdir / "pam.log").read_text()
        for line in logged.splitlines():
            if "mailmfa result=" in line:
                say("   " + line[line.index("mailmfa result="):])
        success = ok and not bad and not replay and not pw_only and reused
        say("\n" + ("DEMO OK: right code accepted; wrong, replayed and missing codes refused; a mail client's"
                    " parallel connection from the same address accepted within [policy] reuse_seconds."
                    if success else "DEMO FAILED: see the lines above."))

        if args.serve:
            say(f"""
== Servers stay up until Ctrl-C. Connect a mail client (no TLS, plain password):
   IMAP server 127.0.0.1 port {dovecot.imap_port}, user {USER},
   password: {PASSWORD} followed by the 6-digit code from your app (scan the QR above).
   A code is accepted once; the same client's further connections within 60 s reuse it
   ([policy] reuse_seconds), later reconnects need a fresh code.""")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                say("\nstopping")
        return 0 if success else 1
    finally:
        if pam_file is not None:
            pam_file.unlink(missing_ok=True)
        for server in (dovecot, authd, slapd):
            if server is not None:
                server.stop()
        remove_workdir(workdir)


if __name__ == "__main__":
    sys.exit(main())
