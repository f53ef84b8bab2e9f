"""``self.replace(sig)`` on an embedded worker (memory broker and backend, a real consumer)
and eagerly: the replacement takes the replaced task's place in its chain, its chord and
its callbacks, under its id; the replaced run stores nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from celeriac import Celeriac, chain, chord, group
from celeriac.contrib.testing.worker import start_worker
from celeriac.exceptions import ChordError, ConfigurationError


@pytest.fixture
def app() -> Iterator[Celeriac]:
    app = Celeriac("tests", broker="memory://", backend="memory://")
    runs: list[str] = []

    @app.task(name="t.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="t.tsum")
    def tsum(values: list[int]) -> int:
        runs.append("tsum")
        return sum(values)

    @app.task(name="t.collect")
    def collect(values: list[Any]) -> list[Any]:
        runs.append("collect")
        return values

    @app.task(name="t.fail")
    def fail(x: Any) -> None:
        raise ValueError(x)

    @app.task(name="t.by_task", bind=True)
    def by_task(self: Any, x: int) -> Any:
        runs.append("by_task")
        return self.replace(add.s(x, 100))

    @app.task(name="t.by_chain", bind=True)
    def by_chain(self: Any, x: int) -> Any:
        return self.replace(chain(add.s(x, 1), add.signature((10,))))

    @app.task(name="t.by_group", bind=True)
    def by_group(self: Any, x: int) -> Any:
        return self.replace(group(add.s(x, 1), add.s(x, 2)))

    @app.task(name="t.by_failing", bind=True)
    def by_failing(self: Any, x: int) -> Any:
        return self.replace(group[Any](add.s(x, 1), fail.si(x)))

    @app.task(name="t.unbound")
    def unbound(x: int) -> Any:
        return app.tasks["t.unbound"].replace(add.s(x, 1))

    app.runs = runs  # type: ignore[attr-defined]
    _chain_shapes(app)
    _failing_shapes(app)
    yield app
    app.close()


def _chain_shapes(app: Celeriac) -> None:
    """Tasks replaced by chains holding groups and chords (values in ``SHAPES``)."""
    add, tsum = app.tasks["t.add"], app.tasks["t.tsum"]
    ten_twenty = [add.signature((10,)), add.signature((20,))]

    @app.task(name="t.by_chain_group", bind=True)
    def by_chain_group(self: Any, x: int) -> Any:  # a chain ending in a group
        return self.replace(add.s(x, 1) | group(ten_twenty))

    @app.task(name="t.by_chain_chord", bind=True)
    def by_chain_chord(self: Any, x: int) -> Any:  # a chord in the middle, then a task
        return self.replace(chain(add.s(x, 1), chord(ten_twenty, tsum.signature()),
                                  add.signature((5,))))

    @app.task(name="t.by_group_task", bind=True)
    def by_group_task(self: Any, x: int) -> Any:  # a group first (made a chord), then a task
        return self.replace(chain(group(add.s(x, 1), add.s(x, 2)), tsum.signature(),
                                  add.signature((5,))))

    @app.task(name="t.by_chain_ending_chord", bind=True)
    def by_chain_ending_chord(self: Any, x: int) -> Any:
        return self.replace(chain(add.s(x, 1), chord(ten_twenty, tsum.signature())))


def _failing_shapes(app: Celeriac) -> None:
    """Tasks replaced by chains that fail before their last part, or in it."""
    add, tsum, fail = app.tasks["t.add"], app.tasks["t.tsum"], app.tasks["t.fail"]
    ten_twenty = [add.signature((10,)), add.signature((20,))]

    @app.task(name="t.fails_before_chord", bind=True)
    def fails_before_chord(self: Any, x: int) -> Any:
        return self.replace(chain(fail.si(x), chord(ten_twenty, tsum.signature()),
                                  add.signature((5,))))

    @app.task(name="t.fails_in_middle_chord", bind=True)
    def fails_in_middle_chord(self: Any, x: int) -> Any:
        return self.replace(chain(add.s(x, 1), chord([add.signature((10,)), fail.signature()],
                                                     tsum.signature()), add.signature((5,))))

    @app.task(name="t.fails_before_group", bind=True)
    def fails_before_group(self: Any, x: int) -> Any:
        return self.replace(fail.si(x) | group(ten_twenty))

    @app.task(name="t.fails_in_last_group", bind=True)
    def fails_in_last_group(self: Any, x: int) -> Any:
        return self.replace(add.s(x, 1) | group(add.signature((10,)), fail.signature()))


def _parent(result: Any) -> Any:
    """A result's parent (set on the results a chain or chord returns)."""
    return result.parent


def _worker(app: Celeriac) -> Any:
    return start_worker(app, pool="threads", concurrency=2, perform_ping_check=False)


def test_a_replaced_task_id_gets_the_replacement_result_and_its_callbacks(app: Celeriac) -> None:
    tasks = app.tasks
    with _worker(app):
        result = tasks["t.by_task"].apply_async((1,), link=tasks["t.add"].s(1000))
        assert result.get(timeout=10) == 101
        callback = result.children  # the callback went out from the replacement
        assert callback and callback[0].get(timeout=10) == 1101


def test_replace_in_the_middle_of_a_chain_continues_with_its_result(app: Celeriac) -> None:
    tasks = app.tasks
    with _worker(app):
        one = (tasks["t.add"].s(1, 1) | tasks["t.by_task"].s() | tasks["t.add"].s(5)).delay()
        assert one.get(timeout=10) == 107  # 2 -> add(2, 100) -> +5
        assert _parent(one).get(timeout=10) == 102  # the replaced step's id holds its result
        many = (tasks["t.add"].s(1, 1) | tasks["t.by_chain"].s() | tasks["t.add"].s(5)).delay()
        assert many.get(timeout=10) == 18  # 2 -> 3 -> 13 -> 18
        grouped = (tasks["t.add"].s(1, 1) | tasks["t.by_group"].s() | tasks["t.tsum"].s()).delay()
        assert grouped.get(timeout=10) == 7  # 2 -> [3, 4] -> 7
        assert _parent(grouped).get(timeout=10) == [3, 4]


def test_a_chord_member_that_replaces_itself_joins_once_with_the_replacement(app: Celeriac) -> None:
    tasks = app.tasks
    with _worker(app):
        result = chord([tasks["t.by_task"].s(1), tasks["t.add"].s(2, 2)], tasks["t.tsum"].s()).delay()
        assert result.get(timeout=10) == 105
        assert _parent(result).get(timeout=10) == [101, 4]
        # A group replacement joins once too, its list of values as the member's value.
        by_group = chord([tasks["t.by_group"].s(1), tasks["t.add"].s(2, 2)],
                         tasks["t.collect"].s()).delay()
        assert by_group.get(timeout=10) == [[2, 3], 4]
    runs = app.runs  # type: ignore[attr-defined]
    assert runs.count("tsum") == 1 and runs.count("collect") == 1


def test_a_failing_group_replacement_fails_its_task_chain_and_chord(app: Celeriac) -> None:
    tasks = app.tasks
    with _worker(app):
        result = tasks["t.by_failing"].delay(1)
        with pytest.raises(ChordError, match="ValueError"):
            result.get(timeout=10)
        chained = (tasks["t.by_failing"].s(1) | tasks["t.add"].s(5)).delay()
        with pytest.raises(ChordError, match="ValueError"):  # not PENDING for ever
            chained.get(timeout=10)
        joined = chord([tasks["t.by_failing"].s(1), tasks["t.add"].s(2, 2)],
                       tasks["t.tsum"].s()).delay()
        replaced_id = _parent(joined).results[0].id
        with pytest.raises(ChordError, match=f"Dependency {replaced_id} raised"):
            joined.get(timeout=10)
    assert "tsum" not in app.runs  # type: ignore[attr-defined]


def test_eager_replace_returns_the_replacement_value(app: Celeriac) -> None:
    tasks = app.tasks
    assert tasks["t.by_task"].apply((1,)).get() == 101
    assert tasks["t.by_chain"].apply((1,)).get() == 12
    assert tasks["t.by_group"].apply((1,)).get() == [2, 3]
    app.conf.task_always_eager = True
    assert (tasks["t.add"].s(1, 1) | tasks["t.by_task"].s() | tasks["t.add"].s(5)).delay().get() == 107


def test_replace_is_refused_outside_a_bound_running_task(app: Celeriac) -> None:
    tasks = app.tasks
    with pytest.raises(ConfigurationError, match="outside a run"):
        tasks["t.by_task"].replace(tasks["t.add"].s(1, 1))
    with pytest.raises(ConfigurationError, match="bind=True"):
        tasks["t.unbound"].apply((1,), throw=True)

    @app.task(name="t.empty", bind=True)
    def empty(self: Any) -> Any:
        return self.replace(chain(app=app))

    with pytest.raises(ConfigurationError, match="empty chain"):
        empty.apply(throw=True)


def test_a_map_may_be_in_a_replacement_and_chunks_is_refused(app: Celeriac) -> None:
    add, tsum = app.tasks["t.add"], app.tasks["t.tsum"]
    shapes = {"map_first": lambda x: add.starmap([(x, 1), (x, 2)]) | tsum.signature(),
              "map_last": lambda x: add.s(x, 1) | tsum.map([[1, 2], [3]]),
              "chunks": lambda x: add.s(x, 1) | add.chunks([(x, 1), (x, 2)], 1)}
    for name, build in shapes.items():
        app.task(name=f"t.{name}", bind=True)(
            lambda self, x, build=build: self.replace(build(x)))
    tasks = app.tasks
    with _worker(app):
        assert tasks["t.map_first"].delay(1).get(timeout=10) == 5
        chained = (tasks["t.map_first"].s(1) | add.signature((10,))).delay()
        assert chained.get(timeout=10) == 15
        joined = chord([tasks["t.map_first"].s(1), tasks["t.map_last"].s(1), add.s(2, 2)],
                       tasks["t.collect"].s())
        assert joined.delay().get(timeout=10) == [5, [3, 3], 4]
    with pytest.raises(ConfigurationError, match="chunks is a group of map tasks"):
        tasks["t.chunks"].apply((1,), throw=True)


#: Each chain-shaped replacement and its value for x = 1.
SHAPES = {"t.by_chain_group": [12, 22], "t.by_chain_chord": 39, "t.by_group_task": 10,
          "t.by_chain_ending_chord": 34}


def test_a_chain_holding_groups_and_chords_takes_the_replaced_place(app: Celeriac) -> None:
    tasks = app.tasks
    with _worker(app):
        for name, value in SHAPES.items():
            alone = tasks[name].apply_async((1,), link=tasks["t.collect"].s())
            assert alone.get(timeout=10) == value, name
            assert alone.children and alone.children[0].get(timeout=10) == value, name
            chained = (tasks["t.add"].s(0, 1) | tasks[name].s() | tasks["t.collect"].s()).delay()
            assert chained.get(timeout=10) == value, name
            assert _parent(chained).get(timeout=10) == value, name  # under the replaced id
            collect = tasks["t.collect"]
            before_chord: Any = chain(tasks[name].s(1), group(collect.s(), collect.s()), collect.s(),
                                 collect.s()).delay()  # the rest of its chain holds a chord
            assert before_chord.get(timeout=10) == [value, value], name


def test_a_chord_member_replaced_by_a_chain_with_chords_joins_with_its_last_value(
        app: Celeriac) -> None:
    tasks = app.tasks
    with _worker(app):
        result = chord([tasks[name].s(1) for name in SHAPES] + [tasks["t.add"].s(2, 2)],
                       tasks["t.collect"].s()).delay()
        assert result.get(timeout=10) == [*SHAPES.values(), 4]
        assert [r.get(timeout=10) for r in _parent(result).results] == [*SHAPES.values(), 4]
        in_members = chord([chain(tasks[name].s(1), tasks["t.collect"].s()) for name in SHAPES],
                           tasks["t.collect"].s()).delay()  # header member chains they start
        assert in_members.get(timeout=10) == list(SHAPES.values())
    runs = app.runs  # type: ignore[attr-defined]
    assert runs.count("collect") == 1 + len(SHAPES) + 1  # each body once, each member chain's


def test_eager_replace_by_a_chain_with_chords_returns_its_value(app: Celeriac) -> None:
    for name, value in SHAPES.items():
        assert app.tasks[name].apply((1,)).get() == value, name


@pytest.mark.parametrize("name", ["t.fails_before_chord", "t.fails_in_middle_chord",
                                  "t.fails_before_group", "t.fails_in_last_group"])
def test_a_chain_replacement_that_fails_anywhere_fails_the_replaced_task(
        app: Celeriac, name: str) -> None:
    tasks = app.tasks
    with _worker(app):
        with pytest.raises((ValueError, ChordError)):  # not PENDING for ever
            tasks[name].delay(1).get(timeout=10)
        chained = (tasks[name].s(1) | tasks["t.collect"].s()).delay()
        with pytest.raises((ValueError, ChordError)):
            chained.get(timeout=10)
        collect = tasks["t.collect"]
        before_chord: Any = chain(tasks[name].s(1), group(collect.s(), collect.s()), collect.s(),
                             collect.s()).delay()  # the steps after that chord fail too
        with pytest.raises((ValueError, ChordError)):
            before_chord.get(timeout=10)
        joined = chord([tasks[name].s(1), tasks["t.add"].s(2, 2)], tasks["t.collect"].s()).delay()
        replaced_id = _parent(joined).results[0].id
        with pytest.raises(ChordError, match=f"Dependency {replaced_id} raised"):
            joined.get(timeout=10)
        in_member = chord([chain(tasks[name].s(1), collect.s()), tasks["t.add"].s(2, 2)],
                          collect.s()).delay()  # a header member chain the task starts
        member_id = _parent(in_member).results[0].id
        with pytest.raises(ChordError, match=f"Dependency {member_id} raised"):
            in_member.get(timeout=10)
    assert "collect" not in app.runs  # type: ignore[attr-defined]
