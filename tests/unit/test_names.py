"""user_key(): the canonical login name a token store files rows under."""

from __future__ import annotations

import pytest

from mailmfa.core.names import user_key


@pytest.mark.parametrize("typed", [
    "bob", "BOB", "Bob", "\uff42\uff4f\uff42",  # full-width
    "bo\u00adb", "b\u200bob", "bob\ufe0f",        # mapped to nothing by LDAP's preparation
    " bob ", "bob\t",                           # insignificant spaces
])
def test_variants_of_one_name_share_a_key(typed):
    assert user_key(typed) == "bob"


def test_distinct_names_stay_distinct():
    names = ["bob", "bobby", "bo b", "b.ob", "b\u00f6b", "alice@example.org", "alice@example.com"]
    assert len({user_key(n) for n in names}) == len(names)


def test_inner_spaces_collapse_and_unicode_folds():
    assert user_key("Jean  Luc") == user_key("jean luc") == "jean luc"
    assert user_key("STRASSE") == user_key("stra\u00dfe") == "strasse"   # German sharp s folds to ss
    assert user_key("\u00c5sa") == user_key("A\u030asa") == "\u00e5sa"  # composed and decomposed


def test_key_is_stable():
    for name in ["BOB", "\uff42\uff4f\uff42", "Stra\u00dfe", "A\u030asa", "x\u00ady"]:
        assert user_key(user_key(name)) == user_key(name)
