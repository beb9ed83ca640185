"""Sign-in for the pages: an API key exchanged for a session cookie, CSRF tokens on forms, security headers.

The cookie is Flask's signed session holding the key's id (never the key) and
an expiry; every request looks the key up again (cached for
``auth.key_cache_seconds``), so revoking a key ends its sessions too. The
signing secret is generated on first start and kept in ``instance_settings``,
so sessions survive restarts and are shared by replicas of one store.
"""
from __future__ import annotations

import functools
import hmac
import secrets
from urllib.parse import urlsplit

from flask import Blueprint, abort, current_app, g, redirect, render_template, request, session, url_for
from flask.sessions import NullSession, SecureCookieSessionInterface

from monitor.foundation.auth import session_key
from monitor.foundation.storage import StoreError, StoreUnavailable
from monitor.foundation.tables import settings

bp = Blueprint("access", __name__)
SIGN_IN_SCOPES = ("read", "review")  # admin implies both

# Pages run only our own scripts (no inline code; data travels in JSON blocks). Plotly
# sets inline styles, hence 'unsafe-inline' for styles only. Evidently's report page sets its own.
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'self'")


def session_secret(store) -> str:
    return settings.get_or_create(store, "session_secret")


class _LazySecretSessions(SecureCookieSessionInterface):
    """Signs with the secret kept in the store, read on first use (the store may be down at start)."""

    def get_signing_serializer(self, app):
        if not app.secret_key:
            try:
                app.secret_key = session_secret(app.extensions["nlpmon"].store)
            except StoreError:
                return None  # no session this request: pages answer 503, API keys still work
        return super().get_signing_serializer(app)


def init_app(app) -> None:
    config = app.extensions["nlpmon"].config
    app.config.update(SESSION_COOKIE_NAME="nlpmon_session", SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SAMESITE="Lax", SESSION_COOKIE_SECURE=config.auth.cookie_secure,
                      PERMANENT_SESSION_LIFETIME=config.auth.session_lifetime)

    app.session_interface = _LazySecretSessions()

    @app.after_request
    def _headers(resp):
        h = resp.headers
        h.setdefault("X-Content-Type-Options", "nosniff")
        h.setdefault("Referrer-Policy", "same-origin")
        h.setdefault("X-Frame-Options", "SAMEORIGIN")
        if resp.mimetype == "text/html":
            h.setdefault("Content-Security-Policy", PAGE_CSP)
            h.setdefault("Cache-Control", "no-store")
        return resp

    app.jinja_env.globals["csrf_token"] = csrf_token


def csrf_token() -> str:
    if isinstance(session, NullSession):
        raise StoreUnavailable("sessions need the store, which is not answering")
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(24)
    return session["csrf"]


def check_csrf() -> None:
    sent = request.form.get("csrf_token", "")
    if not sent or not hmac.compare_digest(sent, session.get("csrf", "")):
        abort(400, "csrf_token: missing or stale form token; reload the page and try again")


def _safe_next(target: str | None) -> str:
    # Only a path on this site: an open redirect would hand the session to anyone's page.
    if not target:
        return url_for("pages.overview")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("pages.overview")
    return target


def page(scope: str):
    """Page decorator: sign-in page when not signed in, a 403 page when the key lacks ``scope``."""
    def wrap(view):
        @functools.wraps(view)
        def inner(*args, **kwargs):
            api_key = session_key()
            if api_key is None:
                session.pop("key_id", None)
                return redirect(url_for("access.login", next=request.full_path.rstrip("?")))
            g.api_key = api_key
            if not api_key.allows(scope):
                return render_template("error.html", status=403, title="Not allowed",
                                       message=f"Your key ({api_key.name}) lacks the '{scope}' scope this page "
                                               f"needs. Sign in with another key."), 403
            if request.method == "POST":
                check_csrf()
            return view(*args, **kwargs)
        inner.required_scope = scope
        return inner
    return wrap


@bp.route("/login", methods=["GET", "POST"])
def login():
    svc = current_app.extensions["nlpmon"]
    error = None
    if request.method == "POST":
        check_csrf()
        key = request.form.get("api_key", "").strip()
        api_key = svc.keys.authenticate(key) if key else None
        if not key:
            error = "api_key: paste an API key"
        elif api_key is None or api_key.revoked_at is not None:
            error = "api_key: not a valid key, or it was revoked"
        elif not any(api_key.allows(s) for s in SIGN_IN_SCOPES):
            error = f"api_key: this key has the scopes {', '.join(api_key.scopes)}; pages need read (or review)"
        else:
            session.clear()  # a fresh session (and CSRF token) for the new identity
            session.permanent = True
            session["key_id"] = api_key.key_id
            session["expires"] = (svc.clock.now() + svc.config.auth.session_lifetime).timestamp()
            target = request.args.get("next")
            if target is None and not api_key.allows("read"):
                target = url_for("pages.review")
            return redirect(_safe_next(target))
    status = 401 if error else 200
    return render_template("login.html", error=error, next=request.args.get("next", "")), status


@bp.post("/logout")
def logout():
    check_csrf()
    session.clear()
    return redirect(url_for("access.login"))
