"""Cluster-wide rate and concurrency limits: the arithmetic every broker shares.

A rate limit is a *GCRA* (generic cell rate algorithm, the token bucket written
as one number): per task name the broker keeps ``tat``, the theoretical arrival
time of the next run. With ``rate`` runs per second the interval is ``1/rate``;
``burst`` runs may go back to back after a quiet spell. A run is allowed now
when ``tat - now <= (burst - 1) * interval``, and every grant moves ``tat`` on by
one interval. One number per task, updated in one atomic step (a lock, one SQLite
transaction, one Lua script), is the whole shared state.

A denied run is *reserved* rather than refused: its message gets the next free
time (``tat`` moves on as for a grant) under a *ticket* (the message's broker id,
which stays the same when the message is requeued), and the worker puts the
message back in the broker with that eta. When it is delivered again its ticket
is honoured without touching ``tat``. So a backlog of N limited messages is
deferred once each, to N distinct times, instead of all of them coming back at
the next token and all but one being deferred again (N^2 broker round trips).
Tickets expire :data:`TICKET_GRACE` seconds after their time (a message purged or
revoked while deferred leaves no trace for long).

A concurrency limit is a set of *slots* per task name: holder (the message's
broker id) -> expiry. Taking one drops the expired slots first, so the slots of a
worker that died come back once their expiry passes; a running task renews its
slot with its message's lease. A holder that already has a slot keeps it (a
message redelivered after its worker died takes over its own slot).

These functions are pure: the memory and SQLite brokers call them inside their
lock or transaction; the Redis broker's ``lua/limits.lua`` does the same sums on
the server.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Runs of a rate-limited task that may start back to back after a quiet spell.
#: 1, as Celery's worker uses (a token bucket of capacity 1): runs are spaced evenly.
BURST = 1
#: A ticket is honoured this many seconds before its time: a broker's eta and a
#: worker's clock disagree by a few ms, and a message a hair early should not be
#: deferred a second time for it.
EARLY = 0.02
#: Seconds a ticket is kept after its time (then the message is treated as new).
TICKET_GRACE = 300.0


def reserve(tat: float | None, now: float, rate: float, burst: int) -> tuple[float, float]:
    """GCRA: ``(new tat, delay)``; delay 0 means run now, else the reserved time is
    ``now + delay``. ``tat`` None: the task has not run yet."""
    interval = 1.0 / rate
    tolerance = interval * (max(burst, 1) - 1)
    start = now if tat is None or tat < now else tat
    delay = max(start - tolerance - now, 0.0)
    return start + interval, delay


@dataclass
class LimitState:
    """The limits of one broker held in memory (the memory broker's store; callers lock)."""

    #: Task name -> its GCRA tat (unix seconds).
    tat: dict[str, float] = field(default_factory=dict)
    #: (task name, ticket) -> reserved time (unix seconds).
    tickets: dict[tuple[str, str], float] = field(default_factory=dict)
    #: Task name -> holder -> slot expiry (unix seconds).
    slots: dict[str, dict[str, float]] = field(default_factory=dict)
    #: Task name -> rate limit set at run time (``control rate_limit``).
    overrides: dict[str, str] = field(default_factory=dict)

    def take_token(self, task: str, rate: float, burst: int, ticket: str, now: float) -> float:
        reserved = self.tickets.get((task, ticket))
        if reserved is not None:
            if reserved - now <= EARLY:
                del self.tickets[(task, ticket)]
                return 0.0
            return reserved - now
        self.tat[task], delay = reserve(self.tat.get(task), now, rate, burst)
        if delay > 0:
            self.tickets = {k: t for k, t in self.tickets.items() if t + TICKET_GRACE > now}
            self.tickets[(task, ticket)] = now + delay
        return delay

    def acquire_slot(self, task: str, limit: int, holder: str, ttl: float, now: float) -> bool:
        held = self.slots.setdefault(task, {})
        for expired in [h for h, expires in held.items() if expires <= now]:
            del held[expired]
        if holder not in held and len(held) >= limit:
            return False
        held[holder] = now + ttl
        return True

    def renew_slots(self, slots: list[tuple[str, str]], ttl: float, now: float) -> None:
        for task, holder in slots:
            held = self.slots.get(task)
            if held is not None and holder in held:
                held[holder] = now + ttl

    def release_slot(self, task: str, holder: str) -> None:
        self.slots.get(task, {}).pop(holder, None)

    def running(self, task: str, now: float) -> int:
        return sum(1 for expires in self.slots.get(task, {}).values() if expires > now)
