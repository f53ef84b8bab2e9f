"""How fast the dashboard's pages answer on a large broker: ``python bench/dashboard_scale.py``.

The issue's bar: every page in under 300 ms with 1,000,000 queued messages, 100,000
dead letters and 100,000 results, in Redis and in SQLite. This fills a broker (a private
``redis-server``, or a SQLite file in a temporary directory) with that much, plus 50,000
scheduled messages and as many retries, 72 hours of per-minute metric rollups for 20 task
names (written with ``Broker.record_metrics``, as workers write them), a few live
workers' heartbeats and a full worker event stream (10,000 events, the cap), then
requests each page through the real Flask app (``create_app``, logged in as admin; the
HTTP server is left out: it adds the same small cost to every page) and prints the
median and the slowest of ``--repeat`` requests per page.

Every page is measured without naming it here: the pages are the app's GET routes
(``url_map``), less static files, login and logout, and event streams (a response of
``text/event-stream`` is skipped). A route's parameters are filled with what the fill
put in the broker (:data:`ROUTE_VALUES`: a queue name, the id of a stored result...; an
``any(...)`` parameter takes each of its values, and a combination the page answers
with 404 is left out); a parameter of another name stops the run before the fill, so a
new page is never silently left out. Query arguments are found by asking the page:
a first request records which ones its view reads. Those a page needs (``queue``,
``all``: :data:`NEEDED`) go into each of its requests; each one of :data:`VARIANTS` it
reads is measured as a request of its own: ``fragment=1`` (the htmx fragment), a deep
``offset`` (page 1,000 of a listing), ``name`` (a search by task name). A query
argument in neither table (nor :data:`UNMEASURED`) is reported, and the page is
measured without it.

Filling takes a while (about a minute per million messages on SQLite): ``--messages``,
``--dead``, ``--results`` and ``--scheduled`` make it smaller for a quick look.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from flask import Flask, Request
from flask.testing import FlaskClient
from metrics_read import fill as fill_metrics
from redisserver import RedisServer
from werkzeug.datastructures import ImmutableMultiDict
from werkzeug.routing import AnyConverter, Rule
from werkzeug.security import generate_password_hash

from celeriac import Celeriac
from celeriac.backends.base import ResultRecord
from celeriac.brokers.base import OutgoingMessage, WorkerEvent
from celeriac.dashboard import create_app
from celeriac.dashboard.messages import PAGE_SIZE
from celeriac.message import build

BATCH = 10_000
PASSWORD = "bench"
TOKEN = "bench"
#: The slowest a page may be (the issue's bar).
BAR_MS = 300.0
#: The queue of the ready messages; the queue of the dead letters, scheduled messages and
#: retries (the pages' ``queue`` argument).
READY_QUEUE, OTHER_QUEUE = "celery", "payments"
#: The task name of every message and result, one of the metrics' task names.
TASK = "shop.resize_image"
WORKERS = [f"bench-{n}@host" for n in range(4)]
#: The listing page a deep ``offset`` asks for (at the pages' default size).
DEEP_PAGE = 1000

#: Route parameters by name: what the fill stored (``task_id``: see :func:`route_values`).
ROUTE_VALUES = {"name": READY_QUEUE, "queue": READY_QUEUE, "task": TASK, "task_name": TASK,
                "worker": WORKERS[0], "hostname": WORKERS[0]}
#: Query arguments a page needs to show anything: sent with each of its requests.
NEEDED = {"queue": OTHER_QUEUE, "all": "1"}
#: Query arguments measured as a request of their own, each alone.
VARIANTS = {"fragment": "1", "offset": str((DEEP_PAGE - 1) * PAGE_SIZE), "name": TASK,
            "state": "SUCCESS", "prefix": "ab", "events": "all", "range": "72h"}
#: Query arguments left at their default: the page size, a task id (``/tasks?id=``
#: redirects to the task's page, measured itself), an action's chosen ids, the stream's
#: cursor, login's return path.
UNMEASURED = {"limit", "id", "after", "heartbeats", "next"}
#: Routes that are not pages.
SKIPPED = {"static", "login", "logout"}
_PARAMETER = re.compile(r"<(?:[^>]*:)?(\w+)>")
#: The query arguments the last request's view read (requests are made one at a time).
ASKED: set[str] = set()


class _Recording(ImmutableMultiDict[str, str]):
    """Query arguments that remember which names the view asked for (:data:`ASKED`)."""

    def get(self, key: str, *args: Any, **kwargs: Any) -> Any:
        ASKED.add(key)
        return super().get(key, *args, **kwargs)

    def getlist(self, key: str, *args: Any, **kwargs: Any) -> Any:
        ASKED.add(key)
        return super().getlist(key, *args, **kwargs)

    def __getitem__(self, key: str) -> Any:
        ASKED.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        ASKED.add(str(key))
        return super().__contains__(key)


class _RecordingRequest(Request):
    parameter_storage_class = _Recording


@dataclass(frozen=True)
class Url:
    """One request to measure: what the table calls it, and the URL."""

    label: str
    path: str
    #: From a route with an ``any(...)`` parameter: a 404 means the combination is no page.
    optional: bool = False


@contextmanager
def broker_url(kind: str, directory: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{directory / 'scale.db'}"
        return
    with RedisServer(directory / "redis") as server:
        yield server.url()


def route_values(task_id: str) -> dict[str, str]:
    return {**ROUTE_VALUES, "task_id": task_id}


def _combinations(rule: Rule, values: dict[str, str]) -> Iterator[dict[str, str]]:
    """Every filling of the rule's parameters: ``any(...)`` ones take each of their values."""
    combos: list[dict[str, str]] = [{}]
    for name, converter in sorted(rule._converters.items()):
        if isinstance(converter, AnyConverter):
            choices = sorted(converter.items)
        elif name in values:
            choices = [values[name]]
        else:
            raise SystemExit(
                f"route {rule.rule} ({rule.endpoint}) has a parameter {name!r} this bench cannot "
                f"fill: add what the fill stores for it to ROUTE_VALUES in {Path(__file__).name}")
        combos = [{**combo, name: choice} for combo in combos for choice in choices]
    yield from combos


def pages(flask: Flask, values: dict[str, str]) -> list[Url]:
    """Every GET route of the app, its parameters filled (fails on one it cannot fill)."""
    adapter = flask.url_map.bind("localhost")
    urls = []
    for rule in sorted(flask.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint in SKIPPED or "GET" not in (rule.methods or ()):
            continue
        chosen = {name for name, c in rule._converters.items() if isinstance(c, AnyConverter)}
        for combo in _combinations(rule, values):
            urls.append(Url(_label(rule.rule, {k: v for k, v in combo.items() if k in chosen}),
                            adapter.build(rule.endpoint, combo, method="GET"),
                            optional=bool(chosen)))
    return urls


def _label(rule: str, shown: dict[str, str]) -> str:
    """The rule with the ``shown`` parameters' values and the others' names."""
    return _PARAMETER.sub(lambda m: shown.get(m[1], f"<{m[1]}>"), rule)


def _bodies(count: int, queue: str, eta: float | None = None,
            retries: int = 0) -> Iterator[list[OutgoingMessage]]:
    for start in range(0, count, BATCH):
        yield [OutgoingMessage(queue, build(TASK, str(uuid.uuid4()), (f"/media/{n}.jpg", 640), {},
                                            queue=queue, retries=retries).dumps(),
                               eta=None if eta is None else eta + n)
               for n in range(start, min(count, start + BATCH))]


def fill(app: Celeriac, args: argparse.Namespace, task_id: str) -> None:
    """Fill the broker and backend; ``task_id`` is the id of the last stored result."""
    broker, began = app.broker, time.monotonic()
    for batch in _bodies(args.messages, READY_QUEUE):
        broker.publish(batch)
    for batch in _bodies(args.dead, OTHER_QUEUE):
        broker.publish(batch)
        while True:
            deliveries = broker.fetch([OTHER_QUEUE], 1000, consumer="bench", lease=60)
            if not deliveries:
                break
            broker.dead_letter(deliveries, "max deliveries (5) exceeded")
    later = time.time() + 86400
    for retries in (0, 1):  # scheduled messages, then retries
        for batch in _bodies(args.scheduled, OTHER_QUEUE, eta=later, retries=retries):
            broker.publish(batch)
    for start in range(0, args.results, BATCH):
        count = min(args.results, start + BATCH) - start
        ids = [str(uuid.uuid4()) for _ in range(count - 1)] + [task_id]
        app.backend.store_many([ResultRecord(i, "SUCCESS", result=n, name=TASK, date_done=time.time())
                                for n, i in enumerate(ids, start)])
    names = [TASK, *(f"shop.task_{i:02d}" for i in range(args.task_names - 1))]
    write = fill_metrics(broker, names, time.time())
    for name in WORKERS:
        broker.heartbeat(name, {"pool": "gevent", "processes": 2, "concurrency": 200,
                                "queues": [READY_QUEUE], "running": 10, "processed": 1000,
                                "stalls": {"shop.crunch": 3}}, ttl=3600)
    for start in range(0, 10_000, 1000):
        broker.emit([WorkerEvent("task-blocked", WORKERS[n % 4],
                                 {"task": "shop.crunch", "id": str(n), "pid": 1, "stack": "x" * 800})
                     for n in range(start, start + 1000)])
    print(f"  filled in {time.monotonic() - began:.0f} s (a minute of metric rows written in "
          f"{write * 1000:.1f} ms)", flush=True)


def _get(client: FlaskClient, path: str) -> Any:
    return client.get(path, headers={"Authorization": f"Bearer {TOKEN}"})


def _with(path: str, query: dict[str, str]) -> str:
    return f"{path}?{urlencode(query)}" if query else path


def _asked(client: FlaskClient, path: str) -> tuple[set[str], Any]:
    """The query arguments the page's view reads, and its response (unread)."""
    ASKED.clear()
    response = _get(client, path)
    return set(ASKED), response


def variants(client: FlaskClient, url: Url) -> list[Url]:
    """The requests of one page: with the query arguments it needs, then each variant it
    reads; none for an event stream or a combination of ``any`` values that is no page."""
    query: dict[str, str] = {}
    while True:
        asked, response = _asked(client, _with(url.path, query))
        needed = {key: NEEDED[key] for key in asked if key in NEEDED and key not in query}
        if not needed:
            break
        response.close()
        query.update(needed)
    response.close()
    if response.mimetype == "text/event-stream":
        print(f"  skipped {url.label}: an event stream", flush=True)
        return []
    if url.optional and response.status_code == 404:
        return []
    unknown = asked - NEEDED.keys() - VARIANTS.keys() - UNMEASURED
    if unknown:
        print(f"  NOTE {url.label} reads query argument(s) {', '.join(sorted(unknown))} this bench "
              f"does not fill: measured without them (add them to VARIANTS)", flush=True)
    label = _with(url.label, query)
    found = [Url(label, _with(url.path, query))]
    for key in sorted(asked & VARIANTS.keys()):
        extra = {key: VARIANTS[key]}
        found.append(Url(f"{label} {urlencode(extra)}", _with(url.path, {**query, **extra})))
    return found


def measure(flask: Flask, urls: list[Url], repeat: int) -> dict[str, tuple[int, list[float]]]:
    """Status and milliseconds of each request, ``repeat`` times each."""
    client = flask.test_client()
    login = client.post("/login", data={"password": PASSWORD}, headers={"Origin": "http://localhost"})
    if login.status_code != 302:
        raise SystemExit(f"login failed: HTTP {login.status_code}")
    requests = [found for url in urls for found in variants(client, url)]
    timings: dict[str, tuple[int, list[float]]] = {}
    for _ in range(repeat):
        for url in requests:
            began = time.perf_counter()
            response = _get(client, url.path)
            response.get_data()
            took = (time.perf_counter() - began) * 1000
            if response.status_code >= 400:
                raise SystemExit(f"{url.path}: HTTP {response.status_code}")
            timings.setdefault(url.label, (response.status_code, []))[1].append(took)
    return timings


def report(timings: dict[str, tuple[int, list[float]]]) -> bool:
    """Print the table; whether a page was over the bar."""
    width = max(len(label) for label in timings)
    slow = False
    for label, (status, times) in timings.items():
        median, worst = statistics.median(times), max(times)
        mark = "" if worst < BAR_MS else f"  over {BAR_MS:.0f} ms"
        note = "" if status == 200 else f"  (HTTP {status})"
        slow = slow or bool(mark)
        print(f"  {label:<{width}}  median {median:7.1f} ms   slowest {worst:7.1f} ms{mark}{note}")
    return slow


def run(kind: str, args: argparse.Namespace) -> bool:
    """Fill one broker and measure every page; whether one was over the bar."""
    print(f"{kind}: {args.messages:,} queued, {args.dead:,} dead, {args.scheduled:,} scheduled and "
          f"as many retries, {args.results:,} results, {args.task_names} task names' metrics",
          flush=True)
    with tempfile.TemporaryDirectory() as tmp, broker_url(kind, Path(tmp)) as url:
        app = Celeriac("scale", broker_url=url, result_backend=url,
                       dashboard_admin_password_hash=generate_password_hash(PASSWORD),
                       dashboard_metrics_token=TOKEN)
        try:
            flask = create_app(app, secret_key="bench")
            flask.request_class = _RecordingRequest
            task_id = str(uuid.uuid4())
            urls = pages(flask, route_values(task_id))  # before the fill: fail early
            fill(app, args, task_id)
            return report(measure(flask, urls, args.repeat))
        finally:
            app.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--broker", choices=["sqlite", "redis", "both"], default="both")
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--dead", type=int, default=100_000)
    parser.add_argument("--results", type=int, default=100_000)
    parser.add_argument("--scheduled", type=int, default=50_000,
                        help="scheduled messages, and as many retries")
    parser.add_argument("--task-names", type=int, default=20, help="task names with metric rows")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args(argv)
    kinds = ["sqlite", "redis"] if args.broker == "both" else [args.broker]
    slow = [run(kind, args) for kind in kinds]
    return 1 if any(slow) else 0


if __name__ == "__main__":
    sys.exit(main())
