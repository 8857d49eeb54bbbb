"""mailmfa-web: the page where a mailbox user turns 2-step verification on and off.

A Flask app factory. Every credential check goes through the same code as an IMAP login:
the password (and password+code for an enrolled user) through mailmfa.service.authenticate(),
so replay rules, throttling and logging are shared; a password re-entered to confirm a
change is checked by the Directory's verify_password (an LDAP bind as the user, or PAM).
Tokens are written and removed through the admin port (TokenAdmin), only after the first
code verifies. The backends are the ones the mail login uses (`[store] backend` x
`[password] backend`, built by mailmfa.entry.common), so single-host mode works the same.

Routes (all GET pages are no-store; every POST carries the session's CSRF token):
  /login  /login/code  /logout  /profile  /2fa  /2fa/manage  /2fa/enable  /2fa/apps
  /2fa/setup  /2fa/verify  /2fa/restart  /2fa/enabled  /2fa/disable  /2fa/disabled  /help
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, abort, g, redirect, render_template, request, url_for
from jinja2 import StrictUndefined
from werkzeug.exceptions import HTTPException

from mailmfa import log
from mailmfa.backends.ports import AdminError, BackendUnavailable, UnknownUser
from mailmfa.config import Config
from mailmfa.core.types import Request as AuthRequest
from mailmfa.core.types import Verdict
from mailmfa.web import strings
from mailmfa.web.security import CSRF_FIELD, HEADERS, csrf_ok, new_csrf_token
from mailmfa.web.sessions import Session, SessionStore

SERVICE = "web"
MAX_FORM = 8 * 1024  # bytes of a request body: a login form is tiny
MAX_LOGIN = 256
MAX_PASSWORD = 500  # password + code must fit authenticate()'s 512
CODE_STAGE_SECONDS = 300  # the password waits this long for its code
MAX_CODE_TRIES = 3  # then back to the password screen
MAX_REAUTH_FAILS = 5  # wrong passwords on "Confirm" before the session ends
ENROL_SECONDS = 900  # a pending secret lives this long
SECRET_BYTES = 20  # 160 bits, RFC 4226's recommendation and what every app accepts

# session keys
USER = "user"  # signed in as
PENDING_LOGIN = "pending_login"  # passed the first screen, code still to come
LOGIN_AT = "login_at"
CODE_TRIES = "code_tries"
CODE_DIGITS = "code_digits"
REAUTH_AT = "reauth_at"
REAUTH_FAILS = "reauth_fails"
ENROL_AT = "enrol_at"
NOTICE = "notice"
DONE = "done"
SEALED_PASSWORD = "password"
SEALED_SECRET = "enrol_secret"


MAX_DISPLAY_NAME = 200  # characters shown of a directory's or GECOS' name


def _default_directory(config: Config) -> Any:
    """The Directory a mail login would use (LDAP, or CombinedDirectory for other pairs)."""
    from mailmfa.entry.common import build_directory

    return build_directory(config)


def _default_admin(config: Config) -> Any:
    """The TokenAdmin for where tokens live (`[store] backend`)."""
    from mailmfa.entry.common import build_token_admin

    return build_token_admin(config)


def system_full_name(user: str) -> str:
    """The full name of a system account: the first GECOS field (chfn's "Full Name"), or ""."""
    import pwd

    try:
        gecos = pwd.getpwnam(user).pw_gecos
    except (KeyError, ValueError):
        return ""
    return gecos.split(",", 1)[0].strip()[:MAX_DISPLAY_NAME]


def ldap_display_name(ldap: Any, dn: str) -> str:
    """displayName, else cn, of the LDAP entry `dn`; "" when it has neither.

    LdapDirectory has no public attribute read; its search keeps timeouts and outage
    handling (BackendUnavailable) in one place."""
    search = getattr(ldap, "_search", None)
    if search is None or not dn:
        return ""
    found = search(dn, "(objectClass=*)", "BASE", ["displayName", "cn"], 1)
    if not found:
        return ""
    attrs = {k.lower(): v for k, v in found[0]["attrs"].items()}
    for name in ("displayname", "cn"):
        if attrs.get(name):
            return str(attrs[name][0].decode("utf-8", "replace"))[:MAX_DISPLAY_NAME]
    return ""


def display_name(config: Config, directory: Any, user: str, dn: str) -> str:
    """The name the profile shows, read where the account lives, which is where the
    password is checked: the system account's GECOS name for `[password] backend = "pam"`,
    the LDAP entry's displayName/cn for "ldap". "" when there is none (the page then shows
    the login name). `dn` is the token state's dn: an LDAP DN only when tokens are in LDAP."""
    if config.password.backend == "pam":
        return system_full_name(user)
    if config.store.backend == "ldap":
        return ldap_display_name(directory, dn)
    # SQLite tokens, LDAP passwords: CombinedDirectory(store, LdapPassword(LdapDirectory))
    ldap = getattr(getattr(directory, "password", None), "directory", None)
    record = ldap.lookup(user) if ldap is not None else None
    return ldap_display_name(ldap, record.dn) if record is not None else ""


def create_app(
    config: Config,
    *,
    directory_factory: Callable[[Config], Any] = _default_directory,
    admin_factory: Callable[[Config], Any] = _default_admin,
    clock: Callable[[], float] = time.time,
    store: SessionStore | None = None,
) -> Flask:
    """Build the WSGI app. Factories and clock are parameters so tests and other backends
    can supply their own; one directory/admin connection is made per request and closed."""
    web = config.web
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=MAX_FORM, TEMPLATES_AUTO_RELOAD=False)
    app.jinja_env.undefined = StrictUndefined
    app.jinja_env.autoescape = True
    if web.proxy_hops:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=web.proxy_hops, x_proto=web.proxy_hops,
                                x_host=web.proxy_hops, x_prefix=web.proxy_hops)  # type: ignore[method-assign]
    sessions = store or SessionStore(web.state_dir, web.session_timeout, clock=clock)
    cookie_name = "__Host-mailmfa" if web.secure_cookies else "mailmfa"
    site_name = web.site_name or config.totp.issuer
    t = strings.STRINGS

    # ------------------------------------------------------------------ plumbing
    def sess() -> Session:
        return g.session  # type: ignore[no-any-return]

    def directory():
        if "directory" not in g:
            g.directory = directory_factory(config)
        return g.directory

    def admin():
        if "admin" not in g:
            g.admin = admin_factory(config)
        return g.admin

    def emit(event: str, **fields: object) -> None:
        log.emit({"service": SERVICE, "event": event, "rip": request.remote_addr or None, **fields})

    def csrf_token() -> str:
        s = sess()
        token = s.get("csrf")
        if not token:
            token = new_csrf_token()
            s["csrf"] = token
        return str(token)

    def render(template: str, status: int = 200, **ctx: Any) -> Response:
        s = sess()
        ctx.setdefault("notice", s.pop(NOTICE, None))
        body = render_template(template, t=t, lang=strings.LANG, site_name=site_name, signed_in=s.get(USER),
                               csrf_field=CSRF_FIELD, csrf_token=csrf_token, **ctx)
        return Response(body, status=status, mimetype="text/html")

    def notice_redirect(endpoint: str, notice: str | None = None) -> Response:
        if notice:
            sess()[NOTICE] = notice
        return redirect(url_for(endpoint), code=303)  # type: ignore[return-value]

    @app.before_request
    def _open_session() -> Response | None:
        g.session = sessions.load(request.cookies.get(cookie_name))
        if request.method == "POST":
            if not csrf_ok(request.form.get(CSRF_FIELD), g.session.get("csrf")):
                emit("csrf_refused", path=request.path)
                return render("message.html", 403, title=t.error_title, message=t.error_csrf)
        return None

    @app.after_request
    def _finish(resp: Response) -> Response:
        for name, value in HEADERS.items():
            resp.headers.setdefault(name, value)
        if request.endpoint != "static":
            resp.headers["Cache-Control"] = "no-store"
            resp.headers["Pragma"] = "no-cache"
        s: Session | None = g.get("session")
        if s is not None:
            value = sessions.save(s)
            if value is not None:
                resp.set_cookie(cookie_name, value, httponly=True, secure=web.secure_cookies,
                                samesite="Strict", path="/", max_age=None if value else 0)
            resp.vary.add("Cookie")
        return resp

    @app.teardown_request
    def _close(_exc: BaseException | None) -> None:
        for name in ("directory", "admin"):
            backend = g.pop(name, None)
            if backend is not None:
                try:
                    backend.close()
                except Exception:  # noqa: BLE001 - closing must never turn into an error page
                    pass

    @app.errorhandler(BackendUnavailable)
    def _unavailable(exc: BackendUnavailable) -> Response:
        emit("error", result="tempfail", reason=exc.reason, user=sess().get(USER) or None)
        return render("message.html", 503, title=t.error_title, message=t.error_unavailable)

    @app.errorhandler(AdminError)
    def _admin_error(exc: AdminError) -> Response:
        # UnknownUser for a signed-in user: the entry was removed or renamed meanwhile
        emit("error", result="fail", reason=type(exc).__name__, user=sess().get(USER) or None)
        if isinstance(exc, UnknownUser):
            sess().end()
        return render("message.html", 503, title=t.error_title, message=t.error_unavailable)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        text = {404: t.error_not_found, 413: t.error_too_large}.get(exc.code or 400, t.error_bad_request)
        if "session" not in g:
            g.session = sessions.new()
        return render("message.html", exc.code or 400, title=t.error_title, message=text)

    # ------------------------------------------------------------------ helpers
    def current_user() -> str | None:
        return sess().get(USER)

    def require_user() -> str:
        user = current_user()
        if not user:
            abort(_to_login())
        return str(user)

    def _to_login() -> Response:
        return redirect(url_for("login"), code=303)  # type: ignore[return-value]

    def sign_in(user: str) -> None:
        s = sess()
        for key in (PENDING_LOGIN, LOGIN_AT, CODE_TRIES, CODE_DIGITS, REAUTH_AT, REAUTH_FAILS, ENROL_AT):
            s.pop(key)
        s.drop_sealed(SEALED_PASSWORD)
        s.drop_sealed(SEALED_SECRET)
        s[USER] = user
        s["csrf"] = new_csrf_token()
        s.rotate()

    def reauth_fresh() -> bool:
        at = sess().get(REAUTH_AT)
        return isinstance(at, (int, float)) and 0 <= clock() - at <= web.reauth_timeout

    def authenticate(user: str, secret: str):
        """The mail login's decision, without the reuse window: a browser sign-in is one
        deliberate request, not a mail client's burst of parallel connections, so a
        password+code is good here exactly once (strict replay refusal). Nor does a web
        sign-in leave an entry a mail login (or another sign-in from the same address)
        could reuse."""
        from mailmfa.service import authenticate as core_authenticate

        req = AuthRequest(user, secret, SERVICE, request.remote_addr or "")
        return core_authenticate(req, directory(), config, clock(), allow_reuse=False)

    def token_state(user: str):
        return admin().token_state(user)

    def field(name: str, limit: int) -> str:
        value = request.form.get(name, "")
        if len(value) > limit:
            abort(400)
        return value

    # ------------------------------------------------------------------ sign in
    @app.get("/")
    def index() -> Response:
        return redirect(url_for("profile" if current_user() else "login"), code=303)  # type: ignore[return-value]

    @app.route("/login", methods=["GET", "POST"])
    def login() -> Response:
        if current_user():
            return redirect(url_for("profile"), code=303)  # type: ignore[return-value]
        if request.method == "GET":
            return render("login.html", title=t.sign_in_title, error=None, login="")
        from mailmfa.service import BAD_INPUT, NO_TOKEN

        user = field("login", MAX_LOGIN).strip()
        password = field("password", MAX_PASSWORD)
        if not user or not password:
            return render("login.html", 400, title=t.sign_in_title, error=t.sign_in_missing, login=user)
        record = directory().lookup(user)
        if record is not None and record.token is not None and not getattr(record, "password_reset", False):
            # 2FA on: the password is checked together with the code, as a mail login is,
            # so this screen never tells whether the password alone was right.
            s = sess()
            s[PENDING_LOGIN] = user
            s[LOGIN_AT] = clock()
            s[CODE_TRIES] = 0
            s[CODE_DIGITS] = record.token.params.digits
            s.seal(SEALED_PASSWORD, password.encode("utf-8"))
            return redirect(url_for("login_code"), code=303)  # type: ignore[return-value]
        outcome = authenticate(user, password)
        if outcome.verdict is Verdict.TEMPFAIL:
            raise BackendUnavailable(outcome.reason)
        # NO_TOKEN comes only after the password matched: such a user must be able to
        # sign in here, precisely to turn 2FA on.
        if outcome.verdict is Verdict.ACCEPT or outcome.reason == NO_TOKEN:
            emit("login", result="ok", user=user, reason=outcome.reason)
            sign_in(user)
            return redirect(url_for("profile"), code=303)  # type: ignore[return-value]
        emit("login", result="fail", user=user if outcome.reason != BAD_INPUT else None, reason=outcome.reason)
        return render("login.html", 401, title=t.sign_in_title, error=t.sign_in_failed, login=user)

    def _pending_login() -> tuple[str, str] | None:
        s = sess()
        user, at = s.get(PENDING_LOGIN), s.get(LOGIN_AT)
        if not user or not isinstance(at, (int, float)) or not 0 <= clock() - at <= CODE_STAGE_SECONDS:
            return None
        raw = s.unseal(SEALED_PASSWORD)
        if raw is None:
            return None
        return str(user), raw.decode("utf-8")

    def _drop_pending_login() -> None:
        s = sess()
        for key in (PENDING_LOGIN, LOGIN_AT, CODE_TRIES, CODE_DIGITS):
            s.pop(key)
        s.drop_sealed(SEALED_PASSWORD)

    @app.route("/login/code", methods=["GET", "POST"])
    def login_code() -> Response:
        pending = _pending_login()
        if pending is None:
            _drop_pending_login()
            return notice_redirect("login", t.sign_in_again if request.method == "POST" else None)
        user, password = pending
        digits = int(sess().get(CODE_DIGITS, config.totp.digits))
        if request.method == "GET":
            return render("code.html", title=t.code_title, error=None, user=user, digits=digits)
        from mailmfa.core.split import is_code

        code = field("code", 64).strip().replace(" ", "")
        if not is_code(code, digits):
            return render("code.html", 400, title=t.code_title, error=t.code_format.format(digits=digits),
                          user=user, digits=digits)
        outcome = authenticate(user, password + code)
        if outcome.verdict is Verdict.TEMPFAIL:
            raise BackendUnavailable(outcome.reason)
        if outcome.verdict is Verdict.ACCEPT:
            emit("login", result="ok", user=user, reason=outcome.reason, step=outcome.step)
            sign_in(user)
            return redirect(url_for("profile"), code=303)  # type: ignore[return-value]
        emit("login", result="fail", user=user, reason=outcome.reason)
        s = sess()
        s[CODE_TRIES] = int(s.get(CODE_TRIES, 0)) + 1
        if s[CODE_TRIES] >= MAX_CODE_TRIES:
            _drop_pending_login()
            return notice_redirect("login", t.sign_in_again)
        return render("code.html", 401, title=t.code_title, error=t.code_failed, user=user, digits=digits)

    @app.post("/login/cancel")
    def login_cancel() -> Response:
        _drop_pending_login()
        return redirect(url_for("login"), code=303)  # type: ignore[return-value]

    @app.post("/logout")
    def logout() -> Response:
        user = current_user()
        if user:
            emit("logout", user=user)
        sess().end()
        return redirect(url_for("login"), code=303)  # type: ignore[return-value]

    # ------------------------------------------------------------------ profile
    @app.get("/profile")
    def profile() -> Response:
        user = require_user()
        state = token_state(user)
        name = display_name(config, directory(), user, state.dn) or user
        return render("profile.html", title=t.profile_title, user=user, name=name, state=state)

    # ------------------------------------------------------------------ confirm password
    @app.route("/2fa", methods=["GET", "POST"])
    def mfa() -> Response:
        user = require_user()
        state = token_state(user)
        # with slapd's otp overlay an enrolled user's bind needs password+code: ask for both
        need_code = bool(config.ldap.otp_overlay and state.enrolled)
        if request.method == "GET":
            return render("reauth.html", title=t.mfa_title, state=state, error=None, need_code=need_code)
        password = field("password", MAX_PASSWORD)
        code = field("code", 64).strip().replace(" ", "") if need_code else ""
        ok = False
        if password and need_code:
            outcome = authenticate(user, password + code)
            if outcome.verdict is Verdict.TEMPFAIL:
                raise BackendUnavailable(outcome.reason)
            ok = outcome.verdict is Verdict.ACCEPT
        elif password:
            record = directory().lookup(user)
            if record is None:
                sess().end()
                return _to_login()
            if record.token is None:
                from mailmfa.service import NO_TOKEN

                outcome = authenticate(user, password)
                if outcome.verdict is Verdict.TEMPFAIL:
                    raise BackendUnavailable(outcome.reason)
                ok = outcome.verdict is Verdict.ACCEPT or outcome.reason == NO_TOKEN
            else:
                ok = directory().verify_password(record, password)
        s = sess()
        if not ok:
            s[REAUTH_FAILS] = int(s.get(REAUTH_FAILS, 0)) + 1
            emit("reauth", result="fail", user=user, fails=s[REAUTH_FAILS])
            if s[REAUTH_FAILS] >= MAX_REAUTH_FAILS:
                emit("logout", user=user, reason="reauth_failures")
                s.end()
                return _to_login()
            return render("reauth.html", 401, title=t.mfa_title, state=state, need_code=need_code,
                          error=t.reauth_failed_code if need_code else t.reauth_failed)
        emit("reauth", result="ok", user=user)
        s[REAUTH_AT] = clock()
        s[REAUTH_FAILS] = 0
        return redirect(url_for("manage"), code=303)  # type: ignore[return-value]

    def require_reauth(user: str) -> None:
        if not reauth_fresh():
            sess()[NOTICE] = t.reauth_expired
            abort(redirect(url_for("mfa"), code=303))

    @app.get("/2fa/manage")
    def manage() -> Response:
        user = require_user()
        require_reauth(user)
        state = token_state(user)
        return render("manage.html", title=t.mfa_title, state=state)

    # ------------------------------------------------------------------ enable
    def new_pending_secret() -> None:
        s = sess()
        s.seal(SEALED_SECRET, secrets.token_bytes(SECRET_BYTES))
        s[ENROL_AT] = clock()

    def pending_secret() -> bytes | None:
        s = sess()
        at = s.get(ENROL_AT)
        if not isinstance(at, (int, float)) or not 0 <= clock() - at <= ENROL_SECONDS:
            return None
        return s.unseal(SEALED_SECRET)

    def drop_pending_secret() -> None:
        sess().drop_sealed(SEALED_SECRET)
        sess().pop(ENROL_AT)

    def require_pending(user: str) -> bytes:
        require_reauth(user)
        secret = pending_secret()
        if secret is None:
            drop_pending_secret()
            sess()[NOTICE] = t.setup_expired
            abort(redirect(url_for("manage"), code=303))
        return secret

    @app.post("/2fa/enable")
    def enable() -> Response:
        user = require_user()
        require_reauth(user)
        if token_state(user).enrolled:
            return notice_redirect("manage", t.already_on)
        new_pending_secret()
        emit("enrol_start", user=user)
        return redirect(url_for("apps"), code=303)  # type: ignore[return-value]

    @app.get("/2fa/apps")
    def apps() -> Response:
        user = require_user()
        require_pending(user)
        return render("apps.html", title=t.apps_title, platforms=strings.PLATFORMS)

    def _setup_page(user: str, secret: bytes, error: str | None = None, status: int = 200) -> Response:
        import segno

        from mailmfa.core.enroll import grouped_key, otpauth_uri

        params = admin().enrolment_params()
        uri = otpauth_uri(secret, user, config.totp.issuer, params)
        qr = segno.make(uri, error="m")
        svg = qr.svg_inline(scale=1, border=2, omitsize=True, svgclass="qr", lineclass="qr-line",
                            title=t.qr_title, dark="#111")
        return render("setup.html", status, title=t.setup_title, svg=svg, key=grouped_key(secret),
                      account=user, issuer=config.totp.issuer, params=params, error=error)

    @app.get("/2fa/setup")
    def setup() -> Response:
        user = require_user()
        secret = require_pending(user)
        return _setup_page(user, secret)

    @app.post("/2fa/restart")
    def restart() -> Response:
        user = require_user()
        require_reauth(user)
        new_pending_secret()
        emit("enrol_restart", user=user)
        return notice_redirect("setup", t.started_over)

    @app.post("/2fa/verify")
    def verify() -> Response:
        from mailmfa.backends.ports import AlreadyEnrolled
        from mailmfa.core.enroll import NewToken, normalize_code, verify_first_code

        user = require_user()
        secret = require_pending(user)
        params = admin().enrolment_params()
        code = normalize_code(field("pin", 64), params.digits)
        now = clock()
        step = verify_first_code(secret, code, now, params) if code else None
        if step is None:
            emit("enrol_verify", result="fail", user=user)
            return _setup_page(user, secret, t.pin_failed, 422)
        try:
            # the activation code's step is recorded as used: it cannot be replayed
            admin().write_token(user, NewToken(secret, params, now, step))
        except AlreadyEnrolled:
            drop_pending_secret()
            return notice_redirect("manage", t.already_on)
        drop_pending_secret()
        sess().pop(REAUTH_AT)
        sess()[DONE] = "enabled"
        emit("mfa_enabled", user=user, step=step)
        return redirect(url_for("enabled"), code=303)  # type: ignore[return-value]

    @app.get("/2fa/enabled")
    def enabled() -> Response:
        require_user()
        if sess().get(DONE) != "enabled":
            return redirect(url_for("profile"), code=303)  # type: ignore[return-value]
        sess().pop(DONE)
        return render("enabled.html", title=t.enabled_title)

    # ------------------------------------------------------------------ disable
    @app.post("/2fa/disable")
    def disable() -> Response:
        user = require_user()
        require_reauth(user)
        removed = admin().remove_token(user)
        drop_pending_secret()
        sess().pop(REAUTH_AT)
        sess()[DONE] = "disabled"
        emit("mfa_disabled", user=user, removed=str(bool(removed)).lower())
        return redirect(url_for("disabled"), code=303)  # type: ignore[return-value]

    @app.get("/2fa/disabled")
    def disabled() -> Response:
        require_user()
        if sess().get(DONE) != "disabled":
            return redirect(url_for("profile"), code=303)  # type: ignore[return-value]
        sess().pop(DONE)
        return render("disabled.html", title=t.disabled_title)

    @app.post("/2fa/cancel")
    def cancel() -> Response:
        require_user()
        drop_pending_secret()
        sess().pop(REAUTH_AT)
        return redirect(url_for("profile"), code=303)  # type: ignore[return-value]

    # ------------------------------------------------------------------ help
    @app.get("/help")
    def help_page() -> Response:
        return render("help.html", title=t.help_title, sections=strings.HELP)

    return app
