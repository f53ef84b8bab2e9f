"""What bounds each workload's figures: written under its table in ``docs/benchmarks.md``.

The issue asks that a figure which misses its target be stated plainly with what bounds
it, so each workload gets one paragraph. A paragraph says what the figure is bound by on
this kind of machine: the ceiling of the same table, or a measurement named with its
command and date. It is prose kept with the harness because ``docs/benchmarks.md`` is
written whole by ``./scripts/bench``. Update it when a profile says something new.
"""

from __future__ import annotations

BOUNDS: dict[str, str] = {
    "feeds": (
        "CPU. The ceiling itself is bound by the two cores, which it shares with the feed "
        "hub (a gevent server answering every request) and redis-server. It reaches well "
        "under the 2,000/s that 1,000 slots of 0.5 s allow. A celeriac gevent worker process "
        "spends about three quarters of its time holding the GIL in the task's body: py-spy "
        "`--gil` of the worker process on this workload (2026-12-04) puts 76% of its "
        "samples in the body (requests, ElementTree, the Redis calls). The rest is the "
        "queue's own work: the batched fetch and settle scripts, decoding the message, "
        "the hooks, and the start line to the supervisor. `--processes 2` adds a GIL, not "
        "a core: both processes share the same two cores with the feed hub and Redis."),
    "noop": (
        "The worker's CPU per task (the `worker CPU us/task` column, supervisor "
        "included) against the INCR's own cost. The ceiling does nothing but redis-py's "
        "INCR on gevent. Most of a celeriac no-op's time is its own work, measured with "
        "timeit and py-spy `--gil` (2026-12-04):"
        "\n\n- decoding the 740-byte envelope, about 12 us;"
        "\n- the request and the pipeline's hooks;"
        "\n- the start line to the supervisor;"
        "\n- its share of the batched fetch and settle scripts, each a Lua script of "
        "about 14 Redis commands per task on the server;"
        "\n- redis-py's own cost per command on the broker's connections. Its `os.getpid()` "
        "check on every connection checkout is a system call, and system calls are slow "
        "on this VM."
        "\n\nThe body's INCR pays all of that redis-py cost too."),
    "startup": (
        "Imports. Two interpreters start one after the other. First the CLI, which "
        "supervises: click, rich and the app. Then the worker process: gevent's "
        "`patch_all` (0.12-0.19 s), then the app again. `import redis` alone takes about "
        "0.1 s and 20 MB in each, because redis-py 8 imports its asyncio client from the "
        "package's `__init__` (`python -X importtime -c 'import redis'`). Once the first "
        "task has run, the worker is at full speed within a few hundredths of a second "
        "(pools filling, connections opening), so what separates the systems here is "
        "the time to the first task."),
    "enqueue": (
        "One round trip per `.delay()`. The ceiling line is a plain redis-py `LPUSH` of a "
        "message-sized value per call, and nothing sent sequentially and confirmed can beat "
        "it: on this VM a bare round trip is about 120-150 us. So the 10,000/s target is "
        "above what the machine allows any Redis client. Beyond the round trip, celeriac's "
        "publish runs one Lua script (about 45 us on the server: the message, the ready "
        "index, the wake-up list, the queue's counters, from `INFO commandstats`). It also "
        "builds the envelope, and redis-py packs the script's 13 arguments. Bulk sends "
        "10,000 messages per script call, so it is bound by building and encoding each "
        "message and by the script's per-message work on the server. A bare `LPUSH` of "
        "10,000 values shows what the server and the connection alone allow."),
    "latency": (
        "Wake-ups and cold code. The ceiling line is the least any Redis queue can take on "
        "this machine: one `LPUSH` and a consumer woken from `BLPOP`. celeriac's path "
        "takes more steps:"
        "\n\n1. the publish script;"
        "\n2. the worker woken from `BLPOP` on its wake-up list;"
        "\n3. a claim script round trip (leases with fencing tokens, which a bare `BLPOP` "
        "cannot give);"
        "\n4. decoding the message;"
        "\n5. the start line;"
        "\n6. the body."
        "\n\nEach step runs cold. On this VM, Python code that last ran 20 ms earlier runs "
        "about four times slower than when hot: five message encodes take 50 us back to "
        "back and 208 us after a 20 ms pause, whether the pause was spent sleeping or "
        "spinning (2026-12-04)."),
    "memory": (
        "Two processes, each with its own interpreter. The supervisor is the CLI process: "
        "click, rich, the app, redis-py and the worker's modules, about 45-50 MB. The "
        "worker process carries gevent, the app and redis-py, about 50 MB idle, and grows "
        "with a thousand green threads and their connections under the feed run. Celery's "
        "gevent worker is one process. The supervisor stays because it is what releases "
        "a dead process's messages at once, enforces hard limits on a blocked hub and "
        "attributes crashes. Meeting the target means a supervisor that neither imports "
        "the app nor redis-py, which it uses today to settle the tasks it fails and to send "
        "worker events."),
    "depth": (
        "Redis's own cost per operation on large sorted sets and hashes. The claim and "
        "publish scripts use `ZADD`/`ZRANGEBYSCORE` on the ready index (O(log n)) and one "
        "key per message, so no step scans the queue. Not profiled further yet."),
    "events": (
        "With `-E`, each task adds three events (received, started, succeeded): three "
        "dicts encoded with orjson, and their share of one `emit` script call per batch "
        "(up to 200 events, or every 0.2 s), which stores each event in a capped sorted "
        "set on the server. Not profiled further yet."),
    "brokers": (
        "Each broker's own round trip and storage. SQLite's is a file lock and a "
        "transaction per call on the same disk. RabbitMQ's is a confirmed publish and a "
        "consumer on one channel, plus the Redis sidecar celeriac keeps for its lease state "
        "(`broker_state_url`)."),
}
