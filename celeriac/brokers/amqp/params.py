"""What the AMQP connection is given and gives back: where to connect, messages out and in.

Plain values, so the broker above the connection (and its tests) can build and read
them without touching py-amqp's classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlparse

import amqp

from celeriac.exceptions import ConfigurationError
from celeriac.validators import AMQP_SCHEMES

SCHEMES = AMQP_SCHEMES
DEFAULT_PORTS = {"amqp": 5672, "pyamqp": 5672, "amqps": 5671}


@dataclass(frozen=True)
class AmqpParams:
    """Where to connect: what an ``amqp://user:password@host:port/vhost`` URL says.

    The vhost is the URL's path, unquoted (kombu's rules: ``/`` is ``%2F`` or an
    empty path). ``pyamqp://`` is Celery's name for the same client, accepted as is.
    """

    host: str = "localhost"
    port: int = 5672
    userid: str = "guest"
    password: str = "guest"
    virtual_host: str = "/"
    ssl: bool | Mapping[str, Any] = False

    @classmethod
    def from_url(cls, url: str, *, ssl: bool | Mapping[str, Any] | None = None) -> AmqpParams:
        parts = urlparse(url)
        if parts.scheme not in SCHEMES:
            raise ConfigurationError(f"not an AMQP URL: {url!r} (use amqp:// or amqps://)")
        try:
            port = parts.port or DEFAULT_PORTS[parts.scheme]
        except ValueError as exc:
            raise ConfigurationError(f"bad port in AMQP URL: {exc}") from exc
        vhost = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path) or "/"
        use_ssl: bool | Mapping[str, Any] = parts.scheme == "amqps" if ssl is None else ssl
        return cls(host=parts.hostname or "localhost", port=port,
                   userid=unquote(parts.username) if parts.username else "guest",
                   password=unquote(parts.password) if parts.password else "guest",
                   virtual_host=vhost, ssl=use_ssl)

    @property
    def where(self) -> str:
        """The server and vhost for logs and errors (never the password)."""
        scheme = "amqps" if self.ssl else "amqp"
        return f"{scheme}://{self.host}:{self.port}/{quote(self.virtual_host, safe='')}"


@dataclass(frozen=True)
class Outgoing:
    """One message to publish. The caller builds the AMQP form (properties, headers)."""

    routing_key: str
    body: bytes
    exchange: str = ""
    headers: Mapping[str, Any] | None = None
    #: AMQP basic properties (content_type, priority, correlation_id...). Persistent by default.
    properties: Mapping[str, Any] = field(default_factory=dict)

    def message(self) -> Any:
        props = {"delivery_mode": 2, **self.properties}
        if self.headers:
            props["application_headers"] = dict(self.headers)
        return amqp.Message(self.body, **props)


@dataclass(frozen=True)
class Incoming:
    """A delivery from the consume channel, with the generation of the channel it came on."""

    generation: int
    delivery_tag: int
    queue: str
    body: bytes
    headers: dict[str, Any]
    properties: dict[str, Any]
    redelivered: bool
    exchange: str
    routing_key: str
