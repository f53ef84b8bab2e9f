"""Live: the tail of the broker's worker and task event stream, over server-sent events.

The page opens ``/live/stream``; the stream reads :meth:`Broker.events` from a cursor
(the ``seq`` of the last event sent, which is also each SSE ``id``), so a browser that
reconnects (``Last-Event-ID``) resumes where it was, from whichever dashboard process
answers. A stream ends after :data:`STREAM_SECONDS` and the browser reconnects at once
(``retry``): no connection is held forever, and each costs one greenlet meanwhile.
Events are sent as JSON and the page writes them with ``textContent``, never as markup.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

from flask import Blueprint, Response, render_template, request

from celeriac.dashboard.app import dashboard

live = Blueprint("live", __name__, template_folder="templates")

#: Events the page shows at first: the newest this many.
BACKLOG = 50
#: Seconds between two reads of the stream when nothing new came.
POLL_INTERVAL = 0.5
#: Seconds one stream lasts before the browser reconnects.
STREAM_SECONDS = 60.0
#: Seconds of silence after which a comment line keeps proxies from closing the stream.
KEEPALIVE = 15.0


def _cursor(value: str | None) -> int | None:
    try:
        return max(0, int(value)) if value is not None else None
    except ValueError:
        return None


@live.get("/live")
def page() -> str:
    return render_template("live.html", page="live")


@live.get("/live/stream")
def stream() -> Response:
    state = dashboard()
    after = _cursor(request.headers.get("Last-Event-ID"))
    if after is None:
        after = _cursor(request.args.get("after"))
    if after is None:
        after = max(0, state.data.last_event_seq() - BACKLOG)
    heartbeats = request.args.get("heartbeats") == "1"

    def events(cursor: int) -> Iterator[str]:
        yield "retry: 1000\n\n"
        deadline = time.monotonic() + STREAM_SECONDS
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            batch = state.data.events(cursor, 200)
            for event in batch:
                cursor = event.seq
                if event.type == "worker-heartbeat" and not heartbeats:
                    continue
                payload = {"seq": event.seq, "type": event.type, "worker": event.worker,
                           "time": event.time, "data": event.data}
                yield f"id: {event.seq}\ndata: {json.dumps(payload, default=repr)}\n\n"
                quiet_since = time.monotonic()
            if batch:
                yield f"id: {cursor}\n: cursor\n\n"  # skipped heartbeats move the cursor too
            if len(batch) < 200:
                if time.monotonic() - quiet_since > KEEPALIVE:
                    yield ": keepalive\n\n"
                    quiet_since = time.monotonic()
                state.sleep(POLL_INTERVAL)

    return Response(events(after), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
