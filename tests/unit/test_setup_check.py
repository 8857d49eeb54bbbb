"""check-setup's rules over doveconf / PAM / saslauthd text (pure; the real doveconf runs in
tests/integration/test_check_setup.py)."""

from mailmfa.admin.setup_check import dovecot_checks, parse_doveconf, saslauthd_checks, uses_mailmfa

MAILMFA_PAM = "auth required pam_exec.so expose_authtok quiet log=/var/log/mailmfa/pam.log /usr/bin/mailmfa-pam\n"
OTHER_PAM = "@include common-auth\n"

V23 = """# 2.3.19.1 (9b53102964): /etc/dovecot/dovecot.conf
auth_cache_size = 1 M
passdb {
  args = file=/etc/dovecot/mailmfa.lua blocking=yes{cache}
  driver = lua
}
passdb {
  args = {pamargs}mailmfa
  driver = pam
}
userdb {
  driver = passwd
}
"""

V24 = """# 2.4.1-4 (7d8c0e5759): /etc/dovecot/dovecot.conf
{cache}passdb lua {
  lua_file = /etc/dovecot/mailmfa.lua
  lua_settings {
    mailmfa_socket = /run/mailmfa/authd.sock
  }
  use_worker = yes
}
passdb pam {
  service_name = mailmfa
}
userdb passwd {
}
"""


def pam(files):
    return lambda service: files.get(service)


def verdicts(checks):
    return [(c.what, c.ok) for c in checks]


def test_parse_reads_version_cache_and_passdbs():
    dc = parse_doveconf(V23.replace("{cache}", "").replace("{pamargs}", ""))
    assert dc.version == (2, 3, 19) and dc.auth_cache
    assert [p["driver"] for p in dc.passdbs] == ["lua", "pam"]
    dc = parse_doveconf(V24.replace("{cache}", ""))
    assert dc.version == (2, 4, 1) and not dc.auth_cache  # 0 is the default, so doveconf -n omits it
    assert dc.passdbs[0] == {"name": "lua", "lua_file": "/etc/dovecot/mailmfa.lua", "use_worker": "yes",
                             "driver": "lua"}  # lua_settings skipped; 2.4's driver is the name
    assert parse_doveconf("# 2.3.19\nauth_cache_size = 0\n").auth_cache is False


def test_23_lua_needs_the_cache_off():
    """Even with a per-connection cache key: SMTP AUTH through Dovecot has no session."""
    files = pam({"mailmfa": MAILMFA_PAM})
    for key in ("", " cache_key=%u%{session}"):
        bad = dovecot_checks(parse_doveconf(V23.replace("{cache}", key).replace("{pamargs}", "")), files)
        assert verdicts(bad) == [("Dovecot passdb lua (mailmfa.lua)", False),
                                 ("Dovecot passdb pam (PAM service mailmfa)", True)]  # 2.3 pam: no cache key
        assert "auth_cache_size = 0" in bad[0].fix
    off = parse_doveconf(V23.replace("auth_cache_size = 1 M", "auth_cache_size = 0")
                         .replace("{cache}", "").replace("{pamargs}", ""))
    assert all(c.ok for c in dovecot_checks(off, files))


def test_23_pam_with_a_cache_key_is_refused():
    dc = parse_doveconf(V23.replace("{cache}", " cache_key=%u%{session}").replace("{pamargs}", "cache_key=%u "))
    checks = dovecot_checks(dc, pam({"mailmfa": MAILMFA_PAM}))
    assert ("Dovecot passdb pam (PAM service mailmfa)", False) in verdicts(checks)


def test_24_pam_needs_the_cache_off_and_lua_is_never_cached():
    files = pam({"mailmfa": MAILMFA_PAM})
    on = dovecot_checks(parse_doveconf(V24.replace("{cache}", "auth_cache_size = 1M\n")), files)
    assert verdicts(on) == [("Dovecot passdb lua (mailmfa.lua)", True),
                            ("Dovecot passdb pam (PAM service mailmfa)", False)]
    assert "auth_cache_size = 0" in on[1].fix
    off = dovecot_checks(parse_doveconf(V24.replace("{cache}", "")), files)
    assert all(c.ok for c in off)


def test_a_passdb_beside_mailmfas_is_a_bypass():
    """Dovecot asks the next passdb when one refuses: a PAM service that checks the system
    password (or any password-only passdb) beside mailmfa's lets the password alone in."""
    checks = dovecot_checks(parse_doveconf(V24.replace("{cache}", "auth_cache_size = 1M\n")),
                            pam({"mailmfa": OTHER_PAM}))
    assert verdicts(checks) == [("Dovecot passdb lua (mailmfa.lua)", True), ("Dovecot passdb pam (pam)", False)]
    assert "needs no code" in checks[1].detail and "remove this passdb" in checks[1].fix
    ldap = (V23.replace("1 M", "0").replace("{cache}", "").replace("{pamargs}", "")
            + "passdb {\n  args = /etc/dovecot/dovecot-ldap.conf.ext\n  driver = ldap\n}\n")
    checks = dovecot_checks(parse_doveconf(ldap), pam({"mailmfa": MAILMFA_PAM}))
    assert [c.ok for c in checks if "ldap" in c.what] == [False]
    # a deny list and a master-user passdb are left alone; without a mailmfa passdb, all are
    for extra in ("  deny = yes\n", "  master = yes\n", "  skip = unauthenticated\n"):
        text = ldap.replace("  driver = ldap\n", "  driver = ldap\n" + extra)
        assert all(c.ok for c in dovecot_checks(parse_doveconf(text), pam({"mailmfa": MAILMFA_PAM})))
    only_ldap = "# 2.3.19.1 (9b53102964): x\npassdb {\n  driver = ldap\n}\n"
    assert all(c.ok for c in dovecot_checks(parse_doveconf(only_ldap), pam({})))
    assert uses_mailmfa(MAILMFA_PAM) and not uses_mailmfa("# pam_exec.so /usr/bin/mailmfa-pam\n" + OTHER_PAM)


def test_saslauthd_cache_in_front_of_mailmfa():
    debian = 'START=yes\nMECHANISMS="pam"\nOPTIONS="-c -m /var/run/saslauthd"\n'
    files = pam({"smtp": MAILMFA_PAM})
    bad = saslauthd_checks(debian, files)
    assert [c.ok for c in bad] == [False] and "remove -c" in bad[0].fix
    assert saslauthd_checks(debian.replace("-c ", ""), files)[0].ok
    assert saslauthd_checks(debian, pam({"smtp": OTHER_PAM}))[0].ok  # smtp does not run mailmfa
    assert saslauthd_checks(debian.replace('"pam"', '"shadow"'), files)[0].ok
    assert not saslauthd_checks(debian.replace('"-c -m', '"-cr -m'), files)[0].ok  # combined flags


def test_24_driver_settings_of_a_passdb_named_otherwise():
    """doveconf prints `passdb mailmfa { driver = pam  passdb_pam { service_name = S } }`."""
    text = ("# 2.4.1-4 (7d8c0e5759): x\nauth_cache_size = 1M\npassdb mailmfa {\n  driver = pam\n"
            "  passdb_pam {\n    service_name = mmfa1\n  }\n}\nuserdb passwd {\n}\n")
    dc = parse_doveconf(text)
    assert dc.passdbs == [{"name": "mailmfa", "driver": "pam", "passdb_pam_service_name": "mmfa1"}]
    checks = dovecot_checks(dc, pam({"mmfa1": MAILMFA_PAM}))
    assert verdicts(checks) == [("Dovecot passdb pam (PAM service mmfa1)", False)]


def test_passdb_pam_asking_another_service_while_mailmfas_is_installed():
    """The 2.4 slip of a bare `service_name` in passdb pam: Dovecot asks PAM service "dovecot"
    (the system password alone) while /etc/pam.d/mailmfa sits unused."""
    text = "# 2.4.1-4 (7d8c0e5759): x\npassdb pam {\n}\nuserdb passwd {\n}\n"
    files = {"mailmfa": MAILMFA_PAM, "dovecot": OTHER_PAM}
    checks = dovecot_checks(parse_doveconf(text), pam(files))
    assert verdicts(checks) == [("Dovecot passdb pam (PAM service dovecot)", False)]
    assert "passdb_pam_service_name = mailmfa" in checks[0].fix
    # without a mailmfa service installed, a PAM passdb for something else is left alone
    assert all(c.ok for c in dovecot_checks(parse_doveconf(text), pam({"dovecot": OTHER_PAM})))
    # next to one that runs mailmfa, it is a second passdb that needs no code
    both = text + "passdb other {\n  driver = pam\n  passdb_pam {\n    service_name = mailmfa\n  }\n}\n"
    checks = dovecot_checks(parse_doveconf(both), pam(files))
    assert verdicts(checks) == [("Dovecot passdb pam (PAM service mailmfa)", True), ("Dovecot passdb pam (pam)", False)]


def test_no_userdb_beside_mailmfas_passdb_is_named():
    """The snippets leave the userdb to the admin: without one, every login mailmfa accepts
    fails afterwards ("User is missing UID"), silently for doveconf."""
    text = V24.replace("{cache}", "").replace("userdb passwd {\n}\n", "").replace(
        "passdb pam {\n  service_name = mailmfa\n}\n", "")
    dc = parse_doveconf(text)
    assert dc.userdbs == 0
    checks = dovecot_checks(dc, pam({}))
    assert ("Dovecot userdb", False) in verdicts(checks)
    assert parse_doveconf(V24.replace("{cache}", "")).userdbs == 1
    # no mailmfa passdb: not our business
    ldap_only = "# 2.3.19.1 (x): y\npassdb {\n  driver = ldap\n}\n"
    assert all(c.ok for c in dovecot_checks(parse_doveconf(ldap_only), pam({})))
