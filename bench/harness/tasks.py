"""The task module each system runs, generated per system and broker as ``benchtasks.py``.

Every framework gets the same task bodies, written once in ``HEADER`` and wrapped the way
that framework's documentation writes a task (``_tasks`` and ``_producers`` write the
wrappers and producer functions, so a template holds only what differs); the bare-pool
ceiling (``ceiling.py``) calls the same bodies with no queue at all, so the ratio of a
system to the ceiling is exactly what the queue costs:

* ``incr_body()``: one Redis ``INCR`` of the counter (the no-op workload);
* ``feed_body(n)``: ``SET start NX`` (the first start, on the task's clock), GET
  ``/feeds/N.xml`` from the loopback feed hub with ``requests`` (one module-level
  ``Session`` whose pool holds as many keep-alive connections as the concurrency, as
  ``examples/gevent/tasks.py`` sets it up), parse the RSS with ElementTree, check its five
  items, ``INCR`` the counter;
* ``started_body(sent)``: ``RPUSH`` of ``time.time() - sent`` (enqueue-to-start latency).

The counters live on a loopback Redis (the broker's own on Redis; a second one for the
SQLite and RabbitMQ brokers), through one ``BlockingConnectionPool`` sized for the
concurrency (redis-py's default pool refuses the 101st connection). Results are off
everywhere. Producer functions, called by ``bench/compare/produce.py``: ``enqueue(n)``,
``enqueue_bulk(n)`` (``None`` where the framework has no bulk API), ``enqueue_feeds(n)``,
``enqueue_latency(sent)``.
"""

from __future__ import annotations

from collections.abc import Callable

HEADER = '''
import asyncio
import time
import xml.etree.ElementTree as ET

import redis
import requests
from requests.adapters import HTTPAdapter

BROKER = {broker!r}
URL = {redis_url!r}
HUB = "http://127.0.0.1:{hub_port}/feeds/{{}}.xml"
CONCURRENCY = {concurrency!r}
COUNTER = "bench:count"
START = "bench:start"
LATENCY = "bench:latency"

r = redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(
    URL, max_connections=CONCURRENCY + 16, timeout=60))
session = requests.Session()
session.mount("http://", HTTPAdapter(pool_connections=4, pool_maxsize=CONCURRENCY))


def incr_body():
    r.incr(COUNTER)


def feed_items(content):
    channel = ET.fromstring(content).find("channel")
    items = [item.findtext("title", "") for item in channel.iter("item")]
    if len(items) != 5:
        raise RuntimeError(f"{{len(items)}} items")
    return items


def feed_body(n):
    r.set(START, time.time(), nx=True)
    response = session.get(HUB.format(n), timeout=60)
    response.raise_for_status()
    feed_items(response.content)
    r.incr(COUNTER)


def started_body(sent):
    r.rpush(LATENCY, time.time() - sent)
'''

#: The three tasks: name and parameters (each task calls ``<name>_body`` with them).
TASKS = (("incr", ""), ("feed", "n"), ("started", "sent"))


def _tasks(decorator: str) -> str:
    """The three tasks, each a call of its body, under ``decorator`` ("" for plain
    functions)."""
    line = f"{decorator}\n" if decorator else ""
    return "".join(f"\n\n{line}def {name}({args}):\n    {name}_body({args})\n"
                   for name, args in TASKS)


def _producers(send: Callable[[str, str], str], bulk: str = "\n\nenqueue_bulk = None\n",
               feeds: str | None = None) -> str:
    """The producer functions, each task sent by ``send(task, args)`` (the call's text):
    ``enqueue(n)``, ``enqueue_bulk`` (``bulk``: its definition, None by default),
    ``enqueue_feeds(n)`` (a loop of sends unless ``feeds``, its body, says otherwise) and
    ``enqueue_latency(sent)``."""
    feeds = feeds or f"    for i in range(n):\n        {send('feed', 'i')}\n"
    return (f"\n\ndef enqueue(n):\n    for _ in range(n):\n        {send('incr', '')}\n"
            f"{bulk}"
            f"\n\ndef enqueue_feeds(n):\n{feeds}"
            f"\n\ndef enqueue_latency(sent):\n    {send('started', 'sent')}\n")


def _method(method: str) -> Callable[[str, str], str]:
    """Sending by a method of the task: ``incr.delay()``, ``feed.send(i)``."""
    return lambda task, args: f"{task}.{method}({args})"


def _rq_enqueue(task: str, args: str) -> str:
    return f"queue.enqueue({task}, {args + ', ' if args else ''}result_ttl=0)"


CELERIAC_APP = """
from celeriac import Celeriac

app = Celeriac("benchtasks", broker=BROKER, backend={backend!r}, task_ignore_result=True,
               {settings})
"""
CELERIAC_PRODUCERS = _producers(
    _method("delay"),
    bulk="""

def enqueue_bulk(n):
    for start in range(0, n, 10_000):
        incr.apply_many([()] * min(10_000, n - start))
""",
    feeds="    feed.apply_many([(i,) for i in range(n)])\n")
CELERIAC = CELERIAC_APP + _tasks("@app.task(ignore_result=True)") + CELERIAC_PRODUCERS

#: celeriac on ``-P asyncio``: the same tasks as ``async def``, with asyncio clients
#: (redis.asyncio, aiohttp) made once per event loop, pools sized for the concurrency.
CELERIAC_ASYNC = CELERIAC_APP + """

import aiohttp
import redis.asyncio as aredis

_clients = {{}}


async def clients():
    loop = asyncio.get_running_loop()
    if loop not in _clients:
        _clients[loop] = (
            aredis.Redis(connection_pool=aredis.BlockingConnectionPool.from_url(
                URL, max_connections=CONCURRENCY + 16, timeout=60)),
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY),
                                  timeout=aiohttp.ClientTimeout(total=60)))
    return _clients[loop]


@app.task(ignore_result=True)
async def incr():
    ar, _ = await clients()
    await ar.incr(COUNTER)


@app.task(ignore_result=True)
async def feed(n):
    ar, http = await clients()
    await ar.set(START, time.time(), nx=True)
    async with http.get(HUB.format(n)) as response:
        response.raise_for_status()
        feed_items(await response.read())
    await ar.incr(COUNTER)


@app.task(ignore_result=True)
async def started(sent):
    ar, _ = await clients()
    await ar.rpush(LATENCY, time.time() - sent)
""" + CELERIAC_PRODUCERS

CELERY = """
from celery import Celery

app = Celery("benchtasks", broker=BROKER.replace("amqp://", "pyamqp://", 1))
app.conf.task_ignore_result = True
app.conf.broker_connection_retry_on_startup = True
if BROKER.startswith("amqp"):
    # AMQP heartbeats off on RabbitMQ: with the default (120 s) Celery 5.7's gevent worker
    # runs ~10 tasks/s once its first prefetch window is used (bench/README.md).
    app.conf.broker_heartbeat = 0
{settings}
""" + _tasks("@app.task(ignore_result=True)") + _producers(_method("delay"))

DRAMATIQ = """
import dramatiq

if BROKER.startswith("amqp"):
    from dramatiq.brokers.rabbitmq import RabbitmqBroker
    broker = RabbitmqBroker(url=BROKER)
else:
    # The worker's threads share the broker's client: a blocking pool sized for them
    # (redis-py's default pool refuses connections past its size: "Too many connections").
    from dramatiq.brokers.redis import RedisBroker
    broker = RedisBroker(client=redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(
        BROKER, max_connections=CONCURRENCY + 16, timeout=60)))
dramatiq.set_broker(broker)
{settings}
""" + _tasks("@dramatiq.actor") + _producers(_method("send"))

HUEY = """
if BROKER.startswith("sqlite"):
    from huey import SqliteHuey
    huey = SqliteHuey("benchtasks", filename=BROKER.removeprefix("sqlite:///"), results=False)
else:
    # Huey's documentation: greenlet workers share one pool, so give it a blocking
    # pool sized for the workers (its default pool refuses connections past its size).
    from huey import RedisHuey
    huey = RedisHuey("benchtasks", results=False, connection_pool=redis.BlockingConnectionPool.from_url(
        BROKER, max_connections=CONCURRENCY + 16, timeout=60))
{settings}
""" + _tasks("@huey.task()") + _producers(lambda task, args: f"{task}({args})")

RQ = """
from rq import Queue

queue = Queue("bench", connection=redis.Redis.from_url(BROKER))
{settings}
""" + _tasks("") + _producers(_rq_enqueue, bulk="""

def enqueue_bulk(n):
    for start in range(0, n, 10_000):
        queue.enqueue_many([Queue.prepare_data(incr, result_ttl=0)
                            for _ in range(min(10_000, n - start))])
""")

#: The template of each framework, by its name in ``systems.System.framework`` (``bare``:
#: the bodies alone, for the ceiling).
TEMPLATES = {"bare": "", "celeriac": CELERIAC, "celeriac-async": CELERIAC_ASYNC, "celery": CELERY,
             "dramatiq": DRAMATIQ, "huey": HUEY, "rq": RQ}


def module_source(framework: str, broker: str, redis_url: str, hub_port: int,
                  concurrency: int, settings: str = "", backend: str | None = None) -> str:
    """The text of ``benchtasks.py`` for one system on one broker."""
    header = HEADER.format(broker=broker, redis_url=redis_url, hub_port=hub_port,
                           concurrency=concurrency)
    return header + TEMPLATES[framework].format(settings=settings, backend=backend)
