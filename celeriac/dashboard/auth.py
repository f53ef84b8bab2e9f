"""Who may see the dashboard and who may act: credentials, login, roles, and the checks
every request passes.

Secure by default (docs/dashboard.md, "Security"):

* two roles: a **viewer** sees every page; an **admin** may also act (purge, revoke...).
  Every action is a POST behind :func:`admin_required`, so the server refuses a viewer
  whatever the page showed;
* passwords are never stored, only werkzeug hashes (``celeriac dashboard --hash-password``
  prints one), from the ``dashboard_*_password_hash`` settings (or their environment
  variables) or ``dashboard_password_file``; checking one is constant-time by construction
  (werkzeug compares digests with :func:`hmac.compare_digest`), as is the token's check;
* with no hash configured, :class:`Credentials` makes a **one-time token**: printed once at
  start, it logs in one browser as admin and is spent; such a dashboard may only listen on
  a loopback address (:func:`check_bind`), so nobody else can reach it in between;
* failed logins are limited per client address (:class:`LoginLimiter`);
* a session is a signed cookie (HttpOnly, SameSite=Strict, Secure under TLS) that holds the
  role and a fingerprint of the credential it was won with: changing a password ends the
  sessions won with the old one;
* a POST must come from the dashboard's own origin (``Origin``, else ``Referer``):
  :func:`same_origin`.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from celeriac.exceptions import ConfigurationError

F = TypeVar("F", bound=Callable[..., Any])

ADMIN = "admin"
VIEWER = "viewer"
ROLES = (ADMIN, VIEWER)
#: Failed logins one client address may make per window before it must wait.
LOGIN_ATTEMPTS = 5
#: The window of :data:`LOGIN_ATTEMPTS` (seconds).
LOGIN_WINDOW = 60.0
#: Client addresses the limiter remembers at most (the oldest are forgotten first).
LIMITER_KEYS = 10_000
#: The prefixes of werkzeug's password hashes; anything else is refused at start (a
#: plain password put where a hash belongs would otherwise never match, silently).
HASH_METHODS = ("scrypt:", "pbkdf2:")


def _fingerprint(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()[:24]


def _check_hash(role: str, value: str, where: str) -> str:
    value = value.strip()
    if not value.startswith(HASH_METHODS):
        raise ConfigurationError(
            f"{where}: the {role} password must be given as a hash (scrypt:... or pbkdf2:...); "
            "make one with: celeriac dashboard --hash-password")
    return value


@dataclass
class Credentials:
    """The password hashes of each role, or the one-time token when there are none."""

    hashes: dict[str, str] = field(default_factory=dict)
    #: The one-time token (None when a password is configured).
    token: str | None = None
    token_spent: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_settings(cls, conf: Any) -> Credentials:
        """From the settings and the password file; a token only when they hold no hash."""
        hashes: dict[str, str] = {}
        for role in ROLES:
            value = conf[f"dashboard_{role}_password_hash"]
            if value:
                hashes[role] = _check_hash(role, value, f"dashboard_{role}_password_hash")
        path = conf.dashboard_password_file
        if path:
            hashes.update(read_password_file(Path(path)))
        return cls(hashes=hashes, token=None if hashes else secrets.token_urlsafe(24))

    @property
    def configured(self) -> bool:
        """True when a password hash is configured (not only the one-time token)."""
        return bool(self.hashes)

    def check(self, password: str) -> str | None:
        """The role ``password`` logs in as, or None. The token works once."""
        from werkzeug.security import check_password_hash

        for role in ROLES:  # admin first: with equal passwords, the stronger role
            hashed = self.hashes.get(role)
            if hashed is not None and check_password_hash(hashed, password):
                return role
        if self.token is None:
            return None
        with self._lock:
            if self.token_spent or not hmac.compare_digest(self.token.encode(), password.encode()):
                return None
            self.token_spent = True
        return ADMIN

    def fingerprint(self, role: str) -> str | None:
        """What a session of ``role`` carries to stay valid: it changes with the credential."""
        hashed = self.hashes.get(role)
        if hashed is not None:
            return _fingerprint(hashed)
        if role == ADMIN and self.token is not None:
            return _fingerprint(self.token)
        return None


def read_password_file(path: Path) -> dict[str, str]:
    """``admin:HASH`` and ``viewer:HASH`` lines (blank lines and ``#`` comments skipped)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigurationError(f"dashboard_password_file {str(path)!r}: {exc}") from exc
    hashes: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        role, _, value = line.partition(":")
        if role not in ROLES or not value:
            raise ConfigurationError(f"{path}:{number}: expected admin:HASH or viewer:HASH")
        hashes[role] = _check_hash(role, value, f"{path}:{number}")
    return hashes


def is_loopback(address: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(address: str, credentials: Credentials) -> None:
    """Refuse to listen beyond this machine without a password configured."""
    if not is_loopback(address) and not credentials.configured:
        raise ConfigurationError(
            f"the dashboard would listen on {address}, reachable from other machines, with no "
            "password configured: set dashboard_admin_password_hash (or "
            "dashboard_viewer_password_hash, or dashboard_password_file; make a hash with "
            "celeriac dashboard --hash-password), or listen on 127.0.0.1")


class LoginLimiter:
    """At most :data:`LOGIN_ATTEMPTS` failed logins per client address per window.

    Kept in the process's memory, bounded: it guards this process's login form, and
    several dashboard processes each allow their own attempts (say so in the docs).
    """

    def __init__(self, attempts: int = LOGIN_ATTEMPTS, window: float = LOGIN_WINDOW,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.attempts = attempts
        self.window = window
        self.clock = clock
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> list[float]:
        times = [t for t in self._failures.get(key, ()) if now - t < self.window]
        if times:
            self._failures[key] = times
        else:
            self._failures.pop(key, None)
        return times

    def retry_after(self, key: str) -> float:
        """Seconds ``key`` must wait before it may try again (0: it may now)."""
        with self._lock:
            now = self.clock()
            times = self._recent(key, now)
            if len(times) < self.attempts:
                return 0.0
            return max(0.0, times[-self.attempts] + self.window - now)

    def failed(self, key: str) -> None:
        with self._lock:
            now = self.clock()
            times = self._recent(key, now)
            times.append(now)
            self._failures.pop(key, None)
            self._failures[key] = times  # newest last: the oldest keys go first
            while len(self._failures) > LIMITER_KEYS:
                del self._failures[next(iter(self._failures))]

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)


def same_origin(origin: str | None, referer: str | None, host_url: str) -> bool:
    """True when a POST comes from the dashboard's own pages.

    Browsers send ``Origin`` with every POST; ``Referer`` is the fallback for one that
    does not. Neither present: refused (a form on another site cannot forge either).
    The host and port are compared, not the scheme: behind a proxy that terminates TLS
    the browser says https and the dashboard sees http, for the same site.
    """
    expected = urlsplit(host_url)
    source = origin if origin and origin != "null" else referer
    if not source:
        return False
    return urlsplit(source).netloc.lower() == expected.netloc.lower()
