"""Cluster-wide rate and concurrency limits: the arithmetic every broker shares.

A rate limit is a *GCRA* (generic cell rate algorithm, the token bucket written
as one number): per task name the broker keeps ``tat``, the theoretical arrival
time of the next run. With ``rate`` runs per second the interval is ``1/rate``;
``burst`` runs may go back to back after a quiet spell. A run is allowed now
when ``tat - now <= (burst - 1) * interval``, and every grant moves ``tat`` on by
one interval. That number and the time of the latest grant, per task, updated in
one atomic step (a lock, one SQLite transaction, one Lua script), are the whole
shared state.

A denied run is *reserved* rather than refused: its message gets the next free
time (``tat`` moves on as for a grant) under a *ticket* (the message's broker id,
which stays the same when the message is requeued), and the worker puts the
message back in the broker with that eta. When it is delivered again its ticket
is honoured without touching ``tat`` (one that comes back late runs no sooner
than an interval after the latest grant: :func:`decide`). So a backlog of N
limited messages is deferred once each, to N distinct times, instead of all of
them coming back at the next token and all but one being deferred again (N^2
broker round trips).
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
#: A ticket is honoured this many seconds before its time (at most 5% of the interval):
#: a broker's eta and a worker's clock disagree by a few ms, and a message a hair early
#: should not be deferred a second time for it.
EARLY = 0.02
#: Seconds a ticket is kept after its time (then the message is treated as new).
TICKET_GRACE = 300.0


@dataclass(frozen=True)
class Decision:
    """What one check of a rate limit does to the broker's state."""

    #: 0.0: run now; else the seconds until the run's reserved time.
    delay: float
    #: The task's new theoretical arrival time (None: unchanged).
    tat: float | None = None
    #: The time of this grant, when it is one (None: unchanged).
    last: float | None = None
    #: Reserve this time for the ticket (None: no new ticket).
    ticket: float | None = None
    #: The ticket was used (or must go): delete it.
    drop_ticket: bool = False


def decide(tat: float | None, last: float | None, reserved: float | None, now: float,
           rate: float, burst: int) -> Decision:
    """One check of a rate limit, from the task's ``tat``, its ``last`` grant and the
    time ``reserved`` for this ticket (None: no ticket).

    With a burst of 1, grants are also kept an interval apart (less a slack of 5%): a
    ticket whose message comes back late (it waited behind other ready messages) runs
    as soon as the last grant allows, not at once beside the on-time ones, so starts
    never bunch up past ``rate + 1`` in any one-second window. Everything that waits
    still runs: grants go on one per interval while anyone is ready.
    """
    interval = 1.0 / rate
    tolerance = interval * (max(burst, 1) - 1)
    slack = min(EARLY, interval / 20)
    spacing = last + interval - slack if tolerance == 0 and last is not None else None
    if reserved is not None:
        if reserved - now > slack:
            return Decision(reserved - now)
        if spacing is not None and now < spacing:
            return Decision(spacing + slack - now)
        return Decision(0.0, last=now, drop_ticket=True)
    start = now if tat is None or tat < now else tat
    if spacing is not None and start < spacing + slack:
        start = spacing + slack
    delay = start - tolerance - now
    if delay <= slack:
        return Decision(0.0, tat=max(start, now) + interval, last=now)
    return Decision(delay, tat=start + interval, ticket=now + delay)


@dataclass
class LimitState:
    """The limits of one broker held in memory (the memory broker's store; callers lock)."""

    #: Task name -> its GCRA tat (unix seconds).
    tat: dict[str, float] = field(default_factory=dict)
    #: Task name -> the time of its latest grant (unix seconds).
    last: dict[str, float] = field(default_factory=dict)
    #: (task name, ticket) -> reserved time (unix seconds).
    tickets: dict[tuple[str, str], float] = field(default_factory=dict)
    #: Task name -> holder -> slot expiry (unix seconds).
    slots: dict[str, dict[str, float]] = field(default_factory=dict)
    #: Task name -> rate limit set at run time (``control rate_limit``).
    overrides: dict[str, str] = field(default_factory=dict)

    def take_token(self, task: str, rate: float, burst: int, ticket: str, now: float) -> float:
        key = (task, ticket)
        found = decide(self.tat.get(task), self.last.get(task), self.tickets.get(key), now,
                       rate, burst)
        if found.tat is not None:
            self.tat[task] = found.tat
        if found.last is not None:
            self.last[task] = found.last
        if found.drop_ticket:
            del self.tickets[key]
        if found.ticket is not None:
            self.tickets = {k: t for k, t in self.tickets.items() if t + TICKET_GRACE > now}
            self.tickets[key] = found.ticket
        return found.delay

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
