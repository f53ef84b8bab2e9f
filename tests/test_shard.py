"""``CELERIAC_TEST_SHARD``: the gevent-patched leg runs as shards at once (tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import shard

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class _Item:
    """What :func:`shard` reads of a collected item: its module, id and marks."""

    path: Path
    nodeid: str
    marks: list[pytest.Mark] = field(default_factory=list)

    def iter_markers(self) -> Iterator[pytest.Mark]:
        return iter(self.marks)


def _items() -> list[_Item]:
    found = []
    for module, count in (("tests/e2e/test_a.py", 3), ("tests/test_b.py", 40),
                          ("tests/test_c.py", 5), ("tests/e2e/test_d.py", 2), ("tests/test_e.py", 1)):
        found += [_Item(ROOT / module, f"{module}::t{n}") for n in range(count)]
    return found


@pytest.mark.parametrize("count", [1, 2, 3])
def test_shards_partition_the_items_by_module(count: int) -> None:
    items = _items()
    parts = [shard(items, index, count) for index in range(1, count + 1)]  # type: ignore[arg-type]
    kept = [item for part, _ in parts for item in part]
    assert sorted(item.nodeid for item in kept) == sorted(item.nodeid for item in items)
    owners = {item.path: index for index, (part, _) in enumerate(parts) for item in part}
    assert all(owners[item.path] == index for index, (part, _) in enumerate(parts) for item in part)
    for part, dropped in parts:
        assert len(part) + len(dropped) == len(items)


def test_heaviest_modules_go_to_different_shards() -> None:
    (first, _), (second, _) = (shard(_items(), index, 2) for index in (1, 2))  # type: ignore[arg-type]
    # weights: test_b 40, e2e/test_a 3 x 8, e2e/test_d 2 x 8, test_c 5, test_e 1: greedy,
    # heaviest first into the lightest shard gives 40 + 5 against 24 + 16 + 1
    assert {item.path.name for item in first} == {"test_b.py", "test_c.py"}
    assert {item.path.name for item in second} == {"test_a.py", "test_d.py", "test_e.py"}


def test_a_bad_shard_is_a_usage_error() -> None:
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "tests/test_shard.py", "-k", "partition"],
                         cwd=ROOT, env={**os.environ, "CELERIAC_TEST_SHARD": "3/2"},
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 4, run.stdout + run.stderr
    assert "K must be within 1..N" in run.stdout + run.stderr


def test_a_shard_runs_only_its_modules() -> None:
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "--collect-only", "tests/test_shard.py", "tests/test_settings.py"],
                         cwd=ROOT, env={**os.environ, "CELERIAC_TEST_SHARD": "2/2"},
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    modules = {line.split("::")[0] for line in run.stdout.splitlines() if "::" in line}
    assert len(modules) == 1, run.stdout
