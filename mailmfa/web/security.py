"""The web page's security pieces that do not depend on Flask: CSRF tokens, headers.

Kept apart so they are unit-tested directly and so a reader sees the whole policy at once.
"""

from __future__ import annotations

import hmac
import secrets

CSRF_FIELD = "csrf"

# No inline script or style anywhere (the page has no JavaScript at all); the QR code is
# inline SVG markup with presentation attributes only, which style-src does not govern.
CSP = (
    "default-src 'self'; script-src 'none'; style-src 'self'; img-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


def new_csrf_token() -> str:
    """A per-session token for every form (32 random bytes)."""
    return secrets.token_urlsafe(32)


def csrf_ok(sent: str | None, expected: str | None) -> bool:
    """True only when both are present and equal; compared in constant time."""
    if not sent or not expected or len(sent) > 128:
        return False
    return hmac.compare_digest(sent.encode("ascii", "replace"), expected.encode("ascii", "replace"))
