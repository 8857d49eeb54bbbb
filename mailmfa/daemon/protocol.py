"""The mailmfa-authd wire protocol, version 1 (stdlib only: the per-login clients import it).

One request per line over a UNIX stream socket; a connection may carry several requests,
answered in order. Fields are separated by one space and percent-encoded (every byte
outside ``A-Z a-z 0-9 . _ ~ @ + -`` as ``%XX``), so a field never contains a space,
a newline or a NUL; an empty field is empty.

    MFA1 AUTH <user> <password+code> <service> <remote-ip>\\n
    MFA1 LOOKUP <user>\\n          (userdb: does the user exist?)
    MFA1 PING\\n

Answers, one line each:

    OK <reason>\\n | FAIL <reason>\\n | TEMPFAIL <reason>\\n

`reason` is one of the log reasons (ok, bad_code, ldap_unavailable, ...): ``[a-z0-9_]+``.
A field whose bytes are not UTF-8 is answered ``FAIL bad_input`` (as a checkpassword request
would be). A request line longer than MAX_LINE bytes, or one that does not parse, is answered
``TEMPFAIL bad_request`` and the connection is closed: a malformed request is a client bug
or a version mismatch, never a wrong password (mail clients drop saved passwords on those).
"""

VERSION = "MFA1"
MAX_LINE = 8192  # bytes, newline included; a real request is well under 2 KiB
ANSWERS = ("OK", "FAIL", "TEMPFAIL")

_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~@+-")
_HEX = frozenset(b"0123456789abcdefABCDEF")


def encode_field(value: str) -> str:
    """Percent-encode the UTF-8 bytes of `value` (see module doc for the safe set)."""
    raw = value.encode("utf-8", "surrogateescape")
    return "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in raw)


NOT_UTF8 = "\x00not-utf-8"  # a well-encoded field whose bytes are not UTF-8 (never a real value:
# NUL is refused as input everywhere); the daemon answers it FAIL bad_input, as the other paths do


def decode_field(field: bytes) -> str | None:
    """The text of one field; None when the encoding is invalid (a byte outside the safe set,
    a bad %XX); NOT_UTF8 when it decodes to bytes that are not UTF-8."""
    out = bytearray()
    i = 0
    n = len(field)
    while i < n:
        b = field[i]
        if b == 0x25:  # %
            if i + 2 >= n:
                return None
            hi, lo = field[i + 1], field[i + 2]
            if hi not in _HEX or lo not in _HEX:
                return None
            out.append(int(field[i + 1:i + 3], 16))
            i += 3
        elif b in _SAFE:
            out.append(b)
            i += 1
        else:
            return None
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        return NOT_UTF8


def auth_request(user: str, secret: str, service: str = "", rip: str = "") -> bytes:
    """The AUTH request line for one login."""
    fields = (encode_field(f) for f in (user, secret, service, rip))
    return f"{VERSION} AUTH {' '.join(fields)}\n".encode("ascii")


def lookup_request(user: str) -> bytes:
    """The LOOKUP request line (userdb: does `user` exist?)."""
    return f"{VERSION} LOOKUP {encode_field(user)}\n".encode("ascii")


def parse_request(line: bytes) -> tuple[str, list[str]] | None:
    """(command, decoded arguments) from one request line, or None when malformed."""
    if line.endswith(b"\n"):
        line = line[:-1]
    if line.endswith(b"\r"):
        line = line[:-1]
    parts = line.split(b" ")
    if len(parts) < 2 or parts[0] != VERSION.encode():
        return None
    command = parts[1].decode("ascii", "replace")
    want = {"AUTH": 4, "LOOKUP": 1, "PING": 0}.get(command)
    if want is None or len(parts) - 2 != want:
        return None
    args = []
    for raw in parts[2:]:
        text = decode_field(raw)
        if text is None:
            return None
        args.append(text)
    return command, args


def answer(verdict: str, reason: str) -> bytes:
    """One answer line; `verdict` is OK, FAIL or TEMPFAIL."""
    assert verdict in ANSWERS
    safe = "".join(c for c in reason if c.isascii() and (c.isalnum() or c == "_")) or "unknown"
    return f"{verdict} {safe}\n".encode("ascii")


def parse_answer(line: bytes) -> tuple[str, str] | None:
    """(verdict, reason) from an answer line, or None when it is not one."""
    if not line.endswith(b"\n"):
        return None
    parts = line[:-1].decode("ascii", "replace").split(" ")
    if len(parts) != 2 or parts[0] not in ANSWERS:
        return None
    return parts[0], parts[1]
