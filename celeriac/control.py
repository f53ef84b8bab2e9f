"""Remote control from Python: ``app.control``, with Celery's names and return values.

``app.control.inspect().active()`` asks every live worker node what it runs;
``app.control.pool_grow(2)`` tells them to run more at once. A command travels
through the broker, so it works wherever the workers can reach the broker: it is
appended to the broker's control stream (:meth:`Broker.broadcast`) as a
:class:`ControlMessage`; every worker node's supervisor follows the stream a few
times per second (:mod:`celeriac.middleware.remote`), runs the commands meant
for it, and when asked answers ``{node_name: reply}`` into the command's reply
box, which :meth:`Control.broadcast` collects until the timeout.

As in Celery:

* ``broadcast(..., reply=True)`` returns a list of ``{node: reply}`` dicts, and
  the ``Inspect`` methods one ``{node: reply}`` dict, or None when nobody answered;
* a node that is down is simply absent; a reply that changes something says what
  (``{"ok": "..."}``), a refusal says why (``{"error": "..."}``);
* a command not taken within ``timeout`` seconds expires unrun, whether or not
  replies are awaited.

Unlike Celery, a collection ends as soon as every node the broker knows to be
alive (by its heartbeat) has answered, instead of always waiting the whole
timeout: a node answers only commands broadcast after its first heartbeat, so
none is missed. Expiry compares the sender's clock with the worker's.

Revoking is not a broadcast here: :meth:`Control.revoke` stores the revocation
in the broker (:mod:`celeriac.revoke`), where every worker, including one
started later, finds it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from celeriac.beat.presence import worker_nodes
from celeriac.exceptions import ConfigurationError
from celeriac.settings import suggest

if TYPE_CHECKING:
    from celeriac.app import Celeriac

#: ``celeriac inspect`` commands: they only read.
INSPECT_COMMANDS = ("ping", "active", "reserved", "query_task", "scheduled", "stats", "report",
                    "registered", "revoked", "active_queues", "conf")
#: ``celeriac control`` commands: they change something (revoke and terminate go
#: through the broker's revocations rather than the control stream).
CONTROL_COMMANDS = ("revoke", "terminate", "shutdown", "rate_limit", "time_limit",
                    "add_consumer", "cancel_consumer", "pool_grow", "pool_shrink", "autoscale")
#: Celery's older names for inspect commands, understood by the workers too.
ALIASES = {"dump_active": "active", "dump_reserved": "reserved", "dump_schedule": "scheduled",
           "dump_revoked": "revoked", "dump_tasks": "registered", "dump_conf": "conf"}

Reply = dict[str, Any]
Callback = Callable[[Reply], Any]


@dataclass(frozen=True)
class ControlMessage:
    """One command on the wire, as a JSON object in the broker's control stream.

    ``{"command": str, "arguments": {...}, "destination": [node, ...] | null,
    "reply_to": box | null, "expires": unix time | null}``. Both ends use this
    class, so the format is written once.
    """

    command: str
    arguments: dict[str, Any]
    #: Node names the command is for; None: every node.
    destination: tuple[str, ...] | None = None
    #: The reply box to answer in; None: answer nothing.
    reply_to: str | None = None
    #: Unix time (the sender's clock) after which nobody runs it; None: never expires.
    expires: float | None = None

    def to_body(self) -> dict[str, Any]:
        return {"command": self.command, "arguments": self.arguments,
                "destination": list(self.destination) if self.destination is not None else None,
                "reply_to": self.reply_to, "expires": self.expires}

    @classmethod
    def from_body(cls, body: Any) -> ControlMessage:
        """Check a body read from the stream; ValueError says what is wrong with it."""
        if not isinstance(body, dict):
            raise ValueError(f"not a JSON object: {body!r:.200}")
        command, arguments = body.get("command"), body.get("arguments") or {}
        destination, reply_to, expires = (body.get("destination"), body.get("reply_to"),
                                          body.get("expires"))
        if not isinstance(command, str) or not command:
            raise ValueError(f"'command' must be a non-empty string, got {command!r:.100}")
        if not isinstance(arguments, dict):
            raise ValueError(f"'arguments' must be an object, got {arguments!r:.100}")
        if destination is not None and not (isinstance(destination, list) and all(
                isinstance(node, str) for node in destination)):
            raise ValueError(f"'destination' must be a list of node names, got {destination!r:.100}")
        if reply_to is not None and (not isinstance(reply_to, str) or not reply_to):
            raise ValueError(f"'reply_to' must be a string, got {reply_to!r:.100}")
        if expires is not None and (isinstance(expires, bool)
                                    or not isinstance(expires, int | float)):
            raise ValueError(f"'expires' must be a number, got {expires!r:.100}")
        return cls(command, arguments, tuple(destination) if destination is not None else None,
                   reply_to, float(expires) if expires is not None else None)


def destinations(destination: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """Celery's ``destination``: None or empty for every node, a name, or a list of names."""
    if destination is None:
        return None
    names = (destination,) if isinstance(destination, str) else destination
    if not isinstance(names, list | tuple | set | frozenset) or not all(
            isinstance(name, str) and name for name in names):
        raise TypeError(f"destination must be a node name or a list of node names, "
                        f"got {destination!r}")
    return tuple(names) or None


def flatten(replies: Iterable[Reply]) -> Reply:
    """``[{node: reply}, ...]`` as one ``{node: reply}`` dict (Celery's ``flatten_reply``)."""
    by_node: Reply = {}
    for reply in replies:
        by_node.update(reply)
    return by_node


class Inspect:
    """Read-only questions to the workers: ``app.control.inspect().active()``.

    Each method returns ``{node_name: reply}`` from every node that answered within
    ``timeout``, or None when none did. With a single node name as ``destination``
    it returns that node's reply alone, as Celery's does.
    """

    def __init__(self, control: Control, destination: str | Sequence[str] | None = None,
                 timeout: float = 1.0, callback: Callback | None = None,
                 limit: int | None = None) -> None:
        self.control = control
        self.destination = destination
        self.timeout = timeout
        self.callback = callback
        self.limit = limit

    def _request(self, command: str, **arguments: Any) -> Any:
        replies = self.control.broadcast(
            command, arguments=arguments, destination=self.destination, reply=True,
            timeout=self.timeout, limit=self.limit, callback=self.callback)
        if not replies:
            return None
        by_node = flatten(replies)
        if isinstance(self.destination, str):
            return by_node.get(self.destination)
        return by_node

    def ping(self, destination: str | Sequence[str] | None = None) -> Any:
        """``{node: {"ok": "pong"}}`` for every node alive."""
        if destination:
            self.destination = destination
        return self._request("ping")

    def active(self, safe: bool | None = None) -> Any:
        """``{node: [task info, ...]}``: the tasks running now. ``args``/``kwargs`` are the
        reprs the message carries (``safe`` is accepted for Celery's signature)."""
        return self._request("active")

    def reserved(self, safe: bool | None = None) -> Any:
        """``{node: [task info, ...]}``: messages claimed by the node's processes, not started."""
        return self._request("reserved")

    def query_task(self, *ids: str | Sequence[str]) -> Any:
        """``{node: {task id: [state, task info]}}`` for the given ids that a node holds:
        ``"active"`` (running) or ``"reserved"`` (claimed, not started). ``query_task(id1,
        id2)`` or, as Celery's older form, ``query_task([id1, id2])``."""
        flat = list(ids[0]) if len(ids) == 1 and isinstance(ids[0], list | tuple) else list(ids)
        return self._request("query_task", ids=flat)

    def report(self) -> Any:
        """``{node: {"ok": text}}``: what ``celeriac report`` prints, from each node."""
        return self._request("report")

    def scheduled(self, safe: bool | None = None) -> Any:
        """``{node: []}``: celeriac workers never hold ETA or countdown tasks; those wait in
        the broker until due (``celeriac status`` counts them per queue)."""
        return self._request("scheduled")

    def stats(self) -> Any:
        """``{node: {pid, uptime, pool, total, broker, rusage, ...}}``."""
        return self._request("stats")

    def registered(self, *taskinfoitems: str) -> Any:
        """``{node: [task name, ...]}``; with attribute names, ``"name [attr=value ...]"``."""
        return self._request("registered", taskinfoitems=list(taskinfoitems))

    registered_tasks = registered

    def revoked(self) -> Any:
        """``{node: [task id, ...]}``: the revocations in force (kept in the broker)."""
        return self._request("revoked")

    def active_queues(self) -> Any:
        """``{node: [{"name": queue, ...}, ...]}``: the queues each node consumes."""
        return self._request("active_queues")

    def conf(self, with_defaults: bool = False) -> Any:
        """``{node: {setting: value}}``, secrets masked; with_defaults adds unset settings."""
        return self._request("conf", with_defaults=with_defaults)


class Control:
    """``app.control``: inspect and control worker nodes through the broker."""

    def __init__(self, app: Celeriac) -> None:
        self.app = app

    def inspect(self, destination: str | Sequence[str] | None = None, timeout: float = 1.0,
                callback: Callback | None = None, limit: int | None = None) -> Inspect:
        return Inspect(self, destination, timeout, callback, limit)

    def broadcast(self, command: str, arguments: dict[str, Any] | None = None,
                  destination: str | Sequence[str] | None = None, connection: Any = None,
                  reply: bool = False, timeout: float = 1.0, limit: int | None = None,
                  callback: Callback | None = None, **extra_kwargs: Any) -> list[Reply] | None:
        """Send ``command`` to every node (or the ``destination`` nodes).

        With ``reply=True``, return the list of ``{node: reply}`` that came within
        ``timeout`` seconds (at most ``limit``; ``callback`` is called with each as it
        comes); else None at once. ``extra_kwargs`` join ``arguments``, and
        ``connection`` is accepted for Celery's signature (the app's broker is used).
        """
        name = ALIASES.get(command, command)
        if name in ("revoke", "terminate"):
            args = {**(arguments or {}), **extra_kwargs}
            self.revoke(args.get("task_id", ()), terminate=name == "terminate" or bool(
                args.get("terminate")), signal=args.get("signal") or "SIGTERM")
            return None
        if name == "rate_limit":
            _store_rate_limit(self.app, {**(arguments or {}), **extra_kwargs})
        if name not in INSPECT_COMMANDS + CONTROL_COMMANDS:
            raise ConfigurationError(f"unknown control command {command!r}"
                                     f"{suggest(command, [*INSPECT_COMMANDS, *CONTROL_COMMANDS])}")
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
            raise ConfigurationError(f"timeout must be a number of seconds > 0, got {timeout!r}")
        nodes = destinations(destination)
        message = ControlMessage(
            name, {**(arguments or {}), **extra_kwargs}, nodes,
            reply_to=uuid.uuid4().hex if reply else None, expires=time.time() + timeout)
        body = message.to_body()
        try:
            json.dumps(body)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"control command {name!r}: arguments must be JSON: {exc}"
                                     ) from None
        broker = self.app.broker
        broker.broadcast(body)
        if message.reply_to is None:
            return None
        if limit is None and nodes is not None:
            limit = len(nodes)
        return self._collect(message.reply_to, nodes, timeout, limit, callback)

    def _collect(self, box: str, nodes: tuple[str, ...] | None, timeout: float,
                 limit: int | None, callback: Callback | None) -> list[Reply]:
        """Replies in ``box`` until the timeout, ``limit`` replies, or every node expected
        (the destination, else every node with a live heartbeat) has answered."""
        broker = self.app.broker
        deadline = time.monotonic() + timeout
        # A node whose supervisor is gone (its orphaned processes keep its heartbeat
        # while they finish) cannot answer.
        # A beat's heartbeat record (celeriac.beat.presence) is no node: it never answers.
        expected = set(nodes) if nodes is not None else {
            w.name for w in worker_nodes(broker.workers()) if not w.info.get("orphaned")}
        got: list[Reply] = []
        answered: set[str] = set()
        while True:
            remaining = deadline - time.monotonic()
            wanted = limit - len(got) if limit is not None else len(expected - answered)
            if wanted <= 0 or remaining <= 0:
                return got
            for item in broker.replies(box, timeout=remaining, count=wanted):
                got.append(item)
                answered.update(item)
                if callback is not None:
                    callback(item)

    def ping(self, destination: str | Sequence[str] | None = None, timeout: float = 1.0,
             **kwargs: Any) -> list[Reply] | None:
        """``[{node: {"ok": "pong"}}, ...]`` from every node alive."""
        return self.broadcast("ping", reply=True, arguments={}, destination=destination,
                              timeout=timeout, **kwargs)

    def revoke(self, task_id: str | Sequence[str], destination: str | Sequence[str] | None = None,
               terminate: bool = False, signal: str | int = "SIGTERM", **kwargs: Any) -> None:
        """Revoke one task id or many: no worker runs them, and with ``terminate=True`` one
        running them stops them. Stored in the broker for every worker, so ``destination``
        and the broadcast options are accepted for Celery's signature only."""
        from celeriac.revoke import revoke

        revoke(self.app, task_id, terminate=terminate, signal=signal)

    def terminate(self, task_id: str | Sequence[str],
                  destination: str | Sequence[str] | None = None, signal: str | int = "SIGTERM",
                  **kwargs: Any) -> None:
        """``revoke(task_id, terminate=True, signal=signal)``."""
        self.revoke(task_id, destination=destination, terminate=True, signal=signal, **kwargs)

    def shutdown(self, destination: str | Sequence[str] | None = None,
                 **kwargs: Any) -> list[Reply] | None:
        """Warm shutdown of the nodes: running tasks finish, nothing is lost."""
        return self.broadcast("shutdown", arguments={}, destination=destination, **kwargs)

    def rate_limit(self, task_name: str, rate_limit: str | int | float,
                   destination: str | Sequence[str] | None = None,
                   **kwargs: Any) -> list[Reply] | None:
        """Run ``task_name`` at most ``rate_limit`` times per second/minute/hour (``"10/s"``;
        0: no limit) across the whole cluster from its next message on. Stored in the
        broker, so every worker uses it, including those started later; ``destination``
        only narrows which nodes answer."""
        return self.broadcast("rate_limit", destination=destination,
                              arguments={"task_name": task_name, "rate_limit": rate_limit},
                              **kwargs)

    def time_limit(self, task_name: str, soft: float | None = None, hard: float | None = None,
                   destination: str | Sequence[str] | None = None,
                   **kwargs: Any) -> list[Reply] | None:
        """Run ``task_name`` under these limits (None: no limit) from its next message on."""
        return self.broadcast("time_limit", destination=destination,
                              arguments={"task_name": task_name, "soft": soft, "hard": hard},
                              **kwargs)

    def add_consumer(self, queue: str, exchange: str | None = None,
                     exchange_type: str = "direct", routing_key: str | None = None,
                     options: dict[str, Any] | None = None,
                     destination: str | Sequence[str] | None = None,
                     **kwargs: Any) -> list[Reply] | None:
        """Consume ``queue`` too (every pool group of the node). The exchange options are
        accepted for Celery's signature: celeriac queues have no exchanges."""
        return self.broadcast("add_consumer", destination=destination,
                              arguments={"queue": queue}, **kwargs)

    def cancel_consumer(self, queue: str, destination: str | Sequence[str] | None = None,
                        **kwargs: Any) -> list[Reply] | None:
        """Stop consuming ``queue``; its messages held but not started go back at once."""
        return self.broadcast("cancel_consumer", destination=destination,
                              arguments={"queue": queue}, **kwargs)

    def pool_grow(self, n: int = 1, destination: str | Sequence[str] | None = None,
                  **kwargs: Any) -> list[Reply] | None:
        """Run ``n`` more tasks at once: ``n`` more slots in each process of thread and green
        pools, ``n`` more processes for prefork and solo."""
        return self.broadcast("pool_grow", arguments={"n": n}, destination=destination,
                              **kwargs)

    def pool_shrink(self, n: int = 1, destination: str | Sequence[str] | None = None,
                    **kwargs: Any) -> list[Reply] | None:
        """Run ``n`` fewer tasks at once (never below one); running tasks are not stopped."""
        return self.broadcast("pool_shrink", arguments={"n": n}, destination=destination,
                              **kwargs)

    def autoscale(self, max: int | None, min: int | None,
                  destination: str | Sequence[str] | None = None,
                  **kwargs: Any) -> list[Reply] | None:
        """New ``--autoscale`` bounds (None keeps one), applied at once; a node started
        without ``--autoscale`` answers with an error."""
        return self.broadcast("autoscale", arguments={"max": max, "min": min},
                              destination=destination, **kwargs)


def _store_rate_limit(app: Celeriac, arguments: dict[str, Any]) -> None:
    """Keep a run-time rate limit in the broker: limits are cluster-wide, so the value
    must outlive this broadcast and reach workers that start later."""
    from celeriac.task_options import parse_rate_limit

    task, rate = arguments.get("task_name"), arguments.get("rate_limit")
    if not isinstance(task, str) or not task:
        raise ConfigurationError(f"rate_limit: task_name must be a task name, got {task!r:.50}")
    app.broker.set_rate_limit(task, "0" if parse_rate_limit(rate) is None else str(rate))
