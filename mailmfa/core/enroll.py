"""Pure logic of the admin side: what an enrolment shows, what a code tells about a
phone's clock, and the values the admin port passes around.

No I/O and no clock reads: secrets and `now` come in as arguments, so every answer
(the otpauth URI, "the phone is 3 min 30 s behind", the resync drift) is a unit test.
Import-light on purpose: the login path imports reset_disables_token() from here.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from mailmfa.core.split import is_code
from mailmfa.core.totp import matching_steps, time_step
from mailmfa.core.types import TotpParams

SEARCH_HORIZON = 24 * 3600  # diagnose/resync look this far either side of now
MAX_CODE_INPUT = 64  # longest line accepted where a code is expected


# ----------------------------------------------------------------------------- values


@dataclass(frozen=True)
class NewToken:
    """A token about to be written: the secret, its parameters, when it was made and the
    step already used to verify it (None for --no-verify provisioning)."""

    secret: bytes = field(repr=False)
    params: TotpParams
    created: float
    last_step: int | None = None


# ----------------------------------------------------------------------------- enrolment


_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _pct(text: str) -> str:
    """RFC 3986 percent-encoding of everything but unreserved characters (so ':' and ' '
    in an issuer or account cannot be mistaken for the label separator)."""
    return "".join(
        chr(b) if chr(b) in _UNRESERVED else f"%{b:02X}" for b in text.encode("utf-8")
    )


def base32_key(secret: bytes) -> str:
    """The secret as authenticator apps take it: base32, upper case, no '=' padding."""
    return base64.b32encode(secret).decode("ascii").rstrip("=")


def grouped_key(secret: bytes) -> str:
    """The base32 key in groups of four, for typing it into an app by hand."""
    key = base32_key(secret)
    return " ".join(key[i : i + 4] for i in range(0, len(key), 4))


def otpauth_uri(secret: bytes, account: str, issuer: str, params: TotpParams) -> str:
    """The Key URI apps scan: otpauth://totp/ISSUER:ACCOUNT?secret=..&issuer=..&algorithm=..

    Issuer and account are percent-encoded; the issuer is given twice (label prefix and
    parameter) because some apps read only one of them.
    """
    label = f"{_pct(issuer)}:{_pct(account)}"
    return (
        f"otpauth://totp/{label}?secret={base32_key(secret)}&issuer={_pct(issuer)}"
        f"&algorithm={params.algorithm}&digits={params.digits}&period={params.period}"
    )


def normalize_code(text: str, digits: int) -> str | None:
    """A code as typed ("123 456", " 123456\\n") -> "123456", or None when it is not
    exactly `digits` ASCII digits once spaces are removed."""
    if len(text) > MAX_CODE_INPUT:
        return None
    code = text.strip().replace(" ", "")
    return code if is_code(code, digits) else None


def verify_first_code(secret: bytes, code: str, now: float, params: TotpParams) -> int | None:
    """The step a freshly scanned app's code matches around `now` (no drift yet), or None.

    The earliest match is taken and recorded as used, so the activation code cannot be
    replayed and the first login needs the next code.
    """
    steps = matching_steps(secret, code, time_step(now, params.period), params.window,
                           params.digits, params.algorithm)
    return steps[0] if steps else None


# ----------------------------------------------------------------------------- clock offsets


def _horizon_steps(period: int, horizon: int = SEARCH_HORIZON) -> int:
    return horizon // period


def duration_words(seconds: int) -> str:
    """210 -> "3 min 30 s"; 7200 -> "2 h"; 0 -> "0 s" (sign ignored)."""
    s = abs(int(seconds))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    parts = [f"{h} h" if h else "", f"{m} min" if m else "", f"{sec} s" if sec else ""]
    return " ".join(p for p in parts if p) or "0 s"


@dataclass(frozen=True)
class Diagnosis:
    """What a code says about the token and the phone.

    offset_steps: the matching step minus the current step (negative: the phone's clock
    is behind); accepted_now: the login path would take this code now (given drift,
    window and the last used step); already_used: it matched but was used before.
    """

    matched: bool
    now_step: int
    step: int | None = None
    offset_steps: int | None = None
    offset_seconds: int | None = None
    in_window: bool = False
    already_used: bool = False
    accepted_now: bool = False
    other_offsets: tuple[int, ...] = ()
    message: str = ""


def diagnose(secret: bytes, code: str, now: float, params: TotpParams, drift: int = 0,
             last_step: int | None = None, horizon: int = SEARCH_HORIZON, user: str = "USER") -> Diagnosis:
    """Which step within ±`horizon` seconds `code` matches, and why a login would take or
    refuse it. Read-only by construction: it returns facts, it records nothing. `user`
    goes into the commands the message suggests."""
    now_step = time_step(now, params.period)
    steps = matching_steps(secret, code, now_step, _horizon_steps(params.period, horizon),
                           params.digits, params.algorithm)
    if not steps:
        return Diagnosis(False, now_step, message=(
            "The code matches none of this token's codes within 24 hours either side of now: "
            "the app is showing another account's code, or its key was typed wrongly or "
            "replaced since. Check the account name in the app; if in doubt, enrol again "
            f"(mailmfa enroll --replace {user})."))
    center = now_step + drift
    step = min(steps, key=lambda s: (abs(s - center), s))
    offset = step - now_step
    in_window = abs(step - center) <= params.window
    used = last_step is not None and step <= last_step
    accepted = in_window and not used
    seconds = offset * params.period
    if accepted:
        msg = ("The code is valid now" + (f" (with the learned drift of {drift:+d} steps)" if drift else "")
               + ": if the login is still refused, the password part is wrong. The code goes "
               "directly after the password, without a space.")
    elif in_window:
        msg = ("The code is right, but it was already used: each code works once. "
               "Wait for the next code (at most one period) and log in with that.")
    else:
        if offset == 0:
            where = "the current time"
        else:
            where = f"{duration_words(seconds)} {'ago' if offset < 0 else 'from now'}"
        msg = f"The code matches {where}: "
        if offset < 0:
            msg += "the phone's clock is behind"
        elif offset > 0:
            msg += "the phone's clock is ahead"
        else:
            msg += "the phone's clock is right, but the learned drift no longer fits"
        msg += (" — turn on automatic time (network time) on the phone, or store the offset "
                f"with: mailmfa resync {user} CODE1 CODE2.")
        if drift:
            msg += f" (The login checks around {drift:+d} steps from now because of the learned drift.)"
        if used:
            msg += " (Its time is also not later than the last code accepted.)"
    others = tuple(s - now_step for s in steps if s != step)
    return Diagnosis(True, now_step, step, offset, seconds, in_window, used, accepted, others, msg)


@dataclass(frozen=True)
class Resync:
    """Result of a resync: `drift` in whole steps to store, `step` the later code's step
    (recorded as used); `error` explains a failure (drift and step are then None)."""

    drift: int | None = None
    step: int | None = None
    error: str = ""


def resync(secret: bytes, code1: str, code2: str, now: float, params: TotpParams,
           last_step: int | None = None, horizon: int = SEARCH_HORIZON) -> Resync:
    """Find the step s within ±`horizon` where code1 matches s and code2 matches s+1.

    Two consecutive codes make a chance match ~10^-6 times less likely than one; more
    than one such pair is refused rather than guessed.
    """
    now_step = time_step(now, params.period)
    n = _horizon_steps(params.period, horizon)
    first = matching_steps(secret, code1, now_step, n, params.digits, params.algorithm)
    second = set(matching_steps(secret, code2, now_step, n + 1, params.digits, params.algorithm))
    pairs = [s for s in first if s + 1 in second]
    if not pairs:
        return Resync(error=(
            "the two codes are not consecutive codes of this token within 24 hours of now: "
            "ask for two new codes shown one after the other (CODE1, then the next one as CODE2)"))
    if len(pairs) > 1:
        return Resync(error="the codes match at more than one time: ask for two other codes")
    step = pairs[0] + 1
    if last_step is not None and step <= last_step:
        return Resync(error="these codes were already used: ask for two new consecutive codes")
    return Resync(drift=step - now_step, step=step)


# ----------------------------------------------------------------------------- times


def parse_generalized_time(text: str | bytes | None) -> float | None:
    """LDAP GeneralizedTime ("20261129044812Z", fractions and +hhmm offsets allowed) ->
    Unix seconds, or None when absent or unparsable."""
    if text is None:
        return None
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    import calendar
    import re

    m = re.fullmatch(r"(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)?(\d\d)?(?:[.,](\d+))?(Z|[+-]\d{4})", text.strip())
    if not m:
        return None
    y, mo, d, h, mi, s, frac, tz = m.groups()
    try:
        secs = calendar.timegm((int(y), int(mo), int(d), int(h), int(mi or 0), int(s or 0), 0, 0, 0))
    except (ValueError, OverflowError):
        return None
    if tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        secs -= sign * (int(tz[1:3]) * 3600 + int(tz[3:5]) * 60)
    return secs + (float("0." + frac) if frac else 0.0)


def reset_disables_token(pwd_reset: bytes | str | None, pwd_changed: bytes | str | None,
                         secret_time: bytes | str | None) -> bool:
    """ppolicy says an administrator reset the password (pwdReset: TRUE): 2FA goes off
    when the reset came after the token was enrolled. A token enrolled after the reset
    (or in the same second: a provisioning script setting an initial password and then
    enrolling) stays, so enrolling again after a reset is not undone at the next login.
    """
    if pwd_reset is None:
        return False
    flag = pwd_reset.decode("ascii", "replace") if isinstance(pwd_reset, bytes) else pwd_reset
    if flag.strip().upper() != "TRUE":
        return False
    changed = parse_generalized_time(pwd_changed)
    enrolled = parse_generalized_time(secret_time)
    if changed is None or enrolled is None:
        return True
    return changed > enrolled
