"""Fixtures starting real slapd and Dovecot instances (see servers.py for the classes).

Module scope by default: a slapd starts in ~0.1 s, but tests in one module share its directory,
so each test should use its own uids. Use the factories for special configurations (the otp
overlay, ppolicy) or for a server a test may kill; everything a factory starts is stopped, and
every directory removed, when the module finishes -- even after failures.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from servers import Dovecot, Slapd, make_workdir, remove_workdir


def _require(*tools: str) -> None:
    for tool in tools:
        if not (shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/usr/bin")):
            pytest.skip(f"{tool} is not installed")


@pytest.fixture(scope="module")
def workdir_factory(request: pytest.FixtureRequest) -> Iterator[Callable[[], Path]]:
    """Make 0755 directories outside pytest's 0700 tmp tree (Dovecot's `dovecot` user must enter
    them); they are removed at module end unless MAILMFA_KEEP_WORKDIRS is set (for debugging)."""
    import os

    made: list[Path] = []

    def make() -> Path:
        path = make_workdir()
        made.append(path)
        return path

    yield make
    if not os.environ.get("MAILMFA_KEEP_WORKDIRS"):
        for path in made:
            remove_workdir(path)


@pytest.fixture(scope="module")
def slapd_factory(workdir_factory: Callable[[], Path]) -> Iterator[Callable[..., Slapd]]:
    """`slapd_factory(with_otp_overlay=False, with_ppolicy=False, **kw)` -> a started Slapd."""
    _require("slapd", "slapadd", "ldapmodify")

    def build(with_otp_overlay: bool = False, with_ppolicy: bool = False, **kw: Any) -> Slapd:
        return Slapd(workdir_factory(), with_otp_overlay, with_ppolicy, **kw)

    yield from _started(build)


@pytest.fixture(scope="module")
def slapd(slapd_factory: Callable[..., Slapd]) -> Slapd:
    """A plain slapd (OATH-LDAP schema as LDIF, no overlay) with the shipped ACL and base entries."""
    return slapd_factory()


@pytest.fixture(scope="module")
def dovecot_factory(workdir_factory: Callable[[], Path]) -> Iterator[Callable[..., Dovecot]]:
    """`dovecot_factory(passdb, userdb=None, extra="", workdir=None, **kw)` -> a started Dovecot.

    Pass `workdir` to put the config next to files you wrote there (e.g. a checkpassword
    program or a mailmfa.toml the auth process must read)."""
    _require("dovecot", "doveadm")

    def build(passdb: str, userdb: str | None = None, extra: str = "", workdir: Path | None = None,
              **kw: Any) -> Dovecot:
        return Dovecot(workdir or workdir_factory(), passdb, userdb, extra, **kw)

    yield from _started(build)


def _started(build: Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    """A factory fixture's body: `make(...)` builds a server, starts it and keeps it; every
    server made is stopped when the fixture ends."""
    made: list[Any] = []

    def make(*args: Any, **kw: Any) -> Any:
        server = build(*args, **kw)
        made.append(server)
        server.start()
        return server

    yield make
    for server in made:
        server.stop()


# -- the mailmfa setup most test modules share --------------------------------------------------
# (module scope: one config per module, pointing at that module's slapd)

@pytest.fixture(scope="module")
def workdir(workdir_factory: Callable[[], Path]) -> Path:
    """A 0755 directory for the module's config files and Dovecot instances."""
    return workdir_factory()


@pytest.fixture(scope="module")
def config(workdir: Path, slapd: Slapd) -> Path:
    """mailmfa.toml for the module's slapd (strict replay: reuse_seconds = 0)."""
    from mfa import write_config

    return write_config(workdir, slapd)


@pytest.fixture(scope="module")
def strict_config(workdir: Path, slapd: Slapd) -> Path:
    """The same with `[policy] require_mfa = true`."""
    from mfa import write_config

    return write_config(workdir, slapd, "strict.toml", require_mfa=True)


@pytest.fixture(scope="module")
def dovecot(dovecot_factory: Callable[..., Dovecot], config: Path, workdir: Path,
            request: pytest.FixtureRequest) -> Dovecot:
    """A Dovecot checking logins with mailmfa and `config`: mailmfa-checkpassword on 2.3,
    passdb pam -> mailmfa-pam on 2.4 (pamface.dovecot_checking_with_mailmfa)."""
    from pamface import dovecot_checking_with_mailmfa

    return dovecot_checking_with_mailmfa(dovecot_factory, config, workdir, request)
