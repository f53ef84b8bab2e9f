"""``CELERIAC_TEST_CLAIMS``: pytest processes sharing one directory share out the modules
(tests/conftest.py), as the gevent-patched leg's two processes do in ./scripts/test."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

from conftest import claim

ROOT = Path(__file__).resolve().parent.parent
#: Small, quick modules of plain tests that never skip (a skipped test prints no PASSED
#: line; test_compression's Celery interop test skips without the Celery venv).
MODULES = ["tests/test_fastjson.py", "tests/test_schedules.py", "tests/test_config.py",
           "tests/test_serialization.py"]


def test_a_module_is_claimed_once(tmp_path: Path) -> None:
    assert claim(tmp_path, "tests/e2e/test_a.py")
    assert not claim(tmp_path, "tests/e2e/test_a.py")
    assert claim(tmp_path, "tests/test_a.py")  # another module, not a path clash


def test_processes_sharing_a_directory_run_every_test_once(tmp_path: Path) -> None:
    claims = tmp_path / "claims"
    claims.mkdir()
    env = {**os.environ, "CELERIAC_TEST_CLAIMS": str(claims)}
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "-q", *MODULES]
    runs = [subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    ran = Counter(match for out in outputs for match in re.findall(r"^PASSED (.+?)\s*$", out, re.M))
    collected = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                                "--collect-only", "-q", *MODULES], cwd=ROOT, capture_output=True,
                               text=True, timeout=300, check=True).stdout
    every = {line for line in collected.splitlines() if "::" in line}
    assert set(ran) == every and set(ran.values()) == {1}, outputs
    # Whole modules: each ran in one process only.
    by_process = [{nodeid.split("::")[0] for nodeid in re.findall(r"^PASSED (.+?)\s*$", out, re.M)}
                  for out in outputs]
    assert not by_process[0] & by_process[1]
    assert sorted(path.name for path in claims.iterdir()) == sorted(
        module.replace("/", "__") for module in MODULES)
