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
        "the hooks, and the start lines to the supervisor (batched when jobs start "
        "together). The garbage collector had taken a sixth of it, walking every object "
        "of a thousand green threads and the start-up's 50,000 again and again: frozen "
        "before the first task, with a higher young threshold (`celeriac.worker.heap`), "
        "the one-process ratio went from 0.84 in the published run of 2026-12-04 to 0.93 "
        "in that of 2026-12-05 (e5d933c), and to 1.01 and 0.96 in two sets of three runs "
        "of the workload alone the same day: single runs on this shared machine vary by "
        "several hundredths. "
        "`--processes 2` adds a GIL, not a core: both processes share the same "
        "two cores with the feed hub and Redis, so 1.5 times the one-process ceiling would "
        "need more cores than the machine has once the feed hub and Redis take theirs."),
    "noop": (
        "The worker's CPU per task (the `worker CPU us/task` column, supervisor "
        "included) against the INCR's own cost. The ceiling does nothing but redis-py's "
        "INCR on gevent. The worker process is never idle: py-spy with `--idle` puts 51% "
        "of its main thread's samples in the body's INCR and 49% in celeriac's own work "
        "per task (2026-12-05), none of it waiting:"
        "\n\n- decoding the 740-byte envelope, about 12 us;"
        "\n- the request and the pipeline's hooks;"
        "\n- handing the job to a slot (a greenlet reused from task to task: a new "
        "greenlet per task cost a 16 KB mmap and munmap for its frame stack, seen with "
        "strace);"
        "\n- the start line to the supervisor, one pipe write for the jobs that start "
        "together (one write per task was a system call and a wake-up of the supervisor "
        "each, an eighth of the worker's CPU per task);"
        "\n- its share of the batched fetch and settle scripts (43 tasks per script call "
        "here): on the server, five Redis commands per task to claim it and four to ack "
        "it; in the worker, redis-py parsing the claim's reply in Python, two items per "
        "message since 762c8d1 (six had cost about 3% of the rate: `redis_compare.py "
        "--against`, seven runs, 2026-12-05);"
        "\n- the greenlet switches: about a sixth of celeriac's share, one of them the "
        "yield that lets the jobs that start together write one start line batch;"
        "\n- the garbage collector, now about 2.5 us per task: it took 17 us (0.70 s of a "
        "6.5 s run) until the worker process froze the start-up's objects and raised the "
        "young threshold before its first task (`celeriac.worker.heap`), which took the "
        "ratio from 0.68 in the published run of 2026-12-04 to 0.78 in that of 2026-12-05 "
        "(e5d933c; 0.75 and 0.71 in two sets of three runs of the workload alone the same "
        "day, and 0.71 in the run at fc0ce09 on another host's CPU): single runs move by "
        "several hundredths."
        "\n\nredis-py costs the body's INCR about 60 us of CPU per command on this VM: eight "
        "system calls per command (a `getpid` on checkout and release, a non-blocking "
        "read checking the connection, two polls, the send and the read), each slow here."),
    "startup": (
        "Imports. Two interpreters start one after the other. First the CLI, which "
        "supervises: click, rich and the app. Then the worker process: gevent's "
        "`patch_all` (0.12-0.19 s), then the app again. `import redis` alone takes about "
        "0.1 s and 20 MB in each, because redis-py 8 imports its asyncio client from the "
        "package's `__init__` (`python -X importtime -c 'import redis'`). Once the first "
        "task has run, the worker is at full speed within a few hundredths of a second "
        "(pools filling, connections opening), so what separates the systems here is "
        "the time to the first task. The short run (10,000 tasks, about 1.2 s at this rate) "
        "reached 0.93, 0.99 and 0.97 of the no-op rate in the three published runs "
        "before fc0ce09, "
        "and 1.02 in three runs of the two workloads alone (2026-12-05): at this length, "
        "the first tenth of a second and the machine's noise weigh on a single run."),
    "enqueue": (
        "One round trip per `.delay()`. The ceiling line is a plain redis-py `LPUSH` of a "
        "message-sized value per call, and nothing sent sequentially and confirmed can beat "
        "it: on this VM a bare round trip is about 100-150 us, 60 us of it redis-py's CPU. "
        "So the 10,000/s target is above what the machine allows any Redis client. Beyond "
        "the round trip, celeriac's publish runs one Lua script (about 30 us on the server: "
        "the message, the ready index, the wake-up list, the queue's set and the retry "
        "receipt, from `INFO commandstats`), builds the envelope (about 14 us), and "
        "redis-py packs the script's 13 arguments. Bulk sends 1,000 messages per script "
        "call and pipelines the calls, so the server stores one chunk while the producer "
        "writes the next. It is bound by the producer's CPU, about 16 us per message "
        "against 7 us of the script on the server (2026-12-05): `apply_many` plans the "
        "send once for all its messages (routing, checks, the header template: "
        "`celeriac/app/plan.py`), so a message costs its id, its arguments' JSON, its "
        "envelope and redis-py's packing of its six arguments. That took the bulk rate "
        "from 41,571/s to 50,233/s in a probe alternating the two versions over six runs. "
        "A bare `LPUSH` of 10,000 values shows what the server and the connection alone "
        "allow."),
    "latency": (
        "Wake-ups and cold code. The ceiling line is the least any Redis queue can take on "
        "this machine: one `LPUSH` and a consumer woken from `BLPOP`. celeriac's path "
        "takes more steps:"
        "\n\n1. the publish script;"
        "\n2. the worker woken from `BLPOP` on its wake-up list, with the claim script "
        "queued behind the `BLPOP` on the same connection, so the server claims as soon as "
        "it wakes (leases with fencing tokens, which a bare `BLPOP` cannot give);"
        "\n3. decoding the message;"
        "\n4. the start line;"
        "\n5. the body."
        "\n\nEach step runs cold. On this VM, Python code that last ran 20 ms earlier runs "
        "four to ten times slower than when hot: five message encodes take 50 us back to "
        "back and 208 us after a 20 ms pause, whether the pause was spent sleeping or "
        "spinning, and building one message takes 14 us hot and 185 us cold. Redis is cold "
        "too: each command a Lua script calls costs 10-20 us on a server woken from idle "
        "against 1-2 us hot, so the publish script takes about 100 us and the claim about "
        "65 us where a bare `LPUSH` takes 5 (`SLOWLOG` with every command logged, "
        "2026-12-04). Runs split in two: three runs of this workload alone gave a p50 of "
        "0.88, 1.15 and 0.92 ms, and three more 1.25, 0.77 and 1.23 ms, while the bare "
        "ceiling moved between 0.27 and 0.54 ms (2026-12-05): which core each process "
        "lands on, and whether it is cold, weigh as much as the queue's steps."),
    "memory": (
        "Two processes, each with its own interpreter. The supervisor is the CLI process: "
        "click, rich, the app, redis-py and the worker's modules, 49.7 MB at `-c 1000` "
        "(2026-12-04); `import redis` alone takes an interpreter from 10.6 to 30.8 MB of "
        "RSS, since redis-py 8 imports its asyncio, cluster and command modules from its "
        "`__init__`. The worker process carries gevent, the app and redis-py, 47.6 MB idle "
        "(an interpreter is 10.8 MB, gevent's `patch_all` brings it to 27.0 MB, redis-py "
        "to 37.3 MB and celeriac's worker modules to 44.5 MB: 2026-12-05), and grows "
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
        "With `-E`, each task adds three events (received, started, succeeded). The worker "
        "encodes each with orjson as it makes it and buffers the bytes; one `emit` script "
        "call per batch (up to 200 events, or every 0.2 s) stores the whole batch as one "
        "member of a capped sorted set, so the server copies bytes rather than making a "
        "member per event. Over 40,000 no-op tasks with and without `-E` (2026-12-05) that "
        "costs about 9 us of worker CPU and 4 us of Redis CPU per task (`INFO "
        "commandstats`, the child's CPU time). A member per event had cost 15 us of Redis "
        "per task, and events encoded at flush time 16 us of worker CPU; the first "
        "published run measured 0.69x. What is left is the events themselves: three "
        "dicts, three encodes and the hooks that make them, against a no-op task that "
        "costs the worker about 120 us, on two cores shared with Redis."),
    "brokers": (
        "Each broker's own round trip and storage. SQLite's is a file lock and a "
        "transaction per call on the same disk. RabbitMQ's is a confirmed publish and a "
        "consumer on one channel, plus the Redis sidecar celeriac keeps for its lease state "
        "(`broker_state_url`)."),
}
