"""``/metrics``: Prometheus' text format, behind its own bearer token.

A scraper is no browser: it gets no session, but ``Authorization: Bearer TOKEN`` with
the ``dashboard_metrics_token`` setting (compared in constant time). Without that
setting /metrics is off (404), so nothing is exposed by default. Like every page, the
figures are read from the broker at each scrape: queue depths per state, live workers
with their busy slots, tasks processed, and the hub stalls each worker counted per task.

Throughput and runtimes per task name come from the metric rollups
(:mod:`celeriac.brokers.metrics`). They are **gauges of a settled window**, not counters:
a counter must only grow, and a sum of rollups kept 72 hours shrinks as old minutes
expire, so no true counter can be read from them (the heartbeats' per-node
``celeriac_worker_processed_total`` is the counter, reset when a node restarts, as
Prometheus expects). The window is the last minute that ended at least
:data:`SETTLE_SECONDS` ago (workers add their counts every ~2 s, so a minute that has
just ended may still grow): every scrape within a minute sees the same values, and
``sum(celeriac_task_processed_last_minute) / 60`` is the rate. Runtime percentiles are
read from the merged histograms of the last :data:`PERCENTILE_MINUTES` settled minutes
(one minute of a rarely run task is too few runs for a p99). One read of the broker:
:data:`PERCENTILE_MINUTES` minutes x task names rows.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Iterable

from flask import Blueprint, Response, abort, current_app, request

from celeriac.brokers.metrics import MINUTE, MetricRow, combine
from celeriac.dashboard.app import dashboard

metrics = Blueprint("metrics", __name__)

#: Seconds after a minute's end before it is reported (workers flush every ~2 s).
SETTLE_SECONDS = 5
#: Settled minutes the runtime percentiles are read from.
PERCENTILE_MINUTES = 5
#: The runtime quantiles exposed.
QUANTILES = (0.5, 0.95, 0.99)


def _label(value: object) -> str:
    """A label value, escaped as the text format wants (backslash, quote, newline)."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    """A sample's value in full (``%g`` would print 1234567 as ``1.23457e+06``)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _family(name: str, kind: str, doc: str, samples: Iterable[tuple[dict[str, object], float]]
            ) -> list[str]:
    lines = [f"# HELP {name} {doc}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        text = ",".join(f'{key}="{_label(val)}"' for key, val in labels.items())
        number = _number(value)
        lines.append(f"{name}{{{text}}} {number}" if text else f"{name} {number}")
    return lines


def exposition() -> str:
    """The figures of one scrape."""
    data = dashboard().data
    queues = data.queues()
    workers = data.workers(blocking_reports=False)
    lines = _family("celeriac_queue_messages", "gauge", "Messages per queue and state.", [
        ({"queue": row.name, "state": state}, float(count))
        for row in queues for state, count in row.stats.as_dict().items()])
    lines += _family("celeriac_queue_oldest_age_seconds", "gauge",
                     "Seconds the oldest ready message of each queue has waited.", [
                         ({"queue": row.name}, row.stats.oldest_age) for row in queues
                         if row.stats.oldest_age is not None])
    lines += _family("celeriac_workers", "gauge", "Live worker nodes.", [({}, float(len(workers)))])
    lines += _family("celeriac_worker_slots", "gauge", "Task slots of each node.", [
        ({"worker": w.name}, float(w.info.get("concurrency", 0))) for w in workers])
    lines += _family("celeriac_worker_busy_slots", "gauge", "Tasks each node is running.", [
        ({"worker": w.name}, float(w.info.get("running", 0))) for w in workers])
    lines += _family("celeriac_worker_processed_total", "counter",
                     "Tasks each node finished since it started.", [
                         ({"worker": w.name}, float(w.info.get("processed", 0))) for w in workers])
    lines += _family("celeriac_worker_stalls_total", "counter",
                     "Times a task blocked a green pool's hub or an event loop.", [
                         ({"worker": w.name, "task": task}, float(count))
                         for w in workers for task, count in sorted(w.info.get("stalls", {}).items())])
    lines += _rollups(now=time.time())
    return "\n".join(lines) + "\n"


def settled_minute(now: float) -> int:
    """The start of the last minute that ended at least :data:`SETTLE_SECONDS` ago."""
    return int(now - SETTLE_SECONDS) // MINUTE * MINUTE - MINUTE


def _rollups(now: float) -> list[str]:
    """The families read from the metric rollups: the settled minute's counts per task
    and the runtime quantiles of the last :data:`PERCENTILE_MINUTES` settled minutes."""
    data = dashboard().data
    last = settled_minute(now)
    first = last - (PERCENTILE_MINUTES - 1) * MINUTE
    rows: list[MetricRow] = data.call(lambda: data.app.broker.metrics(first, last, None))
    minute = {row.task: row for row in rows if row.minute == last}
    by_task: dict[str, list[MetricRow]] = {}
    for row in rows:
        by_task.setdefault(row.task, []).append(row)
    window = {task: combine(found, task=task) for task, found in sorted(by_task.items())}
    empty = MetricRow(last, "")  # a task of the window that finished nothing that minute
    lines = _family("celeriac_task_metrics_minute_start_seconds", "gauge",
                    "Unix time of the start of the minute the *_last_minute gauges describe.",
                    [({}, float(last))])
    for field, doc in (("processed", "Runs that finished (succeeded or failed)"),
                       ("failed", "Runs that failed"), ("retried", "Runs that asked to be retried"),
                       ("stalls", "Times a run blocked a green pool's hub or an event loop")):
        lines += _family(f"celeriac_task_{field}_last_minute", "gauge",
                         f"{doc} in the last settled minute, per task name (a gauge: "
                         f"divide by 60 for a rate).",
                         [({"task": task}, float(getattr(minute.get(task, empty), field)))
                          for task in window])
    lines += _family(
        "celeriac_task_runtime_last_5m_seconds", "gauge",
        f"Runtime quantiles per task name over the last {PERCENTILE_MINUTES} settled minutes "
        "(from mergeable histograms: within 26% of the truth).",
        [({"task": task, "quantile": f"{q:g}"}, value)
         for task, row in window.items() if row.runs
         for q, value in zip(QUANTILES, row.percentiles(*(q * 100 for q in QUANTILES)),
                             strict=True) if value is not None])
    lines += _family("celeriac_task_runs_last_5m", "gauge",
                     f"Timed runs per task name over the last {PERCENTILE_MINUTES} settled "
                     "minutes (what the runtime quantiles are read from).",
                     [({"task": task}, float(row.runs)) for task, row in window.items()
                      if row.runs])
    return lines


def metrics_view() -> Response:
    token = current_app.extensions["celeriac_dashboard"].app.conf.dashboard_metrics_token
    if not token:
        abort(404)
    sent = request.headers.get("Authorization", "")
    scheme, _, given = sent.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        return Response("bearer token required\n", 401, {"WWW-Authenticate": "Bearer"},
                        mimetype="text/plain")
    return Response(exposition(), mimetype="text/plain; version=0.0.4")


metrics.add_url_rule("/metrics", "metrics", metrics_view)
