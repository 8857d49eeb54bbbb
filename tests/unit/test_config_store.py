"""[store] and [password]: single-host mode is the default without [ldap]; LDAP keys are
required only when an LDAP backend is selected."""

import pytest

from mailmfa import config as cfgmod


def test_no_ldap_section_means_single_host_mode():
    cfg = cfgmod.parse({})
    assert (cfg.store.backend, cfg.password.backend) == ("sqlite", "pam")
    assert cfg.store.path == "/var/lib/mailmfa/mailmfa.db"
    assert cfg.password.pam_service == "mailmfa-password"


def test_ldap_section_keeps_ldap_defaults():
    cfg = cfgmod.parse({"ldap": {"user_base": "ou=people,dc=x"}})
    assert (cfg.store.backend, cfg.password.backend) == ("ldap", "ldap")


def test_mixed_backends():
    cfg = cfgmod.parse({"ldap": {"user_base": "ou=p,dc=x"}, "store": {"backend": "sqlite", "path": "/tmp/x.db"}})
    assert (cfg.store.backend, cfg.password.backend) == ("sqlite", "ldap")
    cfg = cfgmod.parse({"ldap": {"user_base": "ou=p,dc=x"}, "password": {"backend": "pam"}})
    assert (cfg.store.backend, cfg.password.backend) == ("ldap", "pam")


@pytest.mark.parametrize(
    "data,needle",
    [
        ({"store": {"backend": "ldap"}}, "[ldap] user_base is required"),
        ({"password": {"backend": "ldap"}}, "[ldap] user_base is required"),
        ({"store": {"backend": "mysql"}}, "[store] backend: 'mysql' must be one of"),
        ({"store": {"path": "relative.db"}}, "[store] path: 'relative.db' must be an absolute path"),
        ({"store": {"timeout": 0}}, "[store] timeout: 0.0 must be between"),
        ({"store": {"pth": "/x"}}, "unknown key [store] pth"),
        ({"password": {"pam_service": "../etc/x"}}, "[password] pam_service"),
        ({"password": {"pam_service": ""}}, "[password] pam_service"),
        ({"password": {"backend": "kerberos"}}, "[password] backend: 'kerberos' must be one of"),
        ({"ldap": {"user_base": "x", "otp_overlay": True}, "store": {"backend": "sqlite"}},
         "[ldap] otp_overlay: needs"),
    ],
)
def test_bad_store_password_config(data, needle):
    with pytest.raises(cfgmod.ConfigError) as exc:
        cfgmod.parse(data, "/etc/mailmfa/mailmfa.toml")
    assert needle in str(exc.value)
    assert "/etc/mailmfa/mailmfa.toml" in str(exc.value)


def test_shipped_example_config_parses():
    import tomllib
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "conf" / "mailmfa.toml"
    cfg = cfgmod.parse(tomllib.loads(path.read_text()), str(path))
    assert cfg.store.backend == "ldap"


def test_shipped_single_host_config_parses():
    import tomllib
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "conf" / "mailmfa-single-host.toml"
    cfg = cfgmod.parse(tomllib.loads(path.read_text()), str(path))
    assert (cfg.store.backend, cfg.password.backend) == ("sqlite", "pam")
    assert cfg.store.path == "/var/lib/mailmfa/mailmfa.db"
