"""``copies.foreign_due``: when a message Celery published ahead of its eta is due.

Celery (protocol 2, classic queues) publishes a countdown or eta task to its queue at
once with an ISO 8601 ``eta`` header; the RabbitMQ broker moves such a delivery into
the delay ladder instead of holding it (tests/e2e/test_amqp_celery.py runs it end to end).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from celeriac.brokers.amqp import copies
from celeriac.brokers.amqp.params import Incoming

NOW = datetime(2026, 12, 4, 1, 0, 0, tzinfo=timezone.utc).timestamp()


def incoming(**headers: Any) -> Incoming:
    return Incoming(generation=1, delivery_tag=1, queue="celery", body=b"[]", headers=headers,
                    properties={}, redelivered=False, exchange="celery", routing_key="celery")


@pytest.mark.parametrize(("eta", "due"), [
    ("2026-12-04T01:00:05+00:00", NOW + 5),          # Celery's form: aware, UTC
    ("2026-12-04T01:00:05.250000", NOW + 5.25),      # naive: UTC, as celeriac reads it
    ("2026-12-04T02:00:05+01:00", NOW + 5),          # another offset
    ("2026-12-04T01:00:05Z", NOW + 5),
    (b"2026-12-04T01:00:05+00:00", NOW + 5),         # a byte-array header from another client
])
def test_an_eta_ahead_is_its_due_time(eta: Any, due: float) -> None:
    assert copies.foreign_due(incoming(id="t1", eta=eta), now=NOW) == pytest.approx(due)


@pytest.mark.parametrize("headers", [
    {},                                                             # no eta
    {"eta": None},                                                  # Celery's "no eta"
    {"eta": "2026-12-04T00:59:59+00:00"},                           # past: run now
    {"eta": (datetime.fromtimestamp(NOW, timezone.utc)
             + timedelta(microseconds=500)).isoformat()},           # within a millisecond
    {"eta": "2026-12-04T01:00:05+00:00", copies.ID: "m-1"},         # celeriac's own copy
    {"eta": "tomorrow"},                                            # the worker refuses it
    {"eta": 1796346005},                                            # not a string
])
def test_no_due_time_when_the_message_may_run_now(headers: dict[str, Any]) -> None:
    assert copies.foreign_due(incoming(**headers), now=NOW) is None


def test_now_defaults_to_the_clock() -> None:
    ahead = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    assert copies.foreign_due(incoming(eta=ahead)) is not None
