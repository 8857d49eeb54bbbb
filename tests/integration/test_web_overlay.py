"""mailmfa-web with slapd's otp overlay (otp_overlay = true): slapd itself checks password+code
at the user's bind, so the sign-in and the "Confirm" before Disable both take password+code.
Real slapd with the otp module, real Chromium (JavaScript off)."""

from __future__ import annotations

import os
import time

import pytest

from mfa import code_at, new_secret, write_config
from servers import wait_for_step_safe
from web_harness import CHROMIUM, WebApp, shot

if not os.path.exists(CHROMIUM) or not os.path.exists("/usr/lib/ldap/otp.so"):
    pytest.skip("needs chromium and slapd's otp module", allow_module_level=True)
playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (make venv)")


@pytest.fixture(scope="module")
def overlay(slapd_factory):
    return slapd_factory(with_otp_overlay=True)


@pytest.fixture(scope="module")
def web(workdir_factory, overlay):
    work = workdir_factory()
    state = work / "state"
    state.mkdir(mode=0o700)
    config = write_config(work, overlay, extra_ldap="otp_overlay = true", tail=f"""
[web]
state_dir = "{state}"
secure_cookies = false
""")
    with WebApp(config, work) as app:
        yield app


@pytest.fixture(scope="module")
def page(web):
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        ctx = browser.new_context(viewport={"width": 360, "height": 780}, java_script_enabled=False,
                                  base_url=web.url)
        ctx.set_default_timeout(10_000)
        yield ctx.new_page()
        browser.close()


def h1(page) -> str:
    return page.locator("h1").inner_text().strip()


def test_sign_in_and_disable_with_the_overlay(page, overlay):
    secret = new_secret()
    dn = overlay.add_user("ov1", "ov1-pw", secret)
    page.goto("/login")
    page.get_by_label("Login").fill("ov1")
    page.get_by_label("Password").fill("ov1-pw")
    page.get_by_role("button", name="Sign in").click()
    assert h1(page) == "Enter your code"
    wait_for_step_safe(margin=5)
    page.get_by_label("Code").fill(code_at(secret))
    page.get_by_role("button", name="Sign in").click()
    assert h1(page) == "Profile"

    page.get_by_role("link", name="2-step verification").click()
    # the password alone cannot be checked by a bind any more: the code is asked too
    page.get_by_label("Password").fill("ov1-pw")
    page.get_by_label("Code").fill("000000" if code_at(secret) != "000000" else "111111")
    page.get_by_role("button", name="Confirm").click()
    assert h1(page) == "2-step verification"
    assert "password or the code is not correct" in page.locator(".error").inner_text()
    shot(page, "10-overlay-reauth-wrong")
    # the next code (the current one was used by the sign-in)
    while int(time.time() // 30) <= int(overlay.token_state("ov1").first("oathTOTPLastTimeStep")):
        time.sleep(0.2)
    page.get_by_label("Password").fill("ov1-pw")
    page.get_by_label("Code").fill(code_at(secret))
    page.get_by_role("button", name="Confirm").click()
    assert h1(page) == "Turn off 2-step verification"
    page.get_by_role("button", name="Disable").click()
    assert h1(page) == "2-step verification is off"
    entry = overlay.get(dn)
    assert "oathSecret" not in entry
    # and the directory now takes the password alone
    assert overlay.bind(dn, "ov1-pw")
