"""Signatures, groups and bulk sending (``apply_many``, ``send_many``).

Unit tests run on the memory and SQLite brokers with no worker: :func:`work_off`
plays the worker in-process (fetch, decode, run, store, ack), which is enough to
see values come back in order. What they pin down is the bulk contract: one
``Broker.publish`` call per group (per chunk for ``apply_many``), every message
encoded before any is published, and the ``group`` header on every message. The
last test runs a group on a real ``celeriac worker``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import Project, take

from celeriac import Celeriac, GroupResult, Signature, group
from celeriac.brokers import OutgoingMessage
from celeriac.context import Request, current_request
from celeriac.exceptions import (
    BrokerError,
    ConfigurationError,
    SerializationError,
    TimeoutError,
    UnknownSettingError,
)
from celeriac.middleware import Pipeline, TaskRun
from celeriac.worker.run import run_task


@pytest.fixture(params=["memory", "sqlite"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Celeriac]:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'canvas.db'}"
    app = Celeriac("tests", broker=url, backend=url)
    yield app
    app.close()


class PublishSpy:
    """Wraps ``app.broker.publish``: records the size of every call, can fail on one."""

    def __init__(self, app: Celeriac, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[int] = []
        self.fail_on: int | None = None
        self._publish = app.broker.publish
        monkeypatch.setattr(app.broker, "publish", self)

    def __call__(self, messages: Sequence[OutgoingMessage]) -> list[str]:
        self.calls.append(len(messages))
        if self.fail_on == len(self.calls):
            raise BrokerError("broker went away")
        return self._publish(messages)


@pytest.fixture
def spy(app: Celeriac, monkeypatch: pytest.MonkeyPatch) -> PublishSpy:
    return PublishSpy(app, monkeypatch)


def queued(app: Celeriac) -> int:
    return sum(s.ready + s.scheduled for s in app.broker.stats().values())



def work_off(app: Celeriac, queue: str = "celery") -> int:
    """Run every message in ``queue`` here, as a worker would, in reverse order (so a
    result list in order proves the order comes from the group, not from timing)."""
    messages = take(app, queue)
    for message in reversed(messages):
        request = Request(id=message.id, task=message.task, args=message.args,
                          kwargs=message.kwargs, root_id=message.root_id, group=message.group)
        app.backend.store(run_task(TaskRun(app.get_task(message.task), request), Pipeline()))
    return len(messages)


@pytest.fixture
def add(app: Celeriac) -> Any:
    @app.task(name="t.add")
    def add(x: int, y: int) -> int:
        return x + y

    return add


# -- signatures ------------------------------------------------------------------------
def test_signature_holds_args_and_options_and_sends_like_apply_async(app: Celeriac, add: Any) -> None:
    sig = add.s(2, 3).set(queue="io", priority=7)
    assert isinstance(sig, Signature)
    assert (sig.name, sig.args, sig.kwargs, sig.options) == ("t.add", (2, 3), {}, {"queue": "io",
                                                                                   "priority": 7})
    assert repr(sig) == "t.add(2, 3).set(queue='io', priority=7)"
    result = sig.delay()
    [message] = take(app, "io")
    assert (message.id, message.task, message.args, message.priority) == (result.id, "t.add", [2, 3], 7)
    assert message.group is None


def test_partial_arguments_go_first_and_call_options_win(app: Celeriac, add: Any) -> None:
    sig = add.s(3).set(queue="a", priority=1)
    sig.apply_async((2,), queue="b")
    [message] = take(app, "b")
    assert (message.args, message.priority) == ([2, 3], 1)
    assert sig.args == (3,) and sig.options == {"queue": "a", "priority": 1}, "the signature changed"
    add.signature(kwargs={"x": 1, "y": 2}, countdown=30).delay()
    assert app.broker.stats()["celery"].scheduled == 1


def test_task_options_are_defaults_under_signature_options(app: Celeriac) -> None:
    @app.task(priority=3, expires=60)
    def t() -> None: ...

    t.s().delay()
    t.s().set(priority=8).delay()
    first, second = sorted(take(app), key=lambda m: m.priority)
    assert (first.priority, second.priority) == (3, 8)
    assert first.expires is not None and second.expires is not None


def test_unknown_option_is_an_error_with_a_hint_wherever_it_is_given(app: Celeriac, add: Any) -> None:
    with pytest.raises(UnknownSettingError, match="did you mean 'countdown'"):
        add.s(1, 2).set(countdwn=5)
    with pytest.raises(UnknownSettingError, match=r"unknown option 'chord'"):
        add.apply_async((1, 2), chord=None)
    with pytest.raises(UnknownSettingError, match="did you mean 'queue'"):
        group(add.s(1, 2)).apply_async(queu="x")
    with pytest.raises(UnknownSettingError, match="did you mean 'priority'"):
        add.apply_many([(1, 2)], prority=1)
    with pytest.raises(UnknownSettingError, match="send_task"):
        app.send_task("t.add", [1, 2], countdwn=1)
    assert queued(app) == 0


def test_signature_by_name_needs_no_registration(app: Celeriac) -> None:
    sig = app.signature("elsewhere.task", [1], {"k": 2}, queue="q")
    result = sig.delay()
    [message] = take(app, "q")
    assert (message.task, message.id, message.args, message.kwargs) == ("elsewhere.task", result.id,
                                                                        [1], {"k": 2})
    with pytest.raises(ConfigurationError, match="needs app"):
        Signature("elsewhere.task")
    with pytest.raises(TypeError, match="tuple or list"):
        app.signature("elsewhere.task", "ab")


# -- groups ----------------------------------------------------------------------------
def test_group_is_one_publish_call_with_the_group_header(app: Celeriac, add: Any,
                                                         spy: PublishSpy) -> None:
    result = group(add.s(i, i) for i in range(10)).apply_async()
    assert spy.calls == [10]
    assert isinstance(result, GroupResult) and len(result) == 10
    messages = take(app)
    assert [m.id for m in messages] == [r.id for r in result], "messages and results in one order"
    assert {m.group for m in messages} == {result.id}
    assert [m.args for m in messages] == [[i, i] for i in range(10)]


def test_group_results_come_back_in_order(app: Celeriac, add: Any) -> None:
    result = group(add.s(i, i) for i in range(20)).delay()
    assert not result.ready() and result.waiting() and result.completed_count() == 0
    assert work_off(app) == 20
    assert result.get(timeout=5) == [2 * i for i in range(20)]
    assert result.join(timeout=5) == result.get()
    assert result.ready() and result.successful() and not result.failed()
    assert result.completed_count() == 20
    assert result[3].get() == 6 and [r.get() for r in result[:2]] == [0, 2]


def test_group_failure_propagates_in_order_or_takes_its_place(app: Celeriac) -> None:
    @app.task(name="t.check")
    def check(x: int) -> int:
        if x == 2:
            raise KeyError("two")
        return x

    result = group(check.s(1), check.s(2), check.s(3)).delay()
    work_off(app)
    with pytest.raises(KeyError, match="two"):
        result.get(timeout=5)
    values = result.get(timeout=5, propagate=False)
    assert values[0] == 1 and isinstance(values[1], KeyError) and values[2] == 3
    assert result.ready() and result.failed() and not result.successful()
    assert result.completed_count() == 2


def test_group_get_timeout_is_for_the_whole_group(app: Celeriac, add: Any) -> None:
    result = group(add.s(1, 1), add.s(2, 2)).delay()
    with pytest.raises(TimeoutError, match=f"group {result.id}: task 0 of 2"):
        result.get(timeout=0.2)


def test_group_forms_options_and_partials(app: Celeriac, add: Any, spy: PublishSpy) -> None:
    assert group(add.s(1), add.s(2)).tasks[1].args == (2,)
    assert len(group([add.s(1), add.s(2)])) == 2
    group(add.s(1), add.s(2)).apply_async((10,), queue="g", priority=4)
    assert [(m.args, m.priority) for m in take(app, "g")] == [([10, 1], 4), ([10, 2], 4)]
    assert repr(group(add.s(1), add.s(2))) == "group([t.add(1), t.add(2)])"
    with pytest.raises(TypeError, match="signatures"):
        group([add])
    with pytest.raises(ConfigurationError, match="same id"):
        group(add.s(1, 1)).apply_async(task_id="x")
    empty = group().apply_async()
    assert len(empty) == 0 and empty.get(timeout=1) == [] and empty.ready()
    assert spy.calls == [2]


def test_a_bad_argument_anywhere_sends_nothing_of_the_group(app: Celeriac, add: Any,
                                                            spy: PublishSpy) -> None:
    sigs = [add.s(i, i) for i in range(10)]
    sigs[7] = add.s(object(), 1)
    with pytest.raises(SerializationError, match="JSON") as info:
        group(sigs).apply_async()
    if sys.version_info >= (3, 11):
        assert any("message 7" in note for note in info.value.__notes__)
    assert spy.calls == [] and queued(app) == 0


def test_group_from_inside_a_task_records_its_parent(app: Celeriac, add: Any) -> None:
    reset = current_request.set(Request(id="parent-id", task="t.parent", root_id="root-id"))
    try:
        result = group(add.s(1, 1), add.s(2, 2)).delay()
    finally:
        current_request.reset(reset)
    messages = take(app)
    assert {(m.parent_id, m.root_id, m.group) for m in messages} == {("parent-id", "root-id", result.id)}


def test_signatures_of_two_apps_cannot_share_a_group(app: Celeriac, add: Any) -> None:
    other = Celeriac("other", broker="memory://", backend="memory://")
    with pytest.raises(ConfigurationError, match="one broker"):
        group(add.s(1, 1), other.signature("t.add", (1, 1))).apply_async()
    assert queued(app) == 0


def test_always_eager_group_and_apply_many_run_here(app: Celeriac, add: Any, spy: PublishSpy) -> None:
    app.conf.task_always_eager = True
    assert group(add.s(i, 1) for i in range(5)).delay().get() == [1, 2, 3, 4, 5]
    assert [r.get() for r in add.apply_many([(1, 1), (2, 2)])] == [2, 4]
    assert spy.calls == []


# -- apply_many and send_many ----------------------------------------------------------
def test_apply_many_publishes_in_chunks_and_returns_results_in_order(app: Celeriac, add: Any,
                                                                     spy: PublishSpy) -> None:
    results = add.apply_many(((i, 1) for i in range(2500)), queue="bulk", priority=2)
    assert spy.calls == [1000, 1000, 500]
    messages = take(app, "bulk")
    assert [m.id for m in messages] == [r.id for r in results]
    assert [m.args for m in messages[:2]] == [[0, 1], [1, 1]] and messages[-1].args == [2499, 1]
    assert {m.priority for m in messages} == {2} and {m.group for m in messages} == {None}
    add.apply_many([(1, 2)] * 5, chunk_size=2)
    assert spy.calls[3:] == [2, 2, 1]


def test_apply_many_results_come_back(app: Celeriac, add: Any) -> None:
    results = add.apply_many([(i, i) for i in range(30)], chunk_size=7)
    work_off(app)
    assert [r.get(timeout=5) for r in results] == [2 * i for i in range(30)]


def test_apply_many_encodes_everything_before_publishing_anything(app: Celeriac, add: Any,
                                                                  spy: PublishSpy) -> None:
    items: list[tuple[Any, ...]] = [(i, i) for i in range(10_000)]
    items[5000] = ({1, 2}, 3)
    with pytest.raises(SerializationError, match="JSON") as info:
        add.apply_many(items)
    if sys.version_info >= (3, 11):
        assert any("message 5000" in note for note in info.value.__notes__)
        assert any("nothing was published" in note for note in info.value.__notes__)
    assert spy.calls == [] and queued(app) == 0


def test_apply_many_refuses_bad_items_and_options_before_publishing(app: Celeriac, add: Any,
                                                                    spy: PublishSpy) -> None:
    with pytest.raises(TypeError, match="item 2 is int"):
        add.apply_many([(1, 1), (2, 2), 3])
    with pytest.raises(TypeError, match="item 0 is str"):
        add.apply_many(["ab"])
    with pytest.raises(ConfigurationError, match="same id"):
        add.apply_many([(1, 1)], task_id="fixed")
    with pytest.raises(ConfigurationError, match="priority=10"):
        add.apply_many([(1, 1)], priority=10)
    with pytest.raises(ConfigurationError, match="chunk_size"):
        add.apply_many([(1, 1)], chunk_size=0)
    assert spy.calls == [] and queued(app) == 0
    assert add.apply_many([]) == [] and spy.calls == []


def test_a_failed_chunk_says_how_many_went_out(app: Celeriac, add: Any, spy: PublishSpy) -> None:
    spy.fail_on = 2
    with pytest.raises(BrokerError) as info:
        add.apply_many([(i, i) for i in range(25)], chunk_size=10)
    if sys.version_info >= (3, 11):
        assert any("10 of 25 messages were published" in n for n in info.value.__notes__)
    assert queued(app) == 10, "the first chunk was published, the failed one was not"


def test_send_many_mixes_tasks_options_and_names(app: Celeriac, add: Any, spy: PublishSpy) -> None:
    @app.task(name="t.hello", queue="greet")
    def hello(name: str, punctuation: str = ".") -> str:
        return f"hello {name}{punctuation}"

    results = app.send_many([add.s(1, 2), hello.s("you", punctuation="!"),
                             app.signature("t.add", (3, 4), priority=9)], group_id="g-1")
    assert spy.calls == [3]
    assert work_off(app, "greet") == 1 and work_off(app) == 2
    assert [r.get(timeout=5) for r in results] == [3, "hello you!", 7]


def test_send_task_shares_the_message_path(app: Celeriac, add: Any) -> None:
    app.send_task("t.add", [1, 2], countdown=60, priority=5, group="g-2")
    assert app.broker.stats()["celery"].scheduled == 1
    with pytest.raises(ConfigurationError, match="0-9"):
        app.send_task("t.add", [1, 2], priority=12)


# -- end to end ------------------------------------------------------------------------
GROUP_TASKS = '''
@app.task(bind=True)
def group_of(self):
    return self.request.group
'''


def test_group_and_apply_many_on_a_real_worker(project: Project) -> None:
    project.write_tasks(GROUP_TASKS)
    project.app()
    tasks = sys.modules["tasks"]
    worker = project.start_worker("-P", "threads", "-c", "4")
    result = group(tasks.add.s(i, i) for i in range(50)).apply_async()
    assert result.get(timeout=60) == [2 * i for i in range(50)]
    assert result.successful() and result.completed_count() == 50
    tagged = group(tasks.group_of.s() for _ in range(3)).apply_async()
    assert tagged.get(timeout=60) == [tagged.id] * 3, "tasks see the group id in their request"
    many = tasks.add.apply_many(((i, 1) for i in range(50)), chunk_size=20)
    assert [r.get(timeout=60) for r in many] == [i + 1 for i in range(50)]
    assert worker.stop() == 0, worker.log()
