"""Config validation names key and file; log values cannot forge fields or lines."""

import os

import pytest

from mailmfa import config as cfgmod
from mailmfa.log import format_line, quote

GOOD = """
[ldap]
uris = ["ldap://127.0.0.1:389"]
bind_dn = "cn=mailmfa,ou=services,dc=example,dc=org"
bind_password_file = "{pw}"
user_base = "ou=people,dc=example,dc=org"
timeout = 2
[totp]
digits = 6
[policy]
require_mfa = true
"""


def write(tmp_path, text, mode=0o640):
    p = tmp_path / "mailmfa.toml"
    p.write_text(text)
    os.chmod(p, mode)
    return str(p)


def test_good_config(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    cfg = cfgmod.load(write(tmp_path, GOOD.format(pw=pw)))
    assert cfg.ldap.timeout == 2.0 and cfg.policy.require_mfa is True
    assert cfg.read_bind_password() == "s3cret"  # trailing newline ignored
    assert "s3cret" not in repr(cfg)
    pw.write_bytes(b"\xffs3cret\n")  # not UTF-8: a config error naming the file, not a traceback
    with pytest.raises(cfgmod.ConfigError, match=f"bind_password_file: {pw} is not UTF-8"):
        cfg.check_secret_readable()


@pytest.mark.parametrize(
    "text,needle",
    [
        ("[ldap]\nuser_base='x'\ntimeuot=3\n", "unknown key [ldap] timeuot"),
        ("[ldap]\nuser_base='x'\ntimeout='3'\n", "[ldap] timeout: expected a number"),
        ("[ldap]\nuser_base='x'\n[totp]\ndigits=5\n", "[totp] digits: 5 must be between"),
        ("[ldap]\nuser_base='x'\n[totp]\nalgorithm='MD5'\n", "[totp] algorithm: 'MD5' must be one of"),
        ("[ldap]\nuser_base='x'\nuris=['http://x']\n", "[ldap] uris: 'http://x'"),
        ("[ldap]\nuser_base='x'\nuser_filter='(uid=%u)'\n", "[ldap] user_filter"),
        ("[ldap]\nuser_base='x'\n[polcy]\n", "unknown section [polcy]"),
        ("[ldap]\nuser_base='x'\n[policy]\nrequire_mfa=1\n", "[policy] require_mfa: expected true or false"),
        ("[ldap]\nuser_base='x'\n[ldap.attributes]\nsecrte='x'\n", "unknown key [ldap.attributes] secrte"),
        ("[ldap]\n", "[ldap] user_base is required"),
        ("[ldap\n", "not valid TOML"),
    ],
)
def test_bad_config_names_key_and_file(tmp_path, text, needle):
    path = write(tmp_path, text)
    with pytest.raises(cfgmod.ConfigError) as exc:
        cfgmod.load(path)
    assert needle in str(exc.value)
    assert path in str(exc.value)


def test_world_writable_config_refused(tmp_path):
    path = write(tmp_path, "[ldap]\nuser_base='x'\n", 0o666)
    with pytest.raises(cfgmod.ConfigError, match="writable by others"):
        cfgmod.load(path)


def test_resolve_path_order():
    assert cfgmod.resolve_path("/a", {"MAILMFA_CONFIG": "/b"}) == "/a"
    assert cfgmod.resolve_path(None, {"MAILMFA_CONFIG": "/b"}) == "/b"
    assert cfgmod.resolve_path(None, {}) == cfgmod.DEFAULT_PATH


def test_log_quoting_prevents_injection():
    line = format_line({"result": "fail", "user": 'bob reason=ok\nmailmfa result=ok "x"'})
    assert "\n" not in line
    assert line.startswith('mailmfa result=fail user="bob reason=ok\\x0amailmfa result=ok \\"x\\""')
    assert quote("alice@example.org") == "alice@example.org"
    assert quote("") == '""'
