"""What every per-login entry point shares: config loading, picking the backends, the
in-process decision (the one key=value result line is mailmfa.log.LoginLog).

Kept free of heavy imports at module level: the entry points pay for every import on
every login. A resident-daemon client can be tried before check_in_process() and fall
back to it (see mailmfa.entry.pam.decide).
"""

from __future__ import annotations

import time

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs a login ~4 ms
if TYPE_CHECKING:
    from typing import Any

    from mailmfa.core.types import Outcome, Request


def load_config(explicit: str | None, env: dict[str, str]) -> Any:
    """--config beats $MAILMFA_CONFIG beats the default; raises config.ConfigError."""
    from mailmfa import config as cfgmod

    return cfgmod.load(cfgmod.resolve_path(explicit, env))


def build_directory(cfg: Any) -> Any:
    """The Directory for `[store] backend` x `[password] backend`.

    ldap+ldap is the LDAP adapter alone (one connection); every other pair is a
    CombinedDirectory of a token store and a password checker.
    """
    store_kind, password_kind = cfg.store.backend, cfg.password.backend
    if store_kind == "ldap" and password_kind == "ldap":
        from mailmfa.backends.ldap import LdapDirectory

        return LdapDirectory(cfg)
    from mailmfa.backends.combined import CombinedDirectory, password_checker

    if store_kind == "sqlite":
        from mailmfa.backends.sqlite import SqliteStore

        store: Any = SqliteStore(cfg.store.path, cfg.store.timeout)
    else:
        from mailmfa.backends.ldap import LdapDirectory

        store = LdapDirectory(cfg)
    return CombinedDirectory(store, password_checker(cfg), absent_is_tokenless=store_kind == "sqlite")


def build_token_admin(cfg: Any) -> Any:
    """The TokenAdmin (admin side: enrol, status, disable, ...) for `[store] backend`:
    tokens are administered where they live, whatever checks the password."""
    if cfg.store.backend == "sqlite":
        from mailmfa.backends.sqlite_admin import SqliteTokenAdmin

        return SqliteTokenAdmin(cfg)
    from mailmfa.backends.ldap_admin import LdapTokenAdmin

    return LdapTokenAdmin(cfg)


def check_in_process(req: Request, config_path: str | None, env: dict[str, str],
                     extra: dict[str, object] | None = None, daemon_down: bool = False) -> Outcome:
    """Load the config, ask the resident daemon when `[daemon] use` says so, else build the
    backends and run authenticate() here.

    `daemon_down`: the caller already found the daemon unreachable (--socket PATH), so it
    is not asked again and `[daemon] fallback` alone decides: check here, or TEMPFAIL.

    A config problem is a temporary failure (reason=config_error, the message in
    `extra["error"]`), never a refusal: an admin's typo must not make clients drop
    their saved passwords, nor let anyone in.
    """
    from mailmfa import config as cfgmod
    from mailmfa.core.types import Outcome, Verdict

    try:
        cfg = load_config(config_path, env)
    except cfgmod.ConfigError as exc:
        if extra is not None:
            extra["error"] = str(exc)
        return Outcome(Verdict.TEMPFAIL, "config_error", req.user)

    from mailmfa.client import UNREACHABLE, ask_daemon

    if daemon_down:
        if not cfg.daemon.fallback:
            return Outcome(Verdict.TEMPFAIL, UNREACHABLE, req.user)
        return authenticate_here(cfg, req)
    outcome = ask_daemon(cfg, req)
    if outcome is not None:
        if extra is not None:
            extra["via"] = "authd"
        return outcome
    return authenticate_here(cfg, req)


def authenticate_here(cfg: Any, req: Request) -> Outcome:
    """authenticate() in this process, with the backends `cfg` selects."""
    from mailmfa.service import authenticate

    directory = build_directory(cfg)
    try:
        return authenticate(req, directory, cfg, time.time())
    finally:
        directory.close()
