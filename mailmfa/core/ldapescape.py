"""RFC 4515 filter escaping: a username must never widen a search."""

from __future__ import annotations

_FILTER_ESCAPES = {"\\": r"\5c", "*": r"\2a", "(": r"\28", ")": r"\29", "\0": r"\00"}


def escape_filter_value(value: str) -> str:
    """Escape the characters RFC 4515 reserves in an assertion value."""
    return "".join(_FILTER_ESCAPES.get(c, c) for c in value)


def fill_filter(template: str, user: str) -> str:
    """Put the escaped `user` into every `{user}` of `template` (no other braces are special)."""
    return template.replace("{user}", escape_filter_value(user))
