"""Which beats run: each beat's own heartbeat, in the broker's worker registry.

Beats need no leader (:mod:`celeriac.beat.service`): every live beat races for every run,
so the broker's state of the schedule (each entry's last run) says nothing about who
runs. For the dashboard and ``celeriac status`` to say which beat processes hold the
schedule, each running beat writes a heartbeat of its own with the calls workers use
(:meth:`~celeriac.brokers.base.Broker.heartbeat`, ``worker_heartbeat_interval``, a ttl
of three intervals, removed on a clean stop), marked ``{"kind": "beat"}``, with the
names of its entries and the runs it won (``sent``: entry -> scheduled time). No new
broker call; one small write every interval, as a worker's heartbeat, and one after each
look at the schedule that sent a run.

The registry is the workers' one, so whatever lists worker nodes leaves beats out with
:func:`worker_nodes` (remote control does not wait for a beat's reply; the Workers page
does not show one); a beat that vanished is reaped like a node, holding no messages.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from celeriac.exceptions import CeleriacError

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.brokers.base import WorkerInfo

log = logging.getLogger("celeriac.beat")

#: The ``kind`` of a beat's heartbeat record (a worker node's has none).
BEAT_KIND = "beat"


def default_name() -> str:
    """``beat.PID@HOST``: one record per beat process."""
    return f"beat.{os.getpid()}@{socket.gethostname()}"


def is_beat(record: WorkerInfo) -> bool:
    return record.info.get("kind") == BEAT_KIND


def worker_nodes(records: Iterable[WorkerInfo]) -> list[WorkerInfo]:
    """The worker nodes among heartbeat records (beats left out)."""
    return [record for record in records if not is_beat(record)]


def beats(records: Iterable[WorkerInfo]) -> list[WorkerInfo]:
    """The beats among heartbeat records."""
    return [record for record in records if is_beat(record)]


class Presence:
    """One beat's heartbeat: written by :meth:`Beat.run <celeriac.beat.service.Beat.run>`
    at least every ``worker_heartbeat_interval`` seconds, removed when it stops."""

    def __init__(self, app: Celeriac, entries: Iterable[str], *, name: str | None = None,
                 worker: str | None = None, max_interval: float = 0.0) -> None:
        self.app = app
        self.name = name or default_name()
        self.entries = sorted(entries)
        #: The node of ``worker -B`` that runs this beat on a thread (None: ``celeriac beat``).
        self.worker = worker
        self.max_interval = max_interval
        self.interval = float(app.conf.worker_heartbeat_interval)
        self.started = time.time()
        #: The runs this beat won: entry name -> scheduled time (as stored in the broker).
        self.sent: dict[str, float] = {}
        self._next = 0.0
        self._failing = False

    def ran(self, entry: str, run_at: float) -> None:
        """This beat sent the run of ``entry`` at ``run_at``: said by a heartbeat written
        at once (after the tick that sent it), so that "sent by" matches the broker's
        last run but for a moment, even for an entry due every second."""
        self.sent[entry] = run_at
        self._next = 0.0

    def info(self) -> dict[str, Any]:
        return {"kind": BEAT_KIND, "hostname": socket.gethostname(), "pid": os.getpid(),
                "started": self.started, "worker": self.worker, "entries": self.entries,
                "sent": dict(self.sent), "max_interval": self.max_interval}

    def due_in(self) -> float:
        """Seconds until the next heartbeat is due."""
        return max(0.0, self._next - time.monotonic())

    def beat(self) -> None:
        """Write the heartbeat if one is due; a failure is logged (once per outage), never
        raised: the schedule matters more than the record of who sends it."""
        now = time.monotonic()
        if now < self._next:
            return
        try:
            self.app.broker.heartbeat(self.name, self.info(), ttl=self.interval * 3)
        except (CeleriacError, OSError) as exc:
            (log.debug if self._failing else log.warning)(
                "beat: could not write its heartbeat %s: %s", self.name, exc)
            self._failing = True
            self._next = now + 1.0
            return
        self._failing = False
        self._next = now + self.interval

    def forget(self) -> None:
        """Remove the record (a clean stop): the dashboard stops showing this beat at once."""
        try:
            self.app.broker.forget_worker(self.name)
        except (CeleriacError, OSError) as exc:
            log.warning("beat: could not remove its heartbeat %s: %s", self.name, exc)
