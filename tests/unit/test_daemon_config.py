"""The [daemon] config section (mailmfa-authd and the client mode)."""

from __future__ import annotations

import pytest

from mailmfa.config import ConfigError, DaemonConfig, parse

BASE = {"ldap": {"user_base": "ou=people,dc=example,dc=org"}}


def test_defaults():
    assert parse(BASE).daemon == DaemonConfig()
    assert DaemonConfig().socket == "/run/mailmfa/authd.sock" and DaemonConfig().use == "auto"


def test_values():
    d = parse({**BASE, "daemon": {"socket": "/tmp/x.sock", "group": "", "pool_size": 8, "use": "always",
                                  "fallback": False, "timeout": 2, "read_timeout": 1, "max_connections": 10}}).daemon
    assert (d.socket, d.group, d.pool_size, d.use, d.fallback, d.timeout) == ("/tmp/x.sock", "", 8, "always",
                                                                              False, 2.0)


@pytest.mark.parametrize("key, value, words", [
    ("socket", "relative.sock", "absolute"),
    ("socket", "/" + "x" * 120, "108"),
    ("use", "sometimes", "'auto'"),
    ("pool_size", 0, "between"),
    ("fallback", "yes", "true or false"),
    ("timeout", 0, "between"),
    ("sockets", "/x", "unknown key [daemon] sockets"),
])
def test_bad_values_name_the_key(key, value, words):
    with pytest.raises(ConfigError) as err:
        parse({**BASE, "daemon": {key: value}}, "/etc/mailmfa/mailmfa.toml")
    assert "[daemon]" in str(err.value) and words in str(err.value)
