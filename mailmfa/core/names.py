"""The key a token store files a user under, whatever variant of the name was typed.

Why: when tokens live in SQLite but another system checks the password, the two must agree
on who a name is. An LDAP bind finds `BOB`, `ｂｏｂ` (full-width) and `bo<soft hyphen>b` as
`bob` (uid's caseIgnoreMatch prepares both sides: RFC 4518), and sssd/AD are case-blind too;
an exact-match token lookup would find no token for those variants, and the password alone
would let them in. So the store keys every row by `user_key(name)`, built the way LDAP's
string preparation compares names: characters it maps to nothing dropped, other spaces and
the controls it maps to SPACE made a space, case folded, NFKC, insignificant spaces removed.
Two names LDAP (or a case-blind password system) takes for one user get one key, so a
variant always meets the user's token. A system that holds `Bob` and `bob` as two accounts
(pam_unix can) shares one token slot between them: it fails closed (the second cannot enrol).
"""

from __future__ import annotations

# RFC 4518 2.2, mapped to nothing: soft hyphens, joiners, variation selectors, the object
# replacement character, zero-width space, and every control / format character (Cc, Cf)
# except the whitespace controls mapped to SPACE below
_TO_SPACE = frozenset("\t\n\x0b\x0c\r\x85")
_TO_NOTHING = frozenset(
    ["\u00ad", "\u1806", "\u034f", "\u180b", "\u180c", "\u180d", "\ufffc", "\u200b"]
    + [chr(c) for c in range(0xFE00, 0xFE10)]
)


def _ascii_key(name: str) -> str:
    out = []
    for ch in name:
        if ch in _TO_SPACE:
            out.append(" ")
        elif ch < " " or ch == "\x7f":
            continue
        else:
            out.append(ch)
    return " ".join("".join(out).lower().split())


def user_key(name: str) -> str:
    """The canonical form of a login name (see module doc): `user_key("BOB") == "bob"`."""
    if name.isascii():  # nearly every login: no unicodedata import, no tables
        return _ascii_key(name)
    import unicodedata

    out = []
    for ch in name:
        if ch in _TO_SPACE:
            out.append(" ")
        elif ch in _TO_NOTHING or unicodedata.category(ch) in ("Cc", "Cf"):
            continue
        elif unicodedata.category(ch) in ("Zs", "Zl", "Zp"):
            out.append(" ")
        else:
            out.append(ch)
    folded = unicodedata.normalize("NFKC", "".join(out).casefold())
    # casefold after NFKC may produce characters NFKC changes again (and vice versa)
    folded = unicodedata.normalize("NFKC", folded.casefold())
    return " ".join(folded.split())
