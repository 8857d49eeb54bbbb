"""mailmfa-web pieces without a browser: sessions (real SQLite file), CSRF, cookie flags,
config, command line. The flows themselves are tested in a real browser against real
servers in tests/integration/test_web.py."""

from __future__ import annotations

import base64
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("flask")
pytest.importorskip("cryptography")

from mailmfa.config import ConfigError, WebConfig, parse  # noqa: E402
from mailmfa.web import strings  # noqa: E402
from mailmfa.web.cli import parse_listen  # noqa: E402
from mailmfa.web.security import csrf_ok, new_csrf_token  # noqa: E402
from mailmfa.web.sessions import SessionStore, StateDirError  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "mailmfa" / "web" / "templates"


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def state(tmp_path):
    path = tmp_path / "state"
    path.mkdir(mode=0o700)
    return path


# --------------------------------------------------------------------------- CSRF

def test_csrf_compare():
    token = new_csrf_token()
    assert len(token) >= 40 and token != new_csrf_token()
    assert csrf_ok(token, token)
    assert not csrf_ok(token[:-1] + ("A" if token[-1] != "A" else "B"), token)
    assert not csrf_ok("", token) and not csrf_ok(None, token)
    assert not csrf_ok(token, None) and not csrf_ok("", "")
    assert not csrf_ok("x" * 200, "x" * 200)  # bounded
    assert not csrf_ok("é", token)


# --------------------------------------------------------------------------- sessions

def test_session_roundtrip_and_sealed_values(state):
    clock = Clock()
    store = SessionStore(str(state), idle=900, clock=clock)
    s = store.new()
    s["user"] = "alice"
    s.seal("secret", b"\x01" * 20)
    cookie = store.save(s)
    assert cookie and cookie.count(".") == 1
    again = store.load(cookie)
    assert again.get("user") == "alice" and again.unseal("secret") == b"\x01" * 20
    # the database holds a hash of the id, and the sealed value encrypted
    db = sqlite3.connect(state / "sessions.sqlite3")
    rows = db.execute("SELECT id, data FROM sessions").fetchall()
    sid = cookie.split(".")[0]
    assert rows[0][0] != sid and sid not in rows[0][1]
    assert base64.b64encode(b"\x01" * 20).decode() not in rows[0][1]
    assert (os.stat(state / "sessions.sqlite3").st_mode & 0o077) == 0


def test_session_wrong_key_or_tampered_cookie(state):
    store = SessionStore(str(state), idle=900, clock=Clock())
    s = store.new()
    s.seal("secret", b"hello")
    cookie = store.save(s)
    sid, key = cookie.split(".")
    other_key = base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
    forged = store.load(f"{sid}.{other_key}")
    assert forged.unseal("secret") is None  # the row is found, but nothing opens
    for bad in ("", "x", "a.b.c", "." * 3, sid, f"{sid}.!!!", "é.é", "a" * 500):
        assert store.load(bad).sid is None


def test_session_idle_and_absolute_expiry(state):
    clock = Clock()
    store = SessionStore(str(state), idle=600, max_age=3600, clock=clock)
    s = store.new()
    s["user"] = "bob"
    cookie = store.save(s)
    clock.now += 599
    assert store.load(cookie).get("user") == "bob"
    clock.now += 601
    assert store.load(cookie).get("user") is None
    # kept alive by use, but not beyond max_age
    s = store.new()
    s["user"] = "carol"
    cookie = store.save(s)
    start = clock.now
    for i in range(1, 9):
        clock.now = start + 500 * i
        live = store.load(cookie)
        if clock.now - start <= 3600:
            assert live.get("user") == "carol", i
            live["n"] = i
            store.save(live)
        else:
            assert live.get("user") is None, i


def test_rotate_keeps_sealed_values_and_kills_old_cookie(state):
    store = SessionStore(str(state), idle=900, clock=Clock())
    s = store.new()
    s["csrf"] = "t"
    s.seal("pw", b"secret-pw")
    old = store.save(s)
    s = store.load(old)
    s.rotate()
    new = store.save(s)
    assert new != old and new.split(".")[1] != old.split(".")[1]
    assert store.load(old).sid is None
    assert store.load(new).unseal("pw") == b"secret-pw"


def test_end_deletes_row(state):
    store = SessionStore(str(state), idle=900, clock=Clock())
    s = store.new()
    s["user"] = "dave"
    cookie = store.save(s)
    s = store.load(cookie)
    s.end()
    assert store.save(s) == ""
    assert store.count() == 0 and store.load(cookie).get("user") is None


def test_empty_session_writes_nothing(state):
    store = SessionStore(str(state), idle=900, clock=Clock())
    assert store.save(store.new()) is None
    assert store.count() == 0


def test_state_dir_open_to_others_is_refused(tmp_path):
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    with pytest.raises(StateDirError, match="chmod 0700"):
        SessionStore(str(loose), idle=900)
    made = tmp_path / "new" / "state"
    SessionStore(str(made), idle=900)
    assert (made.stat().st_mode & 0o777) == 0o700


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root and another user")
def test_root_is_refused_a_state_dir_of_another_user():
    """`mailmfa-web --check` run as root for a state_dir made for the web user must neither
    follow what that user put there nor leave a root-owned database the page cannot open:
    refused, naming the user to run as. A root-owned database left by an earlier version is
    a clear error (StateDirError, exit 78 in mailmfa-web), not a traceback."""
    import pwd
    import shutil
    import tempfile

    nobody = pwd.getpwnam("nobody")
    base = Path(tempfile.mkdtemp(prefix="mailmfa-test-web-"))  # pytest's tmp_path is closed to others
    try:
        base.chmod(0o755)
        state = base / "state"
        state.mkdir(mode=0o700)
        os.chown(state, nobody.pw_uid, nobody.pw_gid)
        with pytest.raises(StateDirError, match="belongs to nobody: run mailmfa-web as that user"):
            SessionStore(str(state), idle=900)  # as root: refused, nothing created
        assert not list(state.iterdir())
        check = ("import os, sys; os.setgid({g}); os.setuid({u}); sys.path.insert(0, {repo!r}); "
                 "from mailmfa.web.sessions import SessionStore, StateDirError\n"
                 "try:\n    SessionStore({state!r}, idle=900)\nexcept StateDirError as e:\n"
                 "    print(e); sys.exit(78)")
        argv = ["/usr/bin/python3", "-c",
                check.format(g=nobody.pw_gid, u=nobody.pw_uid, repo=str(REPO), state=str(state))]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stdout + proc.stderr  # the web user makes its own
        for f in state.iterdir():
            os.chown(f, 0, 0)  # what a root run of an earlier version left behind
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        assert proc.returncode == 78 and "belongs to root" in proc.stdout, proc.stdout + proc.stderr
    finally:
        shutil.rmtree(base, ignore_errors=True)


# --------------------------------------------------------------------------- config, strings

def test_web_config_section():
    base = {"ldap": {"user_base": "ou=people,dc=x"}}
    assert parse(base).web == WebConfig()
    cfg = parse({**base, "web": {"state_dir": "/srv/s", "secure_cookies": False, "proxy_hops": 1}})
    assert cfg.web.state_dir == "/srv/s" and not cfg.web.secure_cookies and cfg.web.proxy_hops == 1
    with pytest.raises(ConfigError, match=r"\[web\] secure_cookie"):
        parse({**base, "web": {"secure_cookie": True}})
    with pytest.raises(ConfigError, match=r"session_timeout"):
        parse({**base, "web": {"session_timeout": 5}})


def test_every_string_a_template_uses_exists():
    used = set()
    for path in TEMPLATES.glob("*.html"):
        used |= set(re.findall(r"\bt\.([a-z_]+)", path.read_text()))
    assert used and used <= set(strings.TEXT), used - set(strings.TEXT)


def test_fixed_labels_of_the_issue():
    labels = {"Confirm", "Enable", "Install a code generation app", "Continue", "Can not scan the barcode",
              "Pin", "Verify and save", "Start over", "Disable", "2-step verification"}
    assert labels <= set(strings.TEXT.values())
    assert {p.name for p in strings.PLATFORMS} >= {"Android", "Windows Phone"}
    assert all(a.url.startswith("https://") for p in strings.PLATFORMS for a in p.apps)


# --------------------------------------------------------------------------- app without LDAP

def _app(state, secure: bool):
    from mailmfa.web.app import create_app

    cfg = parse({"ldap": {"user_base": "ou=people,dc=x"},
                 "web": {"state_dir": str(state), "secure_cookies": secure}})

    def no_backend(_config):
        raise AssertionError("these requests must not reach the directory")

    return create_app(cfg, directory_factory=no_backend, admin_factory=no_backend)


def test_cookie_flags_secure(state):
    client = _app(state, secure=True).test_client()
    r = client.get("/login", base_url="https://mail.example.org")
    cookie = r.headers["Set-Cookie"]
    assert cookie.startswith("__Host-mailmfa=")
    for flag in ("Secure", "HttpOnly", "SameSite=Strict", "Path=/"):
        assert flag in cookie
    assert "Domain" not in cookie
    assert r.headers["Cache-Control"] == "no-store"


def test_cookie_flags_plain_http_dev(state):
    r = _app(state, secure=False).test_client().get("/login")
    cookie = r.headers["Set-Cookie"]
    assert cookie.startswith("mailmfa=") and "Secure" not in cookie and "HttpOnly" in cookie


def test_signed_out_pages_redirect_to_login(state):
    client = _app(state, secure=False).test_client()
    for path in ("/profile", "/2fa", "/2fa/manage", "/2fa/apps", "/2fa/setup", "/"):
        r = client.get(path)
        assert r.status_code == 303 and r.headers["Location"].endswith("/login"), path


def test_post_without_csrf_refused_before_any_backend(state):
    client = _app(state, secure=False).test_client()
    client.get("/login")  # a session with a token exists
    for data in ({"login": "a", "password": "b"}, {"login": "a", "password": "b", "csrf": "nope"}):
        r = client.post("/login", data=data)
        assert r.status_code == 403 and b"form has expired" in r.data


def test_directory_down_is_unavailable_never_a_sign_in(state):
    """A real ldap3 connection to a closed loopback port: 503 and no session user."""
    import socket

    from mailmfa.web.app import create_app

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg = parse({"ldap": {"user_base": "ou=people,dc=x", "uris": [f"ldap://127.0.0.1:{port}"], "timeout": 1},
                 "web": {"state_dir": str(state), "secure_cookies": False}})
    client = create_app(cfg).test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    r = client.post("/login", data={"login": "alice", "password": "pw", "csrf": token})
    assert r.status_code == 503 and b"temporarily unavailable" in r.data
    assert client.get("/profile").status_code == 303


def test_wsgi_entry_reads_mailmfa_config(tmp_path, state):
    conf = tmp_path / "m.toml"
    conf.write_text(f'[ldap]\nuser_base = "ou=p,dc=x"\n[web]\nstate_dir = "{state}"\n')
    r = subprocess.run([sys.executable, "-c", "from mailmfa.web.wsgi import application; print(application.name)"],
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(REPO), "MAILMFA_CONFIG": str(conf)})
    assert r.returncode == 0 and "mailmfa.web.app" in r.stdout, r.stderr


def test_oversized_body_refused(state):
    client = _app(state, secure=False).test_client()
    r = client.post("/login", data={"login": "x", "password": "y" * 20_000})
    assert r.status_code == 413


# --------------------------------------------------------------------------- command line

def test_parse_listen():
    assert parse_listen("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_listen("[::1]:9000") == ("::1", 9000)
    for bad in ("8080", "host:", ":80", "h:0", "h:70000", "h:x"):
        with pytest.raises(ValueError):
            parse_listen(bad)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailmfa.web.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})}, timeout=60)


def test_cli_help_check_and_exit_codes(tmp_path, state):
    r = _cli("--help")
    assert r.returncode == 0 and "--listen" in r.stdout and "exit status" in r.stdout
    assert _cli("--listen", "nonsense").returncode == 2
    conf = tmp_path / "m.toml"
    conf.write_text(f'[ldap]\nuser_base = "ou=p,dc=x"\n[web]\nstate_dir = "{state}"\n')
    r = _cli("--check", "--config", str(conf))
    assert r.returncode == 0, r.stderr
    loose = tmp_path / "loose"
    loose.mkdir()
    loose.chmod(0o755)
    conf.write_text(f'[ldap]\nuser_base = "ou=p,dc=x"\n[web]\nstate_dir = "{loose}"\n')
    r = _cli("--check", "--config", str(conf))
    assert r.returncode == 78 and "state_dir" in r.stderr
    r = _cli("--check", "--config", str(tmp_path / "missing.toml"))
    assert r.returncode == 78
    # the service account's secret is read at start: one the page cannot read is named now
    conf.write_text(f'[ldap]\nuser_base = "ou=p,dc=x"\nbind_dn = "cn=s,dc=x"\n'
                    f'bind_password_file = "{tmp_path}/no.secret"\n[web]\nstate_dir = "{state}"\n')
    r = _cli("--check", "--config", str(conf))
    assert r.returncode == 78 and f"cannot read {tmp_path}/no.secret" in r.stderr, r.stderr


# --------------------------------------------------------------------------- display name by backend

class _FakeLdap:
    """Stands in for LdapDirectory's search and lookup (the real read is tested in test_web.py)."""

    def __init__(self, attrs: dict[str, list[bytes]]) -> None:
        self.attrs = attrs
        self.searched: list[str] = []

    def _search(self, base, flt, scope, attrs, size):
        self.searched.append(base)
        return [{"dn": base, "attrs": self.attrs}]

    def lookup(self, user):
        from mailmfa.core.types import UserRecord

        return UserRecord(user, f"uid={user},ou=people,dc=x", None)


def test_display_name_pam_is_the_gecos_full_name(tmp_path):
    import pwd

    from mailmfa.web.app import display_name, system_full_name

    cfg = parse({"store": {"path": str(tmp_path / "m.db")}, "password": {"pam_service": "x"}})
    assert (cfg.store.backend, cfg.password.backend) == ("sqlite", "pam")
    root = pwd.getpwnam("root").pw_gecos.split(",")[0].strip()
    assert system_full_name("root") == root
    assert display_name(cfg, None, "root", "root") == root  # no directory read at all
    assert display_name(cfg, None, "no-such-user-mmfa", "no-such-user-mmfa") == ""
    assert system_full_name("bad\x00name") == ""


def test_display_name_ldap_reads_the_entry():
    from mailmfa.web.app import display_name

    cfg = parse({"ldap": {"user_base": "ou=people,dc=x"}})
    ldap = _FakeLdap({"cn": [b"Alice Example"], "displayName": [b"Alice E."]})
    assert display_name(cfg, ldap, "alice", "uid=alice,ou=people,dc=x") == "Alice E."
    assert display_name(cfg, _FakeLdap({"cn": [b"Bob"]}), "bob", "uid=bob,ou=people,dc=x") == "Bob"
    assert display_name(cfg, _FakeLdap({}), "carol", "uid=carol,ou=people,dc=x") == ""


def test_display_name_sqlite_tokens_ldap_passwords_finds_the_entry(tmp_path):
    from mailmfa.backends.combined import CombinedDirectory, LdapPassword
    from mailmfa.web.app import display_name

    cfg = parse({"ldap": {"user_base": "ou=people,dc=x"},
                 "store": {"backend": "sqlite", "path": str(tmp_path / "m.db")}})
    ldap = _FakeLdap({"cn": [b"Dave Example"]})
    directory = CombinedDirectory(object(), LdapPassword(ldap), absent_is_tokenless=True)
    # the token state's dn is the login name here: the entry is found by lookup
    assert display_name(cfg, directory, "dave", "dave") == "Dave Example"
    assert ldap.searched == ["uid=dave,ou=people,dc=x"]


def test_missing_package_is_named_at_start(tmp_path):
    """Without site-packages (-S) Flask cannot be imported: mailmfa-web names the Debian
    packages and exits 78 before reading any config, instead of a traceback."""
    script = (f"import sys; sys.path.insert(0, {str(REPO)!r}); "
              "from mailmfa.web.cli import main; sys.exit(main(['--check']))")
    proc = subprocess.run(["/usr/bin/python3", "-I", "-S", "-c", script], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 78, proc.stderr
    assert "apt install python3-flask python3-cryptography python3-segno" in proc.stderr
    assert "Traceback" not in proc.stderr
