"""A send planned: its options routed and checked once, then made into messages.

Every send goes through a :class:`SendPlan`: ``apply_async`` and ``send_task`` make
one message of it; ``send_many`` (``apply_many``, groups) makes one plan for each run
of signatures of one task with equal options, then one message per signature. What
depends only on the options (the queue, the serializer and its check, priority, eta
and expiry, the parent task, links, the header and property template) is worked out
once; a message then costs its id, its arguments' encoding and the envelope's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from celeriac.brokers import OutgoingMessage
from celeriac.context import current_request
from celeriac.exceptions import ConfigurationError
from celeriac.message import CHORD_CLAIM_HEADER, Envelope, MessageTemplate
from celeriac.send_options import add_extras, note_publish_retry, routed_queue
from celeriac.task import to_timestamp
from celeriac.utils import uuid as new_id

if TYPE_CHECKING:
    from celeriac.app.base import Celeriac
    from celeriac.task import Links


class SendPlan:
    """One send's options, routed and checked: :meth:`make` builds its messages.

    Raises before anything is sent: ConfigurationError for a bad priority, serializer
    or compression (compression and the arguments when a message is made:
    SerializationError for arguments the serializer cannot encode). ``rare``: the send
    options of :mod:`celeriac.send_options` (headers, shadow, routing_key...), already
    checked by name; the common send pays one test for them.
    """

    __slots__ = ("app", "eta", "priority", "rare", "target", "task_id", "template", "watched")

    def __init__(
        self,
        app: Celeriac,
        name: str,
        now: float,
        *,
        watched: bool = False,
        task_id: str | None = None,
        countdown: float | None = None,
        eta: datetime | float | None = None,
        expires: datetime | float | None = None,
        queue: str | None = None,
        priority: int | None = None,
        time_limit: float | None = None,
        soft_time_limit: float | None = None,
        serializer: str | None = None,
        compression: str | None = None,
        ignore_result: bool | None = None,
        retries: int = 0,
        root_id: str | None = None,
        parent_id: str | None = None,
        group: str | None = None,
        link: Links = None,
        link_error: Links = None,
        chain: list[dict[str, Any]] | None = None,
        chord: dict[str, Any] | None = None,
        group_index: int | None = None,
        chord_claim: list[str] | None = None,
        **rare: Any,
    ) -> None:
        eta_ts = now + countdown if countdown else to_timestamp(eta)
        expires_ts = now + expires if isinstance(expires, int | float) else to_timestamp(expires)
        conf = app.conf  # item access: a fifth of the time of attribute access
        if priority is None:
            priority = conf["task_default_priority"]
        if not 0 <= priority <= 9:
            raise ConfigurationError(f"priority={priority!r}: must be 0-9")
        serializer = serializer or conf["task_serializer"]
        if serializer not in conf["accept_content"]:
            raise ConfigurationError(
                f"serializer {serializer!r} is not in accept_content {conf['accept_content']}; "
                "workers would refuse the message")
        parent = current_request.get()
        if parent is not None and parent.id and parent_id is None:
            parent_id = parent.id
            root_id = root_id or parent.root_id or parent.id
        if rare:
            queue = routed_queue(queue, rare.get("routing_key"), rare.get("exchange"))
            note_publish_retry(rare.get("retry"), rare.get("retry_policy"))
        target = app.route(name, queue)
        embed = None
        if link or link_error or chain or chord:  # the common case pays one test
            from celeriac.canvas.signatures import wire_links

            embed = {"callbacks": wire_links(link), "errbacks": wire_links(link_error),
                     "chain": chain or None, "chord": chord or None}
        self.template = MessageTemplate(
            name, queue=target, serializer=serializer, eta=eta_ts, expires=expires_ts,
            retries=retries, time_limit=time_limit, soft_time_limit=soft_time_limit,
            root_id=root_id, parent_id=parent_id, group=group, priority=priority,
            ignore_result=bool(ignore_result),
            compression=compression or conf["task_compression"], embed=embed,
            group_index=group_index,
            extra_headers={CHORD_CLAIM_HEADER: chord_claim} if chord_claim else None)
        self.app = app
        self.task_id = task_id
        self.target = target
        self.priority = priority
        self.eta = eta_ts if eta_ts and eta_ts > now else None
        self.rare = rare
        self.watched = watched

    def make(self, args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None, *,
             last: bool = False) -> tuple[str, OutgoingMessage, Envelope | None]:
        """One message: its task id, the message and, when ``watched`` (a publish hook
        watches), its parts for the hooks, which ``before_publish`` has seen. ``last``:
        no message is made of this plan after this one (a single send)."""
        task_id = self.task_id or new_id()
        envelope = self.template.stamp(task_id, args or (), dict(kwargs or {}), last=last)
        rare = self.rare
        if rare:
            add_extras(envelope, rare.get("headers"), rare.get("shadow"), rare.get("reply_to"))
        if self.watched:
            self.app.middleware.before_publish(self.app, envelope)
        message = OutgoingMessage(queue=self.target, body=envelope.dumps(),
                                  priority=self.priority, eta=self.eta)
        return task_id, message, envelope if self.watched else None
