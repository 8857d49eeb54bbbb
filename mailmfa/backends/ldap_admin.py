"""TokenAdmin over LDAP (OATH-LDAP schema): enrol, inspect, resync, remove, list.

Built on LdapDirectory (composition: same connection, service bind, timeouts and error
mapping as the login path), so the admin side reads exactly what a login reads. Every
change is ONE modify of one entry, so an interrupted command never leaves 2FA half on:
  - enrol: objectClass oathTOTPUser + oathTOTPToken, oathTOTPToken = own DN, secret,
    params link, oathSecretTime, oathTOTPLastTimeStep (the verified step);
  - remove: the same classes, link and token attributes go (a separate token entry, if
    the directory uses them, is deleted afterwards: it is unreachable by then).
Runs as the service account (conf/ldap/acl.ldif gives it exactly these rights).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from typing import Any

from mailmfa.backends.ldap import (
    LdapDirectory,
    _first,
    _int_or,
    _same_dn,
    generalized_time,
)
from mailmfa.backends.ports import (
    AdminError,
    AlreadyEnrolled,
    BackendUnavailable,
    ListIncomplete,
    NotEnrolled,
    UnknownUser,
)
from mailmfa.config import Config
from mailmfa.core.enroll import NewToken, parse_generalized_time
from mailmfa.core.ldapescape import fill_filter
from mailmfa.core.types import TokenState, TotpParams

USER_CLASS = "oathTOTPUser"
TOKEN_CLASS = "oathTOTPToken"

# result codes
_NO_SUCH_ATTRIBUTE = 16
_CONSTRAINT = 19
_VALUE_EXISTS = 20
_NO_SUCH_OBJECT = 32
_INSUFFICIENT_ACCESS = 50
_OBJECT_CLASS_VIOLATION = 65
_SIZE_LIMIT = 4
_ADMIN_LIMIT = 11
# a concurrent login changed the entry between our read and our modify: read again
_RETRY = {_NO_SUCH_ATTRIBUTE, _OBJECT_CLASS_VIOLATION}
_ATTEMPTS = 3

_NAME_ATTR = re.compile(r"\(([A-Za-z][A-Za-z0-9-]*(?:;[A-Za-z0-9-]+)*)=\{user\}\)")


class _Retry(Exception):
    pass


def _present(attrs: dict[str, list[bytes]]) -> set[str]:
    return {k.lower() for k, v in attrs.items() if v}


def _classes(attrs: dict[str, list[bytes]]) -> set[str]:
    for k, v in attrs.items():
        if k.lower() == "objectclass":
            return {x.decode("utf-8", "replace").lower() for x in v}
    return set()


def _call(d: LdapDirectory, method: str, *args: Any) -> int:
    """Run one write (`modify`, `delete`) on the service connection; the LDAP result code
    (0 = done). Transport failures are BackendUnavailable, like everywhere else."""
    from ldap3.core import exceptions as lx

    d._bind_service()
    try:
        ok = getattr(d._conn, method)(*args)
    except (lx.LDAPException, OSError) as exc:
        d.close()
        raise BackendUnavailable("ldap_unavailable", f"{method}: {type(exc).__name__}") from None
    if ok:
        return 0
    result = d._conn.result or {}
    return int(result.get("result") or 80)


def _refused(code: int, what: str, dn: str) -> Exception:
    """Map an unexpected result code to the right kind of error."""
    if code == _INSUFFICIENT_ACCESS:
        return AdminError(f"the directory refused to {what} {dn} (insufficientAccessRights): the "
                          "service account needs the rights in conf/ldap/acl.ldif")
    if code in (51, 52, 80, 3, 85):  # busy, unavailable, other, timeLimit, timeout
        return BackendUnavailable("ldap_unavailable", f"{what} result={code}")
    return AdminError(f"the directory refused to {what} {dn} (LDAP result {code})")


def remove_token_of(d: LdapDirectory, user_dn: str) -> bool:
    """Remove the token link, the OATH classes and (token on the user entry) the token
    attributes in one modify; then delete a separate token entry. False: no token."""
    from ldap3 import MODIFY_DELETE

    a = d.attrs
    token_attrs = [a.secret, a.params, a.last_step, a.drift, a.failure_count, a.last_failure,
                   a.last_login, a.secret_time]
    for _ in range(_ATTEMPTS):
        found = d._search(user_dn, "(objectClass=*)", "BASE", ["objectClass", a.token, *token_attrs], 1)
        if not found:
            raise UnknownUser(f"{user_dn}: entry not found")
        attrs = found[0]["attrs"]
        classes, present = _classes(attrs), _present(attrs)
        link = _first(attrs, a.token)
        token_dn = link.decode("utf-8", "replace") if link is not None else None
        on_user = token_dn is None or _same_dn(token_dn, user_dn)
        changes: dict[str, list[tuple[Any, list[Any]]]] = {}
        drop = [c for c in (USER_CLASS,) if c.lower() in classes]
        if token_dn is not None:
            changes[a.token] = [(MODIFY_DELETE, [])]
        if on_user:
            if TOKEN_CLASS.lower() in classes:
                drop.append(TOKEN_CLASS)
            for attr in token_attrs:
                if attr.lower() in present:
                    changes[attr] = [(MODIFY_DELETE, [])]
        if drop:
            changes["objectClass"] = [(MODIFY_DELETE, drop)]
        if token_dn is None and USER_CLASS.lower() not in classes:
            return False  # not enrolled (leftover token attributes alone do not count)
        code = _call(d, "modify", user_dn, changes)
        if code in _RETRY:
            continue
        if code:
            raise _refused(code, "switch 2FA off on", user_dn)
        if not on_user:
            assert token_dn is not None
            code = _call(d, "delete", token_dn)
            if code not in (0, _NO_SUCH_OBJECT):
                # 2FA is already off (the link is gone); the orphan entry is only clutter
                raise _refused(code, "delete the token entry", token_dn)
        return True
    raise AdminError(f"{user_dn} kept changing while 2FA was being switched off; try again")


class LdapTokenAdmin:
    """TokenAdmin port over LDAP. One instance per command; not thread-safe."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.attrs = config.ldap.attributes
        self.directory = LdapDirectory(config)

    # -- reading ------------------------------------------------------------------------
    def _token_attr_names(self) -> list[str]:
        a = self.attrs
        return [a.secret, a.params, a.last_step, a.drift, a.failure_count, a.last_failure,
                a.last_login, a.secret_time]

    def _user(self, user: str) -> tuple[str, dict[str, list[bytes]]]:
        cfg = self.config.ldap
        if not user or len(user) > 256 or any(ord(c) < 0x20 or c == "\x7f" for c in user):
            raise UnknownUser(f"{user!r}: not a valid user name")
        found = self.directory._search(
            cfg.user_base, fill_filter(cfg.user_filter, user), "SUBTREE",
            ["objectClass", self.attrs.token, *self._token_attr_names()], 2,
        )
        if not found:
            raise UnknownUser(f"{user}: no such user under {cfg.user_base}")
        if len(found) > 1:
            raise UnknownUser(f"{user}: the name matches more than one entry (check user_filter)")
        return found[0]["dn"], found[0]["attrs"]

    def _read(self, dn: str) -> dict[str, list[bytes]] | None:
        found = self.directory._search(dn, "(objectClass=*)", "BASE",
                                       ["objectClass", *self._token_attr_names()], 1)
        return found[0]["attrs"] if found else None

    def enrolment_params(self) -> TotpParams:
        """[ldap] params_dn's entry when set (so the URI matches what logins use), else [totp]."""
        pdn = self.config.ldap.params_dn
        try:
            return self.directory._params(pdn.encode("utf-8") if pdn else None)
        except BackendUnavailable as exc:
            if exc.reason == "token_invalid":
                raise AdminError(f"[ldap] params_dn = {pdn!r}: {exc.detail}") from None
            raise

    def _decode_secret(self, raw: bytes | None) -> bytes | None:
        if not raw:
            return None
        if self.config.ldap.secret_encoding == "base32":
            text = raw.decode("ascii", "replace").replace(" ", "").upper()
            try:
                return base64.b32decode(text + "=" * (-len(text) % 8))
            except ValueError:
                return None
        return raw

    def token_state(self, user: str) -> TokenState:
        dn, attrs = self._user(user)
        return self._state(user, dn, attrs)

    def _state(self, user: str, dn: str, attrs: dict[str, list[bytes]]) -> TokenState:
        a = self.attrs
        link = _first(attrs, a.token)
        if link is None:
            return TokenState(user, dn, False)
        token_dn = link.decode("utf-8", "replace")
        tattrs = attrs if _same_dn(token_dn, dn) else self._read(token_dn)
        if tattrs is None:
            return TokenState(user, dn, True, token_dn, problem=f"token entry {token_dn} does not exist")
        problem = ""
        secret = self._decode_secret(_first(tattrs, a.secret))
        if secret is None:
            problem = "the token has no usable secret"
        params: TotpParams | None = None
        try:
            params = self.directory._params(_first(tattrs, a.params))
        except BackendUnavailable as exc:
            if exc.reason != "token_invalid":
                raise
            problem = problem or f"bad params: {exc.detail}"
        last = _first(tattrs, a.last_step)
        fc = _first(tattrs, a.failure_count)
        return TokenState(
            user=user, dn=dn, enrolled=True, token_dn=token_dn, secret=secret, params=params,
            secret_time=parse_generalized_time(_first(tattrs, a.secret_time)),
            last_step=int(last) if last is not None and last.strip().isdigit() else None,
            drift=_int_or(_first(tattrs, a.drift), 0),
            failure_count=_int_or(fc, 0) if fc is not None else None,
            last_failure=parse_generalized_time(_first(tattrs, a.last_failure)),
            last_login=parse_generalized_time(_first(tattrs, a.last_login)),
            problem=problem,
        )

    # -- writing ------------------------------------------------------------------------
    def _token_changes(self, token: NewToken, present: set[str]) -> dict[str, list[tuple[Any, list[Any]]]]:
        from ldap3 import MODIFY_DELETE, MODIFY_REPLACE

        a = self.attrs
        secret: bytes | str = token.secret
        if self.config.ldap.secret_encoding == "base32":
            secret = base64.b32encode(token.secret).decode("ascii").rstrip("=")
        ch: dict[str, list[tuple[Any, list[Any]]]] = {
            a.secret: [(MODIFY_REPLACE, [secret])],
            a.secret_time: [(MODIFY_REPLACE, [generalized_time(token.created)])],
        }
        if self.config.ldap.params_dn:
            ch[a.params] = [(MODIFY_REPLACE, [self.config.ldap.params_dn])]
        elif a.params.lower() in present:
            ch[a.params] = [(MODIFY_DELETE, [])]
        if token.last_step is not None:
            ch[a.last_step] = [(MODIFY_REPLACE, [str(token.last_step)])]
        elif a.last_step.lower() in present:
            ch[a.last_step] = [(MODIFY_DELETE, [])]
        # a new secret starts without the old one's history
        for attr in (a.drift, a.failure_count, a.last_failure, a.last_login):
            if attr.lower() in present:
                ch[attr] = [(MODIFY_DELETE, [])]
        return ch

    def write_token(self, user: str, token: NewToken, *, replace: bool = False) -> None:
        from ldap3 import MODIFY_ADD, MODIFY_REPLACE

        a = self.attrs
        for _ in range(_ATTEMPTS):
            dn, attrs = self._user(user)
            link = _first(attrs, a.token)
            if link is not None and not replace:
                raise AlreadyEnrolled(f"{user} already has 2-step verification")
            token_dn = link.decode("utf-8", "replace") if link is not None else dn
            target, tattrs = dn, attrs
            if not _same_dn(token_dn, dn):
                separate = self._read(token_dn)
                if separate is not None:  # keep the directory's layout: update that entry
                    target, tattrs = token_dn, separate
            changes = self._token_changes(token, _present(tattrs))
            if target == dn:
                classes = _classes(attrs)
                missing = [c for c in (USER_CLASS, TOKEN_CLASS) if c.lower() not in classes]
                if missing:
                    changes["objectClass"] = [(MODIFY_ADD, missing)]
                # MODIFY_ADD when there was no link: a concurrent enrolment makes it fail
                # (compare-and-swap) instead of silently overwriting the other one's secret
                changes[a.token] = [(MODIFY_ADD if link is None else MODIFY_REPLACE, [dn])]
            code = _call(self.directory, "modify", target, changes)
            if code in (_VALUE_EXISTS, _CONSTRAINT) and link is None:
                raise AlreadyEnrolled(f"{user} was enrolled by someone else just now")
            if code in _RETRY:
                continue
            if code:
                raise _refused(code, "write the token of", target)
            return
        raise AdminError(f"{user}: the entry kept changing during the write; try again")

    def remove_token(self, user: str) -> bool:
        dn, _ = self._user(user)
        return remove_token_of(self.directory, dn)

    def reset_failures(self, user: str) -> bool:
        self._user(user)  # UnknownUser for a name that matches nothing
        record = self.directory.lookup(user)
        if record is None or record.token is None:
            return False
        self.directory.reset_failures(record)
        return True

    def set_drift(self, user: str, drift: int, last_step: int | None = None) -> None:
        from ldap3 import MODIFY_ADD, MODIFY_DELETE, MODIFY_REPLACE

        a = self.attrs
        for _ in range(_ATTEMPTS):
            state = self.token_state(user)
            if not state.enrolled:
                raise NotEnrolled(f"{user} has no 2-step verification")
            changes: dict[str, list[tuple[Any, list[Any]]]] = {a.drift: [(MODIFY_REPLACE, [str(drift)])]}
            if last_step is not None and (state.last_step is None or last_step > state.last_step):
                ops: list[tuple[Any, list[Any]]] = []
                if state.last_step is not None:  # compare-and-swap, as the login path does
                    ops.append((MODIFY_DELETE, [str(state.last_step)]))
                ops.append((MODIFY_ADD, [str(last_step)]))
                changes[a.last_step] = ops
            code = _call(self.directory, "modify", state.token_dn, changes)
            if code in (_NO_SUCH_ATTRIBUTE, _VALUE_EXISTS, _CONSTRAINT):
                continue  # a login moved the last step meanwhile: read again
            if code:
                raise _refused(code, "store the drift of", state.token_dn)
            return
        raise AdminError(f"{user}: the token kept changing during the write; try again")

    # -- listing ------------------------------------------------------------------------
    def name_attribute(self) -> str | None:
        """The attribute user_filter compares with {user} (uid in the default filter)."""
        m = _NAME_ATTR.search(self.config.ldap.user_filter)
        return m.group(1) if m else None

    def list_enrolled(self, page_size: int = 500) -> Iterator[str]:
        from ldap3 import SUBTREE
        from ldap3.core import exceptions as lx

        cfg = self.config.ldap
        base_filter = cfg.user_filter.replace("{user}", "*")
        flt = f"(&{base_filter}({self.attrs.token}=*))"
        name_attr = self.name_attribute()
        d = self.directory
        d._bind_service()
        try:
            entries = d._conn.extend.standard.paged_search(
                cfg.user_base, flt, search_scope=SUBTREE,
                attributes=[name_attr] if name_attr else ["1.1"],
                paged_size=page_size, generator=True,
            )
            for entry in entries:
                if entry.get("type") != "searchResEntry":
                    continue
                raw = entry.get("raw_attributes", {})
                value = _first(raw, name_attr) if name_attr else None
                yield value.decode("utf-8", "replace") if value is not None else entry["dn"]
        except (lx.LDAPException, OSError) as exc:
            d.close()
            raise BackendUnavailable("ldap_unavailable", f"search: {type(exc).__name__}") from None
        code = int((d._conn.result or {}).get("result") or 0)
        if code in (_SIZE_LIMIT, _ADMIN_LIMIT):
            raise ListIncomplete(
                "the directory stopped the list early (sizeLimitExceeded): allow the service "
                "account complete paged searches, e.g. olcLimits: dn.exact=\"<bind_dn>\" "
                "size.prtotal=unlimited (see conf/ldap/limits.ldif)")
        if code not in (0, _NO_SUCH_OBJECT):
            raise _refused(code, "list", cfg.user_base)

    def close(self) -> None:
        self.directory.close()
