"""One contract, two stores: every Directory the entry points can build (LDAP on a real
slapd; SQLite file + PAM with real system users) must keep the same promises.

A `side` fixture, parametrized over the backends, provisions users and builds fresh
Directory instances through mailmfa.entry.common.build_directory() -- the same factory
the entry points use -- so the suite tests exactly what runs at login; and TokenAdmin
instances through build_token_admin(), as the `mailmfa` commands get them.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from mailmfa.core.types import TotpParams  # noqa: E402
from mailmfa.entry.common import build_directory, build_token_admin, load_config  # noqa: E402
from mfa import write_config  # noqa: E402
from servers import Slapd, free_port, make_workdir, remove_workdir  # noqa: E402

_n = iter(range(1, 1_000_000))


def _no_reuse(sections: dict) -> dict:
    """Strict replay refusal: no reuse of a just-verified password+code (and no state file)."""
    return {**sections, "policy": {"reuse_seconds": 0}}


class LdapSide:
    """Users in slapd (OATH-LDAP schema), password by binding as the user."""

    name = "ldap"

    def login_config(self) -> dict:
        """Sections for config.parse() that authenticate() needs for this store."""
        return _no_reuse({"ldap": {"user_base": "x"}})

    def __init__(self, slapd: Slapd, workdir: Path) -> None:
        self.slapd = slapd
        self.workdir = workdir
        self.config = write_config(workdir, slapd, "contract-ldap.toml")

    def add_user(self, password: str, secret: bytes | None = None, last_step: int | None = None) -> str:
        uid = f"c{next(_n)}"
        self.slapd.add_user(uid, password, secret, last_step=last_step)
        return uid

    def directory(self) -> Any:
        return build_directory(load_config(str(self.config), {}))

    def admin(self) -> Any:
        """The TokenAdmin the `mailmfa` commands get for this config."""
        return build_token_admin(load_config(str(self.config), {}))

    def broken_directory(self) -> Any:
        cfg = write_config(self.workdir, self.slapd, "contract-down.toml",
                           uris=[f"ldap://127.0.0.1:{free_port()}"], timeout=1.0)
        return build_directory(load_config(str(cfg), {}))

    def last_step(self, user: str) -> int | None:
        value = self.slapd.token_state(user).first("oathTOTPLastTimeStep")
        return int(value) if value is not None else None


class SqliteSide:
    """Tokens in a real SQLite file, passwords of real system users through pam_unix."""

    name = "sqlite"

    def login_config(self) -> dict:
        return _no_reuse({})

    def __init__(self, workdir: Path) -> None:
        import syspam

        self.syspam = syspam
        self.workdir = workdir
        workdir.mkdir(exist_ok=True)
        self.db = workdir / "state" / "mailmfa.db"
        self.service = syspam.add_pam_service(syspam.password_service_text())
        self.config = self._write("contract-sqlite.toml", self.db)
        self.users: list[str] = []

    def _write(self, name: str, db: Path) -> Path:
        path = self.workdir / name
        path.write_text(
            f'[store]\nbackend = "sqlite"\npath = "{db}"\n'
            f'[password]\nbackend = "pam"\npam_service = "{self.service}"\n')
        os.chmod(path, 0o644)
        return path

    def add_user(self, password: str, secret: bytes | None = None, last_step: int | None = None) -> str:
        from mailmfa.backends.sqlite import SqliteStore

        user = self.syspam.add_system_user(password, prefix="mmc")
        self.users.append(user)
        if secret is not None:
            store = SqliteStore(str(self.db))
            try:
                store.write_token(user, secret, TotpParams(), time.time(), last_step=last_step)
            finally:
                store.close()
        return user

    def directory(self) -> Any:
        return build_directory(load_config(str(self.config), {}))

    def admin(self) -> Any:
        """The TokenAdmin the `mailmfa` commands get for this config."""
        return build_token_admin(load_config(str(self.config), {}))

    def broken_directory(self) -> Any:
        blocker = self.workdir / "not-a-dir"
        blocker.write_text("")
        return build_directory(load_config(str(self._write("contract-down.toml", blocker / "x.db")), {}))

    def last_step(self, user: str) -> int | None:
        from mailmfa.backends.sqlite import SqliteStore

        store = SqliteStore(str(self.db))
        try:
            info = store.get(user)
        finally:
            store.close()
        return info.last_step if info else None

    def cleanup(self) -> None:
        for user in self.users:
            self.syspam.remove_system_user(user)
        self.syspam.remove_pam_service(self.service)


@pytest.fixture(scope="module")
def contract_workdir() -> Iterator[Path]:
    path = make_workdir("mailmfa-contract-")
    yield path
    if not os.environ.get("MAILMFA_KEEP_WORKDIRS"):
        remove_workdir(path)


@pytest.fixture(scope="module")
def contract_slapd(contract_workdir: Path) -> Iterator[Slapd]:
    server = Slapd(contract_workdir / "slapd")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module", params=["ldap", "sqlite"])
def side(request: pytest.FixtureRequest, contract_workdir: Path) -> Iterator[Any]:
    if request.param == "ldap":
        yield LdapSide(request.getfixturevalue("contract_slapd"), contract_workdir)
        return
    if os.geteuid() != 0:
        pytest.skip("single-host mode tests create system users and PAM services (root only)")
    s = SqliteSide(contract_workdir / "sqlite")
    yield s
    s.cleanup()
