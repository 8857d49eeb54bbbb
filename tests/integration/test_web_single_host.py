"""mailmfa-web in single-host mode: a real system user (useradd + chpasswd, removed after),
the password checked by pam_unix through a real PAM service, the token in a real SQLite
file, driven by a real headless Chromium (JavaScript off) as test_web.py does.

One test, end to end: sign in with the system password, turn 2-step verification on
(key read from "Can not scan the barcode", pin computed), the token is in the SQLite
file, the NEXT code logs in through the real `mailmfa-pam` executable, then turn it off
with the password and the token is gone.
"""

from __future__ import annotations

import os
import time

import pytest

import syspam
from mfa import code_at
from servers import wait_for_step_safe
from web_harness import CHROMIUM, VIEWPORT, WebApp, shot

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creates system users and PAM services (root only)")
playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (make venv)")
if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is not installed (Debian package chromium)", allow_module_level=True)

from test_web import enter_pin, heading, read_key  # noqa: E402 - after the skips above

PASSWORD = "Pw-web single 1"
FULL_NAME = "Ada Lovelace"


class Host(syspam.SingleHost):
    """The single host of this module, plus the web page's state dir and settings."""

    rip = "192.0.2.31"

    def __init__(self, workdir):
        state = workdir / "web-state"
        state.mkdir(mode=0o700)
        super().__init__(workdir, '[policy]\nreuse_seconds = 0\n'
                         f'[web]\nstate_dir = "{state}"\nsecure_cookies = false\nsite_name = "Single Host Mail"\n')


@pytest.fixture(scope="module")
def host(workdir_factory):
    yield from Host.fixture(workdir_factory())


@pytest.fixture
def system_user():
    name = syspam.add_system_user(PASSWORD, prefix="mmw")
    try:
        syspam._retry([syspam._tool("usermod"), "--comment", f"{FULL_NAME},,,", name])
        yield name
    finally:
        syspam.remove_system_user(name)


@pytest.fixture
def page(host):
    with WebApp(host.config, host.workdir) as web, playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        ctx = browser.new_context(viewport=VIEWPORT, java_script_enabled=False, base_url=web.url,
                                  device_scale_factor=1)
        ctx.set_default_timeout(10_000)
        try:
            yield ctx.new_page()
        finally:
            browser.close()
    log = web.log_text()
    assert PASSWORD not in log, "the password reached the log"


def confirm(page, password: str) -> None:
    page.get_by_role("link", name="2-step verification").click()
    assert heading(page) == "2-step verification"
    assert page.locator("input[name=code]").count() == 0  # no otp overlay here: password alone
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Confirm").click()


def test_enable_pam_login_with_next_code_then_disable(host, system_user, page):
    user = system_user
    # the system password signs in; a wrong one does not (pam_unix says so, not us)
    page.goto("/login")
    page.get_by_label("Login").fill(user)
    page.get_by_label("Password").fill("not-" + PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    assert heading(page) == "Sign in"
    assert page.locator(".error").inner_text() == "The login or password is not correct."
    page.get_by_label("Login").fill(user)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    assert heading(page) == "Profile", page.content()
    facts = page.locator(".facts").inner_text()
    assert FULL_NAME in facts and user in facts  # the GECOS full name, not an LDAP attribute
    assert page.locator(".badge").inner_text() == "Off"
    shot(page, "21-single-host-profile")

    # turn it on
    confirm(page, PASSWORD)
    assert heading(page) == "Turn on 2-step verification"
    page.get_by_role("button", name="Enable").click()
    assert heading(page) == "Install a code generation app"
    page.get_by_role("link", name="Continue").click()
    assert heading(page) == "Scan the barcode"
    secret = read_key(page)
    assert host.token(user) is None, "nothing may be written before the pin verifies"
    wait_for_step_safe()
    pin = code_at(secret)
    enter_pin(page, pin)
    assert heading(page) == "2-step verification is on"
    shot(page, "21-single-host-enabled")
    info = host.token(user)
    assert info is not None and info.secret == secret
    used = info.last_step
    assert used == int(time.time() // 30)
    assert os.stat(host.db).st_mode & 0o077 == 0  # created by the web app with safe permissions

    # mail logins through mailmfa-pam now want password+code; the activation code is used up
    rc, log = host.pam_login(user, PASSWORD)
    assert rc != 0, log
    rc, log = host.pam_login(user, PASSWORD + pin)
    assert rc != 0 and "reason=replay" in log, log
    while time.time() // 30 <= used:
        time.sleep(0.2)
    rc, log = host.pam_login(user, PASSWORD + code_at(secret))
    assert rc == 0 and "result=ok" in log and "reason=ok " in log, log
    assert host.token(user).last_step > used

    # turn it off with the password (checked by PAM for an enrolled user)
    page.get_by_role("link", name="Back to profile").click()
    assert page.locator(".badge").inner_text() == "On"
    confirm(page, "wrong-" + PASSWORD)
    assert page.locator(".error").inner_text() == "The password is not correct."
    assert host.token(user) is not None
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Confirm").click()
    assert heading(page) == "Turn off 2-step verification"
    page.get_by_role("button", name="Disable").click()
    assert heading(page) == "2-step verification is off"
    assert host.token(user) is None
    rc, log = host.pam_login(user, PASSWORD)  # the password alone logs in again
    assert rc == 0 and "reason=ok_no_token" in log, log
