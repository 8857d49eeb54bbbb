"""mailmfa.core.record: the frozen records that replace dataclasses on the login path
(issue #7). Each behaviour the code relies on, including that repr() never shows the
TOTP secret or the password+code, and that the login path no longer imports dataclasses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mailmfa import config as cfgmod
from mailmfa.core.record import FrozenInstanceError, field, fields, record, replace
from mailmfa.core.types import Outcome, Request, Token, TotpParams, UserRecord, Verdict

ROOT = Path(__file__).resolve().parents[2]


@record
class Point:
    x: int
    y: int = 0
    label: str = field(default="p")
    hidden: str = field(default="s3cret", repr=False)
    tags: tuple = field(default_factory=tuple)


@record
class Box:
    items: list = field(default_factory=list)


def test_fields_in_annotation_order_for_class_and_instance():
    assert fields(Point) == ("x", "y", "label", "hidden", "tags")
    assert fields(Point(1)) == fields(Point)
    assert fields(Token) == ("dn", "secret", "params", "last_step", "drift", "failure_count", "last_failure")


def test_fields_of_a_plain_class_is_a_type_error():
    with pytest.raises(TypeError, match="not a record"):
        fields(object)


def test_defaults_and_positional_and_keyword_construction():
    p = Point(1)
    assert (p.x, p.y, p.label, p.hidden, p.tags) == (1, 0, "p", "s3cret", ())
    q = Point(1, 2, label="q", tags=("a",))
    assert (q.x, q.y, q.label, q.tags) == (1, 2, "q", ("a",))
    assert Point(x=5, y=6) == Point(5, 6)
    full = Point(1, 2, "l", "h", ("t",))  # every field positionally (the fast path)
    assert (full.x, full.y, full.label, full.hidden, full.tags) == (1, 2, "l", "h", ("t",))


def test_class_attribute_is_the_default_and_field_without_default_is_removed():
    assert Point.y == 0 and Point.label == "p"
    assert "secret" not in Token.__dict__  # field(repr=False) without a default
    assert "secret" not in Request.__dict__


def test_default_factory_builds_a_new_value_per_instance():
    a, b = Box(), Box()
    assert a.items == [] and a.items is not b.items


def test_mutable_default_is_refused_at_class_creation():
    with pytest.raises(ValueError, match="default_factory"):
        @record
        class Bad:
            items: list = []  # noqa: RUF012


def test_default_and_default_factory_together_are_refused():
    with pytest.raises(ValueError):
        field(default=1, default_factory=int)


def test_required_field_after_defaulted_one_is_a_type_error_at_class_creation():
    with pytest.raises(TypeError, match="non-default argument 'b' follows default argument"):
        @record
        class Bad:
            a: int = 1
            b: int

    with pytest.raises(TypeError, match="non-default argument 'b' follows default argument"):
        @record
        class BadFactory:
            a: tuple = field(default_factory=tuple)
            b: int


def test_missing_arguments_are_named():
    with pytest.raises(TypeError, match=r"Point\(\) missing 1 required argument: 'x'"):
        Point()
    with pytest.raises(TypeError, match=r"Token\(\) missing 2 required arguments: 'secret' and 'params'"):
        Token("dn")
    with pytest.raises(TypeError, match="missing 3 required arguments: 'dn', 'secret' and 'params'"):
        Token()


def test_unexpected_and_duplicate_and_too_many_arguments():
    with pytest.raises(TypeError, match="unexpected keyword argument 'z'"):
        Point(1, z=2)
    with pytest.raises(TypeError, match="multiple values for argument 'x'"):
        Point(1, x=2)
    with pytest.raises(TypeError, match=r"takes 5 positional arguments but 6 were given"):
        Point(1, 2, "l", "h", (), "extra")


def test_assignment_and_deletion_raise_frozen_instance_error():
    tok = Token("dn", b"SECRET", TotpParams())
    with pytest.raises(FrozenInstanceError):
        tok.drift = 5
    with pytest.raises(FrozenInstanceError):
        tok.new_attribute = 1
    with pytest.raises(FrozenInstanceError):
        del tok.dn
    assert issubclass(FrozenInstanceError, AttributeError)
    with pytest.raises(AttributeError):
        cfgmod.parse({}).store.backend = "ldap"
    assert tok.drift == 0 and tok.dn == "dn"


def test_equality_same_class_same_values():
    assert Point(1, 2) == Point(1, 2)
    assert Point(1, 2) != Point(1, 3)
    assert Point(1, hidden="a") != Point(1, hidden="b")  # repr=False fields still compare
    assert Point(1) != (1, 0, "p", "s3cret", ())

    @record
    class Other:
        x: int
        y: int = 0
        label: str = "p"
        hidden: str = "s3cret"
        tags: tuple = ()

    assert Point(1) != Other(1)
    assert TotpParams() == TotpParams(6, 30, "SHA1", 1)


def test_hash_is_consistent_with_equality():
    assert hash(Point(1, 2)) == hash(Point(1, 2))
    assert len({Point(1, 2), Point(1, 2), Point(2, 1)}) == 2
    assert hash(cfgmod.parse({})) == hash(cfgmod.parse({}))
    tok = Token("dn", b"SECRET", TotpParams())
    assert {tok: 1}[Token("dn", b"SECRET", TotpParams())] == 1


def test_unhashable_value_makes_hash_fail_like_a_tuple():
    with pytest.raises(TypeError):
        hash(Box())


def test_repr_shows_fields_but_hides_repr_false_ones():
    assert repr(Point(1, 2)) == "Point(x=1, y=2, label='p', tags=())"
    assert "s3cret" not in repr(Point(1))


def test_repr_never_shows_the_totp_secret():
    secret = b"TOTPSECRET-12345678"
    tok = Token("uid=a,dc=x", secret, TotpParams(), last_step=7)
    text = repr(tok)
    assert text.startswith("Token(dn='uid=a,dc=x', params=TotpParams(")
    assert "last_step=7" in text
    assert "secret" not in text and "TOTPSECRET" not in text and repr(secret) not in text
    # nested in a UserRecord (what the adapters pass around) it stays hidden
    nested = repr(UserRecord("a", "uid=a,dc=x", tok))
    assert "TOTPSECRET" not in nested and "token=Token(" in nested
    assert "TOTPSECRET" not in str(tok)


def test_repr_never_shows_the_password_and_code():
    req = Request("alice", "hunter2-123456", service="imap", rip="192.0.2.1")
    text = repr(req)
    assert text == "Request(user='alice', service='imap', rip='192.0.2.1')"
    assert "hunter2" not in text and "123456" not in text and "hunter2" not in str(req)
    assert req.secret == "hunter2-123456"


def test_replace_returns_a_new_record_with_changes():
    tok = Token("dn", b"SECRET", TotpParams())
    moved = replace(tok, last_step=42, failure_count=3)
    assert (moved.last_step, moved.failure_count, moved.secret, moved.dn) == (42, 3, b"SECRET", "dn")
    assert (tok.last_step, tok.failure_count) == (None, 0)
    assert type(moved) is Token
    assert replace(tok) == tok and replace(tok) is not tok
    rec = replace(UserRecord("a", "dn", tok), token=None)
    assert rec == UserRecord("a", "dn")


def test_replace_rejects_unknown_fields_and_non_records():
    with pytest.raises(TypeError, match="unexpected keyword argument 'nope'"):
        replace(Point(1), nope=1)
    with pytest.raises(TypeError, match="not a record"):
        replace(object(), x=1)


def test_match_args_allow_positional_patterns():
    out = Outcome(Verdict.ACCEPT, "ok", "alice")
    match out:
        case Outcome(Verdict.ACCEPT, reason, user):
            assert (reason, user) == ("ok", "alice")
        case _:
            pytest.fail("no match")


def test_class_methods_and_own_dunder_are_kept():
    @record
    class WithMethods:
        a: int

        def double(self) -> int:
            return self.a * 2

        def __repr__(self) -> str:
            return "custom"

    assert WithMethods(3).double() == 6 and repr(WithMethods(3)) == "custom"
    cfg = cfgmod.parse({})
    assert cfg.read_bind_password() == ""


def test_overriding_setattr_is_refused():
    with pytest.raises(TypeError, match="__setattr__"):
        @record
        class Bad:
            a: int

            def __setattr__(self, name, value):
                pass


def test_config_attributes_keys_come_from_fields():
    cfg = cfgmod.parse({"ldap": {"user_base": "ou=p", "attributes": {"secret": "mySecret"}}})
    assert cfg.ldap.attributes.secret == "mySecret"
    assert cfg.ldap.attributes.token == "oathTOTPToken"
    with pytest.raises(cfgmod.ConfigError, match=r"unknown key \[ldap.attributes\] nope \(known: token, secret,"):
        cfgmod.parse({"ldap": {"user_base": "ou=p", "attributes": {"nope": "x"}}})


def test_login_modules_do_not_import_dataclasses():
    """The point of the module: what the per-login programs import (config, core types,
    the orchestrator, the adapters' module level) no longer pulls in dataclasses/inspect."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "import mailmfa.config, mailmfa.core.types, mailmfa.core.policy, mailmfa.service, "
            "mailmfa.backends.ldap, mailmfa.backends.sqlite, mailmfa.entry.checkpassword; "
            "print(' '.join(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-IS", "-c", code, str(ROOT)], capture_output=True, text=True,
                         check=True).stdout.split()
    assert "mailmfa.core.record" in out
    assert not {"dataclasses", "inspect"} & set(out)
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import mailmfa.core.record; "
            "print(' '.join(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-IS", "-c", code, str(ROOT)], capture_output=True, text=True,
                         check=True).stdout.split()
    assert not {"dataclasses", "inspect", "typing", "re"} & set(out)
