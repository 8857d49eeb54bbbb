"""`mailmfa check-setup`: find the configurations around mailmfa that let a login past it.

Another passdb beside mailmfa's: Dovecot asks the next passdb when one refuses, so a
password-only passdb (the ldap or pam one mailmfa's replaced, left included) lets the
password alone in. A cache in front of mailmfa answers a password+code it has seen without
asking mailmfa, so its replay rule never runs (README, "mailmfa-pam" and "Dovecot Lua
passdb"): Dovecot 2.3's passdb lua and 2.4's passdb pam cache whenever auth_cache_size is
set (a per-connection cache key does not help SMTP AUTH, which has no session), and
saslauthd -c (Debian's default) caches for hours.

The rules are pure functions over text (`doveconf -n -P` output, PAM service files,
/etc/default/saslauthd); gather() is the thin part that runs doveconf and reads the files.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Check:
    """One finding: what was looked at, whether it is safe, and what to do if not."""

    what: str
    ok: bool
    detail: str
    fix: str = ""


@dataclass
class Dovecot:
    """What check-setup needs from `doveconf -n -P`."""

    version: tuple[int, ...]
    auth_cache: bool
    passdbs: list[dict[str, str]]
    userdbs: int = 0


def parse_doveconf(text: str) -> Dovecot:
    """`doveconf -n -P` output (2.3 or 2.4) -> version, whether the auth cache is on, and the
    passdbs' settings. In 2.4 a passdb's driver defaults to its name (`passdb pam { }`), and
    doveconf prints a driver's settings of a passdb named otherwise in a nested block
    (`passdb x { driver = pam  passdb_pam { service_name = S } }`): read back as their full
    name, passdb_pam_service_name. Other nested blocks (lua_settings) are skipped."""
    version: tuple[int, ...] = ()
    first = text.splitlines()[0] if text else ""
    if m := re.match(r"#\s*(\d+)\.(\d+)(?:\.(\d+))?", first):
        version = tuple(int(x) for x in m.groups() if x is not None)
    cache_size = "0"
    passdbs: list[dict[str, str]] = []
    userdbs = 0
    blocks: list[str] = []  # the open blocks' first words
    current: dict[str, str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("{"):
            head = line[:-1].split() or [""]
            if not blocks and head[0] == "passdb":
                current = {"name": head[1] if len(head) > 1 else ""}
                passdbs.append(current)
            userdbs += not blocks and head[0] == "userdb"
            blocks.append(head[0])
            continue
        if line == "}":
            if blocks:
                blocks.pop()
            if not blocks:
                current = None
            continue
        key, sep, value = line.partition("=")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if not blocks and key == "auth_cache_size":
            cache_size = value
        elif current is not None and len(blocks) == 1:
            current[key] = value
        elif current is not None and len(blocks) == 2 and blocks[1].startswith("passdb_"):
            current[f"{blocks[1]}_{key}"] = value
    for p in passdbs:
        p.setdefault("driver", p["name"])
    return Dovecot(version, _size_is_nonzero(cache_size), passdbs, userdbs)


def _size_is_nonzero(value: str) -> bool:
    m = re.match(r"\s*(\d+)", value)
    return bool(m) and int(m.group(1)) > 0


def _pam_service(passdb: dict[str, str], version: tuple[int, ...]) -> str:
    if version >= (2, 4):
        # doveconf prints passdb_pam_service_name as `service_name` inside a passdb named
        # "pam" (doveconf -F confirms), and in a nested passdb_pam { } block inside one named
        # otherwise, where a bare `service_name` is another setting that PAM never sees
        if passdb.get("passdb_pam_service_name"):
            return passdb["passdb_pam_service_name"]
        if passdb.get("name") == "pam" and passdb.get("service_name"):
            return passdb["service_name"]
        return "dovecot"
    words = [w for w in passdb.get("args", "").split() if "=" not in w]
    return words[-1] if words else "dovecot"  # 2.3: args = [session=yes ...] [cache_key=...] SERVICE


def uses_mailmfa(pam_text: str) -> bool:
    """A PAM service file that hands the login to mailmfa (pam_exec or pam_python)."""
    for line in pam_text.splitlines():
        line = line.split("#", 1)[0]
        if "mailmfa" in line and ("pam_exec" in line or "pam_python" in line):
            return True
    return False


def dovecot_checks(dc: Dovecot, pam_file: Callable[[str], str | None]) -> list[Check]:
    """The Dovecot rules. `pam_file(service)` returns /etc/pam.d/SERVICE's text or None."""
    ours = [p for p in dc.passdbs if _runs_mailmfa(p, dc.version, pam_file)]
    others = [p for p in dc.passdbs if p not in ours]
    if not ours:
        other_pam = [_pam_service(p, dc.version) for p in others if p["driver"] == "pam"]
        if other_pam and uses_mailmfa(pam_file("mailmfa") or ""):
            # PAM service "mailmfa" is installed, yet Dovecot's passdb pam asks another one: the
            # 2.4 mistake of a bare `service_name` (another setting, ignored) leaves "dovecot"
            fix = ("passdb_pam_service_name = mailmfa inside the passdb block (the full name: a bare "
                   "service_name is another setting)" if dc.version >= (2, 4) else "args = mailmfa in this passdb")
            return [Check(f"Dovecot passdb pam (PAM service {service})", False,
                          f"PAM service {service} does not run mailmfa (the PAM service mailmfa does): "
                          "logins through this passdb need no code", fix) for service in other_pam]
        return [Check("Dovecot", True, "no passdb runs mailmfa (nothing to check)")]
    out = [_cache_check(p, dc) for p in ours]
    if not dc.userdbs:
        # the snippets leave the userdb to the admin; without one every accepted login fails
        # after mailmfa said yes ("User is missing UID", "user not found from any userdbs")
        out.append(Check("Dovecot userdb", False, "no userdb: Dovecot cannot tell where an accepted "
                         "user's mail lives, so every login fails after mailmfa accepts it",
                         "a userdb in 10-auth.conf: userdb passwd for system accounts, your LDAP or "
                         "a static one otherwise (README, \"Configure Dovecot (2.3)\" / \"(2.4)\")"))
    for p in others:  # any other passdb that can say yes lets the password alone in
        if _flag(p, "deny") or _flag(p, "master") or p.get("skip", p.get("passdb_skip")) == "unauthenticated":
            # a deny list only refuses; master users are the admin's own choice; a passdb
            # skipped while nobody authenticated the user is never asked on its own
            continue
        name = p.get("name") or p["driver"]
        out.append(Check(f"Dovecot passdb {p['driver']} ({name})", False,
                         "a passdb beside mailmfa's: Dovecot asks it when mailmfa refuses, so a "
                         "login it accepts (the password alone) needs no code",
                         "remove this passdb (keep its userdb if Dovecot needs that); "
                         "deny = yes or master = yes if that is its purpose"))
    return out


def _cache_check(p: dict[str, str], dc: Dovecot) -> Check:
    """Whether Dovecot answers this mailmfa passdb from its auth cache (a used code again)."""
    v = ".".join(map(str, dc.version)) or "?"
    if p["driver"] == "lua":
        what = "Dovecot passdb lua (mailmfa.lua)"
        if dc.version >= (2, 4):
            return Check(what, True, f"Dovecot {v} caches a Lua passdb only for a script with "
                         "auth_passdb_get_cache_key; mailmfa.lua has none")
        if not dc.auth_cache:
            return Check(what, True, "auth cache off (auth_cache_size = 0)")
        # a cache_key=%u%{session} keeps IMAP/POP3 logins apart, but SMTP AUTH through
        # Dovecot's auth socket (Postfix) has no session: its key is the user name alone
        return Check(what, False, f"auth cache on and Dovecot {v} caches this passdb: a used "
                     "password+code is accepted again from the cache (a per-connection "
                     "cache_key does not cover SMTP AUTH, which has no session)",
                     "auth_cache_size = 0 (conf/dovecot/auth-mailmfa-lua.conf.ext sets it)")
    if p["driver"] == "pam":
        what = f"Dovecot passdb pam (PAM service {_pam_service(p, dc.version)})"
        cache_key = _arg(p.get("args", ""), "cache_key") if dc.version < (2, 4) else ""
        if not dc.auth_cache:
            return Check(what, True, "auth cache off (auth_cache_size = 0)")
        if dc.version >= (2, 4) or cache_key:
            fix = ("auth_cache_size = 0 (conf/dovecot/auth-mailmfa-pam-2.4.conf.ext sets it), or the Lua passdb"
                   if dc.version >= (2, 4) else "remove cache_key= from this passdb's args")
            return Check(what, False, f"auth cache on and Dovecot {v} caches this passdb's successes: "
                         "a used password+code is accepted again from the cache", fix)
        return Check(what, True, f"Dovecot {v} keeps no cache for passdb pam without cache_key=")
    return Check("Dovecot passdb checkpassword (mailmfa-checkpassword)", True,
                 "checkpassword passdbs are not cached")


def _flag(passdb: dict[str, str], name: str) -> bool:
    return passdb.get(name, passdb.get(f"passdb_{name}", "no")).lower() == "yes"


def _runs_mailmfa(p: dict[str, str], version: tuple[int, ...], pam_file: Callable[[str], str | None]) -> bool:
    driver = p["driver"]
    if driver == "lua":
        return "mailmfa" in p.get("args", "") + p.get("lua_file", "")
    if driver == "checkpassword":
        return "mailmfa" in p.get("args", "")
    if driver == "pam":
        return uses_mailmfa(pam_file(_pam_service(p, version)) or "")
    return False


def _arg(args: str, key: str) -> str:
    for word in args.split():
        if word.startswith(key + "="):
            return word[len(key) + 1:]
    return ""


def saslauthd_checks(defaults: str, pam_file: Callable[[str], str | None]) -> list[Check]:
    """/etc/default/saslauthd: a credential cache (-c) in front of a PAM service running mailmfa."""
    values: dict[str, str] = {}
    for line in defaults.splitlines():
        line = line.strip()
        if line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        try:
            words = shlex.split(value, comments=True)
        except ValueError:
            words = [value]
        values[key.strip()] = " ".join(words)
    if "pam" not in values.get("MECHANISMS", "").split():
        return [Check("saslauthd", True, "not using PAM (MECHANISMS)")]
    mailmfa_services = [s for s in ("smtp", "smtps", "submission") if uses_mailmfa(pam_file(s) or "")]
    if not mailmfa_services:
        return [Check("saslauthd", True, "PAM services smtp/submission do not run mailmfa")]
    options = values.get("OPTIONS", "").split()
    caching = any(o.startswith("-") and not o.startswith("--") and "c" in o[1:] for o in options)
    what = f"saslauthd -a pam (PAM service {', '.join(mailmfa_services)})"
    if caching:
        return [Check(what, False, "OPTIONS has -c: saslauthd caches every accepted password+code (8 hours "
                      "by default) and accepts it again without asking PAM",
                      "remove -c from OPTIONS in /etc/default/saslauthd, then restart saslauthd")]
    return [Check(what, True, "no credential cache (-c not set)")]


def gather(dovecot_config: str, pam_dir: str, saslauthd_defaults: str, timeout: float = 20.0) -> list[Check]:
    """Run the rules on this machine: `doveconf -c FILE -n -P`, PAM_DIR/SERVICE files and the
    saslauthd defaults file. Something not installed is reported as nothing to check."""
    import os
    import shutil
    import subprocess

    def pam_file(service: str) -> str | None:
        if "/" in service or service.startswith("."):
            return None
        try:
            with open(os.path.join(pam_dir, service), encoding="utf-8", errors="replace") as fh:
                return fh.read()
        except OSError:
            return None

    checks: list[Check] = []
    doveconf = shutil.which("doveconf") or shutil.which("doveconf", path="/usr/bin:/usr/sbin")
    if doveconf is None:
        checks.append(Check("Dovecot", True, "not installed (no doveconf)"))
    elif not os.path.exists(dovecot_config):
        checks.append(Check("Dovecot", True, f"no {dovecot_config}"))
    else:
        stdout, error = "", ""
        try:
            run = subprocess.run([doveconf, "-c", dovecot_config, "-n", "-P"], capture_output=True, text=True,
                                 timeout=timeout)
            stdout = run.stdout
            if run.returncode != 0:
                error = (run.stderr.strip().splitlines() or [f"exit status {run.returncode}"])[-1]
        except (OSError, subprocess.TimeoutExpired) as exc:
            error = str(exc)
        if error:
            checks.append(Check("Dovecot", False, f"doveconf could not read {dovecot_config}: {error}",
                                f"run: doveconf -c {dovecot_config} -n"))
        else:
            checks += dovecot_checks(parse_doveconf(stdout), pam_file)
    try:
        with open(saslauthd_defaults, encoding="utf-8", errors="replace") as fh:
            checks += saslauthd_checks(fh.read(), pam_file)
    except FileNotFoundError:
        checks.append(Check("saslauthd", True, f"not installed (no {saslauthd_defaults})"))
    except OSError as exc:
        checks.append(Check("saslauthd", False, f"cannot read {saslauthd_defaults}: {exc.strerror}",
                            "run check-setup as root"))
    return checks
