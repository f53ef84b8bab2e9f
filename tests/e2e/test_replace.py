"""``self.replace(sig)`` through a real ``celeriac worker`` on SQLite and Redis: in the
middle of a chain, in a chord member (the body fires once), and with a group; and what it
is built on: steps after a chord in a chain, a chord as a chord's header member; and
with chains holding groups and chords (ending in a group, a chord in the middle), alone
and as a chord's header member."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import BROKER_KINDS, Project, project_on

EXTRA = '''
@app.task(bind=True)
def by_task(self, x):
    return self.replace(add.s(x, 100))

@app.task(bind=True)
def by_group(self, x):
    from celeriac import group
    return self.replace(group(add.s(x, 1), add.s(x, 2)))

@app.task(bind=True)
def by_chain_group(self, x):  # a chain ending in a group
    from celeriac import group
    return self.replace(add.s(x, 1) | group(add.s(10), add.s(20)))

@app.task(bind=True)
def by_chain_chord(self, x):  # a chord in the middle of a chain, then a task
    from celeriac import chain, chord
    return self.replace(chain(add.s(x, 1), chord([add.s(10), add.s(20)], tsum.s()), add.s(5)))

@app.task(bind=True)
def by_failing_chord(self, x):  # fails in the middle chord: the replaced id must hear of it
    from celeriac import chain, chord
    return self.replace(chain(add.s(x, 1), chord([add.s(10), fail.si("no")], tsum.s()),
                              add.s(5)))

@app.task
def tsum(values):
    with open(os.environ["REPLACE_LOG"], "a") as f:
        f.write(f"tsum {values}\\n")
    return sum(v if isinstance(v, int) else sum(v) for v in values)
'''


@pytest.fixture(params=BROKER_KINDS)
def replacing(request: pytest.FixtureRequest, tmp_path: Path,
              monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Path]:
    project: Project = project_on(request, request.param)
    log = tmp_path / "replace.log"
    monkeypatch.setenv("REPLACE_LOG", str(log))
    project.write_tasks(EXTRA)
    project.start_worker("-P", "threads", "-c", "4")
    return project.app(), log


def test_replace_in_a_chain_a_chord_member_and_with_a_group(replacing: tuple[Any, Path]) -> None:
    app, log = replacing
    from celeriac import chord

    add, by_task, by_group, tsum = (app.tasks[f"tasks.{name}"]
                                    for name in ("add", "by_task", "by_group", "tsum"))
    chained = (add.s(1, 1) | by_task.s() | add.s(5)).delay()
    assert chained.get(timeout=30) == 107  # 2 -> add(2, 100) -> +5
    grouped = (add.s(1, 1) | by_group.s() | add.si(0, 0)).delay()
    assert grouped.get(timeout=30) == 0
    assert grouped.parent.get(timeout=30) == [3, 4]  # the group's values, under the replaced id
    joined = chord([by_task.s(1), by_group.s(1), add.s(2, 2)], tsum.s()).delay()
    assert joined.get(timeout=30) == 101 + 5 + 4
    assert log.read_text().splitlines() == ["tsum [101, [2, 3], 4]"]  # the body ran once


def test_steps_after_a_chord_and_a_chord_in_a_header(replacing: tuple[Any, Path]) -> None:
    app, log = replacing
    from celeriac import chain, chord, group

    add, tsum = app.tasks["tasks.add"], app.tasks["tasks.tsum"]
    result: Any = chain(add.s(1, 1), group(add.s(10), add.s(20)), tsum.s(), add.s(5)).delay()
    assert result.get(timeout=30) == 39  # 2 -> [12, 22] -> 34 -> 39
    nested: Any = chord([chord([add.s(1, 1), add.s(2, 2)], tsum.s()), add.s(10, 10)], tsum.s())
    assert nested.delay().get(timeout=30) == 26
    assert log.read_text().splitlines() == ["tsum [12, 22]", "tsum [2, 4]", "tsum [6, 20]"]


def test_replace_with_chains_holding_groups_and_chords(replacing: tuple[Any, Path]) -> None:
    app, log = replacing
    from celeriac import chord
    from celeriac.exceptions import ChordError

    add, by_chain_group, by_chain_chord, by_failing_chord, tsum = (
        app.tasks[f"tasks.{name}"]
        for name in ("add", "by_chain_group", "by_chain_chord", "by_failing_chord", "tsum"))
    ending_in_group = (add.s(0, 1) | by_chain_group.s() | tsum.s()).delay()
    assert ending_in_group.get(timeout=30) == 34  # 1 -> 2 -> [12, 22] -> 34
    assert ending_in_group.parent.get(timeout=30) == [12, 22]  # under the replaced id
    assert by_chain_chord.delay(1).get(timeout=30) == 39  # 2 -> [12, 22] -> 34 -> 39
    joined: Any = chord([by_chain_chord.s(1), by_chain_group.s(1), add.s(2, 2)], tsum.s()).delay()
    assert joined.get(timeout=30) == 39 + 34 + 4
    assert joined.parent.get(timeout=30) == [39, [12, 22], 4]
    assert log.read_text().splitlines().count("tsum [39, [12, 22], 4]") == 1  # the body ran once
    failing: Any = chord([by_failing_chord.s(1), add.s(2, 2)], tsum.s()).delay()
    replaced_id = failing.parent.results[0].id
    with pytest.raises(ChordError, match=f"Dependency {replaced_id} raised"):
        failing.get(timeout=30)
