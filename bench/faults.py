"""A ledger-scored fault suite: kill, stop and restart things under load, then count.

Like Jepsen's total-queue checker, the verdict comes from two records kept outside
celeriac: the ids the producer sent (tried, and returned from the send), and the
ledger the tasks append to when they complete (``bench/faults_harness.py`` describes
it). Each *cell* is one scenario on one pool and one broker, against the real CLI
worker (``celeriac -A faulttasks worker``) in a session of its own. A cell passes when

* nothing is **lost** (a send returned and the task never completed),
* nothing is **unexpected** (a task completed that was never sent),
* **duplicated** completions (at-least-once allows them) are no more than the messages
  the broker had in flight at the faults, summed over the faults,
* no innocent task was dead-lettered, and a poison task was charged at most
  ``broker_max_deliveries`` deliveries (runs alone), ran at most ceil(log2(concurrency))
  more times uncharged beside others (while crash attribution narrowed it down; 0 on
  prefork) and ended dead-lettered,
* and everything drained before ``--drain-timeout`` (else the cell fails naming what
  is missing, instead of hanging).

Scenarios: kill-process, kill-node, stop-node, broker-restart (Redis only),
sigterm-under-load, poison, hub-block. ``docs/reliability.md`` says what each proves.

    .venv/bin/python bench/faults.py                          # full matrix, 2000 tasks a cell
    .venv/bin/python bench/faults.py --quick                  # a short version of every cell
    .venv/bin/python bench/faults.py --scenario kill-node --pools gevent --brokers redis
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # faults_harness, when imported by path

from faults_harness import (
    Broker,
    Entry,
    Fault,
    Job,
    Ledger,
    Node,
    Producer,
    start_node,
    wait_for,
    worker_processes,
    write_tasks,
)

#: Pool name -> ``-c``: many green threads, a few threads, four processes, many coroutines.
POOLS = {"gevent": 50, "threads": 8, "prefork": 4, "asyncio": 50}
#: Pools whose cells send the tasks' coroutines (``faulttasks.awork``...).
ASYNC_POOLS = {"asyncio"}
BROKERS = ("sqlite", "redis")
HEARTBEAT = 2.0
MAX_DELIVERIES = 5
DEFAULT_LEASE = 30.0
#: Seconds between two samples of the messages in flight (poison crashes: ``sampled_at``).
SAMPLE_EVERY = 0.05
#: Seconds either side of a poison task's start whose samples count for its crash.
SAMPLE_WINDOW = 0.15


class ScenarioError(RuntimeError):
    """The scenario could not carry out a step (a node that never became ready, say)."""


@dataclass(frozen=True)
class Options:
    tasks: int = 2000
    quick: bool = False
    drain_timeout: float = 300.0
    seed: int = 1
    #: Poison tasks in the poison scenario (default 20, quick 5).
    poisons: int | None = None


@dataclass
class CellResult:
    """One row of the table, plus the details behind it."""

    scenario: str
    pool: str
    broker: str
    tried: int = 0
    sent: int = 0
    completed: int = 0
    lost: int = 0
    duplicated: int = 0
    in_flight: int = 0
    unexpected: int = 0
    innocent_dead: int = 0
    bad_runs: str = "-"
    #: Poison tasks: most runs of one (ledger start lines), highest delivery count seen.
    poison_runs: int = 0
    poison_deliveries: int = 0
    drain: float | None = None
    passed: bool = False
    seconds: float = 0.0
    faults: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    workdir: str = ""


class Cell:
    """One scenario on one pool and broker: its directory, broker, nodes, ledger and faults."""

    def __init__(self, scenario: str, pool: str, broker: str, options: Options, root: Path,
                 lease: float = DEFAULT_LEASE) -> None:
        self.scenario, self.pool, self.options, self.lease = scenario, pool, options, lease
        self.dir = Path(tempfile.mkdtemp(prefix=f"{scenario}-{pool}-{broker}-", dir=root))
        self.rng = random.Random(f"{options.seed}-{scenario}-{pool}-{broker}")
        self.nodes: list[Node] = []
        self.faults: list[Fault] = []
        self.bad: dict[str, str] = {}  # task id -> task name, for those not meant to complete
        self.notes: list[str] = []
        self.producer: Producer | None = None
        self.sending_since = time.monotonic()
        self.faults_over = 0.0
        self.drained: float | None = None
        self.broker = Broker.create(broker, self.dir)
        self.ledger = Ledger(self.dir / "ledger.txt")
        try:
            self.module = write_tasks(self.dir, self.broker, self.ledger.path, lease, HEARTBEAT,
                                      MAX_DELIVERIES)
        except BaseException:
            self.broker.close()
            raise
        self.app = self.module.app
        self.samples: list[tuple[float, int]] = []  # (when, messages in flight)
        self._sampling = threading.Event()
        self.ledger.start()

    @property
    def quick(self) -> bool:
        return self.options.quick

    # -- building blocks for scenarios --------------------------------------------------

    def node(self, slot: str, wait: bool = True) -> Node:
        """Start a node named after its slot and generation (``a-1``, ``a-2`` ...)."""
        generation = sum(n.name.startswith(f"{slot}-") for n in self.nodes) + 1
        node = start_node(self.dir, f"{slot}-{generation}@faults", self.pool, POOLS[self.pool])
        self.nodes.append(node)
        if wait:
            node.wait_ready()
        return node

    def jobs(self, count: int, poisons: int = 0, seconds: tuple[float, float] = (0.01, 0.05)
             ) -> list[Job]:
        """``count`` innocent sleepers, with ``poisons`` poison tasks spread evenly among them."""
        jobs = [Job(str(uuid.uuid4()), "work", (round(self.rng.uniform(*seconds), 3),))
                for _ in range(count)]
        for i in range(poisons):
            job = Job(str(uuid.uuid4()), "poison", (0.05,))
            self.bad[job.task_id] = job.task
            jobs.insert((i + 1) * len(jobs) // (poisons + 1), job)
        return jobs

    def produce(self, jobs: list[Job], seconds: float) -> Producer:
        self.producer = Producer(self.module, jobs, seconds, self.dir,
                                 prefix="a" if self.pool in ASYNC_POOLS else "")
        self.sending_since = time.monotonic()
        self.producer.start()
        return self.producer

    def at(self, seconds: float) -> None:
        """Sleep until ``seconds`` after sending began: faults keep to a schedule of their
        own, whatever time restarting a node took, so they all land while tasks flow."""
        time.sleep(max(0.0, self.sending_since + seconds - time.monotonic()))

    def in_flight(self) -> int | None:
        """Messages claimed and not yet acked, all queues (None if the broker is unreachable)."""
        try:
            count: int = sum(stats.in_flight for stats in self.app.broker.stats().values())
            return count
        except Exception:
            return None

    def sample(self) -> None:
        """Sample the messages in flight every :data:`SAMPLE_EVERY` seconds, for faults
        nobody injects (a poison task's crash): the samples near it stand for the moment
        of the fault (:meth:`sampled_at`)."""
        def run() -> None:
            while not self._sampling.wait(SAMPLE_EVERY):
                count = self.in_flight()
                if count is not None:
                    self.samples.append((time.monotonic(), count))

        threading.Thread(target=run, name="sampler", daemon=True).start()

    def sampled_at(self, moment: float) -> int | None:
        """Messages in flight at ``moment``: the largest sample within
        :data:`SAMPLE_WINDOW` either side of it (the two nearest at least), as
        :meth:`fault` keeps the larger of its counts before and after an injected fault.

        ``moment`` is when the ledger showed a poison task's start (polled every 50 ms),
        and its crash follows 50 ms after the start; a node clears a burst of short tasks
        in a fraction of a second and hands a dead process's messages back at once. With
        the two samples either side of it four times a second, both could fall outside
        the burst the crash caught (a smoke cell once scored 2 duplicates against 0 in
        flight): the window covers the start, the crash and the claim before them."""
        if not self.samples:
            return None
        samples = self.samples
        index = bisect.bisect(samples, (moment, 0))
        low = bisect.bisect(samples, (moment - SAMPLE_WINDOW, 0))
        high = bisect.bisect(samples, (moment + SAMPLE_WINDOW, 0))
        near = samples[min(low, max(index - 1, 0)):max(high, index + 1)]
        return max(count for _, count in near)

    def orphans(self, victims: Collection[int]) -> set[str]:
        """Tasks whose latest run started in one of ``victims`` and has not completed."""
        starts, completions = self.ledger.snapshot()
        return {task_id for task_id, runs in starts.items()
                if runs[-1].pid in victims and task_id not in completions}

    def fault(self, label: str, inject: Callable[[], object], victims: Collection[int] = (),
              loaded: bool = True) -> Fault:
        """Inject a fault (call ``inject``) and note what it caught.

        With ``loaded``, first wait (up to 3 s) until the victims (pids) run a task, or
        without victims until the broker has messages in flight: a gevent pool clears a
        burst of short tasks in a fraction of a second, and a fault that lands on an idle
        node proves nothing. Messages in flight are counted just before and just after
        the fault, and the larger count kept: with 10-50 ms tasks a node's holdings turn
        over in the time it takes to list its processes, and right after a node was
        killed or frozen the broker still shows all it held. The victims' running tasks
        are those started there and not completed once the fault is in.
        """
        if loaded:
            busy = ((lambda: self.orphans(victims)) if victims
                    else (lambda: (self.in_flight() or 0) > 0))
            wait_for(busy, 3.0, interval=0.02)
        before = self.in_flight()
        at = time.monotonic()
        inject()
        after = self.in_flight()
        counts = [n for n in (before, after) if n is not None]
        fault = Fault(label, at, max(counts) if counts else None, self.orphans(victims))
        self.faults.append(fault)
        print(f"    {label} (in flight {fault.in_flight}, running there {len(fault.orphans)})",
              file=sys.stderr)
        return fault

    def end_faults(self) -> None:
        """Wait for the producer to finish sending: from here on the cell is draining."""
        if self.producer is not None:
            self.producer.join(self.producer.seconds + 120)
            if self.producer.is_alive():
                self.producer.stopping.set()
                self.notes.append("producer did not finish sending")
        self.faults_over = time.monotonic()

    # -- draining and scoring -----------------------------------------------------------

    def missing(self) -> dict[str, list[str]]:
        """What the cell still waits for; empty when drained."""
        assert self.producer is not None
        completed = self.ledger.completed()
        waiting: dict[str, list[str]] = {}
        lost = sorted(self.producer.returned - self.bad.keys() - completed)
        if lost:
            waiting["innocent tasks not completed"] = lost
            return waiting  # the rest is checked once these are in
        poisons = {i for i, name in self.bad.items() if name == "poison"} & self.producer.returned
        if poisons - self.dead_ids():
            waiting["poison tasks not dead-lettered"] = sorted(poisons - self.dead_ids())
        spins = [i for i, name in self.bad.items() if name == "spin"]
        if [i for i in spins if not self.app.AsyncResult(i).ready()]:
            waiting["spinning task has no result"] = spins
        return waiting

    def dead_ids(self) -> set[str]:
        """Task ids in the dead-letter store (a letter's own id is the broker's message id)."""
        ids = set()
        for letter in self.app.broker.dead_letters(limit=1_000_000):
            try:
                ids.add(str(json.loads(letter.body)["headers"]["id"]))
            except (ValueError, KeyError, TypeError):
                ids.add(letter.id)
        return ids

    def drain(self) -> None:
        """Wait for every sent task to be done, then for the broker to hold nothing."""
        waiting = wait_for(lambda: not self.missing(), self.options.drain_timeout, interval=0.2)
        if not waiting:
            for what, ids in self.missing().items():
                self.notes.append(f"not drained after {self.options.drain_timeout:.0f}s: "
                                  f"{len(ids)} {what} (e.g. {', '.join(ids[:3])})")
            return
        done = self.ledger.snapshot()[1]
        last = max((runs[0].seen for task_id, runs in done.items() if task_id not in self.bad),
                   default=self.faults_over)
        self.drained = max(0.0, last - self.faults_over)
        # Late duplicates (a stopped node resuming, a redelivery after a lease) land now.
        if not wait_for(lambda: self.in_flight() == 0, self.lease + 20, interval=0.25):
            self.notes.append("messages still in flight after the drain")
        time.sleep(2.0)

    def score(self, result: CellResult) -> None:
        assert self.producer is not None
        self._sampling.set()
        starts, completions = self.ledger.snapshot()
        for task_id, name in self.bad.items():
            if name == "poison":  # each run crashed its process: a fault of its own making
                self.faults += [Fault("poison task crashed its process", e.seen, self.sampled_at(e.seen))
                                for e in starts.get(task_id, [])]
        tried, returned, completed = self.producer.tried, self.producer.returned, set(completions)
        dead = self.dead_ids()
        result.tried, result.sent, result.completed = len(tried), len(returned), len(completed)
        result.lost = len(returned - self.bad.keys() - completed)
        result.unexpected = len(completed - tried)
        result.duplicated = sum(len(runs) - 1 for runs in completions.values())
        result.in_flight = sum(f.in_flight or 0 for f in self.faults)
        result.innocent_dead = len(dead - self.bad.keys())
        result.drain = self.drained
        if self.producer.errors:
            result.notes.append(f"{len(self.producer.errors)} sends raised "
                                f"(first: {self.producer.errors[0]})")
        for fault in self.faults:
            firsts = [min((e.seen for e in completions.get(i, []) if e.seen >= fault.at),
                          default=None) for i in fault.orphans]
            if fault.orphans and None not in firsts:
                fault.recovered_after = max(t for t in firsts if t is not None) - fault.at
            result.faults.append({"label": fault.label, "in_flight": fault.in_flight,
                                  "running_on_victim": len(fault.orphans),
                                  "recovered_after": fault.recovered_after})
        checks = self.check_bad(starts, completions, dead, result)
        result.notes += self.notes
        result.passed = (checks and result.lost == 0 and result.unexpected == 0
                         and result.duplicated <= result.in_flight and result.innocent_dead == 0
                         and self.drained is not None and not self.notes)

    def check_bad(self, starts: dict[str, list[Entry]], completions: dict[str, list[Entry]],
                  dead: set[str], result: CellResult) -> bool:
        """Poison tasks: ran at most max deliveries times, dead-lettered. Spinners: failed once."""
        ok = True
        poisons = [i for i, name in self.bad.items() if name == "poison"]
        if poisons:
            # Crash attribution runs a poison task uncharged beside others until it finds it
            # (at most once per halving of the pool's slots), then charges it once per run
            # alone: runs <= max deliveries + ceil(log2(concurrency)), charged <= max.
            slots = 1 if self.pool == "prefork" else POOLS[self.pool]  # tasks per process
            limit = MAX_DELIVERIES + poison_extra_runs(slots)
            runs = {i: len(starts.get(i, [])) for i in poisons}
            charged = {i: max((e.attempt for e in starts.get(i, [])), default=0) for i in poisons}
            result.poison_runs = max(runs.values())
            result.poison_deliveries = max(charged.values())
            result.bad_runs = f"{result.poison_runs}/{limit} ({result.poison_deliveries})"
            over = [i for i in poisons if runs[i] > limit or charged[i] > MAX_DELIVERIES]
            if over:
                attempts = [e.attempt for e in starts[over[0]]]
                result.notes.append(f"{len(over)} poison tasks ran more than {limit} times or were "
                                    f"charged more than {MAX_DELIVERIES} deliveries (e.g. "
                                    f"delivery counts {attempts})")
            not_dead = [i for i in poisons if i not in dead]
            if not_dead:
                result.notes.append(f"{len(not_dead)} poison tasks not dead-lettered")
            ok = not over and not not_dead
        for spin in (i for i, name in self.bad.items() if name == "spin"):
            spins = len(starts.get(spin, []))
            result.bad_runs = f"{spins}/1"
            outcome = self.app.AsyncResult(spin)
            exc = type(outcome.result).__name__ if outcome.status == "FAILURE" else "-"
            if spins != 1 or outcome.status != "FAILURE" or exc != "TimeLimitExceeded" \
                    or spin in completions:
                result.notes.append(f"spinning task: {spins} runs, {outcome.status} ({exc}), "
                                    f"{'completed' if spin in completions else 'never completed'}")
                ok = False
        return ok

    def stop_nodes(self) -> None:
        """Warm shutdown of every node still running (SIGKILL after 20 s)."""
        for node in self.nodes:
            node.stop(timeout=20)

    def close(self) -> None:
        """SIGKILL whatever is left of every node; stop the ledger, the app, and Redis."""
        try:
            for node in self.nodes:
                node.kill()
        finally:
            self._sampling.set()
            self.ledger.stop()
            try:
                self.app.close()
            finally:
                self.broker.close()


# -- scenarios -------------------------------------------------------------------------


def kill_process(cell: Cell) -> None:
    """SIGKILL one worker process (a child of the supervisor) again and again."""
    node = cell.node("a")
    kills, interval = (4, 1.5) if cell.quick else (10, 1.5)
    cell.produce(cell.jobs(cell.options.tasks), seconds=kills * interval + 1)
    for i in range(kills):
        cell.at((i + 1) * interval + cell.rng.uniform(-0.5, 0.4))  # any phase of a burst
        victims = wait_for(lambda: worker_processes(node.proc.pid, min_age=1.0), 20)
        if not victims:
            raise ScenarioError(f"no worker process of {node.name} lived 1 s:\n{node.log()[-2000:]}")
        victim = cell.rng.choice(victims)
        cell.fault(f"SIGKILL worker process {victim}", partial(os.kill, victim, signal.SIGKILL),
                   [victim])
    cell.end_faults()


def kill_node(cell: Cell) -> None:
    """SIGKILL a whole node (supervisor and children) beside a second one, and replace it.

    What the dead node held can only come back through the broker: when its lease runs
    out (30 s), or sooner if the surviving node notices the dead one's missing heartbeats.
    The recovery time of each kill is how long its running tasks took to complete elsewhere.
    """
    nodes = {"a": cell.node("a", wait=False), "b": cell.node("b", wait=False)}
    for node in nodes.values():
        node.wait_ready()
    kills, interval = (2, 6.0) if cell.quick else (5, 6.0)
    cell.produce(cell.jobs(cell.options.tasks), seconds=kills * interval + 2)
    for i in range(kills):
        cell.at((i + 1) * interval)
        slot = "ab"[i % 2]
        victim = nodes[slot]
        cell.fault(f"SIGKILL node {victim.name}", victim.kill, victim.pids())
        nodes[slot] = cell.node(slot)
    cell.end_faults()


def stop_node(cell: Cell) -> None:
    """SIGSTOP a node for longer than the lease (6 s) beside a running one, then SIGCONT."""
    nodes = [cell.node("a", wait=False), cell.node("b", wait=False)]
    for node in nodes:
        node.wait_ready()
    rounds, frozen = (1, 10.0) if cell.quick else (2, 10.0)
    cell.produce(cell.jobs(cell.options.tasks), seconds=rounds * (frozen + 4))
    for i in range(rounds):
        cell.at(2.0 + i * (frozen + 4))
        victim = nodes[i % 2]
        cell.fault(f"SIGSTOP node {victim.name} for {frozen:.0f}s",
                   partial(victim.signal_all, signal.SIGSTOP), victim.pids())
        time.sleep(frozen)
        victim.signal_all(signal.SIGCONT)
    cell.end_faults()


def broker_restart(cell: Cell) -> None:
    """SIGKILL redis-server (AOF, appendfsync always) and start it again on the same port."""
    server = cell.broker.server
    assert server is not None, "broker-restart runs on Redis only"
    cell.node("a")
    restarts, interval = (2, 4.0) if cell.quick else (3, 4.0)
    cell.produce(cell.jobs(cell.options.tasks), seconds=restarts * interval + 2)
    for i in range(restarts):
        cell.at((i + 1) * interval)
        cell.fault("SIGKILL redis-server, down 1 s", server.kill)
        time.sleep(1.0)
        server.start()
    cell.end_faults()


def sigterm_under_load(cell: Cell) -> None:
    """SIGTERM the node (warm shutdown) while tasks run, wait for it, start a new one."""
    node = cell.node("a")
    rounds, interval = (2, 4.0) if cell.quick else (3, 4.0)
    cell.produce(cell.jobs(cell.options.tasks), seconds=rounds * interval + 2)
    for i in range(rounds):
        cell.at((i + 1) * interval)
        cell.fault(f"SIGTERM node {node.name}", partial(node.proc.send_signal, signal.SIGTERM),
                   node.pids())
        try:
            code = node.proc.wait(60)
        except Exception:
            raise ScenarioError(f"{node.name} did not stop within 60 s of SIGTERM") from None
        if code != 0:
            cell.notes.append(f"{node.name} exited {code} after SIGTERM")
        node = cell.node("a")
    cell.end_faults()


def poison_extra_runs(concurrency: int) -> int:
    """Most uncharged runs of a poison task beside others: one per halving of the slots of
    one worker process (a prefork process runs one task: none)."""
    return math.ceil(math.log2(concurrency)) if concurrency > 1 else 0


def poison(cell: Cell) -> None:
    """Poison tasks (``os._exit(1)``) mixed among the innocent ones; no other fault."""
    cell.node("a")
    cell.sample()
    poisons = cell.options.poisons if cell.options.poisons is not None else 5 if cell.quick else 20
    cell.produce(cell.jobs(cell.options.tasks, poisons=poisons), seconds=5 if cell.quick else 10)
    cell.end_faults()


def hub_block(cell: Cell) -> None:
    """A task with ``time_limit=2`` that spins the CPU for 10 s among 1 s sleepers.

    On gevent it blocks the hub, so only the supervisor can enforce the limit; on
    threads and prefork the supervisor kills the process too. It must fail once with
    TimeLimitExceeded; its neighbours complete (rerun if they shared its process).
    """
    node = cell.node("a")
    jobs = cell.jobs(20 if cell.quick else 40, seconds=(1.0, 1.0))
    spin = Job(str(uuid.uuid4()), "spin", (10.0,))
    cell.bad[spin.task_id] = spin.task
    jobs.insert(len(jobs) // 4, spin)
    cell.produce(jobs, seconds=2.0)
    started = wait_for(lambda: spin.task_id in cell.ledger.snapshot()[0], 60)
    if not started:
        raise ScenarioError("the spinning task never started")
    time.sleep(1.9)
    cell.fault("hard time limit (2 s) of the spinning task", lambda: None, node.pids(), loaded=False)
    cell.end_faults()


#: name -> (scenario, broker_lease_timeout, brokers it runs on).
SCENARIOS: dict[str, tuple[Callable[[Cell], None], float, tuple[str, ...]]] = {
    "kill-process": (kill_process, DEFAULT_LEASE, BROKERS),
    "kill-node": (kill_node, DEFAULT_LEASE, BROKERS),
    "stop-node": (stop_node, 6.0, BROKERS),
    "broker-restart": (broker_restart, DEFAULT_LEASE, ("redis",)),
    "sigterm-under-load": (sigterm_under_load, DEFAULT_LEASE, BROKERS),
    "poison": (poison, DEFAULT_LEASE, BROKERS),
    "hub-block": (hub_block, DEFAULT_LEASE, BROKERS),
}


def run_cell(scenario: str, pool: str, broker: str, options: Options, root: Path) -> CellResult:
    """Run one cell start to finish; every process it started is gone when it returns."""
    func, lease, _ = SCENARIOS[scenario]
    result = CellResult(scenario, pool, broker)
    began = time.monotonic()
    cell = Cell(scenario, pool, broker, options, root, lease=lease)
    result.workdir = str(cell.dir)
    try:
        try:
            func(cell)
            cell.drain()
        except Exception as exc:  # a step that failed is this cell's failure, not the run's
            cell.notes.append(f"scenario error: {type(exc).__name__}: {exc}")
        cell.stop_nodes()  # every ledger line is in; the broker is still up to be asked
        if cell.producer is None:
            result.notes += cell.notes
        else:
            cell.score(result)
    finally:
        cell.close()
    result.seconds = time.monotonic() - began
    return result


# -- reporting -------------------------------------------------------------------------

COLUMNS = ("scenario", "pool", "broker", "sent", "completed", "lost", "duplicated",
           "in flight at faults", "unexpected", "innocent dead-lettered", "poison max runs",
           "drain s", "result")


def row(r: CellResult) -> list[str]:
    drain = "-" if r.drain is None else f"{r.drain:.1f}"
    return [r.scenario, r.pool, r.broker, str(r.sent), str(r.completed), str(r.lost),
            str(r.duplicated), str(r.in_flight), str(r.unexpected), str(r.innocent_dead),
            r.bad_runs, drain, "PASS" if r.passed else "FAIL"]


def table(results: list[CellResult]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row(r)) + " |" for r in results]
    notes = [f"- {r.scenario}/{r.pool}/{r.broker}: {note}" for r in results for note in r.notes]
    recoveries = [f"- {r.scenario}/{r.pool}/{r.broker}: " + ", ".join(
        "-" if f["recovered_after"] is None else f"{f['recovered_after']:.1f}s ({f['running_on_victim']})"
        for f in r.faults) for r in results if r.scenario in ("kill-node", "stop-node")]
    if recoveries:
        lines += ["", "Recovery (fault to last of the victim's running tasks completed elsewhere; "
                  "tasks in brackets):", *recoveries]
    if notes:
        lines += ["", "Notes:", *notes]
    return "\n".join(lines)


def parse_list(value: str, allowed: tuple[str, ...] | list[str], what: str) -> list[str]:
    items = [item.strip() for item in value.split(",") if item.strip()]
    unknown = [item for item in items if item not in allowed]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {what} {unknown}; choose from {list(allowed)}")
    return items


def interrupt(signum: int, frame: Any) -> None:
    """SIGTERM ends the run as Ctrl-C does: through every ``finally`` that stops processes."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", action="append", metavar="NAME",
                        help=f"scenario(s), repeat or comma-separate: {', '.join(SCENARIOS)} "
                             "[default: all]")
    parser.add_argument("--pools", default=",".join(POOLS), help="[default: %(default)s]")
    parser.add_argument("--brokers", default=",".join(BROKERS), help="[default: %(default)s]")
    parser.add_argument("--tasks", type=int, help="innocent tasks per cell [default: 2000, quick 300]")
    parser.add_argument("--quick", action="store_true", help="fewer faults and tasks per cell")
    parser.add_argument("--drain-timeout", type=float, default=300.0,
                        help="seconds a cell may take to drain before it fails [default: %(default)s]")
    parser.add_argument("--seed", type=int, default=1, help="task durations and victims")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write every result here")
    parser.add_argument("--workdir", type=Path, help="keep cell directories (logs, ledgers) here")
    args = parser.parse_args(argv)
    try:
        scenarios = parse_list(",".join(args.scenario or SCENARIOS), list(SCENARIOS), "scenario")
        pools = parse_list(args.pools, list(POOLS), "pool")
        brokers = parse_list(args.brokers, BROKERS, "broker")
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    options = Options(tasks=args.tasks or (300 if args.quick else 2000), quick=args.quick,
                      drain_timeout=args.drain_timeout, seed=args.seed)
    cells = [(s, p, b) for s in scenarios for b in brokers for p in pools if b in SCENARIOS[s][2]]
    root = args.workdir or Path(tempfile.mkdtemp(prefix="celeriac-faults-"))
    root.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, interrupt)
    results: list[CellResult] = []
    began = time.monotonic()
    try:
        for scenario, pool, broker in cells:
            print(f"{scenario} / {pool} / {broker} ...", file=sys.stderr)
            result = run_cell(scenario, pool, broker, options, root)
            results.append(result)
            print(f"  {' | '.join(row(result))}  ({result.seconds:.0f}s)", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted: every process of the current cell was stopped", file=sys.stderr)
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    print(table(results))
    print(f"\n{len(results)} cells in {time.monotonic() - began:.0f}s; "
          f"{sum(r.passed for r in results)} passed", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    complete = len(results) == len(cells)
    return 0 if complete and all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
