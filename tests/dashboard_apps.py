"""What the dashboard's Flask-level tests set up: an app on a real SQLite broker and
result backend in the test's directory, cheap password hashes, a logged-in test client."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from werkzeug.security import generate_password_hash

from celeriac import Celeriac
from celeriac.dashboard import create_app

ORIGIN = {"Origin": "http://localhost"}


def cheap_hash(password: str) -> str:
    """A password hash that is quick to check (real passwords get scrypt's cost)."""
    return generate_password_hash(password, "pbkdf2:sha256:1000")


def sqlite_app(tmp_path: Path, name: str, **settings: Any) -> Celeriac:
    """An app with broker and backend in ``tmp_path/c.db`` and a task ``add``; close it."""
    url = f"sqlite:///{tmp_path / 'c.db'}"
    app = Celeriac(name, broker_url=url, result_backend=url, **settings)

    @app.task(name="add")
    def add(x: int, y: int) -> int:
        return x + y

    return app


def logged_in(app: Celeriac, password: str) -> Any:
    """A test client of ``app``'s dashboard that has logged in with ``password`` (the
    response to the login is kept as ``client.login_response``)."""
    client = create_app(app).test_client()
    client.login_response = client.post("/login", data={"password": password}, headers=ORIGIN)
    return client
