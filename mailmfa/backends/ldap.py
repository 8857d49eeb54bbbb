"""LDAP adapter (ldap3): finds the user and token, checks the password by binding as
the user, and advances the token's last step with a compare-and-swap modify.

One connection per Directory; the service identity is re-established with a rebind
after the user bind, which is cheaper than a second TCP (or TLS) connection.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import time

from mailmfa.backends.ports import BackendUnavailable
from mailmfa.config import Config
from mailmfa.core.ldapescape import fill_filter
from mailmfa.core.types import ALGORITHM_OIDS, Token, TotpParams, UserRecord

# Bind result codes that mean "these credentials are not good" rather than "the
# directory cannot answer now": invalidCredentials, inappropriateAuthentication,
# insufficientAccessRights, unwillingToPerform (e.g. a disabled account),
# constraintViolation (ppolicy lockout).
_REFUSED_BIND = {49, 48, 50, 53, 19}
_NO_SUCH_OBJECT = 32
# ppolicy's operational attributes (returned only when asked for): an administrative
# password reset switches 2FA off. Directories without ppolicy simply return neither.
_RESET_ATTRS = ["pwdReset", "pwdChangedTime"]


def match_ip_or_name(cert: dict, hostname: str, match_name) -> None:  # noqa: ANN001
    """Certificate/server-name check that knows IP-address SANs; names go to `match_name`.

    WHY: ldap3 2.9.1 checks the server name itself with ssl.match_hostname, which Python
    3.12 removed (Debian 13 has 3.13); its fallback, a copy from Python 3.4, knows no IP
    SANs, so `ldaps://192.0.2.1` failed every login against a certificate made for that
    address. Raises the same CertificateError ldap3 expects on a mismatch."""
    import ipaddress

    from ldap3.core.tls import CertificateError

    try:
        ip = ipaddress.ip_address(hostname.strip("[]"))
    except ValueError:
        match_name(cert, hostname)
        return
    for kind, value in cert.get("subjectAltName", ()):
        if kind == "IP Address":
            with contextlib.suppress(ValueError):
                if ipaddress.ip_address(value.strip()) == ip:
                    return
    raise CertificateError(f"certificate is not valid for {hostname}")


def _ip_aware_ldap3() -> None:
    """On Python >= 3.12 put match_ip_or_name in front of ldap3's own fallback (once)."""
    import ssl

    if hasattr(ssl, "match_hostname"):  # Python <= 3.11: ldap3 uses it, IPs included
        return
    from ldap3.core import tls as ldap3_tls

    fallback = ldap3_tls.match_hostname
    if getattr(fallback, "mailmfa_ip_aware", False):
        return

    def match_hostname(cert: dict, hostname: str) -> None:
        match_ip_or_name(cert, hostname, fallback)

    match_hostname.mailmfa_ip_aware = True  # type: ignore[attr-defined]
    ldap3_tls.match_hostname = match_hostname


def _first(attrs: dict[str, list[bytes]], name: str) -> bytes | None:
    for key, values in attrs.items():
        if key.lower() == name.lower() and values:
            return values[0]
    return None


def _int_or(value: bytes | None, default: int) -> int:
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        return default


def _same_dn(a: str, b: str) -> bool:
    return a.replace(" ", "").lower() == b.replace(" ", "").lower()


def generalized_time(now: float) -> str:
    """LDAP GeneralizedTime (UTC, whole seconds)."""
    return time.strftime("%Y%m%d%H%M%SZ", time.gmtime(now))


def parse_generalized_time(value: bytes | None) -> float | None:
    """Unix time of a GeneralizedTime like 20260101120000Z (fractions ignored); None when
    absent or not understood (the throttle then counts from the epoch, see core/throttle)."""
    if not value:
        return None
    text = value.decode("ascii", "replace").strip()
    digits = text[:14]
    if len(digits) != 14 or not digits.isdigit() or not text.endswith("Z"):
        return None
    import calendar

    try:
        fields = (int(digits[0:4]), int(digits[4:6]), int(digits[6:8]),
                  int(digits[8:10]), int(digits[10:12]), int(digits[12:14]))
        if not (1 <= fields[1] <= 12 and 1 <= fields[2] <= 31 and fields[3] < 24
                and fields[4] < 60 and fields[5] < 61):
            return None
        return float(calendar.timegm((*fields, 0, 0, 0)))
    except (ValueError, OverflowError):
        return None


# How often record_failure re-reads and retries when another login changed the count
# between its read and its write. Past that one increment is lost; that takes more
# concurrent failures for one user than tries, and each of those was counted instead,
# so the throttle still advances. (A success meanwhile is refused: see record_success.)
FAILURE_CAS_TRIES = 4


class LdapDirectory:
    """Directory port over ldap3. Not thread-safe: one instance per concurrent login."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.attrs = config.ldap.attributes
        self._conn = None
        self._as_service = False
        # token DN -> the raw failure count as read (None: absent), for compare-and-swap
        self._seen_failures: dict[str, bytes | None] = {}

    # -- connection -------------------------------------------------------------------
    def _connect(self, password: str):
        """Open and bind as the service to the first server that answers.

        A server that is down fails at connect; one that is hung (SIGSTOP, overloaded)
        accepts the TCP connection and then does not answer the bind within `timeout`:
        both move on to the next uri, so a login waits about `timeout` per bad server.
        Refused service credentials are a configuration problem, the same everywhere:
        no point trying the others."""
        import ssl

        import ldap3
        from ldap3.core import exceptions as lx

        cfg = self.config.ldap
        seconds = max(1, round(cfg.timeout))  # ldap3 packs socket timeouts as integers
        tls = None
        if cfg.starttls or any(u.startswith("ldaps://") for u in cfg.uris):
            _ip_aware_ldap3()
            tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=cfg.ca_file or None)
        errors = []
        for uri in cfg.uris:
            conn = None
            try:
                server = ldap3.Server(uri, get_info=ldap3.NONE, tls=tls, connect_timeout=seconds)
                conn = ldap3.Connection(
                    server,
                    receive_timeout=seconds,
                    raise_exceptions=False,
                    read_only=False,
                    auto_referrals=False,
                )
                conn.open()
                if cfg.starttls and not conn.start_tls():
                    errors.append(f"{uri}: StartTLS failed")
                    self._drop(conn)
                    continue
                if cfg.bind_dn:
                    ok = conn.rebind(user=cfg.bind_dn, password=password.encode())
                else:
                    ok = conn.bind()
            except (lx.LDAPException, OSError) as exc:
                errors.append(f"{uri}: {type(exc).__name__}")
                self._drop(conn)
                continue
            if ok:
                return conn
            code = conn.result.get("result") if conn.result else None
            self._drop(conn)
            if code in _REFUSED_BIND:
                raise BackendUnavailable("service_bind_failed", f"result={code}")
            errors.append(f"{uri}: service bind result={code}")
        raise BackendUnavailable("ldap_unavailable", "; ".join(errors))

    @staticmethod
    def _drop(conn) -> None:
        if conn is not None:
            with contextlib.suppress(Exception):  # closing must never raise
                conn.unbind()

    def _bind_service(self) -> None:
        from ldap3.core import exceptions as lx

        if self._conn is not None and self._as_service:
            return
        password = self.config.read_bind_password()
        if self._conn is None:
            self._conn = self._connect(password)
            self._as_service = True
            return
        # back from a user bind on the same connection: rebind as the service
        try:
            if self.config.ldap.bind_dn:
                ok = self._conn.rebind(user=self.config.ldap.bind_dn, password=password.encode())
            else:
                ok = self._conn.bind()
        except (lx.LDAPException, OSError) as exc:
            self.close()
            raise BackendUnavailable("ldap_unavailable", type(exc).__name__) from None
        if not ok:
            code = self._conn.result.get("result") if self._conn.result else None
            self.close()
            if code in _REFUSED_BIND:
                raise BackendUnavailable("service_bind_failed", f"result={code}")
            raise BackendUnavailable("ldap_unavailable", f"service bind result={code}")
        self._as_service = True

    def close(self) -> None:
        self._drop(self._conn)
        self._conn = None
        self._as_service = False

    def _search(self, base: str, flt: str, scope: str, attrs: list[str], size: int) -> list[dict]:
        from ldap3.core import exceptions as lx

        self._bind_service()
        try:
            ok = self._conn.search(
                base, flt, search_scope=scope, attributes=attrs, size_limit=size,
                time_limit=max(1, round(self.config.ldap.timeout)),
            )
        except (lx.LDAPException, OSError) as exc:
            self.close()
            raise BackendUnavailable("ldap_unavailable", type(exc).__name__) from None
        code = self._conn.result.get("result") if self._conn.result else None
        if not ok and code not in (0, _NO_SUCH_OBJECT, 4):  # 4: sizeLimitExceeded
            self.close()
            raise BackendUnavailable("ldap_unavailable", f"search result={code}")
        if code == 4:
            return [{}, {}]  # more than `size`: the caller treats it as ambiguous
        return [
            {"dn": e["dn"], "attrs": e.get("raw_attributes", {})}
            for e in self._conn.response or []
            if e.get("type") == "searchResEntry"
        ]

    # -- Directory port -----------------------------------------------------------------
    def _token_attr_names(self) -> list[str]:
        a = self.attrs
        return [a.secret, a.params, a.last_step, a.drift, a.failure_count, a.last_failure]

    def lookup(self, user: str) -> UserRecord | None:
        cfg = self.config.ldap
        flt = fill_filter(cfg.user_filter, user)
        found = self._search(cfg.user_base, flt, "SUBTREE",
                             [self.attrs.token, *self._token_attr_names(), *_RESET_ATTRS], 2)
        if len(found) != 1:
            return None  # unknown, or ambiguous: never guess which entry is meant
        dn, attrs = found[0]["dn"], found[0]["attrs"]
        user_attrs = attrs
        link = _first(attrs, self.attrs.token)
        if link is None:
            return UserRecord(user, dn, None)
        token_dn = link.decode("utf-8", "replace")
        if not _same_dn(token_dn, dn):
            tok = self._search(token_dn, "(objectClass=*)", "BASE", self._token_attr_names(), 1)
            if not tok:
                # a dangling link is a provisioning error: fail closed, but not as "no token"
                raise BackendUnavailable("token_missing", "token entry not found")
            attrs = tok[0]["attrs"]
        record = UserRecord(user, dn, self._token(token_dn, attrs))
        if _first(user_attrs, "pwdReset") is not None:
            record = self._check_password_reset(record, user_attrs)
        return record

    def _check_password_reset(self, record: UserRecord, user_attrs: dict[str, list[bytes]]) -> UserRecord:
        """ppolicy's pwdReset: an administrator set the password, so 2FA goes off (unless
        the token was enrolled after that reset); see core.enroll.reset_disables_token."""
        from mailmfa.core.enroll import reset_disables_token
        from mailmfa.core.record import replace

        assert record.token is not None
        # rare path (pwdReset present): one more read rather than a wider search per login
        tok = self._search(record.token.dn, "(objectClass=*)", "BASE", [self.attrs.secret_time], 1)
        secret_time = _first(tok[0]["attrs"], self.attrs.secret_time) if tok else None
        if reset_disables_token(_first(user_attrs, "pwdReset"), _first(user_attrs, "pwdChangedTime"), secret_time):
            return replace(record, password_reset=True)
        return record

    def remove_token(self, record: UserRecord) -> None:
        """Switch 2FA off for the user (see ldap_admin.remove_token_of). A refusal (ACL,
        schema) is a temporary failure with its own log reason: never a login without
        the code while the token is still there."""
        from mailmfa.backends.ldap_admin import remove_token_of
        from mailmfa.backends.ports import AdminError

        try:
            remove_token_of(self, record.dn)
        except AdminError as exc:
            raise BackendUnavailable("password_reset_failed", str(exc)) from None

    def _token(self, token_dn: str, attrs: dict[str, list[bytes]]) -> Token:
        a = self.attrs
        secret = _first(attrs, a.secret)
        if not secret:
            raise BackendUnavailable("token_missing", "token has no secret")
        if self.config.ldap.secret_encoding == "base32":
            try:
                text = secret.decode("ascii").replace(" ", "").upper()
                secret = base64.b32decode(text + "=" * (-len(text) % 8))
            except (UnicodeDecodeError, binascii.Error):
                raise BackendUnavailable("token_invalid", "secret is not base32") from None
        params = self._params(_first(attrs, a.params))
        last = _first(attrs, a.last_step)
        raw_failures = _first(attrs, a.failure_count)
        self._seen_failures[token_dn] = raw_failures
        return Token(
            dn=token_dn,
            secret=secret,
            params=params,
            last_step=int(last) if last is not None and last.strip().isdigit() else None,
            drift=_int_or(_first(attrs, a.drift), 0),
            failure_count=max(0, _int_or(raw_failures, 0)),
            last_failure=parse_generalized_time(_first(attrs, a.last_failure)),
        )

    def _params(self, params_dn: bytes | None) -> TotpParams:
        t = self.config.totp
        default = TotpParams(t.digits, t.period, t.algorithm, t.window)
        if params_dn is None:
            return default
        a = self.attrs
        found = self._search(
            params_dn.decode("utf-8", "replace"), "(objectClass=*)", "BASE",
            [a.digits, a.algorithm, a.period, a.window], 1,
        )
        if not found:
            raise BackendUnavailable("token_invalid", "params entry not found")
        attrs = found[0]["attrs"]
        oid = _first(attrs, a.algorithm)
        algorithm = ALGORITHM_OIDS.get(oid.decode("ascii", "replace")) if oid else default.algorithm
        if algorithm is None:
            raise BackendUnavailable("token_invalid", "unsupported oathHMACAlgorithm")
        digits = _int_or(_first(attrs, a.digits), default.digits)
        period = _int_or(_first(attrs, a.period), default.period)
        window = _int_or(_first(attrs, a.window), default.window)
        if not (6 <= digits <= 8 and 1 <= period <= 3600 and 0 <= window <= 10):
            raise BackendUnavailable("token_invalid", "params out of range")
        return TotpParams(digits, period, algorithm, window)

    def verify_password(self, record: UserRecord, password: str) -> bool:
        from ldap3.core import exceptions as lx

        if not password:
            return False  # an empty simple bind is anonymous: never a password check
        self._bind_service()  # make sure a connection exists
        self._as_service = False
        try:
            # bytes: sent as typed. A str goes through ldap3's SASLprep, which slapd's simple
            # bind does not do: it drops some characters (a soft hyphen) and raises on others
            # (controls, mixed-direction text), so a right password would fail (as an
            # outage) and a changed one could match; libldap (the daemon's) sends bytes too
            ok = self._conn.rebind(user=record.dn, password=password.encode())
        except lx.LDAPBindError:
            ok = False
        except (lx.LDAPException, OSError) as exc:
            self.close()
            raise BackendUnavailable("ldap_unavailable", type(exc).__name__) from None
        if ok:
            return True
        code = self._conn.result.get("result") if self._conn.result else None
        if code in _REFUSED_BIND:
            return False
        self.close()
        raise BackendUnavailable("ldap_unavailable", f"user bind result={code}")

    def record_success(self, record: UserRecord, step: int, now: float) -> bool:
        from ldap3 import MODIFY_ADD, MODIFY_DELETE, MODIFY_REPLACE

        token = record.token
        assert token is not None
        a = self.attrs
        ops = []
        if token.last_step is not None:
            ops.append((MODIFY_DELETE, [str(token.last_step)]))
        ops.append((MODIFY_ADD, [str(step)]))
        changes = {
            a.last_step: ops,
            # reset the throttle, asserting that no failure was counted since lookup
            a.failure_count: self._count_cas(token.dn, 0),
            a.last_failure: [(MODIFY_REPLACE, [])],
            a.last_login: [(MODIFY_REPLACE, [generalized_time(now)])],
        }
        return self._cas_modify(token.dn, changes)

    def _count_cas(self, token_dn: str, new: int) -> list[tuple]:
        """Modify ops moving the failure count from the value read to `new`: the delete
        of the old value (or the add to an absent attribute) fails if it changed."""
        from ldap3 import MODIFY_ADD, MODIFY_DELETE

        old = self._seen_failures.get(token_dn)
        ops: list[tuple] = []
        if old is not None:
            ops.append((MODIFY_DELETE, [old]))
        ops.append((MODIFY_ADD, [str(new)]))
        return ops

    def _cas_modify(self, dn: str, changes: dict) -> bool:
        """One modify; False when it lost a compare-and-swap, BackendUnavailable when the
        directory could not answer."""
        from ldap3.core import exceptions as lx

        self._bind_service()
        try:
            ok = self._conn.modify(dn, changes)
        except (lx.LDAPException, OSError) as exc:
            self.close()
            raise BackendUnavailable("ldap_unavailable", type(exc).__name__) from None
        if ok:
            return True
        code = self._conn.result.get("result") if self._conn.result else None
        # noSuchAttribute (16): the old value is gone; attributeOrValueExists (20) or
        # constraintViolation (19): a value appeared. Either way another login won.
        if code in (16, 19, 20):
            return False
        self.close()
        raise BackendUnavailable("ldap_unavailable", f"modify result={code}")

    def _reread_failures(self, token_dn: str) -> bytes | None:
        found = self._search(token_dn, "(objectClass=*)", "BASE", [self.attrs.failure_count], 1)
        if not found:
            raise BackendUnavailable("token_missing", "token entry vanished")
        raw = _first(found[0]["attrs"], self.attrs.failure_count)
        self._seen_failures[token_dn] = raw
        return raw

    def reset_failures(self, record: UserRecord) -> None:
        """Remove the failure count and last failure (admin unlock); no compare-and-swap:
        the admin's intent wins over any login in flight."""
        from ldap3 import MODIFY_REPLACE

        token = record.token
        assert token is not None
        a = self.attrs
        changes = {a.failure_count: [(MODIFY_REPLACE, [])], a.last_failure: [(MODIFY_REPLACE, [])]}
        if not self._cas_modify(token.dn, changes):
            raise BackendUnavailable("ldap_unavailable", "unlock modify refused")
        self._seen_failures[token.dn] = None

    def record_failure(self, record: UserRecord, now: float) -> None:
        """Increment the failure count with a compare-and-swap, re-reading and retrying
        when another login changed it in between (bounded: see FAILURE_CAS_TRIES)."""
        from ldap3 import MODIFY_REPLACE

        token = record.token
        assert token is not None
        a = self.attrs
        for attempt in range(FAILURE_CAS_TRIES):
            if attempt:
                self._reread_failures(token.dn)
            current = max(0, _int_or(self._seen_failures.get(token.dn), 0))
            changes = {
                a.failure_count: self._count_cas(token.dn, current + 1),
                a.last_failure: [(MODIFY_REPLACE, [generalized_time(now)])],
            }
            if self._cas_modify(token.dn, changes):
                self._seen_failures[token.dn] = str(current + 1).encode()
                return
