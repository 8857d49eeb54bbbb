"""`mailmfa`: the help desk's command for users' 2-step verification.

Thin on purpose: argument parsing, prompts and wording live here; what a code means is
mailmfa.core.enroll (pure); where tokens live is a TokenAdmin port (LDAP, or SQLite in single-host
mode: mailmfa.entry.common.build_token_admin picks it from `[store] backend`). Secrets
come from `secrets` here, because generating them is I/O the pure core must not do.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from mailmfa import __version__, log
from mailmfa.backends.ports import (
    AdminError,
    AlreadyEnrolled,
    BackendUnavailable,
    ListIncomplete,
    NotEnrolled,
    TokenAdmin,
    UnknownUser,
)
from mailmfa.config import Config, ConfigError
from mailmfa.core import enroll as core
from mailmfa.core.throttle import is_locked_out, wait_seconds
from mailmfa.core.types import TotpParams

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_NO_USER = 3
EXIT_NOT_ENROLLED = 4
EXIT_SOFTWARE = 70
EXIT_CONFIG = 78
EXIT_TEMPFAIL = 111

SECRET_BYTES = 20  # 160 bits, RFC 4226's recommendation and what every app expects
MAX_WRONG_CODES = 5

EXIT_TABLE = """\
exit status:
  0    done (status: the user is enrolled; diagnose: the code matches a time;
       check-setup: nothing found)
  1    refused: code not accepted, enrolment abandoned, already enrolled
       (use --replace), resync codes not consecutive, diagnose: no match,
       the token cannot be used (dangling link, no secret);
       check-setup: something needs fixing
  2    usage error: bad arguments, malformed code
  3    no such user (or the name matches several entries)
  4    the user has no 2-step verification (status, diagnose, resync, disable, unlock)
  70   internal error (a bug: please report it; MAILMFA_DEBUG=1 shows the traceback)
  78   configuration error: config file, service account, params entry, a
       directory limit that cuts a listing short, or a single-host database that
       others can read or that has a newer schema than this version knows
  111  directory (or SQLite store) unavailable (down, timeout, locked): nothing
       was decided, try again
  130  interrupted (Ctrl-C): nothing more was written
"""

DESCRIPTION = """\
Enrol, inspect, diagnose, resync and switch off users' 2-step verification (TOTP
authenticator apps) for mail logins, working on the same directory data as the login
check. Mail logins then take the password with the app's current code appended:
password123456."""

EPILOG = EXIT_TABLE + """
files:
  --config FILE, else $MAILMFA_CONFIG, else /etc/mailmfa/mailmfa.toml. The commands
  bind as the service account of [ldap] bind_dn (it needs write access to tokens).
  Single-host mode ([store] backend = "sqlite"): they open the database of [store]
  path (run as root, it is 0600) and know users as the system does (or the directory,
  with [password] backend = "ldap").

log:
  changes are logged as key=value lines on stderr, e.g.
  mailmfa event=enroll user=alice result=ok by=root
  mailmfa event=mfa_disabled user=alice reason=password_restore by=root

Run `mailmfa COMMAND --help` for each command's details.
"""


# ----------------------------------------------------------------------------- output helpers


class Ctx:
    """What a command needs: config, the admin port (opened on first use), streams, clock."""

    def __init__(self, args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO,
                 clock: Callable[[], float] = time.time) -> None:
        self.args = args
        self.out = out
        self.err = err
        self.stdin = stdin
        self.clock = clock
        self._config: Config | None = None
        self._admin: TokenAdmin | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            from mailmfa import config as cfgmod

            self._config = cfgmod.load(cfgmod.resolve_path(getattr(self.args, "config", None)))
        return self._config

    def admin(self) -> TokenAdmin:
        if self._admin is None:
            from mailmfa.entry.common import build_token_admin

            self._admin = build_token_admin(self.config)
        return self._admin

    def close(self) -> None:
        if self._admin is not None:
            self._admin.close()

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def note(self, text: str) -> None:
        print(text, file=self.err, flush=True)

    def json(self, data: dict[str, Any]) -> None:
        json.dump(data, self.out, sort_keys=True, ensure_ascii=False)
        self.out.write("\n")
        self.out.flush()

    def event(self, **fields: object) -> None:
        log.emit({"event": fields.pop("event"), **fields, "by": _operator()}, self.err)


def _operator() -> str:
    """Who ran the command, for the audit line (the sudo caller when run through sudo)."""
    name = os.environ.get("SUDO_USER")
    if name:
        return name
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (KeyError, ImportError):
        return str(os.getuid())


def _when(ts: float | None) -> str | None:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts)) if ts is not None else None


def _iso(ts: float | None) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)) if ts is not None else None


def _clock_words(offset_steps: int) -> str:
    return "behind" if offset_steps < 0 else "ahead" if offset_steps > 0 else "right"


def _code_arg(ctx: Ctx, text: str, params: TotpParams, name: str = "CODE") -> str:
    """A code from the command line, or, given as "-", the next line of standard input (so
    the code is not on the command line, where `ps` shows it to every local user)."""
    if text == "-":
        if ctx.stdin.isatty():
            ctx.err.write(f"{name}: ")
            ctx.err.flush()
        line = ctx.stdin.readline(core.MAX_CODE_INPUT + 1)
        if not line:
            raise _Usage(f"{name} is \"-\" but standard input has no line for it")
        text = line.rstrip("\r\n")
    code = core.normalize_code(text, params.digits)
    if code is None:
        raise _Usage(f"{name} must be the {params.digits} digits the app shows")
    return code


class _Usage(Exception):
    """A usage error found after parsing (exit 2)."""


def _enrolled_state(ctx: Ctx, user: str) -> core.TokenState:
    state = ctx.admin().token_state(user)
    if not state.enrolled:
        raise NotEnrolled(f"{user} has no 2-step verification (enrol with: mailmfa enroll {user})")
    if state.problem or state.secret is None or state.params is None:
        raise AdminError(f"{user}: the token cannot be used: {state.problem or 'incomplete'}; "
                         f"enrol again with: mailmfa enroll --replace {user}")
    return state


# ----------------------------------------------------------------------------- enroll


class _QrFile:
    """--qr FILE, created new before anything is written to the directory: O_EXCL (an existing
    file -- or a symlink, even a dangling one -- is refused, never overwritten or followed:
    the command runs as root and the image holds the key) and mode 0600 set on the new file.
    The interactive enrolment rewrites it through the same descriptor when a new key is made;
    it is removed again unless the enrolment completes (its key would be of no use)."""

    def __init__(self, path: str) -> None:
        kind = path.rsplit(".", 1)[-1].lower() if "." in path else ""
        if kind not in ("svg", "png"):
            raise _Usage(f"--qr {path}: the file name must end in .svg or .png")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError:
            raise _Usage(f"--qr: {path} exists: remove it or choose another name") from None
        except OSError as exc:
            raise AdminError(f"--qr {path}: {exc.strerror}") from None
        self.path, self.kind, self.fd = path, kind, fd
        self._ident: tuple[int, int] | None = None  # the file we made, for close()
        try:
            st = os.fstat(fd)
            self._ident = (st.st_dev, st.st_ino)
            os.fchmod(fd, 0o600)  # whatever the umask
        except OSError as exc:
            self.close(keep=False)
            raise AdminError(f"--qr {path}: {exc.strerror}") from None

    def write(self, uri: str) -> None:
        import io

        import segno

        buf = io.BytesIO()
        segno.make(uri, micro=False).save(buf, kind=self.kind, scale=6 if self.kind == "png" else 4, border=4)
        data = buf.getvalue()
        try:
            os.ftruncate(self.fd, 0)
            written = 0
            while written < len(data):
                written += os.pwrite(self.fd, data[written:], written)
        except OSError as exc:
            raise AdminError(f"--qr {self.path}: {exc.strerror}") from None

    def close(self, keep: bool) -> None:
        """Close; unless `keep`, unlink the file -- only if the name still is the file we made."""
        if self.fd < 0:
            return
        os.close(self.fd)
        self.fd = -1
        if not keep:
            with contextlib.suppress(OSError):
                st = os.lstat(self.path)
                if self._ident is not None and (st.st_dev, st.st_ino) == self._ident:
                    os.unlink(self.path)


def _show_setup(ctx: Ctx, user: str, secret: bytes, params: TotpParams, uri: str,
                qr: _QrFile | None) -> None:
    args = ctx.args
    issuer = ctx.config.totp.issuer
    ctx.say(f"Set up 2-step verification for {user}")
    ctx.say()
    ctx.say("1. In the authenticator app on the phone, add an account and scan this QR code:")
    show_qr = args.terminal_qr == "yes" or (args.terminal_qr == "auto" and ctx.out.isatty())
    if show_qr:
        import segno

        segno.make(uri, micro=False).terminal(out=ctx.out, compact=True)
    elif not args.qr:
        ctx.say("   (no QR code shown: not a terminal; use --qr FILE.png or --terminal-qr yes)")
    if qr is not None:
        qr.write(uri)
        ctx.say(f"   QR code written to {qr.path} (it contains the key: delete it after use)")
    ctx.say(f"   otpauth URI: {uri}")
    ctx.say()
    ctx.say("2. Can't scan the barcode? Enter these settings by hand:")
    ctx.say(f"     Account:    {user}")
    ctx.say(f"     Issuer:     {issuer}")
    ctx.say(f"     Key:        {core.grouped_key(secret)}")
    ctx.say("     Type:       time-based (TOTP)")
    ctx.say(f"     Digits:     {params.digits}")
    ctx.say(f"     Period:     {params.period} seconds")
    ctx.say(f"     Algorithm:  {params.algorithm}")
    ctx.say()


def _read_line(ctx: Ctx, prompt: str) -> str | None:
    """One answer from stdin (prompt on stderr); None at end of input."""
    ctx.err.write(prompt)
    ctx.err.flush()
    line = ctx.stdin.readline(core.MAX_CODE_INPUT + 1)
    if not line:
        if ctx.stdin.isatty():
            ctx.err.write("\n")
        return None
    if not line.endswith("\n") and len(line) > core.MAX_CODE_INPUT:
        ctx.stdin.readline()  # discard the rest of an overlong line
        return "\0"  # never a code
    return line


def cmd_enroll(ctx: Ctx) -> int:
    args = ctx.args
    user = args.user
    if args.json and not args.no_verify:
        raise _Usage("--json needs --no-verify (the interactive enrolment talks to a person)")
    admin = ctx.admin()
    state = admin.token_state(user)
    if state.enrolled and not args.replace:
        since = f" since {_when(state.secret_time)}" if state.secret_time else ""
        raise AlreadyEnrolled(
            f"{user} already has 2-step verification{since}. To give a new key (the old one "
            f"stops working once the new one is confirmed): mailmfa enroll --replace {user}")
    params = admin.enrolment_params()
    qr = _QrFile(args.qr) if args.qr else None  # before anything is written
    rc = EXIT_REFUSED
    try:
        rc = _enroll(ctx, state, params, qr)
        return rc
    finally:
        if qr is not None:
            qr.close(keep=rc == EXIT_OK)


def _enroll(ctx: Ctx, state: core.TokenState, params: TotpParams, qr: _QrFile | None) -> int:
    import secrets

    args = ctx.args
    user = args.user
    admin = ctx.admin()
    issuer = ctx.config.totp.issuer
    user_dn = state.dn

    if args.no_verify:
        secret = secrets.token_bytes(SECRET_BYTES)
        uri = core.otpauth_uri(secret, user, issuer, params)
        if qr is not None:
            qr.write(uri)  # first: a file that cannot be written leaves the directory untouched
        admin.write_token(user, core.NewToken(secret, params, ctx.clock(), None), replace=args.replace)
        ctx.event(event="enroll", user=user, result="ok", verified="no",
                  replaced="yes" if state.enrolled else None)
        if args.json:
            ctx.json({"user": user, "dn": user_dn, "enrolled": True, "verified": False,
                      "uri": uri, "key": core.base32_key(secret), "account": user, "issuer": issuer,
                      "digits": params.digits, "period": params.period,
                      "algorithm": params.algorithm, "qr_file": args.qr or None})
        else:
            ctx.say(f"2-step verification is on for {user} (not verified: hand these over securely).")
            ctx.say(f"otpauth URI: {uri}")
            ctx.say(f"Key: {core.grouped_key(secret)}  (time-based, {params.digits} digits, "
                    f"{params.period} s, {params.algorithm})")
            if args.qr:
                ctx.say(f"QR code written to {args.qr}")
        return EXIT_OK

    wrong = 0
    unchanged = "2-step verification stays as it was" if state.enrolled else "2-step verification stays off"
    while True:
        secret = secrets.token_bytes(SECRET_BYTES)
        uri = core.otpauth_uri(secret, user, issuer, params)
        _show_setup(ctx, user, secret, params, uri, qr)
        ctx.say(f"3. Type the {params.digits}-digit code the app now shows for this account.")
        ctx.say('   If you missed the first code, repeat the steps: type "new" for a new key.')
        new_key = False
        while not new_key:
            line = _read_line(ctx, "Code from the app (\"new\": start over, \"quit\": give up): ")
            if line is None or line.strip().lower() in ("q", "quit"):
                ctx.note(f"mailmfa: enrolment of {user} abandoned: nothing was written; {unchanged}.")
                ctx.event(event="enroll", user=user, result="abandoned")
                return EXIT_REFUSED
            text = line.strip()
            if not text:
                continue
            if text.lower() in ("n", "new"):
                ctx.say()
                ctx.say("A new key: remove the account just added from the app, then start again.")
                ctx.say()
                new_key = True
                continue
            code = core.normalize_code(text, params.digits)
            step = core.verify_first_code(secret, code, ctx.clock(), params) if code else None
            if step is None:
                wrong += 1
                if wrong >= MAX_WRONG_CODES:
                    ctx.note(f"mailmfa: {wrong} codes not accepted: enrolment of {user} given up; "
                             f"nothing was written; {unchanged}. Check the phone's time and start again.")
                    ctx.event(event="enroll", user=user, result="refused", wrong_codes=wrong)
                    return EXIT_REFUSED
                if code is None:
                    ctx.note(f"That is not a code: type the {params.digits} digits the app shows.")
                else:
                    ctx.note("That code is not right. Check that the phone's time is set automatically, "
                             "wait for the next code and type it, or type \"new\" to start over.")
                continue
            admin.write_token(user, core.NewToken(secret, params, ctx.clock(), step), replace=args.replace)
            ctx.event(event="enroll", user=user, result="ok", verified="yes",
                      replaced="yes" if state.enrolled else None)
            ctx.say()
            ctx.say(f"2-step verification is now on for {user}.")
            ctx.say("The code just typed is used up: the first mail login needs the app's NEXT code,")
            ctx.say("typed right after the password (password123456).")
            return EXIT_OK


# ----------------------------------------------------------------------------- status / list


def cmd_status(ctx: Ctx) -> int:
    state = ctx.admin().token_state(ctx.args.user)
    p = state.params
    period = p.period if p else ctx.config.totp.period
    last_time = state.last_step * period if state.last_step is not None else None
    data: dict[str, Any] = {
        "user": state.user,
        "dn": state.dn,
        "enrolled": state.enrolled,
        "token_dn": state.token_dn or None,
        "algorithm": p.algorithm if p else None,
        "digits": p.digits if p else None,
        "period": p.period if p else None,
        "window": p.window if p else None,
        "enrolled_since": _iso(state.secret_time),
        "last_step": state.last_step,
        "last_step_time": _iso(last_time),
        "last_login": _iso(state.last_login),
        "failure_count": state.failure_count,
        "last_failure": _iso(state.last_failure),
        "throttle_wait_seconds": _throttle_wait(state),
        "locked_out": bool(state.failure_count and is_locked_out(state.failure_count)),
        "drift_steps": state.drift if state.enrolled else None,
        "drift_seconds": state.drift * period if state.enrolled else None,
        "problem": state.problem or None,
    }
    if ctx.args.json:
        ctx.json(data)
    else:
        ctx.say(f"user:              {state.user}")
        ctx.say(f"entry:             {state.dn}")
        if not state.enrolled:
            ctx.say("2-step:            not enrolled")
        else:
            ctx.say("2-step:            enrolled" + (f" — BROKEN: {state.problem}" if state.problem else ""))
            if state.token_dn and state.token_dn.replace(" ", "").lower() != state.dn.replace(" ", "").lower():
                ctx.say(f"token entry:       {state.token_dn}")
            if p:
                ctx.say(f"algorithm:         {p.algorithm}, {p.digits} digits, {p.period} s period, "
                        f"window ±{p.window}")
            ctx.say(f"enrolled since:    {_when(state.secret_time) or 'unknown'}")
            ctx.say("last code used:    " + (f"{_when(last_time)} (step {state.last_step})"
                                             if last_time is not None else "none yet"))
            if state.last_login is not None:
                ctx.say(f"last login:        {_when(state.last_login)}")
            if state.failure_count is not None or state.last_failure is not None:
                line = f"failures:          {state.failure_count or 0}"
                if state.last_failure is not None:
                    line += f" (last {_when(state.last_failure)})"
                wait = data["throttle_wait_seconds"]
                if data["locked_out"]:
                    line += " — LOCKED: no code is checked until `mailmfa unlock`"
                elif wait:
                    line += f" — throttled: next code checked in {core.duration_words(int(wait) + 1)}"
                ctx.say(line)
            drift = "none" if not state.drift else (
                f"{state.drift:+d} steps (the phone's clock is {_clock_words(state.drift)} by "
                f"{core.duration_words(state.drift * period)})")
            ctx.say(f"clock drift:       {drift}")
    if state.enrolled and state.problem:
        return EXIT_REFUSED
    return EXIT_OK if state.enrolled else EXIT_NOT_ENROLLED


def _throttle_wait(state: core.TokenState) -> float | None:
    """Seconds until a code is checked again (None: locked out or not enrolled)."""
    if not state.enrolled:
        return None
    wait = wait_seconds(state.failure_count or 0, state.last_failure, time.time())
    return None if wait == float("inf") else round(wait, 1)


def cmd_list(ctx: Ctx) -> int:
    args = ctx.args
    names: list[str] = []  # kept only for --json; plain output streams
    count = 0
    progress = ctx.err.isatty() and not args.quiet
    for name in ctx.admin().list_enrolled(args.page_size):
        count += 1
        if args.json:
            names.append(name)
        else:
            ctx.out.write(name + "\n")
        if progress and count % 10_000 == 0:
            ctx.err.write(f"\r{count} enrolled users so far...")
            ctx.err.flush()
    if progress and count >= 10_000:
        ctx.err.write("\n")
    if args.json:
        ctx.json({"count": count, "users": names})
    else:
        ctx.out.flush()
    return EXIT_OK


# ----------------------------------------------------------------------------- diagnose / resync


def cmd_diagnose(ctx: Ctx) -> int:
    args = ctx.args
    state = _enrolled_state(ctx, args.user)
    assert state.secret is not None and state.params is not None
    code = _code_arg(ctx, args.code, state.params)
    d = core.diagnose(state.secret, code, ctx.clock(), state.params, state.drift, state.last_step,
                      user=state.user)
    if args.json:
        ctx.json({
            "user": state.user, "matched": d.matched, "offset_steps": d.offset_steps,
            "offset_seconds": d.offset_seconds,
            "clock": _clock_words(d.offset_steps) if d.offset_steps is not None else None,
            "in_window": d.in_window, "already_used": d.already_used, "accepted_now": d.accepted_now,
            "drift_steps": state.drift, "window": state.params.window,
            "other_offsets_steps": list(d.other_offsets), "message": d.message,
        })
    else:
        ctx.say(d.message)
        if d.other_offsets:
            ctx.say(f"(The code also matches {len(d.other_offsets)} other time(s) within 24 hours: "
                    "a chance repeat; ask for another code to be sure.)")
    return EXIT_OK if d.matched else EXIT_REFUSED


def cmd_resync(ctx: Ctx) -> int:
    args = ctx.args
    state = _enrolled_state(ctx, args.user)
    assert state.secret is not None and state.params is not None
    code1 = _code_arg(ctx, args.code1, state.params, "CODE1")
    code2 = _code_arg(ctx, args.code2, state.params, "CODE2")
    r = core.resync(state.secret, code1, code2, ctx.clock(), state.params, state.last_step)
    if r.drift is None:
        ctx.event(event="resync", user=state.user, result="refused")
        raise AdminError(f"{state.user}: {r.error}")
    ctx.admin().set_drift(state.user, r.drift, r.step)
    period = state.params.period
    ctx.event(event="resync", user=state.user, result="ok", drift=r.drift, old_drift=state.drift)
    if args.json:
        ctx.json({"user": state.user, "drift_steps": r.drift, "drift_seconds": r.drift * period,
                  "clock": _clock_words(r.drift), "previous_drift_steps": state.drift})
    else:
        if r.drift:
            ctx.say(f"Stored a clock drift of {r.drift:+d} steps for {state.user}: the phone's clock is "
                    f"{_clock_words(r.drift)} by about {core.duration_words(r.drift * period)}.")
        else:
            ctx.say(f"The phone's clock of {state.user} is right: stored a drift of 0 steps.")
        ctx.say("Logins now check codes around that time. The two codes given are used up: "
                "log in with the next one. Better still, turn on automatic time on the phone "
                "(then run resync again).")
    return EXIT_OK


# ----------------------------------------------------------------------------- disable


def _switch_off(ctx: Ctx, user: str, reason: str, missing_ok: bool) -> int:
    removed = ctx.admin().remove_token(user)
    ctx.event(event="mfa_disabled" if removed else "mfa_disable_noop", user=user, reason=reason,
              result="ok" if removed else "not_enrolled")
    if ctx.args.json:
        ctx.json({"user": user, "removed": removed, "reason": reason})
    elif removed:
        if ctx.config.policy.require_mfa:
            ctx.say(f"2-step verification is off for {user}. [policy] require_mfa is on: "
                    f"{user} cannot log in until enrolled again (mailmfa enroll {user}).")
        else:
            ctx.say(f"2-step verification is off for {user}: the password alone logs in now.")
    else:
        ctx.say(f"{user} has no 2-step verification: nothing to do.")
    if not removed and not missing_ok:
        return EXIT_NOT_ENROLLED
    return EXIT_OK


def cmd_disable(ctx: Ctx) -> int:
    return _switch_off(ctx, ctx.args.user, ctx.args.reason or "admin", missing_ok=False)


def cmd_unlock(ctx: Ctx) -> int:
    user = ctx.args.user
    done = ctx.admin().reset_failures(user)
    ctx.event(event="throttle_reset" if done else "throttle_reset_noop", user=user,
              result="ok" if done else "not_enrolled")
    if ctx.args.json:
        ctx.json({"user": user, "unlocked": done})
    elif done:
        ctx.say(f"{user}: failed-code count cleared; the next code is checked at once.")
    else:
        ctx.say(f"{user} has no 2-step verification: nothing to unlock.")
    return EXIT_OK if done else EXIT_NOT_ENROLLED


def cmd_password_restored(ctx: Ctx) -> int:
    return _switch_off(ctx, ctx.args.user, "password_restore", missing_ok=True)


# ----------------------------------------------------------------------------- check-setup


def cmd_check_setup(ctx: Ctx) -> int:
    from dataclasses import asdict

    from mailmfa.admin.setup_check import gather

    a = ctx.args
    checks = gather(a.dovecot_config, a.pam_dir, a.saslauthd_defaults)
    problems = [c for c in checks if not c.ok]
    if a.json:
        ctx.json({"ok": not problems, "problems": len(problems), "checks": [asdict(c) for c in checks]})
    else:
        for c in checks:
            ctx.say(f"{'ok  ' if c.ok else 'FAIL'}  {c.what}: {c.detail}")
            if c.fix:
                ctx.say(f"      fix: {c.fix}")
        ctx.say(f"{len(problems)} problem(s)" if problems else "no problems found")
    return EXIT_REFUSED if problems else EXIT_OK


# ----------------------------------------------------------------------------- parser


def _positive_page(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1 <= n <= 100_000:
        raise argparse.ArgumentTypeError("must be between 1 and 100000")
    return n


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="mailmfa", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=fmt)
    parser.add_argument("--config", metavar="FILE", help="configuration file (default: "
                        "$MAILMFA_CONFIG, else /etc/mailmfa/mailmfa.toml)")
    parser.add_argument("--version", action="version", version=f"mailmfa {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                        help="configuration file (also accepted before COMMAND)")
    common.add_argument("--json", action="store_true",
                        help="print the result as one JSON object on stdout (keys documented in README)")

    def add(name: str, summary: str, text: str, func: Callable[[Ctx], int]) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=summary, description=text,
                           epilog=EXIT_TABLE, formatter_class=fmt)
        p.set_defaults(func=func)
        return p

    p = add("enroll", "turn on 2-step verification for a user (new key, QR code)", """\
Generates a new 160-bit key, shows it as a QR code, as an otpauth:// URI and as
settings to type in by hand ("can't scan the barcode"), then asks for the first code
the app shows (read from stdin; the prompt goes to stderr). Only when that code is
right is the token written -- key, parameters, oathSecretTime, and the step of the
code, which is thereby used up: the first mail login needs the NEXT code. A wrong code
can be retried, "new" starts over with a new key, end of input or "quit" abandons it:
nothing is written, so an abandoned enrolment never leaves 2FA half on.""", cmd_enroll)
    p.add_argument("user", metavar="USER", help="login name, as in [ldap] user_filter")
    p.add_argument("--replace", action="store_true",
                   help="give an enrolled user a new key (the old one works until the new is confirmed)")
    p.add_argument("--no-verify", action="store_true",
                   help="bulk provisioning: write at once without asking for a code and print the "
                   "URI for hand-over (with --json: as JSON)")
    p.add_argument("--qr", metavar="FILE", help="also write the QR code to FILE.svg or FILE.png, "
                   "a NEW file, mode 0600 (it contains the key): an existing FILE or a symlink is "
                   "refused (exit 2), never overwritten or followed; removed again if the enrolment "
                   "does not complete")
    p.add_argument("--terminal-qr", choices=("auto", "yes", "no"), default="auto",
                   help="draw the QR code in the terminal (auto: when stdout is a terminal)")

    p = add("status", "show a user's 2-step verification", """\
Shows whether USER is enrolled, the token's algorithm, digits and period, since when,
the last code used (as a time), the last login, failure count and last failure (when
recorded), and the learned clock drift. Exit 0 enrolled, 4 not enrolled, 1 when the
token exists but cannot be used (the reason is shown).""", cmd_status)
    p.add_argument("user", metavar="USER")

    p = add("list", "list enrolled users", """\
Prints the login names of all enrolled users, one per line (--json: {"count": N,
"users": [...]}). Fetched a page at a time (LDAP: the paged results control;
SQLite: by name), so any directory size works -- provided an LDAP server lets the
service account page past its size limit (olcLimits ... size.prtotal=unlimited, conf/ldap/limits.ldif); a list
cut short by the server is an error (exit 78), never a silently partial list.""", cmd_list)
    p.add_argument("--page-size", type=_positive_page, default=500, metavar="N",
                   help="entries per page (default 500)")
    p.add_argument("--quiet", action="store_true", help="no progress count on a terminal")

    p = add("diagnose", "explain why a code is not accepted", """\
Answers "why is my code not accepted?": whether CODE matches any of USER's codes within
24 hours either side of now and, if so, how far the phone's clock is off ("the code
matches 3 min 30 s ago: the phone's clock is behind"), whether it was already used,
or that it matches nothing (another account in the app, or an old key). Read-only: it
never uses up the code. Exit 0 when the code matches a time, 1 when it matches none.""",
            cmd_diagnose)
    p.add_argument("user", metavar="USER")
    p.add_argument("code", metavar="CODE", help='the code the app shows now; "-": read it from '
                   "standard input (keeps it out of the process list)")

    p = add("resync", "store a phone's clock offset from two consecutive codes", """\
For a phone whose clock is off and cannot be fixed: CODE1 and CODE2, two codes the app
shows one after the other, locate the phone's time within 24 hours of now; the offset
is stored in whole steps (oathTOTPTimeStepDrift) and every later login checks codes
around it. The two codes are used up. Fixing the phone's clock (automatic time) is
better: run resync again afterwards.""", cmd_resync)
    p.add_argument("user", metavar="USER")
    p.add_argument("code1", metavar="CODE1", help='"-": read it from standard input (keeps it out '
                   "of the process list)")
    p.add_argument("code2", metavar="CODE2", help='the code shown right after CODE1; "-": the next '
                   "line of standard input (`- -`: CODE1 then CODE2, one per line)")

    p = add("disable", "switch 2-step verification off for a user", """\
Removes USER's token and the link to it in one step (a separate token entry is then
deleted); the password alone logs in afterwards, or nothing does where [policy]
require_mfa = true. Logged as event=mfa_disabled with the reason. Exit 4 when the
user had no 2-step verification.""", cmd_disable)
    p.add_argument("user", metavar="USER")
    p.add_argument("--reason", metavar="TEXT", help="why (logged as reason=TEXT; default: admin)")

    p = add("unlock", "clear a user's brute-force throttle", """\
After five wrong codes with the right password, codes are checked only after
a growing wait (30 s, doubling, up to 24 h; after 100 no code is checked at all). unlock
clears the failure count, so the user's next code is checked at once. `status` shows the
count and the wait. Exit 4 when the user has no 2-step verification.""", cmd_unlock)
    p.add_argument("user", metavar="USER")

    p = add("password-restored", "call after a password restore: switches 2FA off", """\
For the site's password restore procedure ("after a successful password restore,
2-step verification is switched off" -- the lost-phone path). Same as disable, logged
with reason=password_restore, and exit 0 also when USER had no 2-step verification,
so the procedure can call it for everyone:

    mailmfa password-restored "$USER" || logger -p auth.err "mailmfa: 2FA not reset for $USER"
""", cmd_password_restored)
    p.add_argument("user", metavar="USER")

    p = add("check-setup", "look for Dovecot/saslauthd settings that let a login past mailmfa", """\
Finds the settings around mailmfa that let a login past it. In this machine's Dovecot
configuration (doveconf): a passdb beside mailmfa's (it accepts the password alone when
mailmfa refuses), no userdb, a cache that answers a used password+code again (2.3's passdb
lua or 2.4's passdb pam with auth_cache_size set, 2.3's passdb pam with a cache_key), and a
passdb pam that asks another PAM service than the one running mailmfa (2.4's service_name);
and saslauthd's -c credential cache in front of a PAM service that runs mailmfa. Says how to
fix each. Reads no mailmfa configuration and changes
nothing. Exit 0 when nothing was found, 1 when something needs fixing.""", cmd_check_setup)
    p.add_argument("--dovecot-config", metavar="FILE", default="/etc/dovecot/dovecot.conf",
                   help="Dovecot's configuration (default /etc/dovecot/dovecot.conf)")
    p.add_argument("--pam-dir", metavar="DIR", default="/etc/pam.d", help="PAM services (default /etc/pam.d)")
    p.add_argument("--saslauthd-defaults", metavar="FILE", default="/etc/default/saslauthd",
                   help="saslauthd's settings (default /etc/default/saslauthd)")
    return parser


# ----------------------------------------------------------------------------- main


def run(argv: list[str], out: TextIO | None = None, err: TextIO | None = None,
        stdin: TextIO | None = None) -> int:
    """Parse, run one command, and map every expected failure to its exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on usage errors, 0 on --help
    ctx = Ctx(args, out, err, stdin or sys.stdin)

    def fail(code: int, msg: str) -> int:
        print(f"mailmfa {args.command}: {msg}", file=err, flush=True)
        return code

    try:
        return int(args.func(ctx))
    except _Usage as exc:
        return fail(EXIT_USAGE, str(exc))
    except ConfigError as exc:
        return fail(EXIT_CONFIG, str(exc))
    except UnknownUser as exc:
        return fail(EXIT_NO_USER, str(exc))
    except NotEnrolled as exc:
        return fail(EXIT_NOT_ENROLLED, str(exc))
    except ListIncomplete as exc:
        return fail(EXIT_CONFIG, str(exc))
    except AdminError as exc:
        return fail(EXIT_REFUSED, str(exc))
    except BackendUnavailable as exc:
        if exc.reason == "service_bind_failed":
            return fail(EXIT_CONFIG, "the directory refused the service account: check [ldap] bind_dn "
                        "and bind_password_file")
        if exc.reason in ("token_invalid", "token_missing"):
            return fail(EXIT_REFUSED, f"the token cannot be read ({exc.detail})")
        if exc.reason in ("store_unsafe", "store_schema"):
            return fail(EXIT_CONFIG, f"the token database cannot be used: {exc.detail}")
        if exc.reason == "store_unavailable":
            return fail(EXIT_TEMPFAIL, f"the token database is unavailable ({exc.detail}); "
                        "try again later")
        return fail(EXIT_TEMPFAIL, f"the directory is unavailable ({exc.detail or exc.reason}); "
                    "try again later")
    finally:
        ctx.close()


def main(argv: list[str] | None = None) -> int:
    """Console-script entry: expected errors are one line; a bug is exit 70."""
    try:
        code = run(sys.argv[1:] if argv is None else argv)
    except KeyboardInterrupt:
        print("\nmailmfa: interrupted; nothing more was written", file=sys.stderr)
        code = 130
    except BrokenPipeError:  # `mailmfa list | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = EXIT_OK
    except Exception as exc:
        if os.environ.get("MAILMFA_DEBUG"):
            raise
        print(f"mailmfa: internal error: {type(exc).__name__}: {exc} (MAILMFA_DEBUG=1 shows the "
              "traceback)", file=sys.stderr)
        code = EXIT_SOFTWARE
    return code


def console() -> None:
    """setup.cfg console_scripts entry (`mailmfa`)."""
    sys.exit(main())


if __name__ == "__main__":
    console()
