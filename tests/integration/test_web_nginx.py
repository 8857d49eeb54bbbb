"""The shipped nginx snippet (conf/nginx/mailmfa-web.conf) in front of mailmfa-web, for real:
nginx (own process, own ports, self-signed certificate), the app with secure_cookies = true
and proxy_hops = 1, and headless Chromium signing in over https.

What it proves: the snippet is valid nginx; the __Host- cookie with Secure works through it;
the client address the app logs is the real one even when the client sends its own
X-Forwarded-For; plain http is redirected.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import ssl
import subprocess

import pytest

from mfa import write_config
from servers import REPO_ROOT, free_port, poll_until
from web_harness import CHROMIUM, WebApp, stop, wait_port

SNIPPET = REPO_ROOT / "conf" / "nginx" / "mailmfa-web.conf"
NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/bin")

if not NGINX or not shutil.which("openssl") or not os.path.exists(CHROMIUM):
    pytest.skip("needs nginx (nginx-light), openssl and chromium", allow_module_level=True)
playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (make venv)")


@pytest.fixture(scope="module")
def stack(workdir_factory, slapd):
    work = workdir_factory()
    state = work / "state"
    state.mkdir(mode=0o700)
    config = write_config(work, slapd, tail=f"""
[web]
state_dir = "{state}"
secure_cookies = true
proxy_hops = 1
""")
    https_port, http_port = free_port(), free_port()
    web = WebApp(config, work).__enter__()
    app_port, app_log = web.port, web.log
    nginx = None
    try:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-subj", "/CN=account.example.org", "-days", "1", "-keyout", str(work / "key.pem"),
             "-out", str(work / "cert.pem")], check=True, capture_output=True, timeout=60)
        # the shipped snippet, with only addresses, ports, certificate and log paths changed
        text = SNIPPET.read_text()
        text = "\n".join(line for line in text.splitlines() if "[::]" not in line)
        text = text.replace("listen 80;", f"listen 127.0.0.1:{http_port};")
        text = text.replace("listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;")
        text = text.replace("https://$host$request_uri", f"https://$host:{https_port}$request_uri")
        text = re.sub(r"ssl_certificate\s+\S+;", f"ssl_certificate {work / 'cert.pem'};", text)
        text = re.sub(r"ssl_certificate_key\s+\S+;", f"ssl_certificate_key {work / 'key.pem'};", text)
        text = text.replace("/var/log/nginx/mailmfa-web.access.log", str(work / "access.log"))
        text = text.replace("127.0.0.1:8080", f"127.0.0.1:{app_port}")
        (work / "site.conf").write_text(text)
        temp = work / "nginx-tmp"
        temp.mkdir()
        (work / "nginx.conf").write_text(f"""
user root;
worker_processes 1;
daemon off;
pid {work / 'nginx.pid'};
error_log {work / 'error.log'} warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    include {work / 'site.conf'};
}}
""")
        check = subprocess.run([NGINX, "-t", "-c", str(work / "nginx.conf"), "-p", str(work)],
                               capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, check.stderr
        nginx_log = work / "nginx.out"
        with open(nginx_log, "wb") as log:
            nginx = subprocess.Popen([NGINX, "-c", str(work / "nginx.conf"), "-p", str(work)],
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_port(https_port, nginx, nginx_log, "nginx")
        yield type("Stack", (), {"https": f"https://account.example.org:{https_port}", "https_port": https_port,
                                 "http_port": http_port, "app_log": app_log})
    finally:
        if nginx is not None:
            stop(nginx)
        web.__exit__()


def test_sign_in_over_https_with_host_prefixed_secure_cookie(stack, slapd):
    slapd.add_user("ngx1", "ngx1-password", cn="Nginx User")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--host-resolver-rules=MAP account.example.org 127.0.0.1"])
        try:
            ctx = browser.new_context(ignore_https_errors=True, java_script_enabled=False)
            page = ctx.new_page()
            page.goto(stack.https + "/login")
            page.get_by_label("Login").fill("ngx1")
            page.get_by_label("Password").fill("ngx1-password")
            page.get_by_role("button", name="Sign in").click()
            assert page.locator("h1").inner_text() == "Profile"
            assert "Nginx User" in page.content()
            cookies = ctx.cookies()
            assert [c["name"] for c in cookies] == ["__Host-mailmfa"]
            assert cookies[0]["secure"] and cookies[0]["httpOnly"] and cookies[0]["sameSite"] == "Strict"
            assert cookies[0]["path"] == "/"
        finally:
            browser.close()


def test_client_address_is_the_real_one_not_a_forged_header(stack):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", stack.https_port, context=ctx, timeout=10,
                                       source_address=("127.0.0.6", 0))
    conn.request("POST", "/login", body="login=a&password=b",
                 headers={"Content-Type": "application/x-www-form-urlencoded",
                          "X-Forwarded-For": "203.0.113.66", "Host": "account.example.org"})
    resp = conn.getresponse()
    assert resp.status == 403
    assert resp.getheader("Strict-Transport-Security")
    assert resp.getheader("X-Frame-Options") == "DENY"
    conn.close()
    poll_until(lambda: "csrf_refused" in stack.app_log.read_text(), 5, "log line")
    line = next(x for x in stack.app_log.read_text().splitlines() if "csrf_refused" in x)
    assert "rip=127.0.0.6" in line and "203.0.113.66" not in line


def test_plain_http_redirects_to_https(stack):
    conn = http.client.HTTPConnection("127.0.0.1", stack.http_port, timeout=10)
    conn.request("GET", "/login", headers={"Host": "account.example.org"})
    resp = conn.getresponse()
    assert resp.status == 301
    assert resp.getheader("Location") == f"https://account.example.org:{stack.https_port}/login"
    conn.close()
