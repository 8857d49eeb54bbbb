"""The shipped systemd unit (packaging/mailmfa-authd.service) against the shipped configs:
under ProtectSystem=strict every path is read-only unless the unit names it, so a daemon in
single-host mode whose token database is not in ReadWritePaths answers every login
`store_unavailable`. No systemd here: the unit's text and the configs' values are compared."""

from __future__ import annotations

import os
from pathlib import Path

from mailmfa.config import load

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "packaging" / "mailmfa-authd.service"


def _directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).extend(value.split())
    return out


def _writable(path: str, rw: list[str]) -> bool:
    return any(os.path.commonpath([path, entry.lstrip("-")]) == entry.lstrip("-") for entry in rw)


def test_single_host_database_is_writable_under_the_unit() -> None:
    unit = _directives(UNIT.read_text())
    assert unit["ProtectSystem"] == ["strict"]  # else everything is writable and this proves nothing
    cfg = load(str(REPO / "conf" / "mailmfa-single-host.toml"))
    store_dir = os.path.dirname(cfg.store.path)
    rw = unit.get("ReadWritePaths", [])
    assert _writable(store_dir, rw), f"{store_dir} (WAL files beside the database) not in ReadWritePaths={rw}"
    assert not _writable("/etc/mailmfa", rw)  # the config stays read-only to the daemon
