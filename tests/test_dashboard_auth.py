"""The dashboard's security, unit by unit and through its real Flask app on a real SQLite
broker and backend: credentials and the one-time token, the login rate limit, the bind
refusal, the Origin check, cookie flags, roles enforced by the server, escaping, /metrics'
token. (Browser scenarios: tests/browser/.)"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("flask")

from werkzeug.security import check_password_hash, generate_password_hash

from celeriac import Celeriac
from celeriac.backends.base import ResultRecord
from celeriac.dashboard import create_app
from celeriac.dashboard.auth import (
    ADMIN,
    LOGIN_ATTEMPTS,
    VIEWER,
    Credentials,
    LoginLimiter,
    check_bind,
    is_loopback,
    same_origin,
)
from celeriac.exceptions import ConfigurationError

ADMIN_PASSWORD = "correct horse battery staple"
VIEWER_PASSWORD = "viewer only please"
#: Cheap hashes: the tests make many (the default scrypt costs are for real passwords).
ADMIN_HASH = generate_password_hash(ADMIN_PASSWORD, "pbkdf2:sha256:1000")
VIEWER_HASH = generate_password_hash(VIEWER_PASSWORD, "pbkdf2:sha256:1000")
ORIGIN = "http://localhost"


# -- units -----------------------------------------------------------------------------------
def test_limiter_blocks_after_the_attempts_and_forgives_after_the_window() -> None:
    now = [1000.0]
    limiter = LoginLimiter(attempts=3, window=60.0, clock=lambda: now[0])
    for _ in range(3):
        assert limiter.retry_after("10.0.0.1") == 0.0
        limiter.failed("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") == pytest.approx(60.0)
    assert limiter.retry_after("10.0.0.2") == 0.0  # per client address
    now[0] += 30
    assert limiter.retry_after("10.0.0.1") == pytest.approx(30.0)
    now[0] += 30.5
    assert limiter.retry_after("10.0.0.1") == 0.0
    limiter.failed("10.0.0.1")
    limiter.succeeded("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") == 0.0


def test_token_logs_in_once_as_admin() -> None:
    credentials = Credentials.from_settings(Celeriac("t", broker_url="memory://").conf)
    assert not credentials.configured and credentials.token
    assert credentials.check("not it") is None
    assert credentials.check(credentials.token) == ADMIN
    assert credentials.check(credentials.token) is None  # spent


def test_hashes_from_settings_and_file(tmp_path: Path) -> None:
    conf = Celeriac("t", broker_url="memory://", dashboard_admin_password_hash=ADMIN_HASH).conf
    credentials = Credentials.from_settings(conf)
    assert credentials.configured and credentials.token is None
    assert credentials.check(ADMIN_PASSWORD) == ADMIN
    assert credentials.check(VIEWER_PASSWORD) is None
    path = tmp_path / "passwords"
    path.write_text(f"# roles\nviewer:{VIEWER_HASH}\n\n")
    conf = Celeriac("t", broker_url="memory://", dashboard_password_file=str(path)).conf
    credentials = Credentials.from_settings(conf)
    assert credentials.check(VIEWER_PASSWORD) == VIEWER
    assert credentials.check(ADMIN_PASSWORD) is None


def test_a_plain_password_where_a_hash_belongs_is_refused(tmp_path: Path) -> None:
    conf = Celeriac("t", broker_url="memory://", dashboard_admin_password_hash="secret").conf
    with pytest.raises(ConfigurationError, match="--hash-password"):
        Credentials.from_settings(conf)
    path = tmp_path / "passwords"
    path.write_text("root:pbkdf2:sha256:1$x$y\n")
    conf = Celeriac("t", broker_url="memory://", dashboard_password_file=str(path)).conf
    with pytest.raises(ConfigurationError, match="admin:HASH"):
        Credentials.from_settings(conf)


def test_bind_beyond_loopback_needs_credentials() -> None:
    token_only = Credentials(token="x")
    for address in ("127.0.0.1", "127.1.2.3", "::1", "localhost"):
        assert is_loopback(address)
        check_bind(address, token_only)
    for address in ("0.0.0.0", "::", "192.168.1.5", "example.org"):
        with pytest.raises(ConfigurationError, match="no password configured"):
            check_bind(address, token_only)
        check_bind(address, Credentials(hashes={VIEWER: VIEWER_HASH}))


def test_same_origin() -> None:
    host = "http://127.0.0.1:5555/"
    assert same_origin("http://127.0.0.1:5555", None, host)
    assert same_origin(None, "http://127.0.0.1:5555/queues", host)
    assert not same_origin("http://evil.example", "http://127.0.0.1:5555/queues", host)
    assert same_origin("https://127.0.0.1:5555", None, host)  # TLS ended by a proxy
    assert not same_origin("http://127.0.0.1:5556", None, host)
    assert not same_origin("http://127.0.0.1.evil.example:5555", None, host)
    assert not same_origin("null", None, host)
    assert not same_origin(None, None, host)


# -- the app -----------------------------------------------------------------------------------
@pytest.fixture
def celeriac_app(tmp_path: Path) -> Iterator[Celeriac]:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    app = Celeriac("dash", broker_url=url, result_backend=url, dashboard_metrics_token="scrape-me",
                   dashboard_admin_password_hash=ADMIN_HASH,
                   dashboard_viewer_password_hash=VIEWER_HASH)

    @app.task(name="add")
    def add(x: int, y: int) -> int:
        return x + y

    yield app
    app.close()


def _client(flask: Any) -> Any:
    return flask.test_client()


def _login(client: Any, password: str) -> Any:
    return client.post("/login", data={"password": password}, headers={"Origin": ORIGIN})


def test_pages_need_a_login_and_a_wrong_password_is_refused(celeriac_app: Celeriac) -> None:
    client = _client(create_app(celeriac_app))
    response = client.get("/queues")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")
    refresh = client.get("/queues?fragment=1", headers={"HX-Request": "true"})
    assert refresh.status_code == 401 and refresh.headers["HX-Redirect"] == "/login"
    # From the page it refreshes: back there after logging in; never to another site.
    for current, target in [("http://localhost/workers", "/login?next=/workers"),
                            ("http://localhost/dead?queue=a", "/login?next=/dead?queue%3Da"),
                            ("http://evil.example/steal", "/login"),
                            ("http://localhost//evil.example", "/login")]:
        refresh = client.get("/workers?fragment=1",
                             headers={"HX-Request": "true", "HX-Current-URL": current})
        assert refresh.status_code == 401 and refresh.headers["HX-Redirect"] == target
    assert _login(client, "wrong").status_code == 401
    assert client.get("/queues").status_code == 302
    assert client.get("/healthz").status_code == 200  # public, and says nothing secret
    response = _login(client, ADMIN_PASSWORD)
    assert response.status_code == 302
    assert client.get("/queues").status_code == 200


def test_login_is_rate_limited(celeriac_app: Celeriac) -> None:
    client = _client(create_app(celeriac_app))
    for _ in range(LOGIN_ATTEMPTS):
        assert _login(client, "wrong").status_code == 401
    response = _login(client, ADMIN_PASSWORD)  # even the right one, until the window passes
    assert response.status_code == 429
    assert b"Too many failed logins" in response.data


def test_session_cookie_flags(celeriac_app: Celeriac) -> None:
    for tls, secure in ((False, False), (True, True)):
        client = _client(create_app(celeriac_app, tls=tls))
        cookie = _login(client, VIEWER_PASSWORD).headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert ("; Secure" in cookie) is secure


def test_posts_need_the_dashboards_origin(celeriac_app: Celeriac) -> None:
    client = _client(create_app(celeriac_app))
    assert client.post("/login", data={"password": ADMIN_PASSWORD}).status_code == 403
    assert client.post("/login", data={"password": ADMIN_PASSWORD},
                       headers={"Origin": "http://evil.example"}).status_code == 403
    _login(client, ADMIN_PASSWORD)
    celeriac_app.tasks["add"].delay(1, 2)
    assert client.post("/queues/celery/purge",
                       headers={"Origin": "http://evil.example"}).status_code == 403
    assert client.post("/queues/celery/purge",
                       headers={"Referer": "http://evil.example/x"}).status_code == 403
    assert celeriac_app.broker.stats()["celery"].ready == 1


def test_a_viewer_cannot_act_whatever_it_sends(celeriac_app: Celeriac) -> None:
    client = _client(create_app(celeriac_app))
    _login(client, VIEWER_PASSWORD)
    result = celeriac_app.tasks["add"].delay(1, 2)
    assert b"Purge" not in client.get("/queues").data
    assert client.get("/queues/celery/purge").status_code == 403
    assert client.post("/queues/celery/purge", headers={"Origin": ORIGIN}).status_code == 403
    assert client.post(f"/tasks/{result.id}/revoke", data={"terminate": "1"},
                       headers={"Origin": ORIGIN}).status_code == 403
    assert celeriac_app.broker.stats()["celery"].ready == 1
    assert celeriac_app.broker.revocations() == []
    admin = _client(create_app(celeriac_app))
    _login(admin, ADMIN_PASSWORD)
    assert b"Purge" in admin.get("/queues").data
    assert admin.post("/queues/celery/purge", headers={"Origin": ORIGIN}).status_code == 302
    assert celeriac_app.broker.stats()["celery"].ready == 0
    assert admin.post(f"/tasks/{result.id}/revoke", data={"terminate": "1"},
                      headers={"Origin": ORIGIN}).status_code == 302
    [revocation] = celeriac_app.broker.revocations()
    assert revocation.task_id == result.id and revocation.terminate


def test_a_new_password_ends_the_old_sessions(celeriac_app: Celeriac) -> None:
    flask = create_app(celeriac_app, secret_key="fixed")
    client = _client(flask)
    _login(client, ADMIN_PASSWORD)
    assert client.get("/queues").status_code == 200
    flask.extensions["celeriac_dashboard"].credentials.hashes[ADMIN] = generate_password_hash(
        "new one", "pbkdf2:sha256:1000")
    assert client.get("/queues").status_code == 302


def test_markup_in_task_arguments_is_escaped(celeriac_app: Celeriac) -> None:
    payload = "<script>window.pwned = 1</script><img src=x onerror=alert(1)>"
    celeriac_app.backend.store(ResultRecord("xss-task", "SUCCESS", result=payload,
                                            name="<b>name</b>", args=[payload],
                                            kwargs={"k": payload}))
    client = _client(create_app(celeriac_app))
    _login(client, VIEWER_PASSWORD)
    response = client.get("/tasks/xss-task")
    html = response.data.decode()
    assert "<script>window.pwned" not in html and "<img src=x" not in html
    assert "&lt;script&gt;window.pwned" in html and "&lt;b&gt;name&lt;/b&gt;" in html
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]


def test_the_login_redirect_stays_on_the_site(celeriac_app: Celeriac) -> None:
    client = _client(create_app(celeriac_app))
    for target, expected in (("/dead", "/dead"), ("//evil.example/", "/"),
                             ("https://evil.example/", "/")):
        response = client.post(f"/login?next={target}", data={"password": ADMIN_PASSWORD},
                               headers={"Origin": ORIGIN})
        assert response.headers["Location"] == expected


def test_metrics_need_their_own_token(celeriac_app: Celeriac) -> None:
    celeriac_app.tasks["add"].delay(1, 2)
    client = _client(create_app(celeriac_app))
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    _login(client, ADMIN_PASSWORD)  # a session is not the token
    assert client.get("/metrics").status_code == 401
    response = client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
    assert response.status_code == 200
    text = response.data.decode()
    assert 'celeriac_queue_messages{queue="celery",state="ready"} 1' in text
    assert "celeriac_workers 0" in text
    off = Celeriac("off", broker_url="memory://", dashboard_admin_password_hash=ADMIN_HASH)
    assert _client(create_app(off)).get(
        "/metrics", headers={"Authorization": "Bearer scrape-me"}).status_code == 404


# -- the command -------------------------------------------------------------------------------
def test_cli_refuses_another_address_without_credentials(tmp_path: Path) -> None:
    (tmp_path / "proj.py").write_text(
        "from celeriac import Celeriac\n"
        f"app = Celeriac('proj', broker_url='sqlite:///{tmp_path / 'c.db'}')\n")
    proc = subprocess.run([sys.executable, "-m", "celeriac", "-A", "proj", "dashboard",
                           "--address", "0.0.0.0", "--port", "0"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "no password configured" in proc.stderr


def test_cli_hashes_a_password_without_an_app() -> None:
    proc = subprocess.run([sys.executable, "-m", "celeriac", "dashboard", "--hash-password"],
                          input="s3cret\n", capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    hashed = proc.stdout.strip()
    assert re.match(r"^(scrypt|pbkdf2):", hashed)
    assert check_password_hash(hashed, "s3cret")
