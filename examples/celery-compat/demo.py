"""Send each of the example's tasks and print what came back, as JSON.

Run a worker first, from this directory, with the flags a Celery deploy file has::

    celeriac -A proj worker -l INFO -c 4 -Q celery,reports -O fair --without-gossip

then ``python demo.py``. The end-to-end test runs both and checks the output.
"""

from __future__ import annotations

import datetime
import json
import sys
import time
from decimal import Decimal
from typing import Any

from proj.celery import app
from proj.tasks import add, charge, crunch, fetch_rate, invoice_total, maybe_skip, report

from celeriac import states
from celeriac.result import AsyncResult


def watch_progress(result: AsyncResult, timeout: float) -> list[int]:
    """The ``done`` counts seen while the task reports PROGRESS."""
    seen: list[int] = []
    deadline = time.monotonic() + timeout
    while not result.ready() and time.monotonic() < deadline:
        if result.state == "PROGRESS" and result.info["done"] not in seen:
            seen.append(result.info["done"])
        time.sleep(0.02)
    return seen


def main() -> dict[str, Any]:
    timeout = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0
    out: dict[str, Any] = {"app": app.main}
    out["add"] = add.delay(2, 3).get(timeout=timeout)

    due = datetime.date(2030, 1, 31)
    invoice = invoice_total.delay([{"price": Decimal("9.99"), "qty": 3}], due).get(timeout=timeout)
    out["invoice"] = {"total": str(invoice["total"]), "total_type": type(invoice["total"]).__name__,
                      "due": invoice["due"].isoformat(), "due_type": type(invoice["due"]).__name__}

    progress = crunch.delay(5, 0.2)
    out["progress_seen"] = watch_progress(progress, timeout)
    out["crunch"] = progress.get(timeout=timeout)

    out["fetch_rate"] = fetch_rate.delay(2).get(timeout=timeout)

    failed = charge.delay(-5)
    error = failed.get(timeout=timeout, propagate=False)
    out["charge"] = {"state": failed.state, "error": type(error).__name__, "message": str(error)}

    routed = report.apply_async(args=["2030-01-31"])
    out["report"] = routed.get(timeout=timeout)

    out["skipped_id"] = maybe_skip.delay(True).id  # Ignore: acked, no result stored
    out["skip_ran"] = maybe_skip.delay(False).get(timeout=timeout)
    out["ready_states"] = sorted(states.READY_STATES)
    return out


if __name__ == "__main__":
    print(json.dumps(main(), sort_keys=True))
