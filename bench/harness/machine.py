"""Facts about the machine and the software a run measured, for the report's first lines."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path

from .procs import REPO
from .servers import redis_version

#: The packages whose versions the report prints (those absent are said to be).
PACKAGES = ["celeriac", "celery", "kombu", "amqp", "dramatiq", "pika", "huey", "rq", "gevent",
            "greenlet", "redis", "requests", "aiohttp", "uvloop"]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def ram_gb() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


def versions(python: Path) -> dict[str, str]:
    """Versions of the packages in the venv the systems run in, and of its Python."""
    probe = ("import importlib.metadata as m, json, platform\n"
             "out = {'python': platform.python_version()}\n"
             f"for p in {PACKAGES!r}:\n"
             "    try:\n        out[p] = m.version(p)\n"
             "    except m.PackageNotFoundError:\n        out[p] = 'absent'\n"
             "print(json.dumps(out))\n")
    done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=True)
    found: dict[str, str] = json.loads(done.stdout)
    commit = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                            capture_output=True, text=True).stdout.strip()
    found["celeriac"] = f"{found['celeriac']} ({commit})"
    return found


def rabbitmq_package() -> str:
    """The installed ``rabbitmq-server`` package's version (the node says its own when the
    broker workload starts one: ``rabbitmqctl version`` replaces this)."""
    done = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "rabbitmq-server"],
                          capture_output=True, text=True)
    return f"{done.stdout.strip()} (package; no node started)" if done.returncode == 0 else "absent"


def facts(python: Path) -> dict[str, str]:
    """Cores, CPU, RAM, kernel, Python, Redis, RabbitMQ, and the packages' versions."""
    found = {"cores": str(os.cpu_count()), "CPU": cpu_model(), "RAM": f"{ram_gb():.1f} GiB",
             "kernel": platform.release(), "redis-server": redis_version(),
             "rabbitmq-server": rabbitmq_package()}
    found.update(versions(python))
    return found
