"""The loop thread in a gevent- or eventlet-patched process, checked in subprocesses.

Patching is process-wide, so each check runs a fresh interpreter that patches first
(as a green worker process does), then awaits a coroutine from a greenlet while
another greenlet keeps counting (the hub ran while the first waited), on the
selector loop (the one without uvloop, which must avoid every patched module) and
on the default one. Inside the coroutine: ``asyncio.to_thread``, ``asyncio.sleep``, a
TCP round trip through ``localhost`` (``getaddrinfo``), and a timeout of the pool's
kind raised in the waiting greenlet, which must reach the coroutine.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap

import pytest

SCRIPT = r'''
import sys
green, use_uvloop = sys.argv[1], sys.argv[2] == "uvloop"
if green == "gevent":
    from gevent import monkey
    monkey.patch_all()
    import gevent
    spawn, sleep = gevent.spawn, gevent.sleep
    from gevent import Timeout
else:
    import warnings
    warnings.filterwarnings("ignore")
    import eventlet
    eventlet.monkey_patch()
    spawn, sleep = eventlet.spawn, eventlet.sleep
    from eventlet import Timeout
import asyncio, json, threading
from celeriac.aio import await_
from celeriac.aio.events import threadsafe_event
from celeriac.aio.loop import LoopThread, new_loop
from celeriac.exceptions import SoftTimeLimitExceeded

own = LoopThread(new_loop(use_uvloop=use_uvloop))
await_.shared_loop = lambda: own
ticks = [0]

def ticker():
    while True:
        ticks[0] += 1
        sleep(0.01)

async def body():
    name = await asyncio.to_thread(lambda: threading.current_thread().name)
    await asyncio.sleep(0.2)

    async def echo(reader, writer):
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "localhost", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("localhost", port)
    writer.write(b"ping\n")
    line = await reader.readline()
    writer.close()
    server.close()
    try:
        await asyncio.sleep(30)
    except SoftTimeLimitExceeded:
        return [bool(name), line.decode().strip(), "soft limit inside"]

def job():
    with Timeout(1.5, SoftTimeLimitExceeded("soft")):
        return await_.run_coroutine(body(), event=threadsafe_event())

spawn(ticker)
result = spawn(job)
value = result.get() if green == "gevent" else result.wait()
print(json.dumps({"value": value, "ticks": ticks[0]}))
own.stop()
'''


@pytest.mark.parametrize("use_uvloop", ["selector", "uvloop"])
@pytest.mark.parametrize("green", ["gevent", "eventlet"])
def test_coroutine_in_a_patched_process(green: str, use_uvloop: str) -> None:
    # Looked up, not imported: importing eventlet here would patch-warn this process.
    for module in (green, "uvloop") if use_uvloop == "uvloop" else (green,):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed")
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(SCRIPT), green, use_uvloop],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    outcome = json.loads(proc.stdout.strip().splitlines()[-1])
    assert outcome["value"] == [True, "ping", "soft limit inside"], proc.stderr
    # The waiting greenlet let the hub run others for the whole 1.5 s.
    assert outcome["ticks"] > 20, outcome
