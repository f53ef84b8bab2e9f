"""Crash attribution's choice between running suspects alone and halving their group."""

from __future__ import annotations

import pytest

from celeriac.worker.attribution import suspect_group


@pytest.mark.parametrize(("count", "task_seconds", "restart_seconds", "group"), [
    (50, 0.03, 0.5, 1),     # short tasks: 1.5 s of serial runs beat 6 process restarts
    (50, 2.0, 0.5, 25),     # long ones: 100 s serial against 6 x 2.5 s of halving
    (2, 5.0, 0.5, 1),       # two suspects: alone is one crash either way
    (8, 0.3, 0.5, 1),       # 2.4 s alone against 3 x 0.8 s: a tie goes to alone...
    (8, 1.0, 0.2, 4),       # ...and loses when a restart is cheap and tasks are long
    (1000, 0.01, 1.0, 1),   # 10 s alone against 10 x 1 s: a tie, alone
    (1000, 0.1, 1.0, 500),
])
def test_the_cheaper_recovery_wins(count: int, task_seconds: float, restart_seconds: float,
                                   group: int) -> None:
    assert suspect_group(count, task_seconds, restart_seconds) == group


def test_unknown_task_length_halves() -> None:
    assert suspect_group(50, float("inf"), 0.5) == 25
