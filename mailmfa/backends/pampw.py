"""The password factor checked through a PAM service (single-host mode), with python-pam.

The service (default `mailmfa-password`, see conf/pam.d/mailmfa-password) should check
the password alone, e.g. with pam_unix for system accounts. It must not be the service
that runs mailmfa-pam itself (that would recurse). python-pam runs pam_authenticate and
pam_acct_mgmt, so an expired or locked account is refused like a wrong password.

Why the service file must exist: Linux-PAM silently falls back to /etc/pam.d/other for
a missing service, so a typo in the config would check passwords against whatever
`other` allows. A missing file is therefore a temporary failure naming the problem.
"""

from __future__ import annotations

import os

from mailmfa.backends.ports import BackendUnavailable

PAM_DIRS = ("/etc/pam.d", "/usr/lib/pam.d")
# Put into the PAM environment of the password check. pam_exec passes the PAM environment
# to its program, so a mailmfa-pam started by that check (pam_service pointing at the
# service that runs mailmfa-pam) sees it and stops instead of recursing without end.
NESTED_ENV = "MAILMFA_NESTED"

# PAM results meaning "these credentials are not good"; anything else (module missing,
# system error, authinfo unavailable, conversation error...) cannot answer now.
_REFUSED_NAMES = (
    "PAM_AUTH_ERR", "PAM_CRED_INSUFFICIENT", "PAM_USER_UNKNOWN", "PAM_MAXTRIES",
    "PAM_PERM_DENIED", "PAM_ACCT_EXPIRED", "PAM_NEW_AUTHTOK_REQD", "PAM_AUTHTOK_EXPIRED",
    "PAM_CRED_EXPIRED",
)


def system_user_exists(user: str) -> bool:
    """True when the system's user database (NSS) knows `user`."""
    import pwd

    try:
        pwd.getpwnam(user)
    except (KeyError, ValueError):
        return False
    return True


class PamPassword:
    """PasswordChecker over a PAM service."""

    def __init__(self, service: str) -> None:
        self.service = service

    def _service_exists(self) -> bool:
        if os.path.exists("/etc/pam.conf") and not os.path.isdir("/etc/pam.d"):
            return True  # a single-file PAM configuration: trust it
        return any(os.path.isfile(os.path.join(d, self.service)) for d in PAM_DIRS)

    def check(self, user: str, password: str) -> bool:
        if not password or not user or "\0" in user or "\0" in password:
            return False
        if not self._service_exists():
            raise BackendUnavailable("pam_service_missing", f"no PAM service file {self.service!r}")
        try:
            import pam
        except ImportError as exc:
            raise BackendUnavailable("pam_unavailable", f"python-pam: {exc}") from None
        refused = {getattr(pam, name) for name in _REFUSED_NAMES if hasattr(pam, name)}
        try:
            auth = pam.pam()
            ok = auth.authenticate(user, password, service=self.service, resetcreds=False,
                                   env={NESTED_ENV: "1"})
        except (OSError, ValueError, UnicodeError) as exc:
            raise BackendUnavailable("pam_unavailable", type(exc).__name__) from None
        if ok:
            return True
        if auth.code in refused:
            return False
        raise BackendUnavailable("pam_unavailable", f"pam code={auth.code} {auth.reason}")

    def exists(self, user: str) -> bool:
        """For userdb lookups: the accounts PAM checks are the system's (NSS)."""
        return system_user_exists(user)

    def close(self) -> None:
        pass
