"""Every program setup.cfg installs answers --help and --version (exit 0, on stdout, naming
itself) -- what an admin tries first, and what help2man (the Debian package's manual pages)
relies on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mailmfa import __version__
from servers import console_scripts


@pytest.mark.parametrize("name", console_scripts())
def test_help_and_version(name: str) -> None:
    exe = Path(sys.prefix) / "bin" / name
    if not exe.exists():
        pytest.skip(f"{exe} not installed (make venv)")
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout.strip()) == (0, f"{name} {__version__}"), out.stderr
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "usage" in out.stdout.lower() and name in out.stdout
