"""The garbage collector of a worker process, set once the process is ready to run tasks.

CPython's cyclic collector starts a young collection whenever 700 more tracked objects
have been made than freed. A worker makes them in bursts (a fetch decodes a batch of
messages, each one a dozen dicts and lists, before any of them has run), so it collected
about once every 17 no-op tasks, and every tenth of those went on to the middle
generation and, now and then, to the oldest, which holds everything the imports, the
app and the pool made: some 50,000 objects walked again each time for no gain, since
they live as long as the process. Measured on a no-op task (one Redis ``INCR``,
40,000 tasks, ``-P gevent -c 100``, 2026-12-05): the collector took 0.70 s of the
child's 6.5 s of CPU, about 17 us per task.

So, before the first task, :func:`settle` does what a long-running server is
advised to do (the ``gc.freeze`` documentation): one full collection, then it moves
every object left to the permanent generation, which no collection walks, and it
raises the young threshold to :func:`young_threshold` of the pool's concurrency. In
the same test the collector then took 0.10 s (145 young collections instead of 2,290)
and the child 15% less CPU. A task's own garbage is still collected: what it leaves in
reference cycles waits for at most that many allocations instead of 700.

**The threshold grows with the concurrency.** A task in flight holds 45 to 75 tracked
objects (its message, request and run, its green thread or coroutine, their contexts),
and a run built ahead for a waiting message about 14 more (counted with
``gc.get_objects()`` in ``-c 1000`` workers, 2026-12-05: a full ``-P asyncio`` pool
with a pool's worth of runs built ahead held 68 a slot). A pool that runs at its
concurrency frees about as many as it makes (a task ends, the next one starts),
but a wave of starts -- a full pool filling up, or a thousand tasks that ended together
handing over -- makes tens of thousands at once; with a threshold below that, every
wave set off several young collections, each walking the new tasks' objects (alive: they
had just started), and the middle generation walked them all again. At ``-c 1000`` on
the sleep workload of ``bench/asyncio_compare.py``, 18-22 collections took 21-43 ms of
a 1.6 s run, in the handovers that bound its figure. With :data:`PER_SLOT` objects a
slot (that, and room to spare), a worker at its concurrency collects about once per
pool's worth of new objects, and at most ``PER_SLOT x concurrency`` of garbage waits
for it: in proportion to what the worker holds when it is full anyway. celeriac's own
runs leave no cycle for it (a failed run's exception, whose traceback holds the run and
the task's locals, is let go of by the executor; an async run's task and trampoline by
the slot that waited for it), so what waits is the tasks' own garbage. A resize
(``pool_grow``, ``--autoscale``) moves it with the concurrency (:func:`resize`).

An app that sets the collector itself is left alone: if the collector is off, or its
young threshold is already at least the one this would set (or 0), only the freeze
happens, and a resize does not touch it; a ``worker_process_init`` receiver runs after
this and can set anything.
"""

from __future__ import annotations

import gc

#: The least young threshold of a worker process (CPython's default is 700).
YOUNG_THRESHOLD = 5000
#: Tracked objects allowed per slot of the pool before a young collection.
PER_SLOT = 100

#: The young threshold :func:`settle` set (None: the app's own is kept).
_ours: int | None = None


def young_threshold(concurrency: int) -> int:
    """The young generation's threshold for a pool of ``concurrency`` slots."""
    return max(YOUNG_THRESHOLD, PER_SLOT * concurrency)


def settle(concurrency: int = 1) -> None:
    """Collect once, freeze what is left and raise the young threshold (see the module)."""
    global _ours
    gc.collect()
    gc.freeze()
    young, *older = gc.get_threshold()
    wanted = young_threshold(concurrency)
    if gc.isenabled() and 0 < young < wanted:
        gc.set_threshold(wanted, *older)
        _ours = wanted


def resize(concurrency: int) -> None:
    """The pool now has ``concurrency`` slots: the young threshold follows, if it is the
    one :func:`settle` set (an app's own, or one changed since, is left as it is)."""
    global _ours
    young, *older = gc.get_threshold()
    if _ours is None or young != _ours:
        return
    _ours = young_threshold(concurrency)
    gc.set_threshold(_ours, *older)
