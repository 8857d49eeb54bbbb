"""`make demo` is one of the README's two commands: run it as the Makefile does, in its
default mode and with the daemon + Lua passdb, and see it succeed for the right reasons."""

import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[2] / "demo" / "run.py"


@pytest.mark.parametrize("mode", [[], ["--daemon"]], ids=["default", "daemon"])
def test_demo_runs_and_shows_every_case(mode):
    proc = subprocess.run([sys.executable, str(DEMO), *mode], capture_output=True, text=True, timeout=300)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    assert "DEMO OK" in out
    assert "password + current code                   -> accepted" in out
    for refused in ("password + wrong code", "password + same code again (replay)", "password alone"):
        assert any(line.startswith(f"  {refused}") and "-> refused" in line for line in out.splitlines()), refused
    assert "reason=ok" in out and "reason=bad_code" in out and "reason=replay" in out and "reason=reused" in out
    assert ("via=authd" in out) == ("--daemon" in mode)
    assert "demo-password" not in "".join(line for line in out.splitlines() if "mailmfa result=" in line)
