"""``examples/asyncio`` (and the ``examples/gevent`` task it compares with), run for real.

``examples/asyncio/demo.py`` is run as a user runs it, with few feeds and a short
latency: it starts the loopback feed hub of ``examples/gevent``, then a real CLI worker
``-P asyncio -c 1000`` on the example's ``async def`` task (aiohttp) and one ``-P gevent
-c 1000`` on the gevent example's task (requests), sends every feed, and checks each
result has the hub's five items (the demo raises otherwise). So neither example's task
module, nor the demo, can rot unnoticed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import normal_leg_only

DEMO = Path(__file__).resolve().parents[2] / "examples" / "asyncio" / "demo.py"

pytest.importorskip("aiohttp")
pytest.importorskip("gevent")
pytest.importorskip("greenlet")
pytest.importorskip("requests")


@normal_leg_only
def test_asyncio_feed_demo_runs_both_pools(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(DEMO), "--feeds", "40", "--latency", "0.05", "--workdir",
         str(tmp_path)], capture_output=True, text=True, timeout=180)
    logs = "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')}"
                     for log in sorted(tmp_path.glob("*.log")))
    assert done.returncode == 0, done.stdout + done.stderr + logs
    assert "-P asyncio -c 1000" in done.stdout
    assert "-P gevent -c 1000" in done.stdout
    assert "coroutines:" in done.stdout
    # The asyncio worker ran the coroutine on its loop, without a traceback in its log.
    assert "Traceback" not in (tmp_path / "worker-asyncio.log").read_text(errors="replace")
