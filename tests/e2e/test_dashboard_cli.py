"""``celeriac dashboard`` and ``worker --dashboard`` as processes, without a browser
(tests/browser drives the pages): the one-time token logs in once, /healthz and /metrics
answer, and the sidecar dashboard of a worker starts and stops with it, also when the
worker dies without stopping it."""

from __future__ import annotations

import http.client
import http.cookiejar
import re
import shutil
import signal
import ssl
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import psutil
import pytest
from browser.stack import ADMIN_PASSWORD, password_env, start_dashboard
from conftest import Project, wait_until

pytest.importorskip("flask")


def _opener() -> Any:
    return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))


def _post_login(opener: Any, url: str, password: str) -> int:
    body = urllib.parse.urlencode({"password": password}).encode()
    request = urllib.request.Request(f"{url}/login", body, headers={"Origin": url})
    try:
        with opener.open(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _status(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_the_one_time_token_logs_in_once(project: Project) -> None:
    env = {**project.env, "CELERIAC_DASHBOARD_METRICS_TOKEN": "t0ken"}
    dashboard = start_dashboard(project.path, env)
    try:
        token = re.search(r"one-time token (\S+)", dashboard.log())
        assert token is not None, dashboard.log()
        first, second = _opener(), _opener()
        assert _post_login(first, dashboard.url, "guess") == 401
        assert _post_login(first, dashboard.url, token.group(1)) == 200  # redirected to a page
        with first.open(f"{dashboard.url}/queues", timeout=10) as response:
            assert response.geturl().endswith("/queues")
        assert _post_login(second, dashboard.url, token.group(1)) == 401  # spent
        assert _status(f"{dashboard.url}/healthz")[0] == 200
        code, text = _status(f"{dashboard.url}/metrics", {"Authorization": "Bearer t0ken"})
        assert code == 200 and "celeriac_workers 0" in text
    finally:
        dashboard.stop()
    assert dashboard.proc.returncode == 0


def _sidecar(worker_pid: int) -> psutil.Process:
    def find() -> psutil.Process | None:
        for child in psutil.Process(worker_pid).children():
            if "dashboard" in child.cmdline():
                return child
        return None

    found: psutil.Process = wait_until(find, message="the sidecar dashboard")
    return found


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGKILL"])
def test_worker_dashboard_runs_beside_the_worker(project: Project, stop: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELERIAC_DASHBOARD_PORT", "0")  # the worker's environment
    worker = project.start_worker("--dashboard", "-P", "threads", "-c", "1")
    worker.wait_for_log("celeriac dashboard on http://127.0.0.1:")
    found = re.search(r"celeriac dashboard on (http\S+)/", worker.log())
    assert found is not None
    assert _status(f"{found.group(1)}/healthz")[0] == 200
    sidecar = _sidecar(worker.proc.pid)
    worker.signal(getattr(signal, stop))
    worker.wait(30)
    # Stopped by the worker (SIGTERM), or by itself once its worker is gone (SIGKILL).
    wait_until(lambda: not sidecar.is_running() or sidecar.status() == psutil.STATUS_ZOMBIE,
               message="the sidecar stopped")


def test_worker_dashboard_refuses_an_open_address_without_a_password(
        project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELERIAC_DASHBOARD_ADDRESS", "0.0.0.0")
    worker = project.start_worker("--dashboard", ready=False)
    assert worker.wait(30) == 1
    assert "no password configured" in worker.log()


def test_tls(project: Project) -> None:
    """--certfile/--keyfile: https, and the session cookie is marked Secure."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl not found (makes the test's self-signed certificate)")
    cert, key = project.path / "cert.pem", project.path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    env = {**project.env, **password_env(), "CELERIAC_DASHBOARD_CERTFILE": str(cert),
           "CELERIAC_DASHBOARD_KEYFILE": str(key)}
    dashboard = start_dashboard(project.path, env)
    try:
        assert dashboard.url.startswith("https://127.0.0.1:")
        host, port = dashboard.url.removeprefix("https://").split(":")
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False  # a certificate for a name, reached by address
        connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=10)
        body = urllib.parse.urlencode({"password": ADMIN_PASSWORD})
        connection.request("POST", "/login", body, {
            "Origin": dashboard.url, "Content-Type": "application/x-www-form-urlencoded"})
        response = connection.getresponse()
        assert response.status == 302
        cookie = response.getheader("Set-Cookie") or ""
        assert "; Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        connection.close()
    finally:
        dashboard.stop()
