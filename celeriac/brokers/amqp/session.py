"""One AMQP connection's channels by role, and the calls waiting on the owner thread.

Used only by the owner (:mod:`celeriac.brokers.amqp.connection`), which runs every
method here on its own thread; :class:`Request` is the one object callers touch too
(they wait on it), hence its native locks.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import amqp

from celeriac.blocking import native_lock
from celeriac.exceptions import BrokerError


class TrackedChannel(amqp.Channel):  # type: ignore[misc]  # py-amqp is untyped
    """A channel that stays closed when the server closes it.

    py-amqp "revives" such a channel in place, quietly without its confirm or tx
    mode and its consumers; the owner must notice and open a fresh one for the role.
    """

    server_closed = False

    def _do_revive(self) -> None:
        self.server_closed = True
        self.collect()


class Request:
    """One call waiting for the owner: finished exactly once, or cancelled by its caller."""

    __slots__ = ("_done", "_lock", "cancelled", "error", "finished", "fn", "nacked", "pending",
                 "result", "retry")

    def __init__(self, fn: Callable[[Session, Request], Any], retry: bool) -> None:
        self.fn = fn
        self.retry = retry
        self.result: Any = None
        self.error: BaseException | None = None
        self.finished = self.cancelled = False
        self.pending = 0  # confirms still awaited
        self.nacked: list[str] = []
        self._lock = native_lock()
        self._done = native_lock()
        self._done.acquire()

    def finish(self, result: Any = None, error: BaseException | None = None) -> None:
        with self._lock:
            if self.finished or self.cancelled:
                return
            self.finished = True
            self.result, self.error = result, error
        self._done.release()

    def cancel(self) -> bool:
        """The caller gives up; False if the result came in first (then it is used)."""
        with self._lock:
            if self.finished:
                return False
            self.cancelled = True
            return True

    def wait(self, timeout: float) -> bool:
        return bool(self._done.acquire(True, max(timeout, 0.0)))


#: What a request's function returns when the owner finishes the request later (confirms).
LATER = object()


class Confirms:
    """Publishes on one confirm channel awaiting their ack: sequence number -> request.

    The server acks (or nacks) by sequence number, possibly several at once
    (``multiple``); a request is finished when the last of its messages is settled.
    """

    def __init__(self) -> None:
        self.next_seq = 1
        self.waiting: dict[int, tuple[Request, str]] = {}
        self.order: deque[int] = deque()

    def add(self, request: Request, routing_keys: Sequence[str]) -> None:
        for key in routing_keys:
            self.waiting[self.next_seq] = (request, key)
            self.order.append(self.next_seq)
            self.next_seq += 1
        request.pending += len(routing_keys)

    def on_ack(self, delivery_tag: int, multiple: bool) -> None:
        self._settle(delivery_tag, multiple, nacked=False)

    def on_nack(self, delivery_tag: int, multiple: bool, requeue: bool = False) -> None:
        self._settle(delivery_tag, multiple, nacked=True)

    def _settle(self, tag: int, multiple: bool, nacked: bool) -> None:
        if multiple:
            while self.order and self.order[0] <= tag:
                entry = self.waiting.pop(self.order.popleft(), None)
                if entry is not None:
                    _confirmed(*entry, nacked)
        else:
            entry = self.waiting.pop(tag, None)
            if entry is not None:
                _confirmed(*entry, nacked)
        while self.order and self.order[0] not in self.waiting:
            self.order.popleft()

    def abandon(self) -> list[Request]:
        """The channel is gone: the requests that were still waiting, once each, oldest first.

        Sequence numbers start again at 1: they are per channel, and the next publish
        goes to a new one.
        """
        requests = list(dict.fromkeys(request for request, _ in self.waiting.values()))
        self.waiting.clear()
        self.order.clear()
        self.next_seq = 1
        for request in requests:
            request.pending = 0
            request.nacked.clear()
        return requests


def _confirmed(request: Request, routing_key: str, nacked: bool) -> None:
    if nacked:
        request.nacked.append(routing_key)
    request.pending -= 1
    if request.pending == 0:
        if request.nacked:
            queues = ", ".join(sorted(set(request.nacked)))
            request.finish(error=BrokerError(
                f"RabbitMQ refused {len(request.nacked)} message(s) for {queues} (basic.nack: "
                "the queue is full or has no quorum)"))
        else:
            request.finish(None)


class Session:
    """One live connection and its role channels; replaced whole when the connection drops."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self._confirm: Any = None
        self.confirms = Confirms()
        self._control: Any = None
        self.consume: Any = None  # the owner opens it (it knows the subscription)
        #: The consume channel's consumers: queue -> consumer tag.
        self.consumer_tags: dict[str, str] = {}

    def channel(self) -> Any:
        return self.conn.channel()

    def confirm_channel(self) -> Any:
        """The channel for publishing, in confirm mode."""
        if self._confirm is None:
            channel = self.channel()
            channel.confirm_select()
            channel.events["basic_ack"].add(self.confirms.on_ack)
            channel.events["basic_nack"].add(self.confirms.on_nack)
            self._confirm = channel
        return self._confirm

    def control(self) -> Any:
        """The channel for declares, purges and other one-off calls."""
        if self._control is None:
            self._control = self.channel()
        return self._control

    def closed_roles(self) -> list[str]:
        """Forget the role channels the server closed; their names ("confirm", "control")."""
        closed = []
        if self._confirm is not None and self._confirm.server_closed:
            self._confirm = None
            closed.append("confirm")
        if self._control is not None and self._control.server_closed:
            self._control = None
            closed.append("control")
        return closed
