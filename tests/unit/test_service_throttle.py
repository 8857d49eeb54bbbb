"""authenticate()'s throttle and reuse rules with an in-memory directory (pure logic; the
same rules against real slapd are in tests/integration/test_throttle_faults.py)."""

from __future__ import annotations

import pytest

from mailmfa.backends.ports import BackendUnavailable
from mailmfa.backends.state import ReuseStore
from mailmfa.config import parse
from mailmfa.core.record import replace
from mailmfa.core.totp import hotp
from mailmfa.core.types import Request, Token, TotpParams, UserRecord, Verdict
from mailmfa.service import authenticate, userdb_lookup

SECRET = b"0123456789abcdefghij"
T0 = 1_800_000_010.0  # 10 s into a step


class MemDirectory:
    """The Directory port over a dict, with the LDAP adapter's compare-and-swap rules."""

    def __init__(self, password="pw"):
        self.password = password
        self.token = Token("uid=a", SECRET, TotpParams())
        self.binds = 0
        self.down = False

    def lookup(self, user):
        if self.down:
            raise BackendUnavailable()
        return UserRecord(user, "uid=a", self.token) if user == "alice" else None

    def verify_password(self, record, password):
        self.binds += 1
        return password == self.password

    def record_success(self, record, step, now):
        seen = record.token
        if (seen.last_step, seen.failure_count) != (self.token.last_step, self.token.failure_count):
            return False
        self.token = replace(self.token, last_step=step, failure_count=0, last_failure=None)
        return True

    def record_failure(self, record, now):
        if self.down:
            raise BackendUnavailable()
        self.token = replace(
            self.token, failure_count=self.token.failure_count + 1, last_failure=now)

    def close(self):
        pass


def cfg(reuse=0, state_file="/nonexistent/state.db"):
    return parse({"ldap": {"user_base": "ou=people"},
                  "policy": {"reuse_seconds": reuse, "state_file": state_file}})


def code(now, back=0):
    return hotp(SECRET, int(now // 30) - back)


def wrong(now):
    good = {code(now, k) for k in range(-1, 2881)}
    return next(f"{n:06d}" for n in range(1_000_000) if f"{n:06d}" not in good)


def login(d, secret, now, config=None, rip="192.0.2.1", reuse=None, service="imap", **kw):
    return authenticate(Request("alice", secret, service, rip), d, config or cfg(), now, reuse, **kw)


def test_five_free_tries_then_throttled_without_checking_the_code():
    d = MemDirectory()
    bad = "pw" + wrong(T0)
    for i in range(5):
        assert login(d, bad, T0 + i).reason == "bad_code"
    assert d.token.failure_count == 5
    out = login(d, "pw" + code(T0 + 5), T0 + 5)  # the right code: refused all the same
    assert (out.verdict, out.reason) == (Verdict.REJECT, "throttled")
    assert d.token.last_step is None and d.token.failure_count == 5  # not consumed, not counted
    out = login(d, "pw" + wrong(T0 + 6), T0 + 6)
    assert out.reason == "throttled"  # a wrong code answers exactly the same


def test_typist_waits_at_most_a_minute_then_success_resets():
    d = MemDirectory()
    for i in range(5):
        login(d, "pw" + wrong(T0), T0 + i)
    later = T0 + 4 + 30
    out = login(d, "pw" + code(later), later)
    assert out.verdict is Verdict.ACCEPT and d.token.failure_count == 0 and d.token.last_failure is None


def test_wrong_password_never_counts_and_is_named_first():
    d = MemDirectory()
    for i in range(20):
        assert login(d, "nope" + wrong(T0), T0 + i).reason == "bad_password"
    assert d.token.failure_count == 0
    for i in range(5):
        login(d, "pw" + wrong(T0), T0 + i)
    assert login(d, "nope" + code(T0), T0 + 5).reason == "bad_password"  # throttled or not
    assert d.binds > 20  # the password was checked every time


def test_replays_and_stale_stored_codes_do_not_count():
    d = MemDirectory()
    assert login(d, "pw" + code(T0), T0).reason == "ok"
    for i in range(10):
        assert login(d, "pw" + code(T0), T0 + 1 + i).reason == "replay"
    later = T0 + 3600  # a client reconnecting an hour later with its stored string
    for i in range(10):
        assert login(d, "pw" + code(T0), later + i).reason == "bad_code"
    assert d.token.failure_count == 0
    assert login(d, "pw" + code(later + 20), later + 20).reason == "ok"


def test_success_loses_to_a_failure_counted_since_lookup():
    d = MemDirectory()
    record = d.lookup("alice")
    d.record_failure(record, T0)  # another server counted a failure meanwhile
    assert not d.record_success(record, int(T0 // 30), T0)


def test_count_failure_outage_is_temporary_not_free():
    d = MemDirectory()
    rec_down = d.record_failure

    def boom(record, now):
        raise BackendUnavailable()

    d.record_failure = boom
    out = login(d, "pw" + wrong(T0), T0)
    assert out.verdict is Verdict.TEMPFAIL
    d.record_failure = rec_down


def test_reuse_same_ip_only_within_window(tmp_path):
    config = cfg(60, str(tmp_path / "state.db"))
    d = MemDirectory()
    s = "pw" + code(T0)
    assert login(d, s, T0, config).reason == "ok"
    assert login(d, s, T0 + 2, config).reason == "reused"
    assert login(d, s, T0 + 59, config).reason == "reused"
    assert login(d, s, T0 + 3, config, rip="192.0.2.99").reason == "replay"
    assert login(d, s, T0 + 61, config).reason in ("replay", "bad_code")
    d.password = "changed"
    assert login(d, s, T0 + 5, config).reason == "bad_password"  # the password still counts


def test_reuse_off_is_strict(tmp_path):
    d = MemDirectory()
    s = "pw" + code(T0)
    assert login(d, s, T0, cfg(0, str(tmp_path / "state.db"))).reason == "ok"
    assert login(d, s, T0 + 1, cfg(0, str(tmp_path / "state.db"))).reason == "replay"
    assert not (tmp_path / "state.db").exists()


def test_unusable_state_file_is_strict_not_an_error(tmp_path, capsys):
    d = MemDirectory()
    config = cfg(60, str(tmp_path / "missing-dir" / "state.db"))
    s = "pw" + code(T0)
    assert login(d, s, T0, config).verdict is Verdict.ACCEPT
    assert login(d, s, T0 + 1, config).reason == "replay"
    assert "event=state_unavailable" in capsys.readouterr().err


def test_throttled_user_gets_no_reuse(tmp_path):
    config = cfg(60, str(tmp_path / "state.db"))
    d = MemDirectory()
    s = "pw" + code(T0)
    assert login(d, s, T0, config).reason == "ok"
    for _ in range(5):
        login(d, "pw" + wrong(T0), T0 + 1, config, rip="203.0.113.5")
    assert login(d, s, T0 + 2, config).reason == "throttled"


@pytest.mark.parametrize("user", ["", "a" * 300, "al\nice", "al\x00ice"])
def test_bad_usernames_refused_before_any_lookup(user):
    d = MemDirectory()
    d.down = True  # would raise if asked
    out = authenticate(Request(user, "pw123456"), d, cfg(), T0)
    assert (out.verdict, out.reason) == (Verdict.REJECT, "bad_input")


def test_passing_a_store_uses_it(tmp_path):
    store = ReuseStore(str(tmp_path / "daemon.db"), 30)
    d = MemDirectory()
    s = "pw" + code(T0)
    assert login(d, s, T0, cfg(0), reuse=store).reason == "ok"
    assert login(d, s, T0 + 1, cfg(0), reuse=store).reason == "reused"


def _store(kind, tmp_path, seconds):
    from mailmfa.backends.state import MemoryReuseStore

    return ReuseStore(str(tmp_path / "s.db"), seconds) if kind == "sqlite" else MemoryReuseStore(seconds)


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_reenrolled_token_does_not_accept_the_old_password_and_code(tmp_path, kind):
    """The security audit's case: an administrator re-enrols alice (new secret); the old
    token's password+code is refused from the same IP at once, not reused for up to an hour."""
    store = _store(kind, tmp_path, 3600)
    d = MemDirectory()
    old = "pw" + code(T0)
    assert login(d, old, T0, reuse=store).reason == "ok"
    assert login(d, old, T0 + 1, reuse=store).reason == "reused"  # the window works
    d.token = Token("uid=a", b"NEW-SECRET-0123456789", TotpParams())
    for dt in (5, 300, 1800):
        out = login(d, old, T0 + dt, reuse=store)
        assert out.verdict is Verdict.REJECT and out.reason == "bad_code", (dt, out)


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_lowered_reuse_seconds_applies_to_entries_already_stored(tmp_path, kind):
    store = _store(kind, tmp_path, 3600)
    d = MemDirectory()
    s = "pw" + code(T0)
    assert login(d, s, T0, reuse=store).reason == "ok"
    assert login(d, s, T0 + 1800, reuse=store).reason == "reused"
    store.seconds = 60  # what mailmfa-authd's reload does
    assert login(d, s, T0 + 1801, reuse=store).reason in ("replay", "bad_code")
    assert login(d, s, T0 + 30, reuse=store).reason == "reused"


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_reuse_spans_the_mail_services(tmp_path, kind):
    """IMAP login, then SMTP AUTH to send, with the one saved password+code."""
    store = _store(kind, tmp_path, 60)
    d = MemDirectory()
    s = "pw" + code(T0)
    assert login(d, s, T0, reuse=store, service="imap").reason == "ok"
    assert login(d, s, T0 + 1, reuse=store, service="smtp").reason == "reused"
    assert login(d, s, T0 + 2, reuse=store, service="pop3").reason == "reused"


def test_allow_reuse_false_neither_reads_nor_writes_the_window(tmp_path):
    """The web sign-in's mode: strict replay refusal, and no entry a mail login could use."""
    state = tmp_path / "state.db"
    config = cfg(60, str(state))
    d = MemDirectory()
    s = "pw" + code(T0)
    assert login(d, s, T0, config, service="web", allow_reuse=False).reason == "ok"
    assert login(d, s, T0 + 1, config, service="web", allow_reuse=False).reason == "replay"
    assert not state.exists()  # the success wrote no entry
    assert login(d, s, T0 + 2, config, service="web").reason == "replay"
    d2 = MemDirectory()
    assert login(d2, s, T0, config, service="web").reason == "ok"  # an entry for "web" exists now
    assert login(d2, s, T0 + 1, config, service="web", allow_reuse=False).reason == "replay"


@pytest.mark.parametrize("user", [" alice", "alice ", "al  ice", "alice\t"])
def test_names_ldap_would_match_with_spaces_ignored_are_refused(user):
    d = MemDirectory()
    d.down = True
    out = authenticate(Request(user, "pw123456"), d, cfg(), T0)
    assert (out.verdict, out.reason) == (Verdict.REJECT, "bad_input")


@pytest.mark.parametrize("name", ["al\0ice", "alice\n", "al\x7fice", " alice", "alice ", "a  lice", "", "a" * 257])
def test_hostile_names_refused_before_the_directory_is_asked(name):
    d = MemDirectory()
    d.down = True  # any directory call would raise: the refusal must come first
    out = authenticate(Request(name, "pw" + code(T0), "imap", "192.0.2.1"), d, cfg(), T0)
    assert out.verdict is Verdict.REJECT and out.reason == "bad_input"
    assert d.binds == 0


@pytest.mark.parametrize(("reuse", "overlay", "expected"), [(60, False, True), (0, False, False), (60, True, False)])
def test_reuse_enabled_is_the_one_rule_for_every_face(reuse, overlay, expected):
    """authenticate() (opening the state file) and mailmfa-authd (its memory window) both ask
    reuse_enabled(): a window only with reuse_seconds > 0 and never behind the otp overlay."""
    from mailmfa.service import reuse_enabled

    config = parse({"ldap": {"user_base": "ou=people", "otp_overlay": overlay},
                    "policy": {"reuse_seconds": reuse}})
    assert reuse_enabled(config) is expected


def test_userdb_lookup_refuses_the_names_a_login_refuses():
    """LDAP equality ignores leading, trailing and doubled spaces: " alice" must not exist
    for a userdb (another home directory) when it cannot log in."""
    class Spaced(MemDirectory):
        def lookup(self, user):
            if self.down:
                raise BackendUnavailable()
            return UserRecord(user, "uid=a", self.token) if " ".join(user.split()) == "alice" else None

    d = Spaced()
    assert userdb_lookup(d, "alice").verdict is Verdict.ACCEPT
    for name in (" alice", "alice ", "al  ice", "al\tice", "", "a" * 300):
        out = userdb_lookup(d, name)
        assert out.verdict is Verdict.REJECT and out.reason == "unknown_user", name
    d.down = True
    assert userdb_lookup(d, "alice").verdict is Verdict.TEMPFAIL
