"""authenticate(): the one login decision every entry point calls.

No process-global state: everything arrives as arguments, so a resident daemon can
serve many requests concurrently with the same function.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailmfa.backends.ports import BackendUnavailable, Directory
from mailmfa.config import Config
from mailmfa.core.policy import (
    CODE_BAD,
    CODE_OK,
    CODE_REPLAY,
    check_code,
    is_stale_code,
)
from mailmfa.core.split import split_code
from mailmfa.core.throttle import wait_seconds
from mailmfa.core.types import Outcome, Request, UserRecord, Verdict

if TYPE_CHECKING:
    from mailmfa.backends.state import MemoryReuseStore, ReuseStore

MAX_USER = 256
MAX_SECRET = 512

# reason codes (the log contract: admins grep for these)
OK = "ok"
OK_NO_TOKEN = "ok_no_token"
BAD_PASSWORD = "bad_password"
BAD_CODE = "bad_code"
REPLAY = "replay"
NO_TOKEN = "no_token"
UNKNOWN_USER = "unknown_user"
BAD_INPUT = "bad_input"
THROTTLED = "throttled"
REUSED = "reused"

# How long the loser of a parallel race waits for the winner's reuse entry (seconds).
REUSE_WAIT = 0.5
PASSWORD_RESET = "password_reset"


def _refuse(req: Request, reason: str, dn: str = "") -> Outcome:
    return Outcome(Verdict.REJECT, reason, req.user, dn)


def _switch_off_after_reset(req: Request, record: UserRecord, directory: Directory) -> UserRecord:
    """An administrator reset the password (ppolicy pwdReset): 2FA goes off, as after a
    password restore, and this login continues as one without a token."""
    from mailmfa import log
    from mailmfa.core.record import replace

    directory.remove_token(record)
    log.emit({"event": "mfa_disabled", "user": req.user, "reason": PASSWORD_RESET, "dn": record.dn})
    return replace(record, token=None)


def reuse_enabled(config: Config) -> bool:
    """Whether logins consult a reuse window: `[policy] reuse_seconds` > 0, and not behind
    slapd's otp overlay (which consumes the step at bind, where no window can apply)."""
    return config.policy.reuse_seconds > 0 and not config.ldap.otp_overlay


def _acceptable_name(user: str) -> bool:
    """A login name mailmfa looks up at all: bounded, no control characters, and no leading,
    trailing or doubled spaces -- LDAP equality ignores those, so " alice" would log in (or
    exist, for a userdb) as alice but reach Dovecot as another name: another mailbox path,
    another reuse and log identity."""
    return (bool(user) and len(user) <= MAX_USER and not any(ord(c) < 0x20 or c == "\x7f" for c in user)
            and user == user.strip() and "  " not in user)


def authenticate(req: Request, directory: Directory, config: Config, now: float,
                 reuse: ReuseStore | MemoryReuseStore | None = None, *,
                 allow_reuse: bool = True) -> Outcome:
    """Decide one login. Both factors are always evaluated; the outcome names the first
    failing one for the log, and the protocol answer never tells the client which.

    `reuse`: the reuse store; when None and `[policy] reuse_seconds` > 0 one is opened on
    `[policy] state_file` for this call (mailmfa-authd passes its in-memory one).
    `allow_reuse=False`: no reuse window at all (neither consulted nor written), for a
    caller that is not a mail client's burst of parallel connections (the web sign-in)."""
    if not allow_reuse:
        return _authenticate(req, directory, config, now, None)
    own = None
    if reuse is None and reuse_enabled(config):
        from mailmfa.backends.state import open_reuse_store

        reuse = own = open_reuse_store(config.policy.state_file, config.policy.reuse_seconds)
    try:
        return _authenticate(req, directory, config, now, reuse)
    finally:
        if own is not None:
            own.close()


def _authenticate(req: Request, directory: Directory, config: Config, now: float,
                  reuse: ReuseStore | MemoryReuseStore | None) -> Outcome:
    if not _acceptable_name(req.user) or len(req.secret) > MAX_SECRET:
        return _refuse(req, BAD_INPUT)
    try:
        record = directory.lookup(req.user)
        if record is None:
            return _refuse(req, UNKNOWN_USER)
        if record.password_reset and record.token is not None:
            record = _switch_off_after_reset(req, record, directory)
        token = record.token
        if token is None:
            if not req.secret or not directory.verify_password(record, req.secret):
                return _refuse(req, BAD_PASSWORD, record.dn)
            if config.policy.require_mfa:
                return _refuse(req, NO_TOKEN, record.dn)
            return Outcome(Verdict.ACCEPT, OK_NO_TOKEN, req.user, record.dn)

        parts = split_code(req.secret, token.params.digits)
        if parts is None:
            return _refuse(req, BAD_CODE, record.dn)
        password, code = parts
        throttled = wait_seconds(token.failure_count, token.last_failure, now) > 0
        if config.ldap.otp_overlay:
            # slapd's otp overlay checks password+code at bind and advances the step
            # itself; our own check only names the reason for the log. The password
            # cannot be checked alone, so failures are not counted here (the overlay's
            # own oathThrottleLimit / ppolicy apply), but a throttle state is honoured.
            if throttled:
                return _refuse(req, THROTTLED, record.dn)
            check = check_code(token, code, now)
            if not password or not directory.verify_password(record, req.secret):
                reason = BAD_PASSWORD if check.result == CODE_OK else check.result
                return _refuse(req, reason, record.dn)
            return Outcome(Verdict.ACCEPT, OK, req.user, record.dn, check.step)

        password_ok = bool(password) and directory.verify_password(record, password)
        if not password_ok:
            return _refuse(req, BAD_PASSWORD, record.dn)
        if throttled:
            # the code is neither checked nor consumed, so the answer (and the log)
            # tells nothing about it
            return _refuse(req, THROTTLED, record.dn)
        check = check_code(token, code, now)
        if check.result == CODE_BAD:
            # reuse_seconds may outlast the code's window (a code is valid 30-90 s)
            if reuse is not None and reuse.seen(req.user, req.secret, req.rip, now,
                                                token=token.secret):
                return Outcome(Verdict.ACCEPT, REUSED, req.user, record.dn)
            if not is_stale_code(token, code, now):
                directory.record_failure(record, now)
            return _refuse(req, BAD_CODE, record.dn)
        if check.result == CODE_REPLAY:
            # a parallel connection that just won the step update writes its reuse entry
            # right after: wait briefly for it only when the code is exactly that step
            just_used = check.step is not None and check.step == token.last_step
            if reuse is not None and reuse.seen(req.user, req.secret, req.rip, now,
                                                wait=REUSE_WAIT if just_used else 0.0,
                                                token=token.secret):
                return Outcome(Verdict.ACCEPT, REUSED, req.user, record.dn, check.step)
            return _refuse(req, REPLAY, record.dn)
        assert check.result == CODE_OK and check.step is not None
        if not directory.record_success(record, check.step, now):
            if reuse is not None and reuse.seen(req.user, req.secret, req.rip, now, wait=REUSE_WAIT,
                                                token=token.secret):
                return Outcome(Verdict.ACCEPT, REUSED, req.user, record.dn, check.step)
            return _refuse(req, REPLAY, record.dn)
        if reuse is not None:
            reuse.remember(req.user, req.secret, req.rip, now, token=token.secret)
        return Outcome(Verdict.ACCEPT, OK, req.user, record.dn, check.step)
    except BackendUnavailable as exc:
        return Outcome(Verdict.TEMPFAIL, exc.reason, req.user)


def userdb_lookup(directory: Directory, user: str) -> Outcome:
    """Does `user` exist (Dovecot's userdb lookup: AUTHORIZED=1, MFA1 LOOKUP)? ACCEPT with
    the DN, REJECT unknown_user, TEMPFAIL when the backend cannot answer. When tokens and
    passwords live apart (CombinedDirectory), the password side decides: SQLite holds only
    enrolled users, and a token whose user is gone is no account."""
    if not _acceptable_name(user):
        return Outcome(Verdict.REJECT, UNKNOWN_USER, user)
    try:
        record = directory.lookup(user)
        exists = getattr(directory, "user_exists", None)
        if record is not None and exists is not None and not exists(user):
            record = None
    except BackendUnavailable as exc:
        return Outcome(Verdict.TEMPFAIL, exc.reason, user)
    if record is None:
        return Outcome(Verdict.REJECT, UNKNOWN_USER, user)
    return Outcome(Verdict.ACCEPT, "userdb_lookup", user, record.dn)
