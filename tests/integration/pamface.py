"""Helpers for the PAM face tests: the mailmfa-pam executable, the shipped PAM service
files installed under unique names, and Dovecot's `passdb pam` in 2.3 or 2.4 syntax."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import syspam
from servers import REPO_ROOT, Dovecot, snippet_globals

PAM_CONF = REPO_ROOT / "conf" / "pam.d"
PYTHON_MODULE = REPO_ROOT / "mailmfa" / "entry" / "pam_python_module.py"


def pam_bin() -> str | None:
    """The test venv's console script (`make venv` installs it)."""
    script = Path(sys.prefix) / "bin" / "mailmfa-pam"
    return str(script) if script.exists() else None


def exec_service_text(config: Path, log: Path, exe: str) -> str:
    """conf/pam.d/mailmfa as shipped, pointed at this checkout's program, config and log."""
    text = (PAM_CONF / "mailmfa").read_text()
    text = text.replace("/usr/bin/mailmfa-pam", exe)
    text = text.replace("/etc/mailmfa/mailmfa.toml", str(config))
    text = text.replace("log=/var/log/mailmfa/pam.log", f"log={log}")
    assert exe in text and str(config) in text, "conf/pam.d/mailmfa changed shape"
    return text


def fast_exec_service_text(config: Path, log: Path, exe: str, socket_path: Path) -> str:
    """conf/pam.d/mailmfa with its commented `--socket` line in use instead of the default one."""
    lines = []
    for line in exec_service_text(config, log, exe).splitlines():
        if line.startswith("auth") and "pam_exec.so" in line:
            line = "# " + line
        elif line.startswith("#auth") and "--socket" in line:
            line = line[1:].replace("/run/mailmfa/authd.sock", str(socket_path))
        lines.append(line)
    text = "\n".join(lines) + "\n"
    assert f"{exe} --socket {socket_path} --config {config}" in text, "conf/pam.d/mailmfa changed shape"
    return text


def pam_shim(dest: Path) -> Path:
    """checkpassword/mailmfa-pam (the -IS shim, a symlink to mailmfa-checkpassword) with the
    package beside it, copied into `dest`: what pam_exec runs must be reachable wherever the
    checkout sits (as root in Dovecot's auth worker it is, but a copy costs nothing and is the
    unpacked-tarball layout the shim supports)."""
    import os
    import shutil

    dest.mkdir(parents=True, exist_ok=True)
    dest.chmod(0o755)
    shutil.copytree(REPO_ROOT / "mailmfa", dest / "mailmfa", ignore=shutil.ignore_patterns("__pycache__"))
    (dest / "checkpassword").mkdir(mode=0o755)
    shutil.copy2(REPO_ROOT / "checkpassword" / "mailmfa-checkpassword", dest / "checkpassword")
    os.symlink("mailmfa-checkpassword", dest / "checkpassword" / "mailmfa-pam")
    return dest / "checkpassword" / "mailmfa-pam"


def python_service_text(config: Path) -> str:
    """conf/pam.d/mailmfa-pam-python as shipped, pointed at this checkout's module."""
    text = (PAM_CONF / "mailmfa-pam-python").read_text()
    text = re.sub(r"/\S*/pam_python_module\.py", str(PYTHON_MODULE), text)
    if syspam.PAM_PYTHON:
        text = text.replace("/lib/security/pam_python.so", syspam.PAM_PYTHON)
    text = text.replace("/etc/mailmfa/mailmfa.toml", str(config))
    assert str(PYTHON_MODULE) in text and str(config) in text, "conf/pam.d/mailmfa-pam-python changed shape"
    return text


PAM_24_SNIPPET = REPO_ROOT / "conf" / "dovecot" / "auth-mailmfa-pam-2.4.conf.ext"


def passdb_pam(service: str) -> str:
    """The passdb block body for the installed Dovecot (the harness adds the braces).

    2.3: `driver = pam` + `args = SERVICE` (conf/dovecot/auth-mailmfa-pam.conf.ext);
    2.4: the shipped conf/dovecot/auth-mailmfa-pam-2.4.conf.ext's `passdb pam` block itself,
    pointed at `service`, so the PAM tests prove the snippet (a wrong setting name there is
    silently ignored by Dovecot, which then uses PAM service "dovecot").
    """
    if Dovecot.version() >= (2, 4):
        match = re.search(r"(?ms)^passdb pam \{\n(.*?)^\}", PAM_24_SNIPPET.read_text())
        assert match, f"{PAM_24_SNIPPET} has no `passdb pam {{ ... }}` block"
        lines = [ln.strip() for ln in match.group(1).splitlines() if ln.strip() and not ln.strip().startswith("#")]
        body = "\n".join(lines)
        body, n = re.subn(r"(?m)^(passdb_pam_service_name\s*=\s*)mailmfa$", rf"\g<1>{service}", body)
        assert n == 1, f"{PAM_24_SNIPPET} changed shape: {body!r}"
        return "driver = pam\n" + body
    return f"driver = pam\nargs = {service}"


def pam_24_globals() -> str:
    """The settings conf/dovecot/auth-mailmfa-pam-2.4.conf.ext sets outside its blocks
    (`auth_cache_size = 0`), to append after a test's own settings as the include would."""
    text = snippet_globals(PAM_24_SNIPPET)
    assert text, f"{PAM_24_SNIPPET}: no global settings found"
    return text


def dovecot_checking_with_mailmfa(dovecot_factory, config: Path, workdir: Path, request,  # noqa: ANN001
                                  name: str = "dovecot") -> Dovecot:
    """A Dovecot whose passdb checks every login with mailmfa and `config`: mailmfa-checkpassword
    on 2.3; on 2.4 (no checkpassword driver) passdb pam -> pam_exec -> mailmfa-pam, with the
    shipped 2.4 snippet (mailmfa's log lines then go to WORKDIR/NAME-pam.log, not Dovecot's log).
    The PAM service file is removed when the requesting fixture ends."""
    import pytest

    from mfa import checkpassword_bin

    if Dovecot.has_checkpassword():
        return dovecot_factory(f"driver = checkpassword\nargs = {checkpassword_bin()} --config {config}",
                               workdir=workdir / name)
    exe = pam_bin()
    if exe is None:
        pytest.skip("Dovecot 2.4 runs mailmfa through mailmfa-pam, not installed in this venv (make venv)")
    service = syspam.add_pam_service(exec_service_text(config, workdir / f"{name}-pam.log", exe))
    request.addfinalizer(lambda: syspam.remove_pam_service(service))
    return dovecot_factory(passdb_pam(service), extra=pam_24_globals(), workdir=workdir / name)
