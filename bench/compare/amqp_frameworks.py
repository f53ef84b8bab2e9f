"""The frameworks of ``bench/amqp_compare.py``: task modules for RabbitMQ, worker commands.

Same shape as ``frameworks.py`` (and the same worker command lines, taken from there),
with the broker on RabbitMQ and the counters on a loopback Redis. Each generated
``benchtasks.py`` has three tasks, written the way that framework's documentation
writes them:

* ``incr()``: one Redis ``INCR`` of the framework's counter, nothing else (no-op);
* ``started(sent)``: ``RPUSH`` of ``time.time() - sent`` onto the latency key;
* ``feed(n)``: GET ``/feeds/N.xml`` from the loopback feed hub
  (``examples/gevent/feedhub.py``, 0.5 s per answer), parse the RSS with ElementTree,
  check its five items, then ``INCR`` the feeds counter.

The feed task's HTTP client is the standard library's ``http.client`` with a
module-level pool of keep-alive connections, identical for every framework (the
workers patch sockets with gevent before they import the module): a new connection
per fetch would run the loopback out of ports over a few runs.

Producer functions (``produce.py`` calls them): ``enqueue(n)``, ``enqueue_latency``,
``enqueue_bulk(n)`` (celeriac's ``Task.apply_many``; ``None`` elsewhere) and
``enqueue_feeds(n)``: ``n`` sequential sends of ``feed``.

Results are off everywhere. Broker settings are each framework's defaults for
RabbitMQ unless said here:

* Dramatiq: ``RabbitmqBroker(url=...)`` (pika; durable classic queues, persistent
  messages, no publisher confirms, prefetch 2 per worker thread, ack after the task);
* Celery: ``pyamqp://`` (py-amqp through kombu, what Celery's documentation gives
  for RabbitMQ), classic durable queue, persistent messages, no publisher confirms,
  ack on receipt, prefetch 4 per slot;
* celery-quorum: Celery as its RabbitMQ documentation recommends for reliable
  delivery: ``task_default_queue_type="quorum"`` with
  ``broker_transport_options={"confirm_publish": True}`` (quorum queues, publisher
  confirms; Celery then turns global QoS off itself);
* celery-nohb: Celery with ``broker_heartbeat = 0``, the usual workaround for gevent
  workers losing or stalling on RabbitMQ heartbeats;
* celeriac: ``amqp://`` with its defaults (quorum queue, publisher confirms, ack after
  the task), its state store (``broker_state_url``) on the same Redis.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from compare.frameworks import FRAMEWORKS as REDIS_FRAMEWORKS
from compare.frameworks import Framework, method, producers, tasks

HEADER = '''
import http.client
import queue
import time
import xml.etree.ElementTree as ET

import redis

URL = {redis_url!r}
BROKER = {broker_url!r}
COUNTER = {counter!r}
LATENCY = {latency!r}
FEEDS = {feeds!r}
HUB_PORT = {hub_port!r}
# redis-py's default pool refuses a 101st connection; the feed tasks run 1000 at once.
r = redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(
    URL, max_connections=2000, timeout=60))

_connections = queue.LifoQueue()


def fetch_feed(n):
    """GET one feed over a pooled keep-alive connection; its item titles."""
    try:
        conn = _connections.get_nowait()
    except queue.Empty:
        conn = http.client.HTTPConnection("127.0.0.1", HUB_PORT, timeout=30)
    try:
        conn.request("GET", f"/feeds/{{n}}.xml")
        response = conn.getresponse()
        body = response.read()
    except BaseException:
        conn.close()
        raise
    _connections.put(conn)
    if response.status != 200:
        raise RuntimeError(f"feed {{n}}: HTTP {{response.status}}")
    items = [item.findtext("title", "") for item in ET.fromstring(body).iter("item")]
    if len(items) != 5:
        raise RuntimeError(f"feed {{n}}: {{len(items)}} items")
    r.incr(FEEDS)
'''

#: The feed task, after :data:`compare.frameworks.TASKS` in every module here.
FEED = (("feed", "n", "fetch_feed(n)"),)

DRAMATIQ = """
import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker

broker = RabbitmqBroker(url=BROKER)
dramatiq.set_broker(broker)
""" + tasks("@dramatiq.actor", FEED) + producers(method("send"), feeds=True)

#: ``{extra}``: the settings of a variant (:data:`CELERY_QUORUM`, :data:`CELERY_NO_HEARTBEAT`).
CELERY = """
from celery import Celery

app = Celery("benchtasks", broker=BROKER)
app.conf.task_ignore_result = True
app.conf.broker_connection_retry_on_startup = True
{extra}""" + tasks("@app.task(ignore_result=True)", FEED) + producers(method("delay"), feeds=True)

CELERY_QUORUM = '''
app.conf.task_default_queue_type = "quorum"
app.conf.broker_transport_options = {"confirm_publish": True}
'''

#: The community's workaround for Celery's gevent workers on RabbitMQ: AMQP heartbeats
#: off. Measured here: with Celery 5.7's default (120 s) a gevent worker ran ~10 tasks/s
#: once its first prefetch window was used, 1000 tasks in under a second without.
CELERY_NO_HEARTBEAT = '''
app.conf.broker_heartbeat = 0
'''

CELERIAC = """
from celeriac import Celeriac

# Results are ignored; the backend only decides what the worker opens. The broker's
# state store (workers, events, delivery counts) is the same Redis.
app = Celeriac("benchtasks", broker=BROKER, backend=URL, broker_state_url=URL,
               task_ignore_result=True)
""" + tasks("@app.task(ignore_result=True)", FEED) + producers(method("delay"), feeds=True, bulk="""

def enqueue_bulk(n):
    incr.apply_many([()] * n)
""")


@dataclass(frozen=True)
class AmqpFramework(Framework):
    """A framework whose module is written for a broker URL, a Redis URL and a feed hub."""

    def feeds_key(self) -> str:
        return f"bench:{self.name}:feeds"

    def write_amqp_module(self, directory: Path, broker_url: str, redis_url: str,
                          hub_port: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        header = HEADER.format(redis_url=redis_url, broker_url=broker_url,
                               counter=self.counter_key(), latency=self.latency_key(),
                               feeds=self.feeds_key(), hub_port=hub_port)
        (directory / "benchtasks.py").write_text(header + self.source)


def _framework(name: str, source: str, command_of: str) -> AmqpFramework:
    base = REDIS_FRAMEWORKS[command_of]
    return AmqpFramework(name, source, base.command)


#: The frameworks by name, in the default table order (Celery first: the ratios' base).
FRAMEWORKS: dict[str, AmqpFramework] = {
    f.name: f for f in [
        _framework("celery", CELERY.format(extra=""), "celery"),
        _framework("celery-quorum", CELERY.format(extra=CELERY_QUORUM), "celery"),
        _framework("celery-nohb", CELERY.format(extra=CELERY_NO_HEARTBEAT), "celery"),
        _framework("dramatiq", DRAMATIQ, "dramatiq"),
        _framework("celeriac", CELERIAC, "celeriac"),
    ]
}
