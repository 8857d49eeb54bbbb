"""mailmfa-web in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright),
against the real slapd fixture and, for the end-to-end case, a real Dovecot IMAP login.

The browser runs with JavaScript OFF throughout: the page must work without it. Every screen
is saved under artifacts/screens/ (360 px wide, like a small phone) for a human to look at.
One browser and one mailmfa-web process serve the whole module; each test has its own users
and its own browser context (cookies).
"""

from __future__ import annotations

import base64
import os
import re
import time
from pathlib import Path

import pytest

from mfa import code_at, new_secret, write_config
from servers import wait_for_step_safe
from web_harness import CHROMIUM, VIEWPORT, WebApp, shot

playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (make venv)")


if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is not installed (Debian package chromium)", allow_module_level=True)

_n = iter(range(1, 10_000))
# every password and key a test used: none may appear in the server's log
_SECRETS: list[str] = []


def new_user(slapd, *, secret: bytes | None = None, prefix: str = "web") -> tuple[str, str]:
    uid = f"{prefix}{next(_n)}"
    pw = f"Pw-{uid}-s3cret"
    slapd.add_user(uid, pw, secret, cn=f"{uid.title()} Example")
    _SECRETS.append(pw)
    return uid, pw


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def state_dir(workdir):
    path = workdir / "web-state"
    path.mkdir(mode=0o700)
    return path


@pytest.fixture(scope="module")
def config(workdir, slapd, state_dir):
    return write_config(workdir, slapd, tail=f"""
[web]
state_dir = "{state_dir}"
secure_cookies = false
site_name = "Example Mail"
""")


@pytest.fixture(scope="module")
def web(config, workdir):
    """mailmfa-web from this source tree, as a process on a free port."""
    with WebApp(config, workdir) as app:
        yield app
    text = app.log_text()
    for secret in _SECRETS:
        assert secret not in text, "a password or key reached the log"


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, web):
    ctx = browser.new_context(viewport=VIEWPORT, java_script_enabled=False, base_url=web.url,
                              device_scale_factor=1)
    ctx.set_default_timeout(10_000)
    pg = ctx.new_page()
    yield pg
    ctx.close()


@pytest.fixture(scope="module")
def dovecot(dovecot_factory, config, workdir, request):
    """mailmfa-checkpassword on Dovecot 2.3, passdb pam -> mailmfa-pam on 2.4."""
    from pamface import dovecot_checking_with_mailmfa

    return dovecot_checking_with_mailmfa(dovecot_factory, config, workdir, request)


# --------------------------------------------------------------------------- helpers

def heading(page) -> str:
    return page.locator("h1").inner_text().strip()


def submit_login(page, uid: str, pw: str, screens: str = "") -> None:
    """The first sign-in screen: login and password, submitted."""
    page.goto("/login")
    page.get_by_label("Login").fill(uid)
    page.get_by_label("Password").fill(pw)
    if screens:
        shot(page, f"{screens}-sign-in")
    page.get_by_role("button", name="Sign in").click()


def sign_in(page, uid: str, pw: str, secret: bytes | None = None, screens: str = "") -> None:
    submit_login(page, uid, pw, screens)
    if secret is not None:
        assert heading(page) == "Enter your code"
        if screens:
            shot(page, f"{screens}-code")
        wait_for_step_safe()
        page.get_by_label("Code").fill(code_at(secret))
        page.get_by_role("button", name="Sign in").click()
    assert heading(page) == "Profile", page.content()


def confirm_password(page, pw: str) -> None:
    page.get_by_role("link", name="2-step verification").click()
    assert heading(page) == "2-step verification"
    page.get_by_label("Password").fill(pw)
    page.get_by_role("button", name="Confirm").click()


def start_enrolment(page, uid: str, pw: str, screens: str = "") -> None:
    """Sign in and go as far as the barcode screen."""
    sign_in(page, uid, pw, screens=screens)
    if screens:
        shot(page, f"{screens}-profile")
    page.get_by_role("link", name="2-step verification").click()
    if screens:
        shot(page, f"{screens}-reauth")
    page.get_by_label("Password").fill(pw)
    page.get_by_role("button", name="Confirm").click()
    assert heading(page) == "Turn on 2-step verification"
    if screens:
        shot(page, f"{screens}-enable")
    page.get_by_role("button", name="Enable").click()
    assert heading(page) == "Install a code generation app"
    if screens:
        shot(page, f"{screens}-apps")
    page.get_by_role("link", name="Continue").click()
    assert heading(page) == "Scan the barcode"


def read_key(page) -> bytes:
    """Open "Can not scan the barcode" and read the key as a person would type it."""
    details = page.locator("details.manual")
    if details.get_attribute("open") is None:
        page.get_by_text("Can not scan the barcode").click()
    key = page.locator("#manual-key")
    assert key.is_visible()
    text = key.inner_text()
    assert re.fullmatch(r"[A-Z2-7]{4}( [A-Z2-7]{1,4})*", text), text
    plain = text.replace(" ", "")
    _SECRETS.append(plain)
    return base64.b32decode(plain + "=" * (-len(plain) % 8))


def enter_pin(page, pin: str) -> None:
    page.get_by_label("Pin").fill(pin)
    page.get_by_role("button", name="Verify and save").click()


def wrong_code(secret: bytes) -> str:
    now = time.time()
    taken = {code_at(secret, now + d) for d in (-60, -30, 0, 30, 60)}
    return next(c for c in ("000000", "111111", "222222", "333333") if c not in taken)


def has_token(slapd, uid: str) -> bool:
    entry = slapd.get(slapd.user_dn(uid))
    return entry is not None and "oathSecret" in entry


# --------------------------------------------------------------------------- tests

def test_enable_end_to_end_then_imap_login_with_next_code(page, slapd, dovecot, web):
    from mailmfa.core.enroll import otpauth_uri
    from mailmfa.core.types import TotpParams

    uid, pw = new_user(slapd)
    start_enrolment(page, uid, pw, screens="01")
    shot(page, "01-barcode")
    assert page.locator("details.manual #manual-key").is_hidden()
    secret = read_key(page)
    shot(page, "01-cannot-scan")
    dl = page.locator("details.manual dl").inner_text()
    for words in (uid, "Time-based", "6", "30 seconds"):
        assert words in dl
    # the barcode is the otpauth URI of that very key
    import segno

    svg = page.locator(".qr-box svg").inner_html()
    expected = segno.make(otpauth_uri(secret, uid, "Test Mail", TotpParams()), error="m")
    path = re.search(r'd="([^"]+)"', expected.svg_inline(scale=1, border=2)).group(1)
    assert path in svg
    assert not has_token(slapd, uid), "nothing may be written before the pin verifies"

    wait_for_step_safe()
    pin = code_at(secret)
    enter_pin(page, pin)
    assert heading(page) == "2-step verification is on"
    assert "next sign-in needs a new code" in page.content()
    shot(page, "01-enabled")
    entry = slapd.token_state(uid)
    assert entry.first("oathSecret") == secret
    used = int(entry.first("oathTOTPLastTimeStep"))
    assert used == int(time.time() // 30)

    page.get_by_role("link", name="Back to profile").click()
    assert page.locator(".badge").inner_text() == "On"
    shot(page, "01-profile-on")

    # the mail server now wants password+code; the activation code is used up
    assert not dovecot.imap_login(uid, pw).ok
    assert not dovecot.imap_login(uid, pw + pin, source_ip="127.0.0.2").ok
    # the next code, once its time has come
    while time.time() // 30 <= used:
        time.sleep(0.2)
    result = dovecot.imap_login(uid, pw + code_at(secret), source_ip="127.0.0.3")
    assert result.ok and result.selected, result.text


def test_wrong_pin_then_right_pin(page, slapd):
    uid, pw = new_user(slapd)
    start_enrolment(page, uid, pw)
    secret = read_key(page)
    enter_pin(page, wrong_code(secret))
    assert heading(page) == "Scan the barcode"
    assert "That code is not correct" in page.locator(".error").inner_text()
    assert page.get_by_label("Pin").get_attribute("aria-invalid") == "true"
    shot(page, "02-wrong-pin")
    assert not has_token(slapd, uid)
    # same key after the error: the user retries with the app they already set up
    assert read_key(page) == secret
    wait_for_step_safe()
    enter_pin(page, code_at(secret))
    assert heading(page) == "2-step verification is on"
    assert slapd.token_state(uid).first("oathSecret") == secret


def test_start_over_makes_a_new_secret(page, slapd):
    uid, pw = new_user(slapd)
    start_enrolment(page, uid, pw)
    first = read_key(page)
    page.get_by_role("button", name="Start over").click()
    assert heading(page) == "Scan the barcode"
    assert "new barcode" in page.locator(".notice").inner_text()
    shot(page, "03-started-over")
    second = read_key(page)
    assert second != first
    wait_for_step_safe()
    enter_pin(page, code_at(first))  # the old key's code no longer counts
    assert heading(page) == "Scan the barcode" and page.locator(".error").count() == 1
    assert not has_token(slapd, uid)
    enter_pin(page, code_at(second))
    assert heading(page) == "2-step verification is on"
    assert slapd.token_state(uid).first("oathSecret") == second


def test_two_stage_sign_in_of_enrolled_user(page, slapd, dovecot):
    secret = new_secret()
    uid, pw = new_user(slapd, secret=secret)
    submit_login(page, uid, pw)
    assert heading(page) == "Enter your code"
    shot(page, "04-code")
    page.get_by_label("Code").fill(wrong_code(secret))
    page.get_by_role("button", name="Sign in").click()
    assert heading(page) == "Enter your code"
    assert "not accepted" in page.locator(".error").inner_text()
    shot(page, "04-code-wrong")
    wait_for_step_safe()
    code = code_at(secret)
    page.get_by_label("Code").fill(code)
    page.get_by_role("button", name="Sign in").click()
    assert heading(page) == "Profile"
    assert page.locator(".badge").inner_text() == "On"
    assert f"{uid.title()} Example" in page.locator(".facts").inner_text()
    # the same replay rule as IMAP: the web login used this code
    assert int(slapd.token_state(uid).first("oathTOTPLastTimeStep")) == int(time.time() // 30)
    assert not dovecot.imap_login(uid, pw + code, source_ip="127.0.0.4").ok


def test_wrong_password_with_right_code_is_refused(page, slapd):
    secret = new_secret()
    uid, pw = new_user(slapd, secret=secret)
    submit_login(page, uid, "not-" + pw)
    # the first screen does not tell: the password is checked together with the code
    assert heading(page) == "Enter your code"
    wait_for_step_safe()
    page.get_by_label("Code").fill(code_at(secret))
    page.get_by_role("button", name="Sign in").click()
    assert heading(page) == "Enter your code"
    assert page.locator(".error").count() == 1
    assert not slapd.token_state(uid).first("oathTOTPLastTimeStep")


def test_three_refused_codes_send_back_to_sign_in(page, slapd):
    secret = new_secret()
    uid, pw = new_user(slapd, secret=secret)
    submit_login(page, uid, pw)
    for _ in range(3):
        assert heading(page) == "Enter your code"
        page.get_by_label("Code").fill(wrong_code(secret))
        page.get_by_role("button", name="Sign in").click()
    assert heading(page) == "Sign in"
    assert page.locator(".notice").inner_text() == "Please sign in again."
    page.goto("/login/code")
    assert heading(page) == "Sign in"  # the kept password is gone


def test_five_wrong_passwords_on_confirm_end_the_session(page, slapd):
    uid, pw = new_user(slapd)
    sign_in(page, uid, pw)
    page.get_by_role("link", name="2-step verification").click()
    for _ in range(5):
        assert heading(page) == "2-step verification"
        page.get_by_label("Password").fill("wrong")
        page.get_by_role("button", name="Confirm").click()
    assert heading(page) == "Sign in"
    page.goto("/profile")
    assert heading(page) == "Sign in"


def test_changes_need_a_fresh_password_and_sign_out_ends_the_session(page, slapd):
    uid, pw = new_user(slapd)
    sign_in(page, uid, pw)
    for path in ("/2fa/manage", "/2fa/apps", "/2fa/setup"):
        page.goto(path)
        assert heading(page) == "2-step verification", path
        assert page.locator(".notice").inner_text() == "For your security, enter your password again."
    token = page.locator("input[name=csrf]").first.get_attribute("value")
    r = page.request.post("/2fa/enable", form={"csrf": token}, max_redirects=0)
    assert r.status == 303 and r.headers["location"].endswith("/2fa")
    before = page.context.cookies()
    page.get_by_role("button", name="Sign out").click()
    assert heading(page) == "Sign in"
    page.goto("/profile")
    assert heading(page) == "Sign in"
    assert not has_token(slapd, uid)
    # the old cookie is dead server-side too (a copy taken before sign-out is worthless)
    page.context.clear_cookies()
    page.context.add_cookies(before)
    page.goto("/profile")
    assert heading(page) == "Sign in"


def test_wrong_login_password_and_no_token_sign_in(page, slapd):
    uid, pw = new_user(slapd)
    submit_login(page, uid, "nope")
    assert heading(page) == "Sign in"
    assert page.locator(".error").inner_text() == "The login or password is not correct."
    shot(page, "05-sign-in-wrong")
    sign_in(page, uid, pw)
    assert page.locator(".badge").inner_text() == "Off"


def test_disable_with_wrong_then_right_password(page, slapd):
    secret = new_secret()
    uid, pw = new_user(slapd, secret=secret)
    sign_in(page, uid, pw, secret)
    page.get_by_role("link", name="2-step verification").click()
    page.get_by_label("Password").fill("wrong-" + pw)
    page.get_by_role("button", name="Confirm").click()
    assert heading(page) == "2-step verification"
    assert page.locator(".error").inner_text() == "The password is not correct."
    shot(page, "06-reauth-wrong")
    assert has_token(slapd, uid)
    page.get_by_label("Password").fill(pw)
    page.get_by_role("button", name="Confirm").click()
    assert heading(page) == "Turn off 2-step verification"
    shot(page, "06-disable")
    page.get_by_role("button", name="Disable").click()
    assert heading(page) == "2-step verification is off"
    shot(page, "06-disabled")
    assert not has_token(slapd, uid)
    entry = slapd.get(slapd.user_dn(uid))
    assert "oathTOTPToken" not in entry
    page.get_by_role("link", name="Back to profile").click()
    assert page.locator(".badge").inner_text() == "Off"


def test_post_without_csrf_token_is_refused(page, slapd):
    secret = new_secret()
    uid, pw = new_user(slapd, secret=secret)
    # anonymous: the login form itself is protected (login CSRF)
    r = page.request.post("/login", form={"login": uid, "password": pw})
    assert r.status == 403
    sign_in(page, uid, pw, secret)
    confirm_password(page, pw)
    assert heading(page) == "Turn off 2-step verification"
    for form in ({}, {"csrf": ""}, {"csrf": "x" * 43}):
        r = page.request.post("/2fa/disable", form=form, max_redirects=0)
        assert r.status == 403, form
        assert "form has expired" in r.text()
    assert has_token(slapd, uid)
    # with the page's own token the same request works
    token = page.locator("input[name=csrf]").first.get_attribute("value")
    r = page.request.post("/2fa/disable", form={"csrf": token}, max_redirects=0)
    assert r.status == 303
    assert not has_token(slapd, uid)
    page.goto("/profile")
    shot(page, "07-after-api-disable")


def test_pending_secret_never_in_a_cookie_nor_in_the_store(page, slapd, state_dir):
    uid, pw = new_user(slapd)
    start_enrolment(page, uid, pw)
    secret = read_key(page)
    key = base64.b32encode(secret).decode().rstrip("=")
    cookies = page.context.cookies()
    assert [c["name"] for c in cookies] == ["mailmfa"]
    cookie = cookies[0]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    for form in (key, key.lower(), base64.b64encode(secret).decode(), secret.hex(),
                 base64.urlsafe_b64encode(secret).decode().rstrip("=")):
        assert form not in cookie["value"]
    assert len(cookie["value"]) < 120  # two random values, not a data blob
    # server side the secret is sealed: the database holds neither the key nor the raw bytes
    raw = b"".join(p.read_bytes() for p in Path(state_dir).iterdir() if p.is_file())
    assert secret not in raw and key.encode() not in raw and pw.encode() not in raw
    assert (os.stat(state_dir).st_mode & 0o777) == 0o700


def test_pages_and_headers(page, web):
    r = page.request.get("/login")
    h = r.headers
    assert "default-src 'self'" in h["content-security-policy"]
    assert "unsafe-inline" not in h["content-security-policy"]
    assert h["x-frame-options"] == "DENY"
    assert h["referrer-policy"] == "no-referrer"
    assert h["cache-control"] == "no-store"
    page.goto("/help")
    assert heading(page) == "Help: 2-step verification"
    text = page.content()
    for words in ("code directly after", "automatic", "lost my phone", "switches 2-step verification off"):
        assert words in text
    shot(page, "08-help")
    r = page.request.get("/nothing-here")
    assert r.status == 404
    # no inline script or style anywhere
    page.goto("/login")
    assert page.locator("script").count() == 0 and page.locator("style").count() == 0
    assert page.locator("[style]").count() == 0


def test_keyboard_only_sign_in(browser, web, slapd):
    uid, pw = new_user(slapd)
    ctx = browser.new_context(viewport=VIEWPORT, java_script_enabled=False, base_url=web.url)
    pg = ctx.new_page()
    try:
        pg.goto("/login")
        pg.get_by_label("Login").focus()
        pg.keyboard.type(uid)
        pg.keyboard.press("Tab")
        pg.keyboard.type(pw)
        pg.keyboard.press("Enter")
        pg.wait_for_url("**/profile")
        assert heading(pg) == "Profile"
        # width check: nothing wider than a 360 px screen
        assert pg.evaluate("document.documentElement.scrollWidth") <= VIEWPORT["width"]
    finally:
        ctx.close()


def test_desktop_screens(browser, web, slapd):
    """The same pages on a wide screen (for the screenshots; the flows are tested above)."""
    uid, pw = new_user(slapd)
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, java_script_enabled=False,
                              base_url=web.url)
    pg = ctx.new_page()
    try:
        pg.goto("/login")
        shot(pg, "09-desktop-sign-in", max_width=1280)
        start_enrolment(pg, uid, pw)
        pg.get_by_text("Can not scan the barcode").click()
        shot(pg, "09-desktop-barcode", max_width=1280)
        pg.goto("/2fa/apps")
        shot(pg, "09-desktop-apps", max_width=1280)
    finally:
        ctx.close()
