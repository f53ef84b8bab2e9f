"""Runs built ahead: while its loop would wait, the consumer decodes the next waiting
messages and builds their runs (:meth:`Consumer._build_ahead`), and each is started from
what was built. A message that cannot run is not built and is reported at its start, as
ever; a waiting message the consumer lets go of takes its built run with it.

On a real broker (memory) with a threads pool whose slots are kept busy by tasks that
wait for the test, so that the next messages wait in the consumer.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import wait_until
from test_worker_core import QUEUE, Rig, counts, make_rig, publish

from celeriac import Celeriac
from celeriac.brokers.base import OutgoingMessage
from celeriac.message import encode


@pytest.fixture
def app() -> Iterator[Celeriac]:
    app = Celeriac("ahead", broker="memory://", backend="memory://")
    yield app
    app.close()


@pytest.fixture
def rigs() -> Iterator[list[Rig]]:
    made: list[Rig] = []
    yield made
    for rig in made:
        rig.close()


def blocker(app: Celeriac) -> threading.Event:
    """Register ``t.block``, which holds a slot of the pool until the event is set."""
    release = threading.Event()

    @app.task(name="t.block")
    def block() -> None:
        assert release.wait(20), "the test never released the slot"

    return release


def test_waiting_messages_are_built_ahead_and_started_from_what_was_built(
        app: Celeriac, rigs: list[Rig]) -> None:
    release = blocker(app)
    seen: dict[str, Any] = {}

    @app.task(name="t.see", bind=True)
    def see(self: Any, n: int) -> int:
        seen[self.request.id] = self.request
        return n

    publish(app, "t.block")
    publish(app, "t.block")
    ids = [publish(app, "t.see", n) for n in range(3)]
    rig = make_rig(rigs, app, concurrency=2, prefetch=8)
    rig.start()
    consumer = rig.consumer
    # Up to a pool's worth: the next two, not the third.
    wait_until(lambda: len(consumer.waiting) == 3 and len(consumer.ahead) == 2,
               message="two waiting runs built")
    built = {run.request.id: run.request for run in consumer.ahead.values()}
    assert sorted(built) == sorted(ids[:2])
    assert [run.request.args for run in consumer.ahead.values()] == [[0], [1]]
    release.set()
    assert [app.AsyncResult(i).get(timeout=10) for i in ids] == [0, 1, 2]
    # Each ran with the request built ahead (not a second decoding of its message).
    assert all(seen[i] is built[i] for i in ids[:2])
    assert consumer.ahead == {}


def test_a_message_that_cannot_run_is_not_built_and_is_dead_lettered_at_its_start(
        app: Celeriac, rigs: list[Rig]) -> None:
    release = blocker(app)

    @app.task(name="t.ok")
    def ok() -> str:
        return "ran"

    for _ in range(3):
        publish(app, "t.block")
    broken = json.loads(encode("t.ok", "broken-id", [], {}, queue=QUEUE))
    broken["body"] = "[1, 2"
    app.broker.publish([OutgoingMessage(QUEUE, json.dumps(broken).encode())])
    unknown_id = publish(app, "t.nobody.registered.this")
    ok_id = publish(app, "t.ok")
    rig = make_rig(rigs, app, concurrency=3, prefetch=8)
    rig.start()
    consumer = rig.consumer
    wait_until(lambda: len(consumer.waiting) == 3 and len(consumer.ahead) == 3,
               message="the three waiting messages looked at")
    # Tried once each: the two that cannot run are marked so (not decoded again on every
    # turn of the loop), and their starts report them.
    runs = list(consumer.ahead.values())
    assert runs[:2] == [None, None]
    assert runs[2] is not None and runs[2].request.id == ok_id
    release.set()
    assert app.AsyncResult(ok_id).get(timeout=10) == "ran"
    wait_until(lambda: counts(app)["dead"] == 2, message="two dead letters")
    reasons = sorted(letter.reason for letter in app.broker.dead_letters(QUEUE))
    assert reasons[0].startswith("malformed message: undecodable application/json body")
    assert reasons[1] == "unknown task 't.nobody.registered.this'"
    assert app.AsyncResult(unknown_id).status == "FAILURE"
    assert app.AsyncResult("broken-id").status == "FAILURE"


def test_a_waiting_message_let_go_takes_its_built_run_with_it(
        app: Celeriac, rigs: list[Rig]) -> None:
    """The consumer not running: its steps called one at a time."""
    app.conf.task_routes = {"t.other": {"queue": "other"}}
    publish(app, "t.a")
    app.send_task("t.other")
    rig = make_rig(rigs, app, concurrency=2, prefetch=4)
    consumer = rig.consumer
    consumer.queues = [QUEUE, "other"]
    assert consumer._fetch(4, 0.0) and len(consumer.waiting) == 2
    # Unknown tasks are not built: register both names.
    app.task(name="t.a")(lambda: None)
    app.task(name="t.other")(lambda: None)
    assert consumer._build_ahead() is False  # all built, nothing woke it
    assert len(consumer.ahead) == 2
    dropped = consumer.set_queues([QUEUE])
    assert len(dropped) == 1 and dropped[0] not in consumer.ahead
    assert list(consumer.ahead) == [consumer.waiting[0].id]
    consumer._shutdown()  # hands the unstarted one back
    assert consumer.ahead == {}
