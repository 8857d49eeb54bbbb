"""The per-login entry points (checkpassword, PAM) and what they share.

Kept here, in the package every entry point imports anyway, so sharing costs no import.
"""

# exit statuses both protocols share (checkpassword and pam_exec read 0 as "let them in")
EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2
EXIT_TEMPFAIL = 111  # a temporary failure: never a wrong password, never an accept

OPTIONS = ("--config", "--socket")


def parse_options(argv: list[str]) -> "tuple[dict[str, str | None], int] | str":
    """The leading --config/--socket options (`--opt VALUE` or `--opt=VALUE`): their values
    and the index of the first argument that is not one of them; or a string naming the
    usage problem (an option without its value)."""
    opts: dict[str, str | None] = dict.fromkeys(OPTIONS)
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if name not in opts:
            break
        if eq:
            opts[name] = value
            i += 1
        elif i + 1 < len(argv):
            opts[name] = argv[i + 1]
            i += 2
        else:
            return f"{arg} needs a {'FILE' if arg == '--config' else 'PATH'}"
    return opts, i
