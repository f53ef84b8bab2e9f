"""``./scripts/bench`` end to end on a tiny workload: it runs, and writes a well-formed report.

The command is started as a user starts it, with ``BENCH_VENV`` naming this venv (which has
celeriac, gevent, redis-py, requests and rich; not the peers) so no virtualenv is built, and
only celeriac measured, at ``--scale`` small enough for a few seconds a workload. What it
checks is the harness, not speed: the servers came up, the ceiling and the worker ran
(their rates are positive numbers), the targets were judged, the settings and the exact
command are written down. No figure is compared with anything.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import gevent_patched
from redisserver import require_redis_server

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    gevent_patched(), reason="runs subprocesses only: a patched client adds nothing here")


def rows(report: str, heading: str) -> dict[str, list[str]]:
    """The rows of the table under ``## heading``: first cell -> the other cells."""
    section = report.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    out: dict[str, list[str]] = {}
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith("| system") and "---" not in line:
            cells = [c.strip() for c in line.strip("|").split("|")]
            out[cells[0]] = cells[1:]
    return out


def positive(cell: str) -> bool:
    return re.fullmatch(r"[\d,]+(\.\d+)?", cell) is not None and float(cell.replace(",", "")) > 0


@pytest.mark.timeout(240)
def test_quick_bench_writes_a_report(tmp_path: Path) -> None:
    require_redis_server()
    out = tmp_path / "benchmarks.md"
    argv = ["--quick", "--scale", "0.05", "--only", "feeds,noop,enqueue,latency,memory",
            "--systems", "celeriac-gevent", "--out", str(out), "--no-charts"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELERIAC_")}
    env["BENCH_VENV"] = sys.prefix
    done = subprocess.run([str(ROOT / "scripts" / "bench"), *argv], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=230)
    assert done.returncode == 0, done.stderr[-3000:]
    report = out.read_text()

    assert report.startswith("# Benchmarks\n")
    assert "Smoke run (`--quick`)" in report
    assert "`./scripts/bench " + " ".join(argv) + "`" in report
    machine = rows(report, "Machine")
    assert machine["cores"] == [str(os.cpu_count())]
    assert machine["redis-server"][0][0].isdigit()
    assert machine["celeriac"][0].startswith("0.")

    feeds = rows(report, "Feed hub")
    assert positive(feeds["ceiling (bare gevent pool)"][0])
    celeriac = feeds["celeriac-gevent"]
    assert positive(celeriac[0]) and positive(celeriac[1])  # feeds/s and its ratio
    noop = rows(report, "No-op overhead")
    assert positive(noop["ceiling (bare gevent pool)"][0]) and positive(noop["celeriac-gevent"][0])
    enqueue = rows(report, "Enqueue")
    assert positive(enqueue["ceiling (bare redis-py LPUSH)"][0])  # .delay() loop /s
    assert positive(enqueue["ceiling (bare redis-py LPUSH)"][2])  # bulk /s
    assert positive(enqueue["celeriac-gevent"][0]) and positive(enqueue["celeriac-gevent"][1])
    latency = rows(report, "Latency")
    assert positive(latency["ceiling (bare BLPOP)"][0])  # p50 ms
    assert positive(latency["celeriac-gevent"][0]) and positive(latency["celeriac-gevent"][1])
    for heading in ("Feed hub", "No-op overhead", "Enqueue", "Latency", "Memory"):
        section = report.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
        assert "**What bounds it.**" in section, heading
    memory = rows(report, "Memory")
    assert all(positive(c) for c in memory["celeriac-gevent"][:3])  # RSS x2, files
    assert all(positive(c) for c in memory["ceiling (bare gevent pool)"][:3])

    targets = report.split("## Targets (issue 15)\n", 1)[1].split("\n## ", 1)[0]
    verdicts = re.findall(r"\| (met|NOT met|not measured) \|", targets)
    # feeds x2, noop, enqueue x2, latency, memory; --processes 2 and memory (against
    # Celery's) are "not measured": neither celeriac-gevent-p2 nor celery-gevent was chosen
    assert len(verdicts) == 7 and verdicts.count("not measured") == 2, targets
    assert "| celeriac-gevent | -P gevent -c C --processes 1;" in report
    assert "## Failed measurements" not in report
