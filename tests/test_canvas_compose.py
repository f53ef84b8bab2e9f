"""Chains, links, immutable signatures, the dict form and maps, without a worker process:
what goes into a message's ``embed``, and what the follow-ups middleware does with it
(run here through ``run_task``, the worker's own code path)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import take

from celeriac import Celeriac, chain, group, signature
from celeriac.canvas import Signature, chunks, xmap
from celeriac.context import Request
from celeriac.exceptions import ConfigurationError
from celeriac.middleware import Pipeline, TaskRun
from celeriac.middleware.followups import Followups, _new_style, followup_id
from celeriac.worker.run import run_task


@pytest.fixture
def app() -> Iterator[Celeriac]:
    app = Celeriac("tests", broker="memory://", backend="memory://")

    @app.task(name="t.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="t.fail")
    def fail(x: Any) -> None:
        raise ValueError(x)

    @app.task(name="t.new_err")
    def new_err(request: Any, exc: Any, traceback: Any) -> None:
        seen.append(("new", request.id, repr(exc)))

    @app.task(name="t.old_err")
    def old_err(task_id: str) -> None:
        seen.append(("old", task_id))

    seen: list[Any] = []
    app.seen = seen  # type: ignore[attr-defined]
    yield app
    app.close()



def test_a_chain_sends_its_first_task_with_the_rest_reversed_and_ids_fixed(app: Celeriac) -> None:
    add = app.tasks["t.add"]
    result = (add.s(1, 2) | add.s(3) | add.si(10, 20).set(countdown=5)).apply_async(task_id="last")
    [message] = take(app)
    assert (message.task, message.args) == ("t.add", [1, 2])
    steps = message.embed["chain"]
    assert [s["args"] for s in steps] == [[10, 20], [3]]  # Celery's order: next step last
    assert [s["immutable"] for s in steps] == [True, False]
    assert steps[0]["options"]["task_id"] == "last" == result.id
    assert steps[1]["options"]["task_id"] == result.parent.id
    assert result.parent.parent.id == message.id and result.parent.parent.parent is None
    assert steps[0]["options"]["countdown"] == 5


def test_a_message_without_follow_ups_has_celerys_empty_embed(app: Celeriac) -> None:
    app.tasks["t.add"].delay(1, 2)
    [message] = take(app)
    assert message.embed == {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def test_chain_links_go_to_the_last_task_and_errbacks_to_every_task(app: Celeriac) -> None:
    add, err = app.tasks["t.add"], app.tasks["t.new_err"]
    c = chain(add.s(1, 1), add.s(2))
    c.link(add.s(100))
    c.link_error(err.s())
    c.delay()
    [message] = take(app)
    assert message.embed["errbacks"][0]["task"] == "t.new_err"
    [step] = message.embed["chain"]
    assert step["options"]["link"][0]["args"] == [100]
    assert step["options"]["link_error"][0]["task"] == "t.new_err"


def test_the_dict_form_round_trips_and_drops_celerys_bookkeeping(app: Celeriac) -> None:
    add = app.tasks["t.add"]
    sig = add.s(1).set(queue="q", link=add.s(2))
    text = json.dumps(sig.to_dict())
    again = signature(json.loads(text), app=app)
    assert again == sig and again.options["queue"] == "q"
    celery_form = {"task": "t.add", "args": [1], "kwargs": {}, "subtask_type": None,
                   "immutable": True, "options": {"reply_to": "x", "task_id": "abc", "group_id": "g"}}
    rebuilt = Signature.from_dict(celery_form, app=app)
    assert rebuilt.immutable and rebuilt.options == {"task_id": "abc"}
    assert isinstance(signature(chain(add.s(1), add.s(2)).to_dict(), app=app), chain)


def test_immutable_signatures_keep_their_arguments(app: Celeriac) -> None:
    add = app.tasks["t.add"]
    assert add.si(1, 2).merged((99,)).args == (1, 2)
    assert add.s(2).merged((1,)).args == (1, 2)
    assert add.s(1, 2).set(immutable=True).immutable


def test_eager_chain_runs_every_step_and_links_parents() -> None:
    app = Celeriac("eager", broker="memory://", backend="memory://", task_always_eager=True)

    @app.task(name="t.add")
    def add(x: int, y: int) -> int:
        return x + y

    result = (add.s(1, 2) | add.s(3) | add.s(4)).delay()
    assert (result.get(), result.parent.get(), result.parent.parent.get()) == (10, 6, 3)
    fanned = (add.s(1, 2) | group(add.s(10), add.s(20))).delay()
    assert fanned.get() == [13, 23] and fanned.parent.get() == 3
    assert add.map([]).delay().get() == []
    assert add.chunks([(1, 2), (3, 4), (5, 6)], 2).delay().get() == [[3, 7], [11]]


def test_maps_travel_as_celerys_builtin_tasks(app: Celeriac) -> None:
    add = app.tasks["t.add"]
    assert isinstance(add.map([1]), xmap) and add.map([1]).name == "celery.map"
    add.starmap([(1, 2)]).delay()
    [message] = take(app)
    assert message.task == "celery.starmap"
    assert message.kwargs["task"]["task"] == "t.add" and message.kwargs["it"] == [[1, 2]]
    assert len(add.chunks(range(5), 2).group()) == 3
    with pytest.raises(ConfigurationError):
        chunks(add.s(), [], 0)


def _run(app: Celeriac, name: str, args: list[Any], **embed: Any) -> TaskRun:
    task = app.tasks[name]
    run = TaskRun(task, Request(id="parent-id", task=name, args=args, called_directly=False,
                                **embed))
    run_task(run, Pipeline([Followups()]))
    return run


def test_success_sends_callbacks_with_the_result_and_the_next_step(app: Celeriac) -> None:
    add = app.tasks["t.add"]
    nxt, after = add.s(5).to_dict(), add.s(7).to_dict()
    after["options"]["task_id"] = "step-3"
    run = _run(app, "t.add", [1, 2], callbacks=[add.s(10).to_dict()], chain=[after, nxt])
    sent = {m.args[-1]: m for m in take(app)}
    assert sent[10].args == [3, 10] and sent[10].id == followup_id("parent-id", "link", 0)
    assert sent[5].args == [3, 5] and sent[5].embed["chain"] == [after]
    assert sent[5].parent_id == "parent-id"
    assert run.record is not None and len(run.record.children or []) == 2


def test_failure_runs_new_and_old_style_errbacks_and_fails_the_rest_of_the_chain(app: Celeriac) -> None:
    later = app.tasks["t.add"].s(1).to_dict()
    later["options"]["task_id"] = "later"
    errbacks = [app.tasks["t.new_err"].s().to_dict(), app.tasks["t.old_err"].s().to_dict()]
    _run(app, "t.fail", ["bad"], errbacks=errbacks, chain=[later])
    assert app.seen == [("new", "parent-id", "ValueError('bad')")]  # type: ignore[attr-defined]
    [old] = take(app)  # the old-style one is sent as a task, the failed id first
    assert (old.task, old.args) == ("t.old_err", ["parent-id"])
    with pytest.raises(ValueError, match="bad"):
        app.AsyncResult("later").get(timeout=1)


def test_errback_style_follows_celerys_arity_rule(app: Celeriac) -> None:
    new, old = app.tasks["t.new_err"], app.tasks["t.old_err"]
    assert _new_style(new.fn, new.s())
    assert not _new_style(old.fn, old.s())
    assert not _new_style(new.fn, new.s("a", "b"))  # two bound: one positional left
    assert followup_id("a", "link", 0) == followup_id("a", "link", 0) != followup_id("a", "link", 1)


def test_a_retry_keeps_the_callbacks_errbacks_and_rest_of_the_chain(app: Celeriac) -> None:
    @app.task(name="t.flaky", bind=True)
    def flaky(self: Any) -> None:
        raise self.retry(countdown=0)

    nxt = app.tasks["t.add"].s(1).to_dict()
    embed = {"callbacks": [app.tasks["t.add"].s(2).to_dict()],
             "errbacks": [app.tasks["t.old_err"].s().to_dict()], "chain": [nxt]}
    _run(app, "t.flaky", [], **embed)
    [again] = take(app)
    assert (again.id, again.retries) == ("parent-id", 1)
    assert {k: again.embed[k] for k in embed} == embed


def test_links_given_to_a_chains_apply_async_are_kept(app: Celeriac) -> None:
    add, err = app.tasks["t.add"], app.tasks["t.new_err"]
    chain(add.s(1, 1), add.s(2)).apply_async(link=add.s(100), link_error=err.s(), priority=7)
    [message] = take(app)
    assert message.priority == 7 and message.embed["errbacks"][0]["task"] == "t.new_err"
    assert message.embed["chain"][0]["options"]["link"][0]["args"] == [100]


def test_a_chain_may_end_in_a_group_whose_ids_travel_with_it(app: Celeriac) -> None:
    add = app.tasks["t.add"]
    result = (add.s(1, 2) | group(add.s(10), add.s(20))).delay()
    [message] = take(app)
    [step] = message.embed["chain"]
    assert step["subtask_type"] == "group" and step["options"]["task_id"] == result.id
    assert [t["options"]["task_id"] for t in step["kwargs"]["tasks"]] == [r.id for r in result.results]
    assert result.parent.id == message.id
    # Followed by a task, the group becomes a chord (tests/test_chords.py).
    assert (add.s(1, 1) | group(add.s(1), add.s(2)) | add.s(3)).tasks[-1].subtask_type == "chord"
    assert (chain(add.s(1, 1), group(add.s(1), add.s(2))) | add.s(3)).tasks[-1].subtask_type == "chord"


def test_a_failure_before_a_final_group_fails_its_members(app: Celeriac) -> None:
    add = app.tasks["t.add"]
    fanned = group(add.s(10), add.s(20))
    frozen = fanned.freeze()
    _run(app, "t.fail", ["bad"], chain=[fanned.to_dict()])
    for member in frozen.results:
        with pytest.raises(ValueError, match="bad"):
            member.get(timeout=1)
