"""Storing results, before and after a change: records/s of ``store_many`` per backend.

Storing a task's result is on a worker's hot path whenever results are on, and
``bench/redis_compare.py`` runs with results off; this measures the store itself. For
each backend (Redis on a private loopback ``redis-server`` this script starts, SQLite
in a fresh file) and each batch size, a child process stores N SUCCESS records, the
shape a worker stores (name, result, date_done), with ``store_many`` in batches of that
size (the worker stores each settled batch in one call: 1 for a lone task, tens under
load), and reports records/s, its own CPU time per record and, for Redis, the server's
(``INFO cpu``): CPU figures are steadier than rates on a shared machine.
``--against REV`` runs the same child on ``celeriac`` exported from revision REV of
this repository (``git archive``, no work tree) beside the working tree's, alternating
within each run so drift on a shared machine hits both; figures are medians of
``--repeat`` runs, and the ratio is this tree's over REV's. ``--index-off`` adds a
column: this tree with ``result_index`` off.

Run: ``.venv/bin/python bench/result_store.py --against main [--records 20000]
[--batches 1,20] [--repeat 3] [--backends redis,sqlite] [--index-off]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from harness.servers import redis_server

ROOT = Path(__file__).resolve().parent.parent


def server_cpu(url: str) -> float:
    """CPU seconds the Redis server has used (0 for SQLite, which has no server)."""
    if not url.startswith("redis"):
        return 0.0
    import redis

    client = redis.Redis.from_url(url)
    info = client.info("cpu")
    client.close()
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def child(url: str, records: int, batch: int, index: bool = True) -> None:
    """Store ``records`` records in batches of ``batch``; print records/s and the CPU
    microseconds per record of this process and of the Redis server, as JSON.
    ``index=False``: with ``result_index`` off (asked only then, so that revisions from
    before the setting run too)."""
    from celeriac.backends import ResultRecord, backend_from_url

    backend = (backend_from_url(url, expires=3600) if index
               else backend_from_url(url, expires=3600, index=False))
    backend.ping()
    prefix = uuid.uuid4().hex[:8]
    rows = [ResultRecord(task_id=f"{prefix}-{uuid.uuid4()}", status="SUCCESS", result=i,
                         name="bench.add", date_done=time.time()) for i in range(records)]
    server_before, started, cpu = server_cpu(url), time.perf_counter(), time.process_time()
    for start in range(0, records, batch):
        backend.store_many(rows[start:start + batch])
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    server = server_cpu(url) - server_before
    backend.close()
    print(json.dumps({"rate": records / elapsed, "client_us": cpu / records * 1e6,
                      "server_us": server / records * 1e6}))


def export(rev: str, directory: Path) -> Path:
    """``celeriac`` of revision ``rev`` under ``directory`` (for PYTHONPATH)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "celeriac"],
                             check=True, capture_output=True).stdout
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(directory)], input=archive, check=True)
    return directory


def measure(pythonpath: Path, url: str, records: int, batch: int,
            index: bool = True) -> dict[str, float]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CELERIAC_")},
           "PYTHONPATH": str(pythonpath)}
    done = subprocess.run(
        [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
         "import result_store; result_store.child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), "
         "sys.argv[5] == '1')", str(ROOT / "bench"), url, str(records), str(batch),
         "1" if index else "0"],
        env=env, capture_output=True, text=True, check=False, cwd=str(pythonpath))
    if done.returncode != 0:
        raise SystemExit(f"child failed:\n{done.stderr}")
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", metavar="REV", help="also run celeriac of revision REV")
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--batches", default="1,20")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--backends", default="redis,sqlite")
    parser.add_argument("--index-off", action="store_true",
                        help="also run this tree with result_index off")
    options = parser.parse_args()
    batches = [int(b) for b in options.batches.split(",")]
    with tempfile.TemporaryDirectory(prefix="result-store-") as tmp:
        work = Path(tmp)
        variants = {"celeriac": (ROOT, True)}
        if options.index_off:
            variants["index off"] = (ROOT, False)
        if options.against:
            variants[f"celeriac@{options.against}"] = (
                export(options.against, work / "rev"), True)
        runs: dict[tuple[str, str, int], list[dict[str, float]]] = {}
        with redis_server(work) as redis_url:
            for run in range(options.repeat):
                for kind in options.backends.split(","):
                    for batch in batches:
                        for name, (path, index) in variants.items():
                            url = (redis_url if kind == "redis"
                                   else f"sqlite:///{work / f'{name}-{run}-{batch}.db'}")
                            runs.setdefault((kind, name, batch), []).append(
                                measure(path, url, options.records, batch, index))
        for metric, label in (("rate", "records/s"), ("client_us", "client CPU us/record"),
                              ("server_us", "Redis server CPU us/record")):
            print(f"\n{label} (median of {options.repeat})")
            print(f"{'backend':8} {'batch':>5} " + " ".join(f"{n:>16}" for n in variants)
                  + ("    ratio" if options.against else ""))
            for kind in options.backends.split(","):
                if metric == "server_us" and kind != "redis":
                    continue
                for batch in batches:
                    medians = [statistics.median(r[metric] for r in runs[(kind, name, batch)])
                               for name in variants]
                    line = f"{kind:8} {batch:>5} " + " ".join(f"{m:>16,.1f}" for m in medians)
                    if options.against and medians[-1]:
                        line += f"    {medians[0] / medians[-1]:.2f}"
                    print(line)


if __name__ == "__main__":
    main()
