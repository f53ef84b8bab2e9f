"""What one process holds of RabbitMQ's messages: the buffer, the claims and their tokens.

RabbitMQ pushes deliveries to a consumer up to its prefetch; they wait here, unacked
on the process's consume channel, until :meth:`AmqpBroker.fetch` hands them out. A
handed-out message is *claimed*: it gets a fencing token and a lease deadline. Nothing
of this touches the server: a delivery stays reserved for this process as long as its
channel lives, so the lease is ours to keep.

* **Tokens** are drawn from a counter under a random per-instance tag, so a token
  names one claim of one broker instance and is never reused: a stale one (the claim
  was settled, released or expired, or the channel died) is simply not found, and
  settling it sends nothing (a delivery tag of a dead channel would name another
  message on the new one). A token with another instance's tag is *foreign*: the
  supervisor settling a task of a worker process it killed.
* **A lease that runs out** puts the message back in the buffer, charged, for the
  next fetch of any consumer of this process (the contract's "claimable again with a
  new token"). It does not go back to RabbitMQ: its delivery is still ours, and the
  process that let a lease run out is either alive (and fetching) or about to be
  recycled by its supervisor, whose kill returns everything to the server.
* **Delivery counts** are celeriac's own (see :mod:`celeriac.brokers.amqp.state`):
  ``charged`` is what the copy's headers and its return notes say, plus what happened
  to it here since (expired leases, releases of started tasks). Every claim hands out
  ``charged + 1``.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from celeriac.brokers.amqp.params import Incoming
from celeriac.brokers.amqp.state import ReturnNote

#: Bits of a token under its instance tag.
TOKEN_BITS = 40


@dataclass(eq=False)
class Held:
    """One delivery this process holds: waiting in the buffer, or claimed by a consumer."""

    id: str
    incoming: Incoming
    priority: int
    #: Publish time of the message (ns): the buffer serves oldest first.
    stamp: int
    #: Deliveries charged before the next claim.
    charged: int
    suspect: int
    #: ``charged`` and ``suspect`` as the copy's headers and its notes had them: what
    #: differs when the copy goes back to RabbitMQ unsettled must be written as a note.
    base_charged: int
    base_suspect: int
    #: Return notes folded in (dropped from the store when the message is settled).
    notes: int = 0
    #: Redelivered by RabbitMQ and its notes not read yet: not handed out before
    #: ``hold_until`` (monotonic) unless they turn up.
    unresolved: bool = False
    hold_until: float = 0.0
    token: int = 0
    consumer: str = ""
    deadline: float = 0.0

    @property
    def queue(self) -> str:
        return self.incoming.queue

    @property
    def generation(self) -> int:
        return self.incoming.generation

    def lost_note(self) -> ReturnNote | None:
        """What the store must learn when this copy went back to RabbitMQ without us.

        A claimed copy's current delivery counts (it may have run); whatever was charged
        or marked here since the copy's headers and notes were read counts too.
        """
        charge = self.charged - self.base_charged + (1 if self.token else 0)
        suspect = self.suspect if self.suspect != self.base_suspect else 0
        if not charge and not suspect:
            return None
        return ReturnNote(charge=charge, suspect=suspect)


def narrower(current: int, group: int) -> int:
    """The suspect mark after a crash in ``group``: a smaller group wins, 0 reads as 1."""
    group = max(group, 1)
    return group if current == 0 else min(current, group)


class Buffer:
    """The deliveries of one broker instance in one process. Not locked: the broker
    holds its lock around every call."""

    def __init__(self) -> None:
        self.tag = random.randrange(1, 1 << 20)
        self._tokens = itertools.count(1)
        self.held: dict[int, Held] = {}  # (generation, delivery tag) packed -> Held
        self.claims: dict[int, Held] = {}  # token -> Held
        #: Claims of a channel that died (token -> Held), until the consumer says whether
        #: it started them: RabbitMQ took them back, and the note their next holder reads
        #: must charge the ones that ran, not the ones that only waited here.
        self.orphans: dict[int, Held] = {}
        self._swept = 0  # the channel generation drop_stale last swept for

    @staticmethod
    def _key(incoming: Incoming) -> int:
        return (incoming.generation << 32) | incoming.delivery_tag

    def add(self, held: Held) -> None:
        self.held[self._key(held.incoming)] = held

    def remove(self, held: Held) -> None:
        self.held.pop(self._key(held.incoming), None)
        if held.token:
            self.claims.pop(held.token, None)
            held.token = 0

    def is_ours(self, token: int) -> bool:
        return token >> TOKEN_BITS == self.tag

    def claim_of(self, token: int) -> Held | None:
        return self.claims.get(token)

    # -- handing out ----------------------------------------------------------------------

    def expire(self, now: float) -> bool:
        """Claims past their deadline go back to the buffer, charged; True if any did."""
        expired = [held for held in self.claims.values() if held.deadline <= now]
        for held in expired:
            self._unclaim(held, charge=True)
        return bool(expired)

    def ready(self, queues: Collection[str], now: float) -> list[Held]:
        """Unclaimed, resolved deliveries of ``queues``: highest priority, then oldest, first."""
        waiting = [held for held in self.held.values()
                   if not held.token and held.queue in queues
                   and (not held.unresolved or held.hold_until <= now)]
        waiting.sort(key=lambda held: (-held.priority, held.stamp))
        return waiting

    def claim(self, held: Held, consumer: str, deadline: float) -> int:
        held.unresolved = False
        held.token = (self.tag << TOKEN_BITS) | next(self._tokens)
        held.consumer, held.deadline = consumer, deadline
        self.claims[held.token] = held
        return held.token

    def unresolved(self) -> list[Held]:
        return [held for held in self.held.values() if held.unresolved]

    def next_deadline(self, now: float) -> float | None:
        """Seconds until the next claim runs out or a held-back delivery is free (None: none)."""
        times = [held.deadline for held in self.claims.values()]
        times += [held.hold_until for held in self.held.values() if held.unresolved]
        return max(0.0, min(times) - now) if times else None

    # -- giving back ----------------------------------------------------------------------

    def _unclaim(self, held: Held, *, charge: bool) -> None:
        self.claims.pop(held.token, None)
        held.token, held.consumer, held.deadline = 0, "", 0.0
        if charge:
            held.charged += 1

    def release(self, consumer: str, started: Collection[str], suspects: Collection[str],
                group: int) -> int:
        """Put back every claim of ``consumer``; started ones charged, suspects marked."""
        mine = [held for held in self.claims.values() if held.consumer == consumer]
        for held in mine:
            self._unclaim(held, charge=held.id in started)
            if held.id in suspects:
                held.suspect = narrower(held.suspect, group)
        return len(mine)

    def consumers(self) -> set[str]:
        return {held.consumer for held in self.claims.values()}

    def drop_stale(self, generation: int) -> list[tuple[str, ReturnNote]]:
        """Forget deliveries of channels before ``generation`` (RabbitMQ took them back).

        Returns the notes to write for them: what happened here that their next
        holder must count.
        """
        if generation == self._swept:
            return []  # nothing can be stale: the broker adds no delivery of an older channel
        self._swept = generation
        stale = [held for held in self.held.values() if held.generation != generation]
        notes = []
        for held in stale:
            if held.token:
                self.orphans[held.token] = held
                self.claims.pop(held.token, None)
                self.held.pop(self._key(held.incoming), None)
                continue
            note = held.lost_note()
            if note is not None:
                notes.append((held.id, note))
            self.remove(held)
        return notes

    def orphan_note(self, token: int, *, ran: bool) -> tuple[str, ReturnNote] | None:
        """The note of an orphaned claim, now that its consumer told whether it ran it."""
        held = self.orphans.pop(token, None)
        if held is None:
            return None
        if not ran:
            held.token = 0  # an unstarted claim: its delivery does not count
        note = held.lost_note()
        return None if note is None else (held.id, note)

    def counts(self, queues: Iterable[str]) -> dict[str, tuple[int, int]]:
        """Per queue: (ready here, claimed or held back here)."""
        result = {queue: (0, 0) for queue in queues}
        for held in self.held.values():
            ready, busy = result.get(held.queue, (0, 0))
            if held.token or held.unresolved:
                result[held.queue] = (ready, busy + 1)
            else:
                result[held.queue] = (ready + 1, busy)
        return result

    def unclaimed(self, queues: Collection[str]) -> list[Held]:
        return [held for held in self.held.values() if not held.token and held.queue in queues]


def deadline(lease: float) -> float:
    return time.monotonic() + lease
