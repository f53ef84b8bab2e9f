"""A chord followed by more steps in a chain, and chords of chords, on an embedded worker
(memory broker and backend, a real consumer) and eagerly: the steps after a chord travel
in its body's options and run after it, with its value; an inner chord's body is a member
of the outer chord; a failed chord fails what follows it."""

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

    @app.task(name="t.fail")
    def fail(x: Any) -> None:
        raise ValueError(x)

    app.runs = runs  # type: ignore[attr-defined]
    yield app
    app.close()


def _parent(result: Any) -> Any:
    return result.parent


def test_steps_after_a_chord_run_with_its_value(app: Celeriac) -> None:
    add, tsum = app.tasks["t.add"], app.tasks["t.tsum"]
    with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False):
        middle: Any = chain(add.s(1, 1), group(add.s(10), add.s(20)), tsum.s(), add.s(5)).delay()
        assert middle.get(timeout=10) == 39  # 2 -> [12, 22] -> 34 -> 39
        assert _parent(middle).get(timeout=10) == 34
        first = (group(add.s(1, 1), add.s(2, 2)) | tsum.s() | add.s(1) | add.s(1)).delay()
        assert first.get(timeout=10) == 8
        twice: Any = chain(group(add.s(1, 1), add.s(2, 2)), tsum.s(),
                      group(add.s(1), add.s(2)), tsum.s(), add.s(100)).delay()
        assert twice.get(timeout=10) == 100 + 7 + 8  # 6 -> [7, 8] -> 15 -> 115
        assert chord([], tsum.s()).delay().get(timeout=10) == 0  # sent at once, with []
    assert app.runs.count("tsum") == 5  # type: ignore[attr-defined]


def test_a_failed_chord_fails_the_steps_after_it(app: Celeriac) -> None:
    add, tsum, fail = app.tasks["t.add"], app.tasks["t.tsum"], app.tasks["t.fail"]
    with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False):
        result: Any = chain(group(add.s(1, 1), fail.si("no")), tsum.s(), add.s(5), add.s(6)).delay()
        with pytest.raises(ChordError, match="ValueError"):
            result.get(timeout=10)
        with pytest.raises(ChordError):
            _parent(result).get(timeout=10)
    assert "tsum" not in app.runs  # type: ignore[attr-defined]


def test_an_eager_chain_runs_the_steps_after_a_chord(app: Celeriac) -> None:
    add, tsum = app.tasks["t.add"], app.tasks["t.tsum"]
    assert chain(add.s(1, 1), group(add.s(10), add.s(20)), tsum.s(), add.s(5)).apply().get() == 39


def test_a_chain_holding_a_chord_is_refused_inside_a_group(app: Celeriac) -> None:
    add, tsum = app.tasks["t.add"], app.tasks["t.tsum"]
    inner: Any = chain(add.s(1, 1), group(add.s(1), add.s(2)), tsum.s(), add.s(1))
    with pytest.raises(ConfigurationError, match="hold no chord"):
        group(inner, add.s(1, 1)).delay()


def test_a_chord_in_a_header_is_a_member_with_its_body_value(app: Celeriac) -> None:
    add, tsum, fail = app.tasks["t.add"], app.tasks["t.tsum"], app.tasks["t.fail"]
    nested: Any = chord([chord([add.s(1, 1), add.s(2, 2)], tsum.s()), add.s(10, 10)], tsum.s())
    assert nested.apply().get() == 26  # eager: [6, 20]
    with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False):
        result = nested.delay()
        assert result.get(timeout=10) == 26
        assert _parent(result).get(timeout=10) == [6, 20]
        failing: Any = chord([chord([fail.si("no"), add.s(1, 1)], tsum.s()), add.s(1, 1)],
                             tsum.s()).delay()
        inner_id = _parent(failing).results[0].id
        with pytest.raises(ChordError, match=f"Dependency {inner_id} raised"):
            failing.get(timeout=10)
    assert app.runs.count("tsum") == 4  # type: ignore[attr-defined]  # 2 eager, 2 here
