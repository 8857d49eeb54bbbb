"""mailmfa-web as a process for the web tests: this source tree, a free port, a log file,
stopped by PID. (Shared by test_web*.py; the servers it talks to come from servers.py.)"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from servers import REPO_ROOT, free_port, poll_until

CHROMIUM = "/usr/bin/chromium"
SCREENS = REPO_ROOT / "artifacts" / "screens"
VIEWPORT = {"width": 360, "height": 780}


def shot(page, name: str, max_width: int = VIEWPORT["width"]) -> None:
    """Save the screen under artifacts/screens/, and check it fits a 360 px phone without
    sideways scrolling (or `max_width` for a wide-screen shot)."""
    SCREENS.mkdir(parents=True, exist_ok=True)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= max_width, f"{name}: page is {width} px wide"
    page.screenshot(path=str(SCREENS / f"{name}.png"), full_page=True)


def wait_port(port: int, proc: subprocess.Popen, log: Path, what: str = "") -> None:
    """Poll until 127.0.0.1:`port` accepts; fail with the log if `proc` dies or it times out."""
    def up() -> bool:
        assert proc.poll() is None, log.read_text(errors="replace")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    poll_until(up, 15, what or f"port {port}", on_timeout=lambda: log.read_text(errors="replace"))


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class WebApp:
    """`with WebApp(config, workdir) as web:` -> web.url, web.port, web.log (Path)."""

    def __init__(self, config: Path, workdir: Path, name: str = "web") -> None:
        self.config = config
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(workdir) / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> WebApp:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mailmfa.web.cli", "--listen", f"127.0.0.1:{self.port}",
                 "--config", str(self.config)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            )
        try:
            wait_port(self.port, self.proc, self.log, "mailmfa-web")
        except BaseException:
            stop(self.proc)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")
