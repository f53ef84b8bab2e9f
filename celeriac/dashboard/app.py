"""The Flask application: :func:`create_app` wires the pages (:mod:`.overview`,
:mod:`.views`, :mod:`.messages`), the live tail
(:mod:`.live`) and /metrics (:mod:`.metrics`) to one :class:`~.data.DashboardData`, behind
the checks of :mod:`.auth` that every request passes (in :func:`_guard`):

1. /static, /healthz, /metrics (its own token) and /login need no session; every other
   path does, and a missing or stale one is sent to /login;
2. a POST must come from the dashboard's own origin, whoever sends it;
3. every response carries a strict Content-Security-Policy (scripts and styles from
   /static only: an injected ``<script>`` would not run even if escaping failed), no
   framing, no sniffing.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import urlsplit

from flask import (
    Flask,
    Response,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from celeriac.dashboard import auth
from celeriac.dashboard.data import DashboardData, Runner, _direct

if TYPE_CHECKING:
    from werkzeug.wrappers import Response as BaseResponse

    from celeriac.app import Celeriac

F = TypeVar("F", bound=Callable[..., Any])

#: Paths that need no session: assets, the health check, /metrics (its own token), login.
PUBLIC_ENDPOINTS = frozenset({"static", "pages.healthz", "metrics.metrics", "login"})
#: How long a login lasts.
SESSION_LIFETIME = timedelta(hours=12)
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")


@dataclass
class Dashboard:
    """What the requests of one dashboard share (``current_app.extensions``)."""

    app: Celeriac
    data: DashboardData
    credentials: auth.Credentials
    limiter: auth.LoginLimiter = field(default_factory=auth.LoginLimiter)
    #: Sleep that lets other requests run meanwhile (gevent's, under the server).
    sleep: Callable[[float], None] = field(default=lambda seconds: None)


def dashboard() -> Dashboard:
    return cast(Dashboard, current_app.extensions["celeriac_dashboard"])


def role() -> str | None:
    """The role of this request's session (set by :func:`_guard`)."""
    return cast("str | None", g.get("role"))


def admin_required(view: F) -> F:
    """An action: only an admin's session may run it; a viewer gets 403 whatever it sends."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if role() != auth.ADMIN:
            abort(403, "only an admin may do this")
        return view(*args, **kwargs)

    return cast(F, wrapper)


def create_app(app: Celeriac, *, credentials: auth.Credentials | None = None,
               call: Runner = _direct, tls: bool = False, secret_key: str | None = None,
               sleep: Callable[[float], None] | None = None) -> Flask:
    """The dashboard of ``app``: a Flask app to serve with any WSGI server
    (:mod:`celeriac.dashboard.server` serves it with gevent's)."""
    flask = Flask("celeriac.dashboard")
    conf = app.conf
    flask.config.update(
        SECRET_KEY=secret_key or conf.dashboard_secret_key or os.urandom(32).hex(),
        SESSION_COOKIE_NAME="celeriac_dashboard",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=tls,
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
        MAX_CONTENT_LENGTH=64 * 1024,
    )
    import gevent

    flask.extensions["celeriac_dashboard"] = Dashboard(
        app=app, data=DashboardData(app, call),
        credentials=credentials if credentials is not None else auth.Credentials.from_settings(conf),
        sleep=sleep or gevent.sleep)
    flask.before_request(_guard)
    flask.after_request(_headers)
    flask.add_url_rule("/login", "login", _login, methods=["GET", "POST"])
    flask.add_url_rule("/logout", "logout", _logout, methods=["POST"])
    flask.context_processor(lambda: {"role": role(), "admin": role() == auth.ADMIN,
                                     "redact": bool(conf.dashboard_redact_args)})
    from celeriac.dashboard import filters, live, messages, metrics, overview, views

    filters.register(flask)
    flask.register_blueprint(overview.overview)
    flask.register_blueprint(views.pages)
    flask.register_blueprint(messages.messages)
    flask.register_blueprint(live.live)
    flask.register_blueprint(metrics.metrics)
    return flask


def _guard() -> BaseResponse | None:
    if request.method == "POST" and not auth.same_origin(
            request.headers.get("Origin"), request.headers.get("Referer"), request.host_url):
        abort(403, "cross-origin request refused")
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    current = session.get("role")
    if current in auth.ROLES and session.get("cred") == dashboard().credentials.fingerprint(current):
        g.role = current
        return None
    session.clear()
    if request.headers.get("HX-Request"):
        # A refreshing table whose session ended (a logout in another tab, a changed
        # password): htmx reads HX-Redirect even on a 401 and takes the whole page to
        # /login, which brings the user back to the page after logging in again.
        back = _current_path(request.headers.get("HX-Current-URL"))
        return Response("login required", 401,
                        {"HX-Redirect": url_for("login", next=back) if back else url_for("login")})
    if request.method == "GET":
        return redirect(url_for("login", next=request.full_path.rstrip("?")))
    abort(401)


def _headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    if request.endpoint != "static":
        response.headers["Cache-Control"] = "no-store"
    return response


def _current_path(url: str | None) -> str | None:
    """The path (and query) of the page htmx refreshes from, if it is on this site."""
    if not url:
        return None
    parts = urlsplit(url)
    if parts.netloc and parts.netloc.lower() != urlsplit(request.host_url).netloc.lower():
        return None
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    return path if _safe_next(path) == path else None


def _safe_next(target: str | None) -> str:
    """Only a path of this site (never ``//elsewhere`` or a full URL): no open redirect."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("overview.index")


def _login() -> BaseResponse | str | tuple[str, int]:
    state = dashboard()
    if request.method == "GET":
        return render_template("login.html", token=not state.credentials.configured)
    client = request.remote_addr or "?"
    wait = state.limiter.retry_after(client)
    if wait > 0:
        return render_template("login.html", token=not state.credentials.configured,
                               error=f"Too many failed logins: try again in {wait:.0f} s."), 429
    granted = state.credentials.check(request.form.get("password", ""))
    if granted is None:
        state.limiter.failed(client)
        return render_template("login.html", token=not state.credentials.configured,
                               error="Wrong password."), 401
    state.limiter.succeeded(client)
    session.clear()
    session.permanent = True
    session["role"] = granted
    session["cred"] = state.credentials.fingerprint(granted)
    flash(f"Logged in as {granted}.")
    return redirect(_safe_next(request.args.get("next")))


def _logout() -> BaseResponse:
    session.clear()
    return redirect(url_for("login"))
