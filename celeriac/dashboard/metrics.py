"""``/metrics``: Prometheus' text format, behind its own bearer token.

A scraper is no browser: it gets no session, but ``Authorization: Bearer TOKEN`` with
the ``dashboard_metrics_token`` setting (compared in constant time). Without that
setting /metrics is off (404), so nothing is exposed by default. Like every page, the
figures are read from the broker at each scrape: queue depths per state, live workers
with their busy slots, tasks processed, and the hub stalls each worker counted per task.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from flask import Blueprint, Response, abort, current_app, request

from celeriac.dashboard.app import dashboard

metrics = Blueprint("metrics", __name__)


def _label(value: object) -> str:
    """A label value, escaped as the text format wants (backslash, quote, newline)."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _family(name: str, kind: str, doc: str, samples: Iterable[tuple[dict[str, object], float]]
            ) -> list[str]:
    lines = [f"# HELP {name} {doc}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        text = ",".join(f'{key}="{_label(val)}"' for key, val in labels.items())
        lines.append(f"{name}{{{text}}} {value:g}" if text else f"{name} {value:g}")
    return lines


def exposition() -> str:
    """The figures of one scrape."""
    data = dashboard().data
    queues = data.queues()
    workers = data.workers(blocking_reports=False)
    lines = _family("celeriac_queue_messages", "gauge", "Messages per queue and state.", [
        ({"queue": row.name, "state": state}, float(count))
        for row in queues for state, count in row.stats.as_dict().items()])
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
    return "\n".join(lines) + "\n"


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
