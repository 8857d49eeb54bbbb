"""The daemon's optional LDAP transport on python-ldap (Debian: python3-ldap, the C libldap).

Why: in mailmfa-authd, ldap3 (pure Python) spends ~0.4 ms of CPU per LDAP operation, most of
it BER-encoding in pyasn1; a login needs four, and that CPU is taken from Dovecot on the same
machine. libldap does the same work in C: 0.32 instead of 1.82 ms of daemon CPU per login
(bench/authd_cpu.py). The import (~100 ms) is paid once by the daemon, never by a per-login process.

Only the transport differs: lookup(), the token and params parsing, and every decision stay
LdapDirectory's (mailmfa/backends/ldap.py); this class replaces the methods that talk to the
server, with the same results, the same failover over [ldap] uris and the same timeouts.
Not thread-safe, like LdapDirectory: the daemon pools instances.
"""

from __future__ import annotations

import os
from typing import Any

# libldap reads ldap.conf, ~/.ldaprc and LDAP* variables at its first use unless told not
# to: mailmfa takes its LDAP settings from its own config file only (as with ldap3).
os.environ["LDAPNOINIT"] = "1"

import ldap  # noqa: E402 - python-ldap, after LDAPNOINIT

from mailmfa.backends.ldap import LdapDirectory
from mailmfa.backends.ports import BackendUnavailable
from mailmfa.core.types import UserRecord

# ldap3's modify operation names (what LdapDirectory builds) -> libldap's
_MOD_OPS = {"MODIFY_ADD": ldap.MOD_ADD, "MODIFY_DELETE": ldap.MOD_DELETE, "MODIFY_REPLACE": ldap.MOD_REPLACE}
_SCOPES = {"SUBTREE": ldap.SCOPE_SUBTREE, "BASE": ldap.SCOPE_BASE}
# bind results meaning "these credentials are not good" (LdapDirectory's _REFUSED_BIND codes
# 49, 48, 50, 53, 19); any other error means the directory cannot answer now
_REFUSED = (ldap.INVALID_CREDENTIALS, ldap.INAPPROPRIATE_AUTH, ldap.INSUFFICIENT_ACCESS,
            ldap.UNWILLING_TO_PERFORM, ldap.CONSTRAINT_VIOLATION)


class CLdapDirectory(LdapDirectory):
    """LdapDirectory with python-ldap underneath (see module doc)."""

    def _connect(self) -> Any:
        # libldap takes the whole list and fails over itself, in order, connecting lazily at
        # the first operation with OPT_NETWORK_TIMEOUT per server
        cfg = self.config.ldap
        try:
            conn = ldap.initialize(" ".join(cfg.uris), bytes_mode=False)
            conn.set_option(ldap.OPT_PROTOCOL_VERSION, 3)
            conn.set_option(ldap.OPT_REFERRALS, 0)
            conn.set_option(ldap.OPT_NETWORK_TIMEOUT, cfg.timeout)
            conn.set_option(ldap.OPT_TIMEOUT, cfg.timeout)
            if cfg.starttls or any(u.startswith("ldaps://") for u in cfg.uris):
                if cfg.ca_file:
                    conn.set_option(ldap.OPT_X_TLS_CACERTFILE, cfg.ca_file)
                conn.set_option(ldap.OPT_X_TLS_REQUIRE_CERT, ldap.OPT_X_TLS_DEMAND)
                conn.set_option(ldap.OPT_X_TLS_NEWCTX, 0)
            if cfg.starttls:
                conn.start_tls_s()
            return conn
        except ldap.LDAPError as exc:
            raise BackendUnavailable("ldap_unavailable", type(exc).__name__) from None

    def _bind_service(self) -> None:
        if self._conn is not None and self._as_service:
            return
        password = self.config.read_bind_password()
        try:
            if self._conn is None:
                self._conn = self._connect()
            self._conn.simple_bind_s(self.config.ldap.bind_dn, password)
        except _REFUSED as exc:
            self.close()
            raise BackendUnavailable("service_bind_failed", type(exc).__name__) from None
        except ldap.LDAPError as exc:
            self.close()
            raise BackendUnavailable("ldap_unavailable", type(exc).__name__) from None
        self._as_service = True

    _user_conn: Any = None

    def close(self) -> None:
        for conn in (self._conn, self._user_conn):
            if conn is not None:
                try:
                    conn.unbind_s()
                except Exception:  # noqa: BLE001, S110 - closing must never raise
                    pass
        self._conn = self._user_conn = None
        self._as_service = False

    def _search(self, base: str, flt: str, scope: str, attrs: list[str], size: int) -> list[dict]:
        self._bind_service()
        try:
            found = self._conn.search_ext_s(base, _SCOPES[scope], flt, attrlist=attrs, sizelimit=size,
                                            timeout=self.config.ldap.timeout)
        except ldap.NO_SUCH_OBJECT:
            return []
        except ldap.SIZELIMIT_EXCEEDED:
            return [{}, {}]  # more than `size`: the caller treats it as ambiguous
        except ldap.LDAPError as exc:
            self.close()
            raise BackendUnavailable("ldap_unavailable", type(exc).__name__) from None
        return [{"dn": dn, "attrs": entry} for dn, entry in found if dn is not None]

    def verify_password(self, record: UserRecord, password: str) -> bool:
        """User binds go over a second connection kept for them, so the service connection
        never has to be re-bound: one LDAP operation fewer per login than LdapDirectory."""
        if not password:
            return False  # an empty simple bind is anonymous: never a password check
        try:
            if self._user_conn is None:
                self._user_conn = self._connect()
            self._user_conn.simple_bind_s(record.dn, password)
            return True
        except _REFUSED:
            return False
        except ldap.LDAPError as exc:
            self.close()
            raise BackendUnavailable("ldap_unavailable", type(exc).__name__) from None

    def _cas_modify(self, dn: str, changes: dict) -> bool:
        """LdapDirectory's compare-and-swap modify (record_success, record_failure,
        reset_failures build the same changes for both transports), sent with libldap."""
        mods = []
        for attr, ops in changes.items():
            for op, values in ops:
                raw = [v if isinstance(v, bytes) else str(v).encode() for v in values]
                mods.append((_MOD_OPS[op], attr, raw or None))
        self._bind_service()
        try:
            self._conn.modify_s(dn, mods)
            return True
        except (ldap.NO_SUCH_ATTRIBUTE, ldap.TYPE_OR_VALUE_EXISTS, ldap.CONSTRAINT_VIOLATION):
            return False  # another login changed the value first
        except ldap.LDAPError as exc:
            self.close()
            raise BackendUnavailable("ldap_unavailable", type(exc).__name__) from None

    def remove_token(self, record: UserRecord) -> None:
        """Rare (an admin's password reset): done over a short-lived ldap3 connection, so the
        removal logic stays in one place (ldap_admin.remove_token_of)."""
        once = LdapDirectory(self.config)
        try:
            once.remove_token(record)
        finally:
            once.close()
