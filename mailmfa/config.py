"""The TOML configuration, read once per process into a frozen Config.

Every key is declared below with its type and default; anything else is an error
naming the key and the file, because a misspelt key silently ignored is how a
security setting ends up off.
"""

from __future__ import annotations

import os
import stat
from typing import Any

from mailmfa.core.record import field, fields, record

DEFAULT_PATH = "/etc/mailmfa/mailmfa.toml"
ENV_VAR = "MAILMFA_CONFIG"


class ConfigError(Exception):
    """A config problem, worded for the admin: which file, which key, what is wrong."""


@record
class LdapAttributes:
    """Attribute names, so directories without the OATH-LDAP schema can be used."""

    token: str = "oathTOTPToken"
    secret: str = "oathSecret"
    params: str = "oathTOTPParams"
    last_step: str = "oathTOTPLastTimeStep"
    drift: str = "oathTOTPTimeStepDrift"
    failure_count: str = "oathFailureCount"
    last_failure: str = "oathLastFailure"
    last_login: str = "oathLastLogin"
    secret_time: str = "oathSecretTime"
    digits: str = "oathOTPLength"
    algorithm: str = "oathHMACAlgorithm"
    period: str = "oathTOTPTimeStepPeriod"
    window: str = "oathTOTPTimeStepWindow"


@record
class LdapConfig:
    uris: tuple[str, ...] = ("ldap://127.0.0.1:389",)
    starttls: bool = False
    ca_file: str = ""
    bind_dn: str = ""
    bind_password_file: str = ""
    user_base: str = ""
    user_filter: str = "(&(objectClass=inetOrgPerson)(uid={user}))"
    timeout: float = 3.0
    secret_encoding: str = "raw"
    otp_overlay: bool = False
    # params entry new enrolments point to (oathTOTPParams); "" = none, [totp] applies
    params_dn: str = ""
    attributes: LdapAttributes = field(default_factory=LdapAttributes)


@record
class TotpConfig:
    digits: int = 6
    period: int = 30
    algorithm: str = "SHA1"
    window: int = 1
    issuer: str = "Mail"


@record
class PolicyConfig:
    require_mfa: bool = False
    # seconds a just-verified password+code is accepted again from the same client IP
    # (mail clients open several connections at once); 0 turns it off
    reuse_seconds: int = 60
    # local SQLite file holding only salted hashes for reuse_seconds (backends/state.py)
    state_file: str = "/var/lib/mailmfa/state.db"


@record
class WebConfig:
    """mailmfa-web, the self-service page (see README, "mailmfa-web")."""

    state_dir: str = "/var/lib/mailmfa-web"
    secure_cookies: bool = True
    session_timeout: int = 900
    reauth_timeout: int = 300
    site_name: str = ""
    proxy_hops: int = 0


STORE_BACKENDS = ("ldap", "sqlite")
PASSWORD_BACKENDS = ("ldap", "pam")


@record
class StoreConfig:
    """Where tokens and login state live. parse() picks "ldap" when an [ldap] section
    exists, else "sqlite" (single-host mode)."""

    backend: str = "ldap"
    path: str = "/var/lib/mailmfa/mailmfa.db"
    timeout: float = 5.0  # seconds a login waits for another one's write lock


@record
class PasswordConfig:
    """How the password part is checked: an LDAP bind as the user, or a PAM service
    (single-host mode: one with pam_unix for system accounts)."""

    backend: str = "ldap"
    pam_service: str = "mailmfa-password"


@record
class DaemonConfig:
    """mailmfa-authd (the resident daemon) and how the per-login programs reach it."""

    socket: str = "/run/mailmfa/authd.sock"
    group: str = "dovecot"
    pool_size: int = 4
    max_connections: int = 256
    read_timeout: float = 5.0
    use: str = "auto"
    fallback: bool = True
    timeout: float = 15.0
    ldap_client: str = "auto"


@record
class Config:
    path: str
    ldap: LdapConfig
    totp: TotpConfig
    policy: PolicyConfig
    web: WebConfig = field(default_factory=WebConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    password: PasswordConfig = field(default_factory=PasswordConfig)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)

    def check_secret_readable(self) -> None:
        """For the long-running programs' start and --check: a secret file this user cannot
        read is a config error now, not a temporary failure at every login later."""
        if "ldap" in (self.store.backend, self.password.backend) and self.ldap.bind_dn:
            self.read_bind_password()

    def read_bind_password(self) -> str:
        """The service account's password; read on use so it is never part of repr()."""
        path = self.ldap.bind_password_file
        if not path:
            return ""
        try:
            with open(path, encoding="utf-8") as fh:
                return fh.read().rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(
                f"{self.path}: [ldap] bind_password_file: cannot read {path}: {exc.strerror}"
            ) from None
        except UnicodeDecodeError:
            raise ConfigError(f"{self.path}: [ldap] bind_password_file: {path} is not UTF-8 text") from None


def _check_uri(v: str) -> str | None:
    return None if v.startswith(("ldap://", "ldaps://", "ldapi://")) else "must start with ldap://, ldaps:// or ldapi://"


def _one_of(*choices: str):
    def check(v: str) -> str | None:
        return None if v in choices else "must be one of " + ", ".join(repr(c) for c in choices)

    return check


def _range(lo: float, hi: float):
    def check(v: float) -> str | None:
        return None if lo <= v <= hi else f"must be between {lo} and {hi}"

    return check


def _nonempty(v: str) -> str | None:
    return None if v else "must not be empty"


def _absolute(v: str) -> str | None:
    return None if v.startswith("/") else "must be an absolute path"


def _socket_path(v: str) -> str | None:
    # sun_path holds 108 bytes including the NUL
    return None if v.startswith("/") and len(v.encode()) < 108 else "must be an absolute path under 108 bytes"


def _pam_service(v: str) -> str | None:
    if not v or "/" in v or v in (".", "..") or any(c.isspace() for c in v):
        return "must be a PAM service name (a file name in /etc/pam.d)"
    return None


def _user_filter(v: str) -> str | None:
    if "{user}" not in v:
        return "must contain {user}"
    if not (v.startswith("(") and v.endswith(")")):
        return "must be a parenthesised LDAP filter"
    return None


# section -> key -> (type, validator or None). Defaults come from the record classes.
_SCHEMA: dict[str, dict[str, tuple[type, Any]]] = {
    "ldap": {
        "uris": (list, None),
        "starttls": (bool, None),
        "ca_file": (str, None),
        "bind_dn": (str, None),
        "bind_password_file": (str, None),
        "user_base": (str, _nonempty),
        "user_filter": (str, _user_filter),
        "timeout": (float, _range(0.1, 60)),
        "secret_encoding": (str, _one_of("raw", "base32")),
        "otp_overlay": (bool, None),
        "params_dn": (str, None),
        "attributes": (dict, None),
    },
    "totp": {
        "digits": (int, _range(6, 8)),
        "period": (int, _range(10, 120)),
        "algorithm": (str, _one_of("SHA1", "SHA256", "SHA512")),
        "window": (int, _range(0, 10)),
        "issuer": (str, _nonempty),
    },
    "policy": {
        "require_mfa": (bool, None),
        "reuse_seconds": (int, _range(0, 3600)),
        "state_file": (str, _absolute),
    },
    "web": {
        "state_dir": (str, _nonempty),
        "secure_cookies": (bool, None),
        "session_timeout": (int, _range(60, 86400)),
        "reauth_timeout": (int, _range(30, 3600)),
        "site_name": (str, None),
        "proxy_hops": (int, _range(0, 5)),
    },
    "store": {
        "backend": (str, _one_of(*STORE_BACKENDS)),
        "path": (str, _absolute),
        "timeout": (float, _range(0.1, 60)),
    },
    "password": {
        "backend": (str, _one_of(*PASSWORD_BACKENDS)),
        "pam_service": (str, _pam_service),
    },
    "daemon": {
        "socket": (str, _socket_path),
        "group": (str, None),
        "pool_size": (int, _range(1, 64)),
        "max_connections": (int, _range(1, 4096)),
        "read_timeout": (float, _range(0.1, 300)),
        "use": (str, _one_of("auto", "always", "never")),
        "fallback": (bool, None),
        "timeout": (float, _range(0.1, 300)),
        "ldap_client": (str, _one_of("auto", "ldap3", "python-ldap")),
    },
}
# required only when an LDAP backend is selected (see parse())
_REQUIRED = {("ldap", "user_base")}


def _typecheck(path: str, where: str, value: Any, want: type) -> Any:
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if want is int and isinstance(value, bool):
        raise ConfigError(f"{path}: {where}: expected an integer, got {value!r}")
    if not isinstance(value, want):
        kind = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
                list: "a list", dict: "a table"}[want]
        raise ConfigError(f"{path}: {where}: expected {kind}, got {value!r}")
    return value


def parse(data: dict[str, Any], path: str = "<config>") -> Config:
    """Validate a decoded TOML document into a Config; raises ConfigError naming the key."""
    sections: dict[str, dict[str, Any]] = {}
    for name, body in data.items():
        if name not in _SCHEMA:
            known = ", ".join(f"[{s}]" for s in _SCHEMA)
            raise ConfigError(f"{path}: unknown section [{name}] (known: {known})")
        if not isinstance(body, dict):
            raise ConfigError(f"{path}: {name} must be a table ([{name}])")
        out: dict[str, Any] = {}
        for key, value in body.items():
            where = f"[{name}] {key}"
            if key not in _SCHEMA[name]:
                raise ConfigError(f"{path}: unknown key {where} (known: {', '.join(_SCHEMA[name])})")
            want, check = _SCHEMA[name][key]
            value = _typecheck(path, where, value, want)
            problem = check(value) if check else None
            if problem:
                raise ConfigError(f"{path}: {where}: {value!r} {problem}")
            out[key] = value
        sections[name] = out
    # Without an [ldap] section the embedded default is single-host mode: tokens in
    # SQLite, passwords through PAM. [ldap] user_base is required only when used.
    default_backend = "ldap" in sections
    store = dict(sections.get("store", {}))
    store.setdefault("backend", "ldap" if default_backend else "sqlite")
    password_sec = dict(sections.get("password", {}))
    password_sec.setdefault("backend", "ldap" if default_backend else "pam")
    uses_ldap = "ldap" in (store["backend"], password_sec["backend"])
    for sec, key in _REQUIRED:
        if sec == "ldap" and not uses_ldap:
            continue
        if key not in sections.get(sec, {}):
            raise ConfigError(f"{path}: [{sec}] {key} is required")

    ldap = dict(sections.get("ldap", {}))
    if "uris" in ldap:
        uris = ldap["uris"]
        if not uris or not all(isinstance(u, str) for u in uris):
            raise ConfigError(f"{path}: [ldap] uris: expected a non-empty list of strings")
        for u in uris:
            problem = _check_uri(u)
            if problem:
                raise ConfigError(f"{path}: [ldap] uris: {u!r} {problem}")
        ldap["uris"] = tuple(uris)
    if "attributes" in ldap:
        known = fields(LdapAttributes)
        attrs = {}
        for key, value in ldap["attributes"].items():
            if key not in known:
                raise ConfigError(
                    f"{path}: unknown key [ldap.attributes] {key} (known: {', '.join(known)})"
                )
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{path}: [ldap.attributes] {key}: expected an attribute name")
            attrs[key] = value
        ldap["attributes"] = LdapAttributes(**attrs)
    if ldap.get("starttls") and any(u.startswith("ldaps://") for u in ldap.get("uris", ())):
        raise ConfigError(f"{path}: [ldap] starttls: cannot be combined with ldaps:// uris")
    if ldap.get("otp_overlay") and (store["backend"], password_sec["backend"]) != ("ldap", "ldap"):
        raise ConfigError(
            f"{path}: [ldap] otp_overlay: needs [store] backend = \"ldap\" and [password] backend = \"ldap\""
        )
    return Config(
        path=path,
        ldap=LdapConfig(**ldap),
        totp=TotpConfig(**sections.get("totp", {})),
        policy=PolicyConfig(**sections.get("policy", {})),
        web=WebConfig(**sections.get("web", {})),
        store=StoreConfig(**store),
        password=PasswordConfig(**password_sec),
        daemon=DaemonConfig(**sections.get("daemon", {})),
    )


def resolve_path(explicit: str | None = None, environ: dict[str, str] | None = None) -> str:
    """--config beats $MAILMFA_CONFIG beats the default."""
    env = os.environ if environ is None else environ
    return explicit or env.get(ENV_VAR) or DEFAULT_PATH


def load(path: str) -> Config:
    """Read and validate `path`. A config others can write is refused: it decides who logs in."""
    import tomllib

    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            raw = fh.read(1 << 20)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
    if st.st_mode & stat.S_IWOTH:
        raise ConfigError(f"{path}: config is writable by others; run: chmod o-w {path}")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse(data, path)
