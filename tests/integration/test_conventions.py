"""Every program setup.cfg installs answers --help and --version (exit 0, on stdout, naming
itself) -- what an admin tries first, and what help2man-style tools rely on."""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

import pytest

from servers import REPO_ROOT


def _console_scripts() -> list[str]:
    cfg = configparser.ConfigParser()
    cfg.read(REPO_ROOT / "setup.cfg")
    lines = cfg["options.entry_points"]["console_scripts"].strip().splitlines()
    return [line.split("=")[0].strip() for line in lines]


@pytest.mark.parametrize("name", _console_scripts())
def test_help_and_version(name: str) -> None:
    exe = Path(sys.prefix) / "bin" / name
    if not exe.exists():
        pytest.skip(f"{exe} not installed (make venv)")
    version = (REPO_ROOT / "mailmfa" / "__init__.py").read_text().split('__version__ = "')[1].split('"')[0]
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout.strip()) == (0, f"{name} {version}"), out.stderr
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "usage" in out.stdout.lower() and name in out.stdout
