"""In-process PAM module for pam_python.so (Debian: libpam-python, Python 3.11).

    auth     required  /lib/security/pam_python.so /PATH/TO/mailmfa/entry/pam_python_module.py [--config FILE]
    account  required  pam_permit.so

Same decision as mailmfa-pam (same authenticate(), same log line), in the PAM user's
process. It saves nothing: libpam-python 1.1.0 starts the interpreter at pam_start and
finalises it at pam_end, so every login imports mailmfa and ldap3 again (README, "The
in-process variant": measured slower than pam_exec). pam_python executes this
file by path (not as part of the package), so it puts the package root that contains it
on sys.path first.

Results: success PAM_SUCCESS; refused PAM_AUTH_ERR; temporary failure (backend down,
config error, any exception) PAM_AUTHINFO_UNAVAIL. Fail closed: nothing but an
explicit accept returns PAM_SUCCESS.
"""

from __future__ import annotations

import os
import sys
from typing import Any

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if os.path.isfile(os.path.join(_ROOT, "mailmfa", "entry", "common.py")) and _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

MAX_AUTHTOK = 511


def _config_path(argv: list[str]) -> str | None:
    """`--config FILE` or `--config=FILE` from the module arguments (argv[0] is this file)."""
    args = list(argv[1:])
    for i, arg in enumerate(args):
        if arg == "--config" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None


def _authtok(pamh: Any) -> str | None:
    """The token PAM already holds, else asked through the application's conversation."""
    tok = pamh.authtok
    if tok is None:
        reply = pamh.conversation(pamh.Message(pamh.PAM_PROMPT_ECHO_OFF, "Password: "))
        tok = reply.resp if reply is not None else None
        if tok is not None:
            pamh.authtok = tok  # as pam_get_authtok() would: later modules may use it
    return tok


def pam_sm_authenticate(pamh: Any, flags: int, argv: list[str]) -> int:
    """The login check; see the module docstring for the result mapping."""
    try:
        from mailmfa.core.types import Request, Verdict
        from mailmfa.entry.pam import decide
        from mailmfa.log import LoginLog

        service = pamh.service or ""
        rip = pamh.rhost or ""
        logline = LoginLog(rip, service)
        user = pamh.get_user(None) or ""
        logline.fields["user"] = user[:256] or None
        # see mailmfa.backends.pampw.NESTED_ENV; `in`, because pamh.env.get() crashes
        # libpam-python 1.1.0 (segfault, Debian 12)
        if "MAILMFA_NESTED" in pamh.env:
            logline.finish("tempfail", "pam_recursion", 111)
            return pamh.PAM_AUTHINFO_UNAVAIL
        secret = _authtok(pamh)
        if not user or secret is None or len(secret.encode("utf-8", "replace")) > MAX_AUTHTOK or "\0" in secret:
            logline.finish("fail", "bad_input", 1)
            return pamh.PAM_AUTH_ERR
        extra: dict[str, object] = {}
        outcome = decide(Request(user, secret, service, rip), _config_path(argv), dict(os.environ), extra)
        if outcome.verdict is Verdict.ACCEPT:
            logline.finish("ok", outcome.reason, 0, **extra)
            return pamh.PAM_SUCCESS
        if outcome.verdict is Verdict.TEMPFAIL:
            logline.finish("tempfail", outcome.reason, 111, **extra)
            return pamh.PAM_AUTHINFO_UNAVAIL
        logline.finish("fail", outcome.reason, 1, **extra)
        return pamh.PAM_AUTH_ERR
    except BaseException as exc:  # noqa: BLE001 - fail closed whatever happened
        try:
            sys.stderr.write(f"mailmfa result=tempfail reason=internal_error error={type(exc).__name__}\n")
        except (OSError, ValueError):
            pass  # no log is better than a different result
        return pamh.PAM_AUTHINFO_UNAVAIL


def pam_sm_setcred(pamh: Any, flags: int, argv: list[str]) -> int:
    """No credentials to set: Dovecot and pamtester call it after a success."""
    return pamh.PAM_SUCCESS


def pam_sm_acct_mgmt(pamh: Any, flags: int, argv: list[str]) -> int:
    """The auth stack decided; listed under account too, the module lets it stand."""
    return pamh.PAM_SUCCESS
