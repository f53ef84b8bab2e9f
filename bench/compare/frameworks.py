"""The four frameworks of ``bench/redis_compare.py``: task modules and worker commands.

Each framework gets a directory of its own holding a generated ``benchtasks.py``
with the same two tasks, written the way that framework's documentation writes
them, and the same producer functions (:func:`tasks` and :func:`producers` write them
for every framework, here and in ``amqp_frameworks.py``, so a template holds only what
differs):

* ``incr()``: one Redis ``INCR`` of the framework's counter key, nothing else;
* ``started(sent)``: ``RPUSH`` of ``time.time() - sent`` onto the latency key;
* ``enqueue(n)``: ``n`` sequential ``.send()`` / ``.delay()`` / calls of ``incr``;
* ``enqueue_latency(sent)``: one ``started`` message;
* ``enqueue_bulk(n)``: ``n`` ``incr`` messages in one bulk call, or ``None`` where the
  framework has no such API; only celeriac's is measured (``Task.apply_many``, one
  broker call per 1000 messages by default).

Results are off everywhere: Dramatiq stores none without its Results middleware,
Celery gets no result backend and ``ignore_result``, Huey ``results=False`` and
celeriac ``ignore_result=True``. The task's own Redis client is a module-level
``redis.Redis`` on the same server, identical for the four.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HEADER = '''
import time

import redis

URL = {url!r}
COUNTER = {counter!r}
LATENCY = {latency!r}
r = redis.Redis.from_url(URL)
'''

#: The tasks every module has: name, parameters, body.
TASKS = (("incr", "", "r.incr(COUNTER)"), ("started", "sent", "r.rpush(LATENCY, time.time() - sent)"))
NO_BULK = "\n\nenqueue_bulk = None\n"


def tasks(decorator: str, more: tuple[tuple[str, str, str], ...] = ()) -> str:
    """The tasks (:data:`TASKS`, then ``more``) under ``decorator``, as module text."""
    return "".join(f"\n\n{decorator}\ndef {name}({args}):\n    {body}\n"
                   for name, args, body in (*TASKS, *more))


def producers(send: Callable[[str, str], str], feeds: bool = False, bulk: str = NO_BULK) -> str:
    """``enqueue(n)``, ``enqueue_latency(sent)``, with ``feeds`` ``enqueue_feeds(n)``, then
    ``bulk`` (``enqueue_bulk``'s definition), each task sent by ``send(task, args)``."""
    text = (f"\n\ndef enqueue(n):\n    for _ in range(n):\n        {send('incr', '')}\n"
            f"\n\ndef enqueue_latency(sent):\n    {send('started', 'sent')}\n")
    if feeds:
        text += f"\n\ndef enqueue_feeds(n):\n    for i in range(n):\n        {send('feed', 'i')}\n"
    return text + bulk


def method(name: str) -> Callable[[str, str], str]:
    """Sending by a method of the task: ``incr.send()``, ``started.delay(sent)``."""
    return lambda task, args: f"{task}.{name}({args})"


DRAMATIQ = """
import dramatiq
from dramatiq.brokers.redis import RedisBroker

broker = RedisBroker(url=URL)
dramatiq.set_broker(broker)
""" + tasks("@dramatiq.actor") + producers(method("send"))

CELERY = """
from celery import Celery

app = Celery("benchtasks", broker=URL)
app.conf.task_ignore_result = True
app.conf.broker_connection_retry_on_startup = True
""" + tasks("@app.task(ignore_result=True)") + producers(method("delay"))

HUEY = """
from huey import RedisHuey

huey = RedisHuey("benchtasks", url=URL, results=False)
""" + tasks("@huey.task()") + producers(lambda task, args: f"{task}({args})")

CELERIAC = """
from celeriac import Celeriac

# Results are ignored; the backend only decides what the worker opens (the default
# would be a SQLite file), so it is the same Redis once celeriac has a Redis backend.
try:
    from celeriac.backends import known_schemes
    BACKEND = URL if "redis" in known_schemes() else None
except ImportError:
    BACKEND = None

app = Celeriac("benchtasks", broker=URL, backend=BACKEND, task_ignore_result=True)
""" + tasks("@app.task(ignore_result=True)") + producers(method("delay"), bulk="""

if hasattr(incr, "apply_many"):
    def enqueue_bulk(n):
        incr.apply_many([()] * n)
else:
    enqueue_bulk = None
    BULK_MISSING = "this celeriac has no Task.apply_many"
""")

#: Runs Huey's consumer after gevent's monkey patching, as Huey's documentation asks
#: for the greenlet worker type (``huey_consumer`` itself does not patch).
HUEY_GEVENT_MAIN = (
    "from gevent import monkey; monkey.patch_all()\n"
    "import sys\n"
    "from huey.bin.huey_consumer import consumer_main\n"
    "sys.argv[0] = 'huey_consumer'\n"
    "consumer_main()\n"
)


@dataclass(frozen=True)
class Framework:
    name: str
    source: str
    #: Worker command line for a concurrency, given the venv's bin directory.
    command: Callable[[Path, int], list[str]]
    #: Put before the installed packages on the worker's and producer's import path
    #: (``--against``: a worktree of another revision of celeriac).
    pythonpath: str = ""

    def counter_key(self) -> str:
        return f"bench:{self.name}:counter"

    def latency_key(self) -> str:
        return f"bench:{self.name}:latency"

    def write_module(self, directory: Path, url: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        header = HEADER.format(url=url, counter=self.counter_key(), latency=self.latency_key())
        (directory / "benchtasks.py").write_text(header + self.source)


def _dramatiq(bin_dir: Path, concurrency: int) -> list[str]:
    return [str(bin_dir / "dramatiq-gevent"), "benchtasks", "--processes", "1",
            "--threads", str(concurrency)]


def _celery(bin_dir: Path, concurrency: int) -> list[str]:
    # mingle/gossip only exchange worker-to-worker chatter at start-up and over the
    # event bus; off, as Celery's own tuning advice has it for single-worker setups.
    return [str(bin_dir / "celery"), "-A", "benchtasks", "worker", "-P", "gevent", "-c",
            str(concurrency), "-l", "WARNING", "--without-mingle", "--without-gossip"]


def _huey(bin_dir: Path, concurrency: int) -> list[str]:
    return [sys.executable, "-c", HUEY_GEVENT_MAIN, "benchtasks.huey", "-k", "greenlet",
            "-w", str(concurrency), "-q"]


def _celeriac(bin_dir: Path, concurrency: int) -> list[str]:
    return [str(bin_dir / "celeriac"), "-A", "benchtasks", "worker", "-P", "gevent", "-c",
            str(concurrency), "-l", "warning"]


FRAMEWORKS: dict[str, Framework] = {
    f.name: f for f in [
        Framework("dramatiq", DRAMATIQ, _dramatiq),
        Framework("celery", CELERY, _celery),
        Framework("huey", HUEY, _huey),
        Framework("celeriac", CELERIAC, _celeriac),
    ]
}
