"""Chords without a worker process: how they are built, what their header messages carry
(Celery's protocol v2 form), eager runs, the join and fire of the worker middleware over
a real memory backend, and the claim that keeps a body sent twice from running twice."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conftest import take, wait_until

from celeriac import Celeriac, chain, chord, group, signature
from celeriac.brokers.base import Delivery
from celeriac.canvas.chords import chord as canvas_chord
from celeriac.context import Request
from celeriac.contrib.testing.worker import start_worker
from celeriac.exceptions import ChordError, ConfigurationError
from celeriac.message import CHORD_CLAIM_HEADER, TaskMessage
from celeriac.middleware.base import ACK, RETRY_LATER, Outcome, TaskRun
from celeriac.middleware.chords import Chords
from celeriac.result import GroupResult
from celeriac.states import FAILURE, IGNORED, SUCCESS
from celeriac.worker.run import failure_record


@pytest.fixture
def app() -> Iterator[Celeriac]:
    app = Celeriac("tests", broker="memory://", backend="memory://")

    @app.task(name="t.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="t.tsum")
    def tsum(values: list[int]) -> int:
        return sum(values)

    @app.task(name="t.fail")
    def fail(x: Any) -> None:
        raise ValueError(x)

    @app.task(name="t.new_err")
    def new_err(request: Any, exc: Any, traceback: Any) -> None:
        seen.append((request.id, repr(exc)))

    seen: list[Any] = []
    app.seen = seen  # type: ignore[attr-defined]
    yield app
    app.close()



def test_every_spelling_builds_a_chord(app: Celeriac) -> None:
    add, tsum = app.tasks["t.add"], app.tasks["t.tsum"]
    assert chord is canvas_chord
    piped = group(add.s(1, 1), add.s(2, 2)) | tsum.s()
    assert isinstance(piped, chord) and len(piped.header) == 2 and piped.body is not None
    chained = chain(add.s(1, 1), group(add.s(1), add.s(2)), tsum.s())
    assert isinstance(chained.tasks[-1], chord) and len(chained.tasks) == 2
    rebuilt = signature(piped.to_dict(), app=app)
    assert isinstance(rebuilt, chord) and rebuilt.to_dict() == piped.to_dict()


def test_what_celeriac_chords_cannot_hold_is_refused_by_name(app: Celeriac) -> None:
    add, tsum = app.tasks["t.add"], app.tasks["t.tsum"]
    inner = chord([add.s(1, 1)], tsum.s())
    with pytest.raises(ConfigurationError, match="is a chord: celeriac's chord body is a task"):
        chord([add.s(1, 1)], group(add.s(1), add.s(2)) | tsum.s())  # a chord as body
    with pytest.raises(ConfigurationError, match="is a xmap: celeriac's chord header holds"):
        chord([tsum.map([[1], [2]])], tsum.s())
    with pytest.raises(ConfigurationError, match="each is a task or a chain of tasks"):
        chord([add.s(1, 1)], group(inner, add.s(1)))
    with pytest.raises(ConfigurationError, match="body is a group cannot be followed"):
        chain(group(add.s(1, 1)), group(add.s(1)), add.s(2)).delay()
    with pytest.raises(ConfigurationError, match="has no body"):
        chord([add.s(1, 1)]).apply_async()


def test_the_header_messages_carry_the_body_group_and_index(app: Celeriac) -> None:
    add, tsum = app.tasks["t.add"], app.tasks["t.tsum"]
    result = chord([add.s(i, i) for i in range(3)], tsum.s()).apply_async(task_id="body-id")
    messages = sorted(take(app), key=lambda m: m.headers["group_index"])
    assert result.id == "body-id" and result.parent is not None
    assert [m.args for m in messages] == [[0, 0], [1, 1], [2, 2]]
    assert [m.headers["group_index"] for m in messages] == [0, 1, 2]
    assert {m.group for m in messages} == {result.parent.id}
    assert [m.id for m in messages] == [r.id for r in result.parent.results]
    body = messages[0].embed["chord"]
    assert (body["task"], body["options"]["task_id"], body["chord_size"]) == ("t.tsum", "body-id", 3)


def test_a_chain_in_the_header_marks_its_last_task_with_the_chord(app: Celeriac) -> None:
    add, tsum = app.tasks["t.add"], app.tasks["t.tsum"]
    result = chord([add.s(1, 1) | add.s(10), add.s(2, 2)], tsum.s()).apply_async()
    messages = {m.id: m for m in take(app)}
    chained, plain = result.parent.results  # type: ignore[union-attr]
    head = messages[chained.parent.id]  # type: ignore[union-attr]
    assert head.embed["chord"] is None and head.group == result.parent.id  # type: ignore[union-attr]
    [last] = head.embed["chain"]
    assert last["options"]["task_id"] == chained.id
    assert (last["options"]["group_id"], last["options"]["group_index"]) == (result.parent.id, 0)  # type: ignore[union-attr]
    assert last["options"]["chord"]["options"]["task_id"] == result.id
    assert messages[plain.id].headers["group_index"] == 1 and messages[plain.id].embed["chord"]


def test_an_eager_chord_runs_here_and_a_failure_is_a_chord_error(app: Celeriac) -> None:
    add, tsum, fail, new_err = (app.tasks[n] for n in ("t.add", "t.tsum", "t.fail", "t.new_err"))
    result = chord([add.s(i, i) for i in range(4)], tsum.s()).apply()
    assert result.get() == 12 and result.parent is not None and result.parent.get() == [0, 2, 4, 6]
    failed = chord([add.s(1, 1), fail.s("x")], tsum.s().on_error(new_err.s())).apply()
    assert failed.status == FAILURE
    with pytest.raises(ChordError, match="Dependency"):
        failed.get()
    assert app.seen == [(failed.id, app.seen[0][1])] and "ChordError" in app.seen[0][1]  # type: ignore[attr-defined]


def _member_run(app: Celeriac, message: TaskMessage, delivery_id: str, status: str,
                value: Any) -> TaskRun:
    request = Request(id=message.id, task=message.task, group=message.group,
                      group_index=message.headers["group_index"], chord=message.embed["chord"])
    delivery = Delivery(delivery_id, "celery", b"", 1, 1)
    run = TaskRun(app.tasks[message.task], request, delivery)
    from celeriac.backends.base import ResultRecord

    run.record = (ResultRecord(task_id=message.id, status=SUCCESS, result=value)
                  if status == SUCCESS else failure_record(message.id, message.task, ValueError(value)))
    app.backend.store_many([run.record])
    return run


def test_the_member_that_completes_the_header_sends_the_body_once(app: Celeriac) -> None:
    add, tsum = app.tasks["t.add"], app.tasks["t.tsum"]
    result = chord([add.s(i, i) for i in range(3)], tsum.s()).apply_async()
    messages = sorted(take(app), key=lambda m: m.headers["group_index"])
    chords = Chords(app)
    for index, message in enumerate(messages):
        run = _member_run(app, message, f"d{index}", SUCCESS, 2 * index)
        chords.message_received(run)
        chords.after_task(run)
        assert run.delivery is not None
        batch = chords.before_settle([(run.delivery, Outcome(ACK))])
        assert batch[0][1].action == ACK
        if index < 2:
            assert take(app) == []  # not complete yet: nothing sent
    [body] = take(app)
    assert (body.id, body.task, body.args) == (result.id, "t.tsum", [[0, 2, 4]])
    claim = body.headers[CHORD_CLAIM_HEADER]
    assert claim[0] == result.parent.id  # type: ignore[union-attr]
    # A redelivered member after the body was sent (chord_done) sends nothing.
    again = _member_run(app, messages[2], "d9", SUCCESS, 4)
    chords.after_task(again)
    assert again.delivery is not None
    chords.before_settle([(again.delivery, Outcome(ACK))])
    assert take(app) == []
    # The body's consumer claims its run; a second copy with another token is not run.
    first = TaskRun(tsum, Request(id=body.id, task="t.tsum", headers={CHORD_CLAIM_HEADER: claim}))
    assert chords.check_run(first) is None
    second = TaskRun(tsum, Request(id=body.id, task="t.tsum",
                                   headers={CHORD_CLAIM_HEADER: [claim[0], "another"]}))
    skipped = chords.check_run(second)
    assert skipped is not None and skipped.status == IGNORED and second.ignore_result


def test_a_failed_member_fails_the_body_naming_it(app: Celeriac) -> None:
    add, tsum, new_err = app.tasks["t.add"], app.tasks["t.tsum"], app.tasks["t.new_err"]
    result = chord([add.s(1, 1), add.s(2, 2)], tsum.s().on_error(new_err.s())).apply_async()
    messages = sorted(take(app), key=lambda m: m.headers["group_index"])
    chords = Chords(app)
    for index, message in enumerate(messages):
        run = _member_run(app, message, f"d{index}", FAILURE if index == 1 else SUCCESS, "bad")
        chords.after_task(run)
        assert run.delivery is not None
        chords.before_settle([(run.delivery, Outcome(ACK))])
    assert take(app) == []  # the body is not sent
    with pytest.raises(ChordError, match=messages[1].id):
        result.get(timeout=5)
    assert [seen[0] for seen in app.seen] == [result.id]  # type: ignore[attr-defined]


def test_a_join_that_fails_makes_the_member_come_back(tmp_path: Any) -> None:
    backend = f"sqlite:///{tmp_path}/results.db"
    sender = Celeriac("tests", broker="memory://", backend=backend)
    # The worker's side: the same backend, a broker that cannot open (the body cannot go).
    worker = Celeriac("tests", broker=f"sqlite:///{tmp_path}", backend=backend)  # a directory
    for app in (sender, worker):
        app.task(name="t.add")(lambda x, y: x + y)
        app.task(name="t.tsum")(sum)
    chord([sender.tasks["t.add"].s(1, 1)], sender.tasks["t.tsum"].s()).apply_async()
    [message] = take(sender)
    chords = Chords(worker)
    run = _member_run(worker, message, "d0", SUCCESS, 2)
    chords.after_task(run)
    assert run.delivery is not None
    [(_, outcome)] = chords.before_settle([(run.delivery, Outcome(ACK))])
    assert outcome.action == RETRY_LATER
    sender.close()
    worker.close()


def test_a_retry_keeps_the_chord_and_the_claim_and_members_store_their_results(app: Celeriac) -> None:
    request = Request(id="i", task="t.add", group="g", group_index=2, chord={"task": "t.tsum"},
                      headers={CHORD_CLAIM_HEADER: ["g", "token"]})
    options = request.execution_options()
    assert (options["chord"], options["group_index"], options["chord_claim"]) == (
        {"task": "t.tsum"}, 2, ["g", "token"])
    run = TaskRun(app.tasks["t.add"], request, ignore_result=True)
    Chords(app).message_received(run)
    assert run.ignore_result is False  # the body is built from the stored results


def test_a_group_of_chains_sends_each_chain_head_with_its_rest_in_one_call(app: Celeriac) -> None:
    add = app.tasks["t.add"]
    result = group(add.s(1, 1) | add.s(10), add.s(5, 5)).apply_async()
    messages = {m.id: m for m in take(app)}
    assert len(messages) == 2
    chained, plain = result.results
    assert chained.parent is not None and chained.parent.id in messages  # the chain's first task
    head = messages[chained.parent.id]
    [step] = head.embed["chain"]
    assert step["options"]["task_id"] == chained.id and head.group == result.id
    assert plain.id in messages


def test_an_eager_group_of_chains_runs_each_chain() -> None:
    app = Celeriac("eager", broker="memory://", backend="memory://", task_always_eager=True)

    @app.task(name="t.add")
    def add(x: int, y: int) -> int:
        return x + y

    assert group(add.s(1, 1) | add.s(10), add.s(2, 2)).delay().get() == [12, 4]
    assert group(add.s(1, 1) | add.s(10)).apply().get() == [12]
    app.close()


def test_a_claim_the_backend_cannot_answer_puts_the_body_back_unrun(tmp_path: Any) -> None:
    """Unclaimed, a second copy of the body could run too: the body waits, uncharged."""
    from celeriac.brokers.base import OutgoingMessage
    from celeriac.exceptions import RunLater
    from celeriac.message import encode
    from celeriac.middleware.base import DEFER, Pipeline
    from celeriac.middleware.chords import CLAIM_RETRY_DELAY
    from celeriac.pools.threads import ThreadPool
    from celeriac.worker.executor import Executor

    # A result backend that cannot open (its path is a directory): every call fails.
    app = Celeriac("tests", broker="memory://", backend=f"sqlite:///{tmp_path}")
    ran: list[Any] = []
    app.task(name="t.tsum")(lambda values: ran.append(values))
    body = encode("t.tsum", "body-id", [[1, 2]], {}, queue="celery",
                  extra_headers={CHORD_CLAIM_HEADER: ["g", "token"]})
    app.broker.publish([OutgoingMessage("celery", body)])
    [delivery] = app.broker.fetch(["celery"], 1, consumer="c", lease=30)
    pipeline = Pipeline([Chords(app)])
    executor = Executor(app, ThreadPool(1, app.conf), pipeline, lambda d: None)
    outcome = executor.handle(delivery)
    assert (outcome.action, outcome.delay, ran) == (DEFER, CLAIM_RETRY_DELAY, [])
    assert "cannot claim its body's run" in outcome.reason
    with pytest.raises(RunLater):  # the pipeline passes it on: not a broken hook
        pipeline.check_run(TaskRun(app.tasks["t.tsum"], Request(
            id="body-id", task="t.tsum", headers={CHORD_CLAIM_HEADER: ["g", "token"]})))
    app.close()


# -- a chain or a group as the body ------------------------------------------------------
def _fire(app: Celeriac, messages: list[TaskMessage], failing: int | None = None) -> None:
    """Every header member finishes (``failing`` fails) and settles: the last one fires."""
    chords = Chords(app)
    for index, message in enumerate(sorted(messages, key=lambda m: m.headers["group_index"])):
        status = FAILURE if index == failing else SUCCESS
        run = _member_run(app, message, f"d{index}", status, "bad" if failing == index else index)
        chords.after_task(run)
        assert run.delivery is not None
        chords.before_settle([(run.delivery, Outcome(ACK))])


def test_a_chain_body_travels_as_its_first_task_carrying_the_rest(app: Celeriac) -> None:
    add, tsum = app.tasks["t.add"], app.tasks["t.tsum"]
    result: Any = chord([add.s(1, 1), add.s(2, 2)], tsum.s() | add.s(10),
                        link=add.s(1)).apply_async(task_id="last-id")
    header = result.parent.parent
    assert result.id == "last-id" and isinstance(header, GroupResult)
    messages = take(app)
    assert {m.group for m in messages} == {header.id}
    body = messages[0].embed["chord"]
    assert (body["task"], body["options"]["task_id"]) == ("t.tsum", result.parent.id)
    [step] = body["options"]["chain"]
    assert (step["task"], step["options"]["task_id"]) == ("t.add", "last-id")
    assert [link["task"] for link in step["options"]["link"]] == ["t.add"]  # the chord's link
    assert "link" not in body["options"]
    _fire(app, messages)
    [sent] = take(app)  # the chain's first task, with the header's values and the rest
    assert (sent.id, sent.task, sent.args) == (result.parent.id, "t.tsum", [[0, 1]])
    assert [s["options"]["task_id"] for s in sent.embed["chain"]] == ["last-id"]
    assert sent.headers[CHORD_CLAIM_HEADER][0] == header.id


def test_a_failed_header_fails_every_step_of_a_chain_body(app: Celeriac) -> None:
    add, tsum, new_err = app.tasks["t.add"], app.tasks["t.tsum"], app.tasks["t.new_err"]
    result: Any = chord([add.s(1, 1), add.s(2, 2)],
                        tsum.s() | add.s(1) | add.s(2)).on_error(new_err.s()).apply_async()
    messages = take(app)
    _fire(app, messages, failing=1)
    assert take(app) == []
    for step in (result, result.parent, result.parent.parent):
        with pytest.raises(ChordError, match="Dependency"):
            step.get(timeout=5)
    assert [seen[0] for seen in app.seen] == [result.parent.parent.id]  # type: ignore[attr-defined]


def test_a_group_body_is_sent_member_by_member_under_one_claim(app: Celeriac) -> None:
    add, tsum = app.tasks["t.add"], app.tasks["t.tsum"]
    result: Any = chord([add.s(1, 1), add.s(2, 2)], group(tsum.s(), tsum.s())).apply_async(
        task_id="body-group")
    assert isinstance(result, GroupResult) and result.id == "body-group"
    messages = take(app)
    assert result.parent.id == messages[0].group
    body = messages[0].embed["chord"]
    assert (body["subtask_type"], body["options"]["task_id"]) == ("group", "body-group")
    assert [t["options"]["task_id"] for t in body["kwargs"]["tasks"]] == [r.id for r in result.results]
    _fire(app, messages)
    sent = sorted(take(app), key=lambda m: [r.id for r in result.results].index(m.id))
    assert [(m.id, m.args, m.group) for m in sent] == [
        (r.id, [[0, 1]], "body-group") for r in result.results]
    claims = {tuple(m.headers[CHORD_CLAIM_HEADER]) for m in sent}
    assert len(claims) == 1  # one send, one token: the chord's claim admits both members
    [(group_id, token)] = claims
    chords, tsum_task = Chords(app), app.tasks["t.tsum"]
    for member in sent:
        ours = TaskRun(tsum_task, Request(id=member.id, task="t.tsum",
                                          headers={CHORD_CLAIM_HEADER: [group_id, token]}))
        assert chords.check_run(ours) is None
        # A second send of the body (another token): none of its members runs.
        copy = TaskRun(tsum_task, Request(id=member.id, task="t.tsum",
                                          headers={CHORD_CLAIM_HEADER: [group_id, "other"]}))
        skipped = chords.check_run(copy)
        assert skipped is not None and skipped.status == IGNORED


def test_a_failed_header_fails_each_member_of_a_group_body(app: Celeriac) -> None:
    add, tsum, new_err = app.tasks["t.add"], app.tasks["t.tsum"], app.tasks["t.new_err"]
    result: Any = chord([add.s(1, 1), add.s(2, 2)],
                        group(tsum.s(), tsum.s() | add.s(1))).on_error(new_err.s()).apply_async()
    messages = take(app)
    _fire(app, messages, failing=0)
    assert take(app) == []
    for member in (*result.results, result.results[1].parent):
        with pytest.raises(ChordError, match="Dependency"):
            member.get(timeout=5)
    # The chord's errback is on each member of a group body: once per member (Celery's).
    assert sorted(seen[0] for seen in app.seen) == sorted(  # type: ignore[attr-defined]
        [result.results[0].id, result.results[1].parent.id])


def test_eager_chords_with_a_chain_or_a_group_body(app: Celeriac) -> None:
    add, tsum, fail = app.tasks["t.add"], app.tasks["t.tsum"], app.tasks["t.fail"]
    chained: Any = chord([add.s(1, 1), add.s(2, 2)], tsum.s() | add.s(1)).apply()
    assert chained.get() == 7 and chained.parent.get() == 6 and chained.parent.parent.get() == [2, 4]
    grouped: Any = chord([add.s(1, 1)], group(tsum.s(), tsum.s() | add.s(1))).apply()
    assert grouped.get() == [2, 3] and grouped.parent.get() == [2]
    with pytest.raises(ConfigurationError, match="empty group"):
        chord([add.s(1, 1)], group([]))
    failed: Any = chord([fail.s("x")], group(tsum.s(), tsum.s())).apply()
    assert [r.status for r in failed.results] == [FAILURE, FAILURE]


def test_chain_and_group_bodies_on_an_embedded_worker(app: Celeriac) -> None:
    add, tsum, fail, new_err = (app.tasks[n] for n in ("t.add", "t.tsum", "t.fail", "t.new_err"))
    with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False):
        result: Any = chord([add.s(i, i) for i in range(3)], tsum.s() | add.s(10) | add.s(100)).delay()
        assert result.get(timeout=10) == 116
        assert [result.parent.get(timeout=10), result.parent.parent.get(timeout=10)] == [16, 6]
        assert result.parent.parent.parent.get(timeout=10) == [0, 2, 4]
        assert chord(group(add.s(1, 1), add.s(2, 2)))(tsum.s() | add.s(1)).get(timeout=10) == 7
        assert (group(add.s(1, 1), add.s(2, 2)) | (tsum.s() | add.s(1))).delay().get(timeout=10) == 7
        inside: Any = chain(add.s(1, 1), chord([add.s(1), add.s(2)], tsum.s() | add.s(10)),
                            add.s(100)).delay()  # 2 -> [3, 4] -> 7 -> 17 -> 117
        assert inside.get(timeout=10) == 117
        assert [inside.parent.get(timeout=10), inside.parent.parent.get(timeout=10)] == [17, 7]
        assert inside.parent.parent.parent.parent.get(timeout=10) == 2
        grouped: Any = chord([add.s(i, i) for i in range(3)],
                             group(tsum.s(), tsum.s() | add.s(100))).delay()
        assert grouped.get(timeout=10) == [6, 106] and grouped.parent.get(timeout=10) == [0, 2, 4]
        piped: Any = chain(add.s(1, 1), group(add.s(1), add.s(2)), group(tsum.s(), tsum.s())).delay()
        assert piped.get(timeout=10) == [7, 7]
        failed: Any = chord([add.s(1, 1), fail.si("no")], group(tsum.s(), tsum.s())).on_error(
            new_err.s()).delay()
        for member in failed.results:
            with pytest.raises(ChordError, match="ValueError"):
                member.get(timeout=10)
        wait_until(lambda: len(app.seen) == 2, timeout=10,  # type: ignore[attr-defined]
                   message="the errback ran once per member")


def test_chain_bodies_inside_other_canvases_on_an_embedded_worker(app: Celeriac) -> None:
    add, tsum, fail = app.tasks["t.add"], app.tasks["t.tsum"], app.tasks["t.fail"]
    with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False):
        # An inner chord's chain body: its last task is the outer header member.
        nested: Any = chord([chord([add.s(1, 1)], tsum.s() | add.s(10)), add.s(2, 2)],
                            tsum.s()).delay()
        assert nested.get(timeout=10) == 16 and nested.parent.get(timeout=10) == [12, 4]
        fanned: Any = chord([add.s(1, 1)], tsum.s() | group(add.s(1), add.s(2))).delay()
        assert fanned.get(timeout=10) == [3, 4] and fanned.parent.get(timeout=10) == 2
        # The inner chord fails: its chain body's last task fails the outer chord.
        failing: Any = chord([chord([fail.si("x")], tsum.s() | add.s(10)), add.s(2, 2)],
                             tsum.s()).delay()
        inner_last = failing.parent.results[0].id
        with pytest.raises(ChordError, match=inner_last):
            failing.get(timeout=10)


# -- a chord inside a group ----------------------------------------------------------------
def test_a_chord_in_a_group_is_sent_as_a_chord_in_the_groups_one_call(
        app: Celeriac, monkeypatch: pytest.MonkeyPatch) -> None:
    add, tsum = app.tasks["t.add"], app.tasks["t.tsum"]
    calls: list[int] = []
    publish = app.broker.publish
    monkeypatch.setattr(app.broker, "publish",
                        lambda messages: calls.append(len(messages)) or publish(messages))
    result: Any = group(chord([add.s(1, 1), add.s(2, 2)], tsum.s()), add.s(5, 5)).apply_async()
    body, plain = result.results
    header = body.parent
    messages = take(app)
    by_id = {m.id: m for m in messages}
    assert calls == [3] and len(messages) == 3  # all or none
    assert by_id[plain.id].group == result.id
    assert [by_id[r.id].group for r in header.results] == [header.id, header.id]
    assert [by_id[r.id].headers["group_index"] for r in header.results] == [0, 1]
    assert by_id[header.results[0].id].embed["chord"]["options"]["task_id"] == body.id
    # A chord of chords too: the inner header goes in the outer header's call.
    nested: Any = chord([chord([add.s(1, 1), add.s(2, 2)], tsum.s()), add.s(3, 3)],
                        tsum.s()).apply_async()
    inner = nested.parent.results[0]
    by_id = {m.id: m for m in take(app)}
    assert calls == [3, 3] and len(by_id) == 3
    assert {by_id[r.id].group for r in inner.parent.results} == {inner.parent.id}
    assert by_id[nested.parent.results[1].id].group == nested.parent.id


def test_groups_holding_chords_on_an_embedded_worker(app: Celeriac) -> None:
    add, tsum = app.tasks["t.add"], app.tasks["t.tsum"]
    with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False):
        mixed: Any = group(chord([add.s(1, 1), add.s(2, 2)], tsum.s()), add.s(5, 5)).delay()
        assert mixed.get(timeout=10) == [6, 10]
        fanned: Any = group(chord([add.s(1, 1)], group(tsum.s(), tsum.s())), add.s(5, 5)).delay()
        assert fanned.get(timeout=10) == [[2, 2], 10]
        # As a chain's last step: the previous value goes to the chord's header members.
        chained: Any = chain(add.s(1, 1), group(chord([add.s(1), add.s(2)], tsum.s()),
                                                add.s(10))).delay()  # 2 -> [3 + 4, 12]
        assert chained.get(timeout=10) == [7, 12]
    eager = group(chord([add.s(1, 1), add.s(2, 2)], tsum.s()), add.s(5, 5)).apply()
    assert eager.get() == [6, 10]


def test_a_task_replaced_by_a_chord_with_a_chain_body_hands_on_its_place(app: Celeriac) -> None:
    """Task.replace sets the replaced task's chain and chord marks on the body as it
    travels: a chain body puts its own steps before that chain, the marks on its last task."""
    add, tsum = app.tasks["t.add"], app.tasks["t.tsum"]

    @app.task(name="t.rep", bind=True)
    def rep(self: Any, x: int) -> Any:
        return self.replace(chord([add.s(x, 1), add.s(x, 2)], tsum.s() | add.s(100)))

    with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False):
        assert rep.delay(1).get(timeout=10) == 105  # 1 -> [2, 3] -> 5 -> 105
        assert (rep.s(1) | add.s(1000)).delay().get(timeout=10) == 1105
        member: Any = chord([rep.s(1), add.s(2, 2)], tsum.s()).delay()
        assert member.get(timeout=10) == 109 and member.parent.get(timeout=10) == [105, 4]


def test_a_task_in_a_chain_cannot_be_replaced_by_a_chord_with_a_group_body(app: Celeriac) -> None:
    add, tsum = app.tasks["t.add"], app.tasks["t.tsum"]

    @app.task(name="t.rep", bind=True)
    def rep(self: Any, x: int) -> Any:
        return self.replace(chord([add.s(x, 1)], group(tsum.s(), tsum.s())))

    with (start_worker(app, pool="threads", concurrency=2, perform_ping_check=False),
          pytest.raises(ConfigurationError, match="cannot be followed by more steps")):
        (rep.s(1) | add.s(1000)).delay().get(timeout=10)
